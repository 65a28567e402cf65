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

use super::mesh::MeshBench;
use super::progress::Progress;
use super::report::{Fig, MeshRun, fig, show};

/// The target of the goal, as a ratio of p95s.
pub const GOAL_RATIO: f64 = 0.5;

/// Every node's upload cap in the section, bytes per second: 100 Mbit/s,
/// 12.5 times the stream.
pub const UPLINK: u64 = 12_500_000;

#[derive(Debug, Serialize)]
pub struct CutSection {
    pub with: MeshRun,
    pub without: MeshRun,
    /// p95 with cut-through ÷ p95 without.
    pub ratio_p95: Fig,
    pub ratio_p50: Fig,
}

impl CutSection {
    pub fn met(&self) -> bool {
        let all = |r: &MeshRun| r.delivered.value >= r.expected.value;
        all(&self.with) && all(&self.without) && self.ratio_p95.value <= GOAL_RATIO
    }
}

pub async fn run(plan: &MeshBench, progress: &Progress) -> anyhow::Result<CutSection> {
    let run = |cut_through: bool| {
        let bench = MeshBench {
            cut_through,
            ..plan.clone()
        };
        let label = if cut_through {
            "cut-through"
        } else {
            "store-and-forward"
        };
        async move {
            progress.phase(&format!("cut: {} nodes, {label}", bench.nodes));
            super::all::mesh_run(&bench, bench.nodes, progress).await
        }
    };
    let with = run(true).await?;
    let without = run(false).await?;
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
