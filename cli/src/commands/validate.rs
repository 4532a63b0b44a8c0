//! `bpfship validate FILE...`: inspect eBPF objects and WASM modules, check them against a policy
//! and, with `--kernel`, against the running kernel's verifier.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bpfship_verifier::policy::Policy;
use serde::Serialize;

use crate::exit::{CmdResult, Failure};
use crate::input_file::InputFile;
use crate::output::{OutputFormat, print_json};
use bpfship_kernel::probe::{KernelVerdict, ProgramVerdict, probe_object};
use bpfship_trust::content::Findings;
use bpfship_trust::content::{Inspection, inspect_with};
use bpfship_verifier::digest::ReportDigest;
use bpfship_verifier::wasm::ExportList;

#[derive(clap::Args)]
pub struct Args {
    /// eBPF ELF objects (.o) and WASM modules (.wasm) to validate.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Policy file whose eBPF/WASM rules apply (policies/README.md).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Also load each eBPF program through the running kernel's verifier (not attached; root).
    #[arg(long)]
    kernel: bool,
}

/// What a report computes beyond the verdict: what the output format shows.
#[derive(Clone, Copy)]
struct Detail {
    digest: ReportDigest,
    exports: ExportList,
}

/// The verdict on one file.
#[derive(Serialize)]
struct FileResult {
    file: PathBuf,
    valid: bool,
    #[serde(flatten)]
    outcome: Outcome,
    /// With `--kernel`: each program's verdict from the running kernel, or why none was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel: Option<KernelOutcome>,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum KernelOutcome {
    Programs(Vec<ProgramVerdict>),
    NotLoaded(String),
}

/// `--output json`: serialized straight from the results (no intermediate `serde_json::Value`
/// copy of reports that can list hundreds of thousands of exports).
#[derive(Serialize)]
struct JsonOutput<'a> {
    files: &'a [FileResult],
    policy_digest: Option<&'a str>,
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
    // The text report shows no digest and a page of exports: the rest is computed only for the
    // formats that carry it.
    let detail = match out {
        OutputFormat::Text => Detail {
            digest: ReportDigest::Skip,
            exports: ExportList::First(crate::render::LISTED),
        },
        _ => Detail {
            digest: ReportDigest::Compute,
            exports: ExportList::All,
        },
    };
    if args.kernel {
        bpfship_kernel::bpf_available()
            .map_err(|e| anyhow::anyhow!("--kernel needs root (or CAP_BPF): {e}"))?;
    }
    let results = validate_all(&args.files, policy.as_ref(), detail, args.kernel);
    match out {
        OutputFormat::Json => print_json(&JsonOutput {
            files: &results,
            policy_digest: policy.as_ref().map(|p| p.digest.as_str()),
        })?,
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
                        crate::render::inspection(&r.file.display().to_string(), rep, &mut text);
                        render_kernel(r.kernel.as_ref(), &mut text);
                    }
                    Outcome::Error(e) => {
                        text.push_str(&format!("{}: error: {e}\n", r.file.display()))
                    }
                }
            }
            out!("{text}")?;
        }
    }
    // The report is on stdout already: a failure adds only its stderr line.
    let reported = |f: Failure| match out {
        OutputFormat::Text => f,
        _ => Failure::Reported(Box::new(f)),
    };
    if results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Error(_)))
    {
        return Err(reported(Failure::Error(anyhow::anyhow!(
            "{} of {} files could not be read or parsed",
            results
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Error(_)))
                .count(),
            results.len()
        ))));
    }
    let invalid = results.iter().filter(|r| !r.valid).count();
    let total = results.len();
    // The process exits next: the reports are left to it rather than freed name by name (a large
    // module's report holds hundreds of thousands of strings, milliseconds of frees).
    std::mem::forget(results);
    if invalid > 0 {
        return Err(reported(crate::rejected(anyhow::anyhow!(
            "{invalid} of {total} files invalid or refused by policy"
        ))));
    }
    Ok(())
}

/// Validates every file, spreading them over the machine's cores; results keep the input order.
fn validate_all(
    files: &[PathBuf],
    policy: Option<&Policy>,
    detail: Detail,
    kernel: bool,
) -> Vec<FileResult> {
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
                        .map(|f| validate_one(f, policy, detail, kernel))
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

/// Loads a valid eBPF object's programs through the kernel verifier — the very bytes that were
/// validated, never a second read of the file; a rejection makes the file invalid.
fn check_in_kernel(r: &mut FileResult, bytes: &[u8]) {
    let Outcome::Report(rep) = &r.outcome else {
        return;
    };
    let Findings::Ebpf(report) = &rep.findings else {
        return;
    };
    if !report.is_valid() {
        r.kernel = Some(KernelOutcome::NotLoaded(
            "not loaded: the object has errors the kernel loader cannot be trusted with".into(),
        ));
        return;
    }
    let targets = report
        .programs
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.attach_target.clone()?)))
        .collect();
    match probe_object(bytes, &targets, Path::new("/sys/fs/bpf")) {
        Ok(verdicts) => {
            if verdicts
                .iter()
                .any(|v| matches!(v.verdict, KernelVerdict::Rejected { .. }))
            {
                r.valid = false;
            }
            r.kernel = Some(KernelOutcome::Programs(verdicts));
        }
        Err(e) => {
            r.valid = false;
            r.kernel = Some(KernelOutcome::NotLoaded(format!(
                "the kernel loader refused the object: {e}"
            )));
        }
    }
}

fn render_kernel(kernel: Option<&KernelOutcome>, text: &mut String) {
    match kernel {
        None => {}
        Some(KernelOutcome::NotLoaded(why)) => text.push_str(&format!("  kernel: {why}\n")),
        Some(KernelOutcome::Programs(verdicts)) => {
            for v in verdicts {
                match &v.verdict {
                    KernelVerdict::Accepted => text.push_str(&format!(
                        "  kernel: {} accepted by the verifier\n",
                        v.program
                    )),
                    KernelVerdict::Skipped { reason } => {
                        text.push_str(&format!("  kernel: {} skipped: {reason}\n", v.program))
                    }
                    KernelVerdict::Rejected { reason, log_tail } => {
                        text.push_str(&format!("  kernel: {} REJECTED: {reason}\n", v.program));
                        for l in log_tail.lines() {
                            text.push_str(&format!("    | {l}\n"));
                        }
                    }
                }
            }
        }
    }
}

fn validate_one(file: &Path, policy: Option<&Policy>, detail: Detail, kernel: bool) -> FileResult {
    let bytes =
        match InputFile::open(file).with_context(|| format!("cannot read {}", file.display())) {
            Ok(b) => b,
            Err(e) => return error_result(file, &e),
        };
    let r = match inspect_with(&bytes, policy, detail.digest, detail.exports) {
        Ok(report) => {
            let mut r = FileResult {
                file: file.to_owned(),
                valid: report.is_valid(),
                outcome: Outcome::Report(Box::new(report)),
                kernel: None,
            };
            if kernel {
                check_in_kernel(&mut r, &bytes);
            }
            r
        }
        Err(e) => error_result(file, &e.into()),
    };
    // A verdict on bytes the file no longer holds is no verdict.
    match bytes.changed() {
        Ok(false) => r,
        Ok(true) => error_result(
            file,
            &anyhow::anyhow!("the file changed while it was being validated; run again"),
        ),
        Err(e) => error_result(
            file,
            &anyhow::Error::new(e).context("cannot stat the file again"),
        ),
    }
}

fn error_result(file: &Path, e: &anyhow::Error) -> FileResult {
    FileResult {
        file: file.to_owned(),
        valid: false,
        outcome: Outcome::Error(crate::exit::one_line(e)),
        kernel: None,
    }
}
