//! Pushing inspected content: package it (bpfman image or Wasm artifact), push config, layer
//! and manifest, and return the manifest's descriptor (what gets signed); or push several, one
//! per platform, under one OCI image index (signed by the index digest).

use bpfship_registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use bpfship_registry::{Client, Descriptor, Platform, Reference, RegistryError, index};
use bpfship_verifier::policy::Policy;

use crate::content::{ContentError, Inspection, package};

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Index(#[from] index::IndexError),
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct Published {
    pub descriptor: Descriptor,
    pub kind: bpfship_registry::artifact::ArtifactKind,
    /// For an index: each platform's manifest descriptor (platform set), in the index's order.
    pub platforms: Vec<Descriptor>,
}

/// One file of a multi-platform push: its bytes (already inspected, and valid) for `platform`.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub file_name: &'a str,
    pub bytes: &'a [u8],
    pub inspection: &'a Inspection,
    pub platform: &'a Platform,
}

/// Packages `bytes` (already inspected, and valid) for this host's platform and pushes it to
/// `target` under `tag`; `progress` hears about the layer upload.
#[allow(clippy::too_many_arguments)]
pub fn push(
    client: &Client,
    target: &Reference,
    tag: &str,
    file_name: &str,
    bytes: &[u8],
    inspection: &Inspection,
    policy: Option<&Policy>,
    progress: Option<bpfship_registry::Progress>,
) -> Result<Published, PublishError> {
    let part = Part {
        file_name,
        bytes,
        inspection,
        platform: &Platform::host(),
    };
    let (descriptor, kind) = push_part(client, target, tag, part, policy, progress)?;
    Ok(Published {
        descriptor,
        kind,
        platforms: Vec::new(),
    })
}

/// Pushes each part's manifest by digest, then an OCI image index naming them with their
/// platforms under `tag`; returns the index's descriptor (what gets signed).
pub fn push_index(
    client: &Client,
    target: &Reference,
    tag: &str,
    parts: &[Part],
    policy: Option<&Policy>,
) -> Result<Published, PublishError> {
    let mut entries = Vec::with_capacity(parts.len());
    let mut kind = None;
    for part in parts {
        let (d, k) = push_part(client, target, "", *part, policy, None)?;
        kind.get_or_insert(k);
        entries.push((d, part.platform.clone()));
    }
    let index = index::build(entries, Default::default())?;
    let descriptor = client.push_manifest(target, tag, OCI_INDEX, &index.to_bytes())?;
    Ok(Published {
        descriptor,
        kind: kind.ok_or(index::IndexError::Empty)?,
        platforms: index.manifests,
    })
}

/// Packages and pushes one part; its manifest goes under `tag`, or by digest when `tag` is empty.
fn push_part(
    client: &Client,
    target: &Reference,
    tag: &str,
    part: Part,
    policy: Option<&Policy>,
    progress: Option<bpfship_registry::Progress>,
) -> Result<(Descriptor, bpfship_registry::artifact::ArtifactKind), PublishError> {
    let packaged = package(
        part.file_name,
        part.bytes,
        part.inspection,
        policy,
        part.platform,
    )?;
    // Config and layer go up at once, each on its own connection: a push is mostly round trips.
    std::thread::scope(|s| {
        let config =
            s.spawn(|| client.push_blob(target, &packaged.config_media_type, &packaged.config));
        let layer = client.push_blob_with_progress(
            target,
            &packaged.layer_media_type,
            &packaged.layer,
            progress,
        );
        let config = config
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        config.and(layer)
    })?;
    let bytes = packaged.manifest.to_bytes();
    let digest = bpfship_registry::manifest::sha256_digest(&bytes);
    let at = if tag.is_empty() { digest.as_str() } else { tag };
    let descriptor = client.push_manifest(target, at, OCI_MANIFEST, &bytes)?;
    Ok((descriptor, packaged.kind))
}
