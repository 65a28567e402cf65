//! The mesh under slow and hostile peers, over QUIC on loopback: honest
//! slowness is never banned, one peer cannot starve a node, and gossip
//! announcements are checked before they are forwarded. The hostile peer is
//! a bare libp2p swarm speaking our protocols by hand
//! ([`meshcast_tests::hostile`]).

use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use meshcast_node::exchange::{Framed, PROTOCOL};
use meshcast_node::{Event, Faults, Source};
use meshcast_proto::frame::Limits;
use meshcast_proto::{SegmentId, VerifiedDescriptor, pb};
use meshcast_tests::hostile::Hostile;
use meshcast_tests::live::Live;
use meshcast_tests::{TestNode, config, eventually, init_logs};
use prost::Message as _;
use tokio::sync::broadcast;

fn announce(headers: Vec<pb::SegmentHeader>) -> Vec<u8> {
    pb::Announce { headers }.encode_to_vec()
}

/// What `events` reported so far.
fn drain(events: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

fn bans(events: &[Event]) -> Vec<(libp2p::PeerId, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Banned { peer, reason } => Some((*peer, reason.clone())),
            _ => None,
        })
        .collect()
}

/// Where `id` came from.
fn source_of(events: &[Event], id: SegmentId) -> Option<Source> {
    events.iter().find_map(|e| match e {
        Event::Stored {
            id: got, source, ..
        } if *got == id => Some(*source),
        _ => None,
    })
}

/// A publisher of `live` that pushes nothing: nodes learn of its segments
/// from announcements or header lists, and pull them.
async fn quiet_publisher(live: &Live) -> TestNode {
    let mut publisher_config = config();
    publisher_config.scheduler.push_parallel = 0;
    let publisher = TestNode::start(publisher_config).await;
    publisher
        .node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    publisher
}

/// A push that takes longer than the 5 s transfer timeout on a slow uplink
/// (1.2 MB at 160 KiB/s: about 7.5 s) arrives, and nobody is banned. (A
/// fixed 5 s timeout cancelled it; the sender's task ended its stream
/// cleanly mid-body, and the receiver banned it for a truncated body.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_sender_on_a_slow_uplink_is_not_banned_and_its_push_arrives() {
    init_logs();
    let live = Live::new("slow-uplink");
    let slow = TestNode::start(meshcast_node::Config {
        faults: Faults {
            upload_rate: Some(160 * 1024),
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let receiver = TestNode::start(config()).await;
    let mut sender_events = slow.node.events();
    let mut events = receiver.node.events();
    slow.node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    receiver
        .node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    receiver.node.dial(slow.addr.clone()).await.expect("dial");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (header, body) = live.segment(0, 0, 1_200_000);
    let id = header.id();
    slow.node.inject(header, body).await.expect("inject");
    let arrived = eventually(Duration::from_secs(30), || async {
        receiver.node.segment(&id).map(|_| ())
    })
    .await;
    assert!(arrived.is_some(), "the slow push never arrived");
    let events = drain(&mut events);
    assert_eq!(
        source_of(&events, id),
        Some(Source::Push(slow.node.peer_id()))
    );
    assert_eq!(bans(&events), Vec::new(), "the receiver banned someone");
    assert_eq!(
        bans(&drain(&mut sender_events)),
        Vec::new(),
        "the sender banned someone"
    );
}

/// One peer opens 128 segment streams to a publisher and trickles a byte of
/// a frame every 2 s on each. An honest node still pulls every segment from
/// the publisher (it pushes nothing, so pulls are inbound streams). The
/// trickler holds at most its own share of streams, each for at most one
/// frame's time, and is not banned for it: slowness is not misbehaviour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_trickling_many_streams_does_not_stop_a_node_serving_others() {
    init_logs();
    let live = Live::new("trickle");
    let publisher = quiet_publisher(&live).await;
    let mut publisher_events = publisher.node.events();

    let hostile = Hostile::start();
    hostile.dial(publisher.addr.clone()).await.expect("dial");
    let mut tricklers = Vec::new();
    for _ in 0..128 {
        let mut control = hostile.control.clone();
        let peer = publisher.node.peer_id();
        tricklers.push(tokio::spawn(async move {
            let Ok(mut stream) = control.open_stream(peer, PROTOCOL).await else {
                return;
            };
            // A frame that claims 64 bytes, sent one byte at a time.
            let _ = stream.write_all(&[64]).await;
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if stream.write_all(&[0x0a]).await.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let viewer = TestNode::start(config()).await;
    viewer
        .node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    let mut events = viewer.node.events();
    viewer
        .node
        .dial(publisher.addr.clone())
        .await
        .expect("dial");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for sequence in 0..4 {
        let (header, body) = live.segment(0, sequence, 50_000);
        publisher.node.inject(header, body).await.expect("inject");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for sequence in 0..4 {
        let id = live.id(0, sequence);
        let got = eventually(Duration::from_secs(15), || async {
            viewer.node.segment(&id).map(|_| ())
        })
        .await;
        assert!(got.is_some(), "{id} never reached the viewer");
    }
    let events = drain(&mut events);
    for sequence in 0..4 {
        assert_eq!(
            source_of(&events, live.id(0, sequence)),
            Some(Source::Pull(publisher.node.peer_id()))
        );
    }
    assert!(
        bans(&drain(&mut publisher_events))
            .iter()
            .all(|(peer, _)| *peer != hostile.peer_id),
        "a slow peer was banned"
    );
    for trickler in tricklers {
        trickler.abort();
    }
}

/// Gossip message ids are the hash of the message: a peer that announces a
/// forged header for the next sequence number first cannot have the real
/// announcement dropped as a duplicate. (With ids from the unverified
/// segment id, the real one was dropped and the node never learned of it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatted_gossip_message_id_does_not_drop_the_real_announcement() {
    init_logs();
    let live = Live::new("squat");
    // The publisher pushes nothing: the node learns of the segment only
    // through its announcement, then pulls it.
    let publisher = quiet_publisher(&live).await;
    let node = TestNode::start(config()).await;
    node.node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    let mut events = node.node.events();
    node.node.dial(publisher.addr.clone()).await.expect("dial");
    let hostile = Hostile::start();
    hostile.subscribe(live.topic()).await;
    hostile.dial(node.addr.clone()).await.expect("dial");
    // Gossipsub learns subscriptions and builds its mesh on heartbeats.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (real, body) = live.segment(0, 0, 20_000);
    let mut forged = real.signed().clone();
    forged.info.hash[0] ^= 1;
    hostile
        .publish(live.topic(), announce(vec![forged.to_pb()]))
        .await
        .expect("the squatter publishes");
    tokio::time::sleep(Duration::from_millis(500)).await;
    publisher
        .node
        .inject(real.clone(), body)
        .await
        .expect("inject");
    let got = eventually(Duration::from_secs(10), || async {
        node.node.segment(&real.id()).map(|_| ())
    })
    .await;
    assert!(got.is_some(), "the real announcement was dropped");
    let events = drain(&mut events);
    assert_eq!(
        source_of(&events, real.id()),
        Some(Source::Pull(publisher.node.peer_id()))
    );
    assert!(
        bans(&events)
            .iter()
            .any(|(peer, _)| *peer == hostile.peer_id),
        "the squatter's forged header was not held against it"
    );
}

/// Announcements any honest node rejects from the message alone: no
/// header, more than the cap, a header of another rendition than its topic,
/// bytes that do not decode. Each gets its sender banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_oversized_mismatched_and_garbled_announcements_get_their_sender_banned() {
    init_logs();
    let live = Live::new("bad-announcements");
    let node = TestNode::start(config()).await;
    node.node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    let mut events = node.node.events();
    let too_many: Vec<pb::SegmentHeader> = (0..=meshcast_node::mesh::MAX_ANNOUNCED as u64)
        .map(|sequence| live.segment(0, sequence, 100).0.signed().to_pb())
        .collect();
    let other_rendition = live.segment(1, 0, 100).0.signed().to_pb();
    let cases = [
        ("empty", announce(Vec::new())),
        ("oversized", announce(too_many)),
        ("mismatched", announce(vec![other_rendition])),
        ("garbled", vec![0xff; 40]),
    ];
    let mut hostiles = Vec::new();
    for (name, data) in cases {
        let hostile = Hostile::start();
        hostile.subscribe(live.topic()).await;
        hostile.dial(node.addr.clone()).await.expect("dial");
        tokio::time::sleep(Duration::from_secs(2)).await;
        hostile
            .publish(live.topic(), data)
            .await
            .unwrap_or_else(|e| panic!("{name}: not published: {e}"));
        let banned = eventually(Duration::from_secs(5), || {
            let found = bans(&drain(&mut events))
                .into_iter()
                .any(|(peer, _)| peer == hostile.peer_id);
            async move { found.then_some(()) }
        })
        .await;
        assert!(banned.is_some(), "{name}: the sender was not banned");
        hostiles.push(hostile);
    }
}

/// A DHT node that does not follow a stream keeps the newest valid
/// descriptor it was given: an old one replayed (validly signed, long ago)
/// does not replace it, so lookups keep finding the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_descriptor_replayed_into_the_dht_loses_to_the_newer_one_in_lookups_too() {
    init_logs();
    let now = meshcast_node::unix_now_us();
    let old = Live::issued("replayed", now - 3_600_000_000);
    let new = Live::issued("replayed", now);
    let stream = new.descriptor.stream_key().id;
    assert_eq!(old.descriptor.stream_key().id, stream);

    let dht = TestNode::start(config()).await;
    let publisher = TestNode::start(config()).await;
    publisher.node.dial(dht.addr.clone()).await.expect("dial");
    let replayer = TestNode::start(config()).await;
    replayer.node.dial(dht.addr.clone()).await.expect("dial");
    tokio::time::sleep(Duration::from_secs(1)).await;

    publisher
        .node
        .publish(new.descriptor.clone())
        .await
        .expect("publish");
    let issued = |d: &VerifiedDescriptor| d.descriptor().issued_at_us;
    let stored = eventually(Duration::from_secs(10), || async {
        let found = dht.node.find_stream(stream, Duration::ZERO).await.ok()?;
        (issued(&found) == now).then_some(())
    })
    .await;
    assert!(
        stored.is_some(),
        "the new descriptor never reached the DHT node"
    );

    replayer
        .node
        .publish(old.descriptor.clone())
        .await
        .expect("replay");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let found = dht
        .node
        .find_stream(stream, Duration::ZERO)
        .await
        .expect("still found");
    assert_eq!(issued(&found), now, "the replayed old descriptor won");

    // A lookup hears from the DHT node (new) and from a peer that keeps the
    // old one as its own (it published it before it joined): the newest
    // wins whichever answers first. (Each lookup is a new DHT query;
    // before, the first answer won.)
    let stale = TestNode::start(config()).await;
    stale
        .node
        .publish(old.descriptor.clone())
        .await
        .expect("publish alone");
    let looker = TestNode::start(config()).await;
    looker.node.dial(stale.addr.clone()).await.expect("dial");
    looker.node.dial(dht.addr.clone()).await.expect("dial");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for lookup in 0..6 {
        let found = looker
            .node
            .find_stream(stream, Duration::from_secs(5))
            .await
            .expect("found");
        assert_eq!(issued(&found), now, "lookup {lookup} returned the old one");
    }
}

/// A publisher restarts (a new process, the same key) with its origin's
/// numbering restarted: segment 0 again, other bytes, a newer epoch. The
/// node replaces the earlier run's segment 0 with the new one and drops the
/// earlier run's segment 1. A peer replaying the earlier run's headers
/// afterwards changes nothing, and is not banned: they are validly signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_publishers_new_headers_win() {
    init_logs();
    let live = Live::new("restart");
    let node = TestNode::start(config()).await;
    node.node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    let mut events = node.node.events();
    let first_run = TestNode::start(config()).await;
    first_run
        .node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    node.node.dial(first_run.addr.clone()).await.expect("dial");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let earlier: Vec<_> = (0..2)
        .map(|seq| live.segment_of_run(1_000, 0, seq, 30_000))
        .collect();
    for (header, body) in &earlier {
        first_run
            .node
            .inject(header.clone(), body.clone())
            .await
            .expect("inject");
    }
    let got = eventually(Duration::from_secs(10), || async {
        node.node.segment(&earlier[1].0.id()).map(|_| ())
    })
    .await;
    assert!(got.is_some(), "the first run's segments never arrived");
    drop(first_run);

    let second_run = TestNode::start(config()).await;
    second_run
        .node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    node.node.dial(second_run.addr.clone()).await.expect("dial");
    let hostile = Hostile::start();
    hostile.subscribe(live.topic()).await;
    hostile.dial(node.addr.clone()).await.expect("dial");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (again, body) = live.segment_of_run(2_000, 0, 0, 30_000);
    assert_eq!(again.id(), earlier[0].0.id());
    second_run
        .node
        .inject(again.clone(), body.clone())
        .await
        .expect("inject");
    let replaced = eventually(Duration::from_secs(10), || async {
        let held = node.node.segment(&again.id())?;
        (held.body == body).then_some(())
    })
    .await;
    assert!(replaced.is_some(), "the node kept the earlier run's bytes");
    assert!(
        node.node.segment(&earlier[1].0.id()).is_none(),
        "the earlier run's segment 1 is still served"
    );

    let replay: Vec<_> = earlier.iter().map(|(h, _)| h.signed().to_pb()).collect();
    hostile
        .publish(live.topic(), announce(replay))
        .await
        .expect("the replayer publishes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = node.node.segment(&again.id()).expect("still held");
    assert_eq!(held.body, body, "the replay brought the earlier run back");
    assert!(node.node.segment(&earlier[1].0.id()).is_none());
    assert!(hostile.is_connected(node.node.peer_id()).await);
    assert_eq!(bans(&drain(&mut events)), Vec::new());
}

/// A peer announces a real header, then stalls the pull it draws: it
/// answers with the real header and trickles the body at 20 bytes a
/// second. The node asks another holder alongside and has the segment
/// sooner than any fixed transfer timeout (5 s here; the stalled pull's own
/// deadline is later still), and bans nobody: a stall may be a slow peer.
/// (Before, the next holder was tried only once the stalled pull timed out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_pulls_move_to_another_holder() {
    init_logs();
    let live = Live::new("stall");
    let publisher = quiet_publisher(&live).await;
    let node_config = config();
    let transfer_timeout = node_config.scheduler.transfer_timeout;
    let node = TestNode::start(node_config).await;
    node.node
        .follow(live.descriptor.clone())
        .await
        .expect("follow");
    let mut events = node.node.events();
    let (header, body) = live.segment(0, 0, 200_000);
    let id = header.id();

    let hostile = Hostile::start();
    hostile.subscribe(live.topic()).await;
    let mut incoming = hostile
        .control
        .clone()
        .accept(PROTOCOL)
        .expect("accept segment streams");
    let (asked_tx, mut asked) = tokio::sync::mpsc::channel(16);
    let deliver = header.signed().to_pb();
    // Its encoding on the wire (the tree's hashes and the body), a byte at
    // a time.
    let trickled = meshcast_proto::tree::Outboard::new(&body)
        .encode(&body)
        .expect("encodes");
    let staller = tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            let (deliver, body) = (deliver.clone(), trickled.clone());
            let asked_tx = asked_tx.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, Limits::default(), Duration::from_secs(60));
                match framed.read_message().await {
                    Ok(pb::mesh_message::Body::Want(_)) => {
                        let _ = asked_tx.try_send(tokio::time::Instant::now());
                    }
                    // A header list: it holds nothing yet.
                    Ok(pb::mesh_message::Body::ListHeaders(_)) => {
                        let empty = pb::mesh_message::Body::Announce(pb::Announce::default());
                        let _ = framed.send(empty).await;
                        let _ = framed.finish().await;
                        return;
                    }
                    _ => return,
                }
                let answer = pb::mesh_message::Body::Deliver(pb::Deliver {
                    header: Some(deliver),
                });
                if framed.send(answer).await.is_err() {
                    return;
                }
                for byte in body.iter() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if framed.send_raw(&[*byte]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    hostile.dial(node.addr.clone()).await.expect("dial");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The staller is the only holder the node knows of: it draws the pull.
    let announced = eventually(Duration::from_secs(10), || async {
        let data = announce(vec![header.signed().to_pb()]);
        hostile.publish(live.topic(), data).await.ok()
    })
    .await;
    assert!(announced.is_some(), "the staller could not announce");
    let asked_at = match tokio::time::timeout(Duration::from_secs(10), asked.recv()).await {
        Ok(Some(at)) => at,
        _ => panic!("the node never pulled from the staller"),
    };
    // Now the publisher holds it too; the node learns so from its header
    // list on connecting.
    publisher.node.inject(header, body).await.expect("inject");
    node.node.dial(publisher.addr.clone()).await.expect("dial");
    let got = eventually(Duration::from_secs(30), || async {
        node.node.segment(&id).map(|_| ())
    })
    .await;
    assert!(got.is_some(), "the segment never arrived");
    let waited = asked_at.elapsed();
    assert!(
        waited < transfer_timeout,
        "the segment took {waited:?} after the stalled pull began: \
         another holder was asked only once it timed out"
    );
    let events = drain(&mut events);
    assert_eq!(
        source_of(&events, id),
        Some(Source::Pull(publisher.node.peer_id()))
    );
    assert_eq!(bans(&events), Vec::new(), "a staller is not a forger");
    assert!(hostile.is_connected(node.node.peer_id()).await);
    staller.abort();
}
