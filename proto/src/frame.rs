//! Length-delimited control frames and raw segment bodies on one byte stream.
//!
//! A frame is an unsigned LEB128 length followed by that many bytes (a
//! protobuf message — prost's `encode_length_delimited` format). A segment body
//! is not framed: after decoding a header that announces a body, the caller
//! calls [`Decoder::expect_body`] and the decoder hands out the next `length`
//! bytes as [`Item::Body`] chunks, which go straight into a
//! [`BodyVerifier`](crate::BodyVerifier).
//!
//! The decoder is sans-I/O: [`feed`](Decoder::feed) it what a socket read
//! returned, then drain [`next_item`](Decoder::next_item) until it returns
//! `None`. Its memory is bounded by what it is fed: a claimed length is checked
//! against [`Limits`] as soon as the length prefix is complete, and no buffer is
//! ever sized from a claim. A shell that reads into a fixed buffer and drains
//! after every read therefore holds at most one frame plus one read.

use bytes::{Buf, Bytes, BytesMut};

/// Size limits for one byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest control frame accepted or sent, in bytes (prefix excluded).
    pub max_frame: usize,
    /// Largest segment body accepted, in bytes.
    pub max_segment: u64,
}

impl Limits {
    pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;
    pub const DEFAULT_MAX_SEGMENT: u64 = 16 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: Self::DEFAULT_MAX_FRAME,
            max_segment: Self::DEFAULT_MAX_SEGMENT,
        }
    }
}

/// Longest LEB128 encoding of a u64.
const MAX_PREFIX: usize = 10;

/// Why a byte stream was rejected. After any error the stream is unusable:
/// close it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("control frame of {claimed} bytes is over the limit of {max}")]
    FrameTooLarge { claimed: u64, max: usize },
    #[error("segment body of {claimed} bytes is over the limit of {max}")]
    BodyTooLarge { claimed: u64, max: u64 },
    #[error("frame length prefix is not a valid LEB128 integer")]
    BadLength,
    #[error("stream ended inside {inside} ({missing} more bytes were expected)")]
    Truncated { inside: &'static str, missing: u64 },
    #[error("a segment body was announced while another was still being received")]
    BodyPending,
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// One unit cut from the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A complete control frame, prefix removed.
    Frame(Bytes),
    /// Part of a segment body; `last` marks its final chunk.
    Body { chunk: Bytes, last: bool },
}

/// Cuts a byte stream into [`Item`]s. See the module docs.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    buf: BytesMut,
    /// Bytes of body still to hand out, when a body is expected.
    body: Option<u64>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buf: BytesMut::new(),
            body: None,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Appends bytes read from the stream. Drain [`next_item`](Self::next_item)
    /// before feeding more, to keep the buffer bounded.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes fed but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Announces that the next `length` bytes are a segment body. Call it right
    /// after decoding the frame whose header declares the body.
    pub fn expect_body(&mut self, length: u64) -> Result<(), FrameError> {
        if self.body.is_some() {
            return Err(FrameError::BodyPending);
        }
        if length > self.limits.max_segment {
            return Err(FrameError::BodyTooLarge {
                claimed: length,
                max: self.limits.max_segment,
            });
        }
        self.body = Some(length);
        Ok(())
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<Item>, FrameError> {
        if let Some(remaining) = self.body {
            return Ok(self.next_body_chunk(remaining));
        }
        let Some((claimed, prefix)) = read_length(&self.buf)? else {
            return Ok(None);
        };
        if claimed > self.limits.max_frame as u64 {
            return Err(FrameError::FrameTooLarge {
                claimed,
                max: self.limits.max_frame,
            });
        }
        // Within the limit, so the cast cannot truncate.
        let len = claimed as usize;
        if self.buf.len() < prefix + len {
            return Ok(None);
        }
        self.buf.advance(prefix);
        Ok(Some(Item::Frame(self.buf.split_to(len).freeze())))
    }

    fn next_body_chunk(&mut self, remaining: u64) -> Option<Item> {
        if self.buf.is_empty() && remaining > 0 {
            return None;
        }
        let take = remaining.min(self.buf.len() as u64) as usize;
        let left = remaining - take as u64;
        self.body = (left > 0).then_some(left);
        Some(Item::Body {
            chunk: self.buf.split_to(take).freeze(),
            last: left == 0,
        })
    }

    /// Call when the stream has ended: fails if it ended inside a frame or body.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(missing) = self.body {
            return Err(FrameError::Truncated {
                inside: "segment body",
                missing,
            });
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let missing = match read_length(&self.buf) {
            Ok(Some((claimed, prefix))) => {
                (prefix as u64 + claimed).saturating_sub(self.buf.len() as u64)
            }
            _ => 1,
        };
        Err(FrameError::Truncated {
            inside: "control frame",
            missing,
        })
    }
}

/// Parses a LEB128 length prefix: `Some((value, prefix_len))` when complete.
fn read_length(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_PREFIX).enumerate() {
        let bits = u64::from(byte & 0x7f);
        if i == MAX_PREFIX - 1 && bits > 1 {
            return Err(FrameError::BadLength);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_PREFIX {
        return Err(FrameError::BadLength);
    }
    Ok(None)
}

/// Encodes `msg` as one frame (length prefix + bytes), refusing messages over
/// `limits.max_frame` so that a sender never emits what a peer must reject.
pub fn encode<M: prost::Message>(msg: &M, limits: &Limits) -> Result<Bytes, FrameError> {
    let len = msg.encoded_len();
    if len > limits.max_frame {
        return Err(FrameError::FrameTooLarge {
            claimed: len as u64,
            max: limits.max_frame,
        });
    }
    let mut buf = BytesMut::with_capacity(len + MAX_PREFIX);
    msg.encode_length_delimited(&mut buf)
        .map_err(|e| FrameError::Malformed {
            what: "outgoing frame",
            reason: e.to_string(),
        })?;
    Ok(buf.freeze())
}

/// Decodes a frame's payload as message `M`.
pub fn decode<M: prost::Message + Default>(frame: Bytes) -> Result<M, FrameError> {
    M::decode(frame).map_err(|e| FrameError::Malformed {
        what: std::any::type_name::<M>()
            .rsplit("::")
            .next()
            .unwrap_or("message"),
        reason: e.to_string(),
    })
}
