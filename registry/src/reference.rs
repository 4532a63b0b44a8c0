//! Image references: `host[:port]/path[:tag][@sha256:…]`.

use std::fmt;

/// Docker Hub's registry host, for short names like `library/alpine`.
const DOCKER_HUB: &str = "registry-1.docker.io";

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host with optional port.
    pub registry: String,
    /// Repository path inside the registry.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Why a reference string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid reference \"{input}\": {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: &'static str,
}

impl Reference {
    /// Parses a reference; a name without a registry host means Docker Hub.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let err = |reason| ReferenceError {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty()
            || input.len() > 1024
            || input.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err("empty, too long, or contains whitespace"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                if !is_sha256(d) {
                    return Err(err("digest must be sha256:<64 lowercase hex>"));
                }
                (r, Some(d.to_owned()))
            }
            None => (input, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_owned())),
            _ => (rest, None),
        };
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err(err("tag must be 1-128 of [A-Za-z0-9._-]"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((host, path))
                if host.contains('.') || host.contains(':') || host == "localhost" =>
            {
                (host.to_owned(), path.to_owned())
            }
            Some(_) => (DOCKER_HUB.to_owned(), name.to_owned()),
            None => (DOCKER_HUB.to_owned(), format!("library/{name}")),
        };
        if repository.is_empty()
            || !repository.split('/').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            })
        {
            return Err(err(
                "repository must be lowercase path segments of [a-z0-9._-]",
            ));
        }
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `host/path`: what policies' trust patterns match, and cosign's `docker-reference`.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository at `digest`.
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            digest: Some(digest.to_owned()),
            tag: None,
            ..self.clone()
        }
    }

    /// The same repository at `tag`.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// What to ask the registry for: the digest if pinned, else the tag (default `latest`).
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// True for registries on loopback addresses, reached over plain HTTP without asking.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        host == "localhost" || host == "[::1]" || host.starts_with("127.")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository_path())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// True when `d` is `sha256:<64 lowercase hex>`.
pub fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_shapes() {
        let r = Reference::parse("127.0.0.1:5000/net/xdp:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "net/xdp", Some("v1"))
        );
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/net/xdp:v1");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/acme/x@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert!(!r.is_loopback());
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.repository_path(), "registry-1.docker.io/library/alpine");
        assert!(Reference::parse("ghcr.io/Acme/x").is_err());
        assert!(Reference::parse("ghcr.io/acme/x@sha256:abc").is_err());
        assert!(Reference::parse("ghcr.io/acme/x:bad tag").is_err());
    }
}
