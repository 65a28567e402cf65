//! A relay under hostile viewers: one attack client per test (wtransport or
//! raw quinn over real QUIC on 127.0.0.1), each checking that the attack is
//! cut off within a stated time while a good viewer beside it keeps being
//! served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshcast_proto::pb::ErrorCode;
use meshcast_proto::session::{self, ControlReader};
use meshcast_proto::{
    Descriptor, PublisherKey, Rendition, SegmentId, SegmentKind, StreamId, pb, token,
};
use meshcast_relay::{Client, ClientError, ClientEvent};
use meshcast_tests::relay::{Mesh, connect, gateway_config, mesh};
use meshcast_tests::{TestNode, config, eventually, init_logs};
use wtransport::{ClientConfig, Endpoint, RecvStream, SendStream};

fn init(mesh: &Mesh, rendition: u32) -> SegmentId {
    SegmentId {
        stream: mesh.stream,
        rendition,
        kind: SegmentKind::Init,
        sequence: 0,
        part: 0,
    }
}

/// The good viewer beside every attack: it must keep getting segments.
async fn still_served(good: &mut Client, mesh: &Mesh) {
    for rendition in [0, 1] {
        good.fetch(init(mesh, rendition), Duration::from_secs(10))
            .await
            .expect("the good viewer is still served");
    }
}

/// A WebTransport session with its control stream open and nothing sent,
/// for attacks that speak the protocol badly. `window` caps the QUIC
/// receive windows (a viewer that reads slowly or not at all).
async fn raw_session(
    mesh: &Mesh,
    window: Option<u32>,
) -> (wtransport::Connection, SendStream, RecvStream) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes(mesh.gateway.cert_hashes())
        .build();
    if let Some(window) = window {
        let mut transport = quinn::TransportConfig::default();
        transport.stream_receive_window(window.into());
        transport.receive_window(window.into());
        config
            .quic_config_mut()
            .transport_config(Arc::new(transport));
    }
    let endpoint = Endpoint::client(config).expect("client endpoint");
    let connection = endpoint.connect(mesh.gateway.url()).await.expect("session");
    let (send, recv) = connection
        .open_bi()
        .await
        .expect("control stream")
        .await
        .expect("control stream");
    (connection, send, recv)
}

fn hello(stream: &StreamId) -> bytes::Bytes {
    session::encode(&session::hello(stream, "", "attack")).expect("hello")
}

fn request(request_id: u64, id: SegmentId, deadline_ms: u32) -> bytes::Bytes {
    session::encode(&session::request(request_id, id, 0, deadline_ms)).expect("request")
}

/// Reads control frames until the gateway closes the stream or the session;
/// returns the error codes it sent. Panics if that takes longer than `within`.
async fn read_until_closed(recv: &mut RecvStream, within: Duration) -> Vec<ErrorCode> {
    let mut reader = ControlReader::default();
    let mut codes = Vec::new();
    let mut buf = vec![0u8; 4096];
    let read = async {
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(n)) => {
                    reader.feed(&buf[..n]);
                    while let Ok(Some(msg)) = reader.next_message() {
                        if let Some(pb::server_message::Body::Error(e)) = msg.body {
                            codes.push(e.code());
                        }
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| panic!("the gateway kept the session open for {within:?}"));
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validly_signed_segment_other_than_the_one_asked_for_is_rejected() {
    init_logs();
    let mut config = gateway_config();
    config.faults.wrong_segment_every = 1;
    let mesh = mesh(false, config).await;
    let mut client = connect(&mesh, "").await.expect("session");
    match client.fetch(init(&mesh, 0), Duration::from_secs(10)).await {
        Err(ClientError::Protocol(why)) => assert!(why.contains("asked for"), "{why}"),
        Ok((header, _)) => panic!("accepted {:?} for {:?}", header.id(), init(&mesh, 0)),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A stream published by anyone, its origin an "internal" server on
/// loopback that counts the connections it gets.
async fn attackers_stream(
    mesh: &Mesh,
) -> (TestNode, StreamId, Arc<std::sync::atomic::AtomicUsize>) {
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/admin/", internal.local_addr().expect("addr"));
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = internal.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let attacker = TestNode::start(config()).await;
    attacker
        .node
        .dial(mesh.relay.addr.clone())
        .await
        .expect("dial");
    let key = PublisherKey::from_seed([99; 32]);
    let descriptor = Descriptor {
        publisher: key.public(),
        name: "not-yours".into(),
        renditions: vec![Rendition {
            id: 0,
            name: "x".into(),
            bandwidth: 1_000_000,
            codecs: String::new(),
            width: 0,
            height: 0,
            uri: "secret.m3u8".into(),
            ..Default::default()
        }],
        origin_url: url,
        segment_duration_ms: 2000,
        live: true,
        issued_at_us: meshcast_node::unix_now_us(),
        private: false,
    }
    .sign(&key)
    .expect("sign");
    let stream = descriptor.stream_key().id;
    attacker.node.publish(descriptor).await.expect("publish");
    (attacker, stream, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_for_a_stream_the_relay_does_not_serve_is_refused_without_a_follow() {
    init_logs();
    let mesh = mesh(false, gateway_config()).await;
    let mut good = connect(&mesh, "").await.expect("session");
    let (_attacker, stream, hits) = attackers_stream(&mesh).await;
    // The relay's node could find it: the refusal is the gateway's policy.
    mesh.relay
        .node
        .find_stream(stream, Duration::from_secs(10))
        .await
        .expect("the attacker's stream is in the DHT");
    let refused = Client::connect(
        mesh.gateway.url(),
        &mesh.gateway.cert_hashes(),
        stream,
        "",
        Duration::from_secs(10),
    )
    .await;
    match refused {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::UnknownStream),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the relay served a stream it was not told to serve"),
    }
    assert!(
        mesh.relay
            .node
            .followed(stream)
            .await
            .expect("node")
            .is_none(),
        "the relay followed the attacker's stream"
    );
    assert_eq!(mesh.gateway.streams(), 1, "only the test stream is served");
    still_served(&mut good, &mesh).await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the internal server was contacted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_stream_is_followed_only_once_a_valid_token_is_shown() {
    init_logs();
    let mesh = mesh(true, gateway_config()).await;
    for bad in ["", "not-a-token"] {
        assert!(
            matches!(connect(&mesh, bad).await, Err(ClientError::Refused { .. })),
            "a session opened without a valid token"
        );
        assert!(
            mesh.relay
                .node
                .followed(mesh.stream)
                .await
                .expect("node")
                .is_none(),
            "the relay followed a private stream for a viewer without a valid token"
        );
    }
    let valid = token::issue(
        &mesh.key,
        &mesh.stream,
        meshcast_node::unix_now_us() + 60_000_000,
        "alice",
    );
    let mut client = connect(&mesh, &valid).await.expect("a valid token");
    assert!(
        mesh.relay
            .node
            .followed(mesh.stream)
            .await
            .expect("node")
            .is_some()
    );
    client
        .fetch(init(&mesh, 0), Duration::from_secs(10))
        .await
        .expect("segment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_followed_for_viewers_is_unfollowed_when_none_is_left() {
    init_logs();
    let mut config = gateway_config();
    config.limits.unfollow_after = Duration::from_secs(1);
    let mesh = mesh(false, config).await;
    let client = connect(&mesh, "").await.expect("session");
    let followed = || async {
        mesh.relay
            .node
            .followed(mesh.stream)
            .await
            .expect("node")
            .is_some()
    };
    assert!(followed().await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(followed().await, "unfollowed while a viewer watches");
    client.close();
    drop(client);
    let unfollowed = eventually(Duration::from_secs(10), || async {
        (!followed().await).then_some(())
    })
    .await;
    assert!(
        unfollowed.is_some(),
        "still followed 10 s after the last viewer left"
    );
    assert_eq!(mesh.gateway.streams(), 0);
}

/// A session from `from` (a 127/8 address: loopback, another "host").
async fn connect_from(mesh: &Mesh, from: [u8; 4]) -> Result<Client, ClientError> {
    let endpoint = Client::endpoint_at(
        Some(std::net::SocketAddr::from((from, 0))),
        &mesh.gateway.cert_hashes(),
    )
    .expect("client endpoint");
    Client::connect_with(
        endpoint,
        mesh.gateway.url(),
        mesh.stream,
        "",
        Duration::from_secs(10),
    )
    .await
}

/// An attacker cut off comes straight back: each return would be a TLS
/// handshake for the relay. Over its address's rate it is refused at the
/// first packet, while another address connects as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_from_one_address_are_refused_over_its_rate() {
    init_logs();
    let mut config = gateway_config();
    config.limits.connection_burst_per_ip = 5;
    config.limits.connections_per_second_per_ip = 1;
    let mesh = mesh(false, config).await;
    let attacker = [127, 0, 0, 3];
    let mut held = Vec::new();
    for n in 0..5 {
        held.push(
            connect_from(&mesh, attacker)
                .await
                .unwrap_or_else(|e| panic!("connection {n} of the burst: {e}")),
        );
    }
    let started = Instant::now();
    match connect_from(&mesh, attacker).await {
        Err(ClientError::Connect { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a sixth connection within the second was let in"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused only after {:?}",
        started.elapsed()
    );
    let mut good = connect_from(&mesh, [127, 0, 0, 4])
        .await
        .expect("another address connects");
    still_served(&mut good, &mesh).await;
    // One per second refills: the attacker's address may connect again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    connect_from(&mesh, attacker)
        .await
        .expect("a connection once the bucket has refilled");
}

/// A reconnect storm: many first Hellos for a stream the relay does not
/// follow yet, all at once. One lookup and one follow serve them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_makes_one_follow_and_every_viewer_is_welcomed() {
    init_logs();
    let mesh = mesh(false, gateway_config()).await;
    assert_eq!(mesh.gateway.follows(), 0);
    let storm: Vec<_> = (0..24)
        .map(|_| {
            let (url, hashes, stream) = (
                mesh.gateway.url().to_string(),
                mesh.gateway.cert_hashes(),
                mesh.stream,
            );
            tokio::spawn(async move {
                Client::connect(&url, &hashes, stream, "", Duration::from_secs(20)).await
            })
        })
        .collect();
    let mut viewers = Vec::new();
    for task in storm {
        viewers.push(task.await.expect("task").expect("welcomed in the storm"));
    }
    assert_eq!(mesh.gateway.follows(), 1, "one follow for the whole storm");
    assert_eq!(mesh.gateway.streams(), 1);
    for viewer in viewers.iter_mut().take(3) {
        still_served(viewer, &mesh).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_connect_are_capped_and_dropped_at_the_deadline() {
    init_logs();
    let mut config = gateway_config();
    config.limits.max_sessions_per_ip = 4;
    config.limits.handshake_timeout = Duration::from_secs(2);
    let mesh = mesh(false, config).await;
    let mut good = connect(&mesh, "").await.expect("session");

    let hash: [u8; 32] = *mesh.gateway.cert_hashes()[0].as_ref();
    let mut tls = meshcast_relay::client::pinned_tls(hash).expect("tls");
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint = quinn::Endpoint::client(meshcast_tests::local()).expect("quinn endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let addr = mesh.gateway.quic_addr();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        // QUIC handshake only: no HTTP/3 settings, no CONNECT.
        match endpoint.connect(addr, "localhost").expect("connect").await {
            Ok(connection) => held.push(connection),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(
        held.len(),
        4,
        "connections over the per-address cap were held"
    );
    assert_eq!(refused, 2);
    let started = Instant::now();
    for connection in &held {
        tokio::time::timeout(Duration::from_secs(5), connection.closed())
            .await
            .expect("a connection without CONNECT was held past its deadline");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(mesh.gateway.handshakes(), 0);
    still_served(&mut good, &mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_its_control_stream_is_cut_off() {
    init_logs();
    let mut config = gateway_config();
    config.limits.write_timeout = Duration::from_secs(1);
    let mesh = mesh(false, config).await;
    let mut good = connect(&mesh, "").await.expect("session");
    let before = mesh.gateway.sessions();
    // A 2 KiB receive window that it never reads from: bad requests, each
    // answered by an error frame on the control stream, fill it quickly.
    let (connection, mut send, _recv) = raw_session(&mesh, Some(2048)).await;
    send.write_all(&hello(&mesh.stream)).await.expect("hello");
    let other = SegmentId::media(StreamId::from_bytes(&[7; 32]).expect("id"), 0, 1);
    for request_id in 1..=500u64 {
        if send
            .write_all(&request(request_id, other, 1000))
            .await
            .is_err()
        {
            break;
        }
    }
    tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .expect("a viewer that reads nothing was kept for 5 s");
    assert!(mesh.gateway.sessions() <= before);
    still_served(&mut good, &mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_trickled_byte_by_byte_is_cut_off_at_the_hello_deadline() {
    init_logs();
    let mut config = gateway_config();
    config.limits.hello_timeout = Duration::from_secs(3);
    let mesh = mesh(false, config).await;
    let mut good = connect(&mesh, "").await.expect("session");
    let (_connection, mut send, mut recv) = raw_session(&mesh, None).await;
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        // Silent for most of the deadline, then a byte every 300 ms: each
        // frame read alone is within its own timeout, the Hello as a whole is not.
        tokio::time::sleep(Duration::from_millis(2_800)).await;
        for byte in hello(&StreamId::from_bytes(&[1; 32]).expect("id")).iter() {
            if send.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let codes = read_until_closed(&mut recv, Duration::from_secs(10)).await;
    let took = started.elapsed();
    trickle.abort();
    assert!(
        took < Duration::from_millis(4_500),
        "the session lived {took:?} with a 3 s Hello deadline"
    );
    assert_eq!(codes, vec![ErrorCode::Idle]);
    still_served(&mut good, &mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_end_at_their_deadline_and_are_capped_in_total() {
    init_logs();
    let mut config = gateway_config();
    config.limits.max_waiters = 3;
    let mesh = mesh(false, config).await;
    let mut good = connect(&mesh, "").await.expect("session");
    let mut attacker = connect(&mesh, "").await.expect("session");
    // Segments far in the future: they never arrive.
    for sequence in 0..3 {
        let future = SegmentId::media(mesh.stream, 0, 1_000_000 + sequence);
        attacker
            .request(future, 0, Duration::from_secs(2))
            .await
            .expect("request");
    }
    let waiting = eventually(Duration::from_secs(5), || async {
        (mesh.gateway.waiting_requests() == 3).then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "{} waiting",
        mesh.gateway.waiting_requests()
    );
    // Over the total: refused at once, whichever session asks.
    match good
        .fetch(
            SegmentId::media(mesh.stream, 1, 2_000_000),
            Duration::from_secs(2),
        )
        .await
    {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::TooManyRequests, "{message}");
        }
        other => panic!("a fourth waiter was taken: {:?}", other.map(|_| ())),
    }
    // At their 2 s deadline the waiters go, and the places are free again.
    let gone = eventually(Duration::from_secs(6), || async {
        (mesh.gateway.waiting_requests() == 0).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "{} still waiting",
        mesh.gateway.waiting_requests()
    );
    still_served(&mut good, &mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_in_flight_cannot_be_reused() {
    init_logs();
    let mesh = mesh(false, gateway_config()).await;
    let mut attacker = connect(&mesh, "").await.expect("session");
    let future = |n: u64| SegmentId::media(mesh.stream, 0, 1_000_000 + n);
    attacker
        .send_raw(&request(7, future(0), 3_000))
        .await
        .expect("send");
    attacker
        .send_raw(&request(7, future(1), 3_000))
        .await
        .expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, attacker.next_event()).await {
            Ok(Ok(ClientEvent::Error {
                code, request_id, ..
            })) => {
                assert_eq!(request_id, 7);
                assert_eq!(code, ErrorCode::BadRequest, "the reused id was not refused");
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("session ended: {e}"),
            Err(_) => panic!("no answer to a reused request id"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sending_only_useless_frames_is_closed_as_idle() {
    init_logs();
    let mut config = gateway_config();
    config.limits.idle_timeout = Duration::from_secs(2);
    let mesh = mesh(false, config).await;
    let mut good = connect(&mesh, "").await.expect("session");
    let (_connection, mut send, mut recv) = raw_session(&mesh, None).await;
    send.write_all(&hello(&mesh.stream)).await.expect("hello");
    let started = Instant::now();
    let chatter = tokio::spawn(async move {
        for request_id in 1.. {
            let cancel = session::encode(&session::cancel(request_id)).expect("cancel");
            if send.write_all(&cancel).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The good viewer asks now and then, so it is not idle itself.
    let attack = read_until_closed(&mut recv, Duration::from_secs(10));
    tokio::pin!(attack);
    let codes = loop {
        tokio::select! {
            codes = &mut attack => break codes,
            _ = tokio::time::sleep(Duration::from_millis(500)) => still_served(&mut good, &mesh).await,
        }
    };
    chatter.abort();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "lived {:?}",
        started.elapsed()
    );
    assert!(codes.contains(&ErrorCode::Idle), "{codes:?}");
    still_served(&mut good, &mesh).await;
}

/// A TCP connection from `from` (any 127.0.0.0/8 address is loopback on
/// Linux: a second "host" for the good client).
async fn tcp_from(from: [u8; 4], to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Waits for the server to close `socket`; how long that took.
async fn closed_within(socket: &mut tokio::net::TcpStream, within: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("an HTTP connection was held past {within:?}"));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_headers_are_cut_off_and_connections_capped_per_address() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_logs();
    let mut config = gateway_config();
    config.web_limits.header_timeout = Duration::from_secs(1);
    config.web_limits.max_connections_per_ip = 4;
    let mesh = mesh(false, config).await;
    let web = mesh.gateway.web_addr();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut socket = tcp_from([127, 0, 0, 1], web).await;
        // Headers started, never finished.
        let _ = socket
            .write_all(b"GET /.well-known/meshcast HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await;
        slow.push(socket);
    }
    // Over the per-address cap: closed at once.
    for socket in &mut slow[4..] {
        closed_within(socket, Duration::from_millis(500)).await;
    }
    // The others trickle a byte every 200 ms, each within hyper's own read
    // timeouts, and are closed at the 1 s header deadline.
    let trickling: Vec<_> = slow
        .drain(..4)
        .map(|socket| {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.into_split();
                let trickle = async {
                    loop {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if write.write_all(b"a").await.is_err() {
                            return;
                        }
                    }
                };
                let mut buf = [0u8; 256];
                let closed = async {
                    while let Ok(n) = read.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = trickle => {}
                    _ = closed => {}
                }
            })
        })
        .collect();
    // Meanwhile another address is served.
    let mut good = tcp_from([127, 0, 0, 2], web).await;
    good.write_all(b"GET /.well-known/meshcast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    good.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    for task in trickling {
        tokio::time::timeout(Duration::from_secs(4), task)
            .await
            .expect("a connection trickling its headers was held past the deadline")
            .expect("task");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
