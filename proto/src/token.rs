//! Viewer tokens for private streams.
//!
//! A token names a stream, an expiry and optionally a viewer, and carries the
//! stream publisher's signature, so every gateway verifies it with the public
//! key from the stream descriptor: no shared secret, no call home. In text it
//! is the protobuf `ViewerToken`, base64url without padding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message as _;

use crate::canonical::Canonical;
use crate::{PublisherKey, StreamId, StreamKey, fixed, pb};

const TOKEN_TAG: &[u8] = b"meshcast/v1/viewer-token\0";
/// Longest token text accepted, and longest viewer id.
pub const MAX_TOKEN_TEXT: usize = 1024;
pub const MAX_VIEWER: usize = 128;

/// Why a token was refused. Each maps to a browser-session error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this stream is private: a viewer token is required")]
    Missing,
    #[error("the viewer token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the viewer token is for another stream")]
    WrongStream,
    #[error("the viewer token was not signed by the stream's publisher")]
    BadSignature,
    #[error("the viewer token expired")]
    Expired,
}

impl TokenError {
    /// The error code a gateway answers with.
    pub fn code(&self) -> pb::ErrorCode {
        match self {
            Self::Missing => pb::ErrorCode::TokenRequired,
            Self::Expired => pb::ErrorCode::TokenExpired,
            _ => pb::ErrorCode::TokenInvalid,
        }
    }
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub stream: StreamId,
    pub expires_at_us: u64,
    pub viewer: String,
}

fn canonical(stream: &StreamId, expires_at_us: u64, viewer: &str) -> Vec<u8> {
    Canonical::new(TOKEN_TAG)
        .raw(stream.as_bytes())
        .u64(expires_at_us)
        .str(viewer)
        .finish()
}

/// Issues a token for `stream` (which must belong to `key`) valid until
/// `expires_at_us`. A `viewer` id over [`MAX_VIEWER`] bytes is cut at the
/// last character boundary within it (a token service may pass any text).
pub fn issue(key: &PublisherKey, stream: &StreamId, expires_at_us: u64, viewer: &str) -> String {
    let viewer = clip(viewer);
    let msg = pb::ViewerToken {
        stream_id: stream.as_bytes().to_vec().into(),
        expires_at_us,
        viewer: viewer.to_string(),
        signature: key
            .sign(&canonical(stream, expires_at_us, viewer))
            .to_vec()
            .into(),
    };
    URL_SAFE_NO_PAD.encode(msg.encode_to_vec())
}

/// The longest prefix of `viewer` of at most [`MAX_VIEWER`] bytes that
/// ends on a character boundary (slicing at a byte count inside a
/// multibyte character would panic).
fn clip(viewer: &str) -> &str {
    let mut end = viewer.len().min(MAX_VIEWER);
    while !viewer.is_char_boundary(end) {
        end -= 1;
    }
    &viewer[..end]
}

/// Checks a token against the stream it is presented for, at time `now_us`.
pub fn verify(text: &str, stream: &StreamKey, now_us: u64) -> Result<Grant, TokenError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TokenError::Missing);
    }
    if text.len() > MAX_TOKEN_TEXT {
        return Err(TokenError::Malformed("too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::Malformed("not base64url"))?;
    let msg = pb::ViewerToken::decode(bytes.as_slice())
        .map_err(|_| TokenError::Malformed("not a token"))?;
    let token_stream =
        StreamId::from_bytes(&msg.stream_id).map_err(|_| TokenError::Malformed("stream id"))?;
    if token_stream != stream.id {
        return Err(TokenError::WrongStream);
    }
    if msg.viewer.len() > MAX_VIEWER {
        return Err(TokenError::Malformed("viewer id too long"));
    }
    let signature: [u8; 64] =
        fixed("signature", &msg.signature).map_err(|_| TokenError::Malformed("signature"))?;
    stream
        .publisher
        .verify(
            &canonical(&token_stream, msg.expires_at_us, &msg.viewer),
            &signature,
            "viewer token",
        )
        .map_err(|_| TokenError::BadSignature)?;
    if msg.expires_at_us <= now_us {
        return Err(TokenError::Expired);
    }
    Ok(Grant {
        stream: token_stream,
        expires_at_us: msg.expires_at_us,
        viewer: msg.viewer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_for_stream_signature_and_expiry() {
        let key = PublisherKey::from_seed([1; 32]);
        let stream = StreamKey::new(key.public(), "private");
        let other = StreamKey::new(key.public(), "other");
        let token = issue(&key, &stream.id, 2_000, "alice");
        assert_eq!(verify(&token, &stream, 1_000).unwrap().viewer, "alice");
        assert_eq!(verify(&token, &stream, 2_000), Err(TokenError::Expired));
        assert_eq!(verify(&token, &other, 1_000), Err(TokenError::WrongStream));
        assert_eq!(verify("", &stream, 0), Err(TokenError::Missing));
        assert!(matches!(
            verify("!!!", &stream, 0),
            Err(TokenError::Malformed(_))
        ));
        let forged = issue(
            &PublisherKey::from_seed([2; 32]),
            &stream.id,
            2_000,
            "mallory",
        );
        assert_eq!(
            verify(&forged, &stream, 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(TokenError::Expired.code(), pb::ErrorCode::TokenExpired);
        assert_eq!(TokenError::Missing.code(), pb::ErrorCode::TokenRequired);
        assert_eq!(TokenError::BadSignature.code(), pb::ErrorCode::TokenInvalid);
    }
}
