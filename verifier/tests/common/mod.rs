//! Test support: the eBPF test programs, built once per test run from testdata/ebpf with clang.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Directory holding the built objects (`<name>.o`); `None` (with the reason printed) when clang
/// is missing, so callers can skip loudly.
pub fn ebpf_objects() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        // Prebuilt objects (vm-tests: a VM has no clang) are used as they are.
        if let Some(prebuilt) = std::env::var_os("BPFSHIP_TEST_EBPF_DIR") {
            let out = PathBuf::from(prebuilt);
            return Some(out);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = root.join("target/testdata-ebpf");
        // flock serialises parallel test binaries building the same files.
        let status = std::process::Command::new("flock")
            .arg(root.join("target/testdata-ebpf.lock"))
            .arg("bash")
            .arg(root.join("testdata/build-ebpf.sh"))
            .arg(&out)
            .status();
        match status {
            Ok(s) if s.success() => Some(out),
            other => {
                bpfship_test_support::skip(bpfship_test_support::Missing::Setup(format!(
                    "cannot build testdata/ebpf (clang missing? run scripts/setup.sh): {other:?}"
                )));
                None
            }
        }
    })
    .as_deref()
}

/// The bytes of a built test object.
pub fn object(name: &str) -> Option<Vec<u8>> {
    ebpf_objects().map(|d| std::fs::read(d.join(format!("{name}.o"))).expect("built object"))
}
