//! What a node needs to start: [`Config`], validated by the caller (the
//! CLI's configuration layer) before it gets here.

use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use meshcast_proto::SignedHeader;
use meshcast_proto::frame::Limits;

use crate::mesh::{self, scheduler};

/// Everything a node needs to start. Validated by the caller (the CLI's
/// configuration layer) before it gets here.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Multiaddr>,
    pub external: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub store_max_bytes: u64,
    /// Most segments held in memory, whatever their size: empty or tiny
    /// segments cost an entry each, which the byte bound never limits.
    pub store_max_segments: usize,
    pub live_window: Duration,
    pub scheduler: scheduler::Config,
    pub limits: Limits,
    /// How long a peer that sent bad data stays banned.
    pub ban_duration: Duration,
    /// How often an isolated node re-dials its bootstrap peers.
    pub redial_interval: Duration,
    /// A silent read longer than this ends a transfer.
    pub read_timeout: Duration,
    /// Fetch origin fallbacks from loopback, private and other internal
    /// addresses too (an origin on the operator's own network). Off, a
    /// stream's descriptor cannot make the node request anything inside its
    /// network (see [`crate::origin`]).
    pub allow_private_origins: bool,
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
    /// The volunteer's upload cap in bytes per second, all segment uploads
    /// together (see [`crate::uplink`]); `None`: the uplink is the limit.
    pub max_upload: Option<u64>,
    /// Deliberate misbehaviour, for tests only (the CLI cannot set it).
    #[doc(hidden)]
    pub faults: Faults,
}

/// Ways a node can be made to misbehave, so that tests can check that honest
/// nodes detect, ban and route around it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Flip a byte in the middle of every body of more than one 16 KiB group
    /// sent, its hashes left true: a forger mid-segment (bodies of one
    /// group, such as init segments, go out true).
    pub corrupt_bodies: bool,
    /// Offer and announce headers whose signatures do not verify.
    pub forge_headers: bool,
    /// Send segment bodies at most this many bytes per second: an honest
    /// node on a thin uplink.
    pub upload_rate: Option<u64>,
}

impl Faults {
    pub(crate) fn header(&self, header: &SignedHeader) -> SignedHeader {
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
            store_max_segments: mesh::store::Store::DEFAULT_MAX_SEGMENTS,
            live_window: Duration::from_secs(30),
            scheduler: scheduler::Config::default(),
            limits: Limits::default(),
            ban_duration: Duration::from_secs(600),
            redial_interval: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            allow_private_origins: false,
            announce_only: false,
            cache_dir: None,
            cache_max_bytes: 10 << 30,
            relays: Vec::new(),
            relay_server: false,
            relay_max_reservations: 128,
            relay_max_circuits: 16,
            relay_circuit_duration: Duration::from_secs(120),
            relay_circuit_bytes: 128 << 10,
            max_upload: None,
            faults: Faults::default(),
        }
    }
}

impl Config {
    /// How long peers may take on the segment-exchange streams: silence up
    /// to `read_timeout`, bodies at the scheduler's `min_rate` at least.
    pub fn pace(&self) -> crate::exchange::Pace {
        crate::exchange::Pace {
            frame: self.read_timeout,
            min_rate: self.scheduler.min_rate,
        }
    }

    /// The mesh core's share of the configuration. `cache_max_bytes`: the
    /// disk cache's bound, when there is one.
    pub fn mesh(&self, cache_max_bytes: Option<u64>) -> mesh::Config {
        mesh::Config {
            scheduler: scheduler::Config {
                upload_rate: self.max_upload,
                // The test forger corrupts a body as it encodes it whole:
                // it sends nothing it has not held.
                cut_through: self.scheduler.cut_through && !self.faults.corrupt_bodies,
                ..self.scheduler.clone()
            },
            store_max_bytes: self.store_max_bytes,
            store_max_segments: self.store_max_segments,
            live_window: self.live_window,
            ban_duration: self.ban_duration,
            announce_only: self.announce_only,
            disk_cache: cache_max_bytes.is_some(),
            // Headers take the rest; more would only be evicted and fetched again.
            seed_capacity: cache_max_bytes.unwrap_or(self.store_max_bytes) / 10 * 9,
        }
    }
}
