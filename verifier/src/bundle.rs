//! Sigstore bundles v0.3 (cosign 3's default), key-based: a `messageSignature` over a blob's
//! SHA-256 (sign-blob), or a DSSE envelope over an in-toto Statement v1 naming an image manifest
//! digest (image signatures, pushed as OCI referrers). Verification is offline with a public key;
//! transparency-log entries, when present, are not checked here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::keys::{PrivateKey, PublicKey, SignatureError};
use crate::signature::{VERSION_ANNOTATION, parse_version};

/// Media type of bundles bpfship writes (and the OCI referrer's `artifactType`).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The in-toto predicate type cosign 3 uses for image signatures.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// DSSE payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const IN_TOTO_STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// Bundles are a few KiB; bound hostile input.
const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// Why a bundle was rejected; each reason has its own message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("bundle is too large ({0} bytes)")]
    TooLarge(usize),
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error("unsupported bundle media type \"{0}\"")]
    MediaType(String),
    #[error("bundle holds no {0}")]
    Missing(&'static str),
    #[error("bundle key hint {found} does not match the key ({expected})")]
    HintMismatch { found: String, expected: String },
    #[error("bundle signs digest {signed}, but the content's digest is {actual}")]
    DigestMismatch { signed: String, actual: String },
    #[error("bundle signature check failed: {0}")]
    Signature(#[from] SignatureError),
    #[error(
        "bundle is signed with a certificate (keyless); verify it with a trusted root, not a key"
    )]
    Keyless,
    #[error(transparent)]
    Version(#[from] crate::signature::LegacySignatureError),
}

/// A sigstore bundle (the subset bpfship writes and reads; unknown fields are ignored on read).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_signature: Option<MessageSignature>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsse_envelope: Option<DsseEnvelope>,
}

/// Key material: a key hint (key-based) or a certificate (keyless), and log entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyHint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<serde_json::Value>,
    #[serde(default)]
    pub tlog_entries: Vec<serde_json::Value>,
}

/// `publicKey.hint`: base64(sha256(SPKI DER)).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicKeyHint {
    #[serde(default)]
    pub hint: String,
}

/// A signature over a blob's digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSignature {
    pub message_digest: MessageDigest,
    pub signature: String,
}

/// `{algorithm: "SHA2_256", digest: base64}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageDigest {
    pub algorithm: String,
    pub digest: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DsseEnvelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<DsseSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DsseSignature {
    pub sig: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
}

/// What a verified bundle vouches for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifiedBundle {
    /// `sha256:<hex>` of the blob or manifest.
    pub digest: String,
    pub key_hint: String,
    /// `message_signature` or `dsse`.
    pub kind: &'static str,
    /// Image bundles: the names of the statement's subjects that carry the digest (bpfship writes
    /// the repository there); empty for a digest-only statement, as cosign 3 writes.
    pub repositories: Vec<String>,
    /// Image bundles: the predicate's signed [`VERSION_ANNOTATION`], when set.
    pub version: Option<u64>,
}

fn key_material(key: &PublicKey) -> VerificationMaterial {
    VerificationMaterial {
        public_key: Some(PublicKeyHint { hint: key.hint() }),
        certificate: None,
        tlog_entries: Vec::new(),
    }
}

/// Signs a blob as `cosign sign-blob --bundle` does (no transparency log).
pub fn sign_blob(key: &PrivateKey, blob: &[u8]) -> Bundle {
    Bundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        verification_material: key_material(&key.public_key()),
        message_signature: Some(MessageSignature {
            message_digest: MessageDigest {
                algorithm: "SHA2_256".into(),
                digest: B64.encode(Sha256::digest(blob)),
            },
            signature: B64.encode(key.sign(blob)),
        }),
        dsse_envelope: None,
    }
}

/// Signs an image manifest digest as cosign 3 does (DSSE over an in-toto Statement v1 with the
/// cosign sign predicate type), and ties it to `repository`: the subject's `name` is the
/// repository (`host/path`), as cosign's attestations name theirs. `version`, when given, is the
/// predicate's [`VERSION_ANNOTATION`].
pub fn sign_image(
    key: &PrivateKey,
    manifest_digest: &str,
    repository: &str,
    version: Option<u64>,
) -> Result<Bundle, BundleError> {
    let hex = manifest_digest
        .strip_prefix("sha256:")
        .ok_or_else(|| BundleError::Malformed(format!("not a sha256 digest: {manifest_digest}")))?;
    let mut statement = serde_json::json!({
        "_type": IN_TOTO_STATEMENT_V1,
        "subject": [{"name": repository, "digest": {"sha256": hex}, "annotations": {}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
    });
    if let Some(v) = version {
        statement["predicate"] = serde_json::json!({ VERSION_ANNOTATION: v.to_string() });
    }
    let payload =
        serde_json::to_vec(&statement).map_err(|e| BundleError::Malformed(e.to_string()))?;
    Ok(sign_statement(key, &payload))
}

/// A key-based bundle holding a DSSE envelope over `statement` (in-toto JSON bytes, signed as
/// they are).
pub fn sign_statement(key: &PrivateKey, statement: &[u8]) -> Bundle {
    let sig = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, statement));
    Bundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        verification_material: key_material(&key.public_key()),
        message_signature: None,
        dsse_envelope: Some(DsseEnvelope {
            payload: B64.encode(statement),
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            signatures: vec![DsseSignature {
                sig: B64.encode(sig),
                keyid: String::new(),
            }],
        }),
    }
}

/// DSSE pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Bundle {
    /// Parses bundle JSON (v0.1–v0.3 media types).
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(bytes.len()));
        }
        let b: Bundle =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
        let known = [
            "application/vnd.dev.sigstore.bundle+json;version=0.1",
            "application/vnd.dev.sigstore.bundle+json;version=0.2",
            "application/vnd.dev.sigstore.bundle+json;version=0.3",
            BUNDLE_MEDIA_TYPE,
        ];
        if !known.contains(&b.media_type.as_str()) {
            return Err(BundleError::MediaType(b.media_type));
        }
        Ok(b)
    }

    /// The bundle as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("bundle serializes")
    }

    fn check_key(&self, key: &PublicKey) -> Result<(), BundleError> {
        let vm = &self.verification_material;
        match &vm.public_key {
            Some(pk) if !pk.hint.is_empty() && pk.hint != key.hint() => {
                Err(BundleError::HintMismatch {
                    found: pk.hint.clone(),
                    expected: key.hint(),
                })
            }
            Some(_) => Ok(()),
            None if vm.certificate.is_some() => Err(BundleError::Keyless),
            None => Ok(()),
        }
    }

    /// Verifies a blob bundle: key hint, that the signed digest is the blob's, and the signature.
    pub fn verify_blob(&self, key: &PublicKey, blob: &[u8]) -> Result<VerifiedBundle, BundleError> {
        self.check_key(key)?;
        let ms = self
            .message_signature
            .as_ref()
            .ok_or(BundleError::Missing("messageSignature"))?;
        let actual = B64.encode(Sha256::digest(blob));
        if ms.message_digest.algorithm != "SHA2_256" {
            return Err(BundleError::Malformed(format!(
                "unsupported digest algorithm {}",
                ms.message_digest.algorithm
            )));
        }
        if ms.message_digest.digest != actual {
            return Err(BundleError::DigestMismatch {
                signed: b64_digest_to_hex(&ms.message_digest.digest),
                actual: format!("sha256:{}", hex::encode(Sha256::digest(blob))),
            });
        }
        key.verify_base64(blob, &ms.signature)?;
        Ok(VerifiedBundle {
            digest: format!("sha256:{}", hex::encode(Sha256::digest(blob))),
            key_hint: key.hint(),
            kind: "message_signature",
            repositories: Vec::new(),
            version: None,
        })
    }

    /// Verifies an image bundle: key hint, the DSSE signature, and that the in-toto subject names
    /// `fetched_digest`, the manifest actually fetched. The repositories it names (if any) are
    /// returned for the caller to compare with the repository verified.
    pub fn verify_image(
        &self,
        key: &PublicKey,
        fetched_digest: &str,
    ) -> Result<VerifiedBundle, BundleError> {
        self.check_key(key)?;
        let (env, payload) = self.dsse_payload()?;
        let message = pae(&env.payload_type, &payload);
        let mut last = BundleError::Missing("DSSE signature");
        let mut ok = false;
        for s in &env.signatures {
            match key.verify_base64(&message, &s.sig) {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(e) => last = BundleError::Signature(e),
            }
        }
        if !ok {
            return Err(last);
        }
        let (repositories, version) = self.image_statement(fetched_digest)?;
        Ok(VerifiedBundle {
            digest: fetched_digest.to_owned(),
            key_hint: key.hint(),
            kind: "dsse",
            repositories,
            version,
        })
    }

    /// The DSSE envelope and its decoded payload.
    fn dsse_payload(&self) -> Result<(&DsseEnvelope, Vec<u8>), BundleError> {
        let env = self
            .dsse_envelope
            .as_ref()
            .ok_or(BundleError::Missing("dsseEnvelope"))?;
        let payload = B64
            .decode(&env.payload)
            .map_err(|_| BundleError::Malformed("DSSE payload is not base64".into()))?;
        Ok((env, payload))
    }

    /// Reads the in-toto statement of a DSSE bundle whose signature the caller verified (with a
    /// key, or keyless): it must name `fetched_digest`; returns the repositories its matching
    /// subjects name (possibly none) and the signed version.
    pub fn image_statement(
        &self,
        fetched_digest: &str,
    ) -> Result<(Vec<String>, Option<u64>), BundleError> {
        let (env, payload) = self.dsse_payload()?;
        if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(BundleError::Malformed(format!(
                "DSSE payload type {}",
                env.payload_type
            )));
        }
        let statement: serde_json::Value = serde_json::from_slice(&payload)
            .map_err(|e| BundleError::Malformed(format!("in-toto statement: {e}")))?;
        let subjects = statement["subject"].as_array().cloned().unwrap_or_default();
        let fetched_hex = fetched_digest
            .strip_prefix("sha256:")
            .unwrap_or(fetched_digest);
        let matching: Vec<&serde_json::Value> = subjects
            .iter()
            .filter(|s| s["digest"]["sha256"].as_str() == Some(fetched_hex))
            .collect();
        if matching.is_empty() {
            let signed = subjects
                .first()
                .and_then(|s| s["digest"]["sha256"].as_str())
                .map_or_else(|| "nothing".to_owned(), |h| format!("sha256:{h}"));
            return Err(BundleError::DigestMismatch {
                signed,
                actual: fetched_digest.to_owned(),
            });
        }
        let repositories = matching
            .iter()
            .filter_map(|s| s["name"].as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        let version = statement["predicate"]
            .get(VERSION_ANNOTATION)
            .map(parse_version)
            .transpose()?;
        Ok((repositories, version))
    }
}

fn b64_digest_to_hex(b64: &str) -> String {
    B64.decode(b64)
        .map(|d| format!("sha256:{}", hex::encode(d)))
        .unwrap_or_else(|_| b64.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_bundle_round_trip_and_failures() {
        let key = PrivateKey::generate();
        let b = sign_blob(&key, b"blob");
        let parsed = Bundle::parse(&b.to_json()).unwrap();
        parsed.verify_blob(&key.public_key(), b"blob").unwrap();
        assert!(matches!(
            parsed.verify_blob(&key.public_key(), b"blo6"),
            Err(BundleError::DigestMismatch { .. })
        ));
        assert!(matches!(
            parsed.verify_blob(&PrivateKey::generate().public_key(), b"blob"),
            Err(BundleError::HintMismatch { .. })
        ));
    }

    #[test]
    fn image_bundle_round_trip_and_failures() {
        let key = PrivateKey::generate();
        let d = format!("sha256:{}", "ab".repeat(32));
        let b = sign_image(&key, &d, "reg:5000/team-a/xdp", Some(4)).unwrap();
        let json = String::from_utf8(b.to_json()).unwrap();
        assert!(json.starts_with(r#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"#));
        let v = b.verify_image(&key.public_key(), &d).unwrap();
        assert_eq!(v.repositories, ["reg:5000/team-a/xdp"]);
        assert_eq!(v.version, Some(4));
        let v = sign_image(&key, &d, "", None)
            .unwrap()
            .verify_image(&key.public_key(), &d)
            .unwrap();
        assert!(v.repositories.is_empty() && v.version.is_none());
        assert!(matches!(
            b.verify_image(&key.public_key(), &format!("sha256:{}", "cd".repeat(32))),
            Err(BundleError::DigestMismatch { .. })
        ));
        let mut forged = b.clone();
        forged.verification_material.public_key = None;
        assert!(matches!(
            forged.verify_image(&PrivateKey::generate().public_key(), &d),
            Err(BundleError::Signature(SignatureError::Mismatch))
        ));
    }
}
