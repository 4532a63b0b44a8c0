//! OCI image indexes: platforms, choosing the host's manifest from an index (as bpfman's loaders
//! do: the first entry whose os and architecture match, attestation entries never chosen), and
//! building an index over per-platform manifests. Reading is bounded and every child is fetched by
//! the digest its index names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::client::{Client, RegistryError};
use crate::manifest::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, ImageIndex, ImageManifest, OCI_INDEX,
    OCI_MANIFEST,
};
use crate::reference::Reference;
use crate::untrusted;

/// Most entries an index may have (bpfman's and docker's indexes have a handful).
pub const MAX_INDEX_ENTRIES: usize = 256;

/// The annotation buildkit marks attestation manifests with (`attestation-manifest`).
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// An OCI platform: `os/architecture[/variant]`, architectures in Go's spelling (`amd64`,
/// `arm64`, `s390x`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why an index could not be read, used, or built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("platform {0:?} is not os/architecture[/variant] (e.g. linux/amd64, linux/s390x)")]
    BadPlatform(String),
    #[error("the index has {0} entries; at most {MAX_INDEX_ENTRIES} are read")]
    TooManyEntries(usize),
    #[error("the index has no manifest for {wanted} (it has: {available})")]
    NoPlatform { wanted: String, available: String },
    #[error(
        "the index entry for {platform} is {media_type}, not an image manifest (nested indexes are not followed)"
    )]
    NotImageManifest {
        platform: String,
        media_type: String,
    },
    #[error("the index names platform {0} twice")]
    DuplicatePlatform(String),
    #[error("an index needs at least one manifest")]
    Empty,
}

impl Platform {
    /// The platform this program runs on (`linux/amd64` on x86-64 Linux).
    pub fn host() -> Self {
        Self {
            os: std::env::consts::OS.replace("macos", "darwin"),
            architecture: go_arch(std::env::consts::ARCH).to_owned(),
            variant: None,
        }
    }

    /// Parses `os/architecture[/variant]`.
    pub fn parse(s: &str) -> Result<Self, IndexError> {
        let ok = |p: &str| {
            p.len() <= 64
                && p.starts_with(|c: char| c.is_ascii_alphanumeric())
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(IndexError::BadPlatform(untrusted::shown_max(s, 80))),
        }
    }

    /// True when an entry for `self` serves a host of `host`: same os and architecture, and the
    /// same variant when both name one.
    pub fn serves(&self, host: &Platform) -> bool {
        self.os == host.os
            && self.architecture == host.architecture
            && match (&self.variant, &host.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Whether objects for this platform are big-endian (`s390x`, `ppc64`, `mips`, `sparc64`).
    pub fn big_endian(&self) -> bool {
        matches!(
            self.architecture.as_str(),
            "s390x" | "ppc64" | "mips" | "mips64" | "sparc64"
        )
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Go's name for a Rust target architecture (what OCI platforms use).
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// True for the entries no host runs: buildkit's attestation manifests (annotated
/// `vnd.docker.reference.type`, platform `unknown/unknown`).
fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.contains_key(REFERENCE_TYPE)
        || d.platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// The entry of `index` for `host`: the first non-attestation entry whose platform serves it.
/// It must be an image manifest (an index inside an index is not followed).
pub fn select<'a>(index: &'a ImageIndex, host: &Platform) -> Result<&'a Descriptor, IndexError> {
    if index.manifests.len() > MAX_INDEX_ENTRIES {
        return Err(IndexError::TooManyEntries(index.manifests.len()));
    }
    let runnable = || index.manifests.iter().filter(|d| !is_attestation(d));
    let chosen = runnable()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.serves(host)))
        .ok_or_else(|| {
            let mut available: Vec<String> = runnable()
                .map(|d| match &d.platform {
                    Some(p) => untrusted::shown_max(&p.to_string(), 80),
                    None => "an entry without platform".into(),
                })
                .collect();
            available.dedup();
            IndexError::NoPlatform {
                wanted: host.to_string(),
                available: if available.is_empty() {
                    "nothing runnable".into()
                } else {
                    available.join(", ")
                },
            }
        })?;
    if !matches!(chosen.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST) {
        return Err(IndexError::NotImageManifest {
            platform: host.to_string(),
            media_type: untrusted::shown_max(&chosen.media_type, 120),
        });
    }
    Ok(chosen)
}

/// An OCI index over `entries` (each a pushed manifest's descriptor and its platform), one per
/// platform.
pub fn build(
    entries: Vec<(Descriptor, Platform)>,
    annotations: BTreeMap<String, String>,
) -> Result<ImageIndex, IndexError> {
    if entries.is_empty() {
        return Err(IndexError::Empty);
    }
    if entries.len() > MAX_INDEX_ENTRIES {
        return Err(IndexError::TooManyEntries(entries.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut manifests = Vec::with_capacity(entries.len());
    for (mut d, p) in entries {
        if !seen.insert(p.clone()) {
            return Err(IndexError::DuplicatePlatform(p.to_string()));
        }
        d.platform = Some(p);
        manifests.push(d);
    }
    Ok(ImageIndex {
        manifests,
        annotations,
        ..ImageIndex::empty()
    })
}

/// What a manifest digest names: an image manifest, or an index and the manifest chosen from it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The image manifest to use.
    pub manifest: ImageManifest,
    /// Its descriptor (for an index: the chosen entry, platform included).
    pub descriptor: Descriptor,
    /// The index it was chosen from, if any.
    pub index: Option<ImageIndex>,
}

/// Why a manifest could not be resolved to an image manifest.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{reference}: {source}")]
    Index {
        reference: String,
        source: IndexError,
    },
    #[error("{reference}: not an OCI image manifest or index: {message}")]
    Malformed { reference: String, message: String },
}

/// True when `bytes` (served as `media_type`) is an index: by its media type, else by its
/// `manifests` field.
fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    let declared = |m: &str| m.starts_with(OCI_INDEX) || m.starts_with(DOCKER_MANIFEST_LIST);
    if declared(media_type) {
        return true;
    }
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(bytes)
        .is_ok_and(|p| p.media_type.as_deref().is_some_and(declared) || p.manifests.is_some())
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], at: &str) -> Result<T, ResolveError> {
    serde_json::from_slice(bytes).map_err(|e| ResolveError::Malformed {
        reference: at.to_owned(),
        message: untrusted::shown_max(&e.to_string(), 200),
    })
}

/// Reads the manifest `bytes` fetched (digest-checked) for `descriptor` in `r`: an image manifest
/// is used as it is; from an index, the entry for `host` is fetched by digest (its size checked
/// against the entry) and used.
pub fn resolve_manifest(
    client: &Client,
    r: &Reference,
    descriptor: &Descriptor,
    bytes: &[u8],
    media_type: &str,
    host: &Platform,
) -> Result<Resolved, ResolveError> {
    let at = format!("{}@{}", r.repository_path(), descriptor.digest);
    if !is_index(media_type, bytes) {
        return Ok(Resolved {
            manifest: parse(bytes, &at)?,
            descriptor: descriptor.clone(),
            index: None,
        });
    }
    let index: ImageIndex = parse(bytes, &at)?;
    let chosen = select(&index, host)
        .map_err(|source| ResolveError::Index {
            reference: at.clone(),
            source,
        })?
        .clone();
    let (child, _) = client.fetch_manifest(r, &chosen.digest)?;
    if child.len() as u64 != chosen.size {
        return Err(RegistryError::SizeMismatch {
            reference: format!("{}@{}", r.repository_path(), chosen.digest),
            expected: chosen.size,
            actual: child.len() as u64,
        }
        .into());
    }
    let child_at = format!("{}@{}", r.repository_path(), chosen.digest);
    if is_index(&chosen.media_type, &child) {
        return Err(ResolveError::Index {
            reference: child_at,
            source: IndexError::NotImageManifest {
                platform: host.to_string(),
                media_type: OCI_INDEX.into(),
            },
        });
    }
    Ok(Resolved {
        manifest: parse(&child, &child_at)?,
        descriptor: chosen,
        index: Some(index),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str, media_type: &str) -> Descriptor {
        Descriptor {
            platform: Some(Platform::parse(platform).unwrap()),
            ..Descriptor::of(media_type, platform.as_bytes())
        }
    }

    #[test]
    fn platforms_parse_and_print() {
        for p in ["linux/amd64", "linux/arm/v7", "linux/s390x"] {
            assert_eq!(Platform::parse(p).unwrap().to_string(), p);
        }
        for bad in ["", "linux", "linux/", "a/b/c/d", "linux/am d64", "../x"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert!(Platform::parse("linux/s390x").unwrap().big_endian());
        assert!(!Platform::host().big_endian() || cfg!(target_endian = "big"));
    }

    /// Attestation entries are never chosen, even listed first (buildkit writes them).
    #[test]
    fn the_host_entry_is_chosen_and_attestations_skipped() {
        let host = Platform::parse("linux/amd64").unwrap();
        let mut attestation = entry("unknown/unknown", OCI_MANIFEST);
        attestation
            .annotations
            .insert(REFERENCE_TYPE.into(), "attestation-manifest".into());
        let mut marked = entry("linux/amd64", OCI_MANIFEST);
        marked
            .annotations
            .insert(REFERENCE_TYPE.into(), "attestation-manifest".into());
        let index = ImageIndex {
            manifests: vec![
                attestation,
                marked,
                entry("linux/s390x", OCI_MANIFEST),
                entry("linux/amd64", OCI_MANIFEST),
            ],
            ..ImageIndex::empty()
        };
        assert_eq!(select(&index, &host).unwrap(), &index.manifests[3]);
        let arm = Platform::parse("linux/arm64").unwrap();
        let e = select(&index, &arm).unwrap_err().to_string();
        assert!(
            e.contains("no manifest for linux/arm64") && e.contains("linux/s390x"),
            "{e}"
        );
        assert!(!e.contains("unknown"), "{e}");
    }

    #[test]
    fn hostile_indexes_are_refused() {
        let host = Platform::parse("linux/amd64").unwrap();
        let nested = ImageIndex {
            manifests: vec![entry("linux/amd64", OCI_INDEX)],
            ..ImageIndex::empty()
        };
        assert!(matches!(
            select(&nested, &host),
            Err(IndexError::NotImageManifest { .. })
        ));
        let odd = ImageIndex {
            manifests: vec![entry("linux/amd64", "text/html")],
            ..ImageIndex::empty()
        };
        assert!(matches!(
            select(&odd, &host),
            Err(IndexError::NotImageManifest { .. })
        ));
        let huge = ImageIndex {
            manifests: vec![entry("linux/amd64", OCI_MANIFEST); MAX_INDEX_ENTRIES + 1],
            ..ImageIndex::empty()
        };
        assert_eq!(
            select(&huge, &host),
            Err(IndexError::TooManyEntries(MAX_INDEX_ENTRIES + 1))
        );
        let d = Descriptor::of(OCI_MANIFEST, b"x");
        assert_eq!(
            build(
                vec![(d.clone(), host.clone()), (d, host.clone())],
                BTreeMap::new()
            ),
            Err(IndexError::DuplicatePlatform("linux/amd64".into()))
        );
        assert_eq!(build(vec![], BTreeMap::new()), Err(IndexError::Empty));
    }

    #[test]
    fn indexes_are_told_from_manifests() {
        assert!(is_index(OCI_INDEX, b"{}"));
        assert!(is_index("", br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!is_index(
            OCI_MANIFEST,
            br#"{"schemaVersion":2,"config":{}}"#
        ));
    }
}
