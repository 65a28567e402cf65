//! Origin offload with simulated viewers.
//!
//! A real origin (the `meshcast-origin` router serving a generated 2 Mbit/s
//! HLS stream, in this process, behind a layer that counts every byte it
//! serves), a real publisher (`meshcast publish`), a plain node, a node
//! that is also a gateway and two relays (child processes). Viewers are
//! native WebTransport clients (`meshcast_relay::Client`) in this process,
//! spread evenly over the three gateways; each asks for every announced
//! segment with a deadline of one segment duration and, when a gateway
//! fails or misses it, fetches the segment from the origin over HTTP as the
//! browser loader does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use bytes::Bytes;
use meshcast_node::ingest::source::{FetchLimits, fetch_url, http_client};
use meshcast_proto::VerifiedHeader;
use meshcast_relay::{Client, ClientEvent};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::proc::{Spawned, cpu_seconds, meshcast, serve_browsers};
use super::progress::Progress;
use super::report::{OffloadRun, OffloadSection, fig, seconds};

/// Segments in the generated stream (the origin loops them live).
const STREAM_SEGMENTS: usize = 10;
/// Sessions opened at once.
const WAVE: usize = 50;
/// Origin fallbacks in flight at once, over all viewers.
const MAX_FALLBACKS: usize = 64;
/// Time for a child to print its addresses, or to find the stream.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Plan {
    pub viewers: Vec<usize>,
    pub segment_duration: Duration,
    pub bitrate: u64,
    /// Measured time per audience.
    pub duration: Duration,
}

/// Bytes the origin served (also read by the VOD section).
#[derive(Default)]
pub(super) struct Served {
    pub(super) total: AtomicU64,
    pub(super) playlists: AtomicU64,
}

/// The `meshcast-origin` router serving a folder on 127.0.0.1, behind the
/// byte-counting layer; it stops when dropped. Shared with the VOD section
/// so both count the origin's bytes the same way.
pub(super) struct CountingOrigin {
    pub(super) addr: SocketAddr,
    pub(super) served: Arc<Served>,
    _task: AbortOnDrop<std::io::Result<()>>,
}

impl CountingOrigin {
    pub(super) async fn start(dir: &Path) -> anyhow::Result<Self> {
        let origin = meshcast_origin::Origin::load(dir).context("loading the generated stream")?;
        let served = Arc::new(Served::default());
        let router = origin
            .router()
            .layer(middleware::from_fn_with_state(Arc::clone(&served), count));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the origin")?;
        let addr = listener.local_addr().context("the origin's address")?;
        let task = tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Self {
            addr,
            served,
            _task: AbortOnDrop(task),
        })
    }
}

async fn count(State(served): State<Arc<Served>>, req: Request, next: Next) -> Response {
    let playlist = req.uri().path().ends_with(".m3u8");
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    // The origin serves whole files and rendered playlists: the size is known.
    // Should it ever stream, the body is collected to be counted.
    let (body, bytes) = match body.size_hint().exact() {
        Some(n) => (body, n),
        None => match axum::body::to_bytes(body, meshcast_origin::MAX_FILE_BYTES as usize).await {
            Ok(b) => {
                let n = b.len() as u64;
                (Body::from(b), n)
            }
            Err(_) => (Body::empty(), 0),
        },
    };
    served.total.fetch_add(bytes, Relaxed);
    if playlist {
        served.playlists.fetch_add(bytes, Relaxed);
    }
    Response::from_parts(parts, body)
}

/// A gateway the viewers can reach.
pub(super) struct Gateway {
    pub(super) url: String,
    pub(super) hash: wtransport::tls::Sha256Digest,
}

/// Reads `gateway` and `cert-hash` from a child.
pub(super) async fn gateway_address(child: &mut Spawned) -> anyhow::Result<Gateway> {
    let url = child.line("gateway", START_TIMEOUT).await?;
    let hex_hash = child.line("cert-hash", START_TIMEOUT).await?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&hex_hash, &mut hash)
        .with_context(|| format!("the {} printed a bad certificate hash", child.name))?;
    Ok(Gateway {
        url,
        hash: wtransport::tls::Sha256Digest::new(hash),
    })
}

/// Reads `gateway` and `cert-hash` from a child, then waits until it follows the stream.
async fn gateway(child: &mut Spawned, stream: &str) -> anyhow::Result<Gateway> {
    let address = gateway_address(child).await?;
    let followed = child.line("following", START_TIMEOUT).await?;
    anyhow::ensure!(
        followed == stream,
        "the {} follows {followed}, not {stream}",
        child.name
    );
    Ok(address)
}

pub async fn run(plan: &Plan, progress: &Progress) -> anyhow::Result<OffloadSection> {
    let tmp = tempfile::Builder::new()
        .prefix("meshcast-bench-offload-")
        .tempdir()
        .context("creating a temporary folder")?;
    let dir = tmp.path();
    progress.phase("offload: starting the origin");
    meshcast_origin::synthetic::write(
        &dir.join("stream"),
        plan.bitrate,
        plan.segment_duration,
        STREAM_SEGMENTS,
    )?;
    let origin = CountingOrigin::start(&dir.join("stream")).await?;
    let (origin_addr, served) = (origin.addr, Arc::clone(&origin.served));
    let master = format!("http://{origin_addr}/live/master.m3u8");

    progress.phase("offload: starting the publisher");
    let quic = "/ip4/127.0.0.1/udp/0/quic-v1";
    let (publisher, bootstrap, stream) = spawn_publisher(dir, &master, "bench-offload").await?;

    progress.phase("offload: starting the nodes, gateways and relays");
    let max_viewers = plan.viewers.iter().copied().max().unwrap_or(0);
    let mut children = vec![publisher];
    let roles = [
        ("node", "node", false),
        ("node-gateway", "node", true),
        ("relay-1", "relay", true),
        ("relay-2", "relay", true),
    ];
    for (name, command_name, serves) in roles {
        let mut command = meshcast()?;
        command
            .arg(command_name)
            .arg("--data-dir")
            .arg(dir.join(name))
            .args([
                "--listen",
                quic,
                "--bootstrap",
                &bootstrap,
                "--follow",
                &stream,
            ]);
        if serves {
            serve_browsers(&mut command, max_viewers);
        }
        children.push(Spawned::spawn(name, command)?);
    }
    let mut gateways = Vec::new();
    for child in children.iter_mut().skip(1) {
        if child.name == "node" {
            let followed = child.line("following", START_TIMEOUT).await?;
            anyhow::ensure!(followed == stream, "the node follows {followed}");
        } else {
            gateways.push(gateway(child, &stream).await?);
        }
    }
    let stream_id: meshcast_proto::StreamId = stream
        .parse()
        .map_err(|e| anyhow::anyhow!("the publisher printed a bad stream id: {e}"))?;
    // Let the live edge reach every gateway.
    tokio::time::sleep(plan.segment_duration * 2).await;

    let http = http_client(&FetchLimits::default()).context("building an HTTP client")?;
    let mut runs = Vec::new();
    for &viewers in &plan.viewers {
        progress.phase(&format!("offload: opening {viewers} viewer sessions"));
        let clients = open_viewers(&gateways, viewers, stream_id).await?;
        let sessions_open = clients.len();
        if sessions_open < viewers {
            progress.note(&format!(
                "offload: {} of {viewers} sessions failed to open",
                viewers - sessions_open
            ));
        }
        progress.phase(&format!(
            "offload: {viewers} viewers watching for {:?}",
            plan.duration
        ));
        let start = Instant::now() + Duration::from_millis(200);
        let until = start + plan.duration;
        let fallbacks = Arc::new(Semaphore::new(MAX_FALLBACKS));
        let watchers: Vec<_> = clients
            .into_iter()
            .map(|client| {
                tokio::spawn(view(
                    client,
                    plan.segment_duration,
                    start,
                    until,
                    http.clone(),
                    Arc::clone(&fallbacks),
                ))
            })
            .collect();
        tokio::time::sleep_until(start).await;
        let (total_before, playlists_before) =
            (served.total.load(Relaxed), served.playlists.load(Relaxed));
        let cpu_before = cpu(&children)?;
        // The origin's bytes are counted over the window the viewers' are:
        // segments announced in [start, until), plus the fallbacks for them
        // that land after `until`. Until the watchers end, the publisher
        // goes on ingesting segments no viewer asks for.
        tokio::time::sleep_until(until).await;
        let (total_until, playlists_until) =
            (served.total.load(Relaxed), served.playlists.load(Relaxed));
        let mut v = Viewed::default();
        for watcher in watchers {
            if let Ok(one) = watcher.await {
                v.add(one);
            }
        }
        let cpu_after = cpu(&children)?;
        let window = start.elapsed().as_secs_f64();
        let cores = |i: usize| (cpu_after[i] - cpu_before[i]) / window;
        // [publisher, node, node-gateway, relay-1, relay-2, this process]
        let gateway_cores = cores(2) + cores(3) + cores(4);
        let mesh_cores = cores(0) + cores(1);
        let bench_cores = cores(5);
        let origin_tail = served.total.load(Relaxed) - total_until;
        let origin_bytes = total_until - total_before + v.fallback_bytes_after;
        let playlist_bytes = playlists_until - playlists_before;
        v.latencies.sort();
        let pick = |p: f64| {
            v.latencies
                .get(((v.latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        let delivered = v.bytes + v.fallback_bytes;
        let offload = 1.0 - origin_bytes as f64 / delivered.max(1) as f64;
        progress.note(&format!(
            "offload {viewers:>5} viewers: {:.3} % ({:.1} MB from the origin for {:.1} MB delivered), {} late of {}; CPU: gateways {gateway_cores:.2}, publisher and node {mesh_cores:.2}, viewers and origin {bench_cores:.2} cores",
            offload * 100.0,
            origin_bytes as f64 / 1e6,
            delivered as f64 / 1e6,
            v.late,
            v.expected
        ));
        runs.push(OffloadRun {
            viewers,
            sessions_open: fig(sessions_open as f64, "sessions"),
            expected_segments: fig(v.expected as f64, "segments"),
            delivered_by_gateways: fig(v.delivered as f64, "segments"),
            fallback_segments: fig(v.fallback as f64, "segments"),
            late_segments: fig(v.late as f64, "segments"),
            viewer_bytes: fig(delivered as f64, "bytes"),
            viewer_fallback_bytes: fig(v.fallback_bytes as f64, "bytes"),
            origin_bytes: fig(origin_bytes as f64, "bytes"),
            origin_bytes_after_window: fig(origin_tail as f64, "bytes"),
            origin_playlist_bytes: fig(playlist_bytes as f64, "bytes"),
            offload: fig(offload, "ratio"),
            p50: fig(pick(0.5), "ms"),
            p99: fig(pick(0.99), "ms"),
            gateway_cpu: fig(gateway_cores, "cores"),
            mesh_cpu: fig(mesh_cores, "cores"),
            viewer_cpu: fig(bench_cores, "cores"),
        });
        // Sessions close as their clients drop; give the gateways a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(children);
    Ok(OffloadSection {
        topology: format!(
            "Origin: the `meshcast-origin` router in the bench process, counting every byte it serves. Publisher: `meshcast publish`. A node, a node that is also a gateway, and two relays: `meshcast node` / `meshcast relay` child processes, {} gateways in all. Viewers: native WebTransport clients (`meshcast_relay::Client`) in the bench process, spread evenly over the gateways, each asking for every announced segment.",
            gateways.len()
        ),
        bitrate: fig(plan.bitrate as f64 / 1e6, "Mbit/s"),
        segment_duration: seconds(plan.segment_duration),
        measured: seconds(plan.duration),
        runs,
    })
}

/// Starts `meshcast publish` of `master` with a new key in `dir` (from
/// `meshcast keygen`), on
/// loopback QUIC; returns it with its listening address and stream id.
pub(super) async fn spawn_publisher(
    dir: &Path,
    master: &str,
    name: &str,
) -> anyhow::Result<(Spawned, String, String)> {
    let key = dir.join("publisher.key");
    let mut keygen = meshcast()?;
    keygen.arg("keygen").arg("--out").arg(&key);
    let made = tokio::process::Command::from(keygen)
        .output()
        .await
        .context("running `meshcast keygen`")?;
    anyhow::ensure!(
        made.status.success(),
        "`meshcast keygen` failed ({}): {}",
        made.status,
        String::from_utf8_lossy(&made.stderr).trim()
    );
    let mut command = meshcast()?;
    command
        .args(["publish", "--origin", master, "--name", name])
        .arg("--key")
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.join("publisher"))
        .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]);
    let mut publisher = Spawned::spawn("publisher", command)?;
    let bootstrap = publisher.line("listening", START_TIMEOUT).await?;
    let stream = publisher.line("stream", START_TIMEOUT).await?;
    Ok((publisher, bootstrap, stream))
}

/// CPU seconds of each child, then of this process (viewers and origin).
pub(super) fn cpu(children: &[Spawned]) -> anyhow::Result<Vec<f64>> {
    let mut all = children
        .iter()
        .map(|c| cpu_seconds(&c.pid().to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    all.push(cpu_seconds("self")?);
    Ok(all)
}

pub(super) struct AbortOnDrop<T>(pub(super) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens `viewers` sessions, round-robin over the gateways, `WAVE` at a time;
/// sessions that fail to open are left out.
async fn open_viewers(
    gateways: &[Gateway],
    viewers: usize,
    stream: meshcast_proto::StreamId,
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(viewers);
    let mut opening = JoinSet::new();
    for i in 0..viewers {
        let gateway = gateways
            .get(i % gateways.len().max(1))
            .context("no gateway to watch from")?;
        let hash = gateway.hash.clone();
        let url = gateway.url.clone();
        opening.spawn(async move {
            Client::connect(&url, &[hash], stream, "", Duration::from_secs(30)).await
        });
        if opening.len() >= WAVE || i + 1 == viewers {
            while let Some(done) = opening.join_next().await {
                if let Ok(Ok(client)) = done {
                    clients.push(client);
                }
            }
        }
    }
    Ok(clients)
}

#[derive(Default)]
struct Viewed {
    expected: u64,
    delivered: u64,
    late: u64,
    bytes: u64,
    fallback: u64,
    fallback_bytes: u64,
    /// Fetched from the origin after the window closed (for segments
    /// announced in it).
    fallback_bytes_after: u64,
    latencies: Vec<Duration>,
}

impl Viewed {
    fn add(&mut self, o: Viewed) {
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.late += o.late;
        self.bytes += o.bytes;
        self.fallback += o.fallback;
        self.fallback_bytes += o.fallback_bytes;
        self.fallback_bytes_after += o.fallback_bytes_after;
        self.latencies.extend(o.latencies);
    }
}

/// One viewer: asks for every segment announced in `[start, until)` with a
/// deadline of one segment duration; fetches from the origin what a gateway
/// fails to deliver.
async fn view(
    mut client: Client,
    deadline: Duration,
    start: Instant,
    until: Instant,
    http: reqwest::Client,
    fallbacks: Arc<Semaphore>,
) -> Viewed {
    let mut v = Viewed::default();
    let mut asked: HashMap<u64, (Instant, VerifiedHeader)> = HashMap::new();
    let mut fetches = JoinSet::new();
    let descriptor = client.descriptor().descriptor().clone();
    let origin = |header: &VerifiedHeader| -> Option<url::Url> {
        let rendition = descriptor
            .renditions
            .iter()
            .find(|r| r.id == header.id().rendition)?;
        url::Url::parse(&descriptor.origin_url)
            .ok()?
            .join(&rendition.uri)
            .ok()?
            .join(&header.info().uri)
            .ok()
    };
    let fall_back = |header: VerifiedHeader, fetches: &mut JoinSet<Option<(u64, Instant)>>| {
        let (http, fallbacks, url) = (http.clone(), Arc::clone(&fallbacks), origin(&header));
        fetches.spawn(async move {
            let _permit = fallbacks.acquire_owned().await.ok()?;
            let body: Bytes = fetch_url(&http, &url?, header.info().length).await.ok()?;
            header.verify_body(&body, header.info().length).ok()?;
            Some((body.len() as u64, Instant::now()))
        });
    };
    loop {
        let Ok(Ok(event)) = tokio::time::timeout_at(until + deadline, client.next_event()).await
        else {
            break;
        };
        let now = Instant::now();
        match event {
            ClientEvent::Announced(header) if now >= start && now < until => {
                if let Ok(request_id) = client.request(header.id(), 0, deadline).await {
                    asked.insert(request_id, (now, header));
                    v.expected += 1;
                }
            }
            ClientEvent::Gateways(_) => {}
            ClientEvent::Delivered {
                request_id, body, ..
            } => {
                if let Some((asked_at, _)) = asked.remove(&request_id) {
                    let latency = now - asked_at;
                    v.delivered += 1;
                    v.bytes += body.len() as u64;
                    v.late += u64::from(latency > deadline);
                    v.latencies.push(latency);
                }
            }
            ClientEvent::Error { request_id, .. } | ClientEvent::Rejected { request_id, .. } => {
                if let Some((_, header)) = asked.remove(&request_id) {
                    v.late += 1;
                    fall_back(header, &mut fetches);
                }
            }
            ClientEvent::Announced(_) => {}
        }
        if now >= until + deadline {
            break;
        }
    }
    // Never answered: late, and fetched from the origin.
    for (_, (_, header)) in asked.drain() {
        v.late += 1;
        fall_back(header, &mut fetches);
    }
    drop(client);
    while let Some(done) = fetches.join_next().await {
        if let Ok(Some((bytes, at))) = done {
            v.fallback += 1;
            v.fallback_bytes += bytes;
            if at >= until {
                v.fallback_bytes_after += bytes;
            }
        }
    }
    v
}
