//! cosign compatibility, proven with keys and signatures made by real cosign/sigstore tools
//! (testdata/cosign, see its NOTICE).

use std::path::{Path, PathBuf};

use bpfship_verifier::bundle::{Bundle, BundleError};
use bpfship_verifier::digest::sha256_digest;
use bpfship_verifier::keys::{KeyError, PrivateKey, PublicKey};
use bpfship_verifier::signature::{LegacySignatureError, SignatureFile};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/cosign")
        .join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn cosign_made_keys_decrypt_to_their_public_keys() {
    let cases = [
        (
            "keys/pemsigstorekey.pem",
            "hello",
            Some("keys/cosign__pemsigstorekey.pub"),
        ),
        (
            "keys/pemcosignkey.pem",
            "hello",
            Some("keys/cosign__pemcosignkey.pub"),
        ),
        (
            "keys/cosign_generated_encrypted_empty_private.key",
            "",
            Some("keys/sigstore-rs__cosign_generated_encrypted_empty_private.pub"),
        ),
        (
            "keys/ecdsa_encrypted_private.key",
            "123",
            Some("keys/sigstore-rs__ecdsa_encrypted_private.pub"),
        ),
    ];
    for (key, password, public) in cases {
        let k = PrivateKey::from_encrypted_pem(&read(key), password.as_bytes())
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        if let Some(public) = public {
            let expected = PublicKey::from_pem(&read(public)).unwrap();
            assert_eq!(k.public_key(), expected, "{key}");
        }
        // and it signs something its public key verifies
        let sig = k.sign(b"x");
        k.public_key().verify(b"x", &sig).unwrap();
    }
}

#[test]
fn bad_keys_are_rejected_with_their_reason() {
    type Expect = fn(&KeyError) -> bool;
    let cases: [(&str, &str, Expect); 6] = [
        ("keys/pemcosigneckey.pem", "hello", |e| {
            *e == KeyError::Sec1NotPkcs8
        }),
        ("keys/pemsigstorekey.pem", "wrong", |e| {
            *e == KeyError::Decrypt
        }),
        ("keys/cosign-test.key", "not-the-password", |e| {
            *e == KeyError::Decrypt
        }),
        (
            "keys/rsa_encrypted_private.key",
            "123",
            |e| matches!(e, KeyError::UnsupportedKeyType(t) if t == "RSA"),
        ),
        (
            "keys/ed25519_encrypted_private.key",
            "123",
            |e| matches!(e, KeyError::UnsupportedKeyType(t) if t == "Ed25519"),
        ),
        ("keys/validecpkcs8.pem", "", |e| {
            matches!(e, KeyError::Unencrypted(_))
        }),
    ];
    for (key, password, expect) in cases {
        let err = PrivateKey::from_encrypted_pem(&read(key), password.as_bytes()).unwrap_err();
        assert!(expect(&err), "{key}: unexpected error {err}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn plain_key_shapes_are_handled_as_import_key_pair_would() {
    for ok in ["keys/validecp256.pem", "keys/validecpkcs8.pem"] {
        PrivateKey::from_plain_pem(&read(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "keys/validecp384.pem",
        "keys/validecp521.pem",
        "keys/validrsa.pem",
        "keys/validrsapkcs1.pem",
        "keys/validrsapkcs8.pem",
        "keys/invalidecp224.pem",
        "keys/invalidecunsupported.pem",
        "keys/invalidkey.pem",
        "keys/invalidrsalargekey.pem",
        "keys/invalidrsasmallkey.pem",
        "keys/invalidrsawithpubkey.pem",
        "keys/ed25519key.pem",
    ] {
        let err = PrivateKey::from_plain_pem(&read(bad)).unwrap_err();
        eprintln!("{bad}: {err}");
    }
}

fn manifest_digest(dir: &str) -> String {
    sha256_digest(&read(&format!("containers-image/{dir}/manifest.json")))
}

fn signature(dir: &str, n: u32) -> SignatureFile {
    SignatureFile::parse(&read(&format!("containers-image/{dir}/signature-{n}"))).unwrap()
}

#[test]
fn containers_image_cosign_signatures_verify() {
    let key = PublicKey::from_pem(&read("containers-image/cosign.pub")).unwrap();
    let key2 = PublicKey::from_pem(&read("containers-image/cosign2.pub")).unwrap();
    for (dir, n, k) in [
        ("dir-img-cosign-valid", 1, &key),
        ("dir-img-cosign-valid-2", 1, &key),
        ("dir-img-cosign-valid-2", 2, &key),
        ("dir-img-cosign-valid-with-tag", 1, &key),
        ("dir-img-cosign-key-rekor-valid", 1, &key2),
    ] {
        let v = signature(dir, n)
            .verify(k, &manifest_digest(dir))
            .unwrap_or_else(|e| panic!("{dir}/signature-{n}: {e}"));
        assert_eq!(v.manifest_digest, manifest_digest(dir));
    }
}

/// The repository cosign (and skopeo) signed each fixture for is matched as containers/image's
/// `matchRepository` does: the tag is ignored, another repository is refused, and a mirror counts
/// only through an explicit remap.
#[test]
fn containers_image_signed_identities_match_their_repository_only() {
    use bpfship_verifier::identity::IdentityError;
    use bpfship_verifier::policy::SignedIdentity;
    let key = PublicKey::from_pem(&read("containers-image/cosign.pub")).unwrap();
    let rule = SignedIdentity::MatchRepository;
    for (dir, repository) in [
        (
            "dir-img-cosign-valid",
            "192.168.64.2:5000/cosign-signed-single-sample",
        ),
        // skopeo signed it as `…/skopeo-signed:tag`: the tag does not matter.
        (
            "dir-img-cosign-valid-with-tag",
            "192.168.64.2:5000/skopeo-signed",
        ),
    ] {
        let v = signature(dir, 1)
            .verify(&key, &manifest_digest(dir))
            .unwrap();
        rule.check(repository, &v.docker_reference)
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        let e = rule
            .check("192.168.64.2:5000/team-b/elsewhere", &v.docker_reference)
            .unwrap_err();
        assert!(matches!(e, IdentityError::Mismatch { .. }), "{dir}: {e}");
    }
    let v = signature("dir-img-cosign-valid", 1)
        .verify(&key, &manifest_digest("dir-img-cosign-valid"))
        .unwrap();
    let mirror = SignedIdentity::Remap {
        prefix: "mirror.example:5000".into(),
        signed_prefix: "192.168.64.2:5000".into(),
    };
    mirror
        .check(
            "mirror.example:5000/cosign-signed-single-sample",
            &v.docker_reference,
        )
        .unwrap();
    assert!(
        rule.check(
            "mirror.example:5000/cosign-signed-single-sample",
            &v.docker_reference
        )
        .is_err()
    );
}

#[test]
fn containers_image_negative_cases_fail_for_the_right_reason() {
    let key = PublicKey::from_pem(&read("containers-image/cosign.pub")).unwrap();
    // signed by an unknown key
    let e = signature("dir-img-cosign-mixed", 1)
        .verify(&key, &manifest_digest("dir-img-cosign-mixed"))
        .unwrap_err();
    assert!(matches!(e, LegacySignatureError::Signature(_)), "{e}");
    // the manifest was changed after signing / the payload names another digest
    for dir in [
        "dir-img-cosign-modified-manifest",
        "dir-img-cosign-manifest-digest-error",
    ] {
        let e = signature(dir, 1)
            .verify(&key, &manifest_digest(dir))
            .unwrap_err();
        assert!(
            matches!(e, LegacySignatureError::DigestMismatch { .. }),
            "{dir}: {e}"
        );
    }
    // no manifest: nothing to match the signature against
    assert!(!fixture("containers-image/dir-img-cosign-no-manifest/manifest.json").exists());
    // an attachment that is not a signature
    let e = signature("dir-img-cosign-other-attachment", 1)
        .verify(&key, &manifest_digest("dir-img-cosign-other-attachment"))
        .unwrap_err();
    assert!(matches!(e, LegacySignatureError::WrongType(_)), "{e}");
}

#[test]
fn conformance_managed_key_bundles() {
    let blob = read("conformance/a.txt");
    let happy = Bundle::parse(&read(
        "conformance/managed-key-happy-path/bundle.sigstore.json",
    ))
    .unwrap();
    let key = PublicKey::from_pem(&read("conformance/managed-key-happy-path/key.pub")).unwrap();
    let v = happy.verify_blob(&key, &blob).unwrap();
    assert_eq!(v.digest, sha256_digest(&blob));
    assert_eq!(v.key_hint, key.hint());
    // a different blob
    assert!(matches!(
        happy.verify_blob(&key, b"other"),
        Err(BundleError::DigestMismatch { .. })
    ));

    let wrong = Bundle::parse(&read(
        "conformance/managed-key-wrong-key_fail/bundle.sigstore.json",
    ))
    .unwrap();
    // The case's key.pub is not a usable key (its base64 is corrupted): refused as a key...
    let e =
        PublicKey::from_pem(&read("conformance/managed-key-wrong-key_fail/key.pub")).unwrap_err();
    assert!(
        matches!(e, KeyError::MalformedPem(_) | KeyError::InvalidPublicKey(_)),
        "{e}"
    );
    // ...and any other key is refused by the bundle's key hint.
    let other = PublicKey::from_pem(&read("containers-image/cosign.pub")).unwrap();
    let e = wrong.verify_blob(&other, &blob).unwrap_err();
    assert!(matches!(e, BundleError::HintMismatch { .. }), "{e}");
}
