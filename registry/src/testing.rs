//! Test support: Debian's `docker-registry` (CNCF distribution 2.8) on a free loopback port, with
//! storage in a temporary directory. Optionally with TLS and basic auth.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry; stopped when dropped.
pub struct TestRegistry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub address: String,
    tls: bool,
}

impl TestRegistry {
    /// Starts a plain-HTTP registry. `Err` says why (e.g. the binary is missing: run the setup).
    pub fn start() -> Result<Self, String> {
        Self::launch(None)
    }

    /// Starts a registry with a self-signed TLS certificate and htpasswd basic auth for one user.
    /// Returns it and the CA certificate PEM to trust.
    pub fn start_tls_basic_auth(user: &str, password: &str) -> Result<(Self, Vec<u8>), String> {
        let reg = Self::launch(Some((user, password)))?;
        let ca = std::fs::read(reg.dir.path().join("cert.pem")).map_err(|e| e.to_string())?;
        Ok((reg, ca))
    }

    fn launch(auth: Option<(&str, &str)>) -> Result<Self, String> {
        if !Path::new(REGISTRY_BIN).exists() {
            return Err(format!("{REGISTRY_BIN} not found: run scripts/setup.sh"));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let address = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let d = dir.path();
            run(Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    // An end-entity certificate: webpki refuses a CA certificate (openssl's
                    // default for -x509) as a server's ("CaUsedAsEndEntity").
                    "-addext",
                    "basicConstraints=critical,CA:FALSE",
                ])
                .arg("-keyout")
                .arg(d.join("key.pem"))
                .arg("-out")
                .arg(d.join("cert.pem")))?;
            run(Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(d.join("htpasswd"))
                .args([user, password]))?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: bpfship-test\n    path: {}\n",
                d.join("cert.pem").display(),
                d.join("key.pem").display(),
                d.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).map_err(|e| e.to_string())?;
        let mut reg = Self {
            dir,
            child: None,
            address,
            tls: auth.is_some(),
        };
        reg.restart()?;
        Ok(reg)
    }

    /// Starts (again) the registry process on the same port and storage.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{REGISTRY_BIN}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.address).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "docker-registry did not listen on {} within 15 s",
            self.address
        ))
    }

    /// Stops the registry process (storage is kept for `restart`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The registry's storage root (tests tamper with blobs here).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `http(s)://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.address
        )
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}
