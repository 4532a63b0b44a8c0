//! Attacks on a host running the agent by someone who can push to the registry but does not
//! hold the signing key (and a policy change the agent must honour), as root on the real kernel
//! with a real docker-registry: a downgrade by re-pointing the tag, a bogus signature racing the
//! signer, a key removed from the policy, other tools' pins under the pin root, and a deployment
//! thread that dies.

mod common;

use std::time::{Duration, Instant};

use common::harness::{Harness, Signer, programs_named};
use common::{VethPair, awaiting, rejected, serial};

const SEC: Duration = Duration::from_secs(1);

fn deployment(name: &str, repo: &str, interface: &str) -> String {
    format!(
        r#"
[[deployment]]
name = "{name}"
artifact = "{{registry}}/{repo}:stable"
program = "filter"
hook = {{ type = "xdp", interface = "{interface}", mode = "generic" }}
[deployment.rollout]
steps = [{{ percent = 50, bake_seconds = 0.5 }}]
"#
    )
}

fn audited(h: &Harness, action: &str, digest: &str) -> usize {
    h.audit_log()
        .iter()
        .filter(|e| e["action"] == action && e["digest"] == digest)
        .count()
}

/// Re-pointing the followed tag at an older signed digest: no canary, the refusal audited and
/// in status, the stable version keeps running — until the operator pins that digest.
#[test]
fn a_tag_re_pointed_at_an_older_signed_digest_is_refused_until_pinned() {
    if !common::can_use_kernel("a_tag_re_pointed_at_an_older_signed_digest_is_refused_until_pinned")
    {
        return;
    }
    let _serial = serial();
    let veth = VethPair::create("at1", 240);
    let mut h = Harness::new("dg", &deployment("down", "agent/down", &veth.host));
    let d1 = h.publish("v1", "agent/down", "stable", Signer::Trusted);
    h.start_agent();
    h.wait_for("v1 stable", 20 * SEC, |s| s["stable"] == d1.as_str());
    let d2 = h.publish("v2", "agent/down", "stable", Signer::Trusted);
    h.wait_for("v2 promoted", 20 * SEC, |s| {
        s["stable"] == d2.as_str() && s["phase"] == "stable"
    });

    // The attack: the tag names v1 again (validly signed, by the trusted key).
    h.retag("agent/down", "stable", &d1);
    let s = h.wait_for("downgrade refused", 15 * SEC, |s| {
        rejected(s, &d1).is_some()
    });
    let reason = rejected(&s, &d1).unwrap();
    assert!(
        reason.contains("downgrade refused") && reason.contains(&d2),
        "{reason}"
    );
    std::thread::sleep(2 * SEC); // several polls
    let s = h.status().unwrap();
    assert_eq!(s["stable"], d2.as_str(), "the stable version keeps running");
    assert!(s["canary"].is_null(), "no canary of the old version: {s}");
    assert_eq!(audited(&h, "canary", &d1), 0);
    assert_eq!(audited(&h, "downgrade_refused", &d1), 1, "audited once");
    assert_eq!(s["history"].as_array().map(Vec::len), Some(2), "{s}");
    // Remembered across restarts (the state file keeps the history).
    h.kill_agent();
    h.start_agent();
    std::thread::sleep(SEC);
    let s = h.status().unwrap();
    assert_eq!(s["stable"], d2.as_str());
    assert!(s["canary"].is_null());

    // The operator goes back deliberately: canaried and promoted like any version.
    h.pin("down", &d1).unwrap();
    let s = h.wait_for("pinned v1 promoted", 20 * SEC, |s| {
        s["stable"] == d1.as_str() && s["phase"] == "stable"
    });
    assert_eq!(s["pinned"], d1.as_str());
    assert_eq!(audited(&h, "canary", &d1), 1);
    assert_eq!(audited(&h, "pinned", &d1), 1);
    // A bad pin is one clear error.
    let e = h.pin("down", "sha256:nothex").unwrap_err();
    assert!(e.contains("not a sha256"), "{e}");
}

/// A new digest whose signature carries a lower release version than the one running (an old
/// build re-pushed, or a build signed from an old branch) is a downgrade too: refused without a
/// canary; a higher version is taken.
#[test]
fn a_lower_signed_version_is_refused_whatever_its_digest() {
    if !common::can_use_kernel("a_lower_signed_version_is_refused_whatever_its_digest") {
        return;
    }
    let _serial = serial();
    let veth = VethPair::create("at5", 244);
    let mut h = Harness::new("ver", &deployment("ver", "agent/ver", &veth.host));
    let v5 = h.push("v1", "agent/ver", "stable");
    h.sign_version("agent/ver", "stable", &v5, 5);
    h.start_agent();
    let s = h.wait_for("version 5 stable", 20 * SEC, |s| {
        s["stable"] == v5.digest.as_str()
    });
    assert_eq!(s["history"][0]["version"], 5, "{s}");

    // A digest never seen before, validly signed, but as release 3.
    let v3 = h.push("v2", "agent/ver", "stable");
    h.sign_version("agent/ver", "stable", &v3, 3);
    let s = h.wait_for("lower version refused", 15 * SEC, |s| {
        rejected(s, &v3.digest).is_some()
    });
    let reason = rejected(&s, &v3.digest).unwrap();
    assert!(reason.contains("version 3"), "{reason}");
    assert_eq!(
        s["stable"],
        v5.digest.as_str(),
        "the stable version keeps running"
    );
    assert_eq!(audited(&h, "canary", &v3.digest), 0);
    assert_eq!(audited(&h, "downgrade_refused", &v3.digest), 1);

    // Release 6 goes ahead.
    let v6 = h.push("v4", "agent/ver", "stable");
    h.sign_version("agent/ver", "stable", &v6, 6);
    h.wait_for("version 6 promoted", 20 * SEC, |s| {
        s["stable"] == v6.digest.as_str() && s["phase"] == "stable"
    });
}

/// A bogus signature pushed before the real one — by the untrusted key, in a bundle whose key
/// hint is 300 KB of escape sequences — does not block the release: the digest waits (visible in
/// status), the real signature follows, and it is canaried and promoted. The hostile hint
/// reaches the audit log and status only escaped and cut short.
#[test]
fn a_bogus_signature_racing_the_signer_does_not_block_the_release() {
    if !common::can_use_kernel("a_bogus_signature_racing_the_signer_does_not_block_the_release") {
        return;
    }
    let _serial = serial();
    let veth = VethPair::create("at2", 241);
    let mut h = Harness::new("race", &deployment("race", "agent/race", &veth.host));
    let d1 = h.publish("v1", "agent/race", "stable", Signer::Trusted);
    h.start_agent();
    h.wait_for("v1 stable", 20 * SEC, |s| s["stable"] == d1.as_str());

    let v2 = h.push("v2", "agent/race", "stable");
    h.sign("agent/race", "stable", &v2, Signer::Untrusted);
    let repo =
        bpfship_registry::Reference::parse(&format!("{}:stable", h.repo("agent/race"))).unwrap();
    let bogus = bpfship_verifier::bundle::sign_image(
        &h.untrusted,
        &v2.digest,
        &repo.repository_path(),
        None,
    )
    .unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&bogus.to_json()).unwrap();
    let hostile = format!("\u{1b}]0;owned\u{7}\n{}", "A".repeat(300_000));
    json["verificationMaterial"]["publicKey"]["hint"] = hostile.into();
    bpfship_registry::signatures::push_bundle(
        &h.client,
        &repo,
        &v2,
        &serde_json::to_vec(&json).unwrap(),
        Some(bpfship_verifier::bundle::COSIGN_SIGN_PREDICATE),
    )
    .unwrap();
    let s = h.wait_for("v2 awaiting a valid signature", 15 * SEC, |s| {
        awaiting(s, &v2.digest).is_some_and(|r| r.contains("no valid signature"))
    });
    let reason = awaiting(&s, &v2.digest).unwrap();
    assert!(reason.contains("no valid signature"), "{reason}");
    assert!(
        reason.len() < 2048 && !reason.contains('\u{1b}') && reason.contains("\\u{1b}"),
        "hostile text escaped and cut: {} bytes: {reason}",
        reason.len()
    );
    assert!(
        rejected(&s, &v2.digest).is_none(),
        "never rejected for good"
    );
    assert!(s["canary"].is_null());
    let audit = std::fs::read_to_string(h.dir.path().join("state/audit.jsonl")).unwrap();
    assert!(
        audit.lines().all(|l| l.len() < 4096) && !audit.contains("\\u001b"),
        "audit lines bounded, no raw escapes"
    );
    let state = std::fs::read_to_string(h.dir.path().join("state/deployments/race.json")).unwrap();
    assert!(state.len() < 16 * 1024, "state file {} bytes", state.len());

    // The real signer signs: taken at the next check, canaried and promoted.
    h.sign("agent/race", "stable", &v2, Signer::Trusted);
    let started = Instant::now();
    h.wait_for("v2 promoted after the real signature", 30 * SEC, |s| {
        s["stable"] == v2.digest.as_str() && s["phase"] == "stable"
    });
    eprintln!(
        "v2 promoted {:.1}s after the real signature",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        audited(&h, "refused", &v2.digest),
        1,
        "refusal audited once"
    );
}

/// A key removed from the policy withdraws what only that key signed: at restart (pins kept),
/// while running (the policy file changes), and at restore after a reboot (pins gone).
#[test]
fn a_key_removed_from_the_policy_withdraws_what_it_signed() {
    if !common::can_use_kernel("a_key_removed_from_the_policy_withdraws_what_it_signed") {
        return;
    }
    let _serial = serial();
    let veth = VethPair::create("at3", 242);
    let mut h = Harness::new("rev", &deployment("rev", "agent/rev", &veth.host));
    let link = h.pin_root.join("rev/link");
    let d1 = h.publish("v1", "agent/rev", "stable", Signer::Trusted);
    h.start_agent();
    h.wait_for("v1 stable", 20 * SEC, |s| s["stable"] == d1.as_str());
    assert!(link.exists());

    // Restart with the key removed: detached at start-up.
    h.kill_agent();
    h.trust_only(&[&h.untrusted]);
    h.start_agent();
    let s = h.wait_for("v1 withdrawn at start-up", 10 * SEC, |s| {
        rejected(s, &d1).is_some()
    });
    assert!(s["stable"].is_null(), "{s}");
    assert!(
        rejected(&s, &d1).unwrap().contains("no longer verify"),
        "{s}"
    );
    assert!(!link.exists(), "detached");
    assert!(programs_named("filter").is_empty(), "nothing of it loaded");
    assert_eq!(audited(&h, "withdrawn", &d1), 1);

    // The key is trusted again (the operator pins v1 to take it back): installed.
    h.pin("rev", &d1).unwrap();
    h.trust_only(&[&h.trusted]);
    h.wait_for("v1 back", 15 * SEC, |s| s["stable"] == d1.as_str());
    assert!(link.exists());

    // The key removed while the agent runs: the policy change withdraws v1.
    h.trust_only(&[&h.untrusted]);
    h.wait_for("v1 withdrawn at runtime", 15 * SEC, |s| {
        s["stable"].is_null()
    });
    assert!(!link.exists(), "detached at runtime");
    assert_eq!(audited(&h, "withdrawn", &d1), 2);

    // Reboot (pins gone) with the key removed: not restored.
    h.pin("rev", &d1).unwrap();
    h.trust_only(&[&h.trusted]);
    h.wait_for("v1 back again", 15 * SEC, |s| s["stable"] == d1.as_str());
    h.kill_agent();
    bpfship_agent::hook::HookRuntime::remove_all(&h.pin_root.join("rev"));
    h.trust_only(&[&h.untrusted]);
    h.registry.stop();
    h.start_agent();
    std::thread::sleep(SEC);
    let s = h.status().unwrap();
    assert!(s["stable"].is_null(), "not restored: {s}");
    assert!(!link.exists(), "not attached after the reboot");
    let failed = h
        .audit_log()
        .into_iter()
        .find(|e| e["action"] == "restore_failed" && e["digest"] == d1.as_str())
        .expect("restore refused, audited");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("no longer verify"),
        "{failed}"
    );
}

/// The pin root is the agent's own: a bpffs mount root is refused (one line, exit 2), and
/// another tool's directory under the pin root survives the clean-up of a removed deployment.
#[test]
fn other_tools_pins_are_left_alone() {
    if !common::can_use_kernel("other_tools_pins_are_left_alone") {
        return;
    }
    let _serial = serial();
    let veth = VethPair::create("at4", 243);
    let mut h = Harness::new("own", &deployment("own", "agent/own", &veth.host));
    // Another tool's pins beside ours (a map it pinned in a directory of its own).
    let foreign = h.pin_root.join("othertool");
    std::fs::create_dir_all(&foreign).unwrap();
    let pinned = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(foreign.join("state"))
        .args(["type", "array", "key", "4", "value", "4", "entries", "1"])
        .args(["name", "other_state"])
        .status()
        .expect("bpftool runs (scripts/setup.sh installs it)");
    assert!(pinned.success(), "bpftool pins the other tool's map");
    let d1 = h.publish("v1", "agent/own", "stable", Signer::Trusted);
    h.start_agent();
    h.wait_for("v1 stable", 20 * SEC, |s| s["stable"] == d1.as_str());
    h.kill_agent();
    h.remove_deployments();
    h.start_agent();
    assert!(
        !h.pin_root.join("own").exists(),
        "our removed deployment is cleaned up"
    );
    assert!(
        foreign.join("state").exists(),
        "the other tool's pin is kept"
    );
    h.kill_agent();

    // A pin root that is the bpffs mount itself: refused before anything is touched.
    let config = std::fs::read_to_string(&h.config).unwrap();
    let at_root = config.replace(
        &format!("pin_root = \"{}\"", h.pin_root.display()),
        "pin_root = \"/sys/fs/bpf\"",
    );
    assert_ne!(at_root, config);
    std::fs::write(&h.config, at_root).unwrap();
    for args in [&["--check"][..], &[][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bpfship-agent"))
            .arg("--config")
            .arg(&h.config)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let line = err.trim();
        assert!(
            !line.contains('\n')
                && line.contains("/sys/fs/bpf")
                && line.contains("root of a bpffs mount"),
            "one line naming the problem: {line}"
        );
    }
}

/// A deployment thread that panics ends the agent with a non-zero status (systemd restarts it);
/// the pinned program keeps running meanwhile and the restarted agent adopts it. The panic is
/// injected with `BPFSHIP_AGENT_TEST_PANIC`, which only debug builds contain.
#[test]
fn a_panicking_deployment_thread_exits_the_agent_non_zero() {
    if !common::can_use_kernel("a_panicking_deployment_thread_exits_the_agent_non_zero") {
        return;
    }
    let _serial = serial();
    let veth = VethPair::create("at5", 244);
    let mut h = Harness::new("sup", &deployment("sup", "agent/sup", &veth.host));
    let d1 = h.publish("v1", "agent/sup", "stable", Signer::Trusted);
    h.start_agent();
    h.wait_for("v1 stable", 20 * SEC, |s| s["stable"] == d1.as_str());
    h.kill_agent();
    let mut child = h.spawn_agent(&[("BPFSHIP_AGENT_TEST_PANIC", "sup")]);
    let deadline = Instant::now() + 20 * SEC;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent kept running after its deployment thread panicked");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(70), "{}", h.agent_log());
    let log = h.agent_log();
    assert!(
        log.contains("thread deploy-sup panicked: injected test panic"),
        "{log}"
    );
    assert!(h.pin_root.join("sup/link").exists(), "still attached");
    h.start_agent();
    h.wait_for("adopted after the restart", 10 * SEC, |s| {
        s["stable"] == d1.as_str()
    });
}
