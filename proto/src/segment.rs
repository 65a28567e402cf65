//! Signed segment headers and incremental body verification.
//!
//! A publisher signs a [`SegmentInfo`] (id, duration, length, BLAKE3 hash,
//! publish time). Receivers decode a [`SignedHeader`] from the wire, verify it
//! against the stream's [`StreamKey`] to get a [`VerifiedHeader`], and only
//! then accept body bytes, through a [`BodyVerifier`].

use crate::canonical::Canonical;
use crate::id::{MAX_PARTS, checked, kind_from_i32};
use crate::{
    DecodeError, PublisherKey, SegmentId, SegmentKind, StreamId, StreamKey, VerifyError, fixed, pb,
};

const HEADER_TAG: &[u8] = b"meshcast/v1/segment-header\0";

/// Longest `uri` a header may carry.
pub const MAX_URI: usize = 1024;

/// The signed fields of a segment header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentInfo {
    pub id: SegmentId,
    pub duration_us: u64,
    pub length: u64,
    pub hash: [u8; 32],
    pub published_at_us: u64,
    /// Where the origin serves the segment, relative to its rendition's
    /// playlist URL: the fallback when the mesh is late. Signed, so no peer
    /// can redirect a fallback fetch.
    pub uri: String,
    /// When the publisher process started, in µs since the Unix epoch. A
    /// restarted publisher may number segments again from the start of a
    /// restarted origin; its headers carry a newer epoch, so a node tells
    /// which of two valid headers for one id is current (the newer epoch).
    pub epoch_us: u64,
    /// A media segment published as parts (low-latency HLS): how many; its
    /// body is their concatenation in order. 0 for anything else.
    pub parts: u32,
    /// The body is bytes `range_start..range_start + length` of the resource
    /// at `uri` (an HLS `EXT-X-BYTERANGE`, a byte-range `EXT-X-MAP`); `None`:
    /// the whole resource. Signed, as the URI is: it says what to fetch.
    pub range_start: Option<u64>,
    /// An `EXT-X-DISCONTINUITY` precedes it (timestamps, encoding or
    /// format change), and the wall-clock time of its first sample
    /// (`EXT-X-PROGRAM-DATE-TIME`, ms since the Unix epoch): what a player
    /// rebuilding a timeline from headers, without the playlist, needs.
    pub discontinuity: bool,
    pub program_date_time_ms: Option<u64>,
}

impl SegmentInfo {
    /// Describes `body` as segment `id`, hashing it.
    pub fn for_body(id: SegmentId, body: &[u8], duration_us: u64, published_at_us: u64) -> Self {
        Self {
            id,
            duration_us,
            length: body.len() as u64,
            hash: *blake3::hash(body).as_bytes(),
            published_at_us,
            uri: String::new(),
            epoch_us: 0,
            parts: 0,
            range_start: None,
            discontinuity: false,
            program_date_time_ms: None,
        }
    }

    /// Places the segment on the stream's timeline (see
    /// [`Self::discontinuity`]).
    pub fn with_timeline(mut self, discontinuity: bool, program_date_time_ms: Option<u64>) -> Self {
        self.discontinuity = discontinuity;
        self.program_date_time_ms = program_date_time_ms;
        self
    }

    /// Says the body is a byte range of the resource at `uri`, from
    /// `start` (see [`Self::range_start`]).
    pub fn with_range(mut self, start: u64) -> Self {
        self.range_start = Some(start);
        self
    }

    /// The HTTP `Range` of the body within its resource, if it is a range:
    /// `bytes=first-last`.
    pub fn http_range(&self) -> Option<String> {
        let start = self.range_start?;
        let last = start.checked_add(self.length)?.checked_sub(1)?;
        Some(format!("bytes={start}-{last}"))
    }

    /// Describes a media segment made of `parts` parts, whose body is their
    /// concatenation (see [`Self::parts`]).
    pub fn with_parts(mut self, parts: u32) -> Self {
        self.parts = parts;
        self
    }

    /// Sets the publisher's epoch (its start time, see [`Self::epoch_us`]).
    pub fn with_epoch(mut self, epoch_us: u64) -> Self {
        self.epoch_us = epoch_us;
        self
    }

    /// Sets the origin URI of the segment.
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    fn canonical(&self) -> Vec<u8> {
        Canonical::new(HEADER_TAG)
            .raw(self.id.stream.as_bytes())
            .u32(self.id.rendition)
            .u8(self.id.kind as u8)
            .u64(self.id.sequence)
            .u64(self.duration_us)
            .u64(self.length)
            .raw(&self.hash)
            .u64(self.published_at_us)
            .str(&self.uri)
            .u64(self.epoch_us)
            .u32(self.id.part)
            .u32(self.parts)
            .u8(u8::from(self.range_start.is_some()))
            .u64(self.range_start.unwrap_or(0))
            .u8(u8::from(self.discontinuity))
            .u8(u8::from(self.program_date_time_ms.is_some()))
            .u64(self.program_date_time_ms.unwrap_or(0))
            .finish()
    }

    /// Signs the header. Only a publisher should call this, with the key its
    /// stream id was derived from; [`SignedHeader::verify`] rejects anything else.
    pub fn sign(self, key: &PublisherKey) -> SignedHeader {
        SignedHeader {
            signature: key.sign(&self.canonical()),
            info: self,
        }
    }
}

/// A segment header as received: signature not yet checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedHeader {
    pub info: SegmentInfo,
    pub signature: [u8; 64],
}

impl SignedHeader {
    /// Checks that the header belongs to `stream` and was signed by its
    /// publisher. Call before accepting any body bytes.
    pub fn verify(&self, stream: &StreamKey) -> Result<VerifiedHeader, VerifyError> {
        if self.info.id.stream != stream.id {
            return Err(VerifyError::WrongStream {
                what: "segment header",
                expected: stream.id,
                got: self.info.id.stream,
            });
        }
        stream
            .publisher
            .verify(&self.info.canonical(), &self.signature, "segment header")?;
        if self.info.uri.len() > MAX_URI {
            return Err(DecodeError::TooLong {
                field: "uri",
                got: self.info.uri.len(),
                max: MAX_URI,
            }
            .into());
        }
        Ok(VerifiedHeader(self.clone()))
    }

    pub fn to_pb(&self) -> pb::SegmentHeader {
        let info = &self.info;
        pb::SegmentHeader {
            stream_id: info.id.stream.as_bytes().to_vec().into(),
            rendition: info.id.rendition,
            sequence: info.id.sequence,
            kind: info.id.kind as i32,
            duration_us: info.duration_us,
            length: info.length,
            hash: info.hash.to_vec().into(),
            published_at_us: info.published_at_us,
            uri: info.uri.clone(),
            epoch_us: info.epoch_us,
            part: info.id.part,
            parts: info.parts,
            range_start: info.range_start,
            discontinuity: info.discontinuity,
            program_date_time_ms: info.program_date_time_ms,
            signature: self.signature.to_vec().into(),
        }
    }

    pub fn from_pb(msg: &pb::SegmentHeader) -> Result<Self, DecodeError> {
        Ok(Self {
            info: SegmentInfo {
                id: checked(SegmentId {
                    stream: StreamId::from_bytes(&msg.stream_id)?,
                    rendition: msg.rendition,
                    kind: kind_from_i32(msg.kind)?,
                    sequence: msg.sequence,
                    part: msg.part,
                })?,
                duration_us: msg.duration_us,
                length: msg.length,
                hash: fixed("hash", &msg.hash)?,
                published_at_us: msg.published_at_us,
                uri: msg.uri.clone(),
                epoch_us: msg.epoch_us,
                parts: composed_of(msg)?,
                range_start: msg.range_start,
                discontinuity: msg.discontinuity,
                program_date_time_ms: msg.program_date_time_ms,
            },
            signature: fixed("signature", &msg.signature)?,
        })
    }
}

/// `parts` of a header: only a media segment is made of parts, at most
/// [`MAX_PARTS`].
fn composed_of(msg: &pb::SegmentHeader) -> Result<u32, DecodeError> {
    let media = msg.kind == SegmentKind::Media as i32;
    if msg.parts == 0 || (media && msg.parts <= MAX_PARTS) {
        Ok(msg.parts)
    } else {
        Err(DecodeError::UnknownValue {
            field: "parts",
            value: i32::try_from(msg.parts).unwrap_or(i32::MAX),
        })
    }
}

/// A header whose signature has been checked against its stream's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifiedHeader(SignedHeader);

impl VerifiedHeader {
    pub fn info(&self) -> &SegmentInfo {
        &self.0.info
    }

    pub fn id(&self) -> SegmentId {
        self.0.info.id
    }

    pub fn signed(&self) -> &SignedHeader {
        &self.0
    }

    /// Starts verifying this segment's body. Fails at once when the declared
    /// length exceeds `max_segment`, so no buffer is ever sized from it.
    pub fn body_verifier(&self, max_segment: u64) -> Result<BodyVerifier, BodyError> {
        if self.0.info.length > max_segment {
            return Err(BodyError::TooLarge {
                declared: self.0.info.length,
                max: max_segment,
            });
        }
        Ok(BodyVerifier {
            declared: self.0.info.length,
            received: 0,
            expected: self.0.info.hash,
            hasher: blake3::Hasher::new(),
        })
    }

    /// Verifies a complete body in one call.
    pub fn verify_body(&self, body: &[u8], max_segment: u64) -> Result<(), BodyError> {
        let mut verifier = self.body_verifier(max_segment)?;
        verifier.update(body)?;
        verifier.finish()
    }
}

/// Why a segment body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("segment declares {declared} bytes, over the limit of {max}")]
    TooLarge { declared: u64, max: u64 },
    #[error(
        "segment body is longer than the declared {declared} bytes (at least {received} arrived)"
    )]
    TooLong { declared: u64, received: u64 },
    #[error("segment body ended after {received} of the declared {declared} bytes")]
    TooShort { declared: u64, received: u64 },
    #[error("segment body does not match its signed BLAKE3 hash (expected {expected}, got {got})")]
    HashMismatch { expected: String, got: String },
}

/// Hashes a body as its chunks arrive.
///
/// [`update`](Self::update) fails as soon as more bytes than declared arrive;
/// [`finish`](Self::finish) fails if fewer arrived or the hash differs.
/// Until `finish` returns `Ok`, no byte may be passed on.
#[derive(Debug, Clone)]
pub struct BodyVerifier {
    declared: u64,
    received: u64,
    expected: [u8; 32],
    hasher: blake3::Hasher,
}

impl BodyVerifier {
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        let received = self.received.saturating_add(chunk.len() as u64);
        if received > self.declared {
            return Err(BodyError::TooLong {
                declared: self.declared,
                received,
            });
        }
        self.received = received;
        self.hasher.update(chunk);
        Ok(())
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.declared - self.received
    }

    pub fn finish(self) -> Result<(), BodyError> {
        if self.received != self.declared {
            return Err(BodyError::TooShort {
                declared: self.declared,
                received: self.received,
            });
        }
        let got = self.hasher.finalize();
        if got.as_bytes() != &self.expected {
            return Err(BodyError::HashMismatch {
                expected: hex::encode(self.expected),
                got: got.to_hex().to_string(),
            });
        }
        Ok(())
    }
}
