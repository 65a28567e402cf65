//! Publisher keys (Ed25519) and the [`StreamKey`] that verifies a stream.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::{DecodeError, StreamId, VerifyError, fixed};

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 private key in PKCS#8 PEM form: {0}")]
    Pem(String),
    #[error("public key must be 64 hex digits (32 bytes)")]
    PublicKeyText,
    #[error("bytes are not a valid Ed25519 public key")]
    InvalidPublicKey,
}

/// A publisher's signing key. It signs stream descriptors and segment headers.
///
/// Stored on disk as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the format
/// `openssl pkey` reads, so operators can inspect and back it up with stock tools.
#[derive(Clone)]
pub struct PublisherKey(SigningKey);

impl PublisherKey {
    /// Builds a key from 32 secret random bytes. The caller supplies the
    /// randomness (this crate has no entropy source of its own).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Encodes the key as PKCS#8 PEM. The string holds the secret: write it
    /// to a file only readable by its owner.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Pem(e.to_string()))
    }

    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| KeyError::Pem(e.to_string()))
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for PublisherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret half.
        f.debug_tuple("PublisherKey").field(&self.public()).finish()
    }
}

/// A publisher's public key. Shown and parsed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let bytes: [u8; 32] = fixed("publisher", bytes)?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| DecodeError::Invalid {
                field: "publisher",
                why: "not a valid Ed25519 public key",
            })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Strict verification: rejects small-order keys and non-canonical
    /// signatures, so a signature has exactly one valid encoding.
    pub(crate) fn verify(
        &self,
        message: &[u8],
        signature: &[u8; 64],
        what: &'static str,
    ) -> Result<(), VerifyError> {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| VerifyError::BadSignature { what })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| KeyError::PublicKeyText)?;
        Self::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublicKey)
    }
}

/// What a receiver needs to verify a stream's segments: its id and the key
/// that must have signed them. Obtained from a verified descriptor, or built
/// by the publisher itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub id: StreamId,
    pub publisher: PublicKey,
}

impl StreamKey {
    pub fn new(publisher: PublicKey, name: &str) -> Self {
        Self {
            id: StreamId::derive(&publisher, name),
            publisher,
        }
    }
}
