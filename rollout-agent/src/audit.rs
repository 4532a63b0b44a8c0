//! The append-only JSON-lines audit log: one line per decision, with the digest, the policy
//! digest and the reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent<'a> {
    pub deployment: &'a str,
    /// What was decided: `refused`, `loaded`, `canary`, `step`, `promoted`, `rolled_back`, …
    pub action: &'a str,
    pub digest: Option<&'a str>,
    pub policy_digest: Option<&'a str>,
    pub reason: &'a str,
}

/// The audit log file, opened for append.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (creating) the log; existing lines are never rewritten.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AuditLog {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Appends one event with a timestamp (one `write` per line).
    pub fn record(&self, event: &AuditEvent) {
        let mut v = serde_json::to_value(event).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            o.insert("time_unix_ms".into(), (now.as_millis() as u64).into());
        }
        let mut line = v.to_string();
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot append to the audit log");
        }
    }
}
