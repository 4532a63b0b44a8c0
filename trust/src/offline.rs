//! Signature material kept beside verified content, and checked again without the registry.
//!
//! A host keeps running what it verified once; when its policy changes (a key removed), what it
//! runs or restores after a reboot must be judged by the policy as it is *now*. The agent stores
//! the material each verified signature came from ([`SignatureMaterial`]) with the content and
//! calls [`reverify`] at start-up, at restore and whenever the policy changes. Each entry is
//! judged exactly as [`verify`](crate::verify::verify) judges one fetched from the registry.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bpfship_registry::Reference;
use bpfship_verifier::bundle::Bundle;
use bpfship_verifier::policy::Policy;
use bpfship_verifier::signature::verify_simple_signing;
use serde::{Deserialize, Serialize};

use crate::verify::{
    TrustSource, Trusted, VerifiedSignature, VerifyError, check_identity, trusted_keys,
};

/// The bytes one signature was verified from: enough to verify it again offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "layout", rename_all = "snake_case")]
pub enum SignatureMaterial {
    /// A `.sig` tag layer: the simple-signing payload and its base64 signature.
    Legacy {
        #[serde(with = "b64")]
        payload: Vec<u8>,
        signature: String,
    },
    /// A sigstore bundle referrer, as fetched.
    Bundle {
        #[serde(with = "b64")]
        bundle: Vec<u8>,
    },
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Judges one legacy signature of `digest` against the trusted keys, and the repository it
/// names against `repository` by the trust rule: the first key that verifies it, or why none
/// did.
pub(crate) fn judge_legacy(
    payload: &[u8],
    signature: &str,
    trusted: &Trusted,
    repository: &str,
    digest: &str,
) -> Result<VerifiedSignature, String> {
    let mut last = "no trusted key".to_string();
    for key in &trusted.keys {
        match verify_simple_signing(key, payload, signature, digest) {
            Ok(v) => {
                let docker_reference =
                    check_identity(&trusted.rule, repository, &[v.docker_reference])
                        .map_err(|e| format!("legacy signature: {e}"))?;
                return Ok(VerifiedSignature {
                    layout: "legacy",
                    key_hint: v.key_hint,
                    docker_reference,
                    version: v.version,
                    material: SignatureMaterial::Legacy {
                        payload: payload.to_vec(),
                        signature: signature.to_owned(),
                    },
                });
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("legacy signature: {last}"))
}

/// Judges one sigstore bundle of `digest` against the trusted keys and the trust rule.
pub(crate) fn judge_bundle(
    raw: &[u8],
    trusted: &Trusted,
    repository: &str,
    digest: &str,
) -> Result<VerifiedSignature, String> {
    let parsed = Bundle::parse(raw).map_err(|e| format!("bundle: {e}"))?;
    let mut last = "no trusted key".to_string();
    for key in &trusted.keys {
        match parsed.verify_image(key, digest) {
            Ok(v) => {
                let docker_reference = check_identity(&trusted.rule, repository, &v.repositories)
                    .map_err(|e| format!("bundle: {e}"))?;
                return Ok(VerifiedSignature {
                    layout: "bundle",
                    key_hint: v.key_hint,
                    docker_reference,
                    version: v.version,
                    material: SignatureMaterial::Bundle {
                        bundle: raw.to_vec(),
                    },
                });
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("bundle: {last}"))
}

/// Verifies stored `material` for `repository@digest` against `policy` as it is now, without
/// the registry: the signatures that still verify (empty when the policy allows unsigned
/// content there), or why none does.
pub fn reverify(
    repository: &Reference,
    digest: &str,
    material: &[SignatureMaterial],
    policy: &Policy,
) -> Result<Vec<VerifiedSignature>, VerifyError> {
    let trusted = trusted_keys(repository, TrustSource::policy(policy))?;
    let repository_path = repository.repository_path();
    let mut signatures = Vec::new();
    let mut reasons = Vec::new();
    for m in material {
        let judged = match m {
            SignatureMaterial::Legacy { payload, signature } => {
                judge_legacy(payload, signature, &trusted, &repository_path, digest)
            }
            SignatureMaterial::Bundle { bundle } => {
                judge_bundle(bundle, &trusted, &repository_path, digest)
            }
        };
        match judged {
            Ok(v) => signatures.push(v),
            Err(e) => reasons.push(e),
        }
    }
    // As at the registry: allow_unsigned covers content that had no signature at all.
    if signatures.is_empty() && !(trusted.allow_unsigned && material.is_empty()) {
        let reference = format!("{}@{digest}", repository.repository_path());
        return Err(if material.is_empty() {
            VerifyError::Unsigned {
                reference,
                tag: bpfship_registry::signatures::legacy_tag(digest),
            }
        } else {
            VerifyError::NoValidSignature { reference, reasons }
        });
    }
    Ok(signatures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfship_verifier::keys::PrivateKey;
    use bpfship_verifier::signature::simple_signing_payload;

    fn policy(keys: &[&PrivateKey]) -> Policy {
        let pems: Vec<String> = keys
            .iter()
            .map(|k| format!("\"\"\"\n{}\"\"\"", k.public_key().to_pem()))
            .collect();
        let text = format!(
            "version = 1\n[[trust]]\nrepositories = [\"example.org/**\"]\nkeys = [{}]\n",
            pems.join(", ")
        );
        Policy::from_toml(&text, std::path::Path::new("policy.toml")).unwrap()
    }

    #[test]
    fn stored_material_is_judged_by_the_policy_as_it_is_now() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let digest = format!("sha256:{}", "1".repeat(64));
        let repo = Reference::parse(&format!("example.org/team/prog@{digest}")).unwrap();
        let payload = simple_signing_payload("example.org/team/prog", &digest, None);
        let material = vec![SignatureMaterial::Legacy {
            signature: B64.encode(a.sign(&payload)),
            payload,
        }];
        // Round trip through JSON, as the agent stores it.
        let material: Vec<SignatureMaterial> =
            serde_json::from_slice(&serde_json::to_vec(&material).unwrap()).unwrap();
        let both = policy(&[&a, &b]);
        let ok = reverify(&repo, &digest, &material, &both).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].material, material[0]);
        // Key a removed from the policy: the same material no longer verifies.
        let only_b = policy(&[&b]);
        let e = reverify(&repo, &digest, &material, &only_b).unwrap_err();
        assert!(matches!(e, VerifyError::NoValidSignature { .. }), "{e}");
        // Material for another digest does not verify this one.
        let other = format!("sha256:{}", "2".repeat(64));
        assert!(reverify(&repo, &other, &material, &both).is_err());
        assert!(matches!(
            reverify(&repo, &digest, &[], &both),
            Err(VerifyError::Unsigned { .. })
        ));
    }
}
