//! SARIF 2.1.0 output of `validate`, for code-scanning uploads (GitHub's `upload-sarif`).

use std::path::Path;

use bpfship_trust::content::{Findings, Inspection};
use bpfship_verifier::ebpf::Severity;
use serde_json::{Value, json};

fn result(rule: &str, level: &str, file: &Path, message: String) -> Value {
    json!({
        "ruleId": rule,
        "level": level,
        "message": { "text": message },
        "locations": [{ "physicalLocation": { "artifactLocation": { "uri": file.display().to_string() } } }],
    })
}

/// One SARIF log over every file's findings (`Err` = the file could not be read or parsed).
pub fn to_sarif<'a>(
    files: impl Iterator<Item = (&'a Path, Result<&'a Inspection, &'a str>)>,
) -> Value {
    let mut results = Vec::new();
    for (file, outcome) in files {
        match outcome {
            Err(e) => results.push(result("bpfship/unreadable", "error", file, e.to_owned())),
            Ok(i) => {
                match &i.findings {
                    Findings::Ebpf(r) => {
                        for d in &r.diagnostics {
                            let level = match d.severity {
                                Severity::Error => "error",
                                Severity::Warning => "warning",
                                Severity::Hint => "note",
                            };
                            let msg = match &d.section {
                                Some(s) => format!("[{s}] {}", d.message),
                                None => d.message.clone(),
                            };
                            results.push(result("bpfship/ebpf", level, file, msg));
                        }
                    }
                    Findings::Wasm(r) => {
                        if let Some(e) = &r.error {
                            results.push(result("bpfship/wasm", "error", file, e.clone()));
                        }
                    }
                }
                for v in &i.violations {
                    results.push(result(
                        &format!("bpfship/policy/{}", v.rule),
                        "error",
                        file,
                        v.message.clone(),
                    ));
                }
            }
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": { "name": "bpfship", "version": env!("CARGO_PKG_VERSION"), "informationUri": "https://github.com/bpfship/bpfship" } },
            "results": results,
        }],
    })
}
