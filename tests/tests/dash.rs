//! DASH ingest over QUIC on 127.0.0.1: a static MPD with two video
//! representations (`SegmentTemplate` with `$Number$`), an audio one
//! (`SegmentTimeline` with `$Time$`) and a text one (`SegmentList` of byte
//! ranges of one file) is published with a rendition per representation,
//! and every segment crosses a 3-node mesh and a gateway to a native client
//! byte for byte. The media are seeded random bytes: the mesh never parses
//! them.

use std::collections::HashMap;
use std::time::Duration;

use meshcast_proto::{RenditionKind, SegmentKind};
use meshcast_tests::relay::fetch_via_gateway;
use meshcast_tests::{TestNode, config, init_logs, publish, publish_whole};
use rand::{Rng, SeedableRng};

const MPD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT6S" minBufferTime="PT2S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="p0">
    <AdaptationSet id="video" contentType="video" mimeType="video/mp4">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1" initialization="$RepresentationID$_init.mp4" media="$RepresentationID$_$Number%03d$.m4s"/>
      <Representation id="v360" bandwidth="600000" width="640" height="360" codecs="avc1.4d401e"/>
      <Representation id="v180" bandwidth="250000" width="320" height="180" codecs="avc1.4d400c"/>
    </AdaptationSet>
    <AdaptationSet id="audio" contentType="audio" mimeType="audio/mp4" lang="en">
      <Representation id="aac" bandwidth="64000" codecs="mp4a.40.2">
        <SegmentTemplate timescale="48000" initialization="aac_init.mp4" media="aac_t$Time$.m4s">
          <SegmentTimeline><S t="0" d="96000" r="2"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="subs" contentType="text" mimeType="application/mp4" lang="en">
      <Representation id="wvtt" bandwidth="1000">
        <SegmentList timescale="1" duration="2">
          <Initialization sourceURL="subs.mp4" range="0-99"/>
          <SegmentURL media="subs.mp4" mediaRange="100-1099"/>
          <SegmentURL media="subs.mp4" mediaRange="1100-1599"/>
          <SegmentURL media="subs.mp4" mediaRange="1600-2999"/>
        </SegmentList>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

fn random(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.r#gen()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_representation_of_an_mpd_crosses_the_mesh_byte_identical() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for rep in ["v360", "v180"] {
        files.insert(format!("{rep}_init.mp4"), random(&mut rng, 700));
        for n in 1..=3 {
            let size = rng.gen_range(5_000..20_000);
            files.insert(format!("{rep}_{n:03}.m4s"), random(&mut rng, size));
        }
    }
    files.insert("aac_init.mp4".into(), random(&mut rng, 600));
    for t in [0, 96000, 192000] {
        files.insert(format!("aac_t{t}.m4s"), random(&mut rng, 3_000));
    }
    files.insert("subs.mp4".into(), random(&mut rng, 3_000));
    files.insert("manifest.mpd".into(), MPD.as_bytes().to_vec());
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).expect("write a file");
    }

    let publisher = TestNode::start(config()).await;
    let (stream, descriptor, _) = publish_whole(
        &publisher,
        dir.path()
            .join("manifest.mpd")
            .to_string_lossy()
            .into_owned(),
        "dash",
        34,
    )
    .await;
    assert!(!descriptor.descriptor().live, "a static MPD is a VOD");
    let renditions: Vec<(RenditionKind, &str, &str)> = descriptor
        .descriptor()
        .renditions
        .iter()
        .map(|r| (r.kind, r.name.as_str(), r.uri.as_str()))
        .collect();
    assert_eq!(
        renditions,
        [
            (RenditionKind::Variant, "v360", "manifest.mpd#rep-0"),
            (RenditionKind::Variant, "v180", "manifest.mpd#rep-1"),
            (RenditionKind::Audio, "aac", "manifest.mpd#rep-2"),
            (RenditionKind::Subtitles, "wvtt", "manifest.mpd#rep-3"),
        ]
    );
    let expected = publisher.held(&stream);
    // Four init segments and three media segments each.
    assert_eq!(expected.len(), 4 + 4 * 3, "{expected:?}");
    assert_eq!(
        expected
            .iter()
            .filter(|id| id.kind == SegmentKind::Init)
            .count(),
        4
    );

    // publisher — node — relay (a gateway) — a native client.
    for (header, body) in fetch_via_gateway(&publisher, stream, &expected, true).await {
        let info = header.info();
        let file = &files[&info.uri];
        let want = match info.range_start {
            Some(start) => &file[start as usize..(start + info.length) as usize],
            None => file.as_slice(),
        };
        assert_eq!(body.as_ref(), want, "{:?} ({})", header.id(), info.uri);
    }
}

/// A malformed MPD stops the publisher with an error naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_mpd_is_refused_with_a_clear_error() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("manifest.mpd");
    std::fs::write(
        &path,
        "<?xml version=\"1.0\"?><MPD type=\"static\"><Period>",
    )
    .expect("write");
    let node = TestNode::start(config()).await;
    let error = meshcast_node::publisher::Publisher::start(
        node.node.clone(),
        meshcast_proto::PublisherKey::from_seed([35; 32]),
        meshcast_tests::publisher_config(path.to_string_lossy().into_owned(), "bad-dash"),
    )
    .await
    .err()
    .expect("refused");
    let text = error.to_string();
    assert!(
        text.contains("manifest.mpd") && text.contains("MPD"),
        "{text}"
    );
}

/// A dynamic MPD is a live stream: its `$Number$` template is placed on the
/// wall clock from `availabilityStartTime`, and the publisher publishes each
/// segment once it is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_mpd_is_published_as_its_segments_become_available() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    // Started 9 s ago: segments 1 to 4 (2 s each) are whole, 5 is due in 1 s.
    let start = std::time::SystemTime::now() - Duration::from_secs(9);
    let stamp = {
        let secs = start
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs();
        // YYYY-MM-DDTHH:MM:SSZ from Unix seconds (civil-from-days).
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    };
    let mpd = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="{stamp}" minimumUpdatePeriod="PT2S" timeShiftBufferDepth="PT30S" minBufferTime="PT2S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="p0" start="PT0S">
    <AdaptationSet id="video" contentType="video" mimeType="video/mp4">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1" initialization="init.mp4" media="seg-$Number$.m4s"/>
      <Representation id="v" bandwidth="600000"/>
    </AdaptationSet>
  </Period>
</MPD>"#
    );
    std::fs::write(dir.path().join("live.mpd"), mpd).expect("write the MPD");
    std::fs::write(dir.path().join("init.mp4"), random(&mut rng, 500)).expect("write");
    for n in 1..=30 {
        std::fs::write(
            dir.path().join(format!("seg-{n}.m4s")),
            random(&mut rng, 4_000),
        )
        .expect("write");
    }
    let publisher = TestNode::start(config()).await;
    let (ingest, descriptor) = publish(
        &publisher,
        dir.path().join("live.mpd").to_string_lossy().into_owned(),
        "dash-live",
        36,
    )
    .await;
    assert!(descriptor.descriptor().live, "a dynamic MPD is live");
    let stream = ingest.stream_id();
    let running = tokio::spawn(ingest.run());
    // The four whole segments at once, then the fifth once it is whole.
    let media = |n: u64| meshcast_proto::SegmentId::media(stream, 0, n);
    let got = meshcast_tests::eventually(Duration::from_secs(15), || async {
        let held = publisher.held(&stream);
        ((1..=5).all(|n| held.contains(&media(n)))).then_some(held)
    })
    .await
    .expect("segments 1 to 5 published");
    assert!(got.iter().any(|id| id.kind == SegmentKind::Init));
    running.abort();
}

/// The test origin's DASH rendering of the committed stream (`/dash/`:
/// video-only representations and an audio one taken apart from it) is
/// published, and every segment crosses the mesh and a gateway byte for byte
/// as the origin serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_stream_as_dash_crosses_the_mesh() {
    init_logs();
    let origin = meshcast_origin::spawn(meshcast_tests::media_dir(), meshcast_tests::local())
        .await
        .expect("origin");
    let publisher = TestNode::start(config()).await;
    let (stream, descriptor, _) = publish_whole(
        &publisher,
        format!("{}/dash/manifest.mpd", origin.url()),
        "dash-committed",
        37,
    )
    .await;
    let kinds: Vec<(RenditionKind, &str)> = descriptor
        .descriptor()
        .renditions
        .iter()
        .map(|r| (r.kind, r.name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (RenditionKind::Variant, "360p"),
            (RenditionKind::Variant, "180p"),
            (RenditionKind::Audio, "audio"),
        ]
    );
    let expected = publisher.held(&stream);
    assert_eq!(expected.len(), 3 * (1 + 10), "{expected:?}");

    for (header, body) in fetch_via_gateway(&publisher, stream, &expected, false).await {
        let url = format!("{}/dash/{}", origin.url(), header.info().uri);
        let file = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .expect("the origin's file")
            .bytes()
            .await
            .expect("its bytes");
        assert_eq!(body.as_ref(), file.as_ref(), "{:?} ({url})", header.id());
    }
}

/// A `sidx` box (version 0) of media references of `sizes` bytes, 2 s each
/// at 1 kHz, starting right after it.
fn sidx(sizes: &[u32]) -> Vec<u8> {
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&1000u32.to_be_bytes());
    body.extend_from_slice(&[0; 8]); // earliest presentation time, first offset
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&(sizes.len() as u16).to_be_bytes());
    for size in sizes {
        body.extend_from_slice(&size.to_be_bytes());
        body.extend_from_slice(&2000u32.to_be_bytes());
        body.extend_from_slice(&0x9000_0000u32.to_be_bytes());
    }
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(b"sidx");
    out.extend_from_slice(&body);
    out
}

/// An on-demand MPD (`SegmentBase`): one file per representation, its
/// segments listed by a `sidx` box that the publisher fetches first; every
/// segment crosses the mesh to a native client as that byte range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_base_segments_are_published_as_the_ranges_their_sidx_lists() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let sizes = [9_000u32, 12_000, 7_000];
    let index = sidx(&sizes);
    let mut file = random(&mut rng, 500);
    file.extend_from_slice(&index);
    for size in sizes {
        file.extend_from_slice(&random(&mut rng, size as usize));
    }
    let mpd = format!(
        r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT6S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">
  <Period>
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <Representation id="one" bandwidth="500000">
        <BaseURL>one.mp4</BaseURL>
        <SegmentBase indexRange="500-{}"><Initialization range="0-499"/></SegmentBase>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#,
        500 + index.len() - 1
    );
    std::fs::write(dir.path().join("one.mp4"), &file).expect("write");
    std::fs::write(dir.path().join("vod.mpd"), mpd).expect("write");

    let publisher = TestNode::start(config()).await;
    let (stream, _, _) = publish_whole(
        &publisher,
        dir.path().join("vod.mpd").to_string_lossy().into_owned(),
        "dash-segment-base",
        38,
    )
    .await;
    let expected = publisher.held(&stream);
    assert_eq!(expected.len(), 1 + sizes.len(), "{expected:?}");

    let first = 500 + index.len();
    for (header, body) in fetch_via_gateway(&publisher, stream, &expected, false).await {
        let (id, info) = (header.id(), header.info());
        let start = info.range_start.expect("a byte range") as usize;
        assert_eq!(
            body.as_ref(),
            &file[start..start + info.length as usize],
            "{id}"
        );
        if id.kind == SegmentKind::Media {
            let at = first + sizes[..(id.sequence - 1) as usize].iter().sum::<u32>() as usize;
            assert_eq!(start, at, "{id}");
        } else {
            assert_eq!((start, info.length), (0, 500));
        }
    }
}
