//! A flood of empty segments against one node, alone in its test binary so
//! that the process's memory is the two nodes' of this test only.

use std::time::Duration;

use meshcast_tests::live::Live;
use meshcast_tests::{TestNode, config, eventually, init_logs};

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A publisher (of a stream some node follows) that signs a flood of empty
/// segments cannot grow that node without bound: the store keeps at most
/// its entry bound whatever the segments weigh, and the bookkeeping around
/// it is bounded too. (The store bounded bytes only: every empty segment
/// was kept.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_empty_segments_leaves_a_node_bounded_in_entries_and_memory() {
    init_logs();
    const SEGMENTS: u64 = 100_000;
    let live = Live::new("empty-flood");
    let stream = live.descriptor.stream_key().id;
    let publisher = TestNode::start(config()).await;
    publisher
        .node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    // A store bound well below the flood, so that the test shows it bite.
    let max = 2_000;
    let node = TestNode::start(meshcast_node::Config {
        store_max_segments: max,
        ..config()
    })
    .await;
    node.node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    node.node.dial(publisher.addr.clone()).await.expect("dial");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss();
    let mut most = 0;
    let mut halfway = 0;
    // In batches the node keeps up with, so that nearly every segment
    // reaches it and its store has to evict.
    const BATCH: u64 = 1_000;
    for batch in 0..SEGMENTS / BATCH {
        for sequence in batch * BATCH..(batch + 1) * BATCH {
            let (header, body) = live.segment(0, sequence, 0);
            publisher.node.inject(header, body).await.expect("inject");
        }
        let last = live.id(0, (batch + 1) * BATCH - 1);
        eventually(Duration::from_secs(10), || async {
            node.node.segment(&last).map(|_| ())
        })
        .await;
        most = most.max(node.node.holdings(&stream).len());
        if (batch + 1) * BATCH == SEGMENTS / 2 {
            halfway = rss();
        }
    }
    let last = live.id(0, SEGMENTS - 1);
    let got = eventually(Duration::from_secs(60), || async {
        node.node.segment(&last).map(|_| ())
    })
    .await;
    eprintln!("held {} at most {most}", node.node.holdings(&stream).len());
    assert!(got.is_some(), "the last segment never arrived");
    let held = node.node.holdings(&stream).len();
    most = most.max(held);
    assert!(most <= max, "the node held {most} segments (bound {max})");
    assert!(
        held >= max / 2,
        "only {held} held: the flood did not arrive"
    );
    let end = rss();
    let (first, second) = (
        halfway.saturating_sub(before) >> 20,
        end.saturating_sub(halfway) >> 20,
    );
    eprintln!("the process grew by {first} MB over the first half, {second} MB over the second");
    // Every bound is reached within the first 50,000 (16,384 tracked
    // segments, 50,000 pending headers, the stores' entries); gossip's
    // caches are bounded in time. Kept without bounds, the second half grew
    // as much as the first (about 150 MB each).
    assert!(
        second <= first / 3 + 16,
        "still growing: {first} MB, then {second} MB"
    );
}
