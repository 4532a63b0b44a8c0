//! Keyless signatures judged by a policy's `[[trust]]` identities and trusted root, offline, as
//! the agent re-verifies stored material: cosign 2's legacy `.sig` layer (certificate and Rekor
//! bundle annotations, containers-image `dir-img-cosign-fulcio-rekor-valid`) and cosign 3's v0.3
//! bundle verify with their true identity and are refused with a wrong one, or tampered.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bpfship_registry::Reference;
use bpfship_trust::offline::{SignatureMaterial, reverify};
use bpfship_trust::verify::VerifyError;
use bpfship_verifier::policy::Policy;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

const GITHUB: &str = "https://token.actions.githubusercontent.com";
const COSIGN3_IDENTITY: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const COSIGN3_DIGEST: &str =
    "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const COSIGN2_REPO: &str = "192.168.64.2:5000/cosign-signed/fulcio-rekor-1";
const COSIGN2_DIGEST: &str =
    "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a";

/// A policy for `repositories` whose one rule holds `rule` (TOML lines) and the production
/// trusted root, written beside it as a relative path.
fn policy(repositories: &str, rule: &str) -> Policy {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("bpfship-keyless-policy-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        testdata().join("sigstore/trusted_root.production.json"),
        dir.join("root.json"),
    )
    .unwrap();
    let text = format!(
        "version = 1\n[[trust]]\nrepositories = [\"{repositories}\"]\ntrusted_root = \"root.json\"\n{rule}\n"
    );
    let path = dir.join("policy.toml");
    std::fs::write(&path, &text).unwrap();
    Policy::load(&path).unwrap()
}

/// The fixture's `signature-1` as the `.sig` layer cosign 2 pushed: payload and annotations.
fn cosign2_material() -> SignatureMaterial {
    let raw = std::fs::read(
        testdata().join("cosign/containers-image/dir-img-cosign-fulcio-rekor-valid/signature-1"),
    )
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(raw.strip_prefix(b"\x00sigstore-json\n").unwrap()).unwrap();
    let a = &json["annotations"];
    SignatureMaterial::Legacy {
        payload: B64.decode(json["payload"].as_str().unwrap()).unwrap(),
        signature: a["dev.cosignproject.cosign/signature"]
            .as_str()
            .unwrap()
            .into(),
        certificate: Some(
            a["dev.sigstore.cosign/certificate"]
                .as_str()
                .unwrap()
                .into(),
        ),
        rekor_bundle: Some(a["dev.sigstore.cosign/bundle"].as_str().unwrap().into()),
    }
}

fn cosign3_material() -> SignatureMaterial {
    SignatureMaterial::Bundle {
        bundle: std::fs::read(testdata().join("sigstore/cosign3-image.sigstore.json")).unwrap(),
    }
}

fn rejected(r: Result<Vec<bpfship_trust::verify::VerifiedSignature>, VerifyError>) -> String {
    match r {
        Err(e @ VerifyError::NoValidSignature { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn cosign2_keyless_legacy_signature_verifies_with_its_identity_only() {
    let repo = Reference::parse(&format!("{COSIGN2_REPO}@{COSIGN2_DIGEST}")).unwrap();
    let ok = policy(
        "192.168.64.2:5000/**",
        "[[trust.identities]]\nissuer = \"https://github.com/login/oauth\"\nsubject = \"mitr@redhat.com\"",
    );
    let v = reverify(&repo, COSIGN2_DIGEST, &[cosign2_material()], &ok).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].layout, "legacy");
    let claims = v[0].identity.as_ref().expect("keyless identity");
    assert_eq!(claims.subject, "mitr@redhat.com");
    assert!(
        v[0].key_hint.contains("mitr@redhat.com"),
        "{}",
        v[0].key_hint
    );
    assert_eq!(v[0].docker_reference.as_deref(), Some(COSIGN2_REPO));

    // Another subject, another issuer, a regexp that does not match: refused.
    for rule in [
        "issuer = \"https://github.com/login/oauth\"\nsubject = \"someone@redhat.com\"",
        "issuer = \"https://accounts.google.com\"\nsubject = \"mitr@redhat.com\"",
        "issuer_regexp = \"^https://github\\\\.com/\"\nsubject_regexp = \"@example\\\\.com$\"",
    ] {
        let p = policy(
            "192.168.64.2:5000/**",
            &format!("[[trust.identities]]\n{rule}"),
        );
        let e = rejected(reverify(&repo, COSIGN2_DIGEST, &[cosign2_material()], &p));
        assert!(e.contains("keyless"), "{e}");
    }
    // Another digest than the payload names.
    let other = format!("sha256:{}", "0".repeat(64));
    rejected(reverify(
        &Reference::parse(&format!("{COSIGN2_REPO}@{other}")).unwrap(),
        &other,
        &[cosign2_material()],
        &ok,
    ));
    // Tampered parts: the payload, the signature, the Rekor entry's SET, a missing Rekor bundle.
    let SignatureMaterial::Legacy {
        payload,
        signature,
        certificate,
        rekor_bundle,
    } = cosign2_material()
    else {
        unreachable!()
    };
    let mut bad_payload = payload.clone();
    let at = bad_payload.len() - 3;
    bad_payload[at] = b' ';
    let mut bad_sig = B64.decode(&signature).unwrap();
    bad_sig[10] ^= 1;
    let mut set: serde_json::Value =
        serde_json::from_str(rekor_bundle.as_deref().unwrap()).unwrap();
    set["Payload"]["integratedTime"] =
        (set["Payload"]["integratedTime"].as_i64().unwrap() + 1).into();
    for (what, m) in [
        (
            "payload",
            SignatureMaterial::Legacy {
                payload: bad_payload,
                signature: signature.clone(),
                certificate: certificate.clone(),
                rekor_bundle: rekor_bundle.clone(),
            },
        ),
        (
            "signature",
            SignatureMaterial::Legacy {
                payload: payload.clone(),
                signature: B64.encode(bad_sig),
                certificate: certificate.clone(),
                rekor_bundle: rekor_bundle.clone(),
            },
        ),
        (
            "Rekor entry",
            SignatureMaterial::Legacy {
                payload: payload.clone(),
                signature: signature.clone(),
                certificate: certificate.clone(),
                rekor_bundle: Some(set.to_string()),
            },
        ),
        (
            "no Rekor bundle",
            SignatureMaterial::Legacy {
                payload: payload.clone(),
                signature: signature.clone(),
                certificate: certificate.clone(),
                rekor_bundle: None,
            },
        ),
    ] {
        let e = rejected(reverify(&repo, COSIGN2_DIGEST, &[m], &ok));
        assert!(e.contains("legacy signature"), "{what}: {e}");
    }
    // A rule with keys only does not accept a keyless signature.
    let key =
        std::fs::read_to_string(testdata().join("cosign/containers-image/cosign.pub")).unwrap();
    let keys_only = Policy::from_toml(
        &format!("version = 1\n[[trust]]\nrepositories = [\"**\"]\nkeys = [\"\"\"\n{key}\"\"\"]\n"),
        Path::new("p.toml"),
    )
    .unwrap();
    rejected(reverify(
        &repo,
        COSIGN2_DIGEST,
        &[cosign2_material()],
        &keys_only,
    ));
}

#[test]
fn cosign3_keyless_bundle_verifies_with_its_workflow_identity_only() {
    let repo =
        Reference::parse(&format!("ghcr.io/kubewarden/controller@{COSIGN3_DIGEST}")).unwrap();
    let rule = |identity: &str| {
        format!(
            "accept_digest_only_bundles = true\n[[trust.identities]]\nissuer = \"{GITHUB}\"\n{identity}"
        )
    };
    let ok = policy(
        "ghcr.io/kubewarden/**",
        &rule(&format!(
            "subject = \"{COSIGN3_IDENTITY}\"\ngithub_workflow_repository = \"kubewarden/kubewarden-controller\"\ngithub_workflow_trigger = \"push\""
        )),
    );
    let v = reverify(&repo, COSIGN3_DIGEST, &[cosign3_material()], &ok).unwrap();
    assert_eq!(v[0].layout, "bundle");
    let claims = v[0].identity.as_ref().unwrap();
    assert_eq!(claims.subject, COSIGN3_IDENTITY);
    assert_eq!(
        claims.github_workflow.repository.as_deref(),
        Some("kubewarden/kubewarden-controller")
    );
    // One rule may hold keys and identities: a key that does not sign it changes nothing.
    let key =
        std::fs::read_to_string(testdata().join("cosign/containers-image/cosign.pub")).unwrap();
    let mixed = policy(
        "ghcr.io/kubewarden/**",
        &format!(
            "keys = [\"\"\"\n{key}\"\"\"]\n{}",
            rule("subject_regexp = \"^https://github.com/kubewarden/\"")
        ),
    );
    reverify(&repo, COSIGN3_DIGEST, &[cosign3_material()], &mixed).unwrap();

    let wrong_trigger = policy(
        "ghcr.io/kubewarden/**",
        &rule(&format!(
            "subject = \"{COSIGN3_IDENTITY}\"\ngithub_workflow_trigger = \"workflow_dispatch\""
        )),
    );
    let e = rejected(reverify(
        &repo,
        COSIGN3_DIGEST,
        &[cosign3_material()],
        &wrong_trigger,
    ));
    assert!(e.contains("github workflow trigger"), "{e}");
    let wrong_subject = policy(
        "ghcr.io/kubewarden/**",
        &rule("subject_regexp = \"^https://github.com/evil/\""),
    );
    rejected(reverify(
        &repo,
        COSIGN3_DIGEST,
        &[cosign3_material()],
        &wrong_subject,
    ));
    // Digest-only bundles still need the rule's consent.
    let strict = policy(
        "ghcr.io/kubewarden/**",
        &format!("[[trust.identities]]\nissuer = \"{GITHUB}\"\nsubject = \"{COSIGN3_IDENTITY}\""),
    );
    let e = rejected(reverify(
        &repo,
        COSIGN3_DIGEST,
        &[cosign3_material()],
        &strict,
    ));
    assert!(e.contains("accept_digest_only_bundles"), "{e}");
    // Another image's digest.
    let other = format!("sha256:{}", "1".repeat(64));
    rejected(reverify(
        &Reference::parse(&format!("ghcr.io/kubewarden/controller@{other}")).unwrap(),
        &other,
        &[cosign3_material()],
        &ok,
    ));
    // A tampered statement.
    let mut bundle: serde_json::Value = serde_json::from_slice(
        &std::fs::read(testdata().join("sigstore/cosign3-image.sigstore.json")).unwrap(),
    )
    .unwrap();
    let payload = String::from_utf8(
        B64.decode(bundle["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
    .replace("}]", ",\"name\":\"ghcr.io/kubewarden/controller\"}]");
    bundle["dsseEnvelope"]["payload"] = B64.encode(payload).into();
    let tampered = SignatureMaterial::Bundle {
        bundle: bundle.to_string().into_bytes(),
    };
    rejected(reverify(&repo, COSIGN3_DIGEST, &[tampered], &ok));
}

#[test]
fn keyless_rules_are_checked_when_the_policy_loads() {
    let p = Path::new("p.toml");
    let load = |rule: &str| {
        Policy::from_toml(
            &format!("version = 1\n[[trust]]\nrepositories = [\"**\"]\n{rule}\n"),
            p,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let e = load("[[trust.identities]]\nissuer = \"x\"\nsubject = \"y\"").unwrap_err();
    assert!(e.contains("no trusted_root"), "{e}");
    let e = load("trusted_root = \"{}\"\n[[trust.identities]]\nissuer = \"x\"").unwrap_err();
    assert!(e.contains("trust[0].identities[0]: needs subject"), "{e}");
    let e =
        load("trusted_root = \"{}\"\n[[trust.identities]]\nissuer = \"x\"\nsubject_regexp = \"(\"")
            .unwrap_err();
    assert!(e.contains("invalid regular expression"), "{e}");
    let e = load("trusted_root = \"{}\"\n[[trust.identities]]\nissuer = \"x\"\nissuer_regexp = \"x\"\nsubject = \"y\"")
        .unwrap_err();
    assert!(e.contains("exclusive"), "{e}");
    let e = load(
        "trusted_root = \"missing.json\"\n[[trust.identities]]\nissuer = \"x\"\nsubject = \"y\"",
    )
    .unwrap_err();
    assert!(
        e.contains("trusted root") && e.contains("missing.json"),
        "{e}"
    );
    // A trusted root that is not one is refused when verifying, naming the rule.
    let bad = Policy::from_toml(
        "version = 1\n[[trust]]\nrepositories = [\"**\"]\ntrusted_root = '{\"mediaType\": \"x\"}'\n[[trust.identities]]\nissuer = \"x\"\nsubject = \"y\"\n",
        p,
    )
    .unwrap();
    let repo = Reference::parse(&format!("ghcr.io/a/b@{COSIGN3_DIGEST}")).unwrap();
    let e = reverify(&repo, COSIGN3_DIGEST, &[cosign3_material()], &bad).unwrap_err();
    assert!(
        matches!(e, VerifyError::PolicyTrustedRoot { rule: 0, .. }),
        "{e}"
    );
}
