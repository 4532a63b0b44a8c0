//! The local content store: verified artifact content by digest, so the agent can re-establish
//! the promoted version after a reboot without the registry.
//!
//! Content is kept while some deployment holds it: what its saved state names (stable, canary,
//! previous), or what it stored and has not saved a state without yet. Deployments can share
//! content (the same program on two interfaces), so one letting go of it removes it only when no
//! other holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bpfship_verifier::digest::{is_sha256_digest, sha256_digest};

/// Content addressed by `sha256:` digest under `<state_dir>/store/sha256/`.
#[derive(Debug)]
pub struct ContentStore {
    root: PathBuf,
    /// Deployment name → the content digests it holds.
    holds: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl ContentStore {
    pub fn new(state_dir: &Path) -> Self {
        ContentStore {
            root: state_dir.join("store").join("sha256"),
            holds: Mutex::new(BTreeMap::new()),
        }
    }

    /// The holds (a poisoned lock still holds them: use them).
    fn holds(&self) -> MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        is_sha256_digest(digest).then(|| self.root.join(&digest["sha256:".len()..]))
    }

    /// Stores `bytes` for `holder`, returning their digest; the content is held until the
    /// holder's next [`hold_only`](Self::hold_only) leaves it out.
    pub fn put(&self, bytes: &[u8], holder: &str) -> std::io::Result<String> {
        let digest = sha256_digest(bytes);
        let path = self
            .path(&digest)
            .ok_or_else(|| std::io::Error::other("bad digest"))?;
        let mut holds = self.holds();
        if !path.exists() {
            crate::state::write_atomic(&path, bytes)?;
        }
        holds
            .entry(holder.to_owned())
            .or_default()
            .insert(digest.clone());
        Ok(digest)
    }

    /// Makes `digests` all that `holder` holds (what its saved state names), removing content
    /// that it held and nobody holds any more.
    pub fn hold_only<'d>(&self, holder: &str, digests: impl IntoIterator<Item = &'d str>) {
        let mut holds = self.holds();
        let now: BTreeSet<String> = digests.into_iter().map(str::to_owned).collect();
        let before = holds.insert(holder.to_owned(), now).unwrap_or_default();
        for digest in before {
            if !holds.values().any(|held| held.contains(&digest)) {
                self.remove(&digest);
            }
        }
    }

    /// Removes all content no deployment holds (once every deployment has said what it holds:
    /// content of deployments no longer configured, or left by a crash between storing and
    /// saving a state).
    pub fn remove_unheld(&self) {
        let holds = self.holds();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let digest = format!("sha256:{}", e.file_name().to_string_lossy());
            if !holds.values().any(|held| held.contains(&digest)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
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

    fn remove(&self, digest: &str) {
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
        let d = s.put(b"hello", "a").unwrap();
        assert_eq!(s.get(&d).unwrap(), b"hello");
        std::fs::write(s.path(&d).unwrap(), b"HELLO").unwrap();
        assert!(s.get(&d).unwrap_err().contains("content changed"));
        assert!(s.get("sha256:../../etc").is_err());
    }

    #[test]
    fn content_stays_while_any_deployment_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::new(dir.path());
        let shared = s.put(b"shared", "a").unwrap();
        s.put(b"shared", "b").unwrap();
        let only_a = s.put(b"only a", "a").unwrap();
        s.hold_only("a", [shared.as_str()]);
        assert!(s.get(&only_a).is_err(), "released by its only holder");
        s.hold_only("a", []);
        assert_eq!(s.get(&shared).unwrap(), b"shared", "b still holds it");
        s.hold_only("b", []);
        assert!(s.get(&shared).is_err());
    }

    #[test]
    fn what_nobody_holds_is_removed_once_all_have_said() {
        let dir = tempfile::tempdir().unwrap();
        let before = ContentStore::new(dir.path());
        let kept = before.put(b"kept", "a").unwrap();
        let orphan = before.put(b"orphan", "gone").unwrap();
        // A restart: the deployments still configured say what their states name.
        let after = ContentStore::new(dir.path());
        after.hold_only("a", [kept.as_str()]);
        after.remove_unheld();
        assert_eq!(after.get(&kept).unwrap(), b"kept");
        assert!(after.get(&orphan).is_err());
    }
}
