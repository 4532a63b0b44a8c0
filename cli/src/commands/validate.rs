//! `bpfship validate FILE...`: inspect eBPF objects and WASM modules, check them against a policy
//! and, with `--kernel`, against the running kernel's verifier.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bpfship_verifier::policy::Policy;
use serde::Serialize;

use crate::exit::{CmdResult, Failure};
use crate::output::{OutputFormat, print_json};
use bpfship_trust::content::{Inspection, inspect};

#[derive(clap::Args)]
pub struct Args {
    /// eBPF ELF objects (.o) and WASM modules (.wasm) to validate.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Policy file whose eBPF/WASM rules apply (policies/README.md).
    #[arg(long)]
    policy: Option<PathBuf>,
}

/// The verdict on one file.
#[derive(Serialize)]
struct FileResult {
    file: PathBuf,
    valid: bool,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Report(Box<Inspection>),
    Error(String),
}

pub fn run(args: Args, out: OutputFormat) -> CmdResult {
    let policy = args
        .policy
        .as_deref()
        .map(Policy::load)
        .transpose()
        .map_err(Failure::from)?;
    let results = validate_all(&args.files, policy.as_ref());
    match out {
        OutputFormat::Json => print_json(&serde_json::json!({
            "policy_digest": policy.as_ref().map(|p| &p.digest),
            "files": results,
        }))?,
        OutputFormat::Sarif => print_json(&crate::sarif::to_sarif(results.iter().map(|r| {
            (
                r.file.as_path(),
                match &r.outcome {
                    Outcome::Report(rep) => Ok(rep.as_ref()),
                    Outcome::Error(e) => Err(e.as_str()),
                },
            )
        })))?,
        OutputFormat::Text => {
            let mut text = String::new();
            for r in &results {
                match &r.outcome {
                    Outcome::Report(rep) => {
                        crate::render::inspection(&r.file.display().to_string(), rep, &mut text)
                    }
                    Outcome::Error(e) => {
                        text.push_str(&format!("{}: error: {e}\n", r.file.display()))
                    }
                }
            }
            print!("{text}");
        }
    }
    if results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Error(_)))
    {
        return Err(Failure::Error(anyhow::anyhow!(
            "{} of {} files could not be read or parsed",
            results
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Error(_)))
                .count(),
            results.len()
        )));
    }
    let invalid = results.iter().filter(|r| !r.valid).count();
    if invalid > 0 {
        return Err(crate::rejected(anyhow::anyhow!(
            "{invalid} of {} files invalid or refused by policy",
            results.len()
        )));
    }
    Ok(())
}

/// Validates every file, spreading them over the machine's cores; results keep the input order.
fn validate_all(files: &[PathBuf], policy: Option<&Policy>) -> Vec<FileResult> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    let chunk = files.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|f| validate_one(f, policy))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn validate_one(file: &Path, policy: Option<&Policy>) -> FileResult {
    let outcome = std::fs::read(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .and_then(|bytes| Ok(inspect(&bytes, policy)?));
    match outcome {
        Ok(report) => FileResult {
            file: file.to_owned(),
            valid: report.is_valid(),
            outcome: Outcome::Report(Box::new(report)),
        },
        Err(e) => FileResult {
            file: file.to_owned(),
            valid: false,
            outcome: Outcome::Error(format!("{e:#}")),
        },
    }
}
