//! The VOD with its audio in an alternate rendition, sans I/O: what an
//! origin that packages audio apart from video serves (HLS `EXT-X-MEDIA`).
//!
//! The committed stream muxes video and audio in every rendition. Here each
//! variant keeps its video track only (`<stem>.m3u8`, `<stem>_v<i>.m4s`,
//! `init_<stem>_v.mp4`) and the first rendition's audio track becomes one
//! alternate audio rendition (`audio.m3u8`, `audio_<i>.m4s`,
//! `init_audio.mp4`, `GROUP-ID="aud"`) that every variant names with
//! `AUDIO="aud"`. Tracks are taken out with [`fmp4::keep_track`]; nothing is
//! re-encoded, so the bytes of a sample are the committed ones.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::fmp4::{self, Fmp4Error, Tracks};
use crate::playlist::VodPlaylist;

/// `GROUP-ID` and playlist of the audio rendition.
pub const AUDIO_GROUP: &str = "aud";
pub const AUDIO_PLAYLIST: &str = "audio.m3u8";

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
    let mut text = String::new();
    for line in master.lines() {
        if line.starts_with("#EXT-X-STREAM-INF:") {
            let _ = writeln!(text, "{line},AUDIO=\"{AUDIO_GROUP}\"");
        } else {
            let _ = writeln!(text, "{line}");
        }
        if line.starts_with("#EXT-X-VERSION") {
            let _ = writeln!(
                text,
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",NAME=\"Tone\",LANGUAGE=\"en\",\
                 DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"1\",URI=\"{AUDIO_PLAYLIST}\""
            );
        }
    }
    out.master = text;
    Ok(out)
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
