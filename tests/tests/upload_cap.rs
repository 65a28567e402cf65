//! The volunteer's upload cap (`node.max_upload`) over QUIC on 127.0.0.1:
//! a publisher capped far below what loopback carries keeps to its cap
//! across every upload at once, answers `Absent` to pulls it could not send
//! in time, and every follower still gets every segment.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use meshcast_node::publisher::Publisher;
use meshcast_node::uplink::BURST;
use meshcast_node::{Config, Event, Source, scheduler};
use meshcast_proto::PublisherKey;
use meshcast_tests::{TestNode, config, init_logs, local, media_dir, publisher_config};

/// 400 kB/s, far below loopback: the first window (14 segments, 850 kB)
/// asked by four followers at once takes eight seconds to leave the
/// publisher; then the live edge needs 4 × 70 kB/s.
const CAP: u64 = 400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_publisher_keeps_to_its_cap_and_declines_pulls_it_cannot_send_in_time() {
    init_logs();
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");
    let publisher_node = TestNode::start(Config {
        max_upload: Some(CAP),
        ..config()
    })
    .await;
    let publisher = Publisher::start(
        publisher_node.node.clone(),
        PublisherKey::from_seed([11; 32]),
        publisher_config(format!("{}/live/master.m3u8", origin.url()), "capped"),
    )
    .await
    .expect("publisher starts");
    let stream = publisher.stream_id();
    let _ingest = tokio::spawn(publisher.run());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expected: BTreeSet<_> = publisher_node.held(&stream);
    assert!(expected.len() >= 4, "published only {expected:?}");

    // Four followers at once, from the mesh only.
    let mesh_only = scheduler::Config {
        origin_after: Duration::from_secs(600),
        ..scheduler::Config::default()
    };
    let started = Instant::now();
    let mut followers = Vec::new();
    for _ in 0..4 {
        let node = TestNode::start(Config {
            scheduler: mesh_only.clone(),
            ..config()
        })
        .await;
        let events = node.node.events();
        meshcast_tests::follow(&node, &publisher_node, stream).await;
        followers.push((node, events));
    }
    for (node, _) in &followers {
        node.assert_gets(&stream, &expected, Duration::from_secs(60))
            .await;
    }

    // Every byte the followers got from the publisher left it within the
    // cap: by any time t, at most CAP × (t − start + the burst allowance).
    let publisher_id = publisher_node.node.peer_id();
    let mut from_publisher: Vec<(Instant, u64)> = Vec::new();
    for (_, events) in &mut followers {
        while let Ok(event) = events.try_recv() {
            if let Event::Stored {
                source: Source::Push(p) | Source::Pull(p),
                bytes,
                at,
                ..
            } = event
                && p == publisher_id
            {
                from_publisher.push((at, bytes));
            }
        }
    }
    from_publisher.sort();
    let mut total = 0u64;
    for (at, bytes) in &from_publisher {
        total += bytes;
        let allowed = CAP as f64 * (at.duration_since(started) + BURST).as_secs_f64();
        assert!(
            total as f64 <= allowed,
            "{total} bytes from the publisher {:?} after the start: over its cap ({allowed:.0})",
            at.duration_since(started)
        );
    }
    let sent = publisher_node.node.stats().mesh_bytes_out.load(Relaxed);
    assert!(
        total >= expected.len() as u64 * 1_000 && sent >= total,
        "the publisher sent {sent} bytes, the followers got {total} from it"
    );
    // Four followers asking for every segment at once: more than the cap
    // sends before a puller's deadline, so some pulls were declined.
    let declined = publisher_node
        .node
        .stats()
        .pulls_declined_at_cap
        .load(Relaxed);
    assert!(declined > 0, "no pull declined at the cap");
    eprintln!(
        "{} segments to 4 followers; {total} bytes from the publisher, {declined} pulls declined at its cap",
        expected.len()
    );
}
