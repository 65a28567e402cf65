//! meshcast relay: serves browsers over WebTransport from a mesh node.
//!
//! - [`gateway`]: the WebTransport endpoint, its limits and its driver.
//! - `session`: one browser session (Hello/Welcome, Request → delivery stream).
//! - `streams`: which streams are served, followed and unfollowed for viewers.
//! - `records`: gateway records, this gateway's and the mesh's others'.
//! - `admission`: slot counts per address, per IPv6 /64 and in total.
//! - [`certs`]: self-signed certificates with rotation, or an operator's files.
//! - [`http`]: the HTTP endpoints' connection limits and timeouts.
//! - [`wellknown`]: `/.well-known/meshcast` for pages to find and pin the gateway.
//! - [`client`]: a native client speaking the same protocol, for tests and benches.
//! - [`attack`]: hostile viewers, for the benchmark's "hostile viewers" section.

mod admission;
pub mod attack;
pub mod certs;
pub mod client;
pub mod config;
pub mod gateway;
pub mod http;
mod outlet;
mod records;
mod session;
mod shared;
mod streams;
pub mod websocket;
pub mod wellknown;

pub use client::{Client, ClientError, ClientEvent};
pub use gateway::{Config, Driver, Gateway, GatewayError, Limits, Peer, Serve};
