//! Alternative renditions (HLS `EXT-X-MEDIA`: alternate audio in two
//! languages and subtitles) over QUIC on 127.0.0.1: a master playlist whose
//! audio and subtitles live in playlists of their own is published with a
//! rendition for each, and every one of their segments crosses a 3-node mesh
//! and a gateway to a native client byte for byte. The media are seeded
//! random bytes: the mesh never parses them.

use std::collections::HashMap;
use std::path::Path;

use meshcast_proto::{RenditionKind, SegmentKind};
use meshcast_tests::relay::fetch_via_gateway;
use meshcast_tests::{TestNode, config, init_logs, publish_whole};
use rand::{Rng, SeedableRng};

const SEGMENTS: usize = 3;

/// A VOD playlist of `SEGMENTS` segments named `<stem>_<n>.<ext>`, with an
/// init segment when `init`; writes every file and returns their bytes.
fn write_rendition(
    dir: &Path,
    stem: &str,
    ext: &str,
    init: bool,
    rng: &mut impl Rng,
    files: &mut HashMap<String, Vec<u8>>,
) {
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    if init {
        playlist.push_str(&format!("#EXT-X-MAP:URI=\"init_{stem}.mp4\"\n"));
        files.insert(format!("init_{stem}.mp4"), random(rng, 500));
    }
    for n in 0..SEGMENTS {
        let name = format!("{stem}_{n}.{ext}");
        playlist.push_str(&format!("#EXTINF:2.000000,\n{name}\n"));
        let size = rng.gen_range(2_000..20_000);
        files.insert(name, random(rng, size));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    files.insert(format!("{stem}.m3u8"), playlist.into_bytes());
    for (name, bytes) in files.iter() {
        std::fs::write(dir.join(name), bytes).expect("write a file");
    }
}

fn random(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.r#gen()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_audio_and_subtitles_cross_the_mesh_as_renditions() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut files = HashMap::new();
    write_rendition(dir.path(), "video", "m4s", true, &mut rng, &mut files);
    write_rendition(dir.path(), "audio_en", "m4s", true, &mut rng, &mut files);
    write_rendition(dir.path(), "audio_de", "m4s", true, &mut rng, &mut files);
    write_rendition(dir.path(), "subs_en", "vtt", false, &mut rng, &mut files);
    let master = "#EXTM3U\n#EXT-X-VERSION:7\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,URI=\"audio_en.m3u8\"\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"Deutsch\",LANGUAGE=\"de\",URI=\"audio_de.m3u8\"\n\
        #EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English subtitles\",LANGUAGE=\"en\",URI=\"subs_en.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=600000,RESOLUTION=640x360,CODECS=\"avc1.4d401e,mp4a.40.2\",AUDIO=\"aud\",SUBTITLES=\"subs\"\n\
        video.m3u8\n";
    std::fs::write(dir.path().join("master.m3u8"), master).expect("write the master");

    let publisher = TestNode::start(config()).await;
    let (stream, descriptor, _) = publish_whole(
        &publisher,
        dir.path()
            .join("master.m3u8")
            .to_string_lossy()
            .into_owned(),
        "alternatives",
        33,
    )
    .await;
    let kinds: Vec<(RenditionKind, &str, &str)> = descriptor
        .descriptor()
        .renditions
        .iter()
        .map(|r| (r.kind, r.language.as_str(), r.uri.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (RenditionKind::Variant, "", "video.m3u8"),
            (RenditionKind::Audio, "en", "audio_en.m3u8"),
            (RenditionKind::Audio, "de", "audio_de.m3u8"),
            (RenditionKind::Subtitles, "en", "subs_en.m3u8"),
        ]
    );
    let expected = publisher.held(&stream);
    // Three init segments (not the subtitles) and three segments each.
    assert_eq!(expected.len(), 3 + 4 * SEGMENTS, "{expected:?}");
    assert_eq!(
        expected
            .iter()
            .filter(|id| id.kind == SegmentKind::Init)
            .count(),
        3
    );

    // publisher — node — relay (a gateway) — a native client.
    for (header, body) in fetch_via_gateway(&publisher, stream, &expected, true).await {
        let file = &files[&header.info().uri];
        assert_eq!(body.as_ref(), file.as_slice(), "{:?}", header.id());
    }
}
