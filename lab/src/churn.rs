//! Churn: volunteers come and go while viewers watch.
//!
//! The thin-uplink setting ([`crate::thin`]: home lines, mixed NATs, a
//! relay), with every volunteer a real `meshcast node` process in its host
//! and viewers on home lines watching through the relay's gateway. After a
//! warm-up, during the churn window a share of the volunteers is killed
//! with SIGKILL, evenly spread, and new ones join, evenly spread. The
//! relay's own upstream (the volunteers it got segments from during the
//! warm-up; it meets the mesh through the volunteers, not the publisher)
//! is killed first, so the gateway's viewers feel every kill that
//! can reach them.
//!
//! What counts, for the segments published during the window: that every
//! node alive at the end holds each one it should (a survivor all of them,
//! a newcomer those published after it followed), the viewers' stalls
//! ([`crate::viewer`]), the origin's bytes, bans among honest nodes, and
//! how long the mesh took to heal: the slowest delivery during churn
//! beyond the slowest of a calm window of the same length before it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use libp2p::{Multiaddr, PeerId};
use meshcast_node::{Config, Event, Source};
use meshcast_proto::StreamId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng, SeedableRng};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::host::LabNode;
use crate::link::Link;
use crate::matrix::Side;
use crate::net::{Host, Lab};
use crate::process::{Metrics, Process};
use crate::thin::{MIX, node_config, server_link};
use crate::viewer::{self, Playback};

/// Sizes and conditions of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The `meshcast` binary the volunteers run.
    pub bin: PathBuf,
    /// Volunteers at the start.
    pub nodes: usize,
    /// Of them, killed during the window.
    pub kills: usize,
    /// Volunteers that join during the window.
    pub joins: usize,
    /// Viewers watching through the relay's gateway.
    pub viewers: usize,
    pub uplink: u64,
    pub downlink: u64,
    pub rtt_min: Duration,
    pub rtt_max: Duration,
    pub bitrate: u64,
    pub segment: Duration,
    /// From the last volunteer following to the calm window, which is as
    /// long as the churn window that follows it.
    pub warmup: Duration,
    pub window: Duration,
    /// How far behind the live edge viewers play.
    pub viewer_buffer: Duration,
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub impairment: &'static str,
    pub sides: BTreeMap<&'static str, usize>,
    /// Volunteers killed, of them upstream of the relay, and joined.
    pub killed: usize,
    pub killed_upstream: usize,
    /// Volunteers the relay had stored segments from before the churn: the
    /// victims are chosen among them first. None when the publisher, to
    /// which the relay is also connected, pushed it everything.
    pub relay_upstream: usize,
    pub joined: usize,
    /// Segments published in the churn window.
    pub segments: usize,
    /// (live node, segment) pairs expected, and held.
    pub expected: usize,
    pub delivered: usize,
    /// Propagation (publisher to a node's store) in the calm window and in
    /// the churn window.
    pub calm_p95: Duration,
    pub calm_max: Duration,
    pub churn_p50: Duration,
    pub churn_p95: Duration,
    pub churn_max: Duration,
    /// The window's stream bytes and what the origin served during it (the
    /// publisher's ingest included).
    pub stream_bytes: u64,
    pub origin_bytes: u64,
    /// Of the fallbacks' bytes, the relay's (its upstream is killed first).
    pub relay_origin_bytes: u64,
    pub bans: u64,
    pub viewers: usize,
    pub playback: Playback,
}

impl Report {
    pub fn origin_copies(&self) -> f64 {
        self.origin_bytes as f64 / self.stream_bytes.max(1) as f64
    }

    /// The slowest delivery during churn beyond the slowest of the calm
    /// window: the time the mesh took to route around its worst loss.
    pub fn heal(&self) -> Duration {
        self.churn_max.saturating_sub(self.calm_max)
    }
}

/// A volunteer process and what the run knows of it.
struct Volunteer {
    process: Process,
    /// When it followed: segments published from then on are its due.
    followed: SystemTime,
    /// Its metrics when last read: at the window's start and at its death.
    start_metrics: Metrics,
    end_metrics: Option<Metrics>,
}

/// Runs the scenario in a lab of its own; `scratch` holds the stream and the
/// volunteers' directories. `progress` hears each phase.
pub async fn run(plan: &Plan, scratch: &Path, progress: impl Fn(&str)) -> Result<Report, String> {
    if !plan.bin.is_file() {
        return Err(format!("no meshcast binary at {}", plan.bin.display()));
    }
    if plan.kills > plan.nodes {
        return Err(format!(
            "cannot kill {} of {} volunteers",
            plan.kills, plan.nodes
        ));
    }
    let mut lab = Lab::start();
    let mut report = Report {
        impairment: lab.impairment().name(),
        ..Report::default()
    };
    let media = scratch.join("media");
    let total = plan.warmup + plan.window * 2 + plan.segment * 4 + Duration::from_secs(30);
    let segments_on_disk = (total.as_secs_f64() / plan.segment.as_secs_f64()).ceil() as usize;
    meshcast_origin::synthetic::write(&media, plan.bitrate, plan.segment, segments_on_disk)
        .map_err(|e| format!("writing the stream: {e}"))?;

    progress("starting the publisher, the relay and its gateway");
    let operator = lab.public_host_with(&server_link());
    let quic = crate::matrix::Transport::Quic;
    let publisher = LabNode::start(&operator, node_config(quic.addr(operator.addr))).await?;
    let publisher_addr = publisher.at(quic.addr(operator.addr));
    let mut published = publisher.node.events();
    let (stream, origin, _ingest) = publisher
        .publish_live(
            &media,
            SocketAddr::from((operator.addr, 8080)),
            "lab-churn",
            11,
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
    let mut relay_events = relay.node.events();

    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut volunteers: Vec<Volunteer> = Vec::new();
    let join = JoinArgs {
        bin: &plan.bin,
        scratch,
        stream,
        publisher: &publisher_addr,
        relay: &relay_addr,
    };
    for i in 0..plan.nodes {
        progress(&format!("volunteer {} of {}", i + 1, plan.nodes));
        let side = MIX[i % MIX.len()];
        *report.sides.entry(side.name()).or_insert(0) += 1;
        let host = home(&mut lab, side, plan, &mut rng);
        volunteers.push(join.start(i, side, &host).await?);
    }

    // The relay meets the mesh through the volunteers (the NATed ones hold
    // reservations on it), not through the publisher: its upstream is then
    // volunteers, whom the churn can kill.
    progress("the relay follows the stream");
    relay
        .follow_stream(stream, Duration::from_secs(30), "the relay")
        .await?;
    let browsers = relay.serve_browsers(relay_host.addr, stream).await?;

    progress("starting the viewers");
    let viewer_link = Link {
        up: Some(plan.uplink),
        down: Some(plan.downlink),
        delay: plan.rtt_min / 4,
        ..Link::default()
    };
    let mut viewer_hosts = Vec::new();
    for i in 0..plan.viewers {
        let nat = crate::net::Nat::PortPreserving;
        let host = if i % 2 == 0 {
            lab.natted_host_with(nat, &viewer_link)
        } else {
            lab.public_host_with(&viewer_link)
        };
        viewer_hosts.push((host.runtime(), host));
    }
    let calm_start = Instant::now() + plan.warmup;
    let churn_start = calm_start + plan.window;
    let churn_end = churn_start + plan.window;
    let mut watching = Vec::new();
    for (runtime, host) in &viewer_hosts {
        let at = browsers.at.clone();
        let bind = SocketAddr::from((host.addr, 0));
        let (segment, buffer) = (plan.segment, plan.viewer_buffer);
        let client = runtime
            .spawn(async move { viewer::connect(&at, bind).await })
            .await
            .map_err(|e| e.to_string())??;
        watching.push(runtime.spawn(viewer::watch(
            client,
            segment,
            buffer,
            churn_start,
            churn_end,
        )));
    }

    progress("warming up");
    tokio::time::sleep_until(calm_start).await;
    let mut publish_times = HashMap::new();
    drain_published(&mut published, &mut publish_times);
    progress("calm window");
    tokio::time::sleep_until(churn_start).await;
    // Over the warm-up and the calm window: the longer, the likelier the
    // relay has taken segments from volunteers and not only the publisher.
    let relay_upstream = upstream(&mut relay_events);
    report.relay_upstream = volunteers
        .iter()
        .filter(|v| relay_upstream.contains(&v.process.peer))
        .count();
    drain_published(&mut published, &mut publish_times);
    for v in &mut volunteers {
        v.start_metrics = v.process.metrics().unwrap_or_default();
    }
    let relay_origin_before = relay.node.stats().origin_bytes_in.load(Relaxed);

    // The churn schedule: kills and joins evenly spread over the window,
    // the relay's upstream first among the victims.
    let mut victims: Vec<usize> = (0..plan.nodes).collect();
    victims.shuffle(&mut rng);
    victims.sort_by_key(|&i| !relay_upstream.contains(&volunteers[i].process.peer));
    victims.truncate(plan.kills);
    let mut events: Vec<(Duration, Option<usize>)> = Vec::new();
    for (k, &victim) in victims.iter().enumerate() {
        events.push((spread(plan.window, k, plan.kills), Some(victim)));
    }
    for j in 0..plan.joins {
        events.push((spread(plan.window, j, plan.joins) + plan.segment / 2, None));
    }
    events.sort_by_key(|(at, _)| *at);
    for (at, what) in events {
        tokio::time::sleep_until(churn_start + at).await;
        match what {
            Some(victim) => {
                let v = &mut volunteers[victim];
                progress(&format!("killing volunteer {victim} (SIGKILL)"));
                v.end_metrics = v.process.metrics().ok();
                v.process.kill();
                report.killed += 1;
                report.killed_upstream += usize::from(relay_upstream.contains(&v.process.peer));
            }
            None => {
                let i = volunteers.len();
                let side = MIX[i % MIX.len()];
                progress(&format!("volunteer {i} joins ({})", side.name()));
                *report.sides.entry(side.name()).or_insert(0) += 1;
                let host = home(&mut lab, side, plan, &mut rng);
                let mut joined = join.start(i, side, &host).await?;
                joined.start_metrics = Metrics::default();
                volunteers.push(joined);
                report.joined += 1;
            }
        }
    }
    tokio::time::sleep_until(churn_end).await;
    drain_published(&mut published, &mut publish_times);
    progress("settling");
    tokio::time::sleep(plan.segment * 2 + Duration::from_secs(6)).await;
    for v in &mut volunteers {
        if v.process.alive() {
            v.end_metrics = Some(v.process.metrics()?);
        }
    }
    let playbacks = futures::future::join_all(watching).await;

    // Deliveries, against the publisher's clock (one machine, one clock).
    let in_window = |at: SystemTime, start: Instant| {
        let start = wall(start);
        at >= start && at < start + plan.window
    };
    let calm: HashMap<u64, SystemTime> = publish_times
        .iter()
        .filter(|(_, (at, _))| in_window(*at, calm_start))
        .map(|(s, (at, _))| (*s, *at))
        .collect();
    let churn: HashMap<u64, SystemTime> = publish_times
        .iter()
        .filter(|(_, (at, _))| in_window(*at, churn_start))
        .map(|(s, (at, _))| (*s, *at))
        .collect();
    report.segments = churn.len();
    report.stream_bytes = publish_times
        .iter()
        .filter(|(s, _)| churn.contains_key(s))
        .map(|(_, (_, bytes))| bytes)
        .sum();
    let (mut calm_delays, mut churn_delays) = (Vec::new(), Vec::new());
    let mut origin_bytes = 0f64;
    for v in &volunteers {
        let origin_in = ["direction=\"in\"", "class=\"origin\""];
        if let Some(end) = &v.end_metrics {
            origin_bytes += end.value("meshcast_bytes_total", &origin_in)
                - v.start_metrics.value("meshcast_bytes_total", &origin_in);
            report.bans += end.value("meshcast_bans_total", &[]) as u64;
        }
        let stored: HashMap<u64, SystemTime> = v.process.stored(&stream).into_iter().collect();
        for (sequence, published) in &calm {
            if let Some(at) = stored.get(sequence)
                && *published >= v.followed
            {
                calm_delays.push(at.duration_since(*published).unwrap_or_default());
            }
        }
        for (sequence, published) in &churn {
            // Segments published before it followed are history: it
            // fetches them when asked, with no deadline.
            if let Some(at) = stored.get(sequence)
                && *published >= v.followed
            {
                churn_delays.push(at.duration_since(*published).unwrap_or_default());
            }
            // A live node owes the segments published after it followed.
            if v.process.alive() && *published >= v.followed {
                report.expected += 1;
                report.delivered += usize::from(stored.contains_key(sequence));
            }
        }
    }
    report.relay_origin_bytes = relay
        .node
        .stats()
        .origin_bytes_in
        .load(Relaxed)
        .saturating_sub(relay_origin_before);
    origin_bytes += report.relay_origin_bytes as f64;
    report.origin_bytes = report.stream_bytes + origin_bytes.max(0.0) as u64;
    report.bans += relay.node.stats().bans.load(Relaxed);
    calm_delays.sort();
    churn_delays.sort();
    report.calm_p95 = quantile(&calm_delays, 0.95);
    report.calm_max = calm_delays.last().copied().unwrap_or_default();
    report.churn_p50 = quantile(&churn_delays, 0.5);
    report.churn_p95 = quantile(&churn_delays, 0.95);
    report.churn_max = churn_delays.last().copied().unwrap_or_default();
    report.viewers = plan.viewers;
    for playback in playbacks {
        let playback = playback.map_err(|e| format!("a viewer: {e}"))?;
        report.playback.add(&playback);
    }
    drop(volunteers);
    drop(viewer_hosts);
    drop(browsers);
    drop(relay);
    drop(publisher);
    drop(origin);
    Ok(report)
}

/// What a joining volunteer is told.
struct JoinArgs<'a> {
    bin: &'a Path,
    scratch: &'a Path,
    stream: StreamId,
    publisher: &'a Multiaddr,
    relay: &'a Multiaddr,
}

impl JoinArgs<'_> {
    /// Starts volunteer `i` on `host` and waits until it follows the stream.
    async fn start(&self, i: usize, side: Side, host: &Host) -> Result<Volunteer, String> {
        let mut args = vec![
            "--listen".to_string(),
            "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            "--bootstrap".into(),
            self.publisher.to_string(),
            "--follow".into(),
            self.stream.to_string(),
            // The origin is on the lab's private addresses.
            "--allow-private-origins".into(),
        ];
        if side != Side::Public {
            args.extend(["--relay".into(), self.relay.to_string()]);
        }
        let dir = self.scratch.join(format!("volunteer-{i}"));
        let mut process = Process::start(self.bin, host, dir, &args).await?;
        process.line("following", Duration::from_secs(60)).await?;
        Ok(Volunteer {
            process,
            followed: SystemTime::now(),
            start_metrics: Metrics::default(),
            end_metrics: None,
        })
    }
}

/// A volunteer's host: its side and a home line with a drawn delay.
fn home(lab: &mut Lab, side: Side, plan: &Plan, rng: &mut StdRng) -> Host {
    let quarter = |d: Duration| d / 4;
    let delay = rng.gen_range(quarter(plan.rtt_min)..=quarter(plan.rtt_max));
    let link = Link {
        up: Some(plan.uplink),
        down: Some(plan.downlink),
        delay,
        jitter: delay / 10,
        loss: 0.0,
    };
    match side {
        Side::Public => lab.public_host_with(&link),
        Side::Behind(nat) => lab.natted_host_with(nat, &link),
    }
}

/// The `k`th of `n` moments evenly spread over `window` (each in the
/// middle of its share).
fn spread(window: Duration, k: usize, n: usize) -> Duration {
    window.mul_f64((k as f64 + 0.5) / n.max(1) as f64)
}

/// Peers the relay stored segments from so far.
fn upstream(events: &mut broadcast::Receiver<Event>) -> HashSet<PeerId> {
    let mut peers = HashSet::new();
    loop {
        let event = match events.try_recv() {
            Ok(event) => event,
            // Missed events cost only their peers: read on.
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        };
        if let Event::Stored {
            source: Source::Push(peer) | Source::Pull(peer),
            ..
        } = event
        {
            peers.insert(peer);
        }
    }
    peers
}

/// Media segments the publisher signed so far: their wall-clock publish
/// time and size, by sequence.
fn drain_published(
    events: &mut broadcast::Receiver<Event>,
    published: &mut HashMap<u64, (SystemTime, u64)>,
) {
    while let Ok(event) = events.try_recv() {
        if let Event::Stored {
            id,
            source: Source::Injected,
            at,
            bytes,
        } = event
            && id.kind == meshcast_proto::SegmentKind::Media
        {
            published.insert(id.sequence, (wall(Instant::from_std(at)), bytes));
        }
    }
}

/// The wall-clock time of `at`.
fn wall(at: Instant) -> SystemTime {
    let now = Instant::now();
    if at <= now {
        SystemTime::now() - (now - at)
    } else {
        SystemTime::now() + (at - now)
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_spread_evenly_inside_the_window() {
        let window = Duration::from_secs(60);
        let at: Vec<Duration> = (0..3).map(|k| spread(window, k, 3)).collect();
        assert_eq!(
            at,
            [10, 30, 50].map(Duration::from_secs).to_vec(),
            "each in the middle of its third"
        );
    }

    #[test]
    fn quantiles_of_an_empty_list_are_zero() {
        assert_eq!(quantile(&[], 0.95), Duration::ZERO);
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&d, 0.5), Duration::from_millis(51));
    }
}
