//! `meshcast demo`: a complete local deployment for a browser, in one command.
//!
//! Every role runs as a real child process of this very program, on
//! 127.0.0.1: `meshcast origin` (the committed test stream, looped live), a
//! publisher, three edge nodes, and the relay the page enters through. With
//! `--vod` the publisher publishes a five-minute VOD instead (the origin's
//! `/replay/15/`: the test stream fifteen times), which the nodes seed and
//! the gateways fetch on demand, so the page can seek. With `--low-latency`
//! the origin also serves the loop as LL-HLS (parts, blocking reload) and the
//! page plays it in hls.js's low-latency mode. With `--byte-range` it
//! publishes the 20 s VOD as byte ranges of one file per rendition (the
//! origin's `/range/`), and with `--alternate-audio` as video-only variants
//! with an alternate audio rendition (`/alt/`, `EXT-X-MEDIA`). With
//! `--gateways 2` the first node also serves browsers and the relay's Welcome
//! names it. Beside that stream, a second publisher publishes the committed
//! stream as a 20 s DASH VOD (the origin's `/dash/`), which the nodes and the
//! relay follow too: the page plays it with `?format=dash` (Shaka by
//! default, or `?player=dashjs`). An HTTP server in this process serves the
//! page (`--web`) and `/config.json`, which tells the page where everything
//! is.
//!
//! Standard output gets machine-readable lines once the relay serves the
//! streams: `pid <role> <pid>` per child, `stream <id>`, `stream-dash <id>`,
//! `relay <well-known url>`, and last `demo <page url>`. Progress and the children's fate go to
//! standard error; the children's logs go to files in the demo's temporary
//! folder (or to the terminal with `--verbose`).
//!
//! Children are put in their own process group, so a Ctrl-C in the terminal
//! reaches only the demo, which then stops them in order; and they get
//! `PR_SET_PDEATHSIG(SIGKILL)`, so they never outlive a demo that was killed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use meshcast_proto::{SegmentId, StreamId};
use meshcast_relay::Client;
use meshcast_relay::wellknown::WellKnown;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use wtransport::tls::Sha256Digest;

mod children;
mod edge;
mod site;

use children::Children;
use edge::{Edge, serve_edge};
use site::{Site, serve};

/// Flags of `meshcast demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address of the web page (HTTP); port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Folder with the built web page (index.html and what it loads), made by
    /// `cargo xtask demo`.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/web"))]
    web: PathBuf,
    /// HLS folder the origin serves: looped as a live stream, or repeated as a
    /// VOD with --vod.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/media/test-stream"))]
    media: PathBuf,
    /// Gateways browsers can use: 1 (the relay) or 2 (the relay, and the
    /// first edge node, which browsers find through its gateway record).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    gateways: u8,
    /// The entry relay corrupts every Nth segment body it serves, to watch
    /// browsers catch it and fetch elsewhere (0: never).
    #[arg(long, value_name = "N", default_value_t = 0)]
    tamper_every: u32,
    /// Publish on-demand video instead of a live stream: the origin's
    /// `/replay/15/` of the media folder (the committed test stream repeated
    /// 15 times: a 5-minute VOD). The nodes seed it, the gateways fetch what
    /// a browser asks for on demand, and the page shows its duration and
    /// lets you seek.
    #[arg(long)]
    vod: bool,
    /// Low-latency HLS: the origin cuts every segment into parts of
    /// 500 ms and serves them with blocking playlist reload (`/ll/`), and
    /// the page plays in hls.js's low-latency mode, about 1.5 s behind live.
    #[arg(long, conflicts_with = "vod")]
    low_latency: bool,
    /// Publish the media folder as a VOD whose every segment is a byte range
    /// of one file per rendition (the origin's `/range/`: HLS
    /// `EXT-X-BYTERANGE`).
    #[arg(long, conflicts_with_all = ["vod", "low_latency"])]
    byte_range: bool,
    /// Publish the media folder as a VOD whose audio is an alternate
    /// rendition of its own (the origin's `/alt/`: video-only variants, an
    /// `EXT-X-MEDIA` audio playlist and WebVTT subtitles), which the page
    /// plays beside the video.
    #[arg(long, conflicts_with_all = ["vod", "low_latency", "byte_range"])]
    alternate_audio: bool,
    /// Testing only: the page plays through an HTTP edge in front of the
    /// origin that corrupts every Nth media segment it serves, with the
    /// origin as its fallback mirror, to watch browsers reject those bytes
    /// (printing `poisoned <path>` for each) and fetch them from the origin.
    #[arg(long, value_name = "N", hide = true)]
    poisoned_edge: Option<u32>,
    /// Show the children's logs and output on this terminal instead of log files.
    #[arg(long)]
    verbose: bool,
    /// Testing only: restart the edge node's gateway (a new certificate and
    /// port, the same node key) this long after the demo is ready, to watch
    /// pages find it again through its gateway record. Needs --gateways 2.
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration, hide = true)]
    restart_gateway_after: Option<Duration>,
}

/// How many times `--vod` repeats the media folder (`/replay/<loops>/`): the
/// committed 20 s test stream becomes five minutes, long enough to seek in.
const VOD_LOOPS: u32 = 15;

/// Part duration of `--low-latency`: four parts per 2 s segment, a part
/// hold-back of 1.5 s (three parts, as RFC 8216bis recommends).
const PART_TARGET: &str = "500ms";

/// How long the whole deployment may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop after SIGINT before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Loopback QUIC on a free port, for the mesh.
const QUIC_ANY: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
/// The role whose end the demo survives: tests stop it on purpose.
const RELAY: &str = "relay";

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let index = args.web.join("index.html");
    if !index.is_file() {
        bail!(
            "the web page is not built: run `cargo xtask demo` (no {})",
            index.display()
        );
    }
    if !args.media.join("master.m3u8").is_file() {
        bail!(
            "{} is not an HLS folder: it has no master.m3u8",
            args.media.display()
        );
    }
    let web = args
        .web
        .canonicalize()
        .with_context(|| format!("--web {}", args.web.display()))?;
    let media = args
        .media
        .canonicalize()
        .with_context(|| format!("--media {}", args.media.display()))?;
    // Bound first: a busy port fails at once, before any child starts.
    let listener = std::net::TcpListener::bind(args.listen).with_context(|| {
        format!(
            "cannot listen on {} for the web page (pass --listen 127.0.0.1:0 for any free port)",
            args.listen
        )
    })?;
    listener
        .set_nonblocking(true)
        .context("setting up the web page's socket")?;
    let temp = tempfile::Builder::new()
        .prefix("meshcast-demo-")
        .tempdir()
        .context("creating the demo's temporary folder")?;
    let logs = temp.path().join("logs");
    std::fs::create_dir(&logs).with_context(|| format!("creating {}", logs.display()))?;
    if !args.verbose {
        eprintln!(
            "demo: logs in {} (--verbose shows them here)",
            logs.display()
        );
    }
    let mut children = Children {
        exe: std::env::current_exe().context("finding the meshcast binary")?,
        logs,
        verbose: args.verbose,
        list: Vec::new(),
        relay_gone: false,
        step: "starting",
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // Children are spawned from this (the main) thread, inside `block_on`:
    // PR_SET_PDEATHSIG fires when the thread that forked a child ends, and this
    // one lives as long as the demo.
    let result = runtime.block_on(demo(
        &args,
        &web,
        &media,
        temp.path(),
        listener,
        &mut children,
    ));
    children.stop_all();
    drop(runtime);
    let removed = temp.close();
    match (result, removed) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e).context("removing the demo's temporary folder"),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// What the start-up found out.
struct Ready {
    stream: StreamId,
    /// The DASH rendering of the media folder, published beside it.
    dash_stream: StreamId,
    dash_playlist: String,
    /// The origin's base URL.
    origin: String,
    /// The master playlist the publisher ingests, which the page plays.
    playlist: String,
    well_known: String,
    /// The edge node that serves browsers too (--gateways 2): its child
    /// index and arguments, to restart it.
    edge_gateway: Option<(usize, Vec<String>)>,
}

async fn demo(
    args: &DemoArgs,
    web: &Path,
    media: &Path,
    dir: &Path,
    listener: std::net::TcpListener,
    children: &mut Children,
) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("catching SIGTERM")?;
    let listener =
        tokio::net::TcpListener::from_std(listener).context("setting up the web page's socket")?;
    let page_addr = listener.local_addr().context("the web page's address")?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let started = tokio::select! {
        started = tokio::time::timeout_at(deadline, start(args, media, dir, deadline, children)) => Some(started),
        _ = interrupt.recv() => None,
        _ = terminate.recv() => None,
    };
    let ready = match started {
        Some(Ok(ready)) => ready?,
        Some(Err(_)) => bail!(
            "the demo did not come up within {}s (it was {})",
            START_TIMEOUT.as_secs(),
            children.step,
        ),
        None => {
            eprintln!("demo: stopping");
            return Ok(());
        }
    };

    // The poisoned edge serves the origin's paths, so the page's playlist
    // keeps its path and the origin's playlist becomes its fallback.
    let (playlist, fallback, mut edge_server) = match args.poisoned_edge {
        Some(every) => {
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .context("listening for the poisoned edge")?;
            let addr = listener.local_addr().context("the edge's address")?;
            let edge = Arc::new(Edge::new(&ready.origin, every)?);
            let app = axum::Router::new().fallback(serve_edge).with_state(edge);
            let path = ready
                .playlist
                .strip_prefix(&ready.origin)
                .context("the playlist is not on the origin")?;
            println!("edge http://{addr}");
            (
                format!("http://{addr}{path}"),
                vec![ready.playlist.clone()],
                Some(tokio::spawn(
                    async move { axum::serve(listener, app).await },
                )),
            )
        }
        None => (ready.playlist.clone(), Vec::new(), None),
    };
    let config = serde_json::json!({
        "wellKnown": ready.well_known,
        "stream": ready.stream.to_string(),
        "playlist": playlist,
        "fallback": fallback,
        "vod": args.vod || args.byte_range || args.alternate_audio,
        // The second stream: ?format=dash plays it.
        "dash": {
            "stream": ready.dash_stream.to_string(),
            "playlist": ready.dash_playlist,
            "vod": true,
        },
        "lowLatency": args.low_latency,
        "token": "",
        "gateways": args.gateways,
        "tamperEvery": args.tamper_every,
    });
    let site = Arc::new(Site {
        root: web.to_path_buf(),
        config: serde_json::to_vec_pretty(&config).context("encoding config.json")?,
    });
    let app = axum::Router::new().fallback(serve).with_state(site);
    let mut server = tokio::spawn(async move { axum::serve(listener, app).await });

    let page = format!("http://{}/", reachable(page_addr));
    for child in &children.list {
        println!("pid {} {}", child.role, child.process.id());
    }
    println!("stream {}", ready.stream);
    println!("stream-dash {}", ready.dash_stream);
    println!("relay {}", ready.well_known);
    println!("demo {page}");
    eprintln!("demo: ready");
    eprintln!("open {page} in Chromium or Chrome; Ctrl-C stops everything");

    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let restart_at = args
        .restart_gateway_after
        .map(|after| tokio::time::Instant::now() + after);
    let mut restart = ready.edge_gateway.clone().filter(|_| restart_at.is_some());
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = tokio::time::sleep_until(restart_at.unwrap_or_else(tokio::time::Instant::now)), if restart.is_some() => {
                if let Some((index, node_args)) = restart.take() {
                    eprintln!("demo: restarting node1 (a new gateway certificate and port)");
                    let args: Vec<&str> = node_args.iter().map(String::as_str).collect();
                    let node = children.restart(index, &args)?;
                    let url = children.line(node, "gateway").await?;
                    println!("pid node1 {}", children.list[node].process.id());
                    println!("gateway node1 {url}");
                }
            }
            _ = terminate.recv() => break,
            served = &mut server => {
                let why = match served {
                    Ok(Ok(())) => "it ended".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                bail!("the web page's HTTP server stopped: {why}");
            }
            _ = tick.tick() => children.check(true)?,
        }
    }
    eprintln!("demo: stopping");
    server.abort();
    if let Some(edge) = edge_server.take() {
        edge.abort();
    }
    Ok(())
}

/// Starts every child in order and waits until the relay serves the stream.
async fn start(
    args: &DemoArgs,
    media: &Path,
    dir: &Path,
    deadline: tokio::time::Instant,
    children: &mut Children,
) -> anyhow::Result<Ready> {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();

    children.step("starting the origin");
    let media = media.to_string_lossy();
    let mut origin_args = vec!["origin", "--dir", &media, "--listen", "127.0.0.1:0"];
    if args.low_latency {
        origin_args.extend(["--parts", PART_TARGET]);
    }
    let origin = children.spawn("origin", &origin_args)?;
    let origin_url = children.line(origin, "origin").await?;
    let playlist = if args.vod {
        format!("{origin_url}/replay/{VOD_LOOPS}/master.m3u8")
    } else if args.byte_range {
        format!("{origin_url}/range/master.m3u8")
    } else if args.alternate_audio {
        format!("{origin_url}/alt/master.m3u8")
    } else if args.low_latency {
        format!("{origin_url}/ll/master.m3u8")
    } else {
        format!("{origin_url}/live/master.m3u8")
    };

    children.step("starting the publishers");
    // The stream of the flags above, and beside it the media folder as a
    // DASH VOD (the origin's `/dash/`) for ?format=dash.
    let dash_playlist = format!("{origin_url}/dash/manifest.mpd");
    let mut publishers = Vec::new();
    for (role, origin, name) in [
        ("publisher", playlist.as_str(), "demo"),
        ("publisher-dash", dash_playlist.as_str(), "demo-dash"),
    ] {
        let key = dir.join(format!("{role}.key"));
        crate::keygen::write_new_key(&key, false)?;
        let data = path(role);
        publishers.push(children.spawn(
            role,
            &[
                "publish",
                "--origin",
                origin,
                "--key",
                &key.to_string_lossy(),
                "--name",
                name,
                "--data-dir",
                &data,
                "--listen",
                QUIC_ANY,
            ],
        )?);
    }
    let publisher_addr = children.line(publishers[0], "listening").await?;
    let stream_text = children.line(publishers[0], "stream").await?;
    let dash_addr = children.line(publishers[1], "listening").await?;
    let dash_text = children.line(publishers[1], "stream").await?;
    let parse = |text: &str| -> anyhow::Result<StreamId> {
        text.parse()
            .map_err(|e| anyhow::anyhow!("a publisher printed a bad stream id {text:?}: {e}"))
    };
    let stream = parse(&stream_text)?;
    let dash_stream = parse(&dash_text)?;

    children.step("starting 3 nodes");
    let mut nodes = Vec::new();
    let mut node1_args: Option<Vec<String>> = None;
    for n in 1..=3 {
        let data = path(&format!("node{n}"));
        let mut node_args = vec![
            "node",
            "--data-dir",
            &data,
            "--listen",
            QUIC_ANY,
            "--bootstrap",
            &publisher_addr,
            "--bootstrap",
            &dash_addr,
            "--follow",
            &stream_text,
            "--follow",
            &dash_text,
        ];
        if n == 1 && args.gateways == 2 {
            node_args.extend([
                "--browser-listen",
                "127.0.0.1:0",
                "--web-listen",
                "127.0.0.1:0",
            ]);
        }
        if n == 1 {
            node1_args = Some(node_args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        }
        nodes.push(children.spawn(&format!("node{n}"), &node_args)?);
    }
    let mut node_addrs = Vec::new();
    for &node in &nodes {
        node_addrs.push(children.line(node, "listening").await?);
    }
    // The relay's Welcome names the edge node's gateway from the record the
    // node gossips: no --peer-gateway needed.
    let edge_gateway = if args.gateways == 2 {
        let url = children.line(nodes[0], "gateway").await?;
        println!("gateway node1 {url}");
        let node1_args = node1_args.context("node1's arguments")?;
        Some((nodes[0], node1_args))
    } else {
        None
    };

    children.step("starting the relay");
    // The relay's QUIC port is chosen here, so that it can be given as its
    // confirmed external address too (a relay server needs one).
    let port = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|socket| socket.local_addr())
        .context("finding a free UDP port for the relay")?
        .port();
    let relay_quic = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
    let relay_data = path("relay");
    let tamper = args.tamper_every.to_string();
    // A VOD is not downloaded whole by the relay: it fetches each segment a
    // browser asks for from the seeding nodes (on demand), as an operator's
    // relay serving a catalogue would. Not the DASH stream: players that
    // name segments by URL (Shaka, dash.js) find them through the headers
    // the gateway holds (a header query), and an on-demand relay holds none
    // before they are asked for.
    let relay_follow = if args.vod || args.byte_range || args.alternate_audio {
        format!("{stream_text}:0")
    } else {
        stream_text.clone()
    };
    let mut relay_args = vec![
        "relay",
        "--data-dir",
        &relay_data,
        "--listen",
        &relay_quic,
        "--external",
        &relay_quic,
        "--browser-listen",
        "127.0.0.1:0",
        "--web-listen",
        "127.0.0.1:0",
        "--follow",
        &relay_follow,
        "--follow",
        &dash_text,
        "--bootstrap",
        &publisher_addr,
        "--bootstrap",
        &dash_addr,
    ];
    for addr in &node_addrs {
        relay_args.extend(["--bootstrap", addr.as_str()]);
    }
    if args.tamper_every > 0 {
        relay_args.extend(["--fault-corrupt-every", &tamper]);
    }
    let relay = children.spawn(RELAY, &relay_args)?;
    let well_known = children.line(relay, "well-known").await?;

    children.step("waiting for the relay to serve the streams");
    // With two gateways, ready also means the relay has heard the edge
    // node's gateway record, so that a page gets both at once.
    let others = usize::from(args.gateways == 2);
    let tampering = args.tamper_every > 0;
    for stream in [stream, dash_stream] {
        wait_until_serving(&well_known, stream, others, tampering, deadline, children).await?;
    }
    Ok(Ready {
        stream,
        dash_stream,
        dash_playlist,
        origin: origin_url,
        playlist,
        well_known,
        edge_gateway,
    })
}

/// Polls until the relay's well-known answers and a session for `stream`
/// opens and can serve video (see [`probe`]): then a browser arriving gets
/// video at once.
async fn wait_until_serving(
    well_known: &str,
    stream: StreamId,
    others: usize,
    tampering: bool,
    deadline: tokio::time::Instant,
    children: &mut Children,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building an HTTP client")?;
    let mut last = String::from("no attempt yet");
    // Leaves time to say why before the overall start-up timeout.
    let give_up = deadline - Duration::from_secs(1);
    loop {
        children.check(false)?;
        let attempt =
            tokio::time::timeout_at(give_up, probe(&http, well_known, stream, others, tampering))
                .await;
        match attempt {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => {
                last =
                    "Welcome named no live edge, or fewer other gateways than started, yet".into()
            }
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => {}
        }
        if tokio::time::Instant::now() + Duration::from_millis(500) >= give_up {
            bail!(
                "the relay did not serve the stream in time (last attempt: {last}){}",
                children.tail_of(RELAY)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One readiness check; `Ok(false)` while the relay holds nothing of a live
/// stream. A live stream is ready when Welcome names its live edge. A VOD has
/// no edge, and an on-demand gateway may hold nothing until asked, so it is
/// ready when the first segment of its first rendition comes through the
/// relay (fetched on demand from the mesh, as a browser's would be; from a
/// `tampering` relay, a body that fails verification is that segment too).
/// Either way Welcome must name `others` other gateways (their records
/// reached the relay).
async fn probe(
    http: &reqwest::Client,
    well_known: &str,
    stream: StreamId,
    others: usize,
    tampering: bool,
) -> anyhow::Result<bool> {
    let response = http
        .get(well_known)
        .send()
        .await
        .with_context(|| format!("GET {well_known}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {well_known}: {}",
        response.status()
    );
    let body = response
        .bytes()
        .await
        .with_context(|| format!("GET {well_known}"))?;
    let info: WellKnown =
        serde_json::from_slice(&body).with_context(|| format!("the JSON of {well_known}"))?;
    let hashes = info
        .certificate_hashes
        .iter()
        .map(|h| parse_hash(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut client = Client::connect(
        &info.webtransport,
        &hashes,
        stream,
        "",
        Duration::from_secs(10),
    )
    .await?;
    if client.gateways().len() < others {
        client.close();
        return Ok(false);
    }
    let descriptor = client.descriptor().descriptor();
    if descriptor.live {
        let held = !client.live_edge().is_empty();
        client.close();
        return Ok(held);
    }
    let rendition = descriptor
        .renditions
        .first()
        .map(|r| r.id)
        .context("the VOD's descriptor names no rendition")?;
    let first = SegmentId::media(stream, rendition, 0);
    let fetched = client.fetch(first, Duration::from_secs(5)).await;
    client.close();
    match fetched {
        Err(meshcast_relay::client::ClientError::Protocol(_)) if tampering => Ok(true),
        fetched => {
            fetched.with_context(|| format!("the relay did not deliver {first} of the VOD"))?;
            Ok(true)
        }
    }
}

fn parse_hash(hex_text: &str) -> anyhow::Result<Sha256Digest> {
    let bytes: [u8; 32] = hex::decode(hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{hex_text:?} is not a SHA-256 hash in hex"))?;
    Ok(Sha256Digest::new(bytes))
}

/// The address to print for a listener: loopback when it listens on all interfaces.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}
