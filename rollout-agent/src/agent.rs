//! Starts the agent from its configuration: shared context, one thread per deployment, the
//! control socket and the metrics listener; removes pins of deployments no longer configured.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bpfship_registry::{Client, ClientOptions};

use crate::audit::AuditLog;
use crate::config::AgentConfig;
use crate::control::{self, Registry};
use crate::deployment::{Context, Deployment, DeploymentStatus};
use crate::external::HttpSource;
use crate::hook::HookRuntime;
use crate::policy_watch::PolicyWatch;
use crate::store::ContentStore;
use crate::supervise::{Ended, Supervisor};

/// A running agent: its deployments' threads and what the control socket sees.
pub struct Agent {
    pub registry: Arc<Registry>,
    supervisor: Supervisor,
}

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a zeroed statfs buffer for the kernel to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Whether `path` is the root of a mount (its parent is on another device, or it is `/`).
fn is_mount_root(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    let Some(parent) = path.parent() else {
        return true;
    };
    match (std::fs::metadata(&path), std::fs::metadata(parent)) {
        (Ok(p), Ok(up)) => p.dev() != up.dev(),
        _ => false,
    }
}

/// Refuses a `pin_root` that is the root of a bpffs mount: other tools pin there too, and the
/// agent's directory of its own is what keeps them apart.
pub fn check_pin_root(pin_root: &Path) -> Result<(), String> {
    if is_bpffs(pin_root) && is_mount_root(pin_root) {
        return Err(format!(
            "pin_root {}: is the root of a bpffs mount, shared with other tools; use a directory of the agent's own, such as {}",
            pin_root.display(),
            pin_root.join("bpfship").display()
        ));
    }
    Ok(())
}

/// Builds the shared context from the configuration.
pub fn context(config: &AgentConfig) -> Result<Context, String> {
    check_pin_root(&config.pin_root)?;
    let poll_interval = Duration::from_secs_f64(config.poll_interval_seconds);
    let policy = PolicyWatch::load(&config.policy, poll_interval.min(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut ca_certificates = Vec::new();
    for p in &config.registry.ca_certificates {
        ca_certificates.push(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    let client = Client::new(ClientOptions {
        insecure_registries: config.registry.insecure.clone(),
        // Credentials come from the docker config (DOCKER_CONFIG or ~/.docker/config.json).
        credentials: None,
        ca_certificates,
        timeout: config.registry.timeout(),
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
        poll_interval,
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
        // Deployments removed from the configuration: detach and remove what we own — only
        // directories bpfship marked as its own, never another tool's pins.
        if let Ok(entries) = std::fs::read_dir(&config.pin_root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if config.deployments.iter().any(|d| d.name == name) {
                    continue;
                }
                if !HookRuntime::is_owned(&e.path()) {
                    tracing::warn!(path = %e.path().display(), "not a bpfship deployment directory (no owner pin): left alone");
                    continue;
                }
                HookRuntime::remove_all(&e.path());
                let _ = std::fs::remove_file(crate::state::state_path(&config.state_dir, &name));
                ctx.audit.record(&crate::audit::AuditEvent {
                    deployment: &name,
                    action: "removed",
                    digest: None,
                    policy_digest: Some(&ctx.policy.current().digest),
                    reason: "deployment no longer configured: detached and unpinned",
                });
            }
        }
        let mut statuses = BTreeMap::new();
        let mut deployments = Vec::new();
        let rollout_defaults = ctx.policy.current().rules.rollout.clone();
        for spec in &config.deployments {
            let status = Arc::new(Mutex::new(DeploymentStatus {
                name: spec.name.clone(),
                ..Default::default()
            }));
            // What the deployment leaves unset comes from the policy's `[rollout]` defaults.
            let (name, mut spec) = (spec.name.clone(), spec.clone());
            spec.rollout.inherit(&rollout_defaults);
            deployments.push(Deployment::start(spec, ctx.clone(), status.clone())?);
            statuses.insert(name, status);
        }
        // Every deployment has said what content its state names, and none runs yet: the rest
        // of the store goes.
        ctx.store.remove_unheld();
        let mut commands = BTreeMap::new();
        let supervisor = Supervisor::default();
        for deployment in deployments {
            let name = deployment.name().to_owned();
            let (tx, rx) = mpsc::channel();
            commands.insert(name.clone(), tx);
            supervisor
                .spawn(format!("deploy-{name}"), move || deployment.run(rx))
                .map_err(|e| e.to_string())?;
        }
        let registry = Arc::new(Registry { statuses, commands });
        control::serve(&config.control_socket, registry.clone())
            .map_err(|e| format!("{}: {e}", config.control_socket.display()))?;
        if !config.metrics_address.is_empty() {
            crate::metrics::serve(&config.metrics_address, registry.clone())
                .map_err(|e| format!("metrics on {}: {e}", config.metrics_address))?;
        }
        Ok(Agent {
            registry,
            supervisor,
        })
    }

    /// Blocks while the agent runs (also with no deployments: the control socket and the
    /// metrics stay up). Deployment loops never end on their own: when one does (a panic), this
    /// returns how, and the caller exits non-zero so the service manager restarts the agent.
    pub fn wait(self) -> Ended {
        self.supervisor.first_end()
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
