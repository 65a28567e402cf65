//! `meshcast-bench`: benchmarks of meshcast that print figures.
//!
//! `mesh`, `relay` and `sim` are single benches; `all` runs the whole suite and
//! writes a JSON, Markdown and SVG report (see `docs/benchmarks.md`). The
//! hidden `peer`, `node` and `attack` subcommands are processes the suite spawns of
//! this program; the roles under test (`meshcast relay`, `node`, `publish`,
//! `keygen`) are `meshcast` child processes (see [`proc::meshcast`]).
//!
//! A separate program so that the `meshcast` volunteers install carries none
//! of this (nor plotters, indicatif or a quinn of its own).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshcast_node::unix_now_us as now_us;

use mesh::{MeshBench, MeshReport};

mod all;
mod attackers;
mod churn;
mod cut;
mod figure;
mod hostile;
mod idle;
mod lab;
mod loss;
mod mesh;
mod netns;
mod offload;
mod playback;
mod proc;
mod progress;
mod quic;
mod report;
mod rss;
mod sim;
mod throughput;
mod viewers;
mod vod;

const ABOUT: &str = "meshcast-bench — benchmarks of meshcast that print figures.

The roles under test run as `meshcast` child processes: the `meshcast` binary
next to this one (same target directory), or the one named by MESHCAST_BIN.";

#[derive(Debug, Parser)]
#[command(name = "meshcast-bench", version, about = ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Propagation latency, duplicate ratio and origin bytes in a mesh of swarms on loopback.
    Mesh {
        /// Nodes besides the publisher.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
        nodes: u32,
        /// Bytes per segment.
        #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
        segment_bytes: u32,
        /// Segments to publish.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        segments: u32,
        /// Time between segments, e.g. 1s or 500ms.
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
        /// Nodes forward a segment only once they hold all of it (turn off
        /// cut-through), to compare with the default.
        #[arg(long)]
        store_and_forward: bool,
        /// Every node's upload cap (the publisher's too), e.g. 100Mbit/s: an
        /// uplink, which loopback does not have.
        #[arg(long, value_parser = sim::parse_rate)]
        max_upload: Option<f64>,
        /// Only the first N nodes dial the publisher (default: every node).
        #[arg(long, value_name = "N")]
        publisher_degree: Option<usize>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sessions served by one relay: native WebTransport clients in this process
    /// against a `meshcast relay` child process on loopback.
    Relay {
        /// Viewer sessions.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=20_000))]
        sessions: u32,
        /// Stream bitrate in bit/s, e.g. 2000000.
        #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(10_000..=100_000_000))]
        bitrate: u64,
        /// Segment duration, e.g. 2s.
        #[arg(long, default_value = "2s", value_parser = parse_interval)]
        segment_duration: Duration,
        /// Measured time, after every session is open.
        #[arg(long, default_value = "20s", value_parser = parse_interval)]
        duration: Duration,
        /// Hostile viewers of each kind (no CONNECT, stalled reader, slow
        /// Hello, waiters, reused ids, garbage, unknown stream, slowloris)
        /// attacking the relay while the sessions are measured.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
        attackers: u32,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// CPU and wake-ups of a `meshcast node` child process with many idle
    /// peers connected (a stream is followed, nothing published).
    Idle {
        /// In-process peers connected to the node.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1000))]
        peers: u32,
        /// Measured seconds, after a 10 s settle time.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The whole suite: mesh propagation, origin offload, relay fan-out,
    /// segment-protocol throughput against raw QUIC, node memory and (as root)
    /// the mesh under network conditions. Writes `<out>/<date>.json`,
    /// `<out>/<date>.md` and `<out>/<date>.svg`.
    All(all::AllArgs),
    /// The whole-node simulator: thousands of mesh cores over a modelled
    /// internet (uplinks and downlinks shared fairly, regional latency, NAT,
    /// churn, misbehaving peers). Deterministic for a seed.
    Sim(sim::SimArgs),
    /// Scenarios in a network lab of kernel namespaces (needs root, `ip`
    /// and `nft`; `cargo xtask setup` installs nftables).
    Lab(lab::LabArgs),
    /// The far end of the throughput bench (started by `all`).
    #[command(hide = true)]
    Peer(throughput::PeerArgs),
    /// One mesh node of the network-conditions bench (started by `all`).
    #[command(hide = true)]
    Node(netns::NodeArgs),
    /// Hostile viewers against a gateway (started by `relay --attackers`).
    #[command(hide = true)]
    Attack(attackers::AttackArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mesh {
            nodes,
            segment_bytes,
            segments,
            interval,
            store_and_forward,
            max_upload,
            publisher_degree,
            json,
        } => mesh(
            MeshBench {
                nodes: nodes as usize,
                segment_bytes: segment_bytes as usize,
                segments: segments as usize,
                interval,
                cut_through: !store_and_forward,
                max_upload: max_upload.map(|bits| (bits / 8.0) as u64),
                publisher_degree,
            },
            json,
        ),
        Command::Relay {
            sessions,
            bitrate,
            segment_duration,
            duration,
            attackers,
            json,
        } => relay(
            RelayBench {
                sessions: sessions as usize,
                bitrate,
                segment_duration,
                duration,
                attackers: attackers as usize,
            },
            json,
        ),
        Command::Idle {
            peers,
            seconds,
            json,
        } => idle(
            idle::IdleBench {
                peers: peers as usize,
                duration: Duration::from_secs(seconds),
            },
            json,
        ),
        Command::All(args) => all::run(args),
        Command::Sim(args) => sim::run_cli(args),
        Command::Lab(args) => lab::cli(args),
        Command::Peer(args) => throughput::peer(args),
        Command::Node(args) => netns::node(args),
        Command::Attack(args) => attackers::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (else `default`).
fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn mesh(bench: MeshBench, json: bool) -> anyhow::Result<()> {
    init_logs("warn");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(mesh::run(&bench, |phase| eprintln!("bench: {phase}")))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_mesh(&report);
    }
    if report.delivered < report.nodes * report.segments {
        anyhow::bail!(
            "only {} of {} (node, segment) pairs were delivered",
            report.delivered,
            report.nodes * report.segments
        );
    }
    Ok(())
}

fn idle(bench: idle::IdleBench, json: bool) -> anyhow::Result<()> {
    // The peers have no bootstrap peer: Kademlia warns of it every second.
    init_logs("warn,libp2p_kad=error");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(idle::run(&bench, |phase| eprintln!("bench: {phase}")))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        idle::print(&report);
    }
    Ok(())
}

fn print_mesh(r: &MeshReport) {
    println!(
        "mesh: {} nodes, {} segments of {} bytes (one publisher, QUIC on 127.0.0.1)",
        r.nodes, r.segments, r.segment_bytes
    );
    println!(
        "  delivered        {} of {}",
        r.delivered,
        r.nodes * r.segments
    );
    println!(
        "  propagation      p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms
    );
    println!(
        "  duplicate ratio  {:.3} (bytes received ÷ bytes needed)",
        r.duplicate_ratio
    );
    println!(
        "  origin bytes     {} ({:.2} × the stream)",
        r.origin_bytes,
        r.origin_bytes as f64 / r.stream_bytes.max(1) as f64
    );
}

/// Parses "250ms", "1s".
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
}

/// What `meshcast-bench relay` measures.
#[derive(Debug, Clone)]
pub struct RelayBench {
    pub sessions: usize,
    /// Bits per second of the stream each session watches.
    pub bitrate: u64,
    pub segment_duration: Duration,
    /// How long the measured part runs, after every session is open.
    pub duration: Duration,
    /// Hostile viewers of each [`meshcast_relay::attack::Kind`] during it.
    pub attackers: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayReport {
    pub sessions: usize,
    pub sessions_open: usize,
    pub bitrate_mbps: f64,
    pub segment_bytes: usize,
    pub duration_s: f64,
    /// Segments announced to sessions in the window, and delivered of them.
    pub expected_segments: u64,
    pub delivered_segments: u64,
    /// Delivered after their deadline (one segment duration after announcement), or never.
    pub late_segments: u64,
    pub delivered_mbps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub relay_cpu_cores: f64,
    pub relay_core_seconds_per_gbit: f64,
    pub relay_peak_rss_mib: f64,
    pub relay_rss_per_session_mib: f64,
    pub attackers_per_kind: usize,
    /// Times an attacker was cut off or refused and started over.
    pub attacks_cut_off: u64,
}

/// The relay child and what it printed.
struct Relay {
    child: proc::Spawned,
    listening: String,
    gateway: String,
    cert_hash: String,
    /// The well-known endpoint's address.
    web: String,
}

/// Starts `meshcast relay` on loopback and reads its addresses.
async fn start_relay(
    data_dir: &std::path::Path,
    sessions: usize,
    publisher: &meshcast_proto::PublicKey,
) -> anyhow::Result<Relay> {
    const STARTUP: Duration = Duration::from_secs(30);
    let mut command = proc::meshcast()?;
    command.args(["relay", "--data-dir"]).arg(data_dir).args([
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "--store-max-bytes",
        "256MiB",
        "--serve-publisher",
        &publisher.to_string(),
    ]);
    proc::serve_browsers_from_many(&mut command, sessions);
    let mut child = proc::Spawned::spawn("relay", command)?;
    let listening = child.line("listening", STARTUP).await?;
    let gateway = child.line("gateway", STARTUP).await?;
    let cert_hash = child.line("cert-hash", STARTUP).await?;
    let well_known = child.line("well-known", STARTUP).await?;
    let web = well_known
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    Ok(Relay {
        child,
        listening,
        gateway,
        cert_hash,
        web,
    })
}

/// One viewer: requests every announced segment with a deadline of one
/// segment duration, and records when each arrives.
async fn watch(
    mut client: meshcast_relay::Client,
    deadline: Duration,
    until: tokio::time::Instant,
    start: tokio::time::Instant,
) -> (u64, u64, u64, u64, Vec<Duration>) {
    use meshcast_relay::ClientEvent;
    let mut asked: std::collections::HashMap<u64, tokio::time::Instant> =
        std::collections::HashMap::new();
    let (mut expected, mut delivered, mut late, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    loop {
        let event = tokio::time::timeout_at(until + deadline, client.next_event()).await;
        let Ok(Ok(event)) = event else { break };
        let now = tokio::time::Instant::now();
        match event {
            ClientEvent::Announced(header) if now >= start && now < until => {
                if let Ok(request_id) = client.request(header.id(), 0, deadline).await {
                    asked.insert(request_id, now);
                    expected += 1;
                }
            }
            ClientEvent::Gateways(_) => {}
            ClientEvent::Delivered {
                request_id, body, ..
            } => {
                if let Some(asked_at) = asked.remove(&request_id) {
                    let latency = now - asked_at;
                    delivered += 1;
                    bytes += body.len() as u64;
                    late += u64::from(latency > deadline);
                    latencies.push(latency);
                }
            }
            ClientEvent::Error { request_id, .. } | ClientEvent::Rejected { request_id, .. } => {
                if asked.remove(&request_id).is_some() {
                    late += 1;
                }
            }
            ClientEvent::Announced(_) => {}
        }
        if now >= until + deadline {
            break;
        }
    }
    // Never delivered counts as late.
    late += asked.len() as u64;
    (expected, delivered, late, bytes, latencies)
}

fn relay(bench: RelayBench, json: bool) -> anyhow::Result<()> {
    init_logs("error");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(run_relay(&bench, &|phase| eprintln!("bench: {phase}")))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "relay: {} sessions at {:.1} Mbit/s ({} B segments every {:?}), {:.0} s measured",
            report.sessions,
            report.bitrate_mbps,
            report.segment_bytes,
            bench.segment_duration,
            report.duration_s
        );
        println!("  sessions open    {}", report.sessions_open);
        println!(
            "  delivered        {} of {} segments, {:.1} Mbit/s (goal {:.1})",
            report.delivered_segments,
            report.expected_segments,
            report.delivered_mbps,
            report.bitrate_mbps * report.sessions as f64
        );
        println!("  late segments    {}", report.late_segments);
        println!(
            "  latency          p50 {:.1} ms  p99 {:.1} ms",
            report.p50_ms, report.p99_ms
        );
        println!(
            "  relay CPU        {:.2} cores ({:.2} core-seconds per Gbit/s delivered)",
            report.relay_cpu_cores, report.relay_core_seconds_per_gbit
        );
        println!(
            "  relay peak RSS   {:.0} MiB ({:.2} MiB per session)",
            report.relay_peak_rss_mib, report.relay_rss_per_session_mib
        );
        if report.attackers_per_kind > 0 {
            println!(
                "  attackers        {} of each of {} kinds, cut off or refused {} times",
                report.attackers_per_kind,
                meshcast_relay::attack::Kind::ALL.len(),
                report.attacks_cut_off
            );
        }
    }
    Ok(())
}

/// Starts `bench.attackers` hostile viewers of each kind against `relay`, in
/// a process of their own ([`attackers`]), attacking for `duration`.
async fn attack(
    bench: &RelayBench,
    relay: &Relay,
    hash: &wtransport::tls::Sha256Digest,
    stream: meshcast_proto::StreamId,
    duration: Duration,
    progress: &dyn Fn(&str),
) -> anyhow::Result<Option<proc::Spawned>> {
    use meshcast_relay::attack::{Kind, Target};
    if bench.attackers == 0 {
        return Ok(None);
    }
    let quic = url::Url::parse(&relay.gateway)
        .ok()
        .and_then(|u| Some(std::net::SocketAddr::from(([127, 0, 0, 1], u.port()?))))
        .context("the relay printed a gateway URL without a port")?;
    let target = Target {
        url: relay.gateway.clone(),
        quic,
        cert_hash: *hash.as_ref(),
        web: relay
            .web
            .parse()
            .context("the relay printed a bad well-known address")?,
        stream,
    };
    progress(&format!(
        "{} attackers of each of {} kinds (a process of their own)",
        bench.attackers,
        Kind::ALL.len()
    ));
    Ok(Some(
        attackers::spawn(&target, bench.attackers, duration).await?,
    ))
}

/// Viewers per source address: within the relay's default per-address
/// limits (32 sessions, a burst of 40 new connections), so that the bench
/// runs the relay as deployed. All of 127/8 is this host's loopback.
const VIEWERS_PER_ADDRESS: usize = 20;

/// The source address of good viewer `n`: 127.1.x.y.
fn viewer_addr(n: usize) -> std::net::IpAddr {
    let a = n / VIEWERS_PER_ADDRESS;
    std::net::IpAddr::from([127, 1, (a / 250) as u8, (1 + a % 250) as u8])
}

async fn run_relay(bench: &RelayBench, progress: &dyn Fn(&str)) -> anyhow::Result<RelayReport> {
    use meshcast_proto::{Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo};

    let data_dir =
        std::env::temp_dir().join(format!("meshcast-bench-relay-{}", std::process::id()));
    let key = PublisherKey::from_seed([11; 32]);
    // Viewers and attackers come from many loopback addresses: the relay
    // keeps its default per-address limits.
    let room = bench.sessions + bench.attackers * meshcast_relay::attack::Kind::ALL.len();
    let relay = start_relay(&data_dir, room, &key.public()).await?;
    let pid = relay.child.pid();
    progress(&format!("relay {} (pid {pid})", relay.gateway));

    // The publisher: an in-process node that injects synthetic segments.
    let (publisher, publisher_driver) = meshcast_node::Node::new(
        meshcast_node::Config {
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?],
            ..Default::default()
        },
        libp2p::identity::Keypair::generate_ed25519(),
    )?;
    let publisher_driver = tokio::spawn(publisher_driver.run());
    publisher.dial(relay.listening.parse()?).await?;
    let segment_bytes =
        (bench.bitrate as f64 * bench.segment_duration.as_secs_f64() / 8.0) as usize;
    let descriptor = Descriptor {
        publisher: key.public(),
        name: "bench-relay".into(),
        renditions: vec![Rendition {
            id: 0,
            name: "bench".into(),
            bandwidth: bench.bitrate,
            codecs: String::new(),
            width: 0,
            height: 0,
            uri: String::new(),
            ..Default::default()
        }],
        origin_url: String::new(),
        segment_duration_ms: bench.segment_duration.as_millis() as u32,
        live: true,
        issued_at_us: now_us(),
        private: false,
    }
    .sign(&key)?;
    let stream = descriptor.stream_key();
    publisher.publish(descriptor).await?;
    let mut sequence = 0u64;
    let mut body = vec![0u8; segment_bytes];
    let inject = {
        let publisher = publisher.clone();
        move |sequence: u64, body: &mut Vec<u8>| {
            body[..8.min(segment_bytes)]
                .copy_from_slice(&sequence.to_be_bytes()[..8.min(segment_bytes)]);
            let id = SegmentId::media(stream.id, 0, sequence);
            let header = SegmentInfo::for_body(
                id,
                body,
                bench.segment_duration.as_micros() as u64,
                now_us(),
            )
            .sign(&key)
            .verify(&stream);
            let publisher = publisher.clone();
            let body = bytes::Bytes::copy_from_slice(body);
            async move {
                if let Ok(header) = header {
                    let _ = publisher.inject(header, body).await;
                }
            }
        }
    };
    inject(sequence, &mut body).await;
    sequence += 1;

    progress(&format!("opening {} sessions", bench.sessions));
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&relay.cert_hash, &mut hash)
        .context("the relay printed a bad certificate hash")?;
    let hash = wtransport::tls::Sha256Digest::new(hash);
    let mut clients = Vec::with_capacity(bench.sessions);
    let mut opening = tokio::task::JoinSet::new();
    let mut failed = 0;
    for i in 0..bench.sessions {
        let (url, hash) = (relay.gateway.clone(), hash.clone());
        let bind = std::net::SocketAddr::new(viewer_addr(i), 0);
        opening.spawn(async move {
            let endpoint = meshcast_relay::Client::endpoint_at(Some(bind), &[hash])
                .map_err(|e| anyhow::anyhow!("a client endpoint: {e}"))?;
            meshcast_relay::Client::connect_with(
                endpoint,
                &url,
                stream.id,
                "",
                Duration::from_secs(30),
            )
            .await
            .map_err(anyhow::Error::from)
        });
        // Open in waves, as viewers arrive, not all in one instant.
        if opening.len() >= 50 || i + 1 == bench.sessions {
            while let Some(done) = opening.join_next().await {
                match done {
                    Ok(Ok(client)) => clients.push(client),
                    _ => failed += 1,
                }
            }
        }
    }
    if failed > 0 {
        progress(&format!("{failed} sessions failed to open"));
    }
    let sessions_open = clients.len();

    progress(&format!("measuring for {:?}", bench.duration));
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let until = start + bench.duration;
    let attacks = attack(
        bench,
        &relay,
        &hash,
        stream.id,
        until - tokio::time::Instant::now(),
        progress,
    )
    .await?;
    let cpu_before = proc::cpu_seconds(&pid.to_string())?;
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(watch(client, bench.segment_duration, until, start)))
        .collect();
    let mut next = tokio::time::Instant::now();
    while next < until {
        tokio::time::sleep_until(next).await;
        inject(sequence, &mut body).await;
        sequence += 1;
        next += bench.segment_duration;
    }
    let mut expected = 0;
    let mut delivered = 0;
    let mut late = 0;
    let mut bytes = 0;
    let mut latencies = Vec::new();
    for watcher in watchers {
        if let Ok((e, d, l, b, lat)) = watcher.await {
            expected += e;
            delivered += d;
            late += l;
            bytes += b;
            latencies.extend(lat);
        }
    }
    let cpu_after = proc::cpu_seconds(&pid.to_string())?;
    let peak_rss = proc::memory(pid)?.peak as f64 / (1024.0 * 1024.0);
    let attacks_cut_off = match attacks {
        Some(child) => attackers::cut_off(child, Duration::from_secs(30)).await?,
        None => 0,
    };
    publisher_driver.abort();
    drop(relay);
    let _ = std::fs::remove_dir_all(&data_dir);

    latencies.sort();
    let pick = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let seconds = bench.duration.as_secs_f64();
    let delivered_mbps = bytes as f64 * 8.0 / seconds / 1e6;
    let cpu = cpu_after - cpu_before;
    Ok(RelayReport {
        sessions: bench.sessions,
        sessions_open,
        bitrate_mbps: bench.bitrate as f64 / 1e6,
        segment_bytes,
        duration_s: seconds,
        expected_segments: expected,
        delivered_segments: delivered,
        late_segments: late,
        delivered_mbps,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        relay_cpu_cores: cpu / seconds,
        relay_core_seconds_per_gbit: cpu / (bytes as f64 * 8.0 / 1e9).max(1e-9),
        relay_peak_rss_mib: peak_rss,
        relay_rss_per_session_mib: peak_rss / sessions_open.max(1) as f64,
        attackers_per_kind: bench.attackers,
        attacks_cut_off,
    })
}
