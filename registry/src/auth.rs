//! Registry credentials: explicit, or from the docker config file (`$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`), as docker, skopeo and cosign read them.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// A user name and password (or token). `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{path}: credential helper \"{helper}\" for {registry} is not supported yet; put the credentials in \"auths\" or pass --username/--password-stdin"
    )]
    Helper {
        path: PathBuf,
        registry: String,
        helper: String,
    },
}

/// The docker config file in effect.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Credentials for `registry` from the docker config, if it names any.
pub fn from_docker_config(registry: &str) -> Result<Option<Credentials>, AuthError> {
    match docker_config_path() {
        Some(path) => from_config_file(&path, registry),
        None => Ok(None),
    }
}

/// Credentials for `registry` from a docker config file at `path` (absent file: none).
pub fn from_config_file(
    path: &std::path::Path,
    registry: &str,
) -> Result<Option<Credentials>, AuthError> {
    let path = path.to_owned();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(AuthError::Config {
                path,
                message: e.to_string(),
            });
        }
    };
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| AuthError::Config {
        path: path.clone(),
        message: format!("not valid JSON: {e}"),
    })?;
    let candidates = [
        registry.to_owned(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if let Some(entry) = candidates.iter().find_map(|k| config["auths"].get(k)) {
        if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
            let decoded = B64
                .decode(auth)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| AuthError::Config {
                    path: path.clone(),
                    message: format!("auths.{registry}.auth is not base64 of user:password"),
                })?;
            let (u, p) = decoded.split_once(':').ok_or_else(|| AuthError::Config {
                path: path.clone(),
                message: format!("auths.{registry}.auth is not user:password"),
            })?;
            return Ok(Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            }));
        }
        if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return Ok(Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            }));
        }
    }
    if let Some(store) = config["credsStore"].as_str() {
        tracing::warn!(%registry, store, "docker credsStore is not supported yet; trying anonymous access");
    }
    if let Some(helper) = config["credHelpers"][registry].as_str() {
        return Err(AuthError::Helper {
            path,
            registry: registry.to_owned(),
            helper: helper.to_owned(),
        });
    }
    Ok(None)
}

/// The auth-params of a `WWW-Authenticate` challenge (`Bearer realm="…",service="…"`), keys
/// lowercased. Never fails: what cannot be read is left out (the caller checks what it needs).
/// Quoted values end at the next `"`; backslash escapes are not interpreted.
pub fn parse_challenge(challenge: &str) -> HashMap<String, String> {
    let rest = challenge.split_once(' ').map_or("", |(_, r)| r);
    let mut out = HashMap::new();
    let mut s = rest;
    while let Some((k, v)) = s.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let v = v.trim_start();
        let (value, after) = if let Some(q) = v.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match v.find(',') {
                Some(end) => (&v[..end], &v[end..]),
                None => (v, ""),
            }
        };
        out.insert(k, value.to_owned());
        s = after;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_parsing() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull");
        for odd in [
            "",
            "Bearer",
            "Bearer realm",
            "Bearer =,=,\"",
            "Basic realm=\"x",
        ] {
            parse_challenge(odd);
        }
    }
}
