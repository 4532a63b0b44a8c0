//! The tools people already use read what bpfship pushes to a real registry: bpfman's loaders'
//! extraction rules (Rust and Go, mirrored here), PyPI `oras` (names the WASM file by its layer
//! title), the OCI image-spec JSON schemas (PyPI `jsonschema`), `skopeo` + `umoci` +
//! `oci-image-tool` (the eBPF image as an OCI layout); and image indexes, read and written.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use bpfship_registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use bpfship_registry::{
    BlobKind, Client, ClientOptions, Descriptor, ImageIndex, ImageManifest, Platform, Reference,
};
use common::{Work, s};

fn client() -> Client {
    Client::new(ClientOptions::default()).unwrap()
}

/// The manifest `reference` names (fetched by digest) and its config.
fn manifest_and_config(reference: &str) -> (Vec<u8>, ImageManifest, Vec<u8>) {
    let c = client();
    let r = Reference::parse(reference).unwrap();
    let d = c.resolve(&r).unwrap();
    let (bytes, _) = c.fetch_manifest(&r, &d.digest).unwrap();
    let m: ImageManifest = serde_json::from_slice(&bytes).unwrap();
    let config = c.fetch_blob(&r, &m.config, BlobKind::Config).unwrap();
    (bytes, m, config)
}

/// Issue 11: what bpfman's loaders take from a bytecode image, checked on what bpfship pushed.
/// Rust loader (`oci_utils/image_manager.rs`): the config's `Labels` carry `io.ebpf.programs` and
/// `io.ebpf.maps` as JSON strings; the first layer of a tar+gzip media type; the first tar
/// entry's bytes; the object's byte order is the host's. Go loader: the first tar entry whose
/// name ends in `.o` (clean path, ≤ 16 MiB), ELF magic, `EM_BPF`, `ET_REL`, the host's byte
/// order. Program and map types in bpfman's spelling.
#[test]
fn bpfman_loaders_take_what_bpfship_pushes() {
    let reg = registry_or_skip!();
    let obj = object_or_skip!("probes_maps");
    let w = Work::new();
    let file = w.write("filter.elf", &obj);
    let reference = format!("{}/net/probes:v1", reg.address);
    w.push(&file, &reference, None, &[]);
    let (_, m, config) = manifest_and_config(&reference);
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let labels = &config["config"]["Labels"];
    let label = |k: &str| -> BTreeMap<String, String> {
        serde_json::from_str(labels[k].as_str().expect("label is a JSON string")).unwrap()
    };
    let pairs = |v: &[(&str, &str)]| -> BTreeMap<String, String> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        label("io.ebpf.programs"),
        pairs(&[
            ("on_readline_return", "uretprobe"),
            ("on_unlink_return", "kretprobe"),
            ("tcx_accept", "tcx"),
        ])
    );
    assert_eq!(
        label("io.ebpf.maps"),
        pairs(&[
            ("per_cpu_counts", "per_cpu_array"),
            ("recent", "lru_per_cpu_hash"),
        ])
    );
    let layer = &m.layers[0];
    assert!(
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        ]
        .contains(&layer.media_type.as_str()),
        "{}",
        layer.media_type
    );
    let r = Reference::parse(&reference).unwrap();
    let blob = client().fetch_blob(&r, layer, BlobKind::Ebpf).unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar)
        .unwrap();
    let mut entries = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push((name, data));
    }
    // Rust loader: the first entry is the object.
    assert_eq!(entries[0].1, obj);
    // Go loader: the first `.o` entry, and the checks it makes on it.
    let (name, data) = entries
        .iter()
        .find(|(n, _)| n.ends_with(".o"))
        .expect("the Go loader finds a .o entry (else: no BPF bytecode found)");
    assert_eq!(name, "filter.o");
    assert!(!Path::new(name).starts_with(".."));
    assert!(data.len() <= 16 << 20);
    assert_eq!(&data[..4], b"\x7fELF");
    assert_eq!(data[5], if cfg!(target_endian = "little") { 1 } else { 2 });
    assert_eq!(u16::from_le_bytes([data[16], data[17]]), 1, "ET_REL");
    assert_eq!(u16::from_le_bytes([data[18], data[19]]), 247, "EM_BPF");
    // bpfship's own pull names the file as it was pushed.
    let out = w.path("out");
    w.run([
        "pull",
        &reference,
        "-o",
        s(&out),
        "--policy",
        s(&allow_unsigned(&w)),
    ])
    .expect(0);
    assert_eq!(std::fs::read(out.join("filter.elf")).unwrap(), obj);
}

/// A policy trusting no key that allows unsigned artifacts from anywhere (for readers' tests).
fn allow_unsigned(w: &Work) -> PathBuf {
    w.write(
        "unsigned.toml",
        b"[[trust]]\nrepositories = [\"**\"]\nallow_unsigned = true\n",
    )
}

/// The Python interpreter of the readers' venv scripts/setup.sh makes (PyPI `oras`,
/// `jsonschema`), or `None` with a SKIP.
fn readers_python() -> Option<PathBuf> {
    let py = common::root().join("target/readers-venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import oras, jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bpfship_test_support::skip(bpfship_test_support::Missing::Setup(
            "target/readers-venv with PyPI oras and jsonschema missing (run scripts/setup.sh)"
                .into(),
        ));
        return None;
    }
    Some(py)
}

const SCHEMAS: &str = "/usr/share/gocode/src/github.com/opencontainers/image-spec/schema";

fn python(py: &Path, script: &str, args: &[&str]) -> common::Run {
    let out = Command::new(py)
        .arg(common::root().join("testdata/readers").join(script))
        .args(args)
        .output()
        .expect("python runs");
    common::Run::from(out)
}

/// Issue 11: `oras pull` writes the WASM file under its layer title; the manifests, configs and
/// indexes bpfship writes validate against the OCI image-spec schemas; a component's config has
/// `created` and its `component` world; the same input gives the same digest.
#[test]
fn oras_and_the_oci_schemas_read_what_bpfship_pushes() {
    let reg = registry_or_skip!();
    let xdp = object_or_skip!("xdp_pass");
    let Some(py) = readers_python() else { return };
    if !Path::new(SCHEMAS).join("image-index-schema.json").exists() {
        bpfship_test_support::skip(bpfship_test_support::Missing::Setup(
            "golang-github-opencontainers-image-spec-dev not installed (run scripts/setup.sh)"
                .into(),
        ));
        return;
    }
    let w = Work::new();
    let module = w.write("handler.wasm", &common::wasm("handler"));
    let component = w.write("comp.wasm", &common::wasm("component"));
    let elf = w.write("xdp_pass.o", &xdp);
    let wasm_ref = format!("{}/wasm/handler:v1", reg.address);
    let comp_ref = format!("{}/wasm/comp:v1", reg.address);
    let ebpf_ref = format!("{}/net/xdp:v1", reg.address);
    let first = w.push(&module, &wasm_ref, None, &[]);
    let again = w.push(
        &module,
        &format!("{}/wasm/handler:v2", reg.address),
        None,
        &[],
    );
    assert_eq!(
        first["digest"], again["digest"],
        "the same input, the same digest"
    );
    w.push(&component, &comp_ref, None, &[]);
    w.push(&elf, &ebpf_ref, None, &[]);

    let out = w.path("oras-out");
    let r = python(&py, "oras_pull.py", &[&wasm_ref, s(&out)]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        std::fs::read(out.join("handler.wasm")).unwrap(),
        common::wasm("handler")
    );

    let (_, cm, cconfig) = manifest_and_config(&comp_ref);
    let cconfig: serde_json::Value = serde_json::from_slice(&cconfig).unwrap();
    assert_eq!(cconfig["created"], "1970-01-01T00:00:00Z", "{cconfig}");
    assert!(cconfig["component"]["imports"].is_array(), "{cconfig}");
    assert!(cconfig["component"]["exports"].is_array(), "{cconfig}");
    assert!(cconfig.get("component").unwrap().get("target").is_some());
    assert_eq!(
        cm.layers[0].annotations["org.opencontainers.image.title"],
        "comp.wasm"
    );

    let mut docs = Vec::new();
    for (name, reference) in [
        ("wasm", &wasm_ref),
        ("comp", &comp_ref),
        ("ebpf", &ebpf_ref),
    ] {
        let (bytes, _, config) = manifest_and_config(reference);
        let m = w.write(&format!("{name}.manifest.json"), &bytes);
        docs.push(format!("manifest={}", s(&m)));
        if name == "ebpf" {
            let c = w.write("ebpf.config.json", &config);
            docs.push(format!("config={}", s(&c)));
        }
    }
    // An index bpfship pushes.
    let host = Platform::host().to_string();
    let v = w
        .run([
            "push",
            "--output",
            "json",
            "--platform",
            &host,
            "--platform",
            "linux/riscv64",
            s(&elf),
            s(&elf),
            &format!("{}/net/xdp:multi", reg.address),
        ])
        .json();
    let c = client();
    let r = Reference::parse(&format!("{}/net/xdp:multi", reg.address)).unwrap();
    let (index, _) = c.fetch_manifest(&r, v["digest"].as_str().unwrap()).unwrap();
    let i = w.write("index.json", &index);
    docs.push(format!("index={}", s(&i)));
    let mut args = vec![SCHEMAS];
    args.extend(docs.iter().map(String::as_str));
    let r = python(&py, "oci_schema.py", &args);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout.matches(": valid").count(), docs.len(), "{r:?}");
    // The validator does refuse: a manifest without config or layers, a bad `created`.
    let broken = w.write("broken.json", br#"{"schemaVersion":2}"#);
    let bad_time = w.write(
        "bad-time.json",
        br#"{"architecture":"amd64","os":"linux","created":"yesterday"}"#,
    );
    let r = python(
        &py,
        "oci_schema.py",
        &[
            SCHEMAS,
            &format!("manifest={}", s(&broken)),
            &format!("config={}", s(&bad_time)),
        ],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout.matches("INVALID").count(), 2, "{r:?}");
}

/// Issue 11: the eBPF image is a valid OCI image for the image tools: skopeo copies it to an OCI
/// layout, `oci-image-tool` validates the layout, and `umoci` unpacks it to the object.
#[test]
fn umoci_and_oci_image_tool_read_the_ebpf_image() {
    let reg = registry_or_skip!();
    let xdp = object_or_skip!("xdp_pass");
    for tool in ["skopeo", "umoci", "oci-image-tool"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bpfship_test_support::skip(bpfship_test_support::Missing::Setup(format!(
                "{tool} not installed (run scripts/setup.sh)"
            )));
            return;
        }
    }
    let w = Work::new();
    let elf = w.write("xdp_pass.o", &xdp);
    let reference = format!("{}/net/xdp:v1", reg.address);
    w.push(&elf, &reference, None, &[]);
    let layout = w.path("layout");
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{}:v1", s(&layout)),
    ]));
    run(Command::new("oci-image-tool").args([
        "validate",
        "--type",
        "image",
        "--ref",
        "name=v1",
        s(&layout),
    ]));
    let bundle = w.path("bundle");
    run(Command::new("umoci").args([
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:v1", s(&layout)),
        s(&bundle),
    ]));
    assert_eq!(
        std::fs::read(bundle.join("rootfs/xdp_pass.o")).unwrap(),
        xdp
    );
}

/// Issue 11: `push FILE… --platform P…` writes one index signed by its digest; verify, pull and
/// inspect use the host's entry; hostile indexes are refused with a clear error.
#[test]
fn image_indexes_are_written_signed_and_read_for_the_host() {
    let reg = registry_or_skip!();
    let xdp = object_or_skip!("xdp_pass");
    let tc = object_or_skip!("tc_section");
    let w = Work::new();
    let (key, public) = w.key_pair("release");
    let a = w.write("xdp_pass.o", &xdp);
    let b = w.write("tc_accept.o", &tc);
    let host = Platform::host();
    let other = if host.architecture == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    let reference = format!("{}/net/multi:v1", reg.address);
    let v = w
        .run([
            "push",
            "--output",
            "json",
            "--key",
            s(&key),
            "--platform",
            other,
            "--platform",
            &host.to_string(),
            s(&b),
            s(&a),
            &reference,
        ])
        .json();
    assert_eq!(v["platforms"].as_array().unwrap().len(), 2, "{v}");
    let digest = v["digest"].as_str().unwrap().to_owned();
    let verified = w
        .run([
            "verify",
            "--output",
            "json",
            "--key",
            s(&public),
            &reference,
        ])
        .json();
    let text = verified.to_string();
    assert!(text.contains(&digest), "{text}");
    assert!(
        text.contains(&format!("\"architecture\":\"{}\"", host.architecture)),
        "{text}"
    );
    let out = w.path("out");
    w.run(["pull", "--key", s(&public), &reference, "-o", s(&out)])
        .expect(0);
    assert_eq!(std::fs::read(out.join("xdp_pass.o")).unwrap(), xdp);
    let inspected = w.run(["inspect", "--output", "json", &reference]).json();
    assert_eq!(inspected["index"]["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(inspected["file"], "xdp_pass.o");

    // Refused before anything is pushed.
    let r = w.run(["push", s(&a), s(&b), &format!("{}/net/x:v1", reg.address)]);
    assert!(r.stderr.contains("one --platform each"), "{r:?}");
    let r = w.run([
        "push",
        "--platform",
        "linux/s390x",
        s(&a),
        &format!("{}/net/x:v1", reg.address),
    ]);
    assert!(r.stderr.contains("cannot serve linux/s390x"), "{r:?}");
    assert_ne!(r.code, Some(0));

    // Hostile indexes, signed so only the index itself is at fault.
    let c = client();
    let repo = Reference::parse(&reference).unwrap();
    let (child, _) = c
        .resolve(&repo.with_digest(v["platforms"][1]["digest"].as_str().unwrap()))
        .map(|d| (d, ()))
        .unwrap();
    let mut entry = Descriptor {
        platform: Some(host.clone()),
        ..child.clone()
    };
    entry.media_type = OCI_MANIFEST.into();
    let cases: Vec<(&str, ImageIndex, &str)> = vec![
        (
            "other-only",
            ImageIndex {
                manifests: vec![Descriptor {
                    platform: Some(Platform::parse("linux/riscv64").unwrap()),
                    ..entry.clone()
                }],
                ..ImageIndex::empty()
            },
            "no manifest for",
        ),
        (
            "nested",
            ImageIndex {
                manifests: vec![Descriptor {
                    media_type: OCI_INDEX.into(),
                    ..entry.clone()
                }],
                ..ImageIndex::empty()
            },
            "nested indexes are not followed",
        ),
        (
            "wrong-size",
            ImageIndex {
                manifests: vec![Descriptor {
                    size: entry.size + 1,
                    ..entry.clone()
                }],
                ..ImageIndex::empty()
            },
            "size mismatch",
        ),
        (
            "huge",
            ImageIndex {
                manifests: vec![entry.clone(); 300],
                ..ImageIndex::empty()
            },
            "at most 256",
        ),
    ];
    for (tag, index, expect) in cases {
        c.push_manifest(&repo, tag, OCI_INDEX, &index.to_bytes())
            .unwrap();
        let at = format!("{}/net/multi:{tag}", reg.address);
        w.run(["sign", "--key", s(&key), &at]).expect(0);
        let r = w.run(["verify", "--key", s(&public), &at]);
        assert_ne!(r.code, Some(0), "{tag}: {r:?}");
        assert!(r.stderr.contains(expect), "{tag}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{tag}: one line: {r:?}");
    }
}
