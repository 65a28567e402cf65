//! The browser gateway: a WebTransport endpoint in front of a mesh node.
//!
//! [`Gateway::bind`] returns the handle and a [`Driver`] to run: the driver
//! accepts sessions (each a task it owns), renews the certificate, serves
//! `/.well-known/meshcast`, and routes segment arrivals to waiting requests.
//! Any node can run one: a relay always does, an edge node with a public
//! address may (`--browser-listen`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use meshcast_node::{Event, Node};
use meshcast_proto::{SegmentId, StreamId, VerifiedDescriptor};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinSet;
use wtransport::tls::Sha256Digest;
use wtransport::{Endpoint, ServerConfig};

use crate::certs::{CertError, CertSource, Issued};
use crate::session;
use crate::wellknown;

/// Limits that keep a gateway's memory and CPU bounded under abuse.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    /// Requests being served at once, per session.
    pub max_inflight: usize,
    /// Segment bytes being sent at once, per session.
    pub max_inflight_bytes: u64,
    /// A session with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Largest control frame a client may send.
    pub max_client_frame: usize,
    /// Time a client has to open its control stream and say Hello.
    pub hello_timeout: Duration,
    /// Longest a request may wait for a segment that has not arrived yet.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 5_000,
            max_sessions_per_ip: 32,
            max_inflight: 16,
            max_inflight_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(60),
            max_client_frame: 4096,
            hello_timeout: Duration::from_secs(5),
            max_wait: Duration::from_secs(20),
        }
    }
}

/// Another gateway to tell clients about in Welcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Peer {
    pub url: String,
    pub cert_hashes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// UDP address of the WebTransport endpoint.
    pub listen: SocketAddr,
    /// TCP address of the HTTP server for `/.well-known/meshcast`.
    pub web_listen: SocketAddr,
    /// Host name or address browsers use to reach this gateway (default: the listen IP).
    pub public_host: Option<String>,
    pub cert: CertSource,
    pub limits: Limits,
    /// Other gateways listed in Welcome.
    pub peers: Vec<Peer>,
    /// How long a Hello for an unknown stream may wait for the DHT.
    pub find_timeout: Duration,
    /// Deliberate misbehaviour, for tests and the demo only.
    #[doc(hidden)]
    pub faults: Faults,
}

/// Ways a gateway can be made to misbehave, so that tests (and the demo) can
/// check that clients catch bad data and fetch elsewhere.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Flip one byte in the body of every Nth delivery sent, counted over all
    /// sessions (0: never). The signed header is left as it is, so only the
    /// client's BLAKE3 check of the body can notice.
    pub corrupt_every: u32,
}

impl Faults {
    /// The body to send as the `n`th delivery (counted from 1).
    pub(crate) fn body(&self, n: u64, body: &Bytes) -> Bytes {
        let every = u64::from(self.corrupt_every);
        if every == 0 || !n.is_multiple_of(every) || body.is_empty() {
            return body.clone();
        }
        let mut bad = body.to_vec();
        bad[body.len() / 2] ^= 0x01;
        bad.into()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            web_listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            public_host: None,
            cert: CertSource::default(),
            limits: Limits::default(),
            peers: Vec::new(),
            find_timeout: Duration::from_secs(10),
            faults: Faults::default(),
        }
    }
}

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

/// State shared by the driver, sessions and the HTTP server.
pub(crate) struct Shared {
    pub node: Node,
    pub config: Config,
    pub url: String,
    /// Hashes browsers may pin: the current certificate's first.
    pub hashes: Mutex<Vec<(Sha256Digest, Option<SystemTime>)>>,
    pub sessions: Mutex<Sessions>,
    pub streams: Mutex<HashMap<StreamId, VerifiedDescriptor>>,
    /// Requests waiting for a segment to arrive from the mesh.
    pub waiters: Mutex<HashMap<SegmentId, Vec<oneshot::Sender<()>>>>,
    /// Deliveries sent so far, over all sessions (for [`Faults`]).
    deliveries: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Sessions {
    pub total: usize,
    pub per_ip: HashMap<IpAddr, usize>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn current_hashes(&self) -> Vec<Sha256Digest> {
        lock(&self.hashes).iter().map(|(h, _)| h.clone()).collect()
    }

    /// The body to send for the next delivery: `body` itself unless a fault
    /// is configured.
    pub fn delivery_body(&self, body: &Bytes) -> Bytes {
        let faults = self.config.faults;
        if faults.corrupt_every == 0 {
            return body.clone();
        }
        let n = self.deliveries.fetch_add(1, Ordering::Relaxed) + 1;
        faults.body(n, body)
    }
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
            sessions: Mutex::new(Sessions::default()),
            streams: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            deliveries: AtomicU64::new(0),
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
        lock(&self.shared.sessions).total
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
        let web = wellknown::router(self.shared.clone());
        let web_listener = self.web.take();
        let mut web_task = tokio::spawn(async move {
            let Some(listener) = web_listener else { return };
            if let Err(e) = axum::serve(listener, web).await {
                tracing::error!("well-known HTTP server stopped: {e}");
            }
        });
        let mut arrivals = self.shared.node.events();
        loop {
            let renew = tokio::time::Instant::now()
                + self
                    .issued
                    .renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let shared = self.shared.clone();
                    sessions.spawn(session::handle(shared, incoming));
                }
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                event = arrivals.recv() => match event {
                    Ok(Event::Stored { id, .. }) => wake(&self.shared, &id),
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
                let mut hashes = lock(&self.shared.hashes);
                // Keep the previous hash while its certificate is still valid.
                hashes.retain(|(_, expires)| expires.is_some_and(|e| e > now));
                hashes.insert(0, (next.hash.clone(), next.expires));
                hashes.truncate(2);
                drop(hashes);
                self.issued = next;
            }
            Err(e) => {
                tracing::error!("certificate renewal failed, retrying: {e}");
                self.issued.renew_at = SystemTime::now() + Duration::from_secs(5);
            }
        }
    }
}

fn wake(shared: &Shared, id: &SegmentId) {
    if let Some(waiters) = lock(&shared.waiters).remove(id) {
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}

fn wake_all(shared: &Shared) {
    for (_, waiters) in lock(&shared.waiters).drain() {
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}
