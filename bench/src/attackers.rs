//! Hostile viewers in a process of their own (`meshcast-bench attack`,
//! hidden), so that their own work (hundreds of QUIC endpoints, handshakes
//! started over and over) does not run on the runtime of the good clients
//! the bench measures: on the internet the attackers' CPU is theirs, not the
//! viewers'. The relay under test is a third process.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meshcast_proto::StreamId;
use meshcast_relay::attack::{self, Kind, Target};

use super::proc::{Spawned, bench_self, quiet};

/// Attackers per source address: within the relay's default per-address
/// session cap (32), so that each attacker holds what it can.
const PER_ADDRESS: usize = 25;

/// `meshcast-bench attack`: runs `--per-kind` attackers of every
/// [`Kind`] against a gateway for `--duration`, prints `started`, then
/// `cut-off <n>` (how many times they were cut off or refused) and exits.
#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// The gateway's WebTransport URL.
    #[arg(long)]
    pub url: String,
    /// The gateway's UDP address.
    #[arg(long)]
    pub quic: SocketAddr,
    /// The SHA-256 of its certificate, hex.
    #[arg(long)]
    pub cert_hash: String,
    /// Its well-known endpoint (TCP).
    #[arg(long)]
    pub web: SocketAddr,
    /// A stream it serves, hex.
    #[arg(long)]
    pub stream: String,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub per_kind: u32,
    #[arg(long, value_parser = super::parse_interval)]
    pub duration: Duration,
}

/// The source address of attacker `i` of kind `k`: 127.2.k.y, each kind from
/// its own addresses (all of 127/8 is this host's loopback).
fn attacker_addr(k: usize, i: usize) -> IpAddr {
    IpAddr::from([127, 2, k as u8, (1 + (i / PER_ADDRESS) % 250) as u8])
}

pub fn run(args: AttackArgs) -> anyhow::Result<()> {
    let mut cert_hash = [0u8; 32];
    hex::decode_to_slice(&args.cert_hash, &mut cert_hash)
        .context("--cert-hash is not 64 hex digits")?;
    let stream: StreamId = args
        .stream
        .parse()
        .map_err(|e| anyhow::anyhow!("--stream: {e}"))?;
    let target = Arc::new(Target {
        url: args.url,
        quic: args.quic,
        cert_hash,
        web: args.web,
        stream,
    });
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let cut_off = runtime.block_on(async {
        let until = tokio::time::Instant::now() + args.duration;
        let tasks: Vec<_> = Kind::ALL
            .iter()
            .enumerate()
            .flat_map(|(k, &kind)| (0..args.per_kind as usize).map(move |i| (k, i, kind)))
            .map(|(k, i, kind)| {
                tokio::spawn(attack::run(
                    kind,
                    target.clone(),
                    attacker_addr(k, i),
                    until,
                ))
            })
            .collect();
        println!("started");
        let mut cut_off = 0;
        for task in tasks {
            cut_off += task.await.unwrap_or(0);
        }
        cut_off
    });
    println!("cut-off {cut_off}");
    Ok(())
}

/// Starts `per_kind` attackers of each kind in a child process, attacking
/// `target` for `duration`; the child is stopped when the handle drops.
pub async fn spawn(
    target: &Target,
    per_kind: usize,
    duration: Duration,
) -> anyhow::Result<Spawned> {
    let mut command = Command::new(bench_self()?);
    command.args([
        "attack",
        "--url",
        &target.url,
        "--quic",
        &target.quic.to_string(),
        "--cert-hash",
        &hex::encode(target.cert_hash),
        "--web",
        &target.web.to_string(),
        "--stream",
        &target.stream.to_string(),
        "--per-kind",
        &per_kind.to_string(),
        "--duration",
        &format!("{}ms", duration.as_millis()),
    ]);
    let mut child = Spawned::spawn("attackers", quiet(command))?;
    child.line("started", Duration::from_secs(30)).await?;
    Ok(child)
}

/// How many times the attackers of `child` were cut off, once they are done.
pub async fn cut_off(mut child: Spawned, within: Duration) -> anyhow::Result<u64> {
    let n = child.line("cut-off", within).await?;
    n.parse()
        .with_context(|| format!("the attackers printed cut-off {n:?}"))
}
