//! Verification by digest: resolve a reference once, find its signatures in both layouts, check
//! each against the trusted keys and the manifest digest actually fetched, then (for content) fetch
//! blobs by digest and apply the policy's eBPF/WASM rules. Nothing is trusted before that.

use bpfship_keyless::{KeylessError, TrustRoot};
use bpfship_registry::artifact::{self, ArtifactError, ArtifactKind};
use bpfship_registry::index;
use bpfship_registry::signatures::{bundle_entries, legacy_entries};
use bpfship_registry::{
    BlobKind, Client, Descriptor, ErrorClass, ImageManifest, Platform, Reference, RegistryError,
    untrusted,
};
use bpfship_verifier::certificate_identity::{Claims, IdentityPolicy};
use bpfship_verifier::keys::{KeyError, PublicKey};
use bpfship_verifier::policy::{Policy, SignedIdentity};
use serde::Serialize;

use crate::content::{self, ContentError, Inspection};
use crate::offline::{LegacyParts, SignatureMaterial, judge_bundle, judge_legacy};

/// Reasons kept for one verification (each entry gives at most one; entries are capped too).
const MAX_REASONS: usize = 16;

/// Whose signatures count: explicit keys (`--key`) and keyless identities
/// (`--certificate-identity…`), or the policy's trust rule for the repository.
///
/// Explicit keys and identities replace the policy's `[[trust]]` rules entirely for this verification (they are
/// scoped to the one reference verified, not to repository patterns); `key_rule` says how their
/// signatures are tied to that repository. Either way a signature must name the repository
/// verified.
#[derive(Debug, Clone, Copy)]
pub struct TrustSource<'a> {
    pub keys: &'a [PublicKey],
    pub keyless: Option<&'a KeylessTrust>,
    pub key_rule: &'a KeyRule,
    pub policy: Option<&'a Policy>,
}

/// Keyless signers: the identities whose Fulcio certificates count, and the trusted root those
/// certificates, log entries and timestamps are verified against (offline).
#[derive(Clone)]
pub struct KeylessTrust {
    pub root: std::sync::Arc<TrustRoot>,
    pub identities: Vec<IdentityPolicy>,
}

impl std::fmt::Debug for KeylessTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeylessTrust")
            .field("identities", &self.identities)
            .finish_non_exhaustive()
    }
}

impl<'a> TrustSource<'a> {
    /// Trust as the policy's `[[trust]]` rules say.
    pub fn policy(policy: &'a Policy) -> Self {
        Self {
            keys: &[],
            keyless: None,
            key_rule: &KeyRule::DEFAULT,
            policy: Some(policy),
        }
    }
}

/// The identity rules for explicit keys: what a `[[trust]]` rule's `signed_identity` and
/// `accept_digest_only_bundles` say for the policy's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    pub signed_identity: SignedIdentity,
    pub accept_digest_only_bundles: bool,
}

impl KeyRule {
    /// The signed repository must be the one verified; digest-only bundles do not count.
    pub const DEFAULT: KeyRule = KeyRule {
        signed_identity: SignedIdentity::MatchRepository,
        accept_digest_only_bundles: false,
    };
}

/// What decided which keys counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustBasis {
    /// Keys or identities given explicitly (`--key`, `--certificate-identity…`), replacing the
    /// policy's `[[trust]]` rules.
    ExplicitKeys,
    /// The policy's `[[trust]]` entry with this index (0-based), the first matching the repository.
    PolicyRule(usize),
}

/// One signature that verified.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedSignature {
    /// `legacy` (`.sig` tag) or `bundle` (sigstore bundle referrer).
    pub layout: &'static str,
    /// The key's hint, or for a keyless signature its identity (`subject (issuer …)`).
    pub key_hint: String,
    /// A keyless signature's verified certificate claims (who signed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Claims>,
    /// The repository the signature names (legacy `docker-reference`, bundle subject name),
    /// checked against the repository verified; absent for a digest-only bundle the trust rule
    /// accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_reference: Option<String>,
    /// What it was verified from, to store beside the content and verify again offline.
    #[serde(skip)]
    pub material: SignatureMaterial,
    /// The signed monotonic version, when the signer set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// A manifest whose signatures (or explicit unsigned allowance) were checked, by digest.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// `repo@sha256:…`.
    pub reference: String,
    pub digest: String,
    pub media_type: String,
    pub signatures: Vec<VerifiedSignature>,
    /// The highest signed version among the signatures that verified (`push`/`sign --version`);
    /// `None` when no verified signature carries one. The agent refuses to go below a version it
    /// already ran.
    pub version: Option<u64>,
    /// True when the artifact has no signature at all and the policy explicitly allows unsigned
    /// artifacts. Signatures that are present but fail are never treated as absent.
    pub unsigned_allowed: bool,
    /// Which keys counted: explicit keys or a policy rule.
    pub trust: TrustBasis,
    pub policy_digest: Option<String>,
    /// For an image index (signed by its digest): the entry chosen for this host, whose
    /// manifest is the one used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_manifest: Option<Descriptor>,
    /// The image manifest used (for an index: the host's entry).
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
    #[error("policy trust[{rule}].trusted_root: {source}")]
    PolicyTrustedRoot { rule: usize, source: KeylessError },
    #[error("policy trust[{rule}].identities: {message}")]
    PolicyIdentity { rule: usize, message: String },
    #[error(
        "{reference}: no signatures found (neither a {tag} tag nor a sigstore bundle referrer); unsigned artifacts are refused"
    )]
    Unsigned { reference: String, tag: String },
    #[error("{reference}: no valid signature: {}", reasons.join("; "))]
    NoValidSignature {
        reference: String,
        reasons: Vec<String>,
    },
    #[error("{reference}: not a usable artifact: {message}")]
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

/// The keys that count for a repository and the rules that come with them.
pub(crate) struct Trusted {
    pub(crate) keys: Vec<PublicKey>,
    pub(crate) keyless: Option<KeylessTrust>,
    pub(crate) allow_unsigned: bool,
    pub(crate) rule: KeyRule,
    pub(crate) basis: TrustBasis,
}

/// The keys that count for `repo`, whether unsigned is allowed there, and how signatures must
/// name it.
pub(crate) fn trusted_keys(repo: &Reference, trust: TrustSource) -> Result<Trusted, VerifyError> {
    if !trust.keys.is_empty() || trust.keyless.is_some() {
        return Ok(Trusted {
            keys: trust.keys.to_vec(),
            keyless: trust.keyless.cloned(),
            allow_unsigned: false,
            rule: trust.key_rule.clone(),
            basis: TrustBasis::ExplicitKeys,
        });
    }
    let Some(policy) = trust.policy else {
        return Err(VerifyError::NoKeys);
    };
    let (index, rule) =
        policy
            .trust_for(&repo.repository_path())
            .ok_or_else(|| VerifyError::Untrusted {
                repository: repo.repository_path(),
            })?;
    let keys = rule
        .keys
        .iter()
        .map(|pem| PublicKey::from_pem(pem.as_bytes()).map_err(VerifyError::PolicyKey))
        .collect::<Result<Vec<_>, _>>()?;
    let keyless = match &rule.trusted_root {
        Some(json) if !rule.identities.is_empty() => {
            let root = TrustRoot::from_json(json, &format!("trust[{index}].trusted_root"))
                .map_err(|source| VerifyError::PolicyTrustedRoot {
                    rule: index,
                    source,
                })?;
            let identities = rule
                .identities
                .iter()
                .map(|i| i.to_policy())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|message| VerifyError::PolicyIdentity {
                    rule: index,
                    message,
                })?;
            Some(KeylessTrust {
                root: std::sync::Arc::new(root),
                identities,
            })
        }
        _ => None,
    };
    Ok(Trusted {
        keys,
        keyless,
        allow_unsigned: rule.allow_unsigned,
        rule: KeyRule {
            signed_identity: rule.signed_identity.clone(),
            accept_digest_only_bundles: rule.accept_digest_only_bundles,
        },
        basis: TrustBasis::PolicyRule(index),
    })
}

/// Checks the repositories a verified signature names against the repository verified; returns
/// the one that matched (`None`: a digest-only bundle the rule accepts).
pub(crate) fn check_identity(
    rule: &KeyRule,
    repository: &str,
    signed: &[String],
) -> Result<Option<String>, String> {
    if signed.is_empty() {
        return if rule.accept_digest_only_bundles {
            Ok(None)
        } else {
            Err("names only the digest, no repository (as cosign 3 writes bundles); the trust rule does not set accept_digest_only_bundles".into())
        };
    }
    let mut first_error = None;
    for name in signed {
        match rule.signed_identity.check(repository, name) {
            Ok(()) => return Ok(Some(name.clone())),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.map(|e| e.to_string()).unwrap_or_default())
}

/// Resolves `reference` once and verifies the manifest it names by digest.
pub fn verify(
    client: &Client,
    reference: &Reference,
    trust: TrustSource,
) -> Result<Verified, VerifyError> {
    let trusted = trusted_keys(reference, trust)?;
    let descriptor = client.resolve(reference)?;
    verify_digest(client, reference, &descriptor, &trusted, trust.policy)
}

fn verify_digest(
    client: &Client,
    repo: &Reference,
    descriptor: &Descriptor,
    trusted: &Trusted,
    policy: Option<&Policy>,
) -> Result<Verified, VerifyError> {
    let allow_unsigned = trusted.allow_unsigned;
    let repository = repo.repository_path();
    let digest = descriptor.digest.as_str();
    let pinned = format!("{}@{digest}", repo.repository_path());
    let (manifest_bytes, media_type) = client.fetch_manifest(repo, digest)?;
    // An index is signed by its own digest; the host's entry is fetched by the digest it names.
    let resolved = index::resolve_manifest(
        client,
        repo,
        descriptor,
        &manifest_bytes,
        &media_type,
        &Platform::host(),
    )
    .map_err(|e| match e {
        index::ResolveError::Registry(e) => VerifyError::Registry(e),
        other => VerifyError::NotArtifact {
            reference: pinned.clone(),
            message: other.to_string(),
        },
    })?;
    let manifest = resolved.manifest;
    let platform_manifest = resolved.index.is_some().then_some(resolved.descriptor);
    let mut reasons = Vec::new();
    let mut signatures = Vec::new();
    // Each entry is judged on its own and an unreadable or invalid one is only a reason: junk
    // that a pusher added to the `.sig` manifest or the referrers cannot hide a valid signature.
    // Only a registry that cannot be reached at all stops the judging (the caller retries).
    let mut found = 0usize;
    let note = |reasons: &mut Vec<String>, reason: String| {
        if reasons.len() < MAX_REASONS {
            reasons.push(untrusted::shown_max(&reason, 512));
        }
    };
    let entry_error = |what: &str, e: RegistryError| match e.class() {
        ErrorClass::Unavailable => Err(VerifyError::Registry(e)),
        _ => Ok(format!("{what}: {e}")),
    };
    let mut judged = |reasons: &mut Vec<String>, j: Result<VerifiedSignature, String>| match j {
        Ok(v) => signatures.push(v),
        Err(e) => note(reasons, e),
    };
    // The referrers are listed (on their own connection) while the legacy entries are judged;
    // each entry is fetched only when it is judged.
    std::thread::scope(|s| {
        let bundles = s.spawn(|| bundle_entries(client, repo, digest));
        match legacy_entries(client, repo, digest) {
            Ok(entries) => {
                for entry in entries.into_iter().flatten() {
                    found += 1;
                    match entry {
                        Ok(sig) => judged(
                            &mut reasons,
                            judge_legacy(&LegacyParts::of(&sig), trusted, &repository, digest),
                        ),
                        Err(e) => note(&mut reasons, entry_error("legacy signature", e)?),
                    }
                }
            }
            Err(e) => {
                found += 1;
                note(&mut reasons, entry_error("legacy signatures", e)?);
            }
        }
        let bundles = bundles
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        match bundles {
            Ok(entries) => {
                for entry in entries {
                    found += 1;
                    match entry {
                        Ok(raw) => judged(
                            &mut reasons,
                            judge_bundle(&raw, trusted, &repository, digest),
                        ),
                        Err(e) => note(&mut reasons, entry_error("bundle", e)?),
                    }
                }
            }
            Err(e) => {
                found += 1;
                note(&mut reasons, entry_error("bundles", e)?);
            }
        }
        Ok::<(), VerifyError>(())
    })?;
    // allow_unsigned covers artifacts with no signature at all: a signature that is there and
    // fails (wrong key, other repository, tampered, unreadable) is refused, never taken for
    // absence.
    let absent = found == 0;
    let unsigned_allowed = signatures.is_empty() && allow_unsigned && absent;
    if signatures.is_empty() && !unsigned_allowed {
        return Err(if absent {
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
        version: signatures.iter().filter_map(|s| s.version).max(),
        signatures,
        unsigned_allowed,
        trust: trusted.basis,
        policy_digest: policy.map(|p| p.digest.clone()),
        platform_manifest,
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
    // The layer's title (TAG Runtime artifacts), else the manifest's, else the name in the
    // layer: a title that is not a plain file name is not taken.
    let file_name = [&layer.annotations, &verified.manifest.annotations]
        .into_iter()
        .filter_map(|a| a.get(artifact::TITLE))
        .find(|t| is_plain_file_name(t))
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

/// A file name with no directory parts and no control characters, safe to write under an output
/// directory and to print.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
        && name.len() <= 255
}
