//! The byte strings that signatures cover.
//!
//! Protobuf encodings are not canonical (field order, default values and
//! unknown fields may vary), so signers and verifiers both rebuild this fixed
//! encoding from the decoded fields: big-endian integers, length-prefixed
//! strings, and a domain tag first so a signature over one kind of value can
//! never be replayed as another.

pub(crate) struct Canonical(Vec<u8>);

impl Canonical {
    pub(crate) fn new(tag: &'static [u8]) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(tag);
        Self(buf)
    }

    pub(crate) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    pub(crate) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Fixed-size fields (keys, hashes, ids) go in without a length.
    pub(crate) fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }

    /// Variable-size fields carry a length so that no two field lists share an encoding.
    pub(crate) fn str(self, v: &str) -> Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len).raw(v.as_bytes())
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}
