//! The node's libp2p identity, kept in its data directory so that a restarted
//! node keeps its peer id (and the reputation and routing entries tied to it).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// File name of the identity inside the data directory.
pub const FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("cannot read node identity {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("node identity {path} is corrupt ({reason}); move it away to create a new one")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write node identity {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Loads `data_dir/node.key`, or creates it (mode 0600) on first start.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    fs::create_dir_all(data_dir).map_err(|source| IdentityError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let path = data_dir.join(FILE);
    match fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
            path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| IdentityError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let write = |path: &Path| -> io::Result<()> {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)?;
                file.write_all(&bytes)?;
                file.sync_all()
            };
            write(&path).map_err(|source| IdentityError::Write { path, source })?;
            Ok(key)
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_node_keeps_its_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap().public().to_peer_id();
        let second = load_or_create(dir.path()).unwrap().public().to_peer_id();
        assert_eq!(first, second);
        fs::write(dir.path().join(FILE), b"garbage").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
