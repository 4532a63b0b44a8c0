//! A whole rollout environment: a real docker-registry, signing keys, a policy, the agent
//! binary running with a config, and helpers to publish versions and watch the agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bpfship_agent::control::{Request, RequestKind, request};
use bpfship_registry::testing::TestRegistry;
use bpfship_registry::{Client, ClientOptions, Descriptor, Reference};
use bpfship_trust::sign::{SignatureFormat, sign_descriptor};
use bpfship_verifier::keys::PrivateKey;

/// Who signs a published version.
#[derive(Debug, Clone, Copy)]
pub enum Signer {
    Trusted,
    Untrusted,
    Unsigned,
}

pub struct Harness {
    pub registry: TestRegistry,
    pub client: Client,
    pub trusted: PrivateKey,
    pub untrusted: PrivateKey,
    pub dir: tempfile::TempDir,
    pub pin_root: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub metrics: String,
    agent: Option<Child>,
}

/// Everything after `http(s)://`.
pub fn host(url: &str) -> &str {
    url.split("://").nth(1).unwrap_or(url)
}

impl Harness {
    /// Starts the registry and writes the policy; `deployments` is the TOML of the deployment
    /// tables, with `{registry}` replaced by the registry's address.
    pub fn new(tag: &str, deployments: &str) -> Harness {
        let registry =
            TestRegistry::start().expect("docker-registry starts (run scripts/setup.sh)");
        let client = Client::new(ClientOptions::default()).unwrap();
        let trusted = PrivateKey::generate();
        let untrusted = PrivateKey::generate();
        let dir = tempfile::tempdir().unwrap();
        write_policy(dir.path(), &[&trusted]);
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/bpfship-test-{tag}-{}",
            std::process::id()
        ));
        let socket = dir.path().join("agent.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = format!("127.0.0.1:{port}");
        let config = dir.path().join("agent.toml");
        let text = format!(
            "host_id = \"test-host\"\nstate_dir = \"state\"\npin_root = \"{}\"\ncontrol_socket = \"{}\"\n\
             metrics_address = \"{metrics}\"\npolicy = \"policy.toml\"\npoll_interval_seconds = 0.3\n{}",
            pin_root.display(),
            socket.display(),
            deployments.replace("{registry}", host(&registry.url()))
        );
        std::fs::write(&config, text).unwrap();
        Harness {
            registry,
            client,
            trusted,
            untrusted,
            dir,
            pin_root,
            config,
            socket,
            metrics,
            agent: None,
        }
    }

    /// Rewrites the policy so that exactly `keys` are trusted.
    pub fn trust_only(&self, keys: &[&PrivateKey]) {
        write_policy(self.dir.path(), keys);
    }

    /// Points `repo:tag` at the manifest `digest` already in the registry (as anyone with push
    /// access can).
    pub fn retag(&self, repo: &str, tag: &str, digest: &str) {
        let r = Reference::parse(&format!("{}:{tag}", self.repo(repo))).unwrap();
        let (bytes, media_type) = self.client.fetch_manifest(&r, digest).unwrap();
        let put = self
            .client
            .push_manifest(&r, tag, &media_type, &bytes)
            .unwrap();
        assert_eq!(put.digest, digest);
    }

    /// `127.0.0.1:PORT/<repo>`.
    pub fn repo(&self, repo: &str) -> String {
        format!("{}/{repo}", host(&self.registry.url()))
    }

    /// Pushes a built test object to `repo:tag`, signed as asked; returns the manifest digest.
    pub fn publish(&self, object: &str, repo: &str, tag: &str, signer: Signer) -> String {
        let descriptor = self.push(object, repo, tag);
        self.sign(repo, tag, &descriptor, signer);
        descriptor.digest
    }

    /// Signs what `publish`/`push` pushed.
    pub fn sign(&self, repo: &str, tag: &str, descriptor: &Descriptor, signer: Signer) {
        let key = match signer {
            Signer::Trusted => &self.trusted,
            Signer::Untrusted => &self.untrusted,
            Signer::Unsigned => return,
        };
        let target = Reference::parse(&format!("{}:{tag}", self.repo(repo))).unwrap();
        sign_descriptor(
            &self.client,
            &target,
            descriptor,
            key,
            SignatureFormat::Both,
        )
        .unwrap();
    }

    /// Signs what `push` pushed with the trusted key and a signed release `version`.
    pub fn sign_version(&self, repo: &str, tag: &str, descriptor: &Descriptor, version: u64) {
        let target = Reference::parse(&format!("{}:{tag}", self.repo(repo))).unwrap();
        let options = bpfship_trust::sign::SignOptions {
            format: SignatureFormat::Both,
            version: Some(version),
        };
        sign_descriptor(&self.client, &target, descriptor, &self.trusted, options).unwrap();
    }

    /// Pushes a built test object to `repo:tag`, unsigned; returns its manifest descriptor.
    pub fn push(&self, object: &str, repo: &str, tag: &str) -> Descriptor {
        let bytes = super::object(object);
        let inspection = bpfship_trust::content::inspect(&bytes, None).unwrap();
        let target = Reference::parse(&format!("{}:{tag}", self.repo(repo))).unwrap();
        let published = bpfship_trust::publish::push(
            &self.client,
            &target,
            tag,
            &format!("{object}.o"),
            &bytes,
            &inspection,
            None,
            None,
        )
        .unwrap();
        published.descriptor
    }

    /// Removes every deployment from the configuration (the agent must then clean up).
    pub fn remove_deployments(&self) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let kept = text.split("[[deployment]]").next().unwrap().to_string();
        std::fs::write(&self.config, kept).unwrap();
    }

    pub fn start_agent(&mut self) {
        let child = self.spawn_agent(&[]);
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let answering = |h: &Self| {
            request(
                &h.socket,
                &Request {
                    command: RequestKind::Status,
                    deployment: None,
                    digest: None,
                },
            )
            .is_ok()
        };
        while !answering(self) {
            let exited = self
                .agent
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the agent did not start ({exited:?}):\n{}",
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the agent binary with extra environment, logging to `agent.log`.
    pub fn spawn_agent(&self, env: &[(&str, &str)]) -> Child {
        assert!(self.agent.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_bpfship-agent"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts")
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn audit_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("state/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }

    /// Sends a control command; returns the first deployment's status.
    pub fn control(
        &self,
        command: &str,
        deployment: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        self.send(command, deployment, None)
    }

    /// `bpfship agent pin DEPLOYMENT DIGEST`.
    pub fn pin(&self, deployment: &str, digest: &str) -> Result<serde_json::Value, String> {
        self.send("pin", Some(deployment), Some(digest))
    }

    fn send(
        &self,
        command: &str,
        deployment: Option<&str>,
        digest: Option<&str>,
    ) -> Result<serde_json::Value, String> {
        let command = serde_json::from_value(serde_json::Value::from(command))
            .map_err(|e| format!("{command}: {e}"))?;
        let r = request(
            &self.socket,
            &Request {
                command,
                deployment: deployment.map(str::to_owned),
                digest: digest.map(str::to_owned),
            },
        )
        .map_err(|e| e.to_string())?;
        if !r.ok {
            return Err(r.error.unwrap_or_default());
        }
        let first = r
            .deployments
            .into_iter()
            .next()
            .ok_or_else(|| "no deployments".to_string())?;
        // The scenarios read the status as the JSON `bpfship agent status --output json` prints.
        serde_json::to_value(first).map_err(|e| e.to_string())
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        self.control("status", None).ok()
    }

    /// Polls the status until `pred` holds; panics with the last status and the agent's log
    /// after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if self.agent.is_none() {
                panic!(
                    "waiting for {what}: the agent is not running\nagent log:\n{}",
                    self.agent_log()
                );
            }
            if let Some(s) = self.status() {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; last status: {}\nagent log:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default(),
            self.agent_log()
        );
    }

    /// The Prometheus metrics text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics).expect("metrics listener");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The pin path of a version's program for `deployment`.
    pub fn version_pin(&self, deployment: &str, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.pin_root
            .join(deployment)
            .join(format!("v-{}", &hex[..16]))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill_agent();
        if let Ok(entries) = std::fs::read_dir(&self.pin_root) {
            for e in entries.flatten() {
                bpfship_agent::hook::HookRuntime::remove_all(&e.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

/// A policy trusting exactly `keys` for every loopback repository, with the eBPF rules the
/// scenarios need.
fn write_policy(dir: &Path, keys: &[&PrivateKey]) {
    let pems: Vec<String> = keys
        .iter()
        .map(|k| format!("\"\"\"\n{}\"\"\"", k.public_key().to_pem()))
        .collect();
    let policy = format!(
        "version = 1\n[[trust]]\nrepositories = [\"127.0.0.1:*/**\"]\nkeys = [{}]\n\
         [ebpf]\nallowed_program_types = [\"xdp\", \"sched_cls\", \"tracepoint\", \"kprobe\"]\nrequire_btf = true\n",
        pems.join(", ")
    );
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
}

/// Loaded programs whose kernel name is `name`.
pub fn programs_named(name: &str) -> Vec<u32> {
    use bpfship_agent::kernel::{ProgramFd, loaded_program_ids};
    loaded_program_ids()
        .into_iter()
        .filter(|id| {
            ProgramFd::by_id(*id)
                .and_then(|fd| fd.info())
                .is_ok_and(|i| i.name == name)
        })
        .collect()
}

/// The good-events counter (`bpfship_health` key 0) of the program pinned at `pin`.
pub fn good_events(pin: &Path) -> u64 {
    use bpfship_agent::kernel::{ProgramFd, health::HealthMap};
    let fd = ProgramFd::open_pinned(pin).expect("version pinned");
    let health = HealthMap::of(&fd).unwrap().expect("a bpfship_health map");
    health.counts().unwrap().0
}
