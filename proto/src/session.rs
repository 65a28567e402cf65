//! The viewer side of the browser-session protocol, sans-I/O.
//!
//! A viewer opens a WebTransport session to a gateway, opens one
//! bidirectional *control* stream and sends `Hello`; the gateway answers
//! `Welcome` (the signed descriptor, other gateways, the live edge), then
//! `Announce` and `Error` frames. Every `Request` is answered on a fresh
//! unidirectional *delivery* stream: a `Delivery` frame, then the raw body.
//!
//! The browser client (`client-wasm`) and the native client (`meshcast-relay`)
//! are shells around this module: they move bytes between sockets and
//! [`ControlReader`] / [`DeliveryReader`], and build outgoing frames with
//! [`hello`], [`request`] and [`cancel`]. Every check a viewer makes — the
//! descriptor's signature and stream id, each header's signature, each body's
//! length and BLAKE3 hash — happens here, before a byte is handed out.

use bytes::{Bytes, BytesMut};

use crate::frame::{self, Decoder, FrameError, Item, Limits};
use crate::pb::{self, client_message, server_message};
use crate::tree;
use crate::{
    BodyError, PublicKey, SegmentId, SegmentKind, SignedDescriptor, SignedHeader, StreamId,
    StreamKey, VerifiedDescriptor, VerifiedHeader, VerifyError,
};

/// What a viewer accepts from a gateway: the protocol maxima.
pub const LIMITS: Limits = Limits {
    max_frame: Limits::DEFAULT_MAX_FRAME,
    max_segment: Limits::DEFAULT_MAX_SEGMENT,
};

/// Most gateways a Welcome may list that a viewer will use.
pub const MAX_GATEWAYS: usize = 8;

/// Why a session or a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the gateway refused: {code:?}: {message}")]
    Refused {
        code: pb::ErrorCode,
        message: String,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The gateway sent something its publisher did not sign: a lie, not an
    /// accident. Stop trusting that gateway.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The body does not match its signed header: also a lie.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A group of the body (or a hash above it) does not match the signed
    /// root: a lie too, caught where it is.
    #[error(transparent)]
    Tree(#[from] crate::tree::TreeError),
    /// A validly signed segment, but not the one asked for (another rendition
    /// with the same file name, an older sequence): a gateway answering a
    /// request with something else is lying too.
    #[error("asked for {asked:?}, the gateway delivered {delivered:?}")]
    WrongSegment {
        // Boxed: two ids would make every session result large.
        asked: Box<SegmentId>,
        delivered: Box<SegmentId>,
    },
}

impl SessionError {
    /// True when the gateway sent data that fails verification: the viewer
    /// should drop the gateway, not just retry the request.
    pub fn is_forgery(&self) -> bool {
        matches!(
            self,
            SessionError::Verify(_)
                | SessionError::Body(_)
                | SessionError::Tree(_)
                | SessionError::WrongSegment { .. }
        )
    }
}

/// The first frame on the control stream.
pub fn hello(stream: &StreamId, token: &str, client: &str) -> pb::ClientMessage {
    pb::ClientMessage {
        body: Some(client_message::Body::Hello(pb::Hello {
            stream_id: stream.as_bytes().to_vec().into(),
            token: token.to_string(),
            client: client.to_string(),
        })),
    }
}

/// Asks for segment `id`. `deadline_ms` is relative: the gateway answers
/// `DEADLINE` rather than deliver later than that after receipt.
pub fn request(
    request_id: u64,
    id: SegmentId,
    priority: u32,
    deadline_ms: u32,
) -> pb::ClientMessage {
    pb::ClientMessage {
        body: Some(client_message::Body::Request(pb::Request {
            request_id,
            id: Some(id.to_pb()),
            priority,
            deadline_ms,
        })),
    }
}

pub fn cancel(request_id: u64) -> pb::ClientMessage {
    pb::ClientMessage {
        body: Some(client_message::Body::Cancel(pb::CancelRequest {
            request_id,
        })),
    }
}

/// Asks the gateway for the headers it holds of `renditions` (all when
/// empty): see [`catalogue`].
pub fn header_query(renditions: Vec<u32>) -> pb::ClientMessage {
    pb::ClientMessage {
        body: Some(client_message::Body::HeaderQuery(pb::HeaderQuery {
            renditions,
        })),
    }
}

/// Encodes a client frame (length prefix + message).
pub fn encode(msg: &pb::ClientMessage) -> Result<Bytes, FrameError> {
    frame::encode(msg, &LIMITS)
}

/// Another gateway a Welcome (or a later gateway list) named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddr {
    /// `https://host:port/` WebTransport URL.
    pub url: String,
    /// SHA-256 digests of self-signed certificates to accept.
    pub cert_hashes: Vec<[u8; 32]>,
    /// The node whose signed record this is, and when it was issued; `None`
    /// for an operator's bare hint. A viewer keeps the newest record per node.
    pub record: Option<(PublicKey, u64)>,
}

impl GatewayAddr {
    /// Whether this entry should replace `old`: a newer record of the same
    /// node. A record never yields to a bare entry or an older record.
    pub fn replaces(&self, old: &GatewayAddr) -> bool {
        match (self.record, old.record) {
            (Some((node, issued)), Some((old_node, old_issued))) => {
                node == old_node && issued > old_issued
            }
            _ => false,
        }
    }

    /// Whether both name the same gateway: the same node, or (bare hints)
    /// the same URL.
    pub fn same_gateway(&self, other: &GatewayAddr) -> bool {
        match (self.record, other.record) {
            (Some((a, _)), Some((b, _))) => a == b,
            _ => self.url == other.url,
        }
    }
}

/// The usable entries of a gateway list: records that verify (signed by the
/// node they name, within the limits, not expired at `now_us`) and
/// well-formed bare hints. Anything else is skipped, not fatal: it only costs
/// the viewer a gateway. At most [`MAX_GATEWAYS`].
pub fn gateways(list: &[pb::Gateway], now_us: u64) -> Vec<GatewayAddr> {
    list.iter()
        .filter_map(|g| match &g.record {
            Some(signed) => {
                let record = crate::gateway::verify(signed, now_us).ok()?;
                Some(GatewayAddr {
                    url: record.url,
                    cert_hashes: record.cert_hashes,
                    record: Some((record.node, record.issued_at_us)),
                })
            }
            None => {
                let cert_hashes = g
                    .cert_hashes
                    .iter()
                    .map(|h| <[u8; 32]>::try_from(h.as_ref()).ok())
                    .collect::<Option<Vec<_>>>()?;
                (g.url.starts_with("https://") && g.url.len() <= 2048).then(|| GatewayAddr {
                    url: g.url.clone(),
                    cert_hashes,
                    record: None,
                })
            }
        })
        .take(MAX_GATEWAYS)
        .collect()
}

/// A verified Welcome.
#[derive(Debug, Clone)]
pub struct Welcomed {
    pub descriptor: VerifiedDescriptor,
    pub key: StreamKey,
    pub gateways: Vec<GatewayAddr>,
    pub live_edge: Vec<VerifiedHeader>,
    /// Each rendition's newest init segment and last [`WELCOME_RECENT`]
    /// media segments, for checking bytes fetched over HTTP.
    pub recent: Vec<VerifiedHeader>,
}

/// Media headers per rendition a Welcome's `recent` carries: a live player
/// starts a few segments behind the edge, and announcements cover what
/// follows. Eight of two renditions with their inits are about 4 KB of the
/// 64 KiB frame.
pub const WELCOME_RECENT: usize = 8;
/// Media headers a Welcome's `recent` carries in all: with many renditions
/// (alternate audio, subtitles) each gets fewer, at least one, so that
/// Welcome stays within a quarter of the frame limit.
pub const WELCOME_RECENT_TOTAL: usize = 64;

/// What a Welcome's `recent` carries of the headers a gateway holds: each
/// rendition's newest init segment and its newest media segments,
/// [`WELCOME_RECENT`] of them, fewer when there are many renditions
/// ([`WELCOME_RECENT_TOTAL`] in all, at least one each); no parts (many, and
/// their wholes are here).
pub fn recent(mut headers: Vec<SignedHeader>) -> Vec<SignedHeader> {
    headers.retain(|h| matches!(h.info.id.kind, SegmentKind::Media | SegmentKind::Init));
    // Newest first within each rendition and kind.
    headers.sort_by_key(|h| {
        let id = &h.info.id;
        (id.rendition, id.kind as i32, std::cmp::Reverse(id.sequence))
    });
    let renditions: std::collections::HashSet<u32> =
        headers.iter().map(|h| h.info.id.rendition).collect();
    let per_rendition = (WELCOME_RECENT_TOTAL / renditions.len().max(1)).clamp(1, WELCOME_RECENT);
    let mut taken: std::collections::HashMap<(u32, i32), usize> = Default::default();
    headers.retain(|h| {
        let id = &h.info.id;
        let keep = if id.kind == SegmentKind::Init {
            1
        } else {
            per_rendition
        };
        let n = taken.entry((id.rendition, id.kind as i32)).or_insert(0);
        *n += 1;
        *n <= keep
    });
    headers
}

/// Most headers one [`header_query`] is answered with: a two-hour VOD of
/// 2 s segments in one rendition, or 20 minutes of six; about 1 MB. The
/// browser keeps [`crate::known::KnownHeaders::DEFAULT_CAPACITY`].
pub const CATALOGUE_MAX: usize = 4096;
/// Headers per Announce frame of a catalogue: about 32 KB, half the frame
/// limit.
pub const CATALOGUE_FRAME: usize = 128;

/// The answer to a [`header_query`]: the headers of `renditions` (every
/// rendition when empty) among those the gateway holds, init segments and
/// whole media segments (no parts: a player that names segments by URL asks
/// for wholes), in playing order, at most [`CATALOGUE_MAX`] (the first ones
/// of each rendition: a VOD is watched from its start), cut into Announce
/// bodies of [`CATALOGUE_FRAME`].
pub fn catalogue(mut headers: Vec<SignedHeader>, renditions: &[u32]) -> Vec<pb::Announce> {
    headers.retain(|h| {
        let id = &h.info.id;
        matches!(id.kind, SegmentKind::Media | SegmentKind::Init)
            && (renditions.is_empty() || renditions.contains(&id.rendition))
    });
    headers.sort_by_key(|h| {
        let id = &h.info.id;
        (id.rendition, id.kind != SegmentKind::Init, id.sequence)
    });
    let count = headers.len();
    let renditions_held: std::collections::HashSet<u32> =
        headers.iter().map(|h| h.info.id.rendition).collect();
    if count > CATALOGUE_MAX {
        // An even share per rendition, each from its start.
        let share = (CATALOGUE_MAX / renditions_held.len().max(1)).max(1);
        let mut taken: std::collections::HashMap<u32, usize> = Default::default();
        headers.retain(|h| {
            let n = taken.entry(h.info.id.rendition).or_insert(0);
            *n += 1;
            *n <= share
        });
    }
    headers
        .chunks(CATALOGUE_FRAME)
        .map(|chunk| pb::Announce {
            headers: chunk.iter().map(SignedHeader::to_pb).collect(),
        })
        .collect()
}

/// Checks the gateway's first frame: a Welcome whose descriptor is signed by
/// the publisher of `stream` and whose live-edge headers verify. `now_us`
/// (the viewer's clock) decides which gateway records have expired.
pub fn welcome(
    msg: pb::ServerMessage,
    stream: &StreamId,
    now_us: u64,
) -> Result<Welcomed, SessionError> {
    let welcome = match msg.body {
        Some(server_message::Body::Welcome(w)) => w,
        Some(server_message::Body::Error(e)) => return Err(refused(&e)),
        _ => return Err(SessionError::Protocol("expected Welcome".into())),
    };
    let signed = welcome
        .descriptor
        .as_ref()
        .ok_or_else(|| SessionError::Protocol("Welcome without a descriptor".into()))?;
    let descriptor = SignedDescriptor::from_pb(signed)
        .map_err(VerifyError::from)?
        .verify_for(stream)?;
    let key = descriptor.stream_key();
    let live_edge = welcome
        .live_edge
        .iter()
        .map(|h| verify_header(h, &key))
        .collect::<Result<Vec<_>, _>>()?;
    let recent = welcome
        .recent
        .iter()
        .map(|h| verify_header(h, &key))
        .collect::<Result<Vec<_>, _>>()?;
    let gateways = gateways(&welcome.gateways, now_us);
    Ok(Welcomed {
        descriptor,
        key,
        gateways,
        live_edge,
        recent,
    })
}

fn verify_header(
    header: &pb::SegmentHeader,
    key: &StreamKey,
) -> Result<VerifiedHeader, VerifyError> {
    SignedHeader::from_pb(header)?.verify(key)
}

fn refused(e: &pb::Error) -> SessionError {
    SessionError::Refused {
        code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
        message: e.message.clone(),
    }
}

/// What the control stream says after Welcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// New segments at the live edge, headers verified.
    Announced(Vec<VerifiedHeader>),
    /// The gateways to use now (verified; see [`gateways`]).
    Gateways(Vec<GatewayAddr>),
    /// A request (or, with `request_id` 0, the session) failed.
    Error {
        code: pb::ErrorCode,
        message: String,
        request_id: u64,
    },
}

/// Interprets a control frame after Welcome. An announced header that fails
/// verification is an error: the gateway forwards only what it verified.
pub fn server_event(
    msg: pb::ServerMessage,
    key: &StreamKey,
    now_us: u64,
) -> Result<Option<ServerEvent>, SessionError> {
    Ok(match msg.body {
        Some(server_message::Body::Announce(a)) => Some(ServerEvent::Announced(
            a.headers
                .iter()
                .map(|h| verify_header(h, key))
                .collect::<Result<_, _>>()?,
        )),
        Some(server_message::Body::Error(e)) => Some(ServerEvent::Error {
            code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
            message: e.message,
            request_id: e.request_id,
        }),
        Some(server_message::Body::Gateways(list)) => {
            Some(ServerEvent::Gateways(gateways(&list.gateways, now_us)))
        }
        Some(server_message::Body::Welcome(_)) => {
            return Err(SessionError::Protocol("a second Welcome".into()));
        }
        None => None,
    })
}

/// Cuts the control stream into server messages.
#[derive(Debug)]
pub struct ControlReader {
    decoder: Decoder,
}

impl Default for ControlReader {
    fn default() -> Self {
        Self {
            decoder: Decoder::new(LIMITS),
        }
    }
}

impl ControlReader {
    /// Feeds bytes read from the control stream; drain [`next_message`](Self::next_message)
    /// after each call.
    pub fn feed(&mut self, data: &[u8]) {
        self.decoder.feed(data);
    }

    /// The next complete message, `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<pb::ServerMessage>, SessionError> {
        match self.decoder.next_item()? {
            Some(Item::Frame(bytes)) => Ok(Some(frame::decode(bytes)?)),
            Some(Item::Body { .. }) => Err(SessionError::Protocol(
                "a body on the control stream".into(),
            )),
            None => Ok(None),
        }
    }

    /// Call when the stream ended: fails if it ended inside a frame.
    pub fn finish(&self) -> Result<(), SessionError> {
        Ok(self.decoder.finish()?)
    }
}

/// A delivery that arrived complete and verified.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub request_id: u64,
    pub header: VerifiedHeader,
    pub body: Bytes,
}

impl Delivered {
    /// Checks that this delivery is the segment `asked` for. Call it before
    /// handing the body out: a signature proves who made a segment, not that
    /// it answers this request.
    pub fn answers(&self, asked: &SegmentId) -> Result<(), SessionError> {
        let delivered = self.header.id();
        if delivered == *asked {
            Ok(())
        } else {
            Err(SessionError::WrongSegment {
                asked: Box::new(*asked),
                delivered: Box::new(delivered),
            })
        }
    }
}

/// Why a delivery stream failed, and for which request when that is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delivery of request {request_id:?}: {error}")]
pub struct DeliveryError {
    pub request_id: Option<u64>,
    pub error: SessionError,
}

#[derive(Debug)]
enum DeliveryState {
    Header,
    Body {
        request_id: u64,
        header: VerifiedHeader,
        verifier: Box<tree::Decoder>,
        body: BytesMut,
    },
    Done(Delivered),
    /// Spent; the request id is kept to blame the failure on it.
    Failed(Option<u64>),
}

/// Reads one delivery stream: a `Delivery` frame, then exactly the body its
/// signed header declares, encoded as its tree ([`crate::tree`]) and
/// verified group by group as it arrives: a forged group fails the stream
/// where it is.
///
/// Feed it every chunk the stream yields, then call [`finish`](Self::finish)
/// at the end of the stream. Memory is bounded by the verified header's
/// length, itself bounded by [`LIMITS`].
#[derive(Debug)]
pub struct DeliveryReader {
    key: StreamKey,
    decoder: Decoder,
    state: DeliveryState,
}

impl DeliveryReader {
    pub fn new(key: StreamKey) -> Self {
        Self {
            key,
            decoder: Decoder::new(LIMITS),
            state: DeliveryState::Header,
        }
    }

    /// The request this stream answers, once its first frame has arrived.
    pub fn request_id(&self) -> Option<u64> {
        match &self.state {
            DeliveryState::Body { request_id, .. } => Some(*request_id),
            DeliveryState::Done(d) => Some(d.request_id),
            DeliveryState::Failed(id) => *id,
            DeliveryState::Header => None,
        }
    }

    /// Body bytes received so far (for progress and throughput).
    pub fn received(&self) -> usize {
        match &self.state {
            DeliveryState::Body { body, .. } => body.len(),
            DeliveryState::Done(d) => d.body.len(),
            _ => 0,
        }
    }

    /// True once the whole body has arrived and verified.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, DeliveryState::Done(_))
    }

    /// Consumes bytes from the stream. After an error the reader is spent:
    /// stop reading the stream.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), DeliveryError> {
        if let DeliveryState::Failed(request_id) = self.state {
            return Err(DeliveryError {
                request_id,
                error: SessionError::Protocol("delivery stream read after an error".into()),
            });
        }
        self.decoder.feed(data);
        self.drain().map_err(|error| {
            let request_id = self.request_id();
            self.state = DeliveryState::Failed(request_id);
            DeliveryError { request_id, error }
        })
    }

    fn drain(&mut self) -> Result<(), SessionError> {
        while let Some(item) = self.decoder.next_item()? {
            // Failed until proven otherwise, keeping the request id to blame.
            let state = std::mem::replace(&mut self.state, DeliveryState::Failed(None));
            self.state = match (state, item) {
                (DeliveryState::Header, Item::Frame(bytes)) => {
                    let delivery: pb::Delivery = frame::decode(bytes)?;
                    let request_id = delivery.request_id;
                    self.state = DeliveryState::Failed(Some(request_id));
                    let header = delivery.header.as_ref().ok_or_else(|| {
                        SessionError::Protocol("Delivery without a header".into())
                    })?;
                    let header = verify_header(header, &self.key)?;
                    // Refuses a length over the limit before anything is sized from it.
                    header.body_verifier(LIMITS.max_segment)?;
                    let length = header.info().length;
                    let mut verifier = Box::new(tree::Decoder::new(header.info().hash, length));
                    if length == 0 {
                        verifier.push(&[], |_| {})?;
                        DeliveryState::Done(Delivered {
                            request_id,
                            header,
                            body: Bytes::new(),
                        })
                    } else {
                        self.decoder.expect_body(tree::encoded_len(length))?;
                        DeliveryState::Body {
                            request_id,
                            header,
                            verifier,
                            // Bounded by LIMITS.max_segment, checked by body_verifier.
                            body: BytesMut::with_capacity(length as usize),
                        }
                    }
                }
                (
                    DeliveryState::Body {
                        request_id,
                        header,
                        mut verifier,
                        mut body,
                    },
                    Item::Body { chunk, last },
                ) => {
                    self.state = DeliveryState::Failed(Some(request_id));
                    verifier.push(&chunk, |item| {
                        if let tree::Item::Group { data, .. } = item {
                            body.extend_from_slice(data);
                        }
                    })?;
                    if last {
                        if !verifier.is_complete() {
                            return Err(SessionError::Protocol(
                                "a body's encoding ended early".into(),
                            ));
                        }
                        DeliveryState::Done(Delivered {
                            request_id,
                            header,
                            body: body.freeze(),
                        })
                    } else {
                        DeliveryState::Body {
                            request_id,
                            header,
                            verifier,
                            body,
                        }
                    }
                }
                (DeliveryState::Done(d), _) => {
                    self.state = DeliveryState::Failed(Some(d.request_id));
                    return Err(SessionError::Protocol(
                        "bytes after the end of the delivery".into(),
                    ));
                }
                (state, _) => {
                    self.state = state;
                    return Err(SessionError::Protocol(
                        "unexpected item on a delivery stream".into(),
                    ));
                }
            };
        }
        Ok(())
    }

    /// Call when the stream has ended: the verified segment, or why not.
    pub fn finish(self) -> Result<Delivered, DeliveryError> {
        let request_id = self.request_id();
        match self.state {
            DeliveryState::Done(d) => Ok(d),
            _ => Err(DeliveryError {
                request_id,
                error: match self.decoder.finish() {
                    Err(e) => e.into(),
                    Ok(()) => SessionError::Protocol("empty delivery stream".into()),
                },
            }),
        }
    }
}
