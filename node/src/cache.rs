//! The optional on-disk segment cache: every verified segment is also written
//! under `<dir>/<stream id>/<rendition>/`, header and body side by side, so
//! that VOD outlives the memory store and operators can inspect what a node
//! holds. Files are written to a temporary name and renamed, so a reader never
//! sees half a segment.

use std::fs;
use std::path::{Path, PathBuf};

use meshcast_proto::{SegmentKind, VerifiedHeader};
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
/// an optimisation.
pub fn write(dir: &Path, header: &VerifiedHeader, body: &[u8]) {
    let path = body_path(dir, header);
    let result = (|| -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        write_atomic(
            &path.with_extension("header"),
            &header.signed().to_pb().encode_to_vec(),
        )?;
        write_atomic(&path, body)
    })();
    if let Err(e) = result {
        tracing::warn!("cannot cache {}: {e}", path.display());
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}
