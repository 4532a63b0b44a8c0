//! `push FILE REF`: validate (refusing what fails), package, push, and sign with `--key`.
//! `push FILE… REF --platform P…`: one manifest per file for its platform, under one OCI image
//! index, signed by the index digest.

use std::path::PathBuf;

use anyhow::Context as _;
use bpfship_registry::Platform;
use bpfship_trust::content::inspect;
use bpfship_trust::publish::Part;
use bpfship_trust::sign::{SignOptions, SignatureFormat, sign_descriptor};
use bpfship_verifier::policy::Policy;

use crate::exit::{CmdResult, Failure};
use crate::output::{OutputFormat, print_json};
use crate::registry_args::{RegistryArgs, reference};

#[derive(clap::Args)]
pub struct Args {
    /// eBPF ELF object or WASM module; several with one `--platform` each (an image index).
    #[arg(required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Destination, registry/repository:tag.
    reference: String,
    /// The platform (os/architecture[/variant], e.g. linux/amd64, linux/s390x) of each file, in
    /// order: the files are pushed as one OCI image index, signed by its digest.
    #[arg(long = "platform", value_name = "PLATFORM")]
    platforms: Vec<String>,
    /// Sign the pushed artifact with this private key (a file, or env://VAR).
    #[arg(long)]
    key: Option<String>,
    /// Policy whose eBPF/WASM rules must pass before anything is pushed.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Signature layouts to write with --key.
    #[arg(long, value_enum, default_value_t = crate::commands::sign::Format::Both)]
    signature_format: crate::commands::sign::Format,
    /// With --key: sign this monotonic release version into both layouts (`dev.bpfship.version`).
    #[arg(long = "version", value_name = "N", requires = "key")]
    release_version: Option<u64>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    let target = reference(&args.reference)?;
    let tag = match (target.tag(), target.digest()) {
        (Some(t), None) => t.to_owned(),
        (None, None) => "latest".to_string(),
        _ => {
            return Err(
                anyhow::anyhow!("{}: push needs a tag, not a digest", args.reference).into(),
            );
        }
    };
    let policy = args.policy.as_deref().map(Policy::load).transpose()?;
    if !args.platforms.is_empty() && args.platforms.len() != args.files.len() {
        return Err(anyhow::anyhow!(
            "{} files and {} --platform: give one --platform per file, in order (nothing pushed)",
            args.files.len(),
            args.platforms.len()
        )
        .into());
    }
    if args.platforms.is_empty() && args.files.len() > 1 {
        return Err(anyhow::anyhow!(
            "several files need one --platform each (e.g. --platform linux/amd64 --platform linux/arm64); nothing pushed"
        )
        .into());
    }
    let platforms = args
        .platforms
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::new)?;
    let mut inputs = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let bytes = crate::input_file::read_all(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let file = path.display().to_string();
        let inspection = inspect(&bytes, policy.as_ref()).with_context(|| file.clone())?;
        if !inspection.is_valid() {
            return Err(Failure::Rejected(anyhow::anyhow!(
                "{file}: refused, nothing pushed: {}",
                inspection.refusals().join("; ")
            )));
        }
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| bpfship_trust::verify::is_plain_file_name(n))
            .unwrap_or("artifact")
            .to_owned();
        inputs.push((file_name, bytes, inspection));
    }
    // Decrypt the key before pushing: a wrong password must not leave an unsigned artifact behind.
    let key = args
        .key
        .as_deref()
        .map(crate::keys::private_key)
        .transpose()?;
    let client = args.registry.client()?;
    let size: usize = inputs.iter().map(|(_, b, _)| b.len()).sum();
    let published = if platforms.is_empty() {
        let (file_name, bytes, inspection) = &inputs[0];
        bpfship_trust::publish::push(
            &client,
            &target,
            &tag,
            file_name,
            bytes,
            inspection,
            policy.as_ref(),
            terminal_progress(bytes.len()),
        )?
    } else {
        let parts: Vec<Part> = inputs
            .iter()
            .zip(&platforms)
            .map(|((file_name, bytes, inspection), platform)| Part {
                file_name,
                bytes,
                inspection,
                platform,
            })
            .collect();
        bpfship_trust::publish::push_index(&client, &target, &tag, &parts, policy.as_ref())?
    };
    let descriptor = published.descriptor;
    let pinned = format!("{}@{}", target.repository_path(), descriptor.digest);
    let signed = match &key {
        Some(k) => Some(sign_descriptor(
            &client,
            &target,
            &descriptor,
            k,
            SignOptions {
                format: SignatureFormat::from(args.signature_format),
                version: args.release_version,
            },
        )?),
        None => None,
    };
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "reference": pinned,
            "tag": format!("{}:{tag}", target.repository_path()),
            "digest": descriptor.digest,
            "kind": published.kind,
            "size": size,
            "platforms": published.platforms,
            "signed": signed,
        }))?,
        _ => {
            if let Some(s) = &signed {
                eprintln!(
                    "Signed {} with key {} ({})",
                    s.digest,
                    s.key_hint,
                    [
                        s.legacy.as_ref().map(|_| "legacy .sig"),
                        s.bundle.as_ref().map(|_| "bundle referrer")
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" + ")
                );
            }
            outln!("{pinned}")?;
        }
    }
    Ok(())
}

/// A progress line on stderr for uploads of 1 MiB or more, when stderr is a terminal.
fn terminal_progress(size: usize) -> Option<bpfship_registry::Progress> {
    use std::io::{IsTerminal as _, Write as _};
    if size < (1 << 20) || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(std::sync::Arc::new(|sent: u64, total: u64| {
        let mb = |b: u64| b as f64 / 1e6;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rpushing {:.1} / {:.1} MB ({:.0}%)",
            mb(sent),
            mb(total),
            sent as f64 * 100.0 / total.max(1) as f64
        );
        if sent >= total {
            let _ = writeln!(err);
        }
    }))
}
