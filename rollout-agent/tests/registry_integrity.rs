//! Issue 7 item 12, on the real kernel and a real registry: a registry that serves a layer which
//! does not match its digest is tampering, not an outage — the agent audits it as an integrity
//! failure, says so in status and metrics, keeps the stable version, and never runs the bytes.

mod common;

use std::time::Duration;

use bpfship_registry::Reference;
use bpfship_registry::manifest::OCI_MANIFEST;
use common::harness::{Harness, Signer};

const SEC: Duration = Duration::from_secs(1);

#[test]
fn tampered_layer_is_audited_as_an_integrity_failure() {
    if !common::can_use_kernel("tampered_layer_is_audited_as_an_integrity_failure") {
        return;
    }
    if !std::path::Path::new("/sys/kernel/tracing/events/syscalls/sys_enter_getpid").exists() {
        eprintln!(
            "SKIP tampered_layer_is_audited_as_an_integrity_failure: tracefs is not mounted at /sys/kernel/tracing"
        );
        return;
    }
    let deployment = r#"
[[deployment]]
name = "events"
artifact = "{registry}/agent/events:stable"
program = "events"
hook = { type = "tracepoint", category = "syscalls", name = "sys_enter_getpid" }
"#;
    let mut h = Harness::new("integrity", deployment);
    let d1 = h.publish("tp1", "agent/events", "stable", Signer::Trusted);
    h.start_agent();
    h.wait_for("tp1 stable", 20 * SEC, |s| s["stable"] == d1.as_str());

    // tp2, signed, published under a tag the agent does not follow; its layer is then changed
    // in the registry's storage and `stable` re-pointed at it.
    let d2 = h.publish("tp2", "agent/events", "staging", Signer::Trusted);
    let repo = Reference::parse(&h.repo("agent/events")).unwrap();
    let (bytes, _) = h.client.fetch_manifest(&repo, &d2).unwrap();
    let m: bpfship_registry::ImageManifest = serde_json::from_slice(&bytes).unwrap();
    let hex = m.layers[0].digest.strip_prefix("sha256:").unwrap();
    let blob = h
        .registry
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut layer = std::fs::read(&blob).unwrap();
    let last = layer.len() - 1;
    layer[last] ^= 0xff;
    std::fs::write(&blob, layer).unwrap();
    h.client
        .push_manifest(&repo, "stable", OCI_MANIFEST, &bytes)
        .unwrap();

    let s = h.wait_for("integrity failure in status", 20 * SEC, |s| {
        s["registry_failure"] == "integrity"
    });
    assert_eq!(
        s["stable"],
        d1.as_str(),
        "the stable version is untouched: {s}"
    );
    assert!(
        s["registry"].as_str().unwrap().contains("digest mismatch"),
        "{s}"
    );
    let audited = h.audit_log().into_iter().any(|e| {
        e["action"] == "integrity_failure"
            && e["digest"] == d2.as_str()
            && e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("digest mismatch")
    });
    assert!(audited, "audit: {:?}", h.audit_log());
    let metrics = h.metrics();
    assert!(
        metrics
            .contains("bpfship_registry_failures_total{deployment=\"events\",class=\"integrity\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bpfship_registry_up{deployment=\"events\"} 1"),
        "the registry is up; it served the wrong bytes: {metrics}"
    );
}
