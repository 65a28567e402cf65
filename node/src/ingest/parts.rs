//! Low-latency HLS tags of a media playlist, sans I/O: partial segments
//! (`EXT-X-PART`), the preload hint, `EXT-X-PART-INF` and
//! `EXT-X-SERVER-CONTROL`.
//!
//! `m3u8-rs` keeps these as unknown tags, attached to whichever segment
//! follows, and the parts of the segment still in progress follow none. So
//! they are read here from the playlist's lines: a part belongs to the media
//! segment whose URI line comes next, the in-progress one when none does.
//!
//! Refused: byte-range parts (`BYTERANGE`: a part would not be a whole
//! resource, as for segments), more than [`MAX_PARTS`] parts in a segment,
//! and parts without a usable `DURATION` or `URI`. `GAP=YES` parts are
//! skipped, along with every later part of their segment (a gap has no bytes,
//! and parts only make up a segment from its first), and such a segment is
//! not made up of its parts ([`LowLatency::whole`]).

use std::time::Duration;

use meshcast_proto::MAX_PARTS;

/// Why the low-latency tags of a playlist were refused (the playlist module
/// reports it as its own error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsError {
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("unsupported playlist feature: {0}")]
    Unsupported(&'static str),
    #[error("part URI of {len} bytes is over the limit of {max}")]
    UriTooLong { len: usize, max: usize },
    #[error("more than {MAX_PARTS} parts in one segment")]
    TooMany,
}

/// Longest part accepted: a part is a fraction of a segment.
pub const MAX_PART_DURATION: Duration = Duration::from_secs(10);

/// The low-latency side of a media playlist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LowLatency {
    /// `EXT-X-PART-INF:PART-TARGET`.
    pub part_target: Option<Duration>,
    /// `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`: the origin holds a reload
    /// asking for a part that does not exist yet (`_HLS_msn`, `_HLS_part`).
    pub can_block_reload: bool,
    /// The parts listed, in playlist order.
    pub parts: Vec<PartInfo>,
    /// `EXT-X-PRELOAD-HINT:TYPE=PART`: the URI of the next part.
    pub preload_hint: Option<String>,
    /// Segments (by sequence) with a `GAP=YES` part: their parts listed do
    /// not make them up.
    pub gapped: Vec<u64>,
}

/// One `EXT-X-PART`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Media sequence number of the segment it belongs to, as the playlist
    /// numbers it.
    pub sequence: u64,
    /// Its index within that segment, from 0.
    pub index: u32,
    /// As written: relative to the media playlist, or absolute.
    pub uri: String,
    pub duration: Duration,
    /// `INDEPENDENT=YES`: starts with a sync sample.
    pub independent: bool,
}

impl LowLatency {
    /// Whether the parts listed for segment `sequence` make it up: none of
    /// them is a gap.
    pub fn whole(&self, sequence: u64) -> bool {
        !self.gapped.contains(&sequence)
    }

    /// The parts listed for segment `sequence`, in order.
    pub fn parts_of(&self, sequence: u64) -> impl Iterator<Item = &PartInfo> {
        self.parts.iter().filter(move |p| p.sequence == sequence)
    }

    /// The part a blocking reload should ask for: the one after the last
    /// listed, `(media sequence, part index)`, in the playlist's numbering.
    /// `in_progress` is the sequence of the segment after the last whole one.
    pub fn next_part(&self, in_progress: u64) -> (u64, u32) {
        match self.parts.last() {
            Some(last) if last.sequence >= in_progress => (last.sequence, last.index + 1),
            // The in-progress segment has no part yet (or the last listed
            // part closed a whole segment).
            _ => (in_progress, 0),
        }
    }
}

/// Reads the low-latency tags of a media playlist whose first segment is
/// `media_sequence`; `None` when it has neither parts nor `EXT-X-PART-INF`.
/// Part URIs longer than `max_uri` bytes are refused.
pub fn scan(
    text: &[u8],
    media_sequence: u64,
    max_uri: usize,
) -> Result<Option<LowLatency>, PartsError> {
    let text = String::from_utf8_lossy(text);
    let mut ll = LowLatency::default();
    let mut sequence = media_sequence;
    let mut index = 0u32;
    // A gap ends a segment's parts.
    let mut gap = false;
    let mut seen = false;
    for line in text.lines().map(str::trim) {
        if let Some(attrs) = line.strip_prefix("#EXT-X-PART-INF:") {
            seen = true;
            let target = attribute(attrs, "PART-TARGET")
                .and_then(seconds)
                .ok_or(PartsError::Malformed("EXT-X-PART-INF"))?;
            ll.part_target = Some(target);
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            ll.can_block_reload = attribute(attrs, "CAN-BLOCK-RELOAD").as_deref() == Some("YES");
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            if attribute(attrs, "TYPE").as_deref() == Some("PART") {
                ll.preload_hint = attribute(attrs, "URI");
            }
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            seen = true;
            if attribute(attrs, "BYTERANGE").is_some() {
                return Err(PartsError::Unsupported(
                    "byte-range parts (EXT-X-PART with BYTERANGE)",
                ));
            }
            if attribute(attrs, "GAP").as_deref() == Some("YES") {
                gap = true;
                if ll.gapped.last() != Some(&sequence) {
                    ll.gapped.push(sequence);
                }
            }
            let duration = attribute(attrs, "DURATION")
                .and_then(seconds)
                .filter(|d| !d.is_zero() && *d <= MAX_PART_DURATION)
                .ok_or(PartsError::Malformed("EXT-X-PART (DURATION)"))?;
            let uri = attribute(attrs, "URI")
                .filter(|u| !u.is_empty())
                .ok_or(PartsError::Malformed("EXT-X-PART (URI)"))?;
            if uri.len() > max_uri {
                return Err(PartsError::UriTooLong {
                    len: uri.len(),
                    max: max_uri,
                });
            }
            if index >= MAX_PARTS {
                return Err(PartsError::TooMany);
            }
            if !gap {
                ll.parts.push(PartInfo {
                    sequence,
                    index,
                    uri,
                    duration,
                    independent: attribute(attrs, "INDEPENDENT").as_deref() == Some("YES"),
                });
            }
            index += 1;
        } else if !line.is_empty() && !line.starts_with('#') {
            // A segment's URI: what follows belongs to the next segment.
            sequence = sequence.saturating_add(1);
            index = 0;
            gap = false;
        }
    }
    Ok(seen.then_some(ll))
}

/// The value of attribute `name` in an attribute list (RFC 8216 §4.2),
/// unquoted.
fn attribute(list: &str, name: &str) -> Option<String> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                let next = quoted[end + 1..].trim_start_matches(',');
                (&quoted[..end], next)
            }
            None => match after.split_once(',') {
                Some((value, next)) => (value, next),
                None => (after, ""),
            },
        };
        if key.trim() == name {
            return Some(value.to_owned());
        }
        rest = next;
    }
    None
}

/// A decimal number of seconds, to the microsecond.
fn seconds(text: String) -> Option<Duration> {
    let value: f64 = text.trim().parse().ok()?;
    (value.is_finite() && (0.0..=3600.0).contains(&value))
        .then(|| Duration::from_micros((value * 1e6).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LL: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n\
        #EXT-X-PART-INF:PART-TARGET=0.52\n#EXT-X-MEDIA-SEQUENCE:10\n\
        #EXTINF:2.0,\nv/10.m4s\n\
        #EXT-X-PART:DURATION=0.52,URI=\"v/11.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=0.48,URI=\"v/11.1.m4s\"\n\
        #EXTINF:1.0,\nv/11.m4s\n\
        #EXT-X-PART:DURATION=0.52,URI=\"v/12.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"v/12.1.m4s\"\n";

    #[test]
    fn parts_belong_to_the_segment_whose_uri_follows_them() {
        let ll = scan(LL.as_bytes(), 10, 1024).unwrap().expect("low-latency");
        assert_eq!(ll.part_target, Some(Duration::from_millis(520)));
        assert!(ll.can_block_reload);
        assert_eq!(ll.preload_hint.as_deref(), Some("v/12.1.m4s"));
        let named: Vec<(u64, u32, &str, bool)> = ll
            .parts
            .iter()
            .map(|p| (p.sequence, p.index, p.uri.as_str(), p.independent))
            .collect();
        assert_eq!(
            named,
            [
                (11, 0, "v/11.0.m4s", true),
                (11, 1, "v/11.1.m4s", false),
                (12, 0, "v/12.0.m4s", true)
            ]
        );
        assert_eq!(ll.parts[1].duration, Duration::from_millis(480));
        assert_eq!(ll.parts_of(11).count(), 2);
        // The in-progress segment is 12: its next part is 1.
        assert_eq!(ll.next_part(12), (12, 1));
    }

    #[test]
    fn a_playlist_without_parts_is_not_low_latency() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n";
        assert_eq!(scan(text.as_bytes(), 0, 1024).unwrap(), None);
        // Announced but no part yet: low latency, next is part 0 of segment 1.
        let text = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=1\n#EXTINF:2.0,\na.ts\n";
        let ll = scan(text.as_bytes(), 0, 1024).unwrap().unwrap();
        assert!(ll.parts.is_empty() && !ll.can_block_reload);
        assert_eq!(ll.next_part(1), (1, 0));
    }

    #[test]
    fn malformed_or_unsupported_parts_are_refused() {
        let with = |part: &str| format!("#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=1\n{part}\n");
        for bad in [
            "#EXT-X-PART:URI=\"a\"",
            "#EXT-X-PART:DURATION=0.5",
            "#EXT-X-PART:DURATION=x,URI=\"a\"",
            "#EXT-X-PART:DURATION=0,URI=\"a\"",
            "#EXT-X-PART:DURATION=11,URI=\"a\"",
            "#EXT-X-PART:DURATION=0.5,URI=\"a",
        ] {
            let err = scan(with(bad).as_bytes(), 0, 1024).unwrap_err();
            assert!(matches!(err, PartsError::Malformed(_)), "{bad}: {err}");
        }
        let ranged = with("#EXT-X-PART:DURATION=0.5,URI=\"a\",BYTERANGE=\"100@0\"");
        assert!(matches!(
            scan(ranged.as_bytes(), 0, 1024),
            Err(PartsError::Unsupported(_))
        ));
        assert!(matches!(
            scan(b"#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=\n", 0, 1024),
            Err(PartsError::Malformed(_))
        ));
        let long = with(&format!(
            "#EXT-X-PART:DURATION=0.5,URI=\"{}\"",
            "a".repeat(30)
        ));
        assert_eq!(
            scan(long.as_bytes(), 0, 20),
            Err(PartsError::UriTooLong { len: 30, max: 20 })
        );
        let many: String = (0..=MAX_PARTS)
            .map(|j| format!("#EXT-X-PART:DURATION=0.1,URI=\"p{j}\"\n"))
            .collect();
        assert_eq!(
            scan(with(&many).as_bytes(), 0, 1024),
            Err(PartsError::TooMany)
        );
    }

    #[test]
    fn a_gap_ends_its_segments_parts() {
        let text = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
            #EXT-X-PART:DURATION=0.5,URI=\"a0\"\n\
            #EXT-X-PART:DURATION=0.5,URI=\"a1\",GAP=YES\n\
            #EXT-X-PART:DURATION=0.5,URI=\"a2\"\n\
            #EXTINF:1.5,\na.m4s\n#EXT-X-PART:DURATION=0.5,URI=\"b0\"\n";
        let ll = scan(text.as_bytes(), 0, 1024).unwrap().unwrap();
        let uris: Vec<&str> = ll.parts.iter().map(|p| p.uri.as_str()).collect();
        assert_eq!(uris, ["a0", "b0"]);
        assert_eq!((ll.parts[1].sequence, ll.parts[1].index), (1, 0));
        assert!(!ll.whole(0) && ll.whole(1));
    }
}
