//! meshcast in the browser.
//!
//! [`MeshClient`] (exported to JavaScript by wasm-bindgen) finds a gateway
//! through its `/.well-known/meshcast` document, opens a WebTransport session
//! pinned to the gateway's certificate hashes, says Hello for one stream, and
//! then fetches segments by id with a priority and a deadline. It also opens
//! sessions to the other gateways the Welcome lists, spreads requests over them
//! by measured throughput, reconnects with backoff, and bans a gateway that
//! sends anything its publisher did not sign.
//!
//! The protocol — frames, Welcome and header verification, incremental BLAKE3
//! of bodies, the choice of gateway and the backoff — lives in
//! `meshcast-proto` (`session` and `balance`), shared with the native client;
//! this crate only moves bytes between WebTransport streams and those state
//! machines, and between promises and JavaScript.
//!
//! The hls.js loader that uses it is `web/src/meshcast.js`.

#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
mod js;
#[cfg(target_arch = "wasm32")]
mod transport;

#[cfg(target_arch = "wasm32")]
pub use client::MeshClient;
