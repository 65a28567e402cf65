//! The mesh core: everything an edge node decides, with no I/O.
//!
//! [`Mesh`] owns the [`Scheduler`], the [`Store`], the followed streams, the
//! headers learned but not held (`pending`), holders (inside the scheduler)
//! and bans. It has no sockets, no tasks and no clock: the shell reports what
//! happened, with the time, and performs what the mesh asks for. The same
//! `Mesh` runs inside the libp2p node (`crate::node`) and, by the thousand,
//! inside the simulator (`crate::sim`), like quinn-proto's `Connection`
//! inside quinn and inside its tests.
//!
//! # How a shell drives it
//!
//! 1. Report each event with the `handle_*` method that names it, passing
//!    `now`: a neighbour up or down ([`Mesh::handle_peer_up`]), an RTT, an
//!    announcement ([`Mesh::handle_announce`], which answers gossip's
//!    validation), an offer ([`Mesh::handle_offer`], which answers it), a
//!    header list, the end of a download or an upload, a cache read or
//!    write, a peer that broke the protocol; or a command: [`Mesh::follow`],
//!    [`Mesh::unfollow`], [`Mesh::inject`], [`Mesh::demand`].
//! 2. Drain [`Mesh::poll_output`] until it returns `None` and perform each
//!    [`Output`] in order (an output may depend on the one before: a ban
//!    follows the gossip validation that caused it).
//! 3. Sleep until [`Mesh::poll_timeout`], then call [`Mesh::handle_timeout`]
//!    (and drain again). Any `handle_*` call may change the timeout.
//!
//! Every transfer the mesh starts ([`Output::Push`], [`Output::Pull`],
//! [`Output::FetchOrigin`]) and every offer it accepts must be reported
//! exactly once ([`Mesh::handle_download`], [`Mesh::handle_upload`]), also
//! when the mesh cancelled it ([`Output::Cancel`]): report it failed.
//!
//! Peers are any `Copy + Ord + Hash` type: libp2p's `PeerId` in the node, a
//! number in the simulator.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshcast_proto::pb::{self, DeclineReason};
use meshcast_proto::{
    SegmentId, SegmentKind, SignedHeader, StreamId, StreamKey, VerifiedDescriptor, VerifiedHeader,
};
use prost::Message as _;

pub mod scheduler;
#[cfg(test)]
mod scheduler_sim;
pub mod store;
mod streams;
#[cfg(test)]
mod tests;

use scheduler::{Action, Decision, Outcome, Scheduler, TransferId};
use store::{Inserted, Store};
use streams::Followed;
pub use streams::Seed;

/// Headers answered to one header list: well within a 64 KiB frame.
pub const MAX_LISTED: usize = 200;
/// Pages of a VOD's header index read from one peer: 50,000 headers, a
/// 27-hour VOD in 2 s segments (a bound on what a peer can make this node
/// hold).
pub const MAX_INDEX_PAGES: u32 = 250;
/// Unheld headers remembered at once, all streams together: about 25 MB at
/// most. Live streams need their windows (a few hundred); the rest is VOD
/// indexes.
pub const MAX_PENDING: usize = 50_000;

/// Headers of segments made of parts waiting for their parts (a bound on
/// memory; the oldest are forgotten first).
const MAX_COMPOSITES: usize = 4096;
/// Headers in one announcement. The publisher announces one segment per
/// message; a few more leave room for parts (low latency). More is someone
/// making every node verify and forward a batch.
pub const MAX_ANNOUNCED: usize = 8;
/// Segment ids remembered as announced through gossip, and headers
/// remembered as verified (beyond those pending or held): enough for every
/// rendition of a few streams over a live window.
const MAX_RECENT: usize = 4096;
/// How often headers that left every live window are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// The mesh's settings. The node builds it from its configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub scheduler: scheduler::Config,
    /// Most bytes of segments held in memory.
    pub store_max_bytes: u64,
    /// Most segments held in memory, whatever their size.
    pub store_max_segments: usize,
    /// Live segments published this long before a stream's newest are kept
    /// first and downloaded at all.
    pub live_window: Duration,
    /// How long a peer that sent bad data stays banned.
    pub ban_duration: Duration,
    /// Push nothing (a publisher on a thin uplink): announce, and leave the
    /// first copies to the origin.
    pub announce_only: bool,
    /// The node writes segments to a disk cache ([`Output::WriteCache`]).
    pub disk_cache: bool,
    /// Most bytes of VOD segments seeded, all VODs together.
    pub seed_capacity: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            scheduler: scheduler::Config::default(),
            store_max_bytes: 512 << 20,
            store_max_segments: Store::DEFAULT_MAX_SEGMENTS,
            live_window: Duration::from_secs(30),
            ban_duration: Duration::from_secs(600),
            announce_only: false,
            disk_cache: false,
            seed_capacity: (512 << 20) / 10 * 9,
        }
    }
}

/// Where a stored segment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source<P> {
    /// Signed by this node (the publisher).
    Injected,
    /// Offered by a neighbour and accepted.
    Push(P),
    /// Asked of a neighbour.
    Pull(P),
    /// Fetched over HTTP because the mesh was late.
    Origin,
    /// Read back from this node's disk cache.
    Cache,
    /// A media segment made of parts, put together from the parts held.
    Assembled,
}

impl<P> Source<P> {
    /// The neighbour that sent it, if one did.
    pub fn peer(&self) -> Option<&P> {
        match self {
            Source::Push(p) | Source::Pull(p) => Some(p),
            _ => None,
        }
    }

    /// A metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Source::Injected => "publisher",
            Source::Push(_) => "push",
            Source::Pull(_) => "pull",
            Source::Origin => "origin",
            Source::Cache => "cache",
            Source::Assembled => "parts",
        }
    }
}

/// What failed verification, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A segment header that does not decode or whose signature does not verify.
    Header,
    /// A body longer, shorter or other than its signed header says.
    Body,
    /// A DHT record that is not a valid stream descriptor.
    Descriptor,
}

/// Why a transfer or an exchange ended without what it was for, as the shell
/// classifies it. Only [`Broken::Misbehaved`] is ever held against a peer:
/// slowness, resets and cancellations are the internet, not an attack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// Timed out, reset, refused, cancelled, closed.
    Failed(String),
    /// The peer holds the segment but had no upload room for it.
    Busy,
    /// Bytes that fail verification or break the protocol.
    Misbehaved {
        reason: String,
        failure: Option<Failure>,
    },
}

/// How a push (our offer) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Accepted, and the whole body sent.
    Delivered,
    Declined(DeclineReason),
}

/// The answer to an offer ([`Mesh::handle_offer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferReply {
    /// Receive the body, verify it against `header`, and report the download
    /// as `transfer`.
    Accept {
        transfer: TransferId,
        header: Box<VerifiedHeader>,
    },
    Decline(DeclineReason),
    /// The offer does not verify; the peer is banned (see the outputs).
    Reject(String),
}

/// The gossip topic an announcement came on: one rendition of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Topic {
    pub stream: StreamId,
    pub rendition: u32,
}

/// What gossip should do with an announcement ([`Mesh::handle_announce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Valid: forward it.
    Accept,
    /// Not ours to judge (a stream not followed), or nothing new (every
    /// header was announced before, or is older than the live window): do
    /// not forward, and hold nothing against the sender, whose view may
    /// differ.
    Ignore,
    /// Invalid: penalise the peer that forwarded it.
    Reject,
}

/// What the shell performs, drained with [`Mesh::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output<P> {
    /// Offer a held segment to `peer` and send `body` if it accepts. Report
    /// with [`Mesh::handle_upload`].
    Push {
        transfer: TransferId,
        peer: P,
        header: VerifiedHeader,
        body: Bytes,
    },
    /// Ask `peer` for a segment, verified against `key`. Report with
    /// [`Mesh::handle_download`].
    Pull {
        transfer: TransferId,
        peer: P,
        id: SegmentId,
        key: StreamKey,
    },
    /// Fetch a late segment over HTTP and verify it against `header`.
    /// Report with [`Mesh::handle_download`].
    FetchOrigin {
        transfer: TransferId,
        url: String,
        header: VerifiedHeader,
    },
    /// Offer a segment still arriving (cut-through) to `peer`, and if it
    /// accepts, send each verified piece of the body as the download of it
    /// brings them, from the first. Should that download fail, end the
    /// stream early (the peer then drops what it got, through no fault of
    /// its own); should it be superseded by another that delivered, finish
    /// from the held body. Report with [`Mesh::handle_upload`].
    Forward {
        transfer: TransferId,
        peer: P,
        header: VerifiedHeader,
    },
    /// Abandon a transfer: it timed out, or another one delivered. It must
    /// still be reported (as failed, unless it completed first).
    Cancel {
        transfer: TransferId,
    },
    /// Ask `peer` what it holds of `stream`: page 0 is a live stream's
    /// newest headers; pages 1, 2, … a VOD's index in id order, after
    /// `after`. Report with [`Mesh::handle_headers`].
    RequestHeaders {
        peer: P,
        stream: StreamId,
        page: u32,
        after: Option<SegmentId>,
    },
    /// A stream is followed (`first`: it was not before): subscribe to its
    /// announcements, provide it in the DHT, and if `first`, load what the
    /// disk cache holds of it ([`Mesh::handle_cache_loaded`]).
    Follow {
        descriptor: VerifiedDescriptor,
        first: bool,
    },
    /// A stream is no longer followed: unsubscribe, stop providing.
    Unfollow {
        stream: StreamId,
    },
    /// Gossip an announcement on the topic of one rendition of a stream.
    Gossip {
        topic: Topic,
        announce: Bytes,
    },
    /// Disconnect and refuse `peer` until [`Output::Unban`].
    Ban {
        peer: P,
        reason: String,
        failure: Option<Failure>,
    },
    Unban {
        peer: P,
    },
    /// A verified segment entered the store.
    Stored {
        header: VerifiedHeader,
        source: Source<P>,
        bytes: u64,
    },
    /// Write a verified segment to the disk cache; report what the cache
    /// deleted with [`Mesh::handle_cache_written`].
    WriteCache {
        header: VerifiedHeader,
        body: Bytes,
    },
    /// A viewer wants a segment held only on disk: read it back and report
    /// with [`Mesh::handle_cache_read`].
    ReadCache {
        id: SegmentId,
    },
    /// Bytes from the origin failed verification (no peer to blame).
    VerificationFailed(Failure),
    /// Something went wrong that the node survives.
    Warning(String),
}

/// A download in flight: what it brings, from whom, since when.
#[derive(Debug, Clone)]
struct Download<P> {
    id: SegmentId,
    source: Source<P>,
    started: Instant,
    /// Its verified header, once its body is arriving
    /// ([`Mesh::handle_arriving`]): offers of the segment stream from it.
    arriving: Option<VerifiedHeader>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Mesh<P> {
    config: Config,
    /// This node's id as bytes: its share of a VOD (rendezvous hashing).
    me: Vec<u8>,
    scheduler: Scheduler<P>,
    store: store::Shared,
    /// Segments in the disk cache (or being written to it), with their sizes.
    on_disk: HashMap<SegmentId, u64>,
    streams: HashMap<StreamId, Followed>,
    /// Verified headers of segments learned but not held.
    pending: HashMap<SegmentId, VerifiedHeader>,
    /// The live ones among them by publish time: when `pending` is full, the
    /// oldest live header makes room for a new one (a flood of headers
    /// pushes out its own oldest, never the newest).
    live_pending: BTreeSet<(u64, SegmentId)>,
    neighbours: BTreeSet<P>,
    banned: HashMap<P, Instant>,
    downloads: HashMap<TransferId, Download<P>>,
    /// Segments announced through gossip, with their publisher epoch,
    /// oldest first: an announcement that brings none new is not forwarded
    /// again (re-wrapped replays); a restarted publisher's is new.
    announced: Recent<(SegmentId, u64), ()>,
    /// Headers whose signature was checked, beyond pending and held ones.
    verified: Recent<SegmentId, VerifiedHeader>,
    /// Headers of media segments made of parts, not yet put together: see
    /// [`Mesh::assemble`].
    composites: Recent<SegmentId, VerifiedHeader>,
    outputs: VecDeque<Output<P>>,
    next_prune: Option<Instant>,
}

/// A map that forgets its oldest entries beyond a bound.
#[derive(Debug)]
struct Recent<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    max: usize,
}

impl<K: Copy + Eq + Hash, V> Recent<K, V> {
    fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        // The key stays in `order` until it comes out at the front; a
        // re-insert meanwhile only makes it leave a little early.
        self.map.remove(key)
    }

    fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key, value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

impl<P: Copy + Ord + Hash + std::fmt::Debug> Mesh<P> {
    /// `me` is this node's id (any stable bytes); `seed` seeds the scheduler's
    /// randomness (choice of push targets).
    pub fn new(config: Config, me: &[u8], seed: u64) -> Self {
        let mut scheduler_config = config.scheduler.clone();
        if config.announce_only {
            scheduler_config.push_parallel = 0;
        }
        Self {
            scheduler: Scheduler::new(scheduler_config, seed),
            store: store::Shared::new(
                Store::new(config.store_max_bytes, config.live_window)
                    .with_max_segments(config.store_max_segments),
            ),
            config,
            me: me.to_vec(),
            on_disk: HashMap::new(),
            streams: HashMap::new(),
            pending: HashMap::new(),
            live_pending: BTreeSet::new(),
            neighbours: BTreeSet::new(),
            banned: HashMap::new(),
            downloads: HashMap::new(),
            announced: Recent::new(MAX_RECENT),
            verified: Recent::new(MAX_RECENT),
            composites: Recent::new(MAX_COMPOSITES),
            outputs: VecDeque::new(),
            next_prune: None,
        }
    }

    /// The store, for readers (serving tasks, the gateway, tests).
    pub fn store(&self) -> &store::Shared {
        &self.store
    }

    /// The next thing for the shell to do.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// When [`Mesh::handle_timeout`] has work next, if ever.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let bans = self.banned.values().min().copied();
        [self.scheduler.next_wakeup(now), bans, self.next_prune]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs timers: pulls, transfer timeouts, origin fallback, unbans,
    /// forgetting headers that left the live window.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.scheduler.tick(now);
        let expired: Vec<P> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.banned.remove(&peer);
            self.outputs.push_back(Output::Unban { peer });
        }
        if self.next_prune.is_some_and(|at| at <= now) {
            self.prune_pending();
            self.next_prune = (!self.pending.is_empty()).then_some(now + PRUNE_INTERVAL);
        }
        self.drain(now);
    }

    pub fn is_banned(&self, peer: &P) -> bool {
        self.banned.contains_key(peer)
    }

    /// A followed stream's seed choice and descriptor issue time: a newer
    /// descriptor of it (a live stream that ended) is followed again.
    pub fn followed(&self, stream: &StreamId) -> Option<(Seed, u64)> {
        self.streams
            .get(stream)
            .map(|f| (f.seed, f.descriptor.descriptor().issued_at_us))
    }

    /// The descriptor of a followed stream.
    pub fn descriptor(&self, stream: &StreamId) -> Option<&VerifiedDescriptor> {
        self.streams.get(stream).map(|f| &f.descriptor)
    }

    /// Is the segment held, in memory or on disk?
    pub fn holds(&self, id: &SegmentId) -> bool {
        self.store.lock().contains(id) || self.on_disk.contains_key(id)
    }

    // ---- peers ----

    /// A neighbour segments can be exchanged with (a direct connection: the
    /// shell decides). It is asked what it holds of every followed stream.
    pub fn handle_peer_up(&mut self, peer: P, now: Instant) {
        if self.banned.contains_key(&peer) || !self.neighbours.insert(peer) {
            return;
        }
        self.scheduler.peer_connected(peer);
        let streams: Vec<StreamId> = self.streams.keys().copied().collect();
        for stream in streams {
            self.request_headers(peer, stream);
        }
        self.drain(now);
    }

    /// The neighbour is gone. Its transfers are still reported as they end.
    pub fn handle_peer_down(&mut self, peer: P, now: Instant) {
        if self.neighbours.remove(&peer) {
            self.scheduler.peer_disconnected(peer);
        }
        self.drain(now);
    }

    pub fn handle_rtt(&mut self, peer: P, rtt: Duration) {
        self.scheduler.rtt(peer, rtt);
    }

    /// The shell caught `peer` breaking the protocol on a stream it opened
    /// (a bad frame, a bad header in an offer or a list).
    pub fn handle_misbehaviour(
        &mut self,
        peer: P,
        reason: String,
        failure: Option<Failure>,
        now: Instant,
    ) {
        self.ban(peer, reason, failure, now);
        self.drain(now);
    }

    // ---- commands ----

    /// Follows a stream (again: a newer descriptor replaces the old one, and
    /// the larger seed choice is kept).
    pub fn follow(&mut self, descriptor: VerifiedDescriptor, seed: Seed, now: Instant) {
        let key = descriptor.stream_key();
        self.store
            .lock()
            .set_vod(key.id, !descriptor.descriptor().live);
        let previous = self.streams.remove(&key.id);
        let first = previous.is_none();
        let followed = match previous {
            Some(p) => p.renewed(descriptor.clone(), seed),
            None => Followed::new(descriptor.clone(), seed),
        };
        self.streams.insert(key.id, followed);
        let live = descriptor.descriptor().live;
        let segment = Duration::from_millis(u64::from(descriptor.descriptor().segment_duration_ms));
        self.scheduler
            .pace(key.id, live.then_some(segment).filter(|d| !d.is_zero()));
        self.outputs.push_back(Output::Follow { descriptor, first });
        let peers: Vec<P> = self.neighbours.iter().copied().collect();
        for peer in peers {
            self.request_headers(peer, key.id);
        }
        self.drain(now);
    }

    /// Stops following a stream: its headers are forgotten; what the store
    /// holds of it ages out like anything else.
    pub fn unfollow(&mut self, stream: &StreamId, now: Instant) {
        if self.streams.remove(stream).is_none() {
            return;
        }
        self.scheduler.pace(*stream, None);
        let unheld: Vec<SegmentId> = self
            .pending
            .keys()
            .filter(|id| id.stream == *stream)
            .copied()
            .collect();
        for id in unheld {
            self.forget_pending(&id);
            self.scheduler.evicted(&id);
        }
        self.outputs.push_back(Output::Unfollow { stream: *stream });
        self.drain(now);
    }

    /// Adds a segment this node signed (the publisher): store, announce, push.
    pub fn inject(&mut self, header: VerifiedHeader, body: Bytes, now: Instant) {
        let (id, size) = (header.id(), body.len() as u64);
        self.wanted(&header);
        let announce = pb::Announce {
            headers: vec![header.signed().to_pb()],
        };
        self.outputs.push_back(Output::Gossip {
            topic: Topic {
                stream: id.stream,
                rendition: id.rendition,
            },
            announce: announce.encode_to_vec().into(),
        });
        // A segment made of parts is not pushed: every node puts it
        // together from the parts it gets (see `assemble`).
        let composite = header.info().parts > 0;
        if self.insert(header, body, Source::Injected) && !composite {
            self.scheduler.held(id, size, now);
        }
        self.drain(now);
    }

    /// A viewer needs segment `id` of a followed stream within `within`: from
    /// the disk cache, a holder in the mesh, or the origin before `within`
    /// runs out (half the time for the mesh, half for the origin). A live
    /// segment whose header is not known yet is not fetched: it will be
    /// pushed or announced.
    pub fn demand(&mut self, id: SegmentId, within: Duration, now: Instant) {
        let Some(live) = self.streams.get(&id.stream).map(Followed::live) else {
            return;
        };
        if self.store.lock().contains(&id) {
            return;
        }
        if self.on_disk.contains_key(&id) {
            self.outputs.push_back(Output::ReadCache { id });
            return;
        }
        if let Some(parts) = self.composites.get(&id).map(|h| h.info().parts) {
            // Made of parts: the parts are what travels.
            for part in 0..parts {
                let part = SegmentId::part(id.stream, id.rendition, id.sequence, part);
                self.demand(part, within, now);
            }
            return;
        }
        let size = self.pending.get(&id).map(|h| h.info().length);
        if live && size.is_none() {
            return;
        }
        self.scheduler
            .demand(id, size.unwrap_or(0), now + within / 2, now);
        self.drain(now);
    }

    // ---- what peers send ----

    /// A gossiped announcement on `topic` from `from` (forwarder), first
    /// published by `author` if gossip knows. Rejected (and the forwarder
    /// banned) unless it holds 1 to [`MAX_ANNOUNCED`] distinct headers, all of
    /// the topic's stream and rendition, all verifying against the stream's
    /// key: what any honest node concludes alike from the message alone.
    /// Ignored when it brings nothing new.
    pub fn handle_announce(
        &mut self,
        from: P,
        author: Option<P>,
        topic: Topic,
        data: &[u8],
        now: Instant,
    ) -> Acceptance {
        let acceptance = match self.announce(author.unwrap_or(from), topic, data, now) {
            Ok(acceptance) => acceptance,
            Err(reason) => {
                self.ban(
                    from,
                    format!("gossiped a bad announcement: {reason}"),
                    Some(Failure::Header),
                    now,
                );
                Acceptance::Reject
            }
        };
        self.drain(now);
        acceptance
    }

    fn announce(
        &mut self,
        holder: P,
        topic: Topic,
        data: &[u8],
        now: Instant,
    ) -> Result<Acceptance, &'static str> {
        let announce = pb::Announce::decode(data).map_err(|_| "does not decode")?;
        if !self.streams.contains_key(&topic.stream) {
            return Ok(Acceptance::Ignore);
        }
        if announce.headers.is_empty() {
            return Err("no header");
        }
        if announce.headers.len() > MAX_ANNOUNCED {
            return Err("too many headers");
        }
        let mut signed = Vec::with_capacity(announce.headers.len());
        for header in &announce.headers {
            let header = SignedHeader::from_pb(header).map_err(|_| "a header does not decode")?;
            let id = header.info.id;
            if id.stream != topic.stream || id.rendition != topic.rendition {
                return Err("a header of another stream or rendition than its topic");
            }
            if signed.iter().any(|h: &SignedHeader| h.info.id == id) {
                return Err("the same segment twice");
            }
            signed.push(header);
        }
        let window = u64::try_from(self.config.live_window.as_micros()).unwrap_or(u64::MAX);
        let mut new = false;
        for header in signed {
            let id = header.info.id;
            // An old header replayed: no signature check, nothing learned.
            // (Its signature is checked if it claims to be recent.)
            let stale = self
                .streams
                .get(&id.stream)
                .is_some_and(|s| s.stale(&id, header.info.published_at_us, window));
            if stale {
                continue;
            }
            let verified = self.verify(header).ok_or("a header does not verify")?;
            if !self.current(&verified) {
                continue;
            }
            let epoch = verified.info().epoch_us;
            if self.announced.get(&(id, epoch)).is_none() {
                self.announced.insert((id, epoch), ());
                new = true;
            }
            self.learn(verified, Some(holder), now);
        }
        Ok(if new {
            Acceptance::Accept
        } else {
            Acceptance::Ignore
        })
    }

    /// A neighbour offers a segment. Accepted only if it is wanted and
    /// neither held nor being received (no node gets the same bytes twice).
    pub fn handle_offer(
        &mut self,
        peer: P,
        header: Option<&pb::SegmentHeader>,
        now: Instant,
    ) -> OfferReply {
        let reply = self.offer(peer, header, now);
        if let OfferReply::Reject(reason) = &reply {
            self.ban(
                peer,
                format!("offered a bad header: {reason}"),
                Some(Failure::Header),
                now,
            );
        }
        self.drain(now);
        reply
    }

    fn offer(&mut self, peer: P, header: Option<&pb::SegmentHeader>, now: Instant) -> OfferReply {
        let Some(header) = header else {
            return OfferReply::Reject("offer without a header".into());
        };
        let signed = match SignedHeader::from_pb(header) {
            Ok(signed) => signed,
            Err(e) => return OfferReply::Reject(e.to_string()),
        };
        if !self.streams.contains_key(&signed.info.id.stream) {
            return OfferReply::Decline(DeclineReason::NotWanted);
        }
        let Some(verified) = self.verify(signed) else {
            return OfferReply::Reject("the signature does not verify".into());
        };
        let id = verified.id();
        if !self.current(&verified) {
            return OfferReply::Decline(DeclineReason::NotWanted);
        }
        if self.holds(&id) {
            return OfferReply::Decline(DeclineReason::AlreadyHave);
        }
        if verified.info().parts > 0 {
            // Put together here from its parts; an honest node never offers it.
            self.learn(verified, None, now);
            return OfferReply::Decline(DeclineReason::NotWanted);
        }
        if !self.wanted(&verified) {
            return OfferReply::Decline(DeclineReason::NotWanted);
        }
        let size = verified.info().length;
        self.remember(verified.clone());
        self.schedule_prune(now);
        match self.scheduler.offered(id, size, peer, now) {
            Decision::Accept(transfer) => {
                self.downloads.insert(
                    transfer,
                    Download {
                        id,
                        source: Source::Push(peer),
                        started: now,
                        arriving: None,
                    },
                );
                OfferReply::Accept {
                    transfer,
                    header: Box::new(verified),
                }
            }
            Decision::Decline(reason) => OfferReply::Decline(reason),
        }
    }

    /// A header list from `peer` (see [`Output::RequestHeaders`]).
    pub fn handle_headers(
        &mut self,
        peer: P,
        stream: StreamId,
        page: u32,
        result: Result<Vec<pb::SegmentHeader>, Broken>,
        now: Instant,
    ) {
        match result {
            Ok(headers) => self.headers_listed(peer, stream, page, headers, now),
            Err(Broken::Misbehaved { reason, failure }) => self.ban(peer, reason, failure, now),
            Err(Broken::Failed(_) | Broken::Busy) => {}
        }
        self.drain(now);
    }

    fn headers_listed(
        &mut self,
        peer: P,
        stream: StreamId,
        page: u32,
        headers: Vec<pb::SegmentHeader>,
        now: Instant,
    ) {
        if !self.streams.contains_key(&stream) {
            return;
        }
        let last = headers.len() < MAX_LISTED || page >= MAX_INDEX_PAGES;
        let mut after = None;
        for header in &headers {
            let verified = SignedHeader::from_pb(header)
                .ok()
                .filter(|h| h.info.id.stream == stream)
                .and_then(|h| self.verify(h));
            let Some(verified) = verified else {
                self.ban(
                    peer,
                    "listed a header that does not verify".into(),
                    Some(Failure::Header),
                    now,
                );
                return;
            };
            after = Some(verified.id());
            self.learn(verified, Some(peer), now);
        }
        if page > 0 {
            match after {
                Some(after) if !last => self.outputs.push_back(Output::RequestHeaders {
                    peer,
                    stream,
                    page: page + 1,
                    after: Some(after),
                }),
                _ => self.plan_seed(stream, now),
            }
        }
    }

    /// A download ended: a pull, an accepted push, or an origin fetch.
    /// `Ok(None)`: the peer does not hold the segment.
    pub fn handle_download(
        &mut self,
        transfer: TransferId,
        result: Result<Option<(VerifiedHeader, Bytes)>, Broken>,
        now: Instant,
    ) {
        let Some(download) = self.downloads.remove(&transfer) else {
            return;
        };
        let peer = download.source.peer().copied();
        let outcome = match result {
            // A header of a publisher run since superseded: the peer does
            // not hold the current segment of that id.
            Ok(Some((header, _))) if !self.current(&header) => Outcome::Absent,
            Ok(Some((header, body))) => {
                let bytes = body.len() as u64;
                self.insert(header, body, download.source);
                Outcome::Done {
                    bytes,
                    elapsed: now.saturating_duration_since(download.started),
                }
            }
            Ok(None) => Outcome::Absent,
            Err(Broken::Busy) => Outcome::Busy,
            Err(Broken::Misbehaved { reason, failure }) => {
                match peer {
                    Some(peer) => self.ban(peer, reason, failure, now),
                    None => {
                        if let Some(failure) = failure {
                            self.outputs.push_back(Output::VerificationFailed(failure));
                        }
                        self.outputs.push_back(Output::Warning(format!(
                            "origin fetch of {}: {reason}",
                            download.id
                        )));
                    }
                }
                Outcome::Misbehaved
            }
            Err(Broken::Failed(reason)) => {
                if peer.is_none() {
                    self.outputs.push_back(Output::Warning(format!(
                        "origin fetch of {} failed: {reason}",
                        download.id
                    )));
                }
                Outcome::Failed
            }
        };
        self.scheduler.finished(transfer, outcome, now);
        self.drain(now);
    }

    /// Download `transfer` has verified its header and the first pieces of
    /// its body: call once, as soon as they arrive, so that the segment is
    /// forwarded while the rest is on its way ([`Output::Forward`]). Needed
    /// only with [`scheduler::Config::cut_through`]; without the call every
    /// hop waits for the whole segment.
    /// False if nothing will be forwarded from it: cut-through is off, the
    /// download is over, the header is not its segment's, or another
    /// download of the segment is the one forwarded.
    pub fn handle_arriving(
        &mut self,
        transfer: TransferId,
        header: VerifiedHeader,
        now: Instant,
    ) -> bool {
        let Some(download) = self.downloads.get(&transfer) else {
            return false;
        };
        if download.id != header.id() || download.arriving.is_some() || !self.current(&header) {
            return false;
        }
        if let Some(download) = self.downloads.get_mut(&transfer) {
            download.arriving = Some(header);
        }
        let forwarded = self.scheduler.arriving(transfer, now);
        self.drain(now);
        forwarded
    }

    /// The peer accepted a push ([`Output::Push`]): its body is now in
    /// flight. False if the scheduler gave the transfer up meanwhile (do
    /// not send the body).
    pub fn push_accepted(&mut self, transfer: TransferId) -> bool {
        self.scheduler.accepted(transfer)
    }

    /// A push ([`Output::Push`]) ended.
    pub fn handle_upload(
        &mut self,
        transfer: TransferId,
        peer: P,
        result: Result<Pushed, Broken>,
        now: Instant,
    ) {
        let outcome = match result {
            Ok(Pushed::Delivered) => Outcome::Done {
                bytes: 0,
                elapsed: Duration::ZERO,
            },
            Ok(Pushed::Declined(reason)) => Outcome::Declined(reason),
            Err(Broken::Misbehaved { reason, failure }) => {
                self.ban(peer, reason, failure, now);
                Outcome::Misbehaved
            }
            Err(Broken::Failed(_) | Broken::Busy) => Outcome::Failed,
        };
        self.scheduler.finished(transfer, outcome, now);
        self.drain(now);
    }

    // ---- the disk cache ----

    /// What the disk cache holds of a stream just followed: segments loaded
    /// back into memory (verified), and every segment on disk with its size.
    pub fn handle_cache_loaded(
        &mut self,
        stream: StreamId,
        loaded: Vec<(VerifiedHeader, Bytes)>,
        on_disk: Vec<(SegmentId, u64)>,
        now: Instant,
    ) {
        if !self.streams.contains_key(&stream) {
            return;
        }
        // Only the newest run among what was cached, newest first so that
        // it becomes current before the files are listed (a newer run
        // found later drops them all).
        let mut loaded = loaded;
        loaded.sort_by_key(|(header, _)| std::cmp::Reverse(header.info().epoch_us));
        let loaded: Vec<_> = loaded
            .into_iter()
            .filter(|(header, _)| self.current(header))
            .collect();
        for (id, size) in &on_disk {
            self.on_disk.insert(*id, *size);
        }
        for (header, body) in loaded {
            let id = header.id();
            self.wanted(&header);
            let size = body.len() as u64;
            let inserted = self.store.lock().insert(header, body);
            if let Inserted::New { evicted } = inserted {
                self.scheduler.held(id, size, now);
                self.forget_evicted(evicted);
            }
        }
        if let Some(followed) = self.streams.get_mut(&stream) {
            followed.count_held(on_disk);
        }
        self.drain(now);
    }

    /// A write ([`Output::WriteCache`]) finished: `written` says whether it
    /// landed; `deleted` is what the cache dropped to stay within its bound.
    pub fn handle_cache_written(
        &mut self,
        id: SegmentId,
        written: bool,
        deleted: Vec<SegmentId>,
        now: Instant,
    ) {
        if !written {
            self.on_disk.remove(&id);
        }
        for gone in deleted {
            self.on_disk.remove(&gone);
            if !self.store.lock().contains(&gone) {
                self.scheduler.evicted(&gone);
            }
        }
        self.drain(now);
    }

    /// A read ([`Output::ReadCache`]) finished: the segment, or `None` if the
    /// file was gone or damaged (the shell deletes it).
    pub fn handle_cache_read(
        &mut self,
        id: SegmentId,
        read: Option<(VerifiedHeader, Bytes)>,
        now: Instant,
    ) {
        match read {
            Some((header, body)) if self.current(&header) => {
                let size = body.len() as u64;
                if self.insert(header, body, Source::Cache) {
                    self.scheduler.held(id, size, now);
                }
            }
            _ => {
                self.on_disk.remove(&id);
                self.scheduler.evicted(&id);
            }
        }
        self.drain(now);
    }

    // ---- inside ----

    /// A header as verified before (pending, held, or among the last
    /// verified), if `signed` is that very header: a header arrives many
    /// times (gossip, offers, lists, replays) and an Ed25519 check each time
    /// would cost more than the rest together.
    fn verify(&mut self, signed: SignedHeader) -> Option<VerifiedHeader> {
        let id = signed.info.id;
        let known = self
            .pending
            .get(&id)
            .cloned()
            .or_else(|| self.store.lock().header(&id).cloned());
        let known = known.or_else(|| self.verified.get(&id).cloned());
        if let Some(known) = known
            && known.signed() == &signed
        {
            return Some(known);
        }
        let key = self.streams.get(&id.stream)?.key();
        let verified = signed.verify(&key).ok()?;
        self.verified.insert(id, verified.clone());
        Some(verified)
    }

    /// A verified header of a followed stream: remember it and tell the
    /// scheduler. A VOD's headers are all remembered (its index), and
    /// downloaded by themselves only if this node seeds them.
    fn learn(&mut self, header: VerifiedHeader, holder: Option<P>, now: Instant) {
        let id = header.id();
        if !self.current(&header) {
            return;
        }
        let wanted = self.wanted(&header);
        if header.info().parts > 0 {
            if wanted && !self.holds(&id) {
                self.composites.insert(id, header);
                self.assemble(id);
            }
            return;
        }
        let live = self.streams.get(&id.stream).is_none_or(Followed::live);
        if (live && !wanted) || self.holds(&id) {
            return;
        }
        let size = header.info().length;
        let header_published_us = header.info().published_at_us;
        if !self.remember(header) {
            return;
        }
        self.schedule_prune(now);
        if live {
            let history = self
                .streams
                .get(&id.stream)
                .is_some_and(|f| f.behind_edge(header_published_us));
            if history {
                self.scheduler.history_learned(id, size, holder, now);
            } else {
                self.scheduler.header_learned(id, size, holder, now);
            }
        } else {
            self.scheduler.header_known(id, size, holder, now);
            if wanted {
                self.scheduler.seed(id, size, now);
            }
        }
    }

    /// Is this verified header of its publisher's current run? Not if a
    /// newer epoch was seen: a restarted publisher superseded it, and may
    /// name its id again with other bytes. A newer epoch becomes current,
    /// and everything known of the older runs is dropped.
    fn current(&mut self, header: &VerifiedHeader) -> bool {
        let stream = header.id().stream;
        let epoch = header.info().epoch_us;
        let Some(followed) = self.streams.get_mut(&stream) else {
            return false;
        };
        if epoch < followed.epoch_us {
            return false;
        }
        if epoch > followed.epoch_us {
            let first = followed.epoch_us == 0;
            followed.epoch_us = epoch;
            self.restarted(stream, epoch, first);
        }
        true
    }

    /// The publisher of `stream` started a new run at `epoch_us`: drops the
    /// older runs' segments, held, pending and on disk (the disk's are
    /// listed by id only, so all of the stream's go; they are fetched again
    /// when wanted).
    fn restarted(&mut self, stream: StreamId, epoch_us: u64, first: bool) {
        let held = self.store.lock().remove_older_epochs(&stream, epoch_us);
        let pending = self
            .pending
            .iter()
            .filter(|(id, h)| id.stream == stream && h.info().epoch_us < epoch_us)
            .map(|(id, _)| *id);
        let on_disk = self.on_disk.keys().filter(|id| id.stream == stream);
        let old: BTreeSet<SegmentId> = held
            .into_iter()
            .chain(pending)
            .chain(on_disk.copied())
            .collect();
        for id in &old {
            self.forget_pending(id);
            self.on_disk.remove(id);
            self.scheduler.superseded(id);
        }
        if !first || !old.is_empty() {
            self.outputs.push_back(Output::Warning(format!(
                "the publisher of stream {stream} restarted: dropped {} segments of its earlier runs",
                old.len()
            )));
        }
    }

    fn wanted(&mut self, header: &VerifiedHeader) -> bool {
        let (window, capacity) = (self.config.live_window, self.config.seed_capacity);
        self.streams
            .get_mut(&header.id().stream)
            .is_some_and(|f| f.wanted(header, window, capacity))
    }

    /// Chooses what a VOD followed with a budget seeds, once its index is read.
    fn plan_seed(&mut self, stream: StreamId, now: Instant) {
        let capacity = self.config.seed_capacity;
        let Some(followed) = self.streams.get_mut(&stream) else {
            return;
        };
        let chosen = followed.plan(&self.me, &self.pending, capacity);
        for (id, size) in chosen {
            self.scheduler.seed(id, size, now);
        }
    }

    fn request_headers(&mut self, peer: P, stream: StreamId) {
        let live = self.streams.get(&stream).is_none_or(Followed::live);
        self.outputs.push_back(Output::RequestHeaders {
            peer,
            stream,
            page: if live { 0 } else { 1 },
            after: None,
        });
    }

    fn ban(&mut self, peer: P, reason: String, failure: Option<Failure>, now: Instant) {
        if self.banned.contains_key(&peer) {
            return;
        }
        self.banned.insert(peer, now + self.config.ban_duration);
        if self.neighbours.remove(&peer) {
            self.scheduler.peer_disconnected(peer);
        }
        self.outputs.push_back(Output::Ban {
            peer,
            reason,
            failure,
        });
    }

    /// The header of a segment arriving through a download that offers
    /// stream from.
    fn arriving_header(&self, id: &SegmentId) -> Option<VerifiedHeader> {
        let transfer = self.scheduler.arriving_through(id)?;
        self.downloads.get(&transfer)?.arriving.clone()
    }

    /// Stores a verified segment; true if it is new.
    fn insert(&mut self, header: VerifiedHeader, body: Bytes, source: Source<P>) -> bool {
        let id = header.id();
        if !self.current(&header) {
            return false;
        }
        let bytes = body.len() as u64;
        self.forget_pending(&id);
        if self.config.disk_cache && !self.on_disk.contains_key(&id) {
            self.on_disk.insert(id, bytes);
            self.outputs.push_back(Output::WriteCache {
                header: header.clone(),
                body: body.clone(),
            });
        }
        let inserted = self.store.lock().insert(header.clone(), body);
        match inserted {
            Inserted::New { evicted } => {
                self.forget_evicted(evicted);
                self.outputs.push_back(Output::Stored {
                    header,
                    source,
                    bytes,
                });
                if id.kind == SegmentKind::Part {
                    self.assemble(id.parent());
                }
                true
            }
            Inserted::AlreadyHeld => false,
            Inserted::TooLarge => {
                self.outputs.push_back(Output::Warning(format!(
                    "segment {id} ({bytes} bytes) is larger than the whole store"
                )));
                false
            }
        }
    }

    /// Puts the media segment `id`, made of parts, together once every part
    /// is held: their bodies in order must be the body its header signs.
    /// Such a segment never travels between nodes (each node assembles it,
    /// so the bytes cross every link once, as parts); gateways serve it
    /// whole to players that ask for the segment rather than its parts.
    fn assemble(&mut self, id: SegmentId) {
        let Some(header) = self.composites.get(&id).cloned() else {
            return;
        };
        let info = header.info();
        let mut body = Vec::with_capacity(usize::try_from(info.length).unwrap_or(0));
        {
            let mut store = self.store.lock();
            for part in 0..info.parts {
                let part = SegmentId::part(id.stream, id.rendition, id.sequence, part);
                match store.get(&part) {
                    Some(segment) => body.extend_from_slice(&segment.body),
                    None => return,
                }
            }
        }
        self.composites.remove(&id);
        if body.len() as u64 != info.length || blake3::hash(&body).as_bytes() != &info.hash {
            // Both signed by the publisher: its own inconsistency, no peer's.
            self.outputs.push_back(Output::Warning(format!(
                "segment {id} is not the concatenation of its {} parts as signed: not assembled",
                info.parts
            )));
            return;
        }
        self.insert(header, Bytes::from(body), Source::Assembled);
    }

    /// Segments the memory store dropped are no longer held, unless on disk.
    fn forget_evicted(&mut self, evicted: Vec<SegmentId>) {
        for id in evicted {
            if !self.on_disk.contains_key(&id) {
                self.scheduler.evicted(&id);
            }
        }
    }

    fn schedule_prune(&mut self, now: Instant) {
        if self.next_prune.is_none() {
            self.next_prune = Some(now + PRUNE_INTERVAL);
        }
    }

    /// Forgets headers of live segments that left every live window unheld
    /// (a VOD's header index stays: any of it may be asked for).
    fn prune_pending(&mut self) {
        let window = u64::try_from(self.config.live_window.as_micros()).unwrap_or(u64::MAX);
        let streams = &self.streams;
        self.pending.retain(|id, header| {
            streams
                .get(&id.stream)
                .is_some_and(|s| s.keeps(header, window))
        });
        let pending = &self.pending;
        self.live_pending.retain(|(_, id)| pending.contains_key(id));
    }

    /// Remembers an unheld header; false if there is no room (the bound is
    /// reached and no older live header can make way).
    fn remember(&mut self, header: VerifiedHeader) -> bool {
        let id = header.id();
        if self.pending.contains_key(&id) {
            return true;
        }
        let live = self.streams.get(&id.stream).is_none_or(Followed::live);
        let published = header.info().published_at_us;
        if self.pending.len() >= MAX_PENDING {
            let oldest = self.live_pending.first().copied();
            match oldest {
                Some((at, old)) if live && at < published => {
                    self.forget_pending(&old);
                    self.scheduler.evicted(&old);
                }
                _ => return false,
            }
        }
        if live {
            self.live_pending.insert((published, id));
        }
        self.pending.insert(id, header);
        true
    }

    fn forget_pending(&mut self, id: &SegmentId) {
        if let Some(header) = self.pending.remove(id) {
            self.live_pending
                .remove(&(header.info().published_at_us, *id));
        }
    }

    /// Turns the scheduler's actions into outputs.
    fn drain(&mut self, now: Instant) {
        while let Some(action) = self.scheduler.poll_action() {
            match action {
                Action::Offer { transfer, peer, id } => {
                    let segment = self.store.lock().get(&id);
                    match segment {
                        Some(segment) => self.outputs.push_back(Output::Push {
                            transfer,
                            peer,
                            header: segment.header,
                            body: segment.body,
                        }),
                        None => match self.arriving_header(&id) {
                            Some(header) => self.outputs.push_back(Output::Forward {
                                transfer,
                                peer,
                                header,
                            }),
                            // Gone meanwhile (evicted): not a failure, which
                            // would have it offered again at once.
                            None => self.scheduler.finished(
                                transfer,
                                Outcome::Declined(DeclineReason::Unspecified),
                                now,
                            ),
                        },
                    }
                }
                Action::Pull { transfer, peer, id } => {
                    let Some(key) = self.streams.get(&id.stream).map(Followed::key) else {
                        self.scheduler.finished(transfer, Outcome::Failed, now);
                        continue;
                    };
                    self.downloads.insert(
                        transfer,
                        Download {
                            id,
                            source: Source::Pull(peer),
                            started: now,
                            arriving: None,
                        },
                    );
                    self.outputs.push_back(Output::Pull {
                        transfer,
                        peer,
                        id,
                        key,
                    });
                }
                Action::FetchOrigin { transfer, id } => match self.origin(&id) {
                    Some(Err(why)) => {
                        self.outputs.push_back(Output::Warning(format!(
                            "segment {id} is late and not fetched from the origin: {why}"
                        )));
                        self.scheduler.finished(transfer, Outcome::Failed, now);
                    }
                    Some(Ok((url, header))) => {
                        self.downloads.insert(
                            transfer,
                            Download {
                                id,
                                source: Source::Origin,
                                started: now,
                                arriving: None,
                            },
                        );
                        self.outputs.push_back(Output::FetchOrigin {
                            transfer,
                            url,
                            header,
                        });
                    }
                    None => {
                        // Demanded before its header was known, the mesh did
                        // not have it: without the signed URI and hash the
                        // origin cannot be asked.
                        if self.pending.contains_key(&id) {
                            self.outputs.push_back(Output::Warning(format!(
                                "segment {id} is late and its stream names no origin to fetch it from"
                            )));
                        }
                        self.scheduler.finished(transfer, Outcome::Failed, now);
                    }
                },
                Action::Cancel { transfer } => self.outputs.push_back(Output::Cancel { transfer }),
            }
        }
    }

    /// A late segment's origin URL, and the header to verify its bytes with.
    /// `None` when there is none to ask; `Some(Err)` when the signed URI
    /// points outside the stream's origin (see
    /// `Descriptor::origin_segment_url`).
    fn origin(&self, id: &SegmentId) -> Option<Result<(String, VerifiedHeader), String>> {
        let header = self.pending.get(id)?;
        let descriptor = self.streams.get(&id.stream)?.descriptor.descriptor();
        if descriptor.origin_url.is_empty() {
            return None;
        }
        Some(
            descriptor
                .origin_segment_url(id.rendition, &header.info().uri)
                .map(|url| (url, header.clone())),
        )
    }
}
