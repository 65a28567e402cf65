//! The segment scheduler: who sends which segment to whom, and when.
//!
//! Sans-I/O: the shell reports what happened (peers, headers, offers,
//! finished transfers) with the current time, and drains [`Action`]s. Time
//! and randomness are passed in, so a seeded simulation of many nodes
//! (`tests` below) runs deterministically.
//!
//! The algorithm, PlumTree-like:
//! - **Eager push.** When a node holds a new segment (injected or received),
//!   it offers the signed header to neighbours not known to hold it,
//!   `push_parallel` at a time, until every neighbour has accepted or
//!   declined. A receiver accepts only if it neither holds nor is already
//!   downloading the segment, so bytes flow at most once to each node; a
//!   decline costs one small frame.
//! - **Lazy pull.** Headers also spread by gossip. A node that knows a header
//!   but has not started receiving the segment `pull_delay` later pulls it from
//!   the best known holder (lowest expected time from measured RTT and
//!   throughput, doubled per recent failure). At most one download of a
//!   segment runs at a time, unless it stalls (three times its expected
//!   time, plus a second): then its peer takes a strike and a second holder
//!   is asked alongside, first to finish wins. One that outlives its
//!   deadline (`transfer_timeout` plus its size at `min_rate`) is cancelled.
//!   A holder with three failures or stalls in a row is benched (not asked)
//!   for 15 s, doubling up to 4 min; a success clears its record. Nobody is
//!   banned for being slow: only bytes that fail verification are held
//!   against a peer, by the mesh core.
//! - **History.** A live segment learned well behind the live edge (a
//!   joiner's catch-up) is pulled one at a time beside the live edge, and
//!   never from the origin unless demanded.
//! - **Deadline.** A segment not held `origin_after` after its header was
//!   learned is fetched from the origin, racing any download in progress: the
//!   one case where two downloads of one segment may run at once.
//!
//! - **On demand and seeding (VOD).** Not every known header is wanted: a
//!   node that follows a VOD knows its whole header index but downloads only
//!   what it seeds ([`Scheduler::seed`]: pulled at once, the origin only after
//!   `seed_origin_after`, since nobody waits for it) and what a viewer asks
//!   for ([`Scheduler::demand`]: pulled at once, the origin at the viewer's
//!   deadline). A demanded segment with no known holder is asked of any
//!   neighbour in turn (a `Want` answered `Absent` costs one round trip).
//!
//! Holders are learned from offers (the offerer holds it), declines ("already
//! have"), completed transfers, the gossip author (the publisher), and header
//! lists requested by late joiners.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use meshcast_proto::pb::DeclineReason;
use meshcast_proto::{SegmentId, StreamId};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Tuning of the scheduler. The defaults suit 1–4 s segments on the open
/// internet; tests shorten them.
#[derive(Debug, Clone)]
pub struct Config {
    /// Offers (and so uploads) of one segment in flight at once.
    pub push_parallel: usize,
    /// How long to wait for a push before pulling a known segment.
    pub pull_delay: Duration,
    /// A transfer gets this long (to connect and start) plus its size at
    /// `min_rate`; running longer, it is cancelled and retried elsewhere.
    /// Never held against the peer: it may just be slow.
    pub transfer_timeout: Duration,
    /// The slowest transfer worth finishing, in bytes per second: see
    /// [`Scheduler::deadline`].
    pub min_rate: u64,
    /// A segment not held this long after its header arrived comes from the origin.
    pub origin_after: Duration,
    /// Concurrent downloads, all segments together.
    pub max_downloads: usize,
    /// Concurrent uploads, all segments together.
    pub max_uploads: usize,
    /// Offer a segment to neighbours while it is still arriving, forwarding
    /// each verified piece at once ([`Scheduler::arriving`]), instead of
    /// after the whole of it is held. Off: store-and-forward, every hop
    /// costs a whole segment's transfer.
    pub cut_through: bool,
    /// Bytes of pushes in flight, all together (one push always may run,
    /// whatever its size). A push's body sits in QUIC's send buffer until
    /// the receiver has read it; more in flight than the uplink carries
    /// buys no speed, only memory (every upload at once on a thin uplink).
    pub max_upload_bytes: u64,
    /// The node's upload cap in bytes per second (`node.max_upload`, set by
    /// [`crate::Config::mesh`]): pushes in flight are bounded by what it
    /// sends before a push's deadline, so none is offered that could not
    /// finish in time behind the others.
    pub upload_rate: Option<u64>,
    /// Concurrent downloads from one peer (pulls and accepted pushes): no
    /// peer takes every download slot, or holds memory for more bodies.
    pub max_downloads_per_peer: usize,
    /// Concurrent origin fetches: a burst of late segments (a stream that
    /// announces much and delivers nothing) does not become a burst of HTTP.
    pub max_origin_fetches: usize,
    /// Bookkeeping of a segment is dropped this long after it was learned.
    pub forget_after: Duration,
    /// A holder a download failed from is tried again after this long
    /// (it may have been busy, or the stream reset).
    pub retry_after: Duration,
    /// A segment being seeded (nobody waits for it) comes from the origin
    /// only if the mesh has not delivered it this long after it was planned.
    pub seed_origin_after: Duration,
}

impl Config {
    /// How long a transfer of `size` bytes may take (see
    /// [`Scheduler::deadline`]).
    pub fn transfer_deadline(&self, size: u64) -> Duration {
        let rate = self.min_rate.max(1) as f64;
        self.transfer_timeout + seconds(size as f64 / rate)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            push_parallel: 3,
            pull_delay: Duration::from_millis(150),
            transfer_timeout: Duration::from_secs(5),
            min_rate: 64 * 1024,
            origin_after: Duration::from_secs(4),
            max_downloads: 16,
            max_uploads: 24,
            cut_through: true,
            max_upload_bytes: 4 << 20,
            upload_rate: None,
            max_downloads_per_peer: 6,
            max_origin_fetches: 8,
            forget_after: Duration::from_secs(300),
            retry_after: Duration::from_secs(1),
            seed_origin_after: Duration::from_secs(60),
        }
    }
}

/// Names one transfer, for [`Scheduler::finished`] and [`Action::Cancel`].
pub type TransferId = u64;

/// What the shell should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Offer the segment to `peer`; send the body if accepted.
    Offer {
        transfer: TransferId,
        peer: P,
        id: SegmentId,
    },
    /// Ask `peer` for the segment.
    Pull {
        transfer: TransferId,
        peer: P,
        id: SegmentId,
    },
    /// Fetch the segment from the origin.
    FetchOrigin { transfer: TransferId, id: SegmentId },
    /// Abandon a transfer: it timed out, or another one already delivered.
    Cancel { transfer: TransferId },
}

/// How a transfer ended, as reported by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The segment was delivered (download: verified and stored).
    Done { bytes: u64, elapsed: Duration },
    /// Our offer was declined.
    Declined(DeclineReason),
    /// The peer does not hold the segment.
    Absent,
    /// The peer holds it but had no upload room: ask again after
    /// `retry_after`, or another holder meanwhile.
    Busy,
    /// Timeout, reset, refused or cancelled.
    Failed,
    /// The peer sent a bad header or bad bytes; the shell bans it.
    Misbehaved,
}

/// The answer to a push offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accept(TransferId),
    Decline(DeclineReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<P> {
    Offer(P),
    Pull(P),
    PushIn(P),
    Origin,
}

#[derive(Debug)]
struct Transfer<P> {
    id: SegmentId,
    kind: Kind<P>,
    /// Cancelled if still running then.
    deadline: Instant,
    /// A download from a peer still running then is stalled (see
    /// [`stall_after`]): its peer takes a strike, and another holder may be
    /// asked, or another push accepted, alongside it.
    stall_at: Option<Instant>,
    stalled: bool,
    /// An offer the peer accepted: its body is in flight and counts in
    /// [`Config::max_upload_bytes`]. Unanswered, it counts only until
    /// `answer_by` (see [`OFFER_ANSWER`]), so offers waiting on a peer gone
    /// silent take no bytes from live ones for long.
    accepted: bool,
    answer_by: Instant,
}

/// Whether, and how urgently, a known segment is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Known (a VOD's header index), not downloaded unless asked for.
    No,
    /// Live: pulled after `pull_delay`, from the origin at `origin_after`.
    Live,
    /// Seeded or demanded: pulled at once, from the origin at `origin_at`.
    Now {
        origin_at: Instant,
        /// Ask neighbours not known to hold it when no holder is left.
        probe: bool,
    },
}

#[derive(Debug)]
struct Segment<P> {
    size: u64,
    learned: Instant,
    want: Want,
    held: bool,
    /// The download whose verified body is arriving and forwarded as it
    /// comes (cut-through, [`Scheduler::arriving`]); offers stream from it.
    arriving: Option<TransferId>,
    holders: PeerSet<P>,
    /// Peers a download from failed at, and when: retried after `retry_after`.
    failed: PeerTimes<P>,
    offered: PeerSet<P>,
    downloads: BTreeSet<TransferId>,
    offers_in_flight: usize,
    origin_tried: bool,
    /// Its key in `origin_queue`, if queued.
    queued_origin: Option<Instant>,
    /// Learned long after it was published: never fetched from the origin
    /// unless demanded (see [`Scheduler::history_learned`]).
    history: bool,
}

#[derive(Debug, Default, Clone)]
struct Peer {
    rtt: Option<Duration>,
    /// Smoothed download throughput from this peer, bytes per second.
    throughput: Option<f64>,
    /// Downloads from it that failed or stalled since its last success.
    strikes: u32,
    /// Not asked for anything before then: it kept failing.
    benched_until: Option<Instant>,
    struck_at: Option<Instant>,
}

impl Peer {
    /// A download from this peer failed or stalled. After `BENCH_AFTER` in a
    /// row it is not pulled from for a while (doubling, up to `BENCH_MAX`):
    /// a holder that announces and never delivers (a Sybil, or an uplink
    /// that cannot keep up) stops costing every segment a timeout. It is not
    /// banned: slow is not dishonest, and it still pushes and is pushed to.
    fn strike(&mut self, now: Instant) {
        // Failures within a second of the last strike are one incident (a
        // burst of transfers that a moment's overload or a reset ended
        // together), not several.
        if self.struck_at.is_some_and(|at| now < at + STRIKE_COALESCE) {
            return;
        }
        self.struck_at = Some(now);
        self.strikes = self.strikes.saturating_add(1);
        if let Some(over) = self.strikes.checked_sub(BENCH_AFTER) {
            let bench = BENCH_FIRST.saturating_mul(1 << over.min(8)).min(BENCH_MAX);
            self.benched_until = Some(now + bench);
        }
    }

    fn succeeded(&mut self) {
        self.strikes = 0;
        self.benched_until = None;
    }

    /// How much worse than its expected time it ranks: each strike doubles it.
    fn penalty(&self) -> f64 {
        f64::from(1u32 << self.strikes.min(16))
    }
}

/// Segments tracked at most (checked once a second): beyond it the oldest
/// with nothing in flight and nobody waiting are forgotten early (a flood of
/// tiny segments would otherwise grow the bookkeeping for `forget_after`).
const MAX_TRACKED: usize = 16_384;

/// Live segments wanted and not held at once, all streams together: the
/// live windows of a few streams of many renditions. Beyond it the oldest
/// are given up (no longer downloaded): a publisher that signs headers
/// faster than they can be fetched would otherwise make every timer of the
/// node scan an ever longer list.
const MAX_LIVE_WANTED: usize = 4096;

/// How often tracked segments are swept for forgetting.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Strikes closer together than this count once.
const STRIKE_COALESCE: Duration = Duration::from_secs(1);

/// Failed downloads in a row that bench a holder, and for how long at first
/// and at most.
const BENCH_AFTER: u32 = 3;
const BENCH_FIRST: Duration = Duration::from_secs(15);
const BENCH_MAX: Duration = Duration::from_secs(240);

/// A few peers, in the order they came. A segment has a handful of holders
/// and offers (its node's neighbours at most): a vector is a fraction of a
/// B-tree's first node (eleven peer ids, about a kilobyte, allocated even
/// for one), and tens of thousands of segments may be tracked.
#[derive(Debug)]
struct PeerSet<P>(Vec<P>);

impl<P> Default for PeerSet<P> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<P: PartialEq + Copy> PeerSet<P> {
    fn insert(&mut self, peer: P) {
        if !self.0.contains(&peer) {
            self.0.push(peer);
        }
    }

    fn remove(&mut self, peer: &P) {
        self.0.retain(|p| p != peer);
    }

    fn contains(&self, peer: &P) -> bool {
        self.0.contains(peer)
    }

    fn iter(&self) -> std::slice::Iter<'_, P> {
        self.0.iter()
    }
}

/// Peers with a time each (when a download from them failed), as small as
/// [`PeerSet`].
#[derive(Debug)]
struct PeerTimes<P>(Vec<(P, Instant)>);

impl<P> Default for PeerTimes<P> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<P: PartialEq + Copy> PeerTimes<P> {
    fn insert(&mut self, peer: P, at: Instant) {
        match self.0.iter_mut().find(|(p, _)| *p == peer) {
            Some(entry) => entry.1 = at,
            None => self.0.push((peer, at)),
        }
    }

    fn get(&self, peer: &P) -> Option<&Instant> {
        self.0.iter().find(|(p, _)| p == peer).map(|(_, at)| at)
    }

    fn contains_key(&self, peer: &P) -> bool {
        self.get(peer).is_some()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Assumed when a peer has not been measured yet: optimistic enough to try it.
const DEFAULT_THROUGHPUT: f64 = 10e6;
const DEFAULT_RTT: Duration = Duration::from_millis(50);

/// See the module docs.
#[derive(Debug)]
pub struct Scheduler<P> {
    config: Config,
    peers: BTreeMap<P, Peer>,
    segments: BTreeMap<SegmentId, Segment<P>>,
    transfers: BTreeMap<TransferId, Transfer<P>>,
    next_transfer: TransferId,
    actions: VecDeque<Action<P>>,
    /// Held segments with neighbours still to offer them to that found
    /// every upload slot taken, by when they were learned: the newest gets
    /// the next free slot.
    starved: BTreeSet<(Instant, SegmentId)>,
    /// Segments wanted and not held: the only ones timers act on. Kept
    /// apart so that a timer costs what is in flight, not everything tracked
    /// (a VOD's whole index, a flood of tiny segments).
    wanted: BTreeSet<SegmentId>,
    /// The live ones among them, oldest first: at most `MAX_LIVE_WANTED`.
    live: BTreeSet<(Instant, SegmentId)>,
    /// Wanted segments not yet asked of the origin, by when they will be.
    origin_queue: BTreeSet<(Instant, SegmentId)>,
    /// When tracked segments are next swept for forgetting.
    next_sweep: Option<Instant>,
    /// The segment duration of each live stream followed (see
    /// [`Scheduler::pace`]).
    paces: BTreeMap<StreamId, Duration>,
    rng: StdRng,
}

impl<P: Copy + Ord + std::fmt::Debug> Scheduler<P> {
    pub fn new(config: Config, seed: u64) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
            segments: BTreeMap::new(),
            transfers: BTreeMap::new(),
            next_transfer: 1,
            actions: VecDeque::new(),
            starved: BTreeSet::new(),
            wanted: BTreeSet::new(),
            live: BTreeSet::new(),
            origin_queue: BTreeSet::new(),
            next_sweep: None,
            paces: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A live stream's segments last `segment` each (`None`: not live, or
    /// no longer followed). Behind an upload cap ([`Config::upload_rate`]),
    /// a push of one of them must move at least at its own pace (its size
    /// over its duration), else it ends after the next segment is due and
    /// slows every push beside it: pushes run at once only as many as the
    /// cap carries at that pace (one at least). With cut-through that keeps
    /// a forwarding tree narrow and fast instead of wide and late.
    pub fn pace(&mut self, stream: StreamId, segment: Option<Duration>) {
        match segment {
            Some(d) => self.paces.insert(stream, d),
            None => self.paces.remove(&stream),
        };
    }

    /// A new neighbour. It is offered segments that arrive from now on; what
    /// it missed it pulls (a late joiner asks for header lists), which keeps a
    /// new connection from setting off a burst of offers.
    pub fn peer_connected(&mut self, peer: P) {
        self.peers.entry(peer).or_default();
    }

    /// Forgets the peer. Its transfers must still be reported as finished.
    pub fn peer_disconnected(&mut self, peer: P) {
        self.peers.remove(&peer);
        for seg in self.segments.values_mut() {
            seg.holders.remove(&peer);
        }
    }

    pub fn rtt(&mut self, peer: P, rtt: Duration) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.rtt = Some(rtt);
        }
    }

    pub fn is_held(&self, id: &SegmentId) -> bool {
        self.segments.get(id).is_some_and(|s| s.held)
    }

    /// A header of a live segment was learned (gossip, a header list, an
    /// offer): it is wanted. `holder` is a peer known to hold the body, if any.
    pub fn header_learned(&mut self, id: SegmentId, size: u64, holder: Option<P>, now: Instant) {
        let seg = self.entry(id, size, now);
        if seg.want == Want::No {
            seg.want = Want::Live;
        }
        if let Some(peer) = holder {
            seg.holders.insert(peer);
        }
        self.refresh(id);
    }

    /// A live header learned well behind the live edge (a node that joined
    /// catching up its window, or a straggler): pulled from the mesh like
    /// any live one, but from the origin only if a viewer demands it.
    /// Nobody waits for it, and on thin uplinks a joiner's whole window
    /// would otherwise come from the origin after `origin_after`.
    pub fn history_learned(&mut self, id: SegmentId, size: u64, holder: Option<P>, now: Instant) {
        let seg = self.entry(id, size, now);
        if seg.want == Want::No {
            seg.history = true;
        }
        self.header_learned(id, size, holder, now);
    }

    /// Keeps `id`'s membership of `wanted` true to its state.
    fn refresh(&mut self, id: SegmentId) {
        let Some(s) = self.segments.get_mut(&id) else {
            self.wanted.remove(&id);
            return;
        };
        let wanted = !s.held && s.want != Want::No;
        if wanted {
            self.wanted.insert(id);
        } else {
            self.wanted.remove(&id);
        }
        if wanted && s.want == Want::Live {
            self.live.insert((s.learned, id));
        } else {
            self.live.remove(&(s.learned, id));
        }
        let origin = origin_time(&self.config, s).filter(|_| wanted && !s.origin_tried);
        if s.queued_origin != origin {
            if let Some(old) = s.queued_origin {
                self.origin_queue.remove(&(old, id));
            }
            if let Some(at) = origin {
                self.origin_queue.insert((at, id));
            }
            s.queued_origin = origin;
        }
        while self.live.len() > MAX_LIVE_WANTED {
            let Some((_, oldest)) = self.live.pop_first() else {
                break;
            };
            self.wanted.remove(&oldest);
            if let Some(seg) = self.segments.get_mut(&oldest) {
                seg.want = Want::No;
                if let Some(at) = seg.queued_origin.take() {
                    self.origin_queue.remove(&(at, oldest));
                }
            }
        }
    }

    /// A header was learned that is not wanted (yet): a VOD's header index.
    /// Its holders are remembered for when it is demanded.
    pub fn header_known(&mut self, id: SegmentId, size: u64, holder: Option<P>, now: Instant) {
        let seg = self.entry(id, size, now);
        if let Some(peer) = holder {
            seg.holders.insert(peer);
        }
    }

    /// The node seeds this segment: download it now from the mesh, and from
    /// the origin only if the mesh fails for `seed_origin_after`.
    pub fn seed(&mut self, id: SegmentId, size: u64, now: Instant) {
        let origin_at = now + self.config.seed_origin_after;
        self.want_now(id, size, origin_at, false, now);
    }

    /// A viewer needs this segment by `deadline`: download it now from a
    /// holder (any neighbour, in turn, when no holder is known), and from the
    /// origin at `deadline` if it has not arrived. `size` may be 0 when the
    /// header is not known yet (a pull brings it).
    pub fn demand(&mut self, id: SegmentId, size: u64, deadline: Instant, now: Instant) {
        self.want_now(id, size, deadline, true, now);
        self.schedule_download(id, now);
    }

    /// The store dropped the segment: it is no longer held, nor wanted.
    pub fn evicted(&mut self, id: &SegmentId) {
        if let Some(seg) = self.segments.get_mut(id) {
            seg.held = false;
            seg.want = Want::No;
            seg.origin_tried = false;
        }
        self.refresh(*id);
    }

    /// A restarted publisher superseded the segment: what is known of it
    /// (who holds it, who was offered it, who failed) was about other
    /// bytes under the same id. Transfers in flight end as they will.
    pub fn superseded(&mut self, id: &SegmentId) {
        if let Some(seg) = self.segments.get_mut(id) {
            seg.holders = PeerSet::default();
            seg.offered = PeerSet::default();
            seg.failed = PeerTimes::default();
        }
        self.evicted(id);
    }

    fn want_now(
        &mut self,
        id: SegmentId,
        size: u64,
        origin_at: Instant,
        probe: bool,
        now: Instant,
    ) {
        let seg = self.entry(id, size, now);
        if seg.held {
            return;
        }
        seg.size = seg.size.max(size);
        seg.want = match seg.want {
            Want::Now {
                origin_at: before,
                probe: probing,
            } => Want::Now {
                origin_at: before.min(origin_at),
                probe: probing || probe,
            },
            _ => Want::Now { origin_at, probe },
        };
        if probe && seg.downloads.is_empty() {
            // A viewer is waiting: peers and the origin that failed before
            // get another try.
            seg.failed.clear();
            seg.origin_tried = false;
        }
        self.refresh(id);
    }

    fn entry(&mut self, id: SegmentId, size: u64, now: Instant) -> &mut Segment<P> {
        self.segments.entry(id).or_insert_with(|| Segment {
            size,
            learned: now,
            want: Want::No,
            held: false,
            arriving: None,
            holders: PeerSet::default(),
            failed: PeerTimes::default(),
            offered: PeerSet::default(),
            downloads: BTreeSet::new(),
            offers_in_flight: 0,
            origin_tried: false,
            queued_origin: None,
            history: false,
        })
    }

    /// The segment is now held locally (injected by the publisher, or
    /// restored): start pushing it.
    pub fn held(&mut self, id: SegmentId, size: u64, now: Instant) {
        self.header_learned(id, size, None, now);
        self.mark_held(id, now);
    }

    /// Download `transfer` verified its header and its body has started to
    /// arrive, each piece verified as it comes: with
    /// [`Config::cut_through`], offer the segment to neighbours now and
    /// stream them the pieces as they arrive. Should the download fail,
    /// those offers are cancelled ([`Action::Cancel`]) and their peers may
    /// be offered the segment again once it is held.
    ///
    /// True if offers now stream from this download: false without
    /// cut-through, for a transfer over, or while another download of the
    /// segment is the one forwarded (the first to arrive is).
    pub fn arriving(&mut self, transfer: TransferId, now: Instant) -> bool {
        if !self.config.cut_through {
            return false;
        }
        let Some(t) = self.transfers.get(&transfer) else {
            return false;
        };
        if matches!(t.kind, Kind::Offer(_)) {
            return false;
        }
        let id = t.id;
        match self.segments.get_mut(&id) {
            Some(seg) if !seg.held && seg.arriving.is_none() => seg.arriving = Some(transfer),
            _ => return false,
        }
        self.pump_offers(id, now);
        true
    }

    /// The download the segment is arriving through, that offers stream
    /// from (see [`Scheduler::arriving`]).
    pub fn arriving_through(&self, id: &SegmentId) -> Option<TransferId> {
        self.segments.get(id).and_then(|s| s.arriving)
    }

    /// A download ended without the segment: if offers were streaming from
    /// it, they end too. Their peers did nothing wrong and lack the segment:
    /// they may be offered it again.
    fn source_lost(&mut self, id: SegmentId, transfer: TransferId) {
        let Some(seg) = self.segments.get_mut(&id) else {
            return;
        };
        if seg.arriving != Some(transfer) {
            return;
        }
        seg.arriving = None;
        let forwarding: Vec<(TransferId, P)> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.id == id)
            .filter_map(|(tid, t)| match t.kind {
                Kind::Offer(peer) => Some((*tid, peer)),
                _ => None,
            })
            .collect();
        for (offer, peer) in forwarding {
            self.transfers.remove(&offer);
            self.actions.push_back(Action::Cancel { transfer: offer });
            if let Some(seg) = self.segments.get_mut(&id) {
                seg.offers_in_flight = seg.offers_in_flight.saturating_sub(1);
                seg.offered.remove(&peer);
            }
        }
    }

    /// A peer offers a segment. Accept only what is neither held nor being
    /// downloaded, so no node receives the same bytes twice.
    pub fn offered(&mut self, id: SegmentId, size: u64, from: P, now: Instant) -> Decision {
        self.header_learned(id, size, Some(from), now);
        let active = self.active_downloads();
        let Some(seg) = self.segments.get(&id) else {
            return Decision::Decline(DeclineReason::NotWanted);
        };
        if seg.held {
            return Decision::Decline(DeclineReason::AlreadyHave);
        }
        if self.busy(seg) {
            return Decision::Decline(DeclineReason::InFlight);
        }
        if active >= self.config.max_downloads
            || self.downloads_from(&from) >= self.config.max_downloads_per_peer
        {
            return Decision::Decline(DeclineReason::Busy);
        }
        let transfer = self.start(id, Kind::PushIn(from), now);
        Decision::Accept(transfer)
    }

    /// Reports the end of a transfer started by an [`Action`] or an accepted offer.
    /// The peer accepted offer `transfer`: its body is now in flight.
    /// False if the transfer is over (cancelled meanwhile).
    pub fn accepted(&mut self, transfer: TransferId) -> bool {
        match self.transfers.get_mut(&transfer) {
            Some(t) if matches!(t.kind, Kind::Offer(_)) => {
                t.accepted = true;
                true
            }
            _ => false,
        }
    }

    pub fn finished(&mut self, transfer: TransferId, outcome: Outcome, now: Instant) {
        let Some(t) = self.transfers.remove(&transfer) else {
            return;
        };
        tracing::trace!(transfer, id = %t.id, kind = ?t.kind, ?outcome, "transfer ends");
        let Some(seg) = self.segments.get_mut(&t.id) else {
            return;
        };
        match t.kind {
            Kind::Offer(peer) => {
                seg.offers_in_flight = seg.offers_in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Done { .. } | Outcome::Declined(DeclineReason::AlreadyHave) => {
                        seg.holders.insert(peer);
                    }
                    // A cut-through offer whose source failed: the peer
                    // lacks the segment through no fault of its own.
                    Outcome::Failed if !seg.held => {
                        seg.offered.remove(&peer);
                    }
                    _ => {}
                }
                self.queue_offers(t.id);
                self.pump_starved(now);
            }
            Kind::Pull(peer) | Kind::PushIn(peer) => {
                seg.downloads.remove(&transfer);
                if !matches!(outcome, Outcome::Done { .. }) {
                    self.source_lost(t.id, transfer);
                }
                let Some(seg) = self.segments.get_mut(&t.id) else {
                    return;
                };
                match outcome {
                    Outcome::Done { bytes, elapsed } => {
                        seg.holders.insert(peer);
                        if let Some(p) = self.peers.get_mut(&peer) {
                            if bytes >= MEASURABLE {
                                let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-4);
                                p.throughput =
                                    Some(p.throughput.map_or(rate, |old| 0.7 * old + 0.3 * rate));
                            }
                            p.succeeded();
                        }
                        self.mark_held(t.id, now);
                    }
                    Outcome::Absent => {
                        seg.holders.remove(&peer);
                        seg.failed.insert(peer, now);
                    }
                    // Slowness is not misbehaviour: no strike.
                    Outcome::Busy => {
                        seg.failed.insert(peer, now);
                    }
                    _ => {
                        seg.failed.insert(peer, now);
                        if let Some(p) = self.peers.get_mut(&peer)
                            && !t.stalled
                        {
                            p.strike(now);
                        }
                    }
                }
            }
            Kind::Origin => {
                seg.downloads.remove(&transfer);
                if matches!(outcome, Outcome::Done { .. }) {
                    self.mark_held(t.id, now);
                } else {
                    self.source_lost(t.id, transfer);
                }
            }
        }
        self.tick(now);
    }

    /// Runs timers: pulls, timeouts, origin fallback. Call at
    /// [`next_wakeup`](Self::next_wakeup) or after any report.
    pub fn tick(&mut self, now: Instant) {
        self.expire(now);
        self.mark_stalled(now);
        // Origin deadlines, in order, as far as fetches may start.
        let room = self
            .config
            .max_origin_fetches
            .saturating_sub(self.origin_fetches());
        let origin_due: Vec<SegmentId> = self
            .origin_queue
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(room)
            .map(|(_, id)| *id)
            .collect();
        for id in origin_due {
            self.schedule_download(id, now);
        }
        // Pulls, only while one could start: with every download slot (or
        // every holder's share) taken, the end of a download calls this
        // again, and a backlog of thousands costs nothing meanwhile.
        if self.pull_room(now) {
            let due: Vec<SegmentId> = self
                .wanted
                .iter()
                .filter_map(|id| self.segments.get(id).map(|s| (id, s)))
                .filter(|(_, s)| {
                    self.pull_at(s).is_some_and(|at| now >= at)
                        && !self.busy(s)
                        && !self.history_waits(s)
                })
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                if !self.pull_room(now) {
                    break;
                }
                self.schedule_download(id, now);
            }
        }
        if self.next_sweep.is_none_or(|at| at <= now) {
            self.sweep(now);
        }
    }

    /// Forgets what was learned more than `forget_after` ago (at most once
    /// a second: a report may come every millisecond).
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = Some(now + SWEEP_INTERVAL);
        let forget = self.config.forget_after;
        // Seeded and demanded segments stay until they arrive: nobody would
        // ask for them again.
        self.segments.retain(|_, s| {
            now.saturating_duration_since(s.learned) < forget
                || !s.downloads.is_empty()
                || (!s.held && matches!(s.want, Want::Now { .. }))
        });
        if self.segments.len() > MAX_TRACKED {
            self.forget_oldest(MAX_TRACKED / 10 * 9);
        }
        let segments = &self.segments;
        self.wanted.retain(|id| segments.contains_key(id));
        self.live.retain(|(_, id)| segments.contains_key(id));
        self.origin_queue
            .retain(|(_, id)| segments.contains_key(id));
    }

    /// Forgets segments with nothing in flight and nobody waiting for them
    /// (held, known, or live), oldest first, until at most `keep` are
    /// tracked or none such is left. A forgotten held segment is no longer
    /// offered to neighbours that missed it (they pull); a forgotten live one
    /// was too old to matter.
    fn forget_oldest(&mut self, keep: usize) {
        let mut idle: Vec<(Instant, SegmentId)> = self
            .segments
            .iter()
            .filter(|(_, s)| {
                s.downloads.is_empty()
                    && s.offers_in_flight == 0
                    && !matches!(s.want, Want::Now { .. })
            })
            .map(|(id, s)| (s.learned, *id))
            .collect();
        idle.sort_unstable();
        let excess = self.segments.len().saturating_sub(keep);
        for (_, id) in idle.into_iter().take(excess) {
            self.segments.remove(&id);
        }
    }

    /// When a wanted segment is first pulled.
    fn pull_at(&self, s: &Segment<P>) -> Option<Instant> {
        match s.want {
            Want::No => None,
            Want::Live => Some(s.learned + self.config.pull_delay),
            Want::Now { .. } => Some(s.learned),
        }
    }

    /// When a wanted segment not held yet is fetched from the origin.
    fn origin_at(&self, s: &Segment<P>) -> Option<Instant> {
        origin_time(&self.config, s)
    }

    /// The next time [`tick`](Self::tick) has something to do, if any. Never
    /// a time in the past unless a tick at `now` would act, so a shell that
    /// sleeps until then does not spin.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let starved = !self.starved.is_empty();
        let timeouts = self.transfers.values().flat_map(|t| {
            let stall = t.stall_at.filter(|_| !t.stalled);
            // An offer unanswered past its time frees its bytes for a
            // segment waiting for room.
            let unanswered = matches!(t.kind, Kind::Offer(_)) && !t.accepted && starved;
            let answer = Some(t.answer_by).filter(|at| unanswered && *at > now);
            [Some(t.deadline), stall, answer].into_iter().flatten()
        });
        let origin_room = self.origin_fetches() < self.config.max_origin_fetches;
        // At the origin fetch limit, a finished fetch wakes the next.
        let origin = self
            .origin_queue
            .first()
            .map(|(at, _)| *at)
            .filter(|at| origin_room || *at > now);
        let benches = self
            .peers
            .values()
            .filter_map(|p| p.benched_until)
            .filter(|at| *at > now)
            .min();
        let room = self.pull_room(now);
        let wanted = self
            .wanted
            .iter()
            .filter(|_| room)
            .filter_map(|id| self.segments.get(id));
        let segments = wanted.flat_map(|s| match self.pull_at(s) {
            None => None,
            // A history segment waiting for its turn is woken for by the
            // end of the history download before it.
            Some(_) if self.busy(s) || self.history_waits(s) => None,
            Some(pull_at) if pull_at > now => Some(pull_at),
            Some(_) => {
                // When the first connected holder may be tried (again).
                // A holder at its download limit is woken for by the
                // end of one of its downloads, not by the clock.
                let holder = s
                    .holders
                    .iter()
                    .filter(|p| !self.downloading_from(s, p))
                    .filter_map(|p| self.ready_at(s, p, now))
                    .min();
                holder.or_else(|| self.probe_candidate(s).map(|_| now))
            }
        });
        let segments = segments.chain(origin).chain(benches);
        timeouts.chain(segments).min()
    }

    /// Whether a pull could start now: a download slot free, and a peer
    /// not benched with its share of downloads not taken.
    fn pull_room(&self, now: Instant) -> bool {
        self.active_downloads() < self.config.max_downloads
            && self.peers.iter().any(|(p, stats)| {
                stats.benched_until.is_none_or(|at| at <= now)
                    && self.downloads_from(p) < self.config.max_downloads_per_peer
            })
    }

    /// A download of the segment is under way that is worth waiting for: one
    /// not stalled, or already two from peers (a stalled one and its stand-in).
    fn busy(&self, s: &Segment<P>) -> bool {
        let running = s.downloads.iter().filter_map(|t| self.transfers.get(t));
        let mut from_peers = 0;
        for t in running {
            if !t.stalled {
                return true;
            }
            from_peers += 1;
        }
        from_peers >= 2
    }

    /// A history segment (nobody waits for it) not demanded waits while
    /// [`HISTORY_DOWNLOADS`] others are downloading: a joiner's catch-up
    /// of the live window would otherwise take every download slot and
    /// its holders' uplinks at once, and the live edge, due at once, would
    /// come late or from the origin.
    fn history_waits(&self, s: &Segment<P>) -> bool {
        if !(s.history && s.want == Want::Live) {
            return false;
        }
        let running = self
            .transfers
            .values()
            .filter(|t| matches!(t.kind, Kind::Pull(_)))
            .filter_map(|t| self.segments.get(&t.id))
            .filter(|other| other.history && other.want == Want::Live)
            .count();
        running >= HISTORY_DOWNLOADS
    }

    fn downloading_from(&self, s: &Segment<P>, peer: &P) -> bool {
        s.downloads.iter().any(|t| {
            self.transfers
                .get(t)
                .is_some_and(|t| matches!(t.kind, Kind::Pull(p) | Kind::PushIn(p) if p == *peer))
        })
    }

    /// Downloads past their stall time: their peer takes a strike (once),
    /// and the segment may be asked of another holder alongside.
    fn mark_stalled(&mut self, now: Instant) {
        let mut stalled = Vec::new();
        for t in self.transfers.values_mut() {
            if !t.stalled && t.stall_at.is_some_and(|at| at <= now) {
                tracing::trace!(id = %t.id, kind = ?t.kind, "transfer stalled");
                t.stalled = true;
                if let Kind::Pull(p) | Kind::PushIn(p) = t.kind {
                    stalled.push(p);
                }
            }
        }
        for peer in stalled {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.strike(now);
            }
        }
    }

    /// When `peer`, a holder of `s`, may be asked for it: not before a failed
    /// download from it is `retry_after` old, nor while it is benched
    /// ([`Peer::strike`]); never while it is gone or at its download limit.
    fn ready_at(&self, s: &Segment<P>, peer: &P, now: Instant) -> Option<Instant> {
        let stats = self.peers.get(peer)?;
        if self.downloads_from(peer) >= self.config.max_downloads_per_peer {
            return None;
        }
        let retry = s.failed.get(peer).map(|at| *at + self.config.retry_after);
        [Some(now), retry, stats.benched_until]
            .into_iter()
            .flatten()
            .max()
    }

    /// A neighbour to ask for a demanded segment no known holder can serve:
    /// one not asked yet since the demand.
    fn probe_candidate(&self, s: &Segment<P>) -> Option<P> {
        if !matches!(s.want, Want::Now { probe: true, .. }) {
            return None;
        }
        self.peers
            .keys()
            .find(|p| {
                !s.failed.contains_key(p) && !s.holders.contains(p) && !self.downloading_from(s, p)
            })
            .copied()
    }

    /// The next action for the shell to perform.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    fn active_downloads(&self) -> usize {
        self.transfers
            .values()
            .filter(|t| !matches!(t.kind, Kind::Offer(_)))
            .count()
    }

    fn downloads_from(&self, peer: &P) -> usize {
        self.transfers
            .values()
            .filter(|t| matches!(t.kind, Kind::Pull(p) | Kind::PushIn(p) if p == *peer))
            .count()
    }

    fn origin_fetches(&self) -> usize {
        self.transfers
            .values()
            .filter(|t| t.kind == Kind::Origin)
            .count()
    }

    fn active_uploads(&self) -> usize {
        self.transfers
            .values()
            .filter(|t| matches!(t.kind, Kind::Offer(_)))
            .count()
    }

    /// Bytes of the pushes in flight: accepted offers, and offers still
    /// within their time to answer.
    fn upload_bytes(&self, now: Instant) -> u64 {
        self.transfers
            .values()
            .filter(|t| matches!(t.kind, Kind::Offer(_)) && (t.accepted || now < t.answer_by))
            .filter_map(|t| self.segments.get(&t.id))
            .map(|s| s.size)
            .sum()
    }

    /// Pushes of `size` bytes that may start now: within the upload slots
    /// and the bytes in flight (one, if none is in flight).
    fn upload_room(&self, id: &SegmentId, size: u64, now: Instant) -> usize {
        let uploads = self.active_uploads();
        let slots = self.config.max_uploads.saturating_sub(uploads);
        let in_flight = self.upload_bytes(now);
        let bytes = self.config.max_upload_bytes.saturating_sub(in_flight);
        let by_bytes = usize::try_from(bytes / size.max(1)).unwrap_or(usize::MAX);
        // Behind the cap, each push must start soon and end in time, queued
        // behind the ones before it (see `crate::uplink`).
        let by_rate = match self.config.upload_rate {
            Some(rate) => {
                let deadline = self.config.transfer_deadline(size);
                (0..slots)
                    .take_while(|&n| {
                        let before = in_flight.saturating_add(size.saturating_mul(n as u64));
                        crate::uplink::fits(rate, before, size, deadline)
                    })
                    .count()
            }
            None => usize::MAX,
        };
        let by_pace = match (self.config.upload_rate, self.paces.get(&id.stream)) {
            (Some(rate), Some(segment)) if size > 0 => {
                let pace = size as f64 / segment.as_secs_f64().max(1e-3);
                let at_once = ((rate as f64 / pace).floor() as usize).max(1);
                // Offers not answered yet count too: counting only bodies
                // in flight let more be accepted than the cap carries at
                // the pace (1,000 simulated nodes: p95 4.6 s and 42 % from
                // the origin, against 2.6 s and none).
                at_once.saturating_sub(uploads)
            }
            _ => usize::MAX,
        };
        let room = by_bytes.min(by_rate).min(by_pace);
        // One push always may run, whatever its size.
        let room = if uploads == 0 { room.max(1) } else { room };
        slots.min(room)
    }

    /// When a transfer of `size` bytes started at `now` is given up: judged
    /// by the rate it needs, not by a fixed time, so that a large segment on
    /// a thin uplink is not cut off (and its bytes wasted) just for being
    /// large.
    pub fn deadline(&self, size: u64, now: Instant) -> Instant {
        now + self.config.transfer_deadline(size)
    }

    fn start(&mut self, id: SegmentId, kind: Kind<P>, now: Instant) -> TransferId {
        let transfer = self.next_transfer;
        self.next_transfer += 1;
        let size = self.segments.get(&id).map_or(0, |s| s.size);
        let deadline = self.deadline(size, now);
        let stall_at = match kind {
            Kind::Pull(p) | Kind::PushIn(p) => {
                let stats = self.peers.get(&p).cloned().unwrap_or_default();
                Some(now + stall_after(&stats, size))
            }
            Kind::Offer(_) | Kind::Origin => None,
        };
        tracing::trace!(transfer, %id, ?kind, "transfer starts");
        self.transfers.insert(
            transfer,
            Transfer {
                id,
                kind,
                deadline,
                stall_at,
                stalled: false,
                accepted: false,
                answer_by: now + OFFER_ANSWER,
            },
        );
        if let Some(seg) = self.segments.get_mut(&id) {
            match kind {
                Kind::Offer(_) => seg.offers_in_flight += 1,
                _ => {
                    seg.downloads.insert(transfer);
                }
            }
        }
        transfer
    }

    fn mark_held(&mut self, id: SegmentId, now: Instant) {
        let Some(seg) = self.segments.get_mut(&id) else {
            return;
        };
        if seg.held {
            return;
        }
        seg.held = true;
        // Offers streaming from the arriving download go on: the shell
        // completes them from the held body.
        seg.arriving = None;
        // A racing download (origin vs. peer) is no longer needed.
        for transfer in std::mem::take(&mut seg.downloads) {
            self.transfers.remove(&transfer);
            self.actions.push_back(Action::Cancel { transfer });
        }
        self.refresh(id);
        self.pump_offers(id, now);
    }

    /// Offers a held segment to neighbours not known to hold it.
    fn pump_offers(&mut self, id: SegmentId, now: Instant) {
        let Some(seg) = self.segments.get(&id) else {
            return;
        };
        let slots = self.upload_room(&id, seg.size, now);
        if !seg.held && seg.arriving.is_none() {
            return;
        }
        let mut candidates: Vec<P> = self
            .peers
            .keys()
            .filter(|p| !seg.holders.contains(p) && !seg.offered.contains(p))
            .copied()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let room = self
            .config
            .push_parallel
            .saturating_sub(seg.offers_in_flight)
            .min(slots);
        if room < candidates.len() && slots <= room {
            // Out of upload slots, not out of its own parallelism: nothing
            // of its own will call it back, so it waits for any slot.
            self.starved.insert((seg.learned, id));
        }
        candidates.shuffle(&mut self.rng);
        candidates.truncate(room);
        for peer in candidates {
            if let Some(seg) = self.segments.get_mut(&id) {
                seg.offered.insert(peer);
            }
            let transfer = self.start(id, Kind::Offer(peer), now);
            self.actions.push_back(Action::Offer { transfer, peer, id });
        }
    }

    /// A held segment may have neighbours left to offer it to: it takes its
    /// turn for the next free slot, newest first.
    fn queue_offers(&mut self, id: SegmentId) {
        if let Some(seg) = self.segments.get(&id)
            && (seg.held || seg.arriving.is_some())
        {
            self.starved.insert((seg.learned, id));
        }
    }

    /// Upload slots freed: the segments that waited for one get them, newest
    /// first (a segment that became held while every slot was taken would
    /// otherwise never be offered: with its announcement lost, nobody would
    /// learn of it).
    fn pump_starved(&mut self, now: Instant) {
        while self.active_uploads() < self.config.max_uploads {
            let Some(entry) = self.starved.pop_last() else {
                break;
            };
            let before = self.active_uploads();
            self.pump_offers(entry.1, now);
            if self.active_uploads() == before && self.starved.contains(&entry) {
                // No room for it (its bytes do not fit yet): wait for the
                // next upload to end.
                break;
            }
        }
    }

    fn schedule_download(&mut self, id: SegmentId, now: Instant) {
        let active = self.active_downloads();
        let Some(seg) = self.segments.get(&id) else {
            return;
        };
        if seg.held {
            return;
        }
        let deadline_passed = self.origin_at(seg).is_some_and(|at| now >= at);
        let origin_room = self.origin_fetches() < self.config.max_origin_fetches;
        if deadline_passed && !seg.origin_tried && origin_room {
            if let Some(seg) = self.segments.get_mut(&id) {
                seg.origin_tried = true;
            }
            self.refresh(id);
            let transfer = self.start(id, Kind::Origin, now);
            self.actions.push_back(Action::FetchOrigin { transfer, id });
            return;
        }
        if self.busy(seg) || active >= self.config.max_downloads || self.history_waits(seg) {
            return;
        }
        let size = seg.size;
        let best = seg
            .holders
            .iter()
            .filter(|p| self.ready_at(seg, p, now).is_some_and(|at| at <= now))
            .filter(|p| !self.downloading_from(seg, p))
            .filter_map(|p| {
                self.peers
                    .get(p)
                    .map(|stats| (*p, expected_time(stats, size) * stats.penalty()))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(p, _)| p)
            .or_else(|| self.probe_candidate(seg));
        if let Some(peer) = best {
            let transfer = self.start(id, Kind::Pull(peer), now);
            self.actions.push_back(Action::Pull { transfer, peer, id });
        }
    }

    fn expire(&mut self, now: Instant) {
        let expired: Vec<TransferId> = self
            .transfers
            .iter()
            .filter(|(_, t)| now >= t.deadline)
            .map(|(id, _)| *id)
            .collect();
        let mut freed = Vec::new();
        for transfer in expired {
            tracing::trace!(transfer, "transfer past its deadline: cancelled");
            self.actions.push_back(Action::Cancel { transfer });
            // Reported as failed right away; a late report of the same id is ignored.
            let Some(t) = self.transfers.remove(&transfer) else {
                continue;
            };
            if !matches!(t.kind, Kind::Offer(_)) {
                self.source_lost(t.id, transfer);
            }
            if let Some(seg) = self.segments.get_mut(&t.id) {
                match t.kind {
                    Kind::Offer(_) => {
                        seg.offers_in_flight = seg.offers_in_flight.saturating_sub(1);
                        freed.push(t.id);
                    }
                    Kind::Pull(peer) | Kind::PushIn(peer) => {
                        seg.downloads.remove(&transfer);
                        seg.failed.insert(peer, now);
                        if let Some(p) = self.peers.get_mut(&peer)
                            && !t.stalled
                        {
                            p.strike(now);
                        }
                    }
                    Kind::Origin => {
                        seg.downloads.remove(&transfer);
                    }
                }
            }
        }
        // An offer that timed out frees a slot like one that ended.
        for id in freed {
            self.queue_offers(id);
        }
        self.pump_starved(now);
    }
}

/// When a segment not held is fetched from the origin, by how it is wanted.
fn origin_time<P>(config: &Config, s: &Segment<P>) -> Option<Instant> {
    match s.want {
        Want::No => None,
        Want::Live if s.history => None,
        Want::Live => Some(s.learned + config.origin_after),
        Want::Now { origin_at, .. } => Some(origin_at),
    }
}

/// How long a download from `peer` may run before it counts as stalled:
/// three times its expected time, plus a second for a busy uplink or a slow
/// start. A stalled download goes on (it may still finish first); it only
/// stops blocking a second source. A slow but honest peer is measured on
/// every completion, so its expected time follows it.
fn stall_after(peer: &Peer, size: u64) -> Duration {
    seconds(3.0 * expected_time(peer, size)) + STALL_GRACE
}

const STALL_GRACE: Duration = Duration::from_secs(1);

/// How long an offer's bytes count in the upload budget before the peer
/// answers: a few round trips of a distant peer. An answer takes one; a
/// peer silent this long has most likely gone (a dead connection lingers
/// until QUIC's idle timeout), and its offer must not hold the bytes of
/// pushes to live peers meanwhile.
const OFFER_ANSWER: Duration = Duration::from_secs(1);

/// History downloads at once (see [`Scheduler::history_waits`]): one, so
/// that a joiner's catch-up takes one holder's uplink at a time.
const HISTORY_DOWNLOADS: usize = 1;

/// A computed wait, at most a day: sizes come from the network (a signed
/// length may be anything), and neither a NaN nor an overflow may panic.
fn seconds(secs: f64) -> Duration {
    const DAY: f64 = 86_400.0;
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(secs.min(DAY))
}

/// Transfers smaller than this say nothing of a peer's throughput (a
/// round trip dominates them, and an empty one would measure 0 B/s).
const MEASURABLE: u64 = 64 * 1024;

/// Seconds a download of `size` bytes from this peer is expected to take.
fn expected_time(peer: &Peer, size: u64) -> f64 {
    let rtt = peer.rtt.unwrap_or(DEFAULT_RTT).as_secs_f64();
    // At least 1 B/s: a measured zero would make every time infinite.
    rtt + size as f64 / peer.throughput.unwrap_or(DEFAULT_THROUGHPUT).max(1.0)
}
