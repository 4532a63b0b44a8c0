//! A registry client speaking the OCI distribution API: resolve a tag once, then fetch and push by
//! digest, checking every digest and bounding every response. Basic and bearer-token auth.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};

use crate::auth::{AuthError, Credentials};
use crate::manifest::{ACCEPTED_MANIFESTS, Descriptor, ImageIndex, OCI_INDEX, sha256_digest};
use crate::reference::{Reference, is_sha256};

/// Manifests larger than this are refused (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Why a registry operation failed; the message names the reference.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: cannot reach the registry: {message}")]
    Unreachable { reference: String, message: String },
    #[error("{reference}: not found")]
    NotFound { reference: String },
    #[error(
        "{reference}: access denied (HTTP {status}); check credentials (docker config, --username/--password-stdin)"
    )]
    Denied { reference: String, status: u16 },
    #[error("{reference}: registry answered HTTP {status}: {body}")]
    Status {
        reference: String,
        status: u16,
        body: String,
    },
    #[error("{reference}: {what} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        reference: String,
        /// `manifest` or `blob`: what did not hash to its digest.
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{reference}: size mismatch: descriptor says {expected} bytes, got {actual}")]
    SizeMismatch {
        reference: String,
        expected: u64,
        actual: u64,
    },
    #[error("{reference}: response too large (more than {limit} bytes)")]
    TooLarge { reference: String, limit: u64 },
    #[error("{reference}: invalid registry response: {message}")]
    Invalid { reference: String, message: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl RegistryError {
    /// True when the registry could not be reached at all (the agent retries these).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. })
    }
}

/// Called with `(bytes sent, total)` while a blob uploads.
pub type Progress = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Streams a shared buffer into a request body, reporting progress.
struct CountingReader {
    data: std::sync::Arc<[u8]>,
    pos: usize,
    progress: Option<Progress>,
}

impl std::io::Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.data[self.pos..];
        let n = rest.len().min(buf.len()).min(256 * 1024);
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        if let Some(p) = &self.progress {
            p(self.pos as u64, self.data.len() as u64);
        }
        Ok(n)
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Registries (host[:port]) reached over plain HTTP (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Explicit credentials; otherwise the docker config is consulted per registry.
    pub credentials: Option<Credentials>,
    /// Extra PEM CA certificates to trust (private registries).
    pub ca_certificates: Vec<Vec<u8>>,
}

/// A registry client. Cheap to share; holds bearer tokens per scope.
pub struct Client {
    http: Http,
    options: ClientOptions,
    tokens: Mutex<HashMap<String, String>>,
    schemes: Mutex<HashMap<String, &'static str>>,
}

impl Client {
    /// Builds a client (rustls TLS with the system roots plus `ca_certificates`).
    pub fn new(options: ClientOptions) -> Result<Self, RegistryError> {
        let mut builder = Http::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .user_agent(concat!("bpfship/", env!("CARGO_PKG_VERSION")));
        for pem in &options.ca_certificates {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| RegistryError::Invalid {
                reference: "CA certificate".into(),
                message: e.to_string(),
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| RegistryError::Unreachable {
            reference: "client".into(),
            message: e.to_string(),
        })?;
        Ok(Self {
            http,
            options,
            tokens: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
        })
    }

    fn base(&self, r: &Reference) -> String {
        format!("{}://{}/v2/{}", self.scheme(r), r.registry, r.repository)
    }

    /// TLS always, except for registries listed insecure (plain HTTP) and loopback registries,
    /// which get TLS when they speak it and plain HTTP otherwise (as docker treats them).
    fn scheme(&self, r: &Reference) -> &'static str {
        if self
            .options
            .insecure_registries
            .iter()
            .any(|h| h == &r.registry)
        {
            return "http";
        }
        if !r.is_loopback() {
            return "https";
        }
        if let Some(s) = self
            .schemes
            .lock()
            .ok()
            .and_then(|m| m.get(&r.registry).copied())
        {
            return s;
        }
        // Asked in plain HTTP first (no credentials are sent): a plain registry answers `/v2/` at
        // once (200 or 401), a TLS one answers 400 ("HTTP request to an HTTPS server") or hangs
        // up. Asking in TLS first costs a handshake against a plain-HTTP server, which only
        // answers once it finds a line break in the ClientHello: tens to hundreds of ms.
        let probe = self
            .http
            .get(format!("http://{}/v2/", r.registry))
            .timeout(Duration::from_secs(5))
            .send();
        let scheme = match probe {
            Ok(resp) if resp.status() != StatusCode::BAD_REQUEST => "http",
            _ => "https",
        };
        if let Ok(mut m) = self.schemes.lock() {
            m.insert(r.registry.clone(), scheme);
        }
        scheme
    }

    fn credentials(&self, r: &Reference) -> Result<Option<Credentials>, RegistryError> {
        match &self.options.credentials {
            Some(c) => Ok(Some(c.clone())),
            None => Ok(crate::auth::from_docker_config(&r.registry)?),
        }
    }

    /// Sends a request built by `make`, answering one auth challenge (basic or bearer) if needed.
    fn send(
        &self,
        r: &Reference,
        push: bool,
        make: &dyn Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let scope = format!(
            "repository:{}:{}",
            r.repository,
            if push { "pull,push" } else { "pull" }
        );
        let cached = self.tokens.lock().ok().and_then(|t| t.get(&scope).cloned());
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            reference: r.to_string(),
            message: error_chain(&e),
        };
        let first = match &cached {
            Some(token) => make().bearer_auth(token),
            None => make(),
        };
        let resp = first.send().map_err(unreachable)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let creds = self.credentials(r)?;
        if challenge.to_ascii_lowercase().starts_with("bearer") {
            let token = self.fetch_token(r, &challenge, &scope, creds.as_ref())?;
            if let Ok(mut t) = self.tokens.lock() {
                t.insert(scope, token.clone());
            }
            return make().bearer_auth(token).send().map_err(unreachable);
        }
        match creds {
            Some(c) => make()
                .basic_auth(&c.username, Some(&c.password))
                .send()
                .map_err(unreachable),
            None => Err(RegistryError::Denied {
                reference: r.to_string(),
                status: 401,
            }),
        }
    }

    fn fetch_token(
        &self,
        r: &Reference,
        challenge: &str,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let params = parse_challenge(challenge);
        let realm = params.get("realm").ok_or_else(|| RegistryError::Invalid {
            reference: r.to_string(),
            message: format!("bearer challenge without realm: {challenge}"),
        })?;
        let mut req = self.http.get(realm).query(&[("scope", scope)]);
        if let Some(service) = params.get("service") {
            req = req.query(&[("service", service)]);
        }
        if let Some(c) = creds {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let resp = req.send().map_err(|e| RegistryError::Unreachable {
            reference: realm.clone(),
            message: error_chain(&e),
        })?;
        if !resp.status().is_success() {
            return Err(RegistryError::Denied {
                reference: r.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let body = read_limited(resp, 64 * 1024, r)?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
                reference: r.to_string(),
                message: format!("token response: {e}"),
            })?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::Invalid {
                reference: r.to_string(),
                message: "token response without a token".into(),
            })
    }

    /// Resolves the reference to the descriptor of its manifest (one HEAD; GET when the registry
    /// gives no digest). A pinned digest is still checked to exist.
    pub fn resolve(&self, r: &Reference) -> Result<Descriptor, RegistryError> {
        let url = format!("{}/manifests/{}", self.base(r), r.target());
        let resp = self.send(r, false, &|| {
            self.http
                .head(&url)
                .header(ACCEPT, ACCEPTED_MANIFESTS.join(", "))
        })?;
        let resp = check_status(resp, r)?;
        let media_type = header(&resp, CONTENT_TYPE.as_str());
        let digest = header(&resp, "docker-content-digest");
        // From the header: a HEAD response has no body, so `content_length()` (the body's size)
        // says 0 and would send every resolve on to a GET.
        let size = header(&resp, CONTENT_LENGTH.as_str()).and_then(|n| n.parse::<u64>().ok());
        match (media_type, digest, size) {
            (Some(media_type), Some(digest), Some(size)) if is_sha256(&digest) && size > 0 => {
                if let Some(pinned) = &r.digest
                    && pinned != &digest
                {
                    return Err(RegistryError::DigestMismatch {
                        what: "manifest",
                        reference: r.to_string(),
                        expected: pinned.clone(),
                        actual: digest,
                    });
                }
                Ok(Descriptor {
                    media_type,
                    digest,
                    size,
                    artifact_type: None,
                    annotations: Default::default(),
                })
            }
            _ => {
                let (bytes, media_type) = self.get_manifest(r, r.target())?;
                let digest = sha256_digest(&bytes);
                if let Some(pinned) = &r.digest
                    && pinned != &digest
                {
                    return Err(RegistryError::DigestMismatch {
                        what: "manifest",
                        reference: r.to_string(),
                        expected: pinned.clone(),
                        actual: digest,
                    });
                }
                Ok(Descriptor {
                    size: bytes.len() as u64,
                    ..Descriptor::of(&media_type, &bytes)
                })
            }
        }
    }

    fn get_manifest(
        &self,
        r: &Reference,
        target: &str,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let url = format!("{}/manifests/{target}", self.base(r));
        let resp = self.send(r, false, &|| {
            self.http
                .get(&url)
                .header(ACCEPT, ACCEPTED_MANIFESTS.join(", "))
        })?;
        let resp = check_status(resp, r)?;
        let media_type = header(&resp, CONTENT_TYPE.as_str()).unwrap_or_default();
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES, r)?;
        Ok((bytes, media_type))
    }

    /// Fetches the manifest `digest` and checks its bytes hash to it. Returns bytes and media type.
    pub fn fetch_manifest(
        &self,
        r: &Reference,
        digest: &str,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let at = r.with_digest(digest);
        let (bytes, media_type) = self.get_manifest(&at, digest)?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: "manifest",
                reference: at.to_string(),
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok((bytes, media_type))
    }

    /// Fetches a blob, checking its size and digest against the descriptor while reading.
    pub fn fetch_blob(&self, r: &Reference, d: &Descriptor) -> Result<Vec<u8>, RegistryError> {
        let name = format!("{}@{}", r.repository_path(), d.digest);
        if !is_sha256(&d.digest) {
            return Err(RegistryError::Invalid {
                reference: name,
                message: "descriptor digest is not sha256".into(),
            });
        }
        let url = format!("{}/blobs/{}", self.base(r), d.digest);
        let resp = self.send(r, false, &|| self.http.get(&url))?;
        let resp = check_status(resp, r)?;
        let bytes = read_limited(resp, d.size, r).map_err(|e| match e {
            RegistryError::TooLarge { .. } => RegistryError::SizeMismatch {
                reference: name.clone(),
                expected: d.size,
                actual: d.size + 1,
            },
            e => e,
        })?;
        if bytes.len() as u64 != d.size {
            return Err(RegistryError::SizeMismatch {
                reference: name,
                expected: d.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = sha256_digest(&bytes);
        if actual != d.digest {
            return Err(RegistryError::DigestMismatch {
                what: "blob",
                reference: name,
                expected: d.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Uploads a blob unless the registry has it; returns its descriptor. Small blobs (configs,
    /// signature payloads) are uploaded without asking first: the question costs as much as the
    /// answer.
    pub fn push_blob(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Descriptor, RegistryError> {
        self.push_blob_with_progress(r, media_type, bytes, None)
    }

    /// [`Client::push_blob`], reporting `(bytes sent, total)` as the upload streams.
    pub fn push_blob_with_progress(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: &[u8],
        progress: Option<Progress>,
    ) -> Result<Descriptor, RegistryError> {
        const ASK_FIRST_ABOVE: usize = 16 * 1024;
        let d = Descriptor::of(media_type, bytes);
        if bytes.len() > ASK_FIRST_ABOVE {
            let blob_url = format!("{}/blobs/{}", self.base(r), d.digest);
            let head = self.send(r, true, &|| self.http.head(&blob_url))?;
            if head.status().is_success() {
                return Ok(d);
            }
        }
        let start_url = format!("{}/blobs/uploads/", self.base(r));
        let resp = self.send(r, true, &|| {
            self.http.post(&start_url).header("content-length", "0")
        })?;
        let resp = check_status(resp, r)?;
        let location = header(&resp, LOCATION.as_str()).ok_or_else(|| RegistryError::Invalid {
            reference: r.to_string(),
            message: "upload started without a Location".into(),
        })?;
        let location = if location.starts_with("http") {
            location
        } else {
            let origin = self.base(r);
            let origin = &origin[..origin.find("/v2/").unwrap_or(origin.len())];
            format!("{origin}{location}")
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{sep}digest={}", d.digest);
        let body: std::sync::Arc<[u8]> = bytes.into();
        let resp = self.send(r, true, &|| {
            let len = body.len() as u64;
            let reader = CountingReader {
                data: body.clone(),
                pos: 0,
                progress: progress.clone(),
            };
            self.http
                .put(&put_url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::blocking::Body::sized(reader, len))
        })?;
        check_status(resp, r)?;
        Ok(d)
    }

    /// Pushes a manifest under `tag_or_digest`; returns its descriptor.
    pub fn push_manifest(
        &self,
        r: &Reference,
        tag_or_digest: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Descriptor, RegistryError> {
        let url = format!("{}/manifests/{tag_or_digest}", self.base(r));
        let body = bytes.to_vec();
        let resp = self.send(r, true, &|| {
            self.http
                .put(&url)
                .header(CONTENT_TYPE, media_type)
                .body(body.clone())
        })?;
        check_status(resp, r)?;
        Ok(Descriptor::of(media_type, bytes))
    }

    /// Manifest descriptors that refer to `digest` through the referrers API; `Ok(None)` when the
    /// registry has no referrers API (then the `sha256-<hex>` tag schema applies).
    pub fn referrers_api(
        &self,
        r: &Reference,
        digest: &str,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        let url = format!("{}/referrers/{digest}", self.base(r));
        let resp = self.send(r, false, &|| self.http.get(&url).header(ACCEPT, OCI_INDEX))?;
        let status = resp.status();
        let is_index =
            header(&resp, CONTENT_TYPE.as_str()).is_some_and(|c| c.starts_with(OCI_INDEX));
        if status == StatusCode::NOT_FOUND || (status.is_success() && !is_index) {
            return Ok(None);
        }
        let resp = check_status(resp, r)?;
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES, r)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
                reference: r.to_string(),
                message: format!("referrers index: {e}"),
            })?;
        Ok(Some(index.manifests))
    }

    /// Fetches the manifest tagged `tag`, if the tag exists, with its digest checked against the
    /// registry's; `Ok(None)` when there is no such tag. One GET: the digest is that of the bytes
    /// received (the tag is resolved once, by this fetch).
    pub fn fetch_tag(
        &self,
        r: &Reference,
        tag: &str,
    ) -> Result<Option<(Vec<u8>, Descriptor)>, RegistryError> {
        let at = r.with_tag(tag);
        let url = format!("{}/manifests/{tag}", self.base(&at));
        let resp = self.send(&at, false, &|| {
            self.http
                .get(&url)
                .header(ACCEPT, ACCEPTED_MANIFESTS.join(", "))
        })?;
        let resp = match check_status(resp, &at) {
            Ok(resp) => resp,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let media_type = header(&resp, CONTENT_TYPE.as_str()).unwrap_or_default();
        let registry_digest = header(&resp, "docker-content-digest");
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES, &at)?;
        let d = Descriptor::of(&media_type, &bytes);
        if let Some(claimed) = registry_digest
            && is_sha256(&claimed)
            && claimed != d.digest
        {
            return Err(RegistryError::DigestMismatch {
                what: "manifest",
                reference: at.to_string(),
                expected: claimed,
                actual: d.digest,
            });
        }
        Ok(Some((bytes, d)))
    }
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

fn check_status(resp: Response, r: &Reference) -> Result<Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let reference = r.to_string();
    Err(match status {
        StatusCode::NOT_FOUND => RegistryError::NotFound { reference },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Denied {
            reference,
            status: status.as_u16(),
        },
        _ => {
            let mut body = String::new();
            let _ = resp.take(512).read_to_string(&mut body);
            RegistryError::Status {
                reference,
                status: status.as_u16(),
                body: body.trim().replace('\n', " "),
            }
        }
    })
}

/// Reads at most `limit` bytes; more is an error (a hostile registry cannot fill memory).
fn read_limited(resp: Response, limit: u64, r: &Reference) -> Result<Vec<u8>, RegistryError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(RegistryError::TooLarge {
            reference: r.to_string(),
            limit,
        });
    }
    let mut out = Vec::with_capacity(resp.content_length().unwrap_or(0).min(limit) as usize);
    resp.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| RegistryError::Unreachable {
            reference: r.to_string(),
            message: format!("reading response: {e}"),
        })?;
    if out.len() as u64 > limit {
        return Err(RegistryError::TooLarge {
            reference: r.to_string(),
            limit,
        });
    }
    Ok(out)
}

fn parse_challenge(challenge: &str) -> HashMap<String, String> {
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_progress_reaches_the_total() {
        use std::io::Read as _;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let mut r = CountingReader {
            data: vec![7u8; 600 * 1024].into(),
            pos: 0,
            progress: Some(std::sync::Arc::new(move |a, b| {
                s2.lock().unwrap().push((a, b))
            })),
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 600 * 1024);
        let seen = seen.lock().unwrap();
        assert!(seen.len() >= 3, "reported in steps: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(seen.last(), Some(&(600 * 1024, 600 * 1024)));
    }

    #[test]
    fn bearer_challenge_parsing() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull");
    }
}
