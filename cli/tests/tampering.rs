//! Tampering with what bpfship pushed, as someone with write access to the registry (or its
//! storage) could: each change is refused by `verify`/`pull`, each with its own message.

mod common;

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bpfship_registry::manifest::{OCI_INDEX, OCI_MANIFEST, sha256_digest};
use bpfship_registry::signatures::{
    BUNDLE_ARTIFACT_TYPE, SIGNATURE_ANNOTATION, legacy_tag, referrers_tag,
};
use bpfship_registry::testing::{Exchange, HostileServer, TestRegistry};
use bpfship_registry::{Client, ClientOptions, Descriptor, ImageIndex, ImageManifest, Reference};
use common::{Work, s};

/// A registry with one signed eBPF artifact pushed by the CLI.
struct Pushed {
    reg: TestRegistry,
    w: Work,
    public: PathBuf,
    /// `host:port/net/xdp:v1`.
    tag_ref: String,
    repo: Reference,
    digest: String,
    client: Client,
}

impl Pushed {
    /// Pushes `xdp_pass.o` signed with `--signature-format format`; `None` (SKIP printed) when the
    /// registry or clang is missing.
    fn new(format: &str) -> Option<Self> {
        let reg = common::registry()?;
        let xdp = common::object("xdp_pass")?;
        let w = Work::new();
        let (key, public) = w.key_pair("release");
        let file = w.write("xdp_pass.o", &xdp);
        let tag_ref = format!("{}/net/xdp:v1", reg.address);
        let pushed = w.push(&file, &tag_ref, Some(&key), &["--signature-format", format]);
        let digest = pushed["digest"].as_str().unwrap().to_owned();
        let client = Client::new(ClientOptions::default()).unwrap();
        let repo = Reference::parse(&tag_ref).unwrap();
        let p = Self {
            reg,
            w,
            public,
            tag_ref,
            repo,
            digest,
            client,
        };
        // Untampered, it verifies: every refusal below is the tampering's doing.
        p.verify(&p.tag_ref.clone()).expect(0);
        Some(p)
    }

    fn verify(&self, reference: &str) -> common::Run {
        self.w.run(["verify", "--key", s(&self.public), reference])
    }

    fn manifest(&self, digest: &str) -> ImageManifest {
        let (bytes, _) = self.client.fetch_manifest(&self.repo, digest).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The file holding blob (or manifest) `digest` in the registry's filesystem storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let p = self
            .reg
            .storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        assert!(p.exists(), "blob {digest} not at {}", p.display());
        p
    }

    /// Pushes `manifest` under `tag` (or its digest when `tag` is `None`); returns its descriptor.
    fn push_manifest(&self, tag: Option<&str>, media_type: &str, bytes: &[u8]) -> Descriptor {
        let digest = sha256_digest(bytes);
        self.client
            .push_manifest(&self.repo, tag.unwrap_or(&digest), media_type, bytes)
            .unwrap()
    }
}

/// Replaces the first occurrence of `from` by `to` (same length) in `bytes`.
fn replace(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(from)));
    bytes[at..at + to.len()].copy_from_slice(to);
}

#[test]
fn changed_byte_in_the_artifact_blob() {
    let Some(p) = Pushed::new("both") else { return };
    let layer = p.manifest(&p.digest).layers[0].clone();
    let file = p.blob_file(&layer.digest);
    let mut blob = std::fs::read(&file).unwrap();
    let mid = blob.len() / 2;
    blob[mid] ^= 0x01;
    std::fs::write(&file, &blob).unwrap();

    // pull fetches by digest and checks: refused, nothing written.
    let out = p.w.path("out");
    let msg =
        p.w.run(["pull", "--key", s(&p.public), &p.tag_ref, "-o", s(&out)])
            .rejected_with("blob digest mismatch");
    assert!(msg.contains(&format!("expected {}", layer.digest)), "{msg}");
    assert!(
        !out.join("xdp_pass.o").exists(),
        "nothing written on failure"
    );
    // The signatures are over the (intact) manifest; verify with content rules fetches the blob.
    p.verify(&p.tag_ref).expect(0);
    let policy = p.w.write(
        "policy.toml",
        format!(
            "version = 1\n[[trust]]\nrepositories = [\"{}/**\"]\nkeys = [\"release.pub\"]\n",
            p.reg.address
        )
        .as_bytes(),
    );
    p.w.run(["verify", "--policy", s(&policy), &p.tag_ref])
        .rejected_with("blob digest mismatch");
}

#[test]
fn changed_manifest_served_by_the_registry() {
    let Some(p) = Pushed::new("both") else { return };
    // A hostile registry (or anything between it and us) serves a changed manifest for the
    // digest: still valid JSON, same size, so only the digest can tell.
    let digest_path = format!("/manifests/{}", p.digest);
    let proxy = HostileServer::start(
        Some(&p.reg.address),
        std::sync::Arc::new(move |ex: &mut Exchange| {
            if ex.method == "GET" && ex.path.contains(&digest_path) {
                replace(&mut ex.body, b"xdp_pass.o", b"xdp_pwn.oo");
            }
        }),
    )
    .unwrap();
    let via_proxy = format!("{}/net/xdp:v1", proxy.address);
    let msg = p
        .verify(&via_proxy)
        .rejected_with("manifest digest mismatch");
    assert!(msg.contains(&format!("expected {}", p.digest)), "{msg}");
    let out = p.w.path("out");
    p.w.run(["pull", "--key", s(&p.public), &via_proxy, "-o", s(&out)])
        .rejected_with("manifest digest mismatch");
    assert!(!out.join("xdp_pass.o").exists());

    // The same change made in the registry's storage: refused too. Depending on how the tag is
    // resolved, docker-registry names the digest of the bytes it now holds and then finds no such
    // manifest ("not found", exit 2), or names the original digest and serves the changed bytes
    // (our digest check, exit 1).
    let file = p.blob_file(&p.digest);
    let mut bytes = std::fs::read(&file).unwrap();
    replace(&mut bytes, b"xdp_pass.o", b"xdp_pwn.oo");
    std::fs::write(&file, &bytes).unwrap();
    let r = p.verify(&p.tag_ref);
    assert!(
        (r.code == Some(2) && r.stderr.contains("not found"))
            || (r.code == Some(1) && r.stderr.contains("manifest digest mismatch")),
        "{r:?}"
    );
}

#[test]
fn changed_manifest_with_its_signatures_copied() {
    let Some(p) = Pushed::new("both") else { return };
    // A new manifest under the same tag (an extra annotation), with the original's legacy
    // signature and bundle index copied to the new digest's tags.
    let mut m = p.manifest(&p.digest);
    m.annotations
        .insert("org.example.tampered".into(), "yes".into());
    let new = p.push_manifest(Some("v1"), OCI_MANIFEST, &m.to_bytes());
    assert_ne!(new.digest, p.digest);
    let (sig, _) = p
        .client
        .fetch_tag(&p.repo, &legacy_tag(&p.digest))
        .unwrap()
        .expect(".sig tag");
    p.push_manifest(Some(&legacy_tag(&new.digest)), OCI_MANIFEST, &sig);
    let (index, _) = p
        .client
        .fetch_tag(&p.repo, &referrers_tag(&p.digest))
        .unwrap()
        .expect("referrers fallback tag");
    p.push_manifest(Some(&referrers_tag(&new.digest)), OCI_INDEX, &index);

    let msg = p.verify(&p.tag_ref).rejected_with(&format!(
        "signature names manifest {}, but the manifest fetched is {}",
        p.digest, new.digest
    ));
    assert!(msg.contains("no valid signature"), "{msg}");
    // The original, by digest, still verifies.
    p.verify(&format!("{}@{}", p.repo.repository_path(), p.digest))
        .expect(0);
}

#[test]
fn changed_signature_payloads() {
    let Some(p) = Pushed::new("both") else { return };
    // Legacy: the simple-signing payload now claims another repository; same signature.
    let (sig_bytes, _) = p
        .client
        .fetch_tag(&p.repo, &legacy_tag(&p.digest))
        .unwrap()
        .unwrap();
    let mut sig: ImageManifest = serde_json::from_slice(&sig_bytes).unwrap();
    let mut payload = p
        .client
        .fetch_blob(
            &p.repo,
            &sig.layers[0],
            bpfship_registry::BlobKind::Signature,
        )
        .unwrap();
    let repo_path = p.repo.repository_path();
    let forged = repo_path.replace("/net/xdp", "/net/xdq");
    replace(&mut payload, repo_path.as_bytes(), forged.as_bytes());
    let mut layer = p
        .client
        .push_blob(&p.repo, &sig.layers[0].media_type, &payload)
        .unwrap();
    layer.annotations = sig.layers[0].annotations.clone();
    sig.layers[0] = layer;
    p.push_manifest(Some(&legacy_tag(&p.digest)), OCI_MANIFEST, &sig.to_bytes());

    // Bundle: the DSSE payload (in-toto statement) names another digest; same signature.
    let (index_bytes, _) = p
        .client
        .fetch_tag(&p.repo, &referrers_tag(&p.digest))
        .unwrap()
        .unwrap();
    let mut index: ImageIndex = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(index.manifests.len(), 1);
    let mut referrer = p.manifest(&index.manifests[0].digest);
    let bundle = p
        .client
        .fetch_blob(
            &p.repo,
            &referrer.layers[0],
            bpfship_registry::BlobKind::Signature,
        )
        .unwrap();
    let mut bundle: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
    let statement = B64
        .decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let hex = p.digest.strip_prefix("sha256:").unwrap();
    let other = "0".repeat(64);
    let mut statement = statement.clone();
    replace(&mut statement, hex.as_bytes(), other.as_bytes());
    bundle["dsseEnvelope"]["payload"] = B64.encode(&statement).into();
    let bundle = serde_json::to_vec(&bundle).unwrap();
    referrer.layers[0] = p
        .client
        .push_blob(&p.repo, BUNDLE_ARTIFACT_TYPE, &bundle)
        .unwrap();
    let d = p.push_manifest(None, OCI_MANIFEST, &referrer.to_bytes());
    index.manifests[0].digest = d.digest;
    index.manifests[0].size = d.size;
    p.push_manifest(
        Some(&referrers_tag(&p.digest)),
        OCI_INDEX,
        &index.to_bytes(),
    );

    let msg = p.verify(&p.tag_ref).rejected_with(
        "legacy signature: signature check failed: signature does not match the content and key",
    );
    assert!(
        msg.contains("bundle: bundle signature check failed: signature does not match"),
        "{msg}"
    );
}

#[test]
fn changed_signature() {
    let Some(p) = Pushed::new("legacy") else {
        return;
    };
    let (sig_bytes, _) = p
        .client
        .fetch_tag(&p.repo, &legacy_tag(&p.digest))
        .unwrap()
        .unwrap();
    let sig: ImageManifest = serde_json::from_slice(&sig_bytes).unwrap();
    let original = B64
        .decode(&sig.layers[0].annotations[SIGNATURE_ANNOTATION])
        .unwrap();
    let with_signature = |der: &[u8]| {
        let mut m = sig.clone();
        m.layers[0]
            .annotations
            .insert(SIGNATURE_ANNOTATION.into(), B64.encode(der));
        p.push_manifest(Some(&legacy_tag(&p.digest)), OCI_MANIFEST, &m.to_bytes());
    };
    // A changed byte in the DER framing: not a signature any more.
    let mut framing = original.clone();
    framing[0] ^= 0x01;
    with_signature(&framing);
    p.verify(&p.tag_ref)
        .rejected_with("signature is not an ASN.1 DER ECDSA signature");
    // A changed byte inside r: well-formed, but not the signer's signature over this payload.
    let mut value = original.clone();
    let last = value.len() - 1;
    value[last] ^= 0x01;
    with_signature(&value);
    p.verify(&p.tag_ref)
        .rejected_with("signature does not match the content and key");
    // The signature text is no longer base64.
    let mut m = sig.clone();
    m.layers[0]
        .annotations
        .insert(SIGNATURE_ANNOTATION.into(), "not base64!".into());
    p.push_manifest(Some(&legacy_tag(&p.digest)), OCI_MANIFEST, &m.to_bytes());
    p.verify(&p.tag_ref)
        .rejected_with("signature is not valid base64");
    // Restored, it verifies again.
    with_signature(&original);
    p.verify(&p.tag_ref).expect(0);
}

#[test]
fn signature_by_another_key() {
    let Some(p) = Pushed::new("both") else { return };
    let (other_key, _) = p.w.key_pair("other");
    // Re-sign the same digest with another key: the registry then holds both signers'
    // signatures; the trusted key still verifies its own.
    let pinned = format!("{}@{}", p.repo.repository_path(), p.digest);
    p.w.run(["sign", "--key", s(&other_key), &pinned]).expect(0);
    p.verify(&pinned).expect(0);
    // A fresh artifact signed only by the other key is refused under the trusted key.
    let wasm = p.w.write("handler.wasm", &common::wasm("handler"));
    let r = format!("{}/wasm/handler:v1", p.reg.address);
    p.w.run(["push", "--key", s(&other_key), s(&wasm), &r])
        .expect(0);
    let msg = p.verify(&r).rejected_with("bundle key hint");
    assert!(msg.contains("does not match the key"), "{msg}");
    assert!(
        msg.contains("legacy signature: signature check failed: signature does not match"),
        "{msg}"
    );
    // ... and accepted under the other key, so the refusal is about the key alone.
    p.w.run(["verify", "--key", s(&p.w.path("other.pub")), &r])
        .expect(0);
}

#[test]
fn tag_repointed_to_an_unsigned_manifest() {
    let Some(p) = Pushed::new("both") else { return };
    // Someone with push access re-points v1 to an unsigned artifact.
    let wasm = p.w.write("handler.wasm", &common::wasm("handler"));
    let pushed = p.w.push(&wasm, &p.tag_ref, None, &[]);
    let new = pushed["digest"].as_str().unwrap();
    assert_ne!(new, p.digest);
    let msg = p.verify(&p.tag_ref).rejected_with("no signatures found");
    assert!(
        msg.contains(new),
        "names the digest the tag now points to: {msg}"
    );
    let out = p.w.path("out");
    p.w.run(["pull", "--key", s(&p.public), &p.tag_ref, "-o", s(&out)])
        .rejected_with("no signatures found");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    // The signed original is still there by digest.
    p.verify(&format!("{}@{}", p.repo.repository_path(), p.digest))
        .expect(0);
}
