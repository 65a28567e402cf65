//! The node: a [`Node`] handle and the [`Driver`] that owns the swarm.
//!
//! Like moq's `(Session, Driver)`: [`Node::new`] spawns nothing. The caller
//! runs [`Driver::run`] (usually on its own task); the handle sends commands
//! to it and reads the store directly. The driver is a translator between
//! libp2p and the sans-I/O [`Mesh`](crate::mesh::Mesh): swarm events,
//! commands and finished tasks go in, the mesh's outputs come out as tasks
//! the driver owns (they end when it does).
//!
//! - `handle.rs`: [`Node`], its commands and what it reports.
//! - `driver.rs`: the event loop, commands, performing the mesh's outputs.
//! - `events.rs`: swarm events (connections, gossip, pings, the DHT).
//! - `nat.rs`: relay reservations, the DHT mode, which peers are neighbours.
//! - `tasks.rs`: transfers, header lists and disk-cache work, each a task.
//! - `serve.rs`: inbound segment-exchange streams.

mod driver;
mod events;
mod handle;
mod nat;
mod serve;
mod tasks;
mod uploads;

pub use driver::Driver;
pub use handle::{Event, Info, Node, NodeError, Source, Stats};
