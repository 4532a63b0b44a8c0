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
    /// How many exports the module declares (its export section's count), named in `exports` or
    /// not.
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
    // A core module on several cores is validated by two passes at once (see `Pass`): this thread
    // validates the sections before the code, the export section included, while a helper
    // validates all but that section and queues the function bodies, so that body validation
    // starts without waiting for a large export section (duckdb-wasm's: 7 MB, 75,000 names).
    // Otherwise this thread validates the whole module and queues the bodies itself.
    let split = workers > 1 && Parser::is_core_wasm(bytes);
    let (tx, rx) = mpsc::channel::<FuncBatch<'_>>();
    let rx = &Mutex::new(rx);
    let (module_error, func_error) = std::thread::scope(|s| {
        let (pass, bodies_pass) = if split {
            let bodies = s.spawn(move || {
                let parsed = parse_module(bytes, features, Pass::WithoutEarlyExports(tx), None);
                (parsed, validate_batches(rx, features))
            });
            (Pass::UntilCode, Some(bodies))
        } else {
            (Pass::Whole(tx), None)
        };
        let helpers: Vec<_> = (1 + usize::from(split)..workers)
            .map(|_| s.spawn(|| validate_batches(rx, features)))
            .collect();
        let parsed = parse_module(bytes, features, pass, Some((&listing, &mut report)));
        if digest == ReportDigest::Compute {
            report.sha256 = sha256_digest(bytes);
        }
        let mut failures = validate_batches(rx, features);
        for h in helpers {
            failures.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        let mut module_error = parsed.error;
        let mut full_resources = None;
        report.functions = parsed.functions;
        report.kind = parsed.kind;
        if let Some(h) = bodies_pass {
            let (bodies, more) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            failures.extend(more);
            module_error = earliest(module_error, bodies.error);
            report.functions = bodies.functions;
            full_resources = parsed.resources;
        }
        // Bodies do not overlap: the first failing one holds the first error. After the split
        // passes, a failure is confirmed against the whole module's resources.
        failures.sort_by_key(|f| f.body.range().start);
        let func_error = match &full_resources {
            Some(resources) => {
                let mut validator = BodyValidator::new(features);
                failures
                    .iter()
                    .find_map(|f| validator.validate(resources, f.index, f.ty, &f.body).err())
            }
            None => failures.into_iter().next().map(|f| f.error),
        };
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

/// Function bodies are handed to the workers in batches of about this many bytes: large enough
/// that the queue costs nothing, small enough that the cores finish together.
const BATCH_BYTES: usize = 128 * 1024;

/// Which part of a module a [`parse_module`] pass validates, and where the bodies go.
enum Pass<'a> {
    /// All of it; the function bodies are queued on the sender.
    Whole(mpsc::Sender<FuncBatch<'a>>),
    /// The sections before the code, the export section included; stops at the first function
    /// body, keeping the module's resources to check failed bodies again.
    UntilCode,
    /// All but an export section before the code; the bodies are queued on the sender. Bodies
    /// are then validated against resources that lack the function references the exports
    /// declare, which only `ref.func` consults: a body valid here is valid, and a body that
    /// fails is checked again against the whole module's resources.
    WithoutEarlyExports(mpsc::Sender<FuncBatch<'a>>),
}

/// What a [`parse_module`] pass found.
struct Parsed {
    /// The first module-level error.
    error: Option<(u64, String)>,
    functions: usize,
    kind: WasmKind,
    /// With [`Pass::UntilCode`], the module's resources when the code section was reached.
    resources: Option<ValidatorResources>,
}

/// Parses and validates a module as `pass` says, all but the function bodies, which are queued
/// in batches; with `lists`, records the report's imports, exports and memories.
fn parse_module<'a>(
    bytes: &'a [u8],
    features: WasmFeatures,
    pass: Pass<'a>,
    mut lists: Option<(&Listing, &mut WasmReport)>,
) -> Parsed {
    let mut validator = Validator::new_with_features(features);
    let mut parsed = Parsed {
        error: None,
        functions: 0,
        kind: WasmKind::Module,
        resources: None,
    };
    let mut batch = FuncBatch::default();
    let mut batch_bytes = 0usize;
    let mut depth = 0usize;
    let mut code_seen = false;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = match payload {
            Ok(p) => p,
            Err(e) => {
                parsed.error = Some(located(&e));
                break;
            }
        };
        if let Some((listing, report)) = &mut lists
            && let Err(e) = collect(&payload, depth, report, listing)
        {
            parsed.error = Some(located(&e));
            break;
        }
        match &payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && *encoding == Encoding::Component {
                    parsed.kind = WasmKind::Component;
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CodeSectionStart { .. } => code_seen = true,
            Payload::ExportSection(_)
                if !code_seen && matches!(pass, Pass::WithoutEarlyExports(_)) =>
            {
                continue;
            }
            _ => {}
        }
        match validator.payload(&payload) {
            Ok(ValidPayload::Func(func, body)) => {
                parsed.functions += 1;
                let tx = match &pass {
                    Pass::UntilCode => {
                        parsed.resources = Some(func.resources);
                        break;
                    }
                    Pass::Whole(tx) | Pass::WithoutEarlyExports(tx) => tx,
                };
                batch_bytes += body.as_bytes().len();
                // One handle on the module's resources per batch: the workers touch its shared
                // reference count once per batch, not twice per function.
                batch.resources.get_or_insert(func.resources);
                batch.funcs.push((func.index, func.ty, body));
                if batch_bytes >= BATCH_BYTES {
                    // The receivers live until every batch is drained: sending cannot fail.
                    let _ = tx.send(std::mem::take(&mut batch));
                    batch_bytes = 0;
                }
            }
            Ok(_) => {}
            Err(e) => {
                parsed.error = Some(located(&e));
                break;
            }
        }
    }
    if let Pass::Whole(tx) | Pass::WithoutEarlyExports(tx) = &pass
        && !batch.funcs.is_empty()
    {
        let _ = tx.send(batch);
    }
    parsed
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

    /// Whether no further export can be named once `listed` are (the rest need not be read).
    fn complete(&self, listed: usize) -> bool {
        matches!(self.exports, ExportList::First(n) if listed >= n && self.required.is_empty())
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
            report.export_count += s.count() as usize;
            for export in s.clone() {
                if listing.complete(report.exports.len()) {
                    break;
                }
                let export = export?;
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
            report.export_count += s.count() as usize;
            for export in s.clone() {
                if listing.complete(report.exports.len()) {
                    break;
                }
                let export = export?;
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
#[derive(Default)]
struct FuncBatch<'a> {
    resources: Option<ValidatorResources>,
    funcs: Vec<(u32, u32, wasmparser::FunctionBody<'a>)>,
}

/// A function body that failed validation, and the error.
struct FuncFailure<'a> {
    index: u32,
    ty: u32,
    body: wasmparser::FunctionBody<'a>,
    error: (u64, String),
}

/// Validates function bodies one after another under one feature set, reusing its allocations.
struct BodyValidator {
    features: WasmFeatures,
    allocs: FuncValidatorAllocations,
}

impl BodyValidator {
    fn new(features: WasmFeatures) -> Self {
        Self {
            features,
            allocs: FuncValidatorAllocations::default(),
        }
    }

    /// Validates the body of function `index` (of type `ty`) against `resources`.
    fn validate(
        &mut self,
        resources: &ValidatorResources,
        index: u32,
        ty: u32,
        body: &wasmparser::FunctionBody<'_>,
    ) -> Result<(), (u64, String)> {
        let func = FuncToValidate {
            resources,
            index,
            ty,
            features: self.features,
        };
        let mut v = func.into_validator(std::mem::take(&mut self.allocs));
        let result = v.validate(body).map_err(|e| located(&e));
        self.allocs = v.into_allocations();
        result
    }
}

/// Validates batches of function bodies until the queue is closed and empty; returns the
/// failures.
fn validate_batches<'a>(
    rx: &Mutex<mpsc::Receiver<FuncBatch<'a>>>,
    features: WasmFeatures,
) -> Vec<FuncFailure<'a>> {
    let mut validator = BodyValidator::new(features);
    let mut failures = Vec::new();
    loop {
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(batch) = next else { return failures };
        let Some(resources) = &batch.resources else {
            continue;
        };
        for (index, ty, body) in batch.funcs {
            if let Err(error) = validator.validate(resources, index, ty, &body) {
                failures.push(FuncFailure {
                    index,
                    ty,
                    body,
                    error,
                });
            }
        }
    }
}

/// A wasmparser error as (offset, message).
fn located(e: &wasmparser::BinaryReaderError) -> (u64, String) {
    (e.offset(), e.message().to_owned())
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
