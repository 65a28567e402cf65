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
//!
//! The same headers name segments by where they are served
//! ([`KnownHeaders::locate`]): players such as Shaka and dash.js ask for a
//! URL (and byte range), not for a rendition and sequence number. A
//! location is the segment URL's path and query, so that a mirror or CDN
//! host serving the origin's layout is matched too.

use std::collections::{HashMap, VecDeque};

use crate::frame::Limits;
use crate::{BodyError, Descriptor, SegmentId, SegmentKind, VerifiedHeader};

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
    /// Resolves header URIs into locations; none before the Welcome.
    descriptor: Option<Descriptor>,
    /// (path and query, byte range start) → the segment served there.
    locations: HashMap<(String, Option<u64>), SegmentId>,
}

impl Default for KnownHeaders {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl KnownHeaders {
    /// Room for a whole header catalogue
    /// ([`crate::session::CATALOGUE_MAX`]): a two-hour VOD of 2 s segments,
    /// or about 800 s of a live stream with two renditions cut into four
    /// parts per 2 s segment, in about a megabyte.
    pub const DEFAULT_CAPACITY: usize = 4096;

    pub fn new(capacity: usize) -> Self {
        Self {
            headers: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            descriptor: None,
            locations: HashMap::new(),
        }
    }

    /// The stream's descriptor, which says where each header's URI is served:
    /// call it with the Welcome's (and any newer one) before inserting.
    pub fn set_descriptor(&mut self, descriptor: Descriptor) {
        self.descriptor = Some(descriptor);
        self.locations.clear();
        let located: Vec<_> = self
            .headers
            .values()
            .filter_map(|h| self.location_of(h).map(|l| (l, h.id())))
            .collect();
        self.locations.extend(located);
    }

    /// The segment served at `url` (its path and query; scheme, host and
    /// fragment are ignored) from byte `range_start` (`None`: the whole
    /// file), among the known headers of init and whole media segments.
    pub fn locate(&self, url: &str, range_start: Option<u64>) -> Option<&VerifiedHeader> {
        let id = self
            .locations
            .get(&(location(url).to_string(), range_start))?;
        self.headers.get(id)
    }

    fn location_of(&self, header: &VerifiedHeader) -> Option<(String, Option<u64>)> {
        let info = header.info();
        // Parts are asked for by their whole segment's URL with a range only
        // by low-latency players, which name them by sequence.
        if !matches!(info.id.kind, SegmentKind::Media | SegmentKind::Init) {
            return None;
        }
        let url = self
            .descriptor
            .as_ref()?
            .segment_url(info.id.rendition, &info.uri)?;
        Some((location(&url).to_string(), info.range_start))
    }

    /// Remembers a header (the newest for its id wins), forgetting the
    /// oldest beyond the capacity. Call it with every verified header: a
    /// Welcome's live edge, every announcement, every delivery.
    pub fn insert(&mut self, header: VerifiedHeader) {
        let id = header.id();
        if let Some(location) = self.location_of(&header) {
            self.locations.insert(location, id);
        }
        if self.headers.insert(id, header).is_some() {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front()
                && let Some(gone) = self.headers.remove(&old)
                && let Some(location) = self.location_of(&gone)
                && self.locations.get(&location) == Some(&old)
            {
                self.locations.remove(&location);
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

/// A URL's path and query: what a mirror of the origin keeps.
fn location(url: &str) -> &str {
    let url = url.split('#').next().unwrap_or_default();
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find(['/', '?']).map_or("/", |j| &rest[j..])
        }
        None => url,
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

    fn located(
        key: &PublisherKey,
        stream: StreamId,
        sequence: u64,
        uri: &str,
        range_start: Option<u64>,
    ) -> VerifiedHeader {
        let id = SegmentId::media(stream, 1, sequence);
        let mut info = SegmentInfo::for_body(id, &[sequence as u8; 10], 2_000_000, 0);
        info.uri = uri.to_string();
        info.range_start = range_start;
        info.sign(key)
            .verify(&StreamKey::new(key.public(), "live"))
            .expect("a header signed by the stream's key")
    }

    fn dash_descriptor(key: &PublisherKey) -> Descriptor {
        Descriptor {
            publisher: key.public(),
            name: "live".into(),
            renditions: vec![crate::Rendition {
                id: 1,
                name: "v".into(),
                bandwidth: 1,
                uri: "manifest.mpd#rep-1".into(),
                ..Default::default()
            }],
            origin_url: "http://origin.example:8080/dash/manifest.mpd".into(),
            segment_duration_ms: 2000,
            live: false,
            issued_at_us: 0,
            private: false,
        }
    }

    #[test]
    fn segments_are_located_by_path_query_and_range_on_any_host() {
        let (key, stream) = publisher();
        let mut known = KnownHeaders::new(3);
        // Headers that came before the Welcome's descriptor are located too.
        known.insert(located(&key, stream, 0, "v_00.m4s", None));
        known.set_descriptor(dash_descriptor(&key));
        known.insert(located(&key, stream, 1, "v_01.m4s?x=1", None));
        known.insert(located(&key, stream, 2, "all.mp4", Some(5000)));

        fn sequence(known: &KnownHeaders, url: &str, range: Option<u64>) -> Option<u64> {
            known.locate(url, range).map(|h| h.id().sequence)
        }
        assert_eq!(
            sequence(&known, "http://origin.example:8080/dash/v_00.m4s", None),
            Some(0)
        );
        // A mirror, a fragment: the same location.
        assert_eq!(
            sequence(&known, "https://mirror.example/dash/v_01.m4s?x=1#t", None),
            Some(1)
        );
        assert_eq!(
            sequence(
                &known,
                "http://origin.example:8080/dash/all.mp4",
                Some(5000)
            ),
            Some(2)
        );
        // Another query, another range, another path: nothing.
        assert_eq!(
            sequence(&known, "http://origin.example:8080/dash/v_01.m4s", None),
            None
        );
        assert_eq!(
            sequence(&known, "http://origin.example:8080/dash/all.mp4", None),
            None
        );
        assert_eq!(
            sequence(&known, "http://origin.example:8080/v_00.m4s", None),
            None
        );

        // Forgotten with their header.
        known.insert(located(&key, stream, 3, "v_03.m4s", None));
        assert_eq!(
            sequence(&known, "http://origin.example:8080/dash/v_00.m4s", None),
            None
        );
        assert_eq!(
            sequence(&known, "http://origin.example:8080/dash/v_03.m4s", None),
            Some(3)
        );
    }
}
