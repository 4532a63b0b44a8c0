//! cosign's two signature layouts, written and read: legacy signatures as layers of the
//! `sha256-<hex>.sig` tag, and sigstore bundles as OCI 1.1 referrers of the signed manifest (with
//! the referrers tag schema, `sha256-<hex>`, on registries without the referrers API).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::client::{BlobKind, Client, RegistryError};
use crate::manifest::{
    Descriptor, ImageIndex, ImageManifest, OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST,
};
use crate::reference::Reference;
use crate::untrusted;

/// Media type of a legacy signature layer (the simple-signing payload).
pub const SIMPLE_SIGNING_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation carrying the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Layer annotation of a keyless legacy signature: the Fulcio certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Layer annotation of a keyless legacy signature: the certificate's chain (PEM).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Layer annotation of a legacy signature logged in Rekor: the entry and its signed timestamp.
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// `artifactType` of bundle referrers and media type of their layer.
pub const BUNDLE_ARTIFACT_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Signature entries examined per layout for one manifest; the rest are not fetched. cosign
/// appends one entry per signing, so real manifests carry a handful.
pub const MAX_SIGNATURE_ENTRIES: usize = 32;
/// Bytes of signature metadata (referrer manifests, payloads, bundles; each distinct digest
/// counted once) fetched per layout for one manifest.
pub const MAX_SIGNATURE_BYTES: u64 = 8 << 20;

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

/// Counts entries and bytes against the per-layout budget, and fetches each distinct blob once.
struct Budget {
    entries: usize,
    bytes: u64,
    blobs: HashMap<String, Vec<u8>>,
    exhausted: bool,
}

impl Budget {
    fn new() -> Self {
        Self {
            entries: 0,
            bytes: 0,
            blobs: HashMap::new(),
            exhausted: false,
        }
    }

    /// Takes one entry from the budget; `Err` (once) when the count cap is reached.
    fn entry(&mut self, repo: &Reference, what: &str) -> Option<Result<(), RegistryError>> {
        if self.exhausted {
            return None;
        }
        self.entries += 1;
        if self.entries > MAX_SIGNATURE_ENTRIES {
            self.exhausted = true;
            return Some(Err(RegistryError::Refused {
                reference: repo.repository_path(),
                message: format!(
                    "more than {MAX_SIGNATURE_ENTRIES} {what} entries; the rest are not examined"
                ),
            }));
        }
        Some(Ok(()))
    }

    /// Charges `size` bytes; `Err` when the byte budget would be exceeded.
    fn charge(&mut self, repo: &Reference, size: u64) -> Result<(), RegistryError> {
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > MAX_SIGNATURE_BYTES {
            self.exhausted = true;
            return Err(RegistryError::Refused {
                reference: repo.repository_path(),
                message: format!(
                    "signature metadata exceeds {MAX_SIGNATURE_BYTES} bytes; the rest is not fetched"
                ),
            });
        }
        Ok(())
    }

    /// The blob `d`, fetched (and charged) the first time its digest is asked for.
    fn blob(
        &mut self,
        client: &Client,
        repo: &Reference,
        d: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        if let Some(b) = self.blobs.get(&d.digest) {
            return Ok(b.clone());
        }
        if d.size <= BlobKind::Signature.max_bytes() {
            self.charge(repo, d.size)?;
        }
        let bytes = client.fetch_blob(repo, d, BlobKind::Signature)?;
        self.blobs.insert(d.digest.clone(), bytes.clone());
        Ok(bytes)
    }
}

/// The legacy signature entries of one `.sig` manifest, fetched one at a time as the iterator
/// is driven. Each item is one entry: a signature to judge, or why that entry could not be read
/// (judge the others regardless; an [`ErrorClass::Unavailable`](crate::ErrorClass) error means
/// the registry itself failed). Layers that are not simple-signing payloads with a signature
/// annotation are not signatures and are skipped; identical entries are yielded once; payload
/// blobs are fetched once per digest; at most [`MAX_SIGNATURE_ENTRIES`] entries and
/// [`MAX_SIGNATURE_BYTES`] bytes are examined.
pub struct LegacyEntries<'a> {
    client: &'a Client,
    repo: Reference,
    layers: std::vec::IntoIter<Descriptor>,
    seen: HashSet<(String, String)>,
    budget: Budget,
    skipped: usize,
}

impl LegacyEntries<'_> {
    /// Layers skipped so far because they are not signatures.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

impl Iterator for LegacyEntries<'_> {
    type Item = Result<LegacySignature, RegistryError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let layer = self.layers.next()?;
            let signature = match layer.annotations.get(SIGNATURE_ANNOTATION) {
                Some(s) if layer.media_type == SIMPLE_SIGNING_LAYER => s.clone(),
                _ => {
                    self.skipped += 1;
                    continue;
                }
            };
            if !self.seen.insert((layer.digest.clone(), signature.clone())) {
                continue;
            }
            if let Err(e) = self.budget.entry(&self.repo, "legacy signature")? {
                return Some(Err(e));
            }
            return Some(
                self.budget
                    .blob(self.client, &self.repo, &layer)
                    .map(|payload| LegacySignature {
                        payload,
                        signature,
                        annotations: layer.annotations,
                    }),
            );
        }
    }
}

/// The legacy signature entries for `digest` (see [`LegacyEntries`]); `Ok(None)` when there is
/// no `.sig` tag. `Err` when the `.sig` manifest itself cannot be fetched or parsed.
pub fn legacy_entries<'a>(
    client: &'a Client,
    repo: &Reference,
    digest: &str,
) -> Result<Option<LegacyEntries<'a>>, RegistryError> {
    let Some((bytes, _)) = client.fetch_tag(repo, &legacy_tag(digest))? else {
        return Ok(None);
    };
    let mut budget = Budget::new();
    budget.charge(repo, bytes.len() as u64)?;
    let manifest = parse_manifest(repo, &bytes)?;
    Ok(Some(LegacyEntries {
        client,
        repo: repo.clone(),
        layers: manifest.layers.into_iter(),
        seen: HashSet::new(),
        budget,
        skipped: 0,
    }))
}

/// Every legacy signature stored for `digest`; the first unreadable entry is an error (for
/// callers that want all or nothing; verification uses [`legacy_entries`]).
pub fn fetch_legacy(
    client: &Client,
    repo: &Reference,
    digest: &str,
) -> Result<Vec<LegacySignature>, RegistryError> {
    match legacy_entries(client, repo, digest)? {
        Some(entries) => entries.collect(),
        None => Ok(Vec::new()),
    }
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
        platform: None,
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
                    message: format!(
                        "referrers fallback index: {}",
                        untrusted::shown(&e.to_string())
                    ),
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

/// The sigstore bundle entries referring to one manifest, fetched one at a time as the iterator
/// is driven; each item is one bundle, or why that entry could not be read. Referrers of another
/// `artifactType` are skipped, each referrer digest is examined once, a referrer manifest whose
/// `subject` is not the manifest verified is skipped (an index entry cannot re-point it), and the
/// count and bytes are bounded as for [`LegacyEntries`].
pub struct BundleEntries<'a> {
    client: &'a Client,
    repo: Reference,
    subject: String,
    referrers: std::vec::IntoIter<Descriptor>,
    pending: VecDeque<Descriptor>,
    seen: HashSet<String>,
    budget: Budget,
    skipped: usize,
}

impl BundleEntries<'_> {
    /// Referrers and layers skipped so far because they are not bundles for this manifest.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The bundle layers of referrer `r`, queued; `Err` when it cannot be read.
    fn open_referrer(&mut self, r: &Descriptor) -> Result<(), RegistryError> {
        let limit = MAX_SIGNATURE_BYTES.saturating_sub(self.budget.bytes);
        if r.size > limit {
            return Err(RegistryError::Refused {
                reference: format!(
                    "{}@{}",
                    self.repo.repository_path(),
                    untrusted::shown(&r.digest)
                ),
                message: format!(
                    "referrer manifest of {} bytes exceeds the signature metadata budget",
                    r.size
                ),
            });
        }
        let (bytes, _) = self.client.fetch_manifest(&self.repo, &r.digest)?;
        self.budget.charge(&self.repo, bytes.len() as u64)?;
        let manifest = parse_manifest(&self.repo, &bytes)?;
        if manifest.subject.as_ref().map(|s| s.digest.as_str()) != Some(self.subject.as_str()) {
            self.skipped += 1;
            return Ok(());
        }
        for layer in manifest.layers {
            if layer.media_type == BUNDLE_ARTIFACT_TYPE {
                self.pending.push_back(layer);
            } else {
                self.skipped += 1;
            }
        }
        Ok(())
    }
}

impl Iterator for BundleEntries<'_> {
    type Item = Result<Vec<u8>, RegistryError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(layer) = self.pending.pop_front() {
                if let Err(e) = self.budget.entry(&self.repo, "sigstore bundle")? {
                    return Some(Err(e));
                }
                return Some(self.budget.blob(self.client, &self.repo, &layer));
            }
            let r = self.referrers.next()?;
            if r.artifact_type.as_deref() != Some(BUNDLE_ARTIFACT_TYPE) {
                self.skipped += 1;
                continue;
            }
            if !self.seen.insert(r.digest.clone()) {
                continue;
            }
            if self.budget.exhausted {
                return None;
            }
            if let Err(e) = self.open_referrer(&r) {
                return Some(Err(e));
            }
        }
    }
}

/// The sigstore bundle entries referring to `digest` (referrers API, else the fallback tag; see
/// [`BundleEntries`]). `Err` when the list of referrers itself cannot be fetched or parsed.
pub fn bundle_entries<'a>(
    client: &'a Client,
    repo: &Reference,
    digest: &str,
) -> Result<BundleEntries<'a>, RegistryError> {
    let referrers = match client.referrers_api(repo, digest)? {
        Some(list) => list,
        None => match client.fetch_tag(repo, &referrers_tag(digest))? {
            Some((bytes, _)) => {
                let index: ImageIndex =
                    serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
                        reference: repo.with_tag(&referrers_tag(digest)).to_string(),
                        message: format!(
                            "referrers fallback index: {}",
                            untrusted::shown(&e.to_string())
                        ),
                    })?;
                index.manifests
            }
            None => Vec::new(),
        },
    };
    Ok(BundleEntries {
        client,
        repo: repo.clone(),
        subject: digest.to_owned(),
        referrers: referrers.into_iter(),
        pending: VecDeque::new(),
        seen: HashSet::new(),
        budget: Budget::new(),
        skipped: 0,
    })
}

/// Every sigstore bundle referring to `digest`; the first unreadable entry is an error (for
/// callers that want all or nothing; verification uses [`bundle_entries`]).
pub fn fetch_bundles(
    client: &Client,
    repo: &Reference,
    digest: &str,
) -> Result<Vec<Vec<u8>>, RegistryError> {
    bundle_entries(client, repo, digest)?.collect()
}

fn parse_manifest(repo: &Reference, bytes: &[u8]) -> Result<ImageManifest, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Invalid {
        reference: repo.to_string(),
        message: format!("signature manifest: {}", untrusted::shown(&e.to_string())),
    })
}
