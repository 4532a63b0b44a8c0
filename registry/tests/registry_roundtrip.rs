//! The transport against a real registry: Debian's docker-registry on a loopback port.

use std::collections::BTreeMap;
use std::process::Command;

use bpfship_registry::artifact::{ArtifactKind, kind_of, package_ebpf, package_wasm, unpack_layer};
use bpfship_registry::auth::from_config_file;
use bpfship_registry::signatures::{
    fetch_bundles, fetch_legacy, push_bundle, push_legacy, referrers_tag,
};
use bpfship_registry::testing::TestRegistry;
use bpfship_registry::{BlobKind, Client, ClientOptions, ImageManifest, Reference, RegistryError};

macro_rules! registry_or_skip {
    () => {
        match TestRegistry::start() {
            Ok(r) => r,
            Err(e) => {
                bpfship_test_support::skip(bpfship_test_support::Missing::Setup(e));
                return;
            }
        }
    };
}

fn push(client: &Client, r: &Reference, p: &bpfship_registry::artifact::Packaged) -> String {
    client
        .push_blob(r, &p.config_media_type, &p.config)
        .unwrap();
    client.push_blob(r, &p.layer_media_type, &p.layer).unwrap();
    let bytes = p.manifest.to_bytes();
    client
        .push_manifest(
            r,
            r.tag().unwrap(),
            bpfship_registry::manifest::OCI_MANIFEST,
            &bytes,
        )
        .unwrap()
        .digest
}

fn ebpf_package() -> bpfship_registry::artifact::Packaged {
    let progs = BTreeMap::from([("xdp_pass".to_string(), "xdp".to_string())]);
    let maps = BTreeMap::from([("counters".to_string(), "array".to_string())]);
    let ann = BTreeMap::from([(
        "dev.bpfship.elf.sha256".to_string(),
        "sha256:00".to_string(),
    )]);
    package_ebpf(
        "xdp_pass.o",
        b"\x7fELF not really, but bytes",
        &progs,
        &maps,
        "1970-01-01T00:00:00Z",
        &bpfship_registry::Platform::host(),
        ann,
    )
    .unwrap()
}

#[test]
fn push_resolve_fetch_by_digest_and_skopeo_reads_it() {
    let reg = registry_or_skip!();
    let client = Client::new(ClientOptions::default()).unwrap();
    let r = Reference::parse(&format!("{}/test/xdp:v1", reg.address)).unwrap();
    let p = ebpf_package();
    let digest = push(&client, &r, &p);
    let d = client.resolve(&r).unwrap();
    assert_eq!(d.digest, digest);
    let (bytes, _) = client.fetch_manifest(&r, &d.digest).unwrap();
    let m: ImageManifest = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(kind_of(&m).unwrap(), ArtifactKind::Ebpf);
    let layer = client.fetch_blob(&r, &m.layers[0], BlobKind::Ebpf).unwrap();
    let (name, elf) = unpack_layer(&m.layers[0].media_type, &layer).unwrap();
    assert_eq!(
        (name.as_str(), elf.as_slice()),
        ("xdp_pass.o", &b"\x7fELF not really, but bytes"[..])
    );

    let w = Reference::parse(&format!("{}/test/handler:v1", reg.address)).unwrap();
    let wp = package_wasm(
        "handler.wasm",
        b"\0asm\x01\0\0\0",
        None,
        "1970-01-01T00:00:00Z",
        BTreeMap::new(),
    );
    let wd = push(&client, &w, &wp);
    let (wbytes, _) = client.fetch_manifest(&w, &wd).unwrap();
    let wm: ImageManifest = serde_json::from_slice(&wbytes).unwrap();
    assert_eq!(kind_of(&wm).unwrap(), ArtifactKind::Wasm);

    // An independent reader: skopeo inspects and copies what bpfship pushed.
    if Command::new("skopeo").arg("--version").output().is_err() {
        bpfship_test_support::skip(bpfship_test_support::Missing::Setup(
            "skopeo not installed (run scripts/setup.sh)".into(),
        ));
        return;
    }
    for (repo, dig) in [(&r, &digest), (&w, &wd)] {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{repo}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(bpfship_registry::manifest::sha256_digest(&out.stdout), *dig);
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{repo}"))
            .arg(format!("oci:{}:copy", dir.path().display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn signatures_both_layouts_round_trip_in_cosigns_shape() {
    let reg = registry_or_skip!();
    let client = Client::new(ClientOptions::default()).unwrap();
    let r = Reference::parse(&format!("{}/test/signed:v1", reg.address)).unwrap();
    let digest = push(&client, &r, &ebpf_package());
    let subject = client.resolve(&r).unwrap();

    push_legacy(&client, &r, &digest, b"payload-1", "c2lnLTE=").unwrap();
    push_legacy(&client, &r, &digest, b"payload-2", "c2lnLTI=").unwrap();
    let sigs = fetch_legacy(&client, &r, &digest).unwrap();
    assert_eq!(sigs.len(), 2, "appending keeps the first signature");
    assert_eq!(
        (sigs[0].payload.as_slice(), sigs[0].signature.as_str()),
        (&b"payload-1"[..], "c2lnLTE=")
    );

    // golden shape of the .sig manifest
    let (sig_manifest, _) = client
        .fetch_tag(&r, &format!("{}.sig", referrers_tag(&digest)))
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&sig_manifest).unwrap();
    assert_eq!(v["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        v["layers"][0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    assert_eq!(
        v["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"],
        "c2lnLTE="
    );

    let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#;
    let desc = push_bundle(
        &client,
        &r,
        &subject,
        bundle,
        Some("https://sigstore.dev/cosign/sign/v1"),
    )
    .unwrap();
    let found = fetch_bundles(&client, &r, &digest).unwrap();
    assert_eq!(found, vec![bundle.to_vec()]);
    // golden shape of the referrer and the tag-schema fallback (docker-registry 2.8 has no referrers API)
    let (ref_manifest, _) = client.fetch_manifest(&r, &desc.digest).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&ref_manifest).unwrap();
    assert_eq!(
        v["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(
        v["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        v["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    assert_eq!(v["subject"]["digest"], digest.as_str());
    let (index, _) = client
        .fetch_tag(&r, &referrers_tag(&digest))
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&index).unwrap();
    assert_eq!(v["manifests"][0]["digest"], desc.digest.as_str());
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
}

#[test]
fn tampered_blob_is_rejected_by_digest() {
    let reg = registry_or_skip!();
    let client = Client::new(ClientOptions::default()).unwrap();
    let r = Reference::parse(&format!("{}/test/tamper:v1", reg.address)).unwrap();
    let p = ebpf_package();
    push(&client, &r, &p);
    let layer = &p.manifest.layers[0];
    let hex = layer.digest.strip_prefix("sha256:").unwrap();
    let path = reg.storage().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let e = client.fetch_blob(&r, layer, BlobKind::Ebpf).unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains("digest mismatch"));
}

#[test]
fn tls_and_basic_auth_with_docker_config_credentials() {
    let (reg, ca) = match TestRegistry::start_tls_basic_auth("ci", "s3cret") {
        Ok(x) => x,
        Err(e) => {
            bpfship_test_support::skip(bpfship_test_support::Missing::Setup(e));
            return;
        }
    };
    let r = Reference::parse(&format!("{}/test/private:v1", reg.address)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"Y2k6czNjcmV0"}}}}}}"#,
            reg.address
        ),
    )
    .unwrap();
    let creds = from_config_file(&cfg, &reg.address).unwrap().unwrap();
    assert_eq!(creds.username, "ci");
    let tls = |credentials| {
        Client::new(ClientOptions {
            credentials,
            ca_certificates: vec![ca.clone()],
            ..Default::default()
        })
        .unwrap()
    };
    let printed = format!("{creds:?}");
    let authed = tls(Some(creds));
    push(&authed, &r, &ebpf_package());
    assert!(authed.resolve(&r).is_ok());
    let anonymous = tls(None);
    let e = anonymous.resolve(&r).unwrap_err();
    assert!(matches!(e, RegistryError::Denied { .. }), "{e}");
    assert!(
        !format!("{e:?}{printed}").contains("s3cret"),
        "password must never be printed"
    );
}
