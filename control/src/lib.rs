//! The bpfship agent's control protocol, shared by the agent (server) and `bpfship agent`
//! (client) so both ends are typed: one JSON request per connection on the agent's root-only
//! Unix socket, one JSON answer carrying each deployment's [`DeploymentStatus`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bpfship_registry::ErrorClass;
use serde::{Deserialize, Serialize};

/// What a request asks the agent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Report the status of one deployment or all.
    Status,
    /// Send an operator command to one deployment.
    #[serde(untagged)]
    Command(Command),
}

impl From<Command> for RequestKind {
    fn from(c: Command) -> Self {
        RequestKind::Command(c)
    }
}

/// A request on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub command: RequestKind,
    /// The deployment; `None` means all (status) — commands need one.
    pub deployment: Option<String>,
    /// The digest to pin (`pin` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub error: Option<String>,
    pub deployments: Vec<DeploymentStatus>,
}

impl Response {
    /// A refusal with its reason.
    pub fn refused(error: String) -> Self {
        Response {
            ok: false,
            error: Some(error),
            deployments: Vec::new(),
        }
    }
}

/// A failed exchange with the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}: cannot reach the agent: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", socket.display())]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: bad answer from the agent: {source}", socket.display())]
    BadAnswer {
        socket: PathBuf,
        source: serde_json::Error,
    },
}

/// Sends a request to the agent at `socket` and reads its answer (the CLI side).
pub fn request(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        socket: socket.into(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        socket: socket.into(),
        source,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| io(std::io::Error::other(e)))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(std::io::Read::take(&stream, 16 * 1024 * 1024))
        .read_line(&mut answer)
        .map_err(io)?;
    serde_json::from_str(&answer).map_err(|source| ClientError::BadAnswer {
        socket: socket.into(),
        source,
    })
}

/// Operator commands, from the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Promote,
    Abort,
    Pause,
    Resume,
    /// Take the request's digest instead of the tag's, even if it was promoted or refused
    /// before (a deliberate downgrade).
    Pin,
    /// Follow the tag again.
    Unpin,
}

/// The last verification result.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct VerificationStatus {
    pub digest: String,
    pub ok: bool,
    pub detail: String,
}

/// A deployment's status, as `bpfship agent status` and the metrics show it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct DeploymentStatus {
    pub name: String,
    pub artifact: String,
    pub hook: String,
    pub phase: Phase,
    pub stable: Option<String>,
    pub canary: Option<String>,
    pub previous: Option<String>,
    pub canary_percent: f64,
    pub step: Option<usize>,
    pub steps: usize,
    /// `flow_hash`, `random`, or why the split is not per flow.
    pub split: String,
    pub fleet_bucket: u32,
    pub in_fleet_cohort: bool,
    /// `ok`, or why the registry could not be used (the stable version keeps running).
    pub registry: String,
    /// The class of the last registry failure (`None` once the registry answers again):
    /// `integrity` means what it served did not match its digest or size — tampering, not an
    /// outage.
    pub registry_failure: Option<ErrorClass>,
    /// Registry failures so far, by class.
    pub registry_failures: BTreeMap<ErrorClass, u64>,
    pub message: String,
    pub last_verification: Option<VerificationStatus>,
    pub verifier_log: Option<String>,
    pub stable_sample: VersionSample,
    pub canary_sample: VersionSample,
    pub analysis: AnalysisRun,
    pub rollbacks: BTreeMap<String, u64>,
    pub last_rollback_latency_us: Option<f64>,
    /// Time from a new digest being seen to its canary being attached.
    pub last_canary_start_ms: Option<f64>,
    /// Cumulative per-version counters for metrics: runs and aborts per slot.
    pub runs: [u64; 2],
    pub aborts: [u64; 2],
    pub program_ids: Vec<u32>,
    /// The loaded versions (stable, canary, previous): how each one's verdicts are counted and
    /// its counts so far.
    pub versions: Vec<VersionStatus>,
    pub rejected: Vec<Rejection>,
    /// Digests whose signatures did not verify yet: checked again with back-off.
    pub awaiting_signature: Vec<AwaitingStatus>,
    /// The digest an operator pinned, taken instead of the tag's.
    pub pinned: Option<String>,
    /// Every digest promoted so far, oldest first (going back to one needs a pin).
    pub history: Vec<Promotion>,
    /// The digest of the policy in force, and why the policy file is not, if it stopped loading.
    pub policy: String,
}

/// One digest awaiting a valid signature.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct AwaitingStatus {
    pub digest: String,
    pub reason: String,
    pub attempts: u32,
    pub retry_in_seconds: f64,
}

/// One promotion: the digest that became stable, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub digest: String,
    /// The signed monotonic version of the release, when its signature carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub promoted_unix: u64,
}

/// The rollout phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing deployed yet.
    #[default]
    Empty,
    /// One version serves everything.
    Stable,
    /// A canary runs beside the stable version.
    Canary,
    /// A canary is held at its step by an operator or an inconclusive check.
    Paused,
}

impl Phase {
    /// The phase as it is spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Empty => "empty",
            Phase::Stable => "stable",
            Phase::Canary => "canary",
            Phase::Paused => "paused",
        }
    }
}

/// A digest the agent refused, rolled back or withdrew: never retried (unless an operator pins
/// it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub digest: String,
    pub reason: String,
    pub at_unix: u64,
}

/// A loaded version as status shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionStatus {
    /// `stable`, `canary` or `previous`.
    pub role: String,
    pub digest: String,
    pub program_id: u32,
    pub verdict_counting: VerdictCounting,
    /// Events per verdict since the version was loaded (empty when not counted).
    pub verdicts: BTreeMap<String, u64>,
}

/// How a version's verdicts are counted (the path its load took).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "path", rename_all = "snake_case")]
pub enum VerdictCounting {
    /// Its main function's exits were rewritten at load to count return values.
    Instrumented {
        exits: usize,
        /// Instructions the epilogue added.
        added_instructions: usize,
    },
    /// Loaded as published: the rewrite did not apply or the kernel verifier refused it.
    Unmodified { reason: String },
    /// The deployment sets `verdicts = "off"`.
    #[default]
    Off,
}

impl std::fmt::Display for VerdictCounting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerdictCounting::Instrumented {
                exits,
                added_instructions,
            } => write!(
                f,
                "instrumented (+{added_instructions} instructions, {exits} exits)"
            ),
            VerdictCounting::Unmodified { reason } => write!(f, "unmodified: {reason}"),
            VerdictCounting::Off => f.write_str("off"),
        }
    }
}

/// What one version did during one interval.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VersionSample {
    /// Events the dispatcher sent to this version.
    pub runs: u64,
    /// XDP aborts attributed to this version.
    pub aborts: u64,
    /// Good and bad events from the version's `bpfship_health` map.
    pub good: u64,
    pub bad: u64,
    /// Nanoseconds per run from `BPF_PROG_TEST_RUN` on the reference packet.
    pub cost_ns: Option<f64>,
    /// Events per verdict (return value bucket); empty when the version's verdicts are not
    /// counted.
    #[serde(default)]
    pub verdicts: BTreeMap<String, u64>,
}

/// The result of measuring one check once.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "result", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Success(String),
    Failure(String),
    NoData(String),
    Error(String),
}

/// Counters of one analysis run (one rollout step).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AnalysisRun {
    pub measurements: u32,
    pub failures: u32,
    pub consecutive_errors: u32,
    pub last: Vec<Outcome>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_wire_form() {
        for (kind, wire) in [
            (RequestKind::Status, "status"),
            (RequestKind::Command(Command::Promote), "promote"),
            (RequestKind::Command(Command::Abort), "abort"),
        ] {
            let req = Request {
                command: kind,
                deployment: Some("edge".into()),
                digest: None,
            };
            let json = serde_json::to_value(&req).unwrap();
            assert_eq!(json["command"], wire);
            let back: Request = serde_json::from_value(json).unwrap();
            assert_eq!(back.command, kind);
        }
        assert!(serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).is_err());
    }

    #[test]
    fn status_round_trips() {
        let s = DeploymentStatus {
            name: "edge".into(),
            phase: Phase::Canary,
            ..Default::default()
        };
        let back: DeploymentStatus =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.name, "edge");
        assert_eq!(back.phase, Phase::Canary);
    }
}
