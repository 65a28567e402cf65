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
use crate::exchange::{self, ExchangeError, Framed, Pushed};
use crate::ingest::source::{FetchError, FetchLimits, fetch_url, http_client};
use crate::scheduler::{self, Action, Decision, Outcome, Scheduler, TransferId};
use crate::store::{Inserted, Segment, Store};

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
    Follow(VerifiedDescriptor, oneshot::Sender<()>),
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
    events: broadcast::Sender<Event>,
    stats: Arc<Stats>,
}

impl Node {
    /// Builds the node and starts listening. Nothing runs until the returned
    /// [`Driver`] is polled.
    pub fn new(config: Config, key: Keypair) -> Result<(Node, Driver), NodeError> {
        let peer_id = key.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NodeError::Setup(e.to_string()))?
            .with_quic()
            .with_dns()
            .map_err(|e| NodeError::Setup(e.to_string()))?
            .with_behaviour(|key| {
                Behaviour::new(key).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(|e| NodeError::Setup(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        for addr in &config.external {
            swarm.add_external_address(addr.clone());
        }
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control
            .accept(exchange::PROTOCOL)
            .map_err(|e| NodeError::Setup(e.to_string()))?;
        let store = Arc::new(Mutex::new(Store::new(
            config.store_max_bytes,
            config.live_window,
        )));
        let (commands_tx, commands) = mpsc::channel(256);
        let (internal_tx, internal) = mpsc::channel(256);
        let (events, _) = broadcast::channel(4096);
        let stats = Arc::new(Stats::default());
        let http = http_client(&FetchLimits::default())
            .map_err(|e| NodeError::Setup(format!("HTTP client: {e}")))?;
        let mut scheduler_config = config.scheduler.clone();
        if config.announce_only {
            scheduler_config.push_parallel = 0;
        }
        let seed = u64::from_le_bytes(peer_id.to_bytes()[2..10].try_into().unwrap_or_default());
        let node = Node {
            peer_id,
            commands: commands_tx,
            store: store.clone(),
            events: events.clone(),
            stats: stats.clone(),
        };
        let driver = Driver {
            scheduler: Scheduler::new(scheduler_config, seed),
            config,
            swarm,
            control,
            incoming,
            commands,
            internal,
            internal_tx,
            store,
            events,
            stats,
            http,
            streams: HashMap::new(),
            pending: HashMap::new(),
            tasks: JoinSet::new(),
            aborts: HashMap::new(),
            inbound: 0,
            banned: HashMap::new(),
            finds: HashMap::new(),
            published: Vec::new(),
            dials: HashMap::new(),
        };
        Ok((node, driver))
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

    /// Headers of every held segment of `stream`.
    pub fn headers(&self, stream: &StreamId) -> Vec<SignedHeader> {
        lock(&self.store).headers(stream)
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
    /// live window, answer for it.
    pub async fn follow(&self, descriptor: VerifiedDescriptor) -> Result<(), NodeError> {
        self.ask(|tx| Command::Follow(descriptor, tx)).await
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

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A panic while holding the lock leaves a consistent store (every method
    // finishes its bookkeeping before returning), so poisoning is ignored.
    store.lock().unwrap_or_else(|e| e.into_inner())
}

struct Followed {
    descriptor: VerifiedDescriptor,
    key: StreamKey,
    newest_us: u64,
}

enum Internal {
    Offer {
        peer: PeerId,
        header: Option<pb::SegmentHeader>,
        reply: oneshot::Sender<OfferReply>,
    },
}

enum OfferReply {
    Accept(TransferId, VerifiedHeader),
    Decline(DeclineReason),
    Reject(ExchangeError),
}

enum Via {
    Pull(PeerId),
    PushIn(PeerId),
    Origin,
}

enum TaskDone {
    Download {
        transfer: TransferId,
        via: Via,
        started: Instant,
        result: Result<Option<(VerifiedHeader, Bytes)>, ExchangeError>,
    },
    OriginFailed {
        transfer: TransferId,
        id: SegmentId,
        error: String,
    },
    Upload {
        transfer: TransferId,
        peer: PeerId,
        bytes: u64,
        result: Result<Pushed, ExchangeError>,
    },
    Headers {
        peer: PeerId,
        stream: StreamId,
        result: Result<Vec<pb::SegmentHeader>, ExchangeError>,
    },
    Served {
        peer: PeerId,
        result: Result<(), ExchangeError>,
    },
}

/// Concurrent inbound streams; more are reset at once.
const MAX_INBOUND: usize = 128;
/// Headers answered to one ListHeaders: well within a 64 KiB frame.
const MAX_LISTED: usize = 200;

/// Owns the swarm and everything that moves. Run it with [`Driver::run`].
pub struct Driver {
    config: Config,
    swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    incoming: libp2p_stream::IncomingStreams,
    commands: mpsc::Receiver<Command>,
    internal: mpsc::Receiver<Internal>,
    internal_tx: mpsc::Sender<Internal>,
    store: Arc<Mutex<Store>>,
    events: broadcast::Sender<Event>,
    stats: Arc<Stats>,
    http: reqwest::Client,
    scheduler: Scheduler<PeerId>,
    streams: HashMap<StreamId, Followed>,
    /// Verified headers of segments learned but not held yet.
    pending: HashMap<SegmentId, VerifiedHeader>,
    tasks: JoinSet<TaskDone>,
    aborts: HashMap<TransferId, AbortHandle>,
    inbound: usize,
    banned: HashMap<PeerId, Instant>,
    finds: HashMap<kad::QueryId, (StreamId, oneshot::Sender<Option<VerifiedDescriptor>>)>,
    published: Vec<kad::Record>,
    dials: HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<(), NodeError>>>,
}

impl Driver {
    /// Runs the node until every [`Node`] handle is dropped.
    pub async fn run(mut self) {
        for addr in self.config.bootstrap.clone() {
            self.dial_bootstrap(addr);
        }
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut last_redial = Instant::now();
        loop {
            let wake = self
                .scheduler
                .next_wakeup()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((peer, stream)) = self.incoming.next() => self.on_inbound(peer, stream),
                Some(internal) = self.internal.recv() => self.on_internal(internal),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(done) = done {
                        self.on_task_done(done);
                    }
                }
                _ = tokio::time::sleep_until(wake) => self.scheduler.tick(Instant::now()),
                _ = housekeeping.tick() => {
                    if last_redial.elapsed() >= self.config.redial_interval {
                        last_redial = Instant::now();
                        self.redial_if_isolated();
                    }
                    self.unban_expired();
                    self.prune_pending();
                }
            }
            self.run_actions();
        }
        self.tasks.abort_all();
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn warn(&self, message: String) {
        tracing::warn!("{message}");
        self.emit(Event::Warning { message });
    }

    fn dial_bootstrap(&mut self, addr: Multiaddr) {
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        if let Err(e) = self.swarm.dial(addr.clone()) {
            self.warn(format!("bootstrap peer {addr} cannot be dialled: {e}"));
        }
    }

    /// Kademlia bootstrap can stall with an empty table; re-dial the seeds.
    fn redial_if_isolated(&mut self) {
        if self.config.bootstrap.is_empty() || self.swarm.connected_peers().next().is_some() {
            return;
        }
        tracing::info!("no peers connected; re-dialling bootstrap peers");
        for addr in self.config.bootstrap.clone() {
            self.dial_bootstrap(addr);
        }
    }

    fn ban(&mut self, peer: PeerId, reason: String) {
        if self.banned.contains_key(&peer) {
            return;
        }
        tracing::warn!(%peer, "banning peer: {reason}");
        self.banned
            .insert(peer, Instant::now() + self.config.ban_duration);
        let behaviour = self.swarm.behaviour_mut();
        behaviour.blocked.block_peer(peer);
        behaviour.gossipsub.blacklist_peer(&peer);
        behaviour.kad.remove_peer(&peer);
        self.scheduler.peer_disconnected(peer);
        self.stats.bans.fetch_add(1, Relaxed);
        self.emit(Event::Banned { peer, reason });
    }

    fn unban_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.banned.remove(&peer);
            let behaviour = self.swarm.behaviour_mut();
            behaviour.blocked.unblock_peer(peer);
            behaviour.gossipsub.remove_blacklisted_peer(&peer);
        }
    }

    /// Forgets headers of segments that left every live window unheld.
    fn prune_pending(&mut self) {
        let window = u64::try_from(self.config.live_window.as_micros()).unwrap_or(u64::MAX);
        let streams = &self.streams;
        self.pending.retain(|id, header| {
            streams.get(&id.stream).is_some_and(|s| {
                header.info().published_at_us.saturating_add(2 * window) >= s.newest_us
            })
        });
    }

    /// Is a segment of a followed stream recent enough to want?
    fn wanted(&mut self, header: &VerifiedHeader) -> bool {
        let window = u64::try_from(self.config.live_window.as_micros()).unwrap_or(u64::MAX);
        let Some(followed) = self.streams.get_mut(&header.id().stream) else {
            return false;
        };
        let published = header.info().published_at_us;
        followed.newest_us = followed.newest_us.max(published);
        !followed.descriptor.descriptor().live
            || published.saturating_add(window) >= followed.newest_us
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Info(reply) => {
                let _ = reply.send(Info {
                    peer_id: *self.swarm.local_peer_id(),
                    listen_addrs: self.swarm.listeners().cloned().collect(),
                    connected: self.swarm.connected_peers().copied().collect(),
                });
            }
            Command::Dial(addr, reply) => {
                let opts = libp2p::swarm::dial_opts::DialOpts::from(addr.clone());
                let connection = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(connection, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Dial {
                            addr,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Follow(descriptor, reply) => {
                self.follow(descriptor);
                let _ = reply.send(());
            }
            Command::Publish(descriptor, reply) => {
                let id = descriptor.stream_key().id;
                let value = descriptor.signed().to_pb().encode_to_vec();
                let record = kad::Record::new(id.as_bytes().to_vec(), value);
                let kad = &mut self.swarm.behaviour_mut().kad;
                if let Err(e) = kad.put_record(record.clone(), kad::Quorum::One) {
                    tracing::warn!("storing the stream descriptor locally failed: {e}");
                }
                self.published.push(record);
                self.follow(descriptor);
                let _ = reply.send(());
            }
            Command::FindStream(id, reply) => {
                let key = kad::RecordKey::new(id.as_bytes());
                let local = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .get(&key)
                    .map(|r| r.into_owned());
                if let Some(found) = local.and_then(|r| descriptor_from_record(&r, &id)) {
                    let _ = reply.send(Some(found));
                    return;
                }
                let query = self.swarm.behaviour_mut().kad.get_record(key);
                self.finds.insert(query, (id, reply));
            }
            Command::Inject(header, body, reply) => {
                self.inject(header, body);
                let _ = reply.send(());
            }
        }
    }

    fn follow(&mut self, descriptor: VerifiedDescriptor) {
        let key = descriptor.stream_key();
        let renditions: Vec<u32> = descriptor
            .descriptor()
            .renditions
            .iter()
            .map(|r| r.id)
            .collect();
        let newest_us = self.streams.get(&key.id).map_or(0, |s| s.newest_us);
        self.streams.insert(
            key.id,
            Followed {
                descriptor,
                key,
                newest_us,
            },
        );
        let behaviour = self.swarm.behaviour_mut();
        for rendition in renditions {
            let topic = behaviour::topic(&key.id, rendition);
            if let Err(e) = behaviour.gossipsub.subscribe(&topic) {
                tracing::warn!("cannot subscribe to {topic}: {e}");
            }
            let _ = behaviour
                .gossipsub
                .set_topic_params(topic, behaviour::topic_score_params());
        }
        let _ = behaviour
            .kad
            .start_providing(kad::RecordKey::new(key.id.as_bytes()));
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            self.request_headers(peer, key.id);
        }
    }

    fn inject(&mut self, header: VerifiedHeader, body: Bytes) {
        let id = header.id();
        let size = body.len() as u64;
        self.wanted(&header);
        let announce = pb::Announce {
            headers: vec![header.signed().to_pb()],
        };
        if !matches!(lock(&self.store).insert(header, body), Inserted::New { .. }) {
            return;
        }
        let now = Instant::now();
        self.scheduler.held(id, size, now);
        self.emit(Event::Stored {
            id,
            source: Source::Injected,
            bytes: size,
            at: now,
        });
        let topic = behaviour::topic(&id.stream, id.rendition);
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, announce.encode_to_vec())
        {
            tracing::debug!("announcement of {id} not gossiped: {e}");
        }
    }

    fn request_headers(&mut self, peer: PeerId, stream: StreamId) {
        let mut control = self.control.clone();
        let (limits, timeout) = (self.config.limits, self.config.read_timeout);
        self.tasks.spawn(async move {
            let result = async {
                let framed = open(&mut control, peer, limits, timeout).await?;
                exchange::list_headers(framed, stream).await
            }
            .await;
            TaskDone::Headers {
                peer,
                stream,
                result,
            }
        });
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                connection_id,
                ..
            } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
                if num_established.get() == 1 {
                    self.scheduler.peer_connected(peer_id);
                    let streams: Vec<StreamId> = self.streams.keys().copied().collect();
                    for stream in streams {
                        self.request_headers(peer_id, stream);
                    }
                    // Records put before anyone was connected reach the DHT now.
                    for record in self.published.clone() {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .kad
                            .put_record(record, kad::Quorum::One);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.scheduler.peer_disconnected(peer_id);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
                ..
            } => {
                let reason = error.to_string();
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let addr = Multiaddr::empty();
                    let _ = reply.send(Err(NodeError::Dial {
                        addr,
                        reason: reason.clone(),
                    }));
                }
                let bootstrap = peer_id.is_some_and(|p| {
                    self.config
                        .bootstrap
                        .iter()
                        .any(|a| a.iter().last() == Some(libp2p::multiaddr::Protocol::P2p(p)))
                });
                if bootstrap {
                    self.warn(format!("bootstrap peer did not answer: {reason}"));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!("listening on {address}"),
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => self.scheduler.rtt(peer, rtt),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let acceptance =
                    self.on_announce(propagation_source, message.source, &message.data);
                let gossip = &mut self.swarm.behaviour_mut().gossipsub;
                gossip.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
                if acceptance == gossipsub::MessageAcceptance::Reject {
                    self.stats.verification_failures.fetch_add(1, Relaxed);
                    self.ban(
                        propagation_source,
                        "announced a header that does not verify".into(),
                    );
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetRecord(result),
                step,
                ..
            }) => {
                let found = match result {
                    Ok(kad::GetRecordOk::FoundRecord(peer_record)) => {
                        self.finds.get(&id).and_then(|(stream, _)| {
                            descriptor_from_record(&peer_record.record, stream)
                        })
                    }
                    _ => None,
                };
                if found.is_some() || step.last {
                    if let Some((_, reply)) = self.finds.remove(&id) {
                        let _ = reply.send(found);
                    }
                    if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        query.finish();
                    }
                }
            }
            BehaviourEvent::Kad(kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        record: Some(record),
                        source,
                        ..
                    },
            }) => {
                let valid = StreamId::from_bytes(record.key.as_ref())
                    .ok()
                    .and_then(|id| descriptor_from_record(&record, &id));
                if valid.is_some() {
                    let _ = self.swarm.behaviour_mut().kad.store_mut().put(record);
                } else {
                    self.ban(
                        source,
                        "stored a DHT record that is not a valid stream descriptor".into(),
                    );
                }
            }
            _ => {}
        }
    }

    /// Validates a gossiped announcement and feeds its headers to the scheduler.
    fn on_announce(
        &mut self,
        from: PeerId,
        author: Option<PeerId>,
        data: &[u8],
    ) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let Ok(announce) = pb::Announce::decode(data) else {
            return Reject;
        };
        let now = Instant::now();
        for header in announce.headers {
            let Ok(signed) = SignedHeader::from_pb(&header) else {
                return Reject;
            };
            let Some(key) = self.streams.get(&signed.info.id.stream).map(|s| s.key) else {
                return Ignore;
            };
            let Ok(verified) = signed.verify(&key) else {
                return Reject;
            };
            self.learn(verified, author.or(Some(from)), now);
        }
        Accept
    }

    /// A verified header of a followed stream: remember it and tell the scheduler.
    fn learn(&mut self, header: VerifiedHeader, holder: Option<PeerId>, now: Instant) {
        let id = header.id();
        if !self.wanted(&header) || lock(&self.store).contains(&id) {
            return;
        }
        let size = header.info().length;
        self.pending.entry(id).or_insert(header);
        self.scheduler.header_learned(id, size, holder, now);
    }

    fn on_inbound(&mut self, peer: PeerId, stream: libp2p::Stream) {
        if self.inbound >= MAX_INBOUND || self.banned.contains_key(&peer) {
            return; // dropping the stream resets it
        }
        self.inbound += 1;
        let framed = Framed::new(stream, self.config.limits, self.config.read_timeout);
        let store = self.store.clone();
        let internal = self.internal_tx.clone();
        let stats = self.stats.clone();
        let announce_only = self.config.announce_only;
        let faults = self.config.faults;
        self.tasks.spawn(async move {
            let started = Instant::now();
            match serve(framed, peer, store, internal, stats, announce_only, faults).await {
                Ok(Some((transfer, result))) => TaskDone::Download {
                    transfer,
                    via: Via::PushIn(peer),
                    started,
                    result: result.map(Some),
                },
                Ok(None) => TaskDone::Served {
                    peer,
                    result: Ok(()),
                },
                Err(e) => TaskDone::Served {
                    peer,
                    result: Err(e),
                },
            }
        });
    }

    fn on_internal(&mut self, internal: Internal) {
        let Internal::Offer {
            peer,
            header,
            reply,
        } = internal;
        let decision = match self.decide_offer(peer, header) {
            Ok(decision) => decision,
            Err(e) => {
                self.stats.verification_failures.fetch_add(1, Relaxed);
                self.ban(peer, format!("offered a bad header: {e}"));
                OfferReply::Reject(e)
            }
        };
        let _ = reply.send(decision);
    }

    fn decide_offer(
        &mut self,
        peer: PeerId,
        header: Option<pb::SegmentHeader>,
    ) -> Result<OfferReply, ExchangeError> {
        let header = header.ok_or(ExchangeError::Protocol("offer without a header"))?;
        let signed = SignedHeader::from_pb(&header)?;
        let Some(key) = self.streams.get(&signed.info.id.stream).map(|s| s.key) else {
            return Ok(OfferReply::Decline(DeclineReason::NotWanted));
        };
        let verified = signed.verify(&key)?;
        let id = verified.id();
        if lock(&self.store).contains(&id) {
            return Ok(OfferReply::Decline(DeclineReason::AlreadyHave));
        }
        if !self.wanted(&verified) {
            return Ok(OfferReply::Decline(DeclineReason::NotWanted));
        }
        let now = Instant::now();
        self.pending.entry(id).or_insert_with(|| verified.clone());
        Ok(
            match self
                .scheduler
                .offered(id, verified.info().length, peer, now)
            {
                Decision::Accept(transfer) => OfferReply::Accept(transfer, verified),
                Decision::Decline(reason) => OfferReply::Decline(reason),
            },
        )
    }

    fn run_actions(&mut self) {
        while let Some(action) = self.scheduler.poll_action() {
            let now = Instant::now();
            match action {
                Action::Offer { transfer, peer, id } => {
                    let Some(segment) = lock(&self.store).get(&id) else {
                        self.scheduler.finished(transfer, Outcome::Failed, now);
                        continue;
                    };
                    let mut control = self.control.clone();
                    let (limits, timeout) = (self.config.limits, self.config.read_timeout);
                    let faults = self.config.faults;
                    let handle = self.tasks.spawn(async move {
                        let bytes = segment.body.len() as u64;
                        let (header, body) = (
                            faults.header(segment.header.signed()),
                            faults.body(&segment.body),
                        );
                        let result = async {
                            let framed = open(&mut control, peer, limits, timeout).await?;
                            exchange::push(framed, &header, &body).await
                        }
                        .await;
                        TaskDone::Upload {
                            transfer,
                            peer,
                            bytes,
                            result,
                        }
                    });
                    self.aborts.insert(transfer, handle);
                }
                Action::Pull { transfer, peer, id } => {
                    let Some(key) = self.streams.get(&id.stream).map(|s| s.key) else {
                        self.scheduler.finished(transfer, Outcome::Failed, now);
                        continue;
                    };
                    let mut control = self.control.clone();
                    let (limits, timeout) = (self.config.limits, self.config.read_timeout);
                    let handle = self.tasks.spawn(async move {
                        let result = async {
                            let framed = open(&mut control, peer, limits, timeout).await?;
                            exchange::pull(framed, id, &key).await
                        }
                        .await;
                        TaskDone::Download {
                            transfer,
                            via: Via::Pull(peer),
                            started: now,
                            result,
                        }
                    });
                    self.aborts.insert(transfer, handle);
                }
                Action::FetchOrigin { transfer, id } => {
                    match self.origin_url(&id) {
                        Some((url, header)) => {
                            let http = self.http.clone();
                            let handle = self.tasks.spawn(async move {
                                match fetch_origin(&http, &url, &header).await {
                                    Ok(body) => TaskDone::Download {
                                        transfer,
                                        via: Via::Origin,
                                        started: now,
                                        result: Ok(Some((header, body))),
                                    },
                                    Err(error) => TaskDone::OriginFailed {
                                        transfer,
                                        id,
                                        error,
                                    },
                                }
                            });
                            self.aborts.insert(transfer, handle);
                        }
                        None => {
                            self.warn(format!("segment {id} is late and its stream names no origin to fetch it from"));
                            self.scheduler.finished(transfer, Outcome::Failed, now);
                        }
                    }
                }
                Action::Cancel { transfer } => {
                    if let Some(handle) = self.aborts.remove(&transfer) {
                        handle.abort();
                    }
                }
            }
        }
    }

    /// The origin URL of a segment: descriptor origin, then rendition playlist, then segment URI.
    fn origin_url(&self, id: &SegmentId) -> Option<(url::Url, VerifiedHeader)> {
        let header = self.pending.get(id)?.clone();
        let descriptor = self.streams.get(&id.stream)?.descriptor.descriptor();
        let rendition = descriptor
            .renditions
            .iter()
            .find(|r| r.id == id.rendition)?;
        let base = url::Url::parse(&descriptor.origin_url).ok()?;
        let playlist = base.join(&rendition.uri).ok()?;
        let url = playlist.join(&header.info().uri).ok()?;
        Some((url, header))
    }

    fn on_task_done(&mut self, done: TaskDone) {
        let now = Instant::now();
        match done {
            TaskDone::Download {
                transfer,
                via,
                started,
                result,
            } => {
                self.aborts.remove(&transfer);
                let peer = match via {
                    Via::Pull(p) | Via::PushIn(p) => Some(p),
                    Via::Origin => None,
                };
                let outcome = match result {
                    Ok(Some((header, body))) => {
                        let bytes = body.len() as u64;
                        let source = match via {
                            Via::Pull(p) => Source::Pull(p),
                            Via::PushIn(p) => Source::Push(p),
                            Via::Origin => Source::Origin,
                        };
                        self.stored(header, body, source, now);
                        Outcome::Done {
                            bytes,
                            elapsed: now.saturating_duration_since(started),
                        }
                    }
                    Ok(None) => Outcome::Absent,
                    Err(e) if e.is_misbehaviour() => {
                        self.stats.verification_failures.fetch_add(1, Relaxed);
                        if let Some(peer) = peer {
                            self.ban(peer, e.to_string());
                        }
                        Outcome::Misbehaved
                    }
                    Err(e) => {
                        tracing::debug!("download failed: {e}");
                        Outcome::Failed
                    }
                };
                self.inbound_finished(&via);
                self.scheduler.finished(transfer, outcome, now);
            }
            TaskDone::OriginFailed {
                transfer,
                id,
                error,
            } => {
                self.aborts.remove(&transfer);
                self.warn(format!("origin fetch of {id} failed: {error}"));
                self.scheduler.finished(transfer, Outcome::Failed, now);
            }
            TaskDone::Upload {
                transfer,
                peer,
                bytes,
                result,
            } => {
                self.aborts.remove(&transfer);
                let outcome = match result {
                    Ok(Pushed::Delivered) => {
                        self.stats.bytes_out.fetch_add(bytes, Relaxed);
                        Outcome::Done {
                            bytes,
                            elapsed: Duration::ZERO,
                        }
                    }
                    Ok(Pushed::Declined(reason)) => Outcome::Declined(reason),
                    Err(e) if e.is_misbehaviour() => {
                        self.ban(peer, e.to_string());
                        Outcome::Misbehaved
                    }
                    Err(_) => Outcome::Failed,
                };
                self.scheduler.finished(transfer, outcome, now);
            }
            TaskDone::Headers {
                peer,
                stream,
                result,
            } => match result {
                Ok(headers) => {
                    let Some(key) = self.streams.get(&stream).map(|s| s.key) else {
                        return;
                    };
                    for header in headers {
                        match SignedHeader::from_pb(&header)
                            .map_err(Into::into)
                            .and_then(|h| h.verify(&key))
                        {
                            Ok(verified) => self.learn(verified, Some(peer), now),
                            Err(e) => {
                                self.stats.verification_failures.fetch_add(1, Relaxed);
                                self.ban(peer, format!("listed a bad header: {e}"));
                                return;
                            }
                        }
                    }
                }
                Err(e) if e.is_misbehaviour() => self.ban(peer, e.to_string()),
                Err(e) => tracing::debug!(%peer, "header list failed: {e}"),
            },
            TaskDone::Served { peer, result } => {
                self.inbound = self.inbound.saturating_sub(1);
                if let Err(e) = result
                    && e.is_misbehaviour()
                {
                    self.stats.verification_failures.fetch_add(1, Relaxed);
                    self.ban(peer, e.to_string());
                }
            }
        }
    }

    fn inbound_finished(&mut self, via: &Via) {
        if matches!(via, Via::PushIn(_)) {
            self.inbound = self.inbound.saturating_sub(1);
        }
    }

    fn stored(&mut self, header: VerifiedHeader, body: Bytes, source: Source, now: Instant) {
        let id = header.id();
        let bytes = body.len() as u64;
        match source {
            Source::Origin => self.stats.origin_bytes_in.fetch_add(bytes, Relaxed),
            _ => self.stats.mesh_bytes_in.fetch_add(bytes, Relaxed),
        };
        self.pending.remove(&id);
        if let Some(dir) = &self.config.cache_dir {
            crate::cache::write(dir, &header, &body);
        }
        if self.config.faults.forge_headers {
            self.announce_forged(&header);
        }
        match lock(&self.store).insert(header, body) {
            Inserted::New { .. } => self.emit(Event::Stored {
                id,
                source,
                bytes,
                at: now,
            }),
            Inserted::AlreadyHeld => {
                self.stats.duplicate_bytes.fetch_add(bytes, Relaxed);
            }
            Inserted::TooLarge => self.warn(format!(
                "segment {id} ({bytes} bytes) is larger than the whole store"
            )),
        }
    }
}

impl Driver {
    /// Gossips a header that does not verify, under a fresh message id.
    fn announce_forged(&mut self, header: &VerifiedHeader) {
        let mut forged = self.config.faults.header(header.signed());
        forged.info.id.sequence += 1_000_000;
        let announce = pb::Announce {
            headers: vec![forged.to_pb()],
        };
        let topic = behaviour::topic(&header.id().stream, header.id().rendition);
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, announce.encode_to_vec());
    }
}

/// Opens a segment-exchange stream, dialling the peer if needed.
async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    limits: Limits,
    timeout: Duration,
) -> Result<Framed, ExchangeError> {
    let stream = tokio::time::timeout(timeout, control.open_stream(peer, exchange::PROTOCOL))
        .await
        .map_err(|_| ExchangeError::Timeout(timeout))?
        .map_err(|e| ExchangeError::Open(e.to_string()))?;
    Ok(Framed::new(stream, limits, timeout))
}

async fn fetch_origin(
    http: &reqwest::Client,
    url: &url::Url,
    header: &VerifiedHeader,
) -> Result<Bytes, String> {
    let body = fetch_url(http, url, header.info().length)
        .await
        .map_err(|e: FetchError| e.to_string())?;
    header
        .verify_body(&body, header.info().length)
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(body)
}

/// Serves one inbound stream. Returns the accepted push's transfer and result.
async fn serve(
    mut framed: Framed,
    peer: PeerId,
    store: Arc<Mutex<Store>>,
    internal: mpsc::Sender<Internal>,
    stats: Arc<Stats>,
    announce_only: bool,
    faults: Faults,
) -> Result<Option<(TransferId, Result<(VerifiedHeader, Bytes), ExchangeError>)>, ExchangeError> {
    match framed.read_message().await? {
        Body::Want(want) => {
            let id = SegmentId::from_pb(
                &want
                    .id
                    .ok_or(ExchangeError::Protocol("Want without an id"))?,
            )?;
            let segment = if announce_only {
                None
            } else {
                lock(&store).get(&id)
            };
            match segment {
                Some(segment) => {
                    let header = Some(faults.header(segment.header.signed()).to_pb());
                    framed.send(Body::Deliver(pb::Deliver { header })).await?;
                    framed.send_body(&faults.body(&segment.body)).await?;
                    stats
                        .bytes_out
                        .fetch_add(segment.body.len() as u64, Relaxed);
                }
                None => {
                    framed
                        .send(Body::Absent(pb::Absent {
                            id: Some(id.to_pb()),
                        }))
                        .await?
                }
            }
            framed.finish().await?;
            Ok(None)
        }
        Body::ListHeaders(list) => {
            let stream = StreamId::from_bytes(&list.stream_id)?;
            let mut headers = lock(&store).headers(&stream);
            // The newest are the most useful to a late joiner.
            let skip = headers.len().saturating_sub(MAX_LISTED);
            let headers = headers.drain(skip..).map(|h| h.to_pb()).collect();
            framed
                .send(Body::Announce(pb::Announce { headers }))
                .await?;
            framed.finish().await?;
            Ok(None)
        }
        Body::PushOffer(offer) => {
            let (reply, answer) = oneshot::channel();
            internal
                .send(Internal::Offer {
                    peer,
                    header: offer.header,
                    reply,
                })
                .await
                .map_err(|_| ExchangeError::Closed)?;
            match answer.await.map_err(|_| ExchangeError::Closed)? {
                OfferReply::Accept(transfer, header) => {
                    framed.send(Body::PushAccept(pb::PushAccept {})).await?;
                    let result = framed.read_body(&header).await.map(|body| (header, body));
                    Ok(Some((transfer, result)))
                }
                OfferReply::Decline(reason) => {
                    framed
                        .send(Body::PushDecline(pb::PushDecline {
                            reason: reason as i32,
                        }))
                        .await?;
                    framed.finish().await?;
                    Ok(None)
                }
                OfferReply::Reject(e) => Err(e),
            }
        }
        _ => Err(ExchangeError::Protocol("unexpected first message")),
    }
}

fn descriptor_from_record(record: &kad::Record, id: &StreamId) -> Option<VerifiedDescriptor> {
    let msg = pb::StreamDescriptor::decode(record.value.as_slice()).ok()?;
    SignedDescriptor::from_pb(&msg).ok()?.verify_for(id).ok()
}
