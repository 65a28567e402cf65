//! DASH ingest, sans I/O: an MPD becomes renditions, and each rendition the
//! same [`MediaPlaylist`] an HLS media playlist becomes, so that the tracker
//! and the publisher work on DASH unchanged.
//!
//! `dash-mpd-core` reads the XML into its model; this module checks what
//! meshcast relies on and expands each representation's segments:
//!
//! - every `Representation` of every `AdaptationSet` of the (single)
//!   `Period` is a rendition: video ones are variants, audio ones
//!   alternative audio, text ones subtitles (`contentType`, else
//!   `mimeType`), in MPD order. Its URI is the MPD's own with a fragment
//!   naming it (`manifest.mpd#rep-2`): fetching it fetches the MPD, and
//!   [`media_playlist`] picks the representation back out; segment URIs are
//!   relative to the MPD, as a fragment does not change a base URL.
//! - `SegmentTemplate` with `$Number$` (and a `duration`) or with a
//!   `SegmentTimeline` (`$Time$` or `$Number$`), its `initialization`;
//!   `$RepresentationID$`, `$Bandwidth$` and `%0Nd` widths are filled in.
//!   A segment's sequence number is its `$Number$` (from `startNumber`), or
//!   its `$Time$` for a template addressed by time alone: a live server may
//!   slide the timeline and leave `startNumber` as it was, and sequence
//!   numbers must stay the same from one poll to the next.
//! - `SegmentList` with `SegmentURL`s (`mediaRange` byte ranges included)
//!   and its `Initialization` (`sourceURL`, `range`); numbered from 1.
//! - `SegmentBase`: one file (its `BaseURL`) whose `sidx` box, at
//!   `indexRange`, lists the segments as byte ranges ([`index_needed`] says
//!   which bytes to fetch first; [`media_playlist`] then reads them), and
//!   whose `Initialization` `range` is the init segment; numbered from 1.
//! - `BaseURL`s at MPD, period, adaptation set and representation level,
//!   each relative to the one above.
//!
//! A static MPD is a VOD (`ended`); its length is `mediaPresentationDuration`
//! or the period's `duration`. A dynamic MPD is live, polled as an HLS media
//! playlist is: a `SegmentTimeline` lists its window (an open-ended `r="-1"`
//! repeats up to now); a `$Number$` template without one is placed on the
//! wall clock (`now_us`, passed in): segment `k` is available once
//! `availabilityStartTime` + period start + (k + 1) × duration has passed,
//! and the window is `timeShiftBufferDepth` (30 s when absent) behind the
//! newest; it is reloaded every `minimumUpdatePeriod` (at least 0.5 s) when
//! it says. Refused with a [`DashError`] naming what: several periods, a
//! `sidx` that refers to other `sidx` boxes, encrypted adaptation sets,
//! representations with no segment addressing, a clock-placed template
//! without `availabilityStartTime`, absurd values (as for HLS: over
//! [`MAX_SEGMENTS`] segments, a segment over 60 s, over `MAX_RENDITIONS`
//! representations).

use std::time::Duration;

use dash_mpd_core::{AdaptationSet, MPD, Representation, SegmentTemplate};
use meshcast_proto::RenditionKind;
use meshcast_proto::descriptor::{
    MAX_CODECS, MAX_GROUP, MAX_LANGUAGE, MAX_RENDITION_NAME, MAX_RENDITIONS,
};

use super::playlist::{
    ByteRange, MAX_SEGMENTS, MAX_TARGET_DURATION, MAX_URI_LEN, MediaPlaylist, MediaSegment,
    RenditionInfo,
};

/// The fragment that names a representation in a rendition's URI.
const FRAGMENT: &str = "#rep-";

/// Why an MPD was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DashError {
    #[error("unreadable MPD: {0}")]
    Unparsable(String),
    #[error("unsupported in an MPD: {0}")]
    Unsupported(String),
    #[error("representation {representation:?}: {reason}")]
    Bad {
        representation: String,
        reason: String,
    },
    #[error("the MPD has no representation")]
    Empty,
    #[error("{count} {what} is over the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

/// Does `bytes` look like an MPD rather than an HLS playlist?
pub fn is_mpd(bytes: &[u8]) -> bool {
    let start = &bytes[..bytes.len().min(512)];
    let text = String::from_utf8_lossy(start);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    !text.starts_with("#EXTM3U")
        && (text.starts_with("<?xml") || text.starts_with("<MPD"))
        && String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).contains("<MPD")
}

/// The renditions of an MPD fetched from `uri` (as the publisher names it;
/// each rendition's URI is `uri` with a fragment).
pub fn renditions(bytes: &[u8], uri: &str) -> Result<Vec<RenditionInfo>, DashError> {
    let (_, list) = read(bytes)?;
    let base = uri.split('#').next().unwrap_or(uri);
    list.iter()
        .enumerate()
        .map(|(i, (set, rep, _))| rendition(i, set, rep, base))
        .collect()
}

/// The live window of a dynamic MPD without a `timeShiftBufferDepth`.
const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// The segments of the representation a rendition URI names (its fragment),
/// as a media playlist; `now_us` (µs since the Unix epoch) places a live
/// `$Number$` template on the clock.
pub fn media_playlist(
    bytes: &[u8],
    uri: &str,
    now_us: u64,
    sidx: Option<&[u8]>,
) -> Result<MediaPlaylist, DashError> {
    let (mpd, list) = read(bytes)?;
    let (set, rep, base) = representation(&list, uri)?;
    if let Some(segment_base) = segment_base(set, rep) {
        let sidx = sidx.ok_or_else(|| {
            DashError::Unsupported(format!("{uri}: its index (sidx) is needed first"))
        })?;
        return from_index(segment_base, rep, base, sidx);
    }
    let period_start = mpd
        .periods
        .first()
        .and_then(|p| p.start)
        .unwrap_or_default();
    let timing = if mpd.mpdtype.as_deref() == Some("dynamic") {
        let start_us = mpd
            .availabilityStartTime
            .map(|t| t.timestamp_micros())
            .map(|us| us.saturating_add(period_start.as_micros() as i64));
        Timing::Live {
            // Time since the period began (none yet: zero).
            elapsed: start_us.map(|start| {
                Duration::from_micros((now_us as i64).saturating_sub(start).max(0) as u64)
            }),
            window: mpd.timeShiftBufferDepth.unwrap_or(DEFAULT_WINDOW),
        }
    } else {
        Timing::Vod(
            mpd.mediaPresentationDuration
                .or(mpd.periods.first().and_then(|p| p.duration))
                .ok_or_else(|| {
                    DashError::Unsupported(
                        "a static MPD without mediaPresentationDuration or a period duration"
                            .into(),
                    )
                })?,
        )
    };
    let mut playlist = segments(set, rep, base, timing)?;
    if matches!(timing, Timing::Live { .. }) {
        // Reloaded at the MPD's own pace, within reason.
        playlist.refresh = mpd
            .minimumUpdatePeriod
            .map(|p| p.clamp(MIN_REFRESH, MAX_TARGET_DURATION));
    }
    Ok(playlist)
}

/// The shortest reload period taken from an MPD: a `minimumUpdatePeriod` of
/// zero would mean polling without pause.
const MIN_REFRESH: Duration = Duration::from_millis(500);

/// The representation a rendition URI's fragment names.
fn representation<'a>(list: &'a [Found], uri: &str) -> Result<&'a Found, DashError> {
    let index = uri
        .rsplit_once(FRAGMENT)
        .and_then(|(_, i)| i.parse::<usize>().ok())
        .ok_or_else(|| {
            DashError::Unsupported(format!("{uri} names no representation (#rep-<n>)"))
        })?;
    list.get(index)
        .ok_or_else(|| DashError::Unsupported(format!("{uri}: no representation {index}")))
}

/// The `SegmentBase` that addresses a representation, when neither a
/// template nor a list does.
fn segment_base<'a>(
    set: &'a AdaptationSet,
    rep: &'a Representation,
) -> Option<&'a dash_mpd_core::SegmentBase> {
    let addressed = rep.SegmentTemplate.is_some()
        || rep.SegmentList.is_some()
        || set.SegmentTemplate.is_some()
        || set.SegmentList.is_some();
    rep.SegmentBase
        .as_ref()
        .or(set.SegmentBase.as_ref())
        .filter(|_| !addressed)
}

/// For a rendition addressed by `SegmentBase`: the file (relative to the
/// MPD) and the byte range of its `sidx` index, which [`media_playlist`]
/// needs; `None` for any other rendition.
pub fn index_needed(bytes: &[u8], uri: &str) -> Result<Option<(String, ByteRange)>, DashError> {
    let (_, list) = read(bytes)?;
    let (set, rep, base) = representation(&list, uri)?;
    let Some(segment_base) = segment_base(set, rep) else {
        return Ok(None);
    };
    let bad = |reason: String| DashError::Bad {
        representation: rep.id.clone().unwrap_or_default(),
        reason,
    };
    let range = segment_base
        .indexRange
        .as_deref()
        .ok_or_else(|| bad("SegmentBase without an indexRange".into()))
        .and_then(|r| byte_range(r).map_err(bad))?;
    if range.length > MAX_INDEX_BYTES {
        return Err(bad(format!("an index of {} bytes", range.length)));
    }
    if base.is_empty() {
        return Err(bad("SegmentBase without a BaseURL naming its file".into()));
    }
    Ok(Some((base.clone(), range)))
}

/// Largest `sidx` read: 12 bytes a reference, room for 50,000 of them.
pub const MAX_INDEX_BYTES: u64 = 600_000;

/// The segments a `sidx` box lists, as byte ranges of the representation's
/// file (see ISO/IEC 14496-12 §8.16.3: offsets count from the byte after
/// the box, plus its `first_offset`).
fn from_index(
    segment_base: &dash_mpd_core::SegmentBase,
    rep: &Representation,
    base: &str,
    sidx: &[u8],
) -> Result<MediaPlaylist, DashError> {
    let bad = |reason: String| DashError::Bad {
        representation: rep.id.clone().unwrap_or_default(),
        reason,
    };
    let index_range = segment_base
        .indexRange
        .as_deref()
        .ok_or_else(|| bad("SegmentBase without an indexRange".into()))
        .and_then(|r| byte_range(r).map_err(bad))?;
    let short = || bad("the sidx box is truncated".into());
    let u32_at = |at: usize| -> Result<u32, DashError> {
        let b = sidx.get(at..at + 4).ok_or_else(short)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| -> Result<u64, DashError> {
        Ok((u64::from(u32_at(at)?) << 32) | u64::from(u32_at(at + 4)?))
    };
    let size = u32_at(0)? as usize;
    if sidx.get(4..8) != Some(b"sidx") || size < 32 || size > sidx.len() {
        return Err(bad("the indexRange does not start with a sidx box".into()));
    }
    let version = sidx[8];
    let timescale = u64::from(u32_at(16)?).max(1);
    let (first_offset, mut at) = if version == 0 {
        (u64::from(u32_at(24)?), 28)
    } else {
        (u64_at(28)?, 36)
    };
    let count = usize::from(u16::from_be_bytes([
        *sidx.get(at + 2).ok_or_else(short)?,
        *sidx.get(at + 3).ok_or_else(short)?,
    ]));
    at += 4;
    if count > MAX_SEGMENTS {
        return Err(DashError::TooMany {
            what: "sidx references",
            count,
            max: MAX_SEGMENTS,
        });
    }
    let map_range = segment_base
        .Initialization
        .as_ref()
        .and_then(|i| i.range.as_deref())
        .map(byte_range)
        .transpose()
        .map_err(bad)?;
    let mut offset = index_range.offset + size as u64 + first_offset;
    let mut segments = Vec::with_capacity(count);
    for k in 0..count {
        let reference = u32_at(at)?;
        let duration = u32_at(at + 4)?;
        at += 12;
        if reference >> 31 == 1 {
            return Err(DashError::Unsupported(
                "a sidx that refers to other sidx boxes".into(),
            ));
        }
        let length = u64::from(reference & 0x7fff_ffff);
        let seconds = Duration::from_secs_f64(f64::from(duration) / timescale as f64);
        if length == 0 || seconds.is_zero() || seconds > MAX_TARGET_DURATION {
            return Err(bad(format!(
                "sidx reference {k}: {length} bytes, {seconds:?}"
            )));
        }
        segments.push(MediaSegment {
            sequence: k as u64 + 1,
            uri: base.to_owned(),
            duration: seconds,
            range: Some(ByteRange { offset, length }),
            map_uri: map_range.map(|_| base.to_owned()),
            map_range,
            discontinuity: false,
            program_date_time_ms: None,
        });
        offset = offset.saturating_add(length);
    }
    let longest = segments
        .iter()
        .map(|s| s.duration)
        .max()
        .ok_or_else(|| bad("an empty sidx".into()))?;
    Ok(MediaPlaylist {
        target_duration: Duration::from_secs(longest.as_secs_f64().ceil() as u64),
        media_sequence: 1,
        segments,
        ended: true,
        low_latency: None,
        refresh: None,
    })
}

/// How far the segments go.
#[derive(Debug, Clone, Copy)]
enum Timing {
    /// A static MPD of this length.
    Vod(Duration),
    /// A dynamic MPD: the time since its period began (unknown without an
    /// `availabilityStartTime`), and how far back its window goes.
    Live {
        elapsed: Option<Duration>,
        window: Duration,
    },
}

/// A representation, its adaptation set, and its `BaseURL` prefix.
type Found = (AdaptationSet, Representation, String);

/// Parses and checks the MPD; its representations in order.
fn read(bytes: &[u8]) -> Result<(MPD, Vec<Found>), DashError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DashError::Unparsable("not UTF-8".into()))?;
    let mpd = dash_mpd_core::parse(text).map_err(|e| {
        let mut message = e.to_string();
        message.truncate(300);
        DashError::Unparsable(message)
    })?;
    let period = match mpd.periods.as_slice() {
        [period] => period,
        [] => return Err(DashError::Empty),
        _ => return Err(DashError::Unsupported("more than one period".into())),
    };
    let mpd_base = base_of(&mpd.base_url, "");
    let period_base = base_of(&period.BaseURL, &mpd_base);
    let mut list = Vec::new();
    for set in &period.adaptations {
        if !set.ContentProtection.is_empty() {
            return Err(DashError::Unsupported(
                "an encrypted adaptation set (ContentProtection)".into(),
            ));
        }
        let set_base = base_of(&set.BaseURL, &period_base);
        for rep in &set.representations {
            let rep_base = base_of(&rep.BaseURL, &set_base);
            list.push((set.clone(), rep.clone(), rep_base));
        }
    }
    if list.is_empty() {
        return Err(DashError::Empty);
    }
    if list.len() > MAX_RENDITIONS {
        return Err(DashError::TooMany {
            what: "representations",
            count: list.len(),
            max: MAX_RENDITIONS,
        });
    }
    Ok((mpd.clone(), list))
}

/// The first `BaseURL` of a level resolved against the level above: an
/// absolute one replaces it, a relative one extends its folder.
fn base_of(urls: &[dash_mpd_core::BaseURL], above: &str) -> String {
    match urls.first().map(|b| b.base.trim()) {
        None | Some("") => above.to_owned(),
        Some(url) if url.contains("://") || url.starts_with('/') => url.to_owned(),
        Some(url) => {
            let folder = match above.rfind('/') {
                Some(i) => &above[..=i],
                None => "",
            };
            format!("{folder}{url}")
        }
    }
}

fn rendition(
    index: usize,
    set: &AdaptationSet,
    rep: &Representation,
    mpd_uri: &str,
) -> Result<RenditionInfo, DashError> {
    let id = rep.id.clone().unwrap_or_else(|| index.to_string());
    let bad = |reason: String| DashError::Bad {
        representation: id.chars().take(64).collect(),
        reason,
    };
    let content = set
        .contentType
        .clone()
        .or_else(|| rep.contentType.clone())
        .or_else(|| {
            rep.mimeType
                .clone()
                .or_else(|| set.mimeType.clone())
                .and_then(|m| m.split('/').next().map(str::to_owned))
        })
        .unwrap_or_default();
    let kind = match content.as_str() {
        "audio" => RenditionKind::Audio,
        "text" | "application" => RenditionKind::Subtitles,
        _ => RenditionKind::Variant,
    };
    let codecs = rep
        .codecs
        .clone()
        .or_else(|| set.codecs.clone())
        .unwrap_or_default();
    if codecs.len() > MAX_CODECS {
        return Err(bad(format!("codecs over {MAX_CODECS} bytes")));
    }
    let language = rep
        .lang
        .clone()
        .or_else(|| set.lang.clone())
        .unwrap_or_default();
    if language.len() > MAX_LANGUAGE {
        return Err(bad(format!("lang over {MAX_LANGUAGE} bytes")));
    }
    let group = if kind == RenditionKind::Variant {
        String::new()
    } else {
        set.id.clone().unwrap_or_else(|| content.clone())
    };
    if group.len() > MAX_GROUP {
        return Err(bad(format!("adaptation set id over {MAX_GROUP} bytes")));
    }
    let width =
        u32::try_from(rep.width.or(set.width).unwrap_or(0)).map_err(|_| bad("width".into()))?;
    let height =
        u32::try_from(rep.height.or(set.height).unwrap_or(0)).map_err(|_| bad("height".into()))?;
    let uri = format!("{mpd_uri}{FRAGMENT}{index}");
    if uri.len() > MAX_URI_LEN {
        return Err(bad("the MPD's URI is too long".into()));
    }
    let mut name = id.clone();
    name.truncate(MAX_RENDITION_NAME);
    Ok(RenditionInfo {
        id: u32::try_from(index).unwrap_or(u32::MAX),
        name,
        uri,
        bandwidth: rep.bandwidth.unwrap_or(0),
        codecs,
        width,
        height,
        kind,
        group,
        language,
    })
}

/// The representation's segments, numbered by `$Number$` (or from 1).
fn segments(
    set: &AdaptationSet,
    rep: &Representation,
    base: &str,
    timing: Timing,
) -> Result<MediaPlaylist, DashError> {
    let id = rep.id.clone().unwrap_or_default();
    let bad = |reason: String| DashError::Bad {
        representation: id.chars().take(64).collect(),
        reason,
    };
    let template = rep
        .SegmentTemplate
        .as_ref()
        .or(set.SegmentTemplate.as_ref());
    let list = rep.SegmentList.as_ref().or(set.SegmentList.as_ref());
    let (map, media) = match (template, list) {
        (Some(t), _) => from_template(t, rep, base, timing).map_err(bad)?,
        (None, Some(l)) => {
            let timescale = l.timescale.unwrap_or(1).max(1);
            let each = l
                .duration
                .map(|d| Duration::from_secs_f64(d as f64 / timescale as f64))
                .ok_or_else(|| bad("SegmentList without a duration".into()))?;
            let map = match &l.Initialization {
                Some(init) => Some((
                    join(base, init.sourceURL.as_deref().unwrap_or("")),
                    init.range
                        .as_deref()
                        .map(byte_range)
                        .transpose()
                        .map_err(bad)?,
                )),
                None => None,
            };
            let mut media = Vec::new();
            for (i, url) in l.segment_urls.iter().enumerate() {
                let uri = join(base, url.media.as_deref().unwrap_or(""));
                let range = url
                    .mediaRange
                    .as_deref()
                    .map(byte_range)
                    .transpose()
                    .map_err(bad)?;
                media.push((i as u64 + 1, uri, range, each));
            }
            (map, media)
        }
        (None, None) => return Err(bad("no SegmentTemplate or SegmentList".into())),
    };
    if media.is_empty() {
        return Err(bad("no segments".into()));
    }
    if media.len() > MAX_SEGMENTS {
        return Err(DashError::TooMany {
            what: "segments",
            count: media.len(),
            max: MAX_SEGMENTS,
        });
    }
    let longest = media.iter().map(|m| m.3).max().unwrap_or_default();
    if longest.is_zero() || longest > MAX_TARGET_DURATION {
        return Err(bad(format!("a segment of {longest:?}")));
    }
    let first = media[0].0;
    let segments = media
        .into_iter()
        .map(|(sequence, uri, range, duration)| {
            if uri.len() > MAX_URI_LEN {
                return Err(bad("a segment URI is too long".into()));
            }
            Ok(MediaSegment {
                sequence,
                uri,
                duration,
                range,
                map_uri: map.as_ref().map(|(uri, _)| uri.clone()),
                map_range: map.as_ref().and_then(|(_, range)| *range),
                discontinuity: false,
                program_date_time_ms: None,
            })
        })
        .collect::<Result<Vec<_>, DashError>>()?;
    Ok(MediaPlaylist {
        target_duration: Duration::from_secs(longest.as_secs_f64().ceil() as u64),
        media_sequence: first,
        segments,
        ended: matches!(timing, Timing::Vod(_)),
        low_latency: None,
        refresh: None,
    })
}

/// A segment as (sequence, URI, range, duration).
type Listed = (u64, String, Option<ByteRange>, Duration);

/// An init segment as (URI, range).
type Init = Option<(String, Option<ByteRange>)>;

fn from_template(
    t: &SegmentTemplate,
    rep: &Representation,
    base: &str,
    timing: Timing,
) -> Result<(Init, Vec<Listed>), String> {
    let media = t.media.as_deref().ok_or("SegmentTemplate without media")?;
    let timescale = t.timescale.unwrap_or(1).max(1);
    let start = t.startNumber.unwrap_or(1);
    let fill = |template: &str, number: u64, time: u64| fill(template, rep, number, time);
    let map = t
        .initialization
        .as_deref()
        .map(|init| Ok::<_, String>((join(base, &fill(init, start, 0)?), None)))
        .transpose()?;
    let seconds = |ticks: u64| Duration::from_secs_f64(ticks as f64 / timescale as f64);
    let mut out = Vec::new();
    match &t.SegmentTimeline {
        Some(timeline) => {
            // An open-ended repeat runs to the end, or to now when live.
            let end = match timing {
                Timing::Vod(length) => length,
                Timing::Live { elapsed, .. } => elapsed.unwrap_or_default(),
            };
            let pto = t.presentationTimeOffset.unwrap_or(0);
            let end_ticks = (end.as_secs_f64() * timescale as f64).round() as u64 + pto;
            let mut time = 0u64;
            let mut number = start;
            // A template addressed by time alone may keep its startNumber
            // while its window slides: the time is then the stable name.
            let by_time = media.contains("$Time") && !media.contains("$Number");
            for (i, s) in timeline.segments.iter().enumerate() {
                if let Some(t) = s.t {
                    time = t;
                }
                if s.d == 0 {
                    return Err("a SegmentTimeline S with d=0".into());
                }
                // r = -1: repeat until the next S, or the end of the period
                // (a VOD's last segment may be cut short; a live one is
                // listed once whole).
                let count = match s.r.unwrap_or(0) {
                    r if r >= 0 => r as u64 + 1,
                    _ => {
                        let next = timeline.segments.get(i + 1).and_then(|next| next.t);
                        let span = next.unwrap_or(end_ticks).saturating_sub(time);
                        match (next, timing) {
                            (None, Timing::Live { .. }) => span / s.d,
                            _ => span.div_ceil(s.d),
                        }
                    }
                };
                for _ in 0..count {
                    if out.len() >= MAX_SEGMENTS {
                        return Err(format!("over {MAX_SEGMENTS} segments"));
                    }
                    out.push((
                        if by_time { time } else { number },
                        join(base, &fill(media, number, time)?),
                        None,
                        seconds(s.d),
                    ));
                    time = time.saturating_add(s.d);
                    number += 1;
                }
            }
        }
        None => {
            let each = t
                .duration
                .ok_or("SegmentTemplate without duration or SegmentTimeline")?;
            if !each.is_finite() || each <= 0.0 {
                return Err("SegmentTemplate duration is not positive".into());
            }
            let each_secs = each / timescale as f64;
            let (length, first) = match timing {
                Timing::Vod(length) => (length, 0),
                Timing::Live { elapsed, window } => {
                    let elapsed = elapsed
                        .ok_or("a live $Number$ template needs the MPD's availabilityStartTime")?;
                    // Whole segments only: k is out once (k + 1) × each has passed.
                    let available = (elapsed.as_secs_f64() / each_secs).floor() as u64;
                    let kept = (window.as_secs_f64() / each_secs).ceil() as u64;
                    let first = available.saturating_sub(kept.max(1));
                    (Duration::from_secs_f64(available as f64 * each_secs), first)
                }
            };
            let count = (length.as_secs_f64() / each_secs - 1e-6).ceil().max(0.0) as u64;
            if count.saturating_sub(first) as usize > MAX_SEGMENTS {
                return Err(format!("over {MAX_SEGMENTS} segments"));
            }
            for i in first..count {
                let number = start + i;
                let time = (i as f64 * each).round() as u64;
                // The last segment may be shorter: the period ends.
                let left = length.as_secs_f64() - i as f64 * each_secs;
                let duration = Duration::from_secs_f64(left.min(each_secs).max(0.0));
                out.push((
                    number,
                    join(base, &fill(media, number, time)?),
                    None,
                    duration,
                ));
            }
        }
    }
    Ok((map, out))
}

/// A template with `$RepresentationID$`, `$Bandwidth$`, `$Number$` and
/// `$Time$` (each with an optional `%0Nd`) and `$$` filled in.
fn fill(template: &str, rep: &Representation, number: u64, time: u64) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find('$').ok_or("an unclosed $ in a template")?;
        let name = &after[..end];
        rest = &after[end + 1..];
        if name.is_empty() {
            out.push('$');
            continue;
        }
        let (ident, format) = match name.split_once('%') {
            Some((ident, format)) => (ident, Some(format)),
            None => (name, None),
        };
        let value = match ident {
            "RepresentationID" => rep.id.clone().unwrap_or_default(),
            "Bandwidth" => rep.bandwidth.unwrap_or(0).to_string(),
            "Number" => number.to_string(),
            "Time" => time.to_string(),
            other => return Err(format!("unknown template identifier ${other}$")),
        };
        match format {
            None => out.push_str(&value),
            Some(format) => {
                let width = format
                    .strip_prefix('0')
                    .and_then(|f| f.strip_suffix('d'))
                    .and_then(|w| w.parse::<usize>().ok())
                    .filter(|w| *w <= 32)
                    .ok_or_else(|| format!("unsupported format %{format}"))?;
                out.push_str(&format!("{value:0>width$}"));
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `base` (a folder prefix, or a file whose folder counts) joined with `uri`.
fn join(base: &str, uri: &str) -> String {
    if uri.contains("://") || uri.starts_with('/') || base.is_empty() {
        return uri.to_owned();
    }
    if uri.is_empty() {
        return base.to_owned();
    }
    let folder = match base.rfind('/') {
        Some(i) => &base[..=i],
        None => "",
    };
    format!("{folder}{uri}")
}

/// A DASH byte range `first-last` (both inclusive).
fn byte_range(text: &str) -> Result<ByteRange, String> {
    let (first, last) = text
        .trim()
        .split_once('-')
        .ok_or_else(|| format!("byte range {text:?} is not first-last"))?;
    let (first, last) = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(first), Ok(last)) if last >= first => (first, last),
        _ => return Err(format!("byte range {text:?} is not first-last")),
    };
    Ok(ByteRange {
        offset: first,
        length: last - first + 1,
    })
}

#[cfg(test)]
mod tests;
