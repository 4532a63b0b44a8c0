//! `generate-key-pair` and `public-key`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use anyhow::Context as _;
use bpfship_verifier::keys::PrivateKey;

use crate::exit::CmdResult;
use crate::output::{OutputFormat, print_json};

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Write PREFIX.key (encrypted, mode 0600) and PREFIX.pub.
    #[arg(long, default_value = "cosign", value_name = "PREFIX")]
    output_key_prefix: PathBuf,
}

#[derive(clap::Args)]
pub struct PublicKeyArgs {
    /// Private key: a file, or env://VAR.
    #[arg(long)]
    key: String,
    /// Write the public key here instead of standard output.
    #[arg(long)]
    outfile: Option<PathBuf>,
}

fn with_ext(prefix: &std::path::Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Creates `path` (which must not exist, not even as a dangling symlink) with `mode` and writes
/// `bytes` to it; a failed write removes it again.
fn create_new(path: &std::path::Path, mode: u32, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
}

pub fn generate(args: GenerateArgs, out: OutputFormat) -> CmdResult {
    let key_path = with_ext(&args.output_key_prefix, "key");
    let pub_path = with_ext(&args.output_key_prefix, "pub");
    for p in [&key_path, &pub_path] {
        // symlink_metadata: a dangling symlink counts as existing.
        if p.symlink_metadata().is_ok() {
            return Err(anyhow::anyhow!(
                "{} already exists; refusing to overwrite a key (choose another --output-key-prefix)",
                p.display()
            )
            .into());
        }
    }
    let password = crate::keys::password(true)?;
    let key = PrivateKey::generate();
    let pem = key.to_encrypted_pem(password.as_bytes())?;
    create_new(&key_path, 0o600, pem.as_bytes())?;
    // The public key is created exclusively too: an existing file or a (dangling) symlink
    // planted at PREFIX.pub is refused, never written through; the new private key goes with it.
    if let Err(e) = create_new(&pub_path, 0o644, key.public_key().to_pem().as_bytes()) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e.into());
    }
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "private_key": key_path,
            "public_key": pub_path,
            "key_hint": key.public_key().hint(),
        }))?,
        _ => eprintln!(
            "Private key written to {}\nPublic key written to {}",
            key_path.display(),
            pub_path.display()
        ),
    }
    Ok(())
}

pub fn public_key(args: PublicKeyArgs, out: OutputFormat) -> CmdResult {
    let key = crate::keys::private_key(&args.key)?;
    let pem = key.public_key().to_pem();
    if let Some(path) = &args.outfile {
        std::fs::write(path, &pem).with_context(|| format!("cannot write {}", path.display()))?;
    }
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "public_key": pem,
            "key_hint": key.public_key().hint(),
        }))?,
        _ if args.outfile.is_none() => out!("{pem}")?,
        _ => {}
    }
    Ok(())
}
