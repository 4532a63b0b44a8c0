//! WASM module and component inspection and validation with an explicit feature set: the standard
//! features by default, `legacy_exceptions` and `threads` only when the policy allows them (never
//! `WasmFeatures::all()`, which accepts modules the spec says are invalid). Function bodies are
//! validated in parallel across the machine's cores.

use std::sync::{Mutex, mpsc};

use serde::Serialize;
use wasmparser::{
    Encoding, FuncToValidate, FuncValidatorAllocations, Parser, Payload, TypeRef, ValidPayload,
    Validator, ValidatorResources, WasmFeatures,
};

use crate::digest::{ReportDigest, sha256_digest};
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
    /// `func`, `table`, `memory`, `global`, `tag`…; for components `module`, `func`, `value`,
    /// `type`, `instance`, `component`. A static name: large modules export hundreds of thousands
    /// of symbols.
    pub kind: &'static str,
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

/// How many exports a report names. Large modules export hundreds of thousands of symbols: for
/// a reader shown a page of them, the first N are enough (`export_count` still counts them all,
/// and the exports the policy requires are named wherever they are, so its check holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportList {
    #[default]
    All,
    First(usize),
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
    /// Every export, or with [`ExportList::First`] the first ones and the required ones.
    pub exports: Vec<WasmExport>,
    /// How many exports there are, named in `exports` or not.
    pub export_count: usize,
    pub memories: Vec<WasmMemory>,
    pub functions: usize,
}

impl WasmReport {
    /// A report on `size` bytes with nothing found yet.
    fn empty(size: usize, opt_in_features: Vec<String>) -> Self {
        Self {
            sha256: String::new(),
            size,
            kind: WasmKind::Module,
            valid: false,
            error: None,
            opt_in_features,
            imports: Vec::new(),
            exports: Vec::new(),
            export_count: 0,
            memories: Vec::new(),
            functions: 0,
        }
    }
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

/// The lowercase name of an export's kind (what `format!("{:?}").to_lowercase()` gives).
fn external_kind_name(k: wasmparser::ExternalKind) -> &'static str {
    use wasmparser::ExternalKind as K;
    match k {
        K::Func => "func",
        K::FuncExact => "funcexact",
        K::Table => "table",
        K::Memory => "memory",
        K::Global => "global",
        K::Tag => "tag",
    }
}

/// The lowercase name of a component export's kind (what `format!("{:?}").to_lowercase()` gives).
fn component_kind_name(k: wasmparser::ComponentExternalKind) -> &'static str {
    use wasmparser::ComponentExternalKind as K;
    match k {
        K::Module => "module",
        K::Func => "func",
        K::Value => "value",
        K::Type => "type",
        K::Instance => "instance",
        K::Component => "component",
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
    inspect_with(bytes, rules, ReportDigest::Compute, ExportList::All)
}

/// [`inspect`], with the report's `sha256` computed or left empty, and all exports named or only
/// the first ones.
pub fn inspect_with(
    bytes: &[u8],
    rules: &WasmRules,
    digest: ReportDigest,
    exports: ExportList,
) -> Result<WasmReport, WasmError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(WasmError::NotWasm);
    }
    let features = features_for(rules)?;
    let mut report = WasmReport::empty(bytes.len(), rules.allow_features.clone());
    let listing = Listing {
        exports,
        required: &rules.required_exports,
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Function bodies go to the workers in batches while this thread goes on parsing: the module
    // sections, the SHA-256 and the bodies overlap instead of running one after the other.
    let (tx, rx) = mpsc::channel::<FuncBatch<'_>>();
    let rx = Mutex::new(rx);
    let hash = digest == ReportDigest::Compute;
    let (module_error, func_error) = std::thread::scope(|s| {
        // With a second core, a first helper takes work that needs no validator state while this
        // thread parses the sections before the code (no body to validate yet): the SHA-256 when
        // the report carries it, else the import/export/memory lists (a large module exports
        // hundreds of thousands of names). Then it joins the body validation.
        let first = (workers > 1).then(|| {
            s.spawn(|| {
                let early = if hash {
                    Early::Digest(sha256_digest(bytes))
                } else {
                    Early::Lists(collect_all(bytes, &listing))
                };
                (early, validate_batches(&rx))
            })
        });
        let collect_inline = hash || first.is_none();
        let helpers: Vec<_> = (2..workers)
            .map(|_| s.spawn(|| validate_batches(&rx)))
            .collect();
        let mut module_error = parse_module(
            bytes,
            features,
            &mut report,
            collect_inline.then_some(&listing),
            tx,
        );
        let mut errors = Vec::new();
        if hash && first.is_none() {
            report.sha256 = sha256_digest(bytes);
        }
        errors.push(validate_batches(&rx));
        for h in helpers {
            errors.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        if let Some(h) = first {
            let (early, error) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            errors.push(error);
            match early {
                Early::Digest(d) => report.sha256 = d,
                Early::Lists(lists) => {
                    report.imports = lists.imports;
                    report.exports = lists.exports;
                    report.export_count = lists.export_count;
                    report.memories = lists.memories;
                    module_error = earliest(module_error, lists.error);
                }
            }
        }
        let func_error = errors.into_iter().flatten().min_by_key(|e| e.0);
        (module_error, func_error)
    });
    // The first module-level error (offset, message) is compared with the function errors so the
    // verdict and message equal a serial validation's.
    let first = earliest(module_error, func_error);
    report.valid = first.is_none();
    report.error = first.map(|(offset, msg)| format!("{msg} (at offset {offset:#x})"));
    Ok(report)
}

/// The error at the lower offset (the first on a tie).
fn earliest(a: Option<(u64, String)>, b: Option<(u64, String)>) -> Option<(u64, String)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// What the first helper thread computes before it validates bodies.
enum Early {
    Digest(String),
    Lists(Lists),
}

/// The report's import, export and memory lists, and the first error met reading them.
struct Lists {
    imports: Vec<WasmImport>,
    exports: Vec<WasmExport>,
    export_count: usize,
    memories: Vec<WasmMemory>,
    error: Option<(u64, String)>,
}

/// Reads the top-level import, export and memory lists in a pass of its own (no validation).
fn collect_all(bytes: &[u8], listing: &Listing) -> Lists {
    let mut scratch = WasmReport::empty(bytes.len(), Vec::new());
    let mut depth = 0usize;
    let mut error = None;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = match payload {
            Ok(p) => p,
            Err(e) => {
                error = Some((e.offset(), e.message().to_owned()));
                break;
            }
        };
        if let Err(e) = collect(&payload, depth, &mut scratch, listing) {
            error = Some((e.offset(), e.message().to_owned()));
            break;
        }
        match &payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Lists {
        imports: scratch.imports,
        exports: scratch.exports,
        export_count: scratch.export_count,
        memories: scratch.memories,
        error,
    }
}

/// Function bodies are handed to the workers in batches of about this many bytes: large enough
/// that the queue costs nothing, small enough that the cores finish together.
const BATCH_BYTES: usize = 128 * 1024;

/// Parses and validates everything but the function bodies, which are sent to `tx` in batches;
/// fills in the report's kind and function count, and with a `listing` its imports, exports and
/// memories. Returns the first module-level error.
fn parse_module<'a>(
    bytes: &'a [u8],
    features: WasmFeatures,
    report: &mut WasmReport,
    listing: Option<&Listing>,
    tx: mpsc::Sender<FuncBatch<'a>>,
) -> Option<(u64, String)> {
    let mut validator = Validator::new_with_features(features);
    let mut batch = FuncBatch::new(features);
    let mut batch_bytes = 0usize;
    let mut depth = 0usize;
    let mut error = None;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = match payload {
            Ok(p) => p,
            Err(e) => {
                error = Some((e.offset(), e.message().to_owned()));
                break;
            }
        };
        if let Some(listing) = listing
            && let Err(e) = collect(&payload, depth, report, listing)
        {
            error = Some((e.offset(), e.message().to_owned()));
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
            Ok(ValidPayload::Func(func, body)) => {
                report.functions += 1;
                batch_bytes += body.as_bytes().len();
                // One handle on the module's resources per batch: the workers touch its shared
                // reference count once per batch, not twice per function.
                batch.resources.get_or_insert(func.resources);
                batch.funcs.push((func.index, func.ty, body));
                if batch_bytes >= BATCH_BYTES {
                    // The receivers live until every batch is drained: sending cannot fail.
                    let _ = tx.send(std::mem::replace(&mut batch, FuncBatch::new(features)));
                    batch_bytes = 0;
                }
            }
            Ok(_) => {}
            Err(e) => {
                error = Some((e.offset(), e.message().to_owned()));
                break;
            }
        }
    }
    if !batch.funcs.is_empty() {
        let _ = tx.send(batch);
    }
    error
}

/// Which exports a report names: see [`ExportList`].
struct Listing<'r> {
    exports: ExportList,
    required: &'r [String],
}

impl Listing<'_> {
    /// Whether the export `name` is named, `listed` being how many already are.
    fn names(&self, name: &str, listed: usize) -> bool {
        match self.exports {
            ExportList::All => true,
            ExportList::First(n) => listed < n || self.required.iter().any(|r| r == name),
        }
    }
}

/// Records imports, exports and memories of the top-level module or component.
fn collect(
    payload: &Payload,
    depth: usize,
    report: &mut WasmReport,
    listing: &Listing,
) -> wasmparser::Result<()> {
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
                report.export_count += 1;
                if listing.names(export.name, report.exports.len()) {
                    report.exports.push(WasmExport {
                        name: export.name.to_owned(),
                        kind: external_kind_name(export.kind),
                    });
                }
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
                report.export_count += 1;
                if listing.names(export.name.name, report.exports.len()) {
                    report.exports.push(WasmExport {
                        name: export.name.name.to_owned(),
                        kind: component_kind_name(export.kind),
                    });
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Function bodies for a worker: (function index, type index, body), with the module's resources.
struct FuncBatch<'a> {
    resources: Option<ValidatorResources>,
    features: WasmFeatures,
    funcs: Vec<(u32, u32, wasmparser::FunctionBody<'a>)>,
}

impl FuncBatch<'_> {
    fn new(features: WasmFeatures) -> Self {
        Self {
            resources: None,
            features,
            funcs: Vec::new(),
        }
    }
}

/// Validates batches of function bodies until the queue is closed and empty; returns the error
/// with the lowest offset among them, if any.
fn validate_batches(rx: &Mutex<mpsc::Receiver<FuncBatch<'_>>>) -> Option<(u64, String)> {
    let mut allocs = FuncValidatorAllocations::default();
    let mut first: Option<(u64, String)> = None;
    loop {
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(batch) = next else { return first };
        let Some(resources) = &batch.resources else {
            continue;
        };
        for (index, ty, body) in batch.funcs {
            let func = FuncToValidate {
                resources,
                index,
                ty,
                features: batch.features,
            };
            let mut v = func.into_validator(allocs);
            if let Err(e) = v.validate(&body)
                && first.as_ref().is_none_or(|f| e.offset() < f.0)
            {
                first = Some((e.offset(), e.message().to_owned()));
            }
            allocs = v.into_allocations();
        }
    }
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
