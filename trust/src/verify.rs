//! Verification by digest: resolve a reference once, find its signatures in both layouts, check
//! each against the trusted keys and the manifest digest actually fetched, then (for content) fetch
//! blobs by digest and apply the policy's eBPF/WASM rules. Nothing is trusted before that.

use bpfship_registry::artifact::{self, ArtifactError, ArtifactKind};
use bpfship_registry::signatures::{bundle_entries, legacy_entries};
use bpfship_registry::{
    BlobKind, Client, Descriptor, ErrorClass, ImageManifest, Reference, RegistryError, untrusted,
};
use bpfship_verifier::bundle::Bundle;
use bpfship_verifier::keys::{KeyError, PublicKey};
use bpfship_verifier::policy::Policy;
use bpfship_verifier::signature::verify_simple_signing;
use serde::Serialize;

use crate::content::{self, ContentError, Inspection};

/// Reasons kept for one verification (each entry gives at most one; entries are capped too).
const MAX_REASONS: usize = 16;

/// Whose signatures count: explicit keys (`--key`), or the policy's trust rule for the repository.
#[derive(Debug, Clone, Copy)]
pub struct TrustSource<'a> {
    pub keys: &'a [PublicKey],
    pub policy: Option<&'a Policy>,
}

/// One signature that verified.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedSignature {
    /// `legacy` (`.sig` tag) or `bundle` (sigstore bundle referrer).
    pub layout: &'static str,
    pub key_hint: String,
    /// The repository the legacy payload names (bundles name only the digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_reference: Option<String>,
}

/// A manifest whose signatures (or explicit unsigned allowance) were checked, by digest.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// `repo@sha256:…`.
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    pub signatures: Vec<VerifiedSignature>,
    /// True when no signature verified but the policy explicitly allows unsigned artifacts.
    pub unsigned_allowed: bool,
    pub policy_digest: Option<String>,
    #[serde(skip)]
    pub manifest: ImageManifest,
    #[serde(skip)]
    pub repository: Reference,
}

/// Verified content: the artifact's file, fetched by digest, and what the validators found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedContent {
    pub kind: ArtifactKind,
    pub file_name: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub inspection: Inspection,
}

/// Why verification failed: each reason has its own message.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "no key to verify with: pass --key, or a policy whose [[trust]] names keys for this repository"
    )]
    NoKeys,
    #[error("{repository}: no [[trust]] rule in the policy matches this repository; refusing it")]
    Untrusted { repository: String },
    #[error("policy trust key: {0}")]
    PolicyKey(KeyError),
    #[error(
        "{reference}: no signatures found (neither a {tag} tag nor a sigstore bundle referrer); unsigned artifacts are refused"
    )]
    Unsigned { reference: String, tag: String },
    #[error("{reference}: no valid signature: {}", reasons.join("; "))]
    NoValidSignature {
        reference: String,
        reasons: Vec<String>,
    },
    #[error("{reference}: not a single-manifest artifact: {message}")]
    NotArtifact { reference: String, message: String },
    #[error("{reference}: {source}")]
    Artifact {
        reference: String,
        source: ArtifactError,
    },
    #[error("{reference}: {source}")]
    Content {
        reference: String,
        source: ContentError,
    },
    #[error("{reference}: refused: {}", reasons.join("; "))]
    Refused {
        reference: String,
        reasons: Vec<String>,
    },
}

/// The keys that count for `repo`, and whether unsigned is allowed there.
fn trusted_keys(
    repo: &Reference,
    trust: TrustSource,
) -> Result<(Vec<PublicKey>, bool), VerifyError> {
    if !trust.keys.is_empty() {
        return Ok((trust.keys.to_vec(), false));
    }
    let Some(policy) = trust.policy else {
        return Err(VerifyError::NoKeys);
    };
    let rule = policy
        .trust_for(&repo.repository_path())
        .ok_or_else(|| VerifyError::Untrusted {
            repository: repo.repository_path(),
        })?;
    let keys = rule
        .keys
        .iter()
        .map(|pem| PublicKey::from_pem(pem.as_bytes()).map_err(VerifyError::PolicyKey))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((keys, rule.allow_unsigned))
}

/// Resolves `reference` once and verifies the manifest it names by digest.
pub fn verify(
    client: &Client,
    reference: &Reference,
    trust: TrustSource,
) -> Result<Verified, VerifyError> {
    let (keys, allow_unsigned) = trusted_keys(reference, trust)?;
    let descriptor = client.resolve(reference)?;
    verify_digest(
        client,
        reference,
        &descriptor,
        &keys,
        allow_unsigned,
        trust.policy,
    )
}

fn verify_digest(
    client: &Client,
    repo: &Reference,
    descriptor: &Descriptor,
    keys: &[PublicKey],
    allow_unsigned: bool,
    policy: Option<&Policy>,
) -> Result<Verified, VerifyError> {
    let digest = descriptor.digest.as_str();
    let pinned = format!("{}@{digest}", repo.repository_path());
    let (manifest_bytes, media_type) = client.fetch_manifest(repo, digest)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| VerifyError::NotArtifact {
            reference: pinned.clone(),
            message: e.to_string(),
        })?;
    let mut reasons = Vec::new();
    let mut signatures = Vec::new();
    // Each entry is judged on its own and an unreadable or invalid one is only a reason: junk
    // that a pusher added to the `.sig` manifest or the referrers cannot hide a valid signature.
    // Only a registry that cannot be reached at all stops the judging (the caller retries).
    let mut found = 0usize;
    let note = |reasons: &mut Vec<String>, what: &str, e: &dyn std::fmt::Display| {
        if reasons.len() < MAX_REASONS {
            reasons.push(untrusted::shown_max(&format!("{what}: {e}"), 512));
        }
    };
    let entry_error = |e: RegistryError| match e.class() {
        ErrorClass::Unavailable => Err(VerifyError::Registry(e)),
        _ => Ok(e),
    };
    // The referrers are listed (on their own connection) while the legacy entries are judged;
    // each entry is fetched only when it is judged.
    std::thread::scope(|s| {
        let bundles = s.spawn(|| bundle_entries(client, repo, digest));
        match legacy_entries(client, repo, digest) {
            Ok(entries) => {
                for entry in entries.into_iter().flatten() {
                    found += 1;
                    let sig = match entry {
                        Ok(sig) => sig,
                        Err(e) => {
                            note(&mut reasons, "legacy signature", &entry_error(e)?);
                            continue;
                        }
                    };
                    let mut last = None;
                    for key in keys {
                        match verify_simple_signing(key, &sig.payload, &sig.signature, digest) {
                            Ok(v) => {
                                signatures.push(VerifiedSignature {
                                    layout: "legacy",
                                    key_hint: v.key_hint,
                                    docker_reference: Some(v.docker_reference),
                                });
                                last = None;
                                break;
                            }
                            Err(e) => last = Some(e.to_string()),
                        }
                    }
                    if let Some(e) = last {
                        note(&mut reasons, "legacy signature", &e);
                    }
                }
            }
            Err(e) => {
                found += 1;
                note(&mut reasons, "legacy signatures", &entry_error(e)?);
            }
        }
        let bundles = bundles
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        match bundles {
            Ok(entries) => {
                for entry in entries {
                    found += 1;
                    let raw = match entry {
                        Ok(raw) => raw,
                        Err(e) => {
                            note(&mut reasons, "bundle", &entry_error(e)?);
                            continue;
                        }
                    };
                    let parsed = match Bundle::parse(&raw) {
                        Ok(b) => b,
                        Err(e) => {
                            note(&mut reasons, "bundle", &e);
                            continue;
                        }
                    };
                    let mut last = None;
                    for key in keys {
                        match parsed.verify_image(key, digest) {
                            Ok(v) => {
                                signatures.push(VerifiedSignature {
                                    layout: "bundle",
                                    key_hint: v.key_hint,
                                    docker_reference: None,
                                });
                                last = None;
                                break;
                            }
                            Err(e) => last = Some(e.to_string()),
                        }
                    }
                    if let Some(e) = last {
                        note(&mut reasons, "bundle", &e);
                    }
                }
            }
            Err(e) => {
                found += 1;
                note(&mut reasons, "bundles", &entry_error(e)?);
            }
        }
        Ok::<(), VerifyError>(())
    })?;
    let unsigned_allowed = signatures.is_empty() && allow_unsigned;
    if signatures.is_empty() && !allow_unsigned {
        return Err(if found == 0 {
            VerifyError::Unsigned {
                reference: pinned,
                tag: bpfship_registry::signatures::legacy_tag(digest),
            }
        } else {
            VerifyError::NoValidSignature {
                reference: pinned,
                reasons,
            }
        });
    }
    tracing::info!(reference = %pinned, signatures = signatures.len(), "verified");
    Ok(Verified {
        reference: pinned,
        digest: digest.to_owned(),
        media_type,
        signatures,
        unsigned_allowed,
        policy_digest: policy.map(|p| p.digest.clone()),
        manifest,
        repository: repo.with_digest(digest),
    })
}

/// Fetches a verified artifact's content by digest (each blob checked) and applies the policy's
/// eBPF/WASM rules: refused content is an error naming each reason.
pub fn fetch_content(
    client: &Client,
    verified: &Verified,
    policy: Option<&Policy>,
) -> Result<VerifiedContent, VerifyError> {
    let at = |source| VerifyError::Artifact {
        reference: verified.reference.clone(),
        source,
    };
    let kind = artifact::kind_of(&verified.manifest).map_err(at)?;
    let layer = &verified.manifest.layers[0];
    let blob = client.fetch_blob(&verified.repository, layer, BlobKind::of_artifact(kind))?;
    let (file_name, bytes) = artifact::unpack_layer(&layer.media_type, &blob).map_err(at)?;
    let file_name = verified
        .manifest
        .annotations
        .get("org.opencontainers.image.title")
        .filter(|t| is_plain_file_name(t))
        .cloned()
        .unwrap_or(file_name);
    let inspection = content::inspect(&bytes, policy).map_err(|source| VerifyError::Content {
        reference: verified.reference.clone(),
        source,
    })?;
    if !inspection.is_valid() {
        return Err(VerifyError::Refused {
            reference: verified.reference.clone(),
            reasons: inspection.refusals(),
        });
    }
    Ok(VerifiedContent {
        kind,
        file_name,
        bytes,
        inspection,
    })
}

/// A file name with no directory parts, safe to write under an output directory.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && name.len() <= 255
}
