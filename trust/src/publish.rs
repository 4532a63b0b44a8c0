//! Pushing inspected content: package it (bpfman image or Wasm artifact), push config, layer
//! and manifest, and return the manifest's descriptor (what gets signed).

use bpfship_registry::manifest::OCI_MANIFEST;
use bpfship_registry::{Client, Descriptor, Reference, RegistryError};
use bpfship_verifier::policy::Policy;

use crate::content::{ContentError, Inspection, package};

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct Published {
    pub descriptor: Descriptor,
    pub kind: bpfship_registry::artifact::ArtifactKind,
}

/// Packages `bytes` (already inspected, and valid) and pushes it to `target` under `tag`;
/// `progress` hears about the layer upload.
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
    let packaged = package(file_name, bytes, inspection, policy)?;
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
    let descriptor =
        client.push_manifest(target, tag, OCI_MANIFEST, &packaged.manifest.to_bytes())?;
    Ok(Published {
        descriptor,
        kind: packaged.kind,
    })
}
