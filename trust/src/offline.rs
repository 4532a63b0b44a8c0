//! Signature material kept beside verified content, and checked again without the registry.
//!
//! A host keeps running what it verified once; when its policy changes (a key removed), what it
//! runs or restores after a reboot must be judged by the policy as it is *now*. The agent stores
//! the material each verified signature came from ([`SignatureMaterial`]) with the content and
//! calls [`reverify`] at start-up, at restore and whenever the policy changes. Each entry is
//! judged exactly as [`verify`](crate::verify::verify) judges one fetched from the registry.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bpfship_keyless::{Artifact, Digest, SigstoreBundle, verify_keyless_one_of};
use bpfship_registry::Reference;
use bpfship_registry::signatures::{
    CERTIFICATE_ANNOTATION, LegacySignature, REKOR_BUNDLE_ANNOTATION,
};
use bpfship_verifier::bundle::Bundle;
use bpfship_verifier::certificate_identity::Claims;
use bpfship_verifier::policy::Policy;
use bpfship_verifier::signature::{read_simple_signing, verify_simple_signing};
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
        /// A keyless signature's Fulcio certificate (PEM).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate: Option<String>,
        /// The Rekor bundle annotation (entry and signed entry timestamp).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rekor_bundle: Option<String>,
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

/// The parts of one legacy `.sig` layer a verifier reads.
pub(crate) struct LegacyParts<'a> {
    pub(crate) payload: &'a [u8],
    pub(crate) signature: &'a str,
    pub(crate) certificate: Option<&'a str>,
    pub(crate) rekor_bundle: Option<&'a str>,
}

impl<'a> LegacyParts<'a> {
    pub(crate) fn of(sig: &'a LegacySignature) -> Self {
        Self {
            payload: &sig.payload,
            signature: &sig.signature,
            certificate: sig
                .annotations
                .get(CERTIFICATE_ANNOTATION)
                .map(String::as_str),
            rekor_bundle: sig
                .annotations
                .get(REKOR_BUNDLE_ANNOTATION)
                .map(String::as_str),
        }
    }

    fn material(&self) -> SignatureMaterial {
        SignatureMaterial::Legacy {
            payload: self.payload.to_vec(),
            signature: self.signature.to_owned(),
            certificate: self.certificate.map(str::to_owned),
            rekor_bundle: self.rekor_bundle.map(str::to_owned),
        }
    }
}

/// Judges one legacy signature of `digest`: keyless (a Fulcio certificate annotation, with the
/// trust rule's identities and trusted root) or against the trusted keys; then the repository
/// it names against `repository` by the trust rule. The first signer that verifies it, or why
/// none did.
pub(crate) fn judge_legacy(
    parts: &LegacyParts<'_>,
    trusted: &Trusted,
    repository: &str,
    digest: &str,
) -> Result<VerifiedSignature, String> {
    let fail = |e: String| format!("legacy signature: {e}");
    let mut last = "no trusted key".to_string();
    if let (Some(certificate), Some(keyless)) = (parts.certificate, &trusted.keyless) {
        let rekor_bundle = parts.rekor_bundle.ok_or_else(|| {
            fail("keyless, but no Rekor bundle annotation to verify it offline".into())
        })?;
        let bundle = SigstoreBundle::from_cosign_legacy(
            parts.payload,
            parts.signature,
            certificate,
            rekor_bundle,
        )
        .map_err(|e| fail(e.to_string()))?;
        match verify_keyless_one_of(
            &keyless.root,
            &bundle,
            &Artifact::Bytes(parts.payload),
            &keyless.identities,
        ) {
            Ok(v) => {
                let signed =
                    read_simple_signing(parts.payload, digest).map_err(|e| fail(e.to_string()))?;
                let docker_reference =
                    check_identity(&trusted.rule, repository, &[signed.docker_reference])
                        .map_err(fail)?;
                return Ok(keyless_signature(
                    "legacy",
                    identity_of(&v).map_err(fail)?,
                    docker_reference,
                    signed.version,
                    parts.material(),
                ));
            }
            Err(e) => last = format!("keyless: {e}"),
        }
    }
    for key in &trusted.keys {
        match verify_simple_signing(key, parts.payload, parts.signature, digest) {
            Ok(v) => {
                let docker_reference =
                    check_identity(&trusted.rule, repository, &[v.docker_reference])
                        .map_err(fail)?;
                return Ok(VerifiedSignature {
                    layout: "legacy",
                    key_hint: v.key_hint,
                    identity: None,
                    docker_reference,
                    version: v.version,
                    material: parts.material(),
                });
            }
            Err(e) => last = e.to_string(),
        }
    }
    if parts.certificate.is_some() && trusted.keyless.is_none() && trusted.keys.is_empty() {
        last = "keyless (Fulcio certificate), but the trust rule names no identities".into();
    }
    Err(fail(last))
}

/// The claims of a keyless verification.
fn identity_of(v: &bpfship_keyless::Verified) -> Result<Claims, String> {
    v.identity()
        .cloned()
        .ok_or_else(|| "keyless verification named no identity".to_owned())
}

fn keyless_signature(
    layout: &'static str,
    claims: Claims,
    docker_reference: Option<String>,
    version: Option<u64>,
    material: SignatureMaterial,
) -> VerifiedSignature {
    VerifiedSignature {
        layout,
        key_hint: format!("identity {claims}"),
        identity: Some(claims),
        docker_reference,
        version,
        material,
    }
}

/// Judges one sigstore bundle of `digest`: keyless (a certificate, with the trust rule's
/// identities and trusted root) or against the trusted keys; then the trust rule.
pub(crate) fn judge_bundle(
    raw: &[u8],
    trusted: &Trusted,
    repository: &str,
    digest: &str,
) -> Result<VerifiedSignature, String> {
    let fail = |e: String| format!("bundle: {e}");
    let parsed = Bundle::parse(raw).map_err(|e| fail(e.to_string()))?;
    let material = || SignatureMaterial::Bundle {
        bundle: raw.to_vec(),
    };
    let mut last = "no trusted key".to_string();
    if parsed.verification_material.certificate.is_some() {
        let Some(keyless) = &trusted.keyless else {
            return Err(fail(
                "keyless (Fulcio certificate), but the trust rule names no identities".into(),
            ));
        };
        let bundle = SigstoreBundle::parse(raw).map_err(|e| fail(e.to_string()))?;
        let artifact_digest = Digest::parse(digest)
            .and_then(Result::ok)
            .ok_or_else(|| fail(format!("manifest digest {digest:?}")))?;
        let v = verify_keyless_one_of(
            &keyless.root,
            &bundle,
            &Artifact::Digest(&artifact_digest),
            &keyless.identities,
        )
        .map_err(|e| fail(format!("keyless: {e}")))?;
        // A DSSE statement names its subjects (sigstore-verify required the digest among
        // them); a message signature over the manifest names no repository.
        let (repositories, version) = if parsed.dsse_envelope.is_some() {
            parsed
                .image_statement(digest)
                .map_err(|e| fail(e.to_string()))?
        } else {
            (Vec::new(), None)
        };
        let docker_reference =
            check_identity(&trusted.rule, repository, &repositories).map_err(fail)?;
        return Ok(keyless_signature(
            "bundle",
            identity_of(&v).map_err(fail)?,
            docker_reference,
            version,
            material(),
        ));
    }
    for key in &trusted.keys {
        match parsed.verify_image(key, digest) {
            Ok(v) => {
                let docker_reference =
                    check_identity(&trusted.rule, repository, &v.repositories).map_err(fail)?;
                return Ok(VerifiedSignature {
                    layout: "bundle",
                    key_hint: v.key_hint,
                    identity: None,
                    docker_reference,
                    version: v.version,
                    material: material(),
                });
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(fail(last))
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
            SignatureMaterial::Legacy {
                payload,
                signature,
                certificate,
                rekor_bundle,
            } => judge_legacy(
                &LegacyParts {
                    payload,
                    signature,
                    certificate: certificate.as_deref(),
                    rekor_bundle: rekor_bundle.as_deref(),
                },
                &trusted,
                &repository_path,
                digest,
            ),
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
            certificate: None,
            rekor_bundle: None,
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
