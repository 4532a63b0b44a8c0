//! Who signed a keyless signature, and who may: the claims of a Fulcio certificate
//! ([`Claims`]) and the identity a verifier requires of them ([`IdentityPolicy`]).
//!
//! The policy cannot be built without an issuer and a subject (each exact or a regular
//! expression), as cosign refuses to verify keyless without `--certificate-identity*` and
//! `--certificate-oidc-issuer*`: a certificate from the trusted CA proves only that *someone*
//! with an OIDC token signed. The GitHub workflow claims are optional further constraints.
//! Pure logic: the certificate chain, log and signature are checked elsewhere
//! (`bpfship-keyless`); this module only decides whether already verified claims are acceptable.

use std::fmt;

use regex::Regex;
use serde::Serialize;

/// A bad identity constraint (an invalid regular expression, or an empty value).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{field}: invalid regular expression {pattern:?}: {source}")]
    Regex {
        field: &'static str,
        pattern: String,
        source: Box<regex::Error>,
    },
    #[error("{field}: must not be empty")]
    Empty { field: &'static str },
}

/// A claim that did not satisfy the policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("certificate {field} {actual} does not match the required {expected}")]
pub struct IdentityMismatch {
    /// Which claim (`subject`, `issuer`, `github workflow repository`, …).
    pub field: &'static str,
    /// The certificate's value, quoted, or `(absent)`.
    pub actual: String,
    /// The constraint, e.g. `"x"` or `regexp "^x"`.
    pub expected: String,
}

/// One string constraint: equal to a value, or matching a regular expression.
///
/// A regular expression matches anywhere in the value unless anchored (`^…$`), as cosign's
/// Go `regexp.MatchString` does: write anchors when a prefix or suffix is meant.
#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Regex(Regex),
}

impl Matcher {
    /// An exact constraint; `field` names it in errors.
    pub fn exact(field: &'static str, value: &str) -> Result<Self, IdentityError> {
        if value.is_empty() {
            return Err(IdentityError::Empty { field });
        }
        Ok(Self::Exact(value.to_owned()))
    }

    /// A regular-expression constraint (Rust `regex` syntax, which accepts Go's RE2 syntax).
    pub fn regex(field: &'static str, pattern: &str) -> Result<Self, IdentityError> {
        if pattern.is_empty() {
            return Err(IdentityError::Empty { field });
        }
        Regex::new(pattern)
            .map(Self::Regex)
            .map_err(|e| IdentityError::Regex {
                field,
                pattern: pattern.to_owned(),
                source: Box::new(e),
            })
    }

    /// Whether `value` satisfies the constraint.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(expected) => value == expected,
            Self::Regex(re) => re.is_match(value),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(v) => write!(f, "{v:?}"),
            Self::Regex(re) => write!(f, "regexp {:?}", re.as_str()),
        }
    }
}

/// The GitHub Actions claims Fulcio writes into a certificate (extensions
/// `1.3.6.1.4.1.57264.1.2`–`.6`, which cosign's `--certificate-github-workflow-*` flags read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GithubWorkflow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl GithubWorkflow {
    /// The claims paired with their names, in flag order.
    fn fields(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("github workflow repository", self.repository.as_deref()),
            ("github workflow ref", self.git_ref.as_deref()),
            ("github workflow trigger", self.trigger.as_deref()),
            ("github workflow sha", self.sha.as_deref()),
            ("github workflow name", self.name.as_deref()),
        ]
    }
}

/// The identity claims of a verified signing certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// The subject alternative name: an email address or a URI (a workflow for GitHub Actions).
    pub subject: String,
    /// The OIDC issuer that vouched for the subject.
    pub issuer: String,
    /// GitHub Actions claims, when the certificate carries them.
    #[serde(skip_serializing_if = "is_default")]
    pub github_workflow: GithubWorkflow,
}

fn is_default(w: &GithubWorkflow) -> bool {
    *w == GithubWorkflow::default()
}

impl fmt::Display for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (issuer {})", self.subject, self.issuer)
    }
}

/// The signer identity a keyless signature must carry. Built only with an issuer and a subject.
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    subject: Matcher,
    issuer: Matcher,
    /// Exact values each present claim must equal.
    github_workflow: GithubWorkflow,
}

impl IdentityPolicy {
    /// Requires this subject (SAN) and this OIDC issuer.
    pub fn new(subject: Matcher, issuer: Matcher) -> Self {
        Self {
            subject,
            issuer,
            github_workflow: GithubWorkflow::default(),
        }
    }

    /// Also requires the GitHub workflow claims given (each compared exactly, as cosign does).
    pub fn with_github_workflow(mut self, workflow: GithubWorkflow) -> Self {
        self.github_workflow = workflow;
        self
    }

    /// Whether the certificate's claims satisfy every constraint; the first that does not is
    /// named in the error.
    pub fn check(&self, claims: &Claims) -> Result<(), IdentityMismatch> {
        let mismatch = |field, actual: Option<&str>, expected: String| IdentityMismatch {
            field,
            actual: actual.map_or_else(|| "(absent)".to_owned(), |a| format!("{a:?}")),
            expected,
        };
        if !self.issuer.matches(&claims.issuer) {
            return Err(mismatch(
                "issuer",
                Some(&claims.issuer),
                self.issuer.to_string(),
            ));
        }
        if !self.subject.matches(&claims.subject) {
            return Err(mismatch(
                "subject",
                Some(&claims.subject),
                self.subject.to_string(),
            ));
        }
        let actual = claims.github_workflow.fields();
        for ((field, required), (_, have)) in self.github_workflow.fields().into_iter().zip(actual)
        {
            if let Some(required) = required
                && have != Some(required)
            {
                return Err(mismatch(field, have, format!("{required:?}")));
            }
        }
        Ok(())
    }
}

impl fmt::Display for IdentityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject {} issuer {}", self.subject, self.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKFLOW: &str = "https://github.com/acme/xdp/.github/workflows/release.yml@refs/tags/v1";
    const GITHUB: &str = "https://token.actions.githubusercontent.com";

    fn claims() -> Claims {
        Claims {
            subject: WORKFLOW.into(),
            issuer: GITHUB.into(),
            github_workflow: GithubWorkflow {
                repository: Some("acme/xdp".into()),
                git_ref: Some("refs/tags/v1".into()),
                trigger: Some("push".into()),
                sha: Some("0123".into()),
                name: Some("release".into()),
            },
        }
    }

    #[test]
    fn exact_and_regex_subject_and_issuer() {
        let ok = IdentityPolicy::new(
            Matcher::exact("subject", WORKFLOW).unwrap(),
            Matcher::exact("issuer", GITHUB).unwrap(),
        );
        ok.check(&claims()).unwrap();
        let re = IdentityPolicy::new(
            Matcher::regex("subject", "^https://github.com/acme/").unwrap(),
            Matcher::regex("issuer", "^https://token\\.actions\\.").unwrap(),
        );
        re.check(&claims()).unwrap();
    }

    #[test]
    fn wrong_subject_issuer_or_claim_is_refused() {
        let other_repo = IdentityPolicy::new(
            Matcher::regex("subject", "^https://github.com/evil/").unwrap(),
            Matcher::exact("issuer", GITHUB).unwrap(),
        );
        assert_eq!(other_repo.check(&claims()).unwrap_err().field, "subject");
        let other_issuer = IdentityPolicy::new(
            Matcher::exact("subject", WORKFLOW).unwrap(),
            Matcher::exact("issuer", "https://accounts.google.com").unwrap(),
        );
        assert_eq!(other_issuer.check(&claims()).unwrap_err().field, "issuer");
        // A prefix is not equality.
        let prefix = IdentityPolicy::new(
            Matcher::exact("subject", &WORKFLOW[..30]).unwrap(),
            Matcher::exact("issuer", GITHUB).unwrap(),
        );
        assert!(prefix.check(&claims()).is_err());
        let trigger = IdentityPolicy::new(
            Matcher::exact("subject", WORKFLOW).unwrap(),
            Matcher::exact("issuer", GITHUB).unwrap(),
        )
        .with_github_workflow(GithubWorkflow {
            trigger: Some("pull_request".into()),
            ..Default::default()
        });
        let err = trigger.check(&claims()).unwrap_err();
        assert_eq!(err.field, "github workflow trigger");
        let mut bare = claims();
        bare.github_workflow = GithubWorkflow::default();
        let err = trigger.check(&bare).unwrap_err();
        assert_eq!(err.actual, "(absent)");
    }

    #[test]
    fn empty_and_invalid_constraints_are_errors() {
        assert!(matches!(
            Matcher::exact("subject", ""),
            Err(IdentityError::Empty { .. })
        ));
        assert!(matches!(
            Matcher::regex("issuer", "(unclosed"),
            Err(IdentityError::Regex { .. })
        ));
    }
}
