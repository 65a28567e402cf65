//! The mesh on home lines (`meshcast_lab::thin`), slim: six volunteers of
//! mixed NAT types on 10 Mbit/s uplinks, 20–150 ms apart, carrying a
//! 4 Mbit/s live stream in 2 s segments, two viewers watching through the
//! relay's gateway. `meshcast-bench lab thin` runs the
//! full size. Skipped, saying why, without root or `ip`/`nft`.

use std::time::Duration;

use meshcast_lab::net::Lab;
use meshcast_lab::thin::{self, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_reaches_every_volunteer_on_thin_distant_lines() {
    if Lab::skip_test() {
        return;
    }
    let plan = Plan {
        nodes: 6,
        uplink: 10_000_000,
        downlink: 50_000_000,
        rtt_min: Duration::from_millis(20),
        rtt_max: Duration::from_millis(150),
        loss: 0.0,
        bitrate: 4_000_000,
        segment: Duration::from_secs(2),
        warmup: Duration::from_secs(8),
        measure: Duration::from_secs(16),
        viewers: 2,
        viewer_buffer: Duration::from_secs(4),
        seed: 14,
    };
    let media = tempfile::tempdir().expect("a scratch directory");
    let report = thin::run(&plan, media.path(), |phase| eprintln!("lab: {phase}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report:#?}");
    assert!(report.segments >= 6, "{report:#?}");
    assert_eq!(report.bans, 0, "an honest node banned another");
    assert_eq!(
        report.delivered, report.expected,
        "not every segment reached every volunteer"
    );
    assert!(
        report.origin_copies() <= 1.1,
        "the origin served {:.2} copies of the stream",
        report.origin_copies()
    );
    let p = report.playback;
    assert!(p.announced >= 2 * 6, "{p:?}");
    assert_eq!(p.delivered, p.announced, "a viewer missed segments: {p:?}");
    assert_eq!(p.stalls, 0, "a viewer stalled: {p:?}");
    assert_eq!(p.rejected, 0, "a viewer got bad data: {p:?}");
}
