//! Certificates for the WebTransport endpoint.
//!
//! Browsers reach a gateway without a CA-signed certificate through
//! `serverCertificateHashes`, which only accepts self-signed ECDSA P-256
//! certificates valid for at most 14 days. So by default a gateway makes its
//! own, and replaces it `overlap` before it expires: from then on new
//! handshakes get the new certificate, while `/.well-known/meshcast` lists
//! both hashes until the old one expires (pages that fetched the old list
//! still connect), and open sessions carry on (QUIC does not re-handshake).
//! An operator may instead give PEM files (e.g. from ACME); they are re-read
//! when they change on disk, without a restart.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use wtransport::Identity;
use wtransport::tls::Sha256Digest;

/// Where the gateway's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Self-signed, renewed `overlap` before the end of each `lifetime`.
    SelfSigned {
        lifetime: Duration,
        overlap: Duration,
    },
    /// An operator's certificate chain and key, re-read when either changes
    /// (checked every `poll`).
    Files {
        cert: PathBuf,
        key: PathBuf,
        poll: Duration,
    },
}

impl Default for CertSource {
    fn default() -> Self {
        Self::SelfSigned {
            lifetime: MAX_SELF_SIGNED,
            overlap: Duration::from_secs(24 * 3600),
        }
    }
}

/// Browsers refuse hashes of certificates valid for longer.
pub const MAX_SELF_SIGNED: Duration = Duration::from_secs(14 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "self-signed lifetime {0:?} must be between 2 s and 14 days, and longer than its overlap"
    )]
    Lifetime(Duration),
    #[error("cannot create a self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("cannot load certificate {cert} / key {key}: {reason}")]
    Files {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// A certificate in use, with when to replace it.
pub struct Issued {
    pub identity: Identity,
    pub hash: Sha256Digest,
    /// When this certificate stops being valid (self-signed only).
    pub expires: Option<SystemTime>,
    /// When to make or look for the next one.
    pub renew_at: SystemTime,
    /// Modification times of the files, to notice a change.
    pub stamp: Option<(SystemTime, SystemTime)>,
}

impl CertSource {
    pub fn validate(&self) -> Result<(), CertError> {
        if let Self::SelfSigned { lifetime, overlap } = self
            && (*lifetime > MAX_SELF_SIGNED
                || *lifetime < Duration::from_secs(2)
                || overlap >= lifetime)
        {
            return Err(CertError::Lifetime(*lifetime));
        }
        Ok(())
    }

    /// Makes or loads the current certificate.
    pub async fn issue(&self, names: &[String]) -> Result<Issued, CertError> {
        let now = SystemTime::now();
        match self {
            Self::SelfSigned { lifetime, overlap } => {
                // Back-dated a little against clock skew; the back-dating comes
                // out of the lifetime, so the total never exceeds what browsers accept.
                let backdate = (*lifetime / 10).min(Duration::from_secs(60));
                let to_time = |d: Duration| {
                    time::Duration::try_from(d).map_err(|_| CertError::Lifetime(*lifetime))
                };
                let start = time::OffsetDateTime::now_utc() - to_time(backdate)?;
                let end = start + to_time(*lifetime)?;
                let identity = Identity::self_signed_builder()
                    .subject_alt_names(names)
                    .not_before(start)
                    .not_after(end)
                    .build()
                    .map_err(|e| CertError::SelfSigned(e.to_string()))?;
                let expires = now + lifetime.saturating_sub(backdate);
                Ok(Issued {
                    hash: hash_of(&identity),
                    identity,
                    expires: Some(expires),
                    renew_at: expires - *overlap,
                    stamp: None,
                })
            }
            Self::Files { cert, key, poll } => {
                let fail = |reason: String| CertError::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                    reason,
                };
                let identity = Identity::load_pemfiles(cert, key)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                Ok(Issued {
                    hash: hash_of(&identity),
                    identity,
                    expires: None,
                    renew_at: now + *poll,
                    stamp: self.stamp(),
                })
            }
        }
    }

    /// Modification times of the operator's files.
    pub fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        match self {
            Self::Files { cert, key, .. } => {
                let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
                Some((modified(cert)?, modified(key)?))
            }
            Self::SelfSigned { .. } => None,
        }
    }
}

/// How often operator files are checked for changes, by default.
pub const FILE_POLL: Duration = Duration::from_secs(10);

fn hash_of(identity: &Identity) -> Sha256Digest {
    identity
        .certificate_chain()
        .as_slice()
        .first()
        .map(|c| c.hash())
        .unwrap_or_else(|| Sha256Digest::new([0; 32]))
}
