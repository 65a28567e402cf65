//! The mesh under network conditions: two network namespaces joined by a
//! veth pair, with netem delay and loss where the kernel has netem, every
//! node a separate process (`ip netns exec NS meshcast-bench node …`).
//!
//! Needs root and iproute2; otherwise the section says why it was skipped.
//! Namespaces are named `mcb<pid>a`/`mcb<pid>b` and deleted when the bench
//! ends, fails or is interrupted (their guard's `Drop`); ones left by a
//! bench that was killed outright are deleted by the next run.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use libp2p::Multiaddr;
use meshcast_node::{Config, Event, Node};
use meshcast_proto::{
    Descriptor, PublisherKey, Rendition, SegmentId, SegmentInfo, VerifiedDescriptor,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::proc::{Spawned, bench_self, quiet};
use super::progress::Progress;
use super::report::{Latency, NetnsResult, NetnsSection, fig};

/// The subnet inside the two namespaces (they have their own network stacks,
/// so nothing outside can collide with it).
const ADDR_A: &str = "10.213.0.1";
const ADDR_B: &str = "10.213.0.2";
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Plan {
    pub nodes_per_namespace: usize,
    pub segments: u64,
    pub segment_bytes: u32,
    pub interval: Duration,
}

/// `meshcast-bench node`: one mesh node in its own process, for the
/// network-namespace bench. Prints `listening <multiaddr>` and `ready`; a
/// publisher then waits for `go` on standard input and injects; other nodes
/// print `stored <sequence> <µs since publication>` for each segment, then
/// `bytes <mesh bytes in> <origin bytes in>` and `done`. Every node runs
/// until its standard input closes.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Multiaddr,
    /// Peers to dial, repeatable.
    #[arg(long = "dial", value_name = "MULTIADDR")]
    pub dial: Vec<Multiaddr>,
    /// Be the publisher.
    #[arg(long)]
    pub publish: bool,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub segments: u64,
    #[arg(long, default_value_t = 250_000, value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub segment_bytes: u32,
    #[arg(long, default_value = "1s", value_parser = super::parse_interval)]
    pub interval: Duration,
}

fn stream(
    interval: Duration,
    segment_bytes: u32,
) -> anyhow::Result<(PublisherKey, VerifiedDescriptor)> {
    let key = PublisherKey::from_seed([17; 32]);
    let ms = u32::try_from(interval.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    let descriptor = Descriptor {
        publisher: key.public(),
        name: "bench-netns".into(),
        renditions: vec![Rendition {
            id: 0,
            name: "bench".into(),
            bandwidth: u64::from(segment_bytes) * 8 * 1000 / u64::from(ms),
            codecs: String::new(),
            width: 0,
            height: 0,
            uri: String::new(),
            ..Default::default()
        }],
        origin_url: String::new(),
        segment_duration_ms: ms,
        live: true,
        issued_at_us: meshcast_node::unix_now_us(),
        private: false,
    }
    .sign(&key)?;
    Ok((key, descriptor))
}

pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    crate::init_logs("error");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let (node, driver) = Node::new(
            Config {
                listen: vec![args.listen.clone()],
                live_window: Duration::from_secs(120),
                store_max_bytes: 1 << 30,
                ..Config::default()
            },
            libp2p::identity::Keypair::generate_ed25519(),
        )?;
        let _driver = tokio::spawn(driver.run());
        let mut listening = None;
        for _ in 0..250 {
            let info = node.info().await?;
            if let Some(addr) = info.listen_addrs.into_iter().next() {
                listening = Some(addr.with_p2p(info.peer_id).unwrap_or_else(|a| a));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "listening {}",
            listening.context("the node did not start listening")?
        );
        // Standard input, line by line; closed when the bench is done.
        let (tx, mut stdin) = tokio::sync::mpsc::channel::<String>(16);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lines().map_while(Result::ok) {
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            })
            .context("starting a thread to read standard input")?;
        let mut events = node.events();
        for addr in &args.dial {
            if let Err(e) = node.dial(addr.clone()).await {
                eprintln!("cannot dial {addr}: {e}");
            }
        }
        let (key, descriptor) = stream(args.interval, args.segment_bytes)?;
        let key_of_stream = descriptor.stream_key();
        node.follow(descriptor).await?;
        println!("ready");
        if args.publish {
            while let Some(line) = stdin.recv().await {
                if line.trim() == "go" {
                    break;
                }
            }
            let mut next = tokio::time::Instant::now();
            for sequence in 0..args.segments {
                tokio::time::sleep_until(next).await;
                let mut body = vec![0u8; args.segment_bytes as usize];
                StdRng::seed_from_u64(sequence).fill(&mut body[..]);
                let id = SegmentId::media(key_of_stream.id, 0, sequence);
                let header = SegmentInfo::for_body(
                    id,
                    &body,
                    args.interval.as_micros() as u64,
                    meshcast_node::unix_now_us(),
                )
                .sign(&key)
                .verify(&key_of_stream)?;
                node.inject(header, Bytes::from(body)).await?;
                println!("published {sequence}");
                next += args.interval;
            }
        } else {
            let mut held = HashSet::new();
            while (held.len() as u64) < args.segments {
                let event = tokio::select! {
                    event = events.recv() => event,
                    line = stdin.recv() => match line {
                        Some(_) => continue,
                        None => return Ok(()),
                    },
                };
                match event {
                    Ok(Event::Stored { id, .. }) if held.insert(id.sequence) => {
                        let published = node
                            .segment(&id)
                            .map(|s| s.header.info().published_at_us)
                            .unwrap_or(0);
                        let latency = meshcast_node::unix_now_us().saturating_sub(published);
                        println!("stored {} {latency}", id.sequence);
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => anyhow::bail!("the node stopped"),
                }
            }
            let stats = node.stats();
            println!(
                "bytes {} {}",
                stats
                    .mesh_bytes_in
                    .load(std::sync::atomic::Ordering::Relaxed),
                stats
                    .origin_bytes_in
                    .load(std::sync::atomic::Ordering::Relaxed)
            );
            println!("done");
        }
        while stdin.recv().await.is_some() {}
        Ok(())
    })
}

pub fn skipped(why: String) -> NetnsSection {
    NetnsSection {
        skipped: Some(why),
        result: None,
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `ip`/`tc` with `args`; the error names the command and its message.
fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Two namespaces and the veth pair between them; deleted on drop.
struct Namespaces {
    a: String,
    b: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Deletes namespaces left by benches that were killed (their pid is gone).
fn delete_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("mcb")
            .and_then(|r| r.strip_suffix('a').or_else(|| r.strip_suffix('b')))
        else {
            continue;
        };
        if pid.chars().all(|c| c.is_ascii_digit())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

impl Namespaces {
    /// Creates the namespaces and the link; returns the conditions applied.
    fn create() -> anyhow::Result<(Self, String)> {
        delete_stale();
        let pid = std::process::id();
        let ns = Self {
            a: format!("mcb{pid}a"),
            b: format!("mcb{pid}b"),
        };
        let (a, b) = (ns.a.as_str(), ns.b.as_str());
        run_tool("ip", &["netns", "add", a])?;
        run_tool("ip", &["netns", "add", b])?;
        run_tool("ip", &["link", "add", a, "type", "veth", "peer", "name", b])?;
        run_tool("ip", &["link", "set", a, "netns", a])?;
        run_tool("ip", &["link", "set", b, "netns", b])?;
        for (space, addr) in [(a, ADDR_A), (b, ADDR_B)] {
            run_tool(
                "ip",
                &[
                    "-n",
                    space,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    space,
                ],
            )?;
            run_tool("ip", &["-n", space, "link", "set", space, "up"])?;
            run_tool("ip", &["-n", space, "link", "set", "lo", "up"])?;
        }
        let netem = [a, b].iter().try_for_each(|space| {
            run_tool(
                "tc",
                &[
                    "-n", space, "qdisc", "add", "dev", space, "root", "netem", "delay", "10ms",
                    "loss", "0.5%",
                ],
            )
        });
        let conditions = match netem {
            Ok(()) => "netem delay 10 ms and loss 0.5 % on each end of the veth pair (20 ms RTT, ≈ 1 % loss per round trip)".to_string(),
            Err(netem) => {
                let tbf = [a, b].iter().try_for_each(|space| {
                    run_tool(
                        "tc",
                        &["-n", space, "qdisc", "replace", "dev", space, "root", "tbf", "rate", "100mbit", "burst", "64kb", "latency", "50ms"],
                    )
                });
                match tbf {
                    Ok(()) => format!(
                        "no delay or loss: netem is unavailable here ({}); a tbf rate limit of 100 Mbit/s each way instead",
                        first_line(&netem)
                    ),
                    Err(tbf) => format!(
                        "none: netem is unavailable ({}) and so is tbf ({})",
                        first_line(&netem),
                        first_line(&tbf)
                    ),
                }
            }
        };
        Ok((ns, conditions))
    }
}

fn first_line(e: &anyhow::Error) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}

/// `ip netns exec NS meshcast-bench node …`
fn spawn_node(name: &str, namespace: &str, args: &[String]) -> anyhow::Result<Spawned> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace])
        .arg(bench_self()?)
        .arg("node")
        .args(args);
    Spawned::spawn(name, quiet(command))
}

pub async fn run(plan: &Plan, progress: &Progress) -> anyhow::Result<NetnsSection> {
    if !is_root() {
        return Ok(skipped("needs root to create network namespaces".into()));
    }
    if !have("ip") {
        return Ok(skipped("iproute2 (`ip`) is not installed".into()));
    }
    progress.phase("network conditions: creating namespaces");
    let (namespaces, conditions) = Namespaces::create()?;
    progress.note(&format!("network conditions: {conditions}"));
    let common = [
        "--segments".to_string(),
        plan.segments.to_string(),
        "--segment-bytes".to_string(),
        plan.segment_bytes.to_string(),
        "--interval".to_string(),
        format!("{}ms", plan.interval.as_millis()),
    ];
    let listen = |addr: &str| format!("/ip4/{addr}/udp/0/quic-v1");

    progress.phase("network conditions: starting the node processes");
    let mut args = vec!["--listen".to_string(), listen(ADDR_A), "--publish".into()];
    args.extend(common.iter().cloned());
    let mut publisher = spawn_node("publisher", &namespaces.a, &args)?;
    let publisher_addr = publisher.line("listening", START_TIMEOUT).await?;
    publisher.line("ready", START_TIMEOUT).await?;
    let mut rng = StdRng::seed_from_u64(2026);
    let mut nodes: Vec<(Spawned, String, bool)> = Vec::new();
    for far in [false, true] {
        let (namespace, addr) = if far {
            (&namespaces.b, ADDR_B)
        } else {
            (&namespaces.a, ADDR_A)
        };
        for i in 0..plan.nodes_per_namespace {
            let mut args = vec!["--listen".to_string(), listen(addr)];
            args.extend(["--dial".to_string(), publisher_addr.clone()]);
            for _ in 0..2.min(nodes.len()) {
                let other = &nodes[rng.gen_range(0..nodes.len())].1;
                args.extend(["--dial".to_string(), other.clone()]);
            }
            args.extend(common.iter().cloned());
            let name = format!("node {}{}", if far { "b" } else { "a" }, i + 1);
            let mut child = spawn_node(&name, namespace, &args)?;
            let addr = child.line("listening", START_TIMEOUT).await?;
            child.line("ready", START_TIMEOUT).await?;
            nodes.push((child, addr, far));
        }
    }
    // Gossipsub builds its mesh on heartbeats (1 s): give it a few.
    tokio::time::sleep(Duration::from_secs(3)).await;
    progress.phase(&format!(
        "network conditions: publishing {} segments",
        plan.segments
    ));
    publisher.send_line("go")?;
    let until = tokio::time::Instant::now()
        + plan.interval * u32::try_from(plan.segments).unwrap_or(u32::MAX)
        + Duration::from_secs(30);
    let mut latencies: HashMap<bool, Vec<f64>> = HashMap::new();
    let mut received = 0u64;
    for (child, _, far) in &mut nodes {
        while let Some(line) = child.next_line(until).await {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("stored") => {
                    let latency = words.nth(1).and_then(|w| w.parse::<f64>().ok());
                    if let Some(us) = latency {
                        latencies.entry(*far).or_default().push(us / 1e3);
                    }
                }
                Some("bytes") => {
                    received += words
                        .take(2)
                        .filter_map(|w| w.parse::<u64>().ok())
                        .sum::<u64>();
                }
                Some("done") => break,
                _ => {}
            }
        }
    }
    drop(nodes);
    drop(publisher);
    drop(namespaces);

    let expected = (plan.nodes_per_namespace as u64 * plan.segments) as f64;
    let mut summary = |far: bool| {
        let mut l = latencies.remove(&far).unwrap_or_default();
        l.sort_by(f64::total_cmp);
        let pick = |p: f64| {
            l.get(((l.len().saturating_sub(1)) as f64 * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Latency {
            delivered: fig(l.len() as f64, "(node, segment) pairs"),
            expected: fig(expected, "(node, segment) pairs"),
            p50: fig(pick(0.5), "ms"),
            p95: fig(pick(0.95), "ms"),
            p99: fig(pick(0.99), "ms"),
            max: fig(l.last().copied().unwrap_or(f64::NAN), "ms"),
        }
    };
    let (near, far) = (summary(false), summary(true));
    let needed = 2.0 * expected * f64::from(plan.segment_bytes);
    progress.note(&format!(
        "network conditions: p50 {:.1} / {:.1} ms, p99 {:.1} / {:.1} ms (same namespace / across the link)",
        near.p50.value, far.p50.value, near.p99.value, far.p99.value
    ));
    Ok(NetnsSection {
        skipped: None,
        result: Some(NetnsResult {
            conditions,
            nodes_per_namespace: plan.nodes_per_namespace,
            segments: plan.segments as usize,
            segment_bytes: fig(f64::from(plan.segment_bytes), "bytes"),
            near,
            far,
            duplicate_ratio: fig(received as f64 / needed, "received ÷ needed"),
        }),
    })
}
