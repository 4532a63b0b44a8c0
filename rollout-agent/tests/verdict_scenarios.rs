//! Health that needs no cooperation from the program, end to end as root on the real kernel:
//! XDP and TC deployments with no checks configured (so the default verdict checks apply), on a
//! veth pair into a network namespace. A version that drops everything and one that sends
//! packets back out instead of passing them (XDP `TX`, TC `redirect`) are rolled back by the
//! default checks with no packet lost on the flows the stable version serves; a good version is
//! still promoted. The programs (testdata/agent/verdicts.c, tc_verdicts.c) declare no health map.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bpfship_agent::kernel::LoadedProgram;
use bpfship_agent::kernel::instrument::{VerdictCounting, VerdictSet, VerdictValue};
use common::harness::{Harness, Signer};
use common::{UdpCounter, VethPair, rejected, serial};

const SEC: Duration = Duration::from_secs(1);

fn deployment(hook: &str, program: &str) -> String {
    format!(
        r#"
[[deployment]]
name = "edge"
artifact = "{{registry}}/agent/verdicts:stable"
program = "{program}"
hook = {hook}
[deployment.rollout]
steps = [{{ percent = 50, bake_seconds = 3 }}, {{ percent = 100, bake_seconds = 1 }}]
[deployment.analysis]
interval_seconds = 0.5
"#
    )
}

/// Only the test's datagrams cross the pair: a permanent neighbour entry (no ARP, which the
/// dispatcher splits per event) and no IPv6 (no neighbour discovery or MLD).
fn quiet(veth: &VethPair) {
    let sh = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    for (ns, dev) in [(None, &veth.host), (Some(&veth.netns), &veth.peer)] {
        let key = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
        match ns {
            None => sh(&["sysctl", "-qw", &key]),
            Some(ns) => sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &key]),
        }
    }
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.host)).unwrap();
    sh(&[
        "ip",
        "-n",
        &veth.netns,
        "neigh",
        "replace",
        &veth.host_ip,
        "lladdr",
        mac.trim(),
        "dev",
        &veth.peer,
        "nud",
        "permanent",
    ]);
}

/// The verdict counters of the version pinned at `pin`, held open so they can still be read
/// after the agent unloads it.
fn open_version(pin: &Path) -> LoadedProgram {
    let p = LoadedProgram::open_pinned(pin).expect("version pinned");
    assert!(
        matches!(p.verdicts, Some(VerdictCounting::Instrumented(_))),
        "loaded instrumented: {:?}",
        p.verdicts
    );
    p
}

fn counts(p: &LoadedProgram) -> VerdictValue {
    p.verdict_counts().expect("verdicts counted")
}

fn delta(now: &VerdictValue, then: &VerdictValue, i: usize) -> u64 {
    now[i] - then[i]
}

fn send_all_received(veth: &VethPair, rx: &UdpCounter, count: u32, flows: u32) {
    let before = rx.received();
    veth.send_udp(rx.port, count, flows);
    let got = rx.received() - before;
    assert_eq!(got, u64::from(count), "sent {count}, received {got}");
}

/// One hook's story: `good1` installed, `bad` versions (with the verdict each gives instead of
/// passing) rolled back by the default checks, `good2` promoted.
fn story(
    tag: &str,
    subnet: u8,
    hook: impl Fn(&str) -> String,
    program: &str,
    set: VerdictSet,
    [good1, good2]: [&str; 2],
    bad: &[(&str, &str)],
) {
    let _serial = serial();
    let veth = VethPair::create(tag, subnet);
    quiet(&veth);
    let rx = UdpCounter::bind(&veth.host_ip);
    let mut h = Harness::new(tag, &deployment(&hook(&veth.host), program));
    let pass = set.index(if set == VerdictSet::Tc { "ok" } else { "pass" });
    let pass = pass.unwrap();

    let d1 = h.publish(good1, "agent/verdicts", "stable", Signer::Trusted);
    h.start_agent();
    let s = h.wait_for("v1 stable", 20 * SEC, |s| s["stable"] == d1.as_str());
    let checks: Vec<_> = s["analysis"]["last"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(checks.is_empty(), "no analysis before a canary: {s}");
    let stable = open_version(&h.version_pin("edge", &d1));
    send_all_received(&veth, &rx, 500, 50);

    for (object, verdict) in bad {
        let d = h.publish(object, "agent/verdicts", "stable", Signer::Trusted);
        h.wait_for("bad canary", 15 * SEC, |s| s["canary"] == d.as_str());
        let canary = open_version(&h.version_pin("edge", &d));
        let (stable0, canary0, received0) = (counts(&stable), counts(&canary), rx.received());
        let mut sent = 0u64;
        for _ in 0..40 {
            veth.send_udp(rx.port, 200, 200);
            sent += 200;
            if h.status().is_some_and(|s| rejected(&s, &d).is_some()) {
                break;
            }
        }
        let s = h.wait_for("bad version rolled back", 10 * SEC, |s| {
            rejected(s, &d).is_some()
        });
        let reason = rejected(&s, &d).unwrap();
        assert!(
            reason.contains(&format!("verdict_{verdict}")),
            "{object}: rolled back by the default {verdict} check: {reason}"
        );
        assert_eq!(s["stable"], d1.as_str());
        let lost = sent - (rx.received() - received0);
        let (stable1, canary1) = (counts(&stable), counts(&canary));
        let bad_index = set.index(verdict).unwrap();
        let canary_bad = delta(&canary1, &canary0, bad_index);
        eprintln!(
            "{object}: sent {sent}, lost {lost}, canary gave {verdict} to {canary_bad}; {reason}"
        );
        let stable_events: u64 = (0..stable1.len())
            .map(|i| delta(&stable1, &stable0, i))
            .sum();
        assert!(canary_bad > 0, "{object} saw traffic at its 50% step");
        assert_eq!(
            delta(&canary1, &canary0, pass),
            0,
            "{object} passes nothing"
        );
        assert_eq!(
            delta(&stable1, &stable0, pass),
            stable_events,
            "the stable version passed every packet it saw"
        );
        // Zero loss on the stable version's flows: every datagram lost is one the canary
        // gave `verdict` (and every one the canary gave it was lost).
        assert_eq!(
            lost, canary_bad,
            "{object}: {lost} lost of {sent}, the canary gave {verdict} to {canary_bad}"
        );
        send_all_received(&veth, &rx, 500, 50);
    }

    // A good version passes every default check and is promoted.
    let d2 = h.publish(good2, "agent/verdicts", "stable", Signer::Trusted);
    h.wait_for("good canary", 15 * SEC, |s| s["canary"] == d2.as_str());
    let deadline = std::time::Instant::now() + 30 * SEC;
    let s = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "good version not promoted"
        );
        send_all_received(&veth, &rx, 200, 200);
        let s = h.status().unwrap();
        if s["stable"] == d2.as_str() {
            break s;
        }
        assert!(rejected(&s, &d2).is_none(), "good version rolled back: {s}");
    };
    let versions = s["versions"].as_array().unwrap();
    let v = versions.iter().find(|v| v["role"] == "stable").unwrap();
    assert_eq!(v["digest"], d2.as_str());
    assert_eq!(v["verdict_counting"]["path"], "instrumented", "{v}");
    assert!(v["verdict_counting"]["added_instructions"].as_u64() > Some(10));
    assert!(v["verdict_counting"]["exits"].as_u64() >= Some(1));
    let passed = if set == VerdictSet::Tc { "ok" } else { "pass" };
    assert!(v["verdicts"][passed].as_u64() > Some(0), "{v}");
    let prev = versions.iter().find(|v| v["role"] == "previous").unwrap();
    assert_eq!(prev["digest"], d1.as_str());
    send_all_received(&veth, &rx, 500, 50);
}

#[test]
fn xdp_versions_that_drop_or_bounce_are_rolled_back_by_their_verdicts() {
    if !common::can_use_kernel("xdp_versions_that_drop_or_bounce_are_rolled_back_by_their_verdicts")
    {
        return;
    }
    story(
        "av1",
        245,
        |i| format!(r#"{{ type = "xdp", interface = "{i}", mode = "generic" }}"#),
        "filter",
        VerdictSet::Xdp,
        ["vd_pass1", "vd_pass2"],
        &[("vd_drop", "drop"), ("vd_tx", "tx")],
    );
}

#[test]
fn tc_versions_that_drop_or_bounce_are_rolled_back_by_their_verdicts() {
    if !common::can_use_kernel("tc_versions_that_drop_or_bounce_are_rolled_back_by_their_verdicts")
    {
        return;
    }
    story(
        "av2",
        246,
        |i| format!(r#"{{ type = "tc", interface = "{i}", direction = "ingress" }}"#),
        "classify",
        VerdictSet::Tc,
        ["tcv_ok1", "tcv_ok2"],
        &[("tcv_shot", "shot"), ("tcv_redirect", "redirect")],
    );
}
