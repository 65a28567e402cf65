//! The viewer protocol over a WebSocket (`GET /meshcast/ws` on the web
//! listener), for browsers that cannot open WebTransport: a network that
//! blocks UDP, a browser without WebTransport. The streams of a session
//! travel multiplexed in binary messages (`meshcast_proto::mux`); the
//! session itself (`session.rs`) is the same, with the same limits.
//!
//! Over TLS (`wss://`) when the page is HTTPS: the web listener is plain
//! HTTP, so an operator puts it behind a TLS reverse proxy with a
//! certificate browsers trust (certificate hash pinning is WebTransport's
//! alone). The well-known document names the path; a client resolves it
//! against the well-known URL, so the scheme and host follow.
//!
//! One TCP connection carries everything: a slow link delays the control
//! stream behind deliveries (head-of-line blocking), which is why clients
//! prefer WebTransport and use this only when it fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use meshcast_proto::mux;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::admission::canonical;
use crate::outlet::{Mux, Outlet};
use crate::session::{control_stream, converse};
use crate::shared::{Shared, Slot, Stage};

pub const PATH: &str = "/meshcast/ws";

/// Messages queued for the socket: what holds back a delivery whose viewer
/// reads slowly (each at most a 16 KiB chunk).
const OUT_QUEUE: usize = 16;
/// Control bytes buffered each way between the socket and the session.
const CONTROL_BUFFER: usize = 64 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().route(PATH, get(upgrade)).with_state(shared)
}

/// Takes a session slot (as a WebTransport session does) and upgrades; over
/// the caps, 503 before any upgrade.
async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = canonical(remote.ip());
    if let Err(full) = crate::shared::arrival(&shared, ip) {
        return (StatusCode::TOO_MANY_REQUESTS, full.message()).into_response();
    }
    let slot = match Slot::take(&shared, Stage::Session, ip) {
        Ok(slot) => slot,
        Err(full) => return (StatusCode::SERVICE_UNAVAILABLE, full.message()).into_response(),
    };
    let limits = &shared.config.limits;
    // A viewer sends control frames only.
    let max = limits.max_client_frame + 16;
    let span = tracing::error_span!("websocket", remote = tracing::field::Empty);
    if shared.config.log_addresses {
        span.record("remote", tracing::field::display(remote));
    }
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| run(shared, socket, slot).instrument(span))
}

async fn run(shared: Arc<Shared>, socket: WebSocket, slot: Slot) {
    let hello_by = Instant::now() + shared.config.limits.hello_timeout;
    let write_timeout = shared.config.limits.write_timeout;
    let (mut sink, mut incoming) = socket.split();
    let (out, mut queued) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let (session_side, pump_side) = tokio::io::duplex(CONTROL_BUFFER);
    let (mut from_session, mut to_session) = tokio::io::split(pump_side);

    // The socket's one writer: queued messages in order, each within the
    // write timeout (a viewer that stops reading is cut off), then a close.
    let writer = tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            let sent =
                tokio::time::timeout(write_timeout, sink.send(Message::Binary(message.into())));
            if !matches!(sent.await, Ok(Ok(()))) {
                return;
            }
        }
        let _ = tokio::time::timeout(write_timeout, sink.send(Message::Close(None))).await;
    });
    // What the session writes on its control stream.
    let control_out = out.clone();
    let control_pump = tokio::spawn(async move {
        let mut buf = vec![0u8; mux::MAX_CHUNK];
        while let Ok(n) = from_session.read(&mut buf).await {
            if n == 0 || control_out.send(mux::control(&buf[..n])).await.is_err() {
                break;
            }
        }
    });
    // What the viewer sends: control bytes, nothing else.
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = incoming.next().await {
            let bytes = match message {
                Message::Binary(bytes) => bytes,
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => break,
                Message::Text(_) => {
                    tracing::debug!("a text message: not the viewer protocol");
                    break;
                }
            };
            match mux::decode(&bytes) {
                Ok(mux::Message::Control(control)) => {
                    if to_session.write_all(control).await.is_err() {
                        break;
                    }
                }
                Ok(other) => {
                    tracing::debug!("a viewer sent {other:?}: only control bytes are allowed");
                    break;
                }
                Err(e) => {
                    tracing::debug!("a malformed message: {e}");
                    break;
                }
            }
        }
        // The session sees the end of its control stream.
        let _ = to_session.shutdown().await;
    });

    let outlet = Outlet::WebSocket(Mux::new(out));
    let mut control = control_stream(Box::new(session_side), &shared);
    let refused = converse(&shared, &outlet, &mut control, Ok(slot), hello_by).await;
    drop(control);
    drop(outlet);
    if let Some((_, true)) = refused {
        // Let the error frame leave before the socket closes.
        let _ = tokio::time::timeout(Duration::from_secs(2), control_pump).await;
    } else {
        control_pump.abort();
    }
    reader.abort();
    // Every sender is gone: the writer flushes, closes and ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}
