//! `meshcast-bench mesh`: propagation through a mesh of real swarms.
//!
//! Starts a publisher and `nodes` nodes in this process, all on QUIC, each
//! on a loopback address of its own (see [`loopback`]). Every node dials the publisher and up to four earlier nodes
//! (seeded, so runs are comparable). The publisher signs `segments` synthetic
//! segments of `segment_bytes` each, one every `interval`, and injects them.
//! Reported: the time from injection to "held by node" over every
//! (node, segment) pair, the duplicate ratio (bytes received by all nodes ÷
//! the bytes they needed), and the origin bytes (the publisher's ingest: the
//! synthetic stream has no HTTP origin, so nodes cannot fall back to one).
//! When a pair is missing, the report says which: per segment, per node, and
//! for each node missing something its peers and what its events said.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::identity::Keypair;
use meshcast_proto::{Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use meshcast_node::unix_now_us as now_us;
use meshcast_node::{Config, Event, Faults, Node, NodeError};

#[derive(Debug, Clone)]
pub struct MeshBench {
    pub nodes: usize,
    pub segment_bytes: usize,
    pub segments: usize,
    pub interval: Duration,
    /// Nodes forward segments while they arrive (the default); off, each
    /// hop waits for the whole segment (store-and-forward).
    pub cut_through: bool,
    /// Every node's upload cap (`node.max_upload`, the publisher's too),
    /// bytes per second: an uplink, which on loopback nothing else models.
    pub max_upload: Option<u64>,
    /// Only the first this many nodes dial the publisher (the others reach
    /// it through them): a mesh several hops deep, as on the internet,
    /// where the publisher keeps a few neighbours. `None`: every node does.
    pub publisher_degree: Option<usize>,
}

/// Hostile nodes joining among the honest ones (the report's hostile-mesh
/// section): real nodes with the hidden test faults switched on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hostile {
    /// Nodes that offer and announce forged headers and corrupt bodies.
    pub forgers: usize,
    /// Nodes that answer every transfer at [`STALLER_RATE`]: Sybil holders
    /// that hold slots without ever being wrong.
    pub stallers: usize,
}

/// A staller's upload rate: a 250 kB segment takes two minutes.
pub const STALLER_RATE: u64 = 2_000;

impl Hostile {
    fn count(&self) -> usize {
        self.forgers + self.stallers
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MeshReport {
    /// Honest nodes: every figure below is theirs.
    pub nodes: usize,
    /// Hostile nodes among them (see [`Hostile`]).
    pub forgers: usize,
    pub stallers: usize,
    /// Bans of an honest peer (the publisher included) by an honest node.
    pub honest_bans: usize,
    /// Hostile nodes banned by at least one honest node.
    pub hostile_banned: usize,
    pub segment_bytes: usize,
    pub segments: usize,
    /// (node, segment) pairs delivered, of `nodes × segments`.
    pub delivered: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub duplicate_ratio: f64,
    pub origin_bytes: u64,
    pub stream_bytes: u64,
    /// Pairs delivered by the publisher itself (pushed or pulled), of
    /// `delivered`: the rest came from other nodes.
    pub from_publisher: usize,
    /// (node, segment) pairs found in the nodes' stores at the end (the
    /// events above may have been lost by a lagging reader; these cannot).
    pub held: usize,
    /// Per segment sequence, how many nodes do not hold it at the end.
    pub missing_by_segment: Vec<usize>,
    /// Nodes that hold no segment at the end, and nodes that hold some but not all.
    pub nodes_without_any: usize,
    pub nodes_partial: usize,
    /// Nodes whose stores differ from what their events said.
    pub event_store_mismatches: usize,
    /// Every node missing something, with what may say why.
    pub missing: Vec<MissingNode>,
    /// Peers connected per node at the end: fewest, mean, most. Each node
    /// dials at most five; the DHT's queries and provider dials add the
    /// rest, and every one is a neighbour that segments are offered to.
    pub peers: (usize, f64, usize),
}

/// A node that does not hold every segment at the end.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MissingNode {
    /// Its place in the join order (0: the first node after the publisher).
    pub index: usize,
    pub peer: String,
    /// Segment sequences it does not hold.
    pub missing: Vec<u64>,
    /// Peers connected at the end, and whether the publisher is among them.
    pub connected: usize,
    pub to_publisher: bool,
    /// Dials to earlier nodes that failed at the start.
    pub failed_dials: usize,
    /// What its event stream said besides `Stored`.
    pub warnings: Vec<String>,
    pub bans: Vec<String>,
    /// Events its collector lost (broadcast lag).
    pub lagged: u64,
}

impl MeshReport {
    /// Lines saying which pairs are missing; none when every pair was delivered.
    pub fn missing_lines(&self) -> Vec<String> {
        let expected = self.nodes * self.segments;
        if self.delivered >= expected && self.held >= expected {
            return Vec::new();
        }
        let mut lines = vec![
            format!(
                "missing: {} of {} pairs by the events, {} of {} held in the stores at the end; {} node(s) whose stores and events disagree",
                expected - self.delivered.min(expected),
                expected,
                expected - self.held.min(expected),
                expected,
                self.event_store_mismatches
            ),
            format!(
                "missing per segment (nodes without it, by sequence): {:?}",
                self.missing_by_segment
            ),
            format!(
                "nodes missing something: {} hold nothing, {} hold some; peers per node: {} fewest, {:.1} mean, {} most",
                self.nodes_without_any,
                self.nodes_partial,
                self.peers.0,
                self.peers.1,
                self.peers.2
            ),
        ];
        const SHOWN: usize = 20;
        for m in self.missing.iter().take(SHOWN) {
            lines.push(format!(
                "  node {:>3} {}: missing {:?}; {} connected{}, {} failed dial(s), {} lagged event(s); warnings {:?}; bans {:?}",
                m.index,
                m.peer,
                m.missing,
                m.connected,
                if m.to_publisher {
                    " (the publisher among them)"
                } else {
                    " (NOT to the publisher)"
                },
                m.failed_dials,
                m.lagged,
                m.warnings,
                m.bans
            ));
        }
        if self.missing.len() > SHOWN {
            lines.push(format!(
                "  … and {} more node(s) (all of them in --json)",
                self.missing.len() - SHOWN
            ));
        }
        lines
    }
}

/// What one node's event stream said during the run.
#[derive(Default)]
struct Heard {
    stored: HashMap<u64, Instant>,
    /// Segments the publisher itself sent (pushed or pulled).
    from_publisher: usize,
    warnings: Vec<String>,
    bans: Vec<String>,
    banned: Vec<libp2p::PeerId>,
    lagged: u64,
}

/// An in-process node and its driver's task, aborted when dropped (the
/// mesh, RSS and idle benches' peers).
pub(crate) struct Running {
    pub(crate) node: Node,
    pub(crate) driver: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The loopback address of the `n`th swarm (0: the publisher): one each.
///
/// Gossipsub's peer scoring penalises peers that share an IP (P6, IP
/// colocation: `(peers on the IP - 10)² × -5`). With every swarm on
/// 127.0.0.1, each peer of a node with 14 or more peers scores below the
/// publish threshold (-50): `publish` finds no peer
/// (`NoPeersSubscribedToTopic`) and nothing is gossiped at all, which no
/// deployment of distinct hosts sees. Linux routes all of 127.0.0.0/8 to
/// the loopback interface, and a QUIC swarm dials from the address it
/// listens on, so each swarm is a host of its own.
pub(crate) fn loopback(n: usize) -> std::net::Ipv4Addr {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    std::net::Ipv4Addr::new(
        127,
        (n / 254 / 254 % 254) as u8,
        (n / 254 % 254) as u8,
        (n % 254 + 1) as u8,
    )
}

fn bench_config(n: usize, faults: Faults, bench: &MeshBench) -> Config {
    let cut_through = bench.cut_through;
    let scheduler = meshcast_node::mesh::scheduler::Config {
        cut_through,
        ..Default::default()
    };
    Config {
        faults,
        scheduler,
        listen: vec![
            format!("/ip4/{}/udp/0/quic-v1", loopback(n))
                .parse()
                .expect("valid multiaddr"),
        ],
        live_window: Duration::from_secs(120),
        store_max_bytes: 1 << 30,
        // The publisher's too: uncapped on loopback, it serves most nodes
        // itself (the DHT connects every node to it), and hardly a segment
        // is forwarded at all.
        max_upload: bench.max_upload,
        ..Config::default()
    }
}

/// Starts swarm `n` (0: the publisher).
async fn start(
    n: usize,
    faults: Faults,
    bench: &MeshBench,
) -> Result<(Running, libp2p::Multiaddr), NodeError> {
    start_with(bench_config(n, faults, bench)).await
}

/// Runs the benchmark; `progress` hears about each phase.
pub async fn run(bench: &MeshBench, progress: impl Fn(&str)) -> Result<MeshReport, NodeError> {
    run_with(bench, Hostile::default(), progress).await
}

/// The faults of the `total` nodes: `hostile` of them, at seeded places
/// (the same for the same counts).
fn faults_of(total: usize, hostile: Hostile) -> Vec<Faults> {
    let mut faults = vec![Faults::default(); total];
    let mut rng = StdRng::seed_from_u64(7);
    let places = rand::seq::index::sample(&mut rng, total, hostile.count().min(total));
    for (k, place) in places.into_iter().enumerate() {
        faults[place] = if k < hostile.forgers {
            Faults {
                forge_headers: true,
                corrupt_bodies: true,
                ..Faults::default()
            }
        } else {
            Faults {
                upload_rate: Some(STALLER_RATE),
                ..Faults::default()
            }
        };
    }
    faults
}

fn is_hostile(faults: &Faults) -> bool {
    faults.forge_headers || faults.corrupt_bodies || faults.upload_rate.is_some()
}

/// [`run`] with hostile nodes joining among the `bench.nodes` honest ones;
/// the report is about the honest ones.
pub async fn run_with(
    bench: &MeshBench,
    hostile: Hostile,
    progress: impl Fn(&str),
) -> Result<MeshReport, NodeError> {
    let mut rng = StdRng::seed_from_u64(2026);
    let key = PublisherKey::from_seed([3; 32]);
    let descriptor = Descriptor {
        publisher: key.public(),
        name: "bench".into(),
        renditions: vec![Rendition {
            id: 0,
            name: "bench".into(),
            bandwidth: (bench.segment_bytes as u64 * 8).saturating_mul(1000)
                / bench.interval.as_millis().max(1) as u64,
            codecs: String::new(),
            width: 0,
            height: 0,
            uri: String::new(),
            ..Default::default()
        }],
        origin_url: String::new(),
        segment_duration_ms: u32::try_from(bench.interval.as_millis())
            .unwrap_or(u32::MAX)
            .max(1),
        live: true,
        issued_at_us: now_us(),
        private: false,
    }
    .sign(&key)
    .map_err(|e| NodeError::Setup(e.to_string()))?;
    let stream = descriptor.stream_key();

    let total = bench.nodes + hostile.count();
    let faults = faults_of(total, hostile);
    if hostile.count() == 0 {
        progress(&format!("starting a publisher and {} nodes", bench.nodes));
    } else {
        progress(&format!(
            "starting a publisher, {} nodes, {} forgers and {} stallers",
            bench.nodes, hostile.forgers, hostile.stallers
        ));
    }
    let (publisher, publisher_addr) = start(0, Faults::default(), bench).await?;
    publisher.node.follow(descriptor.clone()).await?;
    let mut all: Vec<(Running, libp2p::Multiaddr)> = Vec::with_capacity(total);
    let mut events = Vec::with_capacity(bench.nodes);
    let mut failed_dials = Vec::with_capacity(bench.nodes);
    let mut hostile_peers = std::collections::HashSet::new();
    for i in 0..total {
        let (running, addr) = start(i + 1, faults[i], bench).await?;
        let honest = !is_hostile(&faults[i]);
        if honest {
            events.push(running.node.events());
        } else {
            hostile_peers.insert(running.node.peer_id());
        }
        if bench.publisher_degree.is_none_or(|d| i < d) {
            running.node.dial(publisher_addr.clone()).await?;
        }
        let mut failed = 0;
        for _ in 0..4.min(i) {
            let neighbour = &all[rng.gen_range(0..i)].1;
            if running.node.dial(neighbour.clone()).await.is_err() {
                failed += 1;
            }
        }
        if honest {
            failed_dials.push(failed);
        }
        running.node.follow(descriptor.clone()).await?;
        all.push((running, addr));
    }
    // The figures are the honest nodes'; the hostile ones only take part.
    let (nodes, _hostile_nodes): (Vec<_>, Vec<_>) = all
        .into_iter()
        .zip(&faults)
        .partition(|(_, f)| !is_hostile(f));
    let nodes: Vec<(Running, libp2p::Multiaddr)> = nodes.into_iter().map(|(n, _)| n).collect();
    // Gossipsub builds its mesh on heartbeats (500 ms): give it a few.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every node's events are drained by its own task from now on: read one
    // after another, the later ones would overflow (the channel is bounded).
    let collect_until = tokio::time::Instant::now()
        + bench.interval * u32::try_from(bench.segments).unwrap_or(u32::MAX)
        + Duration::from_secs(30);
    let segments = bench.segments;
    let publisher_id = publisher.node.peer_id();
    let collectors: Vec<_> = events
        .into_iter()
        .map(|mut receiver| {
            tokio::spawn(async move {
                let mut heard = Heard::default();
                while heard.stored.len() < segments {
                    match tokio::time::timeout_at(collect_until, receiver.recv()).await {
                        Ok(Ok(Event::Stored { id, at, source, .. })) => {
                            heard.stored.entry(id.sequence).or_insert(at);
                            if source.peer() == Some(&publisher_id) {
                                heard.from_publisher += 1;
                            }
                        }
                        Ok(Ok(Event::Warning { message })) => heard.warnings.push(message),
                        Ok(Ok(Event::Banned { peer, reason })) => {
                            heard.bans.push(format!("{peer}: {reason}"));
                            heard.banned.push(peer);
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(broadcast::error::RecvError::Lagged(n))) => heard.lagged += n,
                        Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
                    }
                }
                heard
            })
        })
        .collect();

    progress(&format!(
        "publishing {} segments of {} bytes",
        bench.segments, bench.segment_bytes
    ));
    let mut injected: HashMap<u64, Instant> = HashMap::new();
    for sequence in 0..bench.segments as u64 {
        let mut body = vec![0u8; bench.segment_bytes];
        rng.fill_bytes(&mut body);
        let id = SegmentId::media(stream.id, 0, sequence);
        let header = SegmentInfo::for_body(id, &body, bench.interval.as_micros() as u64, now_us())
            .sign(&key)
            .verify(&stream)
            .map_err(|e| NodeError::Setup(e.to_string()))?;
        injected.insert(sequence, Instant::now());
        publisher.node.inject(header, Bytes::from(body)).await?;
        tokio::time::sleep(bench.interval).await;
    }

    progress("waiting for every node to hold every segment");
    let expected = bench.nodes * bench.segments;
    let mut latencies = Vec::with_capacity(expected);
    let mut heard_all = Vec::with_capacity(bench.nodes);
    let mut from_publisher = 0;
    let (mut honest_bans, mut hostile_banned) = (0, std::collections::HashSet::new());
    for collector in collectors {
        let heard = collector
            .await
            .map_err(|e| NodeError::Setup(format!("an event collector failed: {e}")))?;
        for (sequence, at) in &heard.stored {
            if let Some(start) = injected.get(sequence) {
                latencies.push(at.saturating_duration_since(*start));
            }
        }
        from_publisher += heard.from_publisher;
        for peer in &heard.banned {
            if hostile_peers.contains(peer) {
                hostile_banned.insert(*peer);
            } else {
                honest_bans += 1;
            }
        }
        heard_all.push(heard);
    }

    let stream_bytes = (bench.segment_bytes * bench.segments) as u64;
    let received: u64 = nodes
        .iter()
        .map(|(n, _)| {
            n.node.stats().mesh_bytes_in.load(Relaxed)
                + n.node.stats().origin_bytes_in.load(Relaxed)
        })
        .sum();
    let node_origin: u64 = nodes
        .iter()
        .map(|(n, _)| n.node.stats().origin_bytes_in.load(Relaxed))
        .sum();
    // What the stores hold at the end, against what the events said (read
    // with the counters above, before the slower look at each node's peers).
    let holdings: Vec<Vec<bool>> = nodes
        .iter()
        .map(|(running, _)| {
            (0..bench.segments as u64)
                .map(|sequence| {
                    running
                        .node
                        .segment(&SegmentId::media(stream.id, 0, sequence))
                        .is_some()
                })
                .collect()
        })
        .collect();
    let mut peers = Vec::with_capacity(bench.nodes);
    let mut held = 0;
    let mut missing_by_segment = vec![0; bench.segments];
    let (mut nodes_without_any, mut nodes_partial, mut event_store_mismatches) = (0, 0, 0);
    let mut missing = Vec::new();
    for (index, (((running, _), heard), holds)) in
        nodes.iter().zip(heard_all).zip(holdings).enumerate()
    {
        let info = running.node.info().await?;
        peers.push(info.connected.len());
        let count = holds.iter().filter(|h| **h).count();
        held += count;
        let said: Vec<bool> = (0..bench.segments as u64)
            .map(|sequence| heard.stored.contains_key(&sequence))
            .collect();
        if said != holds {
            event_store_mismatches += 1;
        }
        if count == bench.segments {
            continue;
        }
        if count == 0 {
            nodes_without_any += 1;
        } else {
            nodes_partial += 1;
        }
        let mut absent = Vec::new();
        for (sequence, has) in holds.iter().enumerate() {
            if !has {
                missing_by_segment[sequence] += 1;
                absent.push(sequence as u64);
            }
        }
        missing.push(MissingNode {
            index,
            peer: running.node.peer_id().to_string(),
            missing: absent,
            connected: info.connected.len(),
            to_publisher: info.connected.contains(&publisher_id),
            failed_dials: failed_dials[index],
            warnings: heard.warnings,
            bans: heard.bans,
            lagged: heard.lagged,
        });
    }
    latencies.sort();
    let pick = |p: f64| -> f64 {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let report = MeshReport {
        nodes: bench.nodes,
        forgers: hostile.forgers,
        stallers: hostile.stallers,
        honest_bans,
        hostile_banned: hostile_banned.len(),
        segment_bytes: bench.segment_bytes,
        segments: bench.segments,
        delivered: latencies.len(),
        p50_ms: pick(0.50),
        p95_ms: pick(0.95),
        p99_ms: pick(0.99),
        max_ms: latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        duplicate_ratio: received as f64 / (stream_bytes * bench.nodes as u64).max(1) as f64,
        origin_bytes: stream_bytes + node_origin,
        stream_bytes,
        from_publisher,
        held,
        missing_by_segment,
        nodes_without_any,
        nodes_partial,
        event_store_mismatches,
        missing,
        peers: (
            peers.iter().copied().min().unwrap_or(0),
            peers.iter().sum::<usize>() as f64 / peers.len().max(1) as f64,
            peers.iter().copied().max().unwrap_or(0),
        ),
    };
    for line in report.missing_lines() {
        eprintln!("bench: {line}");
    }
    Ok(report)
}

/// Starts a node with `config` (on [`any_loopback`], say) and waits until
/// it listens: the mesh, RSS and hostile benches' publishers and peers.
pub(crate) async fn start_with(config: Config) -> Result<(Running, libp2p::Multiaddr), NodeError> {
    let (node, driver) = Node::new(config, Keypair::generate_ed25519())?;
    let driver = tokio::spawn(driver.run());
    let running = Running { node, driver };
    for _ in 0..250 {
        let info = running.node.info().await?;
        if let Some(addr) = info.listen_addrs.into_iter().next() {
            let addr = addr.with_p2p(info.peer_id).unwrap_or_else(|a| a);
            return Ok((running, addr));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(NodeError::Setup("node did not start listening".into()))
}

/// Any free port on 127.0.0.1, over QUIC.
pub(crate) fn any_loopback() -> Vec<libp2p::Multiaddr> {
    vec![
        libp2p::Multiaddr::from(std::net::Ipv4Addr::LOCALHOST)
            .with(libp2p::multiaddr::Protocol::Udp(0))
            .with(libp2p::multiaddr::Protocol::QuicV1),
    ]
}
