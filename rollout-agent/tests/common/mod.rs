//! Test support shared by the agent's tests: root detection, the test programs built from
//! testdata with clang, network namespaces with veth pairs.
#![allow(dead_code)]

pub mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `true` when the tests can use BPF and network namespaces; prints why not otherwise.
pub fn can_use_kernel(test: &str) -> bool {
    if !bpfship_test_support::require_root(&format!(
        "{test} loads BPF programs into network namespaces"
    )) {
        return false;
    }
    if let Err(e) = bpfship_agent::kernel::bpf_available() {
        bpfship_test_support::skip(bpfship_test_support::Missing::Setup(format!(
            "BPF unavailable: {e}"
        )));
        return false;
    }
    if objects().is_none() {
        bpfship_test_support::skip(bpfship_test_support::Missing::Setup(
            "cannot build the test programs (clang missing? run scripts/setup.sh)".into(),
        ));
        return false;
    }
    true
}

/// Directory of the built agent test programs (`<name>.o`).
pub fn objects() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        // Prebuilt objects (vm-tests: a VM has no clang) are used as they are.
        if let Some(prebuilt) = std::env::var_os("BPFSHIP_TEST_EBPF_DIR") {
            let out = PathBuf::from(prebuilt);
            return Some(out.join("agent"));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = root.join("target/testdata-ebpf");
        let status = Command::new("flock")
            .arg(root.join("target/testdata-ebpf.lock"))
            .arg("bash")
            .arg(root.join("testdata/build-ebpf.sh"))
            .arg(&out)
            .status();
        match status {
            Ok(s) if s.success() => Some(out.join("agent")),
            other => {
                eprintln!("cannot build testdata: {other:?}");
                None
            }
        }
    })
    .as_deref()
}

/// The bytes of a built agent test program.
pub fn object(name: &str) -> Vec<u8> {
    let dir = objects().expect("objects built");
    std::fs::read(dir.join(format!("{name}.o"))).expect("built object")
}

/// A network namespace with a veth pair: `host` side in the root namespace, `peer` inside.
pub struct VethPair {
    pub netns: String,
    pub host: String,
    pub peer: String,
    pub host_ip: String,
    pub peer_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl VethPair {
    /// Creates `bs<tag>` (host, 10.<n>.0.1) and its peer inside netns `bpfship-<tag>`
    /// (10.<n>.0.2).
    pub fn create(tag: &str, subnet: u8) -> VethPair {
        let netns = format!("bpfship-{tag}");
        let host = format!("bs{tag}");
        let peer = format!("bs{tag}p");
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        let _ = Command::new("ip").args(["link", "del", &host]).output();
        ip(&["netns", "add", &netns]);
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &netns]);
        let host_ip = format!("10.{subnet}.0.1");
        let peer_ip = format!("10.{subnet}.0.2");
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{peer_ip}/24"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &netns, "link", "set", &peer, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        VethPair {
            netns,
            host,
            peer,
            host_ip,
            peer_ip,
        }
    }

    /// Sends `count` UDP datagrams from inside the namespace to `host_ip:port`, one per flow
    /// (source port) in `flows` round-robin, paced so the receiver keeps up. Returns when done.
    pub fn send_udp(&self, port: u16, count: u32, flows: u32) {
        let script = format!(
            "import socket,time\n\
             socks=[]\n\
             for i in range({flows}):\n\
             \x20   s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('{peer}',0)); socks.append(s)\n\
             for i in range({count}):\n\
             \x20   socks[i % {flows}].sendto(b'x'*64,('{host}',{port}))\n\
             \x20   if i % 100 == 99: time.sleep(0.001)\n",
            peer = self.peer_ip,
            host = self.host_ip,
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "python3", "-c", &script])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "sender: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// A UDP receiver on the host side counting datagrams until dropped.
pub struct UdpCounter {
    pub port: u16,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpCounter {
    pub fn bind(ip: &str) -> UdpCounter {
        use std::sync::atomic::Ordering;
        let sock = std::net::UdpSocket::bind((ip, 0)).expect("bind");
        {
            use std::os::fd::AsRawFd;
            // A large receive buffer (root may exceed rmem_max): loss must come from the
            // data path under test, not from this socket.
            let size: libc::c_int = 16 << 20;
            // SAFETY: a valid socket and a c_int option value.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        sock.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        UdpCounter {
            port,
            count,
            stop,
            thread: Some(thread),
        }
    }

    /// Datagrams received so far (waits briefly for in-flight ones).
    pub fn received(&self) -> u64 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The scenarios count programs loaded in the kernel: they run one at a time (other test
/// binaries are kept out by the shared flock).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reason status gives for rejecting `digest` for good, if it does.
pub fn rejected(s: &serde_json::Value, digest: &str) -> Option<String> {
    s["rejected"]
        .as_array()?
        .iter()
        .find(|r| r["digest"] == digest)
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
}

/// Why `digest` awaits a valid signature, if it does.
pub fn awaiting(s: &serde_json::Value, digest: &str) -> Option<String> {
    s["awaiting_signature"]
        .as_array()?
        .iter()
        .find(|r| r["digest"] == digest)
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
}
