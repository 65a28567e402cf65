//! Thin uplinks and distance: a live stream through a mesh of volunteers on
//! home lines.
//!
//! On the WAN: the operator's origin and publisher, and a relay, each on a
//! fat link. Then `nodes` volunteers, a mix of public hosts and hosts behind
//! each NAT type ([`MIX`]), each on a link of `uplink` up and `downlink`
//! down with a one-way delay drawn (seeded) so that round trips between
//! them span `rtt_min`..`rtt_max`. Every volunteer reserves a slot on the
//! relay when NATed, finds the stream in the DHT and follows it. After a
//! warm-up, the segments published during the measured window must reach
//! every node: the report gives the fraction delivered, the propagation
//! delay (publisher to each node's store, one process clock), the origin's
//! bytes against the stream's, and the bans (all nodes are honest: any ban
//! is a bug). Viewers on home lines watch through a gateway on the relay
//! ([`crate::viewer`]): their stalls and late segments. With a playable
//! stream ([`Media::Playable`]) a headless Chromium on a home line can watch
//! too ([`crate::browser`]): the demo page, its stalls and mesh share.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use meshcast_node::{Config, Event, Source};
use meshcast_proto::SegmentId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;

use crate::browser::{self, Browser};
use crate::host::LabNode;
use crate::link::Link;
use crate::matrix::{Side, Transport};
use crate::net::{Lab, Nat};
use crate::viewer::{self, Playback};

/// The volunteers' sides, in turn: 20% public, 40% port-preserving NAT
/// (the common home router), 20% full cone, 20% symmetric.
pub const MIX: [Side; 10] = [
    Side::Public,
    Side::Behind(Nat::PortPreserving),
    Side::Behind(Nat::PortPreserving),
    Side::Behind(Nat::FullCone),
    Side::Behind(Nat::Symmetric),
    Side::Behind(Nat::PortPreserving),
    Side::Public,
    Side::Behind(Nat::PortPreserving),
    Side::Behind(Nat::FullCone),
    Side::Behind(Nat::Symmetric),
];

/// Sizes and conditions of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub nodes: usize,
    /// Each volunteer's line, bits per second.
    pub uplink: u64,
    pub downlink: u64,
    /// Round trips between two volunteers span this range.
    pub rtt_min: Duration,
    pub rtt_max: Duration,
    /// Loss each way on each volunteer's line.
    pub loss: f64,
    /// The stream, bits per second, in segments of `segment`.
    pub bitrate: u64,
    pub segment: Duration,
    /// From the last node following to the measured window.
    pub warmup: Duration,
    pub measure: Duration,
    /// Viewers watching through a gateway on the relay, on home lines like
    /// the volunteers', playing this far behind the live edge.
    pub viewers: usize,
    pub viewer_buffer: Duration,
    /// Delays are drawn from this seed.
    pub seed: u64,
    pub media: Media,
    /// A headless Chromium viewer on a home line too (needs
    /// [`Media::Playable`]).
    pub browser: Option<Browser>,
}

/// What the stream's segments are.
#[derive(Debug, Clone)]
pub enum Media {
    /// Pseudo-random bytes at the bitrate, in segments of the plan's
    /// duration ([`meshcast_origin::synthetic::write`]).
    Random,
    /// A rendition of a real HLS folder (`media/test-stream`) padded up to
    /// the bitrate, in its own segment duration, which must be the plan's
    /// ([`meshcast_origin::synthetic::write_playable`]).
    Playable { source: PathBuf, rendition: String },
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// How delay and loss were made.
    pub impairment: &'static str,
    /// Volunteers by side.
    pub sides: BTreeMap<&'static str, usize>,
    /// Segments published in the window.
    pub segments: usize,
    /// (node, segment) pairs expected and stored.
    pub expected: usize,
    pub delivered: usize,
    /// Of those, stored from the origin (fallbacks).
    pub from_origin: usize,
    /// Fallbacks during the window for segments published before it (a
    /// node catching up), and after it.
    pub origin_before: usize,
    pub origin_after: usize,
    /// Publisher to node, over every delivery.
    pub p50: Duration,
    pub p95: Duration,
    pub max: Duration,
    /// The window's segments, in bytes, and what the origin served for
    /// them: the publisher's ingest (one copy) plus the nodes' fallbacks.
    pub stream_bytes: u64,
    pub origin_bytes: u64,
    /// Of the fallbacks' bytes, the relay's (for its gateway's viewers, or
    /// its own live edge): it tells a starved relay from starved volunteers.
    pub relay_origin_bytes: u64,
    /// Bans by honest nodes of honest nodes: must be 0.
    pub bans: u64,
    pub viewers: usize,
    /// The viewers' playback over the window, all together.
    pub playback: Playback,
    /// The browser viewer's, from its first frame.
    pub browser: Option<browser::Playback>,
}

impl Report {
    /// Copies of the stream the origin served.
    pub fn origin_copies(&self) -> f64 {
        self.origin_bytes as f64 / self.stream_bytes.max(1) as f64
    }
}

/// A fat line for the operator's hosts.
pub(crate) fn server_link() -> Link {
    Link {
        up: Some(200_000_000),
        down: Some(200_000_000),
        delay: Duration::from_millis(2),
        ..Link::default()
    }
}

/// Runs the scenario in a lab of its own; `media` is a scratch directory
/// for the synthetic stream. `progress` hears each phase.
pub async fn run(plan: &Plan, media: &Path, progress: impl Fn(&str)) -> Result<Report, String> {
    let mut lab = Lab::start();
    let impairment = lab.impairment().name();
    let segments_on_disk = ((plan.warmup + plan.measure).as_secs_f64() / plan.segment.as_secs_f64())
        .ceil() as usize
        + 10;
    match &plan.media {
        Media::Random => {
            meshcast_origin::synthetic::write(media, plan.bitrate, plan.segment, segments_on_disk)
                .map_err(|e| format!("writing the stream: {e}"))?;
        }
        Media::Playable { source, rendition } => {
            let segment =
                meshcast_origin::synthetic::write_playable(media, source, rendition, plan.bitrate)
                    .map_err(|e| format!("writing the stream from {}: {e}", source.display()))?;
            if segment != plan.segment {
                return Err(format!(
                    "{} has segments of {segment:?}, the plan {:?}",
                    source.display(),
                    plan.segment
                ));
            }
        }
    }
    if plan.browser.is_some() && matches!(plan.media, Media::Random) {
        return Err("a browser viewer needs a playable stream (Media::Playable)".into());
    }

    // The operator: origin and publisher on one host, and a relay.
    progress("starting the publisher and the relay");
    let operator = lab.public_host_with(&server_link());
    let quic = Transport::Quic;
    let publisher = LabNode::start(&operator, node_config(quic.addr(operator.addr))).await?;
    let publisher_addr = publisher.at(quic.addr(operator.addr));
    let mut published = publisher.node.events();
    let (stream, origin, _ingest) = publisher
        .publish_live(
            media,
            SocketAddr::from((operator.addr, 8080)),
            "lab-thin",
            9,
        )
        .await?;

    let relay_host = lab.public_host_with(&server_link());
    let relay_listen = quic.addr(relay_host.addr);
    let relay = LabNode::start(
        &relay_host,
        Config {
            external: vec![relay_listen.clone()],
            relay_server: true,
            ..node_config(relay_listen.clone())
        },
    )
    .await?;
    let relay_addr = relay.at(relay_listen);
    relay
        .node
        .dial(publisher_addr.clone())
        .await
        .map_err(|e| format!("the relay dials the publisher: {e}"))?;

    // The volunteers.
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut sides = BTreeMap::new();
    let mut nodes = Vec::new();
    for i in 0..plan.nodes {
        progress(&format!("volunteer {} of {}", i + 1, plan.nodes));
        let side = MIX[i % MIX.len()];
        *sides.entry(side.name()).or_insert(0) += 1;
        let quarter = |d: Duration| d / 4;
        let delay = rng.gen_range(quarter(plan.rtt_min)..=quarter(plan.rtt_max));
        let link = Link {
            up: Some(plan.uplink),
            down: Some(plan.downlink),
            delay,
            jitter: delay / 10,
            loss: plan.loss,
        };
        let host = match side {
            Side::Public => lab.public_host_with(&link),
            Side::Behind(nat) => lab.natted_host_with(nat, &link),
        };
        let mut config = node_config(quic.addr(Ipv4Addr::UNSPECIFIED));
        if side != Side::Public {
            config.relays = vec![relay_addr.clone()];
        }
        let node = LabNode::start(&host, config).await?;
        let events = node.node.events();
        node.node
            .dial(publisher_addr.clone())
            .await
            .map_err(|e| format!("volunteer {i} dials the publisher: {e}"))?;
        node.follow_stream(stream, Duration::from_secs(30), &format!("volunteer {i}"))
            .await?;
        nodes.push((node, events));
    }

    relay
        .follow_stream(stream, Duration::from_secs(30), "the relay")
        .await?;
    let browsers = relay.serve_browsers(relay_host.addr, stream).await?;
    progress("starting the viewers");
    let measured_from = tokio::time::Instant::now() + plan.warmup;
    let measured_until = measured_from + plan.measure;
    let mut viewer_hosts = Vec::new();
    let mut watching = Vec::new();
    for i in 0..plan.viewers {
        let link = Link {
            up: Some(plan.uplink),
            down: Some(plan.downlink),
            delay: plan.rtt_min / 4,
            ..Link::default()
        };
        let host = if i % 2 == 0 {
            lab.natted_host_with(Nat::PortPreserving, &link)
        } else {
            lab.public_host_with(&link)
        };
        let runtime = host.runtime();
        let at = browsers.at.clone();
        let bind = SocketAddr::from((host.addr, 0));
        let client = runtime
            .spawn(async move { viewer::connect(&at, bind).await })
            .await
            .map_err(|e| e.to_string())??;
        watching.push(runtime.spawn(viewer::watch(
            client,
            plan.segment,
            plan.viewer_buffer,
            measured_from,
            measured_until,
        )));
        viewer_hosts.push((runtime, host));
    }
    let scratch = media.join("browser");
    let chromium = match &plan.browser {
        Some(browser) => {
            progress("starting the browser viewer");
            let host = lab.natted_host_with(
                Nat::PortPreserving,
                &Link {
                    up: Some(plan.uplink),
                    down: Some(plan.downlink),
                    delay: plan.rtt_max / 4,
                    ..Link::default()
                },
            );
            let page = browser::Page {
                playlist: format!("{}/live/master.m3u8", origin.url()),
                well_known: browsers.well_known.clone(),
                stream,
            };
            Some(browser.watch(&host, &page, plan.warmup + plan.measure, &scratch)?)
        }
        None => None,
    };

    progress("warming up");
    tokio::time::sleep_until(measured_from).await;
    // Events so far are the warm-up's.
    let window_start = Instant::now();
    let mut earlier = HashMap::new();
    drain_published(&mut published, &mut earlier, window_start);
    for (_, events) in &mut nodes {
        while events.try_recv().is_ok() {}
    }
    let relay_origin_before = relay.node.stats().origin_bytes_in.load(Relaxed);
    let origin_before: u64 = nodes
        .iter()
        .map(|(n, _)| n.node.stats().origin_bytes_in.load(Relaxed))
        .sum::<u64>()
        + relay_origin_before;
    progress("measuring");
    let window_end = Instant::now() + plan.measure;
    let mut window: HashMap<SegmentId, (Instant, u64)> = HashMap::new();
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drain_published(&mut published, &mut window, window_end);
    }
    window.retain(|id, _| !earlier.contains_key(id));
    // Time for the window's last segments to spread (they may also still
    // come from the origin, after its fallback delay).
    progress("settling");
    tokio::time::sleep(plan.segment * 2 + Duration::from_secs(6)).await;
    let mut later = HashMap::new();
    drain_published(&mut published, &mut later, Instant::now());
    for (id, (at, bytes)) in later.clone() {
        if at < window_end {
            later.remove(&id);
            window.insert(id, (at, bytes));
        }
    }

    let mut report = Report {
        impairment,
        sides,
        segments: window.len(),
        expected: window.len() * nodes.len(),
        delivered: 0,
        from_origin: 0,
        origin_before: 0,
        origin_after: 0,
        p50: Duration::ZERO,
        p95: Duration::ZERO,
        max: Duration::ZERO,
        stream_bytes: window.values().map(|(_, bytes)| bytes).sum(),
        origin_bytes: 0,
        relay_origin_bytes: 0,
        bans: 0,
        viewers: plan.viewers,
        playback: Playback::default(),
        browser: None,
    };
    if let Some(chromium) = chromium {
        progress("waiting for the browser viewer");
        report.browser =
            Some(chromium.finish().await.map_err(|e| {
                format!("{e}; its page log: {}", scratch.join("page.log").display())
            })?);
    }
    for playback in futures::future::join_all(watching).await {
        let playback = playback.map_err(|e| format!("a viewer: {e}"))?;
        report.playback.add(&playback);
    }
    let mut delays = Vec::new();
    for (node, events) in &mut nodes {
        while let Ok(event) = events.try_recv() {
            let Event::Stored { id, source, at, .. } = event else {
                continue;
            };
            let Some((published_at, _)) = window.get(&id) else {
                if source == Source::Origin {
                    if later.contains_key(&id) {
                        report.origin_after += 1;
                    } else {
                        report.origin_before += 1;
                    }
                }
                continue;
            };
            report.delivered += 1;
            if source == Source::Origin {
                report.from_origin += 1;
            }
            delays.push(at.saturating_duration_since(*published_at));
        }
        report.bans += node.node.stats().bans.load(Relaxed);
    }
    report.bans += relay.node.stats().bans.load(Relaxed);
    let relay_origin_after = relay.node.stats().origin_bytes_in.load(Relaxed);
    report.relay_origin_bytes = relay_origin_after.saturating_sub(relay_origin_before);
    let origin_after: u64 = nodes
        .iter()
        .map(|(n, _)| n.node.stats().origin_bytes_in.load(Relaxed))
        .sum::<u64>()
        + relay_origin_after;
    report.origin_bytes = report.stream_bytes + origin_after.saturating_sub(origin_before);
    delays.sort();
    let at = |q: f64| {
        delays
            .get(((delays.len() as f64 * q) as usize).min(delays.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    report.p50 = at(0.5);
    report.p95 = at(0.95);
    report.max = delays.last().copied().unwrap_or_default();
    drop(nodes);
    drop(viewer_hosts);
    drop(browsers);
    drop(relay);
    drop(publisher);
    drop(origin);
    Ok(report)
}

pub(crate) fn node_config(listen: libp2p::Multiaddr) -> Config {
    Config {
        listen: vec![listen],
        // The origin is on the lab's private addresses.
        allow_private_origins: true,
        ..Config::default()
    }
}

/// Segments the publisher stored (injected) before `end`: their publish
/// time and size.
fn drain_published(
    events: &mut broadcast::Receiver<Event>,
    window: &mut HashMap<SegmentId, (Instant, u64)>,
    end: Instant,
) {
    while let Ok(event) = events.try_recv() {
        if let Event::Stored {
            id,
            source: Source::Injected,
            at,
            bytes,
        } = event
            && at < end
        {
            window.insert(id, (at, bytes));
        }
    }
}
