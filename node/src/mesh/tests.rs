//! The mesh's policies, driven through [`Mesh`] with no network: a few
//! meshes wired by [`Net`], which performs their outputs at once (a transfer
//! completes in the call that starts it) unless a test holds them back.

use std::collections::{BTreeMap, HashMap};

use meshcast_proto::{Descriptor, PublisherKey, Rendition, SegmentInfo};

use super::*;

const START_S: u64 = 1_000;

struct Fixture {
    key: PublisherKey,
    descriptor: VerifiedDescriptor,
}

impl Fixture {
    fn new(live: bool, origin: &str) -> Self {
        Self::new_named(live, origin, "test")
    }

    fn new_named(live: bool, origin: &str, name: &str) -> Self {
        let key = PublisherKey::from_seed([7; 32]);
        let descriptor = Descriptor {
            publisher: key.public(),
            name: name.into(),
            renditions: vec![Rendition {
                id: 0,
                name: "only".into(),
                bandwidth: 1_000_000,
                codecs: String::new(),
                width: 0,
                height: 0,
                uri: "v0/index.m3u8".into(),
                ..Default::default()
            }],
            origin_url: origin.into(),
            segment_duration_ms: 2_000,
            live,
            issued_at_us: 1,
            private: false,
        }
        .sign(&key)
        .expect("valid descriptor");
        Self { key, descriptor }
    }

    fn stream(&self) -> StreamId {
        self.descriptor.stream_key().id
    }

    /// Segment `seq`: `size` bytes, published 2 s after the one before.
    fn segment(&self, seq: u64, size: usize) -> (VerifiedHeader, Bytes) {
        self.segment_of(0, seq, size)
    }

    /// The init segment, published with the stream's first segment.
    fn init(&self, size: usize) -> (VerifiedHeader, Bytes) {
        let body = Bytes::from(vec![0xAA; size]);
        let info = SegmentInfo::for_body(
            SegmentId::init(self.stream(), 0, 0),
            &body,
            0,
            START_S * 1_000_000,
        )
        .with_uri("init.mp4");
        let header = info
            .sign(&self.key)
            .verify(&self.descriptor.stream_key())
            .expect("signed by the publisher");
        (header, body)
    }

    /// Segment `seq` of a rendition.
    fn segment_of(&self, rendition: u32, seq: u64, size: usize) -> (VerifiedHeader, Bytes) {
        let body = Bytes::from(vec![seq as u8; size]);
        let info = SegmentInfo::for_body(
            SegmentId::media(self.stream(), rendition, seq),
            &body,
            2_000_000,
            (START_S + 2 * seq) * 1_000_000,
        )
        .with_uri(format!("seg-{seq}.ts"));
        let header = info
            .sign(&self.key)
            .verify(&self.descriptor.stream_key())
            .expect("signed by the publisher");
        (header, body)
    }
}

impl Fixture {
    /// Segment `seq` as `n` parts of `size` bytes, published a quarter of a
    /// segment apart, and the header of the segment they make up.
    fn parts(
        &self,
        seq: u64,
        n: u32,
        size: usize,
    ) -> (Vec<(VerifiedHeader, Bytes)>, VerifiedHeader) {
        let key = self.descriptor.stream_key();
        let start = (START_S + 2 * seq) * 1_000_000;
        let mut whole = Vec::new();
        let parts = (0..n)
            .map(|j| {
                let body = Bytes::from(vec![(seq as u8) ^ (j as u8 * 16 + 1); size]);
                whole.extend_from_slice(&body);
                let id = SegmentId::part(self.stream(), 0, seq, j);
                let info =
                    SegmentInfo::for_body(id, &body, 500_000, start + u64::from(j) * 500_000)
                        .with_uri(format!("seg-{seq}.{j}.m4s"));
                (info.sign(&self.key).verify(&key).unwrap(), body)
            })
            .collect();
        let id = SegmentId::media(self.stream(), 0, seq);
        let info = SegmentInfo::for_body(id, &whole, 2_000_000, start + 2_000_000)
            .with_uri(format!("seg-{seq}.m4s"))
            .with_parts(n);
        (parts, info.sign(&self.key).verify(&key).unwrap())
    }
}

/// Meshes numbered from 0, all neighbours of each other unless cut, an
/// origin serving URLs, and a clock.
struct Net {
    nodes: Vec<Mesh<u32>>,
    now: Instant,
    origin: HashMap<String, Bytes>,
    origin_fetches: Vec<String>,
    /// Peers that answer every pull `Absent` (announce-only publishers).
    announce_only: Vec<u32>,
    /// Transfers held back, for tests that look at them before they end.
    held: Vec<(u32, Output<u32>)>,
    hold: bool,
    /// Every output any node produced, in order, for assertions.
    log: Vec<(u32, Output<u32>)>,
}

impl Net {
    fn new(configs: Vec<Config>) -> Self {
        let nodes = configs
            .into_iter()
            .enumerate()
            .map(|(i, c)| Mesh::new(c, &(i as u32).to_be_bytes(), i as u64))
            .collect();
        Self {
            nodes,
            now: Instant::now(),
            origin: HashMap::new(),
            origin_fetches: Vec::new(),
            announce_only: Vec::new(),
            held: Vec::new(),
            hold: false,
            log: Vec::new(),
        }
    }

    fn connect(&mut self, a: u32, b: u32) {
        let now = self.now;
        self.nodes[a as usize].handle_peer_up(b, now);
        self.nodes[b as usize].handle_peer_up(a, now);
        self.run();
    }

    fn follow(&mut self, node: u32, fixture: &Fixture) {
        let now = self.now;
        self.nodes[node as usize].follow(fixture.descriptor.clone(), Seed::All, now);
        self.run();
    }

    /// Advances the clock, running every timer on the way.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|m| m.poll_timeout(self.now))
                .min()
                .filter(|t| *t <= end);
            let Some(at) = next else { break };
            self.now = at.max(self.now);
            let now = self.now;
            for node in &mut self.nodes {
                if node.poll_timeout(now).is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
            }
            self.run();
        }
        self.now = end;
    }

    /// Performs every output until all meshes are quiet.
    fn run(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(output) = self.nodes[i].poll_output() {
                    any = true;
                    self.log.push((i as u32, output.clone()));
                    if self.hold && matches!(output, Output::Push { .. } | Output::Pull { .. }) {
                        self.held.push((i as u32, output));
                    } else {
                        self.perform(i as u32, output);
                    }
                }
            }
            if !any {
                break;
            }
        }
    }

    fn perform(&mut self, from: u32, output: Output<u32>) {
        let now = self.now;
        match output {
            Output::Push {
                transfer,
                peer,
                header,
                body,
            } => {
                let offer = header.signed().to_pb();
                let reply = self.nodes[peer as usize].handle_offer(from, Some(&offer), now);
                let result = match reply {
                    OfferReply::Accept {
                        transfer: t,
                        header,
                    } => {
                        self.nodes[peer as usize].handle_download(
                            t,
                            Ok(Some((*header, body))),
                            now,
                        );
                        Ok(Pushed::Delivered)
                    }
                    OfferReply::Decline(reason) => Ok(Pushed::Declined(reason)),
                    OfferReply::Reject(reason) => Err(Broken::Failed(reason)),
                };
                self.nodes[from as usize].handle_upload(transfer, peer, result, now);
            }
            Output::Pull {
                transfer, peer, id, ..
            } => {
                let held = if self.announce_only.contains(&peer) {
                    None
                } else {
                    self.nodes[peer as usize].store().lock().get(&id)
                };
                let result = held.map(|s| (s.header, s.body));
                self.nodes[from as usize].handle_download(transfer, Ok(result), now);
            }
            Output::FetchOrigin {
                transfer,
                url,
                header,
            } => {
                self.origin_fetches.push(url.clone());
                let result = match self.origin.get(&url) {
                    Some(body) => Ok(Some((header, body.clone()))),
                    None => Err(Broken::Failed("404".into())),
                };
                self.nodes[from as usize].handle_download(transfer, result, now);
            }
            Output::RequestHeaders {
                peer, stream, page, ..
            } => {
                let headers: Vec<pb::SegmentHeader> = self.nodes[peer as usize]
                    .store()
                    .lock()
                    .headers(&stream)
                    .iter()
                    .map(SignedHeader::to_pb)
                    .collect();
                self.nodes[from as usize].handle_headers(peer, stream, page, Ok(headers), now);
            }
            Output::Gossip { topic, announce } => {
                for to in 0..self.nodes.len() as u32 {
                    if to != from {
                        self.nodes[to as usize].handle_announce(
                            from,
                            Some(from),
                            topic,
                            &announce,
                            now,
                        );
                    }
                }
            }
            // Cancels, bans, follows, stores: recorded in the log.
            _ => {}
        }
    }

    fn holds(&self, node: u32, id: &SegmentId) -> bool {
        self.nodes[node as usize].store().lock().contains(id)
    }

    fn stored(&self, node: u32) -> BTreeMap<SegmentId, Source<u32>> {
        self.log
            .iter()
            .filter(|(n, _)| *n == node)
            .filter_map(|(_, o)| match o {
                Output::Stored { header, source, .. } => Some((header.id(), *source)),
                _ => None,
            })
            .collect()
    }

    fn bans(&self, node: u32) -> Vec<u32> {
        self.log
            .iter()
            .filter(|(n, _)| *n == node)
            .filter_map(|(_, o)| match o {
                Output::Ban { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect()
    }
}

fn config() -> Config {
    Config {
        live_window: Duration::from_secs(30),
        ..Config::default()
    }
}

/// Pushes reach every neighbour: a publisher's segment is offered, accepted
/// once by each node, and forwarded; nobody gets it twice.
#[test]
fn injected_segments_are_pushed_to_every_node_once() {
    let f = Fixture::new(true, "");
    let mut net = Net::new(vec![config(); 4]);
    for n in 0..4 {
        net.follow(n, &f);
    }
    net.connect(0, 1);
    net.connect(1, 2);
    net.connect(2, 3);
    let (header, body) = f.segment(1, 1000);
    let id = header.id();
    net.nodes[0].inject(header, body, net.now);
    net.run();
    for n in 1..4 {
        assert!(net.holds(n, &id), "node {n}");
        assert_eq!(net.stored(n).len(), 1, "node {n}");
        assert!(matches!(net.stored(n)[&id], Source::Push(_)));
    }
}

/// A node that joins after segments were published asks its neighbours for
/// their header lists and pulls the live window.
#[test]
fn late_joiner_pulls_the_live_window() {
    let f = Fixture::new(true, "");
    let mut net = Net::new(vec![config(); 2]);
    net.follow(0, &f);
    for seq in 1..=3 {
        let (header, body) = f.segment(seq, 500);
        net.nodes[0].inject(header, body, net.now);
    }
    net.run();
    net.follow(1, &f);
    net.connect(0, 1);
    // The list arrives at once; pulls wait `pull_delay` for a push first.
    assert!(net.stored(1).is_empty());
    net.advance(Duration::from_secs(1));
    let stored = net.stored(1);
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(stored.values().all(|s| *s == Source::Pull(0)));
}

/// The live playlist names its init segment long after it was published,
/// and every player needs it: it outlives the live window in every store,
/// and a node joining minutes later still gets it (media segments that left
/// the window are gone).
#[test]
fn an_init_segment_outlives_the_live_window_and_reaches_late_joiners() {
    let f = Fixture::new(true, "");
    let mut net = Net::new(vec![config(); 3]);
    net.follow(0, &f);
    net.follow(1, &f);
    net.connect(0, 1);
    let (init, body) = f.init(700);
    let init_id = init.id();
    net.nodes[0].inject(init, body, net.now);
    // 80 s of stream: the window is 30 s.
    for seq in 1..=40 {
        let (header, body) = f.segment(seq, 500);
        net.nodes[0].inject(header, body, net.now);
        net.advance(Duration::from_secs(2));
    }
    for n in [0, 1] {
        assert!(net.holds(n, &init_id), "node {n} dropped the init segment");
        assert!(!net.holds(n, &SegmentId::media(f.stream(), 0, 1)));
    }
    // A late joiner learns it from its neighbour's header list.
    net.follow(2, &f);
    net.connect(1, 2);
    net.advance(Duration::from_secs(2));
    assert!(
        net.holds(2, &init_id),
        "the late joiner has no init segment"
    );
    assert!(net.holds(2, &SegmentId::media(f.stream(), 0, 40)));
}

/// An announce-only publisher pushes nothing and answers pulls `Absent`: the
/// follower learns the segment by gossip, finds no holder, and fetches it
/// from the origin at the URL the descriptor and the header resolve to.
#[test]
fn announce_only_publisher_leaves_the_first_copy_to_the_origin() {
    let f = Fixture::new(true, "https://origin.example/live/master.m3u8");
    let publisher = Config {
        announce_only: true,
        ..config()
    };
    let mut net = Net::new(vec![publisher, config()]);
    net.announce_only.push(0);
    net.follow(0, &f);
    net.follow(1, &f);
    net.connect(0, 1);
    let (header, body) = f.segment(4, 800);
    let id = header.id();
    let url = "https://origin.example/live/v0/seg-4.ts".to_string();
    net.origin.insert(url.clone(), body.clone());
    net.nodes[0].inject(header, body, net.now);
    net.run();
    assert!(
        !net.log
            .iter()
            .any(|(n, o)| *n == 0 && matches!(o, Output::Push { .. })),
        "an announce-only node pushes nothing"
    );
    assert!(!net.holds(1, &id));
    let origin_after = config().scheduler.origin_after;
    net.advance(origin_after - Duration::from_millis(100));
    assert!(net.origin_fetches.is_empty(), "not before the deadline");
    net.advance(Duration::from_millis(200));
    assert_eq!(net.origin_fetches, vec![url]);
    assert_eq!(net.stored(1).get(&id), Some(&Source::Origin));
}

/// A header's URI is signed by whoever published the stream: one that
/// points outside the descriptor's origin (an internal service, another
/// host) is never fetched, however late the segment.
#[test]
fn a_segment_uri_outside_the_origin_is_never_fetched() {
    let f = Fixture::new(true, "https://origin.example/live/master.m3u8");
    let publisher = Config {
        announce_only: true,
        ..config()
    };
    let mut net = Net::new(vec![publisher, config()]);
    net.announce_only.push(0);
    net.follow(0, &f);
    net.follow(1, &f);
    net.connect(0, 1);
    let body = Bytes::from(vec![9u8; 800]);
    let inside = "https://origin.example/live/v0/seg-4.ts".to_string();
    for (seq, uri) in [
        (4, "http://169.254.169.254/latest/meta-data/"),
        (5, "https://origin.example/admin/secret"),
        (6, "../../internal/x.ts"),
    ] {
        let info = SegmentInfo::for_body(
            SegmentId::media(f.stream(), 0, seq),
            &body,
            2_000_000,
            (START_S + 2 * seq) * 1_000_000,
        )
        .with_uri(uri.to_string());
        let header = info
            .sign(&f.key)
            .verify(&f.descriptor.stream_key())
            .expect("signed");
        net.origin.insert(inside.clone(), body.clone());
        net.nodes[0].inject(header, body.clone(), net.now);
    }
    net.run();
    net.advance(config().scheduler.origin_after * 3);
    assert!(
        net.origin_fetches.is_empty(),
        "fetched {:?}",
        net.origin_fetches
    );
    assert!(
        net.log.iter().any(|(n, o)| *n == 1
            && matches!(o, Output::Warning(w) if w.contains("outside the stream's origin"))),
        "no warning says why"
    );
}

/// A segment the store evicted is no longer held: offered again, it is
/// accepted, not declined as "already have".
#[test]
fn an_evicted_segment_is_accepted_again() {
    let f = Fixture::new(true, "");
    let small = Config {
        store_max_bytes: 2_500,
        ..config()
    };
    let mut net = Net::new(vec![config(), small]);
    net.follow(0, &f);
    net.follow(1, &f);
    net.connect(0, 1);
    for seq in 1..=3 {
        let (header, body) = f.segment(seq, 1_000);
        net.nodes[0].inject(header, body, net.now);
        net.run();
    }
    let first = f.segment(1, 1_000).0.id();
    assert!(
        !net.holds(1, &first),
        "evicted: the store holds 2,500 bytes"
    );
    assert!(!net.nodes[1].holds(&first));
    let (header, _) = f.segment(1, 1_000);
    let reply = net.nodes[1].handle_offer(0, Some(&header.signed().to_pb()), net.now);
    assert!(
        matches!(reply, OfferReply::Accept { .. }),
        "declined an evicted segment: {reply:?}"
    );
}

/// Headers that do not verify get their sender banned — announced, offered
/// or listed — and the ban ends after `ban_duration`.
#[test]
fn forgers_are_banned_and_unbanned_later() {
    let f = Fixture::new(true, "");
    let mut net = Net::new(vec![config(); 2]);
    net.follow(0, &f);
    net.follow(1, &f);
    net.connect(0, 1);
    let (header, _) = f.segment(1, 100);
    let mut forged = header.signed().clone();
    forged.info.hash[0] ^= 1;
    let announce = pb::Announce {
        headers: vec![forged.to_pb()],
    }
    .encode_to_vec();
    let now = net.now;
    assert_eq!(
        net.nodes[1].handle_announce(0, Some(0), topic_of(&header), &announce, now),
        Acceptance::Reject
    );
    net.run();
    assert_eq!(net.bans(1), vec![0]);
    assert!(net.nodes[1].is_banned(&0));

    // Offers and lists ban too (a second node to ban).
    let mut net = Net::new(vec![config(); 3]);
    for n in 0..3 {
        net.follow(n, &f);
    }
    let now = net.now;
    let reply = net.nodes[2].handle_offer(0, Some(&forged.to_pb()), now);
    assert!(matches!(reply, OfferReply::Reject(_)), "{reply:?}");
    net.nodes[2].handle_headers(1, f.stream(), 0, Ok(vec![forged.to_pb()]), now);
    net.run();
    assert_eq!(net.bans(2), vec![0, 1]);

    // A banned peer is no neighbour, and comes back after the ban.
    net.nodes[2].handle_peer_up(0, now);
    net.run();
    assert!(net.nodes[2].is_banned(&0));
    net.advance(config().ban_duration + Duration::from_secs(1));
    assert!(!net.nodes[2].is_banned(&0));
    assert!(
        net.log
            .iter()
            .any(|(n, o)| *n == 2 && *o == Output::Unban { peer: 0 })
    );
}

/// A body that fails verification bans the peer that sent it; the segment
/// is pulled from another holder.
#[test]
fn a_bad_body_bans_its_sender_and_another_holder_serves() {
    let f = Fixture::new(true, "");
    let mut net = Net::new(vec![config(); 3]);
    for n in 0..3 {
        net.follow(n, &f);
    }
    net.connect(0, 1);
    net.connect(0, 2);
    net.connect(1, 2);
    net.hold = true;
    let (header, body) = f.segment(1, 300);
    let id = header.id();
    // Node 2 learns the header from both 0 and 1 (gossip), pulls from one.
    for from in [0, 1] {
        net.nodes[from as usize].inject(header.clone(), body.clone(), net.now);
    }
    net.run();
    net.held.clear();
    net.advance(Duration::from_millis(200));
    let (_, pull) = net
        .held
        .iter()
        .find(|(n, o)| *n == 2 && matches!(o, Output::Pull { .. }))
        .cloned()
        .expect("node 2 pulls");
    let Output::Pull { transfer, peer, .. } = pull else {
        unreachable!()
    };
    let now = net.now;
    net.nodes[2].handle_download(
        transfer,
        Err(Broken::Misbehaved {
            reason: "body does not match its hash".into(),
            failure: Some(Failure::Body),
        }),
        now,
    );
    net.hold = false;
    net.run();
    assert_eq!(net.bans(2), vec![peer]);
    net.advance(Duration::from_millis(100));
    let other = 1 - peer;
    assert_eq!(net.stored(2).get(&id), Some(&Source::Pull(other)));
}

/// A header seen before is not verified again (it is the same signed
/// header), but a different one with the same id is. An announcement that
/// brings nothing new is not forwarded (and not held against its sender).
#[test]
fn known_headers_are_not_verified_twice_replays_are_not_forwarded_and_forgeries_are_caught() {
    let f = Fixture::new(true, "");
    let mut net = Net::new(vec![config(); 2]);
    net.follow(1, &f);
    let (header, _) = f.segment(1, 100);
    let announce = |h: &SignedHeader| {
        pb::Announce {
            headers: vec![h.to_pb()],
        }
        .encode_to_vec()
    };
    let now = net.now;
    let good = announce(header.signed());
    assert_eq!(
        net.nodes[1].handle_announce(0, None, topic_of(&header), &good, now),
        Acceptance::Accept
    );
    assert_eq!(
        net.nodes[1].handle_announce(0, None, topic_of(&header), &good, now),
        Acceptance::Ignore
    );
    let mut forged = header.signed().clone();
    forged.info.length += 1;
    assert_eq!(
        net.nodes[1].handle_announce(0, None, topic_of(&header), &announce(&forged), now),
        Acceptance::Reject
    );
}

/// The origin's deadline holds even when it comes before the first pull
/// (a pull delay longer than the origin wait), and the timeout the mesh asks
/// for is never in the past once it has run (a shell would spin).
#[test]
fn the_origin_deadline_holds_before_the_first_pull_and_timers_do_not_spin() {
    let f = Fixture::new(true, "https://origin.example/live/master.m3u8");
    let mut slow_pull = config();
    slow_pull.scheduler.pull_delay = Duration::from_secs(20);
    let mut net = Net::new(vec![config(), slow_pull]);
    net.follow(1, &f);
    let (header, body) = f.segment(2, 100);
    let id = header.id();
    net.origin
        .insert("https://origin.example/live/v0/seg-2.ts".into(), body);
    let announce = pb::Announce {
        headers: vec![header.signed().to_pb()],
    }
    .encode_to_vec();
    let now = net.now;
    net.nodes[1].handle_announce(0, Some(0), topic_of(&header), &announce, now);
    net.run();
    let mut t = net.now;
    let mut wakeups = 0;
    while let Some(at) = net.nodes[1].poll_timeout(t) {
        assert!(at >= t, "a timeout in the past after handle_timeout ran");
        if at > now + Duration::from_secs(10) {
            break;
        }
        t = at;
        net.nodes[1].handle_timeout(t);
        net.now = t;
        net.run();
        wakeups += 1;
        assert!(wakeups < 100, "the mesh keeps waking up");
    }
    assert_eq!(net.stored(1).get(&id), Some(&Source::Origin));
    assert!(net.origin_fetches.len() == 1);
}

/// Segments the publisher offered (`Output::Push`), by sequence.
fn offered(net: &Net, node: u32) -> Vec<u64> {
    net.log
        .iter()
        .filter(|(n, _)| *n == node)
        .filter_map(|(_, o)| match o {
            Output::Push { header, .. } => Some(header.id().sequence),
            _ => None,
        })
        .collect()
}

/// A publisher with two upload slots, one offer at a time per segment, and
/// two neighbours; segments 0 and 1 take both slots with offers held back,
/// so segment 2 becomes held while no slot is free.
fn publisher_with_full_upload_slots(f: &Fixture) -> Net {
    let mut publisher = config();
    publisher.scheduler.max_uploads = 2;
    publisher.scheduler.push_parallel = 1;
    let mut net = Net::new(vec![publisher, config(), config()]);
    for n in 0..3 {
        net.follow(n, f);
    }
    net.connect(0, 1);
    net.connect(0, 2);
    net.hold = true;
    for seq in 0..3 {
        let (header, body) = f.segment(seq, 1000);
        let now = net.now;
        net.nodes[0].inject(header, body, now);
        net.run();
    }
    assert_eq!(offered(&net, 0), vec![0, 1], "both slots taken, none left");
    net
}

/// The 100-node bench's lost segment: one injected while every upload slot
/// was taken was never offered, because a freed slot only went on with the
/// segment whose offer ended. With no gossip (or gossip lost), nobody else
/// learns of it.
#[test]
fn a_segment_held_while_every_upload_slot_is_taken_is_offered_once_one_frees() {
    let f = Fixture::new(true, "");
    let mut net = publisher_with_full_upload_slots(&f);
    while !net.held.is_empty() {
        let (from, output) = net.held.remove(0);
        net.perform(from, output);
        net.run();
    }
    let offers = offered(&net, 0);
    assert!(offers.contains(&2), "segment 2 never offered: {offers:?}");
    for n in 1..3 {
        for seq in 0..3 {
            assert!(
                net.holds(n, &SegmentId::media(f.stream(), 0, seq)),
                "node {n} seq {seq}"
            );
        }
    }
}

/// The same when the offers in flight time out instead of ending.
#[test]
fn a_segment_held_while_every_upload_slot_is_taken_is_offered_once_offers_time_out() {
    let f = Fixture::new(true, "");
    let mut net = publisher_with_full_upload_slots(&f);
    net.held.clear(); // never answered
    let timeout = config().scheduler.transfer_timeout;
    net.advance(timeout + Duration::from_secs(1));
    let offers = offered(&net, 0);
    assert!(offers.contains(&2), "segment 2 never offered: {offers:?}");
}

fn topic_of(header: &VerifiedHeader) -> Topic {
    Topic {
        stream: header.id().stream,
        rendition: header.id().rendition,
    }
}

/// What any honest node rejects from the message alone: no header, too many,
/// a header of another stream or rendition than the topic, one segment
/// twice. Its forwarder is banned; an old header replayed is only ignored
/// (no signature check), and so is a stream not followed.
#[test]
fn malformed_announcements_are_rejected_and_old_ones_ignored_unverified() {
    let f = Fixture::new(true, "");
    let other = Fixture::new_named(true, "", "other");
    let mut net = Net::new(vec![config(); 2]);
    net.follow(1, &f);
    let encode = |headers: Vec<pb::SegmentHeader>| pb::Announce { headers }.encode_to_vec();
    let (h1, _) = f.segment(1, 100);
    let topic = topic_of(&h1);
    let now = net.now;
    let many: Vec<pb::SegmentHeader> = (1..=MAX_ANNOUNCED as u64 + 1)
        .map(|seq| f.segment(seq, 10).0.signed().to_pb())
        .collect();
    let (wrong_rendition, _) = f.segment_of(1, 2, 100);
    let bad = [
        encode(Vec::new()),
        encode(many),
        encode(vec![h1.signed().to_pb(), h1.signed().to_pb()]),
        encode(vec![wrong_rendition.signed().to_pb()]),
        b"\xff\xff\xff".to_vec(),
    ];
    for (peer, data) in bad.iter().enumerate() {
        let peer = peer as u32 + 10;
        assert_eq!(
            net.nodes[1].handle_announce(peer, None, topic, data, now),
            Acceptance::Reject,
            "announcement {peer}"
        );
        assert!(net.nodes[1].is_banned(&peer));
    }
    // Not followed: not ours to judge.
    let (foreign, _) = other.segment(1, 100);
    assert_eq!(
        net.nodes[1].handle_announce(
            2,
            None,
            topic_of(&foreign),
            &encode(vec![foreign.signed().to_pb()]),
            now
        ),
        Acceptance::Ignore
    );
    // A recent header, then one published far outside the live window
    // before it whose signature is broken: ignored without a check (a
    // forged recent one would have been rejected).
    let (recent, _) = f.segment(100, 100);
    assert_eq!(
        net.nodes[1].handle_announce(3, None, topic, &encode(vec![recent.signed().to_pb()]), now),
        Acceptance::Accept
    );
    let mut old = f.segment(2, 100).0.signed().clone();
    old.info.hash[0] ^= 1;
    assert_eq!(
        net.nodes[1].handle_announce(3, None, topic, &encode(vec![old.to_pb()]), now),
        Acceptance::Ignore
    );
    assert!(!net.nodes[1].is_banned(&3) && !net.nodes[1].is_banned(&2));
}

/// A publisher restarted with its origin's numbering: segment 1 again, with
/// other bytes and a newer epoch. Every node replaces what it held of the
/// earlier run with the new one, drops the earlier run's other segments, and
/// ignores the earlier run's headers from then on (validly signed, so
/// nobody is banned for them).
#[test]
fn a_restarted_publishers_new_headers_win() {
    let f = Fixture::new(true, "");
    let mut net = Net::new(vec![config(); 3]);
    for n in 0..3 {
        net.follow(n, &f);
    }
    net.connect(0, 1);
    net.connect(1, 2);
    let run = |epoch: u64, seq: u64, fill: u8| {
        let body = Bytes::from(vec![fill; 300]);
        let header = SegmentInfo::for_body(
            SegmentId::media(f.stream(), 0, seq),
            &body,
            2_000_000,
            (START_S + u64::from(fill)) * 1_000_000,
        )
        .with_epoch(epoch)
        .sign(&f.key)
        .verify(&f.descriptor.stream_key())
        .expect("signed");
        (header, body)
    };
    let first: Vec<_> = (1..=3).map(|seq| run(100, seq, seq as u8)).collect();
    for (header, body) in &first {
        net.nodes[0].inject(header.clone(), body.clone(), net.now);
    }
    net.run();
    assert!((1..3).all(|n| (1..=3).all(|seq| net.holds(n, &first[seq - 1].0.id()))));

    let (again, body) = run(200, 1, 10);
    net.nodes[0].inject(again.clone(), body.clone(), net.now);
    net.run();
    for n in 0..3 {
        let held = net.nodes[n as usize].store().lock().get(&again.id());
        assert_eq!(held.map(|s| s.body), Some(body.clone()), "node {n}");
        for old in &first[1..] {
            assert!(!net.holds(n, &old.0.id()), "node {n} kept {}", old.0.id());
        }
    }

    // The earlier run's headers, offered, announced or listed again, are
    // not current: declined or ignored, and no one is banned.
    let (old2, old2_body) = first[1].clone();
    let now = net.now;
    let reply = net.nodes[2].handle_offer(1, Some(&old2.signed().to_pb()), now);
    assert!(matches!(reply, OfferReply::Decline(_)), "{reply:?}");
    let announce = pb::Announce {
        headers: vec![old2.signed().to_pb()],
    }
    .encode_to_vec();
    let acceptance = net.nodes[2].handle_announce(1, None, topic_of(&old2), &announce, now);
    assert_eq!(acceptance, Acceptance::Ignore);
    net.nodes[0].inject(old2.clone(), old2_body, now);
    net.run();
    for n in 0..3 {
        assert!(!net.holds(n, &old2.id()), "node {n} took the earlier run");
        assert!(net.bans(n).is_empty(), "node {n} banned someone");
    }
}

fn forwards(net: &Net, node: u32) -> Vec<(TransferId, u32)> {
    net.log
        .iter()
        .filter(|(n, _)| *n == node)
        .filter_map(|(_, o)| match o {
            Output::Forward { transfer, peer, .. } => Some((*transfer, *peer)),
            _ => None,
        })
        .collect()
}

fn cancels(net: &Net, node: u32) -> Vec<TransferId> {
    net.log
        .iter()
        .filter(|(n, _)| *n == node)
        .filter_map(|(_, o)| match o {
            Output::Cancel { transfer } => Some(*transfer),
            _ => None,
        })
        .collect()
}

/// A chain 0 → 1 → 2 with 0's push to 1 held back and accepted by hand:
/// returns the net, the segment, and 1's transfer of it.
fn chain_with_a_push_arriving(
    f: &Fixture,
    relay: Config,
) -> (Net, (VerifiedHeader, Bytes), TransferId) {
    let mut net = Net::new(vec![config(), relay, config()]);
    for n in 0..3 {
        net.follow(n, f);
    }
    net.connect(0, 1);
    net.connect(1, 2);
    net.hold = true;
    let (header, body) = f.segment(1, 100_000);
    let now = net.now;
    net.nodes[0].inject(header.clone(), body.clone(), now);
    net.run();
    let offer = header.signed().to_pb();
    let transfer = match net.nodes[1].handle_offer(0, Some(&offer), now) {
        OfferReply::Accept { transfer, .. } => transfer,
        other => panic!("node 1 did not accept: {other:?}"),
    };
    net.held.clear();
    net.run();
    (net, (header, body), transfer)
}

/// Cut-through in the core: a body that starts to arrive is offered on at
/// once to the neighbours that lack it (not back to its sender). When its
/// download fails, the forwards are cancelled, their peers are not held
/// responsible, and once the segment is held they are offered it again.
#[test]
fn a_segment_is_forwarded_while_it_arrives_and_its_forwards_end_with_its_download() {
    let f = Fixture::new(true, "");
    let (mut net, (header, body), transfer) = chain_with_a_push_arriving(&f, config());
    let now = net.now;
    assert!(net.nodes[1].handle_arriving(transfer, header.clone(), now));
    net.run();
    let forwarded = forwards(&net, 1);
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    let (forward, peer) = forwarded[0];
    assert_eq!(peer, 2, "forwarded back to its sender");
    // A second report changes nothing.
    assert!(!net.nodes[1].handle_arriving(transfer, header.clone(), now));

    net.nodes[1].handle_download(transfer, Err(Broken::Failed("reset".into())), now);
    net.run();
    assert!(
        cancels(&net, 1).contains(&forward),
        "the forward outlived its source"
    );
    // The shell reports the cancelled forward; it is nobody's fault.
    net.nodes[1].handle_upload(forward, 2, Err(Broken::Failed("cancelled".into())), now);
    net.run();
    assert!(net.bans(1).is_empty() && net.bans(2).is_empty());

    // Node 1 gets the segment whole after all: node 2 is offered it again.
    net.hold = false;
    let offer = header.signed().to_pb();
    let again = match net.nodes[1].handle_offer(0, Some(&offer), now) {
        OfferReply::Accept { transfer, .. } => transfer,
        other => panic!("node 1 did not accept again: {other:?}"),
    };
    net.nodes[1].handle_download(again, Ok(Some((header.clone(), body))), now);
    net.run();
    assert!(net.holds(2, &header.id()));
    assert_eq!(net.stored(2)[&header.id()], Source::Push(1));
}

/// The switch: without cut-through a node offers only what it holds whole.
#[test]
fn without_cut_through_nothing_is_forwarded_before_it_is_held() {
    let f = Fixture::new(true, "");
    let mut relay = config();
    relay.scheduler.cut_through = false;
    let (mut net, (header, _), transfer) = chain_with_a_push_arriving(&f, relay);
    let now = net.now;
    assert!(!net.nodes[1].handle_arriving(transfer, header, now));
    net.run();
    assert!(forwards(&net, 1).is_empty());
    assert!(offered(&net, 1).is_empty());
}

/// Behind an upload cap, pushes of a live segment run at once only as many
/// as the cap carries at the stream's pace (size over duration): 1.25 MB/s
/// and 1 MB every 2 s is two; 250 kB segments leave `push_parallel` (3)
/// the limit.
#[test]
fn pushes_at_once_are_sized_to_the_upload_cap_and_the_streams_pace() {
    let f = Fixture::new(true, "");
    for (size, expected) in [(1_000_000, 2), (250_000, 3)] {
        let mut publisher = config();
        publisher.scheduler.upload_rate = Some(1_250_000);
        publisher.scheduler.max_upload_bytes = 64 << 20;
        let mut net = Net::new(vec![publisher, config(), config(), config(), config()]);
        for n in 0..5 {
            net.follow(n, &f);
        }
        for n in 1..5 {
            net.connect(0, n);
        }
        net.hold = true;
        let (header, body) = f.segment(1, size);
        let now = net.now;
        net.nodes[0].inject(header, body, now);
        net.run();
        assert_eq!(offered(&net, 0).len(), expected, "{size}-byte segments");
    }
}

/// Parts travel like segments; the segment they make up never travels: each
/// node puts it together from its parts, whichever comes first (the parts or
/// the segment's header).
#[test]
fn a_segment_made_of_parts_is_assembled_at_every_node_and_never_sent() {
    let f = Fixture::new(true, "");
    let mut net = Net::new(vec![config(); 3]);
    for n in 0..3 {
        net.follow(n, &f);
    }
    net.connect(0, 1);
    net.connect(1, 2);
    let (parts, whole) = f.parts(4, 4, 700);
    let id = whole.id();
    // Three parts, then the segment's header (gossiped), then the last part.
    for (header, body) in parts[..3].iter().cloned() {
        net.nodes[0].inject(header, body, net.now);
        net.run();
    }
    let body: Vec<u8> = parts.iter().flat_map(|(_, b)| b.to_vec()).collect();
    net.nodes[0].inject(whole.clone(), Bytes::from(body.clone()), net.now);
    net.run();
    for n in 1..3 {
        assert!(
            !net.holds(n, &id),
            "node {n} cannot have it before its last part"
        );
    }
    let (header, last) = parts[3].clone();
    net.nodes[0].inject(header, last, net.now);
    net.run();
    for n in 1..3 {
        assert_eq!(net.stored(n).get(&id), Some(&Source::Assembled), "node {n}");
        let held = net.nodes[n as usize].store().lock().get(&id).unwrap();
        assert_eq!(held.body, body);
        for part in &parts {
            assert!(matches!(net.stored(n)[&part.0.id()], Source::Push(_)));
        }
    }
    let sent = net.log.iter().any(|(_, o)| match o {
        Output::Push { header, .. } => header.id() == id,
        Output::Pull { id: pulled, .. } => *pulled == id,
        _ => false,
    });
    assert!(!sent, "the whole segment crossed a link");
    assert!((0..3).all(|n| net.bans(n).is_empty()));
}

/// A viewer asking a node for a segment made of parts gets the node to pull
/// the parts it lacks; a header whose parts do not make up its body is a
/// warning, not anyone's misbehaviour.
#[test]
fn demanding_a_segment_made_of_parts_pulls_its_missing_parts() {
    let f = Fixture::new(true, "");
    let mut net = Net::new(vec![config(); 2]);
    net.follow(0, &f);
    let (parts, whole) = f.parts(6, 3, 400);
    for (header, body) in parts.iter().cloned() {
        net.nodes[0].inject(header, body, net.now);
    }
    let body: Vec<u8> = parts.iter().flat_map(|(_, b)| b.to_vec()).collect();
    net.nodes[0].inject(whole.clone(), Bytes::from(body), net.now);
    net.run();
    // Node 1 joins late and learns the headers from node 0's list.
    net.follow(1, &f);
    net.connect(0, 1);
    net.nodes[1].demand(whole.id(), Duration::from_secs(4), net.now);
    net.run();
    net.advance(Duration::from_millis(10));
    assert_eq!(net.stored(1).get(&whole.id()), Some(&Source::Assembled));
    let pulled: Vec<SegmentId> = net
        .log
        .iter()
        .filter_map(|(n, o)| match o {
            Output::Pull { id, .. } if *n == 1 => Some(*id),
            _ => None,
        })
        .collect();
    assert!(
        pulled.iter().all(|id| id.kind == SegmentKind::Part),
        "{pulled:?}"
    );

    // A publisher whose segment header does not match its parts.
    let (parts, _) = f.parts(8, 2, 300);
    let (_, wrong) = f.parts(9, 2, 300);
    let key = f.descriptor.stream_key();
    let mut info = wrong.info().clone();
    info.id = SegmentId::media(f.stream(), 0, 8);
    let wrong = info.sign(&f.key).verify(&key).unwrap();
    let mut net = Net::new(vec![config(); 2]);
    net.follow(0, &f);
    net.follow(1, &f);
    net.connect(0, 1);
    for (header, body) in parts {
        net.nodes[0].inject(header, body, net.now);
    }
    net.run();
    let announce = pb::Announce {
        headers: vec![wrong.signed().to_pb()],
    };
    let topic = Topic {
        stream: f.stream(),
        rendition: 0,
    };
    net.nodes[1].handle_announce(0, Some(0), topic, &announce.encode_to_vec(), net.now);
    net.run();
    assert!(!net.holds(1, &wrong.id()));
    let warned = net.log.iter().any(|(n, o)| {
        *n == 1 && matches!(o, Output::Warning(w) if w.contains("not the concatenation"))
    });
    assert!(warned);
    assert!(net.bans(1).is_empty());
}
