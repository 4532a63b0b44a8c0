//! Starts the agent from its configuration: shared context, one thread per deployment, the
//! control socket and the metrics listener; removes pins of deployments no longer configured.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bpfship_registry::{Client, ClientOptions};
use bpfship_verifier::policy::Policy;

use crate::audit::AuditLog;
use crate::config::AgentConfig;
use crate::control::{self, Registry};
use crate::deployment::{Context, Deployment, DeploymentStatus};
use crate::external::HttpSource;
use crate::hook::HookRuntime;
use crate::store::ContentStore;

/// A running agent: its deployments' threads and what the control socket sees.
pub struct Agent {
    pub registry: Arc<Registry>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Builds the shared context from the configuration.
pub fn context(config: &AgentConfig) -> Result<Context, String> {
    let policy = Policy::load(&config.policy).map_err(|e| e.to_string())?;
    let mut ca_certificates = Vec::new();
    for p in &config.registry.ca_certificates {
        ca_certificates.push(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    let client = Client::new(ClientOptions {
        insecure_registries: config.registry.insecure.clone(),
        // Credentials come from the docker config (DOCKER_CONFIG or ~/.docker/config.json).
        credentials: None,
        ca_certificates,
    })
    .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("{}: {e}", config.state_dir.display()))?;
    let audit_path = config.audit_log_path();
    Ok(Context {
        client,
        policy,
        store: ContentStore::new(&config.state_dir),
        audit: AuditLog::open(&audit_path).map_err(|e| format!("{}: {e}", audit_path.display()))?,
        state_dir: config.state_dir.clone(),
        pin_root: config.pin_root.clone(),
        host_id: config.host_id(),
        poll_interval: Duration::from_secs_f64(config.poll_interval_seconds),
        external: Box::new(HttpSource::new()?),
    })
}

impl Agent {
    /// Adopts and starts every deployment; fails without changing the kernel when the
    /// configuration or the policy cannot be used.
    pub fn start(config: &AgentConfig) -> Result<Agent, String> {
        crate::kernel::bpf_available()
            .map_err(|e| format!("BPF is not usable here (root needed): {e}"))?;
        let ctx = Arc::new(context(config)?);
        ensure_tracefs();
        std::fs::create_dir_all(&config.pin_root)
            .map_err(|e| format!("{}: {e}", config.pin_root.display()))?;
        // Deployments removed from the configuration: detach and remove what we own.
        if let Ok(entries) = std::fs::read_dir(&config.pin_root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !config.deployments.iter().any(|d| d.name == name) {
                    HookRuntime::remove_all(&e.path());
                    let _ =
                        std::fs::remove_file(crate::state::state_path(&config.state_dir, &name));
                    ctx.audit.record(&crate::audit::AuditEvent {
                        deployment: &name,
                        action: "removed",
                        digest: None,
                        policy_digest: Some(&ctx.policy.digest),
                        reason: "deployment no longer configured: detached and unpinned",
                    });
                }
            }
        }
        let mut statuses = BTreeMap::new();
        let mut deployments = Vec::new();
        for spec in &config.deployments {
            let status = Arc::new(Mutex::new(DeploymentStatus {
                name: spec.name.clone(),
                ..Default::default()
            }));
            deployments.push(Deployment::start(
                spec.clone(),
                ctx.clone(),
                status.clone(),
            )?);
            statuses.insert(spec.name.clone(), status);
        }
        // Every deployment has said what content its state names, and none runs yet: the rest
        // of the store goes.
        ctx.store.remove_unheld();
        let mut commands = BTreeMap::new();
        let mut threads = Vec::new();
        for deployment in deployments {
            let name = deployment.name().to_owned();
            let (tx, rx) = mpsc::channel();
            commands.insert(name.clone(), tx);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("deploy-{name}"))
                    .spawn(move || deployment.run(rx))
                    .map_err(|e| e.to_string())?,
            );
        }
        let registry = Arc::new(Registry { statuses, commands });
        control::serve(&config.control_socket, registry.clone())
            .map_err(|e| format!("{}: {e}", config.control_socket.display()))?;
        if !config.metrics_address.is_empty() {
            crate::metrics::serve(&config.metrics_address, registry.clone())
                .map_err(|e| format!("metrics on {}: {e}", config.metrics_address))?;
        }
        Ok(Agent { registry, threads })
    }

    /// Blocks while the agent runs (also with no deployments: the control socket and the
    /// metrics stay up). Deployment loops end only with the process.
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
        loop {
            std::thread::park();
        }
    }
}

/// Tracepoint deployments and the XDP abort tracker need tracefs: mount it at
/// `/sys/kernel/tracing` when it is not there (as `mount -t tracefs tracefs /sys/kernel/tracing`).
fn ensure_tracefs() {
    let root = std::path::Path::new("/sys/kernel/tracing");
    if root.join("events").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return;
    }
    // SAFETY: constant NUL-terminated strings; mount(2) has no other preconditions.
    let r = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot mount tracefs at /sys/kernel/tracing: tracepoint hooks and XDP abort counts are unavailable"
        );
    }
}
