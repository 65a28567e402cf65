//! A playlist's timeline (`EXT-X-DISCONTINUITY`, `EXT-X-PROGRAM-DATE-TIME`)
//! is kept in the signed headers: a viewer that rebuilds a timeline from
//! headers alone needs it, and no peer can alter it.

use meshcast_proto::SegmentId;
use meshcast_tests::{TestNode, config, init_logs, publish_whole};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discontinuities_and_program_date_times_are_signed_into_headers() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
        #EXT-X-PLAYLIST-TYPE:VOD\n\
        #EXT-X-PROGRAM-DATE-TIME:2026-12-05T00:00:00.000Z\n#EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n\
        #EXT-X-DISCONTINUITY\n#EXTINF:2,\nc.ts\n#EXT-X-ENDLIST\n";
    std::fs::write(dir.path().join("index.m3u8"), playlist).expect("write");
    for name in ["a.ts", "b.ts", "c.ts"] {
        std::fs::write(dir.path().join(name), name.repeat(300)).expect("write");
    }
    let publisher = TestNode::start(config()).await;
    let (stream, _, _) = publish_whole(
        &publisher,
        dir.path().join("index.m3u8").to_string_lossy().into_owned(),
        "timeline",
        39,
    )
    .await;
    let start = 1_796_428_800_000u64; // 2026-12-05T00:00:00Z
    let timeline: Vec<(bool, Option<u64>)> = (0..3)
        .map(|n| {
            let segment = publisher
                .node
                .segment(&SegmentId::media(stream, 0, n))
                .expect("published");
            let info = segment.header.info();
            (info.discontinuity, info.program_date_time_ms)
        })
        .collect();
    assert_eq!(
        timeline,
        [
            (false, Some(start)),
            (false, Some(start + 2_000)),
            (true, None)
        ]
    );
}
