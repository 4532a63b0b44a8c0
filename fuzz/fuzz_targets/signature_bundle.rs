//! Signature and bundle parsing on arbitrary bytes: sigstore bundles (blob and image
//! verification), containers-image signature files, and simple-signing payloads. Payloads are
//! also signed here with a fixed test key so the fuzzer reaches the payload checks behind the
//! signature check.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bpfship_verifier::bundle::Bundle;
use bpfship_verifier::keys::PrivateKey;
use bpfship_verifier::signature::{SignatureFile, verify_simple_signing};
use libfuzzer_sys::fuzz_target;

/// A P-256 test key (testdata/cosign/keys/validecpkcs8.pem, from cosign's test data).
const TEST_KEY: &[u8] = include_bytes!("../../testdata/cosign/keys/validecpkcs8.pem");
const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fuzz_target!(|data: &[u8]| {
    let key = PrivateKey::from_plain_pem(TEST_KEY).expect("test key");
    let public = key.public_key();
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(b) = Bundle::parse(rest) {
                let _ = b.verify_blob(&public, b"blob");
                let _ = b.verify_image(&public, DIGEST);
                let _ = b.to_json();
            }
        }
        1 => {
            if let Ok(f) = SignatureFile::parse(rest) {
                let _ = f.verify(&public, DIGEST);
            }
        }
        2 => {
            // An untrusted payload with a signature that verifies: the payload checks decide.
            let signature = B64.encode(key.sign(rest));
            if let Ok(v) = verify_simple_signing(&public, rest, &signature, DIGEST) {
                assert_eq!(v.manifest_digest, DIGEST);
            }
        }
        _ => {
            // An arbitrary signature text over a fixed payload.
            let payload = bpfship_verifier::signature::simple_signing_payload("r/x", DIGEST, None);
            let signature = String::from_utf8_lossy(rest);
            assert!(verify_simple_signing(&public, &payload, &signature, DIGEST).is_err());
        }
    }
});
