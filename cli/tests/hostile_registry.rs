//! Issue 7, performed against the real `bpfship` binary and Debian's docker-registry by someone
//! with push access: junk and bombs in the signature metadata (items 4, 6), references that mean
//! two things (8), registry strings on the terminal (17), a petabyte layer (19).

mod common;

use std::time::Instant;

use bpfship_registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use bpfship_registry::signatures::{
    BUNDLE_ARTIFACT_TYPE, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_LAYER, legacy_tag, referrers_tag,
};
use bpfship_registry::testing::TestRegistry;
use bpfship_registry::{Client, ClientOptions, Descriptor, ImageIndex, ImageManifest, Reference};
use common::{Work, s};

struct Signed {
    reg: TestRegistry,
    w: Work,
    public: std::path::PathBuf,
    tag_ref: String,
    repo: Reference,
    digest: String,
    client: Client,
}

/// `xdp_pass.o` pushed to `net/xdp:v1` signed in both layouts; `None` (SKIP printed) without a
/// registry or clang.
fn signed() -> Option<Signed> {
    let reg = match TestRegistry::start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return None;
        }
    };
    let xdp = common::object("xdp_pass")?;
    let w = Work::new();
    let (key, public) = w.key_pair("release");
    let file = w.write("xdp_pass.o", &xdp);
    let tag_ref = format!("{}/net/xdp:v1", reg.address);
    let digest = w.push(&file, &tag_ref, Some(&key), &[])["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = Client::new(ClientOptions::default()).unwrap();
    let repo = Reference::parse(&tag_ref).unwrap();
    Some(Signed {
        reg,
        w,
        public,
        tag_ref,
        repo,
        digest,
        client,
    })
}

impl Signed {
    fn verify(&self, extra: &[&str]) -> common::Run {
        let mut args = vec!["verify", "--key", s(&self.public)];
        args.extend(extra);
        args.push(&self.tag_ref);
        self.w.run(args)
    }

    fn sig_manifest(&self) -> ImageManifest {
        let (bytes, _) = self
            .client
            .fetch_tag(&self.repo, &legacy_tag(&self.digest))
            .unwrap()
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn push_sig_manifest(&self, m: &ImageManifest) {
        self.client
            .push_manifest(
                &self.repo,
                &legacy_tag(&self.digest),
                OCI_MANIFEST,
                &m.to_bytes(),
            )
            .unwrap();
    }

    /// A junk "signature" layer of `size` bytes, pushed as a blob.
    fn junk_layer(&self, media_type: &str, size: usize, signature: &str) -> Descriptor {
        let mut d = self
            .client
            .push_blob(&self.repo, media_type, &vec![b'x'; size])
            .unwrap();
        d.annotations
            .insert(SIGNATURE_ANNOTATION.into(), signature.into());
        d
    }
}

/// Item 4: a 1.5 MiB layer (and a layer that is no signature at all) appended to the `.sig`
/// manifest do not hide the valid signature (before: exit 2, "response too large").
#[test]
fn junk_signature_entries_do_not_block_a_valid_one() {
    let Some(p) = signed() else { return };
    let mut sig = p.sig_manifest();
    sig.layers
        .push(p.junk_layer(SIMPLE_SIGNING_LAYER, 3 << 19, "AAAA"));
    sig.layers
        .push(p.junk_layer("application/x-not-a-signature", 10, "AAAA"));
    p.push_sig_manifest(&sig);
    let out = p.verify(&["--output", "json"]).json();
    assert!(
        out["verified"]["signatures"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{out}"
    );
}

/// Item 6: a `.sig` manifest listing 3,000 entries that all name one 1 MiB blob (before: 34 s,
/// 3 GB) is judged within the caps, fetching the blob once; and referrers with a 1 MB
/// `mediaType` each (three here: docker-registry takes at most 4 MB of index) do not grow what
/// verify prints.
#[test]
fn signature_metadata_bombs_are_bounded() {
    let Some(p) = signed() else { return };
    let mut sig = p.sig_manifest();
    let junk = p.junk_layer(SIMPLE_SIGNING_LAYER, 1 << 20, "x");
    for i in 0..3000 {
        let mut l = junk.clone();
        l.annotations
            .insert(SIGNATURE_ANNOTATION.into(), format!("junk{i}"));
        sig.layers.push(l);
    }
    p.push_sig_manifest(&sig);

    let (bytes, _) = p
        .client
        .fetch_tag(&p.repo, &referrers_tag(&p.digest))
        .unwrap()
        .unwrap();
    let mut index: ImageIndex = serde_json::from_slice(&bytes).unwrap();
    let real = index.manifests[0].clone();
    for i in 0..3u8 {
        let mut d = real.clone();
        d.media_type = format!("{}{}", char::from(b'a' + i), "m".repeat(1 << 20));
        d.artifact_type = Some(BUNDLE_ARTIFACT_TYPE.into());
        index.manifests.push(d);
    }
    p.client
        .push_manifest(
            &p.repo,
            &referrers_tag(&p.digest),
            OCI_INDEX,
            &index.to_bytes(),
        )
        .unwrap();

    let t = Instant::now();
    let run = p.verify(&["--output", "json"]).expect(0);
    let took = t.elapsed();
    assert!(took.as_secs() < 10, "verify took {took:?}");
    assert!(run.stdout.len() < 64 * 1024, "{} bytes", run.stdout.len());
    eprintln!("verify with 3000 junk entries and 3 junk referrers: {took:?}");

    // With a key that signed nothing, every entry is a reason: the message stays small.
    let (_, other) = p.w.key_pair("other");
    let run =
        p.w.run(["verify", "--key", s(&other), &p.tag_ref])
            .expect(1);
    assert!(run.stderr.contains("no valid signature"), "{}", run.stderr);
    assert!(run.stderr.len() < 16 * 1024, "{} bytes", run.stderr.len());
}

/// Item 8: `127.1:PORT` is `127.0.0.1:PORT` for the policy as for the connection, and
/// `sandbox/../untrusted/evil` is refused instead of matching `sandbox/**` while the request
/// goes to `untrusted/evil`.
#[test]
fn references_that_mean_two_things() {
    let Some(p) = signed() else { return };
    let xdp = common::object("xdp_pass").unwrap();
    let file = p.w.write("unsigned.o", &xdp);
    let port = p.reg.address.rsplit_once(':').unwrap().1.to_owned();
    p.w.push(
        &file,
        &format!("{}/untrusted/evil:v1", p.reg.address),
        None,
        &[],
    );
    let policy = p.w.write(
        "policy.toml",
        b"version = 1\n[[trust]]\nrepositories = [\"127.0.0.1:*/**\"]\nkeys = [\"release.pub\"]\n[[trust]]\nrepositories = [\"**\"]\nallow_unsigned = true\n",
    );
    p.w.run([
        "verify",
        "--policy",
        s(&policy),
        &format!("127.1:{port}/untrusted/evil:v1"),
    ])
    .rejected_with("no signatures found");
    let sandbox = p.w.write(
        "sandbox.toml",
        b"version = 1\n[[trust]]\nrepositories = [\"127.0.0.1:*/sandbox/**\"]\nallow_unsigned = true\n",
    );
    let run =
        p.w.run([
            "verify",
            "--policy",
            s(&sandbox),
            &format!("{}/sandbox/../untrusted/evil:v1", p.reg.address),
        ])
        .expect(2);
    assert!(run.stderr.contains("invalid reference"), "{}", run.stderr);
}

/// Item 17: registry-chosen strings reach the terminal escaped (an annotation that sets the
/// terminal title and clears the screen).
#[test]
fn inspect_escapes_registry_strings() {
    let Some(p) = signed() else { return };
    let (bytes, _) = p.client.fetch_manifest(&p.repo, &p.digest).unwrap();
    let mut m: ImageManifest = serde_json::from_slice(&bytes).unwrap();
    m.annotations.insert(
        "org.example.note".into(),
        "\x1b]0;pwned\x07\x1b[2Jhidden".into(),
    );
    p.client
        .push_manifest(&p.repo, "v2", OCI_MANIFEST, &m.to_bytes())
        .unwrap();
    let run =
        p.w.run(["inspect", &format!("{}/net/xdp:v2", p.reg.address)])
            .expect(0);
    assert!(!run.stdout.contains('\x1b'), "{:?}", run.stdout);
    assert!(run.stdout.contains("\\u{1b}]0;pwned"), "{}", run.stdout);
}

/// Item 19: `inspect` of a manifest declaring a 2^50-byte layer ends with a one-line error, not
/// SIGABRT from a 1 PiB allocation (`Run` panics if the process dies of a signal).
#[test]
fn inspect_of_a_petabyte_layer_fails_cleanly() {
    let Some(p) = signed() else { return };
    let (bytes, _) = p.client.fetch_manifest(&p.repo, &p.digest).unwrap();
    let mut m: ImageManifest = serde_json::from_slice(&bytes).unwrap();
    m.layers[0].size = 1 << 50;
    p.client
        .push_manifest(&p.repo, "huge", OCI_MANIFEST, &m.to_bytes())
        .unwrap();
    let run =
        p.w.run(["inspect", &format!("{}/net/xdp:huge", p.reg.address)]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains("declares 1125899906842624 bytes"),
        "{}",
        run.stderr
    );
}
