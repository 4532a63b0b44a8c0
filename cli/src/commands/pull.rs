//! `pull REF -o DIR`: verify first, then fetch by digest, check, and write the ELF/WASM. Nothing is
//! written when anything fails (the temporary file is removed on every path), and an existing file
//! is only replaced with `--force`: the file name comes from the signer's manifest annotations.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bpfship_trust::verify::fetch_content;
use bpfship_verifier::policy::Policy;

use crate::exit::{CmdResult, Failure};
use crate::output::{OutputFormat, print_json};
use crate::registry_args::RegistryArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The artifact: registry/repository:tag (resolved once) or @sha256:… .
    reference: String,
    /// Directory to write the artifact's file into.
    #[arg(long, short = 'o')]
    output_dir: PathBuf,
    #[command(flatten)]
    keys: crate::commands::verify::KeyArgs,
    /// Policy: trusted keys per repository and the content rules.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Replace a file of the same name in the output directory.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    let policy = args.policy.as_deref().map(Policy::load).transpose()?;
    let (client, verified) = crate::commands::verify::verify_reference(
        &args.keys,
        policy.as_ref(),
        &args.reference,
        &args.registry,
    )?;
    let content = fetch_content(&client, &verified, policy.as_ref())
        .map_err(crate::commands::verify::failure)?;
    if !bpfship_trust::verify::is_plain_file_name(&content.file_name) {
        return Err(crate::rejected(anyhow::anyhow!(
            "{}: the artifact's file name {:?} is not a plain file name; nothing written",
            verified.reference,
            content.file_name
        )));
    }
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let path = args.output_dir.join(&content.file_name);
    let mut tmp = TempFile::new_in(&args.output_dir)?;
    tmp.file
        .write_all(&content.bytes)
        .and_then(|()| tmp.file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.path.display()))?;
    tmp.persist(&path, args.force)?;
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "verified": verified, "file": path, "kind": content.kind, "size": content.bytes.len(),
        }))?,
        _ => outln!("{} ← {}", path.display(), verified.reference)?,
    }
    Ok(())
}

/// A new hidden file in an output directory, removed when dropped unless persisted.
struct TempFile {
    path: PathBuf,
    file: std::fs::File,
    persisted: bool,
}

impl TempFile {
    fn new_in(dir: &Path) -> anyhow::Result<Self> {
        for n in 0..100u32 {
            let path = dir.join(format!(".bpfship-pull-{}-{n}", std::process::id()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        file,
                        persisted: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot write in {}", dir.display()));
                }
            }
        }
        anyhow::bail!("cannot create a temporary file in {}", dir.display())
    }

    /// Moves the file to `dest`: atomically replacing it with `force`, else only when nothing is
    /// there (a hard link cannot replace an existing name, so there is no check-then-write race).
    fn persist(mut self, dest: &Path, force: bool) -> Result<(), Failure> {
        let moved = if force {
            std::fs::rename(&self.path, dest)
        } else {
            std::fs::hard_link(&self.path, dest)
        };
        match moved {
            Ok(()) => {
                self.persisted = force;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Failure::Error(anyhow::anyhow!(
                    "{} already exists; pass --force to replace it (nothing written)",
                    dest.display()
                )))
            }
            Err(e) => Err(Failure::Error(
                anyhow::Error::new(e).context(format!("cannot write {}", dest.display())),
            )),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
