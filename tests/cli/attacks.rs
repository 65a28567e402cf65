//! A `meshcast relay` process under every attack of
//! [`meshcast_relay::attack`] at once: a good viewer beside them keeps being
//! served, every attack is cut off, and the relay's resident memory (read
//! from `/proc`) comes back to its idle level. Then slowloris on its
//! `/metrics` endpoint. Real processes, QUIC and TCP on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshcast_proto::{SegmentId, StreamId};
use meshcast_relay::Client;
use meshcast_relay::attack::{self, Kind, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wtransport::tls::Sha256Digest;

use crate::metrics::scrape;
use crate::proc::{Proc, start_publisher};

const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
const ANY: &str = "127.0.0.1:0";
/// Attackers of each kind, all at once.
const ATTACKERS: usize = 12;
/// How long they attack.
const ATTACK: Duration = Duration::from_secs(12);
/// What the relay may keep above its idle RSS once every attack is over:
/// allocator slack, not per-attacker state (the attack holds ~100 sessions,
/// their QUIC buffers and waiters).
const SLACK_BYTES: u64 = 8 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Host and port of an `http://HOST:PORT/...` or `https://...` URL.
fn socket_addr(url: &str) -> SocketAddr {
    url.split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|hostport| hostport.parse().ok())
        .unwrap_or_else(|| panic!("no address in {url}"))
}

/// The good viewer: fetches the newest announced segment, again and again.
async fn fetch_newest(client: &mut Client, stream: StreamId) {
    let newest = client
        .live_edge()
        .iter()
        .map(|h| h.id())
        .max_by_key(|id| id.sequence)
        .unwrap_or(SegmentId::media(stream, 0, 0));
    client
        .fetch(newest, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("the good viewer was not served {newest}: {e}"));
}

#[test]
fn a_relay_under_every_attack_keeps_serving_and_returns_to_its_idle_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_origin, mut publisher) = start_publisher(&rt, dir.path(), "live/master.m3u8", "attacks");
    let bootstrap = publisher.line("listening");
    let stream: StreamId = publisher.line("stream").parse().expect("a stream id");
    let mut relay = Proc::start(
        "relay",
        &[
            "relay",
            "--data-dir",
            &d("relay"),
            "--listen",
            QUIC,
            "--bootstrap",
            &bootstrap,
            "--follow",
            &stream.to_string(),
            "--browser-listen",
            ANY,
            "--web-listen",
            ANY,
            "--metrics-listen",
            ANY,
        ],
        "warn",
    );
    let metrics = relay.line("metrics");
    let gateway = relay.line("gateway");
    let well_known = relay.line("well-known");
    let hash_hex = relay.line("cert-hash");
    let mut cert_hash = [0u8; 32];
    hex::decode_to_slice(&hash_hex, &mut cert_hash).expect("a certificate hash");
    let pid = relay.pid();

    let http = reqwest::Client::new();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while scrape(&http, &metrics)
            .await
            .sum("meshcast_segments_received_total", &[])
            < 4.0
        {
            assert!(Instant::now() < deadline, "the relay received no segment");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut good = Client::connect(
            &gateway,
            &[Sha256Digest::new(cert_hash)],
            stream,
            "",
            Duration::from_secs(10),
        )
        .await
        .expect("the good viewer's session");
        // Warm up, then the idle level: the most RSS seen over 2 s.
        for _ in 0..3 {
            fetch_newest(&mut good, stream).await;
        }
        let mut idle = 0;
        for _ in 0..10 {
            idle = idle.max(rss_bytes(pid));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let target = Arc::new(Target {
            url: gateway.clone(),
            quic: socket_addr(&gateway),
            cert_hash,
            web: socket_addr(&well_known),
            stream,
        });
        let until = tokio::time::Instant::now() + ATTACK;
        let attacks: Vec<_> = Kind::ALL
            .iter()
            .enumerate()
            .flat_map(|(k, &kind)| (0..ATTACKERS).map(move |i| (k, i, kind)))
            .map(|(k, i, kind)| {
                // Each attacker from its own address, so that the relay's
                // default per-address limits let them hold what they can.
                let from = std::net::IpAddr::from([127, 2, k as u8, 1 + i as u8]);
                tokio::spawn(attack::run(kind, target.clone(), from, until))
            })
            .collect();
        let mut peak = idle;
        while tokio::time::Instant::now() < until {
            fetch_newest(&mut good, stream).await;
            peak = peak.max(rss_bytes(pid));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut cut_off = 0;
        for task in attacks {
            cut_off += task.await.expect("attack task");
        }
        // Every kind is cut off at least once within the attack (the
        // slowest, a held handshake, at its 10 s deadline).
        assert!(
            cut_off >= (ATTACKERS * Kind::ALL.len()) as u64,
            "attackers were cut off only {cut_off} times"
        );

        // Attackers gone: their sessions end (a session that stopped
        // reading at its write timeout), and the memory with them.
        let deadline = Instant::now() + Duration::from_secs(40);
        let after = loop {
            let m = scrape(&http, &metrics).await;
            let sessions = m.value("meshcast_browser_sessions", &[]);
            let rss = rss_bytes(pid);
            if sessions == 1.0 && rss <= idle + SLACK_BYTES {
                break rss;
            }
            assert!(
                Instant::now() < deadline,
                "40 s after the attack: {sessions} sessions, RSS {:.1} MiB (idle {:.1}, peak {:.1})",
                mib(rss),
                mib(idle),
                mib(peak)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        fetch_newest(&mut good, stream).await;
        eprintln!(
            "relay RSS: idle {:.1} MiB, peak {:.1} MiB under attack, {:.1} MiB after; attackers cut off {cut_off} times",
            mib(idle),
            mib(peak),
            mib(after)
        );

        // Slowloris on /metrics: over the per-address cap (8) a connection
        // is closed at once; the rest at the 5 s header deadline; another
        // address is served meanwhile.
        let metrics_addr = socket_addr(&metrics);
        let started = Instant::now();
        let mut slow = Vec::new();
        for _ in 0..10 {
            let mut socket = tokio::net::TcpStream::connect(metrics_addr)
                .await
                .expect("connect");
            let _ = socket
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await;
            slow.push(socket);
        }
        let from = tokio::net::TcpSocket::new_v4().expect("socket");
        from.bind(SocketAddr::from(([127, 0, 0, 2], 0)))
            .expect("bind");
        let mut other = from.connect(metrics_addr).await.expect("connect");
        other
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        other.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        // The two over the cap first: closed at once.
        for socket in &mut slow[8..] {
            closed_within(socket, Duration::from_secs(1)).await;
        }
        for socket in &mut slow[..8] {
            closed_within(socket, Duration::from_secs(8)).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    });
}

/// Waits for the server to close `socket`; panics after `within`.
async fn closed_within(socket: &mut tokio::net::TcpStream, within: Duration) {
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(within, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a slow /metrics connection was held past {within:?}"
    );
}
