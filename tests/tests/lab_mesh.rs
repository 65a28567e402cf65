//! The mesh on home lines (`meshcast_lab::thin`), slim: six volunteers of
//! mixed NAT types on 10 Mbit/s uplinks, 20–150 ms apart, carrying a
//! 4 Mbit/s live stream in 2 s segments, two viewers watching through the
//! relay's gateway, and a headless Chromium playing the demo page through
//! it. The stream is the committed test stream padded to 4 Mbit/s, so that
//! the browser plays it. `meshcast-bench lab thin` runs the full size.
//! Skipped, saying why, without root or `ip`/`nft`; the browser is left out,
//! saying why, without Chromium, Node.js or the built page (`cargo xtask
//! test` builds it first).

use std::time::Duration;

use std::path::Path;

use meshcast_lab::browser::Browser;
use meshcast_lab::net::Lab;
use meshcast_lab::thin::{self, Media, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_reaches_every_volunteer_on_thin_distant_lines() {
    if Lab::skip_test() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let browser = Browser::in_workspace(&root);
    let browser = match browser.unavailable() {
        None => Some(browser),
        Some(why) => {
            eprintln!("SKIPPED: the browser viewer: {why}");
            None
        }
    };
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
        media: Media::Playable {
            source: root.join("media/test-stream"),
            rendition: "360p".into(),
        },
        browser,
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
    // The goal, 1.1 copies (the publisher's ingest and a tenth), is the
    // benchmark's: `meshcast-bench lab thin` prints it met or missed. In
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
    assert!(p.announced >= 2 * 6, "{p:?}");
    assert_eq!(p.delivered, p.announced, "a viewer missed segments: {p:?}");
    assert_eq!(p.stalls, 0, "a viewer stalled: {p:?}");
    assert_eq!(p.rejected, 0, "a viewer got bad data: {p:?}");
    if let Some(b) = report.browser {
        assert_eq!(b.error, None, "{b:?}");
        assert!(
            b.played >= 20.0,
            "the browser played {:.1} s: {b:?}",
            b.played
        );
        assert_eq!(b.stalls, 0, "the browser stalled: {b:?}");
        assert_eq!(b.verify_failed, 0, "{b:?}");
        // Its first fragments come over HTTP by design (time to first frame).
        assert!(
            b.mesh_share() >= 0.8,
            "only {:.0}% of the browser's bytes over the mesh: {b:?}",
            b.mesh_share() * 100.0
        );
    }
}
