//! `pull REF -o DIR`: verify first, then fetch by digest, check, and write the ELF/WASM. Nothing is
//! written when anything fails.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use bpfship_trust::verify::fetch_content;
use bpfship_verifier::policy::Policy;

use crate::exit::CmdResult;
use crate::output::{OutputFormat, print_json};
use crate::registry_args::RegistryArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The artifact: registry/repository:tag (resolved once) or @sha256:… .
    reference: String,
    /// Directory to write the artifact's file into.
    #[arg(long, short = 'o')]
    output_dir: PathBuf,
    /// Public key(s) whose signatures count (a file, or env://VAR).
    #[arg(long, required_unless_present = "policy")]
    key: Vec<String>,
    /// Policy: trusted keys per repository and the content rules.
    #[arg(long)]
    policy: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    let policy = args.policy.as_deref().map(Policy::load).transpose()?;
    let (client, verified) = crate::commands::verify::verify_reference(
        &args.key,
        policy.as_ref(),
        &args.reference,
        &args.registry,
    )?;
    let content = fetch_content(&client, &verified, policy.as_ref())
        .map_err(crate::commands::verify::failure)?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let path = args.output_dir.join(&content.file_name);
    let mut tmp = tempfile_in(&args.output_dir)?;
    tmp.1
        .write_all(&content.bytes)
        .and_then(|()| tmp.1.sync_all())?;
    std::fs::rename(&tmp.0, &path).with_context(|| format!("cannot write {}", path.display()))?;
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "verified": verified, "file": path, "kind": content.kind, "size": content.bytes.len(),
        }))?,
        _ => println!("{} ← {}", path.display(), verified.reference),
    }
    Ok(())
}

/// A new hidden file in `dir`, renamed into place once complete (so a failure leaves nothing).
fn tempfile_in(dir: &std::path::Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    for n in 0..100u32 {
        let p = dir.join(format!(".bpfship-pull-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot write in {}", dir.display())),
        }
    }
    anyhow::bail!("cannot create a temporary file in {}", dir.display())
}
