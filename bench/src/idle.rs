//! `meshcast-bench idle`: the cost of idle peers. One `meshcast node` child
//! process follows a stream that publishes nothing, with `peers` in-process
//! nodes connected to it (each on a loopback address of its own, see
//! [`super::mesh::loopback`]) and following the same stream. After a settle
//! time the child's CPU (`/proc/<pid>/stat`, as a share of one core) and its
//! wake-ups (context switches, voluntary and not, summed over its threads in
//! `/proc/<pid>/task/*/status`) are measured over `seconds`.

use std::time::Duration;

use anyhow::Context;
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use meshcast_node::{Config, Node};
use meshcast_proto::{Descriptor, PublisherKey, Rendition};

use super::mesh::Running;
use super::mesh::loopback;
use super::proc::{Spawned, cpu_seconds, gauge, meshcast_node, scrape};

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time between the last peer joining and the measurement.
const SETTLE: Duration = Duration::from_secs(10);
/// The goal of issue #11: an idle node costs at most 1% of a core.
const GOAL_CORE_SHARE: f64 = 0.01;

#[derive(Debug, Clone)]
pub struct IdleBench {
    pub peers: usize,
    pub duration: Duration,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleReport {
    pub peers: usize,
    /// Peers the node says it is connected to (its /metrics), if it said.
    pub peers_connected: Option<f64>,
    pub seconds: f64,
    /// The node's CPU, as a share of one core (1.0: one core busy).
    pub cpu_core_share: f64,
    /// The node's context switches (voluntary + involuntary, all threads) per second.
    pub wakeups_per_second: f64,
    /// This process (the peers) as a share of one core, divided by the peers.
    pub peer_core_share: f64,
    pub goal_met: bool,
}

async fn start(n: usize) -> anyhow::Result<Running> {
    let config = Config {
        listen: vec![
            format!("/ip4/{}/udp/0/quic-v1", loopback(n))
                .parse()
                .expect("valid multiaddr"),
        ],
        live_window: Duration::from_secs(10),
        store_max_bytes: 16 << 20,
        ..Config::default()
    };
    let (node, driver) = Node::new(config, Keypair::generate_ed25519())?;
    let running = Running {
        node,
        driver: tokio::spawn(driver.run()),
    };
    for _ in 0..250 {
        if !running.node.info().await?.listen_addrs.is_empty() {
            return Ok(running);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("a peer did not start listening")
}

async fn address(running: &Running) -> anyhow::Result<Multiaddr> {
    let info = running.node.info().await?;
    let addr = info
        .listen_addrs
        .into_iter()
        .next()
        .context("a peer has no listen address")?;
    Ok(addr.with_p2p(info.peer_id).unwrap_or_else(|a| a))
}

/// Clock ticks per second (USER_HZ) of `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`.
fn stat_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name, which is in parentheses and may hold spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime = fields.next()?.parse::<u64>().ok()?;
    let stime = fields.next()?.parse::<u64>().ok()?;
    Some(utime + stime)
}

/// Voluntary + involuntary context switches, from the text of a `status` file.
fn status_switches(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        })
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum()
}

/// A process's CPU ticks and its context switches summed over its threads.
fn sample(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = stat_ticks(&stat).with_context(|| format!("{path} is malformed"))?;
    let mut switches = 0;
    let tasks = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        // A thread may exit between the listing and the read.
        if let Ok(status) = std::fs::read_to_string(task?.path().join("status")) {
            switches += status_switches(&status);
        }
    }
    Ok((ticks, switches))
}

pub async fn run(bench: &IdleBench, phase: impl Fn(&str)) -> anyhow::Result<IdleReport> {
    let tmp = tempfile::Builder::new()
        .prefix("meshcast-bench-idle-")
        .tempdir()
        .context("creating a temporary folder")?;
    // The first peer publishes the stream's descriptor (never a segment) and
    // is the node's bootstrap peer.
    let key = PublisherKey::from_seed([17; 32]);
    let descriptor = Descriptor {
        publisher: key.public(),
        name: "bench-idle".into(),
        renditions: vec![Rendition {
            id: 0,
            name: "bench".into(),
            bandwidth: 1_000_000,
            codecs: String::new(),
            width: 0,
            height: 0,
            uri: String::new(),
            ..Default::default()
        }],
        origin_url: String::new(),
        segment_duration_ms: 2000,
        live: true,
        issued_at_us: meshcast_node::unix_now_us(),
        private: false,
    }
    .sign(&key)?;
    let stream = descriptor.stream_key();
    let mut peers: Vec<Running> = Vec::with_capacity(bench.peers);
    let mut command = meshcast_node(&tmp.path().join("node"))?;
    if bench.peers > 0 {
        phase("starting the publishing peer");
        let publisher = start(1).await?;
        publisher.node.publish(descriptor.clone()).await?;
        command.args([
            "--bootstrap",
            &address(&publisher).await?.to_string(),
            "--follow",
            &stream.id.to_string(),
        ]);
        peers.push(publisher);
    }
    phase("starting `meshcast node`");
    let mut child = Spawned::spawn("node", command)?;
    let metrics = child.line("metrics", START_TIMEOUT).await?;
    let node_addr: Multiaddr = child
        .line("listening", START_TIMEOUT)
        .await?
        .parse()
        .context("the node printed a bad address")?;
    if bench.peers > 0 {
        child.line("following", START_TIMEOUT).await?;
    }
    phase(&format!("connecting {} peers", bench.peers));
    for n in 1..bench.peers {
        let peer = start(n + 1).await?;
        peer.node.dial(node_addr.clone()).await?;
        peer.node.follow(descriptor.clone()).await?;
        peers.push(peer);
    }
    if let Some(publisher) = peers.first() {
        publisher.node.dial(node_addr.clone()).await?;
    }
    phase(&format!("settling for {SETTLE:?}"));
    tokio::time::sleep(SETTLE).await;

    phase(&format!("measuring for {:?}", bench.duration));
    let pid = child.pid();
    let (ticks_before, switches_before) = sample(pid)?;
    let self_before = cpu_seconds("self")?;
    let started = tokio::time::Instant::now();
    tokio::time::sleep(bench.duration).await;
    let (ticks_after, switches_after) = sample(pid)?;
    let self_cpu = cpu_seconds("self")? - self_before;
    let elapsed = started.elapsed().as_secs_f64();
    let scraped = scrape(&metrics).await;
    let peers_connected = scraped
        .as_ref()
        .ok()
        .and_then(|text| gauge(text, "meshcast_peers_connected"));
    if let Err(e) = &scraped {
        phase(&format!("could not read {metrics}: {e:#}"));
    }
    drop(child);
    drop(peers);
    let cpu_core_share = ticks_after.saturating_sub(ticks_before) as f64 / clock_ticks() / elapsed;
    Ok(IdleReport {
        peers: bench.peers,
        peers_connected,
        seconds: elapsed,
        cpu_core_share,
        wakeups_per_second: switches_after.saturating_sub(switches_before) as f64 / elapsed,
        peer_core_share: self_cpu / elapsed / bench.peers.max(1) as f64,
        goal_met: cpu_core_share <= GOAL_CORE_SHARE,
    })
}

pub fn print(r: &IdleReport) {
    println!(
        "idle: one `meshcast node` with {} idle peers (QUIC on loopback, no segments), {:.0} s measured",
        r.peers, r.seconds
    );
    match r.peers_connected {
        Some(n) => println!("  peers connected  {n:.0}"),
        None => println!("  peers connected  unknown (no /metrics)"),
    }
    println!(
        "  CPU              {:.2} % of a core",
        r.cpu_core_share * 100.0
    );
    println!(
        "  wake-ups         {:.0} context switches/s",
        r.wakeups_per_second
    );
    println!(
        "  each peer        {:.2} % of a core (in this process)",
        r.peer_core_share * 100.0
    );
    println!(
        "  goal ≤ 1% of a core: {}",
        if r.goal_met { "met" } else { "missed" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_ticks() {
        let stat =
            "1234 (meshcast (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 37 12 0 0 20 0 9 0 555 0 0";
        assert_eq!(stat_ticks(stat), Some(49));
        assert_eq!(stat_ticks("1234 (short) S 1"), None);
    }

    #[test]
    fn sums_context_switches() {
        let status =
            "Name:\tmeshcast\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_switches(status), 127);
        assert_eq!(status_switches("Name:\tx\n"), 0);
    }
}
