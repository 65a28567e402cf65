//! One WebTransport session: open it pinned to certificate hashes, write the
//! control stream, read chunks from the streams the gateway opens.

use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    ReadableStream, ReadableStreamDefaultReader, WebTransport, WebTransportBidirectionalStream,
    WebTransportCloseInfo, WebTransportHash, WebTransportOptions, WritableStream,
    WritableStreamDefaultWriter,
};

use futures::{FutureExt, pin_mut, select};

use crate::js::describe;

/// A transport being opened: closed when dropped before it is kept.
struct Closing(WebTransport, bool);

impl Closing {
    fn new(transport: WebTransport) -> Self {
        Self(transport, false)
    }

    fn keep(mut self) -> WebTransport {
        self.1 = true;
        self.0.clone()
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if !self.1 {
            self.0.close();
        }
    }
}

pub struct Session {
    transport: WebTransport,
    writer: WritableStreamDefaultWriter,
    /// `webtransport` or `websocket`.
    pub kind: &'static str,
}

#[wasm_bindgen(module = "/js/websocket.js")]
extern "C" {
    /// A WebTransport-shaped object over a WebSocket (see the file).
    #[wasm_bindgen(js_name = openWebSocketTransport)]
    fn open_websocket_transport(url: &str) -> JsValue;
}

/// How long WebTransport may try alone before a WebSocket races it: a
/// network that drops UDP never fails a QUIC handshake, it only stalls it.
/// Long enough for a handshake across the world (a few round trips).
pub const WEBTRANSPORT_HEAD_START_MS: f64 = 1000.0;

impl Session {
    /// Opens a session to `url` accepting only certificates whose SHA-256 is
    /// in `hashes` (self-signed, ≤ 14 days: what gateways make), and opens the
    /// control stream. Returns the session and the control stream's reader.
    /// With a `websocket` URL, the same session over a WebSocket races it
    /// when WebTransport fails, is missing, or has not connected within
    /// [`WEBTRANSPORT_HEAD_START_MS`]: the first one up is kept,
    /// WebTransport when both are.
    pub async fn open(
        url: &str,
        hashes: &[[u8; 32]],
        websocket: Option<&str>,
    ) -> Result<(Session, ReadableStreamDefaultReader), String> {
        let has_webtransport =
            js_sys::Reflect::has(&js_sys::global(), &"WebTransport".into()).unwrap_or(false);
        let Some(ws_url) = websocket else {
            return Self::open_webtransport(url, hashes).await;
        };
        if !has_webtransport {
            return Self::open_websocket(ws_url).await;
        }
        let wt = Self::open_webtransport(url, hashes).fuse();
        let head_start = crate::js::sleep(WEBTRANSPORT_HEAD_START_MS).fuse();
        pin_mut!(wt, head_start);
        let wt_failed = select! {
            opened = wt => match opened {
                Ok(opened) => return Ok(opened),
                Err(e) => Some(e),
            },
            _ = head_start => None,
        };
        let ws = Self::open_websocket(ws_url).fuse();
        pin_mut!(ws);
        if let Some(wt_error) = wt_failed {
            return ws
                .await
                .map_err(|e| format!("WebTransport: {wt_error}; WebSocket: {e}"));
        }
        select! {
            opened = wt => match opened {
                Ok(opened) => Ok(opened),
                Err(wt_error) => ws
                    .await
                    .map_err(|e| format!("WebTransport: {wt_error}; WebSocket: {e}")),
            },
            opened = ws => match opened {
                Ok(opened) => Ok(opened),
                Err(ws_error) => wt
                    .await
                    .map_err(|e| format!("WebTransport: {e}; WebSocket: {ws_error}")),
            },
        }
    }

    async fn open_webtransport(
        url: &str,
        hashes: &[[u8; 32]],
    ) -> Result<(Session, ReadableStreamDefaultReader), String> {
        let options = WebTransportOptions::new();
        if !hashes.is_empty() {
            let list = Array::new();
            for hash in hashes {
                let entry = WebTransportHash::new();
                entry.set_algorithm("sha-256");
                entry.set_value(&Uint8Array::from(&hash[..]));
                list.push(&entry);
            }
            options.set_server_certificate_hashes(&list);
        }
        let transport = WebTransport::new_with_options(url, &options).map_err(|e| describe(&e))?;
        Self::start(Closing::new(transport), "webtransport").await
    }

    async fn open_websocket(url: &str) -> Result<(Session, ReadableStreamDefaultReader), String> {
        let transport: WebTransport = open_websocket_transport(url).unchecked_into();
        Self::start(Closing::new(transport), "websocket").await
    }

    /// Waits for `transport` to be up and opens the control stream; the
    /// transport is closed if that fails, or if this future is dropped
    /// first (the race's loser).
    async fn start(
        transport: Closing,
        kind: &'static str,
    ) -> Result<(Session, ReadableStreamDefaultReader), String> {
        // A failed handshake rejects `closed` too; observe it so the browser
        // does not report an unhandled rejection.
        let closed = JsFuture::from(transport.0.closed());
        wasm_bindgen_futures::spawn_local(async move {
            let _ = closed.await;
        });
        JsFuture::from(transport.0.ready())
            .await
            .map_err(|e| describe(&e))?;
        let bidi: WebTransportBidirectionalStream =
            JsFuture::from(transport.0.create_bidirectional_stream())
                .await
                .map_err(|e| describe(&e))?
                .unchecked_into();
        let writable: WritableStream = bidi.writable().unchecked_into();
        let readable: ReadableStream = bidi.readable().unchecked_into();
        let writer = writable.get_writer().map_err(|e| describe(&e))?;
        let reader = ReadableStreamDefaultReader::new(&readable).map_err(|e| describe(&e))?;
        Ok((
            Session {
                transport: transport.keep(),
                writer,
                kind,
            },
            reader,
        ))
    }

    /// Writes bytes on the control stream (writes are queued in order).
    pub async fn send(&self, bytes: &[u8]) -> Result<(), String> {
        let chunk = Uint8Array::from(bytes);
        JsFuture::from(self.writer.write_with_chunk(&chunk))
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    /// Reader of the unidirectional streams the gateway opens (one per delivery).
    pub fn incoming(&self) -> Result<ReadableStreamDefaultReader, String> {
        ReadableStreamDefaultReader::new(&self.transport.incoming_unidirectional_streams())
            .map_err(|e| describe(&e))
    }

    /// Resolves when the session has closed, for whatever reason.
    pub async fn closed(&self) -> String {
        match JsFuture::from(self.transport.closed()).await {
            Ok(info) => crate::js::get_string(&info, "reason")
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "closed by the gateway".into()),
            Err(e) => describe(&e),
        }
    }

    pub fn close(&self, reason: &str) {
        let info = WebTransportCloseInfo::new();
        info.set_close_code(0);
        info.set_reason(reason);
        self.transport.close_with_close_info(&info);
    }
}

/// The next chunk of a byte stream, `None` at its end.
pub async fn read_chunk(reader: &ReadableStreamDefaultReader) -> Result<Option<Vec<u8>>, String> {
    let result = JsFuture::from(reader.read())
        .await
        .map_err(|e| describe(&e))?;
    if crate::js::get(&result, "done").and_then(|d| d.as_bool()) == Some(true) {
        return Ok(None);
    }
    let value = crate::js::get(&result, "value").ok_or("a read without a value")?;
    let bytes: Uint8Array = value
        .dyn_into()
        .map_err(|_| "a stream chunk that is not bytes".to_string())?;
    Ok(Some(bytes.to_vec()))
}

/// The next incoming stream, `None` when the session is over.
pub async fn next_stream(
    reader: &ReadableStreamDefaultReader,
) -> Result<Option<ReadableStreamDefaultReader>, String> {
    let result = JsFuture::from(reader.read())
        .await
        .map_err(|e| describe(&e))?;
    if crate::js::get(&result, "done").and_then(|d| d.as_bool()) == Some(true) {
        return Ok(None);
    }
    let stream: ReadableStream = crate::js::get(&result, "value")
        .ok_or("an incoming stream without a value")?
        .unchecked_into();
    ReadableStreamDefaultReader::new(&stream)
        .map(Some)
        .map_err(|e| describe(&e))
}
