//! Text rendering of findings for people (JSON output serializes the same structures).

use std::fmt::Write as _;

use bpfship_trust::content::{Findings, Inspection};
use bpfship_verifier::ebpf::Severity;

/// Appends a readable report of `inspection` for `name`.
pub fn inspection(name: &str, inspection: &Inspection, out: &mut String) {
    let verdict = if inspection.is_valid() {
        "valid"
    } else {
        "INVALID"
    };
    match &inspection.findings {
        Findings::Ebpf(r) => {
            let _ = writeln!(
                out,
                "{name}: {verdict} eBPF object — license {}, BTF {}, {} program(s), {} map(s){}",
                r.license
                    .as_deref()
                    .map_or("(none)".to_string(), |l| format!("\"{l}\"")),
                if r.btf { "yes" } else { "no" },
                r.programs.len(),
                r.maps.len(),
                if r.core_relocations > 0 {
                    format!(", {} CO-RE relocations", r.core_relocations)
                } else {
                    String::new()
                }
            );
            for p in &r.programs {
                let _ = writeln!(
                    out,
                    "  program {} [{}] type {}{} — {} insns; helpers: {}",
                    p.name,
                    p.section,
                    p.program_type.as_deref().unwrap_or("unknown"),
                    p.attach_target
                        .as_deref()
                        .map_or(String::new(), |t| format!(" → {t}")),
                    p.instructions,
                    if p.helpers.is_empty() {
                        "none".to_string()
                    } else {
                        p.helpers.join(", ")
                    }
                );
            }
            for m in &r.maps {
                let _ = writeln!(
                    out,
                    "  map {} {} key {} value {} max_entries {} pinning {}",
                    m.name,
                    m.map_type,
                    opt(m.key_size),
                    opt(m.value_size),
                    opt(m.max_entries),
                    m.pinning
                );
            }
            for d in &r.diagnostics {
                let level = match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                    Severity::Hint => "hint",
                };
                let at = d
                    .section
                    .as_deref()
                    .map_or(String::new(), |s| format!(" [{s}]"));
                let _ = writeln!(out, "  {level}{at}: {}", d.message);
            }
        }
        Findings::Wasm(r) => {
            let _ = writeln!(
                out,
                "{name}: {verdict} WASM {:?} — {} bytes, {} function(s), {} import(s), {} export(s)",
                r.kind,
                r.size,
                r.functions,
                r.imports.len(),
                r.export_count
            );
            if let Some(e) = &r.error {
                let _ = writeln!(out, "  error: {e}");
            }
            for i in r.imports.iter().take(LISTED) {
                let _ = writeln!(out, "  import {}::{} ({})", i.module, i.name, i.kind);
            }
            more(out, "import", r.imports.len());
            for e in r.exports.iter().take(LISTED) {
                let _ = writeln!(out, "  export {} ({})", e.name, e.kind);
            }
            more(out, "export", r.export_count);
            for m in &r.memories {
                let _ = writeln!(
                    out,
                    "  memory {} pages, max {}{}{}",
                    m.initial_pages,
                    opt(m.maximum_pages),
                    if m.shared { ", shared" } else { "" },
                    if m.imported { ", imported" } else { "" }
                );
            }
        }
    }
    for v in &inspection.violations {
        let _ = writeln!(out, "  policy {}: {}", v.rule, v.message);
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Imports/exports listed in the text report; `--output json` lists them all (a large module
/// such as duckdb-wasm exports 75,000 symbols: a page of them helps nobody).
pub const LISTED: usize = 50;

fn more(out: &mut String, what: &str, total: usize) {
    if total > LISTED {
        let _ = writeln!(
            out,
            "  … and {} more {what}s (--output json lists all {total})",
            total - LISTED
        );
    }
}
