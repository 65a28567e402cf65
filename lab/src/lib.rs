//! A network lab of real kernel networking, and the scenarios meshcast is
//! measured in there (issue #14).
//!
//! - [`net`]: namespaces on a "WAN" bridge, routers doing NAT with nftables,
//!   and a way to run code inside a host.
//! - [`link`]: a host's link: `tbf` rates, and delay, jitter and loss from
//!   `netem` or, without it, a userspace stage of TAP devices.
//! - [`host`]: a meshcast node running inside a host.
//! - [`matrix`]: the NAT matrix, two nodes meeting through a relay for every
//!   pair of NAT types and transport.
//! - [`thin`]: a live stream through volunteers on thin, distant home lines.
//! - [`browser`]: a headless Chromium viewer in a host, for the thin run.
//! - [`churn`]: the same with volunteers as `meshcast node` processes
//!   ([`process`]), killed and joining while viewers ([`viewer`]) watch.
//!
//! Everything here needs root, `ip` and `nft` ([`net::Lab::unavailable`] says
//! why not); tests skip, saying so, where it cannot run.

pub mod browser;
pub mod churn;
pub mod host;
pub mod link;
pub mod matrix;
pub mod net;
pub mod process;
pub mod thin;
pub mod viewer;
