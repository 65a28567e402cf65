//! HLS playlists: load VOD playlists, render a looping live playlist from them.
//!
//! Sans-I/O: this module reads no file and no clock. The caller hands it the
//! bytes of a playlist, and the live clock as a [`Duration`] since the server
//! started.
//!
//! # The live loop
//!
//! A VOD media playlist of `N` segments with durations `d0 … d(N-1)` (total
//! `L`, one *loop*) is turned into an endless live stream by repeating it:
//! segment `k` of the live stream (`k = 0, 1, 2, …`, its media sequence
//! number) is VOD segment `k mod N` in loop iteration `k div N`, and ends at
//! stream time
//!
//! ```text
//! E(k) = (k div N)·L + d0 + … + d(k mod N)
//! ```
//!
//! A segment is *published* once the stream time has reached its end:
//! `E(k) <= s`, so a segment whose end falls exactly on `s` is in. A player can
//! only fetch what was fully produced, as with a real live encoder.
//!
//! **Head start.** At server start (elapsed `t = 0`) the stream time is already
//! `s = E(W-1)`, i.e. the stream pretends it began `W` segments before the
//! server did, so the first playlist already holds a full window and a player
//! can start at once. In general `s = t + E(W-1)`.
//!
//! **Window.** The live playlist lists the last `W` published segments
//! (default [`DEFAULT_WINDOW`] = 6, 12 s of the 2 s test stream: hls.js starts
//! 3 target durations behind the edge, so 6 leaves it room):
//! `#EXT-X-MEDIA-SEQUENCE` is the sequence number of the first of them, which
//! never decreases and counts across loops.
//!
//! **Discontinuities.** The jump from the last segment of one iteration back
//! to the first (timestamps restart) is marked with `#EXT-X-DISCONTINUITY`
//! before segment `k` whenever `k mod N = 0` and `k > 0`.
//! `#EXT-X-DISCONTINUITY-SEQUENCE` counts the tags that have slid out of the
//! window (RFC 8216 §6.2.2), i.e. the loop boundaries strictly before the first
//! listed segment: `(first - 1) div N` for `first > 0`, else 0. So the
//! discontinuity sequence number of every segment is its loop iteration, the
//! same in every rendition whose segments line up.
//!
//! Everything else is copied from the VOD playlist: `#EXT-X-VERSION`,
//! `#EXT-X-TARGETDURATION`, `#EXT-X-INDEPENDENT-SEGMENTS`, the `#EXT-X-MAP`
//! init segment, and the segment URIs (the same files repeat every loop). There
//! is no `#EXT-X-ENDLIST` and no `#EXT-X-PLAYLIST-TYPE`.
//!
//! # The replay
//!
//! [`VodPlaylist::render_replay`] renders the same loop as a finite VOD: the
//! playlist repeated `loops` times, media sequence `0 … loops·N − 1`, with
//! `#EXT-X-DISCONTINUITY` before segment `k` whenever `k mod N = 0` and
//! `k > 0` (the very tags the live loop carries, so a player sees the same
//! stream, only seekable), `#EXT-X-PLAYLIST-TYPE:VOD` and `#EXT-X-ENDLIST`.
//! It turns a short test stream into a long VOD (the committed 20 s stream
//! repeated 15 times is five minutes) without storing any more media.
//! `loops` is bounded by [`MAX_REPLAY_LOOPS`] and by [`MAX_SEGMENTS`] in all.
//!
//! Durations are kept as whole microseconds so that sums are exact and
//! rendering prints what was read.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Segments listed in a live playlist unless configured otherwise.
pub const DEFAULT_WINDOW: NonZeroUsize = NonZeroUsize::new(6).unwrap();

/// Longest segment accepted, in seconds: a sanity bound on input, far above
/// anything HLS uses (Apple recommends 6 s).
pub const MAX_SEGMENT_SECS: u32 = 600;

/// Most segments accepted in one playlist (a bound on memory for bad input).
pub const MAX_SEGMENTS: usize = 100_000;

/// Most repetitions a replay accepts (see [`VodPlaylist::render_replay`]):
/// enough for hours of the test stream, small enough that a mistyped number
/// cannot make the origin render megabytes per request.
pub const MAX_REPLAY_LOOPS: u32 = 1000;

/// A replay asked for a number of loops out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("loops must be from 1 to {max} for this stream, got {loops}")]
pub struct BadLoops {
    /// What was asked.
    pub loops: u64,
    /// The largest accepted ([`VodPlaylist::max_replay_loops`]).
    pub max: u32,
}

/// Why a playlist was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaylistError {
    /// The text is not a well-formed playlist (or the parser stopped early).
    #[error("syntax error at line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// A master playlist was expected.
    #[error("not a master playlist (it has no #EXT-X-STREAM-INF)")]
    NotMaster,
    /// A media playlist was expected.
    #[error("not a media playlist (it looks like a master playlist)")]
    NotMedia,
    /// A master playlist without any variant stream.
    #[error("master playlist lists no variant stream")]
    NoVariants,
    /// A media playlist without any segment.
    #[error("media playlist has no segment")]
    NoSegments,
    /// More segments than [`MAX_SEGMENTS`].
    #[error("media playlist has {count} segments, more than the {MAX_SEGMENTS} accepted")]
    TooManySegments { count: usize },
    /// `#EXT-X-TARGETDURATION` missing or zero.
    #[error("#EXT-X-TARGETDURATION is missing or zero")]
    NoTargetDuration,
    /// A segment duration that is not a positive number of at most
    /// [`MAX_SEGMENT_SECS`] seconds.
    #[error("segment {index} ({uri:?}) has duration {duration}, not in (0, {MAX_SEGMENT_SECS}] s")]
    BadDuration {
        index: usize,
        uri: String,
        duration: f32,
    },
    /// A URI this origin cannot serve from its directory.
    #[error("URI {uri:?} is not a plain relative file path: {reason}")]
    BadUri { uri: String, reason: &'static str },
    /// A feature of HLS this origin does not implement.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

/// One segment of a VOD media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// As written in the playlist: relative to the playlist's location.
    pub uri: String,
    /// `#EXTINF` duration, to the microsecond.
    pub duration: Duration,
}

/// A VOD media playlist, validated and ready to be looped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VodPlaylist {
    version: Option<usize>,
    target_duration: u64,
    independent_segments: bool,
    init_uri: Option<String>,
    segments: Vec<Segment>,
    /// `ends[i]`: end of segment `i` within one loop, in µs (prefix sums,
    /// strictly increasing; the last one is the loop duration).
    ends: Vec<u64>,
}

/// The media playlists a master playlist refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterPlaylist {
    /// URIs of the variant streams' and renditions' (`EXT-X-MEDIA`) media
    /// playlists, relative to the master, in order of appearance, without
    /// duplicates.
    pub media_playlists: Vec<String>,
}

/// One segment of a live window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSegment {
    /// Media sequence number: the index in the endless stream.
    pub sequence: u64,
    /// Loop iteration (`sequence div N`); also its discontinuity sequence number.
    pub iteration: u64,
    /// Index into [`VodPlaylist::segments`] (`sequence mod N`).
    pub index: usize,
    /// Preceded by `#EXT-X-DISCONTINUITY` (first segment of a later iteration).
    pub discontinuity: bool,
}

/// What a live playlist lists at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveWindow {
    /// `#EXT-X-MEDIA-SEQUENCE`: sequence number of the first segment.
    pub media_sequence: u64,
    /// `#EXT-X-DISCONTINUITY-SEQUENCE`.
    pub discontinuity_sequence: u64,
    /// Oldest first, consecutive sequence numbers.
    pub segments: Vec<LiveSegment>,
}

impl VodPlaylist {
    /// Parses and validates a media playlist.
    ///
    /// Accepted: segments with positive durations and plain relative URIs, at
    /// most one init segment (`EXT-X-MAP`, before the first segment).
    /// Refused as [`PlaylistError::Unsupported`]: byte ranges, encryption,
    /// discontinuities inside the VOD, several init segments.
    pub fn parse(bytes: &[u8]) -> Result<Self, PlaylistError> {
        if m3u8_rs::is_master_playlist(bytes) {
            return Err(PlaylistError::NotMedia);
        }
        let playlist = match m3u8_rs::parse_media_playlist(bytes) {
            Ok((rest, playlist)) => {
                check_fully_parsed(bytes, rest)?;
                playlist
            }
            Err(e) => return Err(syntax_error(bytes, e)),
        };
        if playlist.i_frames_only {
            return Err(PlaylistError::Unsupported("I-frame playlists"));
        }
        if playlist.segments.is_empty() {
            return Err(PlaylistError::NoSegments);
        }
        if playlist.segments.len() > MAX_SEGMENTS {
            return Err(PlaylistError::TooManySegments {
                count: playlist.segments.len(),
            });
        }
        if playlist.target_duration == 0 {
            return Err(PlaylistError::NoTargetDuration);
        }

        let mut init_uri: Option<String> = None;
        let mut segments = Vec::with_capacity(playlist.segments.len());
        let mut ends = Vec::with_capacity(playlist.segments.len());
        let mut end_us = 0u64;
        for (index, seg) in playlist.segments.into_iter().enumerate() {
            if let Some(map) = seg.map {
                // The live playlist states one EXT-X-MAP at its top, so it must
                // apply to every segment.
                if index > 0 {
                    return Err(PlaylistError::Unsupported(
                        "EXT-X-MAP after the first segment",
                    ));
                }
                if map.byte_range.is_some() {
                    return Err(PlaylistError::Unsupported("EXT-X-MAP with BYTERANGE"));
                }
                check_relative_path(&map.uri).map_err(|reason| PlaylistError::BadUri {
                    uri: map.uri.clone(),
                    reason,
                })?;
                init_uri = Some(map.uri);
            }
            if seg.byte_range.is_some() {
                return Err(PlaylistError::Unsupported("EXT-X-BYTERANGE"));
            }
            if seg
                .key
                .as_ref()
                .is_some_and(|k| k.method != m3u8_rs::KeyMethod::None)
            {
                return Err(PlaylistError::Unsupported("encrypted segments (EXT-X-KEY)"));
            }
            if seg.discontinuity {
                // Would shift the discontinuity sequence of the loop; the test
                // streams never need it.
                return Err(PlaylistError::Unsupported(
                    "EXT-X-DISCONTINUITY in a VOD playlist",
                ));
            }
            check_relative_path(&seg.uri).map_err(|reason| PlaylistError::BadUri {
                uri: seg.uri.clone(),
                reason,
            })?;
            let duration = duration_us(seg.duration).ok_or_else(|| PlaylistError::BadDuration {
                index,
                uri: seg.uri.clone(),
                duration: seg.duration,
            })?;
            // Cannot overflow: at most MAX_SEGMENTS × MAX_SEGMENT_SECS seconds.
            end_us += duration;
            ends.push(end_us);
            segments.push(Segment {
                uri: seg.uri,
                duration: Duration::from_micros(duration),
            });
        }

        Ok(Self {
            version: playlist.version,
            target_duration: playlist.target_duration,
            independent_segments: playlist.independent_segments,
            init_uri,
            segments,
            ends,
        })
    }

    /// The segments, in playlist order (never empty).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// URI of the init segment (`EXT-X-MAP`), if the playlist has one.
    pub fn init_uri(&self) -> Option<&str> {
        self.init_uri.as_deref()
    }

    /// `#EXT-X-TARGETDURATION`, in seconds.
    pub fn target_duration(&self) -> u64 {
        self.target_duration
    }

    /// Duration of one loop: the sum of all segment durations.
    pub fn loop_duration(&self) -> Duration {
        Duration::from_micros(self.loop_us())
    }

    fn loop_us(&self) -> u64 {
        // `ends` is never empty: parse refuses playlists without segments.
        self.ends.last().copied().unwrap_or(0)
    }

    /// End of live segment `k` in stream time, µs: `E(k)` in the module docs.
    pub(crate) fn end_of(&self, k: u64) -> u128 {
        let n = self.ends.len() as u64;
        let iteration = u128::from(k / n);
        // k % n < n = ends.len(), so the index is in range.
        let within = u128::from(self.ends[(k % n) as usize]);
        iteration * u128::from(self.loop_us()) + within
    }

    /// Number of live segments published by stream time `s_us`: those with
    /// `E(k) <= s_us`.
    pub(crate) fn published(&self, s_us: u128) -> u64 {
        let loop_us = u128::from(self.loop_us());
        let full = s_us / loop_us;
        let rem = s_us % loop_us;
        let within = self.ends.partition_point(|&end| u128::from(end) <= rem);
        let n = self.ends.len() as u128;
        u64::try_from(full * n + within as u128).unwrap_or(u64::MAX)
    }

    /// The segments a live playlist lists `elapsed` after the server started,
    /// with a window of `window` segments (see the module docs).
    pub fn live_window(&self, elapsed: Duration, window: NonZeroUsize) -> LiveWindow {
        let n = self.segments.len() as u64;
        let w = window.get() as u64;
        let head_start = self.end_of(w - 1);
        let published = self.published(elapsed.as_micros().saturating_add(head_start));
        // published >= w: at elapsed 0 exactly segments 0..w are out.
        let first = published.saturating_sub(w);
        let segments = (first..published)
            .map(|sequence| LiveSegment {
                sequence,
                iteration: sequence / n,
                index: (sequence % n) as usize,
                discontinuity: sequence > 0 && sequence % n == 0,
            })
            .collect();
        LiveWindow {
            media_sequence: first,
            discontinuity_sequence: if first == 0 { 0 } else { (first - 1) / n },
            segments,
        }
    }

    /// Renders the live media playlist `elapsed` after the server started.
    pub fn render_live(&self, elapsed: Duration, window: NonZeroUsize) -> String {
        let live = self.live_window(elapsed, window);
        let mut out = String::with_capacity(256 + 48 * live.segments.len());
        // Writing to a String cannot fail.
        let _ = self.write_live(&mut out, &live);
        out
    }

    fn write_live(&self, out: &mut String, live: &LiveWindow) -> std::fmt::Result {
        self.write_live_head(out, live, "")?;
        for seg in &live.segments {
            self.write_segment(out, seg.index, seg.discontinuity)?;
        }
        Ok(())
    }

    /// The tags of a live playlist before its first segment; `extra` (whole
    /// lines) goes after `#EXT-X-TARGETDURATION`.
    pub(crate) fn write_live_head(
        &self,
        out: &mut String,
        live: &LiveWindow,
        extra: &str,
    ) -> std::fmt::Result {
        writeln!(out, "#EXTM3U")?;
        if let Some(version) = self.version {
            writeln!(out, "#EXT-X-VERSION:{version}")?;
        }
        writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration)?;
        out.push_str(extra);
        writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", live.media_sequence)?;
        writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            live.discontinuity_sequence
        )?;
        self.write_common_tags(out)
    }

    /// `#EXT-X-INDEPENDENT-SEGMENTS` and `#EXT-X-MAP`, as the VOD has them.
    fn write_common_tags(&self, out: &mut String) -> std::fmt::Result {
        if self.independent_segments {
            writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS")?;
        }
        if let Some(init) = &self.init_uri {
            // check_relative_path refused quotes, so this needs no escaping.
            writeln!(out, "#EXT-X-MAP:URI=\"{init}\"")?;
        }
        Ok(())
    }

    /// VOD segment `index`, after `#EXT-X-DISCONTINUITY` if `discontinuity`.
    fn write_segment(
        &self,
        out: &mut String,
        index: usize,
        discontinuity: bool,
    ) -> std::fmt::Result {
        if discontinuity {
            writeln!(out, "#EXT-X-DISCONTINUITY")?;
        }
        self.write_extinf(out, index)?;
        writeln!(out, "{}", self.segments[index].uri)
    }

    /// `#EXTINF` of VOD segment `index`, to the microsecond.
    pub(crate) fn write_extinf(&self, out: &mut String, index: usize) -> std::fmt::Result {
        let us = self.segments[index].duration.as_micros();
        writeln!(out, "#EXTINF:{}.{:06},", us / 1_000_000, us % 1_000_000)
    }

    /// The most loops [`render_replay`](Self::render_replay) accepts for this
    /// playlist: [`MAX_REPLAY_LOOPS`], fewer if that many would list more
    /// than [`MAX_SEGMENTS`] segments (never less than 1: a parsed playlist
    /// has at most `MAX_SEGMENTS`).
    pub fn max_replay_loops(&self) -> u32 {
        let by_segments = MAX_SEGMENTS / self.segments.len().max(1);
        u32::try_from(by_segments)
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_REPLAY_LOOPS)
    }

    /// Renders this playlist repeated `loops` times as one VOD media playlist
    /// (see *The replay* in the module docs), or refuses a `loops` outside
    /// `1..=`[`max_replay_loops`](Self::max_replay_loops).
    pub fn render_replay(&self, loops: u64) -> Result<String, BadLoops> {
        let max = self.max_replay_loops();
        if loops == 0 || loops > u64::from(max) {
            return Err(BadLoops { loops, max });
        }
        // Bounded above: at most MAX_SEGMENTS lines of segments.
        let n = self.segments.len();
        let total = n * loops as usize;
        let mut out = String::with_capacity(256 + 48 * total);
        // Writing to a String cannot fail.
        let _ = self.write_replay(&mut out, total);
        Ok(out)
    }

    fn write_replay(&self, out: &mut String, total: usize) -> std::fmt::Result {
        let n = self.segments.len();
        writeln!(out, "#EXTM3U")?;
        if let Some(version) = self.version {
            writeln!(out, "#EXT-X-VERSION:{version}")?;
        }
        writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration)?;
        writeln!(out, "#EXT-X-MEDIA-SEQUENCE:0")?;
        writeln!(out, "#EXT-X-PLAYLIST-TYPE:VOD")?;
        self.write_common_tags(out)?;
        for k in 0..total {
            self.write_segment(out, k % n, k > 0 && k % n == 0)?;
        }
        writeln!(out, "#EXT-X-ENDLIST")
    }
}

impl MasterPlaylist {
    /// Parses and validates a master playlist.
    pub fn parse(bytes: &[u8]) -> Result<Self, PlaylistError> {
        if !m3u8_rs::is_master_playlist(bytes) {
            return Err(PlaylistError::NotMaster);
        }
        let playlist = match m3u8_rs::parse_master_playlist(bytes) {
            Ok((rest, playlist)) => {
                check_fully_parsed(bytes, rest)?;
                playlist
            }
            Err(e) => return Err(syntax_error(bytes, e)),
        };
        if playlist.variants.iter().any(|v| v.is_i_frame) {
            return Err(PlaylistError::Unsupported("I-frame playlists"));
        }
        if playlist.variants.is_empty() {
            return Err(PlaylistError::NoVariants);
        }
        let uris = playlist
            .variants
            .into_iter()
            .map(|v| v.uri)
            .chain(playlist.alternatives.into_iter().filter_map(|a| a.uri));
        let mut media_playlists: Vec<String> = Vec::new();
        for uri in uris {
            check_relative_path(&uri).map_err(|reason| PlaylistError::BadUri {
                uri: uri.clone(),
                reason,
            })?;
            if !media_playlists.contains(&uri) {
                media_playlists.push(uri);
            }
        }
        Ok(Self { media_playlists })
    }
}

/// Checks that `path` names a file below a directory: relative, `/`-separated,
/// no `.`/`..`/empty component, and none of the characters that would make it
/// a URL with a scheme, query or fragment, need percent-decoding, or break a
/// quoted playlist attribute. Used both for URIs in playlists and for request
/// paths, so whatever a playlist names can be requested.
pub fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    if path.len() > 1024 {
        return Err("longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_control() || matches!(c, '\\' | ':' | '?' | '#' | '%' | '"'))
    {
        return Err(match c {
            '\\' => "contains a backslash",
            ':' => "contains ':' (a scheme or drive?)",
            '?' | '#' => "contains a query or fragment",
            '%' => "contains percent-encoding",
            '"' => "contains a double quote",
            _ => "contains a control character",
        });
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty path component"),
            "." | ".." => return Err("contains a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// `#EXTINF` seconds to whole microseconds, if in `(0, MAX_SEGMENT_SECS]`.
fn duration_us(secs: f32) -> Option<u64> {
    // f32 holds ~7 significant digits: rounding to µs recovers what was written
    // (2.002 is 2.0020000934… as f32).
    let us = (f64::from(secs) * 1e6).round();
    (us.is_finite() && us >= 1.0 && us <= f64::from(MAX_SEGMENT_SECS) * 1e6).then_some(us as u64)
}

/// m3u8-rs stops at the first line it cannot read and returns what it parsed
/// so far; anything but whitespace left over is an error here, so a corrupt
/// playlist is never served half-read.
fn check_fully_parsed(input: &[u8], rest: &[u8]) -> Result<(), PlaylistError> {
    match rest.iter().position(|b| !b.is_ascii_whitespace()) {
        None => Ok(()),
        Some(skip) => {
            let at = &rest[skip..];
            let line_end = at.iter().position(|&b| b == b'\n').unwrap_or(at.len());
            let text = String::from_utf8_lossy(&at[..line_end.min(80)]);
            Err(PlaylistError::Syntax {
                line: line_of(input, at),
                message: format!("cannot read {:?}", text.trim_end()),
            })
        }
    }
}

fn syntax_error(input: &[u8], e: nom::Err<nom::error::Error<&[u8]>>) -> PlaylistError {
    match e {
        nom::Err::Error(e) | nom::Err::Failure(e) => {
            let message = if line_of(input, e.input) == 1 && !input.starts_with(b"#EXTM3U") {
                "does not start with #EXTM3U".to_owned()
            } else {
                format!("parser stopped ({:?})", e.code)
            };
            PlaylistError::Syntax {
                line: line_of(input, e.input),
                message,
            }
        }
        nom::Err::Incomplete(_) => PlaylistError::Syntax {
            line: input.iter().filter(|&&b| b == b'\n').count() + 1,
            message: "unexpected end of input".to_owned(),
        },
    }
}

/// 1-based line number at which `rest`, a suffix of `input`, starts.
fn line_of(input: &[u8], rest: &[u8]) -> usize {
    let consumed = input.len().saturating_sub(rest.len());
    input[..consumed].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const W6: NonZeroUsize = DEFAULT_WINDOW;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A VOD playlist of `n` segments of `dur` seconds, like ffmpeg writes.
    fn vod_text(n: usize, dur: &str) -> String {
        let mut s = String::from(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init_a.mp4\"\n",
        );
        for i in 0..n {
            s.push_str(&format!("#EXTINF:{dur},\na_{i:02}.m4s\n"));
        }
        s.push_str("#EXT-X-ENDLIST");
        s
    }

    fn vod(n: usize) -> VodPlaylist {
        VodPlaylist::parse(vod_text(n, "2.000000").as_bytes()).expect("test playlist parses")
    }

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("non-zero")
    }

    fn sequences(w: &LiveWindow) -> Vec<u64> {
        w.segments.iter().map(|s| s.sequence).collect()
    }

    #[test]
    fn parses_ffmpeg_vod_playlist() {
        let p = vod(10);
        assert_eq!(p.segments().len(), 10);
        assert_eq!(p.init_uri(), Some("init_a.mp4"));
        assert_eq!(p.target_duration(), 2);
        assert_eq!(p.loop_duration(), secs(20.0));
        assert_eq!(
            p.segments()[3],
            Segment {
                uri: "a_03.m4s".into(),
                duration: secs(2.0)
            }
        );
    }

    #[test]
    fn parses_committed_test_stream() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../media/test-stream/");
        let master = std::fs::read(format!("{dir}master.m3u8")).expect("read master");
        let master = MasterPlaylist::parse(&master).expect("master parses");
        assert_eq!(master.media_playlists, ["360p.m3u8", "180p.m3u8"]);
        for uri in &master.media_playlists {
            let text = std::fs::read(format!("{dir}{uri}")).expect("read variant");
            let p = VodPlaylist::parse(&text).expect("variant parses");
            assert_eq!(p.segments().len(), 10);
            assert_eq!(p.target_duration(), 2);
            assert!(p.init_uri().is_some());
            assert_eq!(p.loop_duration(), secs(20.0));
        }
    }

    #[test]
    fn fractional_durations_are_exact_to_the_microsecond() {
        let p = VodPlaylist::parse(vod_text(3, "2.002").as_bytes()).expect("parses");
        assert_eq!(p.segments()[0].duration, Duration::from_micros(2_002_000));
        assert_eq!(p.loop_duration(), Duration::from_micros(6_006_000));
        let text = p.render_live(Duration::ZERO, nz(2));
        assert!(text.contains("#EXTINF:2.002000,\n"), "{text}");
    }

    #[test]
    fn window_at_start_holds_the_first_w_segments() {
        let w = vod(10).live_window(Duration::ZERO, W6);
        assert_eq!(w.media_sequence, 0);
        assert_eq!(w.discontinuity_sequence, 0);
        assert_eq!(sequences(&w), [0, 1, 2, 3, 4, 5]);
        assert!(
            w.segments
                .iter()
                .all(|s| !s.discontinuity && s.iteration == 0)
        );
    }

    #[test]
    fn window_advances_one_segment_per_duration() {
        let p = vod(10);
        // Just before 2 s nothing new; at 2 s exactly segment 6 is published.
        assert_eq!(p.live_window(secs(1.999_999), W6).media_sequence, 0);
        assert_eq!(p.live_window(secs(2.0), W6).media_sequence, 1);
        assert_eq!(sequences(&p.live_window(secs(2.0), W6)), [1, 2, 3, 4, 5, 6]);
        assert_eq!(p.live_window(secs(7.5), W6).media_sequence, 3);
        assert_eq!(p.live_window(secs(7.5), W6).segments.len(), 6);
    }

    #[test]
    fn boundary_is_inclusive_to_the_microsecond() {
        let p = vod(10);
        let edge = secs(4.0);
        let before = p.live_window(edge - Duration::from_micros(1), W6);
        let at = p.live_window(edge, W6);
        assert_eq!(before.segments.last().map(|s| s.sequence), Some(6));
        assert_eq!(at.segments.last().map(|s| s.sequence), Some(7));
    }

    #[test]
    fn loop_boundary_gets_a_discontinuity() {
        let p = vod(10);
        // Head start 12 s: at t = 8 s, stream time 20 s, segments 0..=9 out.
        let w = p.live_window(secs(8.0), W6);
        assert_eq!(sequences(&w), [4, 5, 6, 7, 8, 9]);
        assert!(w.segments.iter().all(|s| !s.discontinuity));
        // At t = 10 s segment 10 (VOD segment 0 of iteration 1) is out.
        let w = p.live_window(secs(10.0), W6);
        assert_eq!(sequences(&w), [5, 6, 7, 8, 9, 10]);
        let last = w.segments[5];
        assert_eq!(
            (last.index, last.iteration, last.discontinuity),
            (0, 1, true)
        );
        assert_eq!(w.discontinuity_sequence, 0);
        let text = p.render_live(secs(10.0), W6);
        assert!(
            text.contains("a_09.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000000,\na_00.m4s\n"),
            "{text}"
        );
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    }

    #[test]
    fn discontinuity_sequence_counts_tags_that_left_the_window() {
        let p = vod(10);
        // first = 10 is the boundary segment itself: its tag is still listed.
        let at_boundary = p.live_window(secs(20.0), W6);
        assert_eq!(at_boundary.media_sequence, 10);
        assert!(at_boundary.segments[0].discontinuity);
        assert_eq!(at_boundary.discontinuity_sequence, 0);
        // One segment later the tag has slid out.
        let after = p.live_window(secs(22.0), W6);
        assert_eq!(after.media_sequence, 11);
        assert!(after.segments.iter().all(|s| !s.discontinuity));
        assert_eq!(after.discontinuity_sequence, 1);
        // Many loops later: first = 1000 + 3 → 100 tags passed.
        let far = p.live_window(secs(2.0 * 1003.0), W6);
        assert_eq!(far.media_sequence, 1003);
        assert_eq!(far.discontinuity_sequence, 100);
    }

    #[test]
    fn discontinuity_sequence_of_each_segment_is_its_iteration() {
        // What a player derives (header value, +1 per tag) must equal the
        // iteration, at every instant, so all renditions agree.
        let p = vod(4);
        for step in 0..200u64 {
            let w = p.live_window(Duration::from_millis(step * 700), nz(3));
            let mut cc = w.discontinuity_sequence;
            for s in &w.segments {
                if s.discontinuity {
                    cc += 1;
                }
                assert_eq!(cc, s.iteration, "at step {step}: {w:?}");
            }
        }
    }

    #[test]
    fn media_sequence_is_monotonic_and_segments_consecutive() {
        let p = VodPlaylist::parse(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:1.5,\na\n#EXTINF:2.25,\nb\n#EXTINF:0.5,\nc\n",
        )
        .expect("parses");
        let mut prev = 0;
        for ms in (0..60_000u64).step_by(97) {
            let w = p.live_window(Duration::from_millis(ms), nz(4));
            assert!(w.media_sequence >= prev);
            prev = w.media_sequence;
            assert_eq!(w.segments.len(), 4);
            for (i, s) in w.segments.iter().enumerate() {
                assert_eq!(s.sequence, w.media_sequence + i as u64);
                assert_eq!(s.index as u64, s.sequence % 3);
            }
        }
        // Head start E(3) = 4.25 + 1.5 = 5.75 s; at 59.5 s the stream is at
        // 65.25 s = 15 loops (63.75 s) + 1.5 s: 15·3 + 1 = 46 published.
        assert_eq!(p.live_window(secs(59.5), nz(4)).segments[3].sequence, 45);
    }

    #[test]
    fn window_longer_than_the_vod_spans_loops() {
        let p = vod(3);
        let w = p.live_window(Duration::ZERO, nz(7));
        assert_eq!(sequences(&w), [0, 1, 2, 3, 4, 5, 6]);
        let tags: Vec<bool> = w.segments.iter().map(|s| s.discontinuity).collect();
        assert_eq!(tags, [false, false, false, true, false, false, true]);
        assert_eq!(w.discontinuity_sequence, 0);
    }

    #[test]
    fn window_of_one() {
        let p = vod(10);
        assert_eq!(sequences(&p.live_window(Duration::ZERO, nz(1))), [0]);
        assert_eq!(sequences(&p.live_window(secs(3.0), nz(1))), [1]);
    }

    #[test]
    fn huge_elapsed_does_not_overflow() {
        let p = vod(10);
        let w = p.live_window(Duration::MAX, W6);
        let last = (Duration::MAX.as_micros() + 12_000_000) / 2_000_000 - 1;
        assert_eq!(sequences(&w).last().map(|&s| u128::from(s)), Some(last));
        assert_eq!(w.segments.len(), 6);
        // 1 µs segments: the count of published segments saturates at u64::MAX.
        let tiny = VodPlaylist::parse(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.000001,\na\n")
            .expect("parses");
        let w = tiny.live_window(Duration::MAX, W6);
        assert_eq!(sequences(&w), (u64::MAX - 6..u64::MAX).collect::<Vec<_>>());
    }

    #[test]
    fn rendered_playlist_has_live_headers() {
        let p = vod(10);
        let text = p.render_live(secs(2.5), W6);
        let expected_head = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
            #EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
            #EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init_a.mp4\"\n\
            #EXTINF:2.000000,\na_01.m4s\n";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(!text.contains("ENDLIST"));
        assert!(!text.contains("PLAYLIST-TYPE"));
        assert_eq!(text.matches("#EXTINF").count(), 6);
        // It is itself a valid live media playlist.
        let reparsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("reparses");
        assert_eq!(reparsed.media_sequence, 1);
        assert!(!reparsed.end_list);
        assert_eq!(reparsed.segments.len(), 6);
        assert_eq!(
            reparsed.segments[0].map.as_ref().map(|m| m.uri.as_str()),
            Some("init_a.mp4")
        );
    }

    #[test]
    fn playlist_without_map_renders_without_map() {
        let p = VodPlaylist::parse(b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nx.ts\n")
            .expect("parses");
        assert_eq!(p.init_uri(), None);
        let text = p.render_live(Duration::ZERO, nz(2));
        assert!(!text.contains("EXT-X-MAP"));
        assert!(!text.contains("EXT-X-VERSION"));
        assert!(
            text.ends_with(
                "#EXTINF:4.000000,\nx.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:4.000000,\nx.ts\n"
            )
        );
    }

    #[test]
    fn replay_of_a_small_playlist_is_exact() {
        let p = VodPlaylist::parse(vod_text(2, "2.5").as_bytes()).expect("parses");
        let text = p.render_replay(3).expect("3 loops");
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init_a.mp4\"\n\
             #EXTINF:2.500000,\na_00.m4s\n#EXTINF:2.500000,\na_01.m4s\n\
             #EXT-X-DISCONTINUITY\n#EXTINF:2.500000,\na_00.m4s\n#EXTINF:2.500000,\na_01.m4s\n\
             #EXT-X-DISCONTINUITY\n#EXTINF:2.500000,\na_00.m4s\n#EXTINF:2.500000,\na_01.m4s\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn replay_sequences_and_discontinuities_match_the_live_loop() {
        let p = vod(10);
        let text = p.render_replay(15).expect("15 loops");
        let r = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("reparses");
        assert_eq!(r.media_sequence, 0);
        assert!(r.end_list);
        assert_eq!(r.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
        assert_eq!(r.target_duration, 2);
        assert_eq!(r.segments.len(), 150);
        let total: f64 = r.segments.iter().map(|s| f64::from(s.duration)).sum();
        assert!((total - 300.0).abs() < 1e-6, "{total}");
        // The live loop, watched long enough, lists sequences 0..150 with its
        // discontinuity tags on the very same ones.
        let live: Vec<LiveSegment> = (0..150u64)
            .map(|k| {
                let w = p.live_window(secs(2.0 * k as f64), nz(1));
                w.segments[0]
            })
            .collect();
        for (k, (seg, live)) in r.segments.iter().zip(&live).enumerate() {
            assert_eq!(live.sequence, k as u64);
            assert_eq!(seg.discontinuity, live.discontinuity, "segment {k}");
            assert_eq!(seg.discontinuity, k > 0 && k % 10 == 0, "segment {k}");
            assert_eq!(seg.uri, format!("a_{:02}.m4s", k % 10), "segment {k}");
        }
        // EXT-X-MAP once, at the top, applying to all.
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1);
        assert_eq!(
            r.segments[0].map.as_ref().map(|m| m.uri.as_str()),
            Some("init_a.mp4")
        );
    }

    #[test]
    fn replay_of_one_loop_is_the_vod() {
        let p = vod(4);
        let text = p.render_replay(1).expect("1 loop");
        assert!(!text.contains("DISCONTINUITY"), "{text}");
        assert_eq!(text.matches("#EXTINF").count(), 4);
        assert!(text.ends_with("a_03.m4s\n#EXT-X-ENDLIST\n"), "{text}");
    }

    #[test]
    fn replay_loops_are_bounded() {
        let p = vod(10);
        assert_eq!(p.max_replay_loops(), MAX_REPLAY_LOOPS);
        assert_eq!(
            p.render_replay(0),
            Err(BadLoops {
                loops: 0,
                max: 1000
            })
        );
        assert!(p.render_replay(1000).is_ok());
        assert_eq!(
            p.render_replay(1001),
            Err(BadLoops {
                loops: 1001,
                max: 1000
            })
        );
        assert!(p.render_replay(u64::MAX).is_err());
        // 500 segments a loop: 200 loops reach MAX_SEGMENTS.
        let big = vod(500);
        assert_eq!(big.max_replay_loops(), 200);
        let text = big.render_replay(200).expect("200 loops");
        assert_eq!(text.matches("#EXTINF").count(), MAX_SEGMENTS);
        assert!(big.render_replay(201).is_err());
        let e = big.render_replay(201).expect_err("too many");
        assert!(e.to_string().contains("1 to 200"), "{e}");
    }

    #[test]
    fn parses_master_playlist() {
        let text = b"#EXTM3U\n#EXT-X-VERSION:7\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/en.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=620400,RESOLUTION=640x360,CODECS=\"avc1.4d401e,mp4a.40.2\",AUDIO=\"a\"\n\
            360p.m3u8\n\n\
            #EXT-X-STREAM-INF:BANDWIDTH=290400,RESOLUTION=320x180,AUDIO=\"a\"\n\
            180p.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=290400,RESOLUTION=320x180,AUDIO=\"a\"\n\
            180p.m3u8\n";
        let m = MasterPlaylist::parse(text).expect("parses");
        assert_eq!(
            m.media_playlists,
            ["360p.m3u8", "180p.m3u8", "audio/en.m3u8"]
        );
    }

    #[test]
    fn refuses_wrong_kind_of_playlist() {
        let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n";
        assert_eq!(VodPlaylist::parse(master), Err(PlaylistError::NotMedia));
        let media = vod_text(2, "2.0");
        assert_eq!(
            MasterPlaylist::parse(media.as_bytes()),
            Err(PlaylistError::NotMaster)
        );
    }

    #[test]
    fn refuses_garbage_with_line_numbers() {
        let e = VodPlaylist::parse(b"hello").expect_err("not a playlist");
        assert!(matches!(e, PlaylistError::Syntax { line: 1, .. }), "{e}");
        assert!(e.to_string().contains("#EXTM3U"), "{e}");

        let e = VodPlaylist::parse(b"").expect_err("empty");
        assert!(matches!(e, PlaylistError::Syntax { .. }), "{e}");

        let e = MasterPlaylist::parse(b"").expect_err("empty");
        assert_eq!(e, PlaylistError::NotMaster);
    }

    #[test]
    fn refuses_truncated_or_bad_input() {
        let e = VodPlaylist::parse(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n").expect_err("no segments");
        assert_eq!(e, PlaylistError::NoSegments);

        let e = VodPlaylist::parse(b"#EXTM3U\n#EXTINF:2,\na.m4s\n").expect_err("no target");
        assert_eq!(e, PlaylistError::NoTargetDuration);

        for bad in ["0", "-1", "601", "nan"] {
            let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:{bad},\na.m4s\n");
            match VodPlaylist::parse(text.as_bytes()) {
                Err(PlaylistError::BadDuration { index: 0, .. } | PlaylistError::Syntax { .. }) => {
                }
                other => panic!("duration {bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_unsafe_uris() {
        for uri in [
            "../secret.m4s",
            "/etc/passwd",
            "a/../../b",
            "http://example.invalid/a.m4s",
            "a\\b",
            "a//b",
            "./a",
            "a?x=1",
            "a%2e",
        ] {
            let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{uri}\n");
            let e = VodPlaylist::parse(text.as_bytes()).expect_err(uri);
            assert!(matches!(e, PlaylistError::BadUri { .. }), "{uri}: {e}");
            assert!(e.to_string().contains(&format!("{uri:?}")), "{e}");
        }
        let text =
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"../init.mp4\"\n#EXTINF:2,\na\n";
        assert!(matches!(
            VodPlaylist::parse(text.as_bytes()),
            Err(PlaylistError::BadUri { .. })
        ));
        let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n../v.m3u8\n";
        assert!(matches!(
            MasterPlaylist::parse(master),
            Err(PlaylistError::BadUri { .. })
        ));
    }

    #[test]
    fn refuses_unsupported_features() {
        let cases: [(&str, &str); 4] = [
            ("#EXT-X-BYTERANGE:100@0\n", "BYTERANGE"),
            ("#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n", "EXT-X-KEY"),
            ("#EXT-X-DISCONTINUITY\n", "DISCONTINUITY"),
            ("#EXT-X-MAP:URI=\"i2.mp4\"\n", "EXT-X-MAP"),
        ];
        for (tag, what) in cases {
            let text =
                format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na\n{tag}#EXTINF:2,\nb\n");
            let e = VodPlaylist::parse(text.as_bytes()).expect_err(what);
            assert!(matches!(e, PlaylistError::Unsupported(_)), "{what}: {e}");
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
        let iframes = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"i.m3u8\"\n";
        assert!(matches!(
            MasterPlaylist::parse(iframes),
            Err(PlaylistError::Unsupported(_))
        ));
    }

    #[test]
    fn relative_path_check() {
        for ok in ["a.m4s", "v0/seg_01.m4s", "a b.ts", "x..y"] {
            assert_eq!(check_relative_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "/a", "..", "a/..", "a/./b", "a/", "c:x", "a\0b", "a\nb", "a\"b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
    }
}
