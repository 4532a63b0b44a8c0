//! The skip policy of bpfship's tests.
//!
//! A test that needs something the machine may lack (root, BPF, clang, Debian's `docker-registry`,
//! skopeo, node, a kernel feature) calls [`skip`] instead of passing silently. What happens then
//! depends on what is missing:
//!
//! * [`Missing::Setup`]: something `scripts/setup.sh` installs or a root CI run has. Outside CI the
//!   test prints `SKIP` and returns; in CI (`CI=true`) the skip is a failure, because a green run
//!   that skipped what the machine can do proves nothing.
//! * [`Missing::Kernel`]: a capability the running kernel does not offer (kprobes without
//!   `CONFIG_KPROBES`, fentry/fexit loads refused with `EPERM` under this virtualisation). It may
//!   skip anywhere, saying why.
//!
//! Every skip is also appended to the file named by `BPFSHIP_SKIP_LOG` (one line per skip:
//! kind, test, reason), which `scripts/test.sh` prints as a summary at the end of the suite.

use std::io::Write;

/// What a test could not find, and so whether skipping is allowed in CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Provided by the setup or by running as root: never a valid reason to skip in CI.
    Setup(String),
    /// Absent from the running kernel: a valid reason to skip anywhere.
    Kernel(String),
}

impl Missing {
    fn kind(&self) -> &'static str {
        match self {
            Missing::Setup(_) => "setup",
            Missing::Kernel(_) => "kernel",
        }
    }

    fn reason(&self) -> &str {
        match self {
            Missing::Setup(r) | Missing::Kernel(r) => r,
        }
    }
}

/// `true` when running under CI (`CI=true`, as GitHub Actions and `.ci/run` set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Records that the current test cannot run here and why; the caller then returns.
///
/// Panics (fails the test) when running in CI and what is missing is [`Missing::Setup`].
pub fn skip(missing: Missing) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    let reason = missing.reason().replace(['\n', '\t'], " ");
    eprintln!("SKIP {test}: {reason}");
    if let Some(path) = std::env::var_os("BPFSHIP_SKIP_LOG") {
        // One write of one line: parallel test threads and binaries append whole lines.
        let line = format!("{}\t{test}\t{reason}\n", missing.kind());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot record the skip in {}: {e}", path.to_string_lossy());
        }
    }
    if in_ci() && missing.kind() == "setup" {
        panic!(
            "{test} cannot run: {reason}. In CI a skip of something the machine can provide is a failure (run scripts/setup.sh, as root)"
        );
    }
}

/// `true` when the process runs as root; otherwise records a [`Missing::Setup`] skip.
pub fn require_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(Missing::Setup(format!("needs root ({what})")));
    }
    root
}

/// `true` when the running kernel's release is at least `major.minor` (from `uname`).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain data; uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    let release: String = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    parse_release(&release) >= Some((major, minor))
}

/// `"6.1.0-57-cloud-amd64"` → `(6, 1)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_release("6.1.0-57-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_release("6.18.44-fc-v1147"), Some((6, 18)));
        assert_eq!(parse_release("6.12.118+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(parse_release("garbage"), None);
        assert!(Some((6, 12)) > Some((6, 6)) && Some((6, 1)) < Some((6, 6)));
    }

    #[test]
    fn kinds_and_reasons() {
        let m = Missing::Kernel("no kprobes".into());
        assert_eq!((m.kind(), m.reason()), ("kernel", "no kprobes"));
        let m = Missing::Setup("no clang".into());
        assert_eq!((m.kind(), m.reason()), ("setup", "no clang"));
    }

    #[test]
    fn a_setup_skip_fails_in_ci_and_is_logged() {
        if std::env::var_os("BPFSHIP_SKIP_PROBE").is_some() {
            return;
        }
        // Run this very test binary again as a child with CI=true, filtered to the probe below.
        let dir = std::env::temp_dir().join(format!("bpfship-skip-{}", std::process::id()));
        let log = dir.with_extension("log");
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", "tests::setup_skip_probe", "--nocapture"])
            .env("CI", "true")
            .env("BPFSHIP_SKIP_PROBE", "1")
            .env("BPFSHIP_SKIP_LOG", &log)
            .output()
            .unwrap();
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        assert!(
            !out.status.success(),
            "a setup skip under CI=true must fail"
        );
        assert_eq!(
            logged,
            "setup\ttests::setup_skip_probe\tno docker-registry\n"
        );
    }

    #[test]
    fn setup_skip_probe() {
        if std::env::var_os("BPFSHIP_SKIP_PROBE").is_some() {
            skip(Missing::Setup("no docker-registry".into()));
        }
    }
}
