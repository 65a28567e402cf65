//! What a run measured, and its figures.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::scenario::Scenario;

/// Raw counts, gathered as the run goes.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    /// (node, segment, time from publication to stored) for honest nodes.
    pub stored: Vec<(u32, u64, Duration)>,
    pub origin_bytes: u64,
    pub origin_fetches: u64,
    pub bans: u64,
    pub honest_bans: u64,
    pub warnings: u64,
    pub events: u64,
    /// Transfers started (pushes offered, pulls, origin fetches) and
    /// cancelled by the mesh (timed out, or another copy arrived first).
    pub transfers: u64,
    pub cancelled: u64,
    pub outcomes: BTreeMap<&'static str, u64>,
}

/// The figures of one run. Fractions are 0–1; times are seconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub scenario: Scenario,
    /// (honest node, segment) pairs that should arrive: the node was there
    /// when the segment was published and stayed 10 s or more.
    pub expected_pairs: u64,
    /// Share of them that arrived before the run ended.
    pub delivered: f64,
    /// Publication to stored, over the pairs that arrived.
    pub propagation_p50_s: f64,
    pub propagation_p95_s: f64,
    pub propagation_p99_s: f64,
    pub propagation_max_s: f64,
    /// Bytes honest nodes received (mesh and origin) ÷ bytes of the segments
    /// they stored: 1.0 means no byte arrived twice.
    pub duplicate_ratio: f64,
    /// Share of the bytes honest nodes received that came from the origin.
    pub origin_fraction: f64,
    pub origin_bytes: u64,
    pub origin_fetches: u64,
    pub bans: u64,
    /// Bans of peers that did nothing wrong: the goal is 0.
    pub honest_bans: u64,
    /// Transfers started, and the share the mesh cancelled (a timeout, or
    /// another copy first): bandwidth spent for nothing.
    pub transfers: u64,
    pub cancelled: f64,
    /// What became of the transfers, by kind and outcome: where the time
    /// and the bandwidth went.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Upload per honest node, bytes: mean, max, and the share of honest
    /// nodes that uploaded nothing.
    pub upload_mean_bytes: f64,
    pub upload_max_bytes: u64,
    pub upload_none: f64,
    pub events: u64,
    /// The simulator's own cost: wall time and peak memory of the process.
    pub wall_s: f64,
    pub peak_rss_mb: f64,
}

fn seconds(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64()
}

impl Report {
    pub(crate) fn new(
        scenario: &Scenario,
        expected: u64,
        mut delivered: Vec<Duration>,
        received: u64,
        needed: u64,
        uploads: &[u64],
        m: &Measured,
    ) -> Self {
        delivered.sort();
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let honest = uploads.len().max(1) as f64;
        Self {
            scenario: scenario.clone(),
            expected_pairs: expected,
            delivered: ratio(delivered.len() as f64, expected as f64),
            propagation_p50_s: seconds(&delivered, 0.50),
            propagation_p95_s: seconds(&delivered, 0.95),
            propagation_p99_s: seconds(&delivered, 0.99),
            propagation_max_s: seconds(&delivered, 1.0),
            duplicate_ratio: ratio(received as f64, needed as f64),
            origin_fraction: ratio(m.origin_bytes as f64, received as f64),
            origin_bytes: m.origin_bytes,
            origin_fetches: m.origin_fetches,
            bans: m.bans,
            honest_bans: m.honest_bans,
            transfers: m.transfers,
            cancelled: ratio(m.cancelled as f64, m.transfers as f64),
            outcomes: m.outcomes.clone(),
            upload_mean_bytes: uploads.iter().sum::<u64>() as f64 / honest,
            upload_max_bytes: uploads.iter().copied().max().unwrap_or(0),
            upload_none: uploads.iter().filter(|u| **u == 0).count() as f64 / honest,
            events: m.events,
            wall_s: 0.0,
            peak_rss_mb: 0.0,
        }
    }

    /// The figures that depend only on the scenario and its seed (not the
    /// simulator's wall time or memory): what "same seed, same figures"
    /// compares.
    pub fn figures(&self) -> Report {
        Self {
            wall_s: 0.0,
            peak_rss_mb: 0.0,
            ..self.clone()
        }
    }

    /// One Markdown table row; see [`Report::markdown_header`].
    pub fn markdown_row(&self, label: &str) -> String {
        let mb = |b: f64| b / 1e6;
        format!(
            "| {label} | {} | {:.2}% | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.2}% | {} | {:.0}% | {:.1} | {:.1} | {:.0}% | {:.0} s | {:.0} MB |",
            self.scenario.nodes,
            self.delivered * 100.0,
            self.propagation_p50_s,
            self.propagation_p95_s,
            self.propagation_p99_s,
            self.propagation_max_s,
            self.duplicate_ratio,
            self.origin_fraction * 100.0,
            self.honest_bans,
            self.cancelled * 100.0,
            mb(self.upload_mean_bytes),
            mb(self.upload_max_bytes as f64),
            self.upload_none * 100.0,
            self.wall_s,
            self.peak_rss_mb,
        )
    }

    pub fn markdown_header() -> &'static str {
        "| scenario | nodes | delivered | p50 s | p95 s | p99 s | max s | duplicates | origin | honest bans | cancelled | upload mean MB | upload max MB | uploaded nothing | sim wall | sim memory |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    }
}

/// The peak resident memory of this process, MB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
