//! What the agent has done, persisted per deployment so a restarted agent settles correctly:
//! written atomically (temp file + fsync + rename) after every transition.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A version the agent has verified and loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Manifest digest (`sha256:…`) the version came from.
    pub digest: String,
    /// Digest of the ELF object in the local content store.
    pub content_digest: String,
    /// Digest of the policy it was verified against.
    pub policy_digest: Option<String>,
    /// The signer key hint(s) that verified it.
    pub signers: Vec<String>,
}

impl VersionRecord {
    /// Short, filesystem-safe name used for the version's pins.
    pub fn pin_name(&self) -> String {
        let hex = self.digest.trim_start_matches("sha256:");
        format!("v-{}", &hex[..hex.len().min(16)])
    }
}

pub use bpfship_control::{Phase, Rejection};

/// Persisted per-deployment state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentState {
    pub phase: Phase,
    pub stable: Option<VersionRecord>,
    pub canary: Option<VersionRecord>,
    /// Index into the rollout steps while a canary runs.
    pub step: usize,
    /// The version replaced by the last promotion, kept loaded until `previous_until_unix`.
    pub previous: Option<VersionRecord>,
    pub previous_until_unix: u64,
    pub rejected: Vec<Rejection>,
    /// The canary runs at the hook for the whole host (the dispatcher cannot tail-call it).
    #[serde(default)]
    pub whole_host: Option<String>,
}

impl DeploymentState {
    /// Whether `digest` was refused or rolled back before.
    pub fn rejection(&self, digest: &str) -> Option<&Rejection> {
        self.rejected.iter().find(|r| r.digest == digest)
    }
}

/// Where a deployment's state file lives.
pub fn state_path(state_dir: &Path, deployment: &str) -> PathBuf {
    state_dir
        .join("deployments")
        .join(format!("{deployment}.json"))
}

/// Reads a deployment's state; a missing file is an empty state.
pub fn load(path: &Path) -> Result<DeploymentState, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeploymentState::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `bytes` to `path` atomically: a crash leaves the old or the new file, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Persists a deployment's state.
pub fn save(path: &Path, state: &DeploymentState) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    write_atomic(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = state_path(dir.path(), "edge");
        assert_eq!(load(&p).unwrap(), DeploymentState::default());
        let s = DeploymentState {
            phase: Phase::Canary,
            stable: Some(VersionRecord {
                digest: format!("sha256:{}", "a".repeat(64)),
                content_digest: "sha256:b".into(),
                policy_digest: None,
                signers: vec!["hint".into()],
            }),
            step: 2,
            ..Default::default()
        };
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), s);
        assert_eq!(s.stable.unwrap().pin_name(), "v-aaaaaaaaaaaaaaaa");
        std::fs::write(&p, b"{not json").unwrap();
        assert!(load(&p).unwrap_err().contains("edge.json"));
    }
}
