//! `inspect FILE|REF`: what validate finds, plus, for a registry artifact, its OCI metadata and the
//! signatures present (not verified: use `verify`).

use std::path::Path;

use anyhow::Context as _;
use bpfship_registry::artifact::{kind_of, unpack_layer};
use bpfship_registry::signatures::{bundle_entries, legacy_entries};
use bpfship_registry::untrusted::{escape, shown};
use bpfship_registry::{BlobKind, Platform, index};
use bpfship_trust::content::inspect;

use crate::exit::{CmdResult, Failure};
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
    let d = client.resolve(&target).map_err(Failure::registry)?;
    let (bytes, media_type) = client
        .fetch_manifest(&target, &d.digest)
        .map_err(Failure::registry)?;
    // An index: the host's entry (signatures stay on the index digest).
    let resolved =
        index::resolve_manifest(&client, &target, &d, &bytes, &media_type, &Platform::host())?;
    let manifest = resolved.manifest;
    let platform_manifest = resolved.index.is_some().then_some(&resolved.descriptor);
    // Entries are counted, not judged (`verify` judges); an unreadable one is counted apart.
    let count = |entries: &mut dyn Iterator<Item = Result<(), bpfship_registry::RegistryError>>| {
        entries.fold((0usize, 0usize), |(ok, bad), e| match e {
            Ok(()) => (ok + 1, bad),
            Err(_) => (ok, bad + 1),
        })
    };
    let legacy = match legacy_entries(&client, &target, &d.digest)? {
        Some(mut entries) => count(&mut entries.by_ref().map(|e| e.map(drop))),
        None => (0, 0),
    };
    let bundles = count(&mut bundle_entries(&client, &target, &d.digest)?.map(|e| e.map(drop)));
    let kind = kind_of(&manifest)?;
    let layer = &manifest.layers[0];
    let blob = client
        .fetch_blob(&target, layer, BlobKind::of_artifact(kind))
        .map_err(Failure::registry)?;
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
            "platform_manifest": platform_manifest,
            "index": resolved.index,
            "signatures": {
                "legacy": legacy.0, "bundles": bundles.0,
                "unreadable": { "legacy": legacy.1, "bundles": bundles.1 },
            },
            "file": file_name,
            "findings": findings,
        }))?,
        // Registry- and author-chosen strings are escaped (and capped) for the terminal.
        _ => {
            outln!(
                "{pinned}\n  {}, {kind:?}, {} bytes in {}",
                shown(&media_type),
                content.len(),
                shown(&file_name)
            )?;
            if let (Some(i), Some(p)) = (&resolved.index, platform_manifest) {
                outln!(
                    "  image index of {} manifest(s); for this host ({}): {}",
                    i.manifests.len(),
                    Platform::host(),
                    shown(&p.digest)
                )?;
            }
            for (k, v) in &manifest.annotations {
                outln!("  {}: {}", shown(k), shown(v))?;
            }
            let unreadable = match legacy.1 + bundles.1 {
                0 => String::new(),
                n => format!(" ({n} unreadable)"),
            };
            outln!(
                "  signatures present: {} legacy (.sig), {} sigstore bundle(s){unreadable}",
                legacy.0,
                bundles.0
            )?;
            let mut s = String::new();
            crate::render::inspection(&shown(&file_name), &findings, &mut s);
            for line in s.lines() {
                outln!("{}", escape(line))?;
            }
        }
    }
    Ok(())
}
