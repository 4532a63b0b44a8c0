//! bpfship-keyless: offline verification of sigstore bundles against a `trusted_root.json`.
//!
//! A keyless bundle carries a short-lived Fulcio certificate, a Rekor transparency-log entry
//! (inclusion proof + checkpoint, or a signed entry timestamp) and optionally RFC 3161
//! timestamps. [`verify_keyless`] checks all of them with the sigstore project's
//! `sigstore-verify` crate (certificate chain to the root's Fulcio CA at a verified time, SCT,
//! log inclusion and checkpoint signatures, SET, TSA, signature, and that the log entry and a
//! DSSE statement's subjects describe the artifact), then requires the certificate's claims to
//! satisfy an [`IdentityPolicy`] — which cannot be built without an issuer and a subject.
//! [`verify_with_key`] checks a key-signed bundle's log entry and timestamps the same way.
//!
//! No network: the trusted root is a file the caller names, never fetched (no TUF).

use std::path::Path;

use bpfship_verifier::certificate_identity::{
    Claims, GithubWorkflow, IdentityMismatch, IdentityPolicy,
};
use serde::Serialize;
use sigstore_types::{
    ArtifactDigest, DerPublicKey, DigestBytes, HashAlgorithm, SignatureContent, Statement,
};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy, Verifier};

pub use sigstore_verify::Error as SigstoreError;

/// Why a bundle was not verified, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeylessError {
    /// The trusted root cannot be read, parsed, or used.
    #[error("trusted root {path}: {message}")]
    TrustedRoot { path: String, message: String },
    /// The bundle is not a sigstore bundle this verifier reads.
    #[error("not a sigstore bundle: {0}")]
    Bundle(String),
    /// A `sha256:`/`sha512:` digest argument is malformed.
    #[error("digest {0:?}: expected sha256:<64 hex> or sha512:<128 hex>")]
    Digest(String),
    /// The certificate, log entry, timestamps or signature did not verify.
    #[error(transparent)]
    Rejected(#[from] sigstore_verify::Error),
    /// The verified certificate names no subject or no OIDC issuer.
    #[error("certificate carries no {0}: no identity to check")]
    NoIdentity(&'static str),
    /// The verified certificate belongs to someone the policy does not accept.
    #[error(transparent)]
    Identity(#[from] IdentityMismatch),
    /// The verified certificate's identity is none of those a trust rule accepts.
    #[error("certificate identity {claims} matches none of the {count} identities trusted")]
    NoIdentityMatches { claims: String, count: usize },
    /// The key given is not a public key sigstore-verify reads.
    #[error("public key: {0}")]
    Key(String),
}

/// A `trusted_root.json` (sigstore's `TrustedRoot`: Fulcio CAs, Rekor and CT log keys, TSAs),
/// prepared for verification: its keys and certificates are parsed and checked once.
pub struct TrustRoot {
    verifier: Verifier,
}

impl TrustRoot {
    /// Reads and prepares a trusted root file.
    pub fn from_file(path: &Path) -> Result<Self, KeylessError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeylessError::TrustedRoot {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Prepares a trusted root from its JSON; `name` labels errors.
    pub fn from_json(json: &str, name: &str) -> Result<Self, KeylessError> {
        let err = |message: String| KeylessError::TrustedRoot {
            path: name.to_owned(),
            message,
        };
        let root =
            sigstore_trust_root::TrustedRoot::from_json(json).map_err(|e| err(e.to_string()))?;
        // Any JSON object with a mediaType parses (every list defaults to empty): a bundle
        // given by mistake would be an empty root that verifies nothing, with no hint why.
        if !root
            .media_type
            .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            return Err(err(format!(
                "mediaType {:?} is not a sigstore trusted root",
                root.media_type
            )));
        }
        let verifier = Verifier::new(&root).map_err(|e| err(e.to_string()))?;
        Ok(Self { verifier })
    }
}

/// A parsed sigstore bundle (v0.1–v0.3, message signature or DSSE envelope).
pub struct SigstoreBundle(sigstore_types::Bundle);

impl SigstoreBundle {
    /// Parses a bundle's JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeylessError> {
        let text = std::str::from_utf8(bytes).map_err(|e| KeylessError::Bundle(e.to_string()))?;
        sigstore_types::Bundle::from_json(text)
            .map(Self)
            .map_err(|e| KeylessError::Bundle(e.to_string()))
    }

    /// The sigstore bundle (v0.1) equivalent to a keyless legacy image signature as cosign 2
    /// writes it: the base64 `signature` over `payload` (the simple-signing layer), the Fulcio
    /// certificate PEM (`dev.sigstore.cosign/certificate`) and the Rekor bundle
    /// (`dev.sigstore.cosign/bundle`: the entry body, integrated time, log index and ID, and the
    /// signed entry timestamp). Verified like any bundle; the chain annotation is not needed (the
    /// trusted root holds the CAs).
    pub fn from_cosign_legacy(
        payload: &[u8],
        signature_b64: &str,
        certificate_pem: &str,
        rekor_bundle: &str,
    ) -> Result<Self, KeylessError> {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD as B64;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct RekorBundle {
            signed_entry_timestamp: String,
            payload: RekorPayload,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RekorPayload {
            body: String,
            integrated_time: i64,
            log_index: u64,
            #[serde(rename = "logID")]
            log_id: String,
        }
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            KeylessError::Bundle(format!("legacy signature {what}: {e}"))
        };
        let cert = sigstore_types::DerCertificate::from_pem(certificate_pem)
            .map_err(|e| bad("certificate", &e))?;
        let rekor: RekorBundle =
            serde_json::from_str(rekor_bundle).map_err(|e| bad("Rekor bundle", &e))?;
        let log_id = hex::decode(&rekor.payload.log_id).map_err(|e| bad("Rekor log ID", &e))?;
        let payload_digest = bpfship_verifier::digest::sha256_digest(payload);
        let payload_digest = hex::decode(&payload_digest["sha256:".len()..])
            .map_err(|e| bad("payload digest", &e))?;
        let bundle = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
            "verificationMaterial": {
                "x509CertificateChain": {"certificates": [{"rawBytes": B64.encode(cert.as_bytes())}]},
                "tlogEntries": [{
                    "logIndex": rekor.payload.log_index.to_string(),
                    "logId": {"keyId": B64.encode(log_id)},
                    "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                    "integratedTime": rekor.payload.integrated_time.to_string(),
                    "inclusionPromise": {"signedEntryTimestamp": rekor.signed_entry_timestamp},
                    "canonicalizedBody": rekor.payload.body,
                }],
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(payload_digest)},
                "signature": signature_b64,
            },
        });
        Self::parse(bundle.to_string().as_bytes())
    }

    /// Whether the bundle is signed with a certificate (keyless) rather than a key.
    pub fn has_certificate(&self) -> bool {
        self.0.signing_certificate().is_some()
    }
}

/// A pre-computed artifact digest: `sha256:<hex>` or `sha512:<hex>` (npm provenance names its
/// packages by SHA-512).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest(ArtifactDigest);

impl Digest {
    /// Parses `sha256:<64 hex>` or `sha512:<128 hex>`; `None` when `text` has neither prefix.
    pub fn parse(text: &str) -> Option<Result<Self, KeylessError>> {
        let (algorithm, hex_part) = if let Some(h) = text.strip_prefix("sha256:") {
            (HashAlgorithm::Sha2256, h)
        } else if let Some(h) = text.strip_prefix("sha512:") {
            (HashAlgorithm::Sha2512, h)
        } else {
            return None;
        };
        let bad = || KeylessError::Digest(text.to_owned());
        let lower = hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        Some(
            hex::decode(hex_part)
                .ok()
                .filter(|_| lower)
                .and_then(|bytes| ArtifactDigest::new(algorithm, DigestBytes::from(bytes)).ok())
                .map(Self)
                .ok_or_else(bad),
        )
    }
}

/// What the caller verifies the bundle against: the artifact's bytes or its digest.
pub enum Artifact<'a> {
    Bytes(&'a [u8]),
    Digest(&'a Digest),
}

impl<'a> From<&Artifact<'a>> for sigstore_types::Artifact<'a> {
    fn from(a: &Artifact<'a>) -> Self {
        match a {
            Artifact::Bytes(b) => sigstore_types::Artifact::from_blob(b),
            Artifact::Digest(d) => sigstore_types::Artifact::from_digest(d.0.clone()),
        }
    }
}

/// What the bundle signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// A signature over the artifact (`messageSignature`, what `sign-blob` makes).
    MessageSignature,
    /// A DSSE envelope around an in-toto statement whose subjects include the artifact.
    Attestation {
        predicate_type: String,
        /// The statement's subjects, `name` (possibly empty) and `algorithm:hex` digests.
        subjects: Vec<AttestedSubject>,
    },
}

/// One subject of an in-toto statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestedSubject {
    pub name: String,
    pub digests: Vec<String>,
}

/// Who signed a verified bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signer {
    /// A Fulcio certificate whose claims satisfied the identity policy.
    Identity(Claims),
    /// The public key the caller gave.
    Key,
}

/// A bundle that verified: only [`verify_keyless`] and [`verify_with_key`] build one.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    signer: Signer,
    content: Content,
    /// The authenticated Rekor v1 integrated time, RFC 3339, when the bundle has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    integrated_time: Option<String>,
}

impl Verified {
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
    /// The certificate's claims, when a certificate (not a key) signed.
    pub fn identity(&self) -> Option<&Claims> {
        match &self.signer {
            Signer::Identity(claims) => Some(claims),
            Signer::Key => None,
        }
    }
    pub fn content(&self) -> &Content {
        &self.content
    }
    pub fn integrated_time(&self) -> Option<&str> {
        self.integrated_time.as_deref()
    }
}

/// Verifies a keyless bundle over `artifact` against `root`, then requires its certificate's
/// claims to satisfy `identity`. Every check of sigstore's bundle verification runs; none is
/// relaxed.
pub fn verify_keyless(
    root: &TrustRoot,
    bundle: &SigstoreBundle,
    artifact: &Artifact<'_>,
    identity: &IdentityPolicy,
) -> Result<Verified, KeylessError> {
    verify_keyless_one_of(root, bundle, artifact, std::slice::from_ref(identity))
}

/// [`verify_keyless`] where any one of `identities` is accepted (a policy rule's list): the
/// bundle is verified once, then its claims are compared with each identity in turn.
pub fn verify_keyless_one_of(
    root: &TrustRoot,
    bundle: &SigstoreBundle,
    artifact: &Artifact<'_>,
    identities: &[IdentityPolicy],
) -> Result<Verified, KeylessError> {
    // The identity is checked below, with regexps and workflow claims, on the claims of the
    // certificate the crate verified; the crate itself checks everything else.
    let policy = VerificationPolicy::any_identity();
    let result = root.verifier.verify(artifact, &bundle.0, &policy)?;
    let cert = result
        .certificate()
        .filter(|_| result.certificate_verified() && result.tlog_verified())
        .ok_or(KeylessError::NoIdentity("verified certificate"))?;
    let subject = cert
        .identity
        .as_ref()
        .ok_or(KeylessError::NoIdentity("subject alternative name"))?;
    let issuer = cert
        .issuer
        .as_ref()
        .ok_or(KeylessError::NoIdentity("OIDC issuer"))?;
    let ci = &cert.ci_claims;
    let gh = &ci.deprecated_github;
    // cosign's --certificate-github-workflow-* read the GitHub extensions (.1.2–.1.6); Fulcio
    // documents trigger, sha and ref as carried over unchanged into the provider-neutral ones.
    let claims = Claims {
        subject: subject.as_str().to_owned(),
        issuer: issuer.clone(),
        github_workflow: GithubWorkflow {
            repository: gh.workflow_repository.clone(),
            git_ref: gh
                .workflow_ref
                .clone()
                .or_else(|| ci.source_repository_ref.clone()),
            trigger: gh
                .workflow_trigger
                .clone()
                .or_else(|| ci.build_trigger.clone()),
            sha: gh
                .workflow_sha
                .clone()
                .or_else(|| ci.source_repository_digest.clone()),
            name: gh.workflow_name.clone(),
        },
    };
    let mut first_mismatch = None;
    for identity in identities {
        match identity.check(&claims) {
            Ok(()) => {
                return Ok(Verified {
                    signer: Signer::Identity(claims),
                    content: content(&bundle.0)?,
                    integrated_time: result.integrated_time().map(|t| t.to_string()),
                });
            }
            Err(e) => {
                first_mismatch.get_or_insert(e);
            }
        }
    }
    Err(match (first_mismatch, identities.len()) {
        (Some(e), 1) => KeylessError::Identity(e),
        _ => KeylessError::NoIdentityMatches {
            claims: claims.to_string(),
            count: identities.len(),
        },
    })
}

/// Verifies a key-signed bundle over `artifact` with the key `spki_der` (DER
/// SubjectPublicKeyInfo), including its transparency-log entry and timestamps against `root`.
pub fn verify_with_key(
    root: &TrustRoot,
    bundle: &SigstoreBundle,
    artifact: &Artifact<'_>,
    spki_der: &[u8],
) -> Result<Verified, KeylessError> {
    let policy = PublicKeyVerificationPolicy::new(DerPublicKey::new(spki_der.to_vec()));
    let result = root.verifier.verify(artifact, &bundle.0, &policy)?;
    if !result.tlog_verified() {
        return Err(KeylessError::Key("transparency log not verified".into()));
    }
    Ok(Verified {
        signer: Signer::Key,
        content: content(&bundle.0)?,
        integrated_time: result.integrated_time().map(|t| t.to_string()),
    })
}

/// What a verified bundle's content is. Verification already required a DSSE payload to be an
/// in-toto statement with subjects; this reads it again for the report.
fn content(bundle: &sigstore_types::Bundle) -> Result<Content, KeylessError> {
    let SignatureContent::DsseEnvelope(env) = &bundle.content else {
        return Ok(Content::MessageSignature);
    };
    let statement: Statement = serde_json::from_slice(env.payload.as_bytes())
        .map_err(|e| KeylessError::Bundle(format!("in-toto statement: {e}")))?;
    let subjects = statement
        .subject
        .iter()
        .map(|s| AttestedSubject {
            name: s.name.clone(),
            digests: [
                s.digest.sha256.map(|d| format!("sha256:{}", d.to_hex())),
                s.digest.sha512.map(|d| format!("sha512:{}", d.to_hex())),
            ]
            .into_iter()
            .flatten()
            .collect(),
        })
        .collect();
    Ok(Content::Attestation {
        predicate_type: statement.predicate_type,
        subjects,
    })
}
