//! Keyless image signatures at a real registry: cosign 2's legacy `.sig` layer signed keyless
//! (containers-image `dir-img-cosign-fulcio-rekor-valid`: Fulcio certificate, chain and Rekor
//! bundle annotations) pushed to Debian's docker-registry, then `bpfship verify` with cosign's
//! identity flags and the production trusted root, offline. The signed manifest's blobs are not
//! in the fixture, so docker-registry would refuse the manifest itself: a proxy in front of the
//! real registry serves its exact bytes for its digest; the signature goes through to the registry.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bpfship_registry::manifest::{OCI_CONFIG, OCI_MANIFEST};
use bpfship_registry::signatures::{
    CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, REKOR_BUNDLE_ANNOTATION, SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_LAYER, legacy_tag,
};
use bpfship_registry::testing::{Exchange, HostileServer, TestRegistry};
use bpfship_registry::{Client, ClientOptions, ImageManifest, Reference};
use common::{Work, root, s};

const DIGEST: &str = "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ISSUER: &str = "https://github.com/login/oauth";

struct Served {
    _reg: TestRegistry,
    proxy: HostileServer,
    annotations: serde_json::Map<String, serde_json::Value>,
    payload: Vec<u8>,
}

fn fixture(name: &str) -> std::path::PathBuf {
    root()
        .join("testdata/cosign/containers-image/dir-img-cosign-fulcio-rekor-valid")
        .join(name)
}

impl Served {
    fn start() -> Option<Self> {
        let reg = common::registry()?;
        let manifest = std::fs::read(fixture("manifest.json")).unwrap();
        assert_eq!(bpfship_verifier::digest::sha256_digest(&manifest), DIGEST);
        let path = format!("/v2/cosign-signed/fulcio-rekor-1/manifests/{DIGEST}");
        let proxy = HostileServer::start(
            Some(&reg.address),
            Arc::new(move |ex: &mut Exchange| {
                if ex.path == path {
                    ex.status = 200;
                    ex.set_header("content-type", DOCKER_MANIFEST);
                    ex.set_header("docker-content-digest", DIGEST);
                    if ex.method == "HEAD" {
                        ex.body.clear();
                        ex.declared_length = Some(manifest.len() as u64);
                    } else {
                        ex.body = manifest.clone();
                    }
                }
            }),
        )
        .unwrap();
        let raw = std::fs::read(fixture("signature-1")).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(raw.strip_prefix(b"\x00sigstore-json\n").unwrap()).unwrap();
        let payload = B64.decode(json["payload"].as_str().unwrap()).unwrap();
        let annotations = json["annotations"].as_object().unwrap().clone();
        let served = Self {
            _reg: reg,
            proxy,
            annotations,
            payload,
        };
        served.push_signature(&served.annotations, &served.payload);
        Some(served)
    }

    fn repo(&self) -> String {
        format!("{}/cosign-signed/fulcio-rekor-1", self.proxy.address)
    }

    /// Pushes the `.sig` manifest cosign 2 would: one simple-signing layer with `annotations`.
    fn push_signature(
        &self,
        annotations: &serde_json::Map<String, serde_json::Value>,
        payload: &[u8],
    ) {
        let client = Client::new(ClientOptions::default()).unwrap();
        let repo = Reference::parse(&self.repo()).unwrap();
        let mut layer = client
            .push_blob(&repo, SIMPLE_SIGNING_LAYER, payload)
            .unwrap();
        for name in [
            SIGNATURE_ANNOTATION,
            CERTIFICATE_ANNOTATION,
            CHAIN_ANNOTATION,
            REKOR_BUNDLE_ANNOTATION,
        ] {
            if let Some(v) = annotations.get(name) {
                layer
                    .annotations
                    .insert(name.into(), v.as_str().unwrap().into());
            }
        }
        let config = client.push_blob(&repo, OCI_CONFIG, b"{}").unwrap();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config,
            layers: vec![layer],
            subject: None,
            annotations: Default::default(),
        };
        client
            .push_manifest(
                &repo,
                &legacy_tag(DIGEST),
                OCI_MANIFEST,
                &manifest.to_bytes(),
            )
            .unwrap();
    }

    /// `bpfship --output json verify` of the digest with `args` and the production root; the
    /// repository remapped to the one the signer named.
    fn verify(&self, args: &[&str]) -> common::Run {
        let remap = format!(
            "{}/cosign-signed=192.168.64.2:5000/cosign-signed",
            self.proxy.address
        );
        let trusted_root = root().join("testdata/sigstore/trusted_root.production.json");
        let target = format!("{}@{DIGEST}", self.repo());
        let mut all = vec![
            "--output",
            "json",
            "verify",
            "--trusted-root",
            s(&trusted_root),
            "--remap-identity",
            &remap,
        ];
        all.extend(args);
        all.push(&target);
        Work::new().run(all)
    }
}

#[test]
fn cosign2_keyless_sig_layer_verifies_with_its_identity() {
    let Some(p) = Served::start() else { return };
    let v = p
        .verify(&[
            "--certificate-identity",
            "mitr@redhat.com",
            "--certificate-oidc-issuer",
            ISSUER,
        ])
        .json();
    let sig = &v["verified"]["signatures"][0];
    assert_eq!(sig["layout"], "legacy", "{v}");
    assert_eq!(sig["identity"]["subject"], "mitr@redhat.com", "{v}");
    assert_eq!(sig["identity"]["issuer"], ISSUER, "{v}");
    assert_eq!(
        sig["docker_reference"],
        "192.168.64.2:5000/cosign-signed/fulcio-rekor-1"
    );
    assert_eq!(v["verified"]["trust"], "explicit_keys");
    p.verify(&[
        "--certificate-identity-regexp",
        "@redhat\\.com$",
        "--certificate-oidc-issuer-regexp",
        "^https://github\\.com/",
    ])
    .expect(0);
}

#[test]
fn cosign2_keyless_sig_layer_refused_for_another_identity_or_tampered() {
    let Some(p) = Served::start() else { return };
    p.verify(&[
        "--certificate-identity",
        "someone@redhat.com",
        "--certificate-oidc-issuer",
        ISSUER,
    ])
    .rejected_with("subject");
    p.verify(&[
        "--certificate-identity",
        "mitr@redhat.com",
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
    ])
    .rejected_with("issuer");
    // The staging root does not vouch for production's Fulcio and Rekor.
    let work = Work::new();
    let staging = root().join("testdata/sigstore/trusted_root.staging.json");
    let target = format!("{}@{DIGEST}", p.repo());
    work.run([
        "verify",
        "--trusted-root",
        s(&staging),
        "--certificate-identity",
        "mitr@redhat.com",
        "--certificate-oidc-issuer",
        ISSUER,
        "--accept-digest-only-bundles",
        &target,
    ])
    .expect(1);
    // Without the remap the signature names another repository than the one verified.
    work.run([
        "verify",
        "--trusted-root",
        s(&root().join("testdata/sigstore/trusted_root.production.json")),
        "--certificate-identity",
        "mitr@redhat.com",
        "--certificate-oidc-issuer",
        ISSUER,
        &target,
    ])
    .rejected_with("192.168.64.2:5000/cosign-signed/fulcio-rekor-1");
    // The Rekor entry changed (its signed timestamp no longer matches): the only entry fails.
    let mut annotations = p.annotations.clone();
    let mut rekor: serde_json::Value =
        serde_json::from_str(annotations[REKOR_BUNDLE_ANNOTATION].as_str().unwrap()).unwrap();
    rekor["Payload"]["logIndex"] = (rekor["Payload"]["logIndex"].as_u64().unwrap() + 1).into();
    annotations.insert(REKOR_BUNDLE_ANNOTATION.into(), rekor.to_string().into());
    p.push_signature(&annotations, &p.payload);
    p.verify(&[
        "--certificate-identity",
        "mitr@redhat.com",
        "--certificate-oidc-issuer",
        ISSUER,
    ])
    .rejected_with("keyless");
}

#[test]
fn identity_flags_need_a_trusted_root_and_both_claims() {
    let w = Work::new();
    let target = format!("127.0.0.1:1/x@{DIGEST}");
    let r = w
        .run([
            "verify",
            "--certificate-identity",
            "a@b",
            "--certificate-oidc-issuer",
            ISSUER,
            &target,
        ])
        .expect(2);
    assert!(r.stderr.contains("--trusted-root"), "{}", r.stderr);
    let r = w
        .run([
            "verify",
            "--trusted-root",
            "x.json",
            "--certificate-identity",
            "a@b",
            &target,
        ])
        .expect(2);
    assert!(
        r.stderr.contains("--certificate-oidc-issuer"),
        "{}",
        r.stderr
    );
}
