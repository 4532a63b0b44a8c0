//! The agent's configuration file (`/etc/bpfship/agent.toml`): registry, trust policy, state
//! locations and deployments. Loading checks everything up front so the agent never starts
//! half-configured; every error names the field and the reason.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use bpfship_verifier::policy::RolloutDefaults;

use crate::kernel::instrument::VerdictSet;
use crate::kernel::{Hook, HookKind, SplitMode};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: String,
        field: String,
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This host's identity for fleet cohorts; default: `/etc/machine-id`.
    pub host_id: Option<String>,
    /// Where desired/actual state, the content store and the audit log live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// bpffs directory for this agent's pins (one subdirectory per deployment).
    #[serde(default = "default_pin_root")]
    pub pin_root: PathBuf,
    /// Root-only Unix socket for `bpfship agent …`.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Prometheus metrics listener (`host:port`, loopback); empty string disables it.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: String,
    /// Append-only JSON-lines audit log; default `<state_dir>/audit.jsonl`.
    pub audit_log: Option<PathBuf>,
    /// Trust and content policy (DESIGN §5) applied to every artifact.
    pub policy: PathBuf,
    /// How often each deployment's tag is checked (HEAD).
    #[serde(default = "default_poll_interval")]
    pub poll_interval_seconds: f64,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default, rename = "deployment")]
    pub deployments: Vec<DeploymentSpec>,
}

/// How to reach registries. Credentials come from the docker config (`DOCKER_CONFIG`, else
/// `~/.docker/config.json`), as for the CLI.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registries reached over plain HTTP (loopback addresses always may be).
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM files).
    #[serde(default)]
    pub ca_certificates: Vec<PathBuf>,
    /// Seconds one registry request may take, body included (default 600).
    pub timeout_seconds: Option<f64>,
}

impl RegistryConfig {
    /// The request timeout, when configured (checked at load).
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.timeout_seconds.map(std::time::Duration::from_secs_f64)
    }
}

/// One program the agent keeps rolled out at one hook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// `[a-z0-9_-]`, unique: names the pin directory and the state file.
    pub name: String,
    /// `registry/repo:tag` to follow, or `registry/repo@sha256:…` to pin.
    pub artifact: String,
    /// The program's function name in the ELF object.
    pub program: String,
    pub hook: Hook,
    #[serde(default)]
    pub rollout: RolloutSpec,
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Health checks; XDP and TC deployments that configure none get
    /// [`default_verdict_checks`].
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// Whether each version's verdicts are counted by instrumenting it at load.
    #[serde(default)]
    pub verdicts: VerdictsSetting,
}

/// How a deployment's versions are loaded with respect to verdict counting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictsSetting {
    /// Each version's main function exits are rewritten to count its return values
    /// (`bpfship_kernel::instrument`); a version the rewrite cannot apply to, or whose
    /// instrumented form the kernel verifier refuses, loads unmodified and status says why.
    #[default]
    Instrument,
    /// Versions load exactly as published; `verdicts` checks are unavailable.
    Off,
}

/// How a new version is rolled out on this host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Canary shares in percent (ascending, each in (0, 100]); the version is promoted after the
    /// last step's bake. Default: the policy's `[rollout]` steps and bake time.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Per-flow (default for XDP/TC) or per-event split.
    #[serde(default)]
    pub split: SplitMode,
    /// Share of the fleet that takes canaries: this host does when
    /// `SHA-256(salt ‖ host_id) mod 10000 < fleet_percent × 100`.
    #[serde(default = "hundred")]
    pub fleet_percent: f64,
    /// Cohort salt; default: the deployment name.
    pub salt: Option<String>,
    /// How long the previous version stays loaded after promotion, for a one-syscall rollback.
    /// Default: the policy's `[rollout] rollback_window_seconds`.
    pub rollback_window_seconds: Option<f64>,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            steps: Vec::new(),
            split: SplitMode::default(),
            fleet_percent: 100.0,
            salt: None,
            rollback_window_seconds: None,
        }
    }
}

impl RolloutSpec {
    /// Fills what the deployment leaves unset from the policy's `[rollout]` defaults.
    pub fn inherit(&mut self, defaults: &RolloutDefaults) {
        if self.steps.is_empty() {
            self.steps = defaults
                .steps
                .iter()
                .map(|p| Step {
                    percent: f64::from(*p),
                    bake_seconds: defaults.bake_seconds as f64,
                })
                .collect();
        }
        self.rollback_window_seconds
            .get_or_insert(defaults.rollback_window_seconds as f64);
    }

    /// The rollback window (the policy's default when the deployment sets none).
    pub fn rollback_window(&self) -> f64 {
        self.rollback_window_seconds
            .unwrap_or(RolloutDefaults::default().rollback_window_seconds as f64)
    }
}

/// One canary step.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub percent: f64,
    pub bake_seconds: f64,
}

impl Step {
    /// The share in basis points, as the dispatcher takes it.
    pub fn basis_points(&self) -> u32 {
        (self.percent * 100.0).round().clamp(0.0, 10_000.0) as u32
    }
}

/// Argo-style analysis settings, per deployment.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSpec {
    /// Seconds between measurements.
    #[serde(default = "default_interval")]
    pub interval_seconds: f64,
    /// Failed measurements tolerated per step; one more rolls back.
    #[serde(default)]
    pub failure_limit: u32,
    /// Consecutive measurement errors tolerated; one more rolls back.
    #[serde(default = "default_consecutive_error_limit")]
    pub consecutive_error_limit: u32,
    /// Measurements each step needs before it can advance (Argo's `count`); the step also
    /// lasts at least its bake time. Default 1 when checks are configured.
    pub count: Option<u32>,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            interval_seconds: default_interval(),
            failure_limit: 0,
            consecutive_error_limit: default_consecutive_error_limit(),
            count: None,
        }
    }
}

/// What to do when a check has no data or its query fails.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Inconclusive {
    /// Counts as a failed measurement.
    Fail,
    /// Skipped: neither success nor failure.
    Ignore,
    /// Pauses the rollout until an operator resumes or aborts it.
    Pause,
}

/// A health check comparing the canary with the stable version running beside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawCheck")]
pub struct CheckSpec {
    pub name: Option<String>,
    pub kind: CheckKind,
    /// A bound on the canary's value.
    pub max: Option<f64>,
    /// A bound on canary ÷ stable (stable must have data).
    pub max_ratio: Option<f64>,
    /// A lower bound on the value (e.g. a success rate from Prometheus).
    pub min: Option<f64>,
    /// With `max_ratio`: a canary value at most this much above stable's always passes (so a
    /// stable value of 0 does not make any canary event a failure).
    pub margin: Option<f64>,
    pub on_no_data: Inconclusive,
    pub on_error: Inconclusive,
}

/// The measured quantity.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// The share of events given `verdict` (a bucket name of the hook's [`VerdictSet`]:
    /// `drop`, `aborted`, `tx`, … for XDP; `shot`, `redirect`, … for TC), counted by
    /// instrumentation.
    Verdicts { verdict: String },
    /// XDP aborts per event (`xdp:xdp_exception`, attributed per version).
    Aborts,
    /// Bad events ÷ all events from the program's `bpfship_health` map (key 0 good, key 1 bad).
    BadEvents,
    /// Nanoseconds per run measured with `BPF_PROG_TEST_RUN` on a reference packet.
    Cost,
    /// A Prometheus instant query; the first sample's value is the canary's.
    Prometheus { url: String, query: String },
    /// An HTTP endpoint that must answer 2xx.
    Http { url: String },
}

/// A check as written in the file (flat, every field checked for typos).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    url: Option<String>,
    query: Option<String>,
    verdict: Option<String>,
    max: Option<f64>,
    max_ratio: Option<f64>,
    min: Option<f64>,
    margin: Option<f64>,
    #[serde(default = "inconclusive_ignore")]
    on_no_data: Inconclusive,
    #[serde(default = "inconclusive_ignore")]
    on_error: Inconclusive,
}

impl TryFrom<RawCheck> for CheckSpec {
    type Error = String;

    fn try_from(r: RawCheck) -> Result<Self, String> {
        let need =
            |v: Option<String>, f: &str| v.ok_or_else(|| format!("a {} check needs `{f}`", r.kind));
        let kind = match r.kind.as_str() {
            "verdicts" => CheckKind::Verdicts {
                verdict: need(r.verdict.clone(), "verdict")?,
            },
            "aborts" => CheckKind::Aborts,
            "bad_events" => CheckKind::BadEvents,
            "cost" => CheckKind::Cost,
            "prometheus" => CheckKind::Prometheus {
                url: need(r.url.clone(), "url")?,
                query: need(r.query.clone(), "query")?,
            },
            "http" => CheckKind::Http {
                url: need(r.url.clone(), "url")?,
            },
            other => {
                return Err(format!(
                    "unknown check type `{other}`, expected verdicts, aborts, bad_events, cost, prometheus or http"
                ));
            }
        };
        if r.verdict.is_some() && !matches!(kind, CheckKind::Verdicts { .. }) {
            return Err(format!("a {} check takes no verdict", r.kind));
        }
        if !matches!(kind, CheckKind::Prometheus { .. } | CheckKind::Http { .. })
            && (r.url.is_some() || r.query.is_some())
        {
            return Err(format!("a {} check takes no url or query", r.kind));
        }
        Ok(CheckSpec {
            name: r.name,
            kind,
            max: r.max,
            max_ratio: r.max_ratio,
            min: r.min,
            margin: r.margin,
            on_no_data: r.on_no_data,
            on_error: r.on_error,
        })
    }
}

fn default_state_dir() -> PathBuf {
    "/var/lib/bpfship".into()
}
fn default_pin_root() -> PathBuf {
    "/sys/fs/bpf/bpfship".into()
}
fn default_control_socket() -> PathBuf {
    "/run/bpfship/agent.sock".into()
}
fn default_metrics_address() -> String {
    "127.0.0.1:9464".into()
}
fn default_poll_interval() -> f64 {
    30.0
}
fn hundred() -> f64 {
    100.0
}
fn default_interval() -> f64 {
    10.0
}
fn default_consecutive_error_limit() -> u32 {
    4
}
fn inconclusive_ignore() -> Inconclusive {
    Inconclusive::Ignore
}

/// The checks an XDP or TC deployment gets when it configures none: for each verdict that does
/// not hand the packet on (XDP `aborted`, `drop`, `tx`, `redirect`; TC `shot`, `redirect`,
/// `stolen`), the canary's share may not be far above stable's — over twice stable's and more
/// than 5 points above it rolls back. Other hooks get none.
pub fn default_verdict_checks(kind: HookKind) -> Vec<CheckSpec> {
    let verdicts: &[&str] = match kind {
        HookKind::Xdp => &["aborted", "drop", "tx", "redirect"],
        HookKind::Tc => &["shot", "redirect", "stolen"],
        HookKind::Tracepoint | HookKind::Uprobe => &[],
    };
    verdicts
        .iter()
        .map(|v| CheckSpec {
            name: Some(format!("verdict_{v}")),
            kind: CheckKind::Verdicts {
                verdict: (*v).to_string(),
            },
            max: None,
            max_ratio: Some(2.0),
            min: None,
            margin: Some(0.05),
            on_no_data: Inconclusive::Ignore,
            on_error: Inconclusive::Ignore,
        })
        .collect()
}

impl AgentConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks configuration text; every relative path (`policy`, `state_dir`,
    /// `pin_root`, `control_socket`, `audit_log`, `registry.ca_certificates`) is resolved
    /// against the file's directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let mut config: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: shown.clone(),
            message: e.to_string().replace('\n', " ").trim().to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let paths = [
            &mut config.policy,
            &mut config.state_dir,
            &mut config.pin_root,
            &mut config.control_socket,
        ]
        .into_iter()
        .chain(config.audit_log.as_mut())
        .chain(config.registry.ca_certificates.iter_mut());
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for d in &mut config.deployments {
            if d.checks.is_empty() && d.verdicts == VerdictsSetting::Instrument {
                d.checks = default_verdict_checks(d.hook.kind());
            }
        }
        config
            .check()
            .map_err(|(field, reason)| ConfigError::Invalid {
                path: shown,
                field,
                reason,
            })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, r: String| Err((f.to_string(), r));
        if !(self.poll_interval_seconds.is_finite() && self.poll_interval_seconds >= 0.1) {
            return bad("poll_interval_seconds", "must be at least 0.1".into());
        }
        if let Some(t) = self.registry.timeout_seconds
            && !(t.is_finite() && t > 0.0 && t <= 86_400.0)
        {
            return bad(
                "registry.timeout_seconds",
                "must be a number of seconds between 0 and 86400".into(),
            );
        }
        if !self.metrics_address.is_empty() {
            match self.metrics_address.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_loopback() => {}
                Ok(_) => return bad("metrics_address", "must be a loopback address".into()),
                Err(e) => return bad("metrics_address", e.to_string()),
            }
        }
        let mut names = HashSet::new();
        for (i, d) in self.deployments.iter().enumerate() {
            let at = |f: &str| format!("deployment[{i}] ({}).{f}", d.name);
            if d.name.is_empty()
                || d.name.len() > 64
                || !d
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return bad(&at("name"), "use 1-64 characters from [a-z0-9_-]".into());
            }
            if !names.insert(d.name.as_str()) {
                return bad(&at("name"), "another deployment has this name".into());
            }
            if let Err(e) = bpfship_registry::Reference::parse(&d.artifact) {
                return bad(&at("artifact"), e.to_string());
            }
            if d.program.is_empty() {
                return bad(&at("program"), "must name the program function".into());
            }
            match &d.hook {
                Hook::Xdp { interface, .. } | Hook::Tc { interface, .. } => {
                    if interface.is_empty() || interface.len() > 15 || interface.contains('/') {
                        return bad(&at("hook.interface"), "not an interface name".into());
                    }
                }
                Hook::Tracepoint { category, name } => {
                    if category.is_empty() || name.is_empty() {
                        return bad(&at("hook"), "tracepoint needs category and name".into());
                    }
                }
                Hook::Uprobe { binary, symbol } => {
                    if !binary.starts_with('/') || symbol.is_empty() {
                        return bad(
                            &at("hook"),
                            "uprobe needs an absolute binary path and a symbol".into(),
                        );
                    }
                }
            }
            let r = &d.rollout;
            let mut prev = 0.0;
            for (s, step) in r.steps.iter().enumerate() {
                let f = at(&format!("rollout.steps[{s}]"));
                if !(step.percent > prev && step.percent <= 100.0) {
                    return bad(
                        &format!("{f}.percent"),
                        format!("must be above the previous step ({prev}) and at most 100"),
                    );
                }
                if !(step.bake_seconds.is_finite() && step.bake_seconds >= 0.0) {
                    return bad(&format!("{f}.bake_seconds"), "must be 0 or more".into());
                }
                prev = step.percent;
            }
            if !(0.0..=100.0).contains(&r.fleet_percent) {
                return bad(
                    &at("rollout.fleet_percent"),
                    "must be within 0..=100".into(),
                );
            }
            if r.rollback_window_seconds
                .is_some_and(|w| !(w.is_finite() && w >= 0.0))
            {
                return bad(
                    &at("rollout.rollback_window_seconds"),
                    "must be 0 or more".into(),
                );
            }
            if !(d.analysis.interval_seconds.is_finite() && d.analysis.interval_seconds >= 0.05) {
                return bad(
                    &at("analysis.interval_seconds"),
                    "must be at least 0.05".into(),
                );
            }
            for (c, check) in d.checks.iter().enumerate() {
                let f = at(&format!("checks[{c}]"));
                if check.max.is_none()
                    && check.max_ratio.is_none()
                    && check.min.is_none()
                    && !matches!(check.kind, CheckKind::Http { .. })
                {
                    return bad(&f, "needs a bound: max, max_ratio or min".into());
                }
                if check.max_ratio.is_some()
                    && matches!(
                        check.kind,
                        CheckKind::Prometheus { .. } | CheckKind::Http { .. }
                    )
                {
                    return bad(
                        &format!("{f}.max_ratio"),
                        "external checks have no stable baseline: use max or min".into(),
                    );
                }
                if let CheckKind::Prometheus { url, .. } | CheckKind::Http { url } = &check.kind
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    return bad(&format!("{f}.url"), "must be an http(s) URL".into());
                }
                if let CheckKind::Verdicts { verdict } = &check.kind {
                    let set = VerdictSet::for_hook(d.hook.kind());
                    if d.verdicts == VerdictsSetting::Off {
                        return bad(
                            &format!("{f}.type"),
                            "verdicts are not counted: the deployment sets verdicts = \"off\""
                                .into(),
                        );
                    }
                    if set.index(verdict).is_none() {
                        return bad(
                            &format!("{f}.verdict"),
                            format!(
                                "`{verdict}` is not a verdict of this hook: {}",
                                set.names().join(", ")
                            ),
                        );
                    }
                }
                if check.margin.is_some() && check.max_ratio.is_none() {
                    return bad(&format!("{f}.margin"), "applies to max_ratio only".into());
                }
                if check.kind == CheckKind::Cost && !d.hook.kind().has_flows() {
                    return bad(
                        &format!("{f}.type"),
                        "cost is measured with BPF_PROG_TEST_RUN, which tracepoint and uprobe programs do not support".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// The audit log path.
    pub fn audit_log_path(&self) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| self.state_dir.join("audit.jsonl"))
    }

    /// This host's id: the configured one, else `/etc/machine-id`, else the hostname.
    pub fn host_id(&self) -> String {
        if let Some(h) = &self.host_id {
            return h.clone();
        }
        std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_default()
    }
}

/// The host's fleet bucket for a rollout salt: `SHA-256(salt ‖ host_id)` read as a big-endian
/// integer, mod 10000. Operators can compute it with
/// `printf '%s%s' SALT HOSTID | sha256sum` and the first 16 hex digits mod 10000.
pub fn fleet_bucket(salt: &str, host_id: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(host_id.as_bytes())
        .finalize();
    let top = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
    (top % 10_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
policy = "policy.toml"
[[deployment]]
name = "edge"
artifact = "127.0.0.1:5000/acme/xdp:stable"
program = "filter"
hook = { type = "xdp", interface = "eth0", mode = "generic" }
"#;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("/etc/bpfship/agent.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.policy, Path::new("/etc/bpfship/policy.toml"));
        let mut d = c.deployments[0].clone();
        d.rollout.inherit(&RolloutDefaults::default());
        assert_eq!(d.rollout.steps.len(), 4);
        assert_eq!(d.rollout.split, SplitMode::FlowHash);
        assert_eq!(d.rollout.steps[0].basis_points(), 100);
        assert_eq!(d.rollout.rollback_window(), 600.0);
        assert_eq!(d.verdicts, VerdictsSetting::Instrument);
        let names: Vec<_> = d.checks.iter().filter_map(|c| c.name.as_deref()).collect();
        assert_eq!(
            names,
            [
                "verdict_aborted",
                "verdict_drop",
                "verdict_tx",
                "verdict_redirect"
            ]
        );
    }

    #[test]
    fn the_policy_rollout_defaults_fill_what_a_deployment_leaves_unset() {
        let policy = bpfship_verifier::policy::Policy::from_toml(
            "[rollout]\nsteps = [5, 25, 100]\nbake_seconds = 300\nrollback_window_seconds = 3600\n",
            Path::new("/etc/bpfship/policy.toml"),
        )
        .unwrap();
        let c = parse(MINIMAL).unwrap();
        let mut d = c.deployments[0].clone();
        d.rollout.inherit(&policy.rules.rollout);
        let steps: Vec<_> = d
            .rollout
            .steps
            .iter()
            .map(|s| (s.percent, s.bake_seconds))
            .collect();
        assert_eq!(steps, [(5.0, 300.0), (25.0, 300.0), (100.0, 300.0)]);
        assert_eq!(d.rollout.rollback_window(), 3600.0);
        // What the deployment sets wins.
        let own = format!(
            "{MINIMAL}[deployment.rollout]\nsteps = [{{percent = 100, bake_seconds = 1}}]\nrollback_window_seconds = 9\n"
        );
        let mut d = parse(&own).unwrap().deployments[0].clone();
        d.rollout.inherit(&policy.rules.rollout);
        assert_eq!(d.rollout.steps.len(), 1);
        assert_eq!(d.rollout.rollback_window(), 9.0);
    }

    #[test]
    fn relative_paths_are_resolved_against_the_config_directory() {
        let text = format!(
            "state_dir = \"state\"\npin_root = \"/sys/fs/bpf/x\"\ncontrol_socket = \"run/agent.sock\"\n\
             audit_log = \"log/audit.jsonl\"\n{MINIMAL}[registry]\nca_certificates = [\"ca/one.pem\", \"/abs/two.pem\"]\n"
        );
        let c = AgentConfig::parse(&text, Path::new("/srv/conf/agent.toml")).unwrap();
        assert_eq!(c.policy, Path::new("/srv/conf/policy.toml"));
        assert_eq!(c.state_dir, Path::new("/srv/conf/state"));
        assert_eq!(c.pin_root, Path::new("/sys/fs/bpf/x"));
        assert_eq!(c.control_socket, Path::new("/srv/conf/run/agent.sock"));
        assert_eq!(c.audit_log_path(), Path::new("/srv/conf/log/audit.jsonl"));
        assert_eq!(
            c.registry.ca_certificates,
            [Path::new("/srv/conf/ca/one.pem"), Path::new("/abs/two.pem")]
        );
        let rel = AgentConfig::parse(
            "pin_root = \"pins\"\npolicy = \"p.toml\"\n",
            Path::new("/a/agent.toml"),
        )
        .unwrap();
        assert_eq!(rel.pin_root, Path::new("/a/pins"));
    }

    #[test]
    fn verdict_checks_and_the_setting() {
        let with = |extra: &str| parse(&format!("{MINIMAL}{extra}"));
        // Configured checks replace the defaults.
        let c = with("[[deployment.checks]]\ntype = \"verdicts\"\nverdict = \"pass\"\nmin = 0.5\n")
            .unwrap();
        assert_eq!(c.deployments[0].checks.len(), 1);
        assert_eq!(
            c.deployments[0].checks[0].kind,
            CheckKind::Verdicts {
                verdict: "pass".into()
            }
        );
        // Off: versions load as published, no default checks.
        let off = with("verdicts = \"off\"\n").unwrap();
        assert!(off.deployments[0].checks.is_empty());
        // TC defaults; tracepoints get none.
        let tc = parse(&MINIMAL.replace(
            "type = \"xdp\", interface = \"eth0\", mode = \"generic\"",
            "type = \"tc\", interface = \"eth0\", direction = \"ingress\"",
        ))
        .unwrap();
        assert_eq!(tc.deployments[0].checks.len(), 3);
        let tp = parse(&MINIMAL.replace(
            "type = \"xdp\", interface = \"eth0\", mode = \"generic\"",
            "type = \"tracepoint\", category = \"sched\", name = \"sched_switch\"",
        ))
        .unwrap();
        assert!(tp.deployments[0].checks.is_empty());
        for (extra, want) in [
            (
                "[[deployment.checks]]\ntype = \"verdicts\"\nverdict = \"shot\"\nmax = 0.1\n",
                "checks[0].verdict: `shot` is not a verdict of this hook: aborted, drop, pass",
            ),
            (
                "[[deployment.checks]]\ntype = \"verdicts\"\nmax = 0.1\n",
                "a verdicts check needs `verdict`",
            ),
            (
                "[[deployment.checks]]\ntype = \"aborts\"\nverdict = \"drop\"\nmax = 0.1\n",
                "takes no verdict",
            ),
            (
                "[[deployment.checks]]\ntype = \"verdicts\"\nverdict = \"drop\"\nmax = 0.1\nmargin = 0.1\n",
                "checks[0].margin: applies to max_ratio only",
            ),
            (
                "verdicts = \"off\"\n[[deployment.checks]]\ntype = \"verdicts\"\nverdict = \"drop\"\nmax = 0.1\n",
                "verdicts = \"off\"",
            ),
            ("verdicts = \"sometimes\"\n", "unknown variant"),
        ] {
            let e = with(extra).expect_err(want).to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                MINIMAL.replace("name = \"edge\"", "name = \"Edge!\""),
                "deployment[0] (Edge!).name",
            ),
            (
                MINIMAL.replace("acme/xdp:stable", "acme/XDP::"),
                ".artifact",
            ),
            (
                format!(
                    "{MINIMAL}[deployment.rollout]\nsteps = [{{percent = 50, bake_seconds = 1}}, {{percent = 10, bake_seconds = 1}}]\n"
                ),
                "rollout.steps[1].percent",
            ),
            (
                format!("{MINIMAL}[[deployment.checks]]\ntype = \"aborts\"\n"),
                "checks[0]: needs a bound",
            ),
            (
                format!("{MINIMAL}[[deployment.checks]]\ntype = \"http\"\nurl = \"ftp://x\"\n"),
                "checks[0].url",
            ),
            (
                MINIMAL.replace("mode = \"generic\"", "mode = \"turbo\""),
                "unknown variant",
            ),
            (format!("{MINIMAL}surprise = 1\n"), "unknown field"),
            (
                format!("metrics_address = \"0.0.0.0:9\"\n{MINIMAL}"),
                "metrics_address: must be a loopback",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).expect_err(want).to_string();
            assert!(e.contains(want), "{e} should contain {want}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.toml");
        let c = AgentConfig::load(&path).unwrap();
        assert_eq!(c.deployments.len(), 2);
        assert_eq!(c.deployments[0].checks.len(), 5);
        assert_eq!(
            c.deployments[1].checks.len(),
            3,
            "TC default verdict checks"
        );
    }

    #[test]
    fn fleet_bucket_is_stable_and_spread() {
        // Fixed value: operators and other implementations can reproduce it.
        assert_eq!(
            fleet_bucket("edge", "host-1"),
            fleet_bucket("edge", "host-1")
        );
        let mut under_10 = 0;
        for i in 0..10_000 {
            if fleet_bucket("salt", &format!("host-{i}")) < 1000 {
                under_10 += 1;
            }
        }
        assert!((800..1200).contains(&under_10), "{under_10}");
    }
}
