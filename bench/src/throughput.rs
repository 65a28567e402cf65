//! Throughput of the segment protocol against raw QUIC, between the same
//! two processes in the same run.
//!
//! The far end is a child process, `meshcast-bench peer`: a real meshcast
//! node (store, scheduler, `/meshcast/segment/2` over libp2p QUIC) holding
//! signed segments, and a quinn endpoint that sends and swallows bytes. This
//! process pulls and pushes the same number of bytes each way over both, in
//! chunks of one segment, the same number of streams in flight, alternating
//! protocols. meshcast's figures include everything its protocol does:
//! frames, signed headers, BLAKE3 verification of every body on arrival, the
//! node's bookkeeping. quinn gets the QUIC windows libp2p-quic configures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use meshcast_node::exchange::{self, ExchangeError, Framed, Pushed};
use meshcast_proto::frame::Limits;
use meshcast_proto::pb;
use meshcast_proto::{
    Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo, SignedHeader, StreamKey,
    VerifiedDescriptor,
};

use super::proc::{Spawned, bench_self, cpu_seconds, quiet};
use super::progress::Progress;
use super::quic::{MAX_REQUEST, quinn_client, quinn_server, serve_quinn};
use super::report::{ProtocolFigures, ThroughputSection, fig};

/// Bytes per stream: one segment (a 4 s segment of a 2 Mbit/s stream).
const CHUNK: usize = 1 << 20;
/// Streams in flight at once, for both protocols.
const IN_FLIGHT: usize = 4;
/// Segments the peer holds for pulls (pulled round-robin).
const HELD: u64 = 16;
/// First sequence number of pushed segments (held ones are below).
const PUSHED_FROM: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);
/// The raw libp2p variant's protocol: quinn's requests over libp2p streams.
const RAW_PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/meshcast/bench-raw/1");

#[derive(Debug, Clone)]
pub struct Plan {
    pub mib_each_way: usize,
    pub rounds: usize,
}

/// `meshcast-bench peer`: the far end of the throughput bench.
#[derive(Debug, clap::Args)]
pub struct PeerArgs {
    /// Bytes per segment held for pulls.
    #[arg(long, default_value_t = CHUNK as u32, value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub chunk_bytes: u32,
    /// Segments held for pulls.
    #[arg(long, default_value_t = HELD, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub segments: u64,
    /// The node's store, MiB: room for every pushed segment besides the
    /// held ones, so that none of those is evicted.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=16_384))]
    pub store_mib: u64,
}

/// The stream both processes use: same key, same id (descriptors signed
/// apart differ only in their issue time).
fn bench_stream() -> anyhow::Result<(PublisherKey, VerifiedDescriptor)> {
    let key = PublisherKey::from_seed([7; 32]);
    let descriptor = Descriptor {
        publisher: key.public(),
        name: "bench-throughput".into(),
        renditions: vec![Rendition {
            id: 0,
            name: "bench".into(),
            bandwidth: 2_000_000,
            codecs: String::new(),
            width: 0,
            height: 0,
            uri: String::new(),
            ..Default::default()
        }],
        origin_url: String::new(),
        segment_duration_ms: 4000,
        live: true,
        issued_at_us: meshcast_node::unix_now_us(),
        private: false,
    }
    .sign(&key)?;
    Ok((key, descriptor))
}

fn sign(key: &PublisherKey, stream: &StreamKey, sequence: u64, body: &[u8]) -> SignedHeader {
    let id = SegmentId::media(stream.id, 0, sequence);
    SegmentInfo::for_body(id, body, 4_000_000, meshcast_node::unix_now_us()).sign(key)
}

fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect::<Vec<u8>>()
        .into()
}

/// A second libp2p swarm (QUIC, libp2p-stream and nothing else) that
/// answers the quinn requests on `RAW_PROTOCOL` streams: the libp2p stack
/// alone, without meshcast's frames, verification and node.
async fn raw_server(chunk: Bytes) -> anyhow::Result<Multiaddr> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .map_err(|e| anyhow::anyhow!("building the raw libp2p swarm: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(RAW_PROTOCOL)
        .map_err(|e| anyhow::anyhow!("accepting {RAW_PROTOCOL}: {e}"))?;
    swarm.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
    let addr = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.select_next_some().await
            {
                return address;
            }
        }
    })
    .await
    .context("the raw libp2p swarm did not start listening")?;
    let addr = addr.with(Protocol::P2p(*swarm.local_peer_id()));
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_raw_stream(stream, chunk).await {
                    tracing::warn!("raw libp2p bench stream: {e:#}");
                }
            });
        }
    });
    Ok(addr)
}

/// The quinn requests (`G`/`P` + length) over a libp2p stream.
async fn serve_raw_stream(mut stream: libp2p::Stream, chunk: Bytes) -> anyhow::Result<()> {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = [0u8; 9];
    stream.read_exact(&mut request).await?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&request[1..]);
    let len = u64::from_be_bytes(len);
    anyhow::ensure!(len <= MAX_REQUEST, "a request for {len} bytes");
    match request[0] {
        b'G' => {
            let mut left = len as usize;
            while left > 0 {
                let n = left.min(chunk.len());
                stream.write_all(&chunk[..n]).await?;
                left -= n;
            }
        }
        b'P' => {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0u64;
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n as u64;
                anyhow::ensure!(got <= len, "more bytes than announced");
            }
            stream.write_all(&got.to_be_bytes()).await?;
        }
        other => anyhow::bail!("unknown request {other}"),
    }
    stream.close().await?;
    Ok(())
}

/// `meshcast-bench peer`: prints `libp2p <multiaddr>`, `quinn <addr> <hash>`
/// and `ready`, then serves until its standard input closes.
pub fn peer(args: PeerArgs) -> anyhow::Result<()> {
    crate::init_logs("error");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (node, driver) = meshcast_node::Node::new(
            meshcast_node::Config {
                listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?],
                store_max_bytes: args.store_mib << 20,
                live_window: Duration::from_secs(3600),
                ..Default::default()
            },
            libp2p::identity::Keypair::generate_ed25519(),
        )?;
        let _driver = tokio::spawn(driver.run());
        let (key, descriptor) = bench_stream()?;
        let stream = descriptor.stream_key();
        node.follow(descriptor).await?;
        let body = pattern(args.chunk_bytes as usize);
        for sequence in 0..args.segments {
            let header = sign(&key, &stream, sequence, &body).verify(&stream)?;
            node.inject(header, body.clone()).await?;
        }
        let mut addr = None;
        for _ in 0..250 {
            let info = node.info().await?;
            if let Some(a) = info.listen_addrs.into_iter().next() {
                addr = Some(a.with(Protocol::P2p(info.peer_id)));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let addr = addr.context("the node did not start listening")?;
        let (endpoint, hash) = quinn_server()?;
        let quinn_addr = endpoint.local_addr()?;
        tokio::spawn(serve_quinn(endpoint, body.clone()));
        let raw_addr = raw_server(body.clone()).await?;
        println!("libp2p {addr}");
        println!("raw {raw_addr}");
        println!("quinn {quinn_addr} {hash}");
        println!("ready");
        // Until the bench closes our standard input (or dies: PDEATHSIG).
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await
            .context("waiting for standard input to close")?
            .context("reading standard input")?;
        anyhow::Ok(())
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Meshcast,
    Quinn,
    Libp2p,
}

/// Bytes moved, seconds taken, CPU seconds here and in the peer.
#[derive(Default, Clone, Copy)]
struct Tally {
    bytes: u64,
    secs: f64,
    cpu_here: f64,
    cpu_peer: f64,
}

impl Tally {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / f64::from(1 << 20) / self.secs
    }
}

struct Ends {
    control: libp2p_stream::Control,
    peer: PeerId,
    stream: StreamKey,
    key: PublisherKey,
    connection: quinn::Connection,
    raw_peer: PeerId,
    body: Bytes,
    next_push: u64,
    /// Streams the peer dropped on arrival, opened again.
    reopened: AtomicU64,
    reopened_raw: AtomicU64,
    /// Pushes the peer declined as busy (and that were offered again).
    busy: AtomicU64,
}

/// True when the peer dropped the stream before reading it: libp2p-stream
/// drops an inbound stream that arrives while the previous one has not been
/// taken yet (rust-libp2p#5651), which a node's queue only makes rarer.
/// Depending on timing, our side sees a reset write or a clean end of
/// stream before any answer.
fn dropped_on_arrival(e: &anyhow::Error) -> bool {
    let reset = |io: &std::io::Error| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        )
    };
    match e.downcast_ref::<ExchangeError>() {
        Some(ExchangeError::Io(io)) => reset(io),
        Some(ExchangeError::Closed) => true,
        _ => {
            e.downcast_ref::<std::io::Error>().is_some_and(reset)
                || e.downcast_ref::<Unanswered>().is_some()
        }
    }
}

/// A raw stream that ended before any byte of the answer.
#[derive(Debug, thiserror::Error)]
#[error("the stream ended before any answer")]
struct Unanswered;

/// Runs `attempt` (told whether it is a retry), opening the stream again,
/// up to twice, when the peer dropped it on arrival.
async fn reopening<F, Fut>(reopened: &AtomicU64, mut attempt: F) -> anyhow::Result<u64>
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut tries = 0;
    loop {
        match attempt(tries > 0).await {
            Err(e) if tries < 2 && dropped_on_arrival(&e) => {
                reopened.fetch_add(1, Relaxed);
                tries += 1;
            }
            result => return result,
        }
    }
}

impl Ends {
    async fn meshcast_pull(&self, chunks: usize) -> anyhow::Result<u64> {
        futures::stream::iter(0..chunks)
            .map(|i| {
                let (peer, stream) = (self.peer, self.stream);
                let id = SegmentId::media(stream.id, 0, i as u64 % HELD);
                reopening(&self.reopened, move |_| {
                    let mut control = self.control.clone();
                    async move {
                        let s = control.open_stream(peer, exchange::PROTOCOL).await?;
                        let framed = Framed::new(s, Limits::default(), TIMEOUT);
                        match exchange::pull(framed, id, &stream, None).await? {
                            Some((_, body)) => anyhow::Ok(body.len() as u64),
                            None => anyhow::bail!("the peer does not hold {id:?}"),
                        }
                    }
                })
            })
            .buffer_unordered(IN_FLIGHT)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await
    }

    async fn meshcast_push(&mut self, headers: &[SignedHeader]) -> anyhow::Result<u64> {
        let this: &Ends = self;
        let sent = futures::stream::iter(headers)
            .map(|header| {
                let (peer, body) = (this.peer, this.body.clone());
                reopening(&this.reopened, move |again| {
                    let mut control = this.control.clone();
                    let body = body.clone();
                    async move {
                        let until = Instant::now() + TIMEOUT;
                        loop {
                            let s = control.open_stream(peer, exchange::PROTOCOL).await?;
                            let framed = Framed::new(s, Limits::default(), TIMEOUT);
                            match exchange::push(
                                framed,
                                header,
                                &exchange::Outgoing::Held(body.clone()),
                            )
                            .await?
                            {
                                Pushed::Delivered => return anyhow::Ok(body.len() as u64),
                                // The dropped attempt got through after all.
                                Pushed::Declined(pb::DeclineReason::AlreadyHave) if again => {
                                    return anyhow::Ok(body.len() as u64);
                                }
                                // Back-pressure: the peer has as many downloads
                                // as it allows; offer again shortly, as a
                                // node's scheduler would.
                                Pushed::Declined(pb::DeclineReason::Busy)
                                    if Instant::now() < until =>
                                {
                                    this.busy.fetch_add(1, Relaxed);
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                                Pushed::Declined(reason) => {
                                    anyhow::bail!("the peer declined a push: {reason:?}")
                                }
                            }
                        }
                    }
                })
            })
            .buffer_unordered(IN_FLIGHT)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await?;
        // A push ends when the body is written, not received: done when the
        // peer holds (has verified and stored) the last ones.
        let last: Vec<u64> = headers
            .iter()
            .rev()
            .take(IN_FLIGHT)
            .map(|h| h.info.id.sequence)
            .collect();
        let until = Instant::now() + TIMEOUT;
        loop {
            let s = self
                .control
                .open_stream(self.peer, exchange::PROTOCOL)
                .await?;
            let framed = Framed::new(s, Limits::default(), TIMEOUT);
            let held = match exchange::list_headers(framed, self.stream.id, false, None).await {
                Ok(held) => held,
                Err(e) => {
                    let e = anyhow::Error::from(e);
                    if dropped_on_arrival(&e) {
                        self.reopened.fetch_add(1, Relaxed);
                        continue;
                    }
                    return Err(e).context("asking for the header list");
                }
            };
            let held: Vec<u64> = held.iter().map(|h| h.sequence).collect();
            if last.iter().all(|s| held.contains(s)) {
                return Ok(sent);
            }
            anyhow::ensure!(
                Instant::now() < until,
                "the peer did not store the pushed segments"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A quinn-style request over a raw libp2p stream.
    async fn raw(&self, push: bool) -> anyhow::Result<u64> {
        use futures::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut control = self.control.clone();
        let mut stream = control
            .open_stream(self.raw_peer, RAW_PROTOCOL)
            .await
            .map_err(|e| anyhow::anyhow!("opening a raw libp2p stream: {e}"))?;
        let mut request = vec![if push { b'P' } else { b'G' }];
        request.extend_from_slice(&(CHUNK as u64).to_be_bytes());
        stream.write_all(&request).await?;
        if push {
            stream.write_all(&self.body).await?;
            stream.close().await?;
            let mut ack = [0u8; 8];
            stream.read_exact(&mut ack).await?;
            let got = u64::from_be_bytes(ack);
            anyhow::ensure!(got == CHUNK as u64, "the peer got {got} bytes");
            Ok(got)
        } else {
            stream.close().await?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0u64;
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            if got == 0 {
                return Err(Unanswered.into());
            }
            anyhow::ensure!(got == CHUNK as u64, "received {got} of {CHUNK} bytes");
            Ok(got)
        }
    }

    async fn raw_transfer(&self, push: bool, chunks: usize) -> anyhow::Result<u64> {
        futures::stream::iter(0..chunks)
            .map(|_| reopening(&self.reopened_raw, move |_| self.raw(push)))
            .buffer_unordered(IN_FLIGHT)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await
    }

    async fn quinn_pull(&self, chunks: usize) -> anyhow::Result<u64> {
        futures::stream::iter(0..chunks)
            .map(|_| {
                let connection = self.connection.clone();
                async move {
                    let (mut send, mut recv) = connection.open_bi().await?;
                    let mut request = vec![b'G'];
                    request.extend_from_slice(&(CHUNK as u64).to_be_bytes());
                    send.write_all(&request).await?;
                    send.finish()?;
                    let mut got = 0u64;
                    while let Some(part) = recv.read_chunk(usize::MAX, true).await? {
                        got += part.bytes.len() as u64;
                    }
                    anyhow::ensure!(got == CHUNK as u64, "received {got} of {CHUNK} bytes");
                    anyhow::Ok(got)
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await
    }

    async fn quinn_push(&self, chunks: usize) -> anyhow::Result<u64> {
        futures::stream::iter(0..chunks)
            .map(|_| {
                let (connection, body) = (self.connection.clone(), self.body.clone());
                async move {
                    let (mut send, mut recv) = connection.open_bi().await?;
                    let mut request = vec![b'P'];
                    request.extend_from_slice(&(body.len() as u64).to_be_bytes());
                    send.write_all(&request).await?;
                    send.write_chunk(body.clone()).await?;
                    send.finish()?;
                    let mut ack = [0u8; 8];
                    recv.read_exact(&mut ack).await?;
                    let got = u64::from_be_bytes(ack);
                    anyhow::ensure!(got == body.len() as u64, "the peer got {got} bytes");
                    anyhow::Ok(got)
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await
    }

    /// Headers for the next `chunks` pushed segments.
    fn sign_next(&mut self, chunks: usize) -> Vec<SignedHeader> {
        let headers = (0..chunks as u64)
            .map(|i| sign(&self.key, &self.stream, self.next_push + i, &self.body))
            .collect();
        self.next_push += chunks as u64;
        headers
    }
}

fn parse_peer(addr: &Multiaddr) -> anyhow::Result<PeerId> {
    addr.iter()
        .find_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .context("the peer's address has no /p2p/ part")
}

pub async fn run(plan: &Plan, progress: &Progress) -> anyhow::Result<ThroughputSection> {
    progress.phase("throughput: starting the peer process");
    let mut command = std::process::Command::new(bench_self()?);
    let store_mib = (plan.mib_each_way * plan.rounds) as u64 + 64;
    command.args(["peer", "--store-mib", &store_mib.to_string()]);
    let mut child = Spawned::spawn("bench peer", quiet(command))?;
    let libp2p_addr: Multiaddr = child
        .line("libp2p", TIMEOUT)
        .await?
        .parse()
        .context("the peer printed a bad multiaddr")?;
    let raw_addr: Multiaddr = child
        .line("raw", TIMEOUT)
        .await?
        .parse()
        .context("the peer printed a bad multiaddr")?;
    let quinn_line = child.line("quinn", TIMEOUT).await?;
    child.line("ready", TIMEOUT).await?;
    let pid = child.pid().to_string();
    let (quinn_addr, quinn_hash) = quinn_line
        .split_once(' ')
        .context("the peer printed a bad quinn line")?;
    let quinn_addr: SocketAddr = quinn_addr.parse().context("the peer's quinn address")?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(quinn_hash, &mut hash).context("the peer's certificate hash")?;

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let peer = parse_peer(&libp2p_addr)?;
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .map_err(|e| anyhow::anyhow!("building the libp2p swarm: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let control = swarm.behaviour().new_control();
    for addr in [&libp2p_addr, &raw_addr] {
        swarm
            .dial(addr.clone())
            .with_context(|| format!("dialling {addr}"))?;
    }
    let raw_peer = parse_peer(&raw_addr)?;
    let swarm_task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let _swarm_guard = AbortOnDrop(swarm_task);

    let endpoint = quinn_client(hash)?;
    let connection = endpoint
        .connect(quinn_addr, "localhost")
        .context("connecting over quinn")?
        .await
        .context("the quinn handshake")?;

    let (key, descriptor) = bench_stream()?;
    let mut ends = Ends {
        control,
        peer,
        stream: descriptor.stream_key(),
        key,
        connection,
        body: pattern(CHUNK),
        next_push: PUSHED_FROM,
        reopened: AtomicU64::new(0),
        reopened_raw: AtomicU64::new(0),
        busy: AtomicU64::new(0),
        raw_peer,
    };
    // Warm up both (connections open, windows grown), unmeasured.
    progress.phase("throughput: warming up");
    let warm = tokio::time::timeout(TIMEOUT, async {
        loop {
            match ends.meshcast_pull(1).await {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    anyhow::ensure!(
        warm.is_ok(),
        "no segment-exchange stream to the peer within {TIMEOUT:?}"
    );
    ends.meshcast_pull(IN_FLIGHT * 2).await?;
    ends.quinn_pull(IN_FLIGHT * 2).await?;
    ends.raw_transfer(false, IN_FLIGHT * 2).await?;

    let chunks = plan.mib_each_way * (1 << 20) / CHUNK;
    let mut tallies = [[Tally::default(); 2]; 3]; // [proto][pull, push]
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 {
            [Proto::Meshcast, Proto::Libp2p, Proto::Quinn]
        } else {
            [Proto::Quinn, Proto::Libp2p, Proto::Meshcast]
        };
        for pull in [true, false] {
            for proto in order {
                let name = match proto {
                    Proto::Meshcast => "meshcast",
                    Proto::Quinn => "quinn",
                    Proto::Libp2p => "libp2p",
                };
                progress.phase(&format!(
                    "throughput: round {} of {}, {name} {} {} MiB",
                    round + 1,
                    plan.rounds,
                    if pull { "pull" } else { "push" },
                    plan.mib_each_way
                ));
                // Signed before the clock starts: the publisher's work, not the protocol's.
                let headers = if proto == Proto::Meshcast && !pull {
                    ends.sign_next(chunks)
                } else {
                    Vec::new()
                };
                let (here, there) = (cpu_seconds("self")?, cpu_seconds(&pid)?);
                let start = Instant::now();
                let bytes = match (proto, pull) {
                    (Proto::Meshcast, true) => ends.meshcast_pull(chunks).await?,
                    (Proto::Meshcast, false) => ends.meshcast_push(&headers).await?,
                    (Proto::Quinn, true) => ends.quinn_pull(chunks).await?,
                    (Proto::Quinn, false) => ends.quinn_push(chunks).await?,
                    (Proto::Libp2p, pull) => ends.raw_transfer(!pull, chunks).await?,
                };
                let secs = start.elapsed().as_secs_f64();
                let t = &mut tallies[proto as usize][usize::from(!pull)];
                t.bytes += bytes;
                t.secs += secs;
                t.cpu_here += cpu_seconds("self")? - here;
                t.cpu_peer += cpu_seconds(&pid)? - there;
            }
        }
    }
    drop(child);

    // What verifying costs: BLAKE3 over the same bodies, one core, this process.
    let (hashed, start) = (64usize, Instant::now());
    for i in 0..hashed {
        let id = SegmentId::media(ends.stream.id, 0, i as u64);
        std::hint::black_box(SegmentInfo::for_body(id, &ends.body, 0, 0));
    }
    let blake3 = start.elapsed().as_secs_f64() / (hashed * CHUNK) as f64 * f64::from(1 << 30);

    let figures = |t: &[Tally; 2]| {
        let both = Tally {
            bytes: t[0].bytes + t[1].bytes,
            secs: t[0].secs + t[1].secs,
            cpu_here: t[0].cpu_here + t[1].cpu_here,
            cpu_peer: t[0].cpu_peer + t[1].cpu_peer,
        };
        let gib = both.bytes as f64 / f64::from(1 << 30);
        ProtocolFigures {
            pull: fig(t[0].mib_s(), "MiB/s"),
            push: fig(t[1].mib_s(), "MiB/s"),
            both: fig(both.mib_s(), "MiB/s"),
            parent_cpu: fig(both.cpu_here / gib, "core-s per GiB"),
            child_cpu: fig(both.cpu_peer / gib, "core-s per GiB"),
        }
    };
    let meshcast = figures(&tallies[Proto::Meshcast as usize]);
    let quinn = figures(&tallies[Proto::Quinn as usize]);
    let libp2p = figures(&tallies[Proto::Libp2p as usize]);
    let ratio = meshcast.both.value / quinn.both.value;
    let libp2p_ratio = libp2p.both.value / quinn.both.value;
    progress.note(&format!(
        "throughput: meshcast {:.0} MiB/s (pull {:.0}, push {:.0}), libp2p alone {:.0} MiB/s, quinn {:.0} MiB/s (pull {:.0}, push {:.0}), ratio {ratio:.3}",
        meshcast.both.value,
        meshcast.pull.value,
        meshcast.push.value,
        libp2p.both.value,
        quinn.both.value,
        quinn.pull.value,
        quinn.push.value
    ));
    Ok(ThroughputSection {
        mib_each_way: fig(plan.mib_each_way as f64, "MiB"),
        rounds: plan.rounds,
        chunk: fig(CHUNK as f64 / f64::from(1 << 20), "MiB"),
        streams_in_flight: IN_FLIGHT,
        meshcast,
        libp2p,
        quinn,
        ratio: fig(ratio, "ratio"),
        libp2p_ratio: fig(libp2p_ratio, "ratio"),
        libp2p_streams_reopened: fig(ends.reopened_raw.load(Relaxed) as f64, "streams"),
        meshcast_busy_declines: fig(ends.busy.load(Relaxed) as f64, "offers"),
        blake3_cpu: fig(blake3, "core-s per GiB"),
        meshcast_streams_reopened: fig(ends.reopened.load(Relaxed) as f64, "streams"),
    })
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
