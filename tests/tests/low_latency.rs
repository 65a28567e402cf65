//! Low-latency HLS through real swarms over QUIC on 127.0.0.1: the test
//! origin serves the committed stream as parts with blocking reload, the
//! publisher signs each part as it appears, a relay gets the parts over the
//! mesh and puts each whole segment together itself, and a native client of
//! the relay's gateway fetches parts and whole segments, byte-identical to
//! what the origin serves.

use std::collections::BTreeSet;
use std::time::Duration;

use meshcast_node::Event;
use meshcast_node::ingest::source::fetch_url;
use meshcast_node::mesh::Source;
use meshcast_proto::{SegmentId, SegmentKind};
use meshcast_tests::{TestNode, config, eventually, init_logs, local, media_dir, publish};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_cross_the_mesh_and_whole_segments_are_assembled_not_sent() {
    init_logs();
    let origin = meshcast_origin::Origin::load(media_dir())
        .expect("origin")
        .with_parts(Duration::from_millis(500))
        .expect("parts")
        .spawn(local())
        .await
        .expect("origin starts");
    let publisher = TestNode::start(config()).await;
    let url = format!("{}/ll/master.m3u8", origin.url());
    let (ingest, descriptor) = publish(&publisher, url, "low-latency", 71).await;
    let stream = ingest.stream_id();
    let relay = TestNode::start(config()).await;
    let mut relay_events = relay.node.events();
    relay
        .node
        .dial(publisher.addr.clone())
        .await
        .expect("dial publisher");
    relay.node.follow(descriptor.clone()).await.expect("follow");
    let ingest = tokio::spawn(async move {
        ingest.run().await;
    });

    // Wait for three segments made of parts in the first rendition: the
    // first playlist brings two (its newest whole segments list their
    // parts), the third is published part by part as the origin makes it.
    let before = publisher.held(&stream);
    let made_of_parts = |held: &BTreeSet<SegmentId>| -> BTreeSet<SegmentId> {
        held.difference(&before)
            .filter(|id| {
                id.kind == SegmentKind::Media
                    && publisher
                        .node
                        .segment(id)
                        .is_some_and(|s| s.header.info().parts > 0)
            })
            .copied()
            .collect()
    };
    let whole = eventually(Duration::from_secs(20), || async {
        let whole = made_of_parts(&publisher.held(&stream));
        (whole.iter().filter(|id| id.rendition == 0).count() >= 3).then_some(whole)
    })
    .await
    .expect("the publisher published three segments made of parts");
    let parts: BTreeSet<SegmentId> = publisher
        .held(&stream)
        .into_iter()
        .filter(|id| id.kind == SegmentKind::Part && whole.contains(&id.parent()))
        .collect();
    assert_eq!(
        parts.len(),
        4 * whole.len(),
        "four parts a segment: {parts:?}"
    );
    let expected: BTreeSet<SegmentId> = whole.union(&parts).copied().collect();
    relay
        .assert_gets(&stream, &expected, Duration::from_secs(20))
        .await;

    // Every part and every whole segment is what the origin serves there.
    let client = reqwest::Client::new();
    let playlist = |rendition: u32| {
        descriptor.descriptor().renditions[rendition as usize]
            .uri
            .clone()
    };
    for id in &expected {
        let segment = relay.node.segment(id).expect("held");
        let base = url::Url::parse(&format!("{}/ll/{}", origin.url(), playlist(id.rendition)))
            .expect("playlist URL");
        let url = base.join(&segment.header.info().uri).expect("segment URL");
        let served = fetch_url(&client, &url, 1 << 20)
            .await
            .expect("origin serves it");
        assert_eq!(segment.body, served, "{id} differs from {url}");
    }
    // The relay put each whole segment together: none crossed the mesh.
    let sources: Vec<(SegmentId, Source<_>)> = std::iter::from_fn(|| relay_events.try_recv().ok())
        .filter_map(|e| match e {
            Event::Stored { id, source, .. } => Some((id, source)),
            _ => None,
        })
        .collect();
    for id in &whole {
        let source = sources
            .iter()
            .find(|(s, _)| s == id)
            .map(|(_, source)| *source);
        assert_eq!(source, Some(Source::Assembled), "{id}");
    }

    // A native client of the relay's gateway gets a part and a whole
    // segment, verified.
    let mut gateway_config = meshcast_tests::relay::gateway_config();
    gateway_config.serve.streams.push(stream);
    let (gateway, driver) = meshcast_relay::Gateway::bind(relay.node.clone(), gateway_config)
        .await
        .expect("gateway");
    let driver = tokio::spawn(driver.run());
    let mut viewer = meshcast_relay::Client::connect(
        gateway.url(),
        &gateway.cert_hashes(),
        stream,
        "",
        Duration::from_secs(15),
    )
    .await
    .expect("session");
    for id in [
        *parts.iter().next().expect("a part"),
        *whole.iter().next().expect("whole"),
    ] {
        let (header, body) = viewer
            .fetch(id, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(header.id(), id);
        assert_eq!(body, relay.node.segment(&id).expect("held").body);
    }
    for node in [&publisher, &relay] {
        assert_eq!(
            node.node
                .stats()
                .bans
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
    driver.abort();
    ingest.abort();
}
