//! The NAT matrix: two nodes, A and B, each public or behind a router of
//! one NAT type, meet through a relay; does a direct connection form, how
//! fast, and do segments flow between them?
//!
//! One case, in a lab of its own:
//!
//! 1. On the WAN: a relay (circuit relay v2, DCUtR, its address configured
//!    as external) and a publisher with its origin. A NATed node reserves a
//!    slot on the relay; a public one needs none.
//! 2. A follows the stream and stores what the publisher publishes; then
//!    the publisher leaves, so A is the only holder.
//! 3. B dials A: through the relay if A is NATed (DCUtR then punches a hole,
//!    or A dials B back), directly otherwise. The clock runs from that dial
//!    until a direct connection between them is open.
//! 4. B follows the stream. With a direct connection, every segment must
//!    come from A. Without one, segments never cross the circuit: a public
//!    seed that A dials out to takes the segments from A, and B must get
//!    every one of them from that seed.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use meshcast_node::{Config, Event, Source, scheduler};
use meshcast_proto::{SegmentId, StreamId};
use tokio::sync::broadcast;

use crate::host::{LabNode, poll, poll_every};
use crate::net::{Host, Lab, Nat};

/// Where a node sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// On the WAN, reachable by anyone.
    Public,
    /// Alone behind a router of this type.
    Behind(Nat),
}

impl Side {
    /// Public, then every NAT type from the easiest to the hardest.
    pub const ALL: [Side; 4] = [
        Side::Public,
        Side::Behind(Nat::ALL[0]),
        Side::Behind(Nat::ALL[1]),
        Side::Behind(Nat::ALL[2]),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Side::Public => "public",
            Side::Behind(nat) => nat.name(),
        }
    }
}

/// The transport the nodes listen and dial on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Quic,
    Tcp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Quic => "QUIC",
            Transport::Tcp => "TCP",
        }
    }

    /// `ip`, port 4001, on this transport.
    pub fn addr(self, ip: Ipv4Addr) -> Multiaddr {
        let text = match self {
            Transport::Quic => format!("/ip4/{ip}/udp/4001/quic-v1"),
            Transport::Tcp => format!("/ip4/{ip}/tcp/4001"),
        };
        text.parse()
            .unwrap_or_else(|_| unreachable!("a valid multiaddr"))
    }
}

/// One cell of the matrix: A is dialled (through the relay when NATed), B
/// dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Case {
    pub a: Side,
    pub b: Side,
    pub transport: Transport,
}

/// What happened in one case.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub case: Case,
    /// From B's dial to a direct connection between A and B, if one opened
    /// within [`DIRECT_WITHIN`].
    pub direct: Option<Duration>,
    /// The segments A held when the publisher left.
    pub expected: usize,
    /// How many of them B stored, and from whom.
    pub stored: usize,
    pub from_a: usize,
    pub from_seed: usize,
    /// From anyone else (the relay cannot send any: always 0).
    pub from_others: usize,
}

impl Outcome {
    /// B got every segment, each from A (direct) or from the public seed
    /// (no direct connection), none from anyone else.
    pub fn delivered(&self) -> bool {
        let wanted = if self.direct.is_some() {
            self.from_a
        } else {
            self.from_seed
        };
        self.expected > 0
            && self.stored >= self.expected
            && wanted >= self.expected
            && self.from_others == 0
    }
}

/// How long a direct connection may take before the case counts it as not
/// formed: DCUtR makes 3 attempts, 5 s apart at most.
pub const DIRECT_WITHIN: Duration = Duration::from_secs(20);

/// The committed test stream (8 segments of 2 s).
pub fn media_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../media/test-stream")
}

fn node_config(listen: Multiaddr) -> Config {
    Config {
        listen: vec![listen],
        // The origin is on the publisher's loopback.
        allow_private_origins: true,
        // Every segment comes from a peer: B cannot reach the origin, and
        // one download at a time keeps a late joiner's burst of pulls clear
        // of rust-libp2p#5651 (an inbound stream reset while one is queued).
        scheduler: scheduler::Config {
            origin_after: Duration::from_secs(600),
            max_downloads: 1,
            ..scheduler::Config::default()
        },
        ..Config::default()
    }
}

async fn node_on(
    lab: &mut Lab,
    side: Side,
    transport: Transport,
    relay: &Multiaddr,
) -> Result<(Host, LabNode), String> {
    let host = match side {
        Side::Public => lab.public_host(),
        Side::Behind(nat) => lab.natted_host(nat),
    };
    let mut config = node_config(transport.addr(Ipv4Addr::UNSPECIFIED));
    if side != Side::Public {
        config.relays = vec![relay.clone()];
    }
    let node = LabNode::start(&host, config).await?;
    Ok((host, node))
}

/// Where each stored segment came from.
fn sources(events: &mut broadcast::Receiver<Event>) -> Vec<(SegmentId, Source)> {
    let mut stored = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Stored { id, source, .. } = event {
            stored.push((id, source));
        }
    }
    stored
}

async fn follow_from(
    node: &LabNode,
    via: &LabNode,
    via_addr: Multiaddr,
    stream: StreamId,
) -> Result<(), String> {
    node.node
        .dial(via_addr)
        .await
        .map_err(|e| format!("dial: {e}"))?;
    let descriptor = via
        .node
        .known_descriptor(stream)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the descriptor is unknown")?;
    node.node
        .follow(descriptor)
        .await
        .map_err(|e| format!("follow: {e}"))
}

/// Runs one case in a lab of its own. An error is a failure of the lab or
/// of a step that must work in every case (A getting the stream from the
/// publisher), not a missing direct connection.
pub async fn run(case: Case, media: &Path) -> Result<Outcome, String> {
    let mut lab = Lab::start();
    let t = case.transport;

    // The relay and the publisher, on the WAN.
    let relay_host = lab.public_host();
    let relay_listen = t.addr(relay_host.addr);
    let relay = LabNode::start(
        &relay_host,
        Config {
            external: vec![relay_listen.clone()],
            relay_server: true,
            ..node_config(relay_listen.clone())
        },
    )
    .await?;
    let relay_addr = relay.at(relay_listen);

    let publisher_host = lab.public_host();
    let publisher_addr = t.addr(publisher_host.addr);
    let publisher = LabNode::start(&publisher_host, node_config(publisher_addr.clone())).await?;
    let publisher_addr = publisher.at(publisher_addr);
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let (stream, _origin, ingest) = publisher
        .publish_live(media, loopback, "lab-matrix", 7)
        .await?;

    // A takes the stream from the publisher, then is its only holder.
    let (a_host, a) = node_on(&mut lab, case.a, t, &relay_addr).await?;
    let a_id = a.node.peer_id();
    let a_contact = match case.a {
        Side::Public => a.at(t.addr(a_host.addr)),
        Side::Behind(_) => a
            .relayed_addr(Duration::from_secs(20))
            .await
            .ok_or("A got no reservation on the relay")?,
    };
    a.node
        .dial(publisher_addr.clone())
        .await
        .map_err(|e| format!("A dials the publisher: {e}"))?;
    a.follow_stream(stream, Duration::from_secs(20), "A")
        .await?;
    let published = poll(Duration::from_secs(30), || async {
        let held = publisher.held(&stream);
        (held.len() >= 4).then_some(held)
    })
    .await
    .ok_or("the publisher published fewer than 4 segments in 30 s")?;
    poll(Duration::from_secs(30), || async {
        published.is_subset(&a.held(&stream)).then_some(())
    })
    .await
    .ok_or("A did not get the published segments")?;
    ingest.abort();
    drop(publisher);
    let expected = a.held(&stream);

    // B reaches A.
    let (_b_host, b) = node_on(&mut lab, case.b, t, &relay_addr).await?;
    let b_id = b.node.peer_id();
    if case.b != Side::Public {
        // As a volunteer's node would be: settled on its relay first (a
        // circuit dialled while the relay connection is still forming
        // fails with "oneshot canceled").
        b.relayed_addr(Duration::from_secs(20))
            .await
            .ok_or("B got no reservation on the relay")?;
    }
    let mut b_events = b.node.events();
    let dialled = Instant::now();
    b.node
        .dial(a_contact)
        .await
        .map_err(|e| format!("B dials A: {e}"))?;
    // Every 5 ms: the time is a figure of the report.
    let direct = poll_every(Duration::from_millis(5), DIRECT_WITHIN, || async {
        (b.is_direct_with(&a_id).await && a.is_direct_with(&b_id).await).then(|| dialled.elapsed())
    })
    .await;

    // B follows: from A over the direct connection, or from a public seed.
    let mut seed = None;
    if direct.is_some() {
        let descriptor = a
            .node
            .known_descriptor(stream)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("A forgot the descriptor")?;
        b.node
            .follow(descriptor)
            .await
            .map_err(|e| format!("B follows: {e}"))?;
    } else {
        let seed_host = lab.public_host();
        let seed_addr = t.addr(seed_host.addr);
        let node = LabNode::start(&seed_host, node_config(seed_addr.clone())).await?;
        let seed_addr = node.at(seed_addr);
        // A dials out to the seed (a NAT lets that through), the seed
        // follows and stores everything from A.
        a.node
            .dial(seed_addr.clone())
            .await
            .map_err(|e| format!("A dials the seed: {e}"))?;
        let descriptor = a
            .node
            .known_descriptor(stream)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("A forgot the descriptor")?;
        node.node
            .follow(descriptor.clone())
            .await
            .map_err(|e| format!("the seed follows: {e}"))?;
        poll(Duration::from_secs(30), || async {
            expected.is_subset(&node.held(&stream)).then_some(())
        })
        .await
        .ok_or("the seed did not get the segments from A")?;
        follow_from(&b, &node, seed_addr, stream).await?;
        seed = Some(node);
    }
    poll(Duration::from_secs(30), || async {
        expected.is_subset(&b.held(&stream)).then_some(())
    })
    .await;

    let seed_id = seed.as_ref().map(|s| s.node.peer_id());
    let mut outcome = Outcome {
        case,
        direct,
        expected: expected.len(),
        stored: 0,
        from_a: 0,
        from_seed: 0,
        from_others: 0,
    };
    for (id, source) in sources(&mut b_events) {
        if !expected.contains(&id) {
            continue;
        }
        outcome.stored += 1;
        match source.peer() {
            Some(p) if *p == a_id => outcome.from_a += 1,
            Some(p) if Some(*p) == seed_id => outcome.from_seed += 1,
            _ => outcome.from_others += 1,
        }
    }
    drop(relay);
    Ok(outcome)
}
