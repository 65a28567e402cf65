//! `meshcast-bench sim`: the whole-node simulator (crate `meshcast-sim`)
//! from the command line, and the suite's `sim` section: the reference
//! scenarios at 1,000 and 10,000 nodes, and the simulator held against real
//! swarms at 20 nodes.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use meshcast_sim::{Report as SimReport, Scenario};
use serde::Serialize;

use super::mesh::{self, MeshBench};
use super::progress::Progress;

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Nodes besides the publisher.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(2..=200_000))]
    nodes: u32,
    /// Each node's uplink, e.g. 10Mbit/s.
    #[arg(long, default_value = "10Mbit/s", value_parser = parse_rate)]
    uplink: f64,
    /// Each node's downlink.
    #[arg(long, default_value = "50Mbit/s", value_parser = parse_rate)]
    downlink: f64,
    /// The publisher's uplink.
    #[arg(long, default_value = "100Mbit/s", value_parser = parse_rate)]
    publisher_uplink: f64,
    /// The stream's bitrate (one rendition).
    #[arg(long, default_value = "4Mbit/s", value_parser = parse_rate)]
    bitrate: f64,
    /// Segment duration, e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    segment: Duration,
    /// How much of the stream is published.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Median round-trip time between two nodes.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    rtt_median: Duration,
    /// Round-trip time from a node to the HTTP origin.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    origin_rtt: Duration,
    /// Share of nodes behind NAT, e.g. 60%.
    #[arg(long, default_value = "60%", value_parser = parse_share)]
    nat: f64,
    /// Probability that a hole punch between two NATed nodes succeeds.
    #[arg(long, default_value = "70%", value_parser = parse_share)]
    punch: f64,
    /// Share of nodes replaced per minute, e.g. 30%/min.
    #[arg(long, default_value = "0%/min", value_parser = parse_churn)]
    churn: f64,
    /// Share of nodes that stall, e.g. 10%: they accept transfers, send and
    /// read nothing, and claim to hold every segment (Sybil holders).
    #[arg(long, default_value = "0%", value_parser = parse_share)]
    stallers: f64,
    /// Share of nodes that forge, e.g. 10%: they send bytes that fail
    /// verification.
    #[arg(long, default_value = "0%", value_parser = parse_share)]
    forgers: f64,
    /// Neighbours each node dials.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    degree: u32,
    /// Neighbours the publisher keeps.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    publisher_degree: u32,
    /// How long a node waits for the mesh before the origin.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    origin_after: Duration,
    /// How long a node waits for a push before pulling a segment it heard of.
    #[arg(long, default_value = "150ms", value_parser = humantime::parse_duration)]
    pull_delay: Duration,
    /// A transfer running longer is cancelled and retried elsewhere.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    transfer_timeout: Duration,
    /// Nodes forward a segment only once they hold all of it (turn off
    /// cut-through), to compare the two with one seed.
    #[arg(long)]
    store_and_forward: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

impl SimArgs {
    fn scenario(&self) -> Scenario {
        Scenario {
            nodes: self.nodes,
            uplink_bps: self.uplink,
            downlink_bps: self.downlink,
            publisher_uplink_bps: self.publisher_uplink,
            degree: self.degree,
            publisher_degree: self.publisher_degree,
            bitrate_bps: self.bitrate,
            segment: self.segment,
            duration: self.duration,
            rtt_median: self.rtt_median,
            origin_rtt: self.origin_rtt,
            nat: self.nat,
            punch_success: self.punch,
            churn_per_min: self.churn,
            stallers: self.stallers,
            forgers: self.forgers,
            origin_after: self.origin_after,
            pull_delay: self.pull_delay,
            transfer_timeout: self.transfer_timeout,
            cut_through: !self.store_and_forward,
            seed: self.seed,
        }
    }
}

/// A rate: `10Mbit/s`, `500kbit/s`, `1Gbit/s`, or bits per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim().trim_end_matches("/s").trim_end_matches("ps");
    let (number, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((t, ""), |i| t.split_at(i));
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "bit" | "b" => 1.0,
        "kbit" | "kb" | "k" => 1e3,
        "mbit" | "mb" | "m" => 1e6,
        "gbit" | "gb" | "g" => 1e9,
        _ => {
            return Err(format!(
                "{text}: a rate is like 10Mbit/s, 500kbit/s or 1Gbit/s"
            ));
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text}: a rate is like 10Mbit/s, 500kbit/s or 1Gbit/s"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("{text}: a rate must be positive"));
    }
    Ok(value * scale)
}

/// A share: `60%` or `0.6`.
pub fn parse_share(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{text}: a share is like 60% or 0.6"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("{text}: a share is between 0% and 100%"));
    }
    Ok(value)
}

/// Churn: `30%/min` (or a share per minute without the suffix).
pub fn parse_churn(text: &str) -> Result<f64, String> {
    parse_share(text.trim().trim_end_matches("/min"))
}

/// `meshcast-bench sim`.
pub fn run_cli(args: SimArgs) -> anyhow::Result<()> {
    let scenario = args.scenario();
    scenario.validate().map_err(anyhow::Error::msg)?;
    let progress = Progress::new(100);
    progress.phase(&format!(
        "simulating {} nodes for {:?} of stream",
        scenario.nodes, scenario.duration
    ));
    let mut done = 0u64;
    let report = meshcast_sim::run(&scenario, &mut |share| {
        let now = (share * 100.0) as u64;
        while done < now {
            progress.step();
            done += 1;
        }
    })
    .map_err(anyhow::Error::msg)?;
    progress.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", SimReport::markdown_header());
        println!("{}", report.markdown_row("this run"));
        println!(
            "{} events simulated in {:.1} s; peak memory {:.0} MB",
            report.events, report.wall_s, report.peak_rss_mb
        );
    }
    Ok(())
}

/// The suite's sizes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Node counts of the reference scenarios.
    pub nodes: Vec<u32>,
    /// Nodes of the simulator-against-swarms check.
    pub check_nodes: usize,
    pub check_segments: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                nodes: vec![200],
                check_nodes: 5,
                check_segments: 4,
            }
        } else {
            Self {
                nodes: vec![1_000, 10_000],
                check_nodes: 20,
                check_segments: 10,
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub label: String,
    pub report: SimReport,
}

/// The simulator beside real swarms on loopback, same stream and topology.
#[derive(Debug, Serialize)]
pub struct Check {
    pub nodes: usize,
    pub segments: usize,
    pub segment_bytes: usize,
    pub sim: SimReport,
    pub swarms: mesh::MeshReport,
}

#[derive(Debug, Serialize)]
pub struct SimSection {
    pub runs: Vec<Run>,
    pub check: Option<Check>,
}

/// The reference scenarios (issue #11): 10 Mbit/s uplinks, 50 ms median
/// RTT, 4 Mbit/s in 2 s segments, 60 % behind NAT; with and without 30 %/min
/// churn and 10 % stalling peers.
fn references(nodes: &[u32]) -> Vec<(String, Scenario)> {
    let mut all = Vec::new();
    for &n in nodes {
        let base = Scenario {
            nodes: n,
            ..Scenario::default()
        };
        all.push((format!("{n} nodes"), base.clone()));
        // The same network, seed and stream, each hop waiting for the whole
        // segment: what cut-through buys.
        all.push((
            format!("{n} nodes, store-and-forward"),
            Scenario {
                cut_through: false,
                ..base.clone()
            },
        ));
        all.push((
            format!("{n} nodes, 30%/min churn, 10% stalling"),
            Scenario {
                churn_per_min: 0.3,
                stallers: 0.1,
                ..base
            },
        ));
    }
    all
}

/// The loopback bench's world in the simulator: everyone dials the
/// publisher and four others, links far faster than the stream, sub-
/// millisecond round trips, no NAT, no origin to fall back to in time.
fn loopback(nodes: usize, bench: &MeshBench) -> Scenario {
    Scenario {
        nodes: nodes as u32,
        uplink_bps: 1e9,
        downlink_bps: 1e9,
        publisher_uplink_bps: 1e9,
        degree: 8,
        publisher_degree: nodes as u32,
        bitrate_bps: bench.segment_bytes as f64 * 8.0 / bench.interval.as_secs_f64(),
        segment: bench.interval,
        duration: bench.interval * bench.segments as u32,
        rtt_median: Duration::from_micros(200),
        origin_rtt: Duration::from_millis(1),
        nat: 0.0,
        origin_after: Duration::from_secs(3600),
        ..Scenario::default()
    }
}

pub async fn section(plan: &Plan, progress: &Progress) -> anyhow::Result<SimSection> {
    let mut runs = Vec::new();
    for (label, scenario) in references(&plan.nodes) {
        progress.phase(&format!("sim: {label}"));
        let report = tokio::task::spawn_blocking(move || meshcast_sim::run(&scenario, &mut |_| {}))
            .await
            .context("the simulator panicked")?
            .map_err(anyhow::Error::msg)?;
        progress.note(&format!(
            "sim {label}: delivered {:.2}%, p95 {:.2} s, origin {:.1}%, duplicates {:.3}, honest bans {}, {:.0} s wall, {:.0} MB",
            report.delivered * 100.0,
            report.propagation_p95_s,
            report.origin_fraction * 100.0,
            report.duplicate_ratio,
            report.honest_bans,
            report.wall_s,
            report.peak_rss_mb
        ));
        runs.push(Run { label, report });
    }
    let bench = MeshBench {
        cut_through: true,
        max_upload: None,
        publisher_degree: None,
        nodes: plan.check_nodes,
        segment_bytes: 250_000,
        segments: plan.check_segments,
        interval: Duration::from_secs(1),
    };
    progress.phase(&format!("sim: {} nodes as real swarms", bench.nodes));
    let swarms = mesh::run(&bench, |phase| {
        progress.phase(&format!("sim check: {phase}"))
    })
    .await?;
    let scenario = loopback(bench.nodes, &bench);
    let sim = tokio::task::spawn_blocking(move || meshcast_sim::run(&scenario, &mut |_| {}))
        .await
        .context("the simulator panicked")?
        .map_err(anyhow::Error::msg)?;
    progress.note(&format!(
        "sim vs swarms, {} nodes: p50 {:.1} vs {:.1} ms, p95 {:.1} vs {:.1} ms, duplicates {:.3} vs {:.3}",
        bench.nodes,
        sim.propagation_p50_s * 1e3,
        swarms.p50_ms,
        sim.propagation_p95_s * 1e3,
        swarms.p95_ms,
        sim.duplicate_ratio,
        swarms.duplicate_ratio
    ));
    Ok(SimSection {
        runs,
        check: Some(Check {
            nodes: bench.nodes,
            segments: bench.segments,
            segment_bytes: bench.segment_bytes,
            sim,
            swarms,
        }),
    })
}

/// The section in the Markdown report.
pub fn markdown(w: &mut String, section: Option<&SimSection>) {
    let _ = writeln!(w, "\n## Simulator\n");
    let Some(s) = section else {
        let _ = writeln!(w, "Not run.");
        return;
    };
    let _ = writeln!(w, "{}", SimReport::markdown_header());
    for run in &s.runs {
        let _ = writeln!(w, "{}", run.report.markdown_row(&run.label));
    }
    if let Some(c) = &s.check {
        let _ = writeln!(
            w,
            "\nHeld against real swarms: {} nodes on loopback, {} segments of {} bytes, one a second.\n",
            c.nodes, c.segments, c.segment_bytes
        );
        let _ = writeln!(w, "| | delivered | p50 ms | p95 ms | max ms | duplicates |");
        let _ = writeln!(w, "|---|---|---|---|---|---|");
        let _ = writeln!(
            w,
            "| simulator | {:.2}% | {:.1} | {:.1} | {:.1} | {:.3} |",
            c.sim.delivered * 100.0,
            c.sim.propagation_p50_s * 1e3,
            c.sim.propagation_p95_s * 1e3,
            c.sim.propagation_max_s * 1e3,
            c.sim.duplicate_ratio
        );
        let expected = (c.swarms.nodes * c.swarms.segments).max(1);
        let _ = writeln!(
            w,
            "| swarms | {:.2}% | {:.1} | {:.1} | {:.1} | {:.3} |",
            c.swarms.delivered as f64 / expected as f64 * 100.0,
            c.swarms.p50_ms,
            c.swarms.p95_ms,
            c.swarms.max_ms,
            c.swarms.duplicate_ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_shares_and_churn_parse_with_clear_errors() {
        assert_eq!(parse_rate("10Mbit/s"), Ok(10e6));
        assert_eq!(parse_rate("500kbit/s"), Ok(500e3));
        assert_eq!(parse_rate("1Gbit/s"), Ok(1e9));
        assert_eq!(parse_rate("4000000"), Ok(4e6));
        assert!(parse_rate("fast").unwrap_err().contains("10Mbit/s"));
        assert!(parse_rate("-1Mbit/s").is_err());
        assert_eq!(parse_share("60%"), Ok(0.6));
        assert_eq!(parse_share("0.1"), Ok(0.1));
        assert!(parse_share("120%").unwrap_err().contains("between"));
        assert_eq!(parse_churn("30%/min"), Ok(0.3));
    }
}
