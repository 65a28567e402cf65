//! The suite's report: every figure with its unit (JSON), a Markdown table
//! per section with the goals, and an SVG chart (plotters, SVG backend only:
//! its naive text layout needs no font file, fontconfig or freetype; the
//! viewer's browser draws the text).

use std::fmt::Write as _;
use std::time::SystemTime;

use plotters::prelude::*;
use serde::Serialize;

use super::RelayReport;

pub use super::figure::{Fig, fig, seconds};

#[derive(Debug, Serialize)]
pub struct MeshRun {
    pub nodes: usize,
    pub segments: usize,
    pub segment_bytes: Fig,
    pub bitrate: Fig,
    pub delivered: Fig,
    pub expected: Fig,
    pub p50: Fig,
    pub p95: Fig,
    pub p99: Fig,
    pub max: Fig,
    pub duplicate_ratio: Fig,
    /// CPU of the bench process (every swarm) over the run, start-up included.
    pub cpu: Fig,
}

#[derive(Debug, Serialize)]
pub struct OffloadSection {
    pub topology: String,
    pub bitrate: Fig,
    pub segment_duration: Fig,
    pub measured: Fig,
    pub runs: Vec<OffloadRun>,
}

#[derive(Debug, Serialize)]
pub struct OffloadRun {
    pub viewers: usize,
    pub sessions_open: Fig,
    /// Segments announced to the viewers in the measured window (each viewer
    /// asks for every one).
    pub expected_segments: Fig,
    pub delivered_by_gateways: Fig,
    /// Segments the viewers fetched from the origin after a gateway failed
    /// or missed the deadline.
    pub fallback_segments: Fig,
    /// Not delivered by a gateway within the deadline (one segment duration).
    pub late_segments: Fig,
    pub viewer_bytes: Fig,
    pub viewer_fallback_bytes: Fig,
    /// Everything the origin served in the window: segments and playlists,
    /// to the publisher, the nodes and the viewers.
    pub origin_bytes: Fig,
    /// Everything the origin served after the window until the last viewer
    /// finished (mostly the publisher's ingest of later segments): reported,
    /// not counted in the offload, except the viewers' fallbacks in it.
    pub origin_bytes_after_window: Fig,
    pub origin_playlist_bytes: Fig,
    /// 1 − origin bytes ÷ bytes delivered to viewers.
    pub offload: Fig,
    pub p50: Fig,
    pub p99: Fig,
    /// CPU of the three gateway processes in the window.
    pub gateway_cpu: Fig,
    /// CPU of the publisher and the plain node.
    pub mesh_cpu: Fig,
    /// CPU of the bench process: the viewers (WebTransport, verification)
    /// and the origin.
    pub viewer_cpu: Fig,
}

/// On-demand video: viewers seeking at random in a VOD (`vod.rs`).
#[derive(Debug, Serialize)]
pub struct VodSection {
    pub topology: String,
    pub segments: usize,
    pub viewers: usize,
    pub bitrate: Fig,
    pub segment_duration: Fig,
    pub segment_bytes: Fig,
    pub vod_bytes: Fig,
    /// Viewers arrive at random times within this window.
    pub arrivals: Fig,
    /// Segments the seeding node held when the viewers started, and how
    /// long the bench waited for it.
    pub seeded_before_viewers: Fig,
    pub seeding_time: Fig,
    pub sessions_open: Fig,
    pub seeks: Fig,
    /// Every segment asked for over the mesh, seeks included.
    pub requests: Fig,
    pub delivered_by_gateways: Fig,
    /// Not delivered by a gateway within the request's deadline.
    pub late_segments: Fig,
    /// Fetched from the origin over HTTP because a gateway refused, failed
    /// or missed the deadline (or no session opened).
    pub fallback_segments: Fig,
    /// Delivered neither by the mesh nor by the origin (both passes).
    pub failed_segments: Fig,
    pub viewer_bytes: Fig,
    /// Everything the origin served until the publisher's `ingested` line.
    pub origin_ingest_bytes: Fig,
    /// From then until the viewers started (the seeder should take nothing).
    pub origin_seeding_bytes: Fig,
    /// While the viewers watched over the mesh: the gateways' on-demand
    /// fetches from the origin, the viewers' fallbacks and playlists.
    pub origin_viewer_phase_bytes: Fig,
    /// Of the viewers' phase: what the gateways fetched (no fallbacks, no playlists).
    pub origin_gateway_bytes: Fig,
    pub origin_fallback_bytes: Fig,
    /// The plain-HTTP pass: not counted in the copies.
    pub origin_http_pass_bytes: Fig,
    pub ingest_copies: Fig,
    pub viewer_phase_copies: Fig,
    /// Origin bytes from the start to the end of the viewers' phase (ingest,
    /// seeding and viewers) ÷ the VOD's size.
    pub origin_copies: Fig,
    /// Seek (request) to the whole segment in hand, over the mesh, fallbacks included.
    pub seek_p50: Fig,
    pub seek_p95: Fig,
    /// Seeks that were the first request of their segment at their gateway
    /// (it had to fetch it), and the others; absent when there were none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seek_first_p50: Option<Fig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seek_repeat_p50: Option<Fig>,
    pub seeks_first: Fig,
    /// The segments played after a seek.
    pub play_p50: Fig,
    pub http_seek_p50: Fig,
    pub http_seek_p95: Fig,
    pub http_play_p50: Fig,
    /// Mesh ÷ plain HTTP.
    pub seek_ratio_p50: Fig,
    pub seek_ratio_p95: Fig,
    /// Seek (request) to the segment's first byte: over the mesh (fallbacks
    /// included), over plain HTTP, and mesh ÷ HTTP (the goal).
    pub first_byte_p50: Fig,
    pub first_byte_p95: Fig,
    pub http_first_byte_p50: Fig,
    pub http_first_byte_p95: Fig,
    pub first_byte_ratio_p50: Fig,
    pub first_byte_ratio_p95: Fig,
    /// CPU over the viewers' phase: the three gateways; the publisher and
    /// the seeder; the bench process (viewers and origin).
    pub gateway_cpu: Fig,
    pub mesh_cpu: Fig,
    pub viewer_cpu: Fig,
    /// Length of the viewers' phase over the mesh.
    pub measured: Fig,
}

#[derive(Debug, Serialize)]
pub struct FanoutSection {
    pub bitrate: Fig,
    pub segment_duration: Fig,
    pub measured: Fig,
    /// The largest step with every session open and no late segment.
    pub max_sessions_without_late: Fig,
    pub steps: Vec<FanoutStep>,
}

#[derive(Debug, Serialize)]
pub struct FanoutStep {
    pub sessions: usize,
    pub sessions_open: Fig,
    pub expected_segments: Fig,
    pub delivered_segments: Fig,
    pub late_segments: Fig,
    pub delivered: Fig,
    pub p50: Fig,
    pub p99: Fig,
    pub relay_cpu: Fig,
    pub relay_cpu_per_gbit: Fig,
    pub relay_peak_rss: Fig,
    pub relay_rss_per_session: Fig,
}

impl From<&RelayReport> for FanoutStep {
    fn from(r: &RelayReport) -> Self {
        Self {
            sessions: r.sessions,
            sessions_open: fig(r.sessions_open as f64, "sessions"),
            expected_segments: fig(r.expected_segments as f64, "segments"),
            delivered_segments: fig(r.delivered_segments as f64, "segments"),
            late_segments: fig(r.late_segments as f64, "segments"),
            delivered: fig(r.delivered_mbps, "Mbit/s"),
            p50: fig(r.p50_ms, "ms"),
            p99: fig(r.p99_ms, "ms"),
            relay_cpu: fig(r.relay_cpu_cores, "cores"),
            relay_cpu_per_gbit: fig(r.relay_core_seconds_per_gbit, "core-s per Gbit"),
            relay_peak_rss: fig(r.relay_peak_rss_mib, "MiB"),
            relay_rss_per_session: fig(r.relay_rss_per_session_mib, "MiB"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ThroughputSection {
    pub mib_each_way: Fig,
    pub rounds: usize,
    pub chunk: Fig,
    pub streams_in_flight: usize,
    pub meshcast: ProtocolFigures,
    /// The libp2p stack alone (QUIC, libp2p-stream), the quinn requests over
    /// its streams: what meshcast builds on, without meshcast.
    pub libp2p: ProtocolFigures,
    pub quinn: ProtocolFigures,
    /// meshcast ÷ quinn, both directions together.
    pub ratio: Fig,
    /// libp2p alone ÷ quinn.
    pub libp2p_ratio: Fig,
    pub libp2p_streams_reopened: Fig,
    /// Pushes the peer declined as busy (its download limit) and that were
    /// offered again; their time is in the figures.
    pub meshcast_busy_declines: Fig,
    /// BLAKE3 over the same bodies on one core: the verification every
    /// received meshcast body costs its receiver.
    pub blake3_cpu: Fig,
    /// meshcast streams the peer dropped on arrival and that were opened
    /// again (rust-libp2p#5651); their time is in the figures.
    pub meshcast_streams_reopened: Fig,
}

#[derive(Debug, Serialize)]
pub struct ProtocolFigures {
    /// Child → parent.
    pub pull: Fig,
    /// Parent → child.
    pub push: Fig,
    pub both: Fig,
    /// CPU of the bench process while it ran this protocol, per GiB moved.
    pub parent_cpu: Fig,
    /// CPU of the peer process, per GiB moved.
    pub child_cpu: Fig,
}

#[derive(Debug, Serialize)]
pub struct RssSection {
    pub peers: usize,
    pub connected_peers: Fig,
    pub bitrate: Fig,
    pub segment_bytes: Fig,
    pub live_window: Fig,
    pub published: Fig,
    pub segments_published: Fig,
    /// The node's RSS once it follows the stream, before the peers.
    pub rss_idle: Fig,
    /// After the peers connected, before the stream starts.
    pub rss_connected: Fig,
    /// At the end of the stream.
    pub rss_end: Fig,
    /// VmHWM: the highest RSS of the node's whole life.
    pub peak_rss: Fig,
    pub peer_segments_delivered: Fig,
    pub peer_segments_expected: Fig,
    /// CPU of the bench process (publisher and peers) while publishing.
    pub bench_cpu: Fig,
    /// At the end, from the node's /metrics: bytes and segments in its
    /// store, peers it counts as connected (absent if unreadable).
    pub store_bytes: Option<Fig>,
    pub store_segments: Option<Fig>,
    pub node_peers_connected: Option<Fig>,
}

#[derive(Debug, Serialize)]
pub struct NetnsSection {
    /// Why the section did not run, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<NetnsResult>,
}

#[derive(Debug, Serialize)]
pub struct NetnsResult {
    pub conditions: String,
    pub nodes_per_namespace: usize,
    pub segments: usize,
    pub segment_bytes: Fig,
    /// Nodes in the publisher's namespace.
    pub near: Latency,
    /// Nodes across the veth pair.
    pub far: Latency,
    pub duplicate_ratio: Fig,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub delivered: Fig,
    pub expected: Fig,
    pub p50: Fig,
    pub p95: Fig,
    pub p99: Fig,
    pub max: Fig,
}

#[derive(Debug, Serialize)]
pub struct Goal {
    pub name: &'static str,
    pub target: &'static str,
    pub measured: Option<Fig>,
    pub met: bool,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct SectionError {
    pub section: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    /// 1-minute load average at the start and the end: the machine is shared.
    pub load_start: Fig,
    pub load_end: Fig,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub started_utc: String,
    pub quick: bool,
    pub build: &'static str,
    pub machine: Machine,
    pub elapsed: Fig,
    pub mesh: Vec<MeshRun>,
    pub cut: Option<super::cut::CutSection>,
    pub sim: Option<super::sim::SimSection>,
    pub hostile: Option<super::hostile::HostileSection>,
    pub offload: Option<OffloadSection>,
    pub vod: Option<VodSection>,
    pub fanout: Option<FanoutSection>,
    pub viewers: Option<super::viewers::ViewersSection>,
    pub throughput: Option<ThroughputSection>,
    pub rss: Option<RssSection>,
    pub idle: Option<super::idle::IdleReport>,
    pub netns: Option<NetnsSection>,
    pub nat: Option<super::lab::NatSection>,
    pub thin: Option<super::lab::ThinSection>,
    pub churn: Option<super::churn::ChurnSection>,
    pub goals: Vec<Goal>,
    pub errors: Vec<SectionError>,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

impl Report {
    pub fn new(started_utc: String, quick: bool) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            started_utc,
            quick,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            machine: Machine {
                cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
                load_start: fig(load_average(), "runnable tasks"),
                load_end: fig(f64::NAN, "runnable tasks"),
            },
            elapsed: fig(0.0, "s"),
            mesh: Vec::new(),
            cut: None,
            sim: None,
            hostile: None,
            offload: None,
            vod: None,
            fanout: None,
            viewers: None,
            throughput: None,
            rss: None,
            idle: None,
            netns: None,
            nat: None,
            thin: None,
            churn: None,
            goals: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Stores a section's result, or its error (the suite goes on).
    pub fn record<T>(
        &mut self,
        section: &str,
        result: anyhow::Result<T>,
        store: impl FnOnce(&mut Self, T),
    ) {
        match result {
            Ok(value) => store(self, value),
            Err(e) => {
                eprintln!("bench: {section} failed: {e:#}");
                self.errors.push(SectionError {
                    section: section.to_string(),
                    error: format!("{e:#}"),
                });
            }
        }
    }

    pub fn finish(&mut self, started: SystemTime) {
        self.elapsed = fig(started.elapsed().map_or(f64::NAN, |d| d.as_secs_f64()), "s");
        self.machine.load_end = fig(load_average(), "runnable tasks");
        self.goals = goals(self);
    }
}

/// The simulator's own goal: 10,000 nodes for 60 s of stream within 5
/// minutes (on this machine, one core).
fn sim_goal(section: Option<&super::sim::SimSection>) -> Option<Goal> {
    let run = section?
        .runs
        .iter()
        .filter(|r| r.report.scenario.duration >= std::time::Duration::from_secs(60))
        .max_by(|a, b| {
            (a.report.scenario.nodes, a.report.wall_s)
                .partial_cmp(&(b.report.scenario.nodes, b.report.wall_s))
                .unwrap_or(std::cmp::Ordering::Equal)
        })?;
    let r = &run.report;
    Some(Goal {
        name: "simulator at scale",
        target: "10,000 nodes × 60 s of stream in ≤ 5 min",
        measured: Some(fig(r.wall_s, "s")),
        met: r.scenario.nodes >= 10_000 && r.wall_s <= 300.0,
        note: format!(
            "{} nodes ({}), {:.0} MB peak",
            r.scenario.nodes, run.label, r.peak_rss_mb
        ),
    })
}

/// The simulator's cut-through goal (#15): at 10,000 nodes, p95 within one
/// segment's duration and the origin at most 1.01 copies, against
/// store-and-forward on the same seed.
fn sim_cut_goal(sim: Option<&super::sim::SimSection>) -> Option<Goal> {
    let runs = &sim?.runs;
    let with = runs
        .iter()
        .filter(|r| r.report.scenario.cut_through && r.report.scenario.churn_per_min == 0.0)
        .filter(|r| r.report.scenario.stallers == 0.0)
        .max_by_key(|r| r.report.scenario.nodes)?;
    let without = runs.iter().find(|r| {
        !r.report.scenario.cut_through && r.report.scenario.nodes == with.report.scenario.nodes
    });
    let r = &with.report;
    let copies = r.origin_fraction * r.scenario.nodes as f64;
    Some(Goal {
        name: "cut-through in the simulator",
        target: "10,000 nodes, 10 Mbit/s uplinks, 4 Mbit/s in 2 s segments: p95 ≤ 2 s, origin ≤ 1.01 copies",
        measured: Some(fig(r.propagation_p95_s, "s")),
        met: r.scenario.nodes >= 10_000 && r.propagation_p95_s <= 2.0 && copies <= 1.01,
        note: format!(
            "{} nodes: p95 {:.2} s, p50 {:.2} s, origin {:.2} copies{}",
            r.scenario.nodes,
            r.propagation_p95_s,
            r.propagation_p50_s,
            copies,
            without.map_or(String::new(), |w| format!(
                "; store-and-forward on the same seed: p95 {:.2} s, origin {:.2} copies",
                w.report.propagation_p95_s,
                w.report.origin_fraction * w.report.scenario.nodes as f64
            ))
        ),
    })
}

fn goals(r: &Report) -> Vec<Goal> {
    let mut goals = Vec::new();
    goals.extend(sim_goal(r.sim.as_ref()));
    goals.extend(sim_cut_goal(r.sim.as_ref()));
    goals.push(match &r.cut {
        Some(c) => Goal {
            name: "cut-through on real swarms",
            target: "50 nodes, 1 MiB segments: p95 ≤ 0.5 × store-and-forward, in one run",
            measured: Some(c.ratio_p95),
            met: c.with.nodes >= 50 && c.met(),
            note: format!(
                "{} nodes: p95 {:.1} ms against {:.1} ms",
                c.with.nodes, c.with.p95.value, c.without.p95.value
            ),
        },
        None => not_measured(
            "cut-through on real swarms",
            "50 nodes, 1 MiB segments: p95 ≤ 0.5 × store-and-forward, in one run",
        ),
    });
    goals.push(match &r.viewers {
        Some(v) => Goal {
            name: "hostile viewers",
            target: "no late segment for 1,000 good sessions with 100 attackers of each kind",
            measured: Some(v.with.late_segments),
            met: v.sessions >= 1000 && v.with.attackers_per_kind >= 100 && v.met(),
            note: format!(
                "{} sessions, {} attackers of each of {} kinds; relay RSS {:.0} MiB (without: {:.0}), {:.2} cores (without: {:.2})",
                v.sessions,
                v.with.attackers_per_kind,
                v.kinds.len(),
                v.with.relay_peak_rss.value,
                v.without.relay_peak_rss.value,
                v.with.relay_cpu.value,
                v.without.relay_cpu.value
            ),
        },
        None => not_measured(
            "hostile viewers",
            "no late segment for 1,000 good sessions with 100 attackers of each kind",
        ),
    });
    const THIN: &str = "thin uplinks (20 volunteers, 10 Mbit/s, 20–150 ms): \
        every segment to every node, 0 bans, origin ≤ 1.1 copies, 0 viewer stalls";
    // Only where the lab ran (root, not --quick).
    let thin = r.thin.as_ref().and_then(|t| t.result.as_ref());
    goals.extend(thin.map(|t| Goal {
        name: "thin uplinks",
        target: THIN,
        measured: Some(t.delivered),
        met: t.met(),
        note: format!(
            "{} of {} delivered ({} from the origin), p95 {:.0} ms, {:.2} origin copies, {} bans, {} viewer stalls",
            t.delivered.value,
            t.expected.value,
            t.from_origin.value,
            t.p95.value,
            t.origin_copies.value,
            t.bans.value,
            t.viewers.stalls.value
        ),
    }));
    let churn = r.churn.as_ref().and_then(|c| c.result.as_ref());
    goals.extend(churn.map(|c| Goal {
        name: "churn",
        target: "30 % of 20 volunteers killed (SIGKILL) and others joining in a minute: \
            every segment to every live node, 0 viewer stalls, 0 bans, origin ≤ 1.1 copies",
        measured: Some(c.delivered),
        met: c.met(),
        note: format!(
            "{} of {} delivered, {} viewer stalls, heal {:.0} ms, {:.2} origin copies, {} bans",
            c.delivered.value,
            c.expected.value,
            c.viewers.stalls.value,
            c.heal.value,
            c.origin_copies.value,
            c.bans.value
        ),
    }));
    goals.extend(r.idle.as_ref().map(|i| Goal {
        name: "idle peer cost",
        target: "≤ 1 % of a core with 100 idle peers",
        measured: Some(fig(i.cpu_core_share * 100.0, "% of a core")),
        met: i.peers >= 100 && i.goal_met,
        note: format!("{} peers, {:.0} wake-ups/s", i.peers, i.wakeups_per_second),
    }));
    // Offload at the largest audience measured (1,000 viewers in the full run).
    let run = r
        .offload
        .as_ref()
        .and_then(|o| o.runs.iter().max_by_key(|run| run.viewers));
    goals.push(match run {
        Some(run) => Goal {
            name: "origin offload",
            target: "≥ 99.9 % at 1,000 viewers, no late segment",
            measured: Some(run.offload),
            met: run.viewers >= 1000
                && run.offload.value >= 0.999
                && run.late_segments.value == 0.0,
            note: format!(
                "{} viewers, {} late segments of {}",
                run.viewers, run.late_segments.value, run.expected_segments.value
            ),
        },
        None => not_measured(
            "origin offload",
            "≥ 99.9 % at 1,000 viewers, no late segment",
        ),
    });
    // The VOD goals hold for the full run's sizes (100 segments, 200 viewers).
    const VOD_COPIES: &str = "≤ 1.1 copies of the VOD from the origin, ingest included";
    const VOD_SEEK: &str = "seek to first byte ≤ 1.2 × plain HTTP, p50 and p95";
    let full = |v: &VodSection| v.segments >= 100 && v.viewers >= 200;
    goals.push(match &r.vod {
        Some(v) => Goal {
            name: "VOD origin bytes",
            target: VOD_COPIES,
            measured: Some(v.origin_copies),
            met: full(v) && v.origin_copies.value <= 1.1,
            note: format!(
                "{} viewers, {} segments: ingest {:.3}, seeding {:.3}, viewers' phase {:.3} copies",
                v.viewers,
                v.segments,
                v.ingest_copies.value,
                v.origin_seeding_bytes.value / v.vod_bytes.value.max(1.0),
                v.viewer_phase_copies.value
            ),
        },
        None => not_measured("VOD origin bytes", VOD_COPIES),
    });
    goals.push(match &r.vod {
        Some(v) => {
            let worse = v
                .first_byte_ratio_p50
                .value
                .max(v.first_byte_ratio_p95.value);
            Goal {
                name: "VOD seek time",
                target: VOD_SEEK,
                measured: Some(fig(worse, "ratio")),
                met: full(v) && worse.is_finite() && worse <= 1.2,
                note: format!(
                    "to first byte: mesh p50 {:.1} / p95 {:.1} ms against HTTP {:.1} / {:.1} ms ({:.2} / {:.2}×); to the whole segment {:.2} / {:.2}×",
                    v.first_byte_p50.value,
                    v.first_byte_p95.value,
                    v.http_first_byte_p50.value,
                    v.http_first_byte_p95.value,
                    v.first_byte_ratio_p50.value,
                    v.first_byte_ratio_p95.value,
                    v.seek_ratio_p50.value,
                    v.seek_ratio_p95.value
                ),
            }
        }
        None => not_measured("VOD seek time", VOD_SEEK),
    });
    goals.push(match &r.throughput {
        Some(t) => Goal {
            name: "segment protocol throughput",
            target: "≥ 0.9 × raw quinn",
            measured: Some(t.ratio),
            met: t.ratio.value >= 0.9,
            note: format!(
                "{:.0} MiB/s against {:.0} MiB/s",
                t.meshcast.both.value, t.quinn.both.value
            ),
        },
        None => not_measured("segment protocol throughput", "≥ 0.9 × raw quinn"),
    });
    goals.push(match &r.rss {
        Some(s) => Goal {
            name: "node peak RSS",
            target: "≤ 64 MB with 100 peers, 30 s window of 5 Mbit/s",
            measured: Some(s.peak_rss),
            met: s.peers >= 100 && s.peak_rss.value <= 64.0,
            note: format!("{} peers", s.peers),
        },
        None => not_measured(
            "node peak RSS",
            "≤ 64 MB with 100 peers, 30 s window of 5 Mbit/s",
        ),
    });
    goals
}

fn not_measured(name: &'static str, target: &'static str) -> Goal {
    Goal {
        name,
        target,
        measured: None,
        met: false,
        note: "not measured".into(),
    }
}

fn show(f: &Fig, decimals: usize) -> String {
    if f.value.is_finite() {
        format!("{:.*}", decimals, f.value)
    } else {
        "–".into()
    }
}

fn percent(f: &Fig) -> String {
    if f.value.is_finite() {
        format!("{:.4} %", f.value * 100.0)
    } else {
        "–".into()
    }
}

fn mb(bytes: &Fig) -> String {
    format!("{:.1}", bytes.value / 1e6)
}

/// The goals, one per line, for the terminal.
pub fn goals_text(r: &Report) -> String {
    let mut out = String::new();
    for g in &r.goals {
        let measured = g
            .measured
            .map(|m| format!("{} {}", show(&m, 4), m.unit))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            out,
            "goal {:<28} {:<7} {measured} (target {}; {})",
            g.name,
            if g.met { "met" } else { "missed" },
            g.target,
            g.note
        );
    }
    out.trim_end().to_string()
}

pub fn markdown(r: &Report, stem: &str) -> String {
    let mut m = String::new();
    let w = &mut m;
    let _ = writeln!(w, "# meshcast benchmarks, {}\n", r.started_utc);
    let _ = writeln!(
        w,
        "`meshcast-bench all{}` — meshcast {}, {} build, {} cores (Linux {}), load average {} at the start and {} at the end, {:.0} s in all. Chart: [{stem}.svg]({stem}.svg); every figure with its unit: [{stem}.json]({stem}.json).\n",
        if r.quick { " --quick" } else { "" },
        r.version,
        r.build,
        r.machine.cores,
        r.machine.kernel,
        show(&r.machine.load_start, 2),
        show(&r.machine.load_end, 2),
        r.elapsed.value
    );

    let _ = writeln!(w, "## Goals\n");
    let _ = writeln!(
        w,
        "| goal | target | measured | | note |\n|---|---|---|---|---|"
    );
    for g in &r.goals {
        let measured = match g.measured {
            Some(f) if f.unit == "ratio" && g.name == "origin offload" => percent(&f),
            Some(f) => format!("{} {}", show(&f, 3), f.unit),
            None => "–".into(),
        };
        let _ = writeln!(
            w,
            "| {} | {} | {measured} | **{}** | {} |",
            g.name,
            g.target,
            if g.met { "met" } else { "missed" },
            g.note
        );
    }

    let _ = writeln!(w, "\n## Mesh propagation\n");
    if r.mesh.is_empty() {
        let _ = writeln!(w, "Not run.");
    } else {
        let _ = writeln!(
            w,
            "One publisher and N nodes in one process, QUIC on 127.0.0.1; each node dials the publisher and up to 4 earlier nodes. Propagation: injection at the publisher to \"held and verified\" at a node, over every (node, segment) pair.\n"
        );
        let _ = writeln!(
            w,
            "| nodes | segments | segment | delivered | p50 ms | p95 ms | p99 ms | max ms | duplicate ratio | CPU (cores) |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for run in &r.mesh {
            let _ = writeln!(
                w,
                "| {} | {} | {:.0} kB ({} Mbit/s) | {} of {} | {} | {} | {} | {} | {} | {} |",
                run.nodes,
                run.segments,
                run.segment_bytes.value / 1e3,
                show(&run.bitrate, 1),
                run.delivered.value,
                run.expected.value,
                show(&run.p50, 1),
                show(&run.p95, 1),
                show(&run.p99, 1),
                show(&run.max, 1),
                show(&run.duplicate_ratio, 3),
                show(&run.cpu, 2)
            );
        }
    }

    super::cut::markdown(w, r.cut.as_ref());
    super::sim::markdown(w, r.sim.as_ref());
    super::hostile::markdown(w, r.hostile.as_ref());
    let _ = writeln!(w, "\n## Origin offload\n");
    match &r.offload {
        None => {
            let _ = writeln!(w, "Not run.");
        }
        Some(o) => {
            let _ = writeln!(
                w,
                "{} Stream: {} Mbit/s in {} s segments; {} s measured per audience. Offload = 1 − origin bytes ÷ bytes delivered to viewers, both over the measured window (segments announced in it; the viewers' origin fallbacks for them count even when they land after it); a segment is late when no gateway delivered it within one segment duration of its announcement; one a gateway refused or never delivered was fetched from the origin (\"from origin\").\n",
                o.topology,
                show(&o.bitrate, 1),
                show(&o.segment_duration, 0),
                show(&o.measured, 0)
            );
            let _ = writeln!(
                w,
                "| viewers | sessions | delivered MB | origin MB (playlists) | offload | late | from origin | p50 ms | p99 ms | CPU: gateways / publisher+node / viewers+origin (cores) |\n|---|---|---|---|---|---|---|---|---|---|"
            );
            for run in &o.runs {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} ({}) | {} | {} of {} | {} | {} | {} | {} / {} / {} |",
                    run.viewers,
                    run.sessions_open.value,
                    mb(&run.viewer_bytes),
                    mb(&run.origin_bytes),
                    mb(&run.origin_playlist_bytes),
                    percent(&run.offload),
                    run.late_segments.value,
                    run.expected_segments.value,
                    run.fallback_segments.value,
                    show(&run.p50, 1),
                    show(&run.p99, 1),
                    show(&run.gateway_cpu, 2),
                    show(&run.mesh_cpu, 2),
                    show(&run.viewer_cpu, 2)
                );
            }
        }
    }

    let _ = writeln!(w, "\n## On-demand video (VOD)\n");
    match &r.vod {
        None => {
            let _ = writeln!(w, "Not run.");
        }
        Some(v) => {
            let _ = writeln!(
                w,
                "{} VOD: {} segments of {:.0} kB ({} Mbit/s, {} s each), {:.1} MB; {} viewers arriving within {} s. The seeder held {} of {} segments when the viewers started ({} s after it began). Copies = origin bytes ÷ the VOD's size; the plain-HTTP pass ({} MB) is not counted.\n",
                v.topology,
                v.segments,
                v.segment_bytes.value / 1e3,
                show(&v.bitrate, 1),
                show(&v.segment_duration, 0),
                v.vod_bytes.value / 1e6,
                v.viewers,
                show(&v.arrivals, 0),
                v.seeded_before_viewers.value,
                v.segments,
                show(&v.seeding_time, 1),
                mb(&v.origin_http_pass_bytes)
            );
            let _ = writeln!(
                w,
                "| origin copies | ingest | seeding | viewers' phase | by gateways MB | fallbacks MB | sessions | requests (seeks) | late | fallbacks | failed |\n|---|---|---|---|---|---|---|---|---|---|---|"
            );
            let _ = writeln!(
                w,
                "| **{}** | {} | {:.3} | {} | {} | {} | {} | {} ({}) | {} | {} | {} |\n",
                show(&v.origin_copies, 3),
                show(&v.ingest_copies, 3),
                v.origin_seeding_bytes.value / v.vod_bytes.value.max(1.0),
                show(&v.viewer_phase_copies, 3),
                mb(&v.origin_gateway_bytes),
                mb(&v.origin_fallback_bytes),
                v.sessions_open.value,
                v.requests.value,
                v.seeks.value,
                v.late_segments.value,
                v.fallback_segments.value,
                v.failed_segments.value
            );
            let _ = writeln!(
                w,
                "| seek to the whole segment | p50 ms | p95 ms | first at its gateway p50 ms ({} seeks) | repeat p50 ms | next segments p50 ms |\n|---|---|---|---|---|---|",
                v.seeks_first.value
            );
            let _ = writeln!(
                w,
                "| mesh | {} | {} | {} | {} | {} |",
                show(&v.seek_p50, 1),
                show(&v.seek_p95, 1),
                v.seek_first_p50.map_or("–".into(), |f| show(&f, 1)),
                v.seek_repeat_p50.map_or("–".into(), |f| show(&f, 1)),
                show(&v.play_p50, 1)
            );
            let _ = writeln!(
                w,
                "| plain HTTP | {} | {} | – | – | {} |",
                show(&v.http_seek_p50, 1),
                show(&v.http_seek_p95, 1),
                show(&v.http_play_p50, 1)
            );
            let _ = writeln!(
                w,
                "| mesh ÷ HTTP | {} | {} | | | |\n",
                show(&v.seek_ratio_p50, 2),
                show(&v.seek_ratio_p95, 2)
            );
            let _ = writeln!(
                w,
                "| seek to the first byte (the goal) | p50 ms | p95 ms |\n|---|---|---|\n| mesh | {} | {} |\n| plain HTTP | {} | {} |\n| mesh ÷ HTTP | **{}** | **{}** |\n",
                show(&v.first_byte_p50, 1),
                show(&v.first_byte_p95, 1),
                show(&v.http_first_byte_p50, 1),
                show(&v.http_first_byte_p95, 1),
                show(&v.first_byte_ratio_p50, 2),
                show(&v.first_byte_ratio_p95, 2)
            );
            let _ = writeln!(
                w,
                "CPU over the {} s of the viewers' phase: gateways {}, publisher and seeder {}, viewers and origin {} cores.",
                show(&v.measured, 1),
                show(&v.gateway_cpu, 2),
                show(&v.mesh_cpu, 2),
                show(&v.viewer_cpu, 2)
            );
        }
    }

    let _ = writeln!(w, "\n## Relay fan-out\n");
    match &r.fanout {
        None => {
            let _ = writeln!(w, "Not run.");
        }
        Some(f) => {
            let _ = writeln!(
                w,
                "One `meshcast relay` child process; native WebTransport sessions in the bench process, each asking for every segment of a {} Mbit/s stream ({} s segments) within one segment duration; {} s measured per step. Steps stop at the first one with a late segment. Most sessions with no late segment: **{}**.\n",
                show(&f.bitrate, 0),
                show(&f.segment_duration, 0),
                show(&f.measured, 0),
                f.max_sessions_without_late.value
            );
            let _ = writeln!(
                w,
                "| sessions | open | late | delivered Mbit/s | p50 ms | p99 ms | relay cores | core-s per Gbit | relay RSS MiB | MiB per session |\n|---|---|---|---|---|---|---|---|---|---|"
            );
            for s in &f.steps {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} of {} | {} | {} | {} | {} | {} | {} | {} |",
                    s.sessions,
                    s.sessions_open.value,
                    s.late_segments.value,
                    s.expected_segments.value,
                    show(&s.delivered, 0),
                    show(&s.p50, 1),
                    show(&s.p99, 1),
                    show(&s.relay_cpu, 2),
                    show(&s.relay_cpu_per_gbit, 2),
                    show(&s.relay_peak_rss, 0),
                    show(&s.relay_rss_per_session, 3)
                );
            }
        }
    }

    super::viewers::markdown(w, r.viewers.as_ref());

    let _ = writeln!(w, "\n## Segment protocol throughput\n");
    match &r.throughput {
        None => {
            let _ = writeln!(w, "Not run.");
        }
        Some(t) => {
            let _ = writeln!(
                w,
                "Between this process and a `meshcast-bench peer` child on 127.0.0.1: {} MiB each way per protocol and round, {} round(s), alternating protocols; {} MiB per stream, {} streams in flight. meshcast: libp2p QUIC, `/meshcast/segment/2` (`Want` → `Deliver` + body, `PushOffer` → `PushAccept` + body, bodies as BLAKE3 trees in 16 KiB groups), every header and every group verified, the peer a real node (store, scheduler). libp2p alone: a second swarm in the peer (QUIC and libp2p-stream only) answering quinn's requests on its streams, bytes only. quinn: the same QUIC windows, one bidirectional stream per chunk, bytes only. Ratio meshcast ÷ quinn: **{}** (libp2p alone ÷ quinn: {}). Streams dropped by the peer on arrival and opened again (rust-libp2p#5651): {} meshcast, {} libp2p alone; pushes declined as busy and offered again: {}. BLAKE3 over the same bodies, one core: {} core-s per GiB (each body is hashed twice: by its sender for its tree, and by its receiver group by group).\n",
                show(&t.mib_each_way, 0),
                t.rounds,
                show(&t.chunk, 0),
                t.streams_in_flight,
                show(&t.ratio, 3),
                show(&t.libp2p_ratio, 3),
                t.meshcast_streams_reopened.value,
                t.libp2p_streams_reopened.value,
                t.meshcast_busy_declines.value,
                show(&t.blake3_cpu, 2)
            );
            let _ = writeln!(
                w,
                "| protocol | pull MiB/s | push MiB/s | both MiB/s | bench CPU core-s/GiB | peer CPU core-s/GiB |\n|---|---|---|---|---|---|"
            );
            for (name, p) in [
                ("meshcast", &t.meshcast),
                ("libp2p alone", &t.libp2p),
                ("raw quinn", &t.quinn),
            ] {
                let _ = writeln!(
                    w,
                    "| {name} | {} | {} | {} | {} | {} |",
                    show(&p.pull, 1),
                    show(&p.push, 1),
                    show(&p.both, 1),
                    show(&p.parent_cpu, 2),
                    show(&p.child_cpu, 2)
                );
            }
        }
    }

    let _ = writeln!(w, "\n## Node memory\n");
    match &r.rss {
        None => {
            let _ = writeln!(w, "Not run.");
        }
        Some(s) => {
            let _ = writeln!(
                w,
                "A `meshcast node` child process with a {} s live window; {} peer nodes in the bench process dial it (and two other peers each); an in-process publisher injects a {} Mbit/s stream ({:.0} kB segments) for {} s. RSS from `/proc/<pid>/status` (MB = 10⁶ bytes).\n",
                show(&s.live_window, 0),
                s.peers,
                show(&s.bitrate, 1),
                s.segment_bytes.value / 1e3,
                show(&s.published, 0)
            );
            let _ = writeln!(
                w,
                "| peers connected | RSS following, alone MB | RSS with peers MB | RSS at the end MB | peak (VmHWM) MB | store at the end MB (segments) | peer deliveries | bench CPU (cores) |\n|---|---|---|---|---|---|---|---|"
            );
            let _ = writeln!(
                w,
                "| {} of {} | {} | {} | {} | **{}** | {} | {} of {} | {} |",
                s.connected_peers.value,
                s.peers,
                show(&s.rss_idle, 1),
                show(&s.rss_connected, 1),
                show(&s.rss_end, 1),
                show(&s.peak_rss, 1),
                match (&s.store_bytes, &s.store_segments) {
                    (Some(b), Some(n)) => format!("{} ({})", show(b, 1), n.value),
                    _ => "–".into(),
                },
                s.peer_segments_delivered.value,
                s.peer_segments_expected.value,
                show(&s.bench_cpu, 2)
            );
        }
    }

    let _ = writeln!(w, "\n## Idle peers\n");
    match &r.idle {
        Some(i) => {
            let _ = writeln!(
                w,
                "One `meshcast node` with {} idle peers, {:.0} s measured: {:.2} % of a core, {:.0} wake-ups/s (goal ≤ 1 % of a core at 100 peers).",
                i.peers,
                i.seconds,
                i.cpu_core_share * 100.0,
                i.wakeups_per_second
            );
        }
        None => {
            let _ = writeln!(w, "Not run.");
        }
    }
    let _ = writeln!(w, "\n## Network conditions\n");
    match &r.netns {
        None => {
            let _ = writeln!(w, "Not run.");
        }
        Some(NetnsSection {
            skipped: Some(why), ..
        }) => {
            let _ = writeln!(w, "Skipped: {why}.");
        }
        Some(NetnsSection {
            result: Some(n), ..
        }) => {
            let _ = writeln!(
                w,
                "Two network namespaces joined by a veth pair; conditions: **{}**. Every node is a separate process (`ip netns exec NS meshcast-bench node`); the publisher and {} nodes in the first namespace, {} nodes in the second. {} segments of {:.0} kB. Duplicate ratio {}.\n",
                n.conditions,
                n.nodes_per_namespace,
                n.nodes_per_namespace,
                n.segments,
                n.segment_bytes.value / 1e3,
                show(&n.duplicate_ratio, 3)
            );
            let _ = writeln!(
                w,
                "| nodes | delivered | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|---|"
            );
            for (name, l) in [
                ("publisher's namespace", &n.near),
                ("across the link", &n.far),
            ] {
                let _ = writeln!(
                    w,
                    "| {name} | {} of {} | {} | {} | {} | {} |",
                    l.delivered.value,
                    l.expected.value,
                    show(&l.p50, 1),
                    show(&l.p95, 1),
                    show(&l.p99, 1),
                    show(&l.max, 1)
                );
            }
        }
        Some(_) => {
            let _ = writeln!(w, "No result.");
        }
    }
    super::lab::nat_markdown(w, r.nat.as_ref());
    super::lab::thin_markdown(w, r.thin.as_ref());
    super::churn::markdown(w, r.churn.as_ref());

    if !r.errors.is_empty() {
        let _ = writeln!(w, "\n## Errors\n");
        for e in &r.errors {
            let _ = writeln!(w, "- {}: {}", e.section, e.error.replace('\n', " "));
        }
    }
    m
}

/// The chart: one panel per section, two for the VOD.
pub fn svg(r: &Report) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1600, 760)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let title = format!(
            "meshcast-bench all{} — {} ({} build)",
            if r.quick { " --quick" } else { "" },
            r.started_utc,
            r.build
        );
        let root = root
            .titled(&title, ("sans-serif", 20))
            .map_err(draw_error)?;
        let panels = root.split_evenly((2, 4));
        mesh_panel(&panels[0], r).map_err(draw_error)?;
        offload_panel(&panels[1], r).map_err(draw_error)?;
        vod_copies_panel(&panels[2], r).map_err(draw_error)?;
        vod_seek_panel(&panels[3], r).map_err(draw_error)?;
        fanout_panel(&panels[4], r).map_err(draw_error)?;
        throughput_panel(&panels[5], r).map_err(draw_error)?;
        rss_panel(&panels[6], r).map_err(draw_error)?;
        netns_panel(&panels[7], r).map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(out)
}

fn draw_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e:?}")
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

fn empty(area: &Area, caption: &str, why: &str) -> DrawResult {
    area.draw(&Text::new(
        caption.to_string(),
        (20, 20),
        ("sans-serif", 16).into_font(),
    ))?;
    area.draw(&Text::new(
        why.to_string(),
        (20, 60),
        ("sans-serif", 13).into_font().color(&BLACK.mix(0.6)),
    ))
}

/// Grouped bars: `groups` labels on x, one bar per series in each, and an
/// optional goal line.
fn bars(
    area: &Area,
    caption: &str,
    y_desc: &str,
    groups: &[String],
    series: &[(&str, Vec<f64>)],
    goal: Option<(f64, &str)>,
    y_range: Option<(f64, f64)>,
) -> DrawResult {
    let top = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .chain(goal.map(|(g, _)| g))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let (y0, y1) = y_range.unwrap_or((0.0, if top > 0.0 { top * 1.15 } else { 1.0 }));
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n, y0..y1)?;
    let labels: Vec<String> = groups.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor();
            if (x - i - 0.5).abs() < 0.01 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(g, v)| {
                        let x0 = g as f64 + 0.1 + width * s as f64;
                        Rectangle::new([(x0, y0.max(0.0)), (x0 + width, *v)], color.filled())
                    }),
            )?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    if let Some((g, label)) = goal {
        chart
            .draw_series(LineSeries::new([(0.0, g), (n, g)], RED.stroke_width(2)))?
            .label(label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
}

fn mesh_panel(area: &Area, r: &Report) -> DrawResult {
    if r.mesh.is_empty() {
        return empty(area, "mesh propagation", "not run");
    }
    let groups: Vec<String> = r
        .mesh
        .iter()
        .map(|m| format!("{} nodes", m.nodes))
        .collect();
    let pick = |f: fn(&MeshRun) -> f64| r.mesh.iter().map(f).collect::<Vec<_>>();
    bars(
        area,
        "mesh propagation",
        "ms",
        &groups,
        &[
            ("p50", pick(|m| m.p50.value)),
            ("p95", pick(|m| m.p95.value)),
            ("p99", pick(|m| m.p99.value)),
        ],
        None,
        None,
    )
}

fn offload_panel(area: &Area, r: &Report) -> DrawResult {
    let Some(o) = r.offload.as_ref().filter(|o| !o.runs.is_empty()) else {
        return empty(area, "origin offload", "not run");
    };
    let groups: Vec<String> = o
        .runs
        .iter()
        .map(|x| format!("{} viewers", x.viewers))
        .collect();
    let values: Vec<f64> = o.runs.iter().map(|x| x.offload.value * 100.0).collect();
    let low = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(99.0f64, f64::min);
    bars(
        area,
        "origin offload",
        "% of viewer bytes not from the origin",
        &groups,
        &[("offload", values)],
        Some((99.9, "goal 99.9 %")),
        Some(((low - 0.5).max(0.0).floor(), 100.0)),
    )
}

fn vod_copies_panel(area: &Area, r: &Report) -> DrawResult {
    let Some(v) = &r.vod else {
        return empty(area, "VOD origin bytes", "not run");
    };
    let groups = vec![
        "ingest".to_string(),
        "seeding".to_string(),
        "viewers".to_string(),
        "total".to_string(),
    ];
    bars(
        area,
        &format!("VOD origin bytes, {} viewers", v.viewers),
        "copies of the VOD",
        &groups,
        &[(
            "copies",
            vec![
                v.ingest_copies.value,
                v.origin_seeding_bytes.value / v.vod_bytes.value.max(1.0),
                v.viewer_phase_copies.value,
                v.origin_copies.value,
            ],
        )],
        Some((1.1, "goal 1.1")),
        None,
    )
}

fn vod_seek_panel(area: &Area, r: &Report) -> DrawResult {
    let Some(v) = &r.vod else {
        return empty(area, "VOD seek time", "not run");
    };
    let groups = vec!["p50".to_string(), "p95".to_string()];
    bars(
        area,
        "VOD seek to the whole segment",
        "ms",
        &groups,
        &[
            ("mesh", vec![v.seek_p50.value, v.seek_p95.value]),
            (
                "plain HTTP",
                vec![v.http_seek_p50.value, v.http_seek_p95.value],
            ),
        ],
        None,
        None,
    )
}

fn fanout_panel(area: &Area, r: &Report) -> DrawResult {
    let Some(f) = r.fanout.as_ref().filter(|f| !f.steps.is_empty()) else {
        return empty(area, "relay fan-out", "not run");
    };
    let groups: Vec<String> = f.steps.iter().map(|s| format!("{}", s.sessions)).collect();
    bars(
        area,
        "relay fan-out at 2 Mbit/s (sessions)",
        "Mbit/s delivered",
        &groups,
        &[
            (
                "asked",
                f.steps.iter().map(|s| s.sessions as f64 * 2.0).collect(),
            ),
            (
                "delivered",
                f.steps.iter().map(|s| s.delivered.value).collect(),
            ),
        ],
        None,
        None,
    )
}

fn throughput_panel(area: &Area, r: &Report) -> DrawResult {
    let Some(t) = &r.throughput else {
        return empty(area, "segment protocol throughput", "not run");
    };
    let groups = vec!["pull".to_string(), "push".to_string(), "both".to_string()];
    bars(
        area,
        &format!("throughput: meshcast ÷ quinn = {:.2}", t.ratio.value),
        "MiB/s",
        &groups,
        &[
            (
                "meshcast",
                vec![
                    t.meshcast.pull.value,
                    t.meshcast.push.value,
                    t.meshcast.both.value,
                ],
            ),
            (
                "libp2p alone",
                vec![
                    t.libp2p.pull.value,
                    t.libp2p.push.value,
                    t.libp2p.both.value,
                ],
            ),
            (
                "raw quinn",
                vec![t.quinn.pull.value, t.quinn.push.value, t.quinn.both.value],
            ),
        ],
        None,
        None,
    )
}

fn rss_panel(area: &Area, r: &Report) -> DrawResult {
    let Some(s) = &r.rss else {
        return empty(area, "node RSS", "not run");
    };
    let groups = vec![
        "alone".to_string(),
        "peers".to_string(),
        "end".to_string(),
        "peak".to_string(),
    ];
    bars(
        area,
        &format!("node RSS, {} peers", s.peers),
        "MB",
        &groups,
        &[(
            "RSS",
            vec![
                s.rss_idle.value,
                s.rss_connected.value,
                s.rss_end.value,
                s.peak_rss.value,
            ],
        )],
        Some((64.0, "goal 64 MB")),
        None,
    )
}

fn netns_panel(area: &Area, r: &Report) -> DrawResult {
    match &r.netns {
        Some(NetnsSection {
            result: Some(n), ..
        }) => {
            let groups = vec!["same namespace".to_string(), "across the link".to_string()];
            bars(
                area,
                "mesh across namespaces",
                "ms",
                &groups,
                &[
                    ("p50", vec![n.near.p50.value, n.far.p50.value]),
                    ("p99", vec![n.near.p99.value, n.far.p99.value]),
                ],
                None,
                None,
            )
        }
        Some(NetnsSection {
            skipped: Some(why), ..
        }) => empty(area, "network conditions", &format!("skipped: {why}")),
        _ => empty(area, "network conditions", "not run"),
    }
}
