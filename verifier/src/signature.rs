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
/// The signed annotation carrying bpfship's monotonic release version (a decimal string, as
/// cosign's `-a key=value` annotations are), in the legacy payload's `optional` and in the bundle
/// statement's predicate.
pub const VERSION_ANNOTATION: &str = "dev.bpfship.version";
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
    #[error("signed {VERSION_ANNOTATION} is not a decimal version: {0}")]
    Version(String),
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
    /// The repository the signer meant; compare it with the repository verified
    /// ([`crate::identity`]).
    pub docker_reference: String,
    pub manifest_digest: String,
    pub key_hint: String,
    /// The signed [`VERSION_ANNOTATION`], when the signer set one.
    pub version: Option<u64>,
}

/// Reads a signed version annotation: a decimal string (or a JSON number), nothing else.
pub fn parse_version(value: &serde_json::Value) -> Result<u64, LegacySignatureError> {
    let parsed = match value {
        serde_json::Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        let mut shown = value.to_string();
        shown.truncate(64);
        LegacySignatureError::Version(shown)
    })
}

/// The payload bytes cosign signs for `manifest_digest` pushed as `docker_reference` (the
/// repository, without tag or digest), with bpfship's signed `version` annotation when given.
pub fn simple_signing_payload(
    docker_reference: &str,
    manifest_digest: &str,
    version: Option<u64>,
) -> Vec<u8> {
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
        optional: version.map(|v| {
            serde_json::Map::from_iter([(VERSION_ANNOTATION.to_owned(), v.to_string().into())])
        }),
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
    let signed = read_simple_signing(payload, fetched_digest)?;
    Ok(VerifiedSignature {
        docker_reference: signed.docker_reference,
        manifest_digest: signed.manifest_digest,
        key_hint: key.hint(),
        version: signed.version,
    })
}

/// What a simple-signing payload says, read after its signature was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload {
    pub docker_reference: String,
    pub manifest_digest: String,
    pub version: Option<u64>,
}

/// Reads a payload whose signature the caller verified (with a key, or keyless through a
/// certificate): its shape and type, and that it names `fetched_digest`.
pub fn read_simple_signing(
    payload: &[u8],
    fetched_digest: &str,
) -> Result<SignedPayload, LegacySignatureError> {
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
    let version = doc
        .optional
        .as_ref()
        .and_then(|o| o.get(VERSION_ANNOTATION))
        .map(parse_version)
        .transpose()?;
    Ok(SignedPayload {
        docker_reference: doc.critical.identity.docker_reference,
        manifest_digest: signed,
        version,
    })
}

/// What `blob` would mean to an image-signature verifier, if anything: a raw ECDSA signature over
/// it (`sign-blob`) is also a valid legacy image signature when it is a simple-signing payload, and
/// a valid DSSE signature when it is a DSSE pre-authentication encoding; an in-toto statement is
/// what bundles sign. `sign-blob` refuses such content so a blob signature never doubles as an
/// image signature.
pub fn image_signature_domain(blob: &[u8]) -> Option<&'static str> {
    if blob.starts_with(b"DSSEv1 ") {
        return Some("a DSSE pre-authentication encoding (what DSSE envelopes sign)");
    }
    let first = blob.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return None;
    }
    let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(blob).ok()?;
    if doc
        .get("critical")
        .is_some_and(serde_json::Value::is_object)
    {
        return Some("a simple-signing payload (what cosign image signatures sign)");
    }
    let in_toto_type = doc
        .get("_type")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|t| t.contains("in-toto.io/Statement"));
    if in_toto_type || (doc.contains_key("subject") && doc.contains_key("predicateType")) {
        return Some("an in-toto statement (what sigstore bundles and attestations sign)");
    }
    None
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
            None,
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
        let p = simple_signing_payload("r/x", d, None);
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

    #[test]
    fn image_signature_content_is_recognised() {
        let p = simple_signing_payload("r/x", "sha256:aa", None);
        assert!(
            image_signature_domain(&p)
                .unwrap()
                .contains("simple-signing")
        );
        let statement =
            br#" {"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"x"}"#;
        assert!(
            image_signature_domain(statement)
                .unwrap()
                .contains("in-toto")
        );
        assert!(image_signature_domain(br#"{"subject":[],"predicateType":"x"}"#).is_some());
        assert!(image_signature_domain(b"DSSEv1 28 application/vnd.in-toto+json 2 {}").is_some());
        for other in [
            &b"plain text"[..],
            b"{\"critical\": 1}",
            b"{}",
            b"[1]",
            b"\x7fELF",
        ] {
            assert_eq!(image_signature_domain(other), None);
        }
    }

    #[test]
    fn the_version_is_signed_and_read_back() {
        let key = PrivateKey::generate();
        let d = "sha256:aa";
        let sign = |p: &[u8]| base64::engine::general_purpose::STANDARD.encode(key.sign(p));
        let p = simple_signing_payload("r/x", d, Some(7));
        assert!(
            std::str::from_utf8(&p)
                .unwrap()
                .ends_with(r#""optional":{"dev.bpfship.version":"7"}}"#)
        );
        let v = verify_simple_signing(&key.public_key(), &p, &sign(&p), d).unwrap();
        assert_eq!(v.version, Some(7));
        let p = simple_signing_payload("r/x", d, None);
        let v = verify_simple_signing(&key.public_key(), &p, &sign(&p), d).unwrap();
        assert_eq!(v.version, None);
        for bad in [
            r#""-1""#,
            r#""1.5""#,
            r#""""#,
            "true",
            r#""99999999999999999999999""#,
        ] {
            let p = format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"r/x"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":{{"dev.bpfship.version":{bad}}}}}"#
            );
            assert!(
                matches!(
                    verify_simple_signing(&key.public_key(), p.as_bytes(), &sign(p.as_bytes()), d),
                    Err(LegacySignatureError::Version(_))
                ),
                "{bad}"
            );
        }
    }
}
