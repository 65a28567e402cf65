//! The segment-exchange protocol, `/meshcast/segment/1`: one QUIC stream per
//! transfer, frames of [`pb::MeshMessage`], raw bodies after their header.
//!
//! - pull: `Want{id}` → `Deliver{header}` + body, or `Absent{id}`.
//! - push: `PushOffer{header}` → `PushAccept` (then the body) or `PushDecline{reason}`.
//! - headers: `ListHeaders{stream}` → `Announce{headers}`.
//!
//! Every read has a timeout and goes through a [`Decoder`] with hard limits;
//! bodies are verified chunk by chunk against the signed header before they are
//! returned. Errors that prove a peer dishonest are marked
//! ([`ExchangeError::is_misbehaviour`]) so the node bans it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{Stream, StreamProtocol};
use meshcast_proto::frame::{self, Decoder, FrameError, Item, Limits};
use meshcast_proto::pb::{self, mesh_message::Body};
use meshcast_proto::{
    BodyError, DecodeError, SegmentId, SignedHeader, StreamId, StreamKey, VerifiedHeader,
    VerifyError,
};

pub use crate::mesh::Pushed;
use crate::mesh::{Broken, Failure};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/meshcast/segment/1");

/// Bytes read from the stream at a time: the decoder never holds more than
/// one frame plus one read.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("stream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer sent nothing for {0:?}")]
    Timeout(Duration),
    #[error("stream closed early")]
    Closed,
    #[error("could not open stream: {0}")]
    Open(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
}

impl ExchangeError {
    /// How the mesh core weighs it: misbehaviour (with what failed
    /// verification, if anything), or a failure that is nobody's fault.
    pub fn broken(&self) -> Broken {
        if !self.is_misbehaviour() {
            return Broken::Failed(self.to_string());
        }
        let failure = match self {
            Self::Body(_) => Some(Failure::Body),
            Self::Verify(_) | Self::Decode(_) => Some(Failure::Header),
            _ => None,
        };
        Broken::Misbehaved {
            reason: self.to_string(),
            failure,
        }
    }

    /// True when the error proves the peer sent bad data on purpose or by
    /// malfunction: forged or altered headers, bytes that do not match, frames
    /// over the limits. Timeouts and closed streams are not misbehaviour.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            Self::Frame(_) | Self::Body(_) | Self::Verify(_) | Self::Decode(_) | Self::Protocol(_)
        )
    }
}

/// A stream with a frame decoder and a read timeout. Generic so that the
/// browser gateway (WebTransport streams, through `tokio_util::compat`) reads
/// and writes frames with the same code as the mesh.
pub struct Framed<S = Stream> {
    stream: S,
    decoder: Decoder,
    buf: Box<[u8]>,
    read_timeout: Duration,
}

impl<S> Framed<S> {
    pub fn new(stream: S, limits: Limits, read_timeout: Duration) -> Self {
        Self {
            stream,
            decoder: Decoder::new(limits),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            read_timeout,
        }
    }

    pub fn limits(&self) -> &Limits {
        self.decoder.limits()
    }

    /// The underlying stream, for writes that bypass the frame limits.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl<S: AsyncRead + Unpin> Framed<S> {
    async fn next_item(&mut self) -> Result<Item, ExchangeError> {
        loop {
            if let Some(item) = self.decoder.next_item()? {
                return Ok(item);
            }
            let read = tokio::time::timeout(self.read_timeout, self.stream.read(&mut self.buf))
                .await
                .map_err(|_| ExchangeError::Timeout(self.read_timeout))??;
            if read == 0 {
                self.decoder.finish()?;
                return Err(ExchangeError::Closed);
            }
            self.decoder.feed(&self.buf[..read]);
        }
    }

    /// Reads one control frame as message `M`; `Ok(None)` at a clean end of stream.
    pub async fn read_frame<M: prost::Message + Default>(
        &mut self,
    ) -> Result<Option<M>, ExchangeError> {
        match self.next_item().await {
            Ok(Item::Frame(bytes)) => Ok(Some(frame::decode::<M>(bytes)?)),
            Ok(Item::Body { .. }) => {
                Err(ExchangeError::Protocol("body bytes where a frame was due"))
            }
            Err(ExchangeError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads one control frame as a mesh message.
    pub async fn read_message(&mut self) -> Result<Body, ExchangeError> {
        self.read_frame::<pb::MeshMessage>()
            .await?
            .ok_or(ExchangeError::Closed)?
            .body
            .ok_or(ExchangeError::Protocol("empty message"))
    }

    /// Reads and verifies the body announced by `header`.
    pub async fn read_body(&mut self, header: &VerifiedHeader) -> Result<Bytes, ExchangeError> {
        let max = self.decoder.limits().max_segment;
        let mut verifier = header.body_verifier(max)?;
        self.decoder.expect_body(header.info().length)?;
        // Sized once from the signed length, already checked against
        // max_segment above: no reallocation (and copy) as the body grows.
        let mut body = BytesMut::with_capacity(usize::try_from(header.info().length).unwrap_or(0));
        loop {
            match self.next_item().await? {
                Item::Body { chunk, last } => {
                    verifier.update(&chunk)?;
                    body.extend_from_slice(&chunk);
                    if last {
                        verifier.finish()?;
                        return Ok(body.freeze());
                    }
                }
                Item::Frame(_) => return Err(ExchangeError::Protocol("frame inside a body")),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Framed<S> {
    /// Writes one control frame.
    pub async fn send_frame<M: prost::Message>(&mut self, msg: &M) -> Result<(), ExchangeError> {
        let bytes = frame::encode(msg, self.decoder.limits())?;
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    pub async fn send(&mut self, body: Body) -> Result<(), ExchangeError> {
        self.send_frame(&pb::MeshMessage { body: Some(body) }).await
    }

    pub async fn send_body(&mut self, body: &[u8]) -> Result<(), ExchangeError> {
        self.stream.write_all(body).await?;
        Ok(())
    }

    /// Flushes and half-closes our side.
    pub async fn finish(mut self) -> Result<(), ExchangeError> {
        self.stream.close().await?;
        Ok(())
    }
}

/// Decodes and verifies a header received for stream `key`.
pub fn verify_header(
    header: Option<pb::SegmentHeader>,
    key: &StreamKey,
) -> Result<VerifiedHeader, ExchangeError> {
    let header = header.ok_or(ExchangeError::Protocol("message without a header"))?;
    Ok(SignedHeader::from_pb(&header)?.verify(key)?)
}

/// Pulls segment `id` over a fresh stream; `None` when the peer lacks it.
pub async fn pull(
    mut framed: Framed,
    id: SegmentId,
    key: &StreamKey,
) -> Result<Option<(VerifiedHeader, Bytes)>, ExchangeError> {
    framed
        .send(Body::Want(pb::Want {
            id: Some(id.to_pb()),
        }))
        .await?;
    match framed.read_message().await? {
        Body::Deliver(d) => {
            let header = verify_header(d.header, key)?;
            if header.id() != id {
                return Err(ExchangeError::Protocol(
                    "delivered a segment other than the one asked for",
                ));
            }
            let body = framed.read_body(&header).await?;
            Ok(Some((header, body)))
        }
        Body::Absent(_) => Ok(None),
        _ => Err(ExchangeError::Protocol("unexpected answer to Want")),
    }
}

/// Offers a segment over a fresh stream and sends the body if accepted.
pub async fn push(
    mut framed: Framed,
    header: &SignedHeader,
    body: &[u8],
) -> Result<Pushed, ExchangeError> {
    framed
        .send(Body::PushOffer(pb::PushOffer {
            header: Some(header.to_pb()),
        }))
        .await?;
    match framed.read_message().await? {
        Body::PushAccept(_) => {
            framed.send_body(body).await?;
            framed.finish().await?;
            Ok(Pushed::Delivered)
        }
        Body::PushDecline(d) => Ok(Pushed::Declined(
            pb::DeclineReason::try_from(d.reason).unwrap_or(pb::DeclineReason::Unspecified),
        )),
        _ => Err(ExchangeError::Protocol("unexpected answer to PushOffer")),
    }
}

/// Asks a peer which segments of `stream` it holds: the newest (`in_order`
/// false), or a page of them in id order after `after` (a VOD's index).
pub async fn list_headers(
    mut framed: Framed,
    stream: StreamId,
    in_order: bool,
    after: Option<SegmentId>,
) -> Result<Vec<pb::SegmentHeader>, ExchangeError> {
    framed
        .send(Body::ListHeaders(pb::ListHeaders {
            stream_id: stream.as_bytes().to_vec().into(),
            in_order,
            after: after.map(|id| id.to_pb()),
        }))
        .await?;
    match framed.read_message().await? {
        Body::Announce(a) => Ok(a.headers),
        _ => Err(ExchangeError::Protocol("unexpected answer to ListHeaders")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error: &ExchangeError) -> Option<Failure> {
        match error.broken() {
            Broken::Misbehaved { failure, .. } => failure,
            Broken::Failed(_) => None,
        }
    }

    #[test]
    fn errors_map_to_misbehaviour_and_what_failed() {
        let body = ExchangeError::Body(BodyError::TooShort {
            declared: 2,
            received: 1,
        });
        assert_eq!(failure(&body), Some(Failure::Body));
        let header = ExchangeError::Verify(VerifyError::BadSignature {
            what: "segment header",
        });
        assert_eq!(failure(&header), Some(Failure::Header));
        assert!(matches!(ExchangeError::Closed.broken(), Broken::Failed(_)));
        let protocol = ExchangeError::Protocol("unexpected first message").broken();
        assert!(matches!(protocol, Broken::Misbehaved { failure: None, .. }));
    }
}
