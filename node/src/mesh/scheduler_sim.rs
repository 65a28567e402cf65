//! The scheduler's unit tests: a seeded, deterministic simulation of many
//! [`Scheduler`]s alone, below the mesh (no headers, no store, no
//! verification), for what only the scheduler decides: push fan-out, retries
//! of hung transfers, declines, VOD seeds and demands. Policies of the whole
//! core are tested through [`Mesh`](super::Mesh) in `tests.rs`; the mesh at
//! scale, whole cores over a modelled internet, is the `meshcast-sim` crate.
//!
//! Each node runs a real [`Scheduler`]; the simulator plays the network: links
//! with fixed latencies, an upload bandwidth per node shared by its concurrent
//! uploads, gossip that reaches every node along shortest paths, and an
//! origin. Nothing here reads a clock: time is a `Duration` from a base instant.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use meshcast_proto::pb::DeclineReason;
use meshcast_proto::{SegmentId, StreamId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::scheduler::{Action, Config, Decision, Outcome, Scheduler, TransferId};

type Node = u32;

#[derive(Debug)]
enum Event {
    Header {
        node: Node,
        id: SegmentId,
    },
    Inject {
        id: SegmentId,
    },
    Finished {
        node: Node,
        transfer: TransferId,
        outcome: Outcome,
    },
    Tick {
        node: Node,
    },
}

/// How the simulated network behaves.
#[derive(Debug, Clone)]
struct Network {
    nodes: u32,
    degree: usize,
    upload_bytes_per_s: f64,
    /// Nodes that accept transfers but never finish them (the timeout path).
    black_holes: Vec<Node>,
    /// The publisher announces but never uploads (its mesh links are cut).
    publisher_silent: bool,
}

#[derive(Debug, Default, PartialEq)]
struct Report {
    /// When each node came to hold each segment, after its injection.
    held_after: BTreeMap<(Node, u64), Duration>,
    bytes_received: u64,
    origin_fetches: u64,
}

struct Sim {
    net: Network,
    nodes: Vec<Scheduler<Node>>,
    links: BTreeMap<(Node, Node), Duration>,
    hops: Vec<Vec<u32>>,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    events: HashMap<usize, Event>,
    seq: u64,
    now: Duration,
    base: Instant,
    uploads: HashMap<Node, u32>,
    injected_at: HashMap<SegmentId, Duration>,
    size: u64,
    report: Report,
}

const PUBLISHER: Node = 0;

impl Sim {
    fn new(net: Network, config: Config, seed: u64, size: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = net.nodes;
        let mut links = BTreeMap::new();
        let mut link = |a: Node, b: Node, rng: &mut StdRng| {
            if a != b && !links.contains_key(&(a, b)) {
                let latency = Duration::from_micros(rng.gen_range(1_000..15_000));
                links.insert((a, b), latency);
                links.insert((b, a), latency);
            }
        };
        for a in 0..n {
            link(a, (a + 1) % n, &mut rng); // a ring keeps the graph connected
            let mut others: Vec<Node> = (0..n).filter(|b| *b != a).collect();
            others.shuffle(&mut rng);
            for b in others.into_iter().take(net.degree.saturating_sub(2) / 2) {
                link(a, b, &mut rng);
            }
        }
        let base = Instant::now();
        let mut nodes: Vec<Scheduler<Node>> = (0..n)
            .map(|i| Scheduler::new(config.clone(), seed ^ u64::from(i)))
            .collect();
        for (a, b) in links.keys() {
            nodes[*a as usize].peer_connected(*b);
        }
        let hops = (0..n).map(|src| bfs(&links, n, src)).collect();
        Self {
            net,
            nodes,
            links,
            hops,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            now: Duration::ZERO,
            base,
            uploads: HashMap::new(),
            injected_at: HashMap::new(),
            size,
            report: Report::default(),
        }
    }

    fn at(&mut self, after: Duration, event: Event) {
        self.seq += 1;
        let key = self.seq as usize;
        self.events.insert(key, event);
        self.queue.push(Reverse((self.now + after, self.seq, key)));
    }

    fn latency(&self, a: Node, b: Node) -> Duration {
        self.links
            .get(&(a, b))
            .copied()
            .unwrap_or(Duration::from_millis(20))
    }

    fn transfer_time(&mut self, from: Node, to: Node) -> Duration {
        let sharing = f64::from(*self.uploads.entry(from).or_default() + 1);
        let wire = self.size as f64 * sharing / self.net.upload_bytes_per_s;
        self.latency(from, to) * 2 + Duration::from_secs_f64(wire)
    }

    fn run(mut self, segments: u64, interval: Duration) -> Report {
        for seq in 0..segments {
            let id = SegmentId::media(StreamId::from_bytes(&[7; 32]).unwrap(), 0, seq);
            self.now = interval * seq as u32;
            self.at(Duration::ZERO, Event::Inject { id });
        }
        self.now = Duration::ZERO;
        while let Some(Reverse((time, _, key))) = self.queue.pop() {
            self.now = time;
            let Some(event) = self.events.remove(&key) else {
                continue;
            };
            let now = self.base + self.now;
            let node = match event {
                Event::Inject { id } => {
                    self.injected_at.insert(id, self.now);
                    self.record(PUBLISHER, id);
                    self.nodes[PUBLISHER as usize].held(id, self.size, now);
                    for node in 1..self.net.nodes {
                        let hops = self.hops[PUBLISHER as usize][node as usize];
                        self.at(Duration::from_millis(8) * hops, Event::Header { node, id });
                    }
                    PUBLISHER
                }
                Event::Header { node, id } => {
                    self.nodes[node as usize].header_learned(id, self.size, Some(PUBLISHER), now);
                    node
                }
                Event::Finished {
                    node,
                    transfer,
                    outcome,
                } => {
                    self.nodes[node as usize].finished(transfer, outcome, now);
                    node
                }
                Event::Tick { node } => {
                    self.nodes[node as usize].tick(now);
                    node
                }
            };
            self.drain(node);
        }
        self.report
    }

    fn record(&mut self, node: Node, id: SegmentId) {
        let since = self
            .now
            .saturating_sub(self.injected_at.get(&id).copied().unwrap_or_default());
        self.report
            .held_after
            .entry((node, id.sequence))
            .or_insert(since);
    }

    /// Performs a node's actions and schedules its next tick.
    fn drain(&mut self, node: Node) {
        let now = self.base + self.now;
        while let Some(action) = self.nodes[node as usize].poll_action() {
            match action {
                Action::Offer { transfer, peer, id } => {
                    if node == PUBLISHER && self.net.publisher_silent {
                        self.at(
                            Duration::ZERO,
                            Event::Finished {
                                node,
                                transfer,
                                outcome: Outcome::Failed,
                            },
                        );
                        continue;
                    }
                    let latency = self.latency(node, peer);
                    let decision =
                        self.nodes[peer as usize].offered(id, self.size, node, now + latency);
                    match decision {
                        Decision::Accept(incoming) => self.send(node, transfer, peer, incoming, id),
                        Decision::Decline(reason) => {
                            let outcome = Outcome::Declined(reason);
                            self.at(
                                latency * 2,
                                Event::Finished {
                                    node,
                                    transfer,
                                    outcome,
                                },
                            );
                        }
                    }
                    self.drain(peer);
                }
                Action::Pull { transfer, peer, id } => {
                    let has = self.nodes[peer as usize].is_held(&id)
                        && !(peer == PUBLISHER && self.net.publisher_silent);
                    if has {
                        let elapsed = self.transfer_time(peer, node);
                        *self.uploads.entry(peer).or_default() += 1;
                        if !self.net.black_holes.contains(&peer) {
                            self.receive(node, transfer, id, elapsed, Some(peer));
                        }
                    } else {
                        let back = self.latency(node, peer) * 2;
                        self.at(
                            back,
                            Event::Finished {
                                node,
                                transfer,
                                outcome: Outcome::Absent,
                            },
                        );
                    }
                }
                Action::FetchOrigin { transfer, id } => {
                    self.report.origin_fetches += 1;
                    let elapsed =
                        Duration::from_millis(60) + Duration::from_secs_f64(self.size as f64 / 5e6);
                    self.receive(node, transfer, id, elapsed, None);
                }
                Action::Cancel { .. } => {}
            }
        }
        if let Some(wake) = self.nodes[node as usize].next_wakeup(now) {
            let after = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            self.at(after, Event::Tick { node });
        }
    }

    fn send(
        &mut self,
        from: Node,
        transfer: TransferId,
        to: Node,
        incoming: TransferId,
        id: SegmentId,
    ) {
        let elapsed = self.transfer_time(from, to);
        *self.uploads.entry(from).or_default() += 1;
        if self.net.black_holes.contains(&from) {
            return;
        }
        let outcome = Outcome::Done {
            bytes: self.size,
            elapsed,
        };
        self.at(
            elapsed,
            Event::Finished {
                node: from,
                transfer,
                outcome,
            },
        );
        self.receive(to, incoming, id, elapsed, Some(from));
    }

    fn receive(
        &mut self,
        node: Node,
        transfer: TransferId,
        id: SegmentId,
        elapsed: Duration,
        from: Option<Node>,
    ) {
        // Sender upload slots free up when the transfer completes; approximated at schedule time.
        if let Some(n) = from.and_then(|from| self.uploads.get_mut(&from)) {
            *n = n.saturating_sub(1);
        }
        self.report.bytes_received += self.size;
        let outcome = Outcome::Done {
            bytes: self.size,
            elapsed,
        };
        // Record possession when the transfer lands.
        self.seq += 1;
        let key = self.seq as usize;
        self.events.insert(
            key,
            Event::Finished {
                node,
                transfer,
                outcome,
            },
        );
        self.queue
            .push(Reverse((self.now + elapsed, self.seq, key)));
        let landed = self.now + elapsed;
        let since = landed.saturating_sub(self.injected_at.get(&id).copied().unwrap_or_default());
        self.report
            .held_after
            .entry((node, id.sequence))
            .or_insert(since);
    }
}

/// Hop counts from `src` to every node.
fn bfs(links: &BTreeMap<(Node, Node), Duration>, n: u32, src: Node) -> Vec<u32> {
    let mut dist = vec![u32::MAX; n as usize];
    dist[src as usize] = 0;
    let mut frontier = vec![src];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for a in frontier {
            for (_, b) in links.range((a, 0)..=(a, Node::MAX)).map(|(k, _)| *k) {
                if dist[b as usize] == u32::MAX {
                    dist[b as usize] = dist[a as usize] + 1;
                    next.push(b);
                }
            }
        }
        frontier = next;
    }
    dist
}

fn healthy(nodes: u32) -> Network {
    Network {
        nodes,
        degree: 8,
        upload_bytes_per_s: 50e6,
        black_holes: Vec::new(),
        publisher_silent: false,
    }
}

fn percentile(report: &Report, p: f64) -> Duration {
    let mut all: Vec<Duration> = report.held_after.values().copied().collect();
    all.sort();
    all[((all.len() - 1) as f64 * p) as usize]
}

const MIB: u64 = 1 << 20;

#[test]
fn every_node_gets_every_segment_exactly_once() {
    let (nodes, segments) = (100, 10);
    let report =
        Sim::new(healthy(nodes), Config::default(), 1, MIB).run(segments, Duration::from_secs(2));
    assert_eq!(
        report.held_after.len() as u64,
        u64::from(nodes) * segments,
        "some node missed a segment"
    );
    let needed = u64::from(nodes - 1) * segments * MIB;
    let ratio = report.bytes_received as f64 / needed as f64;
    assert!(ratio <= 1.0 + 1e-9, "duplicate ratio {ratio}");
    assert_eq!(report.origin_fetches, 0);
    // Eager push along the mesh: well under a second at 50 MB/s uploads.
    let p95 = percentile(&report, 0.95);
    assert!(p95 < Duration::from_millis(800), "p95 propagation {p95:?}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run =
        |seed| Sim::new(healthy(40), Config::default(), seed, MIB).run(5, Duration::from_secs(2));
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).held_after, run(8).held_after);
}

#[test]
fn transfers_that_hang_are_retried_elsewhere() {
    let mut net = healthy(30);
    net.black_holes = vec![3, 4, 5];
    // A black hole is silent: the shell's silence timeout ends its transfer
    // long before the rate-scaled deadline would. A high `min_rate` makes
    // the deadline stand in for it here.
    let config = Config {
        transfer_timeout: Duration::from_millis(500),
        min_rate: 8 * MIB,
        ..Config::default()
    };
    let report = Sim::new(net, config, 2, MIB).run(4, Duration::from_secs(2));
    assert_eq!(
        report.held_after.len(),
        30 * 4,
        "a hung transfer was not retried"
    );
    assert_eq!(
        report.origin_fetches, 0,
        "retries at peers should beat the origin deadline"
    );
}

#[test]
fn a_silent_publisher_leaves_the_origin_as_fallback_and_the_mesh_spreads_it() {
    let mut net = healthy(30);
    net.publisher_silent = true;
    let config = Config::default();
    let origin_after = config.origin_after;
    let report = Sim::new(net, config, 3, MIB).run(3, Duration::from_secs(2));
    assert_eq!(report.held_after.len(), 30 * 3);
    // Every node holds every segment soon after the origin deadline...
    let latest = report
        .held_after
        .values()
        .max()
        .copied()
        .unwrap_or_default();
    assert!(
        latest < origin_after + Duration::from_secs(1),
        "latest {latest:?}"
    );
    // ...and the origin served far fewer copies than there are nodes.
    assert!(
        report.origin_fetches >= 3 && report.origin_fetches < 30 * 3,
        "{}",
        report.origin_fetches
    );
}

#[test]
fn declines_say_why() {
    let now = Instant::now();
    let id = SegmentId::media(StreamId::from_bytes(&[1; 32]).unwrap(), 0, 0);
    let mut s: Scheduler<u32> = Scheduler::new(Config::default(), 0);
    s.peer_connected(1);
    s.peer_connected(2);
    let Decision::Accept(t) = s.offered(id, 10, 1, now) else {
        panic!("first offer refused")
    };
    assert_eq!(
        s.offered(id, 10, 2, now),
        Decision::Decline(DeclineReason::InFlight)
    );
    s.finished(
        t,
        Outcome::Done {
            bytes: 10,
            elapsed: Duration::from_millis(1),
        },
        now,
    );
    assert_eq!(
        s.offered(id, 10, 2, now),
        Decision::Decline(DeclineReason::AlreadyHave)
    );
    // Holding it, the node offers it onwards to the neighbour not known to have it... none left:
    // 1 sent it and 2 offered it, so both are holders.
    assert!(std::iter::from_fn(|| s.poll_action()).all(|a| !matches!(a, Action::Offer { .. })));
}

#[test]
fn a_segment_with_no_usable_holder_does_not_make_the_shell_spin() {
    let start = Instant::now();
    let config = Config::default();
    let id = SegmentId::media(StreamId::from_bytes(&[2; 32]).unwrap(), 0, 0);
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    s.peer_connected(1);
    s.header_learned(id, 10, Some(1), start);
    let later = start + config.pull_delay;
    s.tick(later);
    let Some(Action::Pull { transfer, .. }) = s.poll_action() else {
        panic!("no pull")
    };
    s.finished(transfer, Outcome::Failed, later);
    // Nothing to do until the holder may be retried: the wake-up is in the future.
    let wake = s.next_wakeup(later).expect("a wake-up");
    assert_eq!(wake, later + config.retry_after);
    s.tick(wake);
    assert!(
        matches!(s.poll_action(), Some(Action::Pull { peer: 1, .. })),
        "retried after the back-off"
    );
}

#[test]
fn a_known_vod_header_is_downloaded_only_when_seeded_or_demanded() {
    let start = Instant::now();
    let config = Config::default();
    let stream = StreamId::from_bytes(&[3; 32]).unwrap();
    let (known, seeded) = (
        SegmentId::media(stream, 0, 0),
        SegmentId::media(stream, 0, 1),
    );
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    s.peer_connected(1);
    s.header_known(known, 10, Some(1), start);
    s.header_known(seeded, 10, Some(1), start);
    s.seed(seeded, 10, start);
    s.tick(start + config.origin_after * 2);
    let actions: Vec<_> = std::iter::from_fn(|| s.poll_action()).collect();
    assert!(
        matches!(actions.as_slice(), [Action::Pull { peer: 1, id, .. }] if *id == seeded),
        "{actions:?}"
    );
    // A seeded segment waits for the mesh far longer than a live one before
    // the origin: nobody is waiting for it.
    assert!(
        s.next_wakeup(start + config.origin_after * 2)
            .is_some_and(|at| at >= start + config.transfer_timeout)
    );
    // The known one is demanded: pulled at once from its holder.
    let now = start + config.origin_after * 2;
    s.demand(known, 10, now + Duration::from_secs(1), now);
    assert!(matches!(s.poll_action(), Some(Action::Pull { peer: 1, id, .. }) if id == known));
}

#[test]
fn a_demand_with_no_known_holder_asks_each_neighbour_then_the_origin() {
    let now = Instant::now();
    let id = SegmentId::media(StreamId::from_bytes(&[4; 32]).unwrap(), 2, 40);
    let mut s: Scheduler<u32> = Scheduler::new(Config::default(), 0);
    s.peer_connected(1);
    s.peer_connected(2);
    let deadline = now + Duration::from_millis(800);
    s.demand(id, 0, deadline, now);
    let mut asked = Vec::new();
    let mut t = now;
    for _ in 0..2 {
        let Some(Action::Pull { transfer, peer, .. }) = s.poll_action() else {
            panic!("no probe");
        };
        asked.push(peer);
        t += Duration::from_millis(10);
        s.finished(transfer, Outcome::Absent, t);
    }
    asked.sort();
    assert_eq!(asked, vec![1, 2], "each neighbour asked once");
    assert_eq!(
        s.poll_action(),
        None,
        "nobody left to ask before the deadline"
    );
    assert_eq!(s.next_wakeup(t), Some(deadline));
    s.tick(deadline);
    assert!(matches!(s.poll_action(), Some(Action::FetchOrigin { .. })));
}

#[test]
fn an_evicted_segment_is_fetched_again_when_demanded() {
    let now = Instant::now();
    let id = SegmentId::media(StreamId::from_bytes(&[5; 32]).unwrap(), 0, 7);
    let mut s: Scheduler<u32> = Scheduler::new(Config::default(), 0);
    s.peer_connected(1);
    s.held(id, 10, now);
    while s.poll_action().is_some() {}
    s.demand(id, 10, now + Duration::from_secs(1), now);
    assert_eq!(s.poll_action(), None, "held: nothing to fetch");
    s.evicted(&id);
    s.demand(id, 10, now + Duration::from_secs(1), now);
    assert!(matches!(
        s.poll_action(),
        Some(Action::Pull { peer: 1, .. })
    ));
}

fn seg(stream: u8, seq: u64) -> SegmentId {
    SegmentId::media(
        StreamId::from_bytes(&[stream; 32]).expect("32 bytes"),
        0,
        seq,
    )
}

/// The pulls the scheduler asks for, by peer.
fn pulls(s: &mut Scheduler<u32>) -> Vec<(TransferId, u32)> {
    std::iter::from_fn(|| s.poll_action())
        .filter_map(|a| match a {
            Action::Pull { transfer, peer, .. } => Some((transfer, peer)),
            _ => None,
        })
        .collect()
}

/// A holder that announces and never delivers (a Sybil staller) costs a
/// few failed pulls, then is benched: others are asked first, and it gets
/// another chance later. Never banned: it may just be slow.
#[test]
fn a_holder_that_keeps_failing_is_benched_and_the_others_serve() {
    let start = Instant::now();
    let config = Config::default();
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    let (staller, honest) = (1, 2);
    s.peer_connected(staller);
    s.peer_connected(honest);
    // The staller looks fastest (lowest RTT), so it is asked first.
    s.rtt(staller, Duration::from_millis(1));
    s.rtt(honest, Duration::from_millis(100));
    let mut now = start;
    let mut asked_staller = 0;
    for seq in 0..10 {
        let id = seg(3, seq);
        s.header_learned(id, 1000, Some(staller), now);
        s.header_learned(id, 1000, Some(honest), now);
        now += config.pull_delay;
        s.tick(now);
        loop {
            let pulls = pulls(&mut s);
            let Some(&(transfer, peer)) = pulls.first() else {
                panic!("segment {seq}: no pull")
            };
            if peer == honest {
                let done = Outcome::Done {
                    bytes: 1000,
                    elapsed: Duration::from_millis(100),
                };
                s.finished(transfer, done, now);
                break;
            }
            asked_staller += 1;
            s.finished(transfer, Outcome::Failed, now);
            now += config.retry_after;
            s.tick(now);
        }
        now += Duration::from_secs(1);
    }
    // Three strikes, then benched for 15 s: the other seven segments never
    // wait for it.
    assert_eq!(
        asked_staller, 3,
        "the staller was asked {asked_staller} times"
    );
    // After the bench it gets another chance (it may have recovered).
    now += Duration::from_secs(15);
    let id = seg(3, 100);
    s.header_learned(id, 1000, Some(staller), now);
    s.header_learned(id, 1000, Some(honest), now);
    s.tick(now + config.pull_delay);
    assert_eq!(pulls(&mut s).first().map(|p| p.1), Some(staller));
}

/// One peer cannot take every download slot: its offers are declined
/// `Busy` beyond its share, while another peer's are accepted.
#[test]
fn one_peer_gets_a_bounded_share_of_downloads() {
    let now = Instant::now();
    let config = Config::default();
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    s.peer_connected(1);
    s.peer_connected(2);
    for seq in 0..config.max_downloads_per_peer as u64 {
        assert!(matches!(
            s.offered(seg(4, seq), 10, 1, now),
            Decision::Accept(_)
        ));
    }
    assert_eq!(
        s.offered(seg(4, 100), 10, 1, now),
        Decision::Decline(DeclineReason::Busy)
    );
    assert!(matches!(
        s.offered(seg(4, 101), 10, 2, now),
        Decision::Accept(_)
    ));
}

/// Late segments by the hundred do not become a hundred HTTP fetches at
/// once; each finished fetch starts the next, and the timer does not spin.
#[test]
fn origin_fetches_in_flight_are_bounded() {
    let start = Instant::now();
    let config = Config::default();
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    for seq in 0..100 {
        s.header_learned(seg(5, seq), 10, None, start);
    }
    let late = start + config.origin_after;
    s.tick(late);
    let fetches: Vec<TransferId> = std::iter::from_fn(|| s.poll_action())
        .filter_map(|a| match a {
            Action::FetchOrigin { transfer, .. } => Some(transfer),
            _ => None,
        })
        .collect();
    assert_eq!(fetches.len(), config.max_origin_fetches);
    if let Some(wake) = s.next_wakeup(late) {
        assert!(wake > late, "a wake-up in the past would spin the shell");
    }
    let done = Outcome::Done {
        bytes: 10,
        elapsed: Duration::from_millis(10),
    };
    s.finished(fetches[0], done, late);
    let next = std::iter::from_fn(|| s.poll_action())
        .filter(|a| matches!(a, Action::FetchOrigin { .. }))
        .count();
    assert_eq!(next, 1, "a finished fetch starts the next one");
}

/// Sizes come from the network: an empty segment (whose transfer measures
/// 0 B/s) and the largest length a header can sign give finite timers, not
/// a panic.
#[test]
fn empty_and_enormous_segments_give_finite_timers() {
    let now = Instant::now();
    let mut s: Scheduler<u32> = Scheduler::new(Config::default(), 0);
    s.peer_connected(1);
    for (seq, size) in [(0, 0), (1, 0), (2, u64::MAX)] {
        let Decision::Accept(t) = s.offered(seg(6, seq), size, 1, now) else {
            panic!("offer {seq} declined")
        };
        s.tick(now + Duration::from_secs(2));
        let done = Outcome::Done {
            bytes: size.min(1 << 20),
            elapsed: Duration::ZERO,
        };
        s.finished(t, done, now + Duration::from_secs(2));
    }
    s.header_learned(seg(6, 3), u64::MAX, Some(1), now);
    s.tick(now + Duration::from_secs(1));
    assert!(s.next_wakeup(now).is_some());
    assert!(s.deadline(u64::MAX, now) <= now + Duration::from_secs(86_400 + 60));
}

/// The offers among the scheduler's pending actions.
fn offers(s: &mut Scheduler<u32>) -> Vec<TransferId> {
    std::iter::from_fn(|| s.poll_action())
        .filter_map(|a| match a {
            Action::Offer { transfer, .. } => Some(transfer),
            _ => None,
        })
        .collect()
}

/// Pushes in flight are bounded in bytes, not only in number: a node with
/// many neighbours and large segments does not hand every body to QUIC at
/// once. One push always may run, however large; a finished push lets the
/// next start.
#[test]
fn pushes_in_flight_are_bounded_in_bytes() {
    let now = Instant::now();
    let config = Config::default();
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    for peer in 1..=50 {
        s.peer_connected(peer);
    }
    let size = 1 << 20;
    for seq in 0..4 {
        s.held(seg(7, seq), size, now);
    }
    let first = offers(&mut s);
    assert_eq!(first.len() as u64, config.max_upload_bytes / size);
    let done = Outcome::Done {
        bytes: 0,
        elapsed: Duration::ZERO,
    };
    s.finished(first[0], done, now);
    assert_eq!(offers(&mut s).len(), 1, "a finished push starts the next");

    let mut huge: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    huge.peer_connected(1);
    huge.held(seg(8, 0), config.max_upload_bytes * 4, now);
    assert_eq!(offers(&mut huge).len(), 1, "one push always may run");
}

/// Behind an upload cap, only the pushes that start within the queue limit
/// and end before their deadline are offered: at 1 MB/s, 500 kB segments
/// queue 2 s deep after four (the fifth would start 2 s late).
#[test]
fn behind_an_upload_cap_only_pushes_that_finish_in_time_are_offered() {
    let now = Instant::now();
    let config = Config {
        upload_rate: Some(1_000_000),
        max_upload_bytes: 64 << 20,
        ..Config::default()
    };
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    for peer in 1..=50 {
        s.peer_connected(peer);
    }
    for seq in 0..8 {
        s.held(seg(9, seq), 500_000, now);
    }
    let offers = std::iter::from_fn(|| s.poll_action())
        .filter(|a| matches!(a, Action::Offer { .. }))
        .count();
    assert_eq!(
        offers, 5,
        "4 queued within 2 s, and the fifth starts at 2 s"
    );

    let uncapped = Config {
        upload_rate: None,
        ..config
    };
    let mut s: Scheduler<u32> = Scheduler::new(uncapped, 0);
    for peer in 1..=50 {
        s.peer_connected(peer);
    }
    for seq in 0..8 {
        s.held(seg(9, seq), 500_000, now);
    }
    let offers = std::iter::from_fn(|| s.poll_action())
        .filter(|a| matches!(a, Action::Offer { .. }))
        .count();
    assert!(offers > 5, "without a cap: {offers}");
}

/// A holder too busy to upload stays a holder: asked again after
/// `retry_after`, never struck, where `Absent` forgets it.
#[test]
fn a_busy_holder_is_asked_again_and_an_absent_one_is_forgotten() {
    let now = Instant::now();
    let config = Config::default();
    let stream = StreamId::from_bytes(&[5; 32]).unwrap();
    let id = SegmentId::media(stream, 0, 7);
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    s.peer_connected(1);
    s.demand(id, 10, now + Duration::from_secs(30), now);
    s.header_learned(id, 10, Some(1), now);
    s.tick(now + config.pull_delay);
    let pull = |s: &mut Scheduler<u32>| {
        std::iter::from_fn(|| s.poll_action()).find_map(|a| match a {
            Action::Pull {
                transfer, peer: 1, ..
            } => Some(transfer),
            _ => None,
        })
    };
    let first = pull(&mut s).expect("pulled from its holder");
    let t = now + config.pull_delay;
    s.finished(first, Outcome::Busy, t);
    assert_eq!(pull(&mut s), None, "not at once");
    s.tick(t + config.retry_after);
    let again = pull(&mut s).expect("asked again once the retry time passed");
    s.finished(again, Outcome::Absent, t + config.retry_after);
    s.tick(t + config.retry_after * 3);
    assert_eq!(pull(&mut s), None, "an Absent holder is forgotten");
}

/// An offer counts in the upload budget only once accepted: offers waiting
/// on peers gone silent (a volunteer killed, its connection not timed out
/// yet) held the budget in the lab's churn run, and the publisher offered
/// the newest segment to nobody.
#[test]
fn offers_waiting_for_an_answer_take_no_upload_bytes() {
    let now = Instant::now();
    let size = 1 << 20;
    let config = Config {
        max_upload_bytes: 2 * size,
        ..Config::default()
    };
    let stream = StreamId::from_bytes(&[8; 32]).unwrap();
    let mut s: Scheduler<u32> = Scheduler::new(config, 0);
    for peer in 1..=6 {
        s.peer_connected(peer);
    }
    s.held(SegmentId::media(stream, 0, 1), size, now);
    let first = offers(&mut s);
    assert_eq!(first.len(), 2, "the budget holds two bodies");
    // While the answers may still come, they count: the next waits.
    s.held(SegmentId::media(stream, 0, 2), size, now);
    assert_eq!(offers(&mut s), Vec::<TransferId>::new());
    // Nobody answers in time: the next segment is offered.
    let wake = s.next_wakeup(now).expect("a wake-up");
    assert!(wake <= now + Duration::from_secs(1), "{:?}", wake - now);
    s.tick(wake);
    let second = offers(&mut s);
    assert!(
        !second.is_empty(),
        "unanswered offers blocked the next segment"
    );
    // Accepted, bodies count again and fill the budget: no more offers.
    for transfer in first.iter().chain(&second) {
        assert!(s.accepted(*transfer));
    }
    s.held(SegmentId::media(stream, 0, 3), size, wake);
    assert_eq!(
        offers(&mut s),
        Vec::<TransferId>::new(),
        "accepted bodies count in the budget"
    );
}

/// A joiner's catch-up of the live window goes one segment at a time,
/// beside the live edge: it never takes every download slot and every
/// holder's uplink while the newest segment is due.
#[test]
fn history_is_pulled_one_at_a_time_beside_the_live_edge() {
    let now = Instant::now();
    let config = Config::default();
    let stream = StreamId::from_bytes(&[7; 32]).unwrap();
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    for peer in 1..=4 {
        s.peer_connected(peer);
    }
    for sequence in 1..=8 {
        s.history_learned(SegmentId::media(stream, 0, sequence), 1_000, Some(1), now);
    }
    let edge = SegmentId::media(stream, 0, 9);
    s.header_learned(edge, 1_000, Some(2), now);
    let t = now + config.pull_delay;
    s.tick(t);
    let pulls = |s: &mut Scheduler<u32>| -> Vec<(TransferId, SegmentId)> {
        std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::Pull { transfer, id, .. } => Some((transfer, id)),
                _ => None,
            })
            .collect()
    };
    let first = pulls(&mut s);
    let ids: Vec<u64> = first.iter().map(|(_, id)| id.sequence).collect();
    assert_eq!(ids.len(), 2, "one history pull and the live edge: {ids:?}");
    assert!(ids.contains(&9), "the live edge is pulled at once: {ids:?}");
    assert_eq!(
        s.next_wakeup(t).filter(|at| *at <= t),
        None,
        "waiting history does not spin the clock"
    );
    // The history pull ends: the next one starts.
    let (history, _) = first
        .iter()
        .find(|(_, id)| id.sequence != 9)
        .copied()
        .expect("a history pull");
    let done = Outcome::Done {
        bytes: 1_000,
        elapsed: Duration::from_millis(10),
    };
    s.finished(history, done, t + Duration::from_millis(10));
    let next = pulls(&mut s);
    assert_eq!(next.len(), 1, "{next:?}");
    assert_ne!(next[0].1.sequence, 9);
}

/// A segment learned well behind the live edge comes from the mesh only,
/// unless a viewer demands it; one at the edge falls back to the origin
/// after `origin_after`.
#[test]
fn history_comes_from_the_origin_only_when_demanded() {
    let now = Instant::now();
    let config = Config::default();
    let stream = StreamId::from_bytes(&[6; 32]).unwrap();
    let (old, edge) = (
        SegmentId::media(stream, 0, 1),
        SegmentId::media(stream, 0, 9),
    );
    let mut s: Scheduler<u32> = Scheduler::new(config.clone(), 0);
    s.history_learned(old, 10, None, now);
    s.header_learned(edge, 10, None, now);
    let later = now + config.origin_after * 10;
    s.tick(later);
    let fetched: Vec<SegmentId> = std::iter::from_fn(|| s.poll_action())
        .filter_map(|a| match a {
            Action::FetchOrigin { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(fetched, vec![edge], "only the live edge from the origin");
    let deadline = later + Duration::from_secs(1);
    s.demand(old, 10, deadline, later);
    s.tick(deadline);
    let fetched = std::iter::from_fn(|| s.poll_action())
        .any(|a| matches!(a, Action::FetchOrigin { id, .. } if id == old));
    assert!(
        fetched,
        "a viewer's demand reaches the origin at its deadline"
    );
}
