//! cosign-compatible keys: `ENCRYPTED SIGSTORE PRIVATE KEY` (and cosign's older `ENCRYPTED COSIGN
//! PRIVATE KEY`) PEMs — scrypt + NaCl secretbox around a PKCS#8 ECDSA P-256 key — and `PUBLIC KEY`
//! (SPKI) PEMs. Signatures are ECDSA P-256 over SHA-256, ASN.1 DER, as cosign writes them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// PEM label cosign ≥ 2 writes for encrypted private keys.
pub const SIGSTORE_PRIVATE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label older cosign releases wrote; still read.
pub const COSIGN_PRIVATE_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// Largest PEM accepted: keys are a few hundred bytes; this bounds hostile input.
const MAX_PEM_BYTES: usize = 64 * 1024;
/// scrypt cost limits: cosign writes N = 32768 or 65536, r = 8, p = 1. The cap keeps a hostile key
/// file from asking for gigabytes of memory or minutes of CPU.
const MAX_SCRYPT_LOG_N: u8 = 18;
const MAX_SCRYPT_R: u32 = 16;
const MAX_SCRYPT_P: u32 = 4;
/// What bpfship writes (cosign's current defaults).
const WRITE_SCRYPT_LOG_N: u8 = 16;

/// Why a key could not be read, written or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM file (no -----BEGIN line)")]
    NotPem,
    #[error("malformed PEM: {0}")]
    MalformedPem(String),
    #[error("key file too large ({0} bytes)")]
    TooLarge(usize),
    #[error("unexpected PEM block \"{found}\" (expected {expected})")]
    WrongLabel { found: String, expected: String },
    #[error("unencrypted private key (\"{0}\"): bpfship only uses encrypted cosign keys")]
    Unencrypted(String),
    #[error("malformed encrypted key envelope: {0}")]
    MalformedEnvelope(String),
    #[error("unsupported key derivation \"{0}\" (only scrypt)")]
    UnsupportedKdf(String),
    #[error("unsupported cipher \"{0}\" (only nacl/secretbox)")]
    UnsupportedCipher(String),
    #[error("scrypt parameters out of bounds (N={n}, r={r}, p={p})")]
    ScryptParams { n: u64, r: u32, p: u32 },
    #[error("wrong password or corrupted key (decryption failed)")]
    Decrypt,
    #[error(
        "not a PKCS#8 key: the decrypted key is a SEC1 \"EC PRIVATE KEY\"; re-import it as PKCS#8"
    )]
    Sec1NotPkcs8,
    #[error("not a PKCS#8 key: {0}")]
    NotPkcs8(String),
    #[error("unsupported key type: {0} (only ECDSA P-256)")]
    UnsupportedKeyType(String),
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature is not valid base64")]
    Base64,
    #[error("signature is not an ASN.1 DER ECDSA signature")]
    Encoding,
    #[error("signature does not match the content and key")]
    Mismatch,
}

/// An ECDSA P-256 signing key. The scalar is zeroized on drop; `Debug` never prints it.
pub struct PrivateKey {
    inner: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public_key_hint", &self.public_key().hint())
            .finish_non_exhaustive()
    }
}

/// An ECDSA P-256 verification key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    inner: VerifyingKey,
}

/// cosign's encrypted-key envelope (field order as cosign writes it).
#[derive(Serialize, Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

impl PrivateKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self {
            inner: SigningKey::random(&mut OsRng),
        }
    }

    /// Decrypts a cosign encrypted private key PEM with `password`.
    pub fn from_encrypted_pem(pem: &[u8], password: &[u8]) -> Result<Self, KeyError> {
        let block = Pem::parse(pem)?;
        if block.label != SIGSTORE_PRIVATE_KEY_LABEL && block.label != COSIGN_PRIVATE_KEY_LABEL {
            if block.label.contains("PRIVATE KEY") && !block.label.contains("ENCRYPTED") {
                return Err(KeyError::Unencrypted(block.label));
            }
            return Err(KeyError::WrongLabel {
                found: block.label,
                expected: format!("\"{SIGSTORE_PRIVATE_KEY_LABEL}\""),
            });
        }
        let env: Envelope = serde_json::from_slice(&block.der)
            .map_err(|e| KeyError::MalformedEnvelope(e.to_string()))?;
        if env.kdf.name != "scrypt" {
            return Err(KeyError::UnsupportedKdf(env.kdf.name));
        }
        if env.cipher.name != "nacl/secretbox" {
            return Err(KeyError::UnsupportedCipher(env.cipher.name));
        }
        let salt = decode_field("kdf.salt", &env.kdf.salt)?;
        let nonce = decode_field("cipher.nonce", &env.cipher.nonce)?;
        let ciphertext = decode_field("ciphertext", &env.ciphertext)?;
        if nonce.len() != 24 {
            return Err(KeyError::MalformedEnvelope(format!(
                "cipher.nonce is {} bytes, expected 24",
                nonce.len()
            )));
        }
        let secret_key = derive_key(password, &salt, &env.kdf.params)?;
        let cipher = XSalsa20Poly1305::new(secret_key.as_slice().into());
        let der = Zeroizing::new(
            cipher
                .decrypt(nonce.as_slice().into(), ciphertext.as_slice())
                .map_err(|_| KeyError::Decrypt)?,
        );
        Self::from_pkcs8_der(&der)
    }

    /// Reads an unencrypted P-256 key (`PRIVATE KEY` PKCS#8 or `EC PRIVATE KEY` SEC1), as
    /// `cosign import-key-pair` does, so it can be re-written encrypted.
    pub fn from_plain_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let block = Pem::parse(pem)?;
        let der = Zeroizing::new(block.der);
        match block.label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map(|k| Self { inner: k.into() })
                .map_err(|_| {
                    KeyError::UnsupportedKeyType(
                        "EC key on a curve other than P-256, or malformed".into(),
                    )
                }),
            "RSA PRIVATE KEY" => Err(KeyError::UnsupportedKeyType("RSA".into())),
            other => Err(KeyError::WrongLabel {
                found: other.into(),
                expected: "\"PRIVATE KEY\" or \"EC PRIVATE KEY\"".into(),
            }),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        use p256::pkcs8::der::Decode as _;
        let info = match p256::pkcs8::PrivateKeyInfo::from_der(der) {
            Ok(info) => info,
            Err(e) => {
                return Err(if p256::SecretKey::from_sec1_der(der).is_ok() {
                    KeyError::Sec1NotPkcs8
                } else {
                    KeyError::NotPkcs8(e.to_string())
                });
            }
        };
        let oid = info.algorithm.oid.to_string();
        match oid.as_str() {
            "1.2.840.10045.2.1" => {}
            "1.2.840.113549.1.1.1" => return Err(KeyError::UnsupportedKeyType("RSA".into())),
            "1.3.101.112" => return Err(KeyError::UnsupportedKeyType("Ed25519".into())),
            other => return Err(KeyError::UnsupportedKeyType(format!("algorithm {other}"))),
        }
        SigningKey::from_pkcs8_der(der)
            .map(|inner| Self { inner })
            .map_err(|_| KeyError::UnsupportedKeyType("EC key on a curve other than P-256".into()))
    }

    /// Encrypts the key as cosign does (scrypt N=65536 r=8 p=1, 32-byte salt, secretbox) and returns
    /// the `ENCRYPTED SIGSTORE PRIVATE KEY` PEM.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<Zeroizing<String>, KeyError> {
        let der = self
            .inner
            .to_pkcs8_der()
            .map_err(|e| KeyError::NotPkcs8(e.to_string()))?;
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        OsRng
            .try_fill_bytes(&mut salt)
            .and_then(|()| OsRng.try_fill_bytes(&mut nonce))
            .map_err(|e| KeyError::Random(e.to_string()))?;
        let params = ScryptParams {
            n: 1 << WRITE_SCRYPT_LOG_N,
            r: 8,
            p: 1,
        };
        let secret_key = derive_key(password, &salt, &params)?;
        let cipher = XSalsa20Poly1305::new(secret_key.as_slice().into());
        let ciphertext = cipher
            .encrypt((&nonce).into(), der.as_bytes())
            .map_err(|_| KeyError::Decrypt)?;
        let env = Envelope {
            kdf: Kdf {
                name: "scrypt".into(),
                params,
                salt: B64.encode(salt),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: B64.encode(nonce),
            },
            ciphertext: B64.encode(ciphertext),
        };
        let json =
            serde_json::to_vec(&env).map_err(|e| KeyError::MalformedEnvelope(e.to_string()))?;
        Ok(Zeroizing::new(pem_encode(
            SIGSTORE_PRIVATE_KEY_LABEL,
            &json,
        )))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: *self.inner.verifying_key(),
        }
    }

    /// Signs `message` (ECDSA P-256, SHA-256); returns the ASN.1 DER signature.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.inner.sign(message);
        sig.to_der().as_bytes().to_vec()
    }
}

impl PublicKey {
    /// Reads a `PUBLIC KEY` (SPKI) PEM.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let block = Pem::parse(pem)?;
        if block.label != "PUBLIC KEY" {
            return Err(KeyError::WrongLabel {
                found: block.label,
                expected: "\"PUBLIC KEY\"".into(),
            });
        }
        Self::from_spki_der(&block.der)
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        use p256::pkcs8::der::Decode as _;
        let spki = p256::pkcs8::spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?;
        match spki.algorithm.oid.to_string().as_str() {
            "1.2.840.10045.2.1" => {}
            "1.2.840.113549.1.1.1" => return Err(KeyError::UnsupportedKeyType("RSA".into())),
            "1.3.101.112" => return Err(KeyError::UnsupportedKeyType("Ed25519".into())),
            other => return Err(KeyError::UnsupportedKeyType(format!("algorithm {other}"))),
        }
        VerifyingKey::from_public_key_der(der)
            .map(|inner| Self { inner })
            .map_err(|_| KeyError::UnsupportedKeyType("EC key on a curve other than P-256".into()))
    }

    /// The `PUBLIC KEY` PEM, as `cosign.pub` holds it.
    pub fn to_pem(&self) -> String {
        self.inner
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 public key always encodes")
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        self.inner
            .to_public_key_der()
            .expect("a P-256 public key always encodes")
            .into_vec()
    }

    /// cosign's key hint: base64(sha256(SPKI DER)), written in bundles' `publicKey.hint`.
    pub fn hint(&self) -> String {
        B64.encode(Sha256::digest(self.spki_der()))
    }

    /// Verifies an ASN.1 DER ECDSA P-256/SHA-256 signature over `message`.
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> Result<(), SignatureError> {
        let sig = Signature::from_der(der_signature).map_err(|_| SignatureError::Encoding)?;
        self.inner
            .verify(message, &sig)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// Verifies a base64 signature (cosign's `.sig` text and annotation form).
    pub fn verify_base64(&self, message: &[u8], b64_signature: &str) -> Result<(), SignatureError> {
        let der = B64
            .decode(b64_signature.trim())
            .map_err(|_| SignatureError::Base64)?;
        self.verify(message, &der)
    }
}

fn decode_field(name: &str, value: &str) -> Result<Vec<u8>, KeyError> {
    B64.decode(value)
        .map_err(|_| KeyError::MalformedEnvelope(format!("{name} is not base64")))
}

fn derive_key(
    password: &[u8],
    salt: &[u8],
    p: &ScryptParams,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let out_of_bounds = || KeyError::ScryptParams {
        n: p.n,
        r: p.r,
        p: p.p,
    };
    if !p.n.is_power_of_two() || p.n < 2 {
        return Err(out_of_bounds());
    }
    let log_n = p.n.trailing_zeros() as u8;
    if log_n > MAX_SCRYPT_LOG_N || p.r == 0 || p.r > MAX_SCRYPT_R || p.p == 0 || p.p > MAX_SCRYPT_P
    {
        return Err(out_of_bounds());
    }
    let params = scrypt::Params::new(log_n, p.r, p.p, 32).map_err(|_| out_of_bounds())?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, key.as_mut_slice()).map_err(|_| out_of_bounds())?;
    Ok(key)
}

/// One PEM block: its label and decoded body.
struct Pem {
    label: String,
    der: Vec<u8>,
}

impl Pem {
    /// Parses the first PEM block in `input`.
    fn parse(input: &[u8]) -> Result<Self, KeyError> {
        if input.len() > MAX_PEM_BYTES {
            return Err(KeyError::TooLarge(input.len()));
        }
        let text = std::str::from_utf8(input)
            .map_err(|_| KeyError::MalformedPem("not UTF-8 text".into()))?;
        let start = text.find("-----BEGIN ").ok_or(KeyError::NotPem)?;
        let rest = &text[start + "-----BEGIN ".len()..];
        let label_end = rest
            .find("-----")
            .ok_or_else(|| KeyError::MalformedPem("unterminated BEGIN line".into()))?;
        let label = rest[..label_end].to_owned();
        let body_and_end = &rest[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let end = body_and_end
            .find(&end_marker)
            .ok_or_else(|| KeyError::MalformedPem(format!("no END line for \"{label}\"")))?;
        let body: String = body_and_end[..end]
            .lines()
            .filter(|l| !l.contains(':'))
            .flat_map(|l| l.trim().chars())
            .collect();
        let der = B64
            .decode(body.as_bytes())
            .map_err(|_| KeyError::MalformedPem(format!("\"{label}\" body is not base64")))?;
        Ok(Self { label, der })
    }
}

/// PEM-encodes `der` with 64-character lines, as Go's `pem.Encode` does.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_generate_encrypt_decrypt_sign_verify() {
        let key = PrivateKey::generate();
        let pem = key.to_encrypted_pem(b"pw").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let back = PrivateKey::from_encrypted_pem(pem.as_bytes(), b"pw").unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(
            PrivateKey::from_encrypted_pem(pem.as_bytes(), b"wrong").unwrap_err(),
            KeyError::Decrypt
        );
        let sig = back.sign(b"hello");
        key.public_key().verify(b"hello", &sig).unwrap();
        assert_eq!(
            key.public_key().verify(b"hellO", &sig),
            Err(SignatureError::Mismatch)
        );
        let pubpem = key.public_key().to_pem();
        assert_eq!(
            PublicKey::from_pem(pubpem.as_bytes()).unwrap(),
            key.public_key()
        );
    }

    #[test]
    fn envelope_has_cosigns_field_order() {
        let pem = PrivateKey::generate().to_encrypted_pem(b"").unwrap();
        let block = Pem::parse(pem.as_bytes()).unwrap();
        let json = String::from_utf8(block.der).unwrap();
        assert!(
            json.starts_with(
                r#"{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":""#
            ),
            "{json}"
        );
        assert!(json.contains(r#""cipher":{"name":"nacl/secretbox","nonce":""#));
    }

    #[test]
    fn hostile_scrypt_parameters_are_refused_before_any_work() {
        let env = r#"{"kdf":{"name":"scrypt","params":{"N":1099511627776,"r":8,"p":1},"salt":"AA=="},"cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},"ciphertext":"AA=="}"#;
        let pem = pem_encode(SIGSTORE_PRIVATE_KEY_LABEL, env.as_bytes());
        assert!(matches!(
            PrivateKey::from_encrypted_pem(pem.as_bytes(), b""),
            Err(KeyError::ScryptParams { .. })
        ));
    }
}
