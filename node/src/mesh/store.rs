//! The segment store: bounded in bytes, live window first, LRU beyond it.
//!
//! Sans-I/O: time is passed in. Every live stream keeps the segments published
//! less than `live_window` before its newest segment (a 30 s window of 2 s
//! segments: 15); those are evicted only when nothing else is left to evict.
//! A live segment that leaves the window is
//! dropped at once: no viewer asks for it any more, and memory then follows
//! the window, not the time a node has run (the disk cache, if enabled,
//! keeps it). An init segment is the exception: it stays as long as its
//! stream, as the live playlist keeps naming it (`EXT-X-MAP`) long after it
//! was published, and every player starting or switching rendition needs it.
//! A VOD has no live window (its segments were all published
//! within seconds of each other): see [`Store::set_vod`]; its segments are
//! evicted least-recently-used first. Eviction happens on insert, so
//! `used_bytes() <= max_bytes` holds after every call.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use meshcast_proto::{SegmentId, SegmentKind, SignedHeader, StreamId, VerifiedHeader};

#[derive(Debug, Clone)]
pub struct Segment {
    pub header: VerifiedHeader,
    pub body: Bytes,
}

#[derive(Debug)]
struct Entry {
    segment: Segment,
    /// Position in the LRU order.
    touched: u64,
}

/// What happened on [`Store::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New {
        evicted: Vec<SegmentId>,
    },
    AlreadyHeld,
    /// Larger than the whole store.
    TooLarge,
}

/// The store as the node shares it: the [`Mesh`](super::Mesh) is its only
/// writer; the tasks that serve peers and the gateway that serves browsers
/// read segments through it concurrently, without a round trip through the
/// node's event loop.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<Store>>);

impl Shared {
    pub fn new(store: Store) -> Self {
        Self(Arc::new(Mutex::new(store)))
    }

    /// Locks the store. Hold the guard briefly: the event loop waits on it.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        // Every method finishes its bookkeeping before returning, so a panic
        // elsewhere while the lock was held leaves a consistent store.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
pub struct Store {
    max_bytes: u64,
    max_segments: usize,
    live_window_us: u64,
    used: u64,
    entries: HashMap<SegmentId, Entry>,
    lru: BTreeMap<u64, SegmentId>,
    by_stream: HashMap<StreamId, BTreeSet<SegmentId>>,
    /// Each stream's segments by publish time: the oldest leave the live
    /// window first.
    by_time: HashMap<StreamId, BTreeSet<(u64, SegmentId)>>,
    newest_us: HashMap<StreamId, u64>,
    vods: HashSet<StreamId>,
    clock: u64,
}

impl Store {
    /// A store of at most `max_bytes` of bodies, and [`Store::DEFAULT_MAX_SEGMENTS`].
    pub fn new(max_bytes: u64, live_window: Duration) -> Self {
        Self {
            max_bytes,
            max_segments: Self::DEFAULT_MAX_SEGMENTS,
            live_window_us: u64::try_from(live_window.as_micros()).unwrap_or(u64::MAX),
            used: 0,
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            by_stream: HashMap::new(),
            by_time: HashMap::new(),
            newest_us: HashMap::new(),
            vods: HashSet::new(),
            clock: 0,
        }
    }

    /// Segments held at most, whatever their size: a stream of tiny (or
    /// empty) segments costs an entry each, which a byte bound alone would
    /// never limit. 16,384 is nine hours of 2 s segments in one rendition.
    pub const DEFAULT_MAX_SEGMENTS: usize = 16_384;

    /// Sets the most segments held (at least 1).
    pub fn with_max_segments(mut self, max: usize) -> Self {
        self.max_segments = max.max(1);
        self
    }

    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, id: &SegmentId) -> bool {
        self.entries.contains_key(id)
    }

    /// Stores a verified segment, evicting others to stay within the bound.
    pub fn insert(&mut self, header: VerifiedHeader, body: Bytes) -> Inserted {
        let id = header.id();
        if self.entries.contains_key(&id) {
            return Inserted::AlreadyHeld;
        }
        let size = body.len() as u64;
        if size > self.max_bytes {
            return Inserted::TooLarge;
        }
        let published = header.info().published_at_us;
        let newest = self.newest_us.entry(id.stream).or_insert(published);
        *newest = (*newest).max(published);

        self.clock += 1;
        self.lru.insert(self.clock, id);
        self.by_stream.entry(id.stream).or_default().insert(id);
        self.by_time
            .entry(id.stream)
            .or_default()
            .insert((published, id));
        self.entries.insert(
            id,
            Entry {
                segment: Segment { header, body },
                touched: self.clock,
            },
        );
        self.used += size;
        let evicted = self.evict(id);
        Inserted::New { evicted }
    }

    /// A held segment's header, without marking it used.
    pub fn header(&self, id: &SegmentId) -> Option<&VerifiedHeader> {
        self.entries.get(id).map(|e| &e.segment.header)
    }

    /// Returns a segment, marking it recently used.
    pub fn get(&mut self, id: &SegmentId) -> Option<Segment> {
        let entry = self.entries.get_mut(id)?;
        self.lru.remove(&entry.touched);
        self.clock += 1;
        entry.touched = self.clock;
        self.lru.insert(self.clock, *id);
        Some(entry.segment.clone())
    }

    /// Headers of every segment held of `stream`, oldest first.
    pub fn headers(&self, stream: &StreamId) -> Vec<SignedHeader> {
        self.by_stream
            .get(stream)
            .into_iter()
            .flatten()
            .filter_map(|id| self.entries.get(id))
            .map(|e| e.segment.header.signed().clone())
            .collect()
    }

    /// Headers of `stream` in segment id order after `after` (exclusive; from
    /// the first when `None`), at most `limit`: one page of a VOD's index.
    pub fn headers_after(
        &self,
        stream: &StreamId,
        after: Option<&SegmentId>,
        limit: usize,
    ) -> Vec<SignedHeader> {
        use std::ops::Bound::{Excluded, Unbounded};
        let Some(ids) = self.by_stream.get(stream) else {
            return Vec::new();
        };
        let lower = after.map_or(Unbounded, Excluded);
        ids.range((lower, Unbounded))
            .filter_map(|id| self.entries.get(id))
            .take(limit)
            .map(|e| e.segment.header.signed().clone())
            .collect()
    }

    /// Drops every segment of `stream` signed in a publisher epoch before
    /// `epoch_us`: a restarted publisher superseded them, and may reuse
    /// their ids for other bytes.
    pub fn remove_older_epochs(&mut self, stream: &StreamId, epoch_us: u64) -> Vec<SegmentId> {
        let old: Vec<SegmentId> = self
            .by_stream
            .get(stream)
            .into_iter()
            .flatten()
            .filter(|id| {
                self.entries
                    .get(id)
                    .is_some_and(|e| e.segment.header.info().epoch_us < epoch_us)
            })
            .copied()
            .collect();
        for id in &old {
            self.remove(id);
        }
        old
    }

    /// Says whether a stream is a VOD, whose segments are all evicted least
    /// recently used first, or live (the default), whose live window stays.
    pub fn set_vod(&mut self, stream: StreamId, vod: bool) {
        if vod {
            self.vods.insert(stream);
        } else {
            self.vods.remove(&stream);
        }
    }

    fn is_live(&self, entry: &Entry) -> bool {
        let info = entry.segment.header.info();
        if info.id.kind == SegmentKind::Init {
            return !self.vods.contains(&info.id.stream);
        }
        if self.vods.contains(&info.id.stream) {
            return false;
        }
        let newest = self.newest_us.get(&info.id.stream).copied().unwrap_or(0);
        info.published_at_us.saturating_add(self.live_window_us) > newest
    }

    /// Evicts until within bounds: LRU among segments outside their live
    /// window first, then LRU among the rest. Never evicts `keep`.
    fn evict(&mut self, keep: SegmentId) -> Vec<SegmentId> {
        let mut evicted = self.drop_past_window(keep);
        // Over the entry bound (only many tiny segments get there): least
        // recently used first, live window or not, one step each.
        while self.entries.len() > self.max_segments {
            let Some(id) = self.lru.values().find(|id| **id != keep).copied() else {
                break;
            };
            self.remove(&id);
            evicted.push(id);
        }
        for live_too in [false, true] {
            if self.used <= self.max_bytes {
                break;
            }
            let victims: Vec<SegmentId> = self
                .lru
                .values()
                .filter(|id| **id != keep)
                .filter(|id| live_too || self.entries.get(id).is_some_and(|e| !self.is_live(e)))
                .copied()
                .collect();
            for id in victims {
                if self.used <= self.max_bytes {
                    break;
                }
                self.remove(&id);
                evicted.push(id);
            }
        }
        evicted
    }

    /// Drops the segments of `keep`'s stream, if live, that left its live
    /// window (oldest first; never `keep` itself, a late straggler).
    fn drop_past_window(&mut self, keep: SegmentId) -> Vec<SegmentId> {
        let stream = keep.stream;
        if self.vods.contains(&stream) {
            return Vec::new();
        }
        let newest = self.newest_us.get(&stream).copied().unwrap_or(0);
        let window = self.live_window_us;
        let past: Vec<SegmentId> = self
            .by_time
            .get(&stream)
            .into_iter()
            .flatten()
            .take_while(|(at, _)| at.saturating_add(window) <= newest)
            .map(|(_, id)| *id)
            .filter(|id| *id != keep && id.kind != SegmentKind::Init)
            .collect();
        for id in &past {
            self.remove(id);
        }
        past
    }

    fn remove(&mut self, id: &SegmentId) {
        if let Some(entry) = self.entries.remove(id) {
            self.lru.remove(&entry.touched);
            self.used -= entry.segment.body.len() as u64;
            if let Some(set) = self.by_stream.get_mut(&id.stream) {
                set.remove(id);
            }
            let published = entry.segment.header.info().published_at_us;
            if let Some(set) = self.by_time.get_mut(&id.stream) {
                set.remove(&(published, *id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcast_proto::{PublisherKey, SegmentInfo, StreamKey};

    fn seg(
        key: &PublisherKey,
        stream: &StreamKey,
        seq: u64,
        size: usize,
        published_s: u64,
    ) -> (VerifiedHeader, Bytes) {
        let body = Bytes::from(vec![seq as u8; size]);
        let header = SegmentInfo::for_body(
            SegmentId::media(stream.id, 0, seq),
            &body,
            2_000_000,
            published_s * 1_000_000,
        )
        .sign(key)
        .verify(stream)
        .unwrap();
        (header, body)
    }

    #[test]
    fn stays_within_its_byte_bound_and_keeps_the_live_window() {
        let key = PublisherKey::from_seed([1; 32]);
        let live = StreamKey::new(key.public(), "live");
        let mut store = Store::new(10_000, Duration::from_secs(6));
        for seq in 0..20 {
            let (h, b) = seg(&key, &live, seq, 1000, seq * 2);
            assert!(matches!(store.insert(h, b), Inserted::New { .. }));
            assert!(store.used_bytes() <= 10_000);
        }
        // The newest segments (the live window: published less than 6 s
        // before the newest) are all there; the older ones left with it.
        for seq in 17..20 {
            assert!(
                store.contains(&SegmentId::media(live.id, 0, seq)),
                "live segment {seq} evicted"
            );
        }
        assert_eq!(store.len(), 3);

        // A window larger than the byte bound: the bound wins, oldest first.
        let mut store = Store::new(10_000, Duration::from_secs(60));
        for seq in 0..20 {
            let (h, b) = seg(&key, &live, seq, 1000, seq * 2);
            store.insert(h, b);
            assert!(store.used_bytes() <= 10_000);
        }
        assert_eq!(store.len(), 10);
        assert!(store.contains(&SegmentId::media(live.id, 0, 19)));
    }

    /// Memory follows the live window, not how long the node has run: a
    /// segment is dropped as soon as it leaves the window, however much room
    /// is left; a late straggler is kept until the next insert.
    #[test]
    fn a_live_segment_leaves_memory_with_its_window() {
        let key = PublisherKey::from_seed([1; 32]);
        let live = StreamKey::new(key.public(), "live");
        let mut store = Store::new(1 << 20, Duration::from_secs(5));
        let id = |seq| SegmentId::media(live.id, 0, seq);
        let (h, b) = seg(&key, &live, 0, 1000, 0);
        store.insert(h, b);
        let (h, b) = seg(&key, &live, 1, 1000, 4);
        assert_eq!(store.insert(h, b), Inserted::New { evicted: vec![] });
        let (h, b) = seg(&key, &live, 2, 1000, 8);
        assert_eq!(
            store.insert(h, b),
            Inserted::New {
                evicted: vec![id(0)]
            }
        );
        let (h, b) = seg(&key, &live, 9, 1000, 1);
        assert_eq!(store.insert(h, b), Inserted::New { evicted: vec![] });
        assert!(store.contains(&id(9)));
        let (h, b) = seg(&key, &live, 3, 1000, 12);
        assert_eq!(
            store.insert(h, b),
            Inserted::New {
                evicted: vec![id(9), id(1)]
            }
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.used_bytes(), 2000);
    }

    #[test]
    fn a_vod_has_no_live_window_to_protect() {
        let key = PublisherKey::from_seed([2; 32]);
        let (live, vod) = (
            StreamKey::new(key.public(), "live"),
            StreamKey::new(key.public(), "vod"),
        );
        let mut store = Store::new(4_000, Duration::from_secs(30));
        store.set_vod(vod.id, true);
        // The live stream's first segment is the least recently used; the
        // VOD's segments were all published together.
        let (h, b) = seg(&key, &live, 0, 1000, 100);
        store.insert(h, b);
        for seq in 0..3 {
            let (h, b) = seg(&key, &vod, seq, 1000, 100);
            store.insert(h, b);
        }
        // Room is made from the VOD, least recently used first, not the live window.
        let (h, b) = seg(&key, &live, 1, 1000, 102);
        assert_eq!(
            store.insert(h, b),
            Inserted::New {
                evicted: vec![SegmentId::media(vod.id, 0, 0)]
            }
        );
    }

    #[test]
    fn refuses_duplicates_and_oversized_segments() {
        let key = PublisherKey::from_seed([1; 32]);
        let live = StreamKey::new(key.public(), "live");
        let mut store = Store::new(1000, Duration::from_secs(2));
        let (h, b) = seg(&key, &live, 0, 500, 0);
        store.insert(h.clone(), b.clone());
        assert_eq!(store.insert(h, b), Inserted::AlreadyHeld);
        let (h, b) = seg(&key, &live, 1, 1001, 0);
        assert_eq!(store.insert(h, b), Inserted::TooLarge);
        assert_eq!(store.headers(&live.id).len(), 1);
    }

    #[test]
    fn empty_segments_are_bounded_by_count() {
        let key = PublisherKey::from_seed([9; 32]);
        let stream = StreamKey::new(key.public(), "tiny");
        let mut store = Store::new(1 << 20, Duration::from_secs(30)).with_max_segments(100);
        for seq in 0..1_000 {
            // All published at once: all in the live window.
            let (header, body) = seg(&key, &stream, seq, 0, 0);
            assert!(matches!(store.insert(header, body), Inserted::New { .. }));
            assert!(store.len() <= 100);
        }
        assert_eq!(store.len(), 100);
        assert!(store.contains(&SegmentId::media(stream.id, 0, 999)));
        assert!(!store.contains(&SegmentId::media(stream.id, 0, 899)));
    }
}
