//! WASM module and component inspection and validation with an explicit feature set: the standard
//! features by default, `legacy_exceptions` and `threads` only when the policy allows them (never
//! `WasmFeatures::all()`, which accepts modules the spec says are invalid). Function bodies are
//! validated in parallel across the machine's cores.

use serde::Serialize;
use wasmparser::{
    Encoding, FuncValidatorAllocations, Parser, Payload, TypeRef, ValidPayload, Validator,
    WasmFeatures,
};

use crate::digest::sha256_digest;
use crate::policy::{Violation, WasmRules, glob_match};

/// Why the bytes are not WASM at all (validation failures are reported in `WasmReport`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WasmError {
    #[error("not a WASM module or component (no \\0asm header)")]
    NotWasm,
    #[error("unknown WASM feature \"{0}\" in policy (known opt-ins: legacy_exceptions, threads)")]
    UnknownFeature(String),
}

/// Core module or component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WasmKind {
    Module,
    Component,
}

/// One import: `module::name` and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WasmImport {
    pub module: String,
    pub name: String,
    pub kind: String,
}

/// One export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WasmExport {
    pub name: String,
    pub kind: String,
}

/// A declared memory (64 KiB pages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WasmMemory {
    pub initial_pages: u64,
    pub maximum_pages: Option<u64>,
    pub memory64: bool,
    pub shared: bool,
    pub imported: bool,
}

/// What the validator found in a WASM file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WasmReport {
    pub sha256: String,
    pub size: usize,
    pub kind: WasmKind,
    pub valid: bool,
    /// The first validation error, with its byte offset.
    pub error: Option<String>,
    /// Opt-in features enabled for this validation beyond the standard set.
    pub opt_in_features: Vec<String>,
    /// Top-level imports (for components: the component's own imports, module empty).
    pub imports: Vec<WasmImport>,
    pub exports: Vec<WasmExport>,
    pub memories: Vec<WasmMemory>,
    pub functions: usize,
}

/// The feature set a policy allows: standard features plus its opt-ins.
pub fn features_for(rules: &WasmRules) -> Result<WasmFeatures, WasmError> {
    let mut f = WasmFeatures::default();
    // wasmparser's defaults include threads; bpfship's standard set leaves both opt-ins off.
    f.set(WasmFeatures::THREADS, false);
    f.set(WasmFeatures::SHARED_EVERYTHING_THREADS, false);
    f.set(WasmFeatures::LEGACY_EXCEPTIONS, false);
    for name in &rules.allow_features {
        match name.as_str() {
            "legacy_exceptions" => f.set(WasmFeatures::LEGACY_EXCEPTIONS, true),
            "threads" => f.set(WasmFeatures::THREADS, true),
            other => return Err(WasmError::UnknownFeature(other.to_owned())),
        }
    }
    Ok(f)
}

fn kind_name(t: &TypeRef) -> &'static str {
    match t {
        TypeRef::Func(_) | TypeRef::FuncExact(_) => "func",
        TypeRef::Table(_) => "table",
        TypeRef::Memory(_) => "memory",
        TypeRef::Global(_) => "global",
        TypeRef::Tag(_) => "tag",
    }
}

fn memory(m: &wasmparser::MemoryType, imported: bool) -> WasmMemory {
    WasmMemory {
        initial_pages: m.initial,
        maximum_pages: m.maximum,
        memory64: m.memory64,
        shared: m.shared,
        imported,
    }
}

/// Inspects and validates WASM bytes under the policy's feature set.
pub fn inspect(bytes: &[u8], rules: &WasmRules) -> Result<WasmReport, WasmError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(WasmError::NotWasm);
    }
    let features = features_for(rules)?;
    let mut report = WasmReport {
        sha256: sha256_digest(bytes),
        size: bytes.len(),
        kind: WasmKind::Module,
        valid: false,
        error: None,
        opt_in_features: rules.allow_features.clone(),
        imports: Vec::new(),
        exports: Vec::new(),
        memories: Vec::new(),
        functions: 0,
    };
    let mut validator = Validator::new_with_features(features);
    let mut bodies = Vec::new();
    // The first module-level error (offset, message); function errors are compared against it so
    // the verdict and message equal a serial validation's.
    let mut module_error: Option<(u64, String)> = None;
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = match payload {
            Ok(p) => p,
            Err(e) => {
                module_error = Some((e.offset(), e.message().to_owned()));
                break;
            }
        };
        if let Err(e) = collect(&payload, depth, &mut report) {
            module_error = Some((e.offset(), e.message().to_owned()));
            break;
        }
        match &payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && *encoding == Encoding::Component {
                    report.kind = WasmKind::Component;
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        match validator.payload(&payload) {
            Ok(ValidPayload::Func(func, body)) => bodies.push((func, body)),
            Ok(_) => {}
            Err(e) => {
                module_error = Some((e.offset(), e.message().to_owned()));
                break;
            }
        }
    }
    report.functions = bodies.len();
    let func_error = validate_bodies(bodies);
    let first = match (module_error, func_error) {
        (Some(m), Some(f)) => Some(if f.0 < m.0 { f } else { m }),
        (m, f) => m.or(f),
    };
    report.valid = first.is_none();
    report.error = first.map(|(offset, msg)| format!("{msg} (at offset {offset:#x})"));
    Ok(report)
}

/// Records imports, exports and memories of the top-level module or component.
fn collect(payload: &Payload, depth: usize, report: &mut WasmReport) -> wasmparser::Result<()> {
    if depth != 1 {
        return Ok(());
    }
    match payload {
        Payload::ImportSection(s) => {
            for import in s.clone().into_imports() {
                let import = import?;
                if let TypeRef::Memory(m) = &import.ty {
                    report.memories.push(memory(m, true));
                }
                report.imports.push(WasmImport {
                    module: import.module.to_owned(),
                    name: import.name.to_owned(),
                    kind: kind_name(&import.ty).to_owned(),
                });
            }
        }
        Payload::ExportSection(s) => {
            for export in s.clone() {
                let export = export?;
                report.exports.push(WasmExport {
                    name: export.name.to_owned(),
                    kind: format!("{:?}", export.kind).to_lowercase(),
                });
            }
        }
        Payload::MemorySection(s) => {
            for m in s.clone() {
                report.memories.push(memory(&m?, false));
            }
        }
        Payload::ComponentImportSection(s) => {
            for import in s.clone() {
                let import = import?;
                report.imports.push(WasmImport {
                    module: String::new(),
                    name: import.name.name.to_owned(),
                    kind: format!("{:?}", import.ty)
                        .split('(')
                        .next()
                        .unwrap_or("")
                        .to_lowercase(),
                });
            }
        }
        Payload::ComponentExportSection(s) => {
            for export in s.clone() {
                let export = export?;
                report.exports.push(WasmExport {
                    name: export.name.name.to_owned(),
                    kind: format!("{:?}", export.kind).to_lowercase(),
                });
            }
        }
        _ => {}
    }
    Ok(())
}

type FuncJob<'a> = (
    wasmparser::FuncToValidate<wasmparser::ValidatorResources>,
    wasmparser::FunctionBody<'a>,
);

/// Validates function bodies on all cores; returns the error with the lowest offset, if any.
fn validate_bodies(bodies: Vec<FuncJob<'_>>) -> Option<(u64, String)> {
    if bodies.is_empty() {
        return None;
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(bodies.len());
    let validate_chunk = |chunk: Vec<FuncJob<'_>>| {
        let mut allocs = FuncValidatorAllocations::default();
        let mut first: Option<(u64, String)> = None;
        for (func, body) in chunk {
            let mut v = func.into_validator(allocs);
            if let Err(e) = v.validate(&body)
                && first.as_ref().is_none_or(|f| e.offset() < f.0)
            {
                first = Some((e.offset(), e.message().to_owned()));
            }
            allocs = v.into_allocations();
        }
        first
    };
    if workers <= 1 {
        return validate_chunk(bodies);
    }
    // Interleave functions across workers so big and small bodies spread evenly.
    let mut chunks: Vec<Vec<FuncJob<'_>>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, job) in bodies.into_iter().enumerate() {
        chunks[i % workers].push(job);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| s.spawn(move || validate_chunk(c)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .min_by_key(|e| e.0)
    })
}

/// Checks a report against a policy's WASM rules.
pub fn check_policy(rules: &WasmRules, report: &WasmReport) -> Vec<Violation> {
    let mut out = Vec::new();
    if rules.restrict_imports {
        for i in &report.imports {
            let full = format!("{}::{}", i.module, i.name);
            let full = full.trim_start_matches("::");
            if !rules.allowed_imports.iter().any(|p| glob_match(p, full)) {
                out.push(Violation {
                    rule: "wasm.allowed_imports".into(),
                    message: format!(
                        "import {full} ({}) is not in the policy's allow-list",
                        i.kind
                    ),
                });
            }
        }
    }
    if let Some(max) = rules.max_memory_pages {
        for m in &report.memories {
            let declared = m
                .maximum_pages
                .unwrap_or(m.initial_pages)
                .max(m.initial_pages);
            if declared > max {
                out.push(Violation {
                    rule: "wasm.max_memory_pages".into(),
                    message: format!(
                        "memory declares {declared} pages, more than the {max} allowed"
                    ),
                });
            }
        }
    }
    for e in &rules.required_exports {
        if !report.exports.iter().any(|x| &x.name == e) {
            out.push(Violation {
                rule: "wasm.required_exports".into(),
                message: format!("required export {e} is missing"),
            });
        }
    }
    out
}
