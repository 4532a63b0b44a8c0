//! Legacy cosign image signatures ("simple signing", cosign ≤ 2's default, read by skopeo,
//! policy-controller and Kyverno): a JSON payload naming the image's manifest digest, signed with
//! the key, stored as a layer of the `sha256-<hex>.sig` tag with the signature in an annotation.

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SignatureError};

/// Media type of the signature layer (the payload).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` every cosign image signature carries.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";
/// Payloads are a few hundred bytes; anything far larger is refused unparsed.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Why a legacy signature was rejected; each reason has its own message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LegacySignatureError {
    #[error("signature check failed: {0}")]
    Signature(#[from] SignatureError),
    #[error("signature payload is not a cosign simple-signing document: {0}")]
    Payload(String),
    #[error("signature payload has type \"{0}\", not a cosign container image signature")]
    WrongType(String),
    #[error("signature names manifest {signed}, but the manifest fetched is {fetched}")]
    DigestMismatch { signed: String, fetched: String },
    #[error("not a containers-image signature file: {0}")]
    SignatureFile(String),
}

/// The simple-signing payload (field order and names as cosign writes them).
#[derive(Debug, Serialize, Deserialize)]
pub struct SimpleSigning {
    pub critical: Critical,
    /// Free-form extras; cosign writes `null` when empty.
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The part of the payload a verifier must check.
#[derive(Debug, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The repository the signer meant.
#[derive(Debug, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// The manifest the signer signed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// What a verified legacy signature vouches for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifiedSignature {
    pub docker_reference: String,
    pub manifest_digest: String,
    pub key_hint: String,
}

/// The payload bytes cosign signs for `manifest_digest` pushed as `docker_reference` (the
/// repository, without tag or digest).
pub fn simple_signing_payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    let doc = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: docker_reference.to_owned(),
            },
            image: Image {
                docker_manifest_digest: manifest_digest.to_owned(),
            },
            kind: COSIGN_SIGNATURE_TYPE.to_owned(),
        },
        optional: None,
    };
    serde_json::to_vec(&doc).expect("simple-signing payload serializes")
}

/// Verifies a legacy signature: the signature over the payload bytes with `key`, the payload's
/// shape and type, and that it names `fetched_digest`, the manifest actually fetched.
pub fn verify_simple_signing(
    key: &PublicKey,
    payload: &[u8],
    signature_b64: &str,
    fetched_digest: &str,
) -> Result<VerifiedSignature, LegacySignatureError> {
    key.verify_base64(payload, signature_b64)?;
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(LegacySignatureError::Payload(format!(
            "{} bytes",
            payload.len()
        )));
    }
    let doc: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| LegacySignatureError::Payload(e.to_string()))?;
    if doc.critical.kind != COSIGN_SIGNATURE_TYPE {
        return Err(LegacySignatureError::WrongType(doc.critical.kind));
    }
    let signed = doc.critical.image.docker_manifest_digest;
    if signed != fetched_digest {
        return Err(LegacySignatureError::DigestMismatch {
            signed,
            fetched: fetched_digest.to_owned(),
        });
    }
    Ok(VerifiedSignature {
        docker_reference: doc.critical.identity.docker_reference,
        manifest_digest: signed,
        key_hint: key.hint(),
    })
}

/// A signature as containers/image stores it in `dir:` layouts (`signature-N` files): the magic
/// `\x00sigstore-json\n` then JSON `{mimeType, payload (base64), annotations}`.
#[derive(Debug, Deserialize)]
pub struct SignatureFile {
    #[serde(rename = "mimeType")]
    pub mime_type: String,
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl SignatureFile {
    /// Parses a containers-image `signature-N` file.
    pub fn parse(bytes: &[u8]) -> Result<Self, LegacySignatureError> {
        let json = bytes
            .strip_prefix(b"\x00sigstore-json\n")
            .ok_or_else(|| LegacySignatureError::SignatureFile("no sigstore-json magic".into()))?;
        serde_json::from_slice(json).map_err(|e| LegacySignatureError::SignatureFile(e.to_string()))
    }

    /// Verifies it as a cosign image signature of `fetched_digest`.
    pub fn verify(
        &self,
        key: &PublicKey,
        fetched_digest: &str,
    ) -> Result<VerifiedSignature, LegacySignatureError> {
        if self.mime_type != SIMPLE_SIGNING_MEDIA_TYPE {
            return Err(LegacySignatureError::WrongType(format!(
                "media type {}",
                self.mime_type
            )));
        }
        let sig = self.annotations.get(SIGNATURE_ANNOTATION).ok_or_else(|| {
            LegacySignatureError::SignatureFile(format!("no {SIGNATURE_ANNOTATION} annotation"))
        })?;
        verify_simple_signing(key, &self.payload, sig, fetched_digest)
    }
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use base64::Engine as _;

    #[test]
    fn payload_is_byte_identical_to_cosigns() {
        let p = simple_signing_payload(
            "192.168.64.2:5000/cosign-signed-single-sample",
            "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00",
        );
        assert_eq!(
            std::str::from_utf8(&p).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"192.168.64.2:5000/cosign-signed-single-sample"},"image":{"docker-manifest-digest":"sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"},"type":"cosign container image signature"},"optional":null}"#
        );
    }

    #[test]
    fn each_failure_has_its_reason() {
        let key = PrivateKey::generate();
        let other = PrivateKey::generate();
        let d = "sha256:aa";
        let p = simple_signing_payload("r/x", d);
        let b64 = |s: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(s);
        let sig = b64(key.sign(&p));
        assert!(verify_simple_signing(&key.public_key(), &p, &sig, d).is_ok());
        assert_eq!(
            verify_simple_signing(&key.public_key(), &p, &sig, "sha256:bb"),
            Err(LegacySignatureError::DigestMismatch {
                signed: d.into(),
                fetched: "sha256:bb".into()
            })
        );
        assert_eq!(
            verify_simple_signing(&other.public_key(), &p, &sig, d),
            Err(LegacySignatureError::Signature(SignatureError::Mismatch))
        );
        let mut tampered = p.clone();
        tampered[5] ^= 1;
        assert_eq!(
            verify_simple_signing(&key.public_key(), &tampered, &sig, d),
            Err(LegacySignatureError::Signature(SignatureError::Mismatch))
        );
        let junk = b"not json".to_vec();
        let junk_sig = b64(key.sign(&junk));
        assert!(matches!(
            verify_simple_signing(&key.public_key(), &junk, &junk_sig, d),
            Err(LegacySignatureError::Payload(_))
        ));
        assert_eq!(
            verify_simple_signing(&key.public_key(), &p, "%%%", d),
            Err(LegacySignatureError::Signature(SignatureError::Base64))
        );
    }
}
