//! The browser gateway: a WebTransport endpoint in front of a mesh node.
//!
//! [`Gateway::bind`] returns the handle and a [`Driver`] to run: the driver
//! accepts sessions (each a task it owns), renews the certificate, serves
//! `/.well-known/meshcast`, and routes segment arrivals to waiting requests.
//! Any node can run one: a relay always does, an edge node with a public
//! address may (`--browser-listen`).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshcast_node::{Event, Node};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use wtransport::tls::Sha256Digest;
use wtransport::{Endpoint, ServerConfig};

use crate::certs::{CertError, CertSource, Issued};
pub use crate::config::{Config, Faults, Limits, Peer, Serve};
use crate::session;
use crate::shared::{self, Shared, Slot, Stage, lock, wake, wake_all};
use crate::wellknown;
use crate::{admission, records, streams};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("cannot listen for WebTransport on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Web {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A handle to a running gateway.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    web_addr: SocketAddr,
    quic_addr: SocketAddr,
}

impl Gateway {
    /// Binds the WebTransport endpoint and the HTTP server. Nothing is served
    /// until the returned [`Driver`] runs.
    pub async fn bind(node: Node, config: Config) -> Result<(Gateway, Driver), GatewayError> {
        config.cert.validate()?;
        let host = config
            .public_host
            .clone()
            .unwrap_or_else(|| match config.listen.ip() {
                ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                ip => ip.to_string(),
            });
        let mut names = vec![host.clone(), "localhost".to_string()];
        names.dedup();
        let issued = config.cert.issue(&names).await?;
        let endpoint = Endpoint::server(server_config(config.listen, &issued, &config.limits))
            .map_err(|source| GatewayError::Listen {
                addr: config.listen,
                source,
            })?;
        let quic_addr = endpoint
            .local_addr()
            .map_err(|source| GatewayError::Listen {
                addr: config.listen,
                source,
            })?;
        let web = tokio::net::TcpListener::bind(config.web_listen)
            .await
            .map_err(|source| GatewayError::Web {
                addr: config.web_listen,
                source,
            })?;
        let web_addr = web.local_addr().map_err(|source| GatewayError::Web {
            addr: config.web_listen,
            source,
        })?;
        let host_in_url = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let url = format!("https://{host_in_url}:{}/", quic_addr.port());
        let shared = Arc::new(Shared {
            node,
            url,
            hashes: Mutex::new(vec![(issued.hash.clone(), issued.expires)]),
            handshakes: Mutex::default(),
            arrivals: Mutex::default(),
            sessions: Mutex::default(),
            streams: Mutex::default(),
            waiters: Mutex::default(),
            records: Mutex::default(),
            records_changed: tokio::sync::watch::Sender::new(0),
            deliveries: AtomicU64::new(0),
            outboards: Mutex::new(std::collections::VecDeque::new()),
            answers: AtomicU64::new(0),
            forwards: AtomicU64::new(0),
            forwards_sent: AtomicU64::new(0),
            config,
        });
        let gateway = Gateway {
            shared: shared.clone(),
            web_addr,
            quic_addr,
        };
        let driver = Driver {
            shared,
            endpoint,
            web: Some(web),
            issued,
            names,
        };
        Ok((gateway, driver))
    }

    /// The WebTransport URL clients connect to.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Hashes of the certificates clients may accept, current first.
    pub fn cert_hashes(&self) -> Vec<Sha256Digest> {
        self.shared.current_hashes()
    }

    /// Where `/.well-known/meshcast` is served.
    pub fn web_addr(&self) -> SocketAddr {
        self.web_addr
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        lock(&self.shared.sessions).total()
    }

    /// Connections in their handshake now (before their HTTP/3 CONNECT).
    pub fn handshakes(&self) -> usize {
        lock(&self.shared.handshakes).total()
    }

    /// Requests waiting for a segment to arrive now, over all sessions.
    pub fn waiting_requests(&self) -> usize {
        lock(&self.shared.waiters).total()
    }

    /// Other gateways' records held now.
    pub fn known_gateways(&self) -> usize {
        lock(&self.shared.records).len()
    }

    /// Streams served now (followed or found for viewers).
    pub fn streams(&self) -> usize {
        streams::count(&self.shared)
    }

    /// Deliveries of segments still arriving at the node, sent piece by
    /// piece as they came (cut-through): started, and sent whole.
    pub fn forwards(&self) -> (u64, u64) {
        let load = |a: &AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        (
            load(&self.shared.forwards),
            load(&self.shared.forwards_sent),
        )
    }

    /// How many times the gateway has made its node follow a stream for
    /// viewers since it started (a stream its node did not follow already).
    pub fn follows(&self) -> u64 {
        streams::follows(&self.shared)
    }
}

fn server_config(listen: SocketAddr, issued: &Issued, limits: &Limits) -> ServerConfig {
    let builder = ServerConfig::builder()
        .with_bind_address(listen)
        .with_identity(issued.identity.clone_identity())
        .keep_alive_interval(Some(Duration::from_secs(5)));
    // The QUIC idle timeout backs up the session's own idle limit.
    let idle = limits.idle_timeout + Duration::from_secs(10);
    match builder.max_idle_timeout(Some(idle)) {
        Ok(builder) => builder.build(),
        Err(_) => ServerConfig::builder()
            .with_bind_address(listen)
            .with_identity(issued.identity.clone_identity())
            .keep_alive_interval(Some(Duration::from_secs(5)))
            .build(),
    }
}

/// Runs the gateway. See the module docs.
pub struct Driver {
    shared: Arc<Shared>,
    endpoint: Endpoint<wtransport::endpoint::endpoint_side::Server>,
    web: Option<tokio::net::TcpListener>,
    issued: Issued,
    names: Vec<String>,
}

impl Driver {
    pub async fn run(mut self) {
        let mut sessions = JoinSet::new();
        let web = wellknown::router(self.shared.clone())
            .merge(crate::websocket::router(self.shared.clone()));
        let web_limits = self.shared.config.web_limits;
        let web_listener = self.web.take();
        let mut web_task = tokio::spawn(async move {
            let Some(listener) = web_listener else { return };
            crate::http::serve(listener, web, web_limits).await;
        });
        let mut arrivals = self.shared.node.events();
        let every = (self.shared.config.limits.unfollow_after / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        let mut prune = tokio::time::interval(every);
        // A new gateway may have no gossip peers yet: publish again soon,
        // then less and less often, up to every REPUBLISH.
        let mut publish_gap = Duration::from_secs(5);
        let publish_at = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(publish_at);
        loop {
            let renew = tokio::time::Instant::now()
                + self
                    .issued
                    .renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    // Counted from the first packet, before any handshake
                    // work: a flood of connections that never send their
                    // CONNECT is refused, not held.
                    let ip = admission::canonical(incoming.remote_address().ip());
                    let admitted = shared::arrival(&self.shared, ip)
                        .and_then(|()| Slot::take(&self.shared, Stage::Handshake, ip));
                    match admitted {
                        Ok(slot) => {
                            sessions.spawn(session::handle(self.shared.clone(), incoming, slot));
                        }
                        Err(full) => {
                            tracing::debug!("connection refused: {}", full.message());
                            incoming.refuse();
                        }
                    }
                }
                _ = prune.tick() => streams::prune(&self.shared).await,
                _ = &mut publish_at => {
                    // Until gossip takes the record (no subscribed peer yet,
                    // or gossip views being healed), try again every second.
                    let gossiped = self.publish_record().await;
                    let gap = if gossiped { publish_gap } else { Duration::from_secs(1) };
                    publish_at.as_mut().reset(tokio::time::Instant::now() + gap);
                    if gossiped {
                        publish_gap = (publish_gap * 2).min(records::REPUBLISH);
                    }
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                event = arrivals.recv() => match event {
                    Ok(Event::Stored { id, .. } | Event::Arriving { id }) => {
                        wake(&self.shared, &id);
                    }
                    Ok(Event::GatewayRecord(record)) => {
                        let (record, signed) = *record;
                        self.learn(record, signed);
                    }
                    Ok(_) => {}
                    // Lagged: some arrivals were missed; waiters re-check the store on wake-up
                    // anyway, so wake everyone.
                    Err(broadcast::error::RecvError::Lagged(_)) => wake_all(&self.shared),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tokio::time::sleep_until(renew) => self.renew().await,
                _ = &mut web_task => break,
            }
        }
        sessions.abort_all();
        web_task.abort();
    }

    /// Signs and gossips this gateway's record (see [`records`]). False when
    /// gossip did not take it and it is worth trying again soon.
    async fn publish_record(&self) -> bool {
        let Some(node) = self.shared.node.node_key() else {
            return true;
        };
        let now = meshcast_node::unix_now_us();
        let cert_hashes = match self.shared.config.cert {
            // Browsers check an operator's certificate through the Web PKI.
            CertSource::Files { .. } => Vec::new(),
            CertSource::SelfSigned { .. } => self
                .shared
                .current_hashes()
                .iter()
                .map(|h| *h.as_ref())
                .collect(),
        };
        let mut served: Vec<meshcast_proto::StreamId> =
            lock(&self.shared.streams).served.keys().copied().collect();
        served.truncate(meshcast_proto::gateway::MAX_STREAMS);
        let record = meshcast_proto::gateway::GatewayRecord {
            node,
            url: self.shared.url.clone(),
            cert_hashes,
            issued_at_us: now,
            expires_at_us: now + records::LIFETIME.as_micros() as u64,
            streams: served,
        };
        if let Err(e) = record.validate() {
            tracing::warn!("not publishing a gateway record: {e}");
            return true;
        }
        match self.shared.node.publish_gateway(&record).await {
            Ok((_, gossiped)) => gossiped,
            Err(e) => {
                tracing::warn!("publishing the gateway record failed: {e}");
                false
            }
        }
    }

    /// Another gateway's record arrived (verified by the node).
    fn learn(
        &self,
        record: meshcast_proto::gateway::GatewayRecord,
        signed: meshcast_proto::pb::SignedGatewayRecord,
    ) {
        if Some(record.node) == self.shared.node.node_key() {
            return;
        }
        let mut records = lock(&self.shared.records);
        let url = record.url.clone();
        if records.insert(record, signed, meshcast_node::unix_now_us()) {
            tracing::debug!("gateway record: {url}");
            let version = records.version;
            drop(records);
            self.shared.records_changed.send_replace(version);
        }
    }

    async fn renew(&mut self) {
        let source = &self.shared.config.cert;
        if let CertSource::Files { poll, .. } = source
            && source.stamp() == self.issued.stamp
        {
            self.issued.renew_at = SystemTime::now() + *poll;
            return;
        }
        match source.issue(&self.names).await {
            Ok(next) => {
                let config =
                    server_config(self.shared.config.listen, &next, &self.shared.config.limits);
                if let Err(e) = self.endpoint.reload_config(config, false) {
                    tracing::error!("cannot switch to the new certificate: {e}");
                    self.issued.renew_at = SystemTime::now() + Duration::from_secs(5);
                    return;
                }
                tracing::info!("new certificate {}", hex::encode(next.hash.as_ref()));
                let now = SystemTime::now();
                {
                    let mut hashes = lock(&self.shared.hashes);
                    // Keep the previous hash while its certificate is still valid.
                    hashes.retain(|(_, expires)| expires.is_some_and(|e| e > now));
                    hashes.insert(0, (next.hash.clone(), next.expires));
                    hashes.truncate(2);
                }
                self.issued = next;
                // Viewers must learn the new hash before the old certificate ends.
                self.publish_record().await;
            }
            Err(e) => {
                tracing::error!("certificate renewal failed, retrying: {e}");
                self.issued.renew_at = SystemTime::now() + Duration::from_secs(5);
            }
        }
    }
}
