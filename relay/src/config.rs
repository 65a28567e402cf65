//! What a gateway needs to start: [`Config`] and the [`Limits`] that bound it.

use std::net::SocketAddr;
use std::time::Duration;

use meshcast_proto::{PublicKey, StreamId, StreamKey};

use crate::certs::CertSource;

/// Limits that keep a gateway's memory and CPU bounded under abuse.
///
/// Connections are counted twice: while their QUIC handshake and HTTP/3
/// CONNECT are under way (refused before any state is kept) and then as
/// sessions (refused with an error frame). Both count per address and per
/// IPv6 /64 (one household or server usually holds a whole /64) with the
/// session caps (a client may be opening as many connections as it may hold
/// sessions), and in total: `max_handshakes`, `max_sessions`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    /// Sessions from one IPv6 /64 at once.
    pub max_sessions_per_prefix: usize,
    /// Connections in their handshake (before the HTTP/3 CONNECT), in total.
    pub max_handshakes: usize,
    /// New connections per second from one address on average (a /64: twice
    /// as many); over it a connection is refused at its first packet.
    pub connections_per_second_per_ip: u32,
    /// New connections from one address at once before the rate applies (a
    /// /64: twice as many).
    pub connection_burst_per_ip: u32,
    /// Time from a connection's first packet to its HTTP/3 CONNECT.
    pub handshake_timeout: Duration,
    /// Requests waiting for a segment that has not arrived, over all sessions.
    pub max_waiters: usize,
    /// Time a control frame may take to leave; a delivery gets this plus its
    /// size at `min_delivery_rate`. A viewer that stops reading is cut off.
    pub write_timeout: Duration,
    /// Slowest delivery a viewer may take, in bytes per second.
    pub min_delivery_rate: u64,
    /// Distinct streams being looked up in the DHT at once, for Hellos.
    pub max_lookups: usize,
    /// Streams served at once (followed for viewers or found for them).
    pub max_streams: usize,
    /// A stream the gateway followed for viewers is unfollowed after this
    /// long without one.
    pub unfollow_after: Duration,
    /// Requests being served at once, per session.
    pub max_inflight: usize,
    /// Segment bytes being sent at once, per session.
    pub max_inflight_bytes: u64,
    /// A session with no valid request for this long is closed.
    pub idle_timeout: Duration,
    /// Largest control frame a client may send.
    pub max_client_frame: usize,
    /// Time a client has, from its CONNECT, to open its control stream and
    /// finish sending Hello.
    pub hello_timeout: Duration,
    /// Longest a request may wait for a segment that has not arrived yet.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 5_000,
            max_sessions_per_ip: 32,
            max_sessions_per_prefix: 64,
            max_handshakes: 1_000,
            connections_per_second_per_ip: 10,
            connection_burst_per_ip: 40,
            handshake_timeout: Duration::from_secs(10),
            max_waiters: 50_000,
            write_timeout: Duration::from_secs(10),
            min_delivery_rate: 64 << 10,
            max_lookups: 16,
            max_streams: 64,
            unfollow_after: Duration::from_secs(600),
            max_inflight: 16,
            max_inflight_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(60),
            max_client_frame: 4096,
            hello_timeout: Duration::from_secs(5),
            max_wait: Duration::from_secs(20),
        }
    }
}

/// Which streams a gateway serves. Streams its node follows (the operator's
/// `node.follow`) are always served; others only when listed here, and the
/// gateway then follows them on a viewer's first Hello and unfollows them
/// after [`Limits::unfollow_after`] without viewers. Any other stream gets
/// `UNKNOWN_STREAM` without a DHT lookup or a follow.
#[derive(Debug, Clone, Default)]
pub struct Serve {
    /// Stream ids served on demand.
    pub streams: Vec<StreamId>,
    /// Any stream signed by one of these publishers (looked up to learn its
    /// publisher, then served or refused).
    pub publishers: Vec<PublicKey>,
    /// Any stream the mesh knows. Only for a closed mesh (the demo, tests):
    /// anyone could make the gateway follow streams of their choosing.
    pub any: bool,
}

impl Serve {
    /// Whether a stream not followed yet may be looked up at all.
    pub fn may_look_up(&self, stream: &StreamId) -> bool {
        self.any || !self.publishers.is_empty() || self.streams.contains(stream)
    }

    /// Whether a stream found in the DHT may be served.
    pub fn allows(&self, key: &StreamKey) -> bool {
        self.any || self.streams.contains(&key.id) || self.publishers.contains(&key.publisher)
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
    /// Connection limits and timeouts of the HTTP endpoint (`web_listen`).
    pub web_limits: crate::http::HttpLimits,
    /// Which streams viewers may ask for.
    pub serve: Serve,
    /// Put viewers' addresses in logs (off: a session id only).
    pub log_addresses: bool,
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
    /// Answer every Nth request (0: never) with another segment of the same
    /// stream that the node holds, genuine and validly signed: only the
    /// client's check that a delivery answers its request can notice.
    pub wrong_segment_every: u32,
}

impl Faults {
    /// The `n`th delivery's body (counted from 1) on the wire when it is
    /// to be forged: every `corrupt_every`th, with a byte in its middle
    /// group flipped and its hashes true, so the client catches it at that
    /// group.
    pub(crate) fn forged(&self, n: u64, body: &[u8]) -> Option<Vec<u8>> {
        let every = u64::from(self.corrupt_every);
        if every == 0 || !n.is_multiple_of(every) || body.is_empty() {
            return None;
        }
        let outboard = meshcast_proto::tree::Outboard::new(body);
        meshcast_proto::tree::forge_middle(&outboard, body).ok()
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
            web_limits: Default::default(),
            serve: Serve::default(),
            log_addresses: false,
            peers: Vec::new(),
            find_timeout: Duration::from_secs(10),
            faults: Faults::default(),
        }
    }
}
