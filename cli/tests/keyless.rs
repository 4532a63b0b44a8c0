//! Keyless verification, offline: the whole sigstore-conformance bundle-verify suite through its
//! CLI protocol (testdata/sigstore-conformance/bpfship-conformance over `bpfship verify-blob`),
//! in file and digest mode, and real keyless bundles made by cosign 3, npm and sigstore-python
//! verified with their true identity and refused with a wrong one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bpfship_verifier::digest::sha256_digest;
use common::{Work, root, s};

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const GITHUB: &str = "https://token.actions.githubusercontent.com";

fn conformance() -> PathBuf {
    root().join("testdata/sigstore-conformance")
}

/// One case of the suite run as its harness does (test_bundle.py's `test_verify`): the
/// protocol's arguments in the protocol's order. Returns (exit code, stderr).
fn run_case(case: &Path, digest_mode: bool) -> (i32, String) {
    let suite = case.parent().unwrap();
    let file_or = |name: &str, default: &Path| {
        let p = case.join(name);
        if p.exists() { p } else { default.to_path_buf() }
    };
    let artifact = file_or("artifact", &suite.join("a.txt"));
    let mut cmd = Command::new(conformance().join("bpfship-conformance"));
    cmd.env("BPFSHIP", env!("CARGO_BIN_EXE_bpfship"))
        .arg("verify-bundle")
        .arg("--bundle")
        .arg(case.join("bundle.sigstore.json"));
    let key = case.join("key.pub");
    if key.exists() {
        cmd.arg("--key").arg(key);
    } else {
        let read = |name: &str, default: &str| {
            std::fs::read_to_string(case.join(name))
                .map(|t| t.trim().to_owned())
                .unwrap_or_else(|_| default.to_owned())
        };
        cmd.arg("--certificate-identity")
            .arg(read("identity", DEFAULT_IDENTITY))
            .arg("--certificate-oidc-issuer")
            .arg(read("issuer", GITHUB));
    }
    let trusted_root = case.join("trusted_root.json");
    if trusted_root.exists() {
        cmd.arg("--trusted-root").arg(trusted_root);
    }
    if digest_mode {
        cmd.arg(sha256_digest(&std::fs::read(&artifact).unwrap()));
    } else {
        cmd.arg(artifact);
    }
    let out = cmd.output().expect("wrapper runs");
    let code = out.status.code().unwrap_or_else(|| {
        panic!(
            "{}: killed by a signal: {}",
            case.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn conformance_bundle_verify_suite_file_and_digest_mode() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(conformance().join("bundle-verify"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundle.sigstore.json").exists())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 70, "the suite has 70 bundle-verify cases");
    let mut wrong = Vec::new();
    let mut passed = 0;
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let must_fail = name.ends_with("_fail");
        for digest_mode in [false, true] {
            let mode = if digest_mode { "digest" } else { "file" };
            let (code, stderr) = run_case(case, digest_mode);
            // A failure must be a verdict (exit 1) or a refused trusted root, never the wrapper
            // or the command line going wrong.
            // (managed-key-wrong-key_fail's key.pub is not valid base64: exit 2 naming it.)
            let ok = if must_fail {
                code == 1
                    || (code == 2
                        && (stderr.contains("trusted root") || stderr.contains("public key")))
            } else {
                code == 0
            };
            if ok {
                passed += 1;
            } else {
                wrong.push(format!("{name} ({mode}): exit {code}: {}", stderr.trim()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 140 wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(passed, 140);
}

/// A real keyless bundle from the fixtures (testdata/sigstore/NOTICE).
fn real(name: &str) -> PathBuf {
    root().join("testdata/sigstore").join(name)
}

const COSIGN3_IDENTITY: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
/// The image manifest digest cosign 3 signed (the statement's subject).
const COSIGN3_DIGEST: &str =
    "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const NPM_IDENTITY: &str =
    "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";
/// The SHA-512 npm names sigstore@5.0.0's tarball by (the provenance statement's subject).
const NPM_DIGEST: &str = "sha512:849a897e81bf7b8a8541a6ae40bd3473a27a16b1cb0462ad905bd6dc96d34881053a12eb4a375233f81677fc9439f628fe0b0445e8535c60b5559597fbd5f80e";

/// `bpfship [--output json] verify-blob --trusted-root ROOT --bundle BUNDLE ARGS... INPUT`.
fn verify_blob(root: &str, bundle: &str, args: &[&str], input: &str) -> common::Run {
    let trusted_root = real(root);
    let bundle = real(bundle);
    let mut all = vec![
        "--output",
        "json",
        "verify-blob",
        "--trusted-root",
        s(&trusted_root),
        "--bundle",
        s(&bundle),
    ];
    all.extend(args);
    all.push(input);
    Work::new().run(all)
}

fn cosign3(args: &[&str], input: &str) -> common::Run {
    verify_blob(
        "trusted_root.production.json",
        "cosign3-image.sigstore.json",
        args,
        input,
    )
}

fn npm(args: &[&str], input: &str) -> common::Run {
    verify_blob(
        "trusted_root.production.json",
        "npm-sigstore-5.0.0.provenance.sigstore.json",
        args,
        input,
    )
}

#[test]
fn cosign3_image_bundle_verifies_with_its_workflow_identity() {
    let v = cosign3(
        &[
            "--certificate-identity",
            COSIGN3_IDENTITY,
            "--certificate-oidc-issuer",
            GITHUB,
            "--certificate-github-workflow-repository",
            "kubewarden/kubewarden-controller",
            "--certificate-github-workflow-ref",
            "refs/tags/v1.34.0",
            "--certificate-github-workflow-trigger",
            "push",
            "--certificate-github-workflow-sha",
            "2a6b879b7a5ef59d7fb348d0b5d14314538ac0a6",
            "--certificate-github-workflow-name",
            "Release",
        ],
        COSIGN3_DIGEST,
    )
    .json();
    assert_eq!(v["signer"]["kind"], "identity");
    assert_eq!(v["signer"]["subject"], COSIGN3_IDENTITY);
    assert_eq!(v["signer"]["issuer"], GITHUB);
    assert_eq!(
        v["signer"]["github_workflow"]["repository"],
        "kubewarden/kubewarden-controller"
    );
    assert_eq!(
        v["content"]["predicate_type"],
        "https://sigstore.dev/cosign/sign/v1"
    );
    // Text output names the identity too.
    let text = Work::new().run([
        "verify-blob",
        "--trusted-root",
        s(&real("trusted_root.production.json")),
        "--bundle",
        s(&real("cosign3-image.sigstore.json")),
        "--certificate-identity-regexp",
        "^https://github.com/kubewarden/",
        "--certificate-oidc-issuer",
        GITHUB,
        COSIGN3_DIGEST,
    ]);
    let text = text.expect(0);
    assert!(text.stdout.contains(COSIGN3_IDENTITY), "{}", text.stdout);
}

#[test]
fn cosign3_image_bundle_refused_for_another_identity_issuer_or_claim() {
    cosign3(
        &[
            "--certificate-identity",
            "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.35.0",
            "--certificate-oidc-issuer",
            GITHUB,
        ],
        COSIGN3_DIGEST,
    )
    .rejected_with("subject");
    cosign3(
        &[
            "--certificate-identity-regexp",
            "^https://github.com/evil/",
            "--certificate-oidc-issuer",
            GITHUB,
        ],
        COSIGN3_DIGEST,
    )
    .rejected_with("subject");
    cosign3(
        &[
            "--certificate-identity",
            COSIGN3_IDENTITY,
            "--certificate-oidc-issuer",
            "https://accounts.google.com",
        ],
        COSIGN3_DIGEST,
    )
    .rejected_with("issuer");
    cosign3(
        &[
            "--certificate-identity",
            COSIGN3_IDENTITY,
            "--certificate-oidc-issuer",
            GITHUB,
            "--certificate-github-workflow-trigger",
            "workflow_dispatch",
        ],
        COSIGN3_DIGEST,
    )
    .rejected_with("github workflow trigger");
}

#[test]
fn cosign3_image_bundle_refused_for_another_digest_or_trusted_root() {
    let identity = [
        "--certificate-identity",
        COSIGN3_IDENTITY,
        "--certificate-oidc-issuer",
        GITHUB,
    ];
    // Another image's digest: not the statement's subject.
    cosign3(&identity, &sha256_digest(b"another manifest")).rejected_with("artifact");
    // The staging root does not vouch for production's Fulcio or Rekor.
    verify_blob(
        "trusted_root.staging.json",
        "cosign3-image.sigstore.json",
        &identity,
        COSIGN3_DIGEST,
    )
    .expect(1);
}

#[test]
fn npm_provenance_verifies_by_sha512_with_its_identity_and_not_another() {
    let v = npm(
        &[
            "--certificate-identity",
            NPM_IDENTITY,
            "--certificate-oidc-issuer",
            GITHUB,
            "--certificate-github-workflow-repository",
            "sigstore/sigstore-js",
        ],
        NPM_DIGEST,
    )
    .json();
    assert_eq!(v["signer"]["subject"], NPM_IDENTITY);
    assert_eq!(
        v["content"]["predicate_type"],
        "https://slsa.dev/provenance/v1"
    );
    assert_eq!(
        v["content"]["subjects"][0]["name"],
        "pkg:npm/sigstore@5.0.0"
    );
    npm(
        &[
            "--certificate-identity",
            NPM_IDENTITY,
            "--certificate-oidc-issuer",
            GITHUB,
            "--certificate-github-workflow-repository",
            "sigstore/sigstore-python",
        ],
        NPM_DIGEST,
    )
    .rejected_with("github workflow repository");
    npm(
        &[
            "--certificate-identity",
            COSIGN3_IDENTITY,
            "--certificate-oidc-issuer",
            GITHUB,
        ],
        NPM_DIGEST,
    )
    .rejected_with("subject");
    // One digit changed in the digest.
    let other = format!("{}0", &NPM_DIGEST[..NPM_DIGEST.len() - 1]);
    npm(
        &[
            "--certificate-identity",
            NPM_IDENTITY,
            "--certificate-oidc-issuer",
            GITHUB,
        ],
        &other,
    )
    .rejected_with("artifact");
}

#[test]
fn sigstore_python_blob_bundle_verifies_its_file_and_not_a_changed_one() {
    let identity = [
        "--certificate-identity",
        "william@yossarian.net",
        "--certificate-oidc-issuer",
        "https://github.com/login/oauth",
    ];
    let file = real("bundle_v3.txt");
    let v = verify_blob(
        "trusted_root.staging.json",
        "bundle_v3.txt.sigstore",
        &identity,
        s(&file),
    )
    .json();
    assert_eq!(v["signer"]["subject"], "william@yossarian.net");
    assert_eq!(v["content"]["kind"], "message_signature");
    // The same in digest mode.
    let digest = sha256_digest(&std::fs::read(&file).unwrap());
    verify_blob(
        "trusted_root.staging.json",
        "bundle_v3.txt.sigstore",
        &identity,
        &digest,
    )
    .expect(0);
    let work = Work::new();
    let mut changed = std::fs::read(&file).unwrap();
    changed[0] ^= 1;
    let changed = work.write("bundle_v3.txt", &changed);
    verify_blob(
        "trusted_root.staging.json",
        "bundle_v3.txt.sigstore",
        &identity,
        s(&changed),
    )
    .expect(1);
}

#[test]
fn keyless_without_identity_issuer_or_trusted_root_is_a_usage_error() {
    let bundle = real("cosign3-image.sigstore.json");
    let root = real("trusted_root.production.json");
    let work = Work::new();
    // No identity at all: never "any identity".
    let r = work
        .run([
            "verify-blob",
            "--trusted-root",
            s(&root),
            "--bundle",
            s(&bundle),
            COSIGN3_DIGEST,
        ])
        .expect(2);
    assert!(r.stderr.contains("--certificate-identity"), "{}", r.stderr);
    let r = work
        .run([
            "verify-blob",
            "--trusted-root",
            s(&root),
            "--bundle",
            s(&bundle),
            "--certificate-identity",
            COSIGN3_IDENTITY,
            COSIGN3_DIGEST,
        ])
        .expect(2);
    assert!(
        r.stderr.contains("--certificate-oidc-issuer"),
        "{}",
        r.stderr
    );
    let r = work
        .run([
            "verify-blob",
            "--bundle",
            s(&bundle),
            "--certificate-identity",
            COSIGN3_IDENTITY,
            "--certificate-oidc-issuer",
            GITHUB,
            COSIGN3_DIGEST,
        ])
        .expect(2);
    assert!(r.stderr.contains("--trusted-root"), "{}", r.stderr);
    let r = work
        .run([
            "verify-blob",
            "--trusted-root",
            s(&root),
            "--bundle",
            s(&bundle),
            "--certificate-identity-regexp",
            "(unclosed",
            "--certificate-oidc-issuer",
            GITHUB,
            COSIGN3_DIGEST,
        ])
        .expect(2);
    assert!(
        r.stderr.contains("invalid regular expression"),
        "{}",
        r.stderr
    );
    let r = work
        .run([
            "verify-blob",
            "--trusted-root",
            s(&bundle),
            "--bundle",
            s(&bundle),
            "--certificate-identity",
            COSIGN3_IDENTITY,
            "--certificate-oidc-issuer",
            GITHUB,
            COSIGN3_DIGEST,
        ])
        .expect(2);
    assert!(
        r.stderr.contains("not a sigstore trusted root"),
        "{}",
        r.stderr
    );
    let r = work
        .run([
            "verify-blob",
            "--trusted-root",
            s(&root),
            "--bundle",
            s(&bundle),
            "--certificate-identity",
            COSIGN3_IDENTITY,
            "--certificate-oidc-issuer",
            GITHUB,
            "sha256:abc",
        ])
        .expect(2);
    assert!(
        r.stderr.contains("nor a well-formed digest"),
        "{}",
        r.stderr
    );
}
