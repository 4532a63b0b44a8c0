//! Smaller holes on the user's own machine (issue 7 items 15, 16, 18, 21): key files written
//! through planted symlinks, `pull` leaving or replacing files, a closed pipe panicking the CLI,
//! and blob signatures that double as image signatures.

mod common;

use bpfship_registry::manifest::OCI_MANIFEST;
use bpfship_registry::{Client, ClientOptions, ImageManifest, Reference};
use common::{Work, s};

/// Item 15: a dangling symlink planted at PREFIX.pub is never written through, and the new
/// private key does not stay behind.
#[test]
fn generate_key_pair_refuses_a_planted_symlink() {
    let w = Work::new();
    let target = w.path("elsewhere/authorized");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, w.path("cosign.pub")).unwrap();
    let prefix = w.path("cosign");
    let r = w
        .run(["generate-key-pair", "--output-key-prefix", s(&prefix)])
        .expect(2);
    assert!(r.stderr.contains("cosign.pub already exists"), "{r:?}");
    assert!(!target.exists(), "written through the symlink");
    assert!(!w.path("cosign.key").exists(), "private key left behind");
    // Without the symlink, both are created.
    std::fs::remove_file(w.path("cosign.pub")).unwrap();
    w.run(["generate-key-pair", "--output-key-prefix", s(&prefix)])
        .expect(0);
    assert!(w.path("cosign.pub").is_file() && w.path("cosign.key").is_file());
}

/// Item 16: `pull` never replaces an existing file without `--force`, leaves no temporary file
/// on any path, and never takes a signer-chosen title with control characters as a file name.
#[test]
fn pull_neither_clobbers_nor_litters_nor_takes_hostile_names() {
    let reg = registry_or_skip!();
    let xdp = object_or_skip!("xdp_pass");
    let w = Work::new();
    let (key, public) = w.key_pair("release");
    let file = w.write("xdp_pass.o", &xdp);
    let reference = format!("{}/net/xdp:v1", reg.address);
    w.push(&file, &reference, Some(&key), &[]);
    let out = w.path("out");
    let pull = |extra: &[&str]| {
        let mut args = vec!["pull", "--key", s(&public), &reference, "-o", s(&out)];
        args.extend(extra);
        w.run(args)
    };
    let leftovers = || {
        std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".bpfship-pull"))
            .collect::<Vec<_>>()
    };
    pull(&[]).expect(0);
    assert_eq!(std::fs::read(out.join("xdp_pass.o")).unwrap(), xdp);
    // Someone's file of the same name stays as it is.
    std::fs::write(out.join("xdp_pass.o"), b"mine").unwrap();
    let r = pull(&[]).expect(2);
    assert!(r.stderr.contains("already exists; pass --force"), "{r:?}");
    assert_eq!(std::fs::read(out.join("xdp_pass.o")).unwrap(), b"mine");
    assert_eq!(leftovers(), Vec::<String>::new());
    pull(&["--force"]).expect(0);
    assert_eq!(std::fs::read(out.join("xdp_pass.o")).unwrap(), xdp);
    assert_eq!(leftovers(), Vec::<String>::new());

    // The signer's manifest names the file: a title with a control character is not taken.
    let client = Client::new(ClientOptions::default()).unwrap();
    let repo = Reference::parse(&reference).unwrap();
    let digest = client.resolve(&repo).unwrap().digest;
    let (bytes, _) = client.fetch_manifest(&repo, &digest).unwrap();
    let mut manifest: ImageManifest = serde_json::from_slice(&bytes).unwrap();
    manifest.annotations.insert(
        "org.opencontainers.image.title".into(),
        "evil\n\x1b[2J.o".into(),
    );
    client
        .push_manifest(&repo, "hostile", OCI_MANIFEST, &manifest.to_bytes())
        .unwrap();
    let hostile = format!("{}/net/xdp:hostile", reg.address);
    w.run(["sign", "--key", s(&key), &hostile]).expect(0);
    let out2 = w.path("out2");
    let v = w
        .run([
            "pull",
            "--output",
            "json",
            "--key",
            s(&public),
            &hostile,
            "-o",
            s(&out2),
        ])
        .json();
    assert_eq!(v["file"], s(&out2.join("xdp_pass.o")), "{v}");
    let names: Vec<_> = std::fs::read_dir(&out2)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["xdp_pass.o"]);
}

/// Item 18: a reader that stops reading (`bpfship … | head`) ends the command quietly, exit 0,
/// instead of a panic.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let xdp = object_or_skip!("xdp_pass");
    let w = Work::new();
    let file = w.write("xdp_pass.o", &xdp);
    for format in ["text", "json"] {
        // The read end is closed before the command starts: its first write meets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = w
            .cmd()
            .args(["inspect", "--output", format, s(&file)])
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert!(stderr.is_empty(), "{format}: {stderr}");
    }
}

/// Item 21: `sign-blob` refuses content an image-signature verifier would accept the signature
/// for (a simple-signing payload, an in-toto statement, a DSSE pre-authentication encoding).
#[test]
fn sign_blob_refuses_image_signature_payloads() {
    let w = Work::new();
    let (key, _) = w.key_pair("release");
    let digest = format!("sha256:{}", "ab".repeat(32));
    let payload =
        bpfship_verifier::signature::simple_signing_payload("ghcr.io/acme/xdp", &digest, None);
    let statement = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1"}}"#,
        "ab".repeat(32)
    );
    for (name, bytes, why) in [
        ("payload.json", payload, "simple-signing payload"),
        (
            "statement.json",
            statement.into_bytes(),
            "in-toto statement",
        ),
        (
            "pae.bin",
            b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec(),
            "DSSE pre-authentication encoding",
        ),
    ] {
        let path = w.write(name, &bytes);
        let sig = w.path(&format!("{name}.sig"));
        let msg = w
            .run([
                "sign-blob",
                "--key",
                s(&key),
                "--output-signature",
                s(&sig),
                s(&path),
            ])
            .rejected_with("refusing to sign");
        assert!(msg.contains(why), "{name}: {msg}");
        assert!(!sig.exists(), "{name}: signature written");
    }
    // Anything else is signed as before.
    let other = w.write("notes.json", br#"{"critical": "not an object"}"#);
    w.run(["sign-blob", "--key", s(&key), s(&other)]).expect(0);
}
