//! `inspect FILE|REF`: what validate finds, plus, for a registry artifact, its OCI metadata and the
//! signatures present (not verified: use `verify`).

use std::path::Path;

use anyhow::Context as _;
use bpfship_registry::ImageManifest;
use bpfship_registry::artifact::{kind_of, unpack_layer};
use bpfship_registry::signatures::{fetch_bundles, fetch_legacy};
use bpfship_trust::content::inspect;

use crate::exit::CmdResult;
use crate::input_file::InputFile;
use crate::output::{OutputFormat, print_json};
use crate::registry_args::{RegistryArgs, reference};

#[derive(clap::Args)]
pub struct Args {
    /// A local file, or a registry reference.
    target: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    if Path::new(&args.target).exists() {
        let bytes = InputFile::open(Path::new(&args.target))
            .with_context(|| format!("cannot read {}", args.target))?;
        let i = inspect(&bytes, None).with_context(|| args.target.clone())?;
        if bytes
            .changed()
            .with_context(|| format!("cannot stat {} again", args.target))?
        {
            return Err(anyhow::anyhow!(
                "{}: the file changed while it was being inspected; run again",
                args.target
            )
            .into());
        }
        match out {
            OutputFormat::Json => {
                print_json(&serde_json::json!({"file": args.target, "findings": i}))?
            }
            _ => {
                let mut s = String::new();
                crate::render::inspection(&args.target, &i, &mut s);
                out!("{s}")?;
            }
        }
        return Ok(());
    }
    let target = reference(&args.target)?;
    let client = args.registry.client()?;
    let d = client.resolve(&target)?;
    let (bytes, media_type) = client.fetch_manifest(&target, &d.digest)?;
    let manifest: ImageManifest = serde_json::from_slice(&bytes).context("manifest")?;
    let legacy = fetch_legacy(&client, &target, &d.digest)?;
    let bundles = fetch_bundles(&client, &target, &d.digest)?;
    let kind = kind_of(&manifest)?;
    let layer = &manifest.layers[0];
    let blob = client.fetch_blob(&target, layer)?;
    let (file_name, content) = unpack_layer(&layer.media_type, &blob)?;
    let findings = inspect(&content, None)
        .with_context(|| format!("{}@{}", target.repository_path(), d.digest))?;
    let pinned = format!("{}@{}", target.repository_path(), d.digest);
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "reference": pinned,
            "media_type": media_type,
            "kind": kind,
            "manifest": manifest,
            "signatures": { "legacy": legacy.len(), "bundles": bundles.len() },
            "file": file_name,
            "findings": findings,
        }))?,
        _ => {
            outln!(
                "{pinned}\n  {media_type}, {kind:?}, {} bytes in {}",
                content.len(),
                file_name
            )?;
            for (k, v) in &manifest.annotations {
                outln!("  {k}: {v}")?;
            }
            outln!(
                "  signatures present: {} legacy (.sig), {} sigstore bundle(s)",
                legacy.len(),
                bundles.len()
            )?;
            let mut s = String::new();
            crate::render::inspection(&file_name, &findings, &mut s);
            out!("{s}")?;
        }
    }
    Ok(())
}
