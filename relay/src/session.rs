//! One browser (or native client) session.
//!
//! The client opens one bidirectional control stream and says Hello; the
//! gateway answers Welcome (the signed descriptor, other gateways, the newest
//! header of each rendition) or an Error and closes. Then the client sends
//! Requests; each is answered on its own unidirectional stream (a Delivery
//! frame, then the body) or by an Error naming the request. New segments of
//! the stream are announced on the control stream as they reach the node.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshcast_node::Event;
use meshcast_node::arrival::Arrival;
use meshcast_node::exchange::{ExchangeError, Framed};
use meshcast_node::metrics::{self, BrowserSession, Class, Direction, Late, RequestResult};
use meshcast_proto::frame::Limits as FrameLimits;
use meshcast_proto::pb::{self, ErrorCode, client_message, server_message};
use meshcast_proto::{SegmentId, StreamId};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
use tracing::Instrument as _;
use wtransport::VarInt;
use wtransport::endpoint::IncomingSession;
use wtransport::stream::BiStream;

use crate::admission::canonical;
use crate::outlet::{ControlIo, Outlet};
use crate::shared::{Refusal, Shared, Slot, Stage, Waiting, lock};
use crate::streams;

/// The control stream, over either transport.
pub(crate) type Control = Framed<Compat<Box<dyn ControlIo>>>;

/// Least time between two header queries of one session (see
/// `meshcast_proto::session::catalogue`): the client asks at most every 5 s.
const HEADER_QUERY_INTERVAL: Duration = Duration::from_secs(2);

fn error_frame(code: ErrorCode, message: &str, request_id: u64) -> pb::ServerMessage {
    pb::ServerMessage {
        body: Some(server_message::Body::Error(pb::Error {
            code: code as i32,
            message: message.to_string(),
            request_id,
        })),
    }
}

/// Session ids for logs, unique within the process.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Serves one incoming connection to its end, logging in a span that names
/// it by a session id (and its address only if the operator asks:
/// `log_addresses`). `handshake` is the connection's slot until its CONNECT.
pub(crate) async fn handle(shared: Arc<Shared>, incoming: IncomingSession, handshake: Slot) {
    let remote = incoming.remote_address();
    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    // Error level, so that it is enabled whenever any event is: a warning
    // logged with `RUST_LOG=warn` still names its session.
    let span = tracing::error_span!("session", id, remote = tracing::field::Empty);
    if shared.config.log_addresses {
        span.record("remote", tracing::field::display(remote));
    }
    async move {
        let limit = shared.config.limits.handshake_timeout;
        // Dropping the handshake on timeout closes the connection.
        let request = match tokio::time::timeout(limit, incoming).await {
            Ok(Ok(request)) => request,
            Ok(Err(e)) => return tracing::debug!("handshake failed: {e}"),
            Err(_) => return tracing::debug!("no CONNECT within {limit:?}"),
        };
        run_session(shared, request, handshake).await;
    }
    .instrument(span)
    .await
}

/// `handshake` is given back once the session is admitted; a refused one
/// keeps it until it is gone, so refusals too are bounded per address.
async fn run_session(
    shared: Arc<Shared>,
    request: wtransport::endpoint::SessionRequest,
    handshake: Slot,
) {
    let ip = canonical(request.remote_address().ip());
    tracing::debug!(path = request.path(), "session requested");
    let admission = Slot::take(&shared, Stage::Session, ip)
        .map_err(|full| Refusal::new(ErrorCode::TooManySessions, full.message()));
    let _refused = match admission {
        Ok(_) => {
            drop(handshake);
            None
        }
        Err(_) => Some(handshake),
    };
    let Ok(connection) = request.accept().await else {
        return;
    };
    let limits = &shared.config.limits;
    // Opening the control stream and sending the whole Hello share one deadline.
    let hello_by = Instant::now() + limits.hello_timeout;
    let opened = tokio::time::timeout_at(hello_by, connection.accept_bi()).await;
    let Ok(Ok(streams)) = opened else {
        connection.close(
            VarInt::from_u32(ErrorCode::BadRequest as u32),
            b"no control stream",
        );
        return;
    };
    let mut control = control_stream(Box::new(BiStream::join(streams)), &shared);
    let outlet = Outlet::WebTransport(connection.clone());
    if let Some((Refusal(code, message), told)) =
        converse(&shared, &outlet, &mut control, admission, hello_by).await
    {
        if told {
            // Give the client a moment to read the error before the connection goes.
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
        }
        connection.close(VarInt::from_u32(code as u32), message.as_bytes());
    }
}

/// Frames a session's control stream: client frames within the session
/// limits, Hello within `hello_timeout`.
pub(crate) fn control_stream(io: Box<dyn ControlIo>, shared: &Shared) -> Control {
    let limits = &shared.config.limits;
    let frame_limits = FrameLimits {
        max_frame: limits.max_client_frame,
        max_segment: 0,
    };
    Framed::new(io.compat(), frame_limits, limits.hello_timeout)
}

/// Runs a session over either transport: serves it if `admitted` (its
/// session slot, given back as soon as it ends), and on a refusal (or a
/// broken rule) tells the client with an Error frame and the end of the
/// control stream. Returns the refusal and whether the client was told, for
/// the transport to close with; `None` when the client ended the session.
pub(crate) async fn converse(
    shared: &Arc<Shared>,
    outlet: &Outlet,
    control: &mut Control,
    admitted: Result<Slot, Refusal>,
    hello_by: Instant,
) -> Option<(Refusal, bool)> {
    let result = match admitted {
        Ok(_slot) => {
            let _metrics = BrowserSession::new();
            serve(shared, outlet, control, hello_by).await
        }
        Err(refusal) => Err(refusal),
    };
    let Refusal(code, message) = match result {
        Ok(()) => {
            tracing::debug!("session ended by the client");
            return None;
        }
        Err(refusal) => refusal,
    };
    tracing::debug!(?code, "closing session: {message}");
    // Server frames may be larger than what the client may send. A viewer
    // that does not read gets no polite goodbye.
    let write = shared.config.limits.write_timeout;
    let told = send_server(control, &error_frame(code, &message, 0), write)
        .await
        .is_ok()
        && tokio::time::timeout(write, futures::AsyncWriteExt::close(control.get_mut()))
            .await
            .is_ok_and(|closed| closed.is_ok());
    Some((Refusal(code, message), told))
}

/// Sends a control frame, within `limit`: a viewer that stops reading its
/// control stream must not hold the session (and its slot) for good.
/// Server frames are bounded by the protocol maximum, not the client's.
async fn send_server(
    control: &mut Control,
    msg: &pb::ServerMessage,
    limit: Duration,
) -> Result<(), ExchangeError> {
    let bytes = meshcast_proto::frame::encode(msg, &FrameLimits::default())?;
    tokio::time::timeout(
        limit,
        futures::AsyncWriteExt::write_all(control.get_mut(), &bytes),
    )
    .await
    .map_err(|_| ExchangeError::Timeout(limit))??;
    Ok(())
}

async fn serve(
    shared: &Arc<Shared>,
    outlet: &Outlet,
    control: &mut Control,
    hello_by: Instant,
) -> Result<(), Refusal> {
    let limits = &shared.config.limits;
    let write = limits.write_timeout;
    let hello =
        match tokio::time::timeout_at(hello_by, control.read_frame::<pb::ClientMessage>()).await {
            Ok(Ok(Some(pb::ClientMessage {
                body: Some(client_message::Body::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "the first message must be Hello",
                ));
            }
            Ok(Err(e)) => return Err(refusal_for(&e)),
            Err(_) => {
                return Err(Refusal::new(
                    ErrorCode::Idle,
                    format!("no whole Hello within {:?}", limits.hello_timeout),
                ));
            }
        };
    let id = StreamId::from_bytes(&hello.stream_id)
        .map_err(|_| Refusal::new(ErrorCode::BadRequest, "Hello names no valid stream id"))?;
    let (descriptor, _viewer) = streams::open(shared, id, &hello.token).await?;
    let welcome = pb::ServerMessage {
        body: Some(server_message::Body::Welcome(pb::Welcome {
            descriptor: Some(descriptor.signed().to_pb()),
            gateways: crate::records::list(
                &shared.config.peers,
                &mut lock(&shared.records),
                &id,
                meshcast_node::unix_now_us(),
            ),
            live_edge: live_edge(shared, &id),
            recent: recent(shared, &id),
        })),
    };
    send_server(control, &welcome, write)
        .await
        .map_err(|e| refusal_for(&e))?;
    tracing::debug!(stream = %id, "welcomed");

    let mut events = shared.node.events();
    let mut gateways_changed = shared.records_changed.subscribe();
    gateways_changed.mark_unchanged();
    let mut deliveries: JoinSet<u64> = JoinSet::new();
    let mut inflight: HashMap<u64, AbortHandle> = HashMap::new();
    let (errors_tx, mut errors) = mpsc::channel::<pb::ServerMessage>(limits.max_inflight.max(1));
    let mut idle = Box::pin(tokio::time::sleep(limits.idle_timeout));
    // Segment bytes this session is sending now, against `max_inflight_bytes`.
    let sending = Arc::new(AtomicU64::new(0));
    let mut last_query: Option<Instant> = None;
    loop {
        tokio::select! {
            frame = control.read_frame::<pb::ClientMessage>() => {
                let body = match frame {
                    Ok(Some(msg)) => msg.body,
                    Ok(None) => return Ok(()),
                    // A silent control stream is fine: the idle timer decides.
                    Err(ExchangeError::Timeout(_)) => continue,
                    Err(e) => return Err(refusal_for(&e)),
                };
                match body {
                    Some(client_message::Body::Request(request)) => {
                        let refused = if inflight.len() >= limits.max_inflight {
                            Some((ErrorCode::TooManyRequests, "too many requests in flight"))
                        } else if inflight.contains_key(&request.request_id) {
                            // Replacing the request in flight would let one id
                            // stand for two deliveries and slip past the limit.
                            Some((ErrorCode::BadRequest, "this request id is in flight"))
                        } else {
                            None
                        };
                        if let Some((code, message)) = refused {
                            metrics::browser_request(RequestResult::Refused);
                            let msg = error_frame(code, message, request.request_id);
                            send_server(control, &msg, write).await.map_err(|e| refusal_for(&e))?;
                            continue;
                        }
                        let seg = request.id.as_ref().and_then(|id| SegmentId::from_pb(id).ok());
                        let Some(seg) = seg.filter(|s| s.stream == id) else {
                            metrics::browser_request(RequestResult::Refused);
                            let msg = error_frame(ErrorCode::BadRequest, "request for no segment of this stream", request.request_id);
                            send_server(control, &msg, write).await.map_err(|e| refusal_for(&e))?;
                            continue;
                        };
                        // Only a request the gateway takes on keeps the session alive.
                        idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                        let wait = Duration::from_millis(u64::from(request.deadline_ms)).min(limits.max_wait);
                        let task = deliver(
                            shared.clone(),
                            outlet.clone(),
                            Delivery {
                                request_id: request.request_id,
                                id: seg,
                                wait,
                                answer: Answer(RequestResult::Cancelled),
                            },
                            sending.clone(),
                            errors_tx.clone(),
                        );
                        let handle = deliveries.spawn(task.in_current_span());
                        inflight.insert(request.request_id, handle);
                    }
                    Some(client_message::Body::HeaderQuery(query)) => {
                        // Up to a megabyte of headers: a viewer may ask
                        // every HEADER_QUERY_INTERVAL, no faster.
                        let now = Instant::now();
                        if last_query.is_some_and(|at| now < at + HEADER_QUERY_INTERVAL) {
                            return Err(Refusal::new(
                                ErrorCode::TooManyRequests,
                                "header queries come faster than one per 2 s",
                            ));
                        }
                        last_query = Some(now);
                        let renditions: Vec<u32> = query.renditions.into_iter().take(64).collect();
                        for announce in meshcast_proto::session::catalogue(shared.node.headers(&id), &renditions) {
                            let msg = pb::ServerMessage {
                                body: Some(server_message::Body::Announce(announce)),
                            };
                            send_server(control, &msg, write).await.map_err(|e| refusal_for(&e))?;
                        }
                    }
                    Some(client_message::Body::Cancel(cancel)) => {
                        if let Some(handle) = inflight.remove(&cancel.request_id) {
                            handle.abort();
                        }
                    }
                    Some(client_message::Body::Hello(_)) => {
                        return Err(Refusal::new(ErrorCode::BadRequest, "Hello sent twice"));
                    }
                    None => return Err(Refusal::new(ErrorCode::BadRequest, "empty message")),
                }
            }
            Some(msg) = errors.recv() => {
                send_server(control, &msg, write).await.map_err(|e| refusal_for(&e))?;
            }
            Some(done) = deliveries.join_next(), if !deliveries.is_empty() => {
                if let Ok(request_id) = done {
                    inflight.remove(&request_id);
                }
            }
            event = events.recv() => {
                if let Ok(Event::Stored { id: seg, .. }) = event
                    && seg.stream == id
                    && let Some(segment) = shared.node.segment(&seg)
                {
                    let msg = pb::ServerMessage {
                        body: Some(server_message::Body::Announce(pb::Announce {
                            headers: vec![segment.header.signed().to_pb()],
                        })),
                    };
                    send_server(control, &msg, write).await.map_err(|e| refusal_for(&e))?;
                }
            }
            Ok(()) = gateways_changed.changed() => {
                let gateways = crate::records::list(
                    &shared.config.peers,
                    &mut lock(&shared.records),
                    &id,
                    meshcast_node::unix_now_us(),
                );
                let msg = pb::ServerMessage {
                    body: Some(server_message::Body::Gateways(pb::GatewayList { gateways })),
                };
                send_server(control, &msg, write).await.map_err(|e| refusal_for(&e))?;
            }
            _ = &mut idle => return Err(Refusal::new(ErrorCode::Idle, "no request for too long")),
        }
    }
}

/// The newest header of each rendition, so a client knows where live is.
fn live_edge(shared: &Shared, stream: &StreamId) -> Vec<pb::SegmentHeader> {
    let mut newest: HashMap<u32, meshcast_proto::SignedHeader> = HashMap::new();
    for header in shared.node.headers(stream) {
        if header.info.id.kind != meshcast_proto::SegmentKind::Media {
            continue;
        }
        let entry = newest
            .entry(header.info.id.rendition)
            .or_insert_with(|| header.clone());
        if header.info.id.sequence > entry.info.id.sequence {
            *entry = header;
        }
    }
    newest.values().map(|h| h.to_pb()).collect()
}

/// Each rendition's newest init segment and last `WELCOME_RECENT` media
/// segments (not parts: there are many, and their wholes are here), so a
/// viewer can check what it fetches over HTTP from its first request.
fn recent(shared: &Shared, stream: &StreamId) -> Vec<pb::SegmentHeader> {
    meshcast_proto::session::recent(shared.node.headers(stream))
        .iter()
        .map(|h| h.to_pb())
        .collect()
}

fn refusal_for(e: &ExchangeError) -> Refusal {
    match e {
        ExchangeError::Frame(meshcast_proto::frame::FrameError::FrameTooLarge { .. }) => {
            Refusal::new(ErrorCode::TooLarge, e.to_string())
        }
        ExchangeError::Timeout(_) => Refusal::new(ErrorCode::Idle, e.to_string()),
        _ => Refusal::new(ErrorCode::BadRequest, e.to_string()),
    }
}

/// Bytes counted against a session's in-flight limit until dropped (also when
/// a cancelled delivery is aborted mid-send).
struct Reserved {
    counter: Arc<AtomicU64>,
    size: u64,
    /// The session's total including this reservation.
    total: u64,
}

impl Reserved {
    fn new(counter: Arc<AtomicU64>, size: u64) -> Self {
        let total = counter.fetch_add(size, Ordering::SeqCst) + size;
        Self {
            counter,
            size,
            total,
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.size, Ordering::SeqCst);
    }
}

/// Counts a request's result in the metrics once, when dropped: a delivery
/// task aborted (cancelled, replaced, session closed), even before it first
/// ran, counts as cancelled.
struct Answer(RequestResult);

impl Drop for Answer {
    fn drop(&mut self) {
        metrics::browser_request(self.0);
    }
}

/// One request being answered.
struct Delivery {
    request_id: u64,
    id: SegmentId,
    /// Longest wait for a segment that has not arrived yet.
    wait: Duration,
    /// The result to count, `Cancelled` until known.
    answer: Answer,
}

/// Sends one segment on its own unidirectional stream, waiting up to
/// `wait` for it to arrive from the mesh. Returns the request id when done.
async fn deliver(
    shared: Arc<Shared>,
    outlet: Outlet,
    Delivery {
        request_id,
        id,
        wait,
        mut answer,
    }: Delivery,
    sending: Arc<AtomicU64>,
    errors: mpsc::Sender<pb::ServerMessage>,
) -> u64 {
    let ready = match shared.node.segment(&id) {
        Some(segment) => Some(Ready::Held(Box::new(segment))),
        None if wait.is_zero() => None,
        None => {
            // Fetched now if the node will not receive it by itself (a VOD
            // segment, an old live one): from its disk cache, a holder, or the
            // origin before the deadline.
            if shared.node.demand(id, wait).await.is_err() {
                return request_id;
            }
            match arrival(&shared, id, Instant::now() + wait).await {
                Ok(segment) => segment,
                Err(()) => {
                    answer.0 = RequestResult::Refused;
                    let why = "the gateway has too many requests waiting";
                    too_many(&errors, why, request_id).await;
                    return request_id;
                }
            }
        }
    };
    let segment = match ready {
        Some(Ready::Held(segment)) => Some(*segment),
        Some(Ready::Arriving(arrival)) => {
            answer.0 = forward(&shared, &outlet, request_id, &arrival, sending).await;
            if answer.0 == RequestResult::Refused {
                too_many(&errors, "too many bytes in flight", request_id).await;
            }
            return request_id;
        }
        None => None,
    };
    let Some(segment) = segment else {
        let code = if wait.is_zero() {
            answer.0 = RequestResult::NotFound;
            ErrorCode::NotFound
        } else {
            answer.0 = RequestResult::Deadline;
            metrics::late(Late::Browser);
            tracing::debug!(request_id, "{id} did not arrive within {wait:?}");
            ErrorCode::Deadline
        };
        let _ = errors
            .send(error_frame(
                code,
                &format!("segment {id} is not available"),
                request_id,
            ))
            .await;
        return request_id;
    };
    let segment = shared.answer(&id, segment);
    let size = segment.body.len() as u64;
    let limit = shared.config.limits.max_inflight_bytes;
    let reserved = Reserved::new(sending, size);
    if reserved.total > limit {
        drop(reserved);
        answer.0 = RequestResult::Refused;
        too_many(&errors, "too many bytes in flight", request_id).await;
        return request_id;
    }
    let limits = &shared.config.limits;
    let limit = limits.write_timeout
        + Duration::from_secs_f64(size as f64 / limits.min_delivery_rate.max(1) as f64);
    let sent = tokio::time::timeout(limit, async {
        let mut stream = outlet.open_uni().await?;
        let delivery = pb::Delivery {
            request_id,
            header: Some(segment.header.signed().to_pb()),
        };
        let frame = meshcast_proto::frame::encode(&delivery, &FrameLimits::default())
            .map_err(|e| e.to_string())?;
        stream.write_all(&frame).await?;
        if let Some(forged) = shared.forged_delivery(&segment.body) {
            stream.write_all(&forged).await?;
        } else {
            let outboard = shared.outboard(&segment);
            let pieces = outboard.pieces(&segment.body).map_err(|e| e.to_string())?;
            for piece in pieces {
                stream.write_all(piece.wire()).await?;
            }
        }
        stream.finish().await
    })
    .await
    .unwrap_or_else(|_| Err(format!("not sent within {limit:?}")));
    drop(reserved);
    match sent {
        Ok(()) => {
            answer.0 = RequestResult::Delivered;
            metrics::bytes(Direction::Out, Class::Browser, size);
        }
        Err(e) => tracing::debug!(request_id, "delivery of {id} failed: {e}"),
    }
    request_id
}

/// Refuses a request for want of room: the client may ask again, or
/// elsewhere. A full error queue means the session is ending anyway.
async fn too_many(errors: &mpsc::Sender<pb::ServerMessage>, why: &str, request_id: u64) {
    let msg = error_frame(ErrorCode::TooManyRequests, why, request_id);
    let _ = errors.send(msg).await;
}

/// A requested segment the gateway can send.
enum Ready {
    /// Boxed: far larger than the other.
    Held(Box<meshcast_node::store::Segment>),
    /// Still arriving at the node: sent piece by piece as it comes.
    Arriving(Arc<Arrival>),
}

impl Ready {
    fn now(shared: &Shared, id: &SegmentId) -> Option<Self> {
        match shared.node.segment(id) {
            Some(segment) => Some(Self::Held(Box::new(segment))),
            None => shared.node.arriving(id).map(Self::Arriving),
        }
    }
}

/// Waits until `deadline` for segment `id` to be stored or to start
/// arriving: `Ok(None)` when it does not come, `Err` when the gateway has
/// too many requests waiting.
async fn arrival(
    shared: &Arc<Shared>,
    id: SegmentId,
    deadline: Instant,
) -> Result<Option<Ready>, ()> {
    loop {
        // Registered before the store is checked, so an arrival in between
        // is not missed.
        let mut waiting = Waiting::start(shared, id).ok_or(())?;
        if let Some(ready) = Ready::now(shared, &id) {
            return Ok(Some(ready));
        }
        // A wake-up may be for everyone (missed events): check and wait again.
        if tokio::time::timeout_at(deadline, &mut waiting.arrived)
            .await
            .is_err()
        {
            return Ok(Ready::now(shared, &id));
        }
    }
}

/// Sends a segment still arriving at the node (cut-through): its signed
/// header, then each verified piece of its encoding as the node's download
/// brings it. Should that download fail, the stream is reset: the browser
/// drops what it got and falls back to HTTP, blaming nobody.
async fn forward(
    shared: &Shared,
    outlet: &Outlet,
    request_id: u64,
    arrival: &Arc<Arrival>,
    sending: Arc<AtomicU64>,
) -> RequestResult {
    let id = arrival.header().id();
    let size = arrival.header().info().length;
    let reserved = Reserved::new(sending, size);
    if reserved.total > shared.config.limits.max_inflight_bytes {
        return RequestResult::Refused;
    }
    let limits = &shared.config.limits;
    let limit = limits.write_timeout
        + Duration::from_secs_f64(size as f64 / limits.min_delivery_rate.max(1) as f64);
    shared.forwards.fetch_add(1, Ordering::Relaxed);
    let mut reader = arrival.reader();
    let mut stream = None;
    let sent = tokio::time::timeout(limit, async {
        let opened = outlet.open_uni().await?;
        let stream = stream.insert(opened);
        let delivery = pb::Delivery {
            request_id,
            header: Some(arrival.header().signed().to_pb()),
        };
        let frame = meshcast_proto::frame::encode(&delivery, &FrameLimits::default())
            .map_err(|e| e.to_string())?;
        stream.write_all(&frame).await?;
        while let Some(pieces) = reader.next().await? {
            for piece in pieces {
                stream.write_all(&piece).await?;
            }
        }
        stream.finish().await
    })
    .await
    .unwrap_or_else(|_| Err(format!("not sent within {limit:?}")));
    drop(reserved);
    match sent {
        Ok(()) => {
            shared.forwards_sent.fetch_add(1, Ordering::Relaxed);
            metrics::bytes(Direction::Out, Class::Browser, size);
            RequestResult::Delivered
        }
        Err(e) => {
            if let Some(stream) = stream.as_mut() {
                stream.reset(FORWARD_FAILED);
            }
            tracing::debug!(request_id, "forwarding {id} failed: {e}");
            RequestResult::Cancelled
        }
    }
}

/// The reset code of a delivery whose segment's own download failed.
const FORWARD_FAILED: u32 = 1;
