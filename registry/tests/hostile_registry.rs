//! A hostile registry or network, as issue 7 describes it: a `HostileServer` on loopback in front
//! of Debian's real docker-registry rewrites what it answers (or, for auth, issues the
//! challenges itself and records what the client sends where).

use std::collections::BTreeMap;
use std::sync::Arc;

use bpfship_registry::artifact::package_ebpf;
use bpfship_registry::auth::Credentials;
use bpfship_registry::manifest::OCI_MANIFEST;
use bpfship_registry::testing::{Exchange, HostileServer, TestRegistry};
use bpfship_registry::{BlobKind, Client, ClientOptions, ErrorClass, Reference, RegistryError};

macro_rules! registry_or_skip {
    () => {
        match TestRegistry::start() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("SKIP: {e}");
                return;
            }
        }
    };
}

fn client() -> Client {
    Client::new(ClientOptions::default()).unwrap()
}

/// Pushes a small eBPF-shaped artifact to `r`; returns its packaging.
fn push(client: &Client, r: &Reference) -> bpfship_registry::artifact::Packaged {
    let progs = BTreeMap::from([("xdp_pass".to_string(), "xdp".to_string())]);
    let p = package_ebpf(
        "x.o",
        b"\x7fELF not really",
        &progs,
        &BTreeMap::new(),
        "1970-01-01T00:00:00Z",
        &bpfship_registry::Platform::host(),
        BTreeMap::new(),
    )
    .unwrap();
    client
        .push_blob(r, &p.config_media_type, &p.config)
        .unwrap();
    client.push_blob(r, &p.layer_media_type, &p.layer).unwrap();
    client
        .push_manifest(r, r.tag().unwrap(), OCI_MANIFEST, &p.manifest.to_bytes())
        .unwrap();
    p
}

fn rewrite(
    f: impl Fn(&mut Exchange) + Send + Sync + 'static,
) -> Arc<dyn Fn(&mut Exchange) + Send + Sync> {
    Arc::new(f)
}

/// Item 19: a descriptor declaring 2^50 bytes is refused before any fetch, and a reply whose
/// Content-Length says 2^50 is a size mismatch before any read: no buffer is sized from either
/// (before the fix, `read_limited` reserved 1 PiB and the process aborted).
#[test]
fn declared_petabyte_blob_is_refused_without_allocating() {
    let reg = registry_or_skip!();
    let c = client();
    let r = Reference::parse(&format!("{}/net/xdp:v1", reg.address)).unwrap();
    let p = push(&c, &r);
    let mut huge = p.manifest.layers[0].clone();
    huge.size = 1 << 50;
    for kind in [BlobKind::Ebpf, BlobKind::Wasm] {
        let e = c.fetch_blob(&r, &huge, kind).unwrap_err();
        assert!(matches!(e, RegistryError::Refused { .. }), "{e}");
    }
    let layer = p.manifest.layers[0].clone();
    let proxy = HostileServer::start(
        Some(&reg.address),
        rewrite(|ex| {
            if ex.path.contains("/blobs/") {
                ex.declared_length = Some(1 << 50);
            }
        }),
    )
    .unwrap();
    let via = Reference::parse(&format!("{}/net/xdp:v1", proxy.address)).unwrap();
    let e = c.fetch_blob(&via, &layer, BlobKind::Ebpf).unwrap_err();
    assert!(
        matches!(e, RegistryError::SizeMismatch { actual, .. } if actual == 1 << 50),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::Integrity);
    // A Wasm-sized descriptor (declared within the kind's limit) answered with a short body and
    // a Content-Length matching the descriptor: the read ends at the body, nothing preallocated.
    let mut wasm = layer.clone();
    wasm.size = 400 << 20;
    let proxy = HostileServer::start(
        Some(&reg.address),
        rewrite(|ex| {
            if ex.path.contains("/blobs/") {
                ex.declared_length = Some(400 << 20);
            }
        }),
    )
    .unwrap();
    let via = Reference::parse(&format!("{}/net/xdp:v1", proxy.address)).unwrap();
    let e = c.fetch_blob(&via, &wasm, BlobKind::Wasm).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Unavailable, "{e}");
}

/// Item 12: a swapped blob is an integrity failure, not "registry unavailable"; a stopped
/// registry is.
#[test]
fn tampering_is_classified_apart_from_an_outage() {
    let mut reg = registry_or_skip!();
    let c = client();
    let r = Reference::parse(&format!("{}/net/xdp:v1", reg.address)).unwrap();
    let p = push(&c, &r);
    let layer = p.manifest.layers[0].clone();
    let proxy = HostileServer::start(
        Some(&reg.address),
        rewrite(|ex| {
            if ex.path.contains("/blobs/") && !ex.body.is_empty() {
                let last = ex.body.len() - 1;
                ex.body[last] ^= 0xff;
            }
        }),
    )
    .unwrap();
    let via = Reference::parse(&format!("{}/net/xdp:v1", proxy.address)).unwrap();
    let e = c.fetch_blob(&via, &layer, BlobKind::Ebpf).unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    assert_eq!(e.class(), ErrorClass::Integrity);
    assert!(!e.is_unreachable());
    reg.stop();
    let e = c.fetch_blob(&r, &layer, BlobKind::Ebpf).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Unavailable, "{e}");
}

/// A loopback "registry" that demands a bearer token from its own realm and issues `token`;
/// requests carrying it are forwarded to the real registry at `upstream`, and `also` may change
/// the answer further (it is given the server's own address).
fn token_registry(
    upstream: &str,
    token: &'static str,
    also: impl Fn(&mut Exchange, &str) + Send + Sync + 'static,
) -> HostileServer {
    let own = Arc::new(std::sync::Mutex::new(String::new()));
    let own2 = own.clone();
    let server = HostileServer::start(
        Some(upstream),
        rewrite(move |ex| {
            let own = own2.lock().unwrap().clone();
            if ex.path.starts_with("/token") {
                ex.status = 200;
                ex.headers = vec![("content-type".into(), "application/json".into())];
                ex.body = format!("{{\"token\":\"{token}\"}}").into_bytes();
                ex.declared_length = None;
            } else if ex.request_header("authorization") != Some(&format!("Bearer {token}")) {
                ex.status = 401;
                ex.headers = vec![(
                    "www-authenticate".into(),
                    format!("Bearer realm=\"http://{own}/token\",service=\"test\""),
                )];
                ex.body.clear();
                ex.declared_length = None;
            } else {
                also(ex, &own);
            }
        }),
    )
    .unwrap();
    *own.lock().unwrap() = server.address.clone();
    server
}

/// Item 10: a token issued for one registry is never sent to another registry serving the same
/// repository path from the same (shared) client (before the fix, tokens were keyed by scope).
#[test]
fn bearer_tokens_stay_with_their_registry() {
    let reg = registry_or_skip!();
    let c = client();
    let a = token_registry(&reg.address, "token-for-a", |_, _| {});
    let ra = Reference::parse(&format!("{}/net/xdp:v1", a.address)).unwrap();
    push(&c, &ra);
    c.resolve(&ra).unwrap();
    assert!(
        a.exchanges().iter().any(|e| e.method == "HEAD"
            && e.request_header("authorization") == Some("Bearer token-for-a")),
        "the token flow ran for pull and push"
    );
    let b = HostileServer::start(Some(&reg.address), rewrite(|_| {})).unwrap();
    let rb = Reference::parse(&format!("{}/net/xdp:v1", b.address)).unwrap();
    c.resolve(&rb).unwrap();
    for ex in b.exchanges() {
        assert_eq!(
            ex.request_header("authorization"),
            None,
            "{} {}",
            ex.method,
            ex.path
        );
    }
}

/// Item 10: an upload `Location` on another origin receives the blob but no credentials (as
/// go-containerregistry's `matchesHost` decides); the push still completes through it. Before
/// the fix, the cached token and the Basic credentials went with it.
#[test]
fn cross_origin_upload_location_gets_no_credentials() {
    let reg = registry_or_skip!();
    let elsewhere = HostileServer::start(Some(&reg.address), rewrite(|_| {})).unwrap();
    let other = elsewhere.address.clone();
    let registry = token_registry(&reg.address, "token-for-a", move |ex, own| {
        if ex.method == "POST" {
            let moved = ex
                .headers
                .iter()
                .find(|(k, _)| k == "location")
                .map(|(_, v)| v.replace(own, &other));
            if let Some(loc) = moved {
                ex.set_header("location", &loc);
            }
        }
    });
    let c = Client::new(ClientOptions {
        credentials: Some(Credentials {
            username: "ci".into(),
            password: "s3cret".into(),
        }),
        ..Default::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("{}/net/xdp:v1", registry.address)).unwrap();
    c.push_blob(&r, "application/octet-stream", b"payload")
        .unwrap();
    let puts: Vec<_> = elsewhere
        .exchanges()
        .into_iter()
        .filter(|e| e.method == "PUT")
        .collect();
    assert!(!puts.is_empty(), "the upload went to the other origin");
    for ex in puts {
        assert_eq!(ex.request_header("authorization"), None, "{}", ex.path);
    }
}

/// Item 10: a TLS registry naming a plain-HTTP token realm gets no credentials sent there (the
/// real docker-registry, configured for token auth with that realm); and a plain-HTTP realm on
/// another host never receives Basic credentials.
#[test]
fn plain_http_realms_never_receive_credentials() {
    let realm = HostileServer::start(None, rewrite(|_| {})).unwrap();
    let (reg, ca) =
        match TestRegistry::start_tls_token_auth(&format!("http://{}/token", realm.address)) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("SKIP: {e}");
                return;
            }
        };
    let creds = Credentials {
        username: "ci".into(),
        password: "s3cret".into(),
    };
    let c = Client::new(ClientOptions {
        credentials: Some(creds.clone()),
        ca_certificates: vec![ca],
        ..Default::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("{}/net/xdp:v1", reg.address)).unwrap();
    let e = c.resolve(&r).unwrap_err();
    assert!(matches!(e, RegistryError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("plain-HTTP token realm"), "{e}");
    assert!(
        realm.exchanges().is_empty(),
        "nothing was sent to the realm"
    );

    // A plain-HTTP registry whose realm is plain HTTP on another host (`localhost` is not
    // `127.0.0.1`): the credentials are not sent there.
    let upstream = registry_or_skip!();
    let realm_addr = realm.address.replace("127.0.0.1", "localhost");
    let challenger = HostileServer::start(
        Some(&upstream.address),
        rewrite(move |ex| {
            ex.status = 401;
            ex.headers = vec![(
                "www-authenticate".into(),
                format!("Bearer realm=\"http://{realm_addr}/token\""),
            )];
            ex.body.clear();
            ex.declared_length = None;
        }),
    )
    .unwrap();
    let c = Client::new(ClientOptions {
        credentials: Some(creds),
        ..Default::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("{}/net/xdp:v1", challenger.address)).unwrap();
    let e = c.resolve(&r).unwrap_err();
    assert!(e.to_string().contains("plain HTTP on another host"), "{e}");
    assert!(
        realm.exchanges().is_empty(),
        "nothing was sent to the realm"
    );
}

/// Item 17/6: a registry's error body with terminal escapes and a megabyte of text reaches the
/// error message escaped and capped.
#[test]
fn registry_error_bodies_are_escaped_and_capped() {
    let reg = registry_or_skip!();
    let proxy = HostileServer::start(
        Some(&reg.address),
        rewrite(|ex| {
            ex.status = 418;
            ex.body = b"\x1b]0;pwned\x07\x1b[2J"
                .iter()
                .copied()
                .chain(std::iter::repeat_n(b'A', 1 << 20))
                .collect();
            ex.declared_length = None;
        }),
    )
    .unwrap();
    let r = Reference::parse(&format!("{}/net/xdp:v1", proxy.address)).unwrap();
    let e = client().fetch_tag(&r, "v1").unwrap_err().to_string();
    assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
    assert!(e.contains("\\u{1b}]0;pwned"), "{e}");
    assert!(e.len() < 1024, "{} bytes", e.len());
}
