//! `bpfship validate --kernel`: each program through the running kernel's verifier (root).

mod common;

use common::{Work, s};

#[test]
fn kernel_verdicts_per_program() {
    if !bpfship_test_support::require_root("validate --kernel") {
        return;
    }
    let Some(dir) = common::ebpf_objects() else {
        return;
    };
    let w = Work::new();
    let good = dir.join("xdp_pass.o");
    let tc = dir.join("tc_section.o");
    let reject = dir.join("agent/v5_reject.o");
    let run = w
        .run(["--output", "json", "validate", "--kernel", s(&good), s(&tc)])
        .expect(0)
        .json();
    for f in run["files"].as_array().unwrap() {
        let programs = f["kernel"]["programs"].as_array().expect("kernel verdicts");
        assert!(programs.iter().all(|p| p["verdict"] == "accepted"), "{f}");
    }
    let run = w.run(["validate", "--kernel", s(&reject)]).expect(1);
    assert!(
        run.stdout.contains("REJECTED") && run.stdout.contains("invalid access to packet"),
        "{run:?}"
    );
}
