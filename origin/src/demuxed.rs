//! The VOD with its audio in an alternate rendition, sans I/O: what an
//! origin that packages audio apart from video serves (HLS `EXT-X-MEDIA`).
//!
//! The committed stream muxes video and audio in every rendition. Here each
//! variant keeps its video track only (`<stem>.m3u8`, `<stem>_v<i>.m4s`,
//! `init_<stem>_v.mp4`) and the first rendition's audio track becomes one
//! alternate audio rendition (`audio.m3u8`, `audio_<i>.m4s`,
//! `init_audio.mp4`, `GROUP-ID="aud"`) that every variant names with
//! `AUDIO="aud"`, with a WebVTT subtitle rendition beside it (`subs.m3u8`,
//! `SUBTITLES="subs"`: one cue per segment naming it). Tracks are taken out with [`fmp4::keep_track`]; nothing is
//! re-encoded, so the bytes of a sample are the committed ones.
//!
//! The same files make a DASH rendering ([`Demuxed::mpd`]): a static MPD
//! with a video adaptation set of one representation per variant and an
//! audio one, each a `SegmentTemplate` with `$Number$` over a
//! `SegmentTimeline` of the playlist's durations.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::fmp4::{self, Fmp4Error, Tracks};
use crate::playlist::VodPlaylist;

/// `GROUP-ID` and playlist of the audio rendition.
pub const AUDIO_GROUP: &str = "aud";
pub const AUDIO_PLAYLIST: &str = "audio.m3u8";
/// `GROUP-ID` and playlist of the subtitles: WebVTT, one cue per segment
/// saying which segment it is.
pub const SUBTITLES_GROUP: &str = "subs";
pub const SUBTITLES_PLAYLIST: &str = "subs.m3u8";

/// One muxed rendition to take apart: the stem of its playlist (`360p`), the
/// playlist, its init segment and its segments' bytes in order.
pub struct Muxed<'a> {
    pub stem: &'a str,
    pub playlist: &'a VodPlaylist,
    pub init: &'a [u8],
    pub segments: &'a [Vec<u8>],
}

/// The demuxed rendering: the master, the media playlists and the files, by
/// name (all in one folder).
#[derive(Debug, Clone, Default)]
pub struct Demuxed {
    pub master: String,
    /// The DASH MPD over the same files.
    pub mpd: String,
    pub playlists: HashMap<String, String>,
    pub files: HashMap<String, Vec<u8>>,
}

/// Takes `renditions` apart (see the module docs). `master` is the muxed
/// master playlist's text: its variants gain `AUDIO="aud"`, and the audio
/// rendition is declared before them.
pub fn demux(master: &str, renditions: &[Muxed<'_>]) -> Result<Demuxed, Fmp4Error> {
    let mut out = Demuxed::default();
    for (r, muxed) in renditions.iter().enumerate() {
        let tracks = Tracks::parse(muxed.init)?;
        let track = |handler: &[u8; 4]| {
            tracks
                .all()
                .iter()
                .find(|t| &t.handler == handler)
                .map(|t| t.id)
                .ok_or(Fmp4Error::Unsupported(
                    "a rendition without video and audio",
                ))
        };
        let video = track(b"vide")?;
        let name = format!("{}_v", muxed.stem);
        take(
            &mut out,
            muxed,
            &tracks,
            video,
            &name,
            &format!("{}.m3u8", muxed.stem),
        )?;
        if r == 0 {
            let audio = track(b"soun")?;
            take(&mut out, muxed, &tracks, audio, "audio", AUDIO_PLAYLIST)?;
        }
    }
    out.mpd = mpd(master, renditions);
    if let Some(first) = renditions.first() {
        subtitles(&mut out, first.playlist);
    }
    let mut text = String::new();
    for line in master.lines() {
        if line.starts_with("#EXT-X-STREAM-INF:") {
            let _ = writeln!(
                text,
                "{line},AUDIO=\"{AUDIO_GROUP}\",SUBTITLES=\"{SUBTITLES_GROUP}\""
            );
        } else {
            let _ = writeln!(text, "{line}");
        }
        if line.starts_with("#EXT-X-VERSION") {
            let _ = writeln!(
                text,
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",NAME=\"Tone\",LANGUAGE=\"en\",\
                 DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"1\",URI=\"{AUDIO_PLAYLIST}\""
            );
            let _ = writeln!(
                text,
                "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"{SUBTITLES_GROUP}\",NAME=\"Segments\",\
                 LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,URI=\"{SUBTITLES_PLAYLIST}\""
            );
        }
    }
    out.master = text;
    Ok(out)
}

/// A WebVTT subtitle playlist over `vod`'s segment times: `subs_<i>.vtt`,
/// each with one cue naming its segment.
fn subtitles(out: &mut Demuxed, vod: &VodPlaylist) {
    let mut text = String::new();
    let _ = write!(
        text,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n",
        vod.target_duration()
    );
    let mut start = Duration::ZERO;
    let stamp = |t: Duration| {
        let ms = t.as_millis();
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    };
    for (i, segment) in vod.segments().iter().enumerate() {
        let end = start + segment.duration;
        let file = format!("subs_{i:02}.vtt");
        // The fMP4 media start at 0: cue times are media times.
        let cue = format!(
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n{} --> {}\nSegment {i}\n",
            stamp(start),
            stamp(end)
        );
        out.files.insert(file.clone(), cue.into_bytes());
        let _ = write!(
            text,
            "#EXTINF:{:.6},\n{file}\n",
            segment.duration.as_secs_f64()
        );
        start = end;
    }
    text.push_str("#EXT-X-ENDLIST\n");
    out.playlists.insert(SUBTITLES_PLAYLIST.to_owned(), text);
}

/// An attribute of an `EXT-X-STREAM-INF` line, unquoted.
fn attribute<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()
    } else {
        rest.split(',').next()
    }
}

/// The static MPD over the demuxed files (see the module docs).
fn mpd(master: &str, renditions: &[Muxed<'_>]) -> String {
    let variants: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    let timeline = |vod: &VodPlaylist| {
        let mut out = String::new();
        let durations: Vec<u64> = vod
            .segments()
            .iter()
            .map(|s| s.duration.as_millis() as u64)
            .collect();
        let mut i = 0;
        while i < durations.len() {
            let d = durations[i];
            let run = durations[i..].iter().take_while(|&&x| x == d).count();
            let t = if i == 0 { " t=\"0\"" } else { "" };
            let r = if run > 1 {
                format!(" r=\"{}\"", run - 1)
            } else {
                String::new()
            };
            let _ = write!(out, "<S{t} d=\"{d}\"{r}/>");
            i += run;
        }
        out
    };
    let total_ms: u64 = renditions
        .first()
        .map(|r| {
            r.playlist
                .segments()
                .iter()
                .map(|s| s.duration.as_millis() as u64)
                .sum()
        })
        .unwrap_or(0);
    let mut text = String::new();
    let _ = write!(
        text,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"static\" \
         profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" minBufferTime=\"PT2S\" \
         mediaPresentationDuration=\"PT{}.{:03}S\">\n  <Period id=\"0\" start=\"PT0S\">\n",
        total_ms / 1000,
        total_ms % 1000
    );
    text.push_str(
        "    <AdaptationSet id=\"video\" contentType=\"video\" mimeType=\"video/mp4\" \
         segmentAlignment=\"true\" startWithSAP=\"1\">\n",
    );
    for (muxed, line) in renditions.iter().zip(&variants) {
        let codecs = attribute(line, "CODECS").unwrap_or_default();
        let video_codec = codecs.split(',').next().unwrap_or_default();
        let (width, height) = attribute(line, "RESOLUTION")
            .and_then(|r| r.split_once('x'))
            .unwrap_or(("0", "0"));
        let bandwidth = attribute(line, "BANDWIDTH").unwrap_or("0");
        let stem = muxed.stem;
        let _ = write!(
            text,
            "      <Representation id=\"{stem}\" bandwidth=\"{bandwidth}\" width=\"{width}\" \
             height=\"{height}\" codecs=\"{video_codec}\">\n        <SegmentTemplate \
             timescale=\"1000\" startNumber=\"0\" initialization=\"init_{stem}_v.mp4\" \
             media=\"{stem}_v_$Number%02d$.m4s\"><SegmentTimeline>{}</SegmentTimeline>\
             </SegmentTemplate>\n      </Representation>\n",
            timeline(muxed.playlist)
        );
    }
    text.push_str("    </AdaptationSet>\n");
    if let (Some(first), Some(line)) = (renditions.first(), variants.first()) {
        let audio_codec = attribute(line, "CODECS")
            .and_then(|c| c.split(',').nth(1))
            .unwrap_or("mp4a.40.2");
        let _ = write!(
            text,
            "    <AdaptationSet id=\"audio\" contentType=\"audio\" mimeType=\"audio/mp4\" \
             lang=\"en\" segmentAlignment=\"true\" startWithSAP=\"1\">\n      \
             <Representation id=\"audio\" bandwidth=\"64000\" codecs=\"{audio_codec}\" \
             audioSamplingRate=\"48000\">\n        <SegmentTemplate timescale=\"1000\" \
             startNumber=\"0\" initialization=\"init_audio.mp4\" \
             media=\"audio_$Number%02d$.m4s\"><SegmentTimeline>{}</SegmentTimeline>\
             </SegmentTemplate>\n      </Representation>\n    </AdaptationSet>\n",
            timeline(first.playlist)
        );
    }
    text.push_str("  </Period>\n</MPD>\n");
    text
}

/// Track `id` of `muxed` as playlist `playlist` with files `<name>_<i>.m4s`
/// and `init_<name>.mp4`.
fn take(
    out: &mut Demuxed,
    muxed: &Muxed<'_>,
    tracks: &Tracks,
    id: u32,
    name: &str,
    playlist: &str,
) -> Result<(), Fmp4Error> {
    let init_name = format!("init_{name}.mp4");
    out.files
        .insert(init_name.clone(), fmp4::keep_track_init(muxed.init, id)?);
    let mut text = String::new();
    let _ = write!(
        text,
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{init_name}\"\n",
        muxed.playlist.target_duration()
    );
    for (i, (segment, bytes)) in muxed
        .playlist
        .segments()
        .iter()
        .zip(muxed.segments)
        .enumerate()
    {
        let file = format!("{name}_{i:02}.m4s");
        out.files
            .insert(file.clone(), fmp4::keep_track(bytes, tracks, id)?);
        let _ = write!(
            text,
            "#EXTINF:{:.6},\n{file}\n",
            segment.duration.as_secs_f64()
        );
    }
    text.push_str("#EXT-X-ENDLIST\n");
    out.playlists.insert(playlist.to_owned(), text);
    Ok(())
}
