//! State shared by the gateway's driver, its sessions and its HTTP server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use meshcast_node::Node;
use meshcast_node::store::Segment;
use meshcast_proto::pb::ErrorCode;
use meshcast_proto::tree::Outboard;
use meshcast_proto::{SegmentId, StreamId, VerifiedDescriptor};
use tokio::sync::{OnceCell, oneshot};
use tokio::time::Instant;
use wtransport::tls::Sha256Digest;

use crate::admission::{Arrivals, Caps, Counter, Full, Rate};
use crate::config::Config;

/// State shared by the driver, sessions and the HTTP server.
pub(crate) struct Shared {
    pub node: Node,
    pub config: Config,
    pub url: String,
    /// Hashes browsers may pin: the current certificate's first.
    pub hashes: Mutex<Vec<(Sha256Digest, Option<SystemTime>)>>,
    /// Connections between their first packet and their HTTP/3 CONNECT.
    pub handshakes: Mutex<Counter>,
    /// New connections lately, per address and /64.
    pub arrivals: Mutex<Arrivals>,
    pub sessions: Mutex<Counter>,
    pub streams: Mutex<Streams>,
    pub waiters: Mutex<Waiters>,
    /// Other gateways' records; the watch says when they changed.
    pub records: Mutex<crate::records::Records>,
    pub records_changed: tokio::sync::watch::Sender<u64>,
    /// Deliveries sent so far, over all sessions (for [`Faults`]).
    pub deliveries: AtomicU64,
    /// Segments looked up for requests so far (for [`Faults`]).
    pub answers: AtomicU64,
    /// Deliveries of segments still arriving at the node (cut-through)
    /// started so far, and those sent whole.
    pub forwards: AtomicU64,
    pub forwards_sent: AtomicU64,
    /// The trees of the segments served lately: many viewers ask for the
    /// same few, and each outboard costs a BLAKE3 pass over its body.
    pub outboards: Mutex<std::collections::VecDeque<(SegmentId, Arc<Outboard>)>>,
}

/// Outboards kept ([`Shared::outboards`]): a few live windows' worth of
/// segments across renditions, 4 KB each per MB of segment.
pub(crate) const OUTBOARDS_KEPT: usize = 256;

/// An error for the client: a code and a message.
pub(crate) struct Refusal(pub ErrorCode, pub String);

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(code, message.into())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which counter a [`Slot`] is held in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    Handshake,
    Session,
}

/// A slot in one of the gateway's counters, given back when dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    stage: Stage,
    ip: IpAddr,
}

/// Whether a new connection from `ip` is within its address's rate.
pub(crate) fn arrival(shared: &Shared, ip: IpAddr) -> Result<(), Full> {
    let limits = &shared.config.limits;
    let rate = Rate {
        per_second: limits.connections_per_second_per_ip,
        burst: limits.connection_burst_per_ip,
    };
    lock(&shared.arrivals).admit(ip, rate, std::time::Instant::now())
}

impl Slot {
    pub fn take(shared: &Arc<Shared>, stage: Stage, ip: IpAddr) -> Result<Slot, Full> {
        let limits = &shared.config.limits;
        let caps = match stage {
            Stage::Handshake => Caps {
                total: limits.max_handshakes,
                per_ip: limits.max_sessions_per_ip,
                per_prefix: limits.max_sessions_per_prefix,
            },
            Stage::Session => Caps {
                total: limits.max_sessions,
                per_ip: limits.max_sessions_per_ip,
                per_prefix: limits.max_sessions_per_prefix,
            },
        };
        shared.counter(stage).take(ip, caps)?;
        Ok(Slot {
            shared: shared.clone(),
            stage,
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.counter(self.stage).give_back(self.ip);
    }
}

/// A stream viewers asked for.
pub(crate) struct Served {
    pub descriptor: VerifiedDescriptor,
    /// Followed by the gateway for viewers (not by the operator's choice):
    /// unfollowed again when it has had no viewer for a while.
    pub followed_for_viewers: bool,
    /// The node follows it (found for a Hello whose token was not valid: not).
    pub following: bool,
    pub viewers: usize,
    /// When the last viewer left (the entry's creation if none came).
    pub idle_since: Instant,
    /// Set once the node follows it for viewers: every Hello arriving while
    /// the follow is under way awaits this one (a reconnect storm makes one
    /// follow, not one per Hello).
    pub follow: Arc<OnceCell<()>>,
}

/// The streams the gateway serves, and the DHT lookups under way for Hellos.
#[derive(Default)]
pub(crate) struct Streams {
    pub served: HashMap<StreamId, Served>,
    /// One lookup per stream however many Hellos ask at once; every asker
    /// awaits the same cell.
    pub lookups: HashMap<StreamId, Arc<Lookup>>,
    /// Follows made for viewers since the gateway started.
    pub follows: u64,
}

pub(crate) type Lookup =
    OnceCell<Result<VerifiedDescriptor, (meshcast_proto::pb::ErrorCode, String)>>;

/// Requests waiting for a segment to arrive from the mesh.
#[derive(Default)]
pub(crate) struct Waiters {
    by_segment: HashMap<SegmentId, Vec<(u64, oneshot::Sender<()>)>>,
    total: usize,
    next: u64,
}

impl Waiters {
    pub fn total(&self) -> usize {
        self.total
    }
}

/// One request's place among the waiters, removed when dropped (at its
/// deadline, when the request is cancelled or its session ends).
pub(crate) struct Waiting {
    shared: Arc<Shared>,
    id: SegmentId,
    key: u64,
    pub arrived: oneshot::Receiver<()>,
}

impl Waiting {
    /// Registers a wait for `id`, or `None` when the gateway already has
    /// [`Limits::max_waiters`](crate::Limits::max_waiters).
    pub fn start(shared: &Arc<Shared>, id: SegmentId) -> Option<Waiting> {
        let mut waiters = lock(&shared.waiters);
        if waiters.total >= shared.config.limits.max_waiters {
            return None;
        }
        let (tx, arrived) = oneshot::channel();
        let key = waiters.next;
        waiters.next += 1;
        waiters.total += 1;
        waiters.by_segment.entry(id).or_default().push((key, tx));
        Some(Waiting {
            shared: shared.clone(),
            id,
            key,
            arrived,
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiters = lock(&self.shared.waiters);
        let Some(list) = waiters.by_segment.get_mut(&self.id) else {
            return;
        };
        let before = list.len();
        list.retain(|(key, _)| *key != self.key);
        let removed = before - list.len();
        if list.is_empty() {
            waiters.by_segment.remove(&self.id);
        }
        waiters.total -= removed;
    }
}

impl Shared {
    pub fn current_hashes(&self) -> Vec<Sha256Digest> {
        lock(&self.hashes).iter().map(|(h, _)| h.clone()).collect()
    }

    fn counter(&self, stage: Stage) -> MutexGuard<'_, Counter> {
        match stage {
            Stage::Handshake => lock(&self.handshakes),
            Stage::Session => lock(&self.sessions),
        }
    }

    /// The outboard of `segment`'s body, computed once for all viewers.
    pub fn outboard(&self, segment: &Segment) -> Arc<Outboard> {
        let id = segment.header.id();
        let hash = segment.header.info().hash;
        let mut kept = lock(&self.outboards);
        // The same id with another body (a restarted publisher) is a miss.
        if let Some((_, outboard)) = kept.iter().find(|(i, o)| *i == id && o.root == hash) {
            return outboard.clone();
        }
        drop(kept);
        let outboard = Arc::new(Outboard::new(&segment.body));
        kept = lock(&self.outboards);
        if kept.len() >= OUTBOARDS_KEPT {
            kept.pop_front();
        }
        kept.push_back((id, outboard.clone()));
        outboard
    }

    /// The next delivery's body forged mid-body, if a fault says so
    /// ([`Faults::corrupt_every`]).
    pub fn forged_delivery(&self, body: &Bytes) -> Option<Vec<u8>> {
        let faults = self.config.faults;
        if faults.corrupt_every == 0 {
            return None;
        }
        let n = self.deliveries.fetch_add(1, Ordering::Relaxed) + 1;
        faults.forged(n, body)
    }

    /// The segment to send in answer to a request for `asked`: `segment`
    /// itself unless a fault is configured.
    pub fn answer(&self, asked: &SegmentId, segment: Segment) -> Segment {
        let every = u64::from(self.config.faults.wrong_segment_every);
        if every == 0 || !(self.answers.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(every) {
            return segment;
        }
        self.node
            .headers(&asked.stream)
            .iter()
            .map(|h| h.info.id)
            .filter(|id| id != asked)
            .find_map(|id| self.node.segment(&id))
            .unwrap_or(segment)
    }
}

/// Wakes the requests waiting for `id`.
pub(crate) fn wake(shared: &Shared, id: &SegmentId) {
    let mut waiters = lock(&shared.waiters);
    if let Some(list) = waiters.by_segment.remove(id) {
        waiters.total -= list.len();
        for (_, waiter) in list {
            let _ = waiter.send(());
        }
    }
}

/// Wakes every waiting request (arrivals were missed; each re-checks).
pub(crate) fn wake_all(shared: &Shared) {
    let mut waiters = lock(&shared.waiters);
    waiters.total = 0;
    for (_, list) in waiters.by_segment.drain() {
        for (_, waiter) in list {
            let _ = waiter.send(());
        }
    }
}
