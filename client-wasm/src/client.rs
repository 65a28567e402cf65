//! `MeshClient`: sessions to gateways, requests with deadlines, and what
//! JavaScript sees of them.
//!
//! Everything runs on the page's one thread: state sits in one
//! `Rc<RefCell<Inner>>`, borrowed only between awaits, and each session has
//! three tasks (control stream, incoming deliveries, closure watch) started
//! with `spawn_local`. A generation number per gateway lets a task of a
//! closed session notice it is stale and stop touching the gateway.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::{FutureExt, pin_mut, select};
use js_sys::{Array, Promise, Uint8Array};
use meshcast_proto::balance::{Pool, State};
use meshcast_proto::known::{KnownHeaders, Verdict};
use meshcast_proto::pb::ErrorCode;
use meshcast_proto::session::{
    self, ControlReader, Delivered, DeliveryReader, GatewayAddr, ServerEvent, SessionError,
};
use meshcast_proto::{
    MAX_PARTS, RenditionKind, SegmentId, SegmentKind, StreamId, StreamKey, VerifiedDescriptor,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local};
use web_sys::{AbortSignal, ReadableStreamDefaultReader};

use crate::js::{self, error, get, get_f64, get_string, now, now_ms, object, sleep};
use crate::transport::{Session, next_stream, read_chunk};

/// How long one read of a delivery stream may wait.
const READ_TIMEOUT_MS: f64 = 30_000.0;
/// Default for `connect`'s `timeoutMs`.
const CONNECT_TIMEOUT_MS: f64 = 5_000.0;
/// Default for `fetch`'s `deadlineMs`.
const DEFAULT_DEADLINE_MS: f64 = 4_000.0;
/// How often a request with no gateway to go to checks for one that connected.
const CONNECTING_POLL_MS: f64 = 25.0;
/// Slack given to the gateway's own DEADLINE answer before giving up locally.
const DEADLINE_SLACK_MS: f64 = 150.0;
/// Least time between two header queries: the gateway allows one per 2 s.
const HEADER_QUERY_INTERVAL_MS: f64 = 5_000.0;

type Shared = Rc<RefCell<Inner>>;

struct Gateway {
    addr: GatewayAddr,
    /// The gateway named by the well-known document: its certificate hashes
    /// are re-read from there before each reconnect (they rotate).
    entry: bool,
    session: Option<Rc<Session>>,
    generation: u32,
}

struct Pending {
    /// The segment asked for: a delivery of any other is refused.
    asked: SegmentId,
    gateway: usize,
    sent_at: f64,
    first_byte_at: Option<f64>,
    tx: oneshot::Sender<Result<(Delivered, f64), Failure>>,
}

#[derive(Debug, Clone)]
struct Failure {
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn into_js(self) -> JsValue {
        error(self.code, &self.message)
    }
}

struct Inner {
    stream: StreamId,
    token: String,
    well_known: String,
    /// The entry gateway's WebSocket URL (its well-known document's), the
    /// fallback when WebTransport fails; other gateways have none.
    websocket: Option<String>,
    timeout_ms: f64,
    key: Option<StreamKey>,
    descriptor: Option<VerifiedDescriptor>,
    /// Headers from Welcomes, announcements and deliveries: what HTTP bytes
    /// are checked against (`verify`).
    known: KnownHeaders,
    pool: Pool,
    gateways: Vec<Gateway>,
    pending: HashMap<u64, Pending>,
    next_request: u64,
    /// When `queryHeaders` last asked (ms, `now()`).
    last_query: Option<f64>,
    on_event: Option<js_sys::Function>,
    closed: bool,
}

/// A viewer's connection to the meshcast gateways of one stream.
#[wasm_bindgen]
pub struct MeshClient {
    inner: Shared,
}

#[wasm_bindgen]
impl MeshClient {
    /// Finds the gateway from `wellKnown`, opens a session for `stream` (hex
    /// id) with an optional viewer `token`, and resolves once its Welcome has
    /// verified. Rejects (code `no-gateway`) when that fails within
    /// `timeoutMs`: the caller then plays from HTTP.
    pub async fn connect(options: JsValue) -> Result<MeshClient, JsValue> {
        let well_known = get_string(&options, "wellKnown")
            .ok_or_else(|| error("bad-options", "wellKnown (URL) is required"))?;
        let stream: StreamId = get_string(&options, "stream")
            .ok_or_else(|| error("bad-options", "stream (hex id) is required"))?
            .parse()
            .map_err(|e| error("bad-options", &format!("stream: {e}")))?;
        let timeout_ms = get_f64(&options, "timeoutMs").unwrap_or(CONNECT_TIMEOUT_MS);
        let (addr, websocket) = within(timeout_ms, read_well_known(&well_known))
            .await
            .unwrap_or_else(|| Err(format!("{well_known} did not answer")))
            .map_err(|e| error("no-gateway", &e))?;
        let mut pool = Pool::new();
        pool.add(&addr.url);
        let inner = Rc::new(RefCell::new(Inner {
            stream,
            token: get_string(&options, "token").unwrap_or_default(),
            well_known,
            websocket,
            timeout_ms,
            key: None,
            descriptor: None,
            known: KnownHeaders::default(),
            pool,
            gateways: vec![Gateway {
                addr,
                entry: true,
                session: None,
                generation: 0,
            }],
            pending: HashMap::new(),
            next_request: 1,
            last_query: None,
            on_event: None,
            closed: false,
        }));
        if let Err(e) = open_gateway(&inner, 0, false).await {
            inner.borrow_mut().closed = true;
            return Err(error("no-gateway", &e));
        }
        Ok(MeshClient { inner })
    }

    /// The verified stream descriptor: `{ name, live, segmentDurationMs,
    /// originUrl, renditions: [{ id, name, bandwidth, uri, playlistUrl, kind
    /// ('variant' | 'audio' | 'subtitles' | 'video'), group, language }] }`.
    pub fn descriptor(&self) -> JsValue {
        let inner = self.inner.borrow();
        let Some(d) = inner
            .descriptor
            .as_ref()
            .map(VerifiedDescriptor::descriptor)
        else {
            return JsValue::NULL;
        };
        let renditions = Array::new();
        for r in &d.renditions {
            let playlist = meshcast_proto::uri::resolve(&d.origin_url, &r.uri).unwrap_or_default();
            renditions.push(&object(&[
                ("id", r.id.into()),
                ("name", r.name.as_str().into()),
                ("bandwidth", (r.bandwidth as f64).into()),
                ("uri", r.uri.as_str().into()),
                ("playlistUrl", playlist.into()),
                ("kind", rendition_kind(r.kind).into()),
                ("group", r.group.as_str().into()),
                ("language", r.language.as_str().into()),
            ]));
        }
        object(&[
            ("name", d.name.as_str().into()),
            ("live", d.live.into()),
            ("segmentDurationMs", d.segment_duration_ms.into()),
            ("originUrl", d.origin_url.as_str().into()),
            ("renditions", renditions.into()),
        ])
    }

    /// `[{ url, transport ('webtransport' | 'websocket', null when not
    /// connected), connected, throughputBps, inflight, failures, banned }]`.
    pub fn gateways(&self) -> JsValue {
        let inner = self.inner.borrow();
        let list = Array::new();
        for (index, g) in inner.pool.gateways().iter().enumerate() {
            // The pool and the gateway list are indexed alike.
            let transport = inner
                .gateways
                .get(index)
                .and_then(|g| g.session.as_ref())
                .map_or(JsValue::NULL, |s| s.kind.into());
            list.push(&object(&[
                ("url", g.url.as_str().into()),
                ("transport", transport),
                ("connected", (g.state == State::Connected).into()),
                (
                    "throughputBps",
                    g.throughput.map_or(JsValue::NULL, |t| (t * 8.0).into()),
                ),
                ("inflight", g.inflight.into()),
                ("failures", g.failures.into()),
                ("banned", g.banned.into()),
            ]));
        }
        list.into()
    }

    /// Calls `callback({ type, url, reason })` for `gateway-connected`,
    /// `gateway-closed` and `verify-failed`, and `callback({ type:
    /// 'headers', count })` when a gateway announced `count` headers (so that
    /// what waits for a segment's header looks again at once).
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(&self, callback: js_sys::Function) {
        self.inner.borrow_mut().on_event = Some(callback);
    }

    /// Fetches one segment: `{ rendition, sequence, init, url, priority,
    /// deadlineMs, signal }`. Resolves `{ data, gateway, bytes, firstByteMs,
    /// totalMs, attempts }` once the bytes verified against the publisher's
    /// signature; rejects with `code` `aborted`, `deadline`, `not-found`,
    /// `mismatch` (the signed header names another URL than `url`),
    /// `no-gateway`, `closed` or `verify` (forged data and no other gateway).
    pub fn fetch(&self, options: JsValue) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let request = FetchRequest::parse(&inner, &options).map_err(Failure::into_js)?;
            fetch(&inner, request).await.map_err(Failure::into_js)
        })
    }

    /// Checks bytes fetched elsewhere (the HTTP fallback: the origin, a CDN
    /// edge, a mirror) as the segment `{ rendition, sequence, init, part }`
    /// at `url`, against the publisher's signed header if one was announced:
    /// `data` (ArrayBuffer or Uint8Array). Returns `{ verdict, reason }`:
    /// `verified` (hand it to the player), `mismatch` (poisoned, truncated
    /// or stale: do not), or `unknown` (no header of that segment was
    /// announced, or it names another file than `url`: nothing can be said).
    pub fn verify(&self, options: JsValue) -> Result<JsValue, JsValue> {
        let request = FetchRequest::parse(&self.inner, &options).map_err(Failure::into_js)?;
        let data = get(&options, "data")
            .filter(|d| {
                d.is_instance_of::<js_sys::ArrayBuffer>() || d.is_instance_of::<Uint8Array>()
            })
            .ok_or_else(|| error("bad-options", "data must be an ArrayBuffer or a Uint8Array"))?;
        let body = Uint8Array::new(&data).to_vec();
        let inner = self.inner.borrow();
        let (verdict, reason) = match inner.known.get(&request.id) {
            Some(header)
                if request
                    .url
                    .as_deref()
                    .is_some_and(|url| !same_file(&header.info().uri, url)) =>
            {
                (
                    "unknown",
                    format!("the header of {:?} names {}", request.id, header.info().uri),
                )
            }
            _ => match inner.known.check(&request.id, &body) {
                Verdict::Verified => ("verified", String::new()),
                Verdict::Unknown => ("unknown", "no header of this segment was announced".into()),
                Verdict::Mismatch(e) => ("mismatch", e.to_string()),
            },
        };
        Ok(object(&[
            ("verdict", verdict.into()),
            ("reason", reason.into()),
        ]))
    }

    /// The segment served at `url` (any host: its path and query count)
    /// from byte `rangeStart` (absent: the whole file), among the headers
    /// known (Welcome, announcements, deliveries, `queryHeaders`): `{
    /// rendition, sequence, init, durationMs, bytes }` to `fetch` it by,
    /// or null. For players that ask for URLs (Shaka, dash.js).
    pub fn locate(&self, options: JsValue) -> Result<JsValue, JsValue> {
        let url = get_string(&options, "url")
            .ok_or_else(|| error("bad-options", "url (string) is required"))?;
        let range_start = match get_f64(&options, "rangeStart") {
            Some(start) if start.is_finite() && start >= 0.0 && start.fract() == 0.0 => {
                Some(start as u64)
            }
            Some(_) => return Err(error("bad-options", "rangeStart must be a byte offset")),
            None => None,
        };
        let inner = self.inner.borrow();
        let Some(header) = inner.known.locate(&url, range_start) else {
            return Ok(JsValue::NULL);
        };
        let info = header.info();
        Ok(object(&[
            ("rendition", info.id.rendition.into()),
            ("sequence", (info.id.sequence as f64).into()),
            ("init", (info.id.kind == SegmentKind::Init).into()),
            ("durationMs", ((info.duration_us / 1000) as f64).into()),
            ("bytes", (info.length as f64).into()),
        ]))
    }

    /// Asks a connected gateway for the headers of every segment it holds
    /// (a VOD's, say), so that `locate` finds segments the Welcome did not
    /// name. Resolves true once asked (the answers arrive as announcements),
    /// false with no gateway connected. At most once every 5 s: a gateway
    /// closes a session that asks faster.
    #[wasm_bindgen(js_name = queryHeaders)]
    pub fn query_headers(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let session = {
                let mut i = inner.borrow_mut();
                let now = now();
                if i.last_query
                    .is_some_and(|at| now - at < HEADER_QUERY_INTERVAL_MS)
                {
                    return Ok(false.into());
                }
                let session = i.gateways.iter().find_map(|g| g.session.clone());
                if session.is_some() {
                    i.last_query = Some(now);
                }
                session
            };
            let Some(session) = session else {
                return Ok(false.into());
            };
            let bytes = session::encode(&session::header_query(Vec::new()))
                .map_err(|e| error("bad-options", &e.to_string()))?;
            Ok(session.send(&bytes).await.is_ok().into())
        })
    }

    /// Closes every session; pending fetches reject with `closed`.
    pub fn close(&self) {
        let sessions: Vec<_> = {
            let mut inner = self.inner.borrow_mut();
            inner.closed = true;
            for (_, p) in inner.pending.drain() {
                let _ =
                    p.tx.send(Err(Failure::new("closed", "the client was closed")));
            }
            inner
                .gateways
                .iter_mut()
                .filter_map(|g| g.session.take())
                .collect()
        };
        for s in sessions {
            s.close("viewer left");
        }
    }
}

fn rendition_kind(kind: RenditionKind) -> &'static str {
    match kind {
        RenditionKind::Variant => "variant",
        RenditionKind::Audio => "audio",
        RenditionKind::Subtitles => "subtitles",
        RenditionKind::Video => "video",
    }
}

/// Runs `f`, giving up after `ms`.
async fn within<F: Future>(ms: f64, f: F) -> Option<F::Output> {
    let f = f.fuse();
    let timer = sleep(ms).fuse();
    pin_mut!(f, timer);
    select! {
        out = f => Some(out),
        _ = timer => None,
    }
}

/// The WebTransport URL and certificate hashes a well-known document names,
/// and its WebSocket URL (resolved against the document's: `ws:` or `wss:`
/// as the document came over HTTP or HTTPS), if it names one.
async fn read_well_known(url: &str) -> Result<(GatewayAddr, Option<String>), String> {
    let doc = js::fetch_json(url).await?;
    let webtransport = get_string(&doc, "webtransport")
        .filter(|u| u.starts_with("https://"))
        .ok_or_else(|| format!("{url}: no https webtransport URL"))?;
    let hashes = get(&doc, "certificate_hashes")
        .map(|v| Array::from(&v))
        .ok_or_else(|| format!("{url}: no certificate_hashes"))?;
    let mut cert_hashes = Vec::new();
    for h in hashes.iter().take(4) {
        let text = h.as_string().unwrap_or_default();
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&text, &mut digest)
            .map_err(|_| format!("{url}: certificate hash {text:?} is not 64 hex digits"))?;
        cert_hashes.push(digest);
    }
    let websocket = get_string(&doc, "websocket")
        .and_then(|path| meshcast_proto::uri::resolve(url, &path))
        .and_then(|u| {
            if let Some(rest) = u.strip_prefix("https://") {
                Some(format!("wss://{rest}"))
            } else {
                u.strip_prefix("http://").map(|rest| format!("ws://{rest}"))
            }
        });
    Ok((
        GatewayAddr {
            record: None,
            url: webtransport,
            cert_hashes,
        },
        websocket,
    ))
}

fn emit(inner: &Shared, event: JsValue) {
    let callback = inner.borrow().on_event.clone();
    if let Some(cb) = callback {
        let _ = cb.call1(&JsValue::NULL, &event);
    }
}

fn event(kind: &str, url: &str, reason: &str) -> JsValue {
    object(&[
        ("type", kind.into()),
        ("url", url.into()),
        ("reason", reason.into()),
    ])
}

/// Opens (or reopens) the session to gateway `index`, waits for a verified
/// Welcome and starts its tasks. Gateways the Welcome lists are added and
/// connected in the background.
async fn open_gateway(inner: &Shared, index: usize, refresh: bool) -> Result<(), String> {
    let (mut addr, entry, stream, token, timeout_ms, well_known, mut websocket) = {
        let i = inner.borrow();
        let g = &i.gateways[index];
        (
            g.addr.clone(),
            g.entry,
            i.stream,
            i.token.clone(),
            i.timeout_ms,
            i.well_known.clone(),
            i.websocket.clone().filter(|_| g.entry),
        )
    };
    if entry && refresh {
        (addr, websocket) = within(timeout_ms, read_well_known(&well_known))
            .await
            .unwrap_or_else(|| Err(format!("{well_known} did not answer")))?;
    }
    let opened = within(timeout_ms, async {
        let (session, control) =
            Session::open(&addr.url, &addr.cert_hashes, websocket.as_deref()).await?;
        let hello = session::hello(
            &stream,
            &token,
            concat!("meshcast-wasm/", env!("CARGO_PKG_VERSION")),
        );
        let bytes = session::encode(&hello).map_err(|e| e.to_string())?;
        session.send(&bytes).await?;
        let mut reader = ControlReader::default();
        loop {
            if let Some(msg) = reader.next_message().map_err(|e| e.to_string())? {
                let welcomed =
                    session::welcome(msg, &stream, unix_now_us()).map_err(|e| e.to_string());
                return Ok::<_, String>((session, control, reader, welcomed?));
            }
            match read_chunk(&control).await? {
                Some(chunk) => reader.feed(&chunk),
                None => return Err("the gateway closed the session before Welcome".into()),
            }
        }
    })
    .await
    .unwrap_or_else(|| Err(format!("{}: no Welcome within {timeout_ms} ms", addr.url)));
    let (session, control, reader, welcomed) = opened?;
    let session = Rc::new(session);
    let incoming = session.incoming()?;
    let (generation, added) = {
        let mut i = inner.borrow_mut();
        if i.closed {
            session.close("viewer left");
            return Err("the client was closed".into());
        }
        if i.key.is_none() {
            i.key = Some(welcomed.key);
        }
        if i.descriptor.as_ref().is_none_or(|d| {
            d.descriptor().issued_at_us < welcomed.descriptor.descriptor().issued_at_us
        }) {
            i.known
                .set_descriptor(welcomed.descriptor.descriptor().clone());
            i.descriptor = Some(welcomed.descriptor);
        }
        for header in welcomed.recent.into_iter().chain(welcomed.live_edge) {
            i.known.insert(header);
        }
        let added = learn_gateways(&mut i, welcomed.gateways);
        let g = &mut i.gateways[index];
        if entry && refresh {
            g.addr = addr.clone();
        }
        g.generation += 1;
        g.session = Some(session.clone());
        let generation = g.generation;
        i.pool.connected(index);
        (generation, added)
    };
    spawn_local(control_task(
        inner.clone(),
        index,
        generation,
        control,
        reader,
    ));
    spawn_local(incoming_task(inner.clone(), index, generation, incoming));
    {
        let inner = inner.clone();
        let session = session.clone();
        spawn_local(async move {
            let reason = session.closed().await;
            gateway_down(&inner, index, generation, &reason, false);
        });
    }
    connect_all(inner, added);
    emit(
        inner,
        object(&[
            ("type", "gateway-connected".into()),
            ("url", addr.url.as_str().into()),
            ("reason", "".into()),
            ("transport", session.kind.into()),
        ]),
    );
    Ok(())
}

/// Takes in a gateway list (a Welcome's or a later update): an unknown
/// gateway is added; a newer signed record of a known one replaces its
/// address (a restart, a new certificate), and if it was down it is
/// reconnected at once. Returns the gateways to connect now.
fn learn_gateways(i: &mut Inner, list: Vec<GatewayAddr>) -> Vec<usize> {
    let mut connect = Vec::new();
    for addr in list {
        match i.gateways.iter().position(|g| addr.same_gateway(&g.addr)) {
            Some(index) => {
                if addr.replaces(&i.gateways[index].addr) {
                    let now = i.pool.moved(index, &addr.url);
                    i.gateways[index].addr = addr;
                    if now {
                        connect.push(index);
                    }
                }
            }
            None => {
                if let Some(new) = i.pool.add(&addr.url) {
                    i.gateways.push(Gateway {
                        addr,
                        entry: false,
                        session: None,
                        generation: 0,
                    });
                    connect.push(new);
                }
            }
        }
    }
    connect
}

/// Opens sessions to `gateways` in the background.
fn connect_all(inner: &Shared, gateways: Vec<usize>) {
    for index in gateways {
        let inner = inner.clone();
        spawn_local(async move {
            if let Err(e) = open_gateway(&inner, index, false).await {
                failed_to_open(&inner, index, &e);
            }
        });
    }
}

/// The wall clock in µs since the epoch, for gateway records' expiry.
fn unix_now_us() -> u64 {
    (js_sys::Date::now() * 1000.0).max(0.0) as u64
}

fn failed_to_open(inner: &Shared, index: usize, reason: &str) {
    let url = {
        let mut i = inner.borrow_mut();
        i.pool.closed(index, now_ms());
        i.gateways[index].addr.url.clone()
    };
    emit(inner, event("gateway-closed", &url, reason));
    schedule_retry(inner, index);
}

/// Takes gateway `index` out of service: fails its pending requests (their
/// fetches retry elsewhere), bans it for a forgery, and schedules a reconnect.
fn gateway_down(inner: &Shared, index: usize, generation: u32, reason: &str, forgery: bool) {
    let (session, url, failed) = {
        let mut i = inner.borrow_mut();
        let g = &mut i.gateways[index];
        if g.generation != generation || g.session.is_none() {
            return;
        }
        let session = g.session.take();
        let url = g.addr.url.clone();
        if forgery {
            i.pool.ban(index, now_ms());
        } else {
            i.pool.closed(index, now_ms());
        }
        let ids: Vec<u64> = i
            .pending
            .iter()
            .filter(|(_, p)| p.gateway == index)
            .map(|(id, _)| *id)
            .collect();
        let failed: Vec<Pending> = ids.iter().filter_map(|id| i.pending.remove(id)).collect();
        (session, url, failed)
    };
    let code = if forgery { "verify" } else { "closed" };
    for p in failed {
        let _ = p.tx.send(Err(Failure::new(code, reason)));
    }
    if let Some(s) = session {
        s.close(reason);
    }
    emit(inner, event("gateway-closed", &url, reason));
    schedule_retry(inner, index);
}

/// Reconnects gateway `index` when its backoff (or ban) ends.
fn schedule_retry(inner: &Shared, index: usize) {
    let retry_at = {
        let i = inner.borrow();
        if i.closed {
            return;
        }
        match i.pool.get(index).map(|g| g.state) {
            Some(State::Down { retry_at_ms }) => retry_at_ms,
            _ => return,
        }
    };
    let inner = inner.clone();
    spawn_local(async move {
        sleep(retry_at.saturating_sub(now_ms()) as f64).await;
        let due = {
            let mut i = inner.borrow_mut();
            if i.closed {
                return;
            }
            i.pool.due(now_ms())
        };
        for index in due {
            let inner = inner.clone();
            spawn_local(async move {
                if let Err(e) = open_gateway(&inner, index, true).await {
                    failed_to_open(&inner, index, &e);
                }
            });
        }
    });
}

fn is_current(inner: &Shared, index: usize, generation: u32) -> bool {
    let i = inner.borrow();
    !i.closed && i.gateways[index].generation == generation && i.gateways[index].session.is_some()
}

/// Reads Announce and Error frames after Welcome.
async fn control_task(
    inner: Shared,
    index: usize,
    generation: u32,
    control: ReadableStreamDefaultReader,
    mut reader: ControlReader,
) {
    let Some(key) = inner.borrow().key else {
        return;
    };
    loop {
        let chunk = match read_chunk(&control).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => {
                gateway_down(&inner, index, generation, "control stream ended", false);
                return;
            }
            Err(e) => {
                gateway_down(&inner, index, generation, &e, false);
                return;
            }
        };
        if !is_current(&inner, index, generation) {
            return;
        }
        reader.feed(&chunk);
        loop {
            let msg = match reader.next_message() {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(e) => {
                    gateway_down(&inner, index, generation, &e.to_string(), false);
                    return;
                }
            };
            match session::server_event(msg, &key, unix_now_us()) {
                Ok(Some(ServerEvent::Error {
                    code,
                    message,
                    request_id,
                })) if request_id != 0 => fail_request(&inner, request_id, code, message),
                Ok(Some(ServerEvent::Error { message, .. })) => {
                    gateway_down(&inner, index, generation, &message, false);
                    return;
                }
                Ok(Some(ServerEvent::Gateways(list))) => {
                    let connect = learn_gateways(&mut inner.borrow_mut(), list);
                    connect_all(&inner, connect);
                }
                Ok(Some(ServerEvent::Announced(headers))) => {
                    let count = headers.len();
                    {
                        let known = &mut inner.borrow_mut().known;
                        for header in headers {
                            known.insert(header);
                        }
                    }
                    emit(
                        &inner,
                        object(&[("type", "headers".into()), ("count", (count as f64).into())]),
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    forged(&inner, index, generation, &e);
                    return;
                }
            }
        }
    }
}

/// A gateway sent data that fails verification: report it and ban it.
fn forged(inner: &Shared, index: usize, generation: u32, e: &SessionError) {
    let url = inner.borrow().gateways[index].addr.url.clone();
    let reason = e.to_string();
    emit(inner, event("verify-failed", &url, &reason));
    gateway_down(inner, index, generation, &reason, e.is_forgery());
}

fn fail_request(inner: &Shared, request_id: u64, code: ErrorCode, message: String) {
    let pending = {
        let mut i = inner.borrow_mut();
        let p = i.pending.remove(&request_id);
        if let Some(p) = &p {
            i.pool.abandoned(p.gateway);
        }
        p
    };
    let code = match code {
        ErrorCode::NotFound => "not-found",
        ErrorCode::Deadline => "deadline",
        _ => "refused",
    };
    if let Some(p) = pending {
        let _ = p.tx.send(Err(Failure::new(code, message)));
    }
}

/// Accepts the gateway's delivery streams, one task each.
async fn incoming_task(
    inner: Shared,
    index: usize,
    generation: u32,
    incoming: ReadableStreamDefaultReader,
) {
    while let Ok(Some(stream)) = next_stream(&incoming).await {
        if !is_current(&inner, index, generation) {
            return;
        }
        spawn_local(delivery_task(inner.clone(), index, generation, stream));
    }
}

/// Reads one delivery stream through the shared verifier and completes the
/// request it answers.
async fn delivery_task(
    inner: Shared,
    index: usize,
    generation: u32,
    stream: ReadableStreamDefaultReader,
) {
    let Some(key) = inner.borrow().key else {
        return;
    };
    let mut reader = DeliveryReader::new(key);
    let result = loop {
        let chunk = within(READ_TIMEOUT_MS, read_chunk(&stream))
            .await
            .unwrap_or_else(|| Err("delivery stream silent for 30 s".into()));
        match chunk {
            Ok(Some(chunk)) => {
                if let Err(e) = reader.feed(&chunk) {
                    break Err(e);
                }
                if let Some(id) = reader.request_id()
                    && let Some(p) = inner.borrow_mut().pending.get_mut(&id)
                {
                    p.first_byte_at.get_or_insert_with(now);
                }
            }
            Ok(None) => break reader.finish(),
            Err(e) => {
                let _ = stream.cancel();
                break Err(session::DeliveryError {
                    request_id: reader.request_id(),
                    error: SessionError::Protocol(e),
                });
            }
        }
    };
    // A validly signed segment is not necessarily the one asked for.
    let result = result.and_then(|delivered| {
        let asked = inner
            .borrow()
            .pending
            .get(&delivered.request_id)
            .map(|p| p.asked);
        match asked.map(|asked| delivered.answers(&asked)) {
            Some(Err(error)) => Err(session::DeliveryError {
                request_id: Some(delivered.request_id),
                error,
            }),
            _ => Ok(delivered),
        }
    });
    match result {
        Ok(delivered) => {
            let pending = {
                let mut i = inner.borrow_mut();
                i.known.insert(delivered.header.clone());
                let p = i.pending.remove(&delivered.request_id);
                if let Some(p) = &p {
                    let ms = now() - p.sent_at;
                    i.pool
                        .finished(p.gateway, delivered.body.len() as u64, ms, now_ms());
                }
                p
            };
            if let Some(p) = pending {
                let first = p.first_byte_at.unwrap_or_else(now);
                let _ = p.tx.send(Ok((delivered, first)));
            }
        }
        Err(e) => {
            let _ = stream.cancel();
            let pending = e
                .request_id
                .and_then(|id| inner.borrow_mut().pending.remove(&id));
            if let Some(p) = pending {
                inner.borrow_mut().pool.abandoned(p.gateway);
                let code = if e.error.is_forgery() {
                    "verify"
                } else {
                    "closed"
                };
                let _ = p.tx.send(Err(Failure::new(code, e.error.to_string())));
            }
            if e.error.is_forgery() {
                forged(&inner, index, generation, &e.error);
            }
        }
    }
}

struct FetchRequest {
    id: SegmentId,
    url: Option<String>,
    priority: u32,
    deadline_ms: f64,
    signal: Option<AbortSignal>,
}

impl FetchRequest {
    fn parse(inner: &Shared, options: &JsValue) -> Result<Self, Failure> {
        let stream = inner.borrow().stream;
        let rendition = get_f64(options, "rendition")
            .filter(|r| r.fract() == 0.0 && *r >= 0.0 && *r <= f64::from(u32::MAX))
            .ok_or_else(|| Failure::new("bad-options", "rendition must be a rendition id"))?;
        let sequence = get_f64(options, "sequence")
            .filter(|s| s.fract() == 0.0 && *s >= 0.0 && *s <= 9_007_199_254_740_991.0)
            .ok_or_else(|| Failure::new("bad-options", "sequence must be a whole number"))?;
        let init = get(options, "init").and_then(|v| v.as_bool()) == Some(true);
        // A low-latency part: its index within media segment `sequence`.
        let part = match get(options, "part").filter(|v| !v.is_undefined() && !v.is_null()) {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|p| p.fract() == 0.0 && *p >= 0.0 && *p < f64::from(MAX_PARTS))
                    .ok_or_else(|| {
                        Failure::new("bad-options", "part must be a part index (0 to 63)")
                    })? as u32,
            ),
        };
        let (rendition, sequence) = (rendition as u32, sequence as u64);
        let id = match (init, part) {
            (true, _) => SegmentId::init(stream, rendition, sequence),
            (false, Some(part)) => SegmentId::part(stream, rendition, sequence, part),
            (false, None) => SegmentId::media(stream, rendition, sequence),
        };
        Ok(Self {
            id,
            url: get_string(options, "url"),
            priority: get_f64(options, "priority").map_or(0, |p| p.clamp(0.0, 1000.0) as u32),
            deadline_ms: get_f64(options, "deadlineMs")
                .unwrap_or(DEFAULT_DEADLINE_MS)
                .clamp(1.0, 600_000.0),
            signal: get(options, "signal").and_then(|s| s.dyn_into().ok()),
        })
    }
}

/// The fetch loop: the best connected gateway first, then, after a failure
/// that another gateway may not share (forged data, a closed session, a
/// refusal, not found), the next best, while the deadline allows.
async fn fetch(inner: &Shared, request: FetchRequest) -> Result<JsValue, Failure> {
    let started = now();
    let deadline_at = started + request.deadline_ms;
    let (abort_tx, abort_rx) = oneshot::channel::<()>();
    let abort_tx = RefCell::new(Some(abort_tx));
    let on_abort = Closure::<dyn FnMut()>::new(move || {
        if let Some(tx) = abort_tx.borrow_mut().take() {
            let _ = tx.send(());
        }
    });
    if let Some(signal) = &request.signal {
        if signal.aborted() {
            return Err(Failure::new("aborted", "aborted before it started"));
        }
        let _ = signal.add_event_listener_with_callback("abort", on_abort.as_ref().unchecked_ref());
    }
    let result = fetch_attempts(inner, &request, started, deadline_at, abort_rx).await;
    if let Some(signal) = &request.signal {
        let _ =
            signal.remove_event_listener_with_callback("abort", on_abort.as_ref().unchecked_ref());
    }
    result
}

async fn fetch_attempts(
    inner: &Shared,
    request: &FetchRequest,
    started: f64,
    deadline_at: f64,
    abort_rx: oneshot::Receiver<()>,
) -> Result<JsValue, Failure> {
    let mut abort_rx = abort_rx.fuse();
    let mut tried = Vec::new();
    let mut last: Option<Failure> = None;
    loop {
        let remaining = deadline_at - now();
        if remaining < 1.0 {
            return Err(last.unwrap_or_else(|| Failure::new("deadline", "deadline passed")));
        }
        let picked = {
            let mut i = inner.borrow_mut();
            if i.closed {
                return Err(Failure::new("closed", "the client was closed"));
            }
            match i.pool.pick(&tried, now_ms()) {
                Some(gateway) => match i.gateways[gateway].session.clone() {
                    Some(session) => {
                        let request_id = i.next_request;
                        i.next_request += 1;
                        let (tx, rx) = oneshot::channel();
                        i.pending.insert(
                            request_id,
                            Pending {
                                asked: request.id,
                                gateway,
                                sent_at: now(),
                                first_byte_at: None,
                                tx,
                            },
                        );
                        i.pool.started(gateway);
                        Some((gateway, request_id, session, rx))
                    }
                    None => {
                        tried.push(gateway);
                        continue;
                    }
                },
                // A gateway still opening its session may yet serve in time.
                None if i.pool.any_connecting() && remaining > 2.0 * CONNECTING_POLL_MS => None,
                None => {
                    return Err(last
                        .unwrap_or_else(|| Failure::new("no-gateway", "no gateway is connected")));
                }
            }
        };
        let Some((gateway, request_id, session, rx)) = picked else {
            sleep(CONNECTING_POLL_MS).await;
            continue;
        };
        tried.push(gateway);
        let msg = session::request(request_id, request.id, request.priority, remaining as u32);
        let sent = match session::encode(&msg) {
            Ok(bytes) => session.send(&bytes).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            let generation = inner.borrow().gateways[gateway].generation;
            gateway_down(inner, gateway, generation, &e, false);
            last = Some(Failure::new("closed", e));
            continue;
        }
        let rx = rx.fuse();
        let timer = sleep(remaining + DEADLINE_SLACK_MS).fuse();
        pin_mut!(rx, timer);
        let outcome = select! {
            r = rx => r.unwrap_or_else(|_| Err(Failure::new("closed", "the session closed"))),
            _ = abort_rx => {
                abandon(inner, request_id, &session).await;
                return Err(Failure::new("aborted", "aborted"));
            }
            _ = timer => {
                abandon(inner, request_id, &session).await;
                return Err(Failure::new("deadline", format!(
                    "no delivery within {} ms", request.deadline_ms
                )));
            }
        };
        match outcome {
            Ok((delivered, first_byte_at)) => {
                check_uri(inner, request, &delivered)?;
                let url = inner.borrow().gateways[gateway].addr.url.clone();
                let end = now();
                return Ok(object(&[
                    ("data", Uint8Array::from(&delivered.body[..]).into()),
                    ("gateway", url.into()),
                    ("transport", session.kind.into()),
                    ("bytes", (delivered.body.len() as f64).into()),
                    ("firstByteMs", (first_byte_at - started).into()),
                    ("totalMs", (end - started).into()),
                    ("attempts", (tried.len() as u32).into()),
                ]));
            }
            Err(f) if f.code == "deadline" => return Err(f),
            Err(f) => last = Some(f),
        }
    }
}

/// Gives up on a request: forget it and tell the gateway to stop.
async fn abandon(inner: &Shared, request_id: u64, session: &Session) {
    let pending = inner.borrow_mut().pending.remove(&request_id);
    if let Some(p) = pending {
        inner.borrow_mut().pool.abandoned(p.gateway);
        if let Ok(bytes) = session::encode(&session::cancel(request_id)) {
            let _ = session.send(&bytes).await;
        }
    }
}

/// The signed header names where the origin serves the segment: it must be
/// the fragment the player asked for, or our mapping from URL to id is off.
fn check_uri(inner: &Shared, request: &FetchRequest, delivered: &Delivered) -> Result<(), Failure> {
    let Some(want) = &request.url else {
        return Ok(());
    };
    let uri = &delivered.header.info().uri;
    if uri.is_empty() {
        return Ok(());
    }
    let i = inner.borrow();
    let Some(d) = i.descriptor.as_ref().map(VerifiedDescriptor::descriptor) else {
        return Ok(());
    };
    let got = d.segment_url(request.id.rendition, uri);
    let same = match (got.as_deref().and_then(pathname), pathname(want)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(Failure::new(
            "mismatch",
            format!("segment {:?} is {uri}, not {want}", request.id),
        ))
    }
}

/// Whether a header's `uri` and a fetched `url` name the same file. Only the
/// file names are compared: a mirror serves the origin's files under another
/// folder.
fn same_file(uri: &str, url: &str) -> bool {
    fn file_name(path: &str) -> &str {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        path.rsplit('/').next().unwrap_or_default()
    }
    uri.is_empty() || pathname(url).is_some_and(|path| file_name(uri) == file_name(&path))
}

fn pathname(url: &str) -> Option<String> {
    web_sys::Url::new(url).ok().map(|u| u.pathname())
}
