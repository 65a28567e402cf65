//! Synthetic streams for benchmarks and the network lab, at a chosen
//! bitrate, which [`crate::Origin`] serves as is under `/vod/` and loops
//! under `/live/`:
//!
//! - [`write`]: pseudo-random segments (the mesh never looks inside a
//!   segment);
//! - [`write_playable`]: a real rendition (such as the committed test
//!   stream's) padded up to the bitrate, so that a browser can play it.

use std::path::Path;
use std::time::Duration;

/// Writes an HLS VOD of `segments` segments (`bench_NN.m4s`, sequence
/// numbers from 0) at `bitrate` bits per second into `dir`, with
/// `bench.m3u8` and a `master.m3u8` naming it. The same bytes every time.
pub fn write(dir: &Path, bitrate: u64, segment: Duration, segments: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = (bitrate as f64 * segment.as_secs_f64() / 8.0) as usize;
    let secs = segment.as_secs_f64();
    let target = segment.as_secs_f64().ceil() as u64;
    let mut playlist = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..segments {
        let mut body = Vec::with_capacity(bytes + 8);
        while body.len() < bytes {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            body.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        body.truncate(bytes);
        let name = format!("bench_{i:02}.m4s");
        let path = dir.join(&name);
        std::fs::write(&path, &body)?;
        playlist.push_str(&format!("#EXTINF:{secs:.6},\n{name}\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text);
    write("bench.m3u8", &playlist)?;
    write(
        "master.m3u8",
        &format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH={bitrate},RESOLUTION=1280x720,CODECS=\"avc1.4d401f,mp4a.40.2\"\nbench.m3u8\n"
        ),
    )
}

/// Writes one rendition of the HLS folder `source` (its media playlist
/// `<rendition>.m3u8`, fragmented MP4) into `dir`, every media segment padded
/// with a trailing `free` box up to `bitrate` over its duration, with a
/// `master.m3u8` naming only it at that bandwidth. Players skip `free` boxes
/// (ISO/IEC 14496-12 §8.1.2), so the stream plays as the original does while
/// weighing what a real one at `bitrate` would. Returns the longest segment
/// duration.
pub fn write_playable(
    dir: &Path,
    source: &Path,
    rendition: &str,
    bitrate: u64,
) -> std::io::Result<Duration> {
    use std::io::{Error, ErrorKind};
    let bad = |why: String| Error::new(ErrorKind::InvalidData, why);
    std::fs::create_dir_all(dir)?;
    let name = format!("{rendition}.m3u8");
    let playlist = std::fs::read_to_string(source.join(&name))?;
    let mut longest = Duration::ZERO;
    let mut duration = None;
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let secs = rest.split(',').next().unwrap_or_default();
            let secs: f64 = secs
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .ok_or_else(|| bad(format!("{name}: bad #EXTINF `{rest}`")))?;
            duration = Some(Duration::from_secs_f64(secs));
        } else if let Some(rest) = line.strip_prefix("#EXT-X-MAP:") {
            let uri = rest
                .split_once("URI=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(uri, _)| uri)
                .ok_or_else(|| bad(format!("{name}: no URI in `{line}`")))?;
            copy_plain(source, dir, uri)?;
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let segment = duration
                .take()
                .ok_or_else(|| bad(format!("{name}: `{line}` has no #EXTINF")))?;
            longest = longest.max(segment);
            let path = copy_plain(source, dir, line.trim())?;
            let target = (bitrate as f64 * segment.as_secs_f64() / 8.0) as usize;
            let mut body = std::fs::read(&path)?;
            if let Some(pad) = target.checked_sub(body.len() + 8) {
                let size = u32::try_from(pad + 8).map_err(|_| bad("padding over 4 GiB".into()))?;
                body.extend_from_slice(&size.to_be_bytes());
                body.extend_from_slice(b"free");
                body.resize(body.len() + pad, 0);
                std::fs::write(&path, body)?;
            }
        }
    }
    std::fs::write(dir.join(&name), &playlist)?;
    let master = std::fs::read_to_string(source.join("master.m3u8"))?;
    let lines: Vec<&str> = master.lines().collect();
    let info = lines
        .windows(2)
        .find(|pair| pair[1].trim() == name)
        .map(|pair| pair[0])
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .ok_or_else(|| bad(format!("master.m3u8 names no {name}")))?;
    let attributes: Vec<String> = info["#EXT-X-STREAM-INF:".len()..]
        .split(',')
        .map(|a| {
            if a.starts_with("BANDWIDTH=") {
                format!("BANDWIDTH={bitrate}")
            } else {
                a.to_string()
            }
        })
        .collect();
    std::fs::write(
        dir.join("master.m3u8"),
        format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:{}\n{name}\n",
            attributes.join(",")
        ),
    )?;
    Ok(longest)
}

/// Copies the file `name` (a plain name, no folders) of `from` into `to`.
fn copy_plain(from: &Path, to: &Path, name: &str) -> std::io::Result<std::path::PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("`{name}`: only plain file names are copied"),
        ));
    }
    let path = to.join(name);
    std::fs::copy(from.join(name), &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_stream() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../media/test-stream")
    }

    /// Padded to the bitrate, the original bytes first, then one `free` box
    /// spanning the rest; the master names the one rendition at the bitrate.
    #[test]
    fn a_playable_stream_is_the_original_padded_with_a_free_box() {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let longest =
            write_playable(dir.path(), &test_stream(), "360p", 4_000_000).expect("writes");
        assert_eq!(longest, Duration::from_secs(2));
        let original = std::fs::read(test_stream().join("360p_03.m4s")).expect("the test stream");
        let padded = std::fs::read(dir.path().join("360p_03.m4s")).expect("written");
        assert_eq!(padded.len(), 1_000_000);
        assert_eq!(&padded[..original.len()], &original[..]);
        let free = &padded[original.len()..];
        assert_eq!(&free[4..8], b"free");
        let size = u32::from_be_bytes(free[..4].try_into().expect("4 bytes"));
        assert_eq!(size as usize, free.len());
        assert_eq!(
            std::fs::read(dir.path().join("init_360p.mp4")).expect("init copied"),
            std::fs::read(test_stream().join("init_360p.mp4")).expect("init")
        );
        let master = std::fs::read_to_string(dir.path().join("master.m3u8")).expect("master");
        assert!(
            master.contains("BANDWIDTH=4000000,RESOLUTION=640x360"),
            "{master}"
        );
        assert!(master.trim_end().ends_with("\n360p.m3u8"), "{master}");
        assert!(!master.contains("180p"), "{master}");
        // The origin loads it: every segment it names is there.
        crate::Origin::load(dir.path()).expect("the origin loads it");
        assert!(write_playable(dir.path(), &test_stream(), "720p", 4_000_000).is_err());
    }
}
