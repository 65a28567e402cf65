//! A synthetic stream for benchmarks and the network lab: an HLS VOD of
//! pseudo-random segments at a chosen bitrate (the mesh never looks inside
//! a segment), which [`crate::Origin`] serves as is under `/vod/` and loops
//! under `/live/`.

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
