//! `meshcast keygen`: create a publisher key file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use meshcast_proto::{PublicKey, PublisherKey};
use rand_core::{OsRng, RngCore};

/// Writes a fresh key to `out` (mode 0600) and returns its public key.
///
/// The key is written to a temporary file beside `out` first, so a crash never
/// leaves a half-written key; without `force` it is then hard-linked into
/// place, which fails atomically if `out` appeared meanwhile.
pub fn write_new_key(out: &Path, force: bool) -> anyhow::Result<PublicKey> {
    if !force && out.exists() {
        bail!(
            "{} already exists; pass --force to replace it (streams signed with the old key could no longer be published)",
            out.display()
        );
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "cannot write {}: directory {} does not exist",
            out.display(),
            dir.display()
        );
    }
    let mut seed = [0u8; 32];
    OsRng.try_fill_bytes(&mut seed).map_err(|e| {
        anyhow::anyhow!("the operating system's random number generator failed: {e}")
    })?;
    let key = PublisherKey::from_seed(seed);
    let pem = key.to_pem().context("encoding the key")?;

    let tmp = temp_path(out);
    let written = write_private(&tmp, pem.as_bytes()).and_then(|()| {
        if force {
            fs::rename(&tmp, out).with_context(|| format!("replacing {}", out.display()))
        } else {
            let linked =
                fs::hard_link(&tmp, out).with_context(|| format!("creating {}", out.display()));
            let _ = fs::remove_file(&tmp);
            linked
        }
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    Ok(key.public())
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
