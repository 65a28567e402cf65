//! meshcast relay: serves browsers over WebTransport from a mesh node.
//!
//! - [`gateway`]: the WebTransport endpoint, its limits and its driver.
//! - `session`: one browser session (Hello/Welcome, Request → delivery stream).
//! - [`certs`]: self-signed certificates with rotation, or an operator's files.
//! - [`wellknown`]: `/.well-known/meshcast` for pages to find and pin the gateway.
//! - [`client`]: a native client speaking the same protocol, for tests and benches.

pub mod certs;
pub mod client;
pub mod config;
pub mod gateway;
mod session;
mod shared;
pub mod wellknown;

pub use client::{Client, ClientError, ClientEvent};
pub use gateway::{Config, Driver, Gateway, GatewayError, Limits, Peer};
