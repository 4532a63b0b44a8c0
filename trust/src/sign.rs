//! Signing what a registry holds, by digest: cosign's legacy simple-signing signature and a
//! sigstore v0.3 bundle referrer, as `cosign sign --key` writes them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bpfship_registry::signatures::{push_bundle, push_legacy};
use bpfship_registry::{Client, Descriptor, Reference, RegistryError};
use bpfship_verifier::bundle::{self, BundleError};
use bpfship_verifier::keys::PrivateKey;
use bpfship_verifier::signature::simple_signing_payload;
use serde::Serialize;

/// Which signature layouts to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureFormat {
    /// The `sha256-<hex>.sig` tag (cosign ≤ 2; read by policy-controller, Kyverno and containers/image
    /// built with sigstore support).
    Legacy,
    /// A sigstore bundle v0.3 referrer (cosign 3).
    Bundle,
    /// Both (the default).
    Both,
}

/// How to sign: the layouts, and the monotonic version to sign into them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignOptions {
    pub format: SignatureFormat,
    /// A release version signed into both layouts (`dev.bpfship.version`): the agent refuses to go
    /// back to a lower one.
    pub version: Option<u64>,
}

impl From<SignatureFormat> for SignOptions {
    fn from(format: SignatureFormat) -> Self {
        Self {
            format,
            version: None,
        }
    }
}

/// What signing wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Signed {
    /// `repo@sha256:…`: what was signed.
    pub reference: String,
    pub digest: String,
    pub key_hint: String,
    /// The `.sig` manifest written, if any.
    pub legacy: Option<String>,
    /// The bundle referrer manifest written, if any.
    pub bundle: Option<String>,
    /// The signed version, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Signs the manifest `subject` (already resolved: never a tag) in `repo`, for `repo`: both
/// layouts name the repository, so a copy elsewhere does not verify there.
pub fn sign_descriptor(
    client: &Client,
    repo: &Reference,
    subject: &Descriptor,
    key: &PrivateKey,
    options: impl Into<SignOptions>,
) -> Result<Signed, SignError> {
    let SignOptions { format, version } = options.into();
    let repository = repo.repository_path();
    let mut out = Signed {
        reference: format!("{}@{}", repo.repository_path(), subject.digest),
        digest: subject.digest.clone(),
        key_hint: key.public_key().hint(),
        legacy: None,
        bundle: None,
        version,
    };
    let legacy = || -> Result<Option<String>, SignError> {
        if !matches!(format, SignatureFormat::Legacy | SignatureFormat::Both) {
            return Ok(None);
        }
        let payload = simple_signing_payload(&repository, &subject.digest, version);
        let signature = B64.encode(key.sign(&payload));
        Ok(Some(
            push_legacy(client, repo, &subject.digest, &payload, &signature)?.digest,
        ))
    };
    let bundle = || -> Result<Option<String>, SignError> {
        if !matches!(format, SignatureFormat::Bundle | SignatureFormat::Both) {
            return Ok(None);
        }
        let b = bundle::sign_image(key, &subject.digest, &repository, version)?;
        Ok(Some(
            push_bundle(
                client,
                repo,
                subject,
                &b.to_json(),
                Some(bundle::COSIGN_SIGN_PREDICATE),
            )?
            .digest,
        ))
    };
    // The two layouts share no blob or tag: written at once, each on its own connection.
    let (legacy, bundle) = std::thread::scope(|s| {
        let legacy = s.spawn(legacy);
        let bundle = bundle();
        let legacy = legacy
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (legacy, bundle)
    });
    out.legacy = legacy?;
    out.bundle = bundle?;
    tracing::info!(reference = %out.reference, "signed");
    Ok(out)
}

/// Resolves `reference` once and signs the digest it names.
pub fn sign(
    client: &Client,
    reference: &Reference,
    key: &PrivateKey,
    options: impl Into<SignOptions>,
) -> Result<Signed, SignError> {
    let subject = client.resolve(reference)?;
    sign_descriptor(client, reference, &subject, key, options)
}
