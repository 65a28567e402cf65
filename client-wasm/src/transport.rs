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

use crate::js::describe;

pub struct Session {
    transport: WebTransport,
    writer: WritableStreamDefaultWriter,
}

impl Session {
    /// Opens a session to `url` accepting only certificates whose SHA-256 is
    /// in `hashes` (self-signed, ≤ 14 days: what gateways make), and opens the
    /// control stream. Returns the session and the control stream's reader.
    pub async fn open(
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
        // A failed handshake rejects `closed` too; observe it so the browser
        // does not report an unhandled rejection.
        let closed = JsFuture::from(transport.closed());
        wasm_bindgen_futures::spawn_local(async move {
            let _ = closed.await;
        });
        if let Err(e) = JsFuture::from(transport.ready()).await {
            transport.close();
            return Err(describe(&e));
        }
        let bidi: WebTransportBidirectionalStream =
            match JsFuture::from(transport.create_bidirectional_stream()).await {
                Ok(stream) => stream.unchecked_into(),
                Err(e) => {
                    transport.close();
                    return Err(describe(&e));
                }
            };
        let writable: WritableStream = bidi.writable().unchecked_into();
        let readable: ReadableStream = bidi.readable().unchecked_into();
        let writer = writable.get_writer().map_err(|e| describe(&e))?;
        let reader = ReadableStreamDefaultReader::new(&readable).map_err(|e| describe(&e))?;
        Ok((Session { transport, writer }, reader))
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
