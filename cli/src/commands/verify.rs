//! `verify REF`: signatures in both layouts, by digest, against `--key` or the policy's trust
//! rules; with `--policy`, the content's eBPF/WASM rules too.

use std::path::PathBuf;

use bpfship_trust::verify::{TrustSource, Verified, VerifyError, fetch_content, verify};
use bpfship_verifier::policy::Policy;

use crate::exit::{CmdResult, Failure};
use crate::output::{OutputFormat, print_json};
use crate::registry_args::{RegistryArgs, reference};

#[derive(clap::Args)]
pub struct Args {
    /// Public key(s) whose signatures count: a file, or env://VAR. Without it, the policy's
    /// [[trust]] keys for the repository.
    #[arg(long)]
    key: Vec<String>,
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
    use bpfship_registry::ErrorClass;
    match e {
        VerifyError::Registry(ref r)
            if !matches!(r.class(), ErrorClass::Integrity | ErrorClass::Refused) =>
        {
            Failure::Error(e.into())
        }
        VerifyError::NoKeys | VerifyError::PolicyKey(_) => Failure::Error(e.into()),
        e => Failure::Rejected(e.into()),
    }
}

/// Loads `--key`s and `--policy` and verifies `reference` (shared with `pull`).
pub fn verify_reference(
    keys: &[String],
    policy: Option<&Policy>,
    reference_arg: &str,
    registry: &RegistryArgs,
) -> Result<(bpfship_registry::Client, Verified), Failure> {
    let target = reference(reference_arg)?;
    let keys = keys
        .iter()
        .map(|k| crate::keys::public_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = registry.client()?;
    let verified = verify(
        &client,
        &target,
        TrustSource {
            keys: &keys,
            policy,
        },
    )
    .map_err(failure)?;
    Ok((client, verified))
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    let policy = args.policy.as_deref().map(Policy::load).transpose()?;
    let (client, verified) =
        verify_reference(&args.key, policy.as_ref(), &args.reference, &args.registry)?;
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
            println!("Verified {}", verified.reference);
            for s in &verified.signatures {
                println!(
                    "  {} signature, key {}{}",
                    s.layout,
                    s.key_hint,
                    s.docker_reference
                        .as_deref()
                        .map_or(String::new(), |r| format!(", for {r}"))
                );
            }
            if verified.unsigned_allowed {
                println!("  unsigned, allowed by the policy's allow_unsigned");
            }
            if let (Some(c), Some(p)) = (&content, &policy) {
                println!(
                    "  content {} ({:?}) passes policy {}",
                    c.file_name, c.kind, p.digest
                );
            }
        }
    }
    Ok(())
}
