//! What a gateway needs to start: [`Config`] and the [`Limits`] that bound it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::certs::CertSource;

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
