//! Separate `meshcast` processes wired together over QUIC on 127.0.0.1.

use std::path::Path;
use std::time::{Duration, Instant};

use meshcast_proto::{SignedHeader, pb};
use prost::Message as _;

use crate::proc::{Proc, media_dir, start_publisher};

/// Media segments in a node's cache whose bytes equal the origin's file.
fn verified_cached(cache: &Path, media: &Path) -> usize {
    let mut count = 0;
    let Ok(streams) = std::fs::read_dir(cache) else {
        return 0;
    };
    for stream in streams.flatten() {
        let Ok(renditions) = std::fs::read_dir(stream.path()) else {
            continue;
        };
        for rendition in renditions.flatten() {
            let Ok(files) = std::fs::read_dir(rendition.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "header") {
                    let Ok(bytes) = std::fs::read(&path) else {
                        continue;
                    };
                    let header = SignedHeader::from_pb(
                        &pb::SegmentHeader::decode(bytes.as_slice()).expect("header"),
                    )
                    .expect("valid header");
                    let body = std::fs::read(path.with_extension("")).expect("body next to header");
                    let origin = std::fs::read(media.join(&header.info.uri)).expect("origin file");
                    assert_eq!(
                        body, origin,
                        "cached {} differs from the origin",
                        header.info.uri
                    );
                    count += 1;
                }
            }
        }
    }
    count
}

const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

/// A `meshcast node` process that joins through `bootstrap`, follows
/// `stream` and writes what it gets to `cache`.
fn start_caching_node(data: &str, bootstrap: &str, stream: &str, cache: &str) -> Proc {
    Proc::start(
        "node",
        &[
            "node",
            "--data-dir",
            data,
            "--listen",
            QUIC,
            "--bootstrap",
            bootstrap,
            "--follow",
            stream,
            "--cache-dir",
            cache,
        ],
        "warn",
    )
}

#[test]
fn a_publisher_and_two_node_processes_share_the_live_stream() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (origin, mut publisher) =
        start_publisher(&runtime, dir.path(), "live/master.m3u8", "processes");
    let _peer = publisher.line("peer");
    let address = publisher.line("listening");
    let stream = publisher.line("stream");
    assert_eq!(stream.len(), 64, "stream id {stream}");

    let mut nodes: Vec<(Proc, String)> = (0..2)
        .map(|i| {
            let cache = d(&format!("cache{i}"));
            let node = start_caching_node(&d(&format!("node{i}")), &address, &stream, &cache);
            (node, cache)
        })
        .collect();
    for (node, _) in &mut nodes {
        assert_eq!(node.line("following"), stream);
    }
    // Both renditions' first window (6 segments each) plus what the live edge adds.
    let deadline = Instant::now() + Duration::from_secs(40);
    for (_, cache) in &nodes {
        loop {
            let count = verified_cached(Path::new(cache), &media_dir());
            if count >= 14 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node cache {cache} holds only {count} segments"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(nodes);
    drop(publisher);
    runtime.block_on(origin.shutdown()).unwrap();
}

#[test]
fn a_vod_publisher_serves_after_its_ingest_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (origin, mut publisher) = start_publisher(&runtime, dir.path(), "vod/master.m3u8", "vod");
    let address = publisher.line("listening");
    let stream = publisher.line("stream");
    // Two renditions of an init segment and ten media segments.
    let ingested = publisher.line("ingested");
    let segments: u64 = ingested
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ingested line {ingested:?}"));
    assert_eq!(segments, 22, "{ingested}");
    // The origin goes: everything from now on comes from the publisher.
    runtime.block_on(origin.shutdown()).unwrap();

    let cache = d("cache");
    let mut node = start_caching_node(&d("node"), &address, &stream, &cache);
    assert_eq!(node.line("following"), stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count = verified_cached(Path::new(&cache), &media_dir());
        if count == 22 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node's cache holds only {count} of the VOD's 22 segments"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = publisher.terminate();
    let stderr = publisher.stderr().join("\n");
    assert!(status.success(), "publisher exited with {status}: {stderr}");
    assert!(stderr.contains("VOD ingest complete"), "{stderr}");
    assert!(stderr.contains("stopping (SIGTERM)"), "{stderr}");
    assert!(node.terminate().success());
}

#[test]
fn a_restarted_node_process_keeps_its_peer_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node").to_str().unwrap().to_string();
    let mut first = Proc::start(
        "node",
        &["node", "--data-dir", &data, "--listen", QUIC],
        "warn",
    );
    let id = first.line("peer");
    drop(first);
    let mut second = Proc::start(
        "node",
        &["node", "--data-dir", &data, "--listen", QUIC],
        "warn",
    );
    assert_eq!(second.line("peer"), id);
    assert!(!id.is_empty());
}
