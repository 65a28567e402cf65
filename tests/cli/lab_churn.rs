//! Churn in the network lab (`meshcast_lab::churn`), slim: five volunteers
//! as `meshcast node` processes on home lines, two of them killed with
//! SIGKILL (the relay's upstream first) and one joining during 20 s, while
//! two viewers watch through the relay's gateway. `meshcast-bench lab
//! churn` runs the full size. Skipped, saying why, without root or
//! `ip`/`nft`.

use std::time::Duration;

use meshcast_lab::churn::{self, Plan};
use meshcast_lab::net::Lab;

/// Processes whose command line names `dir`.
fn processes_under(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volunteers_killed_and_joining_cost_no_segment_and_no_viewer_stall() {
    if Lab::skip_test() {
        return;
    }
    let plan = Plan {
        bin: env!("CARGO_BIN_EXE_meshcast").into(),
        nodes: 5,
        kills: 2,
        joins: 1,
        viewers: 2,
        uplink: 10_000_000,
        downlink: 50_000_000,
        rtt_min: Duration::from_millis(20),
        rtt_max: Duration::from_millis(150),
        bitrate: 2_000_000,
        segment: Duration::from_secs(2),
        warmup: Duration::from_secs(8),
        window: Duration::from_secs(20),
        viewer_buffer: Duration::from_secs(4),
        seed: 15,
    };
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let report = churn::run(&plan, scratch.path(), |phase| eprintln!("lab: {phase}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report:#?}");
    assert_eq!((report.killed, report.joined), (2, 1), "{report:#?}");
    // The relay's upstream is killed first, when it has one among the
    // volunteers (it may take everything from the publisher).
    assert_eq!(
        report.killed_upstream,
        report.killed.min(report.relay_upstream),
        "the relay's upstream volunteers were not the first victims: {report:#?}"
    );
    assert!(report.segments >= 8, "{report:#?}");
    assert_eq!(report.bans, 0, "an honest node banned another");
    assert_eq!(
        report.delivered, report.expected,
        "a live volunteer is missing segments"
    );
    // The goal, 1.1 copies (the publisher's ingest and a tenth), is the
    // benchmark's: `meshcast-bench lab churn` prints it met or missed. In
    // this slim run one segment is over a tenth of the stream, and a segment
    // late on a starved 2-core host (every process, the userspace link stage
    // and the test share it) comes from the origin by design. Here: at most
    // half a copy more; a mesh that does not carry the stream costs a copy
    // per volunteer.
    assert!(
        report.origin_copies() <= 1.5,
        "the origin served {:.2} copies of the stream: {report:#?}",
        report.origin_copies()
    );
    let p = report.playback;
    assert!(p.announced >= 2 * 8, "{p:?}");
    assert_eq!(p.delivered, p.announced, "a viewer missed segments: {p:?}");
    assert_eq!(p.stalls, 0, "a viewer stalled: {p:?}");
    assert_eq!(p.rejected, 0, "a viewer got bad data: {p:?}");
    let left = processes_under(scratch.path());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
