//! cosign's keyless verification flags (`--certificate-identity[-regexp]`,
//! `--certificate-oidc-issuer[-regexp]`, `--certificate-github-workflow-*`, `--trusted-root`)
//! and the identity policy they build. Shared by the commands that verify keyless signatures.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use bpfship_keyless::{
    Artifact, Content, Digest, KeylessError, SigstoreBundle, TrustRoot, verify_keyless,
    verify_with_key,
};
use bpfship_verifier::certificate_identity::{GithubWorkflow, IdentityPolicy, Matcher};

use crate::exit::CmdResult;
use crate::output::{OutputFormat, print_json};

#[derive(clap::Args, Debug, Default)]
pub struct KeylessArgs {
    /// Keyless: the signer identity required (the certificate's email or URI SAN), exactly.
    #[arg(long, value_name = "IDENTITY", conflicts_with_all = ["key", "certificate_identity_regexp"])]
    certificate_identity: Option<String>,
    /// Keyless: a regular expression the signer identity must match (unanchored, as cosign's).
    #[arg(long, value_name = "REGEXP", conflicts_with = "key")]
    certificate_identity_regexp: Option<String>,
    /// Keyless: the OIDC issuer required, exactly (GitHub Actions:
    /// https://token.actions.githubusercontent.com).
    #[arg(long, value_name = "URL", conflicts_with_all = ["key", "certificate_oidc_issuer_regexp"])]
    certificate_oidc_issuer: Option<String>,
    /// Keyless: a regular expression the OIDC issuer must match.
    #[arg(long, value_name = "REGEXP", conflicts_with = "key")]
    certificate_oidc_issuer_regexp: Option<String>,
    /// Keyless: the GitHub repository (owner/name) the workflow ran in.
    #[arg(long, value_name = "OWNER/REPO", conflicts_with = "key")]
    certificate_github_workflow_repository: Option<String>,
    /// Keyless: the git ref the workflow ran on (e.g. refs/tags/v1).
    #[arg(long, value_name = "REF", conflicts_with = "key")]
    certificate_github_workflow_ref: Option<String>,
    /// Keyless: the event that triggered the workflow (e.g. push).
    #[arg(long, value_name = "EVENT", conflicts_with = "key")]
    certificate_github_workflow_trigger: Option<String>,
    /// Keyless: the commit the workflow ran on.
    #[arg(long, value_name = "SHA", conflicts_with = "key")]
    certificate_github_workflow_sha: Option<String>,
    /// Keyless: the workflow's name.
    #[arg(long, value_name = "NAME", conflicts_with = "key")]
    certificate_github_workflow_name: Option<String>,
    /// A sigstore trusted_root.json (Fulcio CAs, Rekor/CT keys, TSAs). Required for keyless;
    /// with --key, the bundle's transparency-log entry is verified against it too.
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
}

impl KeylessArgs {
    /// Whether any identity flag was given (the caller then verifies keyless).
    pub fn wants_identity(&self) -> bool {
        [
            &self.certificate_identity,
            &self.certificate_identity_regexp,
            &self.certificate_oidc_issuer,
            &self.certificate_oidc_issuer_regexp,
            &self.certificate_github_workflow_repository,
            &self.certificate_github_workflow_ref,
            &self.certificate_github_workflow_trigger,
            &self.certificate_github_workflow_sha,
            &self.certificate_github_workflow_name,
        ]
        .iter()
        .any(|f| f.is_some())
    }

    /// The identity policy the flags describe: a subject and an issuer are both required.
    pub fn identity(&self) -> anyhow::Result<IdentityPolicy> {
        let subject = match (
            &self.certificate_identity,
            &self.certificate_identity_regexp,
        ) {
            (Some(v), _) => Matcher::exact("--certificate-identity", v)?,
            (None, Some(re)) => Matcher::regex("--certificate-identity-regexp", re)?,
            (None, None) => bail!(
                "keyless verification needs --certificate-identity or --certificate-identity-regexp"
            ),
        };
        let issuer = match (
            &self.certificate_oidc_issuer,
            &self.certificate_oidc_issuer_regexp,
        ) {
            (Some(v), _) => Matcher::exact("--certificate-oidc-issuer", v)?,
            (None, Some(re)) => Matcher::regex("--certificate-oidc-issuer-regexp", re)?,
            (None, None) => bail!(
                "keyless verification needs --certificate-oidc-issuer or --certificate-oidc-issuer-regexp"
            ),
        };
        Ok(
            IdentityPolicy::new(subject, issuer).with_github_workflow(GithubWorkflow {
                repository: self.certificate_github_workflow_repository.clone(),
                git_ref: self.certificate_github_workflow_ref.clone(),
                trigger: self.certificate_github_workflow_trigger.clone(),
                sha: self.certificate_github_workflow_sha.clone(),
                name: self.certificate_github_workflow_name.clone(),
            }),
        )
    }

    /// The trusted root named by `--trusted-root`, if any.
    pub fn trust_root(&self) -> anyhow::Result<Option<TrustRoot>> {
        self.trusted_root
            .as_deref()
            .map(|p| TrustRoot::from_file(p).context("--trusted-root"))
            .transpose()
    }
}

/// What `verify-blob` checks a bundle against: the file's bytes, or a digest given instead of a
/// file (the sigstore conformance protocol's `FILE_OR_DIGEST`: `sha256:`/`sha512:` and not a
/// path on disk).
pub enum BlobInput {
    File(Vec<u8>),
    Digest(Digest),
}

impl BlobInput {
    pub fn read(arg: &Path) -> anyhow::Result<Self> {
        if !arg.exists()
            && let Some(digest) = arg.to_str().and_then(Digest::parse)
        {
            return Ok(Self::Digest(digest.with_context(|| {
                format!("{} is not a file, nor a well-formed digest", arg.display())
            })?));
        }
        crate::input_file::read_all(arg)
            .map(Self::File)
            .with_context(|| format!("cannot read {}", arg.display()))
    }

    fn artifact(&self) -> Artifact<'_> {
        match self {
            Self::File(bytes) => Artifact::Bytes(bytes),
            Self::Digest(d) => Artifact::Digest(d),
        }
    }
}

/// `verify-blob --bundle` with `--trusted-root`: keyless with an identity, or `--key` with the
/// transparency log checked too. Prints the verified identity.
pub fn verify_blob(
    bundle_path: &Path,
    key: Option<&str>,
    keyless: &KeylessArgs,
    input: &Path,
    out: OutputFormat,
) -> CmdResult {
    enum Signer {
        Identity(IdentityPolicy),
        Key(bpfship_verifier::keys::PublicKey),
    }
    let signer = match key {
        None => Signer::Identity(keyless.identity()?),
        Some(key) => Signer::Key(crate::keys::public_key(key)?),
    };
    let root = keyless
        .trust_root()?
        .context("verifying with a certificate or a transparency log needs --trusted-root FILE")?;
    let bytes = crate::input_file::read_all(bundle_path)
        .with_context(|| format!("cannot read bundle {}", bundle_path.display()))?;
    let name = input.display().to_string();
    let bad_bundle = |e: KeylessError| {
        crate::rejected(anyhow::anyhow!(
            "{name}: bundle {}: {e}",
            bundle_path.display()
        ))
    };
    let bundle = SigstoreBundle::parse(&bytes).map_err(bad_bundle)?;
    let blob = BlobInput::read(input)?;
    let verified = match signer {
        Signer::Identity(identity) => verify_keyless(&root, &bundle, &blob.artifact(), &identity),
        Signer::Key(key) => verify_with_key(&root, &bundle, &blob.artifact(), &key.spki_der()),
    }
    .map_err(bad_bundle)?;
    let digest = match &blob {
        BlobInput::File(bytes) => bpfship_verifier::digest::sha256_digest(bytes),
        BlobInput::Digest(_) => name.clone(),
    };
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "file": name, "verified": true, "digest": digest, "with": "bundle",
            "signer": verified.signer(), "content": verified.content(),
            "integrated_time": verified.integrated_time(),
        }))?,
        _ => {
            let signer = match verified.signer() {
                bpfship_keyless::Signer::Identity(claims) => format!("identity {claims}"),
                bpfship_keyless::Signer::Key => "key, transparency log verified".to_owned(),
            };
            let what = match verified.content() {
                Content::MessageSignature => "bundle".to_owned(),
                Content::Attestation { predicate_type, .. } => {
                    format!("attestation {predicate_type}")
                }
            };
            println!("Verified OK: {name} ({digest}, {what}, {signer})");
        }
    }
    Ok(())
}
