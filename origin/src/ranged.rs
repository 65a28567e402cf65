//! The VOD as byte ranges of one file per rendition, sans I/O: what an origin
//! that packs a rendition into a single fMP4 file serves (HLS
//! `EXT-X-BYTERANGE` and a byte-range `EXT-X-MAP`).
//!
//! Each rendition's file is its init segment followed by its media segments,
//! in playlist order; its playlist names every segment as a range of that
//! file. The first range carries its offset (`len@offset`) and the others
//! leave it out, which means "right after the previous range of the same
//! file" (RFC 8216 §4.3.2.2), so a reader has to handle both forms.
//!
//! [`parse_range`] reads the single-range `Range` header the file is served
//! with.

use std::fmt::Write as _;

use crate::playlist::VodPlaylist;

/// One rendition packed into one file.
#[derive(Debug, Clone)]
pub struct Ranged {
    /// The media playlist, with byte ranges of [`Self::file_name`].
    pub playlist: String,
    /// The file's name, beside the playlist (`<stem>.mp4`).
    pub file_name: String,
    /// Init segment, then every media segment.
    pub file: Vec<u8>,
}

impl Ranged {
    /// Packs `vod` (whose init segment is `init` and whose segments'
    /// bytes are `segments`, in order) into `<stem>.mp4`.
    pub fn new(vod: &VodPlaylist, stem: &str, init: &[u8], segments: &[Vec<u8>]) -> Self {
        let file_name = format!("{stem}.mp4");
        let mut file = init.to_vec();
        let mut playlist = String::new();
        let _ = write!(
            playlist,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"{file_name}\",BYTERANGE=\"{}@0\"\n",
            vod.target_duration(),
            init.len()
        );
        for (i, (segment, bytes)) in vod.segments().iter().zip(segments).enumerate() {
            let _ = writeln!(playlist, "#EXTINF:{:.6},", segment.duration.as_secs_f64());
            if i == 0 {
                let _ = writeln!(playlist, "#EXT-X-BYTERANGE:{}@{}", bytes.len(), file.len());
            } else {
                let _ = writeln!(playlist, "#EXT-X-BYTERANGE:{}", bytes.len());
            }
            let _ = writeln!(playlist, "{file_name}");
            file.extend_from_slice(bytes);
        }
        playlist.push_str("#EXT-X-ENDLIST\n");
        Self {
            playlist,
            file_name,
            file,
        }
    }
}

/// Why a `Range` header cannot be served (answer 416).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsatisfiable range {0:?}")]
pub struct BadRange(pub String);

/// The bytes `first..=last` a `Range` header asks of a resource of `len`
/// bytes: `bytes=a-b`, `bytes=a-` or `bytes=-n` (one range only; `b` past
/// the end is cut to it, RFC 9110 §14.1.2).
pub fn parse_range(value: &str, len: u64) -> Result<(u64, u64), BadRange> {
    let bad = || BadRange(value.chars().take(80).collect());
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') || len == 0 {
        return Err(bad());
    }
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let (first, last) = match (first.trim().is_empty(), last.trim().is_empty()) {
        // The last n bytes.
        (true, false) => {
            let n = number(last)?;
            if n == 0 {
                return Err(bad());
            }
            (len.saturating_sub(n), len - 1)
        }
        (false, true) => (number(first)?, len - 1),
        (false, false) => (number(first)?, number(last)?.min(len - 1)),
        (true, true) => return Err(bad()),
    };
    if first > last || first >= len {
        return Err(bad());
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says_and_others_refused() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ok((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Ok((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Ok((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Ok((990, 999)));
        assert_eq!(parse_range("bytes=-5000", 1000), Ok((0, 999)));
        for bad in [
            "bytes=1000-1001",
            "bytes=5-4",
            "bytes=0-1,5-6",
            "bytes=-0",
            "bytes=-",
            "items=0-1",
            "bytes=a-b",
            "bytes=18446744073709551616-",
        ] {
            assert!(parse_range(bad, 1000).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_playlist_names_each_segment_as_a_range_of_one_file() {
        let vod = VodPlaylist::parse(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
              #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\na.m4s\n#EXTINF:1.5,\nb.m4s\n#EXT-X-ENDLIST\n",
        )
        .expect("a VOD playlist");
        let ranged = Ranged::new(&vod, "v", b"INIT", &[b"aaaaa".to_vec(), b"bb".to_vec()]);
        assert_eq!(ranged.file, b"INITaaaaabb");
        assert_eq!(ranged.file_name, "v.mp4");
        let lines: Vec<&str> = ranged.playlist.lines().collect();
        assert!(lines.contains(&"#EXT-X-MAP:URI=\"v.mp4\",BYTERANGE=\"4@0\""));
        let ranges: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("#EXT-X-BYTERANGE"))
            .copied()
            .collect();
        assert_eq!(ranges, ["#EXT-X-BYTERANGE:5@4", "#EXT-X-BYTERANGE:2"]);
        assert_eq!(lines.last(), Some(&"#EXT-X-ENDLIST"));
    }
}
