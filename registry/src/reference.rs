//! Image references: `host[:port]/path[:tag][@sha256:…]`, parsed by the distribution reference
//! grammar (github.com/distribution/reference) component by component, with the host in the
//! canonical form URLs are built from. A [`Reference`] cannot be built any other way, so the
//! string a policy matches ([`Reference::repository_path`]) is exactly the one requests go to:
//! no `..` component that a URL would fold away, no `127.1` that a URL would read as
//! `127.0.0.1`.

use std::fmt;
use std::net::Ipv4Addr;

/// Docker Hub's registry host, for short names like `library/alpine`.
const DOCKER_HUB: &str = "registry-1.docker.io";
/// distribution's `NameTotalLengthMax`: the repository path, host excluded.
const MAX_REPOSITORY: usize = 255;

/// A parsed, canonical reference. Fields are private: every value went through [`Reference::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why a reference string was refused (the input is shown escaped and capped).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid reference \"{}\": {reason}", crate::untrusted::shown(input))]
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
        if input.is_empty() || input.len() > 1024 {
            return Err(err("empty or longer than 1024 bytes"));
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
            && !is_tag(t)
        {
            return Err(err(
                "tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} (distribution's tag grammar)",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((host, path))
                if host.contains('.') || host.contains(':') || host == "localhost" =>
            {
                (canonical_host(host).ok_or_else(|| err(
                    "registry host must be a DNS name, an IPv4 address or a bracketed IPv6 address, with an optional port 1-65535",
                ))?, path.to_owned())
            }
            Some(_) => (DOCKER_HUB.to_owned(), name.to_owned()),
            None => (DOCKER_HUB.to_owned(), format!("library/{name}")),
        };
        if repository.len() > MAX_REPOSITORY || !repository.split('/').all(is_path_component) {
            return Err(err(
                "repository must be at most 255 bytes of /-separated components [a-z0-9]+ joined by '.', '_', '__' or '-' (no empty, '.' or '..' components)",
            ));
        }
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry's canonical `host[:port]` (lowercase; IPv4 in dotted-quad form; IPv6 in
    /// brackets, compressed).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, when the reference names one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned digest, when the reference names one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
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

    /// True for registries on loopback: `localhost`, a literal address in 127.0.0.0/8, or
    /// `[::1]` (the host is canonical, so `127.1` is already `127.0.0.1` and a name that merely
    /// starts with `127.` is a DNS name, not loopback).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(host_of(&self.registry))
    }
}

/// `host` of a canonical `host[:port]`.
pub(crate) fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// True for `localhost`, `[::1]` and literal IPv4 addresses in 127.0.0.0/8.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host == "[::1]"
        || host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

/// `host[:port]` checked against distribution's domain grammar, then put in the form the URL
/// parser gives it (the form requests use): lowercase, IPv4 forms such as `127.1` or `0x7f.1`
/// as dotted quads, IPv6 compressed; the port without leading zeros. `None` when invalid.
fn canonical_host(authority: &str) -> Option<String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&authority[..addr.len() + 2], port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let component = |c: &str| {
            !c.is_empty()
                && c.len() <= 63
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !host.split('.').all(component) {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|&n| n > 0)?)
        }
        Some(_) => return None,
    };
    let url = reqwest::Url::parse(&format!("http://{host}/")).ok()?;
    let canonical = url.host_str()?;
    Some(match port {
        Some(p) => format!("{canonical}:{p}"),
        None => canonical.to_owned(),
    })
}

/// distribution's path component: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let ok = match &b[sep..i] {
            b"." | b"_" | b"__" => true,
            s => s.iter().all(|&x| x == b'-'),
        };
        if !ok {
            return false;
        }
    }
}

/// distribution's tag: `[\w][\w.-]{0,127}`.
pub(crate) fn is_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    t.len() <= 128
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-')
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
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "net/xdp", Some("v1"))
        );
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/net/xdp:v1");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/acme/x@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
        assert!(!r.is_loopback());
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.repository_path(), "registry-1.docker.io/library/alpine");
        assert!(Reference::parse("ghcr.io/Acme/x").is_err());
        assert!(Reference::parse("ghcr.io/acme/x@sha256:abc").is_err());
        assert!(Reference::parse("ghcr.io/acme/x:bad tag").is_err());
    }

    /// Issue 7 item 8: references whose policy form and request form differ are refused or
    /// canonicalized to the one form both use.
    #[test]
    fn references_mean_one_thing() {
        for bad in [
            "127.0.0.1:5000/sandbox/../untrusted/evil",
            "127.0.0.1:5000/sandbox/./x",
            "127.0.0.1:5000/sandbox//x",
            "127.0.0.1:5000/sandbox/.hidden",
            "127.0.0.1:5000/a-/b",
            "127.0.0.1:5000/a._b",
            "127.0.0.1:5000/x:.tag",
            "127.0.0.1:5000/x:-tag",
            "127.0.0.1:5000/x%2f..",
            "127.0.0.1:99999/x",
            "127.0.0.1:0/x",
            "127.0.0.1:/x",
            "ho_st.example/x",
            "-host.example/x",
            "[::1/x",
            "[zz]:5000/x",
            "a\u{1b}b.example/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} must be refused");
        }
        for (input, registry) in [
            ("127.1:5000/x", "127.0.0.1:5000"),
            ("0x7f.0.0.1:5000/x", "127.0.0.1:5000"),
            ("2130706433:5000/x", "127.0.0.1:5000"),
            ("127.0.0.1:05000/x", "127.0.0.1:5000"),
            ("LocalHost:5000/x", "localhost:5000"),
            ("[0:0:0:0:0:0:0:1]:5000/x", "[::1]:5000"),
            ("Registry.Example/x", "registry.example"),
        ] {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.registry(), registry, "{input}");
        }
        assert!(Reference::parse("127.1:5000/x").unwrap().is_loopback());
        assert!(Reference::parse("[::1]:5000/x").unwrap().is_loopback());
        // A DNS name that starts with 127. is not a loopback address.
        assert!(
            !Reference::parse("127.0.0.1.nip.io:5000/x")
                .unwrap()
                .is_loopback()
        );
        assert!(
            !Reference::parse("127.attacker.example/x")
                .unwrap()
                .is_loopback()
        );
        for good in ["a/b__c/d-e/f.g/h_i", "a/b---c", "x:_t", "x:V1.2-rc_3"] {
            assert!(
                Reference::parse(&format!("h.example/{good}")).is_ok(),
                "{good}"
            );
        }
    }
}
