//! Signed headers a viewer has seen, so that bytes it takes from elsewhere are
//! checked too: the trustless HTTP fallback.
//!
//! A browser falls back to HTTP when the mesh cannot deliver in time, and
//! nobody vouches for that HTTP server: the origin, a CDN edge or a mirror may
//! serve poisoned bytes. The gateway announces the header of every segment it
//! stores on the control stream, and its Welcome names the live edge. Kept
//! here, a bounded number of them, they let the client check an HTTP body
//! against the publisher's signed hash and length before the player sees it.
//! A segment whose header never arrived is [`Verdict::Unknown`]: the caller
//! decides (the browser loader passes it on, as a player without meshcast
//! would).

use std::collections::{HashMap, VecDeque};

use crate::frame::Limits;
use crate::{BodyError, SegmentId, VerifiedHeader};

/// What a body fetched elsewhere is, against the headers known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its length and BLAKE3 hash are the ones the publisher signed.
    Verified,
    /// No header of this segment is known: nothing can be said.
    Unknown,
    /// It is not what the publisher signed: poisoned, truncated or stale.
    Mismatch(BodyError),
}

/// The most recent headers, oldest forgotten first.
#[derive(Debug, Clone)]
pub struct KnownHeaders {
    headers: HashMap<SegmentId, VerifiedHeader>,
    order: VecDeque<SegmentId>,
    capacity: usize,
}

impl Default for KnownHeaders {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl KnownHeaders {
    /// Room for about 200 s of a live stream with two renditions cut into
    /// four parts per 2 s segment (ten headers per segment time), in about a
    /// quarter of a megabyte: further back than a live player falls back.
    pub const DEFAULT_CAPACITY: usize = 1024;

    pub fn new(capacity: usize) -> Self {
        Self {
            headers: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Remembers a header (the newest for its id wins), forgetting the
    /// oldest beyond the capacity. Call it with every verified header: a
    /// Welcome's live edge, every announcement, every delivery.
    pub fn insert(&mut self, header: VerifiedHeader) {
        let id = header.id();
        if self.headers.insert(id, header).is_some() {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.headers.remove(&old);
            }
        }
    }

    pub fn get(&self, id: &SegmentId) -> Option<&VerifiedHeader> {
        self.headers.get(id)
    }

    pub fn len(&self) -> usize {
        self.headers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// Checks `body`, fetched from anywhere, as segment `id`.
    pub fn check(&self, id: &SegmentId, body: &[u8]) -> Verdict {
        match self.headers.get(id) {
            None => Verdict::Unknown,
            Some(header) => match header.verify_body(body, Limits::DEFAULT_MAX_SEGMENT) {
                Ok(()) => Verdict::Verified,
                Err(e) => Verdict::Mismatch(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PublisherKey, SegmentInfo, StreamId, StreamKey};

    fn header(key: &PublisherKey, stream: StreamId, sequence: u64, body: &[u8]) -> VerifiedHeader {
        let id = SegmentId::media(stream, 0, sequence);
        SegmentInfo::for_body(id, body, 2_000_000, 0)
            .sign(key)
            .verify(&StreamKey::new(key.public(), "live"))
            .expect("a header signed by the stream's key")
    }

    fn publisher() -> (PublisherKey, StreamId) {
        let key = PublisherKey::from_seed([9; 32]);
        let stream = StreamKey::new(key.public(), "live").id;
        (key, stream)
    }

    #[test]
    fn bodies_are_verified_against_known_headers_only() {
        let (key, stream) = publisher();
        let body = vec![7u8; 5000];
        let mut known = KnownHeaders::default();
        known.insert(header(&key, stream, 1, &body));

        let id = SegmentId::media(stream, 0, 1);
        assert_eq!(known.check(&id, &body), Verdict::Verified);

        let mut poisoned = body.clone();
        poisoned[2500] ^= 1;
        assert!(matches!(
            known.check(&id, &poisoned),
            Verdict::Mismatch(BodyError::HashMismatch { .. })
        ));
        assert!(matches!(
            known.check(&id, &body[..4000]),
            Verdict::Mismatch(BodyError::TooShort { .. })
        ));
        let mut longer = body.clone();
        longer.push(0);
        assert!(matches!(
            known.check(&id, &longer),
            Verdict::Mismatch(BodyError::TooLong { .. })
        ));
        // Another segment's bytes, or any bytes of a segment never announced.
        assert_eq!(
            known.check(&SegmentId::media(stream, 0, 2), &body),
            Verdict::Unknown
        );
        assert_eq!(
            known.check(&SegmentId::init(stream, 0, 1), &body),
            Verdict::Unknown
        );
    }

    #[test]
    fn the_oldest_headers_are_forgotten_beyond_the_capacity() {
        let (key, stream) = publisher();
        let mut known = KnownHeaders::new(3);
        for sequence in 0..5 {
            known.insert(header(&key, stream, sequence, &[sequence as u8; 10]));
        }
        // Again: a repeated header takes no second place.
        known.insert(header(&key, stream, 4, &[4; 10]));
        assert_eq!(known.len(), 3);
        for sequence in 0..5 {
            let id = SegmentId::media(stream, 0, sequence);
            let verdict = known.check(&id, &[sequence as u8; 10]);
            let want = if sequence >= 2 {
                Verdict::Verified
            } else {
                Verdict::Unknown
            };
            assert_eq!(verdict, want, "segment {sequence}");
        }
    }
}
