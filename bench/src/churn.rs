//! The churn run (`meshcast-bench lab churn`, the `churn` section of
//! `all`): volunteers as `meshcast node` processes in the lab, a share
//! killed with SIGKILL and others joining while viewers watch (see
//! [`meshcast_lab::churn`]).

use std::fmt::Write as _;
use std::time::Duration;

use meshcast_lab::churn;
use meshcast_lab::net::Lab;
use serde::Serialize;

use super::figure::{Fig, fig};
use super::playback::{VIEWER_BUFFER, VIEWER_MODEL, ViewerFigs};
use super::progress::Progress;

/// The churn run of `all` and of `lab churn`: `nodes` volunteers, 30% of
/// them killed and a sixth as many joining during `window`.
pub fn plan(
    bin: std::path::PathBuf,
    nodes: usize,
    window: Duration,
    viewers: usize,
) -> churn::Plan {
    churn::Plan {
        bin,
        nodes,
        kills: (nodes * 3).div_ceil(10),
        joins: nodes.div_ceil(6),
        viewers,
        uplink: 10_000_000,
        downlink: 50_000_000,
        rtt_min: Duration::from_millis(20),
        rtt_max: Duration::from_millis(150),
        bitrate: 4_000_000,
        segment: Duration::from_secs(2),
        warmup: Duration::from_secs(10),
        window,
        viewer_buffer: VIEWER_BUFFER,
        seed: 15,
    }
}

#[derive(Debug, Serialize)]
pub struct ChurnSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(flatten)]
    pub result: Option<ChurnResult>,
}

#[derive(Debug, Serialize)]
pub struct ChurnResult {
    pub topology: String,
    pub links: String,
    pub impairment: &'static str,
    pub killed: Fig,
    pub killed_upstream_of_relay: Fig,
    pub joined: Fig,
    pub segments: Fig,
    pub expected: Fig,
    pub delivered: Fig,
    pub calm_p95: Fig,
    pub calm_max: Fig,
    pub churn_p50: Fig,
    pub churn_p95: Fig,
    pub churn_max: Fig,
    /// Slowest delivery under churn beyond the slowest of the calm window.
    pub heal: Fig,
    pub origin_copies: Fig,
    pub bans: Fig,
    pub viewers: ViewerFigs,
}

impl ChurnSection {
    pub fn skipped(why: String) -> Self {
        Self {
            skipped: Some(why),
            result: None,
        }
    }
}

impl ChurnResult {
    /// The goals: every segment to every live node, no viewer
    /// stall, no ban, the origin at most 1.1 copies.
    pub fn met(&self) -> bool {
        self.viewers.met()
            && self.expected.value > 0.0
            && self.delivered.value == self.expected.value
            && self.bans.value == 0.0
            && self.origin_copies.value <= 1.1
    }
}

pub async fn run(plan: &churn::Plan, progress: &Progress) -> anyhow::Result<ChurnSection> {
    if let Some(why) = Lab::unavailable() {
        return Ok(ChurnSection::skipped(why));
    }
    let scratch = tempfile::tempdir()?;
    let report = churn::run(plan, scratch.path(), |phase| {
        progress.phase(&format!("churn: {phase}"))
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    let ms = |d: Duration| fig(d.as_secs_f64() * 1e3, "ms");
    let sides = report
        .sides
        .iter()
        .map(|(side, n)| format!("{n} {side}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(ChurnSection {
        skipped: None,
        result: Some(ChurnResult {
            topology: format!(
                "{} volunteers at the start, each a `meshcast node` process in its own namespace (all {} who took part: {sides}); an origin and publisher and a relay with a gateway (in the bench process) on 200 Mbit/s lines; the relay meets the mesh through the volunteers; {} native viewers on home lines, half behind port-preserving NATs, playing {} s behind the live edge",
                plan.nodes,
                plan.nodes + plan.joins,
                plan.viewers,
                plan.viewer_buffer.as_secs()
            ),
            links: format!(
                "volunteers: {:.0} Mbit/s up, {:.0} Mbit/s down (tbf), round trips {}–{} ms; a {:.1} Mbit/s stream in {} s segments; {} s of warm-up, a calm window of {} s, then a churn window of {} s in which {} volunteers are killed with SIGKILL (the relay's upstream first) and {} join, evenly spread",
                plan.uplink as f64 / 1e6,
                plan.downlink as f64 / 1e6,
                plan.rtt_min.as_millis(),
                plan.rtt_max.as_millis(),
                plan.bitrate as f64 / 1e6,
                plan.segment.as_secs(),
                plan.warmup.as_secs(),
                plan.window.as_secs(),
                plan.window.as_secs(),
                plan.kills,
                plan.joins
            ),
            impairment: report.impairment,
            killed: fig(report.killed as f64, "volunteers"),
            killed_upstream_of_relay: fig(report.killed_upstream as f64, "volunteers"),
            joined: fig(report.joined as f64, "volunteers"),
            segments: fig(report.segments as f64, "segments"),
            expected: fig(report.expected as f64, "(node, segment) pairs"),
            delivered: fig(report.delivered as f64, "(node, segment) pairs"),
            calm_p95: ms(report.calm_p95),
            calm_max: ms(report.calm_max),
            churn_p50: ms(report.churn_p50),
            churn_p95: ms(report.churn_p95),
            churn_max: ms(report.churn_max),
            heal: ms(report.heal()),
            origin_copies: fig(report.origin_copies(), "copies of the stream"),
            bans: fig(report.bans as f64, "bans"),
            viewers: ViewerFigs::new(report.viewers, &report.playback),
        }),
    })
}

pub fn markdown(w: &mut String, section: Option<&ChurnSection>) {
    let _ = writeln!(w, "\n## Churn\n");
    let Some(s) = section else {
        let _ = writeln!(w, "Not run.");
        return;
    };
    let Some(s) = &s.result else {
        let why = s.skipped.as_deref().unwrap_or("no result");
        let _ = writeln!(w, "Skipped: {why}.");
        return;
    };
    let _ = writeln!(
        w,
        "Kernel namespaces (`meshcast_lab::churn`): {}. Links: {}; delay from {}. A live node owes every segment published after it followed; heal = the slowest delivery under churn beyond the slowest of the calm window. Goals: every segment to every live node, no viewer stall, no ban, the origin at most 1.1 copies. {VIEWER_MODEL}\n",
        s.topology, s.links, s.impairment
    );
    let _ = writeln!(
        w,
        "| killed (upstream of the relay) | joined | delivered to live nodes | calm p95 / max ms | churn p50 / p95 / max ms | heal ms | origin copies | bans | viewers got | late | stalls |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        w,
        "| {} ({}) | {} | {} of {} | {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.0} | {:.2} | {} | {}",
        s.killed.value,
        s.killed_upstream_of_relay.value,
        s.joined.value,
        s.delivered.value,
        s.expected.value,
        s.calm_p95.value,
        s.calm_max.value,
        s.churn_p50.value,
        s.churn_p95.value,
        s.churn_max.value,
        s.heal.value,
        s.origin_copies.value,
        s.bans.value,
        s.viewers.cells()
    );
}
