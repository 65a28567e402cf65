//! The optional on-disk segment cache, bounded in bytes.
//!
//! Every verified segment is also written under `<dir>/<stream id>/<rendition>/`,
//! header and body side by side, so that VOD outlives the memory store (a
//! volunteer seeds more than fits in memory) and operators can inspect what a
//! node holds. Files are written to a temporary name and renamed, so a reader
//! never sees half a segment.
//!
//! **Bound.** [`Cache`] keeps the files within `max_bytes` (`store.disk_max_bytes`)
//! by deleting the least recently *requested* segments first: a write, a
//! peer's `Want` served from disk and a viewer's demand all count as a request.
//! Recency survives restarts through the body file's modification time, which
//! a request bumps.
//!
//! **Trust.** A disk is only as trustworthy as its host, so nothing is served
//! from it unverified: [`Cache::open`] only indexes what it finds (and counts
//! it against the bound); when the node follows a stream, [`Cache::load`]
//! verifies the headers of that stream against the stream key, and every body
//! read back is hashed again before it is used ([`read_body`]). What fails is
//! deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use meshcast_proto::{
    SegmentId, SegmentKind, SignedHeader, StreamId, StreamKey, VerifiedHeader, pb,
};
use prost::Message as _;

/// Where a segment's body goes; its header is the same path with `.header`.
pub fn body_path(dir: &Path, id: &SegmentId) -> PathBuf {
    let rendition = dir
        .join(id.stream.to_string())
        .join(id.rendition.to_string());
    match id.kind {
        SegmentKind::Media => rendition.join(format!("media-{:010}", id.sequence)),
        SegmentKind::Init => rendition.join(format!("init-{:010}", id.sequence)),
        SegmentKind::Part => rendition.join(format!("part-{:010}.{:02}", id.sequence, id.part)),
    }
}

#[derive(Debug)]
struct Entry {
    /// As found on disk; `verified` once checked against the stream key.
    signed: SignedHeader,
    verified: Option<VerifiedHeader>,
    /// Header and body files together.
    bytes: u64,
    touched: u64,
}

/// The cache's index, see the module docs. Sans clock: recency is an order,
/// seeded from file times when opened.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    used: u64,
    entries: HashMap<SegmentId, Entry>,
    lru: BTreeMap<u64, SegmentId>,
    by_stream: HashMap<StreamId, BTreeSet<SegmentId>>,
    clock: u64,
}

impl Cache {
    /// Indexes what `dir` holds (creating it if needed), then deletes the
    /// least recently requested segments beyond `max_bytes`. Stray files
    /// (unfinished writes, a body without its header) are deleted.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Cache> {
        fs::create_dir_all(dir)?;
        let mut found: Vec<(SystemTime, SegmentId, SignedHeader, u64)> = Vec::new();
        let entries = |path: &Path| fs::read_dir(path).into_iter().flatten().flatten();
        for stream in entries(dir) {
            let name = stream.file_name();
            if name
                .to_str()
                .and_then(|n| n.parse::<StreamId>().ok())
                .is_none()
            {
                continue; // not ours
            }
            for rendition in entries(&stream.path()) {
                for file in entries(&rendition.path()) {
                    let path = file.path();
                    match path.extension().and_then(|e| e.to_str()) {
                        Some("header") => {}
                        Some("tmp") => {
                            let _ = fs::remove_file(&path);
                            continue;
                        }
                        _ => {
                            if !path.with_extension("header").exists() {
                                let _ = fs::remove_file(&path);
                            }
                            continue;
                        }
                    }
                    let body = path.with_extension("");
                    let signed = fs::read(&path)
                        .ok()
                        .and_then(|b| pb::SegmentHeader::decode(b.as_slice()).ok())
                        .and_then(|msg| SignedHeader::from_pb(&msg).ok());
                    let meta = fs::metadata(&body);
                    match (signed, meta) {
                        (Some(signed), Ok(meta))
                            if meta.len() == signed.info.length
                                && body == body_path(dir, &signed.info.id) =>
                        {
                            let header_len = file.metadata().map_or(0, |m| m.len());
                            let when = meta.modified().unwrap_or(UNIX_EPOCH);
                            found.push((when, signed.info.id, signed, header_len + meta.len()));
                        }
                        _ => {
                            tracing::warn!("deleting damaged cached segment {}", body.display());
                            let _ = fs::remove_file(&path);
                            let _ = fs::remove_file(&body);
                        }
                    }
                }
            }
        }
        found.sort_by_key(|(when, ..)| *when);
        let mut cache = Cache {
            dir: dir.to_path_buf(),
            max_bytes,
            used: 0,
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            by_stream: HashMap::new(),
            clock: 0,
        };
        for (_, id, signed, bytes) in found {
            cache.index(id, signed, None, bytes);
        }
        cache.evict(None);
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Is the segment on disk, verified?
    pub fn contains(&self, id: &SegmentId) -> bool {
        self.entries.get(id).is_some_and(|e| e.verified.is_some())
    }

    /// Verified headers of `stream` on disk, in id order after `after`, at
    /// most `limit` (a page of a header list).
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
        ids.range((after.map_or(Unbounded, Excluded), Unbounded))
            .filter_map(|id| self.entries.get(id)?.verified.as_ref())
            .take(limit)
            .map(|h| h.signed().clone())
            .collect()
    }

    /// Verified segments of `stream` on disk, with their sizes.
    pub fn held(&self, stream: &StreamId) -> Vec<(SegmentId, u64)> {
        self.by_stream
            .get(stream)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let entry = self.entries.get(id)?;
                entry.verified.as_ref().map(|h| (*id, h.info().length))
            })
            .collect()
    }

    /// Writes a verified segment and deletes the least recently requested
    /// others until within the bound. Returns the segments deleted. Failures
    /// are logged, never fatal: the cache is an optimisation.
    pub fn write(&mut self, header: &VerifiedHeader, body: &[u8]) -> Vec<SegmentId> {
        let id = header.id();
        if self.entries.get(&id).is_some_and(|e| e.verified.is_some()) {
            self.touch(&id);
            return Vec::new();
        }
        let encoded = header.signed().to_pb().encode_to_vec();
        let bytes = (encoded.len() + body.len()) as u64;
        if bytes > self.max_bytes {
            return Vec::new();
        }
        let path = body_path(&self.dir, &id);
        let result = (|| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            write_atomic(&path, body)?;
            write_atomic(&path.with_extension("header"), &encoded)
        })();
        if let Err(e) = result {
            tracing::warn!("cannot cache {}: {e}", path.display());
            return Vec::new();
        }
        self.forget(&id);
        self.index(id, header.signed().clone(), Some(header.clone()), bytes);
        self.evict(Some(id))
    }

    /// Verifies the cached headers of `key`'s stream, deleting those that
    /// fail, and reads back the newest bodies within `budget` bytes (for the
    /// memory store), each hashed again. Every verified segment stays
    /// servable from disk whether it was read back or not.
    pub fn load(
        &mut self,
        key: &StreamKey,
        max_segment: u64,
        budget: u64,
    ) -> Vec<(VerifiedHeader, Bytes)> {
        let ids: Vec<SegmentId> = self
            .by_stream
            .get(&key.id)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let mut verified = Vec::new();
        for id in ids {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            if entry.verified.is_none() {
                match entry.signed.clone().verify(key) {
                    Ok(header) if header.info().length <= max_segment => {
                        entry.verified = Some(header)
                    }
                    _ => {
                        tracing::warn!("deleting cached segment {id}: its header does not verify");
                        self.delete(&id);
                        continue;
                    }
                }
            }
            if let Some(header) = self.entries.get(&id).and_then(|e| e.verified.clone()) {
                verified.push(header);
            }
        }
        verified.sort_by_key(|h| std::cmp::Reverse(h.info().published_at_us));
        let mut loaded = Vec::new();
        let mut used = 0u64;
        for header in verified {
            let length = header.info().length;
            if used + length > budget {
                continue;
            }
            let id = header.id();
            match read_body(&body_path(&self.dir, &id), &header) {
                Some(body) => {
                    used += length;
                    loaded.push((header, body));
                }
                None => self.delete(&id),
            }
        }
        loaded
    }

    /// A request for a segment: marks it recently used and returns its
    /// verified header and the path of its body, to read with [`read_body`]
    /// away from the lock that guards the cache.
    pub fn request(&mut self, id: &SegmentId) -> Option<(VerifiedHeader, PathBuf)> {
        let header = self.entries.get(id)?.verified.clone()?;
        self.touch(id);
        Some((header, body_path(&self.dir, id)))
    }

    /// Deletes a segment whose body turned out damaged.
    pub fn delete(&mut self, id: &SegmentId) {
        let path = body_path(&self.dir, id);
        let _ = fs::remove_file(path.with_extension("header"));
        let _ = fs::remove_file(&path);
        self.forget(id);
    }

    fn index(
        &mut self,
        id: SegmentId,
        signed: SignedHeader,
        verified: Option<VerifiedHeader>,
        bytes: u64,
    ) {
        self.clock += 1;
        self.lru.insert(self.clock, id);
        self.by_stream.entry(id.stream).or_default().insert(id);
        self.used += bytes;
        self.entries.insert(
            id,
            Entry {
                signed,
                verified,
                bytes,
                touched: self.clock,
            },
        );
    }

    fn touch(&mut self, id: &SegmentId) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        self.lru.remove(&entry.touched);
        self.clock += 1;
        entry.touched = self.clock;
        self.lru.insert(self.clock, *id);
    }

    fn forget(&mut self, id: &SegmentId) {
        if let Some(entry) = self.entries.remove(id) {
            self.lru.remove(&entry.touched);
            self.used = self.used.saturating_sub(entry.bytes);
            if let Some(set) = self.by_stream.get_mut(&id.stream) {
                set.remove(id);
                if set.is_empty() {
                    self.by_stream.remove(&id.stream);
                }
            }
        }
    }

    /// Deletes least recently requested segments (never `keep`) until within
    /// the bound.
    fn evict(&mut self, keep: Option<SegmentId>) -> Vec<SegmentId> {
        let mut evicted = Vec::new();
        while self.used > self.max_bytes {
            let Some(victim) = self.lru.values().find(|id| Some(**id) != keep).copied() else {
                break;
            };
            self.delete(&victim);
            evicted.push(victim);
        }
        evicted
    }
}

/// Reads a cached body and checks it against its verified header; bumps the
/// file's modification time, so recency survives a restart. `None` if it is
/// missing or damaged (the caller deletes it).
pub fn read_body(path: &Path, header: &VerifiedHeader) -> Option<Bytes> {
    let length = header.info().length;
    match fs::metadata(path) {
        Ok(meta) if meta.len() == length => {}
        _ => return None,
    }
    let body = fs::read(path).ok()?;
    if header.verify_body(&body, length).is_err() {
        tracing::warn!("cached segment {} is damaged", path.display());
        return None;
    }
    if let Ok(file) = fs::File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
    Some(Bytes::from(body))
}

/// Replaces `path` with `bytes`.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// Bytes of the files in a cache directory (`<stream>/<rendition>/<file>`).
/// Unreadable entries count as 0.
pub fn disk_usage(dir: &Path) -> u64 {
    let entries = |path: &Path| fs::read_dir(path).into_iter().flatten().flatten();
    let mut total = 0;
    for stream in entries(dir) {
        for rendition in entries(&stream.path()) {
            for file in entries(&rendition.path()) {
                total += file
                    .metadata()
                    .map_or(0, |m| if m.is_file() { m.len() } else { 0 });
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcast_proto::{PublisherKey, SegmentInfo};

    fn segment(key: &PublisherKey, stream: &StreamKey, seq: u64) -> (VerifiedHeader, Vec<u8>) {
        let body = vec![seq as u8; 1000];
        let header = SegmentInfo::for_body(SegmentId::media(stream.id, 0, seq), &body, 1, seq)
            .sign(key)
            .verify(stream)
            .unwrap();
        (header, body)
    }

    #[test]
    fn cached_segments_come_back_verified_and_damage_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let key = PublisherKey::from_seed([5; 32]);
        let stream = StreamKey::new(key.public(), "vod");
        let mut cache = Cache::open(dir.path(), 1 << 20).unwrap();
        for seq in 0..3u64 {
            let (header, body) = segment(&key, &stream, seq);
            assert!(cache.write(&header, &body).is_empty());
        }
        // What the index counts is what the disk holds.
        let usage = disk_usage(dir.path());
        assert_eq!(usage, cache.used_bytes());
        assert!(usage > 3 * 1000, "{usage}");
        // Damage one body: after a restart it must not come back.
        let damaged = SegmentId::media(stream.id, 0, 1);
        fs::write(body_path(dir.path(), &damaged), vec![9u8; 1000]).unwrap();
        let mut reopened = Cache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(reopened.used_bytes(), usage);
        assert!(!reopened.contains(&damaged), "unverified until followed");
        let loaded = reopened.load(&stream, 1 << 20, 1 << 20);
        let seqs: Vec<u64> = loaded.iter().map(|(h, _)| h.id().sequence).collect();
        assert_eq!(seqs, vec![2, 0]);
        assert!(!reopened.contains(&damaged));
        assert_eq!(reopened.used_bytes(), disk_usage(dir.path()));
        // A budget keeps the newest in memory; the rest stays servable from disk.
        let mut again = Cache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(again.load(&stream, 1 << 20, 1500).len(), 1);
        assert_eq!(again.headers_after(&stream.id, None, 10).len(), 2);
        // Another stream's key verifies nothing here.
        let other = StreamKey::new(key.public(), "other");
        assert!(again.load(&other, 1 << 20, 1 << 20).is_empty());
    }

    #[test]
    fn stays_within_its_bound_deleting_the_least_recently_requested() {
        let dir = tempfile::tempdir().unwrap();
        let key = PublisherKey::from_seed([6; 32]);
        let stream = StreamKey::new(key.public(), "vod");
        let (first, body) = segment(&key, &stream, 0);
        let mut cache = Cache::open(dir.path(), 1 << 20).unwrap();
        cache.write(&first, &body);
        let one = cache.used_bytes();
        drop(cache);
        // Room for three segments.
        let mut cache = Cache::open(dir.path(), 3 * one + one / 2).unwrap();
        cache.load(&stream, 1 << 20, 0);
        for seq in 1..3 {
            let (header, body) = segment(&key, &stream, seq);
            assert!(cache.write(&header, &body).is_empty());
        }
        // Segment 0 was requested last: segment 1 goes first.
        assert!(cache.request(&first.id()).is_some());
        let (header, body) = segment(&key, &stream, 3);
        assert_eq!(
            cache.write(&header, &body),
            vec![SegmentId::media(stream.id, 0, 1)]
        );
        assert!(cache.used_bytes() <= cache.max_bytes());
        assert_eq!(disk_usage(dir.path()), cache.used_bytes());
        let (header, path) = cache.request(&first.id()).unwrap();
        assert_eq!(read_body(&path, &header).unwrap(), body_of(0));
        // Reopened with a smaller bound, it deletes down to it at once.
        drop(cache);
        let cache = Cache::open(dir.path(), one).unwrap();
        assert!(cache.used_bytes() <= one);
        assert_eq!(disk_usage(dir.path()), cache.used_bytes());
    }

    fn body_of(seq: u64) -> Bytes {
        Bytes::from(vec![seq as u8; 1000])
    }
}
