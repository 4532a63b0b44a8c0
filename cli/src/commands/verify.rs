//! `verify REF`: signatures in both layouts, by digest, against `--key` or the policy's trust
//! rules; with `--policy`, the content's eBPF/WASM rules too.

use std::path::PathBuf;

use anyhow::Context as _;
use bpfship_trust::verify::{
    KeyRule, KeylessTrust, TrustBasis, TrustSource, Verified, VerifyError, fetch_content, verify,
};
use bpfship_verifier::policy::{Policy, SignedIdentity};

use crate::exit::{CmdResult, Failure};
use crate::output::{OutputFormat, print_json};
use crate::registry_args::{RegistryArgs, reference};

/// Whose signatures count, when given on the command line (`verify`, `pull`).
#[derive(clap::Args)]
pub struct KeyArgs {
    /// Public key(s) whose signatures count: a file, or env://VAR. They replace the policy's
    /// [[trust]] rules for this reference (its content rules still apply); a signature must still
    /// name this repository. Without --key, the policy's [[trust]] rule for the repository.
    #[arg(long)]
    key: Vec<String>,
    /// With --key or an identity, for a mirror: a repository under PREFIX counts as signed when its signature
    /// names the same path under SIGNED_PREFIX (containers/image remapIdentity).
    #[arg(long, value_name = "PREFIX=SIGNED_PREFIX")]
    remap_identity: Option<String>,
    /// With --key or an identity: also accept sigstore bundles naming only the digest (cosign 3 writes them so);
    /// such a bundle vouches for the content in any repository it is copied to.
    #[arg(long)]
    accept_digest_only_bundles: bool,
    /// Keyless signers (cosign's flags): the certificate identity and issuer required, verified
    /// offline against --trusted-root. They replace the policy's [[trust]] rules, as --key does.
    #[command(flatten)]
    keyless: crate::keyless::KeylessArgs,
}

impl KeyArgs {
    /// The keyless signers the identity flags name, with `--trusted-root`; `None` without them.
    fn keyless(&self) -> anyhow::Result<Option<KeylessTrust>> {
        if !self.keyless.wants_identity() {
            return Ok(None);
        }
        let identity = self.keyless.identity()?;
        let root = self
            .keyless
            .trust_root()?
            .context("keyless verification needs --trusted-root FILE")?;
        Ok(Some(KeylessTrust {
            root: std::sync::Arc::new(root),
            identities: vec![identity],
        }))
    }

    /// The identity rule for --key signatures.
    fn rule(&self) -> anyhow::Result<KeyRule> {
        let signed_identity = match &self.remap_identity {
            None => SignedIdentity::MatchRepository,
            Some(arg) => {
                let (prefix, signed_prefix) = arg
                    .split_once('=')
                    .filter(|(p, s)| {
                        bpfship_verifier::identity::is_valid_prefix(p)
                            && bpfship_verifier::identity::is_valid_prefix(s)
                    })
                    .with_context(|| {
                        format!("--remap-identity {arg:?}: expected PREFIX=SIGNED_PREFIX, each host[:port][/path]")
                    })?;
                SignedIdentity::Remap {
                    prefix: prefix.to_owned(),
                    signed_prefix: signed_prefix.to_owned(),
                }
            }
        };
        Ok(KeyRule {
            signed_identity,
            accept_digest_only_bundles: self.accept_digest_only_bundles,
        })
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    keys: KeyArgs,
    /// Policy: trusted keys per repository, and eBPF/WASM rules the content must pass.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The artifact: registry/repository:tag (resolved once) or @sha256:… .
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Maps verification failures to exit codes: registry/IO trouble is 2, a refusal is 1 — and so
/// is what the registry served when it fails its digest or size (integrity) or is refused.
pub fn failure(e: VerifyError) -> Failure {
    match e {
        VerifyError::Registry(r) => Failure::registry(r),
        VerifyError::NoKeys
        | VerifyError::PolicyKey(_)
        | VerifyError::PolicyTrustedRoot { .. }
        | VerifyError::PolicyIdentity { .. } => Failure::Error(e.into()),
        e => Failure::Rejected(e.into()),
    }
}

/// Loads `--key`s and `--policy` and verifies `reference` (shared with `pull`).
pub fn verify_reference(
    key_args: &KeyArgs,
    policy: Option<&Policy>,
    reference_arg: &str,
    registry: &RegistryArgs,
) -> Result<(bpfship_registry::Client, Verified), Failure> {
    let target = reference(reference_arg)?;
    let keys = key_args
        .key
        .iter()
        .map(|k| crate::keys::public_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key_rule = key_args.rule()?;
    let keyless = key_args.keyless()?;
    if keys.is_empty()
        && keyless.is_none()
        && (key_args.remap_identity.is_some() || key_args.accept_digest_only_bundles)
    {
        return Err(Failure::Error(anyhow::anyhow!(
            "--remap-identity and --accept-digest-only-bundles apply to --key or --certificate-identity signers"
        )));
    }
    let client = registry.client()?;
    let verified = verify(
        &client,
        &target,
        TrustSource {
            keys: &keys,
            keyless: keyless.as_ref(),
            key_rule: &key_rule,
            policy,
        },
    )
    .map_err(failure)?;
    Ok((client, verified))
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    let policy = args.policy.as_deref().map(Policy::load).transpose()?;
    let (client, verified) =
        verify_reference(&args.keys, policy.as_ref(), &args.reference, &args.registry)?;
    let content = match &policy {
        Some(p) => Some(fetch_content(&client, &verified, Some(p)).map_err(failure)?),
        None => None,
    };
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "verified": verified,
            "content": content,
        }))?,
        _ => {
            outln!("Verified {}", verified.reference)?;
            match verified.trust {
                TrustBasis::ExplicitKeys => outln!(
                    "  trusted signers: command line (the policy's [[trust]] rules not consulted)"
                )?,
                TrustBasis::PolicyRule(i) => {
                    outln!("  trusted signers: policy [[trust]] entry {i}")?
                }
            }
            for s in &verified.signatures {
                outln!(
                    "  {} signature, {}{}{}",
                    s.layout,
                    if s.identity.is_some() {
                        s.key_hint.clone()
                    } else {
                        format!("key {}", s.key_hint)
                    },
                    s.docker_reference.as_deref().map_or_else(
                        || ", digest only (accept_digest_only_bundles)".to_owned(),
                        |r| format!(", for {r}")
                    ),
                    s.version
                        .map_or(String::new(), |v| format!(", version {v}"))
                )?;
            }
            if verified.unsigned_allowed {
                outln!("  unsigned, allowed by the policy's allow_unsigned")?;
            }
            if let (Some(c), Some(p)) = (&content, &policy) {
                outln!(
                    "  content {} ({:?}) passes policy {}",
                    c.file_name,
                    c.kind,
                    p.digest
                )?;
            }
        }
    }
    Ok(())
}
