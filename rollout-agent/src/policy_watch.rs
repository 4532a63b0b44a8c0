//! The policy as it is now. The agent reads the policy file again every few seconds (keys may
//! live in files of their own, so the digest of the loaded policy, keys inlined, is what is
//! compared, not a file time); deployments see a new digest and judge what they run again.
//! A policy file that stops parsing keeps the last valid policy in force and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bpfship_verifier::policy::{Policy, PolicyError};

struct Watched {
    policy: Arc<Policy>,
    checked: Instant,
    /// Why the file on disk is not the policy in force, when it does not load.
    error: Option<String>,
}

/// The current policy, reloaded from its file at most once per `every`.
pub struct PolicyWatch {
    path: PathBuf,
    every: Duration,
    state: Mutex<Watched>,
}

impl PolicyWatch {
    /// Loads the policy; a policy that does not load is an error (the agent does not start).
    pub fn load(path: &Path, every: Duration) -> Result<Self, PolicyError> {
        Ok(PolicyWatch {
            path: path.to_owned(),
            every,
            state: Mutex::new(Watched {
                policy: Arc::new(Policy::load(path)?),
                checked: Instant::now(),
                error: None,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, Watched> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The policy in force (without reading the file).
    pub fn current(&self) -> Arc<Policy> {
        self.state().policy.clone()
    }

    /// Why the policy file is not in force (it stopped loading), if so.
    pub fn error(&self) -> Option<String> {
        self.state().error.clone()
    }

    /// Reads the file again when the last read is older than `every`; returns the policy in
    /// force afterwards.
    pub fn refresh(&self) -> Arc<Policy> {
        let mut s = self.state();
        if s.checked.elapsed() < self.every {
            return s.policy.clone();
        }
        s.checked = Instant::now();
        match Policy::load(&self.path) {
            Ok(p) => {
                if p.digest != s.policy.digest {
                    tracing::info!(path = %self.path.display(), old = %s.policy.digest, new = %p.digest, "policy changed");
                    s.policy = Arc::new(p);
                }
                s.error = None;
            }
            Err(e) => {
                let e = format!(
                    "{e}; the last valid policy ({}) stays in force",
                    s.policy.digest
                );
                if s.error.as_deref() != Some(e.as_str()) {
                    tracing::error!(path = %self.path.display(), error = %e, "policy does not load");
                }
                s.error = Some(e);
            }
        }
        s.policy.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "version = 1\n[[trust]]\nrepositories = [\"a/**\"]\nallow_unsigned = true\n";
    const TWO: &str = "version = 1\n[[trust]]\nrepositories = [\"b/**\"]\nallow_unsigned = true\n";

    #[test]
    fn a_changed_file_is_picked_up_and_a_broken_one_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, ONE).unwrap();
        let w = PolicyWatch::load(&path, Duration::ZERO).unwrap();
        let first = w.current().digest.clone();
        assert_eq!(w.refresh().digest, first, "unchanged");
        std::fs::write(&path, TWO).unwrap();
        let second = w.refresh().digest.clone();
        assert_ne!(second, first);
        assert!(w.current().trust_for("b/x").is_some());
        std::fs::write(&path, "version = [").unwrap();
        assert_eq!(w.refresh().digest, second, "the last valid policy stays");
        assert!(w.error().unwrap().contains("stays in force"));
        std::fs::write(&path, ONE).unwrap();
        assert_eq!(w.refresh().digest, first);
        assert!(w.error().is_none());
    }

    #[test]
    fn reads_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, ONE).unwrap();
        let w = PolicyWatch::load(&path, Duration::from_secs(3600)).unwrap();
        let first = w.current().digest.clone();
        std::fs::write(&path, TWO).unwrap();
        assert_eq!(w.refresh().digest, first, "not due yet");
    }
}
