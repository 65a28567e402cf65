//! NAT traversal over QUIC on 127.0.0.1: a node that cannot be dialled, whose
//! only address is a relayed circuit, receives and serves segments.
//!
//! The NATed node listens on nothing: its QUIC endpoint only dials out (it
//! cannot accept a connection, as behind a NAT without port mapping). It
//! reserves a slot on a relay and advertises `<relay>/p2p-circuit/p2p/<it>`.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use meshcast_node::publisher::{self, Publisher};
use meshcast_node::{Config, Event, Source, scheduler};
use meshcast_proto::{PublisherKey, SegmentId, StreamId};
use meshcast_tests::{TestNode, config, init_logs, local, media_dir};
use tokio::sync::broadcast;

/// A UDP port free right now, for a relay that must know its address (its
/// external address) before it starts.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a UDP socket")
        .port()
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// A scheduler that never falls back to the origin within the test, so every
/// segment a node holds came from a peer. One download at a time: a late
/// joiner's burst of pulls can lose a stream (libp2p-stream resets an inbound
/// stream that arrives while the previous one is still queued,
/// rust-libp2p#5651), and the scheduler retries a pull that failed at the only
/// holder only through the origin, which these nodes never use.
fn mesh_only() -> scheduler::Config {
    scheduler::Config {
        origin_after: Duration::from_secs(600),
        max_downloads: 1,
        ..scheduler::Config::default()
    }
}

fn publisher_config(origin: String) -> publisher::Config {
    publisher::Config {
        origin,
        public_origin: None,
        name: "test-nat".into(),
        concurrency: 4,
        max_segment: 16 << 20,
        fetch: Default::default(),
        private: false,
    }
}

/// Every event since `events` was created.
fn drain(events: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut drained = Vec::new();
    while let Ok(event) = events.try_recv() {
        drained.push(event);
    }
    drained
}

/// Where each stored segment came from.
fn sources(events: &[Event]) -> Vec<(SegmentId, Source)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Stored { id, source, .. } => Some((*id, *source)),
            _ => None,
        })
        .collect()
}

async fn wait_for_all(node: &TestNode, stream: &StreamId, expected: &BTreeSet<SegmentId>) {
    node.assert_gets(stream, expected, Duration::from_secs(45))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reachable_only_through_a_relay_receives_and_serves_segments() {
    init_logs();
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");

    // The relay: publicly reachable, its external address configured as an
    // operator would (a relay refuses reservations without one).
    let relay_listen: Multiaddr = format!("/ip4/127.0.0.1/udp/{}/quic-v1", free_udp_port())
        .parse()
        .expect("multiaddr");
    let relay_config = Config {
        listen: vec![relay_listen.clone()],
        external: vec![relay_listen],
        relay_server: true,
        ..config()
    };
    let relay = TestNode::start(relay_config).await;

    // The publisher: reachable directly, connected to the relay.
    let publisher_node = TestNode::start(config()).await;
    publisher_node
        .node
        .dial(relay.addr.clone())
        .await
        .expect("publisher dials the relay");
    let ingest = Publisher::start(
        publisher_node.node.clone(),
        PublisherKey::from_seed([7; 32]),
        publisher_config(format!("{}/live/master.m3u8", origin.url())),
    )
    .await
    .expect("publisher starts");
    let stream = ingest.stream_id();
    let ingest = tokio::spawn(ingest.run());

    // The NATed node: no listen address, knows nothing but the relay.
    let natted = TestNode::start(Config {
        listen: vec![],
        relays: vec![relay.addr.clone()],
        scheduler: mesh_only(),
        ..config()
    })
    .await;
    let natted_id = natted.node.peer_id();
    let addrs = natted.node.info().await.expect("info").listen_addrs;
    assert!(
        !addrs.is_empty() && addrs.iter().all(is_relayed),
        "the NATed node listens on {addrs:?}"
    );
    let mut natted_events = natted.node.events();
    let descriptor = natted
        .node
        .find_stream(stream, Duration::from_secs(20))
        .await
        .expect("descriptor found in the DHT through the relay");
    natted.node.follow(descriptor).await.expect("follow");

    // It receives: every segment, from the publisher (it dials out to the
    // provider the DHT names; a NAT lets outbound connections through).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let published = publisher_node.held(&stream);
    assert!(published.len() >= 4, "publisher holds only {published:?}");
    wait_for_all(&natted, &stream, &published).await;
    natted.assert_identical_to_origin(&published);
    let publisher_id = publisher_node.node.peer_id();
    for (id, source) in sources(&drain(&mut natted_events)) {
        assert!(
            matches!(source, Source::Push(p) | Source::Pull(p) if p == publisher_id),
            "the NATed node got {id} from {source:?}"
        );
    }

    // The publisher leaves: the NATed node is now the only holder.
    ingest.abort();
    publisher_node.stop().await;
    let expected = natted.held(&stream);
    assert!(expected.is_superset(&published));

    // A viewer reaches the NATed node through the relay only (it has no
    // other address). Hole punching makes the NATed node dial the viewer
    // back; the segments cross that direct connection. The viewer first
    // connects to the relay, so that identify has told it its observed
    // address (the one it offers for hole punching) before the circuit opens.
    let viewer = TestNode::start(Config {
        scheduler: mesh_only(),
        ..config()
    })
    .await;
    let mut viewer_events = viewer.node.events();
    viewer
        .node
        .dial(relay.addr.clone())
        .await
        .expect("viewer dials the relay");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let circuit = relay
        .addr
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(natted_id));
    viewer
        .node
        .dial(circuit)
        .await
        .expect("viewer dials the NATed node through the relay");
    let descriptor = viewer
        .node
        .find_stream(stream, Duration::from_secs(20))
        .await
        .expect("descriptor found in the DHT");
    viewer.node.follow(descriptor).await.expect("follow");

    // It serves: the viewer gets every segment, all of them from the NATed
    // node, over the direct connection that replaced the relayed one.
    wait_for_all(&viewer, &stream, &expected).await;
    viewer.assert_identical_to_origin(&expected);
    // The circuit was replaced by a direct connection: DCUtR's (usually),
    // or the NATed node's own dial to the viewer after finding it as a
    // provider in the DHT, also opened from behind its NAT. A side that
    // still saw the circuit open when the direct connection landed reports
    // the upgrade; at least one does.
    let viewer_id = viewer.node.peer_id();
    let natted_info = natted.node.info().await.expect("info");
    let viewer_info = viewer.node.info().await.expect("info");
    assert!(
        natted_info.direct.contains(&viewer_id) && viewer_info.direct.contains(&natted_id),
        "no direct connection between the NATed node and the viewer"
    );
    let natted_saw = drain(&mut natted_events)
        .iter()
        .any(|e| matches!(e, Event::RelayUpgraded { peer } if *peer == viewer_id));
    let viewer_events_seen = drain(&mut viewer_events);
    let viewer_saw = viewer_events_seen
        .iter()
        .any(|e| matches!(e, Event::RelayUpgraded { peer } if *peer == natted_id));
    assert!(
        natted_saw || viewer_saw,
        "neither side saw its circuit upgraded to a direct connection"
    );
    let stored = sources(&viewer_events_seen);
    assert!(stored.len() >= expected.len());
    for (id, source) in &stored {
        assert!(
            matches!(source, Source::Push(p) | Source::Pull(p) if *p == natted_id),
            "the viewer got {id} from {source:?}, not from the NATed node"
        );
    }
    // More bytes than a circuit carries before the relay closes it (libp2p's
    // default limit, which the relay keeps): the segments did not cross it.
    let received = viewer.node.stats().mesh_bytes_in.load(Relaxed);
    assert!(
        received > Config::default().relay_circuit_bytes,
        "the viewer received only {received} bytes"
    );
}
