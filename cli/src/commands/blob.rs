//! `sign-blob` and `verify-blob`: cosign's blob formats (base64 signature; v0.3 bundle with
//! `messageSignature`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bpfship_verifier::bundle::{self, Bundle};

use crate::exit::{CmdResult, Failure};
use crate::output::{OutputFormat, print_json};

#[derive(clap::Args)]
pub struct SignArgs {
    /// Private key: a file, or env://VAR.
    #[arg(long)]
    key: String,
    /// Also write a sigstore bundle (v0.3) here.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Also write the base64 signature here.
    #[arg(long)]
    output_signature: Option<PathBuf>,
    /// The file to sign.
    file: PathBuf,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Public key: a file, or env://VAR. Without it, keyless: an identity and --trusted-root.
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    keyless: crate::keyless::KeylessArgs,
    /// A sigstore bundle: `sign-blob --bundle`'s, cosign's, or a keyless one (message signature
    /// or DSSE in-toto attestation, whose subject digests must include the file's).
    #[arg(
        long,
        conflicts_with = "signature",
        required_unless_present = "signature"
    )]
    bundle: Option<PathBuf>,
    /// The base64 signature: a file holding it, or the text itself.
    #[arg(long)]
    signature: Option<String>,
    /// The file whose signature to check, or (with --trusted-root) its `sha256:`/`sha512:` digest.
    file: PathBuf,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    crate::input_file::read_all(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn sign(args: SignArgs, out: OutputFormat) -> CmdResult {
    let blob = read(&args.file)?;
    if let Some(what) = bpfship_verifier::signature::image_signature_domain(&blob) {
        return Err(Failure::Rejected(anyhow::anyhow!(
            "{}: refusing to sign: it is {what}, and a blob signature over it would verify as an image signature; sign images with `bpfship sign`",
            args.file.display()
        )));
    }
    let key = crate::keys::private_key(&args.key)?;
    let b = bundle::sign_blob(&key, &blob);
    let signature = b
        .message_signature
        .as_ref()
        .map(|m| m.signature.clone())
        .unwrap_or_default();
    if let Some(path) = &args.bundle {
        std::fs::write(path, b.to_json())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.output_signature {
        std::fs::write(path, &signature)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "file": args.file,
            "signature": signature,
            "bundle": args.bundle,
            "key_hint": key.public_key().hint(),
        }))?,
        _ => outln!("{signature}")?,
    }
    Ok(())
}

pub fn verify(args: VerifyArgs, out: OutputFormat) -> CmdResult {
    let key = match args.key.as_deref() {
        Some(key) if !args.keyless.wants_identity() && args.keyless.trusted_root.is_none() => key,
        key => {
            let Some(bundle) = args.bundle.as_deref() else {
                return Err(anyhow::anyhow!(
                    "keyless verification and --trusted-root need --bundle"
                )
                .into());
            };
            return crate::keyless::verify_blob(bundle, key, &args.keyless, &args.file, out);
        }
    };
    let blob = read(&args.file)?;
    let key = crate::keys::public_key(key)?;
    let file = args.file.display().to_string();
    let (kind, digest) = if let Some(path) = &args.bundle {
        let b =
            Bundle::parse(&read(path)?).with_context(|| format!("bundle {}", path.display()))?;
        let v = b.verify_blob(&key, &blob).map_err(|e| {
            Failure::Rejected(anyhow::anyhow!("{file}: bundle {}: {e}", path.display()))
        })?;
        ("bundle", v.digest)
    } else {
        let arg = args.signature.as_deref().unwrap_or_default();
        let text = match crate::input_file::read_all(Path::new(arg)) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(_) if B64.decode(arg.trim()).is_ok() => arg.to_owned(),
            Err(e) => return Err(anyhow::anyhow!("cannot read signature {arg}: {e}").into()),
        };
        key.verify_base64(&blob, &text)
            .map_err(|e| Failure::Rejected(anyhow::anyhow!("{file}: {e}")))?;
        ("signature", bpfship_verifier::digest::sha256_digest(&blob))
    };
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "file": args.file, "verified": true, "digest": digest, "with": kind, "key_hint": key.hint(),
        }))?,
        _ => outln!("Verified OK: {file} ({digest}, {kind}, key {})", key.hint())?,
    }
    Ok(())
}
