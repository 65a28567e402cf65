//! What a viewer session runs over: a WebTransport connection, or a
//! WebSocket carrying the same streams multiplexed ([`crate::websocket`],
//! whose delivery streams are [`Mux`] and [`UniStream`] here).
//!
//! The session (`session.rs`) reads and writes its control stream as bytes
//! and opens one unidirectional stream per delivery; this is all it needs
//! of the transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use meshcast_proto::mux;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use wtransport::{Connection, VarInt};

/// The bidirectional control stream of either transport.
pub(crate) trait ControlIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ControlIo for T {}

/// Opens delivery streams.
#[derive(Clone)]
pub(crate) enum Outlet {
    WebTransport(Connection),
    WebSocket(Mux),
}

impl Outlet {
    /// A new unidirectional stream to the viewer.
    pub async fn open_uni(&self) -> Result<Uni, String> {
        match self {
            Self::WebTransport(connection) => {
                let stream = connection
                    .open_uni()
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Uni::WebTransport(stream))
            }
            Self::WebSocket(mux) => Ok(Uni::WebSocket(mux.open_uni())),
        }
    }
}

/// One delivery stream.
pub(crate) enum Uni {
    WebTransport(wtransport::SendStream),
    WebSocket(UniStream),
}

impl Uni {
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Self::WebTransport(s) => s.write_all(bytes).await.map_err(|e| e.to_string()),
            Self::WebSocket(s) => s.write_all(bytes).await,
        }
    }

    /// Ends the stream: the viewer reads it to its end.
    pub async fn finish(&mut self) -> Result<(), String> {
        match self {
            Self::WebTransport(s) => s.finish().await.map_err(|e| e.to_string()),
            Self::WebSocket(s) => s.finish().await,
        }
    }

    /// Abandons the stream: the viewer drops what it got of it.
    pub fn reset(&mut self, code: u32) {
        match self {
            Self::WebTransport(s) => {
                let _ = s.reset(VarInt::from_u32(code));
            }
            Self::WebSocket(s) => s.reset(),
        }
    }
}

/// Opens delivery streams on one WebSocket.
#[derive(Clone)]
pub(crate) struct Mux {
    out: mpsc::Sender<Vec<u8>>,
    next: Arc<AtomicU64>,
}

impl Mux {
    /// Delivery streams whose messages go to `out`, the socket's writer.
    pub fn new(out: mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            out,
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    pub fn open_uni(&self) -> UniStream {
        UniStream {
            out: self.out.clone(),
            id: self.next.fetch_add(1, Ordering::Relaxed),
            done: false,
        }
    }
}

/// One delivery stream: its bytes in messages of at most `mux::MAX_CHUNK`.
/// Dropped before `finish`, it is reset.
pub(crate) struct UniStream {
    out: mpsc::Sender<Vec<u8>>,
    id: u64,
    done: bool,
}

impl UniStream {
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        for chunk in bytes.chunks(mux::MAX_CHUNK) {
            self.out
                .send(mux::data(self.id, chunk))
                .await
                .map_err(|_| "the WebSocket closed".to_string())?;
        }
        Ok(())
    }

    pub async fn finish(&mut self) -> Result<(), String> {
        self.done = true;
        self.out
            .send(mux::fin(self.id))
            .await
            .map_err(|_| "the WebSocket closed".to_string())
    }

    pub fn reset(&mut self) {
        if !self.done {
            self.done = true;
            // A full queue: the viewer is not reading; the session ends soon.
            let _ = self.out.try_send(mux::reset(self.id));
        }
    }
}

impl Drop for UniStream {
    fn drop(&mut self) {
        self.reset();
    }
}
