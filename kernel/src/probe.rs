//! `bpfship validate --kernel`: loads every program of an object through the running kernel's
//! verifier, without attaching anything, and reports each verdict with the log's tail.

use std::collections::BTreeMap;
use std::path::Path;

use aya::programs::{Program, ProgramError};
use serde::Serialize;

/// The kernel's verdict on one program.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum KernelVerdict {
    /// Loaded and verified (then unloaded).
    Accepted,
    /// The verifier or the kernel refused it.
    Rejected { reason: String, log_tail: String },
    /// Not loadable on its own (needs a target program), or not attempted.
    Skipped { reason: String },
}

/// One program's result.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramVerdict {
    pub program: String,
    #[serde(flatten)]
    pub verdict: KernelVerdict,
}

fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn verdict(result: Result<(), ProgramError>, hint: Option<&str>) -> KernelVerdict {
    match result {
        Ok(()) => KernelVerdict::Accepted,
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            let mut reason = io_error.to_string();
            if io_error.raw_os_error() == Some(libc::EPERM)
                && let Some(h) = hint
            {
                reason.push_str(&format!(" ({h})"));
            }
            KernelVerdict::Rejected {
                reason,
                log_tail: log_tail(&verifier_log.to_string(), 12),
            }
        }
        Err(e) => KernelVerdict::Rejected {
            reason: super::error_chain(&e),
            log_tail: String::new(),
        },
    }
}

/// Loads each program of `elf` in the kernel (maps pinned by name go to a private directory
/// under `pin_dir`, removed afterwards). `attach_targets` maps program names to the target
/// their section names (`fentry/<fn>`, `lsm/<hook>`, `tp_btf/<tp>`), needed to load those types.
/// The object must have passed the validator first (aya-obj is not safe on arbitrary bytes; a
/// panic in it is caught and reported).
pub fn probe_object(
    elf: &[u8],
    attach_targets: &BTreeMap<String, String>,
    pin_dir: &Path,
) -> Result<Vec<ProgramVerdict>, super::KernelError> {
    let dir = pin_dir.join(format!(
        "probe-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let dir = std::path::PathBuf::from(dir.to_string_lossy().replace(['(', ')', ' '], ""));
    std::fs::create_dir_all(&dir).map_err(|e| super::KernelError::Io(dir.clone(), e))?;
    let result = probe_in(elf, attach_targets, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn probe_in(
    elf: &[u8],
    attach_targets: &BTreeMap<String, String>,
    dir: &Path,
) -> Result<Vec<ProgramVerdict>, super::KernelError> {
    let elf = match super::rename::for_aya(elf).map_err(super::KernelError::Object)? {
        Some((copy, _)) => std::borrow::Cow::Owned(copy),
        None => std::borrow::Cow::Borrowed(elf),
    };
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        aya::EbpfLoader::new()
            .default_map_pin_directory(dir)
            .load(&elf)
    }));
    let mut ebpf = match loaded {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return Err(super::KernelError::Object(super::error_chain(&e))),
        Err(_) => return Err(super::KernelError::Object("the ELF parser panicked".into())),
    };
    let btf = aya::Btf::from_sys_fs().ok();
    let btf_hint = "this kernel or its virtualisation refuses BTF-attached program types";
    let mut out = Vec::new();
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    for name in names {
        let Some(prog) = ebpf.program_mut(&name) else {
            continue;
        };
        let target = attach_targets.get(&name).map(String::as_str);
        let with_btf =
            |f: &mut dyn FnMut(&str, &aya::Btf) -> Result<(), ProgramError>| match (target, &btf) {
                (Some(t), Some(b)) => verdict(f(t, b), Some(btf_hint)),
                (None, _) => KernelVerdict::Skipped {
                    reason: "no attach target in the section name".into(),
                },
                (_, None) => KernelVerdict::Skipped {
                    reason: "the kernel has no BTF at /sys/kernel/btf/vmlinux".into(),
                },
            };
        let v = match prog {
            Program::Xdp(p) => verdict(p.load(), None),
            Program::SchedClassifier(p) => verdict(p.load(), None),
            Program::TracePoint(p) => verdict(p.load(), None),
            Program::SocketFilter(p) => verdict(p.load(), None),
            Program::KProbe(p) => verdict(p.load(), None),
            Program::UProbe(p) => verdict(p.load(), None),
            Program::CgroupSkb(p) => verdict(p.load(), None),
            Program::SockOps(p) => verdict(p.load(), None),
            Program::SkMsg(p) => verdict(p.load(), None),
            Program::SkSkb(p) => verdict(p.load(), None),
            Program::CgroupSockAddr(p) => verdict(p.load(), None),
            Program::CgroupSysctl(p) => verdict(p.load(), None),
            Program::CgroupSockopt(p) => verdict(p.load(), None),
            Program::RawTracePoint(p) => verdict(p.load(), None),
            Program::PerfEvent(p) => verdict(p.load(), None),
            Program::LircMode2(p) => verdict(p.load(), None),
            Program::SkLookup(p) => verdict(p.load(), None),
            Program::CgroupSock(p) => verdict(p.load(), None),
            Program::CgroupDevice(p) => verdict(p.load(), None),
            Program::FlowDissector(p) => verdict(p.load(), None),
            Program::SkReuseport(p) => verdict(p.load(), None),
            Program::FEntry(p) => with_btf(&mut |t, b| p.load(t, b)),
            Program::FExit(p) => with_btf(&mut |t, b| p.load(t, b)),
            Program::Lsm(p) => with_btf(&mut |t, b| p.load(t, b)),
            Program::BtfTracePoint(p) => with_btf(&mut |t, b| p.load(t, b)),
            _ => KernelVerdict::Skipped {
                reason: "this program type needs a target program or object to load".into(),
            },
        };
        out.push(ProgramVerdict {
            program: name,
            verdict: v,
        });
    }
    Ok(out)
}
