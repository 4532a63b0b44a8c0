//! Test support: Debian's `docker-registry` (CNCF distribution 2.8) on a free loopback port, with
//! storage in a temporary directory. Optionally with TLS and basic auth.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How a test registry authenticates.
enum Auth<'a> {
    /// htpasswd basic auth for one user.
    Basic(&'a str, &'a str),
    /// Token auth sending clients to this realm.
    Token(&'a str),
}

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

    /// Starts a registry with a self-signed TLS certificate and token auth whose challenges name
    /// `realm` (the registry sends every client there; no token it would accept is ever issued,
    /// so tests see only the challenge and what the client does with it). Returns it and the CA
    /// certificate PEM to trust.
    pub fn start_tls_token_auth(realm: &str) -> Result<(Self, Vec<u8>), String> {
        let reg = Self::launch(Some(Auth::Token(realm)))?;
        let ca = std::fs::read(reg.dir.path().join("cert.pem")).map_err(|e| e.to_string())?;
        Ok((reg, ca))
    }

    /// Starts a registry with a self-signed TLS certificate and htpasswd basic auth for one user.
    /// Returns it and the CA certificate PEM to trust.
    pub fn start_tls_basic_auth(user: &str, password: &str) -> Result<(Self, Vec<u8>), String> {
        let reg = Self::launch(Some(Auth::Basic(user, password)))?;
        let ca = std::fs::read(reg.dir.path().join("cert.pem")).map_err(|e| e.to_string())?;
        Ok((reg, ca))
    }

    fn launch(auth: Option<Auth>) -> Result<Self, String> {
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
        if let Some(auth) = &auth {
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
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("cert.pem").display(),
                d.join("key.pem").display(),
            ));
            match auth {
                Auth::Basic(user, password) => {
                    run(Command::new("htpasswd")
                        .args(["-Bbc"])
                        .arg(d.join("htpasswd"))
                        .args([user, password]))?;
                    config.push_str(&format!(
                        "auth:\n  htpasswd:\n    realm: bpfship-test\n    path: {}\n",
                        d.join("htpasswd").display()
                    ));
                }
                Auth::Token(realm) => config.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: bpfship-test\n    issuer: bpfship-test\n    rootcertbundle: {}\n",
                    d.join("cert.pem").display()
                )),
            }
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

/// One request as the hostile server saw it, and the answer it will send: a rewrite hook may
/// change any part of the answer (status, headers, body), or declare a `Content-Length` other
/// than the body's.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// Path and query, as sent (`/v2/…`).
    pub path: String,
    /// Request headers, names lowercased.
    pub request_headers: Vec<(String, String)>,
    pub status: u16,
    /// Response headers (names lowercased); `content-length` is written from `declared_length`
    /// or the body, never from here.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A `Content-Length` to claim instead of the body's length (the connection closes after the
    /// body either way).
    pub declared_length: Option<u64>,
    /// How the answer is delivered: whole, or not at all, late, or slowly.
    pub delivery: Delivery,
}

/// How the hostile server delivers its answer (the faults a network or a sick registry causes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delivery {
    /// At once, whole.
    #[default]
    Whole,
    /// The connection is closed without an answer (a crash or reset mid-request).
    Hangup,
    /// Nothing for this long, then the whole answer.
    Stall(Duration),
    /// The head and the first half of the body, then nothing for this long, then a close.
    StallBody(Duration),
    /// The body `chunk` bytes at a time with `pause` between pieces.
    Trickle { chunk: usize, pause: Duration },
}

impl Exchange {
    /// The first request header `name` (lowercase).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Replaces (or adds) the response header `name`.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| k != name);
        self.headers.push((name.to_owned(), value.to_owned()));
    }
}

/// How a test makes the server misbehave: called for every exchange after the upstream answered.
pub type Rewrite = std::sync::Arc<dyn Fn(&mut Exchange) + Send + Sync>;

/// A hostile registry: an HTTP/1.1 server on a loopback port that forwards each request to a
/// real registry (`upstream`, e.g. a [`TestRegistry`]'s address) and lets the test rewrite the
/// answer — inflate a `Content-Length`, swap a blob, add a header, redirect. Without an upstream
/// it answers 404 unless the rewrite says otherwise (a realm or another origin that records what
/// it is sent). Every exchange is recorded. Stopped when dropped.
pub struct HostileServer {
    /// `127.0.0.1:<port>`.
    pub address: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Exchange>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostileServer {
    /// Starts the server in front of `upstream` (`host:port` of a plain-HTTP registry), or alone.
    pub fn start(upstream: Option<&str>, rewrite: Rewrite) -> Result<Self, String> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let address = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let upstream = upstream.map(str::to_owned);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (up, rw, seen) = (upstream.clone(), rewrite.clone(), seen2.clone());
                        std::thread::spawn(move || {
                            let _ = serve_one(stream, up.as_deref(), &rw, &seen);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            address,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every exchange so far, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// HTTP headers, names lowercased, in order.
type Headers = Vec<(String, String)>;

/// Largest request or upstream answer the server buffers (tests push small artifacts).
const MAX_EXCHANGE: usize = 64 << 20;

/// Reads one HTTP/1.1 message head (up to the blank line) and returns (start line, headers,
/// bytes of body already read).
fn read_head(stream: &mut impl std::io::Read) -> std::io::Result<(String, Headers, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("head too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the end of the head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((start, headers, rest))
}

/// Reads a body of `content-length` bytes, or chunked, or (for a response) up to EOF.
fn read_body(
    stream: &mut impl std::io::Read,
    headers: &[(String, String)],
    mut got: Vec<u8>,
    until_eof: bool,
) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if len > MAX_EXCHANGE {
            return Err(std::io::Error::other("body too large"));
        }
        let missing = len.saturating_sub(got.len());
        stream.take(missing as u64).read_to_end(&mut got)?;
        got.truncate(len);
        return Ok(got);
    }
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        stream.take(MAX_EXCHANGE as u64).read_to_end(&mut got)?;
        let mut out = Vec::new();
        let mut rest = got.as_slice();
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_line = String::from_utf8_lossy(&rest[..i]);
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            rest = &rest[i + 2..];
            if size == 0 || size > rest.len() {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or_default();
        }
        return Ok(out);
    }
    if until_eof {
        stream.take(MAX_EXCHANGE as u64).read_to_end(&mut got)?;
        return Ok(got);
    }
    Ok(got)
}

fn serve_one(
    mut client: std::net::TcpStream,
    upstream: Option<&str>,
    rewrite: &Rewrite,
    seen: &std::sync::Mutex<Vec<Exchange>>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (start, request_headers, rest) = read_head(&mut client)?;
    let body = read_body(&mut client, &request_headers, rest, false)?;
    let mut parts = start.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut ex = Exchange {
        method: method.clone(),
        path: path.clone(),
        request_headers: request_headers.clone(),
        status: 404,
        headers: Vec::new(),
        body: Vec::new(),
        declared_length: None,
        delivery: Delivery::Whole,
    };
    if let Some(up) = upstream {
        let mut u = std::net::TcpStream::connect(up)?;
        u.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in &request_headers {
            if !matches!(
                k.as_str(),
                "connection" | "content-length" | "transfer-encoding"
            ) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        ));
        u.write_all(head.as_bytes())?;
        u.write_all(&body)?;
        let (status_line, headers, rest) = read_head(&mut u)?;
        ex.status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(502);
        let has_body = method != "HEAD" && ex.status != 204 && ex.status != 304;
        ex.body = if has_body {
            read_body(&mut u, &headers, rest, true)?
        } else {
            Vec::new()
        };
        let upstream_length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<u64>().ok());
        ex.headers = headers
            .into_iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "connection" | "content-length" | "transfer-encoding"
                )
            })
            .collect();
        if !has_body {
            ex.declared_length = upstream_length;
        }
    }
    rewrite(&mut ex);
    let mut out = format!("HTTP/1.1 {} X\r\n", ex.status);
    for (k, v) in &ex.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let length = ex.declared_length.unwrap_or(ex.body.len() as u64);
    out.push_str(&format!(
        "content-length: {length}\r\nconnection: close\r\n\r\n"
    ));
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(ex.clone());
    let body: &[u8] = if ex.method == "HEAD" { &[] } else { &ex.body };
    match ex.delivery {
        Delivery::Whole => {}
        Delivery::Hangup => return client.shutdown(std::net::Shutdown::Both),
        Delivery::Stall(d) => std::thread::sleep(d),
        Delivery::StallBody(d) => {
            client.write_all(out.as_bytes())?;
            client.write_all(&body[..body.len() / 2])?;
            client.flush()?;
            std::thread::sleep(d);
            return client.shutdown(std::net::Shutdown::Both);
        }
        Delivery::Trickle { chunk, pause } => {
            client.write_all(out.as_bytes())?;
            for piece in body.chunks(chunk.max(1)) {
                client.write_all(piece)?;
                client.flush()?;
                std::thread::sleep(pause);
            }
            return Ok(());
        }
    }
    client.write_all(out.as_bytes())?;
    client.write_all(body)?;
    client.flush()
}
