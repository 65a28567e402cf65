//! What a viewer session runs over: a WebTransport connection, or a
//! WebSocket carrying the same streams multiplexed ([`crate::websocket`]).
//!
//! The session (`session.rs`) reads and writes its control stream as bytes
//! and opens one unidirectional stream per delivery; this is all it needs
//! of the transport.

use tokio::io::{AsyncRead, AsyncWrite};
use wtransport::{Connection, VarInt};

use crate::websocket;

/// The bidirectional control stream of either transport.
pub(crate) trait ControlIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ControlIo for T {}

/// Opens delivery streams.
#[derive(Clone)]
pub(crate) enum Outlet {
    WebTransport(Connection),
    WebSocket(websocket::Mux),
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
    WebSocket(websocket::UniStream),
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
