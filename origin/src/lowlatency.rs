//! The live loop as low-latency HLS: partial segments, preload hints and
//! blocking playlist reload.
//!
//! Sans-I/O, like [`crate::playlist`]: the caller passes the live clock.
//!
//! # Timeline
//!
//! Every VOD segment is cut into parts ([`crate::fmp4::split`]); part `j` of
//! VOD segment `i` starts `p(i, j)` into the segment. Live segment `k` (VOD
//! segment `i = k mod N`) starts at `S(k) = E(k) − d(i)` in stream time (the
//! live loop's `E`, head start and window: see [`crate::playlist`]), and its
//! part `j` is *published* once the stream time reaches the part's end,
//! `S(k) + p(i, j + 1)` (the segment's end for its last part). A segment is
//! published with its last part.
//!
//! # The playlist
//!
//! At stream time `s` the playlist lists the last `W` published segments, as
//! the live loop does, then the published parts of the segment in progress,
//! then an `EXT-X-PRELOAD-HINT` naming the next part. The last two published
//! segments also list their parts (`EXT-X-PART` before their `EXTINF`), so a
//! player starting `PART-HOLD-BACK` behind the edge finds parts where it
//! starts. Also:
//!
//! - `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=` three part
//!   targets (the RFC 8216bis minimum is two; three is its recommendation);
//! - `EXT-X-PART-INF:PART-TARGET=` the longest part of the stream, so that no
//!   part is longer than its target, whatever the cutting made.
//!
//! URIs are per live segment, so that every part has one name: segment `k` of
//! `<stem>.m3u8` is `<stem>/k.m4s`, its part `j` is `<stem>/k.j.m4s` (relative
//! to the playlist). Their bytes repeat every loop.
//!
//! # Blocking reload
//!
//! A request with `_HLS_msn=M` waits until segment `M` is published, with
//! `_HLS_part=P` too until part `P` of segment `M` is (a part index past the
//! segment's last part counts into the next segment, "or later" in the RFC).
//! [`LowLatency::ready_at`] says when that is; the server holds the request
//! that long, at most three target durations (then 503), and answers 400 for
//! an `M` more than two segments past the last published one.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::playlist::VodPlaylist;

/// How many of the newest published segments list their parts.
pub const SEGMENTS_WITH_PARTS: u64 = 2;

/// Part starts of one VOD segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentParts {
    /// Start of each part from the segment's start, µs; the first is 0,
    /// strictly increasing, all below the segment's duration.
    pub starts: Vec<u64>,
    /// Whether each part starts with a sync sample.
    pub independent: Vec<bool>,
}

/// Why the parts do not fit the playlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsError {
    #[error("{given} segments of parts for a playlist of {expected} segments")]
    Count { given: usize, expected: usize },
    #[error(
        "segment {index}: part starts must begin at 0 and increase within the segment's duration"
    )]
    Starts { index: usize },
}

/// A VOD playlist with its parts: renders the live loop as LL-HLS.
#[derive(Debug, Clone)]
pub struct LowLatency {
    vod: VodPlaylist,
    parts: Vec<SegmentParts>,
    /// File name of the playlist without `.m3u8`: the directory of its URIs.
    stem: String,
    /// The longest part, µs.
    part_target: u64,
}

/// Where a request for a part or segment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Published: serve it.
    Now,
    /// Published after this much more stream time.
    After(Duration),
}

impl LowLatency {
    /// `stem` names the playlist's media (`360p` for `360p.m3u8`); `parts`
    /// holds every VOD segment's part starts, in playlist order.
    pub fn new(vod: VodPlaylist, stem: &str, parts: Vec<SegmentParts>) -> Result<Self, PartsError> {
        if parts.len() != vod.segments().len() {
            return Err(PartsError::Count {
                given: parts.len(),
                expected: vod.segments().len(),
            });
        }
        let mut part_target = 0;
        for (index, (p, seg)) in parts.iter().zip(vod.segments()).enumerate() {
            let duration = seg.duration.as_micros() as u64;
            let ok = p.starts.first() == Some(&0)
                && p.starts.len() == p.independent.len()
                && p.starts.windows(2).all(|w| w[0] < w[1])
                && p.starts.last().is_some_and(|&last| last < duration);
            if !ok {
                return Err(PartsError::Starts { index });
            }
            for (j, start) in p.starts.iter().enumerate() {
                let end = p.starts.get(j + 1).copied().unwrap_or(duration);
                part_target = part_target.max(end - start);
            }
        }
        Ok(Self {
            vod,
            parts,
            stem: stem.to_owned(),
            part_target,
        })
    }

    /// `PART-TARGET`: the longest part.
    pub fn part_target(&self) -> Duration {
        Duration::from_micros(self.part_target)
    }

    /// The VOD playlist behind the loop.
    pub fn vod(&self) -> &VodPlaylist {
        &self.vod
    }

    /// The parts of live segment `k`.
    pub fn parts_of(&self, k: u64) -> &SegmentParts {
        &self.parts[self.index(k)]
    }

    fn index(&self, k: u64) -> usize {
        (k % self.parts.len() as u64) as usize
    }

    /// Stream time (µs) at elapsed `elapsed`, with the live loop's head start.
    fn stream_time(&self, elapsed: Duration, window: NonZeroUsize) -> u128 {
        let head_start = self.vod.end_of(window.get() as u64 - 1);
        elapsed.as_micros().saturating_add(head_start)
    }

    fn start_of(&self, k: u64) -> u128 {
        let duration = self.vod.segments()[self.index(k)].duration.as_micros();
        self.vod.end_of(k) - duration
    }

    /// End of part `j` of live segment `k` in stream time (`j` in range).
    fn part_end(&self, k: u64, j: usize) -> u128 {
        let parts = self.parts_of(k);
        match parts.starts.get(j + 1) {
            Some(&next) => self.start_of(k) + u128::from(next),
            None => self.vod.end_of(k),
        }
    }

    /// Parts of live segment `k` published by stream time `s`.
    fn parts_published(&self, k: u64, s: u128) -> usize {
        let n = self.parts_of(k).starts.len();
        (0..n).take_while(|&j| self.part_end(k, j) <= s).count()
    }

    /// Normalises part `j` of segment `k` (an index past the last part counts
    /// into the following segments).
    fn normalise(&self, mut k: u64, mut j: u64) -> (u64, usize) {
        // Bounded: a part index beyond a few segments' worth is refused by
        // the caller's distance check before it gets here.
        for _ in 0..64 {
            let n = self.parts_of(k).starts.len() as u64;
            if j < n {
                return (k, j as usize);
            }
            j -= n;
            k = k.saturating_add(1);
        }
        (k, 0)
    }

    /// Number of published segments at `elapsed`: the next one is in progress.
    pub fn published(&self, elapsed: Duration, window: NonZeroUsize) -> u64 {
        self.vod.published(self.stream_time(elapsed, window))
    }

    /// When segment `msn` (whole, if `part` is `None`) or its part `part` is
    /// published, for a blocking reload or a request for a part. `None` when
    /// it is too far ahead to wait for: `msn` more than two segments past the
    /// last published one, which the RFC answers with 400.
    pub fn ready_at(
        &self,
        msn: u64,
        part: Option<u64>,
        elapsed: Duration,
        window: NonZeroUsize,
    ) -> Option<Availability> {
        let s = self.stream_time(elapsed, window);
        let published = self.vod.published(s);
        // The last published segment is `published - 1`: at most two past it.
        if msn > published.saturating_add(1) {
            return None;
        }
        let at = match part {
            None => self.vod.end_of(msn),
            Some(j) => {
                if j > 1000 {
                    return None;
                }
                let (k, j) = self.normalise(msn, j);
                if k > published.saturating_add(1) {
                    return None;
                }
                self.part_end(k, j)
            }
        };
        Some(if at <= s {
            Availability::Now
        } else {
            let micros = u64::try_from(at - s).unwrap_or(u64::MAX);
            Availability::After(Duration::from_micros(micros))
        })
    }

    /// Whether part `part` of segment `msn` (or the whole segment) exists:
    /// a part index within the segment's parts.
    pub fn exists(&self, msn: u64, part: Option<u64>) -> bool {
        part.is_none_or(|j| j < self.parts_of(msn).starts.len() as u64)
    }

    /// URI of segment `k`, relative to the playlist.
    pub fn segment_uri(&self, k: u64) -> String {
        format!("{}/{k}.m4s", self.stem)
    }

    /// URI of part `j` of segment `k`, relative to the playlist.
    pub fn part_uri(&self, k: u64, j: usize) -> String {
        format!("{}/{k}.{j}.m4s", self.stem)
    }

    /// Renders the LL-HLS playlist at `elapsed` (see the module docs).
    pub fn render(&self, elapsed: Duration, window: NonZeroUsize) -> String {
        let mut out = String::with_capacity(1024);
        // Writing to a String cannot fail.
        let _ = self.write(&mut out, elapsed, window);
        out
    }

    fn write(&self, out: &mut String, elapsed: Duration, window: NonZeroUsize) -> std::fmt::Result {
        let s = self.stream_time(elapsed, window);
        let live = self.vod.live_window(elapsed, window);
        let n = self.parts.len() as u64;
        let current = self.vod.published(s);
        let extra = format!(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}\n\
             #EXT-X-PART-INF:PART-TARGET={}\n",
            secs(3 * self.part_target),
            secs(self.part_target)
        );
        self.vod.write_live_head(out, &live, &extra)?;
        for seg in &live.segments {
            if seg.discontinuity {
                writeln!(out, "#EXT-X-DISCONTINUITY")?;
            }
            if seg.sequence + SEGMENTS_WITH_PARTS >= current {
                self.write_parts(out, seg.sequence, usize::MAX)?;
            }
            self.vod.write_extinf(out, seg.index)?;
            writeln!(out, "{}", self.segment_uri(seg.sequence))?;
        }
        let done = self.parts_published(current, s);
        if done > 0 {
            if current > 0 && current.is_multiple_of(n) {
                writeln!(out, "#EXT-X-DISCONTINUITY")?;
            }
            self.write_parts(out, current, done)?;
        }
        writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            self.part_uri(current, done)
        )
    }

    /// `EXT-X-PART` lines for the first `count` parts of segment `k`.
    fn write_parts(&self, out: &mut String, k: u64, count: usize) -> std::fmt::Result {
        let parts = self.parts_of(k);
        let duration = self.vod.segments()[self.index(k)].duration.as_micros() as u64;
        for (j, start) in parts.starts.iter().enumerate().take(count) {
            let end = parts.starts.get(j + 1).copied().unwrap_or(duration);
            write!(
                out,
                "#EXT-X-PART:DURATION={},URI=\"{}\"",
                secs(end - start),
                self.part_uri(k, j)
            )?;
            if parts.independent[j] {
                write!(out, ",INDEPENDENT=YES")?;
            }
            writeln!(out)?;
        }
        Ok(())
    }
}

/// Seconds with six decimals.
fn secs(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// A request for a media file of the LL stream: `<stem>/<msn>.m4s` or
/// `<stem>/<msn>.<part>.m4s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPath<'a> {
    /// The playlist's URI without `.m3u8`.
    pub stem: &'a str,
    pub msn: u64,
    pub part: Option<u64>,
}

impl<'a> MediaPath<'a> {
    /// Parses a path below `/ll/`; `None` if it names no segment or part.
    pub fn parse(path: &'a str) -> Option<Self> {
        let (stem, file) = path.rsplit_once('/')?;
        let name = file.strip_suffix(".m4s")?;
        let (msn, part) = match name.split_once('.') {
            Some((msn, part)) => (msn, Some(number(part)?)),
            None => (name, None),
        };
        Some(Self {
            stem,
            msn: number(msn)?,
            part,
        })
    }
}

/// A decimal number without sign or leading zeros (one name per part).
fn number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 19
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// `_HLS_msn` and `_HLS_part` of a playlist request's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Blocking {
    pub msn: Option<u64>,
    pub part: Option<u64>,
}

impl Blocking {
    /// Parses the query string (other parameters are ignored); an
    /// `_HLS_part` without `_HLS_msn`, or a value that is not a number, is an
    /// error to answer with 400.
    pub fn parse(query: Option<&str>) -> Result<Self, &'static str> {
        let mut out = Self::default();
        for pair in query.unwrap_or("").split('&').take(16) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "_HLS_msn" => out.msn = Some(number(value).ok_or("_HLS_msn is not a number")?),
                "_HLS_part" => out.part = Some(number(value).ok_or("_HLS_part is not a number")?),
                _ => {}
            }
        }
        if out.part.is_some() && out.msn.is_none() {
            return Err("_HLS_part without _HLS_msn");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUARTERS: [u64; 4] = [0, 500_000, 1_000_000, 1_500_000];

    /// Three 2 s segments, each in four parts of 0.5 s, the first independent.
    fn stream() -> LowLatency {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n\
                    #EXTINF:2.0,\na.m4s\n#EXTINF:2.0,\nb.m4s\n#EXTINF:2.0,\nc.m4s\n#EXT-X-ENDLIST\n";
        let vod = VodPlaylist::parse(text.as_bytes()).unwrap();
        let parts = (0..3)
            .map(|_| SegmentParts {
                starts: QUARTERS.to_vec(),
                independent: vec![true, false, false, false],
            })
            .collect();
        LowLatency::new(vod, "v", parts).unwrap()
    }

    fn two() -> NonZeroUsize {
        NonZeroUsize::new(2).unwrap()
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_playlist_announces_parts_hold_back_and_blocking_reload() {
        let text = stream().render(Duration::ZERO, two());
        assert!(
            text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500000\n")
        );
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.500000\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\"\n"));
        // Head start: segments 0 and 1 are out, nothing of 2 yet.
        assert_eq!(lines(&text, "v/"), ["v/0.m4s", "v/1.m4s"]);
        assert_eq!(lines(&text, "#EXT-X-PART:").len(), 8, "{text}");
        assert!(text.contains(
            "#EXT-X-PART:DURATION=0.500000,URI=\"v/1.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.500000,URI=\"v/1.1.m4s\"\n"
        ));
        assert!(
            text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"v/2.0.m4s\"\n"),
            "{text}"
        );
    }

    #[test]
    fn parts_are_published_as_the_clock_passes_their_end() {
        let ll = stream();
        let text = ll.render(ms(499), two());
        assert!(!text.contains("v/2.0.m4s\","), "{text}");
        let text = ll.render(ms(500), two());
        assert!(
            text.contains("URI=\"v/2.0.m4s\",INDEPENDENT=YES\n"),
            "{text}"
        );
        assert!(text.ends_with("URI=\"v/2.1.m4s\"\n"), "{text}");
        // Segment 2 is whole at 2 s: the window slides and segment 0 leaves,
        // and only the newest two segments keep their parts.
        let text = ll.render(ms(2000), two());
        assert_eq!(lines(&text, "v/"), ["v/1.m4s", "v/2.m4s"]);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"));
        assert!(text.ends_with("URI=\"v/3.0.m4s\"\n"), "{text}");
        // A window of three (head start 6 s): at 6 s segments 3 to 5 are out.
        let text = ll.render(ms(6000), NonZeroUsize::new(3).unwrap());
        assert_eq!(lines(&text, "v/"), ["v/3.m4s", "v/4.m4s", "v/5.m4s"]);
        assert!(
            !text.contains("v/3.0.m4s"),
            "parts of older segments are dropped: {text}"
        );
        assert!(text.contains("v/4.0.m4s") && text.contains("v/5.3.m4s"));
    }

    #[test]
    fn a_discontinuity_comes_with_the_first_part_of_a_new_loop() {
        let ll = stream();
        // Segment 3 (the second loop's first) is in progress from 2 s.
        let text = ll.render(ms(2100), two());
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        let text = ll.render(ms(2500), two());
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PART:DURATION=0.500000,URI=\"v/3.0.m4s\""),
            "{text}"
        );
        // Once whole, the tag stays before its parts and its EXTINF.
        let text = ll.render(ms(4000), two());
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PART:DURATION=0.500000,URI=\"v/3.0.m4s\"")
        );
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    }

    #[test]
    fn ready_at_says_when_a_part_or_segment_is_out() {
        let ll = stream();
        let at = |msn, part, elapsed| ll.ready_at(msn, part, ms(elapsed), two());
        assert_eq!(at(1, None, 0), Some(Availability::Now));
        assert_eq!(at(2, Some(0), 0), Some(Availability::After(ms(500))));
        assert_eq!(at(2, Some(0), 500), Some(Availability::Now));
        assert_eq!(at(2, None, 500), Some(Availability::After(ms(1500))));
        // Part 4 of a four-part segment is the next segment's part 0.
        assert_eq!(at(2, Some(4), 0), at(3, Some(0), 0));
        assert_eq!(at(3, Some(0), 0), Some(Availability::After(ms(2500))));
        // Two past the last published (1) is the limit; three is refused.
        assert!(at(3, None, 0).is_some());
        assert_eq!(at(4, None, 0), None);
        assert_eq!(at(2, Some(9), 0), None, "normalised into segment 4");
        assert_eq!(at(2, Some(u64::MAX), 0), None);
        assert!(ll.exists(2, Some(3)) && !ll.exists(2, Some(4)) && ll.exists(2, None));
    }

    #[test]
    fn blocking_queries_parse_strictly() {
        let parse = Blocking::parse;
        assert_eq!(parse(None), Ok(Blocking::default()));
        assert_eq!(
            parse(Some("_HLS_msn=12&_HLS_part=3")),
            Ok(Blocking {
                msn: Some(12),
                part: Some(3)
            })
        );
        assert_eq!(parse(Some("_HLS_msn=12&x=y")).unwrap().msn, Some(12));
        assert!(parse(Some("_HLS_part=3")).is_err());
        assert!(parse(Some("_HLS_msn=-1")).is_err());
        assert!(parse(Some("_HLS_msn=99999999999999999999")).is_err());
        assert!(parse(Some("_HLS_msn=1&_HLS_part=x")).is_err());
    }

    #[test]
    fn media_paths_name_one_segment_or_part() {
        let p = |s| MediaPath::parse(s);
        assert_eq!(
            p("v/57.m4s"),
            Some(MediaPath {
                stem: "v",
                msn: 57,
                part: None
            })
        );
        assert_eq!(
            p("a/b/3.0.m4s").map(|m| (m.stem, m.part)),
            Some(("a/b", Some(0)))
        );
        for bad in [
            "57.m4s",
            "v/057.m4s",
            "v/x.m4s",
            "v/1.2.3.m4s",
            "v/1.mp4",
            "v/.m4s",
            "v/1..m4s",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn parts_that_do_not_fit_the_playlist_are_refused() {
        let vod = stream().vod().clone();
        let good = SegmentParts {
            starts: vec![0, 1_000_000],
            independent: vec![true, false],
        };
        let err = LowLatency::new(vod.clone(), "v", vec![good.clone()]).unwrap_err();
        assert_eq!(
            err,
            PartsError::Count {
                given: 1,
                expected: 3
            }
        );
        for starts in [vec![1, 2], vec![0, 0], vec![0, 2_000_000], vec![]] {
            let bad = SegmentParts {
                independent: vec![false; starts.len()],
                starts,
            };
            let parts = vec![good.clone(), bad, good.clone()];
            assert_eq!(
                LowLatency::new(vod.clone(), "v", parts).unwrap_err(),
                PartsError::Starts { index: 1 }
            );
        }
    }
}
