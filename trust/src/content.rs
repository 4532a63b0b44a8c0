//! What an artifact's bytes are (eBPF ELF or WASM), what the validators say of them under a policy,
//! and how they are packaged for a registry.

use std::collections::BTreeMap;

use bpfship_registry::Platform;
use bpfship_registry::artifact::{self, Packaged};
use bpfship_verifier::digest::ReportDigest;
use bpfship_verifier::ebpf::{self, EbpfReport};
use bpfship_verifier::policy::{Policy, Violation, WasmRules};
use bpfship_verifier::wasm::{self, ExportList, WasmKind, WasmReport};
use serde::Serialize;

/// The validator's findings on one artifact.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Findings {
    Ebpf(EbpfReport),
    Wasm(WasmReport),
}

/// Findings plus what the policy refuses.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    #[serde(flatten)]
    pub findings: Findings,
    pub violations: Vec<Violation>,
}

impl Inspection {
    /// Valid and allowed by the policy.
    pub fn is_valid(&self) -> bool {
        let intrinsic = match &self.findings {
            Findings::Ebpf(r) => r.is_valid(),
            Findings::Wasm(r) => r.valid,
        };
        intrinsic && self.violations.is_empty()
    }

    /// One line per reason the artifact is refused (invalid findings and policy violations).
    pub fn refusals(&self) -> Vec<String> {
        let mut out: Vec<String> = match &self.findings {
            Findings::Ebpf(r) => r
                .diagnostics
                .iter()
                .filter(|d| d.severity == ebpf::Severity::Error)
                .map(|d| match &d.section {
                    Some(s) => format!("section {s}: {}", d.message),
                    None => d.message.clone(),
                })
                .collect(),
            Findings::Wasm(r) => r
                .error
                .iter()
                .map(|e| format!("invalid WASM: {e}"))
                .collect(),
        };
        out.extend(
            self.violations
                .iter()
                .map(|v| format!("policy {}: {}", v.rule, v.message)),
        );
        out
    }
}

/// Why bytes could not be inspected at all.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
    #[error(transparent)]
    Wasm(#[from] wasm::WasmError),
    #[error("neither an eBPF ELF object nor a WASM module (unknown magic bytes)")]
    Unknown,
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    #[error(
        "a {object}-endian eBPF object cannot serve {platform} (build big-endian platforms with clang -target bpfeb, little-endian ones with -target bpfel)"
    )]
    Endianness {
        platform: String,
        object: &'static str,
    },
}

/// Inspects bytes by their magic (ELF or WASM) and checks them against the policy, if any.
pub fn inspect(bytes: &[u8], policy: Option<&Policy>) -> Result<Inspection, ContentError> {
    inspect_with(bytes, policy, ReportDigest::Compute, ExportList::All)
}

/// [`inspect`], with the report's SHA-256 computed or left empty (for callers that never show
/// or store it), and a WASM module's exports all named or only the first ones (for a reader
/// shown a page of them).
pub fn inspect_with(
    bytes: &[u8],
    policy: Option<&Policy>,
    digest: ReportDigest,
    exports: ExportList,
) -> Result<Inspection, ContentError> {
    if bytes.starts_with(b"\x7fELF") {
        let report = ebpf::inspect_with(bytes, digest)?;
        let violations = policy
            .map(|p| ebpf::check_policy(&p.rules.ebpf, &report))
            .unwrap_or_default();
        Ok(Inspection {
            findings: Findings::Ebpf(report),
            violations,
        })
    } else if bytes.starts_with(b"\0asm") {
        let default_rules = WasmRules::default();
        let rules = policy.map_or(&default_rules, |p| &p.rules.wasm);
        let report = wasm::inspect_with(bytes, rules, digest, exports)?;
        let violations = if policy.is_some() {
            wasm::check_policy(rules, &report)
        } else {
            Vec::new()
        };
        Ok(Inspection {
            findings: Findings::Wasm(report),
            violations,
        })
    } else {
        Err(ContentError::Unknown)
    }
}

/// Packages inspected bytes for a registry (eBPF: bpfman image for `platform`, which must have the
/// object's byte order; WASM: TAG Runtime Wasm artifact), with bpfship's `dev.bpfship.*`
/// annotations recording what was validated.
pub fn package(
    file_name: &str,
    bytes: &[u8],
    inspection: &Inspection,
    policy: Option<&Policy>,
    platform: &Platform,
) -> Result<Packaged, ContentError> {
    let created = artifact::created_from_env()?;
    let mut annotations = BTreeMap::new();
    if let Some(p) = policy {
        annotations.insert("dev.bpfship.policy.digest".to_string(), p.digest.clone());
    }
    match &inspection.findings {
        Findings::Ebpf(r) => {
            let big_endian = bytes.get(5) == Some(&2); // EI_DATA = ELFDATA2MSB
            if big_endian != platform.big_endian() {
                return Err(ContentError::Endianness {
                    platform: platform.to_string(),
                    object: if big_endian { "big" } else { "little" },
                });
            }
            let programs: BTreeMap<String, String> = r
                .programs
                .iter()
                .map(|p| (p.name.clone(), crate::bpfman::program_type(&p.section)))
                .collect();
            let maps: BTreeMap<String, String> = r
                .maps
                .iter()
                .filter(|m| m.declared_in != "global_data")
                .map(|m| (m.name.clone(), crate::bpfman::map_type(&m.map_type)))
                .collect();
            let listing: Vec<String> = r
                .programs
                .iter()
                .map(|p| {
                    format!(
                        "{}:{}",
                        p.name,
                        p.program_type.as_deref().unwrap_or("unknown")
                    )
                })
                .collect();
            annotations.insert("dev.bpfship.elf.sha256".into(), r.elf_sha256.clone());
            annotations.insert("dev.bpfship.programs".into(), listing.join(","));
            annotations.insert("dev.bpfship.maps.abi".into(), ebpf::map_abi_hash(r));
            annotations.insert("dev.bpfship.btf".into(), r.btf.to_string());
            annotations.insert(
                "dev.bpfship.core.relocations".into(),
                r.core_relocations.to_string(),
            );
            annotations.insert(
                "org.opencontainers.image.title".into(),
                file_name.to_owned(),
            );
            Ok(artifact::package_ebpf(
                file_name,
                bytes,
                &programs,
                &maps,
                &created,
                platform,
                annotations,
            )?)
        }
        Findings::Wasm(r) => {
            annotations.insert("dev.bpfship.wasm.sha256".into(), r.sha256.clone());
            annotations.insert(
                "org.opencontainers.image.title".into(),
                file_name.to_owned(),
            );
            let component = (r.kind == WasmKind::Component).then(|| artifact::WasmComponent {
                imports: r.imports.iter().map(|i| i.name.clone()).collect(),
                exports: r.exports.iter().map(|e| e.name.clone()).collect(),
                target: None,
            });
            Ok(artifact::package_wasm(
                file_name,
                bytes,
                component.as_ref(),
                &created,
                annotations,
            ))
        }
    }
}
