//! Independent readers accept what bpfship writes: the `sigstore` crate's cosign client verifies
//! bpfship's legacy image signatures pulled from a real registry, and sigstore-js
//! (`@sigstore/verify`, testdata/js) verifies bpfship's blob bundles with the public key.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Work, s};
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{ClientBuilder, CosignCapabilities as _, verify_constraints};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

/// The `sigstore` crate's view of `reference`'s signatures: (digest it resolved, `.sig` tag,
/// signature layers it could read).
async fn sigstore_layers(
    reference: &str,
) -> (String, String, Vec<sigstore::cosign::SignatureLayer>) {
    let mut client = ClientBuilder::default()
        .with_oci_client_config(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        })
        .build()
        .expect("sigstore client");
    let image: OciReference = reference.parse().expect("OCI reference");
    let (sig_image, digest) = client
        .triangulate(&image, &Auth::Anonymous)
        .await
        .expect("triangulate");
    let layers = client
        .trusted_signature_layers(&Auth::Anonymous, &image)
        .await
        .expect("signature layers");
    (digest, sig_image.tag().unwrap_or("").to_owned(), layers)
}

fn key_constraint(public_pem: &Path) -> Vec<Box<dyn VerificationConstraint>> {
    let pem = std::fs::read(public_pem).unwrap();
    vec![Box::new(
        PublicKeyVerifier::try_from(&pem).expect("sigstore reads the public key"),
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstore_crate_verifies_legacy_signatures() {
    let reg = registry_or_skip!();
    let xdp = object_or_skip!("xdp_pass");
    let w = Work::new();
    let (key, public) = w.key_pair("release");
    let (_, other_public) = w.key_pair("other");
    let file = w.write("xdp_pass.o", &xdp);
    let reference = format!("{}/net/xdp:v1", reg.address);
    let pushed = w.push(&file, &reference, Some(&key), &[]);
    let digest = pushed["digest"].as_str().unwrap().to_owned();

    let (resolved, sig_tag, layers) = sigstore_layers(&reference).await;
    assert_eq!(resolved, digest);
    assert_eq!(sig_tag, format!("{}.sig", digest.replace(':', "-")));
    assert_eq!(layers.len(), 1, "one legacy signature layer");
    let layer = &layers[0];
    // sigstore parsed bpfship's simple-signing payload and checked it names the digest.
    assert_eq!(
        layer.simple_signing.critical.image.docker_manifest_digest,
        digest
    );
    assert_eq!(
        layer.simple_signing.critical.identity.docker_reference,
        format!("{}/net/xdp", reg.address)
    );
    assert_eq!(
        layer.simple_signing.critical.type_name,
        "cosign container image signature"
    );
    // The signature verifies with the signer's key, and not with another.
    verify_constraints(&layers, key_constraint(&public).iter())
        .expect("sigstore verifies bpfship's legacy signature");
    assert!(
        verify_constraints(&layers, key_constraint(&other_public).iter()).is_err(),
        "another key must not verify"
    );

    // Signed by the other key too (`bpfship sign` adds a layer): both keys verify, each its own.
    let other_key = w.path("other.key");
    w.run([
        "sign",
        "--key",
        s(&other_key),
        &format!("{}/net/xdp@{digest}", reg.address),
    ])
    .expect(0);
    let (_, _, layers) = sigstore_layers(&reference).await;
    assert_eq!(layers.len(), 2, "both signatures read");
    verify_constraints(&layers, key_constraint(&public).iter()).expect("first key");
    verify_constraints(&layers, key_constraint(&other_public).iter()).expect("second key");
}

/// `node` and testdata/js's node_modules, or `None` with the reason printed (only when node is
/// missing; a missing node_modules is installed with `npm ci`).
fn node_with_sigstore_js() -> Option<std::path::PathBuf> {
    let js = common::root().join("testdata/js");
    if Command::new("node").arg("--version").output().is_err() {
        bpfship_test_support::skip(bpfship_test_support::Missing::Setup(
            "node not found (run scripts/setup.sh): cannot run @sigstore/verify".into(),
        ));
        return None;
    }
    if !js.join("node_modules/@sigstore/verify").exists() {
        let status = Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&js)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci --prefix testdata/js failed");
    }
    Some(js.join("verify-bundle.mjs"))
}

fn node_verify(script: &Path, bundle: &Path, file: &Path, public: &Path) -> common::Run {
    let out = Command::new("node")
        .arg(script)
        .args([bundle, file, public])
        .output()
        .expect("node runs");
    common::Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn sigstore_js_verifies_blob_bundles() {
    let Some(script) = node_with_sigstore_js() else {
        return;
    };
    let w = Work::new();
    let (key, public) = w.key_pair("release");
    let (other_key, other_public) = w.key_pair("other");
    let blob = w.write("a.txt", b"bpfship blob signed for sigstore-js\n");
    let bundle = w.path("a.txt.sigstore.json");
    w.run([
        "sign-blob",
        "--key",
        s(&key),
        "--bundle",
        s(&bundle),
        s(&blob),
    ])
    .expect(0);
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    assert_eq!(
        b["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );

    let ok = node_verify(&script, &bundle, &blob, &public).expect(0);
    let v: serde_json::Value = serde_json::from_str(ok.stdout.trim()).expect("JSON line");
    assert_eq!(v["verified"], true);
    assert_eq!(v["content"], "messageSignature");
    assert_eq!(
        v["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(
        v["keyHint"], b["verificationMaterial"]["publicKey"]["hint"],
        "bpfship's key hint is the one sigstore-js computes"
    );
    // bpfship's own verify-blob agrees.
    w.run([
        "verify-blob",
        "--key",
        s(&public),
        "--bundle",
        s(&bundle),
        s(&blob),
    ])
    .expect(0);

    // Another file: signature refused.
    let other_file = w.write("b.txt", b"bpfship blob signed for sigstore-js?\n");
    let r = node_verify(&script, &bundle, &other_file, &public).expect(1);
    assert!(r.stderr.contains("SIGNATURE_ERROR"), "{}", r.stderr);
    // Another key: the key hint does not name it.
    let r = node_verify(&script, &bundle, &blob, &other_public).expect(1);
    assert!(r.stderr.contains("PUBLIC_KEY_ERROR"), "{}", r.stderr);
    // A bundle by the other key verifies with the other key only.
    let other_bundle = w.path("other.sigstore.json");
    w.run([
        "sign-blob",
        "--key",
        s(&other_key),
        "--bundle",
        s(&other_bundle),
        s(&blob),
    ])
    .expect(0);
    node_verify(&script, &other_bundle, &blob, &other_public).expect(0);
    node_verify(&script, &other_bundle, &blob, &public).expect(1);
    // A changed signature in the bundle.
    let mut tampered = b.clone();
    let sig = tampered["messageSignature"]["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = if sig.starts_with('M') { "N" } else { "M" };
    tampered["messageSignature"]["signature"] = format!("{flipped}{}", &sig[1..]).into();
    let tampered_path = w.write(
        "tampered.sigstore.json",
        &serde_json::to_vec(&tampered).unwrap(),
    );
    let r = node_verify(&script, &tampered_path, &blob, &public);
    assert_eq!(r.code, Some(1), "{r:?}");
}
