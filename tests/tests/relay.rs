//! The WebTransport gateway, driven by the native client over real QUIC on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use meshcast_node::unix_now_us as now_us;
use meshcast_proto::pb::ErrorCode;
use meshcast_proto::{PublisherKey, SegmentId, SegmentKind, token};
use meshcast_relay::certs::CertSource;
use meshcast_relay::{Client, ClientError, ClientEvent};
use meshcast_tests::relay::{connect, gateway_config, mesh, mesh_with};
use meshcast_tests::{init_logs, media_dir};

fn origin_bytes(uri: &str) -> Vec<u8> {
    std::fs::read(media_dir().join(uri)).expect("origin file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_client_fetches_every_segment_of_the_live_stream_through_the_relay() {
    init_logs();
    let mesh = mesh(false, gateway_config()).await;
    // The first Hello makes the relay follow the stream, and its Welcome
    // names what the relay holds after a short wait: on a loaded host, maybe
    // one rendition's segments. Then wait until the relay holds a media
    // segment of each, so that this client's Welcome must name them.
    let first = connect(&mesh, "").await.expect("first session");
    assert!(!first.live_edge().is_empty(), "Welcome named no live edge");
    drop(first);
    meshcast_tests::eventually(Duration::from_secs(30), || async {
        let media = |node: &meshcast_tests::TestNode| {
            node.held(&mesh.stream)
                .iter()
                .filter(|id| id.kind == SegmentKind::Media)
                .map(|id| id.rendition)
                .collect::<std::collections::BTreeSet<_>>()
        };
        let published = media(&mesh.publisher);
        (published.len() == 2 && media(&mesh.relay) == published).then_some(())
    })
    .await
    .expect("the relay holds no media segment of a rendition after 30 s");
    let mut client = connect(&mesh, "").await.expect("session");
    assert_eq!(client.descriptor().stream_key().id, mesh.stream);
    let renditions: Vec<u32> = client
        .descriptor()
        .descriptor()
        .renditions
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(renditions.len(), 2);

    assert!(!client.live_edge().is_empty(), "Welcome named no live edge");
    // For checking bytes fetched over HTTP: each rendition's init (once the
    // relay has it: it may come after the first media segments) and its
    // last media segments, the live edge among them.
    for r in &renditions {
        let recent: Vec<_> = client
            .recent()
            .iter()
            .map(|h| h.id())
            .filter(|id| id.rendition == *r)
            .collect();
        assert!(
            recent
                .iter()
                .filter(|id| id.kind == SegmentKind::Init)
                .count()
                <= 1,
            "{recent:?}"
        );
        let media = recent
            .iter()
            .filter(|id| id.kind == SegmentKind::Media)
            .count();
        // At least the live edge: the relay may hold only one media segment
        // of a rendition when the Welcome leaves.
        assert!(
            (1..=meshcast_proto::session::WELCOME_RECENT).contains(&media),
            "{recent:?}"
        );
    }
    for edge in client.live_edge() {
        assert!(
            client.recent().iter().any(|h| h.id() == edge.id()),
            "the live edge {:?} is not among the recent headers",
            edge.id()
        );
    }
    // Every segment the publisher holds (both renditions' init segments and
    // live windows). The relay may still be catching up: its gateway waits for
    // segments on their way.
    let published = mesh.publisher.held(&mesh.stream);
    assert!(
        published.len() >= 14,
        "the publisher holds only {}",
        published.len()
    );
    assert!(
        renditions
            .iter()
            .all(|r| published.iter().any(|id| id.rendition == *r))
    );
    let mut fetched = 0;
    for id in &published {
        let (got, body) = client
            .fetch(*id, Duration::from_secs(10))
            .await
            .expect("window segment");
        assert_eq!(body.as_ref(), origin_bytes(&got.info().uri).as_slice());
        fetched += 1;
    }
    // Then the live edge: every announced segment, as it comes.
    let mut announced = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, client.next_event()).await {
        if let ClientEvent::Announced(header) = event {
            announced.push(header.id());
        }
    }
    assert!(
        announced.len() >= 2,
        "only {} announcements in 6 s",
        announced.len()
    );
    for id in announced {
        let (got, body) = client
            .fetch(id, Duration::from_secs(10))
            .await
            .expect("live segment");
        assert_eq!(body.as_ref(), origin_bytes(&got.info().uri).as_slice());
        fetched += 1;
    }
    assert!(fetched >= published.len() + 2, "fetched {fetched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_stream_needs_a_valid_token() {
    init_logs();
    let mesh = mesh(true, gateway_config()).await;
    let refused = |result: Result<Client, ClientError>| match result {
        Err(ClientError::Refused { code, .. }) => code,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a session opened without a valid token"),
    };
    assert_eq!(refused(connect(&mesh, "").await), ErrorCode::TokenRequired);
    let expired = token::issue(&mesh.key, &mesh.stream, now_us() - 1_000_000, "late");
    assert_eq!(
        refused(connect(&mesh, &expired).await),
        ErrorCode::TokenExpired
    );
    let forged = token::issue(
        &PublisherKey::from_seed([66; 32]),
        &mesh.stream,
        now_us() + 60_000_000,
        "eve",
    );
    assert_eq!(
        refused(connect(&mesh, &forged).await),
        ErrorCode::TokenInvalid
    );
    assert_eq!(
        refused(connect(&mesh, "not-a-token").await),
        ErrorCode::TokenInvalid
    );

    let valid = token::issue(&mesh.key, &mesh.stream, now_us() + 60_000_000, "alice");
    let mut client = connect(&mesh, &valid)
        .await
        .expect("a valid token opens the session");
    let id = SegmentId {
        stream: mesh.stream,
        rendition: 0,
        kind: SegmentKind::Init,
        sequence: 0,
        part: 0,
    };
    client
        .fetch(id, Duration::from_secs(10))
        .await
        .expect("segment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_keeps_open_sessions_and_new_sessions_use_the_new_hash() {
    init_logs();
    let mut config = gateway_config();
    config.cert = CertSource::SelfSigned {
        lifetime: Duration::from_secs(8),
        overlap: Duration::from_secs(4),
    };
    let mesh = mesh(false, config).await;
    let first_hashes = mesh.gateway.cert_hashes();
    assert_eq!(first_hashes.len(), 1);
    let mut open = connect(&mesh, "").await.expect("session");
    let init = |rendition| SegmentId {
        stream: mesh.stream,
        rendition,
        kind: SegmentKind::Init,
        sequence: 0,
        part: 0,
    };
    open.fetch(init(0), Duration::from_secs(10))
        .await
        .expect("before rotation");

    // Renewal is due 4 s before the 8 s certificate ends.
    let rotated = meshcast_tests::eventually(Duration::from_secs(10), || async {
        let hashes = mesh.gateway.cert_hashes();
        (hashes.first() != first_hashes.first()).then_some(hashes)
    })
    .await
    .expect("the certificate was not renewed");
    assert_eq!(
        rotated.len(),
        2,
        "the old hash is offered during the overlap"
    );
    assert_eq!(rotated[1], first_hashes[0]);

    open.fetch(init(1), Duration::from_secs(10))
        .await
        .expect("the open session survives rotation");
    let fresh = Client::connect(
        mesh.gateway.url(),
        &rotated[..1],
        mesh.stream,
        "",
        Duration::from_secs(10),
    )
    .await;
    fresh
        .expect("a new session with the new hash")
        .fetch(init(0), Duration::from_secs(10))
        .await
        .expect("segment");
    let stale = Client::connect(
        mesh.gateway.url(),
        &first_hashes,
        mesh.stream,
        "",
        Duration::from_secs(5),
    )
    .await;
    assert!(stale.is_err(), "the old certificate is no longer presented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_get_error_codes_and_others_keep_being_served() {
    init_logs();
    let mut config = gateway_config();
    config.limits.max_sessions_per_ip = 3;
    config.limits.max_inflight = 2;
    // Init segments (≈1.3 KB) fit, media segments (≥ 30 KB) do not.
    config.limits.max_inflight_bytes = 4096;
    let mesh = mesh(false, config).await;
    let init = SegmentId {
        stream: mesh.stream,
        rendition: 0,
        kind: SegmentKind::Init,
        sequence: 0,
        part: 0,
    };
    let mut good = connect(&mesh, "").await.expect("session");
    good.fetch(init, Duration::from_secs(10))
        .await
        .expect("segment");

    // Garbage on the control stream.
    let mut garbage = connect(&mesh, "").await.expect("session");
    garbage
        .send_raw(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .expect("send");
    assert_eq!(first_error(&mut garbage).await, ErrorCode::BadRequest);
    drop(garbage);

    // A frame that claims more than a client may send.
    let mut oversize = connect(&mesh, "").await.expect("session");
    let mut prefix = Vec::new();
    prost::encoding::encode_varint(1 << 20, &mut prefix);
    oversize.send_raw(&prefix).await.expect("send");
    assert_eq!(first_error(&mut oversize).await, ErrorCode::TooLarge);
    drop(oversize);

    // More requests in flight than allowed: segments far in the future wait.
    let mut greedy = connect(&mesh, "").await.expect("session");
    for sequence in 0..4 {
        let future = SegmentId::media(mesh.stream, 0, 1_000_000 + sequence);
        greedy
            .request(future, 0, Duration::from_secs(3))
            .await
            .expect("request");
    }
    assert_eq!(first_error(&mut greedy).await, ErrorCode::TooManyRequests);
    drop(greedy);

    // Over the per-address session limit (the good session holds one slot).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _second = connect(&mesh, "").await.expect("second session");
    let _third = connect(&mesh, "").await.expect("third session");
    match connect(&mesh, "").await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::TooManySessions),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a session over the limit opened"),
    }
    // A segment larger than the session's in-flight byte budget.
    let edge = good
        .live_edge()
        .first()
        .map(|h| h.id())
        .expect("a live edge");
    match good.fetch(edge, Duration::from_secs(5)).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, ErrorCode::TooManyRequests),
        other => panic!(
            "a segment over the byte budget was served: {:?}",
            other.map(|_| ())
        ),
    }
    // Through all of it, the good session is still served.
    let other = SegmentId {
        rendition: 1,
        ..init
    };
    good.fetch(other, Duration::from_secs(10))
        .await
        .expect("still served");
}

async fn first_error(client: &mut Client) -> ErrorCode {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Ok(ClientEvent::Error { code, .. })) => return code,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("session ended without an error code: {e}"),
            Err(_) => panic!("no error code within 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_certificate_files_are_reloaded_when_they_change() {
    init_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write = |identity: &wtransport::Identity| {
        std::fs::write(&cert, identity.certificate_chain().as_slice()[0].to_pem()).expect("cert");
        std::fs::write(&key, identity.private_key().to_secret_pem()).expect("key");
    };
    let make = || wtransport::Identity::self_signed(["127.0.0.1", "localhost"]).expect("identity");
    let first = make();
    write(&first);
    let mut config = gateway_config();
    config.cert = CertSource::Files {
        cert: cert.clone(),
        key: key.clone(),
        poll: Duration::from_millis(300),
    };
    let mesh = mesh(false, config).await;
    let first_hash = first.certificate_chain().as_slice()[0].hash();
    assert_eq!(mesh.gateway.cert_hashes(), vec![first_hash.clone()]);
    let _open = connect(&mesh, "")
        .await
        .expect("session with the first certificate");

    // Modification times have a coarse resolution on some file systems.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = make();
    write(&second);
    let second_hash = second.certificate_chain().as_slice()[0].hash();
    let reloaded = meshcast_tests::eventually(Duration::from_secs(10), || async {
        (mesh.gateway.cert_hashes().first() == Some(&second_hash)).then_some(())
    })
    .await;
    assert!(reloaded.is_some(), "the new files were not picked up");
    Client::connect(
        mesh.gateway.url(),
        &[second_hash],
        mesh.stream,
        "",
        Duration::from_secs(10),
    )
    .await
    .expect("a session with the reloaded certificate");

    // Browsers pin only short-lived certificates: an operator's certificate
    // is left to the Web PKI, so the well-known document offers no hash.
    let response = http_get(mesh.gateway.web_addr(), meshcast_relay::wellknown::PATH).await;
    let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let doc: meshcast_relay::wellknown::WellKnown = serde_json::from_str(body).expect("JSON");
    assert!(
        doc.certificate_hashes.is_empty(),
        "{:?}",
        doc.certificate_hashes
    );
}

/// A plain HTTP/1.1 GET, for the well-known document.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://player.example\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    socket.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_known_describes_the_gateway_and_welcome_lists_other_gateways() {
    init_logs();
    let mut config = gateway_config();
    let peer_hash = "ab".repeat(32);
    config.peers = vec![meshcast_relay::Peer {
        url: "https://edge.example:4433/".into(),
        cert_hashes: vec![peer_hash.clone()],
    }];
    // A public address the operator configured; the node listens on 127.0.0.1.
    let public = "/dns4/relay.example/udp/4001/quic-v1";
    let relay_config = meshcast_node::Config {
        external: vec![public.parse().expect("multiaddr")],
        ..meshcast_tests::config()
    };
    let mesh = mesh_with(false, config, relay_config).await;
    let response = http_get(mesh.gateway.web_addr(), meshcast_relay::wellknown::PATH).await;
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: *"),
        "no CORS: {head}"
    );
    let doc: meshcast_relay::wellknown::WellKnown = serde_json::from_str(body).expect("JSON");
    assert_eq!(doc.webtransport, mesh.gateway.url());
    let hashes: Vec<String> = mesh
        .gateway
        .cert_hashes()
        .iter()
        .map(|h| hex::encode(h.as_ref()))
        .collect();
    assert_eq!(doc.certificate_hashes, hashes);
    assert_eq!(doc.peer_id, mesh.relay.node.peer_id().to_string());
    // Only the configured public address: listen addresses name internal
    // interfaces.
    assert_eq!(
        doc.addresses,
        vec![format!("{public}/p2p/{}", doc.peer_id)],
        "the well-known document lists addresses nobody configured as public"
    );

    // A page that follows the document connects with exactly what it says.
    let mut pinned = [0u8; 32];
    hex::decode_to_slice(&doc.certificate_hashes[0], &mut pinned).expect("hex");
    let client = Client::connect(
        &doc.webtransport,
        &[wtransport::tls::Sha256Digest::new(pinned)],
        mesh.stream,
        "",
        Duration::from_secs(15),
    )
    .await
    .expect("session from the well-known document");
    let gateways = client.gateways();
    assert_eq!(gateways.len(), 1);
    assert_eq!(gateways[0].url, "https://edge.example:4433/");
    assert_eq!(hex::encode(gateways[0].cert_hashes[0]), peer_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_closed_with_a_code() {
    init_logs();
    let mut config = gateway_config();
    config.limits.idle_timeout = Duration::from_secs(1);
    let mesh = mesh(false, config).await;
    let mut idle = connect(&mesh, "").await.expect("session");
    assert_eq!(first_error(&mut idle).await, ErrorCode::Idle);
    assert_eq!(
        mesh.gateway.sessions(),
        0,
        "the closed session still counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_query_names_every_segment_the_gateway_holds_and_is_rate_limited() {
    init_logs();
    let mesh = mesh(false, gateway_config()).await;
    let mut client = connect(&mesh, "").await.expect("session");
    let descriptor = client.descriptor().descriptor().clone();
    let query = meshcast_proto::session::encode(&meshcast_proto::session::header_query(vec![]))
        .expect("a small frame");
    client.send_raw(&query).await.expect("sent");

    // The catalogue comes as announcements; live ones may mix in.
    let mut known = meshcast_proto::known::KnownHeaders::default();
    known.set_descriptor(descriptor.clone());
    let mut named = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, client.next_event()).await {
        if let ClientEvent::Announced(header) = event {
            named.insert(header.id());
            known.insert(header);
        }
    }
    // Whatever the Welcome named (the newest) and the oldest: the catalogue
    // is every init and media segment held, from the start of the window.
    for header in client.recent() {
        assert!(named.contains(&header.id()), "{:?} not named", header.id());
    }
    for r in &descriptor.renditions {
        let media: Vec<u64> = named
            .iter()
            .filter(|id| id.rendition == r.id && id.kind == SegmentKind::Media)
            .map(|id| id.sequence)
            .collect();
        assert!(
            media.len() > meshcast_proto::session::WELCOME_RECENT / 2,
            "{media:?}"
        );
        assert!(
            named
                .iter()
                .any(|id| id.rendition == r.id && id.kind == SegmentKind::Init)
        );
    }
    // Each is found by the URL a player would ask for, on any host.
    for id in &named {
        let header = known.get(id).expect("known");
        let url = descriptor
            .segment_url(id.rendition, &header.info().uri)
            .expect("an origin URL")
            .replace("127.0.0.1", "mirror.example");
        assert_eq!(
            known
                .locate(&url, header.info().range_start)
                .map(|h| h.id()),
            Some(*id)
        );
    }

    // A second query within 2 s breaks the rule: the session is closed.
    client.send_raw(&query).await.expect("sent");
    client.send_raw(&query).await.ok();
    assert_eq!(first_error(&mut client).await, ErrorCode::TooManyRequests);
}
