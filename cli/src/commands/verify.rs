//! `verify REF`: signatures in both layouts, by digest, against `--key` or the policy's trust
//! rules; with `--policy`, the content's eBPF/WASM rules too.

use std::path::PathBuf;

use anyhow::Context as _;
use bpfship_trust::verify::{
    KeyRule, TrustBasis, TrustSource, Verified, VerifyError, fetch_content, verify,
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
    /// With --key, for a mirror: a repository under PREFIX counts as signed when its signature
    /// names the same path under SIGNED_PREFIX (containers/image remapIdentity).
    #[arg(long, requires = "key", value_name = "PREFIX=SIGNED_PREFIX")]
    remap_identity: Option<String>,
    /// With --key: also accept sigstore bundles naming only the digest (cosign 3 writes them so);
    /// such a bundle vouches for the content in any repository it is copied to.
    #[arg(long, requires = "key")]
    accept_digest_only_bundles: bool,
}

impl KeyArgs {
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
        VerifyError::NoKeys | VerifyError::PolicyKey(_) => Failure::Error(e.into()),
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
    let client = registry.client()?;
    let verified = verify(
        &client,
        &target,
        TrustSource {
            keys: &keys,
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
                TrustBasis::ExplicitKeys => {
                    outln!("  trusted keys: --key (the policy's [[trust]] rules not consulted)")?
                }
                TrustBasis::PolicyRule(i) => outln!("  trusted keys: policy [[trust]] entry {i}")?,
            }
            for s in &verified.signatures {
                outln!(
                    "  {} signature, key {}{}{}",
                    s.layout,
                    s.key_hint,
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
