//! The GitHub Action's push step (`scripts/action.sh`, run by `action.yml`) against a real
//! registry: a missing key secret (a fork's pull request) fails the step instead of pushing
//! unsigned with exit 0 (issue 7 item 20); unsigned is pushed only when asked for explicitly.

mod common;

use std::process::Command;

use common::{Work, s};

/// Runs the action's step script as the composite action does, with `env` on top of the inputs'
/// defaults; returns the run and what it wrote to `GITHUB_OUTPUT`.
fn run_step(w: &Work, file: &str, reference: &str, env: &[(&str, &str)]) -> (common::Run, String) {
    let output = w.path("github_output");
    let _ = std::fs::remove_file(&output);
    let mut c = Command::new("bash");
    c.arg(common::root().join("scripts/action.sh"))
        .current_dir(w.dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", w.dir.path())
        .env("DOCKER_CONFIG", w.path("docker"))
        .env("FILE", file)
        .env("REF", reference)
        .env("POLICY", "")
        .env("KEY", "env://COSIGN_PRIVATE_KEY")
        .env("ALLOW_UNSIGNED", "false")
        .env("USERNAME", "ci")
        .env("BPFSHIP", env!("CARGO_BIN_EXE_bpfship"))
        .env("GITHUB_OUTPUT", &output)
        .envs(env.iter().copied());
    let run = common::Run::from(c.output().expect("bash runs"));
    (run, std::fs::read_to_string(&output).unwrap_or_default())
}

#[test]
fn action_step_refuses_to_push_unsigned_unless_asked() {
    let reg = registry_or_skip!();
    let xdp = object_or_skip!("xdp_pass");
    if Command::new("jq").arg("--version").output().is_err() {
        eprintln!("SKIP: jq not found (run scripts/setup.sh)");
        return;
    }
    let w = Work::new();
    let (key, public) = w.key_pair("release");
    let file = w.write("xdp_pass.o", &xdp);
    let reference = format!("{}/ci/xdp:pr-1", reg.address);

    // A fork's pull request: the secret is empty. The step fails and nothing is pushed.
    for secret in [None, Some("")] {
        let env: Vec<(&str, &str)> = secret
            .map(|v| ("COSIGN_PRIVATE_KEY", v))
            .into_iter()
            .collect();
        let (r, output) = run_step(&w, s(&file), &reference, &env);
        assert_eq!(r.code, Some(1), "{r:?}");
        assert!(
            r.stderr.contains("refusing to push") && r.stderr.contains("allow-unsigned"),
            "{r:?}"
        );
        assert!(output.is_empty(), "{output}");
    }
    w.run(["inspect", &reference]).expect(2);

    // Asked for explicitly: pushed unsigned, with a warning, and the digest output set.
    let (r, output) = run_step(&w, s(&file), &reference, &[("ALLOW_UNSIGNED", "true")]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stderr.contains("::warning::") && r.stderr.contains("unsigned"),
        "{r:?}"
    );
    assert!(
        output.starts_with(&format!("digest={}/ci/xdp@sha256:", reg.address)),
        "{output}"
    );
    w.run(["verify", "--key", s(&public), &reference])
        .rejected_with("no signatures found");

    // With the secret: signed, and it verifies.
    let pem = std::fs::read_to_string(&key).unwrap();
    let signed = format!("{}/ci/xdp:main", reg.address);
    let (r, output) = run_step(
        &w,
        s(&file),
        &signed,
        &[
            ("COSIGN_PRIVATE_KEY", &pem),
            ("COSIGN_PASSWORD", common::PASSWORD),
        ],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(output.starts_with("digest="), "{output}");
    w.run(["verify", "--key", s(&public), &signed]).expect(0);
}

/// action.yml runs that script with every input it reads.
#[test]
fn action_yml_runs_the_tested_script() {
    let yml = std::fs::read_to_string(common::root().join("action.yml")).unwrap();
    assert!(yml.contains(r#"run: bash "${{ github.action_path }}/scripts/action.sh""#));
    for (var, input) in [
        ("FILE", "inputs.file"),
        ("REF", "inputs.ref"),
        ("POLICY", "inputs.policy"),
        ("KEY", "inputs.key"),
        ("ALLOW_UNSIGNED", "inputs.allow-unsigned"),
        ("USERNAME", "inputs.username"),
    ] {
        assert!(yml.contains(&format!("{var}: ${{{{ {input} }}}}")), "{var}");
    }
    assert!(yml.contains("  allow-unsigned:\n"));
}
