//! meshcast's whole-node simulator.
//!
//! Thousands of real [`Mesh`](meshcast_node::mesh::Mesh) cores — the same
//! policy code the node runs — over a modelled internet: per-node uplink and
//! downlink shared fairly by concurrent flows, latency from node placement
//! (regions and access links, see `net.rs`), NAT (two NATed nodes connect
//! only when a punch succeeds), churn (nodes leave abruptly and fresh ones
//! join) and misbehaving peers (stalling or forging). A run is deterministic
//! for a seed: same [`Scenario`], same [`Report::figures`].
//!
//! What it leaves out, on purpose: QUIC and gossipsub themselves (messages
//! take one way's latency; announcements flood every link once), CPU, loss
//! (transfers are reliable streams; loss shows as lower throughput, which
//! the uplink figure stands for), and the DHT (nodes start connected).

mod net;
mod report;
mod scenario;
mod world;

pub use report::{Report, peak_rss_mb};
pub use scenario::{BadKind, Scenario};

/// Runs a scenario. `progress` is called with the share of simulated time
/// done (0–1), about twice per simulated second.
pub fn run(scenario: &Scenario, progress: &mut dyn FnMut(f64)) -> Result<Report, String> {
    scenario.validate()?;
    let started = std::time::Instant::now();
    let mut report = world::World::new(scenario.clone()).run(progress);
    report.wall_s = started.elapsed().as_secs_f64();
    report.peak_rss_mb = peak_rss_mb();
    Ok(report)
}

#[cfg(test)]
mod tests;
