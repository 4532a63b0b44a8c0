//! The local content store: verified artifact content by digest, so the agent can re-establish
//! the promoted version after a reboot without the registry.

use std::path::{Path, PathBuf};

use bpfship_verifier::digest::{is_sha256_digest, sha256_digest};

/// Content addressed by `sha256:` digest under `<state_dir>/store/sha256/`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    pub fn new(state_dir: &Path) -> Self {
        ContentStore {
            root: state_dir.join("store").join("sha256"),
        }
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        is_sha256_digest(digest).then(|| self.root.join(&digest["sha256:".len()..]))
    }

    /// Stores `bytes`, returning their digest.
    pub fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let digest = sha256_digest(bytes);
        let path = self
            .path(&digest)
            .ok_or_else(|| std::io::Error::other("bad digest"))?;
        if !path.exists() {
            crate::state::write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Reads content back, checking it still has its digest.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>, String> {
        let path = self
            .path(digest)
            .ok_or_else(|| format!("not a sha256 digest: {digest}"))?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(format!(
                "{}: content changed on disk (now {actual})",
                path.display()
            ));
        }
        Ok(bytes)
    }

    /// Removes content no longer needed.
    pub fn remove(&self, digest: &str) {
        if let Some(p) = self.path(digest) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::new(dir.path());
        let d = s.put(b"hello").unwrap();
        assert_eq!(s.get(&d).unwrap(), b"hello");
        std::fs::write(s.path(&d).unwrap(), b"HELLO").unwrap();
        assert!(s.get(&d).unwrap_err().contains("content changed"));
        assert!(s.get("sha256:../../etc").is_err());
    }
}
