//! The real `bpfship` binary against a real registry (Debian's docker-registry on a loopback
//! port): keys, push (signed, both layouts), verify, pull, skopeo reading what was pushed, the
//! unsigned rule, and validate with a policy.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use common::{Work, s};

/// Runs `skopeo ARGS`, or prints `SKIP: why` and returns `None` when skopeo is missing.
fn skopeo(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("skopeo").args(args).output() {
        Ok(o) => Some(o),
        Err(e) => {
            bpfship_test_support::skip(bpfship_test_support::Missing::Setup(format!(
                "skopeo not runnable ({e}): run scripts/setup.sh"
            )));
            None
        }
    }
}

/// Pushes `file` signed with `key` to `reference`, verifies it, pulls it back and checks the
/// bytes; returns the pushed digest.
fn round_trip(
    w: &Work,
    file: &std::path::Path,
    reference: &str,
    key: &std::path::Path,
    public: &std::path::Path,
    key_hint: &str,
) -> String {
    let pushed = w.push(file, reference, Some(key), &[]);
    let digest = pushed["digest"].as_str().expect("digest").to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{pushed}"
    );
    let repo = reference.rsplit_once(':').unwrap().0;
    assert_eq!(pushed["reference"], format!("{repo}@{digest}"));
    assert!(pushed["signed"]["legacy"].is_string(), "{pushed}");
    assert!(pushed["signed"]["bundle"].is_string(), "{pushed}");
    assert_eq!(pushed["signed"]["key_hint"], key_hint);

    // verify by tag: resolves once, names the digest pushed, finds both layouts by this key.
    let v = w
        .run(["verify", "--output", "json", "--key", s(public), reference])
        .json();
    assert_eq!(v["verified"]["digest"], digest.as_str(), "{v}");
    assert_eq!(v["verified"]["reference"], format!("{repo}@{digest}"));
    assert_eq!(v["verified"]["unsigned_allowed"], false);
    let sigs = v["verified"]["signatures"].as_array().expect("signatures");
    let mut layouts: Vec<&str> = sigs.iter().map(|s| s["layout"].as_str().unwrap()).collect();
    layouts.sort();
    assert_eq!(layouts, ["bundle", "legacy"], "{v}");
    for sig in sigs {
        assert_eq!(sig["key_hint"], key_hint, "{v}");
    }
    let legacy = sigs.iter().find(|s| s["layout"] == "legacy").unwrap();
    assert_eq!(legacy["docker_reference"], repo);

    // verify by digest gives the same answer.
    let by_digest = w
        .run([
            "verify",
            "--output",
            "json",
            "--key",
            s(public),
            &format!("{repo}@{digest}"),
        ])
        .json();
    assert_eq!(by_digest["verified"]["digest"], digest.as_str());

    // pull: verified, then the file written byte for byte.
    let out = w.path(&format!("pulled-{}", &digest[7..19]));
    let pulled = w
        .run([
            "pull",
            "--output",
            "json",
            "--key",
            s(public),
            reference,
            "-o",
            s(&out),
        ])
        .json();
    let name = file.file_name().unwrap();
    assert_eq!(pulled["file"], s(&out.join(name)));
    assert_eq!(
        std::fs::read(out.join(name)).unwrap(),
        std::fs::read(file).unwrap(),
        "pulled bytes differ from pushed"
    );
    let entries: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(entries.len(), 1, "pull leaves only the artifact behind");
    digest
}

#[test]
fn push_sign_verify_pull_ebpf_and_wasm() {
    let reg = registry_or_skip!();
    let xdp = object_or_skip!("xdp_pass");
    let w = Work::new();

    // generate-key-pair: encrypted private key, mode 0600; public key PEM.
    let prefix = w.path("release");
    let keys = w
        .run([
            "generate-key-pair",
            "--output",
            "json",
            "--output-key-prefix",
            s(&prefix),
        ])
        .json();
    let (key, public) = (w.path("release.key"), w.path("release.pub"));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key mode {mode:o}");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{pem}"
    );
    assert!(
        std::fs::read_to_string(&public)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let hint = keys["key_hint"].as_str().expect("key hint").to_owned();
    // public-key recovers the same public key from the encrypted private key.
    let recovered = w.run(["public-key", "--key", s(&key)]).expect(0);
    assert_eq!(recovered.stdout, std::fs::read_to_string(&public).unwrap());
    // A second generate-key-pair over the same prefix refuses to overwrite.
    w.run(["generate-key-pair", "--output-key-prefix", s(&prefix)])
        .expect(2);

    let ebpf = w.write("xdp_pass.o", &xdp);
    let ebpf_ref = format!("{}/net/xdp-pass:v1", reg.address);
    let ebpf_digest = round_trip(&w, &ebpf, &ebpf_ref, &key, &public, &hint);

    let wasm = w.write("handler.wasm", &common::wasm("handler"));
    let wasm_ref = format!("{}/wasm/handler:v1", reg.address);
    let wasm_digest = round_trip(&w, &wasm, &wasm_ref, &key, &public, &hint);
    assert_ne!(ebpf_digest, wasm_digest);

    // A pull with a policy whose [[trust]] holds the key, and whose content rules pass.
    let policy = w.write(
        "policy.toml",
        format!(
            "version = 1\n[[trust]]\nrepositories = [\"{}/**\"]\nkeys = [\"release.pub\"]\n",
            reg.address
        )
        .as_bytes(),
    );
    let out = w.path("pulled-by-policy");
    w.run(["pull", "--policy", s(&policy), &ebpf_ref, "-o", s(&out)])
        .expect(0);
    assert_eq!(std::fs::read(out.join("xdp_pass.o")).unwrap(), xdp);

    // skopeo (containers/image, an independent OCI reader) inspects what bpfship pushed.
    for (r, digest) in [(&ebpf_ref, &ebpf_digest), (&wasm_ref, &wasm_digest)] {
        let Some(o) = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{r}"),
        ]) else {
            return;
        };
        assert!(
            o.status.success(),
            "skopeo inspect --raw {r}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let raw: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(raw["schemaVersion"], 2);
        assert_eq!(
            raw["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let actual = format!("sha256:{}", sha256_hex(&o.stdout));
        assert_eq!(
            &actual, digest,
            "skopeo's manifest bytes hash to the pushed digest"
        );
    }
    let o = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{ebpf_ref}"),
    ])
    .unwrap();
    assert!(
        o.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["Digest"], ebpf_digest.as_str(), "{info}");
    assert!(
        info["Labels"]["io.ebpf.programs"]
            .as_str()
            .unwrap_or("")
            .contains("xdp"),
        "bpfman labels: {info}"
    );
    // skopeo copies the signed eBPF image to an OCI layout, blobs and all.
    let layout = w.path("oci-layout");
    let o = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{ebpf_ref}"),
        &format!("oci:{}:v1", s(&layout)),
    ])
    .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        ebpf_digest.as_str(),
        "{index}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn unsigned_refused_unless_policy_allows_it() {
    let reg = registry_or_skip!();
    let w = Work::new();
    let (_key, public) = w.key_pair("k");
    let wasm = w.write("handler.wasm", &common::wasm("handler"));
    let r = format!("{}/unsigned/handler:v1", reg.address);
    let pushed = w.push(&wasm, &r, None, &[]);
    assert!(pushed["signed"].is_null(), "{pushed}");
    let digest = pushed["digest"].as_str().unwrap();

    // With a key: no signature at all, refused.
    let msg = w
        .run(["verify", "--key", s(&public), &r])
        .rejected_with("no signatures found");
    assert!(msg.contains("unsigned artifacts are refused"), "{msg}");
    assert!(msg.contains(digest), "names the digest: {msg}");
    // pull refuses too, writing nothing.
    let out = w.path("out");
    w.run(["pull", "--key", s(&public), &r, "-o", s(&out)])
        .rejected_with("no signatures found");
    assert!(!out.join("handler.wasm").exists());

    // A policy trusting the repository with keys but not allowing unsigned: refused.
    let strict = w.write(
        "strict.toml",
        format!(
            "version = 1\n[[trust]]\nrepositories = [\"{}/unsigned/**\"]\nkeys = [\"k.pub\"]\n",
            reg.address
        )
        .as_bytes(),
    );
    w.run(["verify", "--policy", s(&strict), &r])
        .rejected_with("unsigned artifacts are refused");

    // allow_unsigned for another repository does not cover this one.
    let elsewhere = w.write(
        "elsewhere.toml",
        format!(
            "version = 1\n[[trust]]\nrepositories = [\"{}/other/**\"]\nallow_unsigned = true\n",
            reg.address
        )
        .as_bytes(),
    );
    w.run(["verify", "--policy", s(&elsewhere), &r])
        .rejected_with("no [[trust]] rule in the policy matches");

    // allow_unsigned = true for this repository: accepted, and said so.
    let lax = w.write(
        "lax.toml",
        format!(
            "version = 1\n[[trust]]\nrepositories = [\"{}/unsigned/**\"]\nallow_unsigned = true\n",
            reg.address
        )
        .as_bytes(),
    );
    let v = w
        .run(["verify", "--output", "json", "--policy", s(&lax), &r])
        .json();
    assert_eq!(v["verified"]["unsigned_allowed"], true, "{v}");
    assert_eq!(v["verified"]["digest"], digest);
    assert_eq!(v["verified"]["signatures"].as_array().unwrap().len(), 0);
    let text = w.run(["verify", "--policy", s(&lax), &r]).expect(0);
    assert!(text.stdout.contains("unsigned, allowed"), "{}", text.stdout);
    w.run(["pull", "--policy", s(&lax), &r, "-o", s(&out)])
        .expect(0);
    assert_eq!(
        std::fs::read(out.join("handler.wasm")).unwrap(),
        std::fs::read(&wasm).unwrap()
    );
}

#[test]
fn validate_refuses_forbidden_helper_under_policy() {
    let forbidden = object_or_skip!("forbidden_helper");
    let xdp = object_or_skip!("xdp_pass");
    let w = Work::new();
    let bad = w.write("forbidden_helper.o", &forbidden);
    let good = w.write("xdp_pass.o", &xdp);
    let policy = w.write(
        "policy.toml",
        b"version = 1\n[ebpf]\nforbidden_helpers = [\"bpf_probe_write_user\", \"bpf_send_signal\"]\n",
    );
    // Without a policy the object is well-formed.
    w.run(["validate", s(&bad)]).expect(0);
    // With it: exit 1, naming the helpers, in text and JSON.
    let text = w
        .run(["validate", "--policy", s(&policy), s(&bad)])
        .expect(1);
    let all = format!("{}{}", text.stdout, text.stderr);
    assert!(all.contains("bpf_probe_write_user"), "{all}");
    assert!(all.contains("bpf_send_signal"), "{all}");
    let json = w
        .run([
            "validate",
            "--output",
            "json",
            "--policy",
            s(&policy),
            s(&bad),
            s(&good),
        ])
        .expect(1);
    // stdout is one JSON document (the report), the failure line goes to stderr.
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("one JSON document");
    assert_eq!(v["files"][0]["valid"], false, "{v}");
    assert_eq!(v["files"][1]["valid"], true, "{v}");
    assert!(
        v["files"][0].to_string().contains("bpf_probe_write_user"),
        "{v}"
    );
    assert!(
        json.stderr.contains("1 of 2 files invalid"),
        "{}",
        json.stderr
    );
    // The good object in the same invocation passes the same policy on its own.
    w.run(["validate", "--policy", s(&policy), s(&good)])
        .expect(0);
    // push refuses it too, before touching any registry (the address is never contacted).
    w.run([
        "push",
        "--policy",
        s(&policy),
        s(&bad),
        "127.0.0.1:9/x/y:v1",
    ])
    .rejected_with("nothing pushed");
}

/// Issue 7 item 7: the forbidden helpers hidden in functions the programs call (a static function
/// in the program's own section, a chain through `.text`) are found by `validate --policy`, and
/// `push --policy` refuses the object.
#[test]
fn helpers_hidden_in_called_functions_are_refused() {
    let hidden = object_or_skip!("hidden_helper");
    let w = Work::new();
    let bad = w.write("hidden_helper.o", &hidden);
    let policy = w.write(
        "policy.toml",
        b"version = 1\n[ebpf]\nforbidden_helpers = [\"bpf_probe_write_user\", \"bpf_send_signal\"]\n",
    );
    let r = w
        .run(["validate", "--policy", s(&policy), s(&bad)])
        .expect(1);
    let all = format!("{}{}", r.stdout, r.stderr);
    for expected in [
        "program signal_back calls forbidden helper bpf_send_signal",
        "program write_back calls forbidden helper bpf_probe_write_user",
        "program unknown_id calls helper id 9999",
    ] {
        assert!(all.contains(expected), "{expected}: {all}");
    }
    assert!(!all.contains("program innocent calls forbidden"), "{all}");
    w.run([
        "push",
        "--policy",
        s(&policy),
        s(&bad),
        "127.0.0.1:9/x/y:v1",
    ])
    .rejected_with("nothing pushed");
}

#[test]
fn shipped_policies_load() {
    let xdp = object_or_skip!("xdp_pass");
    let w = Work::new();
    let good = w.write("xdp_pass.o", &xdp);
    for p in ["default.toml", "strict-xdp.toml"] {
        let policy = common::root().join("policies").join(p);
        let r = w.run(["validate", "--policy", s(&policy), s(&good)]);
        assert!(
            r.code == Some(0) || r.code == Some(1),
            "policies/{p} must load: {r:?}"
        );
    }
}

#[test]
fn tls_registry_with_basic_auth() {
    let (reg, ca) =
        match bpfship_registry::testing::TestRegistry::start_tls_basic_auth("ci", "s3cret") {
            Ok(x) => x,
            Err(e) => {
                bpfship_test_support::skip(bpfship_test_support::Missing::Setup(e));
                return;
            }
        };
    let w = Work::new();
    let ca = w.write("ca.pem", &ca);
    let (key, public) = w.key_pair("k");
    let wasm = w.write("handler.wasm", &common::wasm("handler"));
    let r = format!("{}/private/handler:v1", reg.address);
    let with_password = |args: &[&str]| {
        use std::io::Write as _;
        let mut child = w
            .cmd()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
        child.wait_with_output().unwrap()
    };
    // No credentials: denied, exit 2, saying so.
    let denied = w.run([
        "push",
        "--registry-cacert",
        s(&ca),
        "--key",
        s(&key),
        s(&wasm),
        &r,
    ]);
    assert_eq!(denied.code, Some(2), "{denied:?}");
    assert!(denied.stderr.contains("access denied"), "{}", denied.stderr);
    // The CA not given: the self-signed certificate is not trusted, nothing is pushed.
    let untrusted = with_password(&["push", "--username", "ci", "--password-stdin", s(&wasm), &r]);
    assert_eq!(untrusted.status.code(), Some(2));
    // --username/--password-stdin with the CA: pushed and signed.
    let o = with_password(&[
        "push",
        "--registry-cacert",
        s(&ca),
        "--username",
        "ci",
        "--password-stdin",
        "--key",
        s(&key),
        s(&wasm),
        &r,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Credentials from the docker config (DOCKER_CONFIG): verify and pull.
    w.write(
        "docker/config.json",
        format!(
            r#"{{"auths":{{"{}":{{"auth":"Y2k6czNjcmV0"}}}}}}"#,
            reg.address
        )
        .as_bytes(),
    );
    let v = w
        .run([
            "verify",
            "--output",
            "json",
            "--registry-cacert",
            s(&ca),
            "--key",
            s(&public),
            &r,
        ])
        .json();
    assert_eq!(
        v["verified"]["signatures"].as_array().unwrap().len(),
        2,
        "{v}"
    );
    let out = w.path("out");
    w.run([
        "pull",
        "--registry-cacert",
        s(&ca),
        "--key",
        s(&public),
        &r,
        "-o",
        s(&out),
    ])
    .expect(0);
    assert_eq!(
        std::fs::read(out.join("handler.wasm")).unwrap(),
        std::fs::read(&wasm).unwrap()
    );
}
