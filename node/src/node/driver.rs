//! The driver: owns the swarm, feeds the scheduler, performs its actions.

use std::collections::HashSet;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{dcutr, relay};
use tracing::Instrument as _;

use super::*;
use crate::metrics::{self, Failure, LocalGauge, Received};

pub(super) struct Followed {
    pub(super) descriptor: VerifiedDescriptor,
    pub(super) key: StreamKey,
    pub(super) newest_us: u64,
    /// How much of a VOD this node downloads by itself.
    pub(super) seed: Seed,
    /// A VOD seeded within a budget: the segments chosen, and their bytes.
    pub(super) planned: HashSet<SegmentId>,
    pub(super) planned_bytes: u64,
}

impl Followed {
    fn live(&self) -> bool {
        self.descriptor.descriptor().live
    }
}

pub(super) enum Internal {
    Offer {
        peer: PeerId,
        header: Option<pb::SegmentHeader>,
        reply: oneshot::Sender<OfferReply>,
    },
}

pub(super) enum OfferReply {
    Accept(TransferId, VerifiedHeader),
    Decline(DeclineReason),
    Reject(ExchangeError),
}

pub(super) enum Via {
    Pull(PeerId),
    PushIn(PeerId),
    Origin,
}

pub(super) enum TaskDone {
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
        /// A page of a VOD's index (in id order), counted from 1; 0: a live list.
        page: u32,
        result: Result<Vec<pb::SegmentHeader>, ExchangeError>,
    },
    CacheRead {
        header: VerifiedHeader,
        body: Option<Bytes>,
    },
    Served {
        peer: PeerId,
        result: Result<(), ExchangeError>,
    },
}

/// Least time between re-publications of our DHT records on new connections.
pub(super) const REPUT_INTERVAL: Duration = Duration::from_secs(5);
/// Providers of a followed stream dialled per lookup.
pub(super) const MAX_PROVIDER_DIALS: usize = 8;
/// Concurrent inbound streams; more are reset at once.
pub(super) const MAX_INBOUND: usize = 128;
/// Headers answered to one ListHeaders: well within a 64 KiB frame.
pub(super) const MAX_LISTED: usize = 200;
/// Pages of a VOD's header index read from one peer: 100,000 headers, the
/// most segments a playlist may list per rendition in the ingest (a bound on
/// what a peer can make this node hold).
pub(super) const MAX_INDEX_PAGES: u32 = 500;
/// Unheld headers remembered at once, all streams together.
pub(super) const MAX_PENDING: usize = 200_000;

/// Owns the swarm and everything that moves. Run it with [`Driver::run`].
pub struct Driver {
    pub(super) config: Config,
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) control: libp2p_stream::Control,
    /// Taken by [`Driver::run`], which drains it on a task of its own.
    pub(super) incoming: Option<libp2p_stream::IncomingStreams>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) internal: mpsc::Receiver<Internal>,
    pub(super) internal_tx: mpsc::Sender<Internal>,
    pub(super) store: Arc<Mutex<Store>>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) stats: Arc<Stats>,
    pub(super) http: reqwest::Client,
    pub(super) scheduler: Scheduler<PeerId>,
    pub(super) streams: HashMap<StreamId, Followed>,
    /// Verified headers of segments learned but not held yet.
    pub(super) pending: HashMap<SegmentId, VerifiedHeader>,
    pub(super) tasks: JoinSet<TaskDone>,
    pub(super) aborts: HashMap<TransferId, AbortHandle>,
    pub(super) inbound: usize,
    pub(super) banned: HashMap<PeerId, Instant>,
    pub(super) finds:
        HashMap<kad::QueryId, (StreamId, oneshot::Sender<Option<VerifiedDescriptor>>)>,
    pub(super) published: Vec<kad::Record>,
    pub(super) last_reput: Option<Instant>,
    pub(super) dials: HashMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<(), NodeError>>>,
    /// One per configured relay: where we hold (or want) a reservation.
    pub(super) relays: Vec<RelaySlot>,
    /// Open direct (not relayed) connections per peer.
    pub(super) direct: HashMap<PeerId, usize>,
    /// Open relayed connections (circuits) per peer.
    pub(super) relayed: HashMap<PeerId, HashSet<ConnectionId>>,
    /// Peers the scheduler knows as connected: those with a direct connection
    /// and no circuit left. Segments never cross a circuit (see `settle_peer`).
    pub(super) neighbours: HashSet<PeerId>,
    /// A tracing span per connected peer (`peer` field), opened with its
    /// first connection and closed with its last: what is logged about the
    /// peer, and the transfers with it, is logged inside it.
    pub(super) peer_spans: HashMap<PeerId, tracing::Span>,
    /// This node's share of the process's gauges.
    pub(super) gauges: Gauges,
    /// The on-disk cache, if there is one; shared with the tasks that serve
    /// segments from it.
    pub(super) cache: Option<Arc<Mutex<Cache>>>,
    /// Most bytes of VOD segments planned for seeding, all VODs together:
    /// 90 % of the disk cache (headers take the rest), or of the memory
    /// store without one. More would only be evicted and fetched again.
    pub(super) seed_capacity: u64,
}

/// The gauges one node contributes to (see [`crate::metrics::LocalGauge`]).
pub(super) struct Gauges {
    pub(super) peers: LocalGauge,
    pub(super) store_bytes: LocalGauge,
    pub(super) store_segments: LocalGauge,
    pub(super) cache_bytes: LocalGauge,
}

impl Gauges {
    fn new() -> Self {
        Self {
            peers: LocalGauge::new(metrics::PEERS_CONNECTED),
            store_bytes: LocalGauge::new(metrics::STORE_BYTES),
            store_segments: LocalGauge::new(metrics::STORE_SEGMENTS),
            cache_bytes: LocalGauge::new(metrics::CACHE_BYTES),
        }
    }
}

/// A relay this node reserves a slot on.
pub(super) struct RelaySlot {
    /// The relay's address, ending in `/p2p/<relay peer id>`.
    pub(super) addr: Multiaddr,
    pub(super) peer: PeerId,
    /// The `<relay>/p2p-circuit` listener, while a reservation is pending or held.
    pub(super) listener: Option<ListenerId>,
    pub(super) last_attempt: Option<Instant>,
}

impl Driver {
    pub(super) fn new(config: Config, key: Keypair) -> Result<(Node, Driver), NodeError> {
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
            // Relayed connections are secured and multiplexed end to end
            // (Noise, Yamux) inside the circuit, which the relay cannot read.
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| NodeError::Setup(e.to_string()))?
            .with_behaviour(|key, relay_client| {
                Behaviour::new(key, relay_client, &config)
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
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
        if config.relay_server && config.external.is_empty() {
            tracing::warn!(
                "relay server without an external address: it refuses reservations until one is confirmed (set `external`)"
            );
        }
        let relays = config
            .relays
            .iter()
            .map(|addr| relay_slot(addr.clone()))
            .collect::<Result<Vec<_>, _>>()?;
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
        let mut gauges = Gauges::new();
        let cache = config
            .cache_dir
            .as_deref()
            .map(|dir| Cache::open(dir, config.cache_max_bytes))
            .transpose()
            .map_err(|e| NodeError::Setup(format!("cache directory: {e}")))?;
        gauges
            .cache_bytes
            .set(cache.as_ref().map_or(0, Cache::used_bytes));
        let seed_capacity = cache
            .as_ref()
            .map_or(config.store_max_bytes, Cache::max_bytes)
            / 10
            * 9;
        let cache = cache.map(|c| Arc::new(Mutex::new(c)));
        let node = Node {
            peer_id,
            cache: cache.clone(),
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
            incoming: Some(incoming),
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
            last_reput: None,
            dials: HashMap::new(),
            relays,
            direct: HashMap::new(),
            relayed: HashMap::new(),
            neighbours: HashSet::new(),
            peer_spans: HashMap::new(),
            gauges,
            cache,
            seed_capacity,
        };
        Ok((node, driver))
    }

    /// Runs the node until every [`Node`] handle is dropped.
    pub async fn run(mut self) {
        for addr in self.config.bootstrap.clone() {
            self.dial_bootstrap(addr);
        }
        self.reserve_relays();
        // Configured external addresses are confirmed without an event.
        self.update_kad_mode();
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
                .scheduler
                .next_wakeup(Instant::now())
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((peer, stream)) = inbound.recv() => self.on_inbound(peer, stream),
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
                    self.reserve_relays();
                }
            }
            self.run_actions();
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
    pub(super) fn redial_if_isolated(&mut self) {
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

    /// The span of a connected peer, or a new one for a peer that is not (any more).
    pub(super) fn peer_span(&self, peer: PeerId) -> tracing::Span {
        self.peer_spans
            .get(&peer)
            .cloned()
            .unwrap_or_else(|| peer_span(peer))
    }

    /// Brings the store gauges up to date, after an insert (and its evictions).
    pub(super) fn store_changed(&mut self) {
        let (bytes, segments) = {
            let store = lock(&self.store);
            (store.used_bytes(), store.len() as u64)
        };
        self.gauges.store_bytes.set(bytes);
        self.gauges.store_segments.set(segments);
    }

    pub(super) fn ban(&mut self, peer: PeerId, reason: String) {
        if self.banned.contains_key(&peer) {
            return;
        }
        self.peer_span(peer)
            .in_scope(|| tracing::warn!("banning peer: {reason}"));
        metrics::ban();
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

    pub(super) fn unban_expired(&mut self) {
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

    /// Forgets headers of live segments that left every live window unheld
    /// (a VOD's header index stays: any of it may be asked for).
    pub(super) fn prune_pending(&mut self) {
        let window = u64::try_from(self.config.live_window.as_micros()).unwrap_or(u64::MAX);
        let streams = &self.streams;
        self.pending.retain(|id, header| {
            streams.get(&id.stream).is_some_and(|s| {
                !s.live() || header.info().published_at_us.saturating_add(2 * window) >= s.newest_us
            })
        });
    }

    /// Does this node download a segment of a followed stream by itself? Live:
    /// if it is recent enough. VOD: if it seeds it.
    pub(super) fn wanted(&mut self, header: &VerifiedHeader) -> bool {
        let window = u64::try_from(self.config.live_window.as_micros()).unwrap_or(u64::MAX);
        let id = header.id();
        let Some(followed) = self.streams.get_mut(&id.stream) else {
            return false;
        };
        let published = header.info().published_at_us;
        followed.newest_us = followed.newest_us.max(published);
        if followed.live() {
            return published.saturating_add(window) >= followed.newest_us;
        }
        if followed.planned.contains(&id) {
            return true;
        }
        // Seeding a whole VOD: everything that fits (a budget is planned once
        // the index is read, see `plan_seed`).
        let size = header.info().length;
        let fits = followed.planned_bytes.saturating_add(size) <= self.seed_capacity;
        if followed.seed == Seed::All && fits {
            followed.planned.insert(id);
            followed.planned_bytes += size;
            return true;
        }
        false
    }

    /// Is the segment held, in memory or in the disk cache?
    pub(super) fn holds(&self, id: &SegmentId) -> bool {
        lock(&self.store).contains(id)
            || self
                .cache
                .as_ref()
                .is_some_and(|cache| lock(cache).contains(id))
    }

    /// Chooses what a VOD followed with a budget seeds among the headers
    /// known so far: init segments first, then by rendezvous hash of this
    /// node and the segment, so that seeders spread over the VOD.
    pub(super) fn plan_seed(&mut self, stream: StreamId) {
        let me = self.swarm.local_peer_id().to_bytes();
        let Some(followed) = self.streams.get(&stream) else {
            return;
        };
        let budget = followed.seed.bytes().min(self.seed_capacity);
        if followed.live() || followed.seed == Seed::All || followed.planned_bytes >= budget {
            return;
        }
        let mut candidates: Vec<(bool, [u8; 32], SegmentId, u64)> = self
            .pending
            .iter()
            .filter(|(id, _)| id.stream == stream && !followed.planned.contains(id))
            .map(|(id, header)| {
                let mut hasher = blake3::Hasher::new();
                hasher.update(&me);
                hasher.update(&header.signed().info.hash);
                let score = *hasher.finalize().as_bytes();
                let media = id.kind != meshcast_proto::SegmentKind::Init;
                (media, score, *id, header.info().length)
            })
            .collect();
        candidates.sort();
        let now = Instant::now();
        let mut chosen = Vec::new();
        let mut planned_bytes = followed.planned_bytes;
        for (_, _, id, size) in candidates {
            if planned_bytes.saturating_add(size) <= budget {
                planned_bytes += size;
                chosen.push((id, size));
            }
        }
        if let Some(followed) = self.streams.get_mut(&stream) {
            followed.planned_bytes = planned_bytes;
            followed.planned.extend(chosen.iter().map(|(id, _)| *id));
        }
        for (id, size) in chosen {
            self.scheduler.seed(id, size, now);
        }
    }

    pub(super) fn on_command(&mut self, command: Command) {
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
            Command::Follow(descriptor, seed, reply) => {
                self.follow(descriptor, seed);
                let _ = reply.send(());
            }
            Command::Demand(id, within) => self.demand(id, within),
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
                self.follow(descriptor, Seed::All);
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

    pub(super) fn follow(&mut self, descriptor: VerifiedDescriptor, seed: Seed) {
        let key = descriptor.stream_key();
        let renditions: Vec<u32> = descriptor
            .descriptor()
            .renditions
            .iter()
            .map(|r| r.id)
            .collect();
        let descriptor_pb = descriptor.signed().to_pb();
        let issued_at_us = descriptor.descriptor().issued_at_us;
        lock(&self.store).set_vod(key.id, !descriptor.descriptor().live);
        let previous = self.streams.remove(&key.id);
        let first = previous.is_none();
        let (newest_us, seed, planned, planned_bytes) = match previous {
            Some(p) => (p.newest_us, p.seed.max(seed), p.planned, p.planned_bytes),
            None => (0, seed, HashSet::new(), 0),
        };
        self.streams.insert(
            key.id,
            Followed {
                descriptor,
                key,
                newest_us,
                seed,
                planned,
                planned_bytes,
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
        let record_key = kad::RecordKey::new(key.id.as_bytes());
        // Every follower answers DHT lookups of the descriptor itself, so a
        // stream stays findable once its publisher is gone (a VOD) or while
        // the publisher's own put has not reached the DHT yet.
        let value = descriptor_pb.encode_to_vec();
        let stored = behaviour
            .kad
            .store_mut()
            .get(&record_key)
            .map(|r| r.into_owned());
        let newer_stored = stored
            .and_then(|r| descriptor_from_record(&r, &key.id))
            .is_some_and(|d| d.descriptor().issued_at_us > issued_at_us);
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
        if let Some(cache) = self.cache.clone()
            && first
        {
            let max = self.config.limits.max_segment;
            let now = Instant::now();
            let (loaded, on_disk) = {
                let mut cache = lock(&cache);
                let loaded = cache.load(&key, max, self.config.store_max_bytes);
                (loaded, cache.held(&key.id))
            };
            for (header, body) in loaded {
                let (id, size) = (header.id(), body.len() as u64);
                self.wanted(&header);
                let inserted = lock(&self.store).insert(header, body);
                if let Inserted::New { evicted } = inserted {
                    self.scheduler.held(id, size, now);
                    self.forget_evicted(evicted);
                }
            }
            // What a budgeted seeder already holds counts against its budget.
            if let Some(followed) = self.streams.get_mut(&key.id)
                && !followed.live()
            {
                for (id, size) in on_disk {
                    if followed.planned.insert(id) {
                        followed.planned_bytes += size;
                    }
                }
            }
            self.store_changed();
        }
        let peers: Vec<PeerId> = self.neighbours.iter().copied().collect();
        for peer in peers {
            self.request_headers(peer, key.id);
        }
    }

    /// Segments the memory store dropped are no longer held, unless the disk
    /// cache still has them.
    pub(super) fn forget_evicted(&mut self, evicted: Vec<SegmentId>) {
        for id in evicted {
            let on_disk = self
                .cache
                .as_ref()
                .is_some_and(|cache| lock(cache).contains(&id));
            if !on_disk {
                self.scheduler.evicted(&id);
            }
        }
    }

    /// See [`Node::demand`].
    pub(super) fn demand(&mut self, id: SegmentId, within: Duration) {
        let Some(live) = self.streams.get(&id.stream).map(Followed::live) else {
            return;
        };
        if lock(&self.store).contains(&id) {
            return;
        }
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| lock(cache).request(&id));
        if let Some((header, path)) = cached {
            self.tasks.spawn(async move {
                let read = {
                    let header = header.clone();
                    tokio::task::spawn_blocking(move || crate::cache::read_body(&path, &header))
                };
                let body = read.await.ok().flatten();
                TaskDone::CacheRead { header, body }
            });
            return;
        }
        let size = self.pending.get(&id).map(|h| h.info().length);
        if live && size.is_none() {
            return; // not announced yet: it will be pushed or announced
        }
        let now = Instant::now();
        // Half the time for the mesh, half for the origin if the mesh fails.
        self.scheduler
            .demand(id, size.unwrap_or(0), now + within / 2, now);
    }

    pub(super) fn inject(&mut self, header: VerifiedHeader, body: Bytes) {
        let id = header.id();
        let size = body.len() as u64;
        self.wanted(&header);
        let announce = pb::Announce {
            headers: vec![header.signed().to_pb()],
        };
        self.write_cache(&header, &body);
        let Inserted::New { evicted } = lock(&self.store).insert(header, body) else {
            return;
        };
        self.forget_evicted(evicted);
        metrics::segment_received(Received::Publisher);
        self.store_changed();
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

    /// Asks a peer what it holds of a stream: the newest headers of a live
    /// stream, the first page of a VOD's index (the next pages follow as
    /// each arrives, see [`Driver::index_page`]).
    pub(super) fn request_headers(&mut self, peer: PeerId, stream: StreamId) {
        let live = self.streams.get(&stream).is_none_or(Followed::live);
        let page = if live { 0 } else { 1 };
        self.request_page(peer, stream, page, None);
    }

    pub(super) fn request_page(
        &mut self,
        peer: PeerId,
        stream: StreamId,
        page: u32,
        after: Option<SegmentId>,
    ) {
        let mut control = self.control.clone();
        let (limits, timeout) = (self.config.limits, self.config.read_timeout);
        let task = async move {
            let result = async {
                let framed = open(&mut control, peer, limits, timeout).await?;
                exchange::list_headers(framed, stream, page > 0, after).await
            }
            .await;
            TaskDone::Headers {
                peer,
                stream,
                page,
                result,
            }
        };
        self.tasks.spawn(task.instrument(self.peer_span(peer)));
    }

    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                connection_id,
                endpoint,
                ..
            } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
                let span = self
                    .peer_spans
                    .entry(peer_id)
                    .or_insert_with(|| peer_span(peer_id))
                    .clone();
                span.in_scope(|| {
                    tracing::debug!(
                        remote = %endpoint.get_remote_address(),
                        dialer = endpoint.is_dialer(),
                        connections = num_established.get(),
                        "connection established"
                    )
                });
                self.peers_changed();
                // Records put while few peers were connected reach more of
                // the DHT now; at most every REPUT_INTERVAL, not per connection.
                if num_established.get() == 1
                    && self
                        .last_reput
                        .is_none_or(|t| t.elapsed() >= REPUT_INTERVAL)
                {
                    self.last_reput = Some(Instant::now());
                    for record in self.published.clone() {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .kad
                            .put_record(record, kad::Quorum::One);
                    }
                }
                if endpoint.is_relayed() {
                    self.relayed
                        .entry(peer_id)
                        .or_default()
                        .insert(connection_id);
                    if self.direct.contains_key(&peer_id) {
                        // Already connected directly: the circuit would only
                        // cost the relay a slot.
                        self.swarm.close_connection(connection_id);
                    } else {
                        span.in_scope(|| {
                            tracing::info!(
                                "connected through a relay; waiting for a direct connection (hole punching)"
                            )
                        });
                    }
                } else {
                    let count = self.direct.entry(peer_id).or_default();
                    *count += 1;
                    if *count == 1 && self.relayed.contains_key(&peer_id) {
                        span.in_scope(|| {
                            tracing::info!("direct connection established; closing the relayed one")
                        });
                        self.emit(Event::RelayUpgraded { peer: peer_id });
                    }
                    self.settle_peer(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
            } => {
                self.peer_span(peer_id).in_scope(|| match &cause {
                    Some(e) => tracing::debug!(
                        remote = %endpoint.get_remote_address(),
                        connections = num_established,
                        "connection closed: {e}"
                    ),
                    None => tracing::debug!(
                        remote = %endpoint.get_remote_address(),
                        connections = num_established,
                        "connection closed"
                    ),
                });
                if num_established == 0 {
                    self.peer_spans.remove(&peer_id);
                }
                self.peers_changed();
                if endpoint.is_relayed() {
                    if let Some(circuits) = self.relayed.get_mut(&peer_id) {
                        circuits.remove(&connection_id);
                        if circuits.is_empty() {
                            self.relayed.remove(&peer_id);
                        }
                    }
                    self.settle_peer(peer_id);
                } else {
                    if let Some(count) = self.direct.get_mut(&peer_id) {
                        *count = count.saturating_sub(1);
                        if *count == 0 {
                            self.direct.remove(&peer_id);
                        }
                    }
                    if !self.direct.contains_key(&peer_id) && self.neighbours.remove(&peer_id) {
                        self.scheduler.peer_disconnected(peer_id);
                    }
                }
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
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!("reachable at {address}");
                self.update_kad_mode();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!("no longer reachable at {address}");
                self.update_kad_mode();
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => self.relay_listener_closed(listener_id, reason),
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(?listener_id, "listener error: {error}")
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    pub(super) fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::RelayClient(event) => self.on_relay_client_event(event),
            BehaviourEvent::RelayServer(event) => on_relay_server_event(event),
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => self.peer_span(remote_peer_id).in_scope(|| match result {
                Ok(_) => tracing::info!("hole punching succeeded: direct connection established"),
                Err(e) => tracing::info!(
                    "hole punching failed ({e}); the peer stays reachable through the relay for coordination only"
                ),
            }),
            // `result` says whether the request was answered; the dial-back
            // outcome went to the client.
            BehaviourEvent::AutonatServer(event) => tracing::debug!(
                client = %event.client,
                addr = %event.tested_addr,
                "answered an AutoNAT request: {:?}",
                event.result
            ),
            // Only DHT servers belong in the routing table: a NATed node in
            // client mode would be asked, through a relay, for nothing.
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if info.protocols.contains(&behaviour::KAD_PROTOCOL) =>
            {
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
                    metrics::verification_failure(Failure::Header);
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
                        let found = self.finds.get(&id).and_then(|(stream, _)| {
                            descriptor_from_record(&peer_record.record, stream)
                        });
                        if found.is_none() && self.finds.contains_key(&id) {
                            metrics::verification_failure(Failure::Descriptor);
                            tracing::debug!(
                                peer = ?peer_record.peer,
                                "the DHT returned a record that is not a valid descriptor of the stream"
                            );
                        }
                        found
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
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result:
                    kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                        providers,
                        ..
                    })),
                ..
            }) => {
                let me = *self.swarm.local_peer_id();
                let fresh: Vec<PeerId> = providers
                    .into_iter()
                    .filter(|p| {
                        *p != me && !self.banned.contains_key(p) && !self.swarm.is_connected(p)
                    })
                    .take(MAX_PROVIDER_DIALS)
                    .collect();
                for peer in fresh {
                    let _ = self.swarm.dial(peer);
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
                if let Some(descriptor) = valid {
                    let id = descriptor.stream_key().id;
                    let followed = self.streams.get(&id).map(|f| {
                        (f.seed, f.descriptor.descriptor().issued_at_us)
                    });
                    let issued = descriptor.descriptor().issued_at_us;
                    match followed {
                        // A newer descriptor of a followed stream (a live
                        // stream that ended and became a VOD) replaces ours.
                        Some((seed, ours)) if issued > ours => self.follow(descriptor, seed),
                        Some(_) => {}
                        None => {
                            let _ = self.swarm.behaviour_mut().kad.store_mut().put(record);
                        }
                    }
                } else {
                    metrics::verification_failure(Failure::Descriptor);
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
    pub(super) fn on_announce(
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

    /// A verified header of a followed stream: remember it and tell the
    /// scheduler. A VOD's headers are all remembered (its index), and
    /// downloaded by themselves only if this node seeds them.
    pub(super) fn learn(&mut self, header: VerifiedHeader, holder: Option<PeerId>, now: Instant) {
        let id = header.id();
        let wanted = self.wanted(&header);
        let live = self.streams.get(&id.stream).is_none_or(Followed::live);
        if (live && !wanted) || self.holds(&id) {
            return;
        }
        if !self.pending.contains_key(&id) && self.pending.len() >= MAX_PENDING {
            return;
        }
        let size = header.info().length;
        self.pending.entry(id).or_insert(header);
        if live {
            self.scheduler.header_learned(id, size, holder, now);
        } else {
            self.scheduler.header_known(id, size, holder, now);
            if wanted {
                self.scheduler.seed(id, size, now);
            }
        }
    }
}

/// The span events about `peer` are logged in. Error level, so that it is
/// enabled whenever any event is: a warning logged with `RUST_LOG=warn` still
/// names its peer.
fn peer_span(peer: PeerId) -> tracing::Span {
    tracing::error_span!("peer", peer = %peer)
}

/// Checks a configured relay address: the relay client needs its peer id.
fn relay_slot(addr: Multiaddr) -> Result<RelaySlot, NodeError> {
    let invalid = |reason: &str| NodeError::Listen {
        addr: addr.clone(),
        reason: reason.to_string(),
    };
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return Err(invalid(
            "a relay address is the relay's own address, without /p2p-circuit",
        ));
    }
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(RelaySlot {
            addr,
            peer,
            listener: None,
            last_attempt: None,
        }),
        _ => Err(invalid("a relay address must end in /p2p/<relay peer id>")),
    }
}

fn on_relay_server_event(event: relay::Event) {
    match event {
        relay::Event::ReservationReqAccepted {
            src_peer_id,
            renewed,
        } => tracing::debug!(peer = %src_peer_id, renewed, "relay: reservation accepted"),
        relay::Event::ReservationReqDenied {
            src_peer_id,
            status,
        } => tracing::info!(peer = %src_peer_id, "relay: reservation denied ({status:?})"),
        relay::Event::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => tracing::debug!(src = %src_peer_id, dst = %dst_peer_id, "relay: circuit opened"),
        relay::Event::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            status,
        } => tracing::info!(
            src = %src_peer_id,
            dst = %dst_peer_id,
            "relay: circuit denied ({status:?})"
        ),
        relay::Event::StatusChanged { status } => {
            tracing::info!("relay service {status:?} (it needs a confirmed external address)")
        }
        // The rest (closed circuits and reservations, deprecated error
        // variants) is routine.
        other => tracing::debug!("relay: {other:?}"),
    }
}

impl Driver {
    /// Asks each configured relay whose reservation is missing for one,
    /// at most every `redial_interval` per relay.
    pub(super) fn reserve_relays(&mut self) {
        let retry = self.config.redial_interval;
        for i in 0..self.relays.len() {
            let slot = &self.relays[i];
            if slot.listener.is_some() || slot.last_attempt.is_some_and(|t| t.elapsed() < retry) {
                continue;
            }
            let (addr, peer) = (slot.addr.clone(), slot.peer);
            // The relay is a node like any other: a DHT contact as well.
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
            // The relay client dials the relay if needed, then reserves; the
            // listener reports the relayed address once the relay accepts.
            let result = self
                .swarm
                .listen_on(addr.clone().with(Protocol::P2pCircuit));
            let slot = &mut self.relays[i];
            slot.last_attempt = Some(Instant::now());
            match result {
                Ok(listener) => slot.listener = Some(listener),
                Err(e) => self.warn(format!("cannot reserve a slot on relay {addr}: {e}")),
            }
        }
    }

    /// A relayed listener closes when the reservation is refused, the
    /// connection to the relay fails or closes, or a renewal fails.
    pub(super) fn relay_listener_closed(
        &mut self,
        listener: ListenerId,
        reason: Result<(), std::io::Error>,
    ) {
        let Some(slot) = self
            .relays
            .iter_mut()
            .find(|s| s.listener == Some(listener))
        else {
            return;
        };
        slot.listener = None;
        let why = match reason {
            Ok(()) => "the connection to it failed or closed".to_string(),
            Err(e) => format!("{e}"),
        };
        let message = format!(
            "no reservation on relay {}: {why}; retrying in {:?}",
            slot.addr, self.config.redial_interval
        );
        self.warn(message);
    }

    pub(super) fn on_relay_client_event(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                limit,
            } => {
                let limit = limit.map(|l| (l.duration(), l.data_in_bytes()));
                if renewal {
                    tracing::debug!(relay = %relay_peer_id, "relay reservation renewed");
                } else {
                    tracing::info!(
                        relay = %relay_peer_id,
                        "relay accepted our reservation; circuit limit (duration, bytes): {limit:?}"
                    );
                }
            }
            relay::client::Event::OutboundCircuitEstablished {
                relay_peer_id,
                limit,
            } => tracing::debug!(relay = %relay_peer_id, ?limit, "circuit opened through relay"),
            relay::client::Event::InboundCircuitEstablished { src_peer_id, limit } => {
                tracing::debug!(peer = %src_peer_id, ?limit, "inbound circuit through our relay")
            }
        }
    }

    /// Makes a peer a segment neighbour once it is connected directly and no
    /// circuit to it remains. Circuits are for coordination: the relay caps
    /// them (`relay_circuit_bytes`) far below video rates, and libp2p-stream
    /// opens each stream on a random connection to the peer, so a circuit
    /// left open beside a direct connection would carry some transfers into
    /// that cap. It is closed instead, and the neighbour set up once it is
    /// gone, so that no transfer or header list starts on it.
    pub(super) fn settle_peer(&mut self, peer: PeerId) {
        if !self.direct.contains_key(&peer) {
            return;
        }
        match self.relayed.get(&peer) {
            Some(circuits) if !circuits.is_empty() => {
                for connection in circuits.clone() {
                    self.swarm.close_connection(connection);
                }
            }
            _ => self.neighbour_up(peer),
        }
    }

    /// A node with relays answers DHT requests only while a direct (not
    /// relayed) address of it is confirmed, by AutoNAT or configuration.
    pub(super) fn update_kad_mode(&mut self) {
        if self.relays.is_empty() {
            return;
        }
        let direct = self
            .swarm
            .external_addresses()
            .any(|a| !a.iter().any(|p| p == Protocol::P2pCircuit));
        let mode = if direct {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        let kad = &mut self.swarm.behaviour_mut().kad;
        if kad.mode() != mode {
            tracing::info!("DHT mode: {mode}");
            kad.set_mode(Some(mode));
        }
    }

    fn peers_changed(&mut self) {
        let connected = self.swarm.connected_peers().count() as u64;
        self.gauges.peers.set(connected);
    }

    fn neighbour_up(&mut self, peer: PeerId) {
        if !self.neighbours.insert(peer) {
            return;
        }
        self.scheduler.peer_connected(peer);
        let streams: Vec<StreamId> = self.streams.keys().copied().collect();
        for stream in streams {
            self.request_headers(peer, stream);
        }
    }
}
