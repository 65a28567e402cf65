//! The optional on-disk segment cache: every verified segment is also written
//! under `<dir>/<stream id>/<rendition>/`, header and body side by side, so
//! that VOD outlives the memory store and operators can inspect what a node
//! holds. Files are written to a temporary name and renamed, so a reader never
//! sees half a segment. When a node follows a stream again (after a restart),
//! [`load`] brings the cached segments back into the store, verified anew.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use meshcast_proto::{SegmentKind, SignedHeader, StreamKey, VerifiedHeader, pb};
use prost::Message as _;

/// Where a segment's body goes; its header is the same path with `.header`.
pub fn body_path(dir: &Path, header: &VerifiedHeader) -> PathBuf {
    let id = header.id();
    let kind = match id.kind {
        SegmentKind::Media => "media",
        SegmentKind::Init => "init",
    };
    dir.join(id.stream.to_string())
        .join(id.rendition.to_string())
        .join(format!("{kind}-{:010}", id.sequence))
}

/// Writes a verified segment. Failures are logged, never fatal: the cache is
/// an optimisation. Returns how many bytes the cache grew by (0 when the
/// segment was there already or could not be written).
pub fn write(dir: &Path, header: &VerifiedHeader, body: &[u8]) -> u64 {
    let path = body_path(dir, header);
    let result = (|| -> std::io::Result<u64> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let grown = write_atomic(
            &path.with_extension("header"),
            &header.signed().to_pb().encode_to_vec(),
        )?;
        Ok(grown + write_atomic(&path, body)?)
    })();
    match result {
        Ok(grown) => grown,
        Err(e) => {
            tracing::warn!("cannot cache {}: {e}", path.display());
            0
        }
    }
}

/// Replaces `path` with `bytes`; returns the growth in bytes.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<u64> {
    let before = fs::metadata(path).map_or(0, |m| m.len());
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    Ok((bytes.len() as u64).saturating_sub(before))
}

/// Bytes of the files in a cache directory (`<stream>/<rendition>/<file>`),
/// for the cache size gauge when a node starts. Unreadable entries count as 0.
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

/// Reads back the cached segments of one stream, newest first, up to
/// `budget` bytes. Every header and body is verified again (a cache directory
/// is only as trustworthy as the disk); anything that fails is skipped.
pub fn load(
    dir: &Path,
    key: &StreamKey,
    max_segment: u64,
    budget: u64,
) -> Vec<(VerifiedHeader, Bytes)> {
    let mut headers: Vec<(VerifiedHeader, PathBuf)> = Vec::new();
    let stream_dir = dir.join(key.id.to_string());
    let Ok(renditions) = fs::read_dir(&stream_dir) else {
        return Vec::new();
    };
    for rendition in renditions.flatten() {
        let Ok(files) = fs::read_dir(rendition.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "header") {
                continue;
            }
            let header = fs::read(&path)
                .ok()
                .and_then(|bytes| pb::SegmentHeader::decode(bytes.as_slice()).ok())
                .and_then(|msg| SignedHeader::from_pb(&msg).ok())
                .and_then(|signed| signed.verify(key).ok());
            match header {
                Some(header) => headers.push((header, path.with_extension(""))),
                None => tracing::warn!("ignoring unreadable cached header {}", path.display()),
            }
        }
    }
    headers.sort_by_key(|(h, _)| std::cmp::Reverse(h.info().published_at_us));
    let mut loaded = Vec::new();
    let mut used = 0u64;
    for (header, body_path) in headers {
        let length = header.info().length;
        if length > max_segment || used + length > budget {
            continue;
        }
        let body = match fs::metadata(&body_path) {
            Ok(meta) if meta.len() == length => fs::read(&body_path).ok(),
            _ => None,
        };
        match body {
            Some(body) if header.verify_body(&body, max_segment).is_ok() => {
                used += length;
                loaded.push((header, Bytes::from(body)));
            }
            _ => tracing::warn!("ignoring damaged cached segment {}", body_path.display()),
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcast_proto::{PublisherKey, SegmentId, SegmentInfo};

    #[test]
    fn cached_segments_come_back_verified_and_damage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let key = PublisherKey::from_seed([5; 32]);
        let stream = StreamKey::new(key.public(), "vod");
        let mut paths = Vec::new();
        let mut grown = 0;
        for seq in 0..3u64 {
            let body = vec![seq as u8; 1000];
            let header = SegmentInfo::for_body(SegmentId::media(stream.id, 0, seq), &body, 1, seq)
                .sign(&key)
                .verify(&stream)
                .unwrap();
            grown += write(dir.path(), &header, &body);
            paths.push(body_path(dir.path(), &header));
        }
        // What the writes added is what the cache holds; writing again adds nothing.
        let usage = disk_usage(dir.path());
        assert_eq!(usage, grown);
        assert!(usage > 3 * 1000, "{usage}");
        let again = load(dir.path(), &stream, 1 << 20, 1 << 20);
        assert_eq!(write(dir.path(), &again[0].0, &again[0].1), 0);
        assert_eq!(disk_usage(dir.path()), usage);
        // Damage one body: it must not come back.
        fs::write(&paths[1], vec![9u8; 1000]).unwrap();
        let loaded = load(dir.path(), &stream, 1 << 20, 1 << 20);
        let seqs: Vec<u64> = loaded.iter().map(|(h, _)| h.id().sequence).collect();
        assert_eq!(seqs, vec![2, 0]);
        // A budget keeps the newest.
        assert_eq!(load(dir.path(), &stream, 1 << 20, 1500).len(), 1);
        // Another stream's key verifies nothing here.
        let other = StreamKey::new(key.public(), "other");
        assert!(load(dir.path(), &other, 1 << 20, 1 << 20).is_empty());
    }
}
