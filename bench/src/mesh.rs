//! `meshcast-bench mesh`: propagation through a mesh of real swarms.
//!
//! Starts a publisher and `nodes` nodes in this process, all on QUIC over
//! 127.0.0.1. Every node dials the publisher and up to four earlier nodes
//! (seeded, so runs are comparable). The publisher signs `segments` synthetic
//! segments of `segment_bytes` each, one every `interval`, and injects them.
//! Reported: the time from injection to "held by node" over every
//! (node, segment) pair, the duplicate ratio (bytes received by all nodes ÷
//! the bytes they needed), and the origin bytes (the publisher's ingest: the
//! synthetic stream has no HTTP origin, so nodes cannot fall back to one).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::identity::Keypair;
use meshcast_proto::{Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use meshcast_node::unix_now_us as now_us;
use meshcast_node::{Config, Event, Node, NodeError};

#[derive(Debug, Clone)]
pub struct MeshBench {
    pub nodes: usize,
    pub segment_bytes: usize,
    pub segments: usize,
    pub interval: Duration,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MeshReport {
    pub nodes: usize,
    pub segment_bytes: usize,
    pub segments: usize,
    /// (node, segment) pairs delivered, of `nodes × segments`.
    pub delivered: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub duplicate_ratio: f64,
    pub origin_bytes: u64,
    pub stream_bytes: u64,
}

struct Running {
    node: Node,
    driver: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn bench_config() -> Config {
    Config {
        listen: vec![
            "/ip4/127.0.0.1/udp/0/quic-v1"
                .parse()
                .expect("valid multiaddr"),
        ],
        live_window: Duration::from_secs(120),
        store_max_bytes: 1 << 30,
        ..Config::default()
    }
}

async fn start() -> Result<(Running, libp2p::Multiaddr), NodeError> {
    let (node, driver) = Node::new(bench_config(), Keypair::generate_ed25519())?;
    let driver = tokio::spawn(driver.run());
    let running = Running { node, driver };
    for _ in 0..100 {
        let info = running.node.info().await?;
        if let Some(addr) = info.listen_addrs.into_iter().next() {
            let addr = addr.with_p2p(info.peer_id).unwrap_or_else(|a| a);
            return Ok((running, addr));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(NodeError::Setup("node did not start listening".into()))
}

/// Runs the benchmark; `progress` hears about each phase.
pub async fn run(bench: &MeshBench, progress: impl Fn(&str)) -> Result<MeshReport, NodeError> {
    let mut rng = StdRng::seed_from_u64(2026);
    let key = PublisherKey::from_seed([3; 32]);
    let descriptor = Descriptor {
        publisher: key.public(),
        name: "bench".into(),
        renditions: vec![Rendition {
            id: 0,
            name: "bench".into(),
            bandwidth: (bench.segment_bytes as u64 * 8).saturating_mul(1000)
                / bench.interval.as_millis().max(1) as u64,
            codecs: String::new(),
            width: 0,
            height: 0,
            uri: String::new(),
        }],
        origin_url: String::new(),
        segment_duration_ms: u32::try_from(bench.interval.as_millis())
            .unwrap_or(u32::MAX)
            .max(1),
        live: true,
        issued_at_us: now_us(),
        private: false,
    }
    .sign(&key)
    .map_err(|e| NodeError::Setup(e.to_string()))?;
    let stream = descriptor.stream_key();

    progress(&format!("starting a publisher and {} nodes", bench.nodes));
    let (publisher, publisher_addr) = start().await?;
    publisher.node.follow(descriptor.clone()).await?;
    let mut nodes: Vec<(Running, libp2p::Multiaddr)> = Vec::with_capacity(bench.nodes);
    let mut events = Vec::with_capacity(bench.nodes);
    for i in 0..bench.nodes {
        let (running, addr) = start().await?;
        events.push(running.node.events());
        running.node.dial(publisher_addr.clone()).await?;
        for _ in 0..4.min(i) {
            let neighbour = &nodes[rng.gen_range(0..i)].1;
            let _ = running.node.dial(neighbour.clone()).await;
        }
        running.node.follow(descriptor.clone()).await?;
        nodes.push((running, addr));
    }
    // Gossipsub builds its mesh on heartbeats (500 ms): give it a few.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every node's events are drained by its own task from now on: read one
    // after another, the later ones would overflow (the channel is bounded).
    let collect_until = tokio::time::Instant::now()
        + bench.interval * u32::try_from(bench.segments).unwrap_or(u32::MAX)
        + Duration::from_secs(30);
    let segments = bench.segments;
    let collectors: Vec<_> = events
        .into_iter()
        .map(|mut receiver| {
            tokio::spawn(async move {
                let mut stored: HashMap<u64, Instant> = HashMap::new();
                while stored.len() < segments {
                    match tokio::time::timeout_at(collect_until, receiver.recv()).await {
                        Ok(Ok(Event::Stored { id, at, .. })) => {
                            stored.entry(id.sequence).or_insert(at);
                        }
                        Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                        Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
                    }
                }
                stored
            })
        })
        .collect();

    progress(&format!(
        "publishing {} segments of {} bytes",
        bench.segments, bench.segment_bytes
    ));
    let mut injected: HashMap<u64, Instant> = HashMap::new();
    for sequence in 0..bench.segments as u64 {
        let mut body = vec![0u8; bench.segment_bytes];
        rng.fill_bytes(&mut body);
        let id = SegmentId::media(stream.id, 0, sequence);
        let header = SegmentInfo::for_body(id, &body, bench.interval.as_micros() as u64, now_us())
            .sign(&key)
            .verify(&stream)
            .map_err(|e| NodeError::Setup(e.to_string()))?;
        injected.insert(sequence, Instant::now());
        publisher.node.inject(header, Bytes::from(body)).await?;
        tokio::time::sleep(bench.interval).await;
    }

    progress("waiting for every node to hold every segment");
    let expected = bench.nodes * bench.segments;
    let mut latencies = Vec::with_capacity(expected);
    for collector in collectors {
        let stored = collector
            .await
            .map_err(|e| NodeError::Setup(format!("an event collector failed: {e}")))?;
        for (sequence, at) in stored {
            if let Some(start) = injected.get(&sequence) {
                latencies.push(at.saturating_duration_since(*start));
            }
        }
    }
    latencies.sort();
    let pick = |p: f64| -> f64 {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let stream_bytes = (bench.segment_bytes * bench.segments) as u64;
    let received: u64 = nodes
        .iter()
        .map(|(n, _)| {
            n.node.stats().mesh_bytes_in.load(Relaxed)
                + n.node.stats().origin_bytes_in.load(Relaxed)
        })
        .sum();
    let node_origin: u64 = nodes
        .iter()
        .map(|(n, _)| n.node.stats().origin_bytes_in.load(Relaxed))
        .sum();
    Ok(MeshReport {
        nodes: bench.nodes,
        segment_bytes: bench.segment_bytes,
        segments: bench.segments,
        delivered: latencies.len(),
        p50_ms: pick(0.50),
        p95_ms: pick(0.95),
        p99_ms: pick(0.99),
        max_ms: latencies.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        duplicate_ratio: received as f64 / (stream_bytes * bench.nodes as u64).max(1) as f64,
        origin_bytes: stream_bytes + node_origin,
        stream_bytes,
    })
}
