//! Key parsing on arbitrary bytes: public key PEM and DER, plain PKCS#8/SEC1 private keys and
//! cosign's encrypted envelope (scrypt parameters are bounded before any work is done). The first
//! byte picks the parser so one corpus reaches them all.
#![no_main]

use bpfship_verifier::keys::{PrivateKey, PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(k) = PublicKey::from_pem(rest) {
                // What parses re-encodes to a key that parses to the same key.
                let again = PublicKey::from_pem(k.to_pem().as_bytes()).expect("round trip");
                assert_eq!(again.spki_der(), k.spki_der());
                let _ = k.hint();
            }
        }
        1 => {
            if let Ok(k) = PublicKey::from_spki_der(rest) {
                let _ = k.verify(b"message", rest);
            }
        }
        2 => {
            if let Ok(k) = PrivateKey::from_plain_pem(rest) {
                let _ = k.public_key().hint();
            }
        }
        _ => {
            // Password: up to the first NUL; the rest is the PEM.
            let (password, pem) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&b""[..], rest),
            };
            let _ = PrivateKey::from_encrypted_pem(pem, password);
        }
    }
});
