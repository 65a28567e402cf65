//! On-demand video: publish a VOD, seed it, fetch it on demand, over QUIC on
//! 127.0.0.1. The origin goes away once the publisher has read it, so every
//! byte a node or viewer gets afterwards comes from the mesh.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshcast_node::publisher::{Ingested, Publisher};
use meshcast_node::{Event, Seed, Source};
use meshcast_proto::{PublisherKey, SegmentId, StreamId, VerifiedDescriptor};
use meshcast_relay::{Client, Gateway};
use meshcast_tests::{TestNode, config, eventually, init_logs, local, publisher_config};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const RENDITIONS: usize = 3;
const SEGMENTS: usize = 6;

/// Writes a VOD of three renditions (an init segment and six media segments
/// each, of seeded random bytes: the mesh never parses media) as an HLS
/// folder, and returns the bytes of each file by name.
fn write_vod(dir: &Path, seed: u64) -> HashMap<String, Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut files = HashMap::new();
    let mut master = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
    for r in 0..RENDITIONS {
        master.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},RESOLUTION=640x360,CODECS=\"avc1.4d401e\"\nr{r}.m3u8\n",
            (r + 1) * 100_000
        ));
        let mut playlist = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init_r{r}.mp4\"\n"
        );
        files.insert(format!("init_r{r}.mp4"), random_bytes(&mut rng, 600));
        for s in 0..SEGMENTS {
            let name = format!("r{r}_{s:02}.m4s");
            playlist.push_str(&format!("#EXTINF:2.000000,\n{name}\n"));
            let size = rng.gen_range(10_000..30_000);
            files.insert(name, random_bytes(&mut rng, size));
        }
        playlist.push_str("#EXT-X-ENDLIST\n");
        files.insert(format!("r{r}.m3u8"), playlist.into_bytes());
    }
    files.insert("master.m3u8".into(), master.into_bytes());
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).expect("write VOD file");
    }
    files
}

fn random_bytes(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.r#gen()).collect()
}

/// A published VOD whose origin is gone.
struct Vod {
    stream: StreamId,
    descriptor: VerifiedDescriptor,
    files: HashMap<String, Vec<u8>>,
    ingested: Ingested,
    _dir: tempfile::TempDir,
}

/// Serves a fresh VOD folder over HTTP, publishes it from `publisher` until
/// the ingest completes, then stops the origin.
async fn publish_vod(publisher: &TestNode, name: &str, seed: u64) -> Vod {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = write_vod(dir.path(), seed);
    let origin = meshcast_origin::spawn(dir.path(), local())
        .await
        .expect("origin");
    let key = PublisherKey::from_seed([7; 32]);
    let ingest = Publisher::start(
        publisher.node.clone(),
        key,
        publisher_config(format!("{}/vod/master.m3u8", origin.url()), name),
    )
    .await
    .expect("publisher starts");
    let (stream, descriptor) = (ingest.stream_id(), ingest.descriptor().clone());
    assert!(!descriptor.descriptor().live, "a VOD playlist makes a VOD");
    let ingested = tokio::time::timeout(Duration::from_secs(30), ingest.run())
        .await
        .expect("the VOD ingest completes");
    origin.shutdown().await.expect("origin stops");
    Vod {
        stream,
        descriptor,
        files,
        ingested,
        _dir: dir,
    }
}

/// Every segment id of the VOD: init and media of each rendition.
fn all_segments(vod: &Vod) -> BTreeSet<SegmentId> {
    let mut ids = BTreeSet::new();
    for r in 0..RENDITIONS as u32 {
        ids.insert(SegmentId {
            kind: meshcast_proto::SegmentKind::Init,
            ..SegmentId::media(vod.stream, r, 0)
        });
        for s in 0..SEGMENTS as u64 {
            ids.insert(SegmentId::media(vod.stream, r, s));
        }
    }
    ids
}

/// Checks that `node` holds `ids` in memory, each byte-identical to the
/// origin's file its signed header names.
fn assert_identical(node: &TestNode, vod: &Vod, ids: &BTreeSet<SegmentId>) {
    for id in ids {
        let segment = node
            .node
            .segment(id)
            .unwrap_or_else(|| panic!("{id} missing"));
        let file = &vod.files[&segment.header.info().uri];
        assert_eq!(segment.body.as_ref(), file.as_slice(), "{id} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_after_the_ingest_gets_the_whole_vod_from_the_mesh() {
    init_logs();
    let publisher = TestNode::start(config()).await;
    let vod = publish_vod(&publisher, "vod-three-renditions", 1).await;
    let expected = all_segments(&vod);
    assert_eq!(vod.ingested.segments, expected.len() as u64);
    assert!(!vod.ingested.was_live);
    // The publisher serves on after its ingest.
    assert_eq!(publisher.node.holdings(&vod.stream), expected);

    let node = TestNode::start(config()).await;
    let mut events = node.node.events();
    node.node.dial(publisher.addr.clone()).await.expect("dial");
    let found = node
        .node
        .find_stream(vod.stream, Duration::from_secs(10))
        .await
        .expect("the VOD's descriptor is in the DHT");
    node.node.follow(found).await.expect("follow");
    node.assert_gets(&vod.stream, &expected, Duration::from_secs(30))
        .await;
    assert_identical(&node, &vod, &expected);
    // Every segment came from the mesh: the origin is gone.
    let mut sources = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Stored { id, source, .. } = event
            && id.stream == vod.stream
        {
            sources.push(source);
        }
    }
    assert_eq!(sources.len(), expected.len(), "{sources:?}");
    assert!(
        sources
            .iter()
            .all(|s| matches!(s, Source::Pull(_) | Source::Push(_))),
        "{sources:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_fetches_vod_segments_on_demand_and_keeps_them() {
    init_logs();
    let publisher = TestNode::start(config()).await;
    let vod = publish_vod(&publisher, "vod-on-demand", 2).await;
    let seeder = TestNode::start(config()).await;
    seeder
        .node
        .dial(publisher.addr.clone())
        .await
        .expect("dial");
    seeder
        .node
        .follow(vod.descriptor.clone())
        .await
        .expect("follow");
    let expected = all_segments(&vod);
    seeder
        .assert_gets(&vod.stream, &expected, Duration::from_secs(30))
        .await;
    // From now on only the seeder holds the VOD.
    publisher.stop().await;

    let relay = TestNode::start(config()).await;
    relay.node.dial(seeder.addr.clone()).await.expect("dial");
    let gateway_config = meshcast_relay::Config {
        listen: local(),
        web_listen: local(),
        serve: meshcast_relay::Serve {
            streams: vec![vod.stream],
            ..Default::default()
        },
        ..Default::default()
    };
    let (gateway, driver) = Gateway::bind(relay.node.clone(), gateway_config)
        .await
        .expect("gateway");
    let _driver = tokio::spawn(driver.run());
    let mut client = Client::connect(
        gateway.url(),
        &gateway.cert_hashes(),
        vod.stream,
        "",
        Duration::from_secs(15),
    )
    .await
    .expect("session");
    assert!(!client.descriptor().descriptor().live);
    // A viewer seeking around: segments in random order, each fetched by the
    // gateway from the seeder when asked for.
    let mut order: Vec<SegmentId> = expected.iter().copied().collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(3));
    let wanted: Vec<SegmentId> = order.into_iter().take(8).collect();
    for id in &wanted {
        let (header, body) = client
            .fetch(*id, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(header.id(), *id);
        assert_eq!(body.as_ref(), vod.files[&header.info().uri].as_slice());
    }
    // The gateway fetched only what was asked for, and kept it for the next viewer.
    let kept = relay.node.holdings(&vod.stream);
    assert_eq!(kept, wanted.iter().copied().collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_that_ends_is_served_on_as_a_vod() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let playlist = dir.path().join("live.m3u8");
    let head = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n";
    let write = |count: usize, ended: bool| {
        let mut text = head.to_string();
        for s in 0..count {
            std::fs::write(dir.path().join(format!("s{s}.ts")), vec![s as u8; 5000 + s])
                .expect("segment");
            text.push_str(&format!("#EXTINF:1.0,\ns{s}.ts\n"));
        }
        if ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        std::fs::write(&playlist, text).expect("playlist");
    };
    write(3, false);
    let publisher = TestNode::start(config()).await;
    let mut cfg = publisher_config(path_arg(&playlist), "live-then-vod");
    cfg.concurrency = 2;
    let ingest = Publisher::start(
        publisher.node.clone(),
        PublisherKey::from_seed([8; 32]),
        cfg,
    )
    .await
    .expect("publisher starts");
    assert!(ingest.descriptor().descriptor().live);
    let stream = ingest.stream_id();
    let run = tokio::spawn(ingest.run());
    eventually(Duration::from_secs(10), || async {
        (publisher.node.holdings(&stream).len() == 3).then_some(())
    })
    .await
    .expect("the first three segments are published");
    write(5, true);
    let done = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the ingest ends with the playlist")
        .expect("ingest task");
    assert_eq!((done.segments, done.was_live), (5, true));

    // A node that comes later finds a VOD, and gets all of it from the
    // publisher: a folder origin has no HTTP fallback.
    let node = TestNode::start(config()).await;
    node.node.dial(publisher.addr.clone()).await.expect("dial");
    let found = node
        .node
        .find_stream(stream, Duration::from_secs(10))
        .await
        .expect("descriptor");
    assert!(
        !found.descriptor().live,
        "the ended stream is published as a VOD"
    );
    node.node.follow(found).await.expect("follow");
    let expected: BTreeSet<SegmentId> = (0..5).map(|s| SegmentId::media(stream, 0, s)).collect();
    node.assert_gets(&stream, &expected, Duration::from_secs(20))
        .await;
    for s in 0..5u64 {
        let segment = node
            .node
            .segment(&SegmentId::media(stream, 0, s))
            .expect("held");
        assert_eq!(
            segment.body.as_ref(),
            vec![s as u8; 5000 + s as usize].as_slice()
        );
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_disk_cache_stays_within_its_bound_and_serves_what_it_holds() {
    init_logs();
    let publisher = TestNode::start(config()).await;
    let first = publish_vod(&publisher, "vod-a", 4).await;
    let second = publish_vod(&publisher, "vod-b", 5).await;
    let vod_bytes: u64 = first.ingested.bytes + second.ingested.bytes;

    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache_max = vod_bytes / 3;
    let mut seeder_config = config();
    seeder_config.cache_dir = Some(PathBuf::from(cache_dir.path()));
    seeder_config.cache_max_bytes = cache_max;
    // Memory for two segments: the rest is served from disk.
    seeder_config.store_max_bytes = 64 << 10;
    let seeder = TestNode::start(seeder_config).await;
    let mut stored = seeder.node.events();
    seeder
        .node
        .dial(publisher.addr.clone())
        .await
        .expect("dial");
    for vod in [&first, &second] {
        seeder
            .node
            .follow_with(vod.descriptor.clone(), Seed::All)
            .await
            .expect("follow");
    }
    // Seeding settles: nothing new for two seconds.
    let mut received = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stored.recv()).await {
            Ok(Ok(Event::Stored { .. })) => received += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let disk = meshcast_node::cache::disk_usage(cache_dir.path());
    assert!(received > 0);
    assert!(disk <= cache_max, "{disk} bytes on disk, bound {cache_max}");
    assert_eq!(seeder.node.cache_bytes(), disk);
    let held: Vec<BTreeSet<SegmentId>> = [&first, &second]
        .iter()
        .map(|vod| seeder.node.holdings(&vod.stream))
        .collect();
    let held_count: usize = held.iter().map(BTreeSet::len).sum();
    assert!(
        (6..2 * RENDITIONS * (SEGMENTS + 1)).contains(&held_count),
        "the seeder holds {held_count} segments"
    );
    assert!(
        held.iter().all(|h| !h.is_empty()),
        "both VODs seeded: {held:?}"
    );
    publisher.stop().await;

    // Another node reaches only the seeder, and gets exactly what it holds.
    let node = TestNode::start(config()).await;
    node.node.dial(seeder.addr.clone()).await.expect("dial");
    for (vod, held) in [&first, &second].into_iter().zip(&held) {
        node.node
            .follow(vod.descriptor.clone())
            .await
            .expect("follow");
        node.assert_gets(&vod.stream, held, Duration::from_secs(20))
            .await;
        assert_identical(&node, vod, held);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeders_with_a_budget_keep_within_it_and_spread_over_the_vod() {
    init_logs();
    let publisher = TestNode::start(config()).await;
    let vod = publish_vod(&publisher, "vod-budget", 6).await;
    let budget = vod.ingested.bytes / 3;
    let size_of = |id: &SegmentId| {
        publisher
            .node
            .segment(id)
            .map_or(0, |s| s.body.len() as u64)
    };
    let largest = all_segments(&vod).iter().map(size_of).max().unwrap_or(0);
    let mut shares = Vec::new();
    for _ in 0..2 {
        let seeder = TestNode::start(config()).await;
        seeder
            .node
            .dial(publisher.addr.clone())
            .await
            .expect("dial");
        seeder
            .node
            .follow_with(vod.descriptor.clone(), Seed::Budget(budget))
            .await
            .expect("follow");
        // It reads the index, then pulls its share: within one segment of the budget.
        let filled = eventually(Duration::from_secs(20), || async {
            let bytes: u64 = seeder.node.holdings(&vod.stream).iter().map(size_of).sum();
            (bytes + largest > budget).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = seeder.node.holdings(&vod.stream);
        let bytes: u64 = held.iter().map(size_of).sum();
        assert!(
            filled.is_some() && bytes <= budget,
            "{bytes} bytes held, budget {budget}"
        );
        assert!(
            (0..RENDITIONS as u32).all(|r| held
                .iter()
                .any(|id| id.rendition == r && id.kind == meshcast_proto::SegmentKind::Init)),
            "init segments come first: {held:?}"
        );
        assert_identical(&seeder, &vod, &held);
        shares.push((seeder, held));
    }
    // Two seeders pick different shares (rendezvous hashing), not both the
    // beginning of the VOD.
    assert_ne!(shares[0].1, shares[1].1, "both seed the same segments");
}
