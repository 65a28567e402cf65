//! Gateway records: how viewers find gateways through the mesh.
//!
//! A gateway signs a record of where browsers reach it (its WebTransport URL
//! and the hashes of the certificates to pin), for how long, and which
//! streams it serves, with its node's identity key (Ed25519, the libp2p peer
//! key). Records travel on a gossip topic; relays list the live ones in
//! `Welcome` and push changes to open sessions. A viewer keeps, per node key,
//! the record with the newest `issued_at`: nobody but the node can make a
//! newer one, so a stale or forged record never replaces the real one, and a
//! gateway that restarted or rotated its certificate is reached with its new
//! hash.

use crate::canonical::Canonical;
use crate::pb;
use crate::{DecodeError, PublicKey, StreamId, VerifyError, fixed};

/// Most certificate hashes in a record (the current one and the next).
pub const MAX_HASHES: usize = 4;
/// Most streams a record lists.
pub const MAX_STREAMS: usize = 64;
/// Longest a record may be valid: browsers pin certificates of at most 14 days.
pub const MAX_LIFETIME_US: u64 = 15 * 24 * 3600 * 1_000_000;
/// Longest WebTransport URL.
pub const MAX_URL: usize = 2048;
/// How far ahead of the verifier's clock a record may say it was issued.
pub const MAX_CLOCK_AHEAD_US: u64 = 10 * 60 * 1_000_000;
/// Largest encoded signed record a node accepts from gossip.
pub const MAX_SIGNED_RECORD: usize = 8 * 1024;

/// A gateway's signed address. Build one, sign [`signing_bytes`]
/// (Self::signing_bytes) with the node's key, and send [`to_pb`](Self::to_pb).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRecord {
    pub node: PublicKey,
    pub url: String,
    pub cert_hashes: Vec<[u8; 32]>,
    pub issued_at_us: u64,
    pub expires_at_us: u64,
    pub streams: Vec<StreamId>,
}

impl GatewayRecord {
    /// What the node's signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new(b"meshcast/v1/gateway-record\0")
            .raw(self.node.as_bytes())
            .str(&self.url)
            .u32(self.cert_hashes.len() as u32);
        for hash in &self.cert_hashes {
            c = c.raw(hash);
        }
        c = c
            .u64(self.issued_at_us)
            .u64(self.expires_at_us)
            .u32(self.streams.len() as u32);
        for stream in &self.streams {
            c = c.raw(stream.as_bytes());
        }
        c.finish()
    }

    /// Checks the limits a record must keep, whoever made it.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |field, why| Err(DecodeError::Invalid { field, why });
        if !self.url.starts_with("https://") || self.url.len() > MAX_URL {
            return invalid("url", "must be an https:// URL of at most 2048 bytes");
        }
        if self.cert_hashes.len() > MAX_HASHES {
            return invalid("cert_hashes", "at most 4");
        }
        if self.streams.len() > MAX_STREAMS {
            return invalid("streams", "at most 64");
        }
        if self.expires_at_us <= self.issued_at_us
            || self.expires_at_us - self.issued_at_us > MAX_LIFETIME_US
        {
            return invalid(
                "expires_at_us",
                "must be after issued_at_us, within 15 days",
            );
        }
        Ok(())
    }

    pub fn to_pb(&self, signature: &[u8]) -> pb::SignedGatewayRecord {
        pb::SignedGatewayRecord {
            record: Some(pb::GatewayRecord {
                node_key: self.node.as_bytes().to_vec().into(),
                url: self.url.clone(),
                cert_hashes: self.cert_hashes.iter().map(|h| h.to_vec().into()).collect(),
                issued_at_us: self.issued_at_us,
                expires_at_us: self.expires_at_us,
                streams: self
                    .streams
                    .iter()
                    .map(|s| s.as_bytes().to_vec().into())
                    .collect(),
            }),
            signature: signature.to_vec().into(),
        }
    }

    /// Whether the record names `stream` among those it serves.
    pub fn serves(&self, stream: &StreamId) -> bool {
        self.streams.contains(stream)
    }
}

/// Decodes and verifies a signed record: well-formed, within the limits,
/// signed by the key it names, and not expired at `now_us`.
pub fn verify(signed: &pb::SignedGatewayRecord, now_us: u64) -> Result<GatewayRecord, VerifyError> {
    let r = signed
        .record
        .as_ref()
        .ok_or(DecodeError::Missing { field: "record" })?;
    let record = GatewayRecord {
        node: PublicKey::from_bytes(&r.node_key)?,
        url: r.url.clone(),
        cert_hashes: r
            .cert_hashes
            .iter()
            .take(MAX_HASHES + 1)
            .map(|h| fixed::<32>("cert_hashes", h))
            .collect::<Result<_, _>>()?,
        issued_at_us: r.issued_at_us,
        expires_at_us: r.expires_at_us,
        streams: r
            .streams
            .iter()
            .take(MAX_STREAMS + 1)
            .map(|s| StreamId::from_bytes(s))
            .collect::<Result<_, _>>()?,
    };
    if r.cert_hashes.len() > MAX_HASHES || r.streams.len() > MAX_STREAMS {
        return Err(DecodeError::Invalid {
            field: "record",
            why: "too many hashes or streams",
        }
        .into());
    }
    record.validate()?;
    let signature: [u8; 64] = fixed("signature", &signed.signature)?;
    record
        .node
        .verify(&record.signing_bytes(), &signature, "gateway record")?;
    // A record from the future could not be replaced until that time comes:
    // allow a clock some minutes fast, no more.
    if record.issued_at_us > now_us.saturating_add(MAX_CLOCK_AHEAD_US) {
        return Err(DecodeError::Invalid {
            field: "issued_at_us",
            why: "issued too far in the future",
        }
        .into());
    }
    if record.expires_at_us <= now_us {
        return Err(DecodeError::Invalid {
            field: "expires_at_us",
            why: "the record has expired",
        }
        .into());
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PublisherKey;

    fn record(key: &PublisherKey) -> GatewayRecord {
        GatewayRecord {
            node: key.public(),
            url: "https://gw.example:4433/".into(),
            cert_hashes: vec![[7; 32]],
            issued_at_us: 1_000,
            expires_at_us: 60_000_000,
            streams: vec![StreamId::from_bytes(&[3; 32]).expect("id")],
        }
    }

    #[test]
    fn a_signed_record_verifies_and_any_change_breaks_it() {
        let key = PublisherKey::from_seed([5; 32]);
        let r = record(&key);
        let signature = key.sign(&r.signing_bytes());
        let signed = r.to_pb(&signature);
        assert_eq!(verify(&signed, 2_000), Ok(r.clone()));
        assert!(verify(&signed, 60_000_000).is_err(), "expired");
        let mut early = r.clone();
        early.issued_at_us = 2_000 + MAX_CLOCK_AHEAD_US + 1;
        early.expires_at_us = early.issued_at_us + 1;
        let early = early.to_pb(&key.sign(&early.signing_bytes()));
        assert!(verify(&early, 2_000).is_err(), "issued in the future");

        let mut moved = signed.clone();
        if let Some(inner) = moved.record.as_mut() {
            inner.url = "https://evil.example:4433/".into();
        }
        assert!(matches!(
            verify(&moved, 2_000),
            Err(VerifyError::BadSignature { .. })
        ));
        // Signed by another key than the one it names.
        let other = PublisherKey::from_seed([6; 32]);
        let forged = r.to_pb(&other.sign(&r.signing_bytes()));
        assert!(verify(&forged, 2_000).is_err());
    }

    #[test]
    fn records_outside_the_limits_are_refused_even_when_signed() {
        let key = PublisherKey::from_seed([5; 32]);
        let mut r = record(&key);
        r.url = "http://gw.example/".into();
        assert!(verify(&r.to_pb(&key.sign(&r.signing_bytes())), 2_000).is_err());
        let mut r = record(&key);
        r.cert_hashes = vec![[1; 32]; MAX_HASHES + 1];
        assert!(verify(&r.to_pb(&key.sign(&r.signing_bytes())), 2_000).is_err());
        let mut r = record(&key);
        r.expires_at_us = r.issued_at_us + MAX_LIFETIME_US + 1;
        assert!(verify(&r.to_pb(&key.sign(&r.signing_bytes())), 2_000).is_err());
    }
}
