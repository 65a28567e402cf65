//! Bad peers, a silent publisher, bad origins and unreachable bootstrap peers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use meshcast_node::publisher::{PublishEvent, Publisher};
use meshcast_node::unix_now_us as now_us;
use meshcast_node::{Event, Faults, Source};
use meshcast_proto::PublisherKey;
use meshcast_tests::{
    TestNode, config, eventually, follow, init_logs, local, media_dir, publisher_config,
    serve_files,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_node_is_banned_and_honest_nodes_still_get_the_true_segments() {
    init_logs();
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");
    let publisher_node = TestNode::start(config()).await;
    let key = PublisherKey::from_seed([7; 32]);
    let ingest = Publisher::start(
        publisher_node.node.clone(),
        key,
        publisher_config(format!("{}/live/master.m3u8", origin.url()), "resilience"),
    )
    .await
    .expect("publisher");
    let stream = ingest.stream_id();

    let evil_config = meshcast_node::Config {
        faults: Faults {
            corrupt_bodies: true,
            forge_headers: true,
            ..Faults::default()
        },
        ..config()
    };
    let evil = TestNode::start(evil_config).await;
    follow(&evil, &publisher_node, stream).await;

    let mut honest = Vec::new();
    for _ in 0..4 {
        let node = TestNode::start(config()).await;
        let events = node.node.events();
        node.node
            .dial(evil.addr.clone())
            .await
            .expect("dial the evil node");
        follow(&node, &publisher_node, stream).await;
        honest.push((node, events));
    }
    let ingest = tokio::spawn(ingest.run());
    tokio::time::sleep(Duration::from_secs(6)).await;

    let expected = publisher_node.held(&stream);
    for (node, events) in &mut honest {
        node.assert_gets(&stream, &expected, Duration::from_secs(15))
            .await;
        node.assert_identical_to_origin(&expected);
        let mut banned = false;
        while let Ok(event) = events.try_recv() {
            if let Event::Banned { peer, reason } = event {
                assert!(!reason.is_empty());
                banned |= peer == evil.node.peer_id();
            }
        }
        assert!(
            banned,
            "honest node {} did not ban the evil node",
            node.node.peer_id()
        );
        assert!(
            node.node
                .stats()
                .bans
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    }
    ingest.abort();
}

/// An origin serving the test stream, and a publisher of it (key seed
/// `seed`) that announces segments but serves no bytes.
async fn announcing_only(seed: u8, name: &str) -> (meshcast_origin::Running, TestNode, Publisher) {
    let origin = meshcast_origin::spawn(media_dir(), local())
        .await
        .expect("origin");
    let publisher_node = TestNode::start(meshcast_node::Config {
        announce_only: true,
        ..config()
    })
    .await;
    let ingest = Publisher::start(
        publisher_node.node.clone(),
        PublisherKey::from_seed([seed; 32]),
        publisher_config(format!("{}/live/master.m3u8", origin.url()), name),
    )
    .await
    .expect("publisher");
    (origin, publisher_node, ingest)
}

/// A peer that sends a true header and true hashes but one forged byte in
/// the middle of each body is caught at the group holding that byte, by the
/// first honest node: banned for it, and the segments it stores are the
/// origin's. The publisher serves no bytes, so every body the honest node
/// gets over the mesh comes from the forger (which takes them from the
/// origin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_group_mid_segment_is_caught_at_the_first_honest_hop() {
    init_logs();
    let (_origin, publisher_node, ingest) = announcing_only(9, "forged-group").await;
    let stream = ingest.stream_id();
    // The forger takes each segment from the origin at once; the honest
    // node waits for the mesh (the forger) long before its own fallback.
    let mut forger_config = config();
    forger_config.faults.corrupt_bodies = true;
    forger_config.scheduler.origin_after = Duration::from_millis(300);
    let forger = TestNode::start(forger_config).await;
    follow(&forger, &publisher_node, stream).await;
    let mut honest_config = config();
    honest_config.scheduler.origin_after = Duration::from_secs(6);
    let honest = TestNode::start(honest_config).await;
    let mut events = honest.node.events();
    follow(&honest, &forger, stream).await;
    let ingest = tokio::spawn(ingest.run());

    let reason = eventually(Duration::from_secs(20), || {
        let found = std::iter::from_fn(|| events.try_recv().ok()).find_map(|event| match event {
            Event::Banned { peer, reason } if peer == forger.node.peer_id() => Some(reason),
            _ => None,
        });
        async move { found }
    })
    .await
    .expect("the honest node never banned the forger");
    // "the group at N bytes into the body does not match its hash", N > 0:
    // the groups before it were true and the forged one was caught.
    let offset: u64 = reason
        .split("group at ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a forged group: {reason}"));
    assert!(offset > 0, "caught at the start, not mid-segment: {reason}");
    assert_eq!(offset % meshcast_proto::tree::GROUP_BYTES, 0, "{reason}");

    tokio::time::sleep(Duration::from_secs(4)).await;
    let expected = publisher_node.held(&stream);
    assert!(!expected.is_empty());
    honest
        .assert_gets(&stream, &expected, Duration::from_secs(15))
        .await;
    honest.assert_identical_to_origin(&expected);
    ingest.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_publishers_links_cut_nodes_fetch_from_the_origin_before_the_deadline() {
    init_logs();
    // The publisher announces but serves no bytes: the mesh has no copy to pass on.
    let (_origin, publisher_node, ingest) = announcing_only(8, "resilience").await;
    let stream = ingest.stream_id();
    let origin_after = Duration::from_millis(1500);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut node_config = config();
        node_config.scheduler.origin_after = origin_after;
        let node = TestNode::start(node_config).await;
        let events = node.node.events();
        follow(&node, &publisher_node, stream).await;
        nodes.push((node, events));
    }
    let joined_us = now_us();
    let ingest = tokio::spawn(ingest.run());
    tokio::time::sleep(Duration::from_secs(7)).await;

    let expected = publisher_node.held(&stream);
    let mut from_origin = 0;
    for (node, events) in &mut nodes {
        node.assert_gets(&stream, &expected, Duration::from_secs(10))
            .await;
        node.assert_identical_to_origin(&expected);
        while let Ok(event) = events.try_recv() {
            if let Event::Stored { id, source, at, .. } = event {
                from_origin += usize::from(source == Source::Origin);
                let Some(segment) = node.node.segment(&id) else {
                    continue;
                };
                let published = segment.header.info().published_at_us;
                if published > joined_us {
                    let stored_us = now_us().saturating_sub(at.elapsed().as_micros() as u64);
                    let lag = Duration::from_micros(stored_us.saturating_sub(published));
                    // The fallback delay, plus time for the fetch: well inside one 2 s segment.
                    assert!(
                        lag < origin_after + Duration::from_secs(2),
                        "{id} arrived {lag:?} after publication"
                    );
                }
            }
        }
    }
    assert!(from_origin > 0, "no segment came from the origin");
    ingest.abort();
}

/// A VOD stream whose segments fail in every way an origin can fail.
fn bad_origin_files(hang: SocketAddr) -> HashMap<String, Vec<u8>> {
    let read = |name: &str| std::fs::read(media_dir().join(name)).expect("media file");
    let mut files = HashMap::new();
    for name in ["init_180p.mp4", "180p_00.m4s", "180p_01.m4s", "360p_01.m4s"] {
        files.insert(format!("/{name}"), read(name));
    }
    files.insert(
        "/master.m3u8".into(),
        b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180,CODECS=\"avc1.42c00d,mp4a.40.2\"\n180p.m3u8\n".to_vec(),
    );
    files.insert(
        "/180p.m3u8".into(),
        format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MAP:URI=\"init_180p.mp4\"\n\
             #EXTINF:2.0,\n180p_00.m4s\n\
             #EXTINF:2.0,\nmissing.m4s\n\
             #EXTINF:2.0,\nhttp://{hang}/slow.m4s\n\
             #EXTINF:2.0,\n360p_01.m4s\n\
             #EXTINF:2.0,\n180p_01.m4s\n\
             #EXT-X-ENDLIST\n"
        )
        .into_bytes(),
    );
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_origin_gives_clear_warnings_and_the_publisher_keeps_going() {
    init_logs();
    // A server that accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind(local()).await.expect("bind");
    let hang_addr = hang.local_addr().expect("addr");
    let _hang = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hang.accept().await {
            held.push(socket);
        }
    });
    let (origin, _server) = serve_files(bad_origin_files(hang_addr)).await;
    let node = TestNode::start(config()).await;
    let mut cfg = publisher_config(format!("http://{origin}/master.m3u8"), "resilience");
    cfg.max_segment = 80_000; // 360p_01.m4s is larger
    cfg.fetch.request_timeout = Duration::from_secs(1);
    let ingest = Publisher::start(node.node.clone(), PublisherKey::from_seed([9; 32]), cfg)
        .await
        .expect("publisher starts");
    let mut events = ingest.events();
    let stream = ingest.stream_id();
    let done = tokio::time::timeout(Duration::from_secs(20), ingest.run())
        .await
        .expect("VOD ingest ends");

    let mut warnings = Vec::new();
    let mut injected = Vec::new();
    let mut completed = None;
    while let Ok(event) = events.try_recv() {
        match event {
            PublishEvent::Warning { message } => warnings.push(message),
            PublishEvent::Injected { id, .. } => injected.push(id.sequence),
            PublishEvent::Complete(ingested) => completed = Some(ingested),
        }
    }
    assert_eq!(completed, Some(done), "the end of the ingest is reported");
    assert_eq!((done.segments, done.was_live), (3, false));
    let all = warnings.join("\n");
    assert!(all.contains("404"), "no 404 warning in:\n{all}");
    assert!(
        all.to_lowercase().contains("timed out") || all.to_lowercase().contains("timeout"),
        "no timeout warning in:\n{all}"
    );
    assert!(all.contains("80000"), "no size warning in:\n{all}");
    // The good segments (init 0, media 0 and 4) made it, and the node still answers.
    assert!(
        injected.contains(&0) && injected.contains(&4),
        "injected {injected:?}"
    );
    assert_eq!(node.held(&stream).len(), 3);
    node.node.info().await.expect("node still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_playlist_is_a_clear_error() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("garbage.m3u8"),
        "<html>not a playlist</html>",
    )
    .expect("write");
    let node = TestNode::start(config()).await;
    let cfg = publisher_config(
        dir.path().join("garbage.m3u8").display().to_string(),
        "resilience",
    );
    let err = match Publisher::start(node.node.clone(), PublisherKey::from_seed([1; 32]), cfg).await
    {
        Ok(_) => panic!("garbage accepted as a playlist"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("garbage.m3u8"), "{err}");
    node.node.info().await.expect("node still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_peer_that_does_not_answer_is_a_warning() {
    init_logs();
    let silent = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let mut cfg = config();
    cfg.bootstrap = vec![
        format!("/ip4/127.0.0.1/udp/9/quic-v1/p2p/{silent}")
            .parse()
            .expect("multiaddr"),
    ];
    cfg.redial_interval = Duration::from_secs(2);
    let node = TestNode::start(cfg).await;
    let mut events = node.node.events();
    let warned = eventually(Duration::from_secs(20), || {
        let found = std::iter::from_fn(|| events.try_recv().ok()).find_map(|e| match e {
            Event::Warning { message } if message.contains("bootstrap") => Some(message),
            _ => None,
        });
        async move { found }
    })
    .await;
    assert!(
        warned.is_some(),
        "no warning about the silent bootstrap peer"
    );
    node.node.info().await.expect("node still running");
}
