//! The network lab's scenarios (`meshcast-bench lab …`, and the `nat`
//! section of `all`): real kernel networking in namespaces, from
//! [`meshcast_lab`].
//!
//! `churn`: the same with volunteers coming and going (see
//! [`super::churn`]).
//!
//! `thin`: a live stream through volunteers on thin, distant home lines
//! (see [`meshcast_lab::thin`]).
//!
//! `loss`: one transfer over a lossy line, QUIC (with each of quinn's
//! congestion controllers, libp2p-quic's windows) against kernel TCP.
//!
//! `nat`: the NAT matrix. Every ordered pair of sides (public, full cone,
//! port-preserving, symmetric) over QUIC and TCP, each case in a lab of its
//! own (see [`meshcast_lab::matrix`]), repeated: how often a direct
//! connection forms, how long it takes, and whether the segments then flow
//! (from the pair, or from a public node when no direct connection forms).

use std::fmt::Write as _;
use std::time::Duration;

use meshcast_lab::browser::{self, Browser};
use meshcast_lab::matrix::{self, Case, Outcome, Side, Transport};
use meshcast_lab::net::Lab;
use meshcast_lab::thin;
use serde::Serialize;

use super::figure::{Fig, fig};
use super::playback::{VIEWER_BUFFER, VIEWER_MODEL, ViewerFigs};
use super::progress::Progress;

/// The libp2p hole-punching campaign's success rate in the wild
/// (arXiv 2510.27500): 70% ± 7%.
pub const FIELD_RATE: f64 = 0.70;

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// The NAT matrix: every pair of NAT types (and public), QUIC and TCP;
    /// direct-connection rate and time, and where segments come from.
    Nat {
        /// Runs of each case.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        repeat: u32,
        /// Cases run at once (each in a lab of its own).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
        parallel: u32,
        /// Print the section as JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// One transfer over a lossy line: kernel TCP against raw quinn with
    /// libp2p-quic's settings and each congestion controller, side by side.
    Loss {
        /// Loss each way on the receiver's line, in percent.
        #[arg(long, default_value_t = 1.0)]
        loss_percent: f64,
        /// Round trip between the two hosts.
        #[arg(long, default_value = "50ms", value_parser = super::parse_interval)]
        rtt: Duration,
        /// Bytes per transfer (a 4 Mbit/s stream's 2 s segment: 1 MB).
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=64_000_000))]
        bytes: u64,
        /// Transfers of each kind.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
        runs: u32,
    },
    /// Thin uplinks and distance: volunteers of mixed NAT types on home
    /// lines carry a live stream; delivered fraction, propagation, origin
    /// bytes, bans.
    Thin {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
        nodes: u32,
        /// Each volunteer's uplink, bits per second.
        #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(100_000..=10_000_000_000))]
        uplink: u64,
        /// The stream, bits per second.
        #[arg(long, default_value_t = 4_000_000, value_parser = clap::value_parser!(u64).range(10_000..=100_000_000))]
        bitrate: u64,
        /// Loss each way on each volunteer's line, in percent.
        #[arg(long, default_value_t = 0.0)]
        loss_percent: f64,
        /// The measured window.
        #[arg(long, default_value = "60s", value_parser = super::parse_interval)]
        measure: Duration,
        /// Leave out the headless Chromium viewer (it runs when Chromium,
        /// Node.js and the built page, `cargo xtask web`, are there).
        #[arg(long)]
        no_browser: bool,
        #[arg(long)]
        json: bool,
    },
    /// Churn: volunteers as `meshcast node` processes, 30% of them killed
    /// (SIGKILL) and a sixth as many joining during the window, while
    /// viewers watch through the relay's gateway; delivered fraction,
    /// heal time, viewer stalls, origin bytes, bans. Runs the `meshcast`
    /// binary next to this one, or `$MESHCAST_BIN`.
    Churn {
        /// Volunteers at the start.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=200))]
        nodes: u32,
        /// The churn window (a calm window as long comes before it).
        #[arg(long, default_value = "60s", value_parser = super::parse_interval)]
        window: Duration,
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=100))]
        viewers: u32,
        /// Share of the volunteers killed during the window, in percent.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=100))]
        kill_percent: u32,
        /// Volunteers joining during the window (default: a sixth of --nodes).
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=200))]
        joins: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

/// The workspace this bench was built in: its test stream and web page.
fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The thin-uplink run of `all`: the committed test stream padded to
/// `bitrate` (random bytes where the workspace is gone), and a browser
/// viewer when `browser` and one can run here.
pub fn thin_plan(
    nodes: usize,
    measure: Duration,
    bitrate: u64,
    uplink: u64,
    loss: f64,
    browser: bool,
) -> thin::Plan {
    let source = workspace().join("media/test-stream");
    let media = if source.join("master.m3u8").exists() {
        thin::Media::Playable {
            source,
            rendition: "360p".into(),
        }
    } else {
        thin::Media::Random
    };
    let browser = Some(Browser::in_workspace(&workspace())).filter(|b| {
        browser && b.unavailable().is_none() && matches!(media, thin::Media::Playable { .. })
    });
    thin::Plan {
        nodes,
        uplink,
        downlink: uplink * 5,
        rtt_min: Duration::from_millis(20),
        rtt_max: Duration::from_millis(150),
        loss,
        bitrate,
        segment: Duration::from_secs(2),
        warmup: Duration::from_secs(10),
        measure,
        viewers: 4,
        viewer_buffer: VIEWER_BUFFER,
        seed: 14,
        media,
        browser,
    }
}

/// Why the thin run has no browser viewer.
fn no_browser(plan: &thin::Plan) -> String {
    if !matches!(plan.media, thin::Media::Playable { .. }) {
        return "no playable stream (the workspace's media/test-stream is gone)".into();
    }
    Browser::in_workspace(&workspace())
        .unavailable()
        .unwrap_or_else(|| "left out (--no-browser)".into())
}

#[derive(Debug, Serialize)]
pub struct ThinSection {
    /// Why the section did not run, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(flatten)]
    pub result: Option<ThinResult>,
}

#[derive(Debug, Serialize)]
pub struct ThinResult {
    pub topology: String,
    pub links: String,
    pub impairment: &'static str,
    pub segments: Fig,
    pub expected: Fig,
    pub delivered: Fig,
    pub from_origin: Fig,
    /// Fallbacks during the window for segments published before it.
    pub origin_catch_up: Fig,
    pub p50: Fig,
    pub p95: Fig,
    pub max: Fig,
    pub origin_copies: Fig,
    pub bans: Fig,
    pub viewers: ViewerFigs,
    /// The headless Chromium viewer, or why there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser: Option<BrowserFigs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_skipped: Option<String>,
}

/// What the demo page measured in the lab's Chromium viewer.
#[derive(Debug, Serialize)]
pub struct BrowserFigs {
    pub played: Fig,
    pub stalls: Fig,
    pub longest_stall: Fig,
    pub mesh_share: Fig,
    pub first_frame: Fig,
    pub verify_failed: Fig,
}

impl BrowserFigs {
    fn new(p: &browser::Playback) -> Self {
        Self {
            played: fig(p.played, "s"),
            stalls: fig(p.stalls as f64, "stalls"),
            longest_stall: fig(p.longest_stall.as_secs_f64() * 1e3, "ms"),
            mesh_share: fig(p.mesh_share() * 100.0, "%"),
            first_frame: fig(p.first_frame.as_secs_f64() * 1e3, "ms"),
            verify_failed: fig(p.verify_failed as f64, "segments"),
        }
    }
}

impl ThinSection {
    pub fn skipped(why: String) -> Self {
        Self {
            skipped: Some(why),
            result: None,
        }
    }
}

impl ThinResult {
    /// The goals: every segment to every node, no ban, the origin
    /// at most 1.1 copies, no viewer stall (the browser's included).
    pub fn met(&self) -> bool {
        self.viewers.met()
            && self.browser.as_ref().is_none_or(|b| b.stalls.value == 0.0)
            && self.expected.value > 0.0
            && self.delivered.value == self.expected.value
            && self.bans.value == 0.0
            && self.origin_copies.value <= 1.1
    }
}

pub async fn thin(plan: &thin::Plan, progress: &Progress) -> anyhow::Result<ThinSection> {
    if let Some(why) = Lab::unavailable() {
        return Ok(ThinSection::skipped(why));
    }
    let media = tempfile::tempdir()?;
    let report = thin::run(plan, media.path(), |phase| {
        progress.phase(&format!("thin: {phase}"))
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    let ms = |d: Duration| fig(d.as_secs_f64() * 1e3, "ms");
    let result = ThinResult {
        topology: format!(
            "{} volunteers ({}), an origin and publisher and a relay (with a gateway) on 200 Mbit/s lines; {} native viewers on the volunteers' kind of line, half behind port-preserving NATs, playing {} s behind the live edge through the relay's gateway",
            plan.nodes,
            report
                .sides
                .iter()
                .map(|(side, n)| format!("{n} {side}"))
                .collect::<Vec<_>>()
                .join(", "),
            plan.viewers,
            plan.viewer_buffer.as_secs()
        ),
        links: format!(
            "volunteers: {:.0} Mbit/s up, {:.0} Mbit/s down (tbf, 200 ms queues), round trips {}–{} ms (one-way delay drawn per line, ±10 % jitter), {}% loss each way; a {:.1} Mbit/s stream ({}) in {} s segments, {} s measured after {} s of warm-up",
            plan.uplink as f64 / 1e6,
            plan.downlink as f64 / 1e6,
            plan.rtt_min.as_millis(),
            plan.rtt_max.as_millis(),
            plan.loss * 100.0,
            plan.bitrate as f64 / 1e6,
            match &plan.media {
                thin::Media::Random => "random bytes".to_string(),
                thin::Media::Playable { rendition, .. } => format!(
                    "the committed test stream's {rendition} rendition padded with `free` boxes, so that a browser plays it"
                ),
            },
            plan.segment.as_secs(),
            plan.measure.as_secs(),
            plan.warmup.as_secs()
        ),
        impairment: report.impairment,
        segments: fig(report.segments as f64, "segments"),
        expected: fig(report.expected as f64, "(node, segment) pairs"),
        delivered: fig(report.delivered as f64, "(node, segment) pairs"),
        from_origin: fig(report.from_origin as f64, "(node, segment) pairs"),
        origin_catch_up: fig(report.origin_before as f64, "(node, segment) pairs"),
        p50: ms(report.p50),
        p95: ms(report.p95),
        max: ms(report.max),
        origin_copies: fig(report.origin_copies(), "copies of the stream"),
        bans: fig(report.bans as f64, "bans"),
        viewers: ViewerFigs::new(report.viewers, &report.playback),
        browser: report.browser.as_ref().map(BrowserFigs::new),
        browser_skipped: report.browser.is_none().then(|| no_browser(plan)),
    };
    Ok(ThinSection {
        skipped: None,
        result: Some(result),
    })
}

pub fn thin_markdown(w: &mut String, section: Option<&ThinSection>) {
    let _ = writeln!(w, "\n## Thin uplinks and distance\n");
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
        "Kernel namespaces (`meshcast_lab::thin`): {}. Links: {}; delay and loss from {}. Goals: every segment to every node, no ban, the origin at most 1.1 copies of the stream, no viewer stall. {}\n",
        s.topology, s.links, s.impairment, VIEWER_MODEL
    );
    let _ = writeln!(
        w,
        "| delivered | from the origin | catch-up from the origin | p50 ms | p95 ms | max ms | origin copies | bans | viewers got | late | stalls |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let _ = writeln!(
        w,
        "| {} of {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {}",
        s.delivered.value,
        s.expected.value,
        s.from_origin.value,
        s.origin_catch_up.value,
        s.p50.value,
        s.p95.value,
        s.max.value,
        s.origin_copies.value,
        s.bans.value,
        s.viewers.cells()
    );
    match (&s.browser, &s.browser_skipped) {
        (Some(b), _) => {
            let _ = writeln!(
                w,
                "\nBrowser viewer (headless Chromium with the demo page, behind a port-preserving NAT on a volunteer's kind of line, served the page on its host's loopback): played {:.1} s, {} stalls over 250 ms (longest {:.0} ms), {:.1}% of segment bytes over the gateway, first frame after {:.0} ms, {} verification failures.",
                b.played.value,
                b.stalls.value,
                b.longest_stall.value,
                b.mesh_share.value,
                b.first_frame.value,
                b.verify_failed.value
            );
        }
        (None, Some(why)) => {
            let _ = writeln!(w, "\nBrowser viewer: none ({why}).");
        }
        (None, None) => {}
    }
}

/// Sizes of the NAT matrix.
pub struct NatPlan {
    pub repeat: u32,
    pub parallel: u32,
}

/// One cell of the matrix, over its runs.
#[derive(Debug, Serialize)]
pub struct NatRow {
    pub a: &'static str,
    pub b: &'static str,
    pub transport: &'static str,
    pub runs: u32,
    /// Runs in which a direct connection formed.
    pub direct: u32,
    /// Time to the direct connection, median and slowest of those runs.
    pub median: Option<Fig>,
    pub max: Option<Fig>,
    /// Runs in which B got every segment, from A over the direct
    /// connection or from a public node without one.
    pub delivered: u32,
    /// Runs that failed before the question (the lab, or A's own stream).
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct NatSection {
    /// Why the section did not run, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub repeat: u32,
    pub rows: Vec<NatRow>,
    /// Direct connections among pairs with both sides behind a NAT.
    pub natted_direct: Fig,
    pub natted_runs: Fig,
}

impl NatSection {
    pub fn skipped(why: String) -> Self {
        Self {
            skipped: Some(why),
            repeat: 0,
            rows: Vec::new(),
            natted_direct: fig(0.0, "runs"),
            natted_runs: fig(0.0, "runs"),
        }
    }

    /// Direct-connection rate between two NATed nodes.
    pub fn natted_rate(&self) -> f64 {
        if self.natted_runs.value == 0.0 {
            0.0
        } else {
            self.natted_direct.value / self.natted_runs.value
        }
    }
}

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for transport in [Transport::Quic, Transport::Tcp] {
        for a in Side::ALL {
            for b in Side::ALL {
                cases.push(Case { a, b, transport });
            }
        }
    }
    cases
}

pub async fn nat(plan: &NatPlan, progress: &Progress) -> anyhow::Result<NatSection> {
    if let Some(why) = Lab::unavailable() {
        return Ok(NatSection::skipped(why));
    }
    let media = matrix::media_dir();
    let mut runs: Vec<Case> = Vec::new();
    for _ in 0..plan.repeat {
        runs.extend(cases());
    }
    let total = runs.len();
    let mut outcomes: Vec<(Case, Result<Outcome, String>)> = Vec::new();
    for chunk in runs.chunks(plan.parallel as usize) {
        progress.phase(&format!("nat matrix: {} of {total} cases", outcomes.len()));
        let batch = chunk.iter().map(|&case| {
            let media = media.clone();
            async move { (case, matrix::run(case, &media).await) }
        });
        outcomes.extend(futures::future::join_all(batch).await);
    }
    let mut rows = Vec::new();
    let (mut natted_direct, mut natted_runs) = (0u32, 0u32);
    for case in cases() {
        let mine: Vec<_> = outcomes.iter().filter(|(c, _)| *c == case).collect();
        let mut times: Vec<Duration> = Vec::new();
        let mut row = NatRow {
            a: case.a.name(),
            b: case.b.name(),
            transport: case.transport.name(),
            runs: mine.len() as u32,
            direct: 0,
            median: None,
            max: None,
            delivered: 0,
            errors: Vec::new(),
        };
        for (_, outcome) in mine {
            match outcome {
                Ok(o) => {
                    if let Some(t) = o.direct {
                        row.direct += 1;
                        times.push(t);
                    }
                    row.delivered += u32::from(o.delivered());
                }
                Err(e) => row.errors.push(e.clone()),
            }
        }
        times.sort();
        if !times.is_empty() {
            row.median = Some(fig(times[times.len() / 2].as_secs_f64() * 1e3, "ms"));
            row.max = times.last().map(|t| fig(t.as_secs_f64() * 1e3, "ms"));
        }
        if case.a != Side::Public && case.b != Side::Public {
            natted_direct += row.direct;
            natted_runs += row.runs - row.errors.len() as u32;
        }
        rows.push(row);
    }
    Ok(NatSection {
        skipped: None,
        repeat: plan.repeat,
        rows,
        natted_direct: fig(natted_direct.into(), "runs"),
        natted_runs: fig(natted_runs.into(), "runs"),
    })
}

pub fn nat_markdown(w: &mut String, section: Option<&NatSection>) {
    let _ = writeln!(w, "\n## NAT matrix\n");
    let Some(s) = section else {
        let _ = writeln!(w, "Not run.");
        return;
    };
    if let Some(why) = &s.skipped {
        let _ = writeln!(w, "Skipped: {why}.");
        return;
    }
    let _ = writeln!(
        w,
        "Kernel namespaces (`meshcast_lab`): a relay and a publisher on a WAN bridge; node A and node B each public or alone behind a router namespace doing nftables NAT (full cone: masquerade plus inbound forwarding of the ports the host sent from; port-preserving: `masquerade`; symmetric: `masquerade fully-random`; every router drops unsolicited packets to itself). A takes the stream, the publisher leaves, B dials A (through the relay when A is NATed) and follows. No added delay or loss. {} runs of each case; a direct connection counts when it opens within {} s.\n",
        s.repeat,
        matrix::DIRECT_WITHIN.as_secs()
    );
    let _ = writeln!(
        w,
        "Both sides NATed: **{} of {} runs direct ({:.0}%)**; the libp2p campaign measured {:.0}% ± 7% in the wild (arXiv 2510.27500), where the mix of NAT types is not this one (one case per pair here).\n",
        s.natted_direct.value,
        s.natted_runs.value,
        s.natted_rate() * 100.0,
        FIELD_RATE * 100.0
    );
    let _ = writeln!(
        w,
        "| A (dialled) | B (dials) | transport | direct | median ms | max ms | B got every segment |\n|---|---|---|---|---|---|---|"
    );
    for r in &s.rows {
        let ms = |f: &Option<Fig>| f.map_or("–".to_string(), |f| format!("{:.0}", f.value));
        let errors = if r.errors.is_empty() {
            String::new()
        } else {
            format!(" ({} failed: {})", r.errors.len(), r.errors.join("; "))
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} of {} | {} | {} | {} of {}{errors} |",
            r.a,
            r.b,
            r.transport,
            r.direct,
            r.runs,
            ms(&r.median),
            ms(&r.max),
            r.delivered,
            r.runs
        );
    }
}

/// Runs `work` to its end, or until Ctrl-C drops it (its labs delete their
/// namespaces as they go), then ends the runtime.
fn until_ctrl_c<T>(
    runtime: tokio::runtime::Runtime,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let done = runtime.block_on(async {
        tokio::select! {
            r = work => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    drop(runtime);
    done.unwrap_or_else(|| Err(anyhow::anyhow!("interrupted")))
}

/// `meshcast-bench lab …`.
pub fn cli(args: LabArgs) -> anyhow::Result<()> {
    crate::init_logs("error");
    let runtime = tokio::runtime::Runtime::new()?;
    match args.scenario {
        Scenario::Nat {
            repeat,
            parallel,
            json,
        } => {
            let progress = Progress::new(1);
            let plan = NatPlan { repeat, parallel };
            let section = until_ctrl_c(runtime, nat(&plan, &progress));
            progress.finish();
            let section = section?;
            if json {
                println!("{}", serde_json::to_string_pretty(&section)?);
            } else {
                let mut text = String::new();
                nat_markdown(&mut text, Some(&section));
                println!("{text}");
            }
            Ok(())
        }
        Scenario::Loss {
            loss_percent,
            rtt,
            bytes,
            runs,
        } => {
            if !(0.0..100.0).contains(&loss_percent) {
                anyhow::bail!("--loss-percent {loss_percent} is not in [0, 100)");
            }
            if rtt < Duration::from_millis(8) {
                anyhow::bail!("--rtt must be at least 8ms (the server's line has 2 ms each way)");
            }
            if let Some(why) = Lab::unavailable() {
                anyhow::bail!("the network lab cannot run here: {why}");
            }
            let work = super::loss::run(loss_percent / 100.0, rtt, bytes, runs);
            println!("{}", until_ctrl_c(runtime, work)?);
            Ok(())
        }
        Scenario::Thin {
            nodes,
            uplink,
            bitrate,
            loss_percent,
            measure,
            no_browser,
            json,
        } => {
            if !(0.0..100.0).contains(&loss_percent) {
                anyhow::bail!("--loss-percent {loss_percent} is not in [0, 100)");
            }
            let progress = Progress::new(1);
            let plan = thin_plan(
                nodes as usize,
                measure,
                bitrate,
                uplink,
                loss_percent / 100.0,
                !no_browser,
            );
            let section = until_ctrl_c(runtime, thin(&plan, &progress));
            progress.finish();
            let section = section?;
            if json {
                println!("{}", serde_json::to_string_pretty(&section)?);
            } else {
                let mut text = String::new();
                thin_markdown(&mut text, Some(&section));
                println!("{text}");
            }
            if !section.result.as_ref().is_some_and(ThinResult::met) {
                anyhow::bail!("the thin-uplink goals were not met");
            }
            Ok(())
        }
        Scenario::Churn {
            nodes,
            window,
            viewers,
            kill_percent,
            joins,
            json,
        } => {
            if let Some(why) = Lab::unavailable() {
                anyhow::bail!("the network lab cannot run here: {why}");
            }
            let bin = super::proc::meshcast_path()?;
            let mut plan = super::churn::plan(bin, nodes as usize, window, viewers as usize);
            plan.kills = (nodes * kill_percent).div_ceil(100) as usize;
            if let Some(joins) = joins {
                plan.joins = joins as usize;
            }
            let progress = Progress::new(1);
            let section = until_ctrl_c(runtime, super::churn::run(&plan, &progress));
            progress.finish();
            let section = section?;
            if json {
                println!("{}", serde_json::to_string_pretty(&section)?);
            } else {
                let mut text = String::new();
                super::churn::markdown(&mut text, Some(&section));
                println!("{text}");
            }
            if !section
                .result
                .as_ref()
                .is_some_and(super::churn::ChurnResult::met)
            {
                anyhow::bail!("the churn goals were not met");
            }
            Ok(())
        }
    }
}
