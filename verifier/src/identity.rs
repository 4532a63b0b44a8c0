//! Which repository a signature vouches for. A signature binds a manifest digest to the place it
//! was signed for: the legacy payload's `docker-reference`, the subject name of a bpfship bundle.
//! Copying an artifact and its signatures byte for byte into another repository must not make it
//! trusted there, so the signed repository is compared with the repository being verified
//! (containers/image `matchRepository`, or `remapIdentity` for mirrors).

use crate::policy::{MAX_MATCHED_LEN, SignedIdentity};

/// Docker Hub as containers/image spells it in normalized names.
const DOCKER_HUB: &str = "docker.io";

/// Why a signed repository is not the one being verified.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("signed for repository {signed:?}, not {expected:?}")]
    Mismatch { signed: String, expected: String },
    #[error("signed repository {0:?} is not a repository name")]
    Unreadable(String),
    #[error("repository {0:?} is not a repository name")]
    BadRepository(String),
}

/// A docker reference reduced to its normalized repository name (containers/image's
/// `Named.Name()`): tag and digest dropped, the host lower-cased, Docker Hub's aliases spelled
/// `docker.io`, Docker Hub's single-segment names under `library/`. `None` when it is not a
/// reference at all.
pub fn repository_name(reference: &str) -> Option<String> {
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    let name = match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => &name[..i],
        _ => name,
    };
    if name.is_empty()
        || name.len() > MAX_MATCHED_LEN
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let (host, path) = match name.split_once('/') {
        Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
            (h.to_ascii_lowercase(), p)
        }
        _ => (DOCKER_HUB.to_owned(), name),
    };
    if path.split('/').any(str::is_empty) {
        return None;
    }
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        _ => host,
    };
    if host == DOCKER_HUB && !path.contains('/') {
        return Some(format!("{host}/library/{path}"));
    }
    Some(format!("{host}/{path}"))
}

/// A remap prefix: `host[:port]` or `host[:port]/path`, no tag, digest, empty segment or
/// trailing `/`.
pub fn is_valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_MATCHED_LEN
        && !prefix.contains('@')
        && !prefix.split('/').any(str::is_empty)
        && !prefix.split('/').skip(1).any(|s| s.contains(':'))
        && !prefix.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `name` with `prefix` removed when `prefix` is `name` or names a parent of it.
fn strip_component_prefix<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

impl SignedIdentity {
    /// The repository a signature must name for `repository` (`host/path`) to accept it.
    pub fn expected(&self, repository: &str) -> Result<String, IdentityError> {
        let repo = repository_name(repository)
            .ok_or_else(|| IdentityError::BadRepository(repository.to_owned()))?;
        match self {
            SignedIdentity::MatchRepository => Ok(repo),
            SignedIdentity::Remap {
                prefix,
                signed_prefix,
            } => match strip_component_prefix(&repo, prefix) {
                Some(rest) => repository_name(&format!("{signed_prefix}{rest}"))
                    .ok_or_else(|| IdentityError::BadRepository(format!("{signed_prefix}{rest}"))),
                None => Ok(repo),
            },
        }
    }

    /// Checks that `signed` (a signature's docker reference; tag and digest ignored) names the
    /// repository `repository` is verified as.
    pub fn check(&self, repository: &str, signed: &str) -> Result<(), IdentityError> {
        let expected = self.expected(repository)?;
        let signed_name =
            repository_name(signed).ok_or_else(|| IdentityError::Unreadable(truncated(signed)))?;
        if signed_name == expected {
            Ok(())
        } else {
            Err(IdentityError::Mismatch {
                signed: truncated(signed),
                expected,
            })
        }
    }
}

/// At most 200 characters of a signer-chosen string, for messages.
fn truncated(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_as_containers_image_does() {
        for (reference, name) in [
            (
                "192.168.64.2:5000/skopeo-signed:tag",
                "192.168.64.2:5000/skopeo-signed",
            ),
            ("ghcr.io/acme/xdp@sha256:ab", "ghcr.io/acme/xdp"),
            ("GHCR.io/acme/xdp:v1@sha256:ab", "ghcr.io/acme/xdp"),
            ("busybox", "docker.io/library/busybox"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox",
            ),
            ("registry-1.docker.io/acme/x", "docker.io/acme/x"),
            ("docker.io/busybox:latest", "docker.io/library/busybox"),
            ("localhost/x", "localhost/x"),
        ] {
            assert_eq!(
                repository_name(reference).as_deref(),
                Some(name),
                "{reference}"
            );
        }
        for bad in ["", "a//b", "host.io/", "a b", "x\ny"] {
            assert_eq!(repository_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn match_repository_ignores_tag_and_digest_only() {
        let rule = SignedIdentity::MatchRepository;
        rule.check("reg:5000/team-a/xdp", "reg:5000/team-a/xdp")
            .unwrap();
        rule.check("reg:5000/team-a/xdp", "reg:5000/team-a/xdp:v1")
            .unwrap();
        for other in [
            "reg:5000/team-b/xdp",
            "reg:5000/team-a/xdp/sub",
            "reg:5000/team-a",
            "reg:5001/team-a/xdp",
        ] {
            assert!(
                matches!(
                    rule.check("reg:5000/team-a/xdp", other),
                    Err(IdentityError::Mismatch { .. })
                ),
                "{other}"
            );
        }
    }

    #[test]
    fn remap_rewrites_the_prefix_at_a_component_boundary() {
        let rule = SignedIdentity::Remap {
            prefix: "mirror.local:5000/acme".into(),
            signed_prefix: "ghcr.io/acme".into(),
        };
        rule.check("mirror.local:5000/acme/xdp", "ghcr.io/acme/xdp:v2")
            .unwrap();
        // Outside the prefix, the repository is compared unchanged.
        rule.check("other.io/x", "other.io/x").unwrap();
        // `acme2` is not under `acme`.
        assert_eq!(
            rule.expected("mirror.local:5000/acme2/xdp").unwrap(),
            "mirror.local:5000/acme2/xdp"
        );
        // The mirror's own name no longer counts for a remapped repository.
        assert!(
            rule.check("mirror.local:5000/acme/xdp", "mirror.local:5000/acme/xdp")
                .is_err()
        );
        assert!(
            rule.check("mirror.local:5000/acme/xdp", "ghcr.io/acme/other")
                .is_err()
        );
    }

    #[test]
    fn prefixes_are_checked() {
        for ok in ["ghcr.io", "reg:5000/team", "docker.io/library"] {
            assert!(is_valid_prefix(ok), "{ok}");
        }
        for bad in [
            "",
            "ghcr.io/",
            "ghcr.io//x",
            "ghcr.io/x:tag",
            "ghcr.io/x@sha256:a",
        ] {
            assert!(!is_valid_prefix(bad), "{bad}");
        }
    }
}
