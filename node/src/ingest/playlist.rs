//! HLS playlists, sans I/O: parsing and following a live media playlist.
//!
//! [`parse`] turns playlist bytes into a [`Playlist`]: a master playlist becomes
//! the list of its renditions, a media playlist becomes its segments. Parsing
//! is done by `m3u8-rs`; this module then checks every value the rest of
//! meshcast relies on and refuses the playlist rather than guess. Nothing here
//! touches the network, a clock or tokio.
//!
//! What is supported:
//! - master playlists: every `EXT-X-STREAM-INF` variant becomes a
//!   [`RenditionInfo`], then every alternative rendition with a playlist of
//!   its own (`EXT-X-MEDIA` of `TYPE` `AUDIO`, `SUBTITLES` or `VIDEO` with a
//!   `URI`: alternate audio, subtitles, camera angles), once per distinct
//!   URI, keeping its `GROUP-ID` and `LANGUAGE`. An `EXT-X-MEDIA` without a
//!   URI (its media is in the variants) and closed captions (in the video)
//!   have nothing to ingest. I-frame-only variants
//!   (`EXT-X-I-FRAME-STREAM-INF`) are ignored.
//! - media playlists, live (sliding window), EVENT and VOD, with MPEG-TS or
//!   fMP4 segments. For fMP4 the `EXT-X-MAP` in force is attached to every
//!   segment it applies to (the tag applies until the next `EXT-X-MAP`).
//! - encrypted segments (`EXT-X-KEY`) pass through as opaque bytes; keys are
//!   not ingested, players fetch them from the origin.
//!
//! - byte-range segments (`EXT-X-BYTERANGE`, with or without an offset: one
//!   without starts where the previous sub-range of the same resource ended)
//!   and byte-range init segments (`EXT-X-MAP` with `BYTERANGE`): each is a
//!   [`ByteRange`] of its resource, fetched with an HTTP `Range` and signed
//!   with its offset.
//!
//! What is refused (see [`PlaylistError`]): I-frame-only media playlists, a
//! byte range without an offset that follows no range of the same resource,
//! empty or overflowing ranges, and absurd values —
//! playlists over [`MAX_PLAYLIST_BYTES`], target durations outside 1..=60 s,
//! segments without a usable `EXTINF`, more than [`MAX_SEGMENTS`] segments or
//! `MAX_RENDITIONS` variants, URIs over [`MAX_URI_LEN`] bytes, sequence numbers
//! over [`MAX_SEQUENCE`]. `m3u8-rs` silently stops at the first line it cannot
//! read, or turns a malformed known tag into an unknown one; both are detected
//! and reported as [`PlaylistError::Unparsable`].
//!
//! [`Tracker`] follows one rendition's media playlist across polls and says
//! what is new: init segments (fMP4 `EXT-X-MAP`) before the first media
//! segment that needs them, then media segments in order, each exactly once.
//! Its algorithm and its handling of restarts are described on the type.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, MasterPlaylist, MediaPlaylistType, VariantStream,
};

use meshcast_proto::MAX_PARTS;

use super::parts::{LowLatency, PartInfo, PartsError};
use meshcast_proto::RenditionKind;
use meshcast_proto::descriptor::{
    MAX_CODECS, MAX_GROUP, MAX_LANGUAGE, MAX_RENDITION_NAME, MAX_RENDITIONS,
};

/// Largest playlist accepted: room for [`MAX_SEGMENTS`] segments with
/// 400-byte lines. Fetch playlists with this size limit.
pub const MAX_PLAYLIST_BYTES: u64 = 4 * 1024 * 1024;
/// Most segments in one media playlist (a 10-hour VOD of 4-second segments).
pub const MAX_SEGMENTS: usize = 10_000;
/// Longest URI of a variant, segment or init map.
pub const MAX_URI_LEN: usize = 1024;
/// Longest target duration; RFC 8216 sets no bound, but a segment that takes
/// more than a minute would defeat live delivery.
pub const MAX_TARGET_DURATION: Duration = Duration::from_secs(60);
/// Highest media sequence number: exact in a JavaScript number (the browser
/// client) and far enough from `u64::MAX` that [`Tracker`] can renumber after
/// origin restarts without overflow.
pub const MAX_SEQUENCE: u64 = 1 << 53;

/// How much of an offending input an error message quotes.
const QUOTE_LEN: usize = 80;
/// How much of the parser's own message is kept (it lists input bytes).
const PARSER_MESSAGE_LEN: usize = 200;

/// A parsed playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playlist {
    /// A master playlist's variant streams, in master order (at least one).
    Master(Vec<RenditionInfo>),
    /// A media playlist; given directly, it is the stream's only rendition
    /// (see [`RenditionInfo::for_media_playlist`]).
    Media(MediaPlaylist),
}

/// One variant stream of a master playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionInfo {
    /// Index among the ingested variants, in master order.
    pub id: u32,
    /// `NAME` attribute if present, else `<width>x<height>`, else the stem of
    /// the URI; made unique within the master, at most `MAX_RENDITION_NAME` bytes.
    pub name: String,
    /// The media playlist's URI as written: relative to the master, or absolute.
    pub uri: String,
    /// `BANDWIDTH`, bits per second.
    pub bandwidth: u64,
    /// `CODECS`, empty when absent.
    pub codecs: String,
    /// `RESOLUTION`, 0×0 when absent (audio-only variants).
    pub width: u32,
    pub height: u32,
    /// A variant, or the kind of an alternative rendition (`EXT-X-MEDIA`)
    /// with its `GROUP-ID` and `LANGUAGE` (empty for variants).
    pub kind: RenditionKind,
    pub group: String,
    pub language: String,
}

impl RenditionInfo {
    /// The single rendition of a stream whose origin is a media playlist.
    pub fn for_media_playlist(uri: &str) -> Self {
        Self {
            id: 0,
            name: truncate(uri_stem(uri), MAX_RENDITION_NAME).to_owned(),
            uri: uri.to_owned(),
            bandwidth: 0,
            codecs: String::new(),
            width: 0,
            height: 0,
            kind: RenditionKind::Variant,
            group: String::new(),
            language: String::new(),
        }
    }
}

/// A media playlist, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION`, 1..=60 s.
    pub target_duration: Duration,
    /// `EXT-X-MEDIA-SEQUENCE`: the sequence number of the first segment.
    pub media_sequence: u64,
    /// At most [`MAX_SEGMENTS`], in playlist order.
    pub segments: Vec<MediaSegment>,
    /// No segment will be added: `EXT-X-ENDLIST` or `EXT-X-PLAYLIST-TYPE:VOD`.
    pub ended: bool,
    /// Parts and blocking reload, for a low-latency playlist.
    pub low_latency: Option<LowLatency>,
    /// How often to reload it, when its source says (a DASH MPD's
    /// `minimumUpdatePeriod`); else RFC 8216's pace by the target duration.
    pub refresh: Option<Duration>,
}

/// One media segment of a media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSegment {
    /// `media_sequence` plus the segment's index in the playlist (renumbered
    /// by [`Tracker`] after an origin restart).
    pub sequence: u64,
    /// As written: relative to the media playlist, or absolute.
    pub uri: String,
    /// `EXTINF`, rounded to the microsecond; positive, at most 60.5 s.
    pub duration: Duration,
    /// `EXT-X-BYTERANGE`: the segment is this range of `uri`.
    pub range: Option<ByteRange>,
    /// URI of the `EXT-X-MAP` in force for this segment (fMP4), as written.
    pub map_uri: Option<String>,
    /// The `BYTERANGE` of that `EXT-X-MAP`.
    pub map_range: Option<ByteRange>,
    /// `EXT-X-DISCONTINUITY` precedes this segment.
    pub discontinuity: bool,
    /// Wall-clock time of its first sample, ms since the Unix epoch: its
    /// `EXT-X-PROGRAM-DATE-TIME`, or the previous segment's plus its
    /// duration (RFC 8216 §4.3.2.6), not across a discontinuity.
    pub program_date_time_ms: Option<u64>,
}

/// `length` bytes of a resource from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

impl ByteRange {
    /// Checks a range as m3u8-rs read it; an absent offset continues
    /// `previous_end`, the end of the previous sub-range of the same resource.
    fn resolve(
        sequence: u64,
        range: &m3u8_rs::ByteRange,
        previous_end: Option<u64>,
    ) -> Result<Self, PlaylistError> {
        let bad = |reason: &str| PlaylistError::BadByteRange {
            sequence,
            reason: reason.into(),
        };
        let offset = match (range.offset, previous_end) {
            (Some(offset), _) => offset,
            (None, Some(end)) => end,
            (None, None) => {
                return Err(bad(
                    "no offset, and no sub-range of the same resource before it",
                ));
            }
        };
        if range.length == 0 {
            return Err(bad("empty"));
        }
        offset
            .checked_add(range.length)
            .ok_or_else(|| bad("its end overflows"))?;
        Ok(Self {
            offset,
            length: range.length,
        })
    }

    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// Why a playlist was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaylistError {
    #[error(
        "playlist of {len} bytes is over the {} byte limit",
        MAX_PLAYLIST_BYTES
    )]
    TooLarge { len: usize },
    #[error("not an HLS playlist (it does not start with #EXTM3U): {start:?}")]
    NotHls { start: String },
    #[error("unparsable playlist: {message}")]
    Unparsable { message: String },
    #[error("master playlist has no variant stream (I-frame-only variants are ignored)")]
    EmptyMaster,
    #[error("variant {variant} of the master playlist has no URI")]
    VariantWithoutUri { variant: usize },
    #[error("variant {variant} of the master playlist: {reason}")]
    BadVariant { variant: usize, reason: String },
    #[error("alternative rendition {name:?} (EXT-X-MEDIA) of the master playlist: {reason}")]
    BadAlternative { name: String, reason: String },
    #[error("URI of {len} bytes is over the {} byte limit: {start:?}", MAX_URI_LEN)]
    UriTooLong { len: usize, start: String },
    #[error("target duration {seconds} s is missing or outside 1..=60 s")]
    TargetDuration { seconds: u64 },
    #[error(
        "segment {sequence}: EXTINF duration {seconds} s is missing, not positive or over 60 s"
    )]
    SegmentDuration { sequence: u64, seconds: f32 },
    #[error("{count} {what} is over the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("sequence number {value} is over the limit of {}", MAX_SEQUENCE)]
    Sequence { value: u64 },
    #[error("segment {sequence}: bad byte range: {reason}")]
    BadByteRange { sequence: u64, reason: String },
    #[error("unsupported playlist feature: {feature}")]
    Unsupported { feature: &'static str },
}

impl From<PartsError> for PlaylistError {
    fn from(e: PartsError) -> Self {
        match e {
            PartsError::Malformed(tag) => PlaylistError::Unparsable {
                message: format!("malformed {tag}"),
            },
            PartsError::Unsupported(feature) => PlaylistError::Unsupported { feature },
            PartsError::UriTooLong { len, .. } => PlaylistError::UriTooLong {
                len,
                start: String::new(),
            },
            PartsError::TooMany => PlaylistError::TooMany {
                what: "parts in one segment",
                count: MAX_PARTS as usize + 1,
                max: MAX_PARTS as usize,
            },
        }
    }
}

/// Parses and checks a master or media playlist.
pub fn parse(bytes: &[u8]) -> Result<Playlist, PlaylistError> {
    if bytes.len() as u64 > MAX_PLAYLIST_BYTES {
        return Err(PlaylistError::TooLarge { len: bytes.len() });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if !bytes.starts_with(b"#EXTM3U") {
        return Err(PlaylistError::NotHls {
            start: quote(bytes),
        });
    }
    // m3u8-rs mistakes a tag on a last line without a newline for a URI.
    let terminated;
    let input = if bytes.ends_with(b"\n") {
        bytes
    } else {
        terminated = [bytes, b"\n"].concat();
        &terminated
    };
    // Not `parse_playlist_res`: it drops the unread rest, and the parser
    // stops silently at the first line it cannot read.
    let (rest, parsed) =
        m3u8_rs::parse_playlist(input).map_err(|error| PlaylistError::Unparsable {
            message: truncate(&error.to_string(), PARSER_MESSAGE_LEN).to_owned(),
        })?;
    if !rest.trim_ascii().is_empty() {
        return Err(PlaylistError::Unparsable {
            message: at_line(input, rest, "cannot read this line"),
        });
    }
    match parsed {
        m3u8_rs::Playlist::MasterPlaylist(master) => renditions(master).map(Playlist::Master),
        m3u8_rs::Playlist::MediaPlaylist(media) => {
            let first = media.media_sequence;
            let mut media = media_playlist(media)?;
            media.low_latency = super::parts::scan(input, first, MAX_URI_LEN)?;
            Ok(Playlist::Media(media))
        }
    }
}

fn renditions(master: MasterPlaylist) -> Result<Vec<RenditionInfo>, PlaylistError> {
    // A malformed EXT-X-STREAM-INF becomes an unknown tag, and the URI line
    // after it silently replaces the URI of the previous variant.
    if master.unknown_tags.iter().any(|t| t.tag == "X-STREAM-INF") {
        return Err(PlaylistError::Unparsable {
            message: "malformed EXT-X-STREAM-INF".to_owned(),
        });
    }
    let variants: Vec<VariantStream> = master
        .variants
        .into_iter()
        .filter(|v| !v.is_i_frame)
        .collect();
    if variants.is_empty() {
        return Err(PlaylistError::EmptyMaster);
    }
    // One rendition per distinct playlist: an alternative may be listed in
    // several groups, and players ask for it by its URL.
    let mut alternatives: Vec<AlternativeMedia> = Vec::new();
    for alternative in master.alternatives {
        let has_playlist = !matches!(
            alternative.media_type,
            AlternativeMediaType::ClosedCaptions | AlternativeMediaType::Other(_)
        );
        if let Some(uri) = alternative.uri.as_deref().filter(|_| has_playlist)
            && !variants.iter().any(|v| v.uri == uri)
            && !alternatives.iter().any(|a| a.uri.as_deref() == Some(uri))
        {
            alternatives.push(alternative);
        }
    }
    let count = variants.len() + alternatives.len();
    if count > MAX_RENDITIONS {
        return Err(PlaylistError::TooMany {
            what: "variant streams and alternative renditions",
            count,
            max: MAX_RENDITIONS,
        });
    }
    let first_alternative = variants.len();
    let all = variants
        .into_iter()
        .enumerate()
        .map(|(index, variant)| rendition(index, variant))
        .chain(
            alternatives
                .into_iter()
                .enumerate()
                .map(|(i, alternative)| alternative_rendition(first_alternative + i, alternative)),
        );
    let mut renditions: Vec<RenditionInfo> = Vec::with_capacity(count);
    for rendition in all {
        let rendition = rendition?;
        let name = if renditions.iter().any(|r| r.name == rendition.name) {
            let suffix = format!("-{}", rendition.id);
            let stem = truncate(
                &rendition.name,
                MAX_RENDITION_NAME.saturating_sub(suffix.len()),
            );
            format!("{stem}{suffix}")
        } else {
            rendition.name.clone()
        };
        renditions.push(RenditionInfo { name, ..rendition });
    }
    Ok(renditions)
}

fn rendition(index: usize, variant: VariantStream) -> Result<RenditionInfo, PlaylistError> {
    let bad = |reason: String| PlaylistError::BadVariant {
        variant: index,
        reason,
    };
    if variant.uri.is_empty() {
        return Err(PlaylistError::VariantWithoutUri { variant: index });
    }
    check_uri(&variant.uri)?;
    let codecs = variant.codecs.unwrap_or_default();
    if codecs.len() > MAX_CODECS {
        return Err(bad(format!(
            "CODECS of {} bytes is over the limit of {MAX_CODECS}",
            codecs.len()
        )));
    }
    let (width, height) = match &variant.resolution {
        None => (0, 0),
        Some(r) => match (u32::try_from(r.width), u32::try_from(r.height)) {
            (Ok(w), Ok(h)) => (w, h),
            _ => return Err(bad(format!("RESOLUTION {r} is out of range"))),
        },
    };
    let explicit_name = variant
        .other_attributes
        .as_ref()
        .and_then(|attributes| attributes.get("NAME"))
        .map(|name| name.as_str().trim())
        .filter(|name| !name.is_empty());
    let name = match (explicit_name, &variant.resolution) {
        (Some(name), _) => name.to_owned(),
        (None, Some(r)) => r.to_string(),
        (None, None) => uri_stem(&variant.uri).to_owned(),
    };
    Ok(RenditionInfo {
        // At most MAX_RENDITIONS variants, checked by the caller.
        id: u32::try_from(index).unwrap_or(u32::MAX),
        name: truncate(&name, MAX_RENDITION_NAME).to_owned(),
        uri: variant.uri,
        bandwidth: variant.bandwidth,
        codecs,
        width,
        height,
        kind: RenditionKind::Variant,
        group: String::new(),
        language: String::new(),
    })
}

/// An `EXT-X-MEDIA` with a playlist of its own, as rendition `index`.
fn alternative_rendition(
    index: usize,
    alternative: AlternativeMedia,
) -> Result<RenditionInfo, PlaylistError> {
    let bad = |reason: String| PlaylistError::BadAlternative {
        name: truncate(&alternative.name, QUOTE_LEN).to_owned(),
        reason,
    };
    let uri = alternative.uri.clone().unwrap_or_default();
    check_uri(&uri)?;
    let kind = match alternative.media_type {
        AlternativeMediaType::Audio => RenditionKind::Audio,
        AlternativeMediaType::Subtitles => RenditionKind::Subtitles,
        _ => RenditionKind::Video,
    };
    if alternative.group_id.len() > MAX_GROUP {
        return Err(bad(format!("GROUP-ID over {MAX_GROUP} bytes")));
    }
    let language = alternative.language.clone().unwrap_or_default();
    if language.len() > MAX_LANGUAGE {
        return Err(bad(format!("LANGUAGE over {MAX_LANGUAGE} bytes")));
    }
    let name = match alternative.name.trim() {
        "" => uri_stem(&uri).to_owned(),
        name => name.to_owned(),
    };
    Ok(RenditionInfo {
        // At most MAX_RENDITIONS in all, checked by the caller.
        id: u32::try_from(index).unwrap_or(u32::MAX),
        name: truncate(&name, MAX_RENDITION_NAME).to_owned(),
        uri,
        bandwidth: 0,
        codecs: String::new(),
        width: 0,
        height: 0,
        kind,
        group: alternative.group_id,
        language,
    })
}

fn media_playlist(media: m3u8_rs::MediaPlaylist) -> Result<MediaPlaylist, PlaylistError> {
    if media.i_frames_only {
        return Err(PlaylistError::Unsupported {
            feature: "I-frame-only media playlist (EXT-X-I-FRAMES-ONLY)",
        });
    }
    let target = Duration::from_secs(media.target_duration);
    if target.is_zero() || target > MAX_TARGET_DURATION {
        return Err(PlaylistError::TargetDuration {
            seconds: media.target_duration,
        });
    }
    if media.segments.len() > MAX_SEGMENTS {
        return Err(PlaylistError::TooMany {
            what: "segments",
            count: media.segments.len(),
            max: MAX_SEGMENTS,
        });
    }
    let last_sequence = media
        .media_sequence
        .saturating_add(media.segments.len() as u64);
    if last_sequence > MAX_SEQUENCE {
        return Err(PlaylistError::Sequence {
            value: last_sequence,
        });
    }
    let ended = media.end_list || media.playlist_type == Some(MediaPlaylistType::Vod);
    let mut segments = Vec::with_capacity(media.segments.len());
    // m3u8-rs attaches an EXT-X-MAP only to the segment right after it.
    let mut map_in_force: Option<(String, Option<ByteRange>)> = None;
    // The resource of the previous byte-range segment and where it ended.
    let mut previous_range: Option<(String, u64)> = None;
    // Where the next segment starts on the wall clock, if known.
    let mut next_time_ms: Option<u64> = None;
    for (sequence, segment) in (media.media_sequence..).zip(media.segments) {
        // Tags we rely on that m3u8-rs could not read end up as unknown tags.
        if let Some(tag) = segment
            .unknown_tags
            .iter()
            .find(|t| RELIED_ON_TAGS.contains(&t.tag.as_str()))
        {
            return Err(PlaylistError::Unparsable {
                message: format!("malformed EXT-{}", tag.tag),
            });
        }
        let range = match &segment.byte_range {
            None => None,
            Some(range) => {
                let previous_end = previous_range
                    .as_ref()
                    .filter(|(uri, _)| *uri == segment.uri)
                    .map(|(_, end)| *end);
                Some(ByteRange::resolve(sequence, range, previous_end)?)
            }
        };
        previous_range = range.map(|r| (segment.uri.clone(), r.end()));
        if let Some(map) = segment.map {
            check_uri(&map.uri)?;
            // RFC 8216: a map's range without an offset starts at 0.
            let range = map
                .byte_range
                .as_ref()
                .map(|r| ByteRange::resolve(sequence, r, Some(0)))
                .transpose()?;
            map_in_force = Some((map.uri, range));
        }
        check_uri(&segment.uri)?;
        let duration = segment_duration(sequence, segment.duration)?;
        let program_date_time_ms = match segment.program_date_time {
            Some(time) => u64::try_from(time.timestamp_millis()).ok(),
            None if segment.discontinuity => None,
            None => next_time_ms,
        };
        next_time_ms = program_date_time_ms.map(|t| t.saturating_add(duration.as_millis() as u64));
        segments.push(MediaSegment {
            sequence,
            duration,
            uri: segment.uri,
            range,
            map_uri: map_in_force.as_ref().map(|(uri, _)| uri.clone()),
            map_range: map_in_force.as_ref().and_then(|(_, range)| *range),
            discontinuity: segment.discontinuity,
            program_date_time_ms,
        });
    }
    Ok(MediaPlaylist {
        target_duration: target,
        media_sequence: media.media_sequence,
        segments,
        ended,
        low_latency: None,
        refresh: None,
    })
}

/// Tags after `#EXT-` whose values this module uses.
const RELIED_ON_TAGS: [&str; 5] = [
    "X-TARGETDURATION",
    "X-MEDIA-SEQUENCE",
    "X-MAP",
    "X-BYTERANGE",
    "X-PLAYLIST-TYPE",
];

fn segment_duration(sequence: u64, seconds: f32) -> Result<Duration, PlaylistError> {
    // RFC 8216: the EXTINF duration rounded to whole seconds must not exceed
    // the target duration; 0 is what m3u8-rs reports for a missing EXTINF.
    let usable = seconds.is_finite()
        && seconds > 0.0
        && f64::from(seconds).round() <= MAX_TARGET_DURATION.as_secs_f64();
    if !usable {
        return Err(PlaylistError::SegmentDuration { sequence, seconds });
    }
    // Through f64 so that "6.006" becomes 6.006 s, not f32 noise in nanoseconds.
    // The cast is exact: the value is finite, positive and below 61e6.
    let micros = (f64::from(seconds) * 1e6).round() as u64;
    Ok(Duration::from_micros(micros))
}

fn check_uri(uri: &str) -> Result<(), PlaylistError> {
    if uri.len() > MAX_URI_LEN {
        return Err(PlaylistError::UriTooLong {
            len: uri.len(),
            start: truncate(uri, QUOTE_LEN).to_owned(),
        });
    }
    // A tag that m3u8-rs could not read at all is taken for a URI line.
    if uri.starts_with('#') {
        return Err(PlaylistError::Unparsable {
            message: format!(
                "tag where a URI was expected: {:?}",
                truncate(uri, QUOTE_LEN)
            ),
        });
    }
    Ok(())
}

/// The file name of a URI without its extension, query or fragment.
fn uri_stem(uri: &str) -> &str {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let file = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file,
    }
}

/// "line N: <what> <quoted line>", where `rest` is the unread tail of `input`.
fn at_line(input: &[u8], rest: &[u8], what: &str) -> String {
    let offset = input.len().saturating_sub(rest.len());
    let line = 1 + input[..offset].iter().filter(|&&b| b == b'\n').count();
    let text = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    format!("line {line}: {what}: {}", quote(text))
}

/// The start of some bytes, for an error message.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTE_LEN)]);
    format!("{:?}", text.trim_end())
}

fn truncate(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
}

/// What is new in a rendition since the previous poll, in the order to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An init segment (fMP4 `EXT-X-MAP`), returned before the first media
    /// segment that needs it. `sequence` counts distinct init segments (URI
    /// and byte range) in order of first appearance: 0, 1, 2…
    Init {
        sequence: u64,
        uri: String,
        range: Option<ByteRange>,
    },
    /// A media segment never returned before; its `sequence` is renumbered
    /// after an origin restart (see [`Tracker`]).
    Media(MediaSegment),
    /// A part of a low-latency segment never returned before, numbered (its
    /// segment's sequence) as media segments are. Parts of a segment come in
    /// order, from its first.
    Part(PartInfo),
    /// A media segment every part of which was returned as [`Item::Part`]:
    /// its body is their concatenation, no fetch needed.
    Assembled { segment: MediaSegment, parts: u32 },
}

/// Follows one rendition's media playlist across polls.
///
/// [`Tracker::update`] returns the segments whose sequence is above the highest
/// one returned so far, so a playlist polled twice returns nothing new, and a
/// gap (segments that scrolled out of the live window before we polled) is
/// skipped without fuss. The first poll returns the whole playlist: all of a
/// VOD, the whole window of a live stream.
///
/// An init map gets its number the first time a new segment uses it, and the
/// `Init` item precedes that segment. Only maps used by the latest playlist
/// are remembered (memory stays bounded by the playlist size); a map that
/// scrolled out and comes back is announced again under a new number.
///
/// **Origin restarts.** Sequence numbers of a live playlist never decrease
/// (RFC 8216 §6.2.1), so a playlist whose *last* segment is below the *first*
/// segment of the previous poll means the origin restarted and numbers from
/// scratch. Its segments are new content, but their numbers were already
/// published with other bytes, so the tracker renumbers: from then on every
/// returned sequence is the playlist's plus an offset chosen so that numbering
/// continues right after the last returned sequence. Init maps are forgotten
/// (the restarted origin may have rewritten them) and announced again under new
/// numbers. A playlist that goes back less far (its window still overlaps the
/// previous one) is taken for a stale copy from a cache and yields only
/// segments above the highest returned. [`Tracker::restarts`] counts restarts,
/// for the caller to log.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Highest playlist sequence returned since the last restart.
    last_returned: Option<u64>,
    /// Added to playlist sequences since the last restart.
    renumber_offset: u64,
    /// First sequence of the latest non-empty playlist.
    window_start: Option<u64>,
    /// Init URIs used by the latest playlist and already returned, with their number.
    inits: HashMap<(String, Option<ByteRange>), u64>,
    next_init_sequence: u64,
    restarts: u64,
    /// (media sequence, segment count, ended) of the latest playlist.
    fingerprint: Option<(u64, usize, bool, usize)>,
    changed: bool,
    target_duration: Duration,
    /// Parts returned of recent segments, by playlist sequence: always the
    /// first so many, in order.
    parts_returned: BTreeMap<u64, u32>,
    /// The part a blocking reload asks for next, in the playlist's numbering.
    next_part: Option<(u64, u32)>,
    /// The playlist's own reload period (see [`MediaPlaylist::refresh`]).
    refresh: Option<Duration>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the latest poll of the playlist; returns what is new, in order.
    pub fn update(&mut self, playlist: &MediaPlaylist) -> Vec<Item> {
        let ll = playlist.low_latency.as_ref();
        let fingerprint = (
            playlist.media_sequence,
            playlist.segments.len(),
            playlist.ended,
            ll.map_or(0, |ll| ll.parts.len()),
        );
        self.changed = self.fingerprint != Some(fingerprint);
        self.fingerprint = Some(fingerprint);
        self.target_duration = playlist.target_duration;
        self.refresh = playlist.refresh;

        let (Some(first), Some(last)) = (playlist.segments.first(), playlist.segments.last())
        else {
            return Vec::new();
        };
        if self.window_start.is_some_and(|start| last.sequence < start) {
            self.restart(first.sequence);
        }
        self.window_start = Some(first.sequence);
        let in_use: HashSet<(&str, Option<ByteRange>)> = playlist
            .segments
            .iter()
            .filter_map(|s| s.map_uri.as_deref().map(|uri| (uri, s.map_range)))
            .collect();
        self.inits
            .retain(|(uri, range), _| in_use.contains(&(uri.as_str(), *range)));

        let mut items = Vec::new();
        for segment in &playlist.segments {
            if self
                .last_returned
                .is_some_and(|last| segment.sequence <= last)
            {
                continue;
            }
            if let Some(uri) = &segment.map_uri {
                let key = (uri.clone(), segment.map_range);
                if !self.inits.contains_key(&key) {
                    let sequence = self.next_init_sequence;
                    self.next_init_sequence += 1;
                    self.inits.insert(key, sequence);
                    items.push(Item::Init {
                        sequence,
                        uri: uri.clone(),
                        range: segment.map_range,
                    });
                }
            }
            let renumbered = MediaSegment {
                // Cannot overflow: playlist sequences are at most 2^53 and the
                // offset grows by at most the number of segments returned.
                sequence: segment.sequence.saturating_add(self.renumber_offset),
                ..segment.clone()
            };
            let listed = ll.map_or(0, |ll| ll.parts_of(segment.sequence).count());
            let whole = ll.is_some_and(|ll| ll.whole(segment.sequence));
            let returned = self.return_parts(ll, segment.sequence, &mut items);
            if listed > 0 && whole && returned as usize == listed {
                items.push(Item::Assembled {
                    segment: renumbered,
                    parts: returned,
                });
            } else {
                items.push(Item::Media(renumbered));
            }
            self.last_returned = Some(segment.sequence);
        }
        // The segment in progress: its parts so far.
        let in_progress = last.sequence.saturating_add(1);
        self.next_part = None;
        if let Some(ll) = ll
            && !playlist.ended
        {
            self.return_parts(Some(ll), in_progress, &mut items);
            if ll.can_block_reload {
                self.next_part = Some(ll.next_part(in_progress));
            }
        }
        self.parts_returned.retain(|&seq, _| seq >= first.sequence);
        items
    }

    /// Adds the parts of playlist segment `sequence` not returned yet, in
    /// order from the first not returned; returns how many of its parts have
    /// been returned in all.
    fn return_parts(
        &mut self,
        ll: Option<&LowLatency>,
        sequence: u64,
        items: &mut Vec<Item>,
    ) -> u32 {
        // A playlist without parts keeps no count.
        let Some(ll) = ll else { return 0 };
        let done = self.parts_returned.entry(sequence).or_insert(0);
        for part in ll.parts_of(sequence) {
            if part.index == *done {
                items.push(Item::Part(PartInfo {
                    sequence: part.sequence.saturating_add(self.renumber_offset),
                    ..part.clone()
                }));
                *done += 1;
            }
        }
        *done
    }

    /// The part to ask the origin for with a blocking reload (`_HLS_msn`,
    /// `_HLS_part`, in the origin's numbering), if the latest playlist was
    /// low-latency and its origin offers blocking reloads.
    pub fn next_part(&self) -> Option<(u64, u32)> {
        self.next_part
    }

    fn restart(&mut self, first_sequence: u64) {
        let next_returned = self.last_returned.map_or(0, |last| {
            last.saturating_add(self.renumber_offset).saturating_add(1)
        });
        self.renumber_offset = next_returned.saturating_sub(first_sequence);
        self.last_returned = None;
        self.inits.clear();
        self.parts_returned.clear();
        self.restarts += 1;
    }

    /// How many origin restarts were detected.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// How long to wait before polling the playlist again, by the last
    /// [`update`](Self::update): see [`reload_delay`]. Zero before the first.
    pub fn poll_interval(&self) -> Duration {
        match self.fingerprint {
            None => Duration::ZERO,
            Some(_) => self
                .refresh
                .unwrap_or_else(|| reload_delay(self.changed, self.target_duration)),
        }
    }
}

/// RFC 8216 §6.3.4: after loading a playlist that changed, wait the target
/// duration before reloading it; after one that did not, half of it.
pub fn reload_delay(changed: bool, target_duration: Duration) -> Duration {
    if changed {
        target_duration
    } else {
        target_duration / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(text: &str) -> MediaPlaylist {
        match parse(text.as_bytes()) {
            Ok(Playlist::Media(media)) => media,
            other => panic!("expected a media playlist, got {other:?}"),
        }
    }

    /// A live TS playlist with segments `first..first + count`.
    fn live_window(first: u64, count: u64) -> MediaPlaylist {
        let mut text = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
        );
        for n in first..first + count {
            text.push_str(&format!("#EXTINF:4.0,\nseg{n}.ts\n"));
        }
        media(&text)
    }

    fn media_sequences(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|item| match item {
                Item::Media(segment) => Some(segment.sequence),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn master_with_two_variants() {
        let text = "#EXTM3U\n\
            #EXT-X-VERSION:6\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401e,mp4a.40.2\",RESOLUTION=640x360\n\
            low/index.m3u8\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"low/iframes.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=2500000,CODECS=\"avc1.640028,mp4a.40.2\",RESOLUTION=1280x720\n\
            https://cdn.example/hi/index.m3u8?token=1\n";
        let Ok(Playlist::Master(renditions)) = parse(text.as_bytes()) else {
            panic!("expected a master playlist");
        };
        assert_eq!(
            renditions,
            [
                RenditionInfo {
                    id: 0,
                    name: "640x360".into(),
                    uri: "low/index.m3u8".into(),
                    bandwidth: 800_000,
                    codecs: "avc1.4d401e,mp4a.40.2".into(),
                    width: 640,
                    height: 360,
                    kind: RenditionKind::Variant,
                    group: String::new(),
                    language: String::new(),
                },
                RenditionInfo {
                    id: 1,
                    name: "1280x720".into(),
                    uri: "https://cdn.example/hi/index.m3u8?token=1".into(),
                    bandwidth: 2_500_000,
                    codecs: "avc1.640028,mp4a.40.2".into(),
                    width: 1280,
                    height: 720,
                    kind: RenditionKind::Variant,
                    group: String::new(),
                    language: String::new(),
                },
            ]
        );
    }

    #[test]
    fn alternative_renditions_with_a_playlist_are_ingested_once_each() {
        let text = "#EXTM3U\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"Deutsch\",LANGUAGE=\"de\",URI=\"audio/de.m3u8\"\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac-hi\",NAME=\"English\",LANGUAGE=\"en\",URI=\"audio/en.m3u8\"\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"muxed\",NAME=\"In the video\"\n\
            #EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",LANGUAGE=\"en\",URI=\"subs/en.m3u8\"\n\
            #EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID=\"cc\",NAME=\"CC\",INSTREAM-ID=\"CC1\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,AUDIO=\"aac\",SUBTITLES=\"subs\"\n\
            video/360p.m3u8\n";
        let Ok(Playlist::Master(renditions)) = parse(text.as_bytes()) else {
            panic!("expected a master playlist");
        };
        let summary: Vec<(u32, RenditionKind, &str, &str, &str, &str)> = renditions
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.kind,
                    r.name.as_str(),
                    r.uri.as_str(),
                    r.group.as_str(),
                    r.language.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    0,
                    RenditionKind::Variant,
                    "640x360",
                    "video/360p.m3u8",
                    "",
                    ""
                ),
                (
                    1,
                    RenditionKind::Audio,
                    "English",
                    "audio/en.m3u8",
                    "aac",
                    "en"
                ),
                (
                    2,
                    RenditionKind::Audio,
                    "Deutsch",
                    "audio/de.m3u8",
                    "aac",
                    "de"
                ),
                (
                    3,
                    RenditionKind::Subtitles,
                    "English-3",
                    "subs/en.m3u8",
                    "subs",
                    "en"
                ),
            ]
        );
        let long_group = format!(
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{}\",NAME=\"a\",URI=\"a.m3u8\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n",
            "g".repeat(MAX_GROUP + 1)
        );
        assert!(matches!(
            parse(long_group.as_bytes()),
            Err(PlaylistError::BadAlternative { .. })
        ));
    }

    #[test]
    fn master_names_come_from_uri_stems_and_are_unique() {
        let text = "#EXTM3U\n\
            #EXT-X-STREAM-INF:BANDWIDTH=64000\naudio/a.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=96000\nother/a.m3u8\n";
        let Ok(Playlist::Master(renditions)) = parse(text.as_bytes()) else {
            panic!("expected a master playlist");
        };
        let names: Vec<&str> = renditions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "a-1"]);
        assert_eq!(
            RenditionInfo::for_media_playlist("live/stream.m3u8?x=1").name,
            "stream"
        );
    }

    #[test]
    fn master_refusals() {
        let no_uri =
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n#EXT-X-STREAM-INF:BANDWIDTH=2\nb.m3u8\n";
        assert_eq!(
            parse(no_uri.as_bytes()),
            Err(PlaylistError::VariantWithoutUri { variant: 0 })
        );
        let only_iframes = "#EXTM3U\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"i.m3u8\"\n";
        assert_eq!(
            parse(only_iframes.as_bytes()),
            Err(PlaylistError::EmptyMaster)
        );
        // Without the check, `b.m3u8` would silently become the URI of the first variant.
        let malformed = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=x\nb.m3u8\n";
        assert!(matches!(
            parse(malformed.as_bytes()),
            Err(PlaylistError::Unparsable { .. })
        ));
    }

    #[test]
    fn ts_media_playlist() {
        let playlist = media(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:7\n#EXT-X-MEDIA-SEQUENCE:41\n\
             #EXTINF:6.006,\nseg41.ts\n#EXTINF:5.5,\n../other/seg42.ts",
        );
        assert_eq!(playlist.target_duration, Duration::from_secs(7));
        assert_eq!(playlist.media_sequence, 41);
        assert!(!playlist.ended);
        assert_eq!(
            playlist.segments,
            [
                MediaSegment {
                    sequence: 41,
                    uri: "seg41.ts".into(),
                    duration: Duration::from_micros(6_006_000),
                    range: None,
                    map_uri: None,
                    map_range: None,
                    discontinuity: false,
                    program_date_time_ms: None,
                },
                MediaSegment {
                    sequence: 42,
                    uri: "../other/seg42.ts".into(),
                    duration: Duration::from_millis(5_500),
                    range: None,
                    map_uri: None,
                    map_range: None,
                    discontinuity: false,
                    program_date_time_ms: None,
                },
            ]
        );
    }

    #[test]
    fn fmp4_map_carries_over_and_a_new_map_after_a_discontinuity_is_init_1() {
        let playlist = media(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-MAP:URI=\"init0.mp4\"\n\
             #EXTINF:2.0,\ns0.m4s\n#EXTINF:2.0,\ns1.m4s\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init1.mp4\"\n\
             #EXTINF:2.0,\ns2.m4s\n#EXTINF:2.0,\ns3.m4s\n",
        );
        let maps: Vec<Option<&str>> = playlist
            .segments
            .iter()
            .map(|s| s.map_uri.as_deref())
            .collect();
        assert_eq!(
            maps,
            [
                Some("init0.mp4"),
                Some("init0.mp4"),
                Some("init1.mp4"),
                Some("init1.mp4")
            ]
        );
        let discontinuities: Vec<bool> =
            playlist.segments.iter().map(|s| s.discontinuity).collect();
        assert_eq!(discontinuities, [false, false, true, false]);

        let items = Tracker::new().update(&playlist);
        let init = |sequence: u64, uri: &str| Item::Init {
            sequence,
            uri: uri.into(),
            range: None,
        };
        let segment = |i: usize| Item::Media(playlist.segments[i].clone());
        assert_eq!(
            items,
            [
                init(0, "init0.mp4"),
                segment(0),
                segment(1),
                init(1, "init1.mp4"),
                segment(2),
                segment(3)
            ]
        );
    }

    #[test]
    fn live_tracker_returns_only_new_items_and_each_init_once() {
        let poll = |first: u64| {
            let mut text = format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-MAP:URI=\"init.mp4\"\n"
            );
            for n in first..first + 3 {
                text.push_str(&format!("#EXTINF:2,\ns{n}.m4s\n"));
            }
            media(&text)
        };
        let mut tracker = Tracker::new();
        assert_eq!(tracker.poll_interval(), Duration::ZERO);

        let first = tracker.update(&poll(10));
        assert_eq!(
            first[0],
            Item::Init {
                sequence: 0,
                uri: "init.mp4".into(),
                range: None,
            }
        );
        assert_eq!(media_sequences(&first), [10, 11, 12]);
        assert_eq!(tracker.poll_interval(), Duration::from_secs(2));

        let second = tracker.update(&poll(11));
        assert_eq!(media_sequences(&second), [13]);
        assert_eq!(second.len(), 1, "the init is not returned again");

        let third = tracker.update(&poll(12));
        assert_eq!(media_sequences(&third), [14]);
        assert_eq!(third.len(), 1);

        // Unchanged playlist: nothing new, poll again after half the target duration.
        assert!(tracker.update(&poll(12)).is_empty());
        assert_eq!(tracker.poll_interval(), Duration::from_secs(1));
    }

    #[test]
    fn tracker_skips_a_gap() {
        let mut tracker = Tracker::new();
        assert_eq!(
            media_sequences(&tracker.update(&live_window(0, 3))),
            [0, 1, 2]
        );
        // Segments 3..=6 scrolled out before this poll.
        assert_eq!(
            media_sequences(&tracker.update(&live_window(7, 3))),
            [7, 8, 9]
        );
    }

    #[test]
    fn tracker_renumbers_after_the_origin_restarts() {
        let mut tracker = Tracker::new();
        assert_eq!(
            media_sequences(&tracker.update(&live_window(100, 3))),
            [100, 101, 102]
        );
        // A stale copy whose window overlaps the last one returns nothing.
        assert!(tracker.update(&live_window(99, 3)).is_empty());
        assert_eq!(tracker.restarts(), 0);

        // The origin restarted from 0: new content, numbered on from 103.
        let items = tracker.update(&live_window(0, 2));
        assert_eq!(media_sequences(&items), [103, 104]);
        let Item::Media(first) = &items[0] else {
            panic!("expected a media segment");
        };
        assert_eq!(first.uri, "seg0.ts");
        assert_eq!(tracker.restarts(), 1);
        assert_eq!(
            media_sequences(&tracker.update(&live_window(1, 3))),
            [105, 106]
        );
    }

    #[test]
    fn tracker_announces_inits_again_after_a_restart() {
        let fmp4 = |first: u64| {
            media(&format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
                 #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2,\ns.m4s\n"
            ))
        };
        let mut tracker = Tracker::new();
        assert_eq!(
            tracker.update(&fmp4(50))[0],
            Item::Init {
                sequence: 0,
                uri: "init.mp4".into(),
                range: None,
            }
        );
        let after_restart = tracker.update(&fmp4(0));
        assert_eq!(
            after_restart[0],
            Item::Init {
                sequence: 1,
                uri: "init.mp4".into(),
                range: None,
            }
        );
        assert_eq!(media_sequences(&after_restart), [51]);
    }

    #[test]
    fn vod_with_endlist() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\na.ts\n#EXTINF:3.2,\nb.ts\n#EXT-X-ENDLIST";
        let playlist = media(text);
        assert!(playlist.ended);
        assert_eq!(playlist.media_sequence, 0);
        let mut tracker = Tracker::new();
        assert_eq!(media_sequences(&tracker.update(&playlist)), [0, 1]);
        assert!(tracker.update(&playlist).is_empty());

        let typed =
            "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\na.ts\n";
        assert!(media(typed).ended);
    }

    #[test]
    fn garbage_and_html_are_not_hls() {
        let garbage = [0xFF, 0x00, 0x13, 0x37, 0x80, 0x80];
        assert!(matches!(parse(&garbage), Err(PlaylistError::NotHls { .. })));
        let html = b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n";
        let error = parse(html).unwrap_err();
        assert!(matches!(error, PlaylistError::NotHls { .. }));
        assert!(error.to_string().contains("<!DOCTYPE html>"), "{error}");
        assert!(matches!(parse(b""), Err(PlaylistError::NotHls { .. })));
    }

    #[test]
    fn unreadable_line_is_reported_with_its_number() {
        let text =
            b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n\xFF\xFE.ts\n#EXTINF:2,\nb.ts\n";
        let error = parse(text).unwrap_err();
        assert!(matches!(error, PlaylistError::Unparsable { .. }));
        assert!(error.to_string().contains("line 5"), "{error}");
    }

    #[test]
    fn uri_of_2000_bytes_is_refused() {
        let text = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{}.ts\n",
            "a".repeat(2000)
        );
        assert_eq!(
            parse(text.as_bytes()),
            Err(PlaylistError::UriTooLong {
                len: 2003,
                start: "a".repeat(QUOTE_LEN),
            })
        );
    }

    #[test]
    fn absurd_values_are_refused() {
        let zero_target = "#EXTM3U\n#EXT-X-TARGETDURATION:0\n#EXTINF:2,\na.ts\n";
        assert_eq!(
            parse(zero_target.as_bytes()),
            Err(PlaylistError::TargetDuration { seconds: 0 })
        );
        let no_target = "#EXTM3U\n#EXTINF:2,\na.ts\n";
        assert_eq!(
            parse(no_target.as_bytes()),
            Err(PlaylistError::TargetDuration { seconds: 0 })
        );
        let long_target = "#EXTM3U\n#EXT-X-TARGETDURATION:61\n#EXTINF:2,\na.ts\n";
        assert_eq!(
            parse(long_target.as_bytes()),
            Err(PlaylistError::TargetDuration { seconds: 61 })
        );
        let no_extinf = "#EXTM3U\n#EXT-X-TARGETDURATION:2\na.ts\n";
        assert!(matches!(
            parse(no_extinf.as_bytes()),
            Err(PlaylistError::SegmentDuration { .. })
        ));
        let huge_sequence = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXTINF:2,\na.ts\n",
            u64::MAX
        );
        assert!(matches!(
            parse(huge_sequence.as_bytes()),
            Err(PlaylistError::Sequence { .. })
        ));

        let mut many = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n");
        for n in 0..=MAX_SEGMENTS {
            many.push_str(&format!("#EXTINF:2,\n{n}.ts\n"));
        }
        assert!(matches!(
            parse(many.as_bytes()),
            Err(PlaylistError::TooMany { count: 10_001, .. })
        ));
    }

    #[test]
    fn byte_ranges_follow_on_and_init_ranges_start_at_their_offset() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n\
                    #EXT-X-MAP:URI=\"all.mp4\",BYTERANGE=\"700@0\"\n\
                    #EXTINF:2,\n#EXT-X-BYTERANGE:1000@700\nall.mp4\n\
                    #EXTINF:2,\n#EXT-X-BYTERANGE:500\nall.mp4\n\
                    #EXTINF:2,\n#EXT-X-BYTERANGE:300@9000\nother.mp4\n\
                    #EXTINF:2,\nwhole.m4s\n";
        let Ok(Playlist::Media(playlist)) = parse(text.as_bytes()) else {
            panic!("a media playlist");
        };
        let range = |offset, length| Some(ByteRange { offset, length });
        let ranges: Vec<_> = playlist.segments.iter().map(|s| s.range).collect();
        assert_eq!(
            ranges,
            [range(700, 1000), range(1700, 500), range(9000, 300), None]
        );
        assert!(
            playlist
                .segments
                .iter()
                .all(|s| s.map_range == range(0, 700) && s.map_uri.as_deref() == Some("all.mp4"))
        );
        // The tracker names the init segment with its range.
        let items = Tracker::new().update(&playlist);
        assert_eq!(
            items[0],
            Item::Init {
                sequence: 0,
                uri: "all.mp4".into(),
                range: range(0, 700),
            }
        );
    }

    #[test]
    fn program_date_times_carry_on_until_a_discontinuity() {
        let playlist = media(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-05T00:00:00.000Z\n#EXTINF:2,\na.ts\n\
             #EXTINF:1.5,\nb.ts\n#EXTINF:2,\nc.ts\n\
             #EXT-X-DISCONTINUITY\n#EXTINF:2,\nd.ts\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-12-05T01:00:00.000+01:00\n#EXTINF:2,\ne.ts\n",
        );
        let start = 1_796_428_800_000u64; // 2026-12-05T00:00:00Z
        let timeline: Vec<(bool, Option<u64>)> = playlist
            .segments
            .iter()
            .map(|s| (s.discontinuity, s.program_date_time_ms))
            .collect();
        assert_eq!(
            timeline,
            [
                (false, Some(start)),
                (false, Some(start + 2_000)),
                (false, Some(start + 3_500)),
                // Across a discontinuity nothing is implied…
                (true, None),
                // …until a date is given again (with its offset).
                (true, Some(start)),
            ]
        );
    }

    #[test]
    fn byte_ranges_that_cannot_be_placed_are_refused() {
        for (what, ranges) in [
            ("no offset first", "#EXT-X-BYTERANGE:500\nall.mp4\n"),
            (
                "no offset after another file",
                "#EXT-X-BYTERANGE:500@0\na.mp4\n#EXTINF:2,\n#EXT-X-BYTERANGE:500\nb.mp4\n",
            ),
            (
                "no offset after a whole file",
                "x.m4s\n#EXTINF:2,\n#EXT-X-BYTERANGE:500\nx.m4s\n",
            ),
            ("empty", "#EXT-X-BYTERANGE:0@0\nall.mp4\n"),
            (
                "overflowing",
                "#EXT-X-BYTERANGE:10@18446744073709551610\nall.mp4\n",
            ),
        ] {
            let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{ranges}");
            assert!(
                matches!(
                    parse(text.as_bytes()),
                    Err(PlaylistError::BadByteRange { .. })
                ),
                "{what}: {:?}",
                parse(text.as_bytes())
            );
        }
    }

    /// A low-latency playlist of the test origin's kind: whole segments
    /// `first..whole` (the last two with their four parts), then `done` parts
    /// of segment `whole`.
    fn low_latency(first: u64, whole: u64, done: u32) -> MediaPlaylist {
        let mut text = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n\
             #EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n"
        );
        let part = |k: u64, j: u32| format!("#EXT-X-PART:DURATION=0.5,URI=\"v/{k}.{j}.m4s\"\n");
        for k in first..whole {
            if k + 2 >= whole {
                (0..4).for_each(|j| text.push_str(&part(k, j)));
            }
            text.push_str(&format!("#EXTINF:2.0,\nv/{k}.m4s\n"));
        }
        (0..done).for_each(|j| text.push_str(&part(whole, j)));
        text.push_str(&format!(
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"v/{whole}.{done}.m4s\"\n"
        ));
        media(&text)
    }

    fn names(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Item::Init { uri, .. } => uri.clone(),
                Item::Media(seg) => format!("media {}", seg.sequence),
                Item::Part(part) => format!("part {}.{}", part.sequence, part.index),
                Item::Assembled { segment, parts } => {
                    format!("assembled {} of {parts}", segment.sequence)
                }
            })
            .collect()
    }

    #[test]
    fn low_latency_parts_come_once_in_order_and_make_up_their_segments() {
        let mut tracker = Tracker::new();
        // Start: 10 whole (no parts listed), 11 and 12 whole with parts, 13.0 out.
        let items = tracker.update(&low_latency(10, 13, 1));
        assert_eq!(
            names(&items),
            [
                "init.mp4",
                "media 10",
                "part 11.0",
                "part 11.1",
                "part 11.2",
                "part 11.3",
                "assembled 11 of 4",
                "part 12.0",
                "part 12.1",
                "part 12.2",
                "part 12.3",
                "assembled 12 of 4",
                "part 13.0"
            ]
        );
        assert_eq!(tracker.next_part(), Some((13, 1)));
        // The same playlist again: nothing new.
        assert!(tracker.update(&low_latency(10, 13, 1)).is_empty());
        // Two more parts, then the segment closes with its last.
        assert_eq!(
            names(&tracker.update(&low_latency(10, 13, 3))),
            ["part 13.1", "part 13.2"]
        );
        assert_eq!(tracker.next_part(), Some((13, 3)));
        let items = tracker.update(&low_latency(11, 14, 0));
        assert_eq!(names(&items), ["part 13.3", "assembled 13 of 4"]);
        assert_eq!(tracker.next_part(), Some((14, 0)));
        // Parts skipped while the publisher was away: the segment is fetched whole.
        let items = tracker.update(&low_latency(14, 17, 1));
        assert_eq!(
            names(&items),
            [
                "media 14",
                "part 15.0",
                "part 15.1",
                "part 15.2",
                "part 15.3",
                "assembled 15 of 4",
                "part 16.0",
                "part 16.1",
                "part 16.2",
                "part 16.3",
                "assembled 16 of 4",
                "part 17.0"
            ]
        );
    }

    #[test]
    fn an_origin_without_blocking_reload_is_polled() {
        let mut tracker = Tracker::new();
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"a.0.m4s\"\n#EXTINF:2.0,\na.m4s\n";
        let items = tracker.update(&media(text));
        assert_eq!(names(&items), ["part 0.0", "assembled 0 of 1"]);
        assert_eq!(tracker.next_part(), None);
        assert_eq!(tracker.update(&live_window(0, 1)).len(), 0);
        assert_eq!(tracker.next_part(), None);
    }

    #[test]
    fn a_refused_part_refuses_its_playlist() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"a.0.m4s\",BYTERANGE=\"10@0\"\n";
        assert!(matches!(
            parse(text.as_bytes()),
            Err(PlaylistError::Unsupported { .. })
        ));
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:URI=\"a.0.m4s\"\n";
        let err = parse(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("malformed EXT-X-PART"), "{err}");
    }

    #[test]
    fn a_segment_with_a_gap_is_fetched_whole() {
        let mut tracker = Tracker::new();
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"a.0.m4s\"\n\
                    #EXT-X-PART:DURATION=0.5,URI=\"a.1.m4s\",GAP=YES\n\
                    #EXTINF:1.0,\na.m4s\n";
        let items = tracker.update(&media(text));
        assert_eq!(names(&items), ["part 0.0", "media 0"]);
    }
}
