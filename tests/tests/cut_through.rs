//! Cut-through between real swarms over QUIC on 127.0.0.1: a publisher, a
//! relay and a viewer that dials the relay (the DHT may still introduce it
//! to the publisher), the publisher's uplink slowed so that each body takes
//! a while to arrive.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use meshcast_node::Event;
use meshcast_proto::StreamId;
use meshcast_tests::{TestNode, config, eventually, init_logs, local, media_dir, publish};

/// The test stream's segments are about 100 kB: at 120 kB/s each takes
/// most of a second to reach the relay.
const PUBLISHER_UPLINK: u64 = 120_000;
/// For the failure: a body takes about 4 s, so the publisher stops mid-body.
const CRAWLING_UPLINK: u64 = 25_000;

struct Chain {
    _origin: meshcast_origin::Running,
    publisher: TestNode,
    relay: TestNode,
    viewer: TestNode,
    stream: StreamId,
    ingest: tokio::task::JoinHandle<()>,
}

async fn chain(name: &str, uplink: u64, relay_config: meshcast_node::Config) -> Chain {
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");
    let mut publisher_config_ = config();
    publisher_config_.faults.upload_rate = Some(uplink);
    let publisher = TestNode::start(publisher_config_).await;
    let url = format!("{}/live/master.m3u8", origin.url());
    let (ingest, descriptor) = publish(&publisher, url, name, 61).await;
    let stream = ingest.stream_id();
    let relay = TestNode::start(relay_config).await;
    relay
        .node
        .dial(publisher.addr.clone())
        .await
        .expect("dial publisher");
    relay.node.follow(descriptor.clone()).await.expect("follow");
    let mut viewer_config = config();
    // Nothing from the origin while the relay may still deliver.
    viewer_config.scheduler.origin_after = Duration::from_secs(20);
    let viewer = TestNode::start(viewer_config).await;
    viewer
        .node
        .dial(relay.addr.clone())
        .await
        .expect("dial relay");
    viewer.node.follow(descriptor).await.expect("follow");
    let ingest = tokio::spawn(async move {
        ingest.run().await;
    });
    Chain {
        _origin: origin,
        publisher,
        relay,
        viewer,
        stream,
        ingest,
    }
}

/// Segments published after the viewer joined reach it through the relay,
/// forwarded while they were still arriving there, byte-identical to the
/// origin's, with nobody banned. With cut-through off, the same chain
/// delivers the same segments and forwards nothing before it is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_forwards_segments_while_they_arrive_and_the_switch_turns_it_off() {
    init_logs();
    for cut_through in [true, false] {
        let mut relay_config = config();
        relay_config.scheduler.cut_through = cut_through;
        let name = format!("cut-through-{cut_through}");
        let c = chain(&name, PUBLISHER_UPLINK, relay_config).await;
        let before = c.publisher.held(&c.stream);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let expected: std::collections::BTreeSet<_> = c
            .publisher
            .held(&c.stream)
            .difference(&before)
            .copied()
            .collect();
        assert!(expected.len() >= 2, "only {} new segments", expected.len());
        c.viewer
            .assert_gets(&c.stream, &expected, Duration::from_secs(20))
            .await;
        c.viewer.assert_identical_to_origin(&expected);
        let forwards = c.relay.node.stats().forwards.load(Relaxed);
        if cut_through {
            assert!(
                forwards >= 1,
                "the relay forwarded nothing while it arrived"
            );
        } else {
            assert_eq!(forwards, 0, "forwarded with cut-through off");
        }
        for node in [&c.publisher, &c.relay, &c.viewer] {
            assert_eq!(node.node.stats().bans.load(Relaxed), 0);
        }
        assert_eq!(c.viewer.node.stats().origin_bytes_in.load(Relaxed), 0);
        c.ingest.abort();
    }
}

/// The publisher vanishes while a body is on its way to the relay, which is
/// forwarding it: the relay's download and its forward both end early, and
/// nobody is banned for it: the viewer drops what it got (nothing
/// unverified is kept), and later gets the segment whole from the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_ends_the_forward_and_nobody_is_blamed() {
    init_logs();
    let mut relay_config = config();
    relay_config.scheduler.origin_after = Duration::from_secs(3);
    let c = chain("cut-through-failure", CRAWLING_UPLINK, relay_config).await;
    let mut viewer_events = c.viewer.node.events();
    let forwarded = eventually(Duration::from_secs(20), || async {
        (c.relay.node.stats().forwards.load(Relaxed) >= 1).then_some(())
    })
    .await;
    assert!(forwarded.is_some(), "the relay never forwarded a segment");
    // Mid-body, most likely: a body takes most of a second at this uplink.
    let in_flight = c.publisher.held(&c.stream);
    c.ingest.abort();
    c.publisher.stop().await;

    // Whatever was in flight ends; the origin fills in, and nobody is banned.
    let expected: std::collections::BTreeSet<_> = in_flight;
    c.viewer
        .assert_gets(&c.stream, &expected, Duration::from_secs(40))
        .await;
    c.viewer.assert_identical_to_origin(&expected);
    assert!(
        c.relay.node.stats().forwards_failed.load(Relaxed) >= 1,
        "no forward ended with its source"
    );
    for node in [&c.relay, &c.viewer] {
        assert_eq!(node.node.stats().bans.load(Relaxed), 0);
    }
    let banned = std::iter::from_fn(|| viewer_events.try_recv().ok())
        .find(|e| matches!(e, Event::Banned { .. }));
    assert!(banned.is_none(), "{banned:?}");
}

/// A browser-side client asks the gateway for the next segment before it
/// exists; it starts arriving at the gateway's node over a crawling uplink,
/// and the gateway streams it piece by piece as it comes: the client gets
/// it whole and verified, byte-identical to the origin's, and the delivery
/// was one the gateway started while the segment was still arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_streams_a_segment_to_a_client_while_it_arrives() {
    init_logs();
    let c = chain("cut-through-gateway", CRAWLING_UPLINK, config()).await;
    let mut gateway_config = meshcast_tests::relay::gateway_config();
    gateway_config.serve.streams.push(c.stream);
    let (gateway, driver) = meshcast_relay::Gateway::bind(c.relay.node.clone(), gateway_config)
        .await
        .expect("gateway");
    let driver = tokio::spawn(driver.run());
    let mut client = meshcast_relay::Client::connect(
        gateway.url(),
        &gateway.cert_hashes(),
        c.stream,
        "",
        Duration::from_secs(15),
    )
    .await
    .expect("session");
    // The newest media segment the publisher holds; ask for the one after.
    // (On a loaded host the ingest may not have reached one yet: Welcome
    // waits at most 3 s for the gateway to hold something.)
    let newest = eventually(Duration::from_secs(20), || async {
        c.publisher
            .held(&c.stream)
            .into_iter()
            .filter(|id| id.kind == meshcast_proto::SegmentKind::Media)
            .max_by_key(|id| id.sequence)
    })
    .await
    .expect("a media segment published within 20 s");
    let next = meshcast_proto::SegmentId::media(c.stream, newest.rendition, newest.sequence + 1);
    let (header, body) = client
        .fetch(next, Duration::from_secs(30))
        .await
        .expect("the next segment");
    assert_eq!(header.id(), next);
    let file = std::fs::read(media_dir().join(&header.info().uri)).expect("origin file");
    assert_eq!(body.as_ref(), file.as_slice());
    // The gateway counts a forward sent once QUIC has it acknowledged,
    // which may be a moment after the client read it all.
    let sent = eventually(Duration::from_secs(5), || async {
        let (started, sent) = gateway.forwards();
        (started >= 1 && sent >= 1).then_some(())
    })
    .await;
    assert!(
        sent.is_some(),
        "forwards (started, sent): {:?}",
        gateway.forwards()
    );
    driver.abort();
    c.ingest.abort();
}
