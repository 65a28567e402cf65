//! `meshcast bench …`: benchmarks that print figures.

use std::time::Duration;

use anyhow::Context;
use meshcast_node::bench::{self, MeshBench, MeshReport};

pub fn mesh(bench: MeshBench, json: bool) -> anyhow::Result<()> {
    crate::run::init_logs("warn");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(bench::run(&bench, |phase| eprintln!("bench: {phase}")))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_mesh(&report);
    }
    if report.delivered < report.nodes * report.segments {
        anyhow::bail!(
            "only {} of {} (node, segment) pairs were delivered",
            report.delivered,
            report.nodes * report.segments
        );
    }
    Ok(())
}

fn print_mesh(r: &MeshReport) {
    println!(
        "mesh: {} nodes, {} segments of {} bytes (one publisher, QUIC on 127.0.0.1)",
        r.nodes, r.segments, r.segment_bytes
    );
    println!(
        "  delivered        {} of {}",
        r.delivered,
        r.nodes * r.segments
    );
    println!(
        "  propagation      p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms
    );
    println!(
        "  duplicate ratio  {:.3} (bytes received ÷ bytes needed)",
        r.duplicate_ratio
    );
    println!(
        "  origin bytes     {} ({:.2} × the stream)",
        r.origin_bytes,
        r.origin_bytes as f64 / r.stream_bytes.max(1) as f64
    );
}

/// Parses "250ms", "1s".
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
}
