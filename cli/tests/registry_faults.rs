//! Registry faults, injected by a proxy on loopback in front of the real `docker-registry`:
//! server errors, hang-ups, stalls, trickling bodies, truncated bodies, wrong digests, an
//! oversized manifest and a redirect loop, each against `pull`, `verify` and `inspect`, and
//! upload faults against `push`. Every case must end in one clear line and a non-zero exit
//! within a bound (never a hang past `--registry-timeout`, never a crash), and leave nothing
//! behind: no partial file from `pull`, no tag from a failed `push`. A slow registry that still
//! answers in time is not a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpfship_registry::testing::{Delivery, Exchange, HostileServer, TestRegistry};
use bpfship_registry::{Client, ClientOptions, Reference};
use common::{Run, Work, s};

/// The timeout every command gets (`--registry-timeout`).
const TIMEOUT_SECONDS: &str = "2";
/// Longest a command may run before the test calls it a hang: the timeout bounds each request,
/// and a command makes a handful of them.
const HANG: Duration = Duration::from_secs(45);
/// How long a stalling server holds a connection: far past the timeout.
const STALL: Duration = Duration::from_secs(30);

/// Which requests a fault hits.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The artifact's manifest, by tag or digest (not the signatures').
    Manifest,
    /// Every blob GET (config, layer, signature layers).
    Blob,
    /// Starting a blob upload (`POST …/blobs/uploads/`).
    UploadStart,
    /// Finishing a blob upload (`PUT …/blobs/uploads/…?digest=`).
    UploadFinish,
}

impl Target {
    fn hits(self, ex: &Exchange) -> bool {
        let p = ex.path.as_str();
        match self {
            Target::Manifest => {
                matches!(ex.method.as_str(), "GET" | "HEAD")
                    && (p.contains("/manifests/v1") || p.contains("/manifests/sha256:"))
            }
            Target::Blob => ex.method == "GET" && p.contains("/blobs/sha256:"),
            Target::UploadStart => ex.method == "POST" && p.contains("/blobs/uploads/"),
            Target::UploadFinish => ex.method == "PUT" && p.contains("/blobs/uploads/"),
        }
    }
}

/// One injected fault.
struct Fault {
    name: &'static str,
    target: Target,
    apply: fn(&mut Exchange),
    /// A fragment the error line must contain.
    says: &'static str,
}

fn status(ex: &mut Exchange, code: u16) {
    ex.status = code;
    ex.body =
        b"{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"down for maintenance\"}]}".to_vec();
    ex.declared_length = None;
}

const READ_FAULTS: &[Fault] = &[
    Fault {
        name: "503 on the manifest",
        target: Target::Manifest,
        apply: |ex| status(ex, 503),
        says: "503",
    },
    Fault {
        name: "500 on blobs",
        target: Target::Blob,
        apply: |ex| status(ex, 500),
        says: "500",
    },
    Fault {
        name: "hang-up on the manifest",
        target: Target::Manifest,
        apply: |ex| ex.delivery = Delivery::Hangup,
        says: "cannot reach the registry",
    },
    Fault {
        name: "hang-up on blobs",
        target: Target::Blob,
        apply: |ex| ex.delivery = Delivery::Hangup,
        says: "cannot reach the registry",
    },
    Fault {
        name: "stall before the answer",
        target: Target::Blob,
        apply: |ex| ex.delivery = Delivery::Stall(STALL),
        says: "timed out",
    },
    Fault {
        name: "stall in the middle of a body",
        target: Target::Blob,
        apply: |ex| ex.delivery = Delivery::StallBody(STALL),
        says: "cannot reach the registry",
    },
    Fault {
        name: "trickling manifest",
        target: Target::Manifest,
        apply: |ex| {
            ex.delivery = Delivery::Trickle {
                chunk: 8,
                pause: Duration::from_millis(100),
            }
        },
        says: "past the registry timeout",
    },
    Fault {
        name: "truncated body",
        target: Target::Blob,
        apply: |ex| {
            ex.declared_length = Some(ex.body.len() as u64);
            ex.body.truncate(ex.body.len() / 2);
        },
        says: "cannot reach the registry",
    },
    Fault {
        name: "wrong digest",
        target: Target::Blob,
        apply: |ex| {
            if let Some(b) = ex.body.last_mut() {
                *b ^= 0x55;
            }
        },
        says: "digest mismatch",
    },
    Fault {
        name: "oversized manifest",
        target: Target::Manifest,
        apply: |ex| {
            let mut body = b"{\"schemaVersion\":2,\"pad\":\"".to_vec();
            body.resize(body.len() + (5 << 20), b'x');
            body.extend_from_slice(b"\"}");
            ex.body = body;
        },
        says: "too large",
    },
    Fault {
        name: "redirect loop",
        target: Target::Blob,
        apply: |ex| {
            let here = ex.path.clone();
            ex.status = 307;
            ex.body.clear();
            ex.set_header("location", &here);
        },
        says: "redirect",
    },
];

const UPLOAD_FAULTS: &[Fault] = &[
    Fault {
        name: "503 when an upload starts",
        target: Target::UploadStart,
        apply: |ex| status(ex, 503),
        says: "503",
    },
    Fault {
        name: "stall when an upload finishes",
        target: Target::UploadFinish,
        apply: |ex| ex.delivery = Delivery::Stall(STALL),
        says: "timed out",
    },
    Fault {
        name: "hang-up when an upload finishes",
        target: Target::UploadFinish,
        apply: |ex| ex.delivery = Delivery::Hangup,
        says: "cannot reach the registry",
    },
];

/// A proxy in front of `upstream` that applies `fault` to the requests it targets.
fn proxy(upstream: &str, fault: &'static Fault) -> HostileServer {
    HostileServer::start(
        Some(upstream),
        Arc::new(move |ex: &mut Exchange| {
            if fault.target.hits(ex) {
                (fault.apply)(ex);
            }
        }),
    )
    .expect("proxy starts")
}

/// Runs `cmd` with a watchdog: a command still running after [`HANG`] is killed and the test
/// fails naming it.
fn run_bounded(mut cmd: Command, what: &str) -> (Run, Duration) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bpfship starts");
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {HANG:?} (hung)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (Run::from(out), started.elapsed())
}

/// Asserts a clean failure: a non-zero exit, one line on stderr naming the problem.
#[track_caller]
fn assert_clean_failure(run: &Run, what: &str, says: &str) {
    assert!(
        matches!(run.code, Some(1 | 2)),
        "{what}: expected exit 1 or 2, got {:?}\nstderr: {}",
        run.code,
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line, got: {}",
        run.stderr
    );
    assert!(
        lines[0].to_lowercase().contains(says),
        "{what}: expected the line to say {says:?}, got: {}",
        lines[0]
    );
}

fn is_empty_or_absent(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// A registry holding `net/xdp:v1` (xdp_pass.o, signed); the work directory, the public key
/// and the object's bytes. `None` (SKIP printed) without the registry or clang.
fn signed_artifact() -> Option<(TestRegistry, Work, PathBuf, Vec<u8>)> {
    let reg = common::registry()?;
    let xdp = common::object("xdp_pass")?;
    let w = Work::new();
    let (key, public) = w.key_pair("release");
    let file = w.write("xdp_pass.o", &xdp);
    w.push(
        &file,
        &format!("{}/net/xdp:v1", reg.address),
        Some(&key),
        &[],
    );
    Some((reg, w, public, xdp))
}

#[test]
fn read_faults_end_in_one_clear_line_within_the_timeout_and_leave_nothing() {
    let Some((reg, w, public, _)) = signed_artifact() else {
        return;
    };

    let mut summary = Vec::new();
    for (i, fault) in READ_FAULTS.iter().enumerate() {
        let p = proxy(&reg.address, fault);
        let via = format!("{}/net/xdp:v1", p.address);
        let out = w.path(&format!("out-{i}"));
        let commands: [(&str, Vec<&str>); 3] = [
            (
                "pull",
                vec!["pull", "--key", s(&public), &via, "-o", s(&out)],
            ),
            ("verify", vec!["verify", "--key", s(&public), &via]),
            ("inspect", vec!["inspect", &via]),
        ];
        for (verb, args) in commands {
            let what = format!("{verb} with {}", fault.name);
            let mut cmd = w.cmd();
            cmd.arg(args[0])
                .args(["--registry-timeout", TIMEOUT_SECONDS])
                .args(&args[1..]);
            let (run, took) = run_bounded(cmd, &what);
            assert_clean_failure(&run, &what, fault.says);
            summary.push(format!("{what}: exit {:?} in {took:.1?}", run.code));
        }
        assert!(
            is_empty_or_absent(&out),
            "pull with {} left files behind in {}",
            fault.name,
            out.display()
        );
    }
    eprintln!("{}", summary.join("\n"));
}

#[test]
fn a_slow_registry_that_answers_in_time_is_not_a_failure() {
    let Some((reg, w, public, xdp)) = signed_artifact() else {
        return;
    };
    static SLOW: Fault = Fault {
        name: "slow manifest",
        target: Target::Manifest,
        apply: |ex| {
            ex.delivery = Delivery::Trickle {
                chunk: 512,
                pause: Duration::from_millis(50),
            }
        },
        says: "",
    };
    let p = proxy(&reg.address, &SLOW);
    let out = w.path("out");
    let mut cmd = w.cmd();
    // The proxy is a mirror of the registry: its signatures name the registry's repository.
    cmd.args(["pull", "--registry-timeout", "10", "--key", s(&public)])
        .arg(format!(
            "--remap-identity={}/net={}/net",
            p.address, reg.address
        ))
        .arg(format!("{}/net/xdp:v1", p.address))
        .args(["-o", s(&out)]);
    let (run, _) = run_bounded(cmd, "pull from a slow registry");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(std::fs::read(out.join("xdp_pass.o")).unwrap(), xdp);
}

#[test]
fn upload_faults_fail_the_push_and_publish_no_tag() {
    let reg = registry_or_skip!();
    let xdp = object_or_skip!("xdp_pass");
    let w = Work::new();
    let (key, _) = w.key_pair("release");
    let file = w.write("xdp_pass.o", &xdp);
    let direct = Client::new(ClientOptions::default()).unwrap();
    for (i, fault) in UPLOAD_FAULTS.iter().enumerate() {
        let p = proxy(&reg.address, fault);
        let tag = format!("v{i}");
        let what = format!("push with {}", fault.name);
        let mut cmd = w.cmd();
        cmd.args([
            "push",
            "--registry-timeout",
            TIMEOUT_SECONDS,
            "--key",
            s(&key),
        ])
        .arg(s(&file))
        .arg(format!("{}/net/up:{tag}", p.address));
        let (run, took) = run_bounded(cmd, &what);
        assert_clean_failure(&run, &what, fault.says);
        eprintln!("{what}: exit {:?} in {took:.1?}", run.code);
        let repo = Reference::parse(&format!("{}/net/up:{tag}", reg.address)).unwrap();
        assert!(
            direct.fetch_tag(&repo, &tag).unwrap().is_none(),
            "{what}: the tag was published"
        );
    }
}
