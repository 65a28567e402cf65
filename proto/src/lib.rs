//! Wire formats, identities, signing and framing of meshcast.
//!
//! This crate does no I/O and keeps no clock: times are passed in as
//! microseconds since the Unix epoch, randomness (key seeds) is passed in, and
//! bytes are fed to decoders by whoever owns the sockets. It builds for the host
//! and for `wasm32-unknown-unknown`, so edge nodes, relays and the browser client
//! share one implementation of every check.
//!
//! The trust chain, from the bottom up:
//! - A publisher holds a [`PublisherKey`] (Ed25519). A [`StreamId`] is derived
//!   from its public key and the stream name, so an id names its owner.
//! - A [`SignedDescriptor`] says what the stream is (renditions, origin URL);
//!   verifying it yields a [`StreamKey`]: the id together with the key that must
//!   have signed every segment of the stream.
//! - A [`SignedHeader`] names one segment (stream, rendition, sequence), its
//!   length and BLAKE3 hash; [`SignedHeader::verify`] checks it against a
//!   [`StreamKey`], and a [`BodyVerifier`] then hashes the body chunk by chunk
//!   as it arrives, failing the moment it is longer than declared, and at the
//!   end if it is shorter or hashes differently.
//! - [`tree`]: the body also travels as BLAKE3's tree in 16 KiB groups, each
//!   verified against the signed hash as it arrives, so that it can be
//!   forwarded before the rest is in.
//! - [`frame::Decoder`] cuts a byte stream into length-delimited control frames
//!   and raw segment bodies, refusing any length over its [`frame::Limits`]
//!   before allocating for it.

pub mod balance;
mod canonical;
pub mod descriptor;
pub mod frame;
pub mod gateway;
pub mod id;
pub mod keys;
pub mod known;
pub mod mux;
pub mod segment;
pub mod session;
pub mod token;
pub mod tree;
pub mod uri;

/// Messages generated from `proto/meshcast.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/meshcast.v1.rs"));
}

pub use descriptor::{Descriptor, Rendition, SignedDescriptor, VerifiedDescriptor};
pub use id::{MAX_PARTS, SegmentId, StreamId};
pub use keys::{PublicKey, PublisherKey, StreamKey};
pub use pb::{RenditionKind, SegmentKind};
pub use segment::{BodyError, BodyVerifier, SegmentInfo, SignedHeader, VerifiedHeader};

/// Why a protobuf message could not be turned into a meshcast value: a field
/// is missing, has the wrong size, or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("field `{field}` must be {expected} bytes, got {got}")]
    FieldLength {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("field `{field}` is {got} long, over the limit of {max}")]
    TooLong {
        field: &'static str,
        got: usize,
        max: usize,
    },
    #[error("field `{field}` has unknown value {value}")]
    UnknownValue { field: &'static str, value: i32 },
    #[error("field `{field}` is invalid: {why}")]
    Invalid {
        field: &'static str,
        why: &'static str,
    },
}

/// Why a signed value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{what} belongs to stream {got}, expected stream {expected}")]
    WrongStream {
        what: &'static str,
        expected: StreamId,
        got: StreamId,
    },
    #[error("{what} has an invalid signature (not signed by the stream's publisher, or altered)")]
    BadSignature { what: &'static str },
    #[error("descriptor for stream {got} does not match the requested stream {expected}")]
    WrongDescriptor { expected: StreamId, got: StreamId },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

pub(crate) fn fixed<const N: usize>(
    field: &'static str,
    bytes: &[u8],
) -> Result<[u8; N], DecodeError> {
    bytes.try_into().map_err(|_| DecodeError::FieldLength {
        field,
        expected: N,
        got: bytes.len(),
    })
}
