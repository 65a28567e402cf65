//! The suite's `cut` section: one mesh of real swarms on loopback run twice
//! side by side, nodes forwarding each verified piece of a segment as it
//! arrives (cut-through, the default) and then holding each segment whole
//! before passing it on (store-and-forward). 1 MiB segments, so that a hop
//! costs a visible share of a transfer. Goal: p95 with cut-through at most
//! half of store-and-forward's.
//!
//! Every node, the publisher included, is capped at [`UPLINK`]: loopback has
//! no uplink to wait for, only CPU, and there an uncapped publisher (which
//! the DHT connects to every node) serves most nodes itself, so hardly a
//! segment is forwarded and cut-through only adds forwarders slower than it
//! (`--max-upload` on `meshcast-bench mesh` runs either way).

use std::fmt::Write as _;

use serde::Serialize;

use super::figure::{Fig, fig};
use super::mesh::MeshBench;
use super::progress::Progress;

/// The target of the goal, as a ratio of p95s.
pub const GOAL_RATIO: f64 = 0.5;

/// Every node's upload cap in the section, bytes per second: 100 Mbit/s,
/// 12.5 times the stream.
pub const UPLINK: u64 = 12_500_000;

/// One of the two runs.
#[derive(Debug, Serialize)]
pub struct CutRun {
    pub nodes: usize,
    pub segments: usize,
    pub segment_bytes: Fig,
    pub delivered: Fig,
    pub expected: Fig,
    pub p50: Fig,
    pub p95: Fig,
    pub max: Fig,
    pub duplicate_ratio: Fig,
    /// CPU of the bench process (every swarm) over the run.
    pub cpu: Fig,
}

#[derive(Debug, Serialize)]
pub struct CutSection {
    pub with: CutRun,
    pub without: CutRun,
    /// p95 with cut-through ÷ p95 without.
    pub ratio_p95: Fig,
    pub ratio_p50: Fig,
}

impl CutSection {
    pub fn met(&self) -> bool {
        let all = |r: &CutRun| r.delivered.value >= r.expected.value;
        all(&self.with) && all(&self.without) && self.ratio_p95.value <= GOAL_RATIO
    }
}

async fn run_one(bench: MeshBench, progress: &Progress) -> anyhow::Result<CutRun> {
    let label = if bench.cut_through {
        "cut-through"
    } else {
        "store-and-forward"
    };
    progress.phase(&format!("cut: {} nodes, {label}", bench.nodes));
    let (cpu_before, start) = (super::proc::cpu_seconds("self")?, std::time::Instant::now());
    let r = super::mesh::run(&bench, |phase| {
        progress.phase(&format!("cut ({label}): {phase}"))
    })
    .await?;
    let cores = (super::proc::cpu_seconds("self")? - cpu_before) / start.elapsed().as_secs_f64();
    Ok(CutRun {
        nodes: r.nodes,
        segments: r.segments,
        segment_bytes: fig(r.segment_bytes as f64, "bytes"),
        delivered: fig(r.delivered as f64, "(node, segment) pairs"),
        expected: fig((r.nodes * r.segments) as f64, "(node, segment) pairs"),
        p50: fig(r.p50_ms, "ms"),
        p95: fig(r.p95_ms, "ms"),
        max: fig(r.max_ms, "ms"),
        duplicate_ratio: fig(r.duplicate_ratio, "received ÷ needed"),
        cpu: fig(cores, "cores"),
    })
}

pub async fn run(plan: &MeshBench, progress: &Progress) -> anyhow::Result<CutSection> {
    let bench = |cut_through| MeshBench {
        cut_through,
        ..plan.clone()
    };
    let with = run_one(bench(true), progress).await?;
    let without = run_one(bench(false), progress).await?;
    let ratio = |a: &Fig, b: &Fig| fig(a.value / b.value.max(1e-9), "ratio");
    let section = CutSection {
        ratio_p95: ratio(&with.p95, &without.p95),
        ratio_p50: ratio(&with.p50, &without.p50),
        with,
        without,
    };
    progress.note(&format!(
        "cut-through: p95 {:.1} ms against {:.1} ms store-and-forward ({:.2}×)",
        section.with.p95.value, section.without.p95.value, section.ratio_p95.value
    ));
    Ok(section)
}

fn show(f: &Fig, decimals: usize) -> String {
    format!("{:.*}", decimals, f.value)
}

pub fn markdown(w: &mut String, section: Option<&CutSection>) {
    let _ = writeln!(w, "\n## Cut-through against store-and-forward\n");
    let Some(s) = section else {
        let _ = writeln!(w, "Not run.");
        return;
    };
    let _ = writeln!(
        w,
        "The same mesh of real swarms on loopback run twice, side by side: {} nodes, {} segments of {:.0} kB a second, every uplink (the publisher's too) capped at {:.0} Mbit/s.\n",
        s.with.nodes,
        s.with.segments,
        s.with.segment_bytes.value / 1e3,
        UPLINK as f64 * 8.0 / 1e6
    );
    let _ = writeln!(
        w,
        "| | delivered | p50 ms | p95 ms | max ms | duplicates | CPU (cores) |\n|---|---|---|---|---|---|---|"
    );
    for (label, r) in [("cut-through", &s.with), ("store-and-forward", &s.without)] {
        let _ = writeln!(
            w,
            "| {label} | {} of {} | {} | {} | {} | {} | {} |",
            r.delivered.value,
            r.expected.value,
            show(&r.p50, 1),
            show(&r.p95, 1),
            show(&r.max, 1),
            show(&r.duplicate_ratio, 3),
            show(&r.cpu, 2)
        );
    }
    let _ = writeln!(
        w,
        "\np95 ratio {} (goal ≤ {GOAL_RATIO}), p50 ratio {}.",
        show(&s.ratio_p95, 2),
        show(&s.ratio_p50, 2)
    );
}
