//! `meshcast-bench all`: every benchmark in one run, written as
//! `<out>/<date>.json` (every figure with its unit), `<out>/<date>.md` (a
//! table per section and the goals, met or missed) and `<out>/<date>.svg`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::mesh::MeshBench;
use super::progress::Progress;
use super::report::{self, FanoutSection, FanoutStep, MeshRun, Report, fig};
use super::{hostile, idle, netns, offload, rss, sim, throughput, viewers, vod};

/// The sections, in the order they run.
pub const SECTIONS: [&str; 15] = [
    "mesh",
    "cut",
    "sim",
    "hostile",
    "offload",
    "vod",
    "fanout",
    "viewers",
    "throughput",
    "rss",
    "idle",
    "netns",
    "nat",
    "thin",
    "churn",
];

#[derive(Debug, clap::Args)]
pub struct AllArgs {
    /// Small sizes and few segments: checks that everything works, in well
    /// under two minutes (mesh of 5 nodes, 20 viewers, a VOD of 20 segments
    /// and 20 viewers, 20 relay sessions, 16 MiB each way, 10 peers, no
    /// network namespaces).
    #[arg(long)]
    pub quick: bool,
    /// Folder for `<date>.json`, `<date>.md` and `<date>.svg` (created if missing).
    #[arg(long, value_name = "DIR", default_value = "bench/results")]
    pub out: PathBuf,
    /// Run only these sections (comma-separated): mesh, cut (cut-through
    /// against store-and-forward), sim, hostile,
    /// offload, vod, fanout, viewers (hostile viewers), throughput, rss,
    /// idle, netns, nat (the NAT matrix), thin (thin uplinks and distance),
    /// churn (volunteers killed and joining).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(SECTIONS))]
    pub only: Vec<String>,
}

/// Sizes of a run: `--quick` or the full suite.
struct Plan {
    mesh_nodes: Vec<usize>,
    mesh: MeshBench,
    /// The cut-through comparison (run twice).
    cut: MeshBench,
    sim: sim::Plan,
    hostile: hostile::Plan,
    offload: offload::Plan,
    vod: vod::Plan,
    fanout_sessions: Vec<usize>,
    fanout_duration: Duration,
    viewers: viewers::Plan,
    throughput: throughput::Plan,
    rss: rss::Plan,
    idle: idle::IdleBench,
    netns: Option<netns::Plan>,
    nat: Option<super::lab::NatPlan>,
    thin: Option<meshcast_lab::thin::Plan>,
    /// Volunteers at the start, and the churn window.
    churn: Option<(usize, Duration)>,
}

impl Plan {
    fn new(quick: bool) -> Self {
        // Every stream is 2 Mbit/s, as in the goals, except the RSS one (5 Mbit/s).
        if quick {
            Self {
                mesh_nodes: vec![5],
                mesh: MeshBench {
                    cut_through: true,
                    max_upload: None,
                    publisher_degree: None,
                    nodes: 5,
                    segment_bytes: 125_000,
                    segments: 4,
                    interval: Duration::from_millis(500),
                },
                cut: MeshBench {
                    cut_through: true,
                    max_upload: Some(super::cut::UPLINK),
                    publisher_degree: None,
                    nodes: 5,
                    segment_bytes: 1 << 20,
                    segments: 3,
                    interval: Duration::from_secs(1),
                },
                sim: sim::Plan::new(true),
                hostile: hostile::Plan::new(true),
                offload: offload::Plan {
                    viewers: vec![20],
                    segment_duration: Duration::from_secs(1),
                    bitrate: 2_000_000,
                    duration: Duration::from_secs(5),
                },
                vod: vod::Plan {
                    segments: 20,
                    viewers: 20,
                    bitrate: 2_000_000,
                    segment_duration: Duration::from_secs(1),
                    arrivals: Duration::from_secs(3),
                    min_play: 3,
                    max_play: 5,
                    seed: 10,
                    seed_timeout: Duration::from_secs(60),
                },
                fanout_sessions: vec![20],
                fanout_duration: Duration::from_secs(5),
                viewers: viewers::Plan::new(true),
                throughput: throughput::Plan {
                    mib_each_way: 16,
                    rounds: 1,
                },
                rss: rss::Plan {
                    peers: 10,
                    bitrate: 5_000_000,
                    segment_duration: Duration::from_secs(1),
                    live_window: Duration::from_secs(30),
                    duration: Duration::from_secs(6),
                },
                idle: idle::IdleBench {
                    peers: 10,
                    duration: Duration::from_secs(3),
                },
                netns: None,
                nat: None,
                thin: None,
                churn: None,
            }
        } else {
            Self {
                mesh_nodes: vec![10, 50, 100],
                mesh: MeshBench {
                    cut_through: true,
                    max_upload: None,
                    publisher_degree: None,
                    nodes: 0,
                    segment_bytes: 250_000,
                    segments: 10,
                    interval: Duration::from_secs(1),
                },
                // The comparison: 50 nodes, 1 MiB segments (8 Mbit/s),
                // every uplink at 100 Mbit/s (see `cut.rs`).
                cut: MeshBench {
                    cut_through: true,
                    max_upload: Some(super::cut::UPLINK),
                    publisher_degree: None,
                    nodes: 50,
                    segment_bytes: 1 << 20,
                    segments: 10,
                    interval: Duration::from_secs(1),
                },
                sim: sim::Plan::new(false),
                hostile: hostile::Plan::new(false),
                offload: offload::Plan {
                    viewers: vec![100, 1000],
                    segment_duration: Duration::from_secs(2),
                    bitrate: 2_000_000,
                    duration: Duration::from_secs(20),
                },
                vod: vod::Plan {
                    segments: 100,
                    viewers: 200,
                    bitrate: 2_000_000,
                    segment_duration: Duration::from_secs(2),
                    arrivals: Duration::from_secs(30),
                    min_play: 3,
                    max_play: 5,
                    seed: 10,
                    seed_timeout: Duration::from_secs(120),
                },
                fanout_sessions: vec![100, 200, 400, 800],
                fanout_duration: Duration::from_secs(20),
                viewers: viewers::Plan::new(false),
                throughput: throughput::Plan {
                    mib_each_way: 256,
                    rounds: 2,
                },
                rss: rss::Plan {
                    peers: 100,
                    bitrate: 5_000_000,
                    segment_duration: Duration::from_secs(2),
                    live_window: Duration::from_secs(30),
                    duration: Duration::from_secs(40),
                },
                idle: idle::IdleBench {
                    peers: 100,
                    duration: Duration::from_secs(20),
                },
                thin: Some(super::lab::thin_plan(
                    20,
                    Duration::from_secs(60),
                    4_000_000,
                    10_000_000,
                    0.0,
                    true,
                )),
                churn: Some((20, Duration::from_secs(60))),
                nat: Some(super::lab::NatPlan {
                    repeat: 3,
                    parallel: 4,
                }),
                netns: Some(netns::Plan {
                    nodes_per_namespace: 3,
                    segments: 10,
                    segment_bytes: 250_000,
                    interval: Duration::from_secs(1),
                }),
            }
        }
    }

    fn steps(&self) -> u64 {
        (self.mesh_nodes.len() + self.offload.viewers.len() + self.fanout_sessions.len() + 12)
            as u64
    }
}

pub fn run(args: AllArgs) -> anyhow::Result<()> {
    crate::init_logs("error");
    let wanted = |section: &str| args.only.is_empty() || args.only.iter().any(|s| s == section);
    // These run `meshcast` child processes: say now, not per section, if it is missing.
    if [
        "hostile", "offload", "vod", "fanout", "viewers", "rss", "churn",
    ]
    .iter()
    .any(|s| wanted(s))
    {
        super::proc::meshcast_path()?;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let started = SystemTime::now();
    let (started_utc, file_stem) = utc_stamp(started);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let plan = Plan::new(args.quick);
    let progress = Progress::new(plan.steps());

    let mut report = Report::new(started_utc, args.quick);
    let suite = async {
        if wanted("mesh") {
            for &nodes in &plan.mesh_nodes {
                let result = mesh_run(&plan.mesh, nodes, &progress).await;
                report.record("mesh", result, |r, run| r.mesh.push(run));
                progress.step();
            }
        }
        if wanted("cut") {
            let result = super::cut::run(&plan.cut, &progress).await;
            report.record("cut", result, |r, s| r.cut = Some(s));
        }
        progress.step();
        if wanted("sim") {
            let result = sim::section(&plan.sim, &progress).await;
            report.record("sim", result, |r, s| r.sim = Some(s));
        }
        progress.step();
        if wanted("hostile") {
            let result = hostile::run(&plan.hostile, &progress).await;
            report.record("hostile", result, |r, s| r.hostile = Some(s));
        }
        progress.step();
        if wanted("offload") {
            let result = offload::run(&plan.offload, &progress).await;
            report.record("offload", result, |r, s| r.offload = Some(s));
        }
        for _ in &plan.offload.viewers {
            progress.step();
        }
        if wanted("vod") {
            let result = vod::run(&plan.vod, &progress).await;
            report.record("vod", result, |r, s| r.vod = Some(s));
        }
        progress.step();
        if wanted("fanout") {
            let result = fanout(&plan, &progress).await;
            report.record("fanout", result, |r, s| r.fanout = Some(s));
        }
        for _ in &plan.fanout_sessions {
            progress.step();
        }
        if wanted("viewers") {
            let result = viewers::run(&plan.viewers, &progress).await;
            report.record("viewers", result, |r, s| r.viewers = Some(s));
        }
        progress.step();
        if wanted("throughput") {
            let result = throughput::run(&plan.throughput, &progress).await;
            report.record("throughput", result, |r, s| r.throughput = Some(s));
        }
        progress.step();
        if wanted("rss") {
            let result = rss::run(&plan.rss, &progress).await;
            report.record("rss", result, |r, s| r.rss = Some(s));
        }
        progress.step();
        if wanted("idle") {
            let result = idle::run(&plan.idle, |phase| {
                progress.phase(&format!("idle: {phase}"))
            })
            .await;
            if let Ok(r) = &result {
                progress.note(&format!(
                    "idle {} peers: {:.2}% of a core, {:.0} wake-ups/s",
                    r.peers,
                    r.cpu_core_share * 100.0,
                    r.wakeups_per_second
                ));
            }
            report.record("idle", result, |r, s| r.idle = Some(s));
        }
        progress.step();
        if wanted("netns") {
            let result = match &plan.netns {
                Some(netns_plan) => netns::run(netns_plan, &progress).await,
                None => Ok(netns::skipped("not run with --quick".into())),
            };
            report.record("netns", result, |r, s| r.netns = Some(s));
        }
        progress.step();
        if wanted("nat") {
            let result = match &plan.nat {
                Some(nat_plan) => super::lab::nat(nat_plan, &progress).await,
                None => Ok(super::lab::NatSection::skipped(
                    "not run with --quick".into(),
                )),
            };
            report.record("nat", result, |r, s| r.nat = Some(s));
        }
        progress.step();
        if wanted("thin") {
            let result = match &plan.thin {
                Some(thin_plan) => super::lab::thin(thin_plan, &progress).await,
                None => Ok(super::lab::ThinSection::skipped(
                    "not run with --quick".into(),
                )),
            };
            report.record("thin", result, |r, s| r.thin = Some(s));
        }
        progress.step();
        if wanted("churn") {
            let result = match plan.churn {
                Some((nodes, window)) => match super::proc::meshcast_path() {
                    Ok(bin) => {
                        let plan = super::churn::plan(bin, nodes, window, 4);
                        super::churn::run(&plan, &progress).await
                    }
                    Err(e) => Err(e),
                },
                None => Ok(super::churn::ChurnSection::skipped(
                    "not run with --quick".into(),
                )),
            };
            report.record("churn", result, |r, s| r.churn = Some(s));
        }
        progress.step();
    };
    // Ctrl-C drops the suite: children are killed, namespaces deleted, temporary
    // folders removed (their guards' Drop), and no report is written.
    let interrupted = runtime.block_on(async {
        tokio::select! {
            () = suite => false,
            _ = tokio::signal::ctrl_c() => true,
        }
    });
    progress.finish();
    drop(runtime);
    if interrupted {
        anyhow::bail!("interrupted: no report written");
    }

    report.finish(started);
    let base = args.out.join(&file_stem);
    let json = base.with_extension("json");
    let md = base.with_extension("md");
    let svg = base.with_extension("svg");
    let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
    std::fs::write(&json, text + "\n").with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&md, report::markdown(&report, &file_stem))
        .with_context(|| format!("writing {}", md.display()))?;
    std::fs::write(&svg, report::svg(&report)?)
        .with_context(|| format!("writing {}", svg.display()))?;
    println!("{}", report::goals_text(&report));
    println!("wrote {}", json.display());
    println!("wrote {}", md.display());
    println!("wrote {}", svg.display());
    if !report.errors.is_empty() {
        anyhow::bail!(
            "{} section(s) failed: {}",
            report.errors.len(),
            report
                .errors
                .iter()
                .map(|e| e.section.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

pub(crate) async fn mesh_run(
    plan: &MeshBench,
    nodes: usize,
    progress: &Progress,
) -> anyhow::Result<MeshRun> {
    let bench = MeshBench {
        nodes,
        ..plan.clone()
    };
    progress.phase(&format!("mesh: {nodes} nodes"));
    let (cpu_before, start) = (super::proc::cpu_seconds("self")?, std::time::Instant::now());
    let r = super::mesh::run(&bench, |phase| {
        progress.phase(&format!("mesh ({nodes} nodes): {phase}"))
    })
    .await?;
    let cores = (super::proc::cpu_seconds("self")? - cpu_before) / start.elapsed().as_secs_f64();
    progress.note(&format!(
        "mesh {nodes:>4} nodes: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, duplicate ratio {:.3}, {} of {} delivered, {cores:.2} cores busy",
        r.p50_ms,
        r.p95_ms,
        r.p99_ms,
        r.duplicate_ratio,
        r.delivered,
        r.nodes * r.segments
    ));
    Ok(MeshRun {
        nodes: r.nodes,
        segments: r.segments,
        segment_bytes: fig(r.segment_bytes as f64, "bytes"),
        bitrate: fig(
            r.segment_bytes as f64 * 8.0 / plan.interval.as_secs_f64() / 1e6,
            "Mbit/s",
        ),
        delivered: fig(r.delivered as f64, "(node, segment) pairs"),
        expected: fig((r.nodes * r.segments) as f64, "(node, segment) pairs"),
        p50: fig(r.p50_ms, "ms"),
        p95: fig(r.p95_ms, "ms"),
        p99: fig(r.p99_ms, "ms"),
        max: fig(r.max_ms, "ms"),
        duplicate_ratio: fig(r.duplicate_ratio, "received ÷ needed"),
        cpu: fig(cores, "cores"),
    })
}

/// Relay fan-out: more sessions per step, until one has a late segment.
async fn fanout(plan: &Plan, progress: &Progress) -> anyhow::Result<FanoutSection> {
    let mut steps = Vec::new();
    let mut best = 0usize;
    for &sessions in &plan.fanout_sessions {
        progress.phase(&format!("fan-out: {sessions} sessions"));
        let bench = super::RelayBench {
            sessions,
            bitrate: 2_000_000,
            segment_duration: Duration::from_secs(2),
            duration: plan.fanout_duration,
            attackers: 0,
        };
        let r = super::run_relay(&bench, &|phase: &str| {
            progress.phase(&format!("fan-out ({sessions} sessions): {phase}"))
        })
        .await?;
        progress.note(&format!(
            "fan-out {sessions:>4} sessions: {} open, {} late of {}, {:.0} Mbit/s delivered, relay {:.2} cores, {:.0} MiB RSS",
            r.sessions_open,
            r.late_segments,
            r.expected_segments,
            r.delivered_mbps,
            r.relay_cpu_cores,
            r.relay_peak_rss_mib
        ));
        let clean = r.late_segments == 0 && r.sessions_open == sessions && r.expected_segments > 0;
        if clean {
            best = best.max(sessions);
        }
        steps.push(FanoutStep::from(&r));
        if !clean {
            break;
        }
    }
    Ok(FanoutSection {
        bitrate: fig(2.0, "Mbit/s"),
        segment_duration: fig(2.0, "s"),
        measured: fig(plan.fanout_duration.as_secs_f64(), "s"),
        max_sessions_without_late: fig(best as f64, "sessions"),
        steps,
    })
}

/// `2026-05-04T11:44:32Z` and the file stem `2026-05-04T11-44-32Z`.
pub fn utc_stamp(t: SystemTime) -> (String, String) {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}-{m:02}-{s:02}Z"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_are_calendar_dates() {
        let at = |s: u64| utc_stamp(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0).0, "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day of a century leap year), 12:34:56.
        assert_eq!(at(951_827_696).0, "2000-02-29T12:34:56Z");
        assert_eq!(at(1_767_225_599).1, "2025-12-31T23-59-59Z");
    }
}
