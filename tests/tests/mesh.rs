//! Publisher and nodes on the live test stream, over QUIC on 127.0.0.1.

use std::collections::BTreeSet;
use std::time::Duration;

use meshcast_node::publisher::Publisher;
use meshcast_node::{Event, Source};
use meshcast_proto::{PublisherKey, SegmentId, SegmentKind, StreamId};
use meshcast_tests::{TestNode, config, follow, init_logs, local, media_dir, publisher_config};

/// Starts a publisher node and its ingest loop on the origin's live stream.
async fn start_publisher(
    origin_url: &str,
    node_config: meshcast_node::Config,
) -> (TestNode, StreamId, Publisher) {
    let node = TestNode::start(node_config).await;
    let key = PublisherKey::from_seed([42; 32]);
    let publisher = Publisher::start(
        node.node.clone(),
        key,
        publisher_config(format!("{origin_url}/live/master.m3u8"), "test-live"),
    )
    .await
    .expect("publisher starts");
    (node, publisher.stream_id(), publisher)
}

/// Every segment the publisher holds.
fn published(publisher: &TestNode, stream: &StreamId) -> BTreeSet<SegmentId> {
    publisher.held(stream)
}

/// Checks that `node` holds every segment in `expected`, byte-identical to
/// the origin's files, under the very headers the publisher signed.
fn assert_identical_to_origin(
    node: &TestNode,
    expected: &BTreeSet<SegmentId>,
    publisher: &TestNode,
) {
    node.assert_identical_to_origin(expected);
    for id in expected {
        let ours = node.node.segment(id).expect("checked above");
        let theirs = publisher.node.segment(id).expect("publisher holds it");
        assert_eq!(ours.header, theirs.header);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_hold_every_live_segment_byte_identical() {
    init_logs();
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");
    let (publisher, stream, ingest) = start_publisher(&origin.url(), config()).await;
    let ingest = tokio::spawn(ingest.run());

    let mut nodes = Vec::new();
    for i in 0..8 {
        let node = TestNode::start(config()).await;
        if i > 0 {
            let previous: &TestNode = &nodes[i - 1];
            node.node
                .dial(previous.addr.clone())
                .await
                .expect("dial neighbour");
        }
        follow(&node, &publisher, stream).await;
        nodes.push(node);
    }
    // Two more segments per rendition after everyone joined.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let expected = published(&publisher, &stream);
    let media = expected
        .iter()
        .filter(|id| id.kind == SegmentKind::Media)
        .count();
    assert!(media >= 14, "publisher holds only {media} media segments");
    assert!(
        expected.iter().any(|id| id.kind == SegmentKind::Init),
        "no init segment published"
    );

    for node in &nodes {
        node.assert_gets(&stream, &expected, Duration::from_secs(15))
            .await;
        assert_identical_to_origin(node, &expected, &publisher);
    }
    ingest.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_fills_its_live_window_by_pull() {
    init_logs();
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");
    let (publisher, stream, ingest) = start_publisher(&origin.url(), config()).await;
    let ingest = tokio::spawn(ingest.run());
    let early = TestNode::start(config()).await;
    follow(&early, &publisher, stream).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let expected = published(&publisher, &stream);
    assert!(!expected.is_empty());
    let late = TestNode::start(config()).await;
    let mut events = late.node.events();
    late.node.dial(early.addr.clone()).await.expect("dial");
    follow(&late, &publisher, stream).await;

    late.assert_gets(&stream, &expected, Duration::from_secs(15))
        .await;
    assert_identical_to_origin(&late, &expected, &publisher);
    let mut pulled = 0;
    while let Ok(event) = events.try_recv() {
        if let Event::Stored {
            source: Source::Pull(_),
            id,
            ..
        } = event
        {
            pulled += usize::from(expected.contains(&id));
        }
    }
    assert!(pulled > 0, "the late joiner pulled nothing");
    ingest.abort();
}
