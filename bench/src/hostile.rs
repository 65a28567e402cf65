//! The report's "hostile mesh" section: the mesh with attackers in it,
//! beside the same mesh without them, in one run.
//!
//! - **Simulator:** 10 % Sybil stallers and 10 % forgers among the nodes
//!   (10 Mbit/s uplinks, origin after 20 s), against the honest run of the
//!   same seed: honest bans, delivered fraction, origin bytes.
//! - **Real swarms:** the loopback mesh bench with forgers (forged headers,
//!   corrupt bodies) and stallers (every upload at [`mesh::STALLER_RATE`])
//!   joining among the honest nodes, against the honest run.
//! - **Memory under attack:** a `meshcast node` process idle, then under
//!   streams trickled a byte every 2 s (several peers, far over the stream
//!   limits); another under a flood of empty segments from the publisher
//!   of a stream it follows. Peak RSS of each against idle.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{Multiaddr, PeerId};
use meshcast_node::Config;
use meshcast_proto::{Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo};
use meshcast_sim::{Report as SimReport, Scenario};
use serde::Serialize;

use super::figure::{Fig, fig};
use super::mesh::{self, Hostile, MeshBench, MeshReport, any_loopback, start_with};
use super::proc::{Spawned, gauge, mb, memory, meshcast_node, scrape};
use super::progress::Progress;

#[derive(Debug, Clone)]
pub struct Plan {
    pub sim_nodes: u32,
    pub swarms: MeshBench,
    pub swarm_hostile: Hostile,
    /// Peers trickling, each opening `trickle_streams` streams.
    pub tricklers: usize,
    pub trickle_streams: usize,
    pub trickle_for: Duration,
    /// Empty segments the flooding publisher injects.
    pub flood_segments: u64,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                sim_nodes: 100,
                swarms: MeshBench {
                    cut_through: true,
                    max_upload: None,
                    publisher_degree: None,
                    nodes: 6,
                    segment_bytes: 100_000,
                    segments: 3,
                    interval: Duration::from_secs(1),
                },
                swarm_hostile: Hostile {
                    forgers: 1,
                    stallers: 1,
                },
                tricklers: 2,
                trickle_streams: 64,
                trickle_for: Duration::from_secs(4),
                flood_segments: 2_000,
            }
        } else {
            Self {
                sim_nodes: 1_000,
                swarms: MeshBench {
                    cut_through: true,
                    max_upload: None,
                    publisher_degree: None,
                    nodes: 20,
                    segment_bytes: 250_000,
                    segments: 10,
                    interval: Duration::from_secs(1),
                },
                swarm_hostile: Hostile {
                    forgers: 2,
                    stallers: 2,
                },
                tricklers: 8,
                trickle_streams: 128,
                trickle_for: Duration::from_secs(20),
                flood_segments: 30_000,
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SimPair {
    pub honest: SimReport,
    pub hostile: SimReport,
    /// Origin bytes of the hostile run ÷ the honest run's; none when the
    /// honest run needed no origin at all.
    pub origin_ratio: Option<Fig>,
}

#[derive(Debug, Serialize)]
pub struct SwarmPair {
    pub honest: MeshReport,
    pub hostile: MeshReport,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    pub idle_rss: Fig,
    pub trickle_peak_rss: Fig,
    /// Streams the tricklers opened or tried to.
    pub trickle_streams: Fig,
    /// The node's `meshcast_streams_refused_total` after the trickle.
    pub streams_refused: Option<Fig>,
    pub flood_peak_rss: Fig,
    pub flood_segments: Fig,
    /// The node's `meshcast_store_segments` after the flood.
    pub store_segments: Option<Fig>,
}

#[derive(Debug, Serialize)]
pub struct HostileSection {
    pub sim: SimPair,
    pub swarms: SwarmPair,
    pub memory: Memory,
}

pub async fn run(plan: &Plan, progress: &Progress) -> anyhow::Result<HostileSection> {
    let sim = sim_pair(plan.sim_nodes, progress).await?;
    progress.phase("hostile: real swarms, honest");
    let honest = mesh::run(&plan.swarms, |p| {
        progress.phase(&format!("hostile swarms: {p}"))
    })
    .await?;
    progress.phase("hostile: real swarms, with forgers and stallers");
    let hostile = mesh::run_with(&plan.swarms, plan.swarm_hostile, |p| {
        progress.phase(&format!("hostile swarms: {p}"))
    })
    .await?;
    let expected = (plan.swarms.nodes * plan.swarms.segments).max(1) as f64;
    progress.note(&format!(
        "hostile swarms: delivered {:.1}% honest vs {:.1}% with {} forgers and {} stallers; p95 {:.0} vs {:.0} ms; honest bans {}; hostile banned {}",
        honest.delivered as f64 / expected * 100.0,
        hostile.delivered as f64 / expected * 100.0,
        hostile.forgers,
        hostile.stallers,
        honest.p95_ms,
        hostile.p95_ms,
        hostile.honest_bans,
        hostile.hostile_banned
    ));
    let memory = memory_under_attack(plan, progress).await?;
    Ok(HostileSection {
        sim,
        swarms: SwarmPair { honest, hostile },
        memory,
    })
}

async fn sim_pair(nodes: u32, progress: &Progress) -> anyhow::Result<SimPair> {
    let honest = Scenario {
        nodes,
        // Long enough for the mesh to carry the stream at all on 10 Mbit/s
        // uplinks (at 4 s the origin serves almost everything either way).
        origin_after: Duration::from_secs(20),
        seed: 1,
        ..Scenario::default()
    };
    let hostile = Scenario {
        stallers: 0.1,
        forgers: 0.1,
        ..honest.clone()
    };
    let mut reports = Vec::new();
    for (label, scenario) in [("honest", honest), ("10% stallers, 10% forgers", hostile)] {
        progress.phase(&format!("hostile: simulator, {nodes} nodes, {label}"));
        let report = tokio::task::spawn_blocking(move || meshcast_sim::run(&scenario, &mut |_| {}))
            .await
            .context("the simulator panicked")?
            .map_err(anyhow::Error::msg)?;
        reports.push(report);
    }
    let hostile = reports.pop().context("no hostile run")?;
    let honest = reports.pop().context("no honest run")?;
    let ratio =
        (honest.origin_bytes > 0).then(|| hostile.origin_bytes as f64 / honest.origin_bytes as f64);
    progress.note(&format!(
        "hostile sim, {nodes} nodes: delivered {:.2}% vs {:.2}%, origin {:.1}% vs {:.1}% of bytes ({}), honest bans {}",
        hostile.delivered * 100.0,
        honest.delivered * 100.0,
        hostile.origin_fraction * 100.0,
        honest.origin_fraction * 100.0,
        ratio.map_or("the honest run used none".into(), |r| format!("{r:.2}×")),
        hostile.honest_bans
    ));
    Ok(SimPair {
        honest,
        hostile,
        origin_ratio: ratio.map(|r| fig(r, "ratio")),
    })
}

/// A live stream published by an in-process node, for a `meshcast node`
/// child to follow.
struct Stream {
    key: PublisherKey,
    descriptor: meshcast_proto::VerifiedDescriptor,
}

fn stream(name: &str) -> anyhow::Result<Stream> {
    let key = PublisherKey::from_seed([17; 32]);
    let descriptor = Descriptor {
        publisher: key.public(),
        name: name.into(),
        renditions: vec![Rendition {
            id: 0,
            name: "only".into(),
            bandwidth: 1_000_000,
            codecs: String::new(),
            width: 0,
            height: 0,
            uri: String::new(),
            ..Default::default()
        }],
        origin_url: String::new(),
        segment_duration_ms: 2_000,
        live: true,
        issued_at_us: meshcast_node::unix_now_us(),
        private: false,
    }
    .sign(&key)?;
    Ok(Stream { key, descriptor })
}

/// A `meshcast node` child following `stream`, bootstrapped to `publisher`:
/// the child, its address and its metrics URL.
async fn child(
    dir: &std::path::Path,
    publisher: &Multiaddr,
    stream: &Stream,
) -> anyhow::Result<(Spawned, Multiaddr, String)> {
    const START: Duration = Duration::from_secs(60);
    let mut command = meshcast_node(dir)?;
    command.args([
        "--bootstrap",
        &publisher.to_string(),
        "--follow",
        &stream.descriptor.stream_key().id.to_string(),
    ]);
    let mut child = Spawned::spawn("node", command)?;
    let metrics = child.line("metrics", START).await?;
    let addr: Multiaddr = child
        .line("listening", START)
        .await?
        .parse()
        .context("the node printed a bad address")?;
    child.line("following", START).await?;
    Ok((child, addr, metrics))
}

async fn metric(url: &str, name: &str) -> Option<f64> {
    gauge(&scrape(url).await.ok()?, name)
}

async fn memory_under_attack(plan: &Plan, progress: &Progress) -> anyhow::Result<Memory> {
    let tmp = tempfile::Builder::new()
        .prefix("meshcast-bench-hostile-")
        .tempdir()
        .context("creating a temporary folder")?;
    let live = stream("bench-hostile")?;
    let (publisher, publisher_addr) = start_with(Config {
        listen: any_loopback(),
        ..Config::default()
    })
    .await?;
    publisher.node.publish(live.descriptor.clone()).await?;

    progress.phase("hostile: a node idle, then trickled");
    let (trickled, addr, metrics) =
        child(&tmp.path().join("trickled"), &publisher_addr, &live).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = memory(trickled.pid())?;
    let peer = addr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .context("the node's address has no /p2p/ part")?;
    let tricklers: Vec<_> = (0..plan.tricklers)
        .map(|_| {
            tokio::spawn(trickle(
                addr.clone(),
                peer,
                plan.trickle_streams,
                plan.trickle_for,
            ))
        })
        .collect();
    for trickler in tricklers {
        trickler.await.context("a trickler panicked")??;
    }
    let trickle_peak = memory(trickled.pid())?;
    let refused = metric(&metrics, "meshcast_streams_refused_total").await;
    drop(trickled);

    progress.phase(&format!(
        "hostile: a node flooded with {} empty segments",
        plan.flood_segments
    ));
    let (flooded, _, metrics) = child(&tmp.path().join("flooded"), &publisher_addr, &live).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stream_key = live.descriptor.stream_key();
    for sequence in 0..plan.flood_segments {
        let id = SegmentId::media(stream_key.id, 0, sequence);
        let header = SegmentInfo::for_body(id, &[], 2_000_000, meshcast_node::unix_now_us())
            .sign(&live.key)
            .verify(&stream_key)?;
        publisher.node.inject(header, Bytes::new()).await?;
        if sequence % 500 == 499 {
            // The publisher's own driver and uplink set the pace of a real
            // flood; yielding here keeps the bench from starving them.
            tokio::task::yield_now().await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let flood_peak = memory(flooded.pid())?;
    let store_segments = metric(&metrics, "meshcast_store_segments").await;
    drop(flooded);
    drop(publisher);
    progress.note(&format!(
        "hostile memory: idle {:.1} MB; peak {:.1} MB under {} trickled streams ({} refused); peak {:.1} MB under {} empty segments ({} held)",
        mb(idle.now),
        mb(trickle_peak.peak),
        plan.tricklers * plan.trickle_streams,
        refused.map_or("?".into(), |r| format!("{r:.0}")),
        mb(flood_peak.peak),
        plan.flood_segments,
        store_segments.map_or("?".into(), |s| format!("{s:.0}"))
    ));
    Ok(Memory {
        idle_rss: fig(mb(idle.now), "MB"),
        trickle_peak_rss: fig(mb(trickle_peak.peak), "MB"),
        trickle_streams: fig((plan.tricklers * plan.trickle_streams) as f64, "streams"),
        streams_refused: refused.map(|r| fig(r, "streams")),
        flood_peak_rss: fig(mb(flood_peak.peak), "MB"),
        flood_segments: fig(plan.flood_segments as f64, "segments"),
        store_segments: store_segments.map(|s| fig(s, "segments")),
    })
}

/// A bare libp2p peer that opens `streams` segment streams to `peer` and
/// trickles a frame on each, a byte every 2 s, for `duration`.
async fn trickle(
    addr: Multiaddr,
    peer: PeerId,
    streams: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .context("a trickler's behaviour")?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    swarm.dial(addr).context("a trickler dials")?;
    let control = swarm.behaviour().new_control();
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let until = tokio::time::Instant::now() + duration;
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let mut control = control.clone();
            tokio::spawn(async move {
                let mut opened = None;
                while opened.is_none() && tokio::time::Instant::now() < until {
                    match control
                        .open_stream(peer, meshcast_node::exchange::PROTOCOL)
                        .await
                    {
                        Ok(stream) => opened = Some(stream),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                let Some(mut stream) = opened else { return };
                // A frame that claims 64 bytes, sent a byte at a time.
                if stream.write_all(&[64]).await.is_err() {
                    return;
                }
                while tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if stream.write_all(&[0x0a]).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    driver.abort();
    Ok(())
}

/// The section in the Markdown report.
pub fn markdown(w: &mut String, section: Option<&HostileSection>) {
    let _ = writeln!(w, "\n## Hostile mesh\n");
    let Some(h) = section else {
        let _ = writeln!(w, "Not run.");
        return;
    };
    let (honest, hostile) = (&h.sim.honest, &h.sim.hostile);
    let _ = writeln!(
        w,
        "Simulator, {} nodes on 10 Mbit/s uplinks, 4 Mbit/s in 2 s segments, origin after 20 s, seed 1: the honest mesh, then 10 % Sybil stallers and 10 % forgers among the nodes. Origin bytes of the hostile run: {}.\n",
        honest.scenario.nodes,
        h.sim.origin_ratio.as_ref().map_or(
            "the honest run used no origin at all".into(),
            |r| format!("{:.2}× the honest run's", r.value)
        )
    );
    let _ = writeln!(
        w,
        "| | delivered | p95 s | origin share | origin GB | honest bans | bans |\n|---|---|---|---|---|---|---|"
    );
    for (label, r) in [("honest", honest), ("stallers and forgers", hostile)] {
        let _ = writeln!(
            w,
            "| {label} | {:.2}% | {:.2} | {:.1}% | {:.2} | {} | {} |",
            r.delivered * 100.0,
            r.propagation_p95_s,
            r.origin_fraction * 100.0,
            r.origin_bytes as f64 / 1e9,
            r.honest_bans,
            r.bans
        );
    }
    let s = &h.swarms;
    let _ = writeln!(
        w,
        "\nReal swarms on loopback, {} honest nodes, {} segments of {} bytes, one a second; then {} forgers (forged headers, corrupt bodies) and {} stallers (uploads at {} B/s) join among them. Figures are the honest nodes'.\n",
        s.honest.nodes,
        s.honest.segments,
        s.honest.segment_bytes,
        s.hostile.forgers,
        s.hostile.stallers,
        mesh::STALLER_RATE
    );
    let _ = writeln!(
        w,
        "| | delivered | p50 ms | p95 ms | duplicates | origin bytes | honest bans | hostile banned |\n|---|---|---|---|---|---|---|---|"
    );
    for (label, r) in [("honest", &s.honest), ("with attackers", &s.hostile)] {
        let expected = (r.nodes * r.segments).max(1) as f64;
        let _ = writeln!(
            w,
            "| {label} | {:.1}% | {:.1} | {:.1} | {:.3} | {} | {} | {} of {} |",
            r.delivered as f64 / expected * 100.0,
            r.p50_ms,
            r.p95_ms,
            r.duplicate_ratio,
            r.origin_bytes,
            r.honest_bans,
            r.hostile_banned,
            r.forgers + r.stallers
        );
    }
    let m = &h.memory;
    let _ = writeln!(
        w,
        "\nMemory of a `meshcast node` process (RSS, MB) under attack, against the same node idle:\n"
    );
    let _ = writeln!(w, "| | RSS MB | note |\n|---|---|---|");
    let _ = writeln!(
        w,
        "| idle, following one stream | {:.1} | |",
        m.idle_rss.value
    );
    let _ = writeln!(
        w,
        "| peak, {:.0} streams trickled a byte every 2 s | {:.1} | {} refused |",
        m.trickle_streams.value,
        m.trickle_peak_rss.value,
        m.streams_refused
            .as_ref()
            .map_or("?".into(), |r| format!("{:.0}", r.value))
    );
    let _ = writeln!(
        w,
        "| peak, {:.0} empty segments from the stream's publisher | {:.1} | {} held at the end |",
        m.flood_segments.value,
        m.flood_peak_rss.value,
        m.store_segments
            .as_ref()
            .map_or("?".into(), |s| format!("{:.0}", s.value))
    );
}
