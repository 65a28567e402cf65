//! Byte-range HLS over QUIC on 127.0.0.1: the test origin's `/range/` packs
//! each rendition of the committed stream into one file, its playlists name
//! every segment (and the init segment) as a byte range of it. The publisher
//! fetches each range with an HTTP `Range` and signs it with its offset; the
//! segments cross a 3-node mesh and a gateway to a native client byte for
//! byte; and a node whose mesh has no bytes fetches each one from the origin
//! by its signed range.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use meshcast_node::{Event, Source};
use meshcast_proto::{SegmentId, SegmentKind, VerifiedHeader};
use meshcast_tests::relay::fetch_via_gateway;
use meshcast_tests::{TestNode, config, follow, init_logs, local, media_dir, publish_whole};

/// Each rendition's packed file, by rendition id (its playlist's stem).
async fn packed_files(
    origin: &meshcast_origin::Running,
    renditions: &[(u32, String)],
) -> HashMap<u32, Vec<u8>> {
    let mut files = HashMap::new();
    for (id, uri) in renditions {
        let stem = uri.strip_suffix(".m3u8").expect("a playlist URI");
        let url = format!("{}/range/{stem}.mp4", origin.url());
        let body = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .expect("the packed file");
        files.insert(*id, body.bytes().await.expect("its bytes").to_vec());
    }
    files
}

/// The bytes a header names: its range of its rendition's packed file.
fn range_of<'a>(files: &'a HashMap<u32, Vec<u8>>, header: &VerifiedHeader) -> &'a [u8] {
    let info = header.info();
    let start = info.range_start.expect("a byte-range segment") as usize;
    &files[&info.id.rendition][start..start + info.length as usize]
}

fn renditions(descriptor: &meshcast_proto::VerifiedDescriptor) -> Vec<(u32, String)> {
    descriptor
        .descriptor()
        .renditions
        .iter()
        .map(|r| (r.id, r.uri.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_range_segments_cross_the_mesh_and_a_gateway_byte_identical() {
    init_logs();
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");
    let publisher = TestNode::start(config()).await;
    let (stream, descriptor, ingested) = publish_whole(
        &publisher,
        format!("{}/range/master.m3u8", origin.url()),
        "byte-ranges",
        31,
    )
    .await;
    let files = packed_files(&origin, &renditions(&descriptor)).await;
    // Two renditions of an init segment and ten media segments.
    let expected = publisher.held(&stream);
    assert_eq!(expected.len(), 22, "{expected:?}");
    assert_eq!(ingested.segments, 22);
    assert_eq!(
        expected
            .iter()
            .filter(|id| id.kind == SegmentKind::Init)
            .count(),
        2
    );

    // publisher — node — relay (a gateway) — a native client.
    for (header, body) in fetch_via_gateway(&publisher, stream, &expected, true).await {
        assert!(header.info().range_start.is_some(), "{:?}", header.id());
        assert_eq!(
            body.as_ref(),
            range_of(&files, &header),
            "{:?}",
            header.id()
        );
    }
}

/// A publisher that serves no bytes leaves every segment to the origin: the
/// follower fetches each by the range its signed header names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fetches_byte_range_segments_from_the_origin_by_their_signed_range() {
    init_logs();
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");
    let publisher = TestNode::start(meshcast_node::Config {
        announce_only: true,
        ..config()
    })
    .await;
    let (stream, descriptor, _) = publish_whole(
        &publisher,
        format!("{}/range/master.m3u8", origin.url()),
        "byte-ranges-origin",
        32,
    )
    .await;
    let files = packed_files(&origin, &renditions(&descriptor)).await;
    let expected: BTreeSet<SegmentId> = publisher.held(&stream);
    assert_eq!(expected.len(), 22);

    // A seeder waits a minute for the mesh by default: nobody is waiting.
    let mut node_config = config();
    node_config.scheduler.seed_origin_after = Duration::from_secs(1);
    let node = TestNode::start(node_config).await;
    let mut events = node.node.events();
    follow(&node, &publisher, stream).await;
    node.assert_gets(&stream, &expected, Duration::from_secs(40))
        .await;
    let mut from_origin = 0;
    while let Ok(event) = events.try_recv() {
        if let Event::Stored { id, source, .. } = event
            && id.stream == stream
        {
            assert!(matches!(source, Source::Origin), "{id} from {source:?}");
            from_origin += 1;
        }
    }
    assert_eq!(from_origin, expected.len());
    for id in &expected {
        let held = node.node.segment(id).expect("held");
        assert_eq!(held.body.as_ref(), range_of(&files, &held.header), "{id}");
    }
}
