//! The [`Node`] handle: what the rest of the program holds of a running node.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::{Multiaddr, PeerId};
use meshcast_proto::{SegmentId, SignedHeader, StreamId, VerifiedDescriptor, VerifiedHeader};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::arrival::Arrival;
use crate::cache::Cache;
use crate::mesh::Seed;
use crate::mesh::store::{self, Segment};

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
pub type Source = crate::mesh::Source<PeerId>;

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
    /// A segment's verified body has started to arrive: until it is
    /// stored, [`Node::arriving`] reads it as it comes (cut-through).
    Arriving { id: SegmentId },
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
    /// A gateway record arrived on the gateways topic and verified.
    /// Boxed: far larger than the other events.
    GatewayRecord(
        Box<(
            meshcast_proto::gateway::GatewayRecord,
            meshcast_proto::pb::SignedGatewayRecord,
        )>,
    ),
}

/// Counters, read by benches and (later) metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub mesh_bytes_in: AtomicU64,
    /// Segment body bytes sent to peers (pushes and served pulls).
    pub mesh_bytes_out: AtomicU64,
    /// Pulls answered `Absent` because the upload cap could not send the
    /// body in time (see [`crate::uplink`]).
    pub pulls_declined_at_cap: AtomicU64,
    /// Pushes accepted while their segment was still arriving here, and so
    /// forwarded piece by piece as it came (cut-through), whatever their end.
    pub forwards: AtomicU64,
    /// Of those, the ones that ended without the whole body sent: their
    /// segment's own download failed, their peer went, or they timed out.
    pub forwards_failed: AtomicU64,
    pub origin_bytes_in: AtomicU64,
    pub bans: AtomicU64,
}

pub(super) enum Command {
    Info(oneshot::Sender<Info>),
    Dial(Multiaddr, oneshot::Sender<Result<(), NodeError>>),
    Follow(VerifiedDescriptor, Seed, oneshot::Sender<()>),
    Demand(SegmentId, Duration),
    Publish(VerifiedDescriptor, oneshot::Sender<()>),
    FindStream(StreamId, oneshot::Sender<Option<VerifiedDescriptor>>),
    KnownDescriptor(StreamId, oneshot::Sender<Option<VerifiedDescriptor>>),
    Followed(StreamId, oneshot::Sender<Option<VerifiedDescriptor>>),
    Unfollow(StreamId, oneshot::Sender<()>),
    PublishGateway(Vec<u8>, oneshot::Sender<bool>),
    Inject(VerifiedHeader, Bytes, oneshot::Sender<()>),
}

/// What [`Node::info`] returns.
#[derive(Debug, Clone)]
pub struct Info {
    pub peer_id: PeerId,
    pub listen_addrs: Vec<Multiaddr>,
    /// The addresses the operator configured as public (`external`): the
    /// only ones fit to publish (listen addresses include internal ones).
    pub external_addrs: Vec<Multiaddr>,
    pub connected: Vec<PeerId>,
    /// Peers with a direct (not relayed) connection open: those segments
    /// can flow with.
    pub direct: Vec<PeerId>,
}

/// A handle to a running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(super) peer_id: PeerId,
    pub(super) key: libp2p::identity::Keypair,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) store: store::Shared,
    pub(super) cache: Option<Arc<Mutex<Cache>>>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) stats: Arc<Stats>,
    pub(super) arrivals: Arrivals,
}

/// Segments arriving, by the download that brings them (see
/// [`crate::arrival`]): shared by the driver, which adds and removes them,
/// and the handle, which reads them.
pub(super) type Arrivals =
    Arc<Mutex<HashMap<SegmentId, (crate::mesh::scheduler::TransferId, Arc<Arrival>)>>>;

impl Node {
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
        self.store.lock().get(id)
    }

    /// A segment whose verified body is arriving now ([`Event::Arriving`]):
    /// read its encoding as it comes, to pass it on before it is held.
    pub fn arriving(&self, id: &SegmentId) -> Option<Arc<Arrival>> {
        lock(&self.arrivals).get(id).map(|(_, a)| a.clone())
    }

    /// Headers of every segment of `stream` held in memory.
    pub fn headers(&self, stream: &StreamId) -> Vec<SignedHeader> {
        self.store.lock().headers(stream)
    }

    /// Every segment of `stream` this node can serve: in memory or in its
    /// disk cache.
    pub fn holdings(&self, stream: &StreamId) -> BTreeSet<SegmentId> {
        let mut held: BTreeSet<SegmentId> =
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

    /// The descriptor of `stream` if this node follows it. A gateway asks
    /// before serving a stream its operator chose to serve only if followed.
    pub async fn followed(
        &self,
        stream: StreamId,
    ) -> Result<Option<VerifiedDescriptor>, NodeError> {
        self.ask(|tx| Command::Followed(stream, tx)).await
    }

    /// This node's identity key as an Ed25519 public key (the key gateway
    /// records name), `None` for another key type.
    pub fn node_key(&self) -> Option<meshcast_proto::PublicKey> {
        let ed = self.key.public().try_into_ed25519().ok()?;
        meshcast_proto::PublicKey::from_bytes(&ed.to_bytes()).ok()
    }

    /// Signs and gossips this node's gateway record (its `node` must be
    /// [`node_key`](Self::node_key)) on the gateways topic. A gateway calls it
    /// at start, when its certificate changes, and now and then (records
    /// expire; nodes that joined since have not seen it). Returns the signed
    /// record and whether gossip took it: not while no peer is known to
    /// subscribe (a node just started, or one whose gossip views are being
    /// healed), so the caller should try again soon.
    pub async fn publish_gateway(
        &self,
        record: &meshcast_proto::gateway::GatewayRecord,
    ) -> Result<(meshcast_proto::pb::SignedGatewayRecord, bool), NodeError> {
        use prost::Message as _;
        let signature = self
            .key
            .sign(&record.signing_bytes())
            .map_err(|e| NodeError::Setup(format!("signing the gateway record: {e}")))?;
        let signed = record.to_pb(&signature);
        let encoded = signed.encode_to_vec();
        let gossiped = self.ask(|tx| Command::PublishGateway(encoded, tx)).await?;
        Ok((signed, gossiped))
    }

    /// Stops following a stream: no more announcements, pushes or provider
    /// records for it; what the store holds ages out. A gateway calls it when
    /// a stream it followed for viewers has had none for a while.
    pub async fn unfollow(&self, stream: StreamId) -> Result<(), NodeError> {
        self.ask(|tx| Command::Unfollow(stream, tx)).await
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

    /// The newest descriptor of `stream` this node knows, without asking the
    /// DHT: the one it follows, or a newer one put to it since. A gateway
    /// calls this to serve a newer descriptor (a live stream that ended and
    /// became a VOD) rather than the one it found first.
    pub async fn known_descriptor(
        &self,
        stream: StreamId,
    ) -> Result<Option<VerifiedDescriptor>, NodeError> {
        self.ask(|tx| Command::KnownDescriptor(stream, tx)).await
    }

    /// Looks a stream up in the DHT, retrying until `timeout`. Waits for a
    /// few valid descriptors (or the end of the lookup) and returns the
    /// newest, so an old one replayed by a peer does not win.
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

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves a consistent store or cache
    // (every method finishes its bookkeeping before returning), so poisoning
    // is ignored.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
