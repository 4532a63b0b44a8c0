//! Artifact packaging: eBPF objects as bpfman-compatible bytecode images, WASM modules as CNCF TAG
//! Runtime Wasm OCI artifacts, and reading either (and bpfman-built images) back.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::Serialize;

use crate::manifest::{
    DOCKER_LAYER_TAR_GZIP, Descriptor, ImageManifest, OCI_CONFIG, OCI_LAYER_TAR,
    OCI_LAYER_TAR_GZIP, OCI_MANIFEST, WASM_CONFIG, WASM_LAYER,
};

/// The annotation naming a layer's (or an artifact's) file.
pub const TITLE: &str = "org.opencontainers.image.title";

/// Largest artifact content accepted when unpacking (a gzip bomb stops here).
pub const MAX_CONTENT_BYTES: u64 = 1 << 30;

/// What an artifact carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    Ebpf,
    Wasm,
}

/// A packaged artifact ready to push: config and content blobs and the manifest naming them.
#[derive(Debug, Clone)]
pub struct Packaged {
    pub kind: ArtifactKind,
    pub config: Vec<u8>,
    pub config_media_type: String,
    pub layer: Vec<u8>,
    pub layer_media_type: String,
    pub manifest: ImageManifest,
}

/// Why an artifact could not be packaged or unpacked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArtifactError {
    #[error("not a bpfship artifact: {0}")]
    Unsupported(String),
    #[error("malformed layer: {0}")]
    Layer(String),
    #[error("content larger than {0} bytes")]
    TooLarge(u64),
    #[error(
        "SOURCE_DATE_EPOCH={0:?} is not a number of seconds since 1970 (unset it, or set it to e.g. the last commit's time)"
    )]
    SourceDateEpoch(String),
}

/// A component's world as the TAG Runtime config's `component` field names it: its imports and
/// exports by name (`wasi:cli/environment@0.2.0`, …) and, when known, the world it targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WasmComponent {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub target: Option<String>,
}

/// The configs' `created` time (RFC 3339, UTC): `SOURCE_DATE_EPOCH` when set, else the epoch, so
/// the same input always packages to the same digests.
pub fn created_from_env() -> Result<String, ArtifactError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => created(&v),
        _ => Ok(rfc3339(0)),
    }
}

/// `SOURCE_DATE_EPOCH`'s value as an RFC 3339 UTC time.
fn created(source_date_epoch: &str) -> Result<String, ArtifactError> {
    source_date_epoch
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&s| s < 253_402_300_800) // before year 10000
        .map(rfc3339)
        .ok_or_else(|| ArtifactError::SourceDateEpoch(source_date_epoch.chars().take(64).collect()))
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Packages an eBPF object as a bpfman bytecode image: image config with the
/// `io.ebpf.programs`/`io.ebpf.maps` labels (JSON name→type), one tar+gzip layer with the ELF at
/// `/<file_name>` (named `<stem>.o` when it is not already: bpfman's Go loader only takes tar
/// entries ending in `.o`), and the caller's annotations on the manifest.
pub fn package_ebpf(
    file_name: &str,
    elf: &[u8],
    programs: &BTreeMap<String, String>,
    maps: &BTreeMap<String, String>,
    created: &str,
    platform: &crate::index::Platform,
    annotations: BTreeMap<String, String>,
) -> Result<Packaged, ArtifactError> {
    let tar = single_file_tar(&object_entry_name(file_name), elf)?;
    let diff_id = crate::manifest::sha256_digest(&tar);
    let layer = gzip(&tar)?;
    let labels = serde_json::json!({
        "io.ebpf.programs": serde_json::to_string(programs).expect("map serializes"),
        "io.ebpf.maps": serde_json::to_string(maps).expect("map serializes"),
    });
    let config = serde_json::to_vec(&serde_json::json!({
        "created": created,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": { "Labels": labels },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    }))
    .expect("config serializes");
    Ok(assemble(
        ArtifactKind::Ebpf,
        config,
        OCI_CONFIG,
        layer,
        OCI_LAYER_TAR_GZIP,
        None,
        annotations,
    ))
}

/// The tar entry name for an eBPF object called `file_name`: itself when it ends in `.o`, else its
/// stem with `.o` (`filter.elf` → `filter.o`).
fn object_entry_name(file_name: &str) -> String {
    if file_name.ends_with(".o") {
        return file_name.to_owned();
    }
    let stem = match file_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file_name,
    };
    format!("{stem}.o")
}

/// Packages a WASM module or component as a TAG Runtime Wasm OCI artifact: the config has
/// `created`, and for a component its `component` world; the layer is titled `file_name` (what
/// `oras pull` and `wkg` name the file).
pub fn package_wasm(
    file_name: &str,
    wasm: &[u8],
    component: Option<&WasmComponent>,
    created: &str,
    annotations: BTreeMap<String, String>,
) -> Packaged {
    let layer_digest = crate::manifest::sha256_digest(wasm);
    let mut config = serde_json::json!({
        "created": created,
        "architecture": "wasm",
        "os": if component.is_some() { "wasip2" } else { "wasip1" },
        "layerDigests": [layer_digest],
    });
    if let Some(c) = component {
        config["component"] = serde_json::to_value(c).expect("component serializes");
    }
    let config = serde_json::to_vec(&config).expect("config serializes");
    let mut packaged = assemble(
        ArtifactKind::Wasm,
        config,
        WASM_CONFIG,
        wasm.to_vec(),
        WASM_LAYER,
        Some(WASM_CONFIG),
        annotations,
    );
    packaged.manifest.layers[0]
        .annotations
        .insert(TITLE.into(), file_name.to_owned());
    packaged
}

fn assemble(
    kind: ArtifactKind,
    config: Vec<u8>,
    config_media_type: &str,
    layer: Vec<u8>,
    layer_media_type: &str,
    artifact_type: Option<&str>,
    annotations: BTreeMap<String, String>,
) -> Packaged {
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: artifact_type.map(str::to_owned),
        config: Descriptor::of(config_media_type, &config),
        layers: vec![Descriptor::of(layer_media_type, &layer)],
        subject: None,
        annotations,
    };
    Packaged {
        kind,
        config,
        config_media_type: config_media_type.into(),
        layer,
        layer_media_type: layer_media_type.into(),
        manifest,
    }
}

/// What a manifest holds, decided from its config and layer media types.
pub fn kind_of(manifest: &ImageManifest) -> Result<ArtifactKind, ArtifactError> {
    let layer = match manifest.layers.as_slice() {
        [one] => one,
        [] => return Err(ArtifactError::Unsupported("manifest has no layers".into())),
        many => {
            return Err(ArtifactError::Unsupported(format!(
                "manifest has {} layers; bpfship artifacts have one",
                many.len()
            )));
        }
    };
    match layer.media_type.as_str() {
        WASM_LAYER => Ok(ArtifactKind::Wasm),
        OCI_LAYER_TAR_GZIP | DOCKER_LAYER_TAR_GZIP | OCI_LAYER_TAR => Ok(ArtifactKind::Ebpf),
        other => Err(ArtifactError::Unsupported(format!(
            "layer media type {other}"
        ))),
    }
}

/// Extracts the content of a fetched (digest-checked) layer: the WASM bytes, or the single ELF in a
/// bpfman image's tar (gzip or plain). Returns (file name, bytes).
pub fn unpack_layer(media_type: &str, layer: &[u8]) -> Result<(String, Vec<u8>), ArtifactError> {
    match media_type {
        WASM_LAYER => Ok(("module.wasm".into(), layer.to_vec())),
        OCI_LAYER_TAR_GZIP | DOCKER_LAYER_TAR_GZIP => {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(layer)
                .take(MAX_CONTENT_BYTES + 1)
                .read_to_end(&mut tar)
                .map_err(|e| ArtifactError::Layer(format!("gzip: {e}")))?;
            if tar.len() as u64 > MAX_CONTENT_BYTES {
                return Err(ArtifactError::TooLarge(MAX_CONTENT_BYTES));
            }
            single_file_from_tar(&tar)
        }
        OCI_LAYER_TAR => single_file_from_tar(layer),
        other => Err(ArtifactError::Unsupported(format!(
            "layer media type {other}"
        ))),
    }
}

fn single_file_tar(name: &str, bytes: &[u8]) -> Result<Vec<u8>, ArtifactError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, name, bytes)
        .map_err(|e| ArtifactError::Layer(e.to_string()))?;
    builder
        .into_inner()
        .map_err(|e| ArtifactError::Layer(e.to_string()))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, ArtifactError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)
        .map_err(|e| ArtifactError::Layer(e.to_string()))?;
    enc.finish()
        .map_err(|e| ArtifactError::Layer(e.to_string()))
}

fn single_file_from_tar(tar_bytes: &[u8]) -> Result<(String, Vec<u8>), ArtifactError> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut found: Option<(String, Vec<u8>)> = None;
    let entries = archive
        .entries()
        .map_err(|e| ArtifactError::Layer(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArtifactError::Layer(e.to_string()))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(ArtifactError::Layer(format!(
                "tar entry of type {kind:?}: only regular files are accepted"
            )));
        }
        let path = entry
            .path()
            .map_err(|e| ArtifactError::Layer(e.to_string()))?
            .into_owned();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != ".." && path.components().count() <= 2)
            .ok_or_else(|| ArtifactError::Layer(format!("unsafe path {} in tar", path.display())))?
            .to_owned();
        if found.is_some() {
            return Err(ArtifactError::Layer(
                "several files in the layer; bpfship artifacts have one".into(),
            ));
        }
        let mut data = Vec::new();
        entry
            .by_ref()
            .take(MAX_CONTENT_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(|e| ArtifactError::Layer(e.to_string()))?;
        if data.len() as u64 > MAX_CONTENT_BYTES {
            return Err(ArtifactError::TooLarge(MAX_CONTENT_BYTES));
        }
        found = Some((name, data));
    }
    found.ok_or_else(|| ArtifactError::Layer("no file in the layer".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: &str = "1970-01-01T00:00:00Z";

    #[test]
    fn created_is_source_date_epoch_or_the_epoch() {
        assert_eq!(rfc3339(0), EPOCH);
        assert_eq!(created("1700000000").unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(created("951782400").unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(created("253402300799").unwrap(), "9999-12-31T23:59:59Z");
        for bad in ["-1", "soon", "1e9", "253402300800"] {
            let e = created(bad).unwrap_err().to_string();
            assert!(e.contains("SOURCE_DATE_EPOCH") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn wasm_configs_name_their_layer_and_a_component_its_world() {
        let world = WasmComponent {
            imports: vec!["wasi:io/streams@0.2.0".into()],
            exports: vec!["run".into()],
            target: None,
        };
        let p = package_wasm("h.wasm", b"\0asm", Some(&world), EPOCH, BTreeMap::new());
        let config: serde_json::Value = serde_json::from_slice(&p.config).unwrap();
        assert_eq!(config["created"], EPOCH);
        assert_eq!(config["os"], "wasip2");
        assert_eq!(
            config["component"],
            serde_json::json!({"imports": ["wasi:io/streams@0.2.0"], "exports": ["run"], "target": null})
        );
        assert_eq!(p.manifest.layers[0].annotations[TITLE], "h.wasm");
        let module = package_wasm("m.wasm", b"\0asm", None, EPOCH, BTreeMap::new());
        let config: serde_json::Value = serde_json::from_slice(&module.config).unwrap();
        assert!(config.get("component").is_none(), "{config}");
        assert_eq!(config["os"], "wasip1");
    }

    #[test]
    fn ebpf_packaging_is_deterministic_and_round_trips() {
        let progs = BTreeMap::from([("xdp_pass".to_string(), "xdp".to_string())]);
        let a = package_ebpf(
            "x.o",
            b"\x7fELF...",
            &progs,
            &BTreeMap::new(),
            EPOCH,
            &crate::index::Platform::host(),
            BTreeMap::new(),
        )
        .unwrap();
        let b = package_ebpf(
            "x.o",
            b"\x7fELF...",
            &progs,
            &BTreeMap::new(),
            EPOCH,
            &crate::index::Platform::host(),
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(a.manifest.to_bytes(), b.manifest.to_bytes());
        assert_eq!(kind_of(&a.manifest).unwrap(), ArtifactKind::Ebpf);
        let (name, bytes) = unpack_layer(&a.layer_media_type, &a.layer).unwrap();
        assert_eq!(
            (name.as_str(), bytes.as_slice()),
            ("x.o", &b"\x7fELF..."[..])
        );
        let config: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(
            config["config"]["Labels"]["io.ebpf.programs"],
            r#"{"xdp_pass":"xdp"}"#
        );
    }

    /// Issue 11: bpfman's Go loader takes only tar entries ending in `.o`; images bpfship pushed
    /// before (entry named as the file was) still unpack.
    #[test]
    fn object_entries_end_in_dot_o_and_older_layers_still_unpack() {
        for (file, entry) in [
            ("filter.elf", "filter.o"),
            ("filter", "filter.o"),
            ("x.bpf.o", "x.bpf.o"),
            (".hidden", ".hidden.o"),
        ] {
            assert_eq!(object_entry_name(file), entry, "{file}");
        }
        let p = package_ebpf(
            "filter.elf",
            b"\x7fELF...",
            &BTreeMap::new(),
            &BTreeMap::new(),
            EPOCH,
            &crate::index::Platform::host(),
            BTreeMap::new(),
        )
        .unwrap();
        let (name, _) = unpack_layer(&p.layer_media_type, &p.layer).unwrap();
        assert_eq!(name, "filter.o");
        let older = gzip(&single_file_tar("filter.elf", b"\x7fELF...").unwrap()).unwrap();
        let (name, bytes) = unpack_layer(OCI_LAYER_TAR_GZIP, &older).unwrap();
        assert_eq!(
            (name.as_str(), bytes.as_slice()),
            ("filter.elf", &b"\x7fELF..."[..])
        );
    }

    #[test]
    fn gzip_bomb_and_tricky_tars_are_refused() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = gzip(&zeros).unwrap();
        // 8 MiB of zeros is not a tar with one file: refused without unpacking beyond the cap
        assert!(unpack_layer(OCI_LAYER_TAR_GZIP, &bomb).is_err());
        let mut two = tar::Builder::new(Vec::new());
        for n in ["a", "b"] {
            let mut h = tar::Header::new_ustar();
            h.set_size(1);
            h.set_mode(0o644);
            two.append_data(&mut h, n, &b"x"[..]).unwrap();
        }
        let e = unpack_layer(OCI_LAYER_TAR, &two.into_inner().unwrap()).unwrap_err();
        assert!(e.to_string().contains("several files"), "{e}");
    }
}
