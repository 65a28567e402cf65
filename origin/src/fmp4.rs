//! Cuts a fragmented-MP4 media segment into LL-HLS parts.
//!
//! Sans-I/O: bytes in, bytes out. An encoder that writes one `moof` per
//! segment (ffmpeg's HLS muxer does) gives a player nothing to play until the
//! whole segment exists; low-latency HLS wants the same media as a run of
//! *parts*, each a self-contained `moof` + `mdat` a fraction of a segment
//! long. [`split`] makes them from a finished segment, which is how the test
//! origin turns the committed stream into an LL-HLS stream without storing
//! any more media.
//!
//! # How a segment is cut
//!
//! 1. Every sample of every track is read from the segment's `moof`/`mdat`
//!    pairs: its decode time, duration, size, flags, composition offset and
//!    bytes, with the defaults of `tfhd` and of the init segment's `trex`
//!    resolved.
//! 2. The *reference track* is the first track with a non-sync sample (the
//!    video), else the first track. Its samples are divided into
//!    `round(duration ÷ part target)` runs of nearly equal duration; a run
//!    starts at the first sample whose decode time reaches `i · duration ÷ n`.
//! 3. Every other track's samples go to the part whose time span holds their
//!    decode time (compared in seconds across timescales, exactly).
//! 4. Each part is written as one `moof` (a `traf` per track that has samples
//!    in it, `tfhd` with `default-base-is-moof`, `tfdt`, one `trun` stating
//!    every sample's duration, size, flags and composition offset) and one
//!    `mdat` with the tracks' bytes in `traf` order.
//!
//! A part is *independent* (`INDEPENDENT=YES`) when its first reference
//! sample is a sync sample: the first part of every segment that starts with
//! a keyframe. The segment served beside its parts is their concatenation, as
//! an LL-HLS packager makes it.
//!
//! # Taking one track out
//!
//! [`keep_track`] writes a segment's samples of one track only, the same way
//! (one `moof` + `mdat`), and [`keep_track_init`] the init segment with only
//! that track's `trak` and `trex`: the test origin's demuxed rendering
//! (`/alt/`: video-only variants and an alternate audio rendition) is made
//! from the committed muxed stream this way.
//!
//! Refused with an [`Fmp4Error`]: encrypted or otherwise unknown `traf`
//! children (`senc`, `saiz`, `sbgp`, …), `duration-is-empty` fragments, a
//! `traf` without `tfdt`, a track the init segment does not declare, sample
//! bytes outside the file.

use std::collections::HashMap;
use std::time::Duration;

/// Most samples read from one segment: a bound on memory for bad input (a
/// 2 s segment at 60 fps with 48 kHz AAC has about 220).
pub const MAX_SAMPLES: usize = 100_000;

/// Why an init or media segment could not be cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    #[error("box {kind} at byte {at}: {reason}")]
    Malformed {
        kind: String,
        at: usize,
        reason: &'static str,
    },
    #[error("the init segment has no moov box with tracks")]
    NoTracks,
    #[error("the segment has no samples")]
    NoSamples,
    #[error("the segment has more than {MAX_SAMPLES} samples")]
    TooManySamples,
    #[error("track {0} is not declared in the init segment")]
    UnknownTrack(u32),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

/// What the init segment says about one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    pub id: u32,
    /// The `hdlr` handler type: `vide`, `soun`, `subt`…
    pub handler: [u8; 4],
    /// Units per second of the track's decode times (`mdhd`).
    pub timescale: u32,
    /// `trex` defaults, used where `tfhd` and `trun` are silent.
    pub default_duration: u32,
    pub default_size: u32,
    pub default_flags: u32,
}

/// The tracks of an init segment (`moov`), in `trak` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracks(Vec<Track>);

impl Tracks {
    /// Reads the tracks of an init segment: `tkhd` ids, `mdhd` timescales,
    /// `trex` defaults.
    pub fn parse(init: &[u8]) -> Result<Self, Fmp4Error> {
        let moov = boxes(init, 0)?
            .into_iter()
            .find(|b| &b.kind == b"moov")
            .ok_or(Fmp4Error::NoTracks)?;
        let mut tracks = Vec::new();
        let mut trex = HashMap::new();
        for child in boxes(moov.body, moov.body_at)? {
            match &child.kind {
                b"trak" => tracks.push(trak(&child)?),
                b"mvex" => {
                    for t in boxes(child.body, child.body_at)? {
                        if &t.kind == b"trex" {
                            let mut r = Reader::full(&t)?;
                            let id = r.u32()?;
                            let _description = r.u32()?;
                            trex.insert(id, (r.u32()?, r.u32()?, r.u32()?));
                        }
                    }
                }
                _ => {}
            }
        }
        if tracks.is_empty() {
            return Err(Fmp4Error::NoTracks);
        }
        for track in &mut tracks {
            if let Some(&(duration, size, flags)) = trex.get(&track.id) {
                track.default_duration = duration;
                track.default_size = size;
                track.default_flags = flags;
            }
        }
        Ok(Self(tracks))
    }

    /// Every track, in `trak` order.
    pub fn all(&self) -> &[Track] {
        &self.0
    }

    fn get(&self, id: u32) -> Result<&Track, Fmp4Error> {
        self.0
            .iter()
            .find(|t| t.id == id)
            .ok_or(Fmp4Error::UnknownTrack(id))
    }
}

fn trak(trak: &Atom<'_>) -> Result<Track, Fmp4Error> {
    let mut id = None;
    let mut timescale = None;
    let mut handler = *b"    ";
    for child in boxes(trak.body, trak.body_at)? {
        match &child.kind {
            b"tkhd" => {
                let mut r = Reader::full(&child)?;
                r.skip(if r.version == 1 { 16 } else { 8 })?;
                id = Some(r.u32()?);
            }
            b"mdia" => {
                for m in boxes(child.body, child.body_at)? {
                    if &m.kind == b"mdhd" {
                        let mut r = Reader::full(&m)?;
                        r.skip(if r.version == 1 { 16 } else { 8 })?;
                        timescale = Some(r.u32()?);
                    }
                    if &m.kind == b"hdlr" {
                        let mut r = Reader::full(&m)?;
                        let _pre_defined = r.u32()?;
                        handler = r.u32()?.to_be_bytes();
                    }
                }
            }
            _ => {}
        }
    }
    match (id, timescale) {
        (Some(id), Some(timescale)) if timescale > 0 => Ok(Track {
            id,
            handler,
            timescale,
            default_duration: 0,
            default_size: 0,
            default_flags: 0,
        }),
        _ => Err(malformed(
            trak,
            "trak without tkhd or with a zero mdhd timescale",
        )),
    }
}

/// One part cut from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `moof` + `mdat`.
    pub bytes: Vec<u8>,
    /// Where it starts in the segment's timeline, from the segment's start.
    pub start: Duration,
    /// Starts with a sync sample of the reference track.
    pub independent: bool,
}

/// Cuts `segment` into parts of about `target` each (see the module docs).
/// The parts' `start`s are increasing, the first is zero.
pub fn split(segment: &[u8], tracks: &Tracks, target: Duration) -> Result<Vec<Part>, Fmp4Error> {
    let runs = read_samples(segment, tracks)?;
    let reference = runs
        .iter()
        .position(|r| r.samples.iter().any(|s| !is_sync(s.flags)))
        .unwrap_or(0);
    let ref_track = tracks.get(runs[reference].track)?;
    let ref_samples = &runs[reference].samples;
    let t0 = ref_samples[0].dts;
    let last = &ref_samples[ref_samples.len() - 1];
    let span = (last.dts + u64::from(last.duration)).saturating_sub(t0);
    let span_secs = span as f64 / f64::from(ref_track.timescale);
    let n = ((span_secs / target.as_secs_f64().max(1e-3)).round() as usize).clamp(1, 1000);

    // Index of the first reference sample of each part (deduplicated, so no
    // part is empty).
    let mut firsts: Vec<usize> = Vec::with_capacity(n);
    for i in 0..n {
        let at = t0 + span * i as u64 / n as u64;
        let first = ref_samples.partition_point(|s| s.dts < at);
        if first < ref_samples.len() && firsts.last() != Some(&first) {
            firsts.push(first);
        }
    }
    // Part starts in the reference timescale, relative to t0.
    let starts: Vec<u64> = firsts.iter().map(|&i| ref_samples[i].dts - t0).collect();
    let scale = u128::from(ref_track.timescale);

    let mut parts: Vec<Vec<(usize, &Sample)>> = vec![Vec::new(); starts.len()];
    for (r, run) in runs.iter().enumerate() {
        let timescale = u128::from(tracks.get(run.track)?.timescale);
        for sample in &run.samples {
            // The last part whose start is at or before the sample's time,
            // both in seconds: dts/timescale - t0/scale >= start/scale.
            let rel = |start: u64| {
                u128::from(sample.dts) * scale >= (u128::from(t0) + u128::from(start)) * timescale
            };
            let part = starts.partition_point(|&s| rel(s)).saturating_sub(1);
            parts[part].push((r, sample));
        }
    }

    let mut out = Vec::with_capacity(parts.len());
    for (i, samples) in parts.iter().enumerate() {
        let first_ref = ref_samples[firsts[i]].flags;
        out.push(Part {
            bytes: write_part(segment, &runs, samples, i as u32 + 1)?,
            start: Duration::from_nanos(
                u64::try_from(u128::from(starts[i]) * 1_000_000_000 / scale).unwrap_or(u64::MAX),
            ),
            independent: is_sync(first_ref),
        });
    }
    Ok(out)
}

/// The samples of track `id` in `segment`, written as one `moof` + `mdat`
/// (see the module docs).
pub fn keep_track(segment: &[u8], tracks: &Tracks, id: u32) -> Result<Vec<u8>, Fmp4Error> {
    tracks.get(id)?;
    let runs = read_samples(segment, tracks)?;
    let r = runs
        .iter()
        .position(|run| run.track == id)
        .ok_or(Fmp4Error::NoSamples)?;
    let samples: Vec<(usize, &Sample)> = runs[r].samples.iter().map(|s| (r, s)).collect();
    write_part(segment, &runs, &samples, 1)
}

/// `init` with track `id` only: every box as is but the other tracks' `trak`
/// and `trex`, and the sizes of `moov` and `mvex` that enclose them.
pub fn keep_track_init(init: &[u8], id: u32) -> Result<Vec<u8>, Fmp4Error> {
    let raw = |b: &Atom<'_>| &init[b.body_at - b.header..b.body_at + b.body.len()];
    let mut out = Vec::with_capacity(init.len());
    let mut found = false;
    for top in boxes(init, 0)? {
        if &top.kind != b"moov" {
            out.extend_from_slice(raw(&top));
            continue;
        }
        let mut moov = Vec::new();
        for child in boxes(top.body, top.body_at)? {
            match &child.kind {
                b"trak" => {
                    if trak(&child)?.id == id {
                        found = true;
                        moov.extend_from_slice(raw(&child));
                    }
                }
                b"mvex" => {
                    let mut mvex = Vec::new();
                    for t in boxes(child.body, child.body_at)? {
                        let other = &t.kind == b"trex" && {
                            let mut r = Reader::full(&t)?;
                            r.u32()? != id
                        };
                        if !other {
                            mvex.extend_from_slice(raw(&t));
                        }
                    }
                    put_header(&mut moov, 8 + mvex.len(), b"mvex");
                    moov.extend_from_slice(&mvex);
                }
                _ => moov.extend_from_slice(raw(&child)),
            }
        }
        put_header(&mut out, 8 + moov.len(), b"moov");
        out.extend_from_slice(&moov);
    }
    if found {
        Ok(out)
    } else {
        Err(Fmp4Error::UnknownTrack(id))
    }
}

/// `sample_is_non_sync_sample` is bit 16 of the sample flags.
fn is_sync(flags: u32) -> bool {
    flags & 0x0001_0000 == 0
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    dts: u64,
    duration: u32,
    size: u32,
    flags: u32,
    cts: i64,
    /// Offset of its bytes in the segment.
    offset: usize,
}

/// The samples of one track, across every fragment of the segment.
#[derive(Debug)]
struct Run {
    track: u32,
    description: Option<u32>,
    samples: Vec<Sample>,
}

fn read_samples(segment: &[u8], tracks: &Tracks) -> Result<Vec<Run>, Fmp4Error> {
    let mut runs: Vec<Run> = Vec::new();
    let mut total = 0usize;
    for moof in boxes(segment, 0)?.iter().filter(|b| &b.kind == b"moof") {
        let moof_start = moof.body_at - moof.header;
        // Without a base offset or default-base-is-moof, a traf's data
        // follows the previous traf's (ISO/IEC 14496-12 8.8.7.1).
        let mut previous_end = moof_start;
        for traf in boxes(moof.body, moof.body_at)? {
            if &traf.kind != b"traf" {
                continue;
            }
            let fragment = read_traf(&traf, tracks, moof_start, previous_end, segment.len())?;
            previous_end = fragment.data_end;
            total += fragment.run.samples.len();
            if total > MAX_SAMPLES {
                return Err(Fmp4Error::TooManySamples);
            }
            match runs.iter_mut().find(|r| r.track == fragment.run.track) {
                Some(run) => {
                    if run.description != fragment.run.description {
                        return Err(Fmp4Error::Unsupported(
                            "a track changing sample description within a segment",
                        ));
                    }
                    run.samples.extend(fragment.run.samples)
                }
                None => runs.push(fragment.run),
            }
        }
    }
    runs.retain(|r| !r.samples.is_empty());
    if runs.is_empty() {
        return Err(Fmp4Error::NoSamples);
    }
    Ok(runs)
}

struct Fragment {
    run: Run,
    data_end: usize,
}

fn read_traf(
    traf: &Atom<'_>,
    tracks: &Tracks,
    moof_start: usize,
    previous_end: usize,
    file_len: usize,
) -> Result<Fragment, Fmp4Error> {
    let children = boxes(traf.body, traf.body_at)?;
    let tfhd = children
        .iter()
        .find(|b| &b.kind == b"tfhd")
        .ok_or_else(|| malformed(traf, "traf without tfhd"))?;
    let mut r = Reader::full(tfhd)?;
    let track = tracks.get(r.u32()?)?;
    let flags = r.flags;
    if flags & 0x01_0000 != 0 {
        return Err(Fmp4Error::Unsupported("duration-is-empty fragments"));
    }
    let base = if flags & 0x01 != 0 {
        usize::try_from(r.u64()?).map_err(|_| malformed(tfhd, "base data offset"))?
    } else if flags & 0x02_0000 != 0 {
        moof_start
    } else {
        previous_end
    };
    let description = if flags & 0x02 != 0 {
        Some(r.u32()?)
    } else {
        None
    };
    let default_duration = if flags & 0x08 != 0 {
        r.u32()?
    } else {
        track.default_duration
    };
    let default_size = if flags & 0x10 != 0 {
        r.u32()?
    } else {
        track.default_size
    };
    let default_flags = if flags & 0x20 != 0 {
        r.u32()?
    } else {
        track.default_flags
    };

    let mut dts = None;
    let mut samples = Vec::new();
    let mut data = base;
    for child in &children {
        match &child.kind {
            b"tfhd" => {}
            b"tfdt" => {
                let mut r = Reader::full(child)?;
                dts = Some(if r.version == 1 {
                    r.u64()?
                } else {
                    u64::from(r.u32()?)
                });
            }
            b"trun" => {
                let mut time = dts.ok_or_else(|| malformed(traf, "trun before tfdt"))?;
                let mut r = Reader::full(child)?;
                let tf = r.flags;
                let count = r.u32()? as usize;
                if count > MAX_SAMPLES {
                    return Err(Fmp4Error::TooManySamples);
                }
                if tf & 0x01 != 0 {
                    let offset = r.u32()? as i32;
                    data = base
                        .checked_add_signed(offset as isize)
                        .ok_or_else(|| malformed(child, "data offset"))?;
                }
                let first_flags = if tf & 0x04 != 0 { Some(r.u32()?) } else { None };
                for i in 0..count {
                    let duration = if tf & 0x100 != 0 {
                        r.u32()?
                    } else {
                        default_duration
                    };
                    let size = if tf & 0x200 != 0 {
                        r.u32()?
                    } else {
                        default_size
                    };
                    let flags = if tf & 0x400 != 0 {
                        r.u32()?
                    } else if i == 0 {
                        first_flags.unwrap_or(default_flags)
                    } else {
                        default_flags
                    };
                    let cts = if tf & 0x800 == 0 {
                        0
                    } else if r.version == 0 {
                        i64::from(r.u32()?)
                    } else {
                        i64::from(r.u32()? as i32)
                    };
                    let end = data
                        .checked_add(size as usize)
                        .filter(|&end| end <= file_len)
                        .ok_or_else(|| malformed(child, "sample bytes outside the segment"))?;
                    samples.push(Sample {
                        dts: time,
                        duration,
                        size,
                        flags,
                        cts,
                        offset: data,
                    });
                    time = time.saturating_add(u64::from(duration));
                    data = end;
                }
                dts = Some(time);
            }
            _ => {
                return Err(Fmp4Error::Unsupported(
                    "traf children other than tfhd, tfdt and trun (encryption, sample groups)",
                ));
            }
        }
    }
    if dts.is_none() {
        return Err(malformed(traf, "traf without tfdt"));
    }
    Ok(Fragment {
        run: Run {
            track: track.id,
            description,
            samples,
        },
        data_end: data,
    })
}

/// Writes one part: `moof` (mfhd, a traf per track with samples) + `mdat`.
fn write_part(
    segment: &[u8],
    runs: &[Run],
    samples: &[(usize, &Sample)],
    sequence: u32,
) -> Result<Vec<u8>, Fmp4Error> {
    let per_track: Vec<Vec<&Sample>> = (0..runs.len())
        .map(|r| {
            samples
                .iter()
                .filter(|(i, _)| *i == r)
                .map(|(_, s)| *s)
                .collect()
        })
        .collect();
    let with_cts = |s: &[&Sample]| s.iter().any(|s| s.cts != 0);
    let traf_size = |r: usize, s: &[&Sample]| {
        let tfhd = 16 + if runs[r].description.is_some() { 4 } else { 0 };
        let row = if with_cts(s) { 16 } else { 12 };
        8 + tfhd + 20 + 20 + row * s.len()
    };
    let moof_size: usize = 8
        + 16
        + per_track
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .map(|(r, s)| traf_size(r, s))
            .sum::<usize>();
    let data_size: usize = samples.iter().map(|(_, s)| s.size as usize).sum();

    let mut out = Vec::with_capacity(moof_size + 8 + data_size);
    put_header(&mut out, moof_size, b"moof");
    put_header(&mut out, 16, b"mfhd");
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&sequence.to_be_bytes());
    let mut data_offset = moof_size + 8;
    for (r, s) in per_track.iter().enumerate() {
        if s.is_empty() {
            continue;
        }
        let run = &runs[r];
        put_header(&mut out, traf_size(r, s), b"traf");
        let tfhd_flags: u32 = 0x02_0000 | if run.description.is_some() { 0x02 } else { 0 };
        put_header(
            &mut out,
            16 + if run.description.is_some() { 4 } else { 0 },
            b"tfhd",
        );
        out.extend_from_slice(&tfhd_flags.to_be_bytes());
        out.extend_from_slice(&run.track.to_be_bytes());
        if let Some(d) = run.description {
            out.extend_from_slice(&d.to_be_bytes());
        }
        put_header(&mut out, 20, b"tfdt");
        out.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        out.extend_from_slice(&s[0].dts.to_be_bytes());
        let cts = with_cts(s);
        let negative = s.iter().any(|s| s.cts < 0);
        let row = if cts { 16 } else { 12 };
        put_header(&mut out, 20 + row * s.len(), b"trun");
        let trun_flags: u32 = 0x01 | 0x100 | 0x200 | 0x400 | if cts { 0x800 } else { 0 };
        let version: u32 = if negative { 1 << 24 } else { 0 };
        out.extend_from_slice(&(version | trun_flags).to_be_bytes());
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        let offset = i32::try_from(data_offset)
            .map_err(|_| Fmp4Error::Unsupported("parts larger than 2 GiB"))?;
        out.extend_from_slice(&offset.to_be_bytes());
        for sample in s {
            out.extend_from_slice(&sample.duration.to_be_bytes());
            out.extend_from_slice(&sample.size.to_be_bytes());
            out.extend_from_slice(&sample.flags.to_be_bytes());
            if cts {
                // Version 1 reads it signed, version 0 as unsigned: the same
                // 32 bits either way.
                out.extend_from_slice(&(sample.cts as u32).to_be_bytes());
            }
        }
        data_offset += s.iter().map(|s| s.size as usize).sum::<usize>();
    }
    debug_assert_eq!(out.len(), moof_size);
    put_header(&mut out, 8 + data_size, b"mdat");
    for s in &per_track {
        for sample in s {
            // Bounds were checked when the sample was read.
            out.extend_from_slice(&segment[sample.offset..sample.offset + sample.size as usize]);
        }
    }
    Ok(out)
}

fn put_header(out: &mut Vec<u8>, size: usize, kind: &[u8; 4]) {
    // Parts are bounded by the segment they come from (at most the origin's
    // MAX_FILE_BYTES), far below 4 GiB.
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(kind);
}

/// A box: its type, its body, and where the body starts in the file.
struct Atom<'a> {
    kind: [u8; 4],
    body: &'a [u8],
    body_at: usize,
    header: usize,
}

fn malformed(b: &Atom<'_>, reason: &'static str) -> Fmp4Error {
    Fmp4Error::Malformed {
        kind: String::from_utf8_lossy(&b.kind).into_owned(),
        at: b.body_at - b.header,
        reason,
    }
}

/// The boxes of `bytes`, which starts at byte `at` of the file.
fn boxes(bytes: &[u8], at: usize) -> Result<Vec<Atom<'_>>, Fmp4Error> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let bad = |reason| Fmp4Error::Malformed {
            kind: "?".into(),
            at: at + i,
            reason,
        };
        let head = bytes
            .get(i..i + 8)
            .ok_or_else(|| bad("truncated box header"))?;
        let mut kind = [0u8; 4];
        kind.copy_from_slice(&head[4..8]);
        let (size, header) = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
            0 => (bytes.len() - i, 8),
            1 => {
                let large = bytes
                    .get(i + 8..i + 16)
                    .ok_or_else(|| bad("truncated 64-bit size"))?;
                let mut b = [0u8; 8];
                b.copy_from_slice(large);
                (
                    usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX),
                    16,
                )
            }
            n => (n as usize, 8),
        };
        if size < header || size > bytes.len() - i {
            return Err(bad("box size out of bounds"));
        }
        out.push(Atom {
            kind,
            body: &bytes[i + header..i + size],
            body_at: at + i + header,
            header,
        });
        i += size;
    }
    Ok(out)
}

/// Reads big-endian fields of a full box (version and flags first).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    version: u8,
    flags: u32,
    kind: [u8; 4],
    start: usize,
}

impl<'a> Reader<'a> {
    fn full(b: &Atom<'a>) -> Result<Self, Fmp4Error> {
        let mut r = Self {
            bytes: b.body,
            at: 0,
            version: 0,
            flags: 0,
            kind: b.kind,
            start: b.body_at,
        };
        let vf = r.u32()?;
        r.version = (vf >> 24) as u8;
        r.flags = vf & 0x00ff_ffff;
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Fmp4Error> {
        let bytes = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| Fmp4Error::Malformed {
                kind: String::from_utf8_lossy(&self.kind).into_owned(),
                at: self.start + self.at,
                reason: "field past the end of its box",
            })?;
        self.at += n;
        Ok(bytes)
    }

    fn skip(&mut self, n: usize) -> Result<(), Fmp4Error> {
        self.take(n).map(|_| ())
    }

    fn u32(&mut self) -> Result<u32, Fmp4Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Fmp4Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../media/test-stream")
            .join(name);
        std::fs::read(path).expect("committed test stream")
    }

    fn tracks() -> Tracks {
        Tracks::parse(&media("init_360p.mp4")).expect("init parses")
    }

    const HALF: Duration = Duration::from_millis(500);

    /// Per track: (decode time, duration, size, flags, cts, bytes) of every
    /// sample, in order.
    type Table = Vec<(u32, Vec<(u64, u32, u32, u32, i64, Vec<u8>)>)>;

    fn table(bytes: &[u8], tracks: &Tracks) -> Table {
        read_samples(bytes, tracks)
            .expect("samples")
            .into_iter()
            .map(|run| {
                let rows = run
                    .samples
                    .iter()
                    .map(|s| {
                        let data = bytes[s.offset..s.offset + s.size as usize].to_vec();
                        (s.dts, s.duration, s.size, s.flags, s.cts, data)
                    })
                    .collect();
                (run.track, rows)
            })
            .collect()
    }

    #[test]
    fn one_track_taken_out_holds_exactly_its_samples() {
        let init = media("init_360p.mp4");
        let tracks = tracks();
        let kinds: Vec<[u8; 4]> = tracks.all().iter().map(|t| t.handler).collect();
        assert_eq!(kinds, [*b"vide", *b"soun"]);
        let segment = media("360p_03.m4s");
        let whole = table(&segment, &tracks);
        for track in tracks.all() {
            let only_init = keep_track_init(&init, track.id).expect("init of one track");
            let only = Tracks::parse(&only_init).expect("parses");
            assert_eq!(only.all(), &[*track][..], "its trak and trex, as they were");
            let bytes = keep_track(&segment, &tracks, track.id).expect("one track");
            let got = table(&bytes, &only);
            let want: Table = whole
                .iter()
                .filter(|(id, _)| *id == track.id)
                .cloned()
                .collect();
            assert_eq!(got, want, "track {}", track.id);
        }
        assert_eq!(
            keep_track_init(&init, 9).unwrap_err(),
            Fmp4Error::UnknownTrack(9)
        );
        assert_eq!(
            keep_track(&segment, &tracks, 9).unwrap_err(),
            Fmp4Error::UnknownTrack(9)
        );
    }

    #[test]
    fn the_init_segment_declares_video_and_audio_timescales() {
        let tracks = tracks();
        assert_eq!(tracks.0.len(), 2, "{tracks:?}");
        assert!(tracks.0.iter().all(|t| t.timescale > 0));
        assert!(tracks.0.iter().any(|t| t.timescale == 48_000), "{tracks:?}");
    }

    #[test]
    fn parts_carry_every_sample_once_with_its_bytes_and_times() {
        let tracks = tracks();
        for name in ["360p_00.m4s", "360p_05.m4s", "360p_09.m4s"] {
            let segment = media(name);
            let parts = split(&segment, &tracks, HALF).expect("splits");
            assert_eq!(parts.len(), 4, "{name}: 2 s in parts of about 0.5 s");
            assert_eq!(parts[0].start, Duration::ZERO);
            assert!(parts.windows(2).all(|w| w[0].start < w[1].start));
            for (i, part) in parts.iter().enumerate() {
                let gap = part.start.abs_diff(HALF * i as u32);
                assert!(
                    gap <= Duration::from_millis(40),
                    "{name} part {i} at {:?}",
                    part.start
                );
                // Each part is a moof and an mdat and nothing else.
                let kinds: Vec<_> = boxes(&part.bytes, 0)
                    .unwrap()
                    .iter()
                    .map(|b| b.kind)
                    .collect();
                assert_eq!(kinds, [*b"moof", *b"mdat"], "{name} part {i}");
            }
            assert!(parts[0].independent, "{name}: starts on a keyframe");
            assert!(parts[1..].iter().all(|p| !p.independent), "{name}");

            // The parts, read back together, hold exactly the segment's samples.
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.bytes.clone()).collect();
            assert_eq!(table(&joined, &tracks), table(&segment, &tracks), "{name}");
            // And each part on its own reads back as well.
            for part in &parts {
                assert!(!table(&part.bytes, &tracks).is_empty());
            }
        }
    }

    #[test]
    fn every_track_of_a_part_starts_at_its_first_sample() {
        let tracks = tracks();
        let segment = media("360p_03.m4s");
        let parts = split(&segment, &tracks, HALF).unwrap();
        let whole = table(&segment, &tracks);
        let secs = |track: u32, dts: u64| dts as f64 / tracks.get(track).unwrap().timescale as f64;
        // The video (the track with non-sync samples) is the reference.
        let (video, rows) = whole
            .iter()
            .find(|(_, rows)| rows.iter().any(|r| !is_sync(r.3)))
            .unwrap();
        let t0 = secs(*video, rows[0].0);
        for (i, part) in parts.iter().enumerate() {
            for (track, rows) in table(&part.bytes, &tracks) {
                let at = secs(track, rows[0].0) - t0;
                // Every track of a part starts within one audio frame (1024
                // samples at 48 kHz) after the part; the first part also
                // takes what comes before the video (the encoder's audio
                // leads it by a few frames).
                let gap = at - part.start.as_secs_f64();
                assert!(gap < 0.022, "part {i} track {track} starts at {at}");
                assert!(
                    i == 0 || gap > -1e-9,
                    "part {i} track {track} starts at {at}"
                );
            }
        }
    }

    #[test]
    fn a_longer_target_makes_fewer_parts_and_a_segment_target_one() {
        let tracks = tracks();
        let segment = media("180p_02.m4s");
        assert_eq!(
            split(&segment, &tracks, Duration::from_secs(1))
                .unwrap()
                .len(),
            2
        );
        let one = split(&segment, &tracks, Duration::from_secs(2)).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(table(&one[0].bytes, &tracks), table(&segment, &tracks));
    }

    #[test]
    fn truncated_or_corrupt_input_is_an_error_never_a_panic() {
        let tracks = tracks();
        let segment = media("180p_01.m4s");
        // Every truncation of the boxes' headers and the first part of the moof.
        for len in (0..1200).chain((segment.len() - 64..segment.len()).step_by(7)) {
            let _ = split(&segment[..len], &tracks, HALF);
        }
        for at in (0..1200).step_by(3) {
            let mut bad = segment.clone();
            bad[at] ^= 0xff;
            let _ = split(&bad, &tracks, HALF);
        }
        let init = media("init_180p.mp4");
        for len in 0..init.len() {
            let _ = Tracks::parse(&init[..len]);
        }
        assert_eq!(Tracks::parse(b""), Err(Fmp4Error::NoTracks));
        assert!(matches!(
            split(&segment[..segment.len() - 10], &tracks, HALF),
            Err(Fmp4Error::Malformed { .. })
        ));
        // Not MP4 at all: random bytes as the synthetic bench streams are.
        assert!(split(&[7u8; 4096], &tracks, HALF).is_err());
    }

    #[test]
    fn encrypted_fragments_are_refused_by_name() {
        let tracks = tracks();
        let segment = media("180p_01.m4s");
        let part = split(&segment, &tracks, Duration::from_secs(2))
            .unwrap()
            .remove(0);
        // Rename the tfdt (first box after the tfhd in our own output) to senc.
        let mut bytes = part.bytes.clone();
        let at = bytes.windows(4).position(|w| w == b"tfdt").unwrap();
        bytes[at..at + 4].copy_from_slice(b"senc");
        assert!(matches!(
            split(&bytes, &tracks, HALF),
            Err(Fmp4Error::Unsupported(_))
        ));
    }
}
