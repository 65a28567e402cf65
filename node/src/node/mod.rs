//! The node: a [`Node`] handle and the [`Driver`] that owns the swarm.
//!
//! Like moq's `(Session, Driver)`: [`Node::new`] spawns nothing. The caller
//! runs [`Driver::run`] (usually on its own task); the handle sends commands
//! to it and reads the store directly. The driver feeds the sans-I/O
//! [`Scheduler`] with what the network reports and performs its actions as
//! tasks it owns (transfers end when the driver does).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::RecordStore as _;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, noise, ping, tcp, yamux};
use meshcast_proto::frame::Limits;
use meshcast_proto::pb::{self, DeclineReason, mesh_message::Body};
use meshcast_proto::{
    SegmentId, SignedDescriptor, SignedHeader, StreamId, StreamKey, VerifiedDescriptor,
    VerifiedHeader,
};
use prost::Message as _;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};

use crate::behaviour::{self, Behaviour, BehaviourEvent};
use crate::cache::Cache;
use crate::exchange::{self, ExchangeError, Framed, Pushed};
use crate::ingest::source::{FetchError, FetchLimits, fetch_url, http_client};
use crate::scheduler::{self, Action, Decision, Outcome, Scheduler, TransferId};
use crate::store::{Inserted, Segment, Store};

mod driver;
mod serve;
mod transfers;

pub use driver::Driver;
use driver::*;
use serve::*;

/// Everything a node needs to start. Validated by the caller (the CLI's
/// configuration layer) before it gets here.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Multiaddr>,
    pub external: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub store_max_bytes: u64,
    pub live_window: Duration,
    pub scheduler: scheduler::Config,
    pub limits: Limits,
    /// How long a peer that sent bad data stays banned.
    pub ban_duration: Duration,
    /// How often an isolated node re-dials its bootstrap peers.
    pub redial_interval: Duration,
    /// A silent read longer than this ends a transfer.
    pub read_timeout: Duration,
    /// Serve no segment bytes to peers (announce only): a publisher on a thin
    /// uplink leaves the first copies to the origin.
    pub announce_only: bool,
    /// Where verified segments are also written, for VOD and restarts.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the on-disk cache holds; beyond it the least recently
    /// requested segments are deleted.
    pub cache_max_bytes: u64,
    /// Relays to reserve a slot on, for a node that cannot be dialled
    /// directly (behind a NAT or a firewall): full multiaddrs ending in
    /// `/p2p/<relay peer id>`. The node listens on `<relay>/p2p-circuit` on
    /// each, advertises the relayed address (identify, DHT provider records)
    /// and re-reserves when a reservation is refused or lost. A peer that
    /// reaches it through a relay is upgraded to a direct connection by hole
    /// punching (DCUtR) where the NATs allow; segments flow only over direct
    /// connections. Such a node answers no DHT requests (Kademlia client
    /// mode) until a direct address of it is confirmed (`external`, or
    /// AutoNAT). Empty: no reservations.
    pub relays: Vec<Multiaddr>,
    /// Serve circuit relay v2 (`/libp2p/circuit/relay/0.2.0/hop`) and an
    /// AutoNAT v2 server, so that NATed nodes can reserve a slot here, be
    /// reached through it and learn which of their addresses are reachable.
    /// The relay accepts reservations only once it has a confirmed external
    /// address: set `external` to its public address.
    pub relay_server: bool,
    /// Relay server: most reservations held at once (over all peers; at most
    /// 4 per peer). libp2p's default, 128. A reservation costs the relay a
    /// little state and nothing else until a circuit is opened through it.
    pub relay_max_reservations: usize,
    /// Relay server: most circuits open at once (over all peers; at most 4
    /// per peer). libp2p's default, 16.
    pub relay_max_circuits: usize,
    /// Relay server: a circuit is closed after this long. libp2p's default,
    /// 2 min. Circuits carry coordination (identify, DHT, announcements and
    /// the hole-punching exchange), not video: once two peers are connected
    /// directly, the circuit is closed.
    pub relay_circuit_duration: Duration,
    /// Relay server: a circuit is closed after this many bytes, both
    /// directions together (0: no limit). libp2p's default, 128 KiB: enough
    /// for coordination, not for segments, so a relay's bandwidth cannot be
    /// spent on video.
    pub relay_circuit_bytes: u64,
    /// Deliberate misbehaviour, for tests only (the CLI cannot set it).
    #[doc(hidden)]
    pub faults: Faults,
}

/// Ways a node can be made to misbehave, so that tests can check that honest
/// nodes detect, ban and route around it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Flip a byte of every body sent.
    pub corrupt_bodies: bool,
    /// Offer and announce headers whose signatures do not verify.
    pub forge_headers: bool,
}

impl Faults {
    fn body(&self, body: &Bytes) -> Bytes {
        if !self.corrupt_bodies || body.is_empty() {
            return body.clone();
        }
        let mut bad = body.to_vec();
        bad[body.len() / 2] ^= 0x01;
        bad.into()
    }

    fn header(&self, header: &SignedHeader) -> SignedHeader {
        let mut forged = header.clone();
        if self.forge_headers {
            forged.info.hash[0] ^= 0x01;
        }
        forged
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            external: Vec::new(),
            bootstrap: Vec::new(),
            store_max_bytes: 512 << 20,
            live_window: Duration::from_secs(30),
            scheduler: scheduler::Config::default(),
            limits: Limits::default(),
            ban_duration: Duration::from_secs(600),
            redial_interval: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            announce_only: false,
            cache_dir: None,
            cache_max_bytes: 10 << 30,
            relays: Vec::new(),
            relay_server: false,
            relay_max_reservations: 128,
            relay_max_circuits: 16,
            relay_circuit_duration: Duration::from_secs(120),
            relay_circuit_bytes: 128 << 10,
            faults: Faults::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot build the libp2p stack: {0}")]
    Setup(String),
    #[error("the node has stopped")]
    Stopped,
    #[error("stream {0} not found in the DHT")]
    StreamNotFound(StreamId),
    #[error("cannot dial {addr}: {reason}")]
    Dial { addr: Multiaddr, reason: String },
}

/// Where a stored segment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Injected,
    Push(PeerId),
    Pull(PeerId),
    Origin,
    /// Read back from this node's disk cache for a request.
    Cache,
}

/// How much of a VOD a node downloads by itself. Whatever the choice, it
/// learns the VOD's whole header index, serves what it holds, and fetches
/// any other segment on demand ([`Node::demand`]). A live stream's live
/// window is always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// Every segment.
    All,
    /// Segments up to this many bytes (0: none, on demand only). Each node
    /// picks its share by rendezvous hashing of its peer id and the segment
    /// ids, so seeders with small budgets cover different parts of the VOD
    /// rather than all its beginning. Init segments come first.
    Budget(u64),
}

impl Seed {
    /// Only what viewers ask for.
    pub const ON_DEMAND: Seed = Seed::Budget(0);

    pub fn bytes(self) -> u64 {
        match self {
            Seed::All => u64::MAX,
            Seed::Budget(bytes) => bytes,
        }
    }

    /// The larger of two choices: following a stream again never seeds less.
    pub fn max(self, other: Seed) -> Seed {
        if self.bytes() >= other.bytes() {
            self
        } else {
            other
        }
    }
}

/// What a node reports to whoever listens (tests, benches, metrics).
#[derive(Debug, Clone)]
pub enum Event {
    /// A verified segment entered the store.
    Stored {
        id: SegmentId,
        source: Source,
        bytes: u64,
        at: Instant,
    },
    /// A peer sent bad data and is banned.
    Banned { peer: PeerId, reason: String },
    /// Something went wrong that the node survived (origin errors, dial failures).
    Warning { message: String },
    /// A direct connection to a peer opened while this node was connected to
    /// it only through a relay (hole punching, or a dial either way):
    /// segments can flow, and the circuit is being closed. Only a side that
    /// still sees the circuit open reports it: the other may see the circuit
    /// close before the direct connection lands.
    RelayUpgraded { peer: PeerId },
}

/// Counters, read by benches and (later) metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub mesh_bytes_in: AtomicU64,
    pub origin_bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Body bytes received for segments already held.
    pub duplicate_bytes: AtomicU64,
    pub verification_failures: AtomicU64,
    pub bans: AtomicU64,
}

enum Command {
    Info(oneshot::Sender<Info>),
    Dial(Multiaddr, oneshot::Sender<Result<(), NodeError>>),
    Follow(VerifiedDescriptor, Seed, oneshot::Sender<()>),
    Demand(SegmentId, Duration),
    Publish(VerifiedDescriptor, oneshot::Sender<()>),
    FindStream(StreamId, oneshot::Sender<Option<VerifiedDescriptor>>),
    Inject(VerifiedHeader, Bytes, oneshot::Sender<()>),
}

/// What [`Node::info`] returns.
#[derive(Debug, Clone)]
pub struct Info {
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    pub connected: Vec<PeerId>,
}

/// A handle to a running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    store: Arc<Mutex<Store>>,
    cache: Option<Arc<Mutex<Cache>>>,
    events: broadcast::Sender<Event>,
    stats: Arc<Stats>,
}

impl Node {
    /// Builds the node and starts listening. Nothing runs until the returned
    /// [`Driver`] is polled.
    pub fn new(config: Config, key: Keypair) -> Result<(Node, Driver), NodeError> {
        Driver::new(config, key)
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Events from now on. A slow reader loses the oldest (the channel is bounded).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A held segment.
    pub fn segment(&self, id: &SegmentId) -> Option<Segment> {
        lock(&self.store).get(id)
    }

    /// Headers of every segment of `stream` held in memory.
    pub fn headers(&self, stream: &StreamId) -> Vec<SignedHeader> {
        lock(&self.store).headers(stream)
    }

    /// Every segment of `stream` this node can serve: in memory or in its
    /// disk cache.
    pub fn holdings(&self, stream: &StreamId) -> std::collections::BTreeSet<SegmentId> {
        let mut held: std::collections::BTreeSet<SegmentId> =
            self.headers(stream).iter().map(|h| h.info.id).collect();
        if let Some(cache) = &self.cache {
            held.extend(lock(cache).held(stream).into_iter().map(|(id, _)| id));
        }
        held
    }

    /// Bytes in the disk cache (0 without one).
    pub fn cache_bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| lock(c).used_bytes())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    pub async fn info(&self) -> Result<Info, NodeError> {
        self.ask(Command::Info).await
    }

    /// Connects to a peer (a multiaddr ending in /p2p/<peer id> is best).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask(|tx| Command::Dial(addr, tx)).await?
    }

    /// Starts following a stream: subscribe to its announcements, keep its
    /// live window (a VOD: all of it), answer for it.
    pub async fn follow(&self, descriptor: VerifiedDescriptor) -> Result<(), NodeError> {
        self.follow_with(descriptor, Seed::All).await
    }

    /// Follows a stream, downloading by itself only `seed` of it if it is a
    /// VOD. Following a stream already followed keeps the larger choice.
    pub async fn follow_with(
        &self,
        descriptor: VerifiedDescriptor,
        seed: Seed,
    ) -> Result<(), NodeError> {
        self.ask(|tx| Command::Follow(descriptor, seed, tx)).await
    }

    /// A viewer needs segment `id` of a followed stream within `within`:
    /// fetch it now if it is not held (from this node's disk cache, a holder
    /// in the mesh, or the origin before `within` runs out). Watch
    /// [`Event::Stored`] for its arrival. A segment of a live stream whose
    /// header is not known yet is not fetched: it will be pushed or announced.
    pub async fn demand(&self, id: SegmentId, within: Duration) -> Result<(), NodeError> {
        self.commands
            .send(Command::Demand(id, within))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Publishes a stream descriptor in the DHT and follows the stream.
    pub async fn publish(&self, descriptor: VerifiedDescriptor) -> Result<(), NodeError> {
        self.ask(|tx| Command::Publish(descriptor, tx)).await
    }

    /// Looks a stream up in the DHT, retrying until `timeout`.
    pub async fn find_stream(
        &self,
        id: StreamId,
        timeout: Duration,
    ) -> Result<VerifiedDescriptor, NodeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = self.ask(|tx| Command::FindStream(id, tx)).await? {
                return Ok(found);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::StreamNotFound(id));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Adds a segment this node signed (the publisher): store, announce, push.
    pub async fn inject(&self, header: VerifiedHeader, body: Bytes) -> Result<(), NodeError> {
        self.ask(|tx| Command::Inject(header, body, tx)).await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves a consistent store or cache
    // (every method finishes its bookkeeping before returning), so poisoning
    // is ignored.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
