//! Names of streams and segments.

use std::fmt;
use std::str::FromStr;

use crate::{DecodeError, PublicKey, SegmentKind, fixed, pb};

/// Identifies a stream: BLAKE3 in key-derivation mode over the publisher's
/// public key and the stream name. Two publishers cannot collide on a name,
/// and the id alone commits to the key that must sign the stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId([u8; 32]);

const STREAM_ID_CONTEXT: &str = "meshcast v1 stream id";

impl StreamId {
    pub fn derive(publisher: &PublicKey, name: &str) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(STREAM_ID_CONTEXT);
        hasher.update(publisher.as_bytes());
        hasher.update(&(name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        Self(*hasher.finalize().as_bytes())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        fixed("stream_id", bytes).map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight bytes are plenty to tell streams apart in logs.
        write!(f, "StreamId({}…)", &hex::encode(&self.0[..8]))
    }
}

/// Why a stream id in text form was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream id must be 64 hex digits (32 bytes)")]
pub struct StreamIdParseError;

impl FromStr for StreamId {
    type Err = StreamIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| StreamIdParseError)?;
        Ok(Self(bytes))
    }
}

/// Most parts a media segment may be made of: 64 parts of 0.1 s make a
/// 6.4 s segment, longer than low-latency HLS uses.
pub const MAX_PARTS: u32 = 64;

/// Names one segment: stream, rendition, kind and sequence number, and for a
/// part ([`SegmentKind::Part`]) its index within media segment `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    pub stream: StreamId,
    pub rendition: u32,
    pub kind: SegmentKind,
    pub sequence: u64,
    /// Index of a part within its media segment; 0 for other kinds.
    pub part: u32,
}

impl SegmentId {
    pub fn media(stream: StreamId, rendition: u32, sequence: u64) -> Self {
        Self {
            stream,
            rendition,
            kind: SegmentKind::Media,
            sequence,
            part: 0,
        }
    }

    /// Part `part` of media segment `sequence`.
    pub fn part(stream: StreamId, rendition: u32, sequence: u64, part: u32) -> Self {
        Self {
            stream,
            rendition,
            kind: SegmentKind::Part,
            sequence,
            part,
        }
    }

    /// The init segment numbered `sequence` of a rendition.
    pub fn init(stream: StreamId, rendition: u32, sequence: u64) -> Self {
        Self {
            stream,
            rendition,
            kind: SegmentKind::Init,
            sequence,
            part: 0,
        }
    }

    /// The media segment a part belongs to (a media or init id itself).
    pub fn parent(&self) -> Self {
        match self.kind {
            SegmentKind::Part => Self::media(self.stream, self.rendition, self.sequence),
            _ => *self,
        }
    }

    pub fn to_pb(&self) -> pb::SegmentId {
        pb::SegmentId {
            stream_id: self.stream.0.to_vec().into(),
            rendition: self.rendition,
            sequence: self.sequence,
            kind: self.kind as i32,
            part: self.part,
        }
    }

    pub fn from_pb(msg: &pb::SegmentId) -> Result<Self, DecodeError> {
        checked(Self {
            stream: StreamId::from_bytes(&msg.stream_id)?,
            rendition: msg.rendition,
            kind: kind_from_i32(msg.kind)?,
            sequence: msg.sequence,
            part: msg.part,
        })
    }
}

/// Refuses a part index on anything but a part, and one of [`MAX_PARTS`] or
/// more: every id has one encoding.
pub(crate) fn checked(id: SegmentId) -> Result<SegmentId, DecodeError> {
    let ok = match id.kind {
        SegmentKind::Part => id.part < MAX_PARTS,
        _ => id.part == 0,
    };
    if ok {
        Ok(id)
    } else {
        Err(DecodeError::UnknownValue {
            field: "part",
            value: i32::try_from(id.part).unwrap_or(i32::MAX),
        })
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SegmentKind::Media | SegmentKind::Part => "",
            SegmentKind::Init => "init",
        };
        write!(
            f,
            "{:?}/{}/{kind}{}",
            self.stream, self.rendition, self.sequence
        )?;
        if self.kind == SegmentKind::Part {
            write!(f, ".{}", self.part)?;
        }
        Ok(())
    }
}

pub(crate) fn kind_from_i32(value: i32) -> Result<SegmentKind, DecodeError> {
    SegmentKind::try_from(value).map_err(|_| DecodeError::UnknownValue {
        field: "kind",
        value,
    })
}
