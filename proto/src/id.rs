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

/// Names one segment: stream, rendition, kind and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    pub stream: StreamId,
    pub rendition: u32,
    pub kind: SegmentKind,
    pub sequence: u64,
}

impl SegmentId {
    pub fn media(stream: StreamId, rendition: u32, sequence: u64) -> Self {
        Self {
            stream,
            rendition,
            kind: SegmentKind::Media,
            sequence,
        }
    }

    pub fn to_pb(&self) -> pb::SegmentId {
        pb::SegmentId {
            stream_id: self.stream.0.to_vec().into(),
            rendition: self.rendition,
            sequence: self.sequence,
            kind: self.kind as i32,
        }
    }

    pub fn from_pb(msg: &pb::SegmentId) -> Result<Self, DecodeError> {
        Ok(Self {
            stream: StreamId::from_bytes(&msg.stream_id)?,
            rendition: msg.rendition,
            kind: kind_from_i32(msg.kind)?,
            sequence: msg.sequence,
        })
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SegmentKind::Media => "",
            SegmentKind::Init => "init",
        };
        write!(
            f,
            "{:?}/{}/{kind}{}",
            self.stream, self.rendition, self.sequence
        )
    }
}

pub(crate) fn kind_from_i32(value: i32) -> Result<SegmentKind, DecodeError> {
    SegmentKind::try_from(value).map_err(|_| DecodeError::UnknownValue {
        field: "kind",
        value,
    })
}
