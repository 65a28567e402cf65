//! Hostile viewers, for benchmarks: each [`Kind`] is one way to abuse a
//! gateway without credentials, run in a loop until a deadline. The
//! benchmark's "hostile viewers" section runs many of each beside good
//! sessions and compares with a run without them (the tests in
//! `tests/tests/viewers.rs` check each defence on its own).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meshcast_proto::{SegmentId, StreamId, session};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint};

/// One way to attack a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// QUIC handshakes that never send the HTTP/3 CONNECT.
    NoConnect,
    /// A session that says Hello, then asks for junk and never reads.
    StalledReader,
    /// A Hello trickled a byte every 500 ms.
    SlowHello,
    /// Requests for segments that never come, as many as allowed, again and again.
    Waiters,
    /// One request id used again and again.
    ReusedIds,
    /// Garbage on the control stream, then a new session.
    Garbage,
    /// Hellos for streams the gateway does not serve.
    UnknownStream,
    /// HTTP request headers trickled to the well-known endpoint.
    Slowloris,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::NoConnect,
        Kind::StalledReader,
        Kind::SlowHello,
        Kind::Waiters,
        Kind::ReusedIds,
        Kind::Garbage,
        Kind::UnknownStream,
        Kind::Slowloris,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::NoConnect => "no-connect",
            Kind::StalledReader => "stalled-reader",
            Kind::SlowHello => "slow-hello",
            Kind::Waiters => "waiters",
            Kind::ReusedIds => "reused-ids",
            Kind::Garbage => "garbage",
            Kind::UnknownStream => "unknown-stream",
            Kind::Slowloris => "slowloris",
        }
    }
}

/// Where the attacks go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The WebTransport URL and its UDP address.
    pub url: String,
    pub quic: SocketAddr,
    pub cert_hash: [u8; 32],
    /// The well-known endpoint (TCP).
    pub web: SocketAddr,
    /// A stream the gateway serves.
    pub stream: StreamId,
}

/// Runs one attacker of `kind` against `target` from the local address
/// `from` until `until`, starting over whenever the gateway cuts it off.
/// Returns how many times it was cut off (or refused) and started over.
pub async fn run(kind: Kind, target: Arc<Target>, from: IpAddr, until: Instant) -> u64 {
    let mut rounds = 0;
    while Instant::now() < until {
        let round = tokio::time::timeout_at(until, once(kind, &target, from));
        if round.await.is_err() {
            break;
        }
        rounds += 1;
        // A refused attacker comes back, but not in a busy loop.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rounds
}

/// One round of an attack: returns when the gateway has cut it off.
async fn once(kind: Kind, target: &Target, from: IpAddr) {
    match kind {
        Kind::NoConnect => no_connect(target, from).await,
        Kind::Slowloris => slowloris(target, from).await,
        _ => {
            let window = (kind == Kind::StalledReader).then_some(2048);
            let Some((connection, mut send, recv)) = session(target, from, window).await else {
                return;
            };
            let stream = if kind == Kind::UnknownStream {
                StreamId::from_bytes(&rand_id()).unwrap_or(target.stream)
            } else {
                target.stream
            };
            let hello = encode(&session::hello(&stream, "", "attack"));
            match kind {
                Kind::SlowHello => {
                    for byte in hello.iter() {
                        if send.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                Kind::Garbage => {
                    let _ = send.write_all(&hello).await;
                    let _ = send.write_all(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).await;
                }
                Kind::UnknownStream => {
                    let _ = send.write_all(&hello).await;
                }
                Kind::Waiters => {
                    if send.write_all(&hello).await.is_err() {
                        return;
                    }
                    // As many as a session may have in flight, each waiting
                    // out its 20 s deadline, again and again.
                    for round in 0u64.. {
                        for n in 0..16 {
                            let id = SegmentId::media(target.stream, 0, u64::MAX - round * 16 - n);
                            let request = encode(&session::request(round * 16 + n, id, 0, 20_000));
                            if send.write_all(&request).await.is_err() {
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_secs(20)).await;
                    }
                }
                Kind::StalledReader | Kind::ReusedIds => {
                    if send.write_all(&hello).await.is_err() {
                        return;
                    }
                    let junk = StreamId::from_bytes(&[7; 32]).unwrap_or(target.stream);
                    for n in 0u64.. {
                        let (request_id, id) = if kind == Kind::ReusedIds {
                            (7, SegmentId::media(target.stream, 0, u64::MAX - n))
                        } else {
                            (n, SegmentId::media(junk, 0, n))
                        };
                        let request = encode(&session::request(request_id, id, 0, 20_000));
                        if send.write_all(&request).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Kind::NoConnect | Kind::Slowloris => {}
            }
            // Wait for the gateway to cut it off, holding the control
            // stream unread (dropping it would tell the gateway to stop).
            let _unread = recv;
            let _ = connection.closed().await;
        }
    }
}

fn encode(msg: &meshcast_proto::pb::ClientMessage) -> bytes::Bytes {
    session::encode(msg).unwrap_or_default()
}

fn rand_id() -> [u8; 32] {
    let mut id = [0u8; 32];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    id[..16].copy_from_slice(&t.to_le_bytes());
    id
}

async fn session(
    target: &Target,
    from: IpAddr,
    window: Option<u32>,
) -> Option<(
    wtransport::Connection,
    wtransport::SendStream,
    wtransport::RecvStream,
)> {
    let mut config = ClientConfig::builder()
        .with_bind_address(SocketAddr::new(from, 0))
        .with_server_certificate_hashes([Sha256Digest::new(target.cert_hash)])
        .build();
    if let Some(window) = window {
        let mut transport = quinn::TransportConfig::default();
        transport.stream_receive_window(window.into());
        transport.receive_window(window.into());
        config
            .quic_config_mut()
            .transport_config(Arc::new(transport));
    }
    let endpoint = Endpoint::client(config).ok()?;
    let connection = endpoint.connect(&target.url).await.ok()?;
    let (send, recv) = connection.open_bi().await.ok()?.await.ok()?;
    Some((connection, send, recv))
}

async fn no_connect(target: &Target, from: IpAddr) {
    let Ok(mut tls) = crate::client::pinned_tls(target.cert_hash) else {
        return;
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let Ok(crypto) = quinn::crypto::rustls::QuicClientConfig::try_from(tls) else {
        return;
    };
    let Ok(mut endpoint) = quinn::Endpoint::client(SocketAddr::new(from, 0)) else {
        return;
    };
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let Ok(connecting) = endpoint.connect(target.quic, "localhost") else {
        return;
    };
    if let Ok(connection) = connecting.await {
        connection.closed().await;
    }
}

async fn slowloris(target: &Target, from: IpAddr) {
    let socket = match from {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let Ok(socket) = socket else { return };
    if socket.bind(SocketAddr::new(from, 0)).is_err() {
        return;
    }
    let Ok(mut socket) = socket.connect(target.web).await else {
        return;
    };
    if socket
        .write_all(b"GET /.well-known/meshcast HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .is_err()
    {
        return;
    }
    while socket.write_all(b"a").await.is_ok() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
