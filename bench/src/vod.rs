//! On-demand video: viewers seeking at random in a VOD, served by gateways
//! that fetch segments on demand.
//!
//! A real origin (the `meshcast-origin` router in this process serving a
//! generated VOD under `/vod/`, behind the byte-counting layer the offload
//! section uses), a real publisher (`meshcast publish`, which ingests the
//! whole VOD once and serves it on), a seeding node (`--follow <id>`, the
//! whole VOD), a node that is a gateway and seeds nothing (`--follow <id>:0`)
//! and two relays that follow the stream on their first viewer's Hello:
//! the three gateways hold nothing until viewers ask, then fetch each
//! segment from a holder in the mesh (or the origin, if the mesh is late)
//! and keep it for the next viewer.
//!
//! Viewers are native WebTransport clients (`meshcast_relay::Client`) in
//! this process, spread evenly over the gateways and arriving at seeded
//! random times. Each seeks to a random segment and plays a few consecutive
//! ones, one request at a time as hls.js loads them, with the deadlines the
//! browser loader would give (see [`deadline`]); what a gateway refuses or
//! does not deliver in time is fetched from the origin over HTTP and counted
//! as a fallback. A second pass of the same number of viewers at other
//! random points does the same over plain HTTP only, for the comparison;
//! its bytes are not counted against the mesh.
//!
//! Two seek times, measured the same way over the mesh and over HTTP: from
//! the request to the first byte of the segment (the native client notes when
//! a delivery's first byte arrives; HTTP, when the first body chunk does),
//! and from the request to the whole segment in hand (verified, over the
//! mesh). The goal is on the first.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use meshcast_node::ingest::source::{FetchLimits, http_client};
use meshcast_proto::{SegmentId, StreamId};
use meshcast_relay::{Client, ClientEvent};
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::offload::{CountingOrigin, Gateway, cpu, gateway_address, spawn_publisher};
use super::proc::{Spawned, gauge, meshcast, scrape, serve_browsers};
use super::progress::Progress;
use super::report::{VodSection, fig, seconds};

/// Sessions opened at once.
const WAVE: usize = 50;
/// Viewers playing at once (each has one request in flight at a time), so
/// a burst of arrivals cannot open unbounded requests and fallbacks.
const MAX_PLAYING: usize = 64;
/// Time for a child to print its addresses, or to find the stream.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for the publisher to ingest the whole VOD.
const INGEST_TIMEOUT: Duration = Duration::from_secs(180);
/// The browser loader's deadline constants (`web/src/meshcast.js`): the
/// least and most time the mesh gets, the margin kept for HTTP, the HTTP
/// estimate before any fallback (time to first byte and rate), and the
/// backstop after a deadline for a client that does not answer.
const MIN_DEADLINE: Duration = Duration::from_millis(1000);
const MAX_DEADLINE: Duration = Duration::from_millis(8000);
const SAFETY_MARGIN: Duration = Duration::from_millis(500);
const HTTP_TTFB: Duration = Duration::from_millis(300);
const HTTP_BPS: f64 = 4e6;
const DEADLINE_GRACE: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct Plan {
    pub segments: usize,
    pub viewers: usize,
    pub bitrate: u64,
    pub segment_duration: Duration,
    /// Viewers arrive at uniformly random times within this window.
    pub arrivals: Duration,
    /// Segments each viewer plays, the one it seeks to included (a range,
    /// shortened at the end of the VOD).
    pub min_play: usize,
    pub max_play: usize,
    /// Seed of the viewers' arrival times, gateways and seek points.
    pub seed: u64,
    /// Longest wait for the seeder to hold the whole VOD before viewers start.
    pub seed_timeout: Duration,
}

/// What one viewer does.
#[derive(Debug, Clone, Copy)]
struct Script {
    /// Index of the gateway it watches from.
    gateway: usize,
    /// When it seeks, after the pass starts.
    at: Duration,
    /// The segment it seeks to, then plays on from.
    first: u64,
    count: usize,
}

/// Seeded scripts: `viewers` arrivals over the window, round-robin over
/// `gateways`, each seeking to a random segment.
fn scripts(plan: &Plan, gateways: usize, seed: u64) -> Vec<Script> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let window = plan.arrivals.as_secs_f64();
    let mut all: Vec<Script> = (0..plan.viewers)
        .map(|i| {
            let first = rng.gen_range(0..plan.segments.max(1));
            let count = rng
                .gen_range(plan.min_play..=plan.max_play.max(plan.min_play))
                .min(plan.segments - first)
                .max(1);
            Script {
                gateway: i % gateways.max(1),
                at: Duration::from_secs_f64(rng.gen_range(0.0..=window)),
                first: first as u64,
                count,
            }
        })
        .collect();
    all.sort_by_key(|s| s.at);
    all
}

/// The browser loader's deadline for the next segment: the mesh gets what
/// HTTP can still spare before the buffer (`ahead`) runs dry, between the
/// minimum and the maximum; with an empty buffer (a seek) the minimum.
fn deadline(ahead: Duration, segment_bytes: u64) -> Duration {
    let http = HTTP_TTFB + Duration::from_secs_f64(segment_bytes as f64 * 8.0 / HTTP_BPS);
    ahead
        .saturating_sub(SAFETY_MARGIN + http)
        .clamp(MIN_DEADLINE, MAX_DEADLINE)
}

/// What the viewers of one pass saw.
#[derive(Default)]
struct Watched {
    /// Seek times, and whether the seek was the first request of that
    /// segment at its gateway (the gateway had to fetch it).
    seeks: Vec<(Duration, bool)>,
    /// Seek to the segment's first byte.
    seek_first_bytes: Vec<Duration>,
    /// Times of the segments played after a seek.
    plays: Vec<Duration>,
    requests: u64,
    delivered: u64,
    /// Delivered by a gateway after its deadline, or not at all.
    late: u64,
    fallbacks: u64,
    fallback_bytes: u64,
    /// Neither the mesh nor the origin delivered.
    failed: u64,
    bytes: u64,
}

impl Watched {
    fn add(&mut self, o: Watched) {
        self.seeks.extend(o.seeks);
        self.seek_first_bytes.extend(o.seek_first_bytes);
        self.plays.extend(o.plays);
        self.requests += o.requests;
        self.delivered += o.delivered;
        self.late += o.late;
        self.fallbacks += o.fallbacks;
        self.fallback_bytes += o.fallback_bytes;
        self.failed += o.failed;
        self.bytes += o.bytes;
    }
}

/// What every viewer of a pass shares.
struct Shared {
    stream: StreamId,
    rendition: u32,
    http: reqwest::Client,
    /// `http://<origin>/vod/`: the files `write_stream` wrote.
    origin: url::Url,
    segment_bytes: u64,
    segment_duration: Duration,
    /// (gateway, segment) pairs asked for so far in the pass.
    asked: Mutex<HashSet<(usize, u64)>>,
}

impl Shared {
    /// Fetches a segment from the origin: its size and when its first body
    /// byte came.
    async fn http_fetch(&self, sequence: u64) -> anyhow::Result<(u64, Instant)> {
        let url = self
            .origin
            .join(&format!("bench_{sequence:02}.m4s"))
            .context("a segment's origin URL")?;
        let mut response = self
            .http
            .get(url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("fetching {url}"))?;
        let mut first_byte = None;
        let mut bytes = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("reading {url}"))?
        {
            first_byte.get_or_insert_with(Instant::now);
            bytes += chunk.len() as u64;
            anyhow::ensure!(
                bytes <= self.segment_bytes,
                "{url}: more than {} bytes",
                self.segment_bytes
            );
        }
        anyhow::ensure!(
            bytes == self.segment_bytes,
            "{url}: {bytes} bytes, not {}",
            self.segment_bytes
        );
        Ok((bytes, first_byte.unwrap_or_else(Instant::now)))
    }
}

/// How one request over the mesh ended.
enum Answer {
    /// Its size, and when its first byte came.
    Delivered(u64, Instant),
    /// Refused, rejected, not in time, or the session is gone.
    Failed { session_lost: bool },
}

/// Waits for the answer to `request_id` until `until`, skipping the
/// answers to requests given up earlier.
async fn answer(client: &mut Client, request_id: u64, until: tokio::time::Instant) -> Answer {
    loop {
        match tokio::time::timeout_at(until, client.next_event()).await {
            Err(_) => {
                return Answer::Failed {
                    session_lost: false,
                };
            }
            Ok(Err(_)) => return Answer::Failed { session_lost: true },
            Ok(Ok(ClientEvent::Delivered {
                request_id: id,
                body,
                first_byte,
                ..
            })) if id == request_id => return Answer::Delivered(body.len() as u64, first_byte),
            Ok(Ok(
                ClientEvent::Error { request_id: id, .. }
                | ClientEvent::Rejected { request_id: id, .. },
            )) if id == request_id || id == 0 => {
                return Answer::Failed {
                    session_lost: false,
                };
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// One viewer: seeks, then plays `count` segments one after the other,
/// over its session (`None`: plain HTTP only, or no session could open).
async fn watch(
    mut client: Option<Client>,
    script: Script,
    shared: Arc<Shared>,
    over_mesh: bool,
) -> Watched {
    let mut w = Watched::default();
    let mut playing_since: Option<Instant> = None;
    let mut buffered = Duration::ZERO;
    for i in 0..script.count {
        let sequence = script.first + i as u64;
        let ahead = playing_since.map_or(Duration::ZERO, |t| buffered.saturating_sub(t.elapsed()));
        let deadline = deadline(ahead, shared.segment_bytes);
        let first_at_gateway = over_mesh
            && shared
                .asked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((script.gateway, sequence));
        w.requests += 1;
        let asked = Instant::now();
        let mut got = None;
        if let Some(session) = client.as_mut() {
            let id = SegmentId::media(shared.stream, shared.rendition, sequence);
            let until = tokio::time::Instant::now() + deadline + DEADLINE_GRACE;
            let answer = match session.request(id, 0, deadline).await {
                Ok(request_id) => {
                    let answer = answer(session, request_id, until).await;
                    if matches!(answer, Answer::Failed { .. }) {
                        let _ = session.cancel(request_id).await;
                    }
                    answer
                }
                Err(_) => Answer::Failed { session_lost: true },
            };
            match answer {
                Answer::Delivered(bytes, first_byte) => {
                    w.delivered += 1;
                    w.bytes += bytes;
                    w.late += u64::from(asked.elapsed() > deadline);
                    got = Some(first_byte);
                }
                Answer::Failed { session_lost } => {
                    w.late += 1;
                    if session_lost {
                        client = None;
                    }
                }
            }
        }
        if got.is_none() {
            // The browser loader's fallback: the same segment over HTTP.
            match shared.http_fetch(sequence).await {
                Ok((bytes, first_byte)) => {
                    w.bytes += bytes;
                    if over_mesh {
                        w.fallbacks += 1;
                        w.fallback_bytes += bytes;
                    }
                    got = Some(first_byte);
                }
                Err(_) => w.failed += 1,
            }
        }
        let took = asked.elapsed();
        if let Some(first_byte) = got {
            if i == 0 {
                w.seeks.push((took, first_at_gateway));
                w.seek_first_bytes
                    .push(first_byte.saturating_duration_since(asked));
                playing_since = Some(Instant::now());
            } else {
                w.plays.push(took);
            }
            buffered += shared.segment_duration;
        }
    }
    w
}

/// Runs one pass: each script's viewer starts at its time (at most
/// `MAX_PLAYING` at once) and the pass ends when the last one is done.
async fn pass(
    scripts: &[Script],
    mut clients: Vec<Option<Client>>,
    shared: &Arc<Shared>,
    over_mesh: bool,
) -> Watched {
    let start = tokio::time::Instant::now();
    let playing = Arc::new(Semaphore::new(MAX_PLAYING));
    let mut viewers = JoinSet::new();
    for (i, script) in scripts.iter().enumerate() {
        tokio::time::sleep_until(start + script.at).await;
        let client = clients.get_mut(i).and_then(Option::take);
        let (shared, playing, script) = (Arc::clone(shared), Arc::clone(&playing), *script);
        viewers.spawn(async move {
            let _permit = playing.acquire_owned().await.ok();
            watch(client, script, shared, over_mesh).await
        });
    }
    let mut all = Watched::default();
    while let Some(done) = viewers.join_next().await {
        if let Ok(w) = done {
            all.add(w);
        }
    }
    all
}

/// Opens one session per script, on its gateway, `WAVE` at a time; `None`
/// where one failed to open (that viewer then watches over HTTP, as the
/// browser loader does without a gateway).
async fn open_sessions(
    gateways: &[Gateway],
    scripts: &[Script],
    stream: StreamId,
) -> anyhow::Result<Vec<Option<Client>>> {
    let mut clients: Vec<Option<Client>> = scripts.iter().map(|_| None).collect();
    let mut opening = JoinSet::new();
    for (i, script) in scripts.iter().enumerate() {
        let gateway = gateways
            .get(script.gateway)
            .context("no gateway to watch from")?;
        let (url, hash) = (gateway.url.clone(), gateway.hash.clone());
        opening.spawn(async move {
            let client = Client::connect(&url, &[hash], stream, "", Duration::from_secs(30)).await;
            (i, client)
        });
        if opening.len() >= WAVE || i + 1 == scripts.len() {
            while let Some(done) = opening.join_next().await {
                if let Ok((i, Ok(client))) = done
                    && let Some(slot) = clients.get_mut(i)
                {
                    *slot = Some(client);
                }
            }
        }
    }
    Ok(clients)
}

/// Percentile `p` of `values` in ms (NaN if empty).
fn percentile(values: &mut [Duration], p: f64) -> f64 {
    values.sort();
    values
        .get(((values.len().saturating_sub(1)) as f64 * p).round() as usize)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Waits until the node behind `metrics` holds `segments` segments, or
/// `timeout`; returns how many it held and when it stopped waiting.
async fn wait_seeded(metrics: &url::Url, segments: u64, timeout: Duration) -> (u64, Duration) {
    let started = Instant::now();
    let mut held = 0;
    while started.elapsed() < timeout {
        if let Ok(text) = scrape(metrics.as_str()).await {
            held = gauge(&text, "meshcast_store_segments").unwrap_or(0.0) as u64;
            if held >= segments {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (held, started.elapsed())
}

pub async fn run(plan: &Plan, progress: &Progress) -> anyhow::Result<VodSection> {
    let tmp = tempfile::Builder::new()
        .prefix("meshcast-bench-vod-")
        .tempdir()
        .context("creating a temporary folder")?;
    let dir = tmp.path();
    progress.phase("vod: starting the origin");
    let segment_bytes = (plan.bitrate as f64 * plan.segment_duration.as_secs_f64() / 8.0) as u64;
    let vod_bytes = segment_bytes * plan.segments as u64;
    meshcast_origin::synthetic::write(
        &dir.join("vod"),
        plan.bitrate,
        plan.segment_duration,
        plan.segments,
    )?;
    let origin = CountingOrigin::start(&dir.join("vod")).await?;
    let served = Arc::clone(&origin.served);
    let master = format!("http://{}/vod/master.m3u8", origin.addr);

    progress.phase(&format!(
        "vod: publishing {} segments ({:.1} MB)",
        plan.segments,
        vod_bytes as f64 / 1e6
    ));
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let (mut publisher, bootstrap, stream) = spawn_publisher(dir, &master, "bench-vod").await?;
    let ingested = publisher.line("ingested", INGEST_TIMEOUT).await?;
    let ingest_bytes = served.total.load(Relaxed);
    let ingested_segments: u64 = ingested
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the publisher printed `ingested {ingested}`"))?;
    anyhow::ensure!(
        ingested_segments == plan.segments as u64,
        "the publisher ingested {ingested_segments} segments of {}",
        plan.segments
    );
    let stream_id: StreamId = stream
        .parse()
        .map_err(|e| anyhow::anyhow!("the publisher printed a bad stream id: {e}"))?;

    progress.phase("vod: starting the seeder, the gateway node and the relays");
    let none_seeded = format!("{stream}:0");
    let mut children = vec![publisher];
    // (name, command, --follow, gateway)
    let roles = [
        ("seeder", "node", Some(stream.as_str()), false),
        ("node-gateway", "node", Some(none_seeded.as_str()), true),
        ("relay-1", "relay", None, true),
        ("relay-2", "relay", None, true),
    ];
    for (name, command_name, follow, serves) in roles {
        let mut command = meshcast()?;
        command
            .arg(command_name)
            .arg("--data-dir")
            .arg(dir.join(name))
            .args(["--listen", quic, "--bootstrap", &bootstrap]);
        if let Some(follow) = follow {
            command.args(["--follow", follow]);
        }
        if name == "seeder" {
            command.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        if serves {
            serve_browsers(&mut command, plan.viewers);
        }
        children.push(Spawned::spawn(name, command)?);
    }
    let http = http_client(&FetchLimits::default()).context("building an HTTP client")?;
    let mut gateways = Vec::new();
    let mut seeder_metrics = None;
    for child in children.iter_mut().skip(1) {
        if child.name == "seeder" {
            let url = child.line("metrics", START_TIMEOUT).await?;
            seeder_metrics = Some(
                url::Url::parse(&url)
                    .with_context(|| format!("the seeder printed a bad metrics URL {url}"))?,
            );
            let followed = child.line("following", START_TIMEOUT).await?;
            anyhow::ensure!(followed == stream, "the seeder follows {followed}");
        } else {
            gateways.push(gateway_address(child).await?);
            if child.name == "node-gateway" {
                let followed = child.line("following", START_TIMEOUT).await?;
                anyhow::ensure!(followed == stream, "the gateway node follows {followed}");
            }
        }
    }
    let seeder_metrics = seeder_metrics.context("no seeder")?;

    progress.phase("vod: waiting for the seeder to hold the whole VOD");
    let (seeded, seeding_time) =
        wait_seeded(&seeder_metrics, ingested_segments, plan.seed_timeout).await;
    if seeded < ingested_segments {
        progress.note(&format!(
            "vod: the seeder held only {seeded} of {ingested_segments} segments after {seeding_time:.0?}; viewers start anyway"
        ));
    }

    progress.phase(&format!("vod: opening {} viewer sessions", plan.viewers));
    let mesh_scripts = scripts(plan, gateways.len(), plan.seed);
    let clients = open_sessions(&gateways, &mesh_scripts, stream_id).await?;
    let sessions_open = clients.iter().filter(|c| c.is_some()).count();
    if sessions_open < plan.viewers {
        progress.note(&format!(
            "vod: {} of {} sessions failed to open; those viewers watch over HTTP",
            plan.viewers - sessions_open,
            plan.viewers
        ));
    }
    let rendition = clients
        .iter()
        .flatten()
        .next()
        .and_then(|c| c.descriptor().descriptor().renditions.first().map(|r| r.id))
        .unwrap_or(0);
    // The relays followed the stream on their first Hello just now: let them
    // learn who holds what before the first seek.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let origin_url =
        url::Url::parse(&format!("http://{}/vod/", origin.addr)).context("the origin's URL")?;
    let shared = |asked| {
        Arc::new(Shared {
            stream: stream_id,
            rendition,
            http: http.clone(),
            origin: origin_url.clone(),
            segment_bytes,
            segment_duration: plan.segment_duration,
            asked,
        })
    };
    progress.phase(&format!(
        "vod: {} viewers seeking over the mesh, arriving within {:?}",
        plan.viewers, plan.arrivals
    ));
    let before_viewers = served.total.load(Relaxed);
    let playlists_before = served.playlists.load(Relaxed);
    let cpu_before = cpu(&children)?;
    let started = Instant::now();
    let mesh_shared = shared(Mutex::new(HashSet::new()));
    let mut mesh = pass(&mesh_scripts, clients, &mesh_shared, true).await;
    let window = started.elapsed().as_secs_f64();
    let cpu_after = cpu(&children)?;
    let after_viewers = served.total.load(Relaxed);
    let viewer_phase_bytes = after_viewers - before_viewers;
    let viewer_phase_playlists = served.playlists.load(Relaxed) - playlists_before;
    let cores = |i: usize| (cpu_after[i] - cpu_before[i]) / window;
    // [publisher, seeder, node-gateway, relay-1, relay-2, this process]
    let gateway_cores = cores(2) + cores(3) + cores(4);
    let mesh_cores = cores(0) + cores(1);
    let bench_cores = cores(5);

    progress.phase(&format!(
        "vod: {} viewers seeking over plain HTTP",
        plan.viewers
    ));
    let http_scripts = scripts(plan, gateways.len(), plan.seed ^ 0x5eed);
    let http_shared = shared(Mutex::new(HashSet::new()));
    let http_before = served.total.load(Relaxed);
    let mut plain = pass(
        &http_scripts,
        http_scripts.iter().map(|_| None).collect(),
        &http_shared,
        false,
    )
    .await;
    let http_pass_bytes = served.total.load(Relaxed) - http_before;
    drop(children);

    let copies = |bytes: u64| bytes as f64 / vod_bytes.max(1) as f64;
    let gateway_origin_bytes = viewer_phase_bytes
        .saturating_sub(mesh.fallback_bytes)
        .saturating_sub(viewer_phase_playlists);
    let mut mesh_seeks: Vec<Duration> = mesh.seeks.iter().map(|(d, _)| *d).collect();
    let mut first_seeks: Vec<Duration> = mesh
        .seeks
        .iter()
        .filter(|(_, f)| *f)
        .map(|(d, _)| *d)
        .collect();
    let mut repeat_seeks: Vec<Duration> = mesh
        .seeks
        .iter()
        .filter(|(_, f)| !*f)
        .map(|(d, _)| *d)
        .collect();
    let mut http_seeks: Vec<Duration> = plain.seeks.iter().map(|(d, _)| *d).collect();
    let (seek_p50, seek_p95) = (
        percentile(&mut mesh_seeks, 0.5),
        percentile(&mut mesh_seeks, 0.95),
    );
    let (http_p50, http_p95) = (
        percentile(&mut http_seeks, 0.5),
        percentile(&mut http_seeks, 0.95),
    );
    let (first_byte_p50, first_byte_p95) = (
        percentile(&mut mesh.seek_first_bytes, 0.5),
        percentile(&mut mesh.seek_first_bytes, 0.95),
    );
    let (http_first_byte_p50, http_first_byte_p95) = (
        percentile(&mut plain.seek_first_bytes, 0.5),
        percentile(&mut plain.seek_first_bytes, 0.95),
    );
    let section = VodSection {
        topology: format!(
            "Origin: the `meshcast-origin` router in the bench process, serving the VOD under /vod/ and counting every byte it serves. Publisher: `meshcast publish` (ingests the VOD once, serves it on). A seeding node (`--follow <id>`), a node that is a gateway and seeds nothing (`--follow <id>:0`) and two relays that follow on their first viewer's Hello: child processes, {} gateways fetching segments on demand. Viewers: native WebTransport clients (`meshcast_relay::Client`) in the bench process, spread evenly over the gateways, arriving at seeded random times; each seeks to a random segment and plays {}–{} segments one after the other with the browser loader's deadlines, falling back to the origin over HTTP. Seek time: from the request to the segment's first byte (the goal), and to the whole segment (verified, over the mesh), the same over plain HTTP.",
            gateways.len(),
            plan.min_play,
            plan.max_play
        ),
        segments: plan.segments,
        viewers: plan.viewers,
        bitrate: fig(plan.bitrate as f64 / 1e6, "Mbit/s"),
        segment_duration: seconds(plan.segment_duration),
        segment_bytes: fig(segment_bytes as f64, "bytes"),
        vod_bytes: fig(vod_bytes as f64, "bytes"),
        arrivals: seconds(plan.arrivals),
        seeded_before_viewers: fig(seeded as f64, "segments"),
        seeding_time: seconds(seeding_time),
        sessions_open: fig(sessions_open as f64, "sessions"),
        seeks: fig(mesh.seeks.len() as f64, "seeks"),
        requests: fig(mesh.requests as f64, "segments"),
        delivered_by_gateways: fig(mesh.delivered as f64, "segments"),
        late_segments: fig(mesh.late as f64, "segments"),
        fallback_segments: fig(mesh.fallbacks as f64, "segments"),
        failed_segments: fig((mesh.failed + plain.failed) as f64, "segments"),
        viewer_bytes: fig(mesh.bytes as f64, "bytes"),
        origin_ingest_bytes: fig(ingest_bytes as f64, "bytes"),
        origin_seeding_bytes: fig((before_viewers - ingest_bytes) as f64, "bytes"),
        origin_viewer_phase_bytes: fig(viewer_phase_bytes as f64, "bytes"),
        origin_gateway_bytes: fig(gateway_origin_bytes as f64, "bytes"),
        origin_fallback_bytes: fig(mesh.fallback_bytes as f64, "bytes"),
        origin_http_pass_bytes: fig(http_pass_bytes as f64, "bytes"),
        ingest_copies: fig(copies(ingest_bytes), "copies"),
        viewer_phase_copies: fig(copies(viewer_phase_bytes), "copies"),
        origin_copies: fig(copies(after_viewers), "copies"),
        seek_p50: fig(seek_p50, "ms"),
        seek_p95: fig(seek_p95, "ms"),
        seek_first_p50: (!first_seeks.is_empty())
            .then(|| fig(percentile(&mut first_seeks, 0.5), "ms")),
        seek_repeat_p50: (!repeat_seeks.is_empty())
            .then(|| fig(percentile(&mut repeat_seeks, 0.5), "ms")),
        seeks_first: fig(first_seeks.len() as f64, "seeks"),
        play_p50: fig(percentile(&mut mesh.plays, 0.5), "ms"),
        http_seek_p50: fig(http_p50, "ms"),
        http_seek_p95: fig(http_p95, "ms"),
        http_play_p50: fig(percentile(&mut plain.plays, 0.5), "ms"),
        seek_ratio_p50: fig(seek_p50 / http_p50, "ratio"),
        seek_ratio_p95: fig(seek_p95 / http_p95, "ratio"),
        first_byte_p50: fig(first_byte_p50, "ms"),
        first_byte_p95: fig(first_byte_p95, "ms"),
        http_first_byte_p50: fig(http_first_byte_p50, "ms"),
        http_first_byte_p95: fig(http_first_byte_p95, "ms"),
        first_byte_ratio_p50: fig(first_byte_p50 / http_first_byte_p50, "ratio"),
        first_byte_ratio_p95: fig(first_byte_p95 / http_first_byte_p95, "ratio"),
        gateway_cpu: fig(gateway_cores, "cores"),
        mesh_cpu: fig(mesh_cores, "cores"),
        viewer_cpu: fig(bench_cores, "cores"),
        measured: fig(window, "s"),
    };
    progress.note(&format!(
        "vod {} viewers, {} segments: origin {:.3} copies of the VOD (ingest {:.3}, seeding {:.3}, viewers' phase {:.3}: {:.2} MB by gateways, {:.2} MB viewer fallbacks); seeder held {seeded} of {ingested_segments} after {seeding_time:.1?}",
        plan.viewers,
        plan.segments,
        section.origin_copies.value,
        section.ingest_copies.value,
        copies(before_viewers - ingest_bytes),
        section.viewer_phase_copies.value,
        gateway_origin_bytes as f64 / 1e6,
        mesh.fallback_bytes as f64 / 1e6,
    ));
    progress.note(&format!(
        "vod seek to delivery: mesh p50 {seek_p50:.1} ms, p95 {seek_p95:.1} ms (first request at its gateway p50 {:.1} ms, n={}; repeat p50 {:.1} ms, n={}); plain HTTP p50 {http_p50:.1} ms, p95 {http_p95:.1} ms; mesh ÷ HTTP {:.2} (p50), {:.2} (p95)",
        section.seek_first_p50.map_or(f64::NAN, |f| f.value),
        first_seeks.len(),
        section.seek_repeat_p50.map_or(f64::NAN, |f| f.value),
        repeat_seeks.len(),
        section.seek_ratio_p50.value,
        section.seek_ratio_p95.value,
    ));
    progress.note(&format!(
        "vod seek to first byte: mesh p50 {first_byte_p50:.1} ms, p95 {first_byte_p95:.1} ms; plain HTTP p50 {http_first_byte_p50:.1} ms, p95 {http_first_byte_p95:.1} ms; mesh ÷ HTTP {:.2} (p50), {:.2} (p95)",
        section.first_byte_ratio_p50.value,
        section.first_byte_ratio_p95.value,
    ));
    progress.note(&format!(
        "vod requests: {} ({} seeks), {} delivered by gateways, {} late, {} fallbacks to HTTP, {} failed; CPU over {window:.1} s: gateways {gateway_cores:.2}, publisher and seeder {mesh_cores:.2}, viewers and origin {bench_cores:.2} cores",
        mesh.requests,
        mesh.seeks.len(),
        mesh.delivered,
        mesh.late,
        mesh.fallbacks,
        mesh.failed + plain.failed,
    ));
    drop(origin);
    drop(tmp);
    Ok(section)
}
