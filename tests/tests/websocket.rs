//! The viewer protocol over a WebSocket (`relay/src/websocket.rs`), for
//! browsers without WebTransport: a native client over real TCP on
//! 127.0.0.1, speaking `meshcast_proto::mux` by hand.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use meshcast_node::unix_now_us;
use meshcast_proto::session::{self, ControlReader, DeliveryReader, Welcomed};
use meshcast_proto::{SegmentKind, mux};
use meshcast_relay::wellknown::WellKnown;
use meshcast_tests::relay::{Mesh, gateway_config, mesh};
use meshcast_tests::{eventually, init_logs, media_dir};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(mesh: &Mesh) -> Socket {
    let url = format!(
        "ws://{}{}",
        mesh.gateway.web_addr(),
        meshcast_relay::websocket::PATH
    );
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the WebSocket upgrade");
    socket
}

async fn send_control(socket: &mut Socket, msg: &meshcast_proto::pb::ClientMessage) {
    let frame = session::encode(msg).expect("a small frame");
    socket
        .send(Message::Binary(mux::control(&frame).into()))
        .await
        .expect("sent");
}

/// The next message, within 10 s; `None` once the socket is closed.
async fn next(socket: &mut Socket) -> Option<Vec<u8>> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message or the end within 10 s");
        match message {
            Some(Ok(Message::Binary(bytes))) => return Some(bytes.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("not a binary message: {other:?}"),
        }
    }
}

async fn hello(socket: &mut Socket, mesh: &Mesh) -> (ControlReader, Welcomed) {
    send_control(socket, &session::hello(&mesh.stream, "", "websocket-test")).await;
    let mut control = ControlReader::default();
    loop {
        if let Some(msg) = control.next_message().expect("well-formed control bytes") {
            let welcomed = session::welcome(msg, &mesh.stream, unix_now_us()).expect("Welcome");
            return (control, welcomed);
        }
        let bytes = next(socket).await.expect("Welcome before the end");
        match mux::decode(&bytes).expect("a mux message") {
            mux::Message::Control(chunk) => control.feed(chunk),
            other => panic!("{other:?} before Welcome"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_client_plays_the_live_stream_over_the_websocket() {
    init_logs();
    let mesh = mesh(false, gateway_config()).await;
    // The well-known document names the path.
    let doc: WellKnown = reqwest::get(format!(
        "http://{}{}",
        mesh.gateway.web_addr(),
        meshcast_relay::wellknown::PATH
    ))
    .await
    .expect("GET")
    .bytes()
    .await
    .map(|body| serde_json::from_slice(&body).expect("JSON"))
    .expect("a body");
    assert_eq!(
        doc.websocket.as_deref(),
        Some(meshcast_relay::websocket::PATH)
    );

    // The first Hello makes the gateway follow the stream; once it holds
    // several segments of each rendition, a second session's Welcome names
    // a few.
    let mut first = open(&mesh).await;
    hello(&mut first, &mesh).await;
    eventually(Duration::from_secs(30), || async {
        (mesh.relay.held(&mesh.stream).len() >= 8).then_some(())
    })
    .await
    .expect("the relay holds 8 segments within 30 s");
    let mut socket = open(&mesh).await;
    let (_control, welcomed) = hello(&mut socket, &mesh).await;
    // Everything the Welcome names (each rendition's init and newest media
    // segments), requested at once: deliveries interleave on the socket.
    let wanted: Vec<_> = welcomed
        .recent
        .iter()
        .map(|h| h.id())
        .filter(|id| matches!(id.kind, SegmentKind::Media | SegmentKind::Init))
        .collect();
    assert!(wanted.len() >= 4, "{wanted:?}");
    for (i, id) in wanted.iter().enumerate() {
        send_control(&mut socket, &session::request(i as u64 + 1, *id, 0, 5_000)).await;
    }
    let mut streams: HashMap<u64, DeliveryReader> = HashMap::new();
    let mut delivered = 0;
    let mut interleaved = false;
    let mut last_stream = None;
    while delivered < wanted.len() {
        let bytes = next(&mut socket).await.expect("deliveries before the end");
        match mux::decode(&bytes).expect("a mux message") {
            mux::Message::Control(_) => {}
            mux::Message::Data { stream, bytes } => {
                assert!(bytes.len() <= mux::MAX_CHUNK);
                if last_stream.is_some_and(|s| s != stream) && streams.contains_key(&stream) {
                    interleaved = true;
                }
                last_stream = Some(stream);
                streams
                    .entry(stream)
                    .or_insert_with(|| DeliveryReader::new(welcomed.key))
                    .feed(bytes)
                    .expect("verified as it comes");
            }
            mux::Message::Fin { stream } => {
                let reader = streams.remove(&stream).expect("a stream that was open");
                let got = reader.finish().expect("a whole, verified delivery");
                let id = wanted[got.request_id as usize - 1];
                assert_eq!(got.header.id(), id);
                let origin = std::fs::read(media_dir().join(&got.header.info().uri))
                    .expect("the origin's file");
                assert_eq!(got.body.as_ref(), origin.as_slice(), "{id:?}");
                delivered += 1;
            }
            mux::Message::Reset { stream } => panic!("stream {stream} reset"),
        }
    }
    assert!(streams.is_empty());
    // Several requests at once share the socket in chunks, not one after
    // another whole.
    assert!(interleaved, "the deliveries did not interleave");
}

/// Reads to the socket's end (each read within 10 s): control frames only,
/// of which it returns the Errors (one at most).
async fn drain(socket: &mut Socket) -> Vec<meshcast_proto::pb::ServerMessage> {
    let mut control = ControlReader::default();
    let mut frames = Vec::new();
    while let Some(bytes) = next(socket).await {
        match mux::decode(&bytes) {
            Ok(mux::Message::Control(chunk)) => control.feed(chunk),
            other => panic!("{other:?} on a refused session"),
        }
        while let Ok(Some(msg)) = control.next_message() {
            // Announcements may come before the end; one Error at most.
            if matches!(
                msg.body,
                Some(meshcast_proto::pb::server_message::Body::Error(_))
            ) {
                frames.push(msg);
            }
        }
    }
    assert!(frames.len() <= 1, "{frames:?}");
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_the_viewer_protocol_closes_the_websocket() {
    init_logs();
    let mesh = mesh(false, gateway_config()).await;
    // A text message.
    let mut socket = open(&mesh).await;
    socket
        .send(Message::Text("hello".into()))
        .await
        .expect("sent");
    drain(&mut socket).await;

    // A delivery stream from the viewer's side.
    let mut socket = open(&mesh).await;
    let (_, _) = hello(&mut socket, &mesh).await;
    socket
        .send(Message::Binary(mux::data(1, b"body").into()))
        .await
        .expect("sent");
    drain(&mut socket).await;

    // An unknown tag.
    let mut socket = open(&mesh).await;
    socket
        .send(Message::Binary(vec![0x7f, 1, 2].into()))
        .await
        .expect("sent");
    drain(&mut socket).await;

    // A message over the limit.
    let mut socket = open(&mesh).await;
    let big = vec![0u8; gateway_config().limits.max_client_frame + 1024];
    let _ = socket
        .send(Message::Binary(mux::control(&big).into()))
        .await;
    drain(&mut socket).await;

    // Control bytes that are no frame: the session's own Error, then the end.
    let mut socket = open(&mesh).await;
    socket
        .send(Message::Binary(mux::control(&[0xff; 64]).into()))
        .await
        .expect("sent");
    let error = drain(&mut socket)
        .await
        .pop()
        .expect("an Error frame before the end");
    assert!(
        matches!(
            error.body,
            Some(meshcast_proto::pb::server_message::Body::Error(ref e))
                if e.code == meshcast_proto::pb::ErrorCode::BadRequest as i32
        ),
        "{error:?}"
    );

    // Others are still served.
    let mut socket = open(&mesh).await;
    let (_, welcomed) = hello(&mut socket, &mesh).await;
    assert!(!welcomed.live_edge.is_empty());
}
