//! Peak memory of a node: a `meshcast node` child process following a
//! 5 Mbit/s live stream with a 30 s live window, with many peer swarms
//! connected to it. The peers (real nodes, in this process) dial the node and
//! two other peers each; an in-process publisher, the node's bootstrap peer,
//! injects the stream. RSS from `/proc/<pid>/status`: after the node follows
//! the stream alone, after the peers connected, at the end, and VmHWM.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use libp2p::Multiaddr;
use meshcast_node::{Config, Event};
use meshcast_proto::{Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::mesh::{Running, any_loopback, start_with};
use super::proc::{Spawned, cpu_seconds, gauge, mb, memory, meshcast_node, scrape};
use super::progress::Progress;
use super::report::{RssSection, fig, seconds};

#[derive(Debug, Clone)]
pub struct Plan {
    pub peers: usize,
    pub bitrate: u64,
    pub segment_duration: Duration,
    pub live_window: Duration,
    /// How long the stream is published.
    pub duration: Duration,
}

const START_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(plan: &Plan, progress: &Progress) -> anyhow::Result<RssSection> {
    let tmp = tempfile::Builder::new()
        .prefix("meshcast-bench-rss-")
        .tempdir()
        .context("creating a temporary folder")?;
    progress.phase("node RSS: starting the publisher");
    let (publisher, publisher_addr) = start_with(Config {
        listen: any_loopback(),
        live_window: plan.live_window,
        ..Config::default()
    })
    .await?;
    let key = PublisherKey::from_seed([13; 32]);
    let descriptor = Descriptor {
        publisher: key.public(),
        name: "bench-rss".into(),
        renditions: vec![Rendition {
            id: 0,
            name: "bench".into(),
            bandwidth: plan.bitrate,
            codecs: String::new(),
            width: 0,
            height: 0,
            uri: String::new(),
            ..Default::default()
        }],
        origin_url: String::new(),
        segment_duration_ms: u32::try_from(plan.segment_duration.as_millis()).unwrap_or(u32::MAX),
        live: true,
        issued_at_us: meshcast_node::unix_now_us(),
        private: false,
    }
    .sign(&key)?;
    let stream = descriptor.stream_key();
    publisher.node.publish(descriptor.clone()).await?;

    progress.phase("node RSS: starting `meshcast node`");
    let window = format!("{}s", plan.live_window.as_secs());
    let mut command = meshcast_node(&tmp.path().join("node"))?;
    command.args([
        "--bootstrap",
        &publisher_addr.to_string(),
        "--follow",
        &stream.id.to_string(),
        "--live-window",
        &window,
    ]);
    let mut child = Spawned::spawn("node", command)?;
    let metrics = child.line("metrics", START_TIMEOUT).await?;
    let node_addr: Multiaddr = child
        .line("listening", START_TIMEOUT)
        .await?
        .parse()
        .context("the node printed a bad address")?;
    child.line("following", START_TIMEOUT).await?;
    let pid = child.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = memory(pid)?;

    progress.phase(&format!("node RSS: connecting {} peers", plan.peers));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut rng = StdRng::seed_from_u64(2026);
    let mut peers: Vec<(Running, Multiaddr)> = Vec::with_capacity(plan.peers);
    let mut counters = Vec::with_capacity(plan.peers);
    for i in 0..plan.peers {
        let (peer, addr) = start_with(Config {
            listen: any_loopback(),
            // Peers keep little: their memory is not what is measured.
            live_window: Duration::from_secs(10),
            store_max_bytes: 16 << 20,
            ..Config::default()
        })
        .await?;
        let mut events = peer.node.events();
        let count = Arc::clone(&delivered);
        counters.push(tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::Stored { .. }) => {
                        count.fetch_add(1, Relaxed);
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        }));
        peer.node.dial(node_addr.clone()).await?;
        for _ in 0..2.min(i) {
            let other = &peers[rng.gen_range(0..i)].1;
            let _ = peer.node.dial(other.clone()).await;
        }
        peer.node.follow(descriptor.clone()).await?;
        peers.push((peer, addr));
    }
    // Gossipsub builds its mesh on heartbeats (1 s): give it a few.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let node_peer = child_peer(&node_addr)?;
    let mut connected = 0;
    for (peer, _) in &peers {
        if peer.node.info().await?.connected.contains(&node_peer) {
            connected += 1;
        }
    }
    let with_peers = memory(pid)?;
    progress.note(&format!(
        "node RSS: {:.1} MB following alone, {:.1} MB with {connected} peers",
        mb(idle.now),
        mb(with_peers.now)
    ));

    progress.phase(&format!(
        "node RSS: publishing {:.0} Mbit/s for {:?}",
        plan.bitrate as f64 / 1e6,
        plan.duration
    ));
    let segment_bytes = (plan.bitrate as f64 * plan.segment_duration.as_secs_f64() / 8.0) as usize;
    let segments =
        (plan.duration.as_secs_f64() / plan.segment_duration.as_secs_f64()).ceil() as u64;
    let (cpu_before, started) = (cpu_seconds("self")?, tokio::time::Instant::now());
    let mut next = tokio::time::Instant::now();
    for sequence in 0..segments {
        tokio::time::sleep_until(next).await;
        let mut body = vec![0u8; segment_bytes];
        rng.fill(&mut body[..]);
        let id = SegmentId::media(stream.id, 0, sequence);
        let header = SegmentInfo::for_body(
            id,
            &body,
            plan.segment_duration.as_micros() as u64,
            meshcast_node::unix_now_us(),
        )
        .sign(&key)
        .verify(&stream)?;
        publisher.node.inject(header, Bytes::from(body)).await?;
        next += plan.segment_duration;
    }
    // The last segment spreads.
    tokio::time::sleep(plan.segment_duration + Duration::from_secs(2)).await;
    let end = memory(pid)?;
    let bench_cores = (cpu_seconds("self")? - cpu_before) / started.elapsed().as_secs_f64();
    // The node's own account of what it holds, from its /metrics.
    let scraped = scrape(&metrics).await;
    let gauge = |name: &str| scraped.as_ref().ok().and_then(|text| gauge(text, name));
    let store_bytes = gauge("meshcast_store_bytes");
    let store_segments = gauge("meshcast_store_segments");
    let peers_seen = gauge("meshcast_peers_connected");
    if let Err(e) = &scraped {
        progress.note(&format!("node RSS: could not read {metrics}: {e:#}"));
    }
    let delivered = delivered.load(Relaxed);
    drop(child);
    for counter in counters {
        counter.abort();
    }
    drop(peers);
    drop(publisher);
    progress.note(&format!(
        "node RSS: {:.1} MB at the end, peak {:.1} MB; peers stored {delivered} of {} segments; publisher and peers used {bench_cores:.2} cores",
        mb(end.now),
        mb(end.peak),
        connected as u64 * segments
    ));
    Ok(RssSection {
        peers: plan.peers,
        connected_peers: fig(connected as f64, "peers"),
        bitrate: fig(plan.bitrate as f64 / 1e6, "Mbit/s"),
        segment_bytes: fig(segment_bytes as f64, "bytes"),
        live_window: seconds(plan.live_window),
        published: seconds(plan.segment_duration * segments as u32),
        segments_published: fig(segments as f64, "segments"),
        rss_idle: fig(mb(idle.now), "MB"),
        rss_connected: fig(mb(with_peers.now), "MB"),
        rss_end: fig(mb(end.now), "MB"),
        peak_rss: fig(mb(end.peak), "MB"),
        peer_segments_delivered: fig(delivered as f64, "segments"),
        peer_segments_expected: fig((plan.peers as u64 * segments) as f64, "segments"),
        bench_cpu: fig(bench_cores, "cores"),
        store_bytes: store_bytes.map(|b| fig(b / 1e6, "MB")),
        store_segments: store_segments.map(|n| fig(n, "segments")),
        node_peers_connected: peers_seen.map(|n| fig(n, "peers")),
    })
}

fn child_peer(addr: &Multiaddr) -> anyhow::Result<libp2p::PeerId> {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .context("the node's address has no /p2p/ part")
}
