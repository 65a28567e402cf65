//! The event loop: meshes, messages, flows, churn, and what is measured.
//!
//! Every node runs a real [`Mesh`]; the world plays the shell of each (it
//! performs their outputs) and the internet between them. Messages (offers,
//! answers, wants, header lists, announcements) take one way's latency.
//! Segment bytes are flows: a flow's rate is its fair share at both ends —
//! the sender's uplink split over its active uploads, the receiver's
//! downlink over its active downloads, the smaller of the two — recomputed
//! whenever a flow starts or ends at either end; the last byte lands one
//! way's latency after it left. A push that forwards a segment still
//! arriving (cut-through) is fed by the flow bringing it: it moves no faster
//! than that flow while it runs, so it never overtakes it, and it ends when
//! that flow fails (the sender's mesh cancels it). Its receiver hears that
//! the body is arriving once the first 16 KiB group has landed. Gossip floods every link (gossipsub's mesh
//! and lazy gossip reach about the same peers a little later), each node
//! validating and forwarding a message once.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshcast_node::mesh::scheduler::TransferId;
use meshcast_node::mesh::{
    self, Acceptance, Broken, Failure, Mesh, OfferReply, Output, Pushed, Seed, Source, Topic,
};
use meshcast_proto::pb::{self, DeclineReason};
use meshcast_proto::tree;
use meshcast_proto::{
    Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo, SignedHeader, VerifiedDescriptor,
    VerifiedHeader,
};
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::net::{Latency, Place, reachable};
use crate::report::{Measured, Report};
use crate::scenario::{BadKind, Scenario};

pub(crate) const PUBLISHER: u32 = 0;
/// After the last segment, how long the run goes on for stragglers.
const DRAIN: Duration = Duration::from_secs(20);
/// A node that leaves within this long of a segment's publication is not
/// counted as missing it.
const GRACE: Duration = Duration::from_secs(10);

enum Event {
    Inject(u64),
    Gossip {
        to: u32,
        from: u32,
        topic: Topic,
        seq: u64,
        data: Bytes,
    },
    /// A push offer reaches its receiver.
    Offer(u64),
    /// The receiver's answer reaches the sender.
    OfferAnswer(u64, Answer),
    /// A pull request reaches the holder.
    Want(u64),
    /// "I do not have it" reaches the requester.
    Absent(u64),
    FlowDone {
        flow: u64,
        version: u64,
    },
    /// A flow's first verified group reaches its receiver (cut-through).
    Arriving {
        flow: u64,
    },
    /// A header-list request reaches the asked node.
    ListHeaders {
        from: u32,
        to: u32,
        page: u32,
        after: Option<SegmentId>,
    },
    HeaderList {
        to: u32,
        from: u32,
        page: u32,
        headers: Vec<pb::SegmentHeader>,
    },
    Timer {
        node: u32,
        at: Duration,
    },
    Churn,
}

#[derive(Clone, Copy)]
enum Answer {
    Accepted,
    Declined(DeclineReason),
    Rejected,
}

struct Queued {
    at: Duration,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    /// Earliest first (the heap is a max-heap).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Push,
    Pull,
    Origin,
}

/// A transfer between two meshes (or from the origin), and the ids each
/// side knows it by.
struct Xfer {
    kind: Kind,
    /// Who started it: the pusher, the puller, the origin fetcher.
    a: u32,
    a_tid: TransferId,
    /// The other side (none for the origin).
    b: Option<u32>,
    /// The receiver's id of an accepted push.
    b_tid: Option<TransferId>,
    seq: u64,
    flow: Option<u64>,
    /// A push forwarding a segment still arriving: the flow that brings it.
    fed_by: Option<u64>,
}

struct Flow {
    from: Option<u32>,
    to: u32,
    left: f64,
    rate: f64,
    updated: Duration,
    version: u64,
    xfer: u64,
    /// Added to the last byte's departure: its way to the receiver.
    delay: Duration,
    /// A stalling peer at either end: nothing moves, ever.
    stalled: bool,
    /// The flow that brings what this one forwards (see the module docs),
    /// and the flows this one feeds.
    fed_by: Option<u64>,
    feeds: Vec<u64>,
    /// `(receiver, sequence)` while its receiver forwards from it.
    forwarded: Option<(u32, u64)>,
}

struct Node {
    mesh: Option<Mesh<u32>>,
    place: Place,
    nat: bool,
    bad: Option<BadKind>,
    neighbours: BTreeSet<u32>,
    joined: Duration,
    left: Option<Duration>,
    /// Announcements already validated (by segment sequence).
    seen: BTreeSet<u64>,
    timer: Option<Duration>,
    up: Vec<u64>,
    down: Vec<u64>,
    xfers: Vec<u64>,
    uploaded: u64,
    received: u64,
}

pub(crate) struct World {
    sc: Scenario,
    rng: StdRng,
    latency: Latency,
    base: Instant,
    now: Duration,
    queue: BinaryHeap<Queued>,
    next_seq: u64,
    nodes: Vec<Node>,
    /// Nodes present now, publisher excluded, for random choices.
    present: Vec<u32>,
    xfers: HashMap<u64, Xfer>,
    by_tid: HashMap<(u32, TransferId), u64>,
    next_xfer: u64,
    flows: HashMap<u64, Flow>,
    next_flow: u64,
    /// Segments arriving at a node through a flow that pushes forward from.
    arriving: HashMap<(u32, u64), u64>,
    descriptor: VerifiedDescriptor,
    segments: Vec<(VerifiedHeader, Bytes)>,
    injected_at: Vec<Option<Duration>>,
    dirty: Vec<u32>,
    m: Measured,
}

impl World {
    pub(crate) fn new(sc: Scenario) -> Self {
        let mut rng = StdRng::seed_from_u64(sc.seed);
        let latency = Latency::calibrated(sc.rtt_median, &mut rng);
        let key = PublisherKey::from_seed([9; 32]);
        let descriptor = Descriptor {
            publisher: key.public(),
            name: "sim".into(),
            renditions: vec![Rendition {
                id: 0,
                name: "only".into(),
                bandwidth: sc.bitrate_bps as u64,
                codecs: String::new(),
                width: 0,
                height: 0,
                uri: "v0/index.m3u8".into(),
                ..Default::default()
            }],
            origin_url: "https://origin.sim/live/master.m3u8".into(),
            segment_duration_ms: sc.segment.as_millis() as u32,
            live: true,
            issued_at_us: 1,
            private: false,
        }
        .sign(&key)
        .expect("a valid descriptor");
        let stream = descriptor.stream_key();
        let size = sc.segment_bytes();
        let segments = (0..sc.segments())
            .map(|seq| {
                let body = Bytes::from(vec![seq as u8; size]);
                let published = (sc.segment * seq as u32).as_micros() as u64 + 1_000_000;
                let info = SegmentInfo::for_body(
                    SegmentId::media(stream.id, 0, seq),
                    &body,
                    sc.segment.as_micros() as u64,
                    published,
                )
                .with_uri(format!("seg-{seq}.ts"));
                let header = info.sign(&key).verify(&stream).expect("signed by us");
                (header, body)
            })
            .collect::<Vec<_>>();
        let mut world = Self {
            injected_at: vec![None; segments.len()],
            segments,
            rng,
            latency,
            base: Instant::now(),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            next_seq: 0,
            nodes: Vec::new(),
            present: Vec::new(),
            xfers: HashMap::new(),
            by_tid: HashMap::new(),
            next_xfer: 0,
            flows: HashMap::new(),
            next_flow: 0,
            arriving: HashMap::new(),
            descriptor,
            dirty: Vec::new(),
            m: Measured::default(),
            sc,
        };
        world.add_node(true);
        for _ in 0..world.sc.nodes {
            world.add_node(false);
        }
        // Links: every node dials `degree / 2` others (and is dialled about
        // as often); the publisher keeps `publisher_degree`.
        for node in 1..=world.sc.nodes {
            world.dial_random(node, world.sc.degree.div_ceil(2));
        }
        world.dial_random(PUBLISHER, world.sc.publisher_degree);
        for seq in 0..world.segments.len() as u64 {
            world.at(world.sc.segment * seq as u32, Event::Inject(seq));
        }
        if world.sc.churn_per_min > 0.0 {
            let next = world.churn_delay();
            world.at(next, Event::Churn);
        }
        world.flush();
        world
    }

    fn end(&self) -> Duration {
        self.sc.segment * self.segments.len() as u32 + DRAIN
    }

    /// Runs to the end; `progress` gets the share of simulated time done.
    pub(crate) fn run(mut self, progress: &mut dyn FnMut(f64)) -> Report {
        let end = self.end();
        let mut reported = Duration::ZERO;
        while let Some(q) = self.queue.pop() {
            if q.at > end {
                break;
            }
            self.now = q.at;
            self.m.events += 1;
            self.handle(q.event);
            self.flush();
            if self.now >= reported + Duration::from_millis(500) {
                reported = self.now;
                progress(self.now.as_secs_f64() / end.as_secs_f64());
            }
        }
        progress(1.0);
        self.report()
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn at(&mut self, after: Duration, event: Event) {
        self.next_seq += 1;
        self.queue.push(Queued {
            at: self.now + after,
            seq: self.next_seq,
            event,
        });
    }

    fn alive(&self, node: u32) -> bool {
        self.nodes[node as usize].mesh.is_some()
    }

    fn mesh(&mut self, node: u32) -> Option<&mut Mesh<u32>> {
        if self.nodes[node as usize].mesh.is_some() {
            self.dirty.push(node);
        }
        self.nodes[node as usize].mesh.as_mut()
    }

    fn one_way(&self, a: u32, b: u32) -> Duration {
        self.latency
            .one_way(&self.nodes[a as usize].place, &self.nodes[b as usize].place)
    }

    fn add_node(&mut self, publisher: bool) -> u32 {
        let id = self.nodes.len() as u32;
        let place = Place::random(&mut self.rng);
        let nat = !publisher && self.rng.r#gen::<f64>() < self.sc.nat;
        // Drawn for nodes only, as before stallers and forgers were two
        // shares: a seed gives the same network as it did.
        let bad = if publisher {
            None
        } else {
            self.sc.bad_kind(self.rng.r#gen::<f64>())
        };
        let mut config = mesh::Config::default();
        config.scheduler.origin_after = self.sc.origin_after;
        config.scheduler.pull_delay = self.sc.pull_delay;
        config.scheduler.transfer_timeout = self.sc.transfer_timeout;
        config.scheduler.cut_through = self.sc.cut_through;
        // A volunteer states its uplink as its upload cap (`node.max_upload`),
        // which the scheduler sizes its pushes to; the publisher is a server.
        if !publisher {
            config.scheduler.upload_rate = Some((self.sc.uplink_bps / 8.0) as u64);
        }
        let mut mesh = Mesh::new(config, &id.to_be_bytes(), self.sc.seed ^ u64::from(id));
        mesh.follow(self.descriptor.clone(), Seed::All, self.base + self.now);
        self.nodes.push(Node {
            mesh: Some(mesh),
            place,
            nat,
            bad,
            neighbours: BTreeSet::new(),
            joined: self.now,
            left: None,
            seen: BTreeSet::new(),
            timer: None,
            up: Vec::new(),
            down: Vec::new(),
            xfers: Vec::new(),
            uploaded: 0,
            received: 0,
        });
        if !publisher {
            self.present.push(id);
        }
        self.dirty.push(id);
        id
    }

    /// Dials up to `count` random present nodes this one can reach.
    fn dial_random(&mut self, node: u32, count: u32) {
        let mut made = 0;
        for _ in 0..count * 4 {
            if made >= count || self.present.len() < 2 {
                break;
            }
            let other = self.present[self.rng.gen_range(0..self.present.len())];
            if other == node || self.nodes[node as usize].neighbours.contains(&other) {
                continue;
            }
            let (a, b) = (
                self.nodes[node as usize].nat,
                self.nodes[other as usize].nat,
            );
            if !reachable(a, b, self.sc.punch_success, &mut self.rng) {
                continue;
            }
            self.link(node, other);
            made += 1;
        }
    }

    fn link(&mut self, a: u32, b: u32) {
        let now = self.instant();
        self.nodes[a as usize].neighbours.insert(b);
        self.nodes[b as usize].neighbours.insert(a);
        if let Some(m) = self.mesh(a) {
            m.handle_peer_up(b, now);
        }
        if let Some(m) = self.mesh(b) {
            m.handle_peer_up(a, now);
        }
    }

    fn unlink(&mut self, a: u32, b: u32) {
        let now = self.instant();
        self.nodes[a as usize].neighbours.remove(&b);
        self.nodes[b as usize].neighbours.remove(&a);
        if let Some(m) = self.mesh(a) {
            m.handle_peer_down(b, now);
        }
        if let Some(m) = self.mesh(b) {
            m.handle_peer_down(a, now);
        }
    }

    fn churn_delay(&mut self) -> Duration {
        let per_second = self.sc.churn_per_min * f64::from(self.sc.nodes) / 60.0;
        let u: f64 = self.rng.r#gen::<f64>().max(1e-12);
        Duration::from_secs_f64(-u.ln() / per_second)
    }

    fn handle(&mut self, event: Event) {
        let now = self.instant();
        match event {
            Event::Inject(seq) => {
                self.injected_at[seq as usize] = Some(self.now);
                let (header, body) = self.segments[seq as usize].clone();
                if let Some(m) = self.mesh(PUBLISHER) {
                    m.inject(header, body, now);
                }
            }
            Event::Gossip {
                to,
                from,
                topic,
                seq,
                data,
            } => {
                if !self.alive(to) || !self.nodes[to as usize].seen.insert(seq) {
                    return;
                }
                let Some(m) = self.mesh(to) else { return };
                if m.handle_announce(from, Some(PUBLISHER), topic, &data, now) == Acceptance::Accept
                {
                    self.flood(to, Some(from), topic, seq, data);
                }
            }
            Event::Offer(x) => self.offer_arrives(x),
            Event::OfferAnswer(x, answer) => self.answer_arrives(x, answer),
            Event::Want(x) => self.want_arrives(x),
            Event::Absent(x) => {
                if let Some(t) = self.xfers.remove(&x) {
                    self.forget_tid(&t);
                    if let Some(m) = self.mesh(t.a) {
                        m.handle_download(t.a_tid, Ok(None), now);
                    }
                }
            }
            Event::FlowDone { flow, version } => {
                if self.flows.get(&flow).is_some_and(|f| f.version == version) {
                    self.flow_done(flow);
                }
            }
            Event::Arriving { flow } => self.arriving(flow),
            Event::ListHeaders {
                from,
                to,
                page,
                after,
            } => {
                let headers = self.list(to, page, after);
                let stream = self.descriptor.stream_key().id;
                match headers {
                    Some(headers) => {
                        let back = self.one_way(to, from);
                        self.at(
                            back,
                            Event::HeaderList {
                                to: from,
                                from: to,
                                page,
                                headers,
                            },
                        );
                    }
                    None => {
                        if let Some(m) = self.mesh(from) {
                            m.handle_headers(
                                to,
                                stream,
                                page,
                                Err(Broken::Failed("gone".into())),
                                now,
                            );
                        }
                    }
                }
            }
            Event::HeaderList {
                to,
                from,
                page,
                headers,
            } => {
                let stream = self.descriptor.stream_key().id;
                if let Some(m) = self.mesh(to) {
                    m.handle_headers(from, stream, page, Ok(headers), now);
                }
            }
            Event::Timer { node, at } => {
                if self.nodes[node as usize].timer == Some(at) {
                    self.nodes[node as usize].timer = None;
                    if let Some(m) = self.mesh(node) {
                        m.handle_timeout(now);
                    }
                }
            }
            Event::Churn => {
                if !self.present.is_empty() {
                    let leaving = self.present[self.rng.gen_range(0..self.present.len())];
                    self.leave(leaving);
                    let joined = self.add_node(false);
                    self.dial_random(joined, self.sc.degree);
                }
                let next = self.churn_delay();
                self.at(next, Event::Churn);
            }
        }
    }

    /// What `node` answers to a header list, or `None` if it is gone.
    fn list(
        &self,
        node: u32,
        page: u32,
        after: Option<SegmentId>,
    ) -> Option<Vec<pb::SegmentHeader>> {
        let n = &self.nodes[node as usize];
        let mesh = n.mesh.as_ref()?;
        if n.bad == Some(BadKind::Stall) {
            // Claims every segment published so far.
            let published: Vec<pb::SegmentHeader> = self
                .segments
                .iter()
                .zip(&self.injected_at)
                .filter(|(_, at)| at.is_some())
                .map(|((h, _), _)| h.signed().to_pb())
                .collect();
            let skip = published.len().saturating_sub(mesh::MAX_LISTED);
            return Some(published[skip..].to_vec());
        }
        let store = mesh.store().lock();
        let stream = self.descriptor.stream_key().id;
        let headers: Vec<SignedHeader> = if page == 0 {
            let all = store.headers(&stream);
            let skip = all.len().saturating_sub(mesh::MAX_LISTED);
            all[skip..].to_vec()
        } else {
            store.headers_after(&stream, after.as_ref(), mesh::MAX_LISTED)
        };
        Some(headers.iter().map(SignedHeader::to_pb).collect())
    }

    fn flood(&mut self, from: u32, except: Option<u32>, topic: Topic, seq: u64, data: Bytes) {
        let neighbours: Vec<u32> = self.nodes[from as usize]
            .neighbours
            .iter()
            .copied()
            .collect();
        for to in neighbours {
            if Some(to) != except {
                let delay = self.one_way(from, to);
                self.at(
                    delay,
                    Event::Gossip {
                        to,
                        from,
                        topic,
                        seq,
                        data: data.clone(),
                    },
                );
            }
        }
    }

    fn count(&mut self, outcome: &'static str) {
        *self.m.outcomes.entry(outcome).or_default() += 1;
    }

    /// `node` offers segment `seq` to `peer`: the offer lands a one-way
    /// delay later. `fed_by`: the flow bringing a segment still arriving
    /// (cut-through), which the push cannot outrun.
    fn offer(&mut self, node: u32, peer: u32, transfer: TransferId, seq: u64, fed_by: Option<u64>) {
        let x = self.new_xfer(Xfer {
            kind: Kind::Push,
            a: node,
            a_tid: transfer,
            b: Some(peer),
            b_tid: None,
            seq,
            flow: None,
            fed_by,
        });
        let delay = self.one_way(node, peer);
        self.at(delay, Event::Offer(x));
    }

    fn new_xfer(&mut self, xfer: Xfer) -> u64 {
        self.count(match xfer.kind {
            Kind::Push => "push offered",
            Kind::Pull => "pull asked",
            Kind::Origin => "origin fetched",
        });
        self.m.transfers += 1;
        self.next_xfer += 1;
        let id = self.next_xfer;
        self.by_tid.insert((xfer.a, xfer.a_tid), id);
        self.nodes[xfer.a as usize].xfers.push(id);
        if let Some(b) = xfer.b {
            self.nodes[b as usize].xfers.push(id);
        }
        self.xfers.insert(id, xfer);
        id
    }

    fn forget_tid(&mut self, t: &Xfer) {
        self.by_tid.remove(&(t.a, t.a_tid));
        if let (Some(b), Some(bt)) = (t.b, t.b_tid) {
            self.by_tid.remove(&(b, bt));
        }
    }

    fn offer_arrives(&mut self, x: u64) {
        let now = self.instant();
        let Some(t) = self.xfers.get(&x) else { return };
        let (a, b, seq) = (t.a, t.b.unwrap_or(PUBLISHER), t.seq);
        if !self.alive(b) {
            return self.fail(x);
        }
        let header = self.segments[seq as usize].0.signed().to_pb();
        let reply = match self.mesh(b) {
            Some(m) => m.handle_offer(a, Some(&header), now),
            None => return,
        };
        self.count(match &reply {
            OfferReply::Accept { .. } => "push accepted",
            OfferReply::Decline(DeclineReason::InFlight) => "push declined: in flight",
            OfferReply::Decline(DeclineReason::AlreadyHave) => "push declined: already have",
            OfferReply::Decline(DeclineReason::Busy) => "push declined: busy",
            OfferReply::Decline(_) => "push declined: other",
            OfferReply::Reject(_) => "push rejected",
        });
        let answer = match reply {
            OfferReply::Accept { transfer, .. } => {
                if let Some(t) = self.xfers.get_mut(&x) {
                    t.b_tid = Some(transfer);
                }
                self.by_tid.insert((b, transfer), x);
                Answer::Accepted
            }
            OfferReply::Decline(reason) => Answer::Declined(reason),
            OfferReply::Reject(_) => Answer::Rejected,
        };
        let back = self.one_way(b, a);
        self.at(back, Event::OfferAnswer(x, answer));
    }

    fn answer_arrives(&mut self, x: u64, answer: Answer) {
        let now = self.instant();
        let Some(t) = self.xfers.get(&x) else { return };
        let (a, b, a_tid) = (t.a, t.b.unwrap_or(PUBLISHER), t.a_tid);
        match answer {
            Answer::Accepted => {
                if !self.alive(a) {
                    return self.fail(x);
                }
                // As the node does: a push the scheduler gave up meanwhile
                // sends nothing.
                if !self.mesh(a).is_some_and(|m| m.push_accepted(a_tid)) {
                    return self.fail(x);
                }
                let delay = self.one_way(a, b);
                let fed_by = self.xfers.get(&x).and_then(|t| t.fed_by);
                self.start_flow(Some(a), b, x, delay, fed_by);
            }
            Answer::Declined(reason) => {
                if let Some(t) = self.xfers.remove(&x) {
                    self.forget_tid(&t);
                }
                if let Some(m) = self.mesh(a) {
                    m.handle_upload(a_tid, b, Ok(Pushed::Declined(reason)), now);
                }
            }
            Answer::Rejected => self.fail(x),
        }
    }

    fn want_arrives(&mut self, x: u64) {
        let Some(t) = self.xfers.get(&x) else { return };
        let (a, b, seq) = (t.a, t.b.unwrap_or(PUBLISHER), t.seq);
        if !self.alive(b) {
            return self.fail(x);
        }
        let node = &self.nodes[b as usize];
        let id = self.segments[seq as usize].0.id();
        let holds = node.bad == Some(BadKind::Stall)
            || node
                .mesh
                .as_ref()
                .is_some_and(|m| m.store().lock().contains(&id));
        self.count(if holds { "pull served" } else { "pull absent" });
        if holds {
            let delay = self.one_way(b, a);
            self.start_flow(Some(b), a, x, delay, None);
        } else {
            let back = self.one_way(b, a);
            self.at(back, Event::Absent(x));
        }
    }

    /// Ends a transfer that cannot go on (a side left, a reset): each side
    /// still in it is told it failed.
    fn fail(&mut self, x: u64) {
        let now = self.instant();
        let Some(t) = self.xfers.remove(&x) else {
            return;
        };
        self.forget_tid(&t);
        self.count(match (t.kind, t.flow.is_some()) {
            (Kind::Push, true) => "push ended mid-body",
            (Kind::Push, false) => "push ended before the body",
            (Kind::Pull, true) => "pull ended mid-body",
            (Kind::Pull, false) => "pull ended before the body",
            (Kind::Origin, _) => "origin fetch ended early",
        });
        if let Some(flow) = t.flow {
            self.stop_flow(flow);
        }
        let failed = || Broken::Failed("reset".into());
        match t.kind {
            Kind::Push => {
                if let Some(m) = self.mesh(t.a) {
                    m.handle_upload(t.a_tid, t.b.unwrap_or(PUBLISHER), Err(failed()), now);
                }
                if let (Some(b), Some(bt)) = (t.b, t.b_tid)
                    && let Some(m) = self.mesh(b)
                {
                    m.handle_download(bt, Err(failed()), now);
                }
            }
            Kind::Pull | Kind::Origin => {
                if let Some(m) = self.mesh(t.a) {
                    m.handle_download(t.a_tid, Err(failed()), now);
                }
            }
        }
    }

    /// A forger's body failed verification at its first group: the
    /// receiver drops the transfer and bans the sender, whose upload fails.
    fn forged(&mut self, x: u64) {
        let now = self.instant();
        let Some(t) = self.xfers.remove(&x) else {
            return;
        };
        self.forget_tid(&t);
        self.count("forged body caught");
        if let Some(flow) = t.flow {
            self.stop_flow(flow);
        }
        let misbehaved = Broken::Misbehaved {
            reason: "a group does not match its signed hash".into(),
            failure: Some(Failure::Body),
        };
        let failed = Broken::Failed("the receiver closed the stream".into());
        match t.kind {
            Kind::Push => {
                let receiver = t.b.unwrap_or(PUBLISHER);
                if let Some(m) = self.mesh(t.a) {
                    m.handle_upload(t.a_tid, receiver, Err(failed), now);
                }
                if let (Some(bt), Some(m)) = (t.b_tid, self.mesh(receiver)) {
                    m.handle_download(bt, Err(misbehaved), now);
                }
            }
            Kind::Pull => {
                if let Some(m) = self.mesh(t.a) {
                    m.handle_download(t.a_tid, Err(misbehaved), now);
                }
            }
            Kind::Origin => {}
        }
    }

    fn start_flow(
        &mut self,
        from: Option<u32>,
        to: u32,
        x: u64,
        delay: Duration,
        fed_by: Option<u64>,
    ) {
        // Fed by a flow already done: the whole segment is held.
        let fed_by = fed_by.filter(|f| self.flows.contains_key(f));
        let bytes = self.sc.segment_bytes() as f64;
        let stalled = [from, Some(to)]
            .into_iter()
            .flatten()
            .any(|n| self.nodes[n as usize].bad == Some(BadKind::Stall));
        self.next_flow += 1;
        let id = self.next_flow;
        self.flows.insert(
            id,
            Flow {
                from,
                to,
                left: bytes,
                rate: 0.0,
                updated: self.now,
                version: 0,
                xfer: x,
                delay,
                stalled,
                fed_by,
                feeds: Vec::new(),
                forwarded: None,
            },
        );
        if let Some(up) = fed_by.and_then(|f| self.flows.get_mut(&f)) {
            up.feeds.push(id);
        }
        if let Some(t) = self.xfers.get_mut(&x) {
            t.flow = Some(id);
        }
        if stalled {
            return;
        }
        if let Some(from) = from {
            self.nodes[from as usize].up.push(id);
        }
        self.nodes[to as usize].down.push(id);
        self.refresh(from, to);
        // Bodies from peers are verified group by group as they land;
        // origin fetches whole, as the node does.
        if from.is_some() {
            let first = self.flows.get(&id).map(|f| {
                let group = (tree::GROUP_BYTES as f64).min(f.left);
                f.delay + Duration::from_secs_f64(group / f.rate.max(1.0))
            });
            if let Some(after) = first {
                self.at(after, Event::Arriving { flow: id });
            }
        }
    }

    /// A flow's first group landed: a forger's fails verification there
    /// (the receiver bans it at once); otherwise its receiver's mesh may
    /// forward it.
    fn arriving(&mut self, flow: u64) {
        let now = self.instant();
        let Some((x, from)) = self.flows.get(&flow).map(|f| (f.xfer, f.from)) else {
            return;
        };
        if from.is_some_and(|s| self.nodes[s as usize].bad == Some(BadKind::Forge)) {
            return self.forged(x);
        }
        if !self.sc.cut_through {
            return;
        }
        let Some(t) = self.xfers.get(&x) else { return };
        let (receiver, rtid) = match t.kind {
            Kind::Push => (t.b.unwrap_or(PUBLISHER), t.b_tid),
            Kind::Pull => (t.a, Some(t.a_tid)),
            Kind::Origin => return,
        };
        let (Some(rtid), seq) = (rtid, t.seq) else {
            return;
        };
        if self.nodes[receiver as usize].bad.is_some() {
            return;
        }
        let header = self.segments[seq as usize].0.clone();
        let accepted = self
            .mesh(receiver)
            .is_some_and(|m| m.handle_arriving(rtid, header, now));
        if accepted {
            self.arriving.insert((receiver, seq), flow);
            if let Some(f) = self.flows.get_mut(&flow) {
                f.forwarded = Some((receiver, seq));
            }
        }
    }

    fn stop_flow(&mut self, flow: u64) {
        let Some(f) = self.flows.remove(&flow) else {
            return;
        };
        if let Some(key) = f.forwarded
            && self.arriving.get(&key) == Some(&flow)
        {
            self.arriving.remove(&key);
        }
        if let Some(up) = f.fed_by.and_then(|u| self.flows.get_mut(&u)) {
            up.feeds.retain(|d| *d != flow);
        }
        // What it fed moves at its own pace now (a failed feed ends them
        // through their sender's mesh, which cancels them).
        let fed: Vec<u64> = f.feeds.clone();
        for d in &fed {
            if let Some(down) = self.flows.get_mut(d) {
                down.fed_by = None;
            }
        }
        if f.stalled {
            return;
        }
        if let Some(from) = f.from {
            self.nodes[from as usize].up.retain(|x| *x != flow);
        }
        self.nodes[f.to as usize].down.retain(|x| *x != flow);
        self.refresh(f.from, f.to);
        self.refresh_flows(fed);
    }

    /// Recomputes the rate of every flow at `a` and `b`.
    fn refresh(&mut self, a: Option<u32>, b: u32) {
        let mut touched: Vec<u64> = Vec::new();
        for node in a.into_iter().chain([b]) {
            let n = &self.nodes[node as usize];
            touched.extend(n.up.iter().chain(&n.down));
        }
        touched.sort_unstable();
        touched.dedup();
        self.refresh_flows(touched);
    }

    /// Recomputes the rate of `flows`, and of the flows they feed whose
    /// rate that changes (down a forwarding chain).
    fn refresh_flows(&mut self, flows: Vec<u64>) {
        let mut work = flows;
        while let Some(id) = work.pop() {
            let rate = {
                let Some(f) = self.flows.get(&id) else {
                    continue;
                };
                let up = match f.from {
                    Some(from) => {
                        let n = &self.nodes[from as usize];
                        let cap = if from == PUBLISHER {
                            self.sc.publisher_uplink_bps
                        } else {
                            self.sc.uplink_bps
                        };
                        cap / 8.0 / n.up.len().max(1) as f64
                    }
                    None => f64::INFINITY,
                };
                let down =
                    self.sc.downlink_bps / 8.0 / self.nodes[f.to as usize].down.len().max(1) as f64;
                // Never faster than what feeds it, while that runs.
                let feed = f
                    .fed_by
                    .and_then(|u| self.flows.get(&u))
                    .map_or(f64::INFINITY, |u| if u.stalled { 0.0 } else { u.rate });
                up.min(down).min(feed)
            };
            let now = self.now;
            let Some(f) = self.flows.get_mut(&id) else {
                continue;
            };
            let elapsed = now.saturating_sub(f.updated).as_secs_f64();
            f.left = (f.left - f.rate * elapsed).max(0.0);
            f.updated = now;
            let changed = f.rate != rate;
            f.rate = rate;
            f.version += 1;
            let version = f.version;
            if changed {
                work.extend(f.feeds.iter().copied());
            }
            // A flow fed by a stalled one waits for it to end.
            if rate > 0.0 {
                let done = Duration::from_secs_f64(f.left / rate) + f.delay;
                self.at(done, Event::FlowDone { flow: id, version });
            }
        }
    }

    fn flow_done(&mut self, flow: u64) {
        let now = self.instant();
        let Some(x) = self.flows.get(&flow).map(|f| f.xfer) else {
            return;
        };
        self.stop_flow(flow);
        let Some(t) = self.xfers.remove(&x) else {
            return;
        };
        self.forget_tid(&t);
        self.count(match t.kind {
            Kind::Push => "push delivered",
            Kind::Pull => "pull delivered",
            Kind::Origin => "origin delivered",
        });
        let bytes = self.sc.segment_bytes() as u64;
        let (header, body) = self.segments[t.seq as usize].clone();
        let (sender, receiver, rtid) = match t.kind {
            Kind::Push => (t.b.map(|_| t.a), t.b.unwrap_or(PUBLISHER), t.b_tid),
            Kind::Pull => (t.b, t.a, Some(t.a_tid)),
            Kind::Origin => (None, t.a, Some(t.a_tid)),
        };
        if let Some(s) = sender {
            self.nodes[s as usize].uploaded += bytes;
        } else {
            self.m.origin_bytes += bytes;
        }
        if self.nodes[receiver as usize].bad.is_none() {
            self.nodes[receiver as usize].received += bytes;
        }
        let forged = sender.is_some_and(|s| self.nodes[s as usize].bad == Some(BadKind::Forge));
        let result = if forged {
            Err(Broken::Misbehaved {
                reason: "the body does not match its signed hash".into(),
                failure: Some(Failure::Body),
            })
        } else {
            Ok(Some((header, body)))
        };
        if let (Some(rtid), Some(m)) = (rtid, self.mesh(receiver)) {
            m.handle_download(rtid, result, now);
        }
        if t.kind == Kind::Push
            && let Some(m) = self.mesh(t.a)
        {
            m.handle_upload(t.a_tid, receiver, Ok(Pushed::Delivered), now);
        }
    }

    /// A node leaves abruptly: its links drop, its transfers fail.
    fn leave(&mut self, node: u32) {
        let neighbours: Vec<u32> = self.nodes[node as usize]
            .neighbours
            .iter()
            .copied()
            .collect();
        for other in neighbours {
            self.unlink(node, other);
        }
        let xfers = std::mem::take(&mut self.nodes[node as usize].xfers);
        self.nodes[node as usize].mesh = None;
        self.nodes[node as usize].left = Some(self.now);
        self.present.retain(|n| *n != node);
        for x in xfers {
            self.fail(x);
        }
    }

    /// Performs the outputs of every mesh touched, and sets their timers.
    fn flush(&mut self) {
        while let Some(node) = self.dirty.pop() {
            self.drain(node);
        }
    }

    fn drain(&mut self, node: u32) {
        let now = self.instant();
        loop {
            let Some(output) = self.nodes[node as usize]
                .mesh
                .as_mut()
                .and_then(Mesh::poll_output)
            else {
                break;
            };
            self.perform(node, output);
        }
        let Some(mesh) = self.nodes[node as usize].mesh.as_ref() else {
            return;
        };
        let next = mesh.poll_timeout(now).map(|at| {
            at.saturating_duration_since(self.base)
                .max(self.now + Duration::from_micros(100))
        });
        if next != self.nodes[node as usize].timer {
            self.nodes[node as usize].timer = next;
            if let Some(at) = next {
                let after = at - self.now;
                self.at(after, Event::Timer { node, at });
            }
        }
    }

    fn perform(&mut self, node: u32, output: Output<u32>) {
        let seq_of = |id: &SegmentId| id.sequence;
        match output {
            Output::Push {
                transfer,
                peer,
                header,
                ..
            } => self.offer(node, peer, transfer, seq_of(&header.id()), None),
            Output::Forward {
                transfer,
                peer,
                header,
            } => {
                let seq = seq_of(&header.id());
                let fed_by = self.arriving.get(&(node, seq)).copied();
                self.count("forward offered");
                self.offer(node, peer, transfer, seq, fed_by);
            }
            Output::Pull {
                transfer, peer, id, ..
            } => {
                let x = self.new_xfer(Xfer {
                    kind: Kind::Pull,
                    a: node,
                    a_tid: transfer,
                    b: Some(peer),
                    b_tid: None,
                    seq: seq_of(&id),
                    flow: None,
                    fed_by: None,
                });
                let delay = self.one_way(node, peer);
                self.at(delay, Event::Want(x));
            }
            Output::FetchOrigin {
                transfer, header, ..
            } => {
                let x = self.new_xfer(Xfer {
                    kind: Kind::Origin,
                    a: node,
                    a_tid: transfer,
                    b: None,
                    b_tid: None,
                    seq: seq_of(&header.id()),
                    flow: None,
                    fed_by: None,
                });
                self.m.origin_fetches += 1;
                let delay = self.sc.origin_rtt;
                self.start_flow(None, node, x, delay, None);
            }
            Output::Cancel { transfer } => {
                if let Some(x) = self.by_tid.get(&(node, transfer)).copied() {
                    self.m.cancelled += 1;
                    self.fail(x);
                }
            }
            Output::RequestHeaders {
                peer, page, after, ..
            } => {
                let delay = self.one_way(node, peer);
                self.at(
                    delay,
                    Event::ListHeaders {
                        from: node,
                        to: peer,
                        page,
                        after,
                    },
                );
            }
            Output::Gossip { topic, announce } => {
                let seq = pb::Announce::decode(announce.as_ref())
                    .ok()
                    .and_then(|a| a.headers.first().map(|h| h.sequence))
                    .unwrap_or_default();
                self.nodes[node as usize].seen.insert(seq);
                self.flood(node, None, topic, seq, announce);
            }
            Output::Ban { peer, .. } => {
                self.m.bans += 1;
                if self.nodes[peer as usize].bad.is_none() {
                    self.m.honest_bans += 1;
                }
                self.unlink(node, peer);
            }
            Output::Stored { header, source, .. } => {
                if source != Source::Injected && self.nodes[node as usize].bad.is_none() {
                    let seq = header.id().sequence;
                    if let Some(at) = self.injected_at[seq as usize] {
                        self.m.stored.push((node, seq, self.now.saturating_sub(at)));
                    }
                }
            }
            Output::Warning(_) => self.m.warnings += 1,
            Output::Unban { .. }
            | Output::Follow { .. }
            | Output::Unfollow { .. }
            | Output::WriteCache { .. }
            | Output::ReadCache { .. }
            | Output::VerificationFailed(_) => {}
        }
    }

    fn report(self) -> Report {
        let honest: Vec<&Node> = self.nodes[1..].iter().filter(|n| n.bad.is_none()).collect();
        let mut expected = 0u64;
        for at in self.injected_at.iter().flatten() {
            expected += honest
                .iter()
                .filter(|n| n.joined <= *at && n.left.is_none_or(|left| left >= *at + GRACE))
                .count() as u64;
        }
        let stored_pairs: HashMap<(u32, u64), Duration> = self
            .m
            .stored
            .iter()
            .map(|(n, s, d)| ((*n, *s), *d))
            .collect();
        let mut delivered = Vec::new();
        for ((node, seq), took) in &stored_pairs {
            let n = &self.nodes[*node as usize];
            let Some(at) = self.injected_at[*seq as usize] else {
                continue;
            };
            if n.joined <= at && n.left.is_none_or(|left| left >= at + GRACE) {
                delivered.push(*took);
            }
        }
        let received: u64 = honest.iter().map(|n| n.received).sum();
        let needed = self.m.stored.len() as u64 * self.sc.segment_bytes() as u64;
        let uploads: Vec<u64> = honest.iter().map(|n| n.uploaded).collect();
        Report::new(
            &self.sc, expected, delivered, received, needed, &uploads, &self.m,
        )
    }
}
