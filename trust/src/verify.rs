//! Verification by digest: resolve a reference once, find its signatures in both layouts, check
//! each against the trusted keys and the manifest digest actually fetched, then (for content) fetch
//! blobs by digest and apply the policy's eBPF/WASM rules. Nothing is trusted before that.

use bpfship_registry::artifact::{self, ArtifactError, ArtifactKind};
use bpfship_registry::signatures::{fetch_bundles, fetch_legacy};
use bpfship_registry::{Client, Descriptor, ImageManifest, Reference, RegistryError};
use bpfship_verifier::keys::{KeyError, PublicKey};
use bpfship_verifier::policy::Policy;
use serde::Serialize;

use crate::content::{self, ContentError, Inspection};
use crate::offline::{SignatureMaterial, judge_bundle, judge_legacy};

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
    /// What it was verified from, to store beside the content and verify again offline.
    #[serde(skip)]
    pub material: SignatureMaterial,
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
pub(crate) fn trusted_keys(
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
    // Both signature layouts are looked up at once, each on its own connection.
    let (legacy, bundles) = std::thread::scope(|s| {
        let legacy = s.spawn(|| fetch_legacy(client, repo, digest));
        let bundles = fetch_bundles(client, repo, digest);
        let legacy = legacy
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (legacy, bundles)
    });
    let (legacy, bundles) = (legacy?, bundles?);
    let judged = legacy
        .iter()
        .map(|sig| judge_legacy(&sig.payload, &sig.signature, keys, digest))
        .chain(bundles.iter().map(|raw| judge_bundle(raw, keys, digest)));
    for j in judged {
        match j {
            Ok(v) => signatures.push(v),
            Err(e) => reasons.push(e),
        }
    }
    let unsigned_allowed = signatures.is_empty() && allow_unsigned;
    if signatures.is_empty() && !allow_unsigned {
        return Err(if legacy.is_empty() && bundles.is_empty() {
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
    let blob = client.fetch_blob(&verified.repository, layer)?;
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
