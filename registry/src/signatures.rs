//! cosign's two signature layouts, written and read: legacy signatures as layers of the
//! `sha256-<hex>.sig` tag, and sigstore bundles as OCI 1.1 referrers of the signed manifest (with
//! the referrers tag schema, `sha256-<hex>`, on registries without the referrers API).

use std::collections::BTreeMap;

use crate::client::{Client, RegistryError};
use crate::manifest::{
    Descriptor, ImageIndex, ImageManifest, OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST,
};
use crate::reference::Reference;

/// Media type of a legacy signature layer (the simple-signing payload).
pub const SIMPLE_SIGNING_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation carrying the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `artifactType` of bundle referrers and media type of their layer.
pub const BUNDLE_ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Signature payloads and bundles are small; larger descriptors are refused unfetched.
const MAX_SIGNATURE_BLOB: u64 = 1024 * 1024;

/// One legacy signature found for a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacySignature {
    pub payload: Vec<u8>,
    pub signature: String,
    pub annotations: BTreeMap<String, String>,
}

/// The `sha256-<hex>.sig` tag of a manifest digest.
pub fn legacy_tag(digest: &str) -> String {
    format!("{}.sig", referrers_tag(digest))
}

/// The referrers tag-schema tag (`sha256-<hex>`) of a manifest digest.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// cosign's signature image config: an empty image whose rootfs lists the payload layers.
fn legacy_config(layers: &[Descriptor]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.digest).collect::<Vec<_>>()},
        "config": {},
    }))
    .expect("config serializes")
}

/// Adds a legacy signature for `digest`, keeping signatures already there. Returns the `.sig`
/// manifest's descriptor.
pub fn push_legacy(
    client: &Client,
    repo: &Reference,
    digest: &str,
    payload: &[u8],
    signature_b64: &str,
) -> Result<Descriptor, RegistryError> {
    let tag = legacy_tag(digest);
    let mut layers = match client.fetch_tag(repo, &tag)? {
        Some((bytes, _)) => parse_manifest(repo, &bytes)?.layers,
        None => Vec::new(),
    };
    let mut layer = client.push_blob(repo, SIMPLE_SIGNING_LAYER, payload)?;
    layer
        .annotations
        .insert(SIGNATURE_ANNOTATION.into(), signature_b64.into());
    if !layers.contains(&layer) {
        layers.push(layer);
    }
    let config = legacy_config(&layers);
    let config_desc = client.push_blob(repo, OCI_CONFIG, &config)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: None,
        config: config_desc,
        layers,
        subject: None,
        annotations: BTreeMap::new(),
    };
    client.push_manifest(repo, &tag, OCI_MANIFEST, &manifest.to_bytes())
}

/// The legacy signatures stored for `digest` (payloads fetched by digest and checked).
pub fn fetch_legacy(
    client: &Client,
    repo: &Reference,
    digest: &str,
) -> Result<Vec<LegacySignature>, RegistryError> {
    let Some((bytes, _)) = client.fetch_tag(repo, &legacy_tag(digest))? else {
        return Ok(Vec::new());
    };
    let manifest = parse_manifest(repo, &bytes)?;
    let mut out = Vec::new();
    for layer in manifest.layers {
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION).cloned() else {
            continue;
        };
        check_small(repo, &layer)?;
        let payload = client.fetch_blob(repo, &layer)?;
        out.push(LegacySignature {
            payload,
            signature,
            annotations: layer.annotations,
        });
    }
    Ok(out)
}

/// Pushes a sigstore bundle as a referrer of `subject`, and records it in the `sha256-<hex>`
/// fallback index when the registry has no referrers API. Returns the referrer's descriptor.
pub fn push_bundle(
    client: &Client,
    repo: &Reference,
    subject: &Descriptor,
    bundle_json: &[u8],
    predicate_type: Option<&str>,
) -> Result<Descriptor, RegistryError> {
    let empty = client.push_blob(repo, OCI_EMPTY, b"{}")?;
    let layer = client.push_blob(repo, BUNDLE_ARTIFACT_TYPE, bundle_json)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "dev.sigstore.bundle.content".to_string(),
        "dsse-envelope".to_string(),
    );
    if let Some(p) = predicate_type {
        annotations.insert("dev.sigstore.bundle.predicateType".into(), p.into());
    }
    let subject = Descriptor {
        media_type: subject.media_type.clone(),
        digest: subject.digest.clone(),
        size: subject.size,
        artifact_type: None,
        annotations: BTreeMap::new(),
    };
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: Some(BUNDLE_ARTIFACT_TYPE.into()),
        config: empty,
        layers: vec![layer],
        subject: Some(subject.clone()),
        annotations: annotations.clone(),
    };
    let bytes = manifest.to_bytes();
    let mut desc = Descriptor::of(OCI_MANIFEST, &bytes);
    client.push_manifest(repo, &desc.digest, OCI_MANIFEST, &bytes)?;
    desc.artifact_type = Some(BUNDLE_ARTIFACT_TYPE.into());
    desc.annotations = annotations;
    if client.referrers_api(repo, &subject.digest)?.is_none() {
        let tag = referrers_tag(&subject.digest);
        let mut index = match client.fetch_tag(repo, &tag)? {
            Some((bytes, _)) => {
                serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
                    reference: repo.with_tag(&tag).to_string(),
                    message: format!("referrers fallback index: {e}"),
                })?
            }
            None => ImageIndex::empty(),
        };
        if !index.manifests.iter().any(|m| m.digest == desc.digest) {
            index.manifests.push(desc.clone());
        }
        client.push_manifest(repo, &tag, OCI_INDEX, &index.to_bytes())?;
    }
    Ok(desc)
}

/// The sigstore bundles referring to `digest` (referrers API, else the fallback tag).
pub fn fetch_bundles(
    client: &Client,
    repo: &Reference,
    digest: &str,
) -> Result<Vec<Vec<u8>>, RegistryError> {
    let referrers = match client.referrers_api(repo, digest)? {
        Some(list) => list,
        None => match client.fetch_tag(repo, &referrers_tag(digest))? {
            Some((bytes, _)) => {
                let index: ImageIndex =
                    serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
                        reference: repo.with_tag(&referrers_tag(digest)).to_string(),
                        message: format!("referrers fallback index: {e}"),
                    })?;
                index.manifests
            }
            None => Vec::new(),
        },
    };
    let mut out = Vec::new();
    for r in referrers
        .iter()
        .filter(|r| r.artifact_type.as_deref() == Some(BUNDLE_ARTIFACT_TYPE))
    {
        let (bytes, _) = client.fetch_manifest(repo, &r.digest)?;
        let manifest = parse_manifest(repo, &bytes)?;
        // A referrer must name the manifest it signs: an index entry cannot re-point it.
        if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest) {
            continue;
        }
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == BUNDLE_ARTIFACT_TYPE)
        {
            check_small(repo, layer)?;
            out.push(client.fetch_blob(repo, layer)?);
        }
    }
    Ok(out)
}

fn parse_manifest(repo: &Reference, bytes: &[u8]) -> Result<ImageManifest, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Invalid {
        reference: repo.to_string(),
        message: format!("signature manifest: {e}"),
    })
}

fn check_small(repo: &Reference, d: &Descriptor) -> Result<(), RegistryError> {
    if d.size > MAX_SIGNATURE_BLOB {
        return Err(RegistryError::TooLarge {
            reference: format!("{}@{}", repo.repository_path(), d.digest),
            limit: MAX_SIGNATURE_BLOB,
        });
    }
    Ok(())
}
