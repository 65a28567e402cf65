//! The segment-exchange protocol, `/meshcast/segment/2`: one QUIC stream per
//! transfer, frames of [`pb::MeshMessage`], bodies after their header encoded
//! as BLAKE3's tree ([`meshcast_proto::tree`]: parent hashes and 16 KiB
//! groups in pre-order, [`tree::encoded_len`] bytes).
//!
//! - pull: `Want{id}` → `Deliver{header}` + body, or `Absent{id}`.
//! - push: `PushOffer{header}` → `PushAccept` (then the body) or `PushDecline{reason}`.
//! - headers: `ListHeaders{stream}` → `Announce{headers}`.
//!
//! Every read and every write has a deadline ([`Pace`]: one per control frame,
//! one per body from a minimum rate) and every read goes through a
//! [`Decoder`] with hard limits; bodies are verified group by group against
//! the signed header as they arrive, and a forged group fails the transfer
//! at once. Errors that prove a peer
//! dishonest are marked ([`ExchangeError::is_misbehaviour`]) so the node bans
//! it. A stream that ends early, even inside a body, is not one of them: a
//! sender that gives up on a slow transfer (or restarts) ends its stream the
//! same way, since libp2p's streams can be finished but not reset.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{Stream, StreamProtocol};
use meshcast_proto::frame::{self, Decoder, FrameError, Item, Limits};
use meshcast_proto::pb::{self, mesh_message::Body};
use meshcast_proto::tree::{self, Outboard, TreeError};
use meshcast_proto::{
    BodyError, DecodeError, SegmentId, SignedHeader, StreamId, StreamKey, VerifiedHeader,
    VerifyError,
};

use crate::arrival::{Announcer, Arrival, Feed};
pub use crate::mesh::Pushed;
use crate::mesh::{Broken, Failure};
use crate::uplink::Uplink;

/// Version 2: bodies as BLAKE3 trees (version 1 sent them raw).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/meshcast/segment/2");

/// Bytes read from the stream at a time: the decoder never holds more than
/// one frame plus one read.
const READ_CHUNK: usize = 64 * 1024;
/// A body's buffer starts this large and grows as bytes arrive: a peer's
/// signed length reserves nothing it has not sent.
const BODY_START: usize = 64 * 1024;

/// How long a peer may take. Slow is not dishonest, but a transfer that
/// crawls below `min_rate` holds a stream, a task and memory that honest
/// peers need: it is ended (not held against the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Longest silence on a read, and longest time for one control frame to
    /// arrive or be sent.
    pub frame: Duration,
    /// Bytes per second a body must at least move at, on average.
    pub min_rate: u64,
}

impl Pace {
    /// 64 KiB/s (0.5 Mbit/s): a tenth of a 10 Mbit/s home uplink shared by
    /// five parallel uploads. Below it, an 8 MiB segment would take over two
    /// minutes: no live viewer waits that long.
    pub const DEFAULT_MIN_RATE: u64 = 64 * 1024;

    pub fn new(frame: Duration) -> Self {
        Self {
            frame,
            min_rate: Self::DEFAULT_MIN_RATE,
        }
    }

    /// The time a body of `len` bytes may take: one frame's time plus its
    /// length at `min_rate`.
    pub fn body(&self, len: u64) -> Duration {
        // At most a day: the length is the peer's to choose (within the
        // frame limits checked after this).
        let secs = (len as f64 / self.min_rate.max(1) as f64).min(86_400.0);
        self.frame + Duration::from_secs_f64(secs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("stream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer sent nothing for {0:?}")]
    Timeout(Duration),
    #[error("{what} took longer than {limit:?}")]
    TooSlow { what: &'static str, limit: Duration },
    #[error("stream closed early")]
    Closed,
    #[error("could not open stream: {0}")]
    Open(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("the peer holds the segment but has no upload room now")]
    Busy,
    /// A forwarded body's own download failed (cut-through): the push ends
    /// early, nobody's fault downstream.
    #[error("forwarding stopped: {0}")]
    Upstream(String),
}

impl ExchangeError {
    /// How the mesh core weighs it: misbehaviour (with what failed
    /// verification, if anything), or a failure that is nobody's fault.
    pub fn broken(&self) -> Broken {
        if matches!(self, Self::Busy) {
            return Broken::Busy;
        }
        if !self.is_misbehaviour() {
            return Broken::Failed(self.to_string());
        }
        let failure = match self {
            Self::Body(_) | Self::Tree(_) => Some(Failure::Body),
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
    /// over the limits. Timeouts, slowness and streams that end early (inside
    /// a body too: a cancelled or restarted sender) are not misbehaviour.
    pub fn is_misbehaviour(&self) -> bool {
        match self {
            Self::Frame(FrameError::Truncated { .. }) => false,
            Self::Frame(_)
            | Self::Body(_)
            | Self::Tree(_)
            | Self::Verify(_)
            | Self::Decode(_)
            | Self::Protocol(_) => true,
            Self::Io(_)
            | Self::Timeout(_)
            | Self::TooSlow { .. }
            | Self::Closed
            | Self::Open(_)
            | Self::Busy
            | Self::Upstream(_) => false,
        }
    }
}

/// A stream with a frame decoder and a read timeout. Generic so that the
/// browser gateway (WebTransport streams, through `tokio_util::compat`) reads
/// and writes frames with the same code as the mesh.
pub struct Framed<S = Stream> {
    stream: S,
    decoder: Decoder,
    buf: Box<[u8]>,
    pace: Pace,
    /// Test-only: bodies are written at most this fast (bytes per second).
    throttle: Option<u64>,
    /// Test-only: a byte in the middle of every body of more than one group
    /// sent is flipped, the hashes left as they were (a forger mid-segment).
    corrupt: bool,
    /// The node's upload cap, shared by all its uploads.
    uplink: Uplink,
}

impl<S> Framed<S> {
    /// `read_timeout`: see [`Pace::frame`]; bodies move at
    /// [`Pace::DEFAULT_MIN_RATE`] at least (see [`Framed::with_pace`]).
    pub fn new(stream: S, limits: Limits, read_timeout: Duration) -> Self {
        Self {
            stream,
            decoder: Decoder::new(limits),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            pace: Pace::new(read_timeout),
            throttle: None,
            corrupt: false,
            uplink: Uplink::default(),
        }
    }

    /// Writes bodies at most `rate` bytes per second: a slow uplink, for
    /// tests ([`crate::Faults::upload_rate`]).
    #[doc(hidden)]
    pub fn with_throttle(mut self, rate: Option<u64>) -> Self {
        self.throttle = rate.filter(|r| *r > 0);
        self
    }

    /// Flips a byte in the middle of every body written, for tests
    /// ([`crate::Faults::corrupt_bodies`]).
    #[doc(hidden)]
    pub fn with_corruption(mut self, corrupt: bool) -> Self {
        self.corrupt = corrupt;
        self
    }

    /// Bodies written through this stream keep to `uplink`'s cap.
    pub fn with_uplink(mut self, uplink: Uplink) -> Self {
        self.uplink = uplink;
        self
    }

    pub fn with_pace(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
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
    /// The next frame or body chunk. Silence longer than [`Pace::frame`] is a
    /// [`ExchangeError::Timeout`]; with `frame_deadline`, a frame whose first
    /// byte has arrived must also be complete within [`Pace::frame`] of it
    /// (else [`ExchangeError::TooSlow`]): a byte now and then does not keep
    /// a stream, and the task serving it, alive.
    async fn next_item(&mut self, frame_deadline: bool) -> Result<Item, ExchangeError> {
        let silence = self.pace.frame;
        let mut started =
            (frame_deadline && self.decoder.buffered() > 0).then(tokio::time::Instant::now);
        loop {
            if let Some(item) = self.decoder.next_item()? {
                return Ok(item);
            }
            let wait = match started {
                Some(at) => (at + silence).saturating_duration_since(tokio::time::Instant::now()),
                None => silence,
            };
            let read = tokio::time::timeout(wait, self.stream.read(&mut self.buf))
                .await
                .map_err(|_| match started {
                    Some(_) => ExchangeError::TooSlow {
                        what: "a control frame",
                        limit: silence,
                    },
                    None => ExchangeError::Timeout(silence),
                })??;
            if read == 0 {
                self.decoder.finish()?;
                return Err(ExchangeError::Closed);
            }
            self.decoder.feed(&self.buf[..read]);
            if frame_deadline && started.is_none() {
                started = Some(tokio::time::Instant::now());
            }
        }
    }

    /// Reads one control frame as message `M`; `Ok(None)` at a clean end of
    /// stream. Once its first byte is in, the whole frame must arrive within
    /// [`Pace::frame`].
    pub async fn read_frame<M: prost::Message + Default>(
        &mut self,
    ) -> Result<Option<M>, ExchangeError> {
        match self.next_item(true).await {
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

    /// Reads and verifies the body announced by `header`, within
    /// [`Pace::body`] of its length.
    pub async fn read_body(&mut self, header: &VerifiedHeader) -> Result<Bytes, ExchangeError> {
        self.read_body_feeding(header, None).await
    }

    /// [`Framed::read_body`], writing each verified piece of the encoding to
    /// `feed` as it arrives (cut-through), and completing it at the end.
    pub async fn read_body_feeding(
        &mut self,
        header: &VerifiedHeader,
        feed: Option<Feed>,
    ) -> Result<Bytes, ExchangeError> {
        let limit = self.pace.body(header.info().length);
        within(
            limit,
            "a segment body",
            self.read_body_unpaced(header, feed),
        )
        .await?
    }

    async fn read_body_unpaced(
        &mut self,
        header: &VerifiedHeader,
        mut feed: Option<Feed>,
    ) -> Result<Bytes, ExchangeError> {
        let max = self.decoder.limits().max_segment;
        let length = header.info().length;
        if length > max {
            return Err(BodyError::TooLarge {
                declared: length,
                max,
            }
            .into());
        }
        let mut verifier = tree::Decoder::new(header.info().hash, length);
        self.decoder.expect_body(tree::encoded_len(length))?;
        // Grown as bytes arrive (a few copies as it doubles), never reserved
        // from the signed length: a peer that accepts or announces a 16 MiB
        // body and sends 1 byte holds 64 KiB of ours, not 16 MiB. Doubling
        // stops at the signed length, so a whole body, kept in the store,
        // takes exactly its length (plain doubling left up to twice that).
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        let mut body = Vec::with_capacity(length.min(BODY_START));
        let mut verified = Vec::new();
        loop {
            match self.next_item(false).await? {
                Item::Body { chunk, last } => {
                    let forwarding = feed.is_some();
                    verifier.push(&chunk, |item| {
                        if forwarding {
                            verified.extend_from_slice(item.wire());
                        }
                        if let tree::Item::Group { data, .. } = item {
                            let needed = body.len() + data.len();
                            if needed > body.capacity() {
                                let grown = (body.capacity() * 2).max(needed).min(length);
                                body.reserve_exact(grown.saturating_sub(body.len()));
                            }
                            body.extend_from_slice(data);
                        }
                    })?;
                    if let Some(feed) = feed.as_mut()
                        && !verified.is_empty()
                    {
                        feed.append(Bytes::from(std::mem::take(&mut verified)));
                    }
                    if last {
                        // The frame decoder gave exactly the encoded length.
                        if !verifier.is_complete() {
                            return Err(ExchangeError::Protocol("a body's encoding ended early"));
                        }
                        if let Some(feed) = feed {
                            feed.complete();
                        }
                        return Ok(Bytes::from(body));
                    }
                }
                Item::Frame(_) => return Err(ExchangeError::Protocol("frame inside a body")),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Framed<S> {
    /// Writes one control frame, within [`Pace::frame`]: a peer that stops
    /// reading does not hold the task.
    pub async fn send_frame<M: prost::Message>(&mut self, msg: &M) -> Result<(), ExchangeError> {
        let bytes = frame::encode(msg, self.decoder.limits())?;
        let limit = self.pace.frame;
        within(
            limit,
            "writing a control frame",
            self.stream.write_all(&bytes),
        )
        .await??;
        Ok(())
    }

    pub async fn send(&mut self, body: Body) -> Result<(), ExchangeError> {
        self.send_frame(&pb::MeshMessage { body: Some(body) }).await
    }

    /// Writes a body, encoded as its tree, within [`Pace::body`] of its
    /// length.
    pub async fn send_body(&mut self, body: &[u8]) -> Result<(), ExchangeError> {
        let outboard = Outboard::new(body);
        let wire;
        // Bodies of one group pass untouched: the forger forges mid-body.
        let pieces: Vec<&[u8]> = if self.corrupt && body.len() as u64 > tree::GROUP_BYTES {
            wire = tree::forge_middle(&outboard, body)?;
            vec![&wire[..]]
        } else {
            outboard.pieces(body)?.map(tree::Item::wire).collect()
        };
        let limit = self.pace.body(tree::encoded_len(body.len() as u64));
        within(
            limit,
            "writing a segment body",
            self.write_throttled(&pieces),
        )
        .await??;
        Ok(())
    }

    /// Forwards a body still arriving (cut-through): each verified piece of
    /// its encoding as the download brings it, within [`Pace::body`] of its
    /// length. Should the download fail, our side is closed at once (the
    /// receiver sees a body end early, which it never holds against us) and
    /// [`ExchangeError::Upstream`] returned.
    pub async fn send_arriving(&mut self, arrival: &Arc<Arrival>) -> Result<(), ExchangeError> {
        let limit = self.pace.body(arrival.encoded_len());
        let mut reader = arrival.reader();
        let sent = within(limit, "forwarding a segment body", async {
            while let Some(pieces) = reader.next().await.map_err(ExchangeError::Upstream)? {
                let pieces: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
                self.write_throttled(&pieces).await?;
            }
            Ok::<_, ExchangeError>(())
        })
        .await
        .and_then(|r| r);
        if let Err(ExchangeError::Upstream(_)) = &sent {
            let _ = within(self.pace.frame, "closing the stream", self.stream.close()).await;
        }
        sent
    }

    /// Writes bytes as they are (an encoding made elsewhere), for tests.
    #[doc(hidden)]
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ExchangeError> {
        let limit = self.pace.frame;
        within(limit, "writing raw bytes", self.stream.write_all(bytes)).await??;
        Ok(())
    }

    async fn write_throttled(&mut self, pieces: &[&[u8]]) -> std::io::Result<()> {
        if self.throttle.is_none() && self.uplink.rate().is_none() {
            for piece in pieces {
                self.stream.write_all(piece).await?;
            }
            return Ok(());
        }
        const SLICE: usize = 16 * 1024;
        let mut turn = self.uplink.turn().await;
        for slice in pieces.iter().flat_map(|p| p.chunks(SLICE)) {
            turn.take(slice.len()).await;
            self.stream.write_all(slice).await?;
            self.stream.flush().await?;
            if let Some(rate) = self.throttle {
                tokio::time::sleep(Duration::from_secs_f64(slice.len() as f64 / rate as f64)).await;
            }
        }
        Ok(())
    }

    /// Flushes and half-closes our side, within [`Pace::frame`].
    pub async fn finish(mut self) -> Result<(), ExchangeError> {
        let limit = self.pace.frame;
        within(limit, "closing the stream", self.stream.close()).await??;
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// Half-closes our side after a body of `len` bytes, then waits until
    /// the peer has read it all and closed its side (within [`Pace::body`]
    /// of `len`). A write returns once QUIC has *buffered* the bytes, so
    /// without this wait an upload ends, and the next one starts, while its
    /// whole body still sits in QUIC's send buffer: on a thin uplink every
    /// upload at once would. The peer sends nothing more on this stream.
    pub async fn finish_read(mut self, len: u64) -> Result<(), ExchangeError> {
        let limit = self.pace.frame;
        within(limit, "closing the stream", self.stream.close()).await??;
        let limit = self.pace.body(len);
        let mut byte = [0u8; 1];
        let read = within(
            limit,
            "the peer reading a body",
            self.stream.read(&mut byte),
        )
        .await?;
        match read {
            Ok(0) => Ok(()),
            Ok(_) => Err(ExchangeError::Protocol("data after a body")),
            // Closed abruptly: whether the body arrived is unknown.
            Err(_) => Err(ExchangeError::Closed),
        }
    }
}

/// Runs `work` for at most `limit`; [`ExchangeError::TooSlow`] after.
async fn within<T>(
    limit: Duration,
    what: &'static str,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ExchangeError> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| ExchangeError::TooSlow { what, limit })
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
/// With an `announcer`, the body is offered for forwarding as it arrives
/// (see [`crate::arrival`]).
pub async fn pull(
    mut framed: Framed,
    id: SegmentId,
    key: &StreamKey,
    announcer: Option<Announcer>,
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
            let feed = announcer.map(|a| Feed::new(header.clone(), a));
            let body = framed.read_body_feeding(&header, feed).await?;
            Ok(Some((header, body)))
        }
        Body::Absent(absent) if absent.busy => Err(ExchangeError::Busy),
        Body::Absent(_) => Ok(None),
        _ => Err(ExchangeError::Protocol("unexpected answer to Want")),
    }
}

/// A body to push: held whole, or still arriving (cut-through).
#[derive(Debug, Clone)]
pub enum Outgoing {
    Held(Bytes),
    Arriving(Arc<Arrival>),
}

impl Outgoing {
    /// The body's length (not its encoding's).
    pub fn len(&self) -> u64 {
        match self {
            Self::Held(body) => body.len() as u64,
            Self::Arriving(arrival) => arrival.header().info().length,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Offers a segment over a fresh stream and sends the body if accepted.
pub async fn push(
    framed: Framed,
    header: &SignedHeader,
    body: &Outgoing,
) -> Result<Pushed, ExchangeError> {
    match offer(framed, header).await? {
        Offered::Accepted(framed) => send_pushed(*framed, body).await,
        Offered::Declined(reason) => Ok(Pushed::Declined(reason)),
    }
}

/// A peer's answer to a push offer.
pub enum Offered {
    /// It wants the body: send it on this stream ([`send_pushed`]).
    /// Boxed: a stream is far larger than a reason.
    Accepted(Box<Framed>),
    Declined(pb::DeclineReason),
}

/// The first half of [`push`]: offers the segment and reads the answer.
/// A node takes room for the body only once the peer accepts, so offers
/// waiting on a silent peer hold none.
pub async fn offer(mut framed: Framed, header: &SignedHeader) -> Result<Offered, ExchangeError> {
    framed
        .send(Body::PushOffer(pb::PushOffer {
            header: Some(header.to_pb()),
        }))
        .await?;
    match framed.read_message().await? {
        Body::PushAccept(_) => Ok(Offered::Accepted(Box::new(framed))),
        Body::PushDecline(d) => Ok(Offered::Declined(
            pb::DeclineReason::try_from(d.reason).unwrap_or(pb::DeclineReason::Unspecified),
        )),
        _ => Err(ExchangeError::Protocol("unexpected answer to PushOffer")),
    }
}

/// The second half of [`push`]: sends the body of an accepted offer and
/// waits until the peer has read it.
pub async fn send_pushed(mut framed: Framed, body: &Outgoing) -> Result<Pushed, ExchangeError> {
    match body {
        Outgoing::Held(body) => framed.send_body(body).await?,
        Outgoing::Arriving(arrival) => framed.send_arriving(arrival).await?,
    }
    framed.finish_read(body.len()).await?;
    Ok(Pushed::Delivered)
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
            Broken::Failed(_) | Broken::Busy => None,
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
        // A sender that gave up mid-body (cancelled, restarted) is not dishonest.
        let cut = ExchangeError::Frame(FrameError::Truncated {
            inside: "a segment body",
            missing: 10,
        });
        assert!(matches!(cut.broken(), Broken::Failed(_)));
        let slow = ExchangeError::TooSlow {
            what: "a segment body",
            limit: Duration::from_secs(1),
        };
        assert!(matches!(slow.broken(), Broken::Failed(_)));
        let protocol = ExchangeError::Protocol("unexpected first message").broken();
        assert!(matches!(protocol, Broken::Misbehaved { failure: None, .. }));
    }
}
