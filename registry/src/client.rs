//! A registry client speaking the OCI distribution API: resolve a tag once, then fetch and push by
//! digest, checking every digest and bounding every response. Basic and bearer-token auth.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};

use crate::auth::{AuthError, Credentials, parse_challenge};
use crate::manifest::{ACCEPTED_MANIFESTS, Descriptor, ImageIndex, OCI_INDEX, sha256_digest};
use crate::reference::{Reference, is_sha256, is_tag};
use crate::untrusted;

/// Manifests larger than this are refused (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Why a registry operation failed; the message names the reference. Every string the registry
/// chose (bodies, header values, parse errors quoting them) is passed through
/// [`untrusted::shown`] before it is stored here.
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
    /// The registry (or the network) asked for something bpfship does not do: credentials to
    /// another origin over plain HTTP, a TLS-to-plain redirect, an oversized declared blob, …
    #[error("{reference}: refused: {message}")]
    Refused { reference: String, message: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// What kind of failure a [`RegistryError`] is: decided once, here, for the CLI's exit codes and
/// the agent's retry, audit and metrics alike.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The registry could not be reached or answered with a server error: try again later.
    Unavailable,
    /// What the registry served does not match its digest or size: tampering or corruption,
    /// never "the registry is down".
    Integrity,
    /// The manifest, tag or blob does not exist.
    NotFound,
    /// Credentials missing, wrong, or not readable.
    Auth,
    /// The registry answered something bpfship refuses (malformed, oversized, insecure
    /// redirect or realm, credentials to another origin).
    Refused,
}

impl ErrorClass {
    /// Stable lowercase name (status, metrics labels, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Integrity => "integrity",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Auth => "auth",
            ErrorClass::Refused => "refused",
        }
    }
}

impl RegistryError {
    /// The failure's class (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            RegistryError::Unreachable { .. } => ErrorClass::Unavailable,
            RegistryError::Status { status, .. } if *status >= 500 || *status == 429 => {
                ErrorClass::Unavailable
            }
            RegistryError::Status { .. } => ErrorClass::Refused,
            RegistryError::NotFound { .. } => ErrorClass::NotFound,
            RegistryError::Denied { .. } | RegistryError::Auth(_) => ErrorClass::Auth,
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => {
                ErrorClass::Integrity
            }
            RegistryError::TooLarge { .. }
            | RegistryError::Invalid { .. }
            | RegistryError::Refused { .. } => ErrorClass::Refused,
        }
    }

    /// True when the registry could not be reached at all (the agent retries these).
    pub fn is_unreachable(&self) -> bool {
        self.class() == ErrorClass::Unavailable
    }
}

/// What a blob is for, which bounds its size before anything is fetched: a registry's manifest
/// or `Content-Length` never sizes a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// An eBPF object's layer (a tar, maybe gzipped, of one ELF: kilobytes to a few MiB).
    Ebpf,
    /// A WASM module (may be hundreds of MB).
    Wasm,
    /// An image config.
    Config,
    /// A signature payload or sigstore bundle.
    Signature,
}

impl BlobKind {
    /// Largest blob of this kind fetched.
    pub const fn max_bytes(self) -> u64 {
        match self {
            BlobKind::Ebpf => 16 << 20,
            BlobKind::Wasm => 512 << 20,
            BlobKind::Config | BlobKind::Signature => 1 << 20,
        }
    }

    /// The kind of an artifact's content layer.
    pub fn of_artifact(kind: crate::artifact::ArtifactKind) -> Self {
        match kind {
            crate::artifact::ArtifactKind::Ebpf => BlobKind::Ebpf,
            crate::artifact::ArtifactKind::Wasm => BlobKind::Wasm,
        }
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
    /// How long one request may take, from sending it to the end of its answer's body
    /// (`--registry-timeout`; `None`: [`DEFAULT_TIMEOUT`]). A registry that stalls or trickles
    /// is an outage after this long, never a hang.
    pub timeout: Option<Duration>,
}

/// The request timeout when none is configured: long enough for a 1 GiB layer on a slow link.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A registry client. Cheap to share across deployments and registries: bearer tokens are kept
/// per registry origin (scheme, host, port) and scope, and Authorization only ever goes to the
/// origin of the registry it was issued for.
pub struct Client {
    http: Http,
    options: ClientOptions,
    /// [`ClientOptions::timeout`] resolved.
    timeout: Duration,
    tokens: Mutex<HashMap<(String, String), String>>,
    schemes: Mutex<HashMap<String, &'static str>>,
}

/// What a request is for, in a repository: the only way client code names a URL.
enum Endpoint<'a> {
    Manifest(&'a str),
    Blob(&'a str),
    Uploads,
    Referrers(&'a str),
}

/// True when a redirect from the chain `previous` to `next` may be followed: at most 10 hops,
/// and once any hop was TLS every later one is TLS too (a TLS registry cannot be walked down to
/// plain HTTP). Credentials are not at stake here: reqwest drops Authorization on a redirect to
/// another scheme, host or port.
fn redirect_allowed(previous: &[reqwest::Url], next: &reqwest::Url) -> bool {
    previous.len() <= 10
        && (next.scheme() == "https" || previous.iter().all(|u| u.scheme() != "https"))
}

impl Client {
    /// Builds a client (rustls TLS with the system roots plus `ca_certificates`).
    pub fn new(options: ClientOptions) -> Result<Self, RegistryError> {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if redirect_allowed(attempt.previous(), attempt.url()) {
                attempt.follow()
            } else {
                attempt.error("redirect refused: more than 10 hops, or from TLS to plain HTTP")
            }
        });
        let timeout = options.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let mut builder = Http::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .redirect(redirects)
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
            timeout,
            tokens: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
        })
    }

    /// Reads at most `limit` bytes; more is an error (a hostile registry cannot fill memory). The
    /// buffer grows with what arrives: a declared `Content-Length` only decides an early refusal.
    /// The body must arrive within the client's timeout of the first read (each read is also bounded by it), so
    /// a registry trickling bytes ends in an error rather than holding the caller for good.
    fn read_limited(
        &self,
        resp: Response,
        limit: u64,
        r: &Reference,
    ) -> Result<Vec<u8>, RegistryError> {
        let timeout = self.timeout;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(RegistryError::TooLarge {
                reference: r.to_string(),
                limit,
            });
        }
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let mut body = resp.take(limit + 1);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match body.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(RegistryError::Unreachable {
                        reference: r.to_string(),
                        message: format!("reading response: {}", untrusted::shown(&e.to_string())),
                    });
                }
            };
            out.extend_from_slice(&chunk[..n]);
            if started.elapsed() > timeout {
                return Err(RegistryError::Unreachable {
                    reference: r.to_string(),
                    message: format!(
                        "reading response: {} bytes in {} s, past the registry timeout ({} s)",
                        out.len(),
                        started.elapsed().as_secs(),
                        timeout.as_secs_f64()
                    ),
                });
            }
        }
        if out.len() as u64 > limit {
            return Err(RegistryError::TooLarge {
                reference: r.to_string(),
                limit,
            });
        }
        Ok(out)
    }

    /// `scheme://host[:port]` of the registry `r` names.
    fn origin(&self, r: &Reference) -> String {
        format!("{}://{}", self.scheme(r), r.registry())
    }

    /// The URL of `endpoint` in `r`'s repository. Tags and digests are checked against their
    /// grammar here, so a name taken from a registry's answer cannot add path segments.
    fn url(&self, r: &Reference, endpoint: Endpoint) -> Result<String, RegistryError> {
        let bad = |what: &str, v: &str| RegistryError::Invalid {
            reference: r.repository_path(),
            message: format!("{what} {} is not valid", untrusted::shown(v)),
        };
        let base = format!("{}/v2/{}", self.origin(r), r.repository());
        Ok(match endpoint {
            Endpoint::Manifest(t) => {
                if !is_sha256(t) && !is_tag(t) {
                    return Err(bad("tag or digest", t));
                }
                format!("{base}/manifests/{t}")
            }
            Endpoint::Blob(d) if is_sha256(d) => format!("{base}/blobs/{d}"),
            Endpoint::Referrers(d) if is_sha256(d) => format!("{base}/referrers/{d}"),
            Endpoint::Blob(d) | Endpoint::Referrers(d) => return Err(bad("digest", d)),
            Endpoint::Uploads => format!("{base}/blobs/uploads/"),
        })
    }

    /// TLS always, except for registries listed insecure (plain HTTP) and loopback registries,
    /// which get TLS when they speak it and plain HTTP otherwise (as docker treats them).
    fn scheme(&self, r: &Reference) -> &'static str {
        if self.options.insecure_registries.iter().any(|h| {
            Reference::parse(&format!("{h}/x")).is_ok_and(|i| i.registry() == r.registry())
        }) {
            return "http";
        }
        if !r.is_loopback() {
            return "https";
        }
        if let Some(s) = self
            .schemes
            .lock()
            .ok()
            .and_then(|m| m.get(r.registry()).copied())
        {
            return s;
        }
        // Asked in plain HTTP first (no credentials are sent): a plain registry answers `/v2/` at
        // once (200 or 401), a TLS one answers 400 ("HTTP request to an HTTPS server") or hangs
        // up. Asking in TLS first costs a handshake against a plain-HTTP server, which only
        // answers once it finds a line break in the ClientHello: tens to hundreds of ms.
        let probe = self
            .http
            .get(format!("http://{}/v2/", r.registry()))
            .timeout(Duration::from_secs(5).min(self.timeout))
            .send();
        let scheme = match probe {
            Ok(resp) if resp.status() != StatusCode::BAD_REQUEST => "http",
            _ => "https",
        };
        if let Ok(mut m) = self.schemes.lock() {
            m.insert(r.registry().to_owned(), scheme);
        }
        scheme
    }

    fn credentials(&self, r: &Reference) -> Result<Option<Credentials>, RegistryError> {
        match &self.options.credentials {
            Some(c) => Ok(Some(c.clone())),
            None => Ok(crate::auth::from_docker_config(r.registry())?),
        }
    }

    /// Sends the request `make` builds for `url`, answering one auth challenge (basic or
    /// bearer) if needed. Credentials (a cached token, Basic, a new token) are attached only
    /// when `url` is on the registry's own origin; a request elsewhere (an upload `Location` on
    /// another host) goes without any, as go-containerregistry's `matchesHost` decides.
    fn send(
        &self,
        r: &Reference,
        push: bool,
        url: &str,
        make: &dyn Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let origin = self.origin(r);
        let own = reqwest::Url::parse(url)
            .ok()
            .zip(reqwest::Url::parse(&origin).ok())
            .is_some_and(|(u, o)| u.origin() == o.origin());
        let unreachable = |e: reqwest::Error| transport_error(r, &e);
        if !own {
            return make().send().map_err(unreachable);
        }
        let scope = format!(
            "repository:{}:{}",
            r.repository(),
            if push { "pull,push" } else { "pull" }
        );
        let key = (origin, scope);
        let cached = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned());
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
            let token = self.fetch_token(r, &challenge, &key.1, creds.as_ref())?;
            if let Ok(mut t) = self.tokens.lock() {
                t.insert(key, token.clone());
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

    /// Asks the challenge's realm for a token. The realm is the registry's choice, so it is
    /// checked first: http(s) only; a TLS registry's realm is TLS; credentials go to a plain-HTTP
    /// realm only on the registry's own host (a loopback or `--insecure-registry` setup).
    fn fetch_token(
        &self,
        r: &Reference,
        challenge: &str,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let refused = |message: String| RegistryError::Refused {
            reference: r.to_string(),
            message,
        };
        let params = parse_challenge(challenge);
        let realm = params.get("realm").ok_or_else(|| RegistryError::Invalid {
            reference: r.to_string(),
            message: format!(
                "bearer challenge without realm: {}",
                untrusted::shown(challenge)
            ),
        })?;
        let realm_url = reqwest::Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                refused(format!(
                    "token realm {} is not an http(s) URL",
                    untrusted::shown(realm)
                ))
            })?;
        let registry_tls = self.scheme(r) == "https";
        if registry_tls && realm_url.scheme() != "https" {
            return Err(refused(format!(
                "the TLS registry names a plain-HTTP token realm {}; credentials and tokens never travel in the clear",
                untrusted::shown(realm)
            )));
        }
        if creds.is_some()
            && realm_url.scheme() == "http"
            && realm_url.host_str() != Some(crate::reference::host_of(r.registry()))
        {
            return Err(refused(format!(
                "token realm {} is plain HTTP on another host; credentials for {} are not sent there",
                untrusted::shown(realm),
                r.registry()
            )));
        }
        let mut req = self.http.get(realm_url).query(&[("scope", scope)]);
        if let Some(service) = params.get("service") {
            req = req.query(&[("service", service)]);
        }
        if let Some(c) = creds {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let resp = req.send().map_err(|e| transport_error(r, &e))?;
        if !resp.status().is_success() {
            return Err(RegistryError::Denied {
                reference: r.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let body = self.read_limited(resp, 64 * 1024, r)?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
                reference: r.to_string(),
                message: format!("token response: {}", untrusted::shown(&e.to_string())),
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
        let url = self.url(r, Endpoint::Manifest(r.target()))?;
        let resp = self.send(r, false, &url, &|| {
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
        let descriptor = match (media_type, digest, size) {
            (Some(media_type), Some(digest), Some(size))
                if is_sha256(&digest) && size > 0 && size <= MAX_MANIFEST_BYTES =>
            {
                Descriptor {
                    media_type: untrusted::shown(&media_type),
                    digest,
                    size,
                    artifact_type: None,
                    annotations: Default::default(),
                    platform: None,
                }
            }
            _ => {
                let (bytes, media_type) = self.get_manifest(r, r.target())?;
                Descriptor {
                    size: bytes.len() as u64,
                    ..Descriptor::of(&media_type, &bytes)
                }
            }
        };
        if let Some(pinned) = r.digest()
            && pinned != descriptor.digest
        {
            return Err(RegistryError::DigestMismatch {
                what: "manifest",
                reference: r.to_string(),
                expected: pinned.to_owned(),
                actual: descriptor.digest,
            });
        }
        Ok(descriptor)
    }

    fn get_manifest(
        &self,
        r: &Reference,
        target: &str,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        let url = self.url(r, Endpoint::Manifest(target))?;
        let resp = self.send(r, false, &url, &|| {
            self.http
                .get(&url)
                .header(ACCEPT, ACCEPTED_MANIFESTS.join(", "))
        })?;
        let resp = check_status(resp, r)?;
        let media_type =
            untrusted::shown(&header(&resp, CONTENT_TYPE.as_str()).unwrap_or_default());
        let bytes = self.read_limited(resp, MAX_MANIFEST_BYTES, r)?;
        Ok((bytes, media_type))
    }

    /// Fetches the manifest `digest` and checks its bytes hash to it. Returns bytes and media type.
    pub fn fetch_manifest(
        &self,
        r: &Reference,
        digest: &str,
    ) -> Result<(Vec<u8>, String), RegistryError> {
        if !is_sha256(digest) {
            return Err(RegistryError::Invalid {
                reference: r.repository_path(),
                message: format!("manifest digest {} is not sha256", untrusted::shown(digest)),
            });
        }
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

    /// Fetches a blob of `kind`, checking its size and digest against the descriptor while
    /// reading. A descriptor larger than the kind allows is refused unfetched; a
    /// `Content-Length` other than the descriptor's size is a size mismatch before any read; the
    /// body is read in bounded steps, never into a buffer the other side sized.
    pub fn fetch_blob(
        &self,
        r: &Reference,
        d: &Descriptor,
        kind: BlobKind,
    ) -> Result<Vec<u8>, RegistryError> {
        let name = format!("{}@{}", r.repository_path(), untrusted::shown(&d.digest));
        if d.size > kind.max_bytes() {
            return Err(RegistryError::Refused {
                reference: name,
                message: format!(
                    "descriptor declares {} bytes; a {kind:?} blob is at most {}",
                    d.size,
                    kind.max_bytes()
                ),
            });
        }
        let url = self.url(r, Endpoint::Blob(&d.digest))?;
        let resp = self.send(r, false, &url, &|| self.http.get(&url))?;
        let resp = check_status(resp, r)?;
        if let Some(n) = resp.content_length()
            && n != d.size
        {
            return Err(RegistryError::SizeMismatch {
                reference: name,
                expected: d.size,
                actual: n,
            });
        }
        let bytes = self.read_limited(resp, d.size, r).map_err(|e| match e {
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

    /// [`Client::push_blob`], reporting `(bytes sent, total)` as the upload streams. The upload
    /// `Location` is the registry's choice: on another origin it gets the bytes but no
    /// credentials; from a TLS registry to plain HTTP it is refused.
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
            let blob_url = self.url(r, Endpoint::Blob(&d.digest))?;
            let head = self.send(r, true, &blob_url, &|| self.http.head(&blob_url))?;
            if head.status().is_success() {
                return Ok(d);
            }
        }
        let start_url = self.url(r, Endpoint::Uploads)?;
        let resp = self.send(r, true, &start_url, &|| {
            self.http.post(&start_url).header("content-length", "0")
        })?;
        let resp = check_status(resp, r)?;
        let location = header(&resp, LOCATION.as_str()).ok_or_else(|| RegistryError::Invalid {
            reference: r.to_string(),
            message: "upload started without a Location".into(),
        })?;
        let mut put_url = reqwest::Url::parse(&start_url)
            .and_then(|base| base.join(&location))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| RegistryError::Invalid {
                reference: r.to_string(),
                message: format!(
                    "upload Location {} is not a URL",
                    untrusted::shown(&location)
                ),
            })?;
        if self.scheme(r) == "https" && put_url.scheme() != "https" {
            return Err(RegistryError::Refused {
                reference: r.to_string(),
                message: format!(
                    "the TLS registry sent the upload to plain-HTTP {}",
                    untrusted::shown(&location)
                ),
            });
        }
        put_url.query_pairs_mut().append_pair("digest", &d.digest);
        let put_url = put_url.to_string();
        let body: std::sync::Arc<[u8]> = bytes.into();
        let resp = self.send(r, true, &put_url, &|| {
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
        let url = self.url(r, Endpoint::Manifest(tag_or_digest))?;
        let body = bytes.to_vec();
        let resp = self.send(r, true, &url, &|| {
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
        let url = self.url(r, Endpoint::Referrers(digest))?;
        let resp = self.send(r, false, &url, &|| {
            self.http.get(&url).header(ACCEPT, OCI_INDEX)
        })?;
        let status = resp.status();
        let is_index =
            header(&resp, CONTENT_TYPE.as_str()).is_some_and(|c| c.starts_with(OCI_INDEX));
        if status == StatusCode::NOT_FOUND || (status.is_success() && !is_index) {
            return Ok(None);
        }
        let resp = check_status(resp, r)?;
        let bytes = self.read_limited(resp, MAX_MANIFEST_BYTES, r)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
                reference: r.to_string(),
                message: format!("referrers index: {}", untrusted::shown(&e.to_string())),
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
        let url = self.url(&at, Endpoint::Manifest(tag))?;
        let resp = self.send(&at, false, &url, &|| {
            self.http
                .get(&url)
                .header(ACCEPT, ACCEPTED_MANIFESTS.join(", "))
        })?;
        let resp = match check_status(resp, &at) {
            Ok(resp) => resp,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let media_type =
            untrusted::shown(&header(&resp, CONTENT_TYPE.as_str()).unwrap_or_default());
        let registry_digest = header(&resp, "docker-content-digest");
        let bytes = self.read_limited(resp, MAX_MANIFEST_BYTES, &at)?;
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
            let mut body = Vec::new();
            let _ = resp.take(512).read_to_end(&mut body);
            RegistryError::Status {
                reference,
                status: status.as_u16(),
                body: untrusted::shown(String::from_utf8_lossy(&body).trim()),
            }
        }
    })
}

/// A transport failure: a refused redirect is the registry's doing, anything else is the
/// network's (retry later).
fn transport_error(r: &Reference, e: &reqwest::Error) -> RegistryError {
    let message = untrusted::shown_max(&error_chain(e), 1024);
    if e.is_redirect() {
        RegistryError::Refused {
            reference: r.to_string(),
            message,
        }
    } else {
        RegistryError::Unreachable {
            reference: r.to_string(),
            message,
        }
    }
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

    /// Issue 7 item 10: a TLS registry's redirects stay on TLS.
    #[test]
    fn redirects_from_tls_stay_on_tls() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        let tls = [u("https://registry.example/v2/x/blobs/sha256:1")];
        assert!(redirect_allowed(&tls, &u("https://cdn.example/blob")));
        assert!(!redirect_allowed(&tls, &u("http://cdn.example/blob")));
        let chain = [u("https://registry.example/"), u("https://cdn.example/")];
        assert!(!redirect_allowed(&chain, &u("http://cdn.example/")));
        let plain = [u("http://127.0.0.1:5000/v2/")];
        assert!(redirect_allowed(&plain, &u("http://127.0.0.1:5001/")));
        let long: Vec<_> = (0..11)
            .map(|i| u(&format!("https://h{i}.example/")))
            .collect();
        assert!(!redirect_allowed(&long, &u("https://h.example/")));
    }
}
