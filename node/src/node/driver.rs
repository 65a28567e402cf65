//! The driver: owns the swarm and the [`Mesh`], translates between them.
//!
//! One loop (see [`Driver::run`]) waits for whatever comes first — a swarm
//! event, a command from a [`Node`] handle, an inbound stream, an offer
//! from a serving task, a finished task, the mesh's timeout — reports it to
//! the mesh, then performs the mesh's outputs. Policy lives in the mesh; the
//! driver owns sockets, tasks and libp2p's own bookkeeping (the DHT, relay
//! reservations, connection state).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::RecordStore as _;
use libp2p::{Multiaddr, PeerId, Swarm, kad, noise, tcp, yamux};
use meshcast_proto::{SegmentId, SignedDescriptor, StreamId, VerifiedDescriptor, pb};
use prost::Message as _;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::handle::{Arrivals, Command, Event, Info, Node, NodeError, Source, Stats, lock};
use super::nat::{Change, Nat};
use super::serve::{OfferRequest, Offered, Shared, serve};
use super::tasks::{Done, Tasks, faulty};
use super::uploads::Uploads;
use crate::arrival::{Announcer, Arrived};
use crate::behaviour::{self, Behaviour};
use crate::cache::Cache;
use crate::config::Config;
use crate::exchange::{self, Framed, Outgoing};
use crate::ingest::source::FetchLimits;
use crate::mesh::scheduler::TransferId;
use crate::mesh::{Acceptance, Mesh, OfferReply, Output, Pushed, Seed, Topic};
use crate::metrics::{self, Class, Direction, LocalGauge};
use crate::uplink::Uplink;

/// Least time between re-publications of our DHT records on new connections.
const REPUT_INTERVAL: Duration = Duration::from_secs(5);
/// Providers of a followed stream dialled per lookup.
pub(super) const MAX_PROVIDER_DIALS: usize = 8;
/// Concurrent inbound streams; more are reset at once.
const MAX_INBOUND: usize = 128;
/// Concurrent inbound streams of one peer: a peer that holds its share open
/// (trickling, or never reading) leaves the rest to the others. An honest
/// peer needs a few: pulls and offers of the segments of a couple of
/// renditions, and a header list.
pub(super) const MAX_INBOUND_PER_PEER: usize = 16;

/// Valid descriptors a lookup waits for before it answers (or until the
/// query ends): the newest of them wins, so a peer that keeps an old
/// descriptor, or replays one, cannot answer alone.
pub(super) const FIND_QUORUM: usize = 3;

/// A DHT lookup of a stream's descriptor in flight.
pub(super) struct Find {
    pub(super) stream: StreamId,
    pub(super) reply: oneshot::Sender<Option<VerifiedDescriptor>>,
    /// The newest valid descriptor found so far.
    pub(super) newest: Option<VerifiedDescriptor>,
    /// Valid descriptors found so far.
    pub(super) valid: usize,
}

/// Owns the swarm and everything that moves. Run it with [`Driver::run`].
pub struct Driver {
    pub(super) config: Config,
    pub(super) swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    /// Taken by [`Driver::run`], which drains it on a task of its own.
    incoming: Option<libp2p_stream::IncomingStreams>,
    commands: mpsc::Receiver<Command>,
    offers: mpsc::Receiver<OfferRequest>,
    /// Downloads whose body has started to arrive (cut-through), and where
    /// they say so; `arrived_tx` is `None` when the node does not forward
    /// segments before it holds them.
    arrived: mpsc::Receiver<Arrived>,
    arrived_tx: Option<mpsc::Sender<Arrived>>,
    /// Segments arriving, by the download that brings them: pushes of them
    /// ([`Output::Forward`]) stream from here.
    arrivals: Arrivals,
    shared: Shared,
    pub(super) mesh: Mesh<PeerId>,
    events: broadcast::Sender<Event>,
    pub(super) stats: Arc<Stats>,
    http: reqwest::Client,
    tasks: Tasks,
    inbound: usize,
    inbound_by_peer: HashMap<PeerId, usize>,
    pub(super) finds: HashMap<kad::QueryId, Find>,
    published: Vec<kad::Record>,
    last_reput: Option<Instant>,
    pub(super) dials: HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<(), NodeError>>>,
    pub(super) nat: Nat,
    /// Gossip views to heal; see [`Driver::heal_gossip`].
    pub(super) gossip_heal: GossipHeal,
    /// A tracing span per connected peer (`peer` field), opened with its
    /// first connection and closed with its last: what is logged about the
    /// peer, and the transfers with it, is logged inside it.
    pub(super) peer_spans: HashMap<PeerId, tracing::Span>,
    gauges: Gauges,
    cache: Option<Arc<Mutex<Cache>>>,
}

/// The gauges one node contributes to (see [`crate::metrics::LocalGauge`]).
struct Gauges {
    peers: LocalGauge,
    store_bytes: LocalGauge,
    store_segments: LocalGauge,
    cache_bytes: LocalGauge,
    upload_cap: LocalGauge,
}

impl Node {
    /// Builds the node and starts listening. Nothing runs until the returned
    /// [`Driver`] is polled.
    pub fn new(config: Config, key: Keypair) -> Result<(Node, Driver), NodeError> {
        Driver::new(config, key)
    }
}

impl Driver {
    fn new(config: Config, key: Keypair) -> Result<(Node, Driver), NodeError> {
        let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
        let peer_id = key.public().to_peer_id();
        let signer = key.clone();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| setup(&e))?
            // Relayed connections are secured and multiplexed end to end
            // (Noise, Yamux) inside the circuit, which the relay cannot read.
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| setup(&e))?
            .with_behaviour(|key, relay_client| {
                Behaviour::new(key, relay_client, &config)
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(|e| setup(&e))?
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
        if config.relay_server && config.external.is_empty() {
            tracing::warn!(
                "relay server without an external address: it refuses reservations until one is confirmed (set `external`)"
            );
        }
        let nat = Nat::new(&config.relays, config.redial_interval)?;
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control.accept(exchange::PROTOCOL).map_err(|e| setup(&e))?;
        let cache = config
            .cache_dir
            .as_deref()
            .map(|dir| Cache::open(dir, config.cache_max_bytes))
            .transpose()
            .map_err(|e| NodeError::Setup(format!("cache directory: {e}")))?;
        let mut gauges = Gauges {
            peers: LocalGauge::new(metrics::PEERS_CONNECTED),
            store_bytes: LocalGauge::new(metrics::STORE_BYTES),
            store_segments: LocalGauge::new(metrics::STORE_SEGMENTS),
            cache_bytes: LocalGauge::new(metrics::CACHE_BYTES),
            upload_cap: LocalGauge::new(metrics::UPLOAD_CAP),
        };
        gauges
            .cache_bytes
            .set(cache.as_ref().map_or(0, Cache::used_bytes));
        let me = peer_id.to_bytes();
        let seed = u64::from_le_bytes(me[2..10].try_into().unwrap_or_default());
        let mesh = Mesh::new(config.mesh(cache.as_ref().map(Cache::max_bytes)), &me, seed);
        let cache = cache.map(|c| Arc::new(Mutex::new(c)));
        let (commands_tx, commands) = mpsc::channel(256);
        let (offers_tx, offers) = mpsc::channel(256);
        // One message per download at most, and downloads are bounded.
        let (arrived_tx, arrived) = mpsc::channel(256);
        let arrived_tx = config
            .mesh(None)
            .scheduler
            .cut_through
            .then_some(arrived_tx);
        let (events, _) = broadcast::channel(4096);
        let stats = Arc::new(Stats::default());
        let http = crate::origin::client(&FetchLimits::default(), config.allow_private_origins)
            .map_err(|e| NodeError::Setup(format!("HTTP client: {e}")))?;
        let arrivals = Arrivals::default();
        let node = Node {
            arrivals: arrivals.clone(),
            peer_id,
            key: signer,
            cache: cache.clone(),
            commands: commands_tx,
            store: mesh.store().clone(),
            events: events.clone(),
            stats: stats.clone(),
        };
        let uploads = Uploads::new(config.scheduler.max_upload_bytes);
        let uplink = Uplink::new(config.max_upload);
        gauges.upload_cap.set(config.max_upload.unwrap_or(0));
        let shared = Shared {
            store: mesh.store().clone(),
            cache: cache.clone(),
            offers: offers_tx,
            announce_only: config.announce_only,
            faults: config.faults,
            uploads: uploads.clone(),
            serving_wait: config.read_timeout,
            uplink: uplink.clone(),
            scheduler: config.scheduler.clone(),
            stats: stats.clone(),
        };
        let driver = Driver {
            tasks: Tasks::new(config.limits, config.pace(), uploads, config.faults, uplink),
            config,
            swarm,
            control,
            incoming: Some(incoming),
            commands,
            offers,
            arrived,
            arrived_tx,
            arrivals,
            shared,
            mesh,
            events,
            stats,
            http,
            inbound: 0,
            inbound_by_peer: HashMap::new(),
            finds: HashMap::new(),
            published: Vec::new(),
            last_reput: None,
            dials: HashMap::new(),
            gossip_heal: GossipHeal::default(),
            nat,
            peer_spans: HashMap::new(),
            gauges,
            cache,
        };
        Ok((node, driver))
    }

    /// Runs the node until every [`Node`] handle is dropped.
    pub async fn run(mut self) {
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&behaviour::gateways_topic())
        {
            tracing::warn!("cannot subscribe to gateway records: {e}");
        }
        for addr in self.config.bootstrap.clone() {
            self.dial_bootstrap(addr);
        }
        self.reserve_relays();
        // Configured external addresses are confirmed without an event.
        self.nat.update_kad_mode(&mut self.swarm);
        // libp2p-stream hands inbound streams over a channel with room for
        // one and resets a stream that arrives while the previous one is
        // still queued (rust-libp2p#5651). Polled from the loop below, among
        // everything else, it lost most streams of a burst (two renditions'
        // offers at once, a late joiner's pulls). A task that only moves them
        // into a deeper queue takes each as soon as it lands.
        let (inbound_tx, mut inbound) = mpsc::channel(MAX_INBOUND);
        let forwarder = self.incoming.take().map(|mut incoming| {
            tokio::spawn(async move {
                while let Some(stream) = incoming.next().await {
                    if inbound_tx.send(stream).await.is_err() {
                        break;
                    }
                }
            })
        });
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        let mut last_redial = Instant::now();
        loop {
            let wake = self
                .mesh
                .poll_timeout(Instant::now())
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((peer, stream)) = inbound.recv() => self.on_inbound(peer, stream),
                Some(offer) = self.offers.recv() => self.on_offer(offer),
                Some(arrived) = self.arrived.recv() => self.on_arrived(arrived),
                done = self.tasks.next() => self.on_done(done),
                _ = tokio::time::sleep_until(wake) => self.mesh.handle_timeout(Instant::now()),
                _ = housekeeping.tick() => {
                    if last_redial.elapsed() >= self.config.redial_interval {
                        last_redial = Instant::now();
                        self.redial_if_isolated();
                    }
                    self.reserve_relays();
                    self.heal_gossip();
                }
            }
            self.perform();
        }
        if let Some(forwarder) = forwarder {
            forwarder.abort();
        }
        self.tasks.abort_all();
    }

    pub(super) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub(super) fn warn(&self, message: String) {
        tracing::warn!("{message}");
        self.emit(Event::Warning { message });
    }

    pub(super) fn dial_bootstrap(&mut self, addr: Multiaddr) {
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
        let routing_entries: usize = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|bucket| bucket.num_entries())
            .sum();
        let connected = self.swarm.connected_peers().next().is_some();
        if self.config.bootstrap.is_empty() || (connected && routing_entries > 0) {
            return;
        }
        tracing::info!("routing table empty or no peers connected; re-dialling bootstrap peers");
        for addr in self.config.bootstrap.clone() {
            self.dial_bootstrap(addr);
        }
    }

    fn reserve_relays(&mut self) {
        for warning in self.nat.reserve(&mut self.swarm) {
            self.warn(warning);
        }
    }

    /// The span of a connected peer, or a new one for a peer that is not (any more).
    pub(super) fn peer_span(&self, peer: PeerId) -> tracing::Span {
        self.peer_spans
            .get(&peer)
            .cloned()
            .unwrap_or_else(|| peer_span(peer))
    }

    /// Tells the mesh what a connection change means for it.
    pub(super) fn on_change(&mut self, change: Change) {
        let now = Instant::now();
        match change {
            Change::Up(peer) => self.mesh.handle_peer_up(peer, now),
            Change::Down(peer) => self.mesh.handle_peer_down(peer, now),
            Change::Upgraded(peer) => self.emit(Event::RelayUpgraded { peer }),
        }
    }

    pub(super) fn peers_changed(&mut self) {
        let connected = self.swarm.connected_peers().count() as u64;
        self.gauges.peers.set(connected);
    }

    /// Records put while few peers were connected reach more of the DHT on a
    /// new connection; at most every REPUT_INTERVAL, not per connection.
    pub(super) fn reput_records(&mut self) {
        if self
            .last_reput
            .is_some_and(|t| t.elapsed() < REPUT_INTERVAL)
        {
            return;
        }
        self.last_reput = Some(Instant::now());
        for record in self.published.clone() {
            let _ = self
                .swarm
                .behaviour_mut()
                .kad
                .put_record(record, kad::Quorum::One);
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Info(reply) => {
                let _ = reply.send(Info {
                    peer_id: *self.swarm.local_peer_id(),
                    listen_addrs: self.swarm.listeners().cloned().collect(),
                    external_addrs: self.config.external.clone(),
                    connected: self.swarm.connected_peers().copied().collect(),
                    direct: self.nat.direct_peers().collect(),
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
            Command::Follow(descriptor, seed, reply) => {
                self.mesh.follow(descriptor, seed, now);
                let _ = reply.send(());
            }
            Command::Demand(id, within) => self.mesh.demand(id, within, now),
            Command::Publish(descriptor, reply) => {
                let id = descriptor.stream_key().id;
                let value = descriptor.signed().to_pb().encode_to_vec();
                let record = kad::Record::new(id.as_bytes().to_vec(), value);
                let kad = &mut self.swarm.behaviour_mut().kad;
                if let Err(e) = kad.put_record(record.clone(), kad::Quorum::One) {
                    tracing::warn!("storing the stream descriptor locally failed: {e}");
                }
                // A newer descriptor (a live stream that ended) replaces ours.
                self.published.retain(|r| r.key != record.key);
                self.published.push(record);
                self.mesh.follow(descriptor, Seed::All, now);
                let _ = reply.send(());
            }
            Command::KnownDescriptor(id, reply) => {
                let _ = reply.send(self.known_descriptor(&id));
            }
            Command::PublishGateway(record, reply) => {
                let gossiped = match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(behaviour::gateways_topic(), record)
                {
                    Err(e) => {
                        tracing::debug!("gateway record not gossiped: {e}");
                        false
                    }
                    Ok(_) => {
                        tracing::debug!("gateway record gossiped");
                        true
                    }
                };
                let _ = reply.send(gossiped);
            }
            Command::Followed(id, reply) => {
                let _ = reply.send(self.mesh.descriptor(&id).cloned());
            }
            Command::Unfollow(id, reply) => {
                self.mesh.unfollow(&id, now);
                let _ = reply.send(());
            }
            Command::FindStream(id, reply) => {
                let key = kad::RecordKey::new(id.as_bytes());
                if let Some(found) = self.known_descriptor(&id) {
                    let _ = reply.send(Some(found));
                    return;
                }
                let query = self.swarm.behaviour_mut().kad.get_record(key);
                self.finds.insert(
                    query,
                    Find {
                        stream: id,
                        reply,
                        newest: None,
                        valid: 0,
                    },
                );
            }
            Command::Inject(header, body, reply) => {
                self.mesh.inject(header, body, now);
                let _ = reply.send(());
            }
        }
    }

    /// The descriptor of `id` in the local DHT store: the newest this node
    /// has seen (followed, published, or put to it).
    fn known_descriptor(&mut self, id: &StreamId) -> Option<VerifiedDescriptor> {
        let key = kad::RecordKey::new(id.as_bytes());
        let local = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .get(&key)
            .map(|r| r.into_owned());
        local.and_then(|r| descriptor_from_record(&r, id))
    }

    fn on_inbound(&mut self, peer: PeerId, stream: libp2p::Stream) {
        let of_peer = self.inbound_by_peer.get(&peer).copied().unwrap_or(0);
        if self.inbound >= MAX_INBOUND || of_peer >= MAX_INBOUND_PER_PEER {
            // Dropping the stream resets it. Not misbehaviour: the peer may
            // just be in a hurry (it retries elsewhere or later).
            metrics::inbound_refused();
            return;
        }
        if self.mesh.is_banned(&peer) {
            return;
        }
        // Entries only for peers with a stream open: the map stays as small
        // as the streams it counts.
        self.inbound_by_peer.insert(peer, of_peer + 1);
        self.inbound += 1;
        let framed = Framed::new(stream, self.config.limits, self.config.read_timeout)
            .with_pace(self.config.pace())
            .with_throttle(self.config.faults.upload_rate)
            .with_corruption(self.config.faults.corrupt_bodies)
            .with_uplink(self.shared.uplink.clone());
        let shared = self.shared.clone();
        let span = self.peer_span(peer);
        use tracing::Instrument as _;
        self.tasks
            .spawn(async move { serve(framed, peer, shared).await }.instrument(span));
    }

    fn on_offer(&mut self, offer: OfferRequest) {
        let reply = self
            .mesh
            .handle_offer(offer.peer, offer.header.as_ref(), Instant::now());
        let answer = match reply {
            OfferReply::Accept { transfer, header } => Offered::Accept {
                transfer,
                header,
                cancel: self.tasks.cancellation(transfer),
                announcer: self.announcer(transfer),
            },
            OfferReply::Decline(reason) => Offered::Decline(reason),
            OfferReply::Reject(reason) => Offered::Reject(reason),
        };
        let _ = offer.reply.send(answer);
    }

    /// Where download `transfer` says its body is arriving, if the node
    /// forwards segments as they arrive.
    fn announcer(&self, transfer: TransferId) -> Option<Announcer> {
        let tx = self.arrived_tx.clone()?;
        Some(Announcer { transfer, tx })
    }

    fn on_arrived(&mut self, arrived: Arrived) {
        let Arrived { transfer, arrival } = arrived;
        let header = arrival.header().clone();
        let id = header.id();
        if self.mesh.handle_arriving(transfer, header, Instant::now()) {
            lock(&self.arrivals).insert(id, (transfer, arrival));
            self.emit(Event::Arriving { id });
        }
    }

    fn arrival(&self, id: &SegmentId) -> Option<Arc<crate::arrival::Arrival>> {
        lock(&self.arrivals).get(id).map(|(_, a)| a.clone())
    }

    /// A download ended: pushes forwarding it no longer start from here.
    fn download_ended(&mut self, transfer: TransferId) {
        lock(&self.arrivals).retain(|_, (t, _)| *t != transfer);
    }

    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::Download { transfer, result } => {
                self.download_ended(transfer);
                self.mesh.handle_download(transfer, result, now);
            }
            Done::Offered {
                transfer,
                peer,
                body,
                span,
                result,
            } => match result {
                Ok(exchange::Offered::Accepted(framed)) => {
                    // A transfer the scheduler gave up meanwhile is dropped
                    // here, and its stream with it.
                    if self.mesh.push_accepted(transfer) {
                        if matches!(body, Outgoing::Arriving(_)) {
                            metrics::forward();
                            self.stats.forwards.fetch_add(1, Relaxed);
                        }
                        self.tasks.send_pushed(transfer, peer, *framed, body, span);
                    }
                }
                Ok(exchange::Offered::Declined(reason)) => {
                    self.mesh
                        .handle_upload(transfer, peer, Ok(Pushed::Declined(reason)), now);
                }
                Err(broken) => self.mesh.handle_upload(transfer, peer, Err(broken), now),
            },
            Done::Upload {
                transfer,
                peer,
                bytes,
                forwarded,
                result,
            } => {
                if forwarded && result.is_err() {
                    self.stats.forwards_failed.fetch_add(1, Relaxed);
                }
                if result.is_ok() {
                    metrics::bytes(Direction::Out, Class::Mesh, bytes);
                    self.stats.mesh_bytes_out.fetch_add(bytes, Relaxed);
                }
                self.mesh.handle_upload(transfer, peer, result, now);
            }
            Done::Headers {
                peer,
                stream,
                page,
                result,
            } => {
                if let Err(e) = &result {
                    self.peer_span(peer)
                        .in_scope(|| tracing::debug!("header list failed: {e:?}"));
                }
                self.mesh.handle_headers(peer, stream, page, result, now);
            }
            Done::Inbound {
                peer,
                download,
                result,
            } => {
                self.inbound = self.inbound.saturating_sub(1);
                if let Some(count) = self.inbound_by_peer.get_mut(&peer) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.inbound_by_peer.remove(&peer);
                    }
                }
                if let Some((transfer, result)) = download {
                    self.download_ended(transfer);
                    self.mesh.handle_download(transfer, result.map(Some), now);
                }
                if let Err(crate::mesh::Broken::Misbehaved { reason, failure }) = result {
                    self.mesh.handle_misbehaviour(peer, reason, failure, now);
                }
            }
            Done::CacheLoaded {
                stream,
                loaded,
                on_disk,
            } => self.mesh.handle_cache_loaded(stream, loaded, on_disk, now),
            Done::CacheWritten {
                id,
                written,
                deleted,
                used,
            } => {
                self.gauges.cache_bytes.set(used);
                self.mesh.handle_cache_written(id, written, deleted, now);
            }
            Done::CacheRead { id, read } => self.mesh.handle_cache_read(id, read, now),
        }
    }

    /// Performs the mesh's outputs.
    fn perform(&mut self) {
        let mut store_changed = false;
        while let Some(output) = self.mesh.poll_output() {
            match output {
                Output::Push {
                    transfer,
                    peer,
                    header,
                    body,
                } => {
                    let (header, body) = faulty(&self.config.faults, header.signed(), &body);
                    let span = self.peer_span(peer);
                    self.tasks.push(
                        self.control.clone(),
                        transfer,
                        peer,
                        (header, Outgoing::Held(body)),
                        span,
                    );
                }
                Output::Forward {
                    transfer,
                    peer,
                    header,
                } => match self.arrival(&header.id()) {
                    Some(arrival) => {
                        let body = Outgoing::Arriving(arrival);
                        let header = self.config.faults.header(header.signed());
                        let span = self.peer_span(peer);
                        self.tasks
                            .push(self.control.clone(), transfer, peer, (header, body), span);
                    }
                    // Never expected (the core asks only while the download
                    // runs). Not a failure: that would have the core offer it
                    // again at once, and again; the peer pulls it instead.
                    None => self.mesh.handle_upload(
                        transfer,
                        peer,
                        Ok(Pushed::Declined(pb::DeclineReason::Unspecified)),
                        Instant::now(),
                    ),
                },
                Output::Pull {
                    transfer,
                    peer,
                    id,
                    key,
                } => {
                    let span = self.peer_span(peer);
                    let announcer = self.announcer(transfer);
                    self.tasks.pull(
                        self.control.clone(),
                        transfer,
                        peer,
                        (id, key),
                        announcer,
                        span,
                    );
                }
                Output::FetchOrigin {
                    transfer,
                    url,
                    header,
                } => {
                    metrics::late(metrics::Late::Mesh);
                    tracing::debug!(
                        "{} is late in the mesh; fetching it from {url}",
                        header.id()
                    );
                    let allow_private = self.config.allow_private_origins;
                    self.tasks.fetch_origin(
                        self.http.clone(),
                        transfer,
                        (url, allow_private),
                        header,
                    );
                }
                Output::Cancel { transfer } => self.tasks.cancel(transfer),
                Output::RequestHeaders {
                    peer,
                    stream,
                    page,
                    after,
                } => {
                    let span = self.peer_span(peer);
                    self.tasks.list_headers(
                        self.control.clone(),
                        peer,
                        (stream, page, after),
                        span,
                    );
                }
                Output::Follow { descriptor, first } => self.follow(&descriptor, first),
                Output::Unfollow { stream } => self.unfollow(&stream),
                Output::Gossip { topic, announce } => {
                    let Topic { stream, rendition } = topic;
                    if let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(behaviour::topic(&stream, rendition), announce.to_vec())
                    {
                        // No subscribed peer, or none that gossip trusts (its
                        // peer score): nodes learn of the segment only when
                        // it is pushed to them. Worth seeing without debug logs.
                        tracing::info!("announcement on {stream}/{rendition} not gossiped: {e}");
                    }
                }
                Output::Ban {
                    peer,
                    reason,
                    failure,
                } => {
                    if let Some(failure) = failure {
                        metrics::verification_failure(failure);
                    }
                    self.ban(peer, reason);
                }
                Output::Unban { peer } => {
                    let behaviour = self.swarm.behaviour_mut();
                    behaviour.blocked.unblock_peer(peer);
                    behaviour.gossipsub.remove_blacklisted_peer(&peer);
                }
                Output::Stored {
                    header,
                    source,
                    bytes,
                } => {
                    store_changed = true;
                    self.complete_arrival(&header.id());
                    self.stored(header, source, bytes);
                }
                Output::WriteCache { header, body } => {
                    if let Some(cache) = self.cache.clone() {
                        self.tasks.write_cache(cache, header, body);
                    }
                }
                Output::ReadCache { id } => {
                    if let Some(cache) = self.cache.clone() {
                        self.tasks.read_cache(cache, id);
                    }
                }
                Output::VerificationFailed(failure) => metrics::verification_failure(failure),
                Output::Warning(message) => self.warn(message),
            }
        }
        if store_changed {
            let (bytes, segments) = {
                let store = self.mesh.store().lock();
                (store.used_bytes(), store.len() as u64)
            };
            self.gauges.store_bytes.set(bytes);
            self.gauges.store_segments.set(segments);
        }
    }

    /// The segment is held: pushes forwarding it while it arrived finish
    /// from the held body if another download brought it first.
    fn complete_arrival(&mut self, id: &SegmentId) {
        let arrival = lock(&self.arrivals).remove(id);
        if let Some((_, arrival)) = arrival
            && let Some(segment) = self.mesh.store().lock().get(id)
        {
            arrival.complete_from(&segment.body);
        }
    }

    fn stored(&mut self, header: meshcast_proto::VerifiedHeader, source: Source, bytes: u64) {
        let at = Instant::now();
        match source {
            Source::Origin => {
                self.stats.origin_bytes_in.fetch_add(bytes, Relaxed);
                metrics::bytes(Direction::In, Class::Origin, bytes);
            }
            Source::Push(_) | Source::Pull(_) => {
                self.stats.mesh_bytes_in.fetch_add(bytes, Relaxed);
                metrics::bytes(Direction::In, Class::Mesh, bytes);
            }
            Source::Injected | Source::Cache | Source::Assembled => {}
        }
        metrics::segment_received(source.label());
        if matches!(source, Source::Push(_) | Source::Pull(_) | Source::Origin) {
            metrics::propagation(header.info().published_at_us, crate::unix_now_us());
        }
        if self.config.faults.forge_headers && source != Source::Injected {
            self.announce_forged(&header);
        }
        self.emit(Event::Stored {
            id: header.id(),
            source,
            bytes,
            at,
        });
    }

    /// Subscribes to a followed stream's announcements and makes it findable.
    fn follow(&mut self, descriptor: &VerifiedDescriptor, first: bool) {
        let key = descriptor.stream_key();
        let issued_at_us = descriptor.descriptor().issued_at_us;
        let behaviour = self.swarm.behaviour_mut();
        for rendition in &descriptor.descriptor().renditions {
            let topic = behaviour::topic(&key.id, rendition.id);
            if let Err(e) = behaviour.gossipsub.subscribe(&topic) {
                tracing::warn!("cannot subscribe to {topic}: {e}");
            }
            let _ = behaviour
                .gossipsub
                .set_topic_params(topic, behaviour::topic_score_params());
        }
        let record_key = kad::RecordKey::new(key.id.as_bytes());
        // Every follower answers DHT lookups of the descriptor itself, so a
        // stream stays findable once its publisher is gone (a VOD) or while
        // the publisher's own put has not reached the DHT yet.
        let stored = behaviour
            .kad
            .store_mut()
            .get(&record_key)
            .map(|r| r.into_owned());
        let newer_stored = stored
            .and_then(|r| descriptor_from_record(&r, &key.id))
            .is_some_and(|d| d.descriptor().issued_at_us > issued_at_us);
        let value = descriptor.signed().to_pb().encode_to_vec();
        if !newer_stored
            && let Err(e) = behaviour
                .kad
                .store_mut()
                .put(kad::Record::new(record_key.clone(), value))
        {
            tracing::debug!("the descriptor is not kept in the local DHT store: {e}");
        }
        let _ = behaviour.kad.start_providing(record_key.clone());
        // Other holders of the stream, to connect to: no tracker needed.
        behaviour.kad.get_providers(record_key);
        if first && let Some(cache) = self.cache.clone() {
            let max = self.config.limits.max_segment;
            self.tasks
                .load_cache(cache, descriptor, max, self.config.store_max_bytes);
        }
    }

    fn unfollow(&mut self, stream: &StreamId) {
        let behaviour = self.swarm.behaviour_mut();
        let topics: Vec<_> = behaviour
            .gossipsub
            .topics()
            .filter(|t| t.as_str().starts_with(&format!("meshcast/v1/{stream}/")))
            .cloned()
            .collect();
        for topic in topics {
            behaviour
                .gossipsub
                .unsubscribe(&libp2p::gossipsub::IdentTopic::new(topic.into_string()));
        }
        behaviour
            .kad
            .stop_providing(&kad::RecordKey::new(stream.as_bytes()));
    }

    fn ban(&mut self, peer: PeerId, reason: String) {
        self.peer_span(peer)
            .in_scope(|| tracing::warn!("banning peer: {reason}"));
        metrics::ban();
        let behaviour = self.swarm.behaviour_mut();
        behaviour.blocked.block_peer(peer);
        behaviour.gossipsub.blacklist_peer(&peer);
        behaviour.kad.remove_peer(&peer);
        self.stats.bans.fetch_add(1, Relaxed);
        self.emit(Event::Banned { peer, reason });
    }

    /// Gossips a header that does not verify, under a fresh message id
    /// (test-only fault).
    fn announce_forged(&mut self, header: &meshcast_proto::VerifiedHeader) {
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

    /// Gossip's verdict on an announcement, from the mesh. A message on a
    /// topic that is not one of ours is rejected: we never subscribed to it.
    pub(super) fn on_announce(
        &mut self,
        from: PeerId,
        author: Option<PeerId>,
        topic: &libp2p::gossipsub::TopicHash,
        data: &[u8],
    ) -> libp2p::gossipsub::MessageAcceptance {
        use libp2p::gossipsub::MessageAcceptance as M;
        if *topic == behaviour::gateways_topic().hash() {
            return self.on_gateway_record(data);
        }
        let Some(topic) = behaviour::parse_topic(topic) else {
            return M::Reject;
        };
        match self
            .mesh
            .handle_announce(from, author, topic, data, Instant::now())
        {
            Acceptance::Accept => M::Accept,
            Acceptance::Ignore => M::Ignore,
            Acceptance::Reject => M::Reject,
        }
    }
}

/// How long a connected peer may go without telling us its subscriptions.
const GOSSIP_HEAL_AFTER: Duration = Duration::from_secs(10);
/// Least time between the first two heals of one peer; it doubles with each
/// heal that did not help, up to [`GOSSIP_HEAL_MAX_GAP`]. Short at first: a
/// heal fails when the peer still holds the dead connection of our previous
/// run (until its idle timeout), and then only the next one helps.
const GOSSIP_HEAL_GAP: Duration = Duration::from_secs(10);
const GOSSIP_HEAL_MAX_GAP: Duration = Duration::from_secs(300);

/// When a peer was last healed, and how long until it may be again.
#[derive(Debug, Clone, Copy)]
struct Healed {
    at: Instant,
    gap: Duration,
}

/// Peers connected, since when and where, and when each was last healed.
#[derive(Default)]
pub(super) struct GossipHeal {
    pub connected: HashMap<PeerId, (Instant, Multiaddr)>,
    healed: HashMap<PeerId, Healed>,
    /// Disconnected to heal: dialled again once their last connection closed.
    pub redial: HashMap<PeerId, Multiaddr>,
}

impl Driver {
    /// Heals gossip views that came apart. Gossipsub tells a peer our
    /// subscriptions only on its first connection to us: a peer that
    /// restarted with the same identity and reconnected before we noticed
    /// its old connection die never hears them, so it cannot publish
    /// (`NoPeersSubscribedToTopic`) while we keep forwarding to it
    /// (rust-libp2p #5097). Every meshcast node subscribes to the gateways
    /// topic, so a peer connected for [`GOSSIP_HEAL_AFTER`] whose
    /// subscriptions we do not know is such a case, on one side or the
    /// other: drop every connection to it and dial it again once they are
    /// gone, so both sides start over. Again after 10 s if that did not help,
    /// then less and less often (up to every 5 min: a peer that really does
    /// not subscribe is not churned for good).
    fn heal_gossip(&mut self) {
        let now = Instant::now();
        let gateways = behaviour::gateways_topic().hash();
        let heal = &mut self.gossip_heal;
        let gossip = &self.swarm.behaviour().gossipsub;
        // A peer whose subscriptions we know is well: its next trouble
        // starts from the short gap again.
        for (peer, topics) in gossip.all_peers() {
            if topics.contains(&&gateways) {
                heal.healed.remove(peer);
            }
        }
        heal.healed.retain(|peer, h| {
            heal.connected.contains_key(peer) || now.duration_since(h.at) < h.gap
        });
        let speaks_gossipsub: std::collections::HashSet<&PeerId> = gossip
            .peer_protocol()
            // `PeerKind` is not exported; its names are.
            .filter(|(_, kind)| kind.as_static_ref().starts_with("Gossipsub"))
            .map(|(peer, _)| peer)
            .collect();
        let stale: Vec<(PeerId, Multiaddr)> = gossip
            .all_peers()
            .filter(|(peer, topics)| {
                speaks_gossipsub.contains(peer) && !topics.contains(&&gateways)
            })
            .filter_map(|(peer, _)| {
                let (since, addr) = heal.connected.get(peer)?;
                let due = heal
                    .healed
                    .get(peer)
                    .is_none_or(|h| now.duration_since(h.at) >= h.gap);
                (now.duration_since(*since) >= GOSSIP_HEAL_AFTER && due)
                    .then(|| (*peer, addr.clone()))
            })
            .collect();
        for (peer, addr) in stale {
            tracing::debug!(%peer, "gossip views apart: reconnecting");
            let gap = self
                .gossip_heal
                .healed
                .get(&peer)
                .map_or(GOSSIP_HEAL_GAP, |h| (h.gap * 2).min(GOSSIP_HEAL_MAX_GAP));
            self.gossip_heal
                .healed
                .insert(peer, Healed { at: now, gap });
            self.gossip_heal.redial.insert(peer, addr);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Gossip's verdict on a gateway record: one that verifies is passed on
    /// (and to the gateway, as [`Event::GatewayRecord`]); anything else is
    /// rejected, which costs its forwarder in gossip's score.
    fn on_gateway_record(&mut self, data: &[u8]) -> libp2p::gossipsub::MessageAcceptance {
        use libp2p::gossipsub::MessageAcceptance as M;
        if data.len() > meshcast_proto::gateway::MAX_SIGNED_RECORD {
            return M::Reject;
        }
        let Ok(signed) = pb::SignedGatewayRecord::decode(data) else {
            return M::Reject;
        };
        match meshcast_proto::gateway::verify(&signed, crate::unix_now_us()) {
            Ok(record) => {
                let _ = self
                    .events
                    .send(Event::GatewayRecord(Box::new((record, signed))));
                M::Accept
            }
            Err(_) => M::Reject,
        }
    }
}

/// The span events about `peer` are logged in. Error level, so that it is
/// enabled whenever any event is: a warning logged with `RUST_LOG=warn` still
/// names its peer.
pub(super) fn peer_span(peer: PeerId) -> tracing::Span {
    tracing::error_span!("peer", peer = %peer)
}

pub(super) fn descriptor_from_record(
    record: &kad::Record,
    id: &StreamId,
) -> Option<VerifiedDescriptor> {
    let msg = pb::StreamDescriptor::decode(record.value.as_slice()).ok()?;
    SignedDescriptor::from_pb(&msg).ok()?.verify_for(id).ok()
}
