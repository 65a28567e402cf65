//! `meshcast-bench all --quick`: every section runs and reports sane figures.
//! Nothing here asserts speed: the figures are checked for presence, units,
//! finiteness and plausible ranges only.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_meshcast-bench");

/// `meshcast-bench`, with the `meshcast` binary it drives (the one next to
/// it) built and up to date. Cargo builds only this package's binaries for
/// its tests, so `cargo test -p meshcast-bench` alone would otherwise run a
/// missing or stale `meshcast`. Under `cargo test --workspace` the build is
/// not a no-op: `-p meshcast` alone resolves other features, so it
/// recompiles three crates and replaces the binary the workspace build made
/// (up to date already); `cargo xtask test` says so with
/// `BENCH_TEST_MESHCAST_BUILT`. With `MESHCAST_BIN` set, that binary is used
/// as it is.
fn bench_with_meshcast() -> Command {
    if std::env::var_os("MESHCAST_BIN").is_none()
        && std::env::var_os("BENCH_TEST_MESHCAST_BUILT").is_none()
    {
        let dir = Path::new(BENCH).parent().expect("a target directory");
        // target/debug is the dev profile's; other profiles have their own.
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let build = Command::new(env!("CARGO"))
            .args(["build", "-p", "meshcast", "--bin", "meshcast"])
            .args(["--profile", profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo");
        assert!(
            build.status.success(),
            "`cargo build -p meshcast --profile {profile}` failed:\n{}",
            String::from_utf8_lossy(&build.stderr)
        );
        let meshcast = dir.join("meshcast");
        assert!(
            meshcast.is_file(),
            "{} is missing after `cargo build -p meshcast --profile {profile}` (tests built with --target or --target-dir?): build it next to {BENCH}, or set MESHCAST_BIN",
            meshcast.display()
        );
    }
    Command::new(BENCH)
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect()
}

/// `value` is a figure: `{"value": <finite number>, "unit": "<non-empty>"}`,
/// within `[min, max]`.
fn figure(report: &Value, path: &str, min: f64, max: f64) -> f64 {
    let fig = report
        .pointer(path)
        .unwrap_or_else(|| panic!("{path} is missing"));
    let unit = fig["unit"].as_str().unwrap_or_default();
    assert!(!unit.is_empty(), "{path} has no unit: {fig}");
    let value = fig["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {fig}"));
    assert!(value.is_finite(), "{path} is not finite: {fig}");
    assert!(
        (min..=max).contains(&value),
        "{path} = {value} {unit}, outside [{min}, {max}]"
    );
    value
}

/// Every `{"value", "unit"}` object anywhere in the report.
fn every_figure<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) if map.contains_key("value") && map.contains_key("unit") => {
            out.push((path, v));
        }
        Value::Object(map) => {
            for (k, v) in map {
                every_figure(v, format!("{path}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                every_figure(v, format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Tags open and close in order, and the root element is `<svg>`.
fn check_svg(text: &str) {
    let start = text.find("<svg").expect("an <svg> element");
    assert!(
        text[..start].trim().is_empty() || text[..start].trim_start().starts_with("<?xml"),
        "text before <svg>"
    );
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = &text[start..];
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("an unterminated tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
        } else {
            let name = tag.split_whitespace().next().expect("a tag name");
            if stack.is_empty() {
                assert_eq!(name, "svg", "the root element is <{name}>");
            }
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert!(rest.trim().is_empty(), "text after </svg>");
}

#[test]
fn bench_all_quick_reports_every_section() {
    let out = tempfile::tempdir().unwrap();
    let run = bench_with_meshcast()
        .args(["all", "--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("run meshcast-bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    // Not a terminal: no progress bar, plain phase lines.
    assert!(stderr.contains("bench: "), "{stderr}");
    assert!(
        !stderr.contains('\r'),
        "a progress bar was drawn: {stderr:?}"
    );

    let (json, md, svg) = (
        files_with(out.path(), "json"),
        files_with(out.path(), "md"),
        files_with(out.path(), "svg"),
    );
    assert!(
        json.len() == 1 && md.len() == 1 && svg.len() == 1,
        "{json:?} {md:?} {svg:?}"
    );
    // One stem, a UTC date-time: 2026-05-04T11-44-32Z.
    let stem = json[0].file_stem().unwrap().to_str().unwrap().to_string();
    assert_eq!(md[0].file_stem().unwrap().to_str().unwrap(), stem);
    assert_eq!(svg[0].file_stem().unwrap().to_str().unwrap(), stem);
    assert!(
        stem.len() == 20 && stem.ends_with('Z') && stem.as_bytes()[10] == b'T',
        "{stem}"
    );
    for path in [&json[0], &md[0], &svg[0]] {
        assert!(
            stdout.contains(&path.display().to_string()),
            "stdout does not name {}: {stdout}",
            path.display()
        );
    }

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json[0]).unwrap())
        .expect("the report is JSON");
    assert_eq!(report["quick"], true);
    assert_eq!(
        report["errors"].as_array().map(Vec::len),
        Some(0),
        "{}",
        report["errors"]
    );

    // Every figure anywhere: a finite number with a unit.
    let mut figures = Vec::new();
    every_figure(&report, String::new(), &mut figures);
    assert!(figures.len() > 60, "only {} figures", figures.len());
    for (path, fig) in &figures {
        if path.starts_with("/machine/load") {
            continue; // /proc/loadavg may be unreadable; NaN then.
        }
        assert!(
            fig["value"].as_f64().is_some_and(f64::is_finite),
            "{path}: {fig}"
        );
        assert!(
            fig["unit"].as_str().is_some_and(|u| !u.is_empty()),
            "{path}: {fig}"
        );
    }

    // a. mesh: 5 nodes, every (node, segment) pair delivered.
    let mesh = report["mesh"].as_array().expect("mesh runs");
    assert_eq!(mesh.len(), 1);
    assert_eq!(mesh[0]["nodes"], 5);
    let expected = figure(&report, "/mesh/0/expected", 1.0, 1e6);
    figure(&report, "/mesh/0/delivered", expected, expected);
    let p50 = figure(&report, "/mesh/0/p50", 0.0, 60_000.0);
    let p95 = figure(&report, "/mesh/0/p95", p50, 60_000.0);
    let p99 = figure(&report, "/mesh/0/p99", p95, 60_000.0);
    figure(&report, "/mesh/0/max", p99, 60_000.0);
    figure(&report, "/mesh/0/duplicate_ratio", 1.0, 10.0);

    // a'. cut-through against store-and-forward: both deliver everything,
    // and the ratio is theirs.
    for side in ["with", "without"] {
        let expected = figure(&report, &format!("/cut/{side}/expected"), 1.0, 1e6);
        figure(
            &report,
            &format!("/cut/{side}/delivered"),
            expected,
            expected,
        );
        figure(&report, &format!("/cut/{side}/p95"), 0.0, 60_000.0);
    }
    let ratio = figure(&report, "/cut/ratio_p95", 0.0, 1e3);
    let (with, without) = (
        figure(&report, "/cut/with/p95", 0.0, 60_000.0),
        figure(&report, "/cut/without/p95", 0.0, 60_000.0),
    );
    assert!(
        (ratio - with / without).abs() < 1e-6,
        "{ratio} vs {with} / {without}"
    );

    // b. offload: a real origin served something, viewers got more.
    let runs = report["offload"]["runs"].as_array().expect("offload runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["viewers"], 20);
    figure(&report, "/offload/runs/0/sessions_open", 1.0, 20.0);
    let asked = figure(&report, "/offload/runs/0/expected_segments", 1.0, 1e6);
    figure(&report, "/offload/runs/0/late_segments", 0.0, asked);
    figure(&report, "/offload/runs/0/delivered_by_gateways", 0.0, asked);
    figure(&report, "/offload/runs/0/origin_bytes", 1.0, 1e12);
    figure(&report, "/offload/runs/0/viewer_bytes", 1.0, 1e12);
    figure(&report, "/offload/runs/0/offload", 0.0, 1.0);
    figure(&report, "/offload/bitrate", 2.0, 2.0);

    // b'. on-demand video: 20 segments, 20 viewers seeking at random.
    assert_eq!(report["vod"]["segments"], 20);
    assert_eq!(report["vod"]["viewers"], 20);
    let vod_bytes = figure(&report, "/vod/vod_bytes", 1.0, 1e10);
    let segment = figure(&report, "/vod/segment_bytes", 1.0, vod_bytes);
    assert!(
        (vod_bytes - 20.0 * segment).abs() < 1.0,
        "{vod_bytes} vs 20 × {segment}"
    );
    figure(&report, "/vod/seeded_before_viewers", 0.0, 20.0);
    figure(&report, "/vod/seeding_time", 0.0, 600.0);
    figure(&report, "/vod/sessions_open", 1.0, 20.0);
    figure(&report, "/vod/seeks", 20.0, 20.0);
    let requests = figure(&report, "/vod/requests", 20.0, 100.0);
    figure(&report, "/vod/delivered_by_gateways", 0.0, requests);
    figure(&report, "/vod/late_segments", 0.0, requests);
    let fallbacks = figure(&report, "/vod/fallback_segments", 0.0, requests);
    figure(&report, "/vod/failed_segments", 0.0, 0.0);
    figure(
        &report,
        "/vod/viewer_bytes",
        requests * segment,
        requests * segment,
    );
    // The ingest alone is one copy (plus playlists); the publisher fetches
    // each segment once.
    let ingest = figure(&report, "/vod/ingest_copies", 1.0, 2.0);
    let viewers_phase = figure(&report, "/vod/viewer_phase_copies", 0.0, 1e3);
    let copies = figure(&report, "/vod/origin_copies", 1.0, 1e3);
    assert!(
        copies + 1e-9 >= ingest + viewers_phase,
        "{copies} < {ingest} + {viewers_phase}"
    );
    let phase_bytes = figure(&report, "/vod/origin_viewer_phase_bytes", 0.0, 1e12);
    let fallback_bytes = figure(&report, "/vod/origin_fallback_bytes", 0.0, phase_bytes);
    assert!(
        (fallback_bytes - fallbacks * segment).abs() < 1.0,
        "{fallback_bytes} vs {fallbacks} fallbacks"
    );
    figure(&report, "/vod/origin_gateway_bytes", 0.0, phase_bytes);
    figure(&report, "/vod/origin_seeding_bytes", 0.0, 1e12);
    figure(&report, "/vod/origin_http_pass_bytes", 20.0 * segment, 1e12);
    let p50 = figure(&report, "/vod/seek_p50", 1e-6, 60_000.0);
    let p95 = figure(&report, "/vod/seek_p95", p50, 60_000.0);
    let http_p50 = figure(&report, "/vod/http_seek_p50", 1e-6, 60_000.0);
    let http_p95 = figure(&report, "/vod/http_seek_p95", http_p50, 60_000.0);
    let ratio = figure(&report, "/vod/seek_ratio_p50", 1e-6, 1e6);
    assert!(
        (ratio - p50 / http_p50).abs() < 1e-9,
        "{ratio} vs {p50} / {http_p50}"
    );
    let ratio = figure(&report, "/vod/seek_ratio_p95", 1e-6, 1e6);
    assert!(
        (ratio - p95 / http_p95).abs() < 1e-9,
        "{ratio} vs {p95} / {http_p95}"
    );
    // To the first byte: never later than to the whole segment.
    let first = figure(&report, "/vod/first_byte_p50", 1e-6, p50 + 1e-9);
    let http_first = figure(&report, "/vod/http_first_byte_p50", 1e-6, http_p50 + 1e-9);
    figure(&report, "/vod/first_byte_p95", first, p95 + 1e-9);
    figure(
        &report,
        "/vod/http_first_byte_p95",
        http_first,
        http_p95 + 1e-9,
    );
    let ratio = figure(&report, "/vod/first_byte_ratio_p50", 1e-6, 1e6);
    assert!(
        (ratio - first / http_first).abs() < 1e-9,
        "{ratio} vs {first} / {http_first}"
    );
    figure(&report, "/vod/first_byte_ratio_p95", 1e-6, 1e6);
    figure(&report, "/vod/play_p50", 1e-6, 60_000.0);
    figure(&report, "/vod/http_play_p50", 1e-6, 60_000.0);
    for cpu in ["gateway_cpu", "mesh_cpu", "viewer_cpu"] {
        figure(&report, &format!("/vod/{cpu}"), 0.0, 64.0);
    }

    // c. fan-out: one step of 20 sessions.
    assert_eq!(report["fanout"]["steps"][0]["sessions"], 20);
    figure(&report, "/fanout/steps/0/sessions_open", 1.0, 20.0);
    figure(&report, "/fanout/steps/0/delivered", 0.001, 1e5);
    figure(&report, "/fanout/steps/0/relay_peak_rss", 1.0, 4096.0);
    figure(&report, "/fanout/max_sessions_without_late", 0.0, 20.0);

    // c'. hostile viewers: 20 good sessions, without and with 2 attackers
    // of each kind; attackers were cut off and came back.
    assert_eq!(report["viewers"]["sessions"], 20);
    assert_eq!(report["viewers"]["kinds"].as_array().map(Vec::len), Some(8));
    assert_eq!(report["viewers"]["without"]["attackers_per_kind"], 0);
    assert_eq!(report["viewers"]["with"]["attackers_per_kind"], 2);
    for run in ["without", "with"] {
        figure(&report, &format!("/viewers/{run}/sessions_open"), 1.0, 20.0);
        let asked = figure(
            &report,
            &format!("/viewers/{run}/expected_segments"),
            1.0,
            1e6,
        );
        figure(
            &report,
            &format!("/viewers/{run}/late_segments"),
            0.0,
            asked,
        );
        figure(
            &report,
            &format!("/viewers/{run}/relay_peak_rss"),
            1.0,
            4096.0,
        );
    }
    figure(&report, "/viewers/without/attacks_cut_off", 0.0, 0.0);
    figure(&report, "/viewers/with/attacks_cut_off", 1.0, 1e6);

    // d. throughput: both protocols moved bytes; the ratio is theirs.
    let ours = figure(&report, "/throughput/meshcast/both", 1e-3, 1e6);
    let quinn = figure(&report, "/throughput/quinn/both", 1e-3, 1e6);
    let ratio = figure(&report, "/throughput/ratio", 1e-6, 1e3);
    assert!(
        (ratio - ours / quinn).abs() < 1e-9,
        "{ratio} vs {ours} / {quinn}"
    );
    for p in ["meshcast", "quinn"] {
        for d in ["pull", "push"] {
            figure(&report, &format!("/throughput/{p}/{d}"), 1e-3, 1e6);
        }
    }

    // e. node RSS: a real process, 10 peers.
    assert_eq!(report["rss"]["peers"], 10);
    let peak = figure(&report, "/rss/peak_rss", 1.0, 4096.0);
    figure(&report, "/rss/rss_end", 1.0, peak);
    figure(&report, "/rss/rss_idle", 1.0, peak);
    figure(&report, "/rss/connected_peers", 1.0, 10.0);

    // f. network conditions, and the lab's scenarios: skipped with
    // --quick, and saying so.
    for section in ["netns", "nat", "thin"] {
        assert!(
            report[section]["skipped"]
                .as_str()
                .is_some_and(|s| s.contains("--quick")),
            "{section}: {}",
            report[section]
        );
    }

    // The simulator: its quick scenarios, every figure a share or a time,
    // and the check against real swarms.
    // (The reference, store-and-forward on its seed, and churn with stallers.)
    let runs = report["sim"]["runs"].as_array().expect("sim runs");
    assert_eq!(runs.len(), 3, "{}", report["sim"]);
    assert_eq!(runs[1]["report"]["scenario"]["cut_through"], false);
    for run in runs {
        let r = &run["report"];
        for share in ["delivered", "origin_fraction", "cancelled", "upload_none"] {
            let v = r[share].as_f64().expect(share);
            assert!((0.0..=1.0).contains(&v), "{share} {v}");
        }
        assert!(r["delivered"].as_f64().unwrap() > 0.9, "{r}");
        assert!(r["propagation_p95_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["duplicate_ratio"].as_f64().unwrap() >= 1.0, "{r}");
        assert!(r["events"].as_u64().unwrap() > 0, "{r}");
    }
    let check = &report["sim"]["check"];
    assert_eq!(check["sim"]["delivered"].as_f64(), Some(1.0), "{check}");
    assert!(
        check["swarms"]["delivered"].as_u64().unwrap() > 0,
        "{check}"
    );

    // The hostile mesh: attackers ban no honest peer, in the simulator and
    // among real swarms; the honest nodes still get every segment; a node's
    // memory stays bounded under trickled streams and empty segments.
    let hostile = &report["hostile"];
    for run in ["honest", "hostile"] {
        let r = &hostile["sim"][run];
        assert_eq!(r["honest_bans"].as_u64(), Some(0), "{r}");
        assert_eq!(r["delivered"].as_f64(), Some(1.0), "{r}");
        let s = &hostile["swarms"][run];
        assert_eq!(s["honest_bans"].as_u64(), Some(0), "{s}");
        let expected = s["nodes"].as_u64().unwrap() * s["segments"].as_u64().unwrap();
        assert_eq!(s["delivered"].as_u64(), Some(expected), "{s}");
    }
    assert!(
        hostile["sim"]["hostile"]["bans"].as_u64().unwrap() > 0,
        "{hostile}"
    );
    if !hostile["sim"]["origin_ratio"].is_null() {
        figure(&report, "/hostile/sim/origin_ratio", 0.0, 1e6);
    }
    let attackers = &hostile["swarms"]["hostile"];
    assert_eq!(attackers["forgers"].as_u64(), Some(1), "{attackers}");
    assert_eq!(attackers["stallers"].as_u64(), Some(1), "{attackers}");
    let idle_rss = figure(&report, "/hostile/memory/idle_rss", 1.0, 4096.0);
    figure(
        &report,
        "/hostile/memory/trickle_peak_rss",
        idle_rss,
        4096.0,
    );
    figure(&report, "/hostile/memory/flood_peak_rss", 1.0, 4096.0);
    figure(&report, "/hostile/memory/streams_refused", 1.0, 128.0);
    figure(&report, "/hostile/memory/store_segments", 1.0, 16_384.0);

    // Idle peers: the node's CPU share and wake-ups, finite and positive.
    let idle = &report["idle"];
    assert_eq!(idle["peers"].as_u64(), Some(10), "{idle}");
    let cpu = idle["cpu_core_share"].as_f64().expect("cpu");
    assert!((0.0..=2.0).contains(&cpu), "{idle}");
    assert!(idle["wakeups_per_second"].as_f64().unwrap() > 0.0, "{idle}");

    // Goals: ten, each met or missed.
    let goals = report["goals"].as_array().expect("goals");
    assert_eq!(goals.len(), 10);
    for goal in goals {
        assert!(goal["met"].is_boolean(), "{goal}");
        assert!(
            goal["measured"]["value"]
                .as_f64()
                .is_some_and(f64::is_finite),
            "{goal}"
        );
    }

    let text = std::fs::read_to_string(&md[0]).unwrap();
    for heading in [
        "## Goals",
        "## Cut-through against store-and-forward",
        "## Mesh propagation",
        "## Simulator",
        "## Hostile mesh",
        "## Origin offload",
        "## On-demand video (VOD)",
        "## Relay fan-out",
        "## Hostile viewers",
        "## Segment protocol throughput",
        "## Node memory",
        "## Idle peers",
        "## Network conditions",
        "## NAT matrix",
        "## Thin uplinks and distance",
    ] {
        assert!(
            text.contains(heading),
            "the Markdown lacks {heading}:\n{text}"
        );
    }
    assert!(text.contains("met") || text.contains("missed"));
    assert!(text.contains(&format!("({stem}.svg)")), "{text}");

    check_svg(&std::fs::read_to_string(&svg[0]).unwrap());
}

#[test]
fn bench_all_refuses_unknown_sections() {
    let run = Command::new(BENCH)
        .args([
            "all",
            "--quick",
            "--only",
            "nosuch",
            "--out",
            "/nonexistent",
        ])
        .output()
        .expect("run meshcast-bench");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("nosuch") && stderr.contains("throughput"),
        "{stderr}"
    );
}

#[test]
fn a_missing_meshcast_binary_is_named_with_how_to_build_it() {
    let run = Command::new(BENCH)
        .args(["relay", "--sessions", "1", "--duration", "1s"])
        .env("MESHCAST_BIN", "/nonexistent/meshcast")
        .output()
        .expect("run meshcast-bench");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("/nonexistent/meshcast")
            && stderr.contains("MESHCAST_BIN")
            && stderr.contains("cargo build -p meshcast"),
        "{stderr}"
    );
}

/// `lab loss` as root: every transport moves the bytes and gets a row of
/// finite times, TCP's ratio to itself 1. Skipped, saying why, without root.
#[test]
fn lab_loss_compares_tcp_and_each_quic_congestion_controller() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!("SKIPPED: the network lab needs root");
        return;
    }
    let out = Command::new(BENCH)
        .args(["lab", "loss", "--runs", "1", "--bytes", "200000"])
        .output()
        .expect("meshcast-bench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot run here"),
            "lab loss failed: {err}{text}"
        );
        eprintln!("SKIPPED: {err}");
        return;
    }
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| kernel") || l.starts_with("| quinn"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    for row in &rows {
        for figure in &row[1..] {
            let value: f64 = figure.parse().unwrap_or_else(|_| panic!("{row:?}"));
            assert!(value.is_finite() && value > 0.0, "{row:?}");
        }
    }
    assert_eq!(rows[0][3], "1.00", "{text}");
}
