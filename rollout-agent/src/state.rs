//! What the agent has done, persisted per deployment so a restarted agent settles correctly:
//! written atomically (temp file + fsync + rename) after every transition.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::history::History;

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
    /// Digest, in the content store, of the signature material it was verified with: judged
    /// again by the policy in force at start-up, restore and policy changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<String>,
    /// The signed monotonic version of the release, when its signature carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
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
    /// Every digest ever promoted (downgrades to one of them are refused).
    #[serde(default)]
    pub history: History,
    /// A digest the operator pinned (`bpfship agent pin`): taken instead of the tag's, even if
    /// it was promoted before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
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
        // A state written before the history and signature material existed still loads.
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            r#"{"phase":"stable","stable":{"digest":"sha256:a","content_digest":"sha256:b","policy_digest":null,"signers":[]},"canary":null,"step":0,"previous":null,"previous_until_unix":0,"rejected":[]}"#,
        )
        .unwrap();
        let old = load(&p).unwrap();
        assert!(old.history.promotions().is_empty() && old.stable.unwrap().signatures.is_none());
        let mut s = DeploymentState {
            phase: Phase::Canary,
            stable: Some(VersionRecord {
                digest: format!("sha256:{}", "a".repeat(64)),
                content_digest: "sha256:b".into(),
                policy_digest: None,
                signers: vec!["hint".into()],
                signatures: Some("sha256:c".into()),
                version: Some(4),
            }),
            step: 2,
            pinned: Some("sha256:d".into()),
            ..Default::default()
        };
        s.history.record("sha256:e", Some(3), 7);
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), s);
        assert_eq!(s.stable.unwrap().pin_name(), "v-aaaaaaaaaaaaaaaa");
        std::fs::write(&p, b"{not json").unwrap();
        assert!(load(&p).unwrap_err().contains("edge.json"));
    }
}
