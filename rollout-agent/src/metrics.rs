//! Prometheus text metrics on a loopback port: phase, canary share, per-version runs and
//! aborts, rollbacks by reason, last verification result.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::control::Registry;
use crate::state::Phase;

/// Renders every deployment's metrics in the Prometheus text format.
pub fn render(reg: &Registry) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        "bpfship_deployment_phase",
        "1 for the deployment's current phase.",
        "gauge",
    );
    family(
        "bpfship_canary_percent",
        "Share of events sent to the canary.",
        "gauge",
    );
    family(
        "bpfship_version_runs_total",
        "Events dispatched to each version while a dispatcher ran.",
        "counter",
    );
    family(
        "bpfship_version_aborts_total",
        "XDP aborts attributed to each version.",
        "counter",
    );
    family(
        "bpfship_version_cost_ns",
        "Nanoseconds per run of each version (BPF_PROG_TEST_RUN, last measurement).",
        "gauge",
    );
    family("bpfship_rollbacks_total", "Rollbacks by reason.", "counter");
    family(
        "bpfship_last_verification_ok",
        "1 if the last verified digest passed.",
        "gauge",
    );
    family(
        "bpfship_registry_up",
        "1 if the registry answered the last request (even with content that failed its digest check).",
        "gauge",
    );
    family(
        "bpfship_registry_failures_total",
        "Registry failures by class: unavailable, integrity, not_found, auth, refused.",
        "counter",
    );
    for (name, status) in &reg.statuses {
        let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for p in [Phase::Empty, Phase::Stable, Phase::Canary, Phase::Paused] {
            let phase = serde_json::to_value(p).unwrap_or_default();
            let v = u8::from(s.phase == p);
            let _ = writeln!(
                out,
                "bpfship_deployment_phase{{deployment=\"{name}\",phase={phase}}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "bpfship_canary_percent{{deployment=\"{name}\"}} {}",
            s.canary_percent
        );
        for (slot, version) in ["stable", "canary"].iter().enumerate() {
            let _ = writeln!(
                out,
                "bpfship_version_runs_total{{deployment=\"{name}\",version=\"{version}\"}} {}",
                s.runs[slot]
            );
            let _ = writeln!(
                out,
                "bpfship_version_aborts_total{{deployment=\"{name}\",version=\"{version}\"}} {}",
                s.aborts[slot]
            );
        }
        for (version, sample) in [("stable", &s.stable_sample), ("canary", &s.canary_sample)] {
            if let Some(ns) = sample.cost_ns {
                let _ = writeln!(
                    out,
                    "bpfship_version_cost_ns{{deployment=\"{name}\",version=\"{version}\"}} {ns}"
                );
            }
        }
        for (reason, n) in &s.rollbacks {
            let _ = writeln!(
                out,
                "bpfship_rollbacks_total{{deployment=\"{name}\",reason=\"{reason}\"}} {n}"
            );
        }
        if let Some(v) = &s.last_verification {
            let _ = writeln!(
                out,
                "bpfship_last_verification_ok{{deployment=\"{name}\",digest=\"{}\"}} {}",
                v.digest,
                u8::from(v.ok)
            );
        }
        // Up unless the registry could not be reached: a registry that serves tampered content
        // is up, and counted under `bpfship_registry_failures_total{class="integrity"}`.
        let _ = writeln!(
            out,
            "bpfship_registry_up{{deployment=\"{name}\"}} {}",
            u8::from(
                s.registry == "ok"
                    || s.registry_failure
                        .is_some_and(|c| c != bpfship_registry::ErrorClass::Unavailable)
            )
        );
        for (class, n) in &s.registry_failures {
            let _ = writeln!(
                out,
                "bpfship_registry_failures_total{{deployment=\"{name}\",class=\"{}\"}} {n}",
                class.as_str()
            );
        }
    }
    out
}

/// Serves `/metrics` (any path) on `address` from a thread.
pub fn serve(address: &str, reg: Arc<Registry>) -> std::io::Result<()> {
    let listener = TcpListener::bind(address)?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = render(&reg);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{DeploymentStatus, VerificationStatus};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[test]
    fn renders_every_family_per_deployment() {
        let mut s = DeploymentStatus {
            phase: Phase::Canary,
            canary_percent: 10.0,
            runs: [90, 10],
            aborts: [0, 3],
            registry: "ok".into(),
            last_verification: Some(VerificationStatus {
                digest: "sha256:ab".into(),
                ok: true,
                detail: String::new(),
            }),
            ..Default::default()
        };
        s.rollbacks.insert("analysis".into(), 2);
        s.canary_sample.cost_ns = Some(12.0);
        let reg = Registry {
            statuses: BTreeMap::from([("edge".to_string(), Arc::new(Mutex::new(s)))]),
            commands: BTreeMap::new(),
        };
        let text = render(&reg);
        for line in [
            "bpfship_deployment_phase{deployment=\"edge\",phase=\"canary\"} 1",
            "bpfship_deployment_phase{deployment=\"edge\",phase=\"stable\"} 0",
            "bpfship_canary_percent{deployment=\"edge\"} 10",
            "bpfship_version_runs_total{deployment=\"edge\",version=\"canary\"} 10",
            "bpfship_version_aborts_total{deployment=\"edge\",version=\"canary\"} 3",
            "bpfship_version_cost_ns{deployment=\"edge\",version=\"canary\"} 12",
            "bpfship_rollbacks_total{deployment=\"edge\",reason=\"analysis\"} 2",
            "bpfship_last_verification_ok{deployment=\"edge\",digest=\"sha256:ab\"} 1",
            "bpfship_registry_up{deployment=\"edge\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
