//! The bpfship policy: one TOML file enforced in CI (`bpfship validate --policy`) and on the host
//! (the agent refuses what it refuses). See `policies/README.md` for every field.
//!
//! This module owns the file format, loading and the policy digest. The rules of each artifact kind
//! are evaluated next to their inspectors (`ebpf::check_policy`, `wasm::check_policy`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::certificate_identity::{GithubWorkflow, IdentityPolicy, Matcher};
use crate::digest::sha256_digest;

/// Errors while reading a policy file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read policy: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid policy: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: trusted key {key}: {source}")]
    Key {
        path: PathBuf,
        key: String,
        source: std::io::Error,
    },
    #[error("{path}: trusted root {root}: {source}")]
    TrustedRoot {
        path: PathBuf,
        root: String,
        source: std::io::Error,
    },
}

/// A loaded policy: the parsed rules with every trusted key resolved to its PEM text, and the
/// digest recorded with each decision made under it.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    #[serde(flatten)]
    pub rules: PolicyFile,
    /// `sha256:` digest over the canonical JSON of the rules with keys inlined: it changes when a
    /// rule or a trusted key's content changes, not when whitespace or comments do.
    pub digest: String,
}

/// The policy file as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Format version; only 1 exists.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Who may sign what. The first entry whose pattern matches a repository applies.
    #[serde(default)]
    pub trust: Vec<TrustRule>,
    #[serde(default)]
    pub ebpf: EbpfRules,
    #[serde(default)]
    pub wasm: WasmRules,
    #[serde(default)]
    pub rollout: RolloutDefaults,
}

fn default_version() -> u32 {
    1
}

/// Trusted signers for repositories matching `repositories` (glob patterns over `host/path`, where
/// `*` matches within one path segment and `**` matches across segments).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustRule {
    pub repositories: Vec<String>,
    /// Public keys (PEM `PUBLIC KEY`): a path relative to the policy file, or the PEM text inline.
    /// After loading, always the PEM text.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Artifacts with no signature at all are denied unless this is explicitly true. A signature
    /// that is present but does not verify is never treated as absent: it is refused either way.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Which repository a signature must name (legacy `docker-reference`, bundle subject name).
    #[serde(default)]
    pub signed_identity: SignedIdentity,
    /// Accept sigstore bundles whose statement names only the digest (as cosign 3 writes them):
    /// such a bundle vouches for the content wherever it is copied. Off unless explicitly true.
    #[serde(default)]
    pub accept_digest_only_bundles: bool,
    /// Keyless signers: a signature whose Fulcio certificate carries one of these identities
    /// counts (with `trusted_root`). One rule may hold keys and identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<IdentityRule>,
    /// The sigstore `trusted_root.json` keyless signatures are verified against, offline: a path
    /// relative to the policy file, or the JSON inline. After loading, always the JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_root: Option<String>,
}

/// One keyless signer identity (cosign's `--certificate-identity*`, `--certificate-oidc-issuer*`
/// and `--certificate-github-workflow-*`): an issuer and a subject, each exact or a regular
/// expression, and optional GitHub workflow claims compared exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_regexp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_regexp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_workflow_name: Option<String>,
}

impl IdentityRule {
    /// The identity policy this rule describes: exactly one of `issuer`/`issuer_regexp` and one
    /// of `subject`/`subject_regexp` are required.
    pub fn to_policy(&self) -> Result<IdentityPolicy, String> {
        fn one(
            exact: &Option<String>,
            regexp: &Option<String>,
            name: &'static str,
            re_name: &'static str,
        ) -> Result<Matcher, String> {
            match (exact, regexp) {
                (Some(v), None) => Matcher::exact(name, v).map_err(|e| e.to_string()),
                (None, Some(r)) => Matcher::regex(re_name, r).map_err(|e| e.to_string()),
                (Some(_), Some(_)) => Err(format!("{name} and {re_name} are exclusive")),
                (None, None) => Err(format!("needs {name} or {re_name}")),
            }
        }
        let subject = one(
            &self.subject,
            &self.subject_regexp,
            "subject",
            "subject_regexp",
        )?;
        let issuer = one(&self.issuer, &self.issuer_regexp, "issuer", "issuer_regexp")?;
        Ok(
            IdentityPolicy::new(subject, issuer).with_github_workflow(GithubWorkflow {
                repository: self.github_workflow_repository.clone(),
                git_ref: self.github_workflow_ref.clone(),
                trigger: self.github_workflow_trigger.clone(),
                sha: self.github_workflow_sha.clone(),
                name: self.github_workflow_name.clone(),
            }),
        )
    }
}

/// How the repository a signature names is compared with the repository being verified.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SignedIdentity {
    /// The signed repository must be the repository verified; tag and digest are ignored
    /// (containers/image `matchRepository`; bpfship always verifies by digest).
    #[default]
    MatchRepository,
    /// For mirrors: when the repository verified starts with `prefix` (at a `/` boundary), that
    /// prefix is replaced by `signed_prefix` before the comparison (containers/image
    /// `remapIdentity`); other repositories are compared unchanged.
    Remap {
        prefix: String,
        signed_prefix: String,
    },
}

/// eBPF rules. Empty lists and absent limits mean "no rule".
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EbpfRules {
    /// Program types allowed (kernel names without the prefix: `xdp`, `sched_cls`, `tracepoint`…).
    #[serde(default)]
    pub allowed_program_types: Vec<String>,
    /// Helpers no program may call, by name (`bpf_probe_write_user`…).
    #[serde(default)]
    pub forbidden_helpers: Vec<String>,
    /// Maximum instructions per program.
    pub max_instructions: Option<u64>,
    /// Require a `.BTF` section.
    #[serde(default)]
    pub require_btf: bool,
}

/// WASM rules. Empty lists and absent limits mean "no rule".
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WasmRules {
    /// Opt-in proposals beyond the standard feature set: `legacy_exceptions`, `threads`.
    #[serde(default)]
    pub allow_features: Vec<String>,
    /// Allowed imports as `module::name` patterns (`*` wildcard); empty means no import allowed
    /// when `restrict_imports` is true.
    #[serde(default)]
    pub allowed_imports: Vec<String>,
    /// When true, only `allowed_imports` may be imported.
    #[serde(default)]
    pub restrict_imports: bool,
    /// Maximum declared (initial, and maximum when present) pages of any memory.
    pub max_memory_pages: Option<u64>,
    /// Exports that must be present.
    #[serde(default)]
    pub required_exports: Vec<String>,
}

/// Rollout defaults a deployment inherits unless it sets its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloutDefaults {
    /// Canary percentages, ascending, ending at 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// Bake time at each step, in seconds.
    #[serde(default = "default_bake_seconds")]
    pub bake_seconds: u64,
    /// How long the previous version stays loaded after promotion, in seconds.
    #[serde(default = "default_rollback_window_seconds")]
    pub rollback_window_seconds: u64,
}

impl Default for RolloutDefaults {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            bake_seconds: default_bake_seconds(),
            rollback_window_seconds: default_rollback_window_seconds(),
        }
    }
}

fn default_steps() -> Vec<u32> {
    vec![1, 10, 50, 100]
}
fn default_bake_seconds() -> u64 {
    60
}
fn default_rollback_window_seconds() -> u64 {
    600
}

/// One rule an artifact breaks.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// The policy field that refused it (`ebpf.forbidden_helpers`…).
    pub rule: String,
    /// What broke it, naming the program/section/import.
    pub message: String,
}

/// The most read of a policy or key file: both are a few KiB, and a path such as `/dev/zero`
/// never ends.
const TEXT_FILE_MAX: u64 = 1 << 20;

/// Reads a policy or key file as UTF-8 text, up to [`TEXT_FILE_MAX`].
fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(TEXT_FILE_MAX + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > TEXT_FILE_MAX {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            TEXT_FILE_MAX >> 20
        )));
    }
    Ok(text)
}

impl Policy {
    /// Reads and resolves a policy file; trusted key paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = read_text(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses policy text; `path` names the file in errors and anchors relative key paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let mut rules: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        rules.validate().map_err(|message| PolicyError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for rule in &mut rules.trust {
            for key in &mut rule.keys {
                if !key.contains("-----BEGIN") {
                    let key_path = base.join(&*key);
                    *key = read_text(&key_path).map_err(|source| PolicyError::Key {
                        path: path.to_owned(),
                        key: key_path.display().to_string(),
                        source,
                    })?;
                }
            }
            if let Some(root) = &mut rule.trusted_root
                && !root.trim_start().starts_with('{')
            {
                let root_path = base.join(&*root);
                *root = read_text(&root_path).map_err(|source| PolicyError::TrustedRoot {
                    path: path.to_owned(),
                    root: root_path.display().to_string(),
                    source,
                })?;
            }
        }
        Ok(Self::from_rules(rules))
    }

    /// A policy from rules already resolved (keys as PEM text).
    pub fn from_rules(rules: PolicyFile) -> Self {
        let canonical = serde_json::to_vec(&rules).expect("policy rules serialize to JSON");
        Self {
            digest: sha256_digest(&canonical),
            rules,
        }
    }

    /// The trust rule for `repository` (`host/path`) and its index, if any pattern matches it.
    pub fn trust_for(&self, repository: &str) -> Option<(usize, &TrustRule)> {
        self.rules
            .trust
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.repositories.iter().any(|p| glob_match(p, repository)))
    }
}

impl PolicyFile {
    fn validate(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!(
                "version {} is not supported (only 1)",
                self.version
            ));
        }
        for (i, rule) in self.trust.iter().enumerate() {
            if rule.repositories.is_empty() {
                return Err(format!("trust[{i}].repositories is empty"));
            }
            if rule.keys.is_empty() && rule.identities.is_empty() && !rule.allow_unsigned {
                return Err(format!(
                    "trust[{i}] names no keys or identities and does not allow unsigned artifacts"
                ));
            }
            for (j, identity) in rule.identities.iter().enumerate() {
                identity
                    .to_policy()
                    .map_err(|e| format!("trust[{i}].identities[{j}]: {e}"))?;
            }
            if !rule.identities.is_empty() && rule.trusted_root.is_none() {
                return Err(format!(
                    "trust[{i}] names keyless identities but no trusted_root to verify them against"
                ));
            }
            if let Some(p) = rule.repositories.iter().find(|p| p.len() > MAX_PATTERN_LEN) {
                return Err(format!(
                    "trust[{i}].repositories: pattern of {} bytes is longer than {MAX_PATTERN_LEN}",
                    p.len()
                ));
            }
            if let SignedIdentity::Remap {
                prefix,
                signed_prefix,
            } = &rule.signed_identity
            {
                for (field, p) in [("prefix", prefix), ("signed_prefix", signed_prefix)] {
                    if !crate::identity::is_valid_prefix(p) {
                        return Err(format!(
                            "trust[{i}].signed_identity.remap.{field} {p:?} is not host[:port][/path] (no tag, digest or trailing /)"
                        ));
                    }
                }
            }
        }
        if let Some(p) = self
            .wasm
            .allowed_imports
            .iter()
            .find(|p| p.len() > MAX_PATTERN_LEN)
        {
            return Err(format!(
                "wasm.allowed_imports: pattern of {} bytes is longer than {MAX_PATTERN_LEN}",
                p.len()
            ));
        }
        let steps = &self.rollout.steps;
        if steps.is_empty()
            || steps.windows(2).any(|w| w[0] >= w[1])
            || steps.last() != Some(&100)
            || steps[0] == 0
        {
            return Err(format!(
                "rollout.steps must ascend strictly from above 0 to 100, got {steps:?}"
            ));
        }
        Ok(())
    }
}

/// Longest pattern a policy may hold.
pub const MAX_PATTERN_LEN: usize = 256;
/// Longest name a pattern is matched against (repository paths, `module::name` imports): a longer
/// name matches no pattern. Repository references are at most 1024 bytes.
pub const MAX_MATCHED_LEN: usize = 1024;

/// Glob match where `*` matches any run of characters except `/`, and `**` matches anything.
/// Runs in O(pattern × text) steps without backtracking, and refuses texts longer than
/// [`MAX_MATCHED_LEN`].
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob_match_counting(pattern, text).0
}

/// One pattern element.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `*`: any run of bytes other than `/`.
    Star,
    /// `**`: any run of bytes.
    AnyStar,
}

/// [`glob_match`], and the number of (state, byte) steps the matcher took: a Thompson-style
/// simulation over the set of pattern positions, so each text byte costs at most one step per
/// pattern element.
fn glob_match_counting(pattern: &str, text: &str) -> (bool, u64) {
    if text.len() > MAX_MATCHED_LEN {
        return (false, 0);
    }
    let p = pattern.as_bytes();
    let mut tokens = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i..] {
            [b'*', b'*', ..] => {
                tokens.push(Token::AnyStar);
                i += 2;
            }
            [b'*', ..] => {
                tokens.push(Token::Star);
                i += 1;
            }
            [c, ..] => {
                tokens.push(Token::Byte(c));
                i += 1;
            }
            [] => unreachable!("i < p.len()"),
        }
    }
    let n = tokens.len();
    let mut steps = 0u64;
    // `active[k]`: the text read so far can be matched by the first k tokens.
    let mut active = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    active[0] = true;
    let close = |set: &mut [bool], steps: &mut u64| {
        // A star may match nothing: position k reaches k + 1.
        for k in 0..n {
            *steps += 1;
            if set[k] && !matches!(tokens[k], Token::Byte(_)) {
                set[k + 1] = true;
            }
        }
    };
    close(&mut active, &mut steps);
    for &c in text.as_bytes() {
        next.iter_mut().for_each(|s| *s = false);
        for k in 0..n {
            steps += 1;
            if !active[k] {
                continue;
            }
            match tokens[k] {
                Token::Byte(b) if b == c => next[k + 1] = true,
                Token::Byte(_) => {}
                Token::Star if c == b'/' => {}
                Token::Star | Token::AnyStar => next[k] = true,
            }
        }
        close(&mut next, &mut steps);
        std::mem::swap(&mut active, &mut next);
        if !active.contains(&true) {
            break;
        }
    }
    (active[n], steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_semantics() {
        assert!(glob_match("ghcr.io/acme/*", "ghcr.io/acme/xdp"));
        assert!(!glob_match("ghcr.io/acme/*", "ghcr.io/acme/net/xdp"));
        assert!(glob_match("ghcr.io/acme/**", "ghcr.io/acme/net/xdp"));
        assert!(glob_match("**", "anything/at/all"));
        assert!(!glob_match("ghcr.io/acme", "ghcr.io/acme2"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXb/c"));
        assert!(glob_match("a**c", "aX/b/c"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("", "x"));
        assert!(glob_match("wasi::*", "wasi::fd_write"));
        assert!(!glob_match("**", &"a".repeat(MAX_MATCHED_LEN + 1)));
    }

    /// The backtracking matcher took 100 s of CPU for `*a*a*a*b` against a long name: the
    /// simulation's steps are bounded by (pattern + 1) × (text + 1) × 2, whatever the input.
    #[test]
    fn adversarial_patterns_match_in_linear_steps() {
        for (pattern, text) in [
            ("*a*a*a*b".to_owned(), "a".repeat(MAX_MATCHED_LEN)),
            ("**a**a**a**a**a**b".to_owned(), "a".repeat(MAX_MATCHED_LEN)),
            (
                "*".repeat(MAX_PATTERN_LEN / 2) + "b",
                "a".repeat(MAX_MATCHED_LEN),
            ),
            (
                "ghcr.io/*a*a*a*a*a*a*a*a*b".to_owned(),
                format!("ghcr.io/{}", "a".repeat(1000)),
            ),
        ] {
            let (matched, steps) = glob_match_counting(&pattern, &text);
            assert!(!matched, "{pattern}");
            let bound = (pattern.len() as u64 + 1) * (text.len() as u64 + 1) * 2;
            assert!(steps <= bound, "{pattern}: {steps} steps, bound {bound}");
        }
        let (matched, _) = glob_match_counting("*a*a*a*b", &("a".repeat(1000) + "b"));
        assert!(matched);
    }

    #[test]
    fn signed_identity_forms() {
        let p = Path::new("p.toml");
        let rule = |extra: &str| {
            Policy::from_toml(
                &format!(
                    "[[trust]]\nrepositories = [\"m:5000/**\"]\nallow_unsigned = true\n{extra}"
                ),
                p,
            )
            .map(|p| p.rules.trust[0].clone())
        };
        assert_eq!(
            rule("").unwrap().signed_identity,
            SignedIdentity::MatchRepository
        );
        assert_eq!(
            rule("signed_identity = \"match_repository\"")
                .unwrap()
                .signed_identity,
            SignedIdentity::MatchRepository
        );
        let r = rule("signed_identity = { remap = { prefix = \"m:5000/acme\", signed_prefix = \"ghcr.io/acme\" } }\naccept_digest_only_bundles = true").unwrap();
        assert_eq!(
            r.signed_identity,
            SignedIdentity::Remap {
                prefix: "m:5000/acme".into(),
                signed_prefix: "ghcr.io/acme".into()
            }
        );
        assert!(r.accept_digest_only_bundles);
        let e = rule("signed_identity = { remap = { prefix = \"m:5000/acme/\", signed_prefix = \"ghcr.io\" } }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("trust[0].signed_identity.remap.prefix"), "{e}");
        assert!(rule("signed_identity = \"exact\"").is_err());
        let long = format!(
            "[[trust]]\nrepositories = [\"{}\"]\nallow_unsigned = true\n",
            "a".repeat(300)
        );
        assert!(
            Policy::from_toml(&long, p)
                .unwrap_err()
                .to_string()
                .contains("longer than 256")
        );
    }

    #[test]
    fn digest_ignores_formatting_but_not_rules() {
        let p = Path::new("p.toml");
        let a = Policy::from_toml("[ebpf]\nmax_instructions = 10\n", p).unwrap();
        let b = Policy::from_toml("# c\n[ebpf]\nmax_instructions    = 10\n", p).unwrap();
        let c = Policy::from_toml("[ebpf]\nmax_instructions = 11\n", p).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn bad_policies_are_refused_with_the_field() {
        let p = Path::new("p.toml");
        let e = Policy::from_toml("[ebpf]\nmax_instrs = 1\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml") && e.contains("max_instrs"), "{e}");
        let e = Policy::from_toml("[[trust]]\nrepositories = [\"x/*\"]\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("trust[0]"), "{e}");
        let e = Policy::from_toml("[rollout]\nsteps = [10, 5, 100]\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rollout.steps"), "{e}");
    }
}
