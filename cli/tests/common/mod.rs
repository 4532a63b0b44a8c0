//! Shared support for the CLI's integration tests: the real `bpfship` binary, a throwaway
//! working directory with a key pair, the eBPF test objects (built with clang, as the verifier's
//! tests do) and the WASM test modules (compiled from WAT).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../../verifier/tests/common/mod.rs"]
mod ebpf;

#[allow(unused_imports)]
pub use ebpf::{ebpf_objects, object};

/// The password every test key is encrypted with.
pub const PASSWORD: &str = "bpfship-test-password";

/// Starts a plain-HTTP `TestRegistry`, or prints `SKIP: why` and returns from the test.
#[macro_export]
macro_rules! registry_or_skip {
    () => {
        match common::registry() {
            Some(r) => r,
            None => return,
        }
    };
}

/// Starts a plain-HTTP `TestRegistry`; `None` with `SKIP: why` printed when it cannot.
pub fn registry() -> Option<bpfship_registry::testing::TestRegistry> {
    bpfship_registry::testing::TestRegistry::start()
        .inspect_err(|e| {
            bpfship_test_support::skip(bpfship_test_support::Missing::Setup(e.clone()))
        })
        .ok()
}

/// The bytes of a built eBPF test object, or prints `SKIP: why` and returns from the test.
#[macro_export]
macro_rules! object_or_skip {
    ($name:expr) => {
        match common::object($name) {
            Some(b) => b,
            None => return,
        }
    };
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A WASM test module compiled from `testdata/wasm/<name>.wat`.
pub fn wasm(name: &str) -> Vec<u8> {
    wat::parse_file(root().join(format!("testdata/wasm/{name}.wat"))).expect("WAT compiles")
}

/// One `bpfship` run: its exit code and output.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(sig) = out.status.signal() {
            panic!(
                "bpfship killed by signal {sig}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn json(self) -> serde_json::Value {
        let s = self.expect(0);
        serde_json::from_str(&s.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", s.stdout))
    }

    /// Asserts a rejection (exit 1) whose message contains `fragment`; returns the message.
    #[track_caller]
    pub fn rejected_with(self, fragment: &str) -> String {
        let s = self.expect(1);
        assert!(
            s.stderr.contains(fragment),
            "expected the message to contain {fragment:?}, got: {}",
            s.stderr
        );
        s.stderr
    }
}

/// A temporary working directory for one test, with its own (empty) docker config so the host's
/// credentials never leak in.
pub struct Work {
    pub dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("docker")).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` to `name` in the work directory and returns the path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A `bpfship` command with the test password and this directory's docker config.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bpfship"));
        c.current_dir(self.dir.path())
            .env("COSIGN_PASSWORD", PASSWORD)
            .env("DOCKER_CONFIG", self.path("docker"))
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null());
        c
    }

    /// Runs `bpfship ARGS...`.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Run::from(self.cmd().args(args).output().expect("bpfship runs"))
    }

    /// `bpfship push --output json [--key KEY] [EXTRA...] FILE REFERENCE`, asserting success;
    /// returns what it printed.
    pub fn push(
        &self,
        file: &Path,
        reference: &str,
        key: Option<&Path>,
        extra: &[&str],
    ) -> serde_json::Value {
        let mut args = vec!["push", "--output", "json"];
        if let Some(key) = key {
            args.extend(["--key", s(key)]);
        }
        args.extend(extra);
        args.extend([s(file), reference]);
        self.run(args).json()
    }

    /// Generates `<prefix>.key` / `<prefix>.pub` with `generate-key-pair`; returns both paths.
    pub fn key_pair(&self, prefix: &str) -> (PathBuf, PathBuf) {
        let p = self.path(prefix);
        self.run([
            "generate-key-pair".as_ref(),
            "--output-key-prefix".as_ref(),
            p.as_os_str(),
        ])
        .expect(0);
        (
            self.path(&format!("{prefix}.key")),
            self.path(&format!("{prefix}.pub")),
        )
    }
}

/// Shorthand: a path as a `&str` argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
