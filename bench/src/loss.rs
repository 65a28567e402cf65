//! `meshcast-bench lab loss`: one transfer over a lossy line, side by side.
//!
//! Two hosts of a lab: a server on a fat line (2 ms each way) and a client
//! on a volunteer's line (10 Mbit/s up, 50 Mbit/s down) with the rest of
//! the round trip as delay and `loss` each way. The server sends `bytes`
//! to the client, `runs` times, over kernel TCP (a fresh connection each
//! time, as a segment fetch over HTTP would) and over raw quinn with
//! libp2p-quic's windows (one connection, a fresh stream each time, as the
//! mesh does), once per congestion controller. Times are from the request
//! to the last byte.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use meshcast_lab::link::Link;
use meshcast_lab::net::{Host, Lab};

use super::quic::{quinn_client_at, quinn_server_at, serve_quinn, transport};

const TCP_PORT: u16 = 7100;

fn controllers() -> Vec<(
    &'static str,
    Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>,
)> {
    vec![
        (
            "quinn Cubic (default)",
            Arc::new(quinn::congestion::CubicConfig::default()),
        ),
        (
            "quinn NewReno",
            Arc::new(quinn::congestion::NewRenoConfig::default()),
        ),
        (
            "quinn BBR",
            Arc::new(quinn::congestion::BbrConfig::default()),
        ),
    ]
}

pub async fn run(loss: f64, rtt: Duration, bytes: u64, runs: u32) -> anyhow::Result<String> {
    let mut lab = Lab::start();
    let server = lab.public_host_with(&Link {
        up: Some(200_000_000),
        down: Some(200_000_000),
        delay: Duration::from_millis(2),
        ..Link::default()
    });
    let client_delay = rtt / 2 - Duration::from_millis(2);
    let client = lab.public_host_with(&Link {
        up: Some(10_000_000),
        down: Some(50_000_000),
        delay: client_delay,
        jitter: client_delay / 10,
        loss,
    });
    let mut rows = vec![(
        "kernel TCP (Cubic), a connection per transfer",
        tcp(&server, &client, bytes, runs).await?,
    )];
    for (i, (name, controller)) in controllers().into_iter().enumerate() {
        let port = 7200 + i as u16;
        rows.push((
            name,
            quic(&server, &client, port, controller, bytes, runs).await?,
        ));
    }
    let tcp_median = median(&rows[0].1);
    let mut text = format!(
        "One transfer of {bytes} bytes, server to client, {runs} runs each: the client's line 10 Mbit/s up, 50 Mbit/s down, round trip {} ms, {}% loss each way on the client's line; delay and loss from {}.\n\n| transport | median ms | max ms | median ÷ TCP's |\n|---|---|---|---|\n",
        rtt.as_millis(),
        loss * 100.0,
        lab.impairment().name()
    );
    for (name, times) in &rows {
        let m = median(times);
        text.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.2} |\n",
            m.as_secs_f64() * 1e3,
            times
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3,
            m.as_secs_f64() / tcp_median.as_secs_f64().max(1e-9)
        ));
    }
    Ok(text)
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

async fn tcp(server: &Host, client: &Host, bytes: u64, runs: u32) -> anyhow::Result<Vec<Duration>> {
    let listen = SocketAddr::from((server.addr, TCP_PORT));
    let host = server.clone();
    let listener = tokio::task::spawn_blocking(move || {
        host.enter(move || std::net::TcpListener::bind(listen))
    })
    .await??;
    let body = vec![7u8; bytes as usize];
    let sender = std::thread::spawn(move || -> anyhow::Result<()> {
        for _ in 0..runs {
            let (mut conn, _) = listener.accept()?;
            conn.write_all(&body)?;
        }
        Ok(())
    });
    let host = client.clone();
    let times = tokio::task::spawn_blocking(move || {
        host.enter(move || -> anyhow::Result<Vec<Duration>> {
            let mut times = Vec::new();
            for _ in 0..runs {
                let started = Instant::now();
                let mut conn = std::net::TcpStream::connect(listen)?;
                conn.set_read_timeout(Some(Duration::from_secs(60)))?;
                let mut got = Vec::new();
                conn.read_to_end(&mut got)?;
                anyhow::ensure!(
                    got.len() as u64 == bytes,
                    "TCP: {} of {bytes} bytes",
                    got.len()
                );
                times.push(started.elapsed());
            }
            Ok(times)
        })
    })
    .await??;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the TCP sender panicked"))??;
    Ok(times)
}

async fn quic(
    server: &Host,
    client: &Host,
    port: u16,
    controller: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>,
    bytes: u64,
    runs: u32,
) -> anyhow::Result<Vec<Duration>> {
    let server_runtime = server.runtime();
    let bind = SocketAddr::from((server.addr, port));
    let hash = server_runtime
        .spawn(async move {
            let mut config = transport();
            config.congestion_controller_factory(controller);
            let (endpoint, hash) = quinn_server_at(bind, config)?;
            tokio::spawn(serve_quinn(endpoint, Bytes::from(vec![7u8; 64 * 1024])));
            anyhow::Ok(hash)
        })
        .await??;
    let mut pinned = [0u8; 32];
    hex::decode_to_slice(&hash, &mut pinned).context("the server's certificate hash")?;
    let client_runtime = client.runtime();
    let times = client_runtime
        .spawn(async move {
            let endpoint = quinn_client_at(SocketAddr::from(([0, 0, 0, 0], 0)), pinned)?;
            let connection = endpoint.connect(bind, "localhost")?.await?;
            let mut times = Vec::new();
            for _ in 0..runs {
                let started = Instant::now();
                let (mut send, mut recv) = connection.open_bi().await?;
                let mut request = vec![b'G'];
                request.extend_from_slice(&bytes.to_be_bytes());
                send.write_all(&request).await?;
                send.finish()?;
                let mut got = 0u64;
                while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                    got += chunk.bytes.len() as u64;
                }
                anyhow::ensure!(got == bytes, "QUIC: {got} of {bytes} bytes");
                times.push(started.elapsed());
            }
            connection.close(0u32.into(), b"done");
            anyhow::Ok(times)
        })
        .await??;
    Ok(times)
}
