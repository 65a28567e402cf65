//! meshcast edge node.
//!
//! The sans-I/O core, unit-tested deterministically:
//! - [`mesh`]: everything a node decides — [`mesh::Mesh`] owns the
//!   [`mesh::scheduler`] (who sends which segment to whom: push, pull,
//!   origin), the [`mesh::store`] (segments bounded in bytes, live window
//!   first, LRU beyond), followed streams, pending headers and bans.
//!
//! The shell:
//! - [`node`]: the `(Node, Driver)` pair that owns the libp2p swarm.
//! - [`exchange`]: the `/meshcast/segment/2` stream protocol (bodies as BLAKE3 trees).
//! - [`behaviour`]: the libp2p protocols combined.
//! - [`ingest`]: HLS playlists and origin fetches, for the publisher and the fallback.
//! - [`publisher`]: ingest, sign, inject.
//! - [`metrics`]: Prometheus metric names and the helpers that update them.

pub mod arrival;
pub mod behaviour;
pub mod cache;
pub mod config;
pub mod exchange;
pub mod identity;
pub mod ingest;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod publisher;
pub mod uplink;

pub use config::{Config, Faults};
pub use mesh::{Seed, scheduler, store};
pub use node::{Driver, Event, Info, Node, NodeError, Source, Stats};

/// Microseconds since the Unix epoch: the time base of publish times and
/// token expiries (signed values carry wall-clock time; the sans-I/O parts
/// take it as an argument).
pub fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
