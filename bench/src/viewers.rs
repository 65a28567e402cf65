//! "Hostile viewers": a relay serving good sessions while attackers of every
//! kind in [`meshcast_relay::attack`] abuse it, against the same run without
//! them. What counts: the good sessions' late segments (goal 0), and the
//! relay's RSS and CPU with and without the attack.

use std::fmt::Write as _;
use std::time::Duration;

use meshcast_relay::attack::Kind;
use serde::Serialize;

use super::figure::{Fig, fig};
use super::progress::Progress;

/// Sizes of the section.
pub struct Plan {
    pub sessions: usize,
    /// Attackers of each kind.
    pub attackers: usize,
    pub duration: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                sessions: 20,
                attackers: 2,
                duration: Duration::from_secs(6),
            }
        } else {
            Self {
                sessions: 1000,
                attackers: 100,
                duration: Duration::from_secs(30),
            }
        }
    }
}

/// One run: with or without attackers.
#[derive(Debug, Serialize)]
pub struct Run {
    pub attackers_per_kind: usize,
    pub sessions_open: Fig,
    pub expected_segments: Fig,
    pub late_segments: Fig,
    pub p99: Fig,
    pub relay_cpu: Fig,
    pub relay_peak_rss: Fig,
    pub attacks_cut_off: Fig,
}

#[derive(Debug, Serialize)]
pub struct ViewersSection {
    pub sessions: usize,
    pub bitrate: Fig,
    pub measured: Fig,
    pub kinds: Vec<&'static str>,
    pub without: Run,
    pub with: Run,
}

impl ViewersSection {
    /// Whether the goal holds: every good session open and no late segment
    /// under attack.
    pub fn met(&self) -> bool {
        self.with.late_segments.value == 0.0
            && self.with.sessions_open.value == self.sessions as f64
            && self.with.expected_segments.value > 0.0
    }
}

pub async fn run(plan: &Plan, progress: &Progress) -> anyhow::Result<ViewersSection> {
    let mut runs = Vec::new();
    for attackers in [0, plan.attackers] {
        let label = if attackers == 0 {
            "no attackers".to_string()
        } else {
            format!("{attackers} attackers of each kind")
        };
        progress.phase(&format!("hostile viewers: {label}"));
        let bench = super::RelayBench {
            sessions: plan.sessions,
            bitrate: 2_000_000,
            segment_duration: Duration::from_secs(2),
            duration: plan.duration,
            attackers,
        };
        let r = super::run_relay(&bench, &|phase: &str| {
            progress.phase(&format!("hostile viewers ({label}): {phase}"))
        })
        .await?;
        progress.note(&format!(
            "hostile viewers, {label}: {} of {} sessions open, {} late of {}, relay {:.2} cores, {:.0} MiB RSS",
            r.sessions_open,
            plan.sessions,
            r.late_segments,
            r.expected_segments,
            r.relay_cpu_cores,
            r.relay_peak_rss_mib
        ));
        runs.push(Run {
            attackers_per_kind: attackers,
            sessions_open: fig(r.sessions_open as f64, "sessions"),
            expected_segments: fig(r.expected_segments as f64, "segments"),
            late_segments: fig(r.late_segments as f64, "segments"),
            p99: fig(r.p99_ms, "ms"),
            relay_cpu: fig(r.relay_cpu_cores, "cores"),
            relay_peak_rss: fig(r.relay_peak_rss_mib, "MiB"),
            attacks_cut_off: fig(r.attacks_cut_off as f64, "times"),
        });
    }
    let with = runs.pop().ok_or_else(|| anyhow::anyhow!("no run"))?;
    let without = runs.pop().ok_or_else(|| anyhow::anyhow!("no run"))?;
    Ok(ViewersSection {
        sessions: plan.sessions,
        bitrate: fig(2.0, "Mbit/s"),
        measured: fig(plan.duration.as_secs_f64(), "s"),
        kinds: Kind::ALL.iter().map(|k| k.name()).collect(),
        without,
        with,
    })
}

pub fn markdown(w: &mut String, section: Option<&ViewersSection>) {
    let _ = writeln!(w, "\n## Hostile viewers\n");
    let Some(v) = section else {
        let _ = writeln!(w, "Not run.");
        return;
    };
    let _ = writeln!(
        w,
        "One `meshcast relay` child process serving {} good sessions of a {} Mbit/s stream (every segment asked for within one segment duration), {} s measured; then the same with {} attackers of each kind running at once: {}. Good viewers come from loopback addresses 20 at a time, attackers 25 per address and each kind from its own, so the relay keeps its default per-address limits (32 sessions, 10 new connections a second after a burst of 40). Goal: no late segment for the good sessions.\n",
        v.sessions,
        v.bitrate.value,
        v.measured.value,
        v.with.attackers_per_kind,
        v.kinds.join(", ")
    );
    let _ = writeln!(
        w,
        "| | good sessions open | late | p99 ms | relay cores | relay RSS MiB | attackers cut off |\n|---|---|---|---|---|---|---|"
    );
    for (label, r) in [
        ("without attackers", &v.without),
        ("with attackers", &v.with),
    ] {
        let _ = writeln!(
            w,
            "| {label} | {} | {} of {} | {:.1} | {:.2} | {:.0} | {} |",
            r.sessions_open.value,
            r.late_segments.value,
            r.expected_segments.value,
            r.p99.value,
            r.relay_cpu.value,
            r.relay_peak_rss.value,
            r.attacks_cut_off.value
        );
    }
}
