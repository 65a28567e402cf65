//! Signed stream descriptors: what a stream is and who owns it.
//!
//! A descriptor carries the publisher's public key and the stream name, from
//! which the stream id is derived. Verifying it therefore proves both that the
//! publisher signed it and that it describes the id a viewer asked for.

use crate::canonical::Canonical;
use crate::pb::RenditionKind;
use crate::{DecodeError, PublicKey, PublisherKey, StreamId, StreamKey, VerifyError, fixed, pb};

const DESCRIPTOR_TAG: &[u8] = b"meshcast/v1/stream-descriptor\0";

/// Bounds on descriptor fields, so that a descriptor always fits a control frame.
pub const MAX_NAME: usize = 128;
pub const MAX_RENDITIONS: usize = 32;
pub const MAX_RENDITION_NAME: usize = 64;
pub const MAX_CODECS: usize = 256;
/// Longest `GROUP-ID` and `LANGUAGE` of an alternative rendition.
pub const MAX_GROUP: usize = 64;
pub const MAX_LANGUAGE: usize = 35;
pub const MAX_ORIGIN_URL: usize = 2048;

/// One rendition; `Default` is an empty variant, for literals to fill.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Rendition {
    pub id: u32,
    /// A variant stream, or an alternative rendition (HLS `EXT-X-MEDIA`)
    /// named by `group` (`GROUP-ID`) and `language`.
    pub kind: RenditionKind,
    pub group: String,
    pub language: String,
    pub name: String,
    pub bandwidth: u64,
    pub codecs: String,
    pub width: u32,
    pub height: u32,
    /// Media playlist, relative to the descriptor's `origin_url`.
    pub uri: String,
}

/// The signed fields of a stream descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub publisher: PublicKey,
    pub name: String,
    pub renditions: Vec<Rendition>,
    pub origin_url: String,
    pub segment_duration_ms: u32,
    pub live: bool,
    pub issued_at_us: u64,
    /// Viewers need a [`crate::token`] signed by the publisher.
    pub private: bool,
}

impl Descriptor {
    pub fn stream_id(&self) -> StreamId {
        StreamId::derive(&self.publisher, &self.name)
    }

    pub fn stream_key(&self) -> StreamKey {
        StreamKey::new(self.publisher, &self.name)
    }

    /// Checks the field bounds, which every verifier enforces as well.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_len("name", &self.name, MAX_NAME)?;
        if self.name.is_empty() {
            return Err(DecodeError::Missing { field: "name" });
        }
        if self.renditions.is_empty() {
            return Err(DecodeError::Missing {
                field: "renditions",
            });
        }
        if self.renditions.len() > MAX_RENDITIONS {
            return Err(DecodeError::TooLong {
                field: "renditions",
                got: self.renditions.len(),
                max: MAX_RENDITIONS,
            });
        }
        for (i, r) in self.renditions.iter().enumerate() {
            check_len("renditions.name", &r.name, MAX_RENDITION_NAME)?;
            check_len("renditions.codecs", &r.codecs, MAX_CODECS)?;
            check_len("renditions.group", &r.group, MAX_GROUP)?;
            check_len("renditions.language", &r.language, MAX_LANGUAGE)?;
            check_len("renditions.uri", &r.uri, MAX_ORIGIN_URL)?;
            if self.renditions[..i].iter().any(|other| other.id == r.id) {
                return Err(DecodeError::Invalid {
                    field: "renditions.id",
                    why: "two renditions share an id",
                });
            }
        }
        check_len("origin_url", &self.origin_url, MAX_ORIGIN_URL)?;
        if self.segment_duration_ms == 0 {
            return Err(DecodeError::Invalid {
                field: "segment_duration_ms",
                why: "must be positive",
            });
        }
        Ok(())
    }

    fn canonical(&self) -> Vec<u8> {
        let mut c = Canonical::new(DESCRIPTOR_TAG)
            .raw(self.publisher.as_bytes())
            .str(&self.name)
            .u32(self.renditions.len() as u32);
        for r in &self.renditions {
            c = c
                .u32(r.id)
                .str(&r.name)
                .u64(r.bandwidth)
                .str(&r.codecs)
                .u32(r.width)
                .u32(r.height)
                .str(&r.uri)
                .u8(r.kind as u8)
                .str(&r.group)
                .str(&r.language);
        }
        c.str(&self.origin_url)
            .u32(self.segment_duration_ms)
            .u8(u8::from(self.live))
            .u64(self.issued_at_us)
            .u8(u8::from(self.private))
            .finish()
    }

    /// Validates and signs the descriptor with `key`, which must be the
    /// descriptor's `publisher`.
    pub fn sign(self, key: &PublisherKey) -> Result<VerifiedDescriptor, DecodeError> {
        self.validate()?;
        if key.public() != self.publisher {
            return Err(DecodeError::Invalid {
                field: "publisher",
                why: "is not the public half of the signing key",
            });
        }
        Ok(VerifiedDescriptor(SignedDescriptor {
            signature: key.sign(&self.canonical()),
            descriptor: self,
        }))
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), DecodeError> {
    if value.len() > max {
        return Err(DecodeError::TooLong {
            field,
            got: value.len(),
            max,
        });
    }
    Ok(())
}

/// A descriptor as received: signature not yet checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedDescriptor {
    pub descriptor: Descriptor,
    pub signature: [u8; 64],
}

impl SignedDescriptor {
    /// Checks the field bounds and the publisher's signature.
    pub fn verify(&self) -> Result<VerifiedDescriptor, VerifyError> {
        self.descriptor.validate()?;
        self.descriptor.publisher.verify(
            &self.descriptor.canonical(),
            &self.signature,
            "stream descriptor",
        )?;
        Ok(VerifiedDescriptor(self.clone()))
    }

    /// Like [`verify`](Self::verify), and also checks that the descriptor is
    /// the one for `expected` — the id a viewer or node asked for.
    pub fn verify_for(&self, expected: &StreamId) -> Result<VerifiedDescriptor, VerifyError> {
        let got = self.descriptor.stream_id();
        if &got != expected {
            return Err(VerifyError::WrongDescriptor {
                expected: *expected,
                got,
            });
        }
        self.verify()
    }

    pub fn to_pb(&self) -> pb::StreamDescriptor {
        let d = &self.descriptor;
        pb::StreamDescriptor {
            publisher: d.publisher.as_bytes().to_vec().into(),
            name: d.name.clone(),
            renditions: d
                .renditions
                .iter()
                .map(|r| pb::Rendition {
                    id: r.id,
                    name: r.name.clone(),
                    bandwidth: r.bandwidth,
                    codecs: r.codecs.clone(),
                    width: r.width,
                    height: r.height,
                    uri: r.uri.clone(),
                    kind: r.kind as i32,
                    group: r.group.clone(),
                    language: r.language.clone(),
                })
                .collect(),
            origin_url: d.origin_url.clone(),
            segment_duration_ms: d.segment_duration_ms,
            live: d.live,
            issued_at_us: d.issued_at_us,
            private: d.private,
            signature: self.signature.to_vec().into(),
        }
    }

    pub fn from_pb(msg: &pb::StreamDescriptor) -> Result<Self, DecodeError> {
        Ok(Self {
            descriptor: Descriptor {
                publisher: PublicKey::from_bytes(&msg.publisher)?,
                name: msg.name.clone(),
                renditions: msg
                    .renditions
                    .iter()
                    .map(|r| {
                        Ok(Rendition {
                            id: r.id,
                            kind: RenditionKind::try_from(r.kind).map_err(|_| {
                                DecodeError::UnknownValue {
                                    field: "renditions.kind",
                                    value: r.kind,
                                }
                            })?,
                            group: r.group.clone(),
                            language: r.language.clone(),
                            name: r.name.clone(),
                            bandwidth: r.bandwidth,
                            codecs: r.codecs.clone(),
                            width: r.width,
                            height: r.height,
                            uri: r.uri.clone(),
                        })
                    })
                    .collect::<Result<_, DecodeError>>()?,
                origin_url: msg.origin_url.clone(),
                segment_duration_ms: msg.segment_duration_ms,
                live: msg.live,
                issued_at_us: msg.issued_at_us,
                private: msg.private,
            },
            signature: fixed("signature", &msg.signature)?,
        })
    }
}

/// A descriptor whose signature and bounds have been checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifiedDescriptor(SignedDescriptor);

impl VerifiedDescriptor {
    pub fn descriptor(&self) -> &Descriptor {
        &self.0.descriptor
    }

    pub fn signed(&self) -> &SignedDescriptor {
        &self.0
    }

    /// The key that verifies this stream's segment headers.
    pub fn stream_key(&self) -> StreamKey {
        self.0.descriptor.stream_key()
    }
}
