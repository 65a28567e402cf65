//! The viewer protocol over one WebSocket, for browsers that cannot open
//! WebTransport (a network that blocks UDP, a browser without it).
//!
//! A WebTransport session carries a bidirectional control stream and one
//! unidirectional stream per delivery. Over a WebSocket the same bytes
//! travel in binary messages, each tagged with the stream it belongs to:
//!
//! | message | meaning |
//! |---|---|
//! | `0x00` ‖ bytes | control stream bytes (either direction) |
//! | `0x01` ‖ varint id ‖ bytes | bytes of delivery stream `id` (gateway to viewer; the first opens it) |
//! | `0x02` ‖ varint id | delivery stream `id` ends (as a QUIC FIN) |
//! | `0x03` ‖ varint id | delivery stream `id` is abandoned (as a QUIC reset): drop what came |
//!
//! Stream ids start at 1 and grow. A viewer sends control bytes only. The
//! frames inside are the WebTransport session's, unchanged, so the session
//! code and its limits apply as they are. A gateway cuts delivery bytes into
//! messages of at most [`MAX_CHUNK`], so that deliveries interleave and an
//! Announce is never stuck behind a whole segment.

use bytes::{Buf, BufMut};

pub const CONTROL: u8 = 0x00;
pub const DATA: u8 = 0x01;
pub const FIN: u8 = 0x02;
pub const RESET: u8 = 0x03;

/// Most delivery bytes per message.
pub const MAX_CHUNK: usize = 16 * 1024;

/// One WebSocket message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Control(&'a [u8]),
    Data { stream: u64, bytes: &'a [u8] },
    Fin { stream: u64 },
    Reset { stream: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    #[error("an empty WebSocket message")]
    Empty,
    #[error("unknown message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("a message without its stream id")]
    NoStreamId,
    #[error("stream id 0 (ids start at 1)")]
    ZeroStream,
    #[error("{0} bytes after a stream's end or reset")]
    Trailing(usize),
}

/// Reads one message.
pub fn decode(message: &[u8]) -> Result<Message<'_>, MuxError> {
    let (&tag, mut rest) = message.split_first().ok_or(MuxError::Empty)?;
    if tag == CONTROL {
        return Ok(Message::Control(rest));
    }
    if !matches!(tag, DATA | FIN | RESET) {
        return Err(MuxError::UnknownTag(tag));
    }
    let stream = prost::encoding::decode_varint(&mut rest).map_err(|_| MuxError::NoStreamId)?;
    if stream == 0 {
        return Err(MuxError::ZeroStream);
    }
    match tag {
        DATA => Ok(Message::Data {
            stream,
            bytes: rest,
        }),
        _ if rest.has_remaining() => Err(MuxError::Trailing(rest.remaining())),
        FIN => Ok(Message::Fin { stream }),
        _ => Ok(Message::Reset { stream }),
    }
}

/// A control message carrying `bytes`.
pub fn control(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(CONTROL);
    out.extend_from_slice(bytes);
    out
}

/// A data message of stream `stream` (at most [`MAX_CHUNK`] bytes: the
/// caller cuts).
pub fn data(stream: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(11 + bytes.len());
    out.put_u8(DATA);
    prost::encoding::encode_varint(stream, &mut out);
    out.extend_from_slice(bytes);
    out
}

pub fn fin(stream: u64) -> Vec<u8> {
    tagged(FIN, stream)
}

pub fn reset(stream: u64) -> Vec<u8> {
    tagged(RESET, stream)
}

fn tagged(tag: u8, stream: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(11);
    out.put_u8(tag);
    prost::encoding::encode_varint(stream, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        assert_eq!(decode(&control(b"hello")), Ok(Message::Control(b"hello")));
        assert_eq!(decode(&control(b"")), Ok(Message::Control(b"")));
        let big = 300u64;
        assert_eq!(
            decode(&data(big, b"body")),
            Ok(Message::Data {
                stream: big,
                bytes: b"body"
            })
        );
        assert_eq!(decode(&fin(7)), Ok(Message::Fin { stream: 7 }));
        assert_eq!(
            decode(&reset(u64::MAX)),
            Ok(Message::Reset { stream: u64::MAX })
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(decode(b""), Err(MuxError::Empty));
        assert_eq!(decode(&[0x09, 1]), Err(MuxError::UnknownTag(9)));
        assert_eq!(decode(&[DATA]), Err(MuxError::NoStreamId));
        assert_eq!(decode(&[DATA, 0x80]), Err(MuxError::NoStreamId));
        assert_eq!(decode(&[FIN, 0]), Err(MuxError::ZeroStream));
        assert_eq!(decode(&[FIN, 1, 2]), Err(MuxError::Trailing(1)));
    }
}
