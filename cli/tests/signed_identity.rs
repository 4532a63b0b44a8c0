//! Signatures bound to the place they were made for, as someone with push access to the registry
//! (but not the signing key) would attack them: copying a signed artifact with its signatures
//! byte for byte into another repository, relying on `allow_unsigned` to excuse a bad signature,
//! and the signed release version that lets the agent refuse a downgrade.

mod common;

use std::path::PathBuf;

use bpfship_registry::signatures::{legacy_tag, push_bundle, referrers_tag};
use bpfship_registry::testing::TestRegistry;
use bpfship_registry::{BlobKind, Client, ClientOptions, ImageIndex, ImageManifest, Reference};
use common::{Work, s};

/// A registry, a work directory with the release key, and a signed eBPF artifact in
/// `team-a/xdp-debug`.
struct Setup {
    reg: TestRegistry,
    w: Work,
    key: PathBuf,
    public: PathBuf,
    client: Client,
    xdp: PathBuf,
}

impl Setup {
    fn new() -> Option<Self> {
        let reg = common::registry()?;
        let xdp = common::object("xdp_pass")?;
        let w = Work::new();
        let (key, public) = w.key_pair("release");
        let xdp = w.write("xdp_pass.o", &xdp);
        let client = Client::new(ClientOptions::default()).unwrap();
        Some(Self {
            reg,
            w,
            key,
            public,
            client,
            xdp,
        })
    }

    /// `host:port/<path>`.
    fn at(&self, path: &str) -> String {
        format!("{}/{path}", self.reg.address)
    }

    /// Pushes xdp_pass.o to `path:v1` signed with the release key; returns the digest.
    fn push_signed(&self, path: &str, extra: &[&str]) -> String {
        let out = self.w.push(
            &self.xdp,
            &format!("{}:v1", self.at(path)),
            Some(&self.key),
            extra,
        );
        out["digest"].as_str().unwrap().to_owned()
    }

    fn verify_key(&self, reference: &str, extra: &[&str]) -> common::Run {
        let mut args = vec!["verify", "--output", "json", "--key", s(&self.public)];
        args.extend(extra);
        args.push(reference);
        self.w.run(args)
    }

    /// `verify --output json --policy POLICY REFERENCE`, asserting success.
    fn verify_policy(&self, policy: &std::path::Path, reference: &str) -> serde_json::Value {
        self.w
            .run([
                "verify",
                "--output",
                "json",
                "--policy",
                s(policy),
                reference,
            ])
            .json()
    }

    fn policy(&self, name: &str, text: &str) -> PathBuf {
        self.w.write(name, text.as_bytes())
    }

    /// Copies manifest `reference` (tag or digest) and every blob it names from `from` to `to`,
    /// byte for byte, under `reference`; returns false when `from` has no such manifest.
    fn copy_manifest(&self, from: &Reference, to: &Reference, reference: &str) -> bool {
        let Some((bytes, descriptor)) = self.client.fetch_tag(from, reference).unwrap() else {
            return false;
        };
        if let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) {
            for blob in std::iter::once(&m.config).chain(&m.layers) {
                let data = self.client.fetch_blob(from, blob, BlobKind::Wasm).unwrap();
                self.client.push_blob(to, &blob.media_type, &data).unwrap();
            }
        }
        self.client
            .push_manifest(to, reference, &descriptor.media_type, &bytes)
            .unwrap();
        true
    }

    /// What an attacker with push access does: copies the artifact at `digest`, its `.sig` tag,
    /// its bundle referrers and the referrers-tag index from one repository to another, byte for
    /// byte, and tags it `v1` there.
    fn replay(&self, from: &str, to: &str, digest: &str) {
        let (from, to) = (
            Reference::parse(&self.at(from)).unwrap(),
            Reference::parse(&self.at(to)).unwrap(),
        );
        assert!(self.copy_manifest(&from, &to, digest));
        let (bytes, media_type) = self.client.fetch_manifest(&from, digest).unwrap();
        self.client
            .push_manifest(&to, "v1", &media_type, &bytes)
            .unwrap();
        self.copy_manifest(&from, &to, &legacy_tag(digest));
        if let Some((index, _)) = self
            .client
            .fetch_tag(&from, &referrers_tag(digest))
            .unwrap()
        {
            let index: ImageIndex = serde_json::from_slice(&index).unwrap();
            for referrer in &index.manifests {
                assert!(self.copy_manifest(&from, &to, &referrer.digest));
            }
            assert!(self.copy_manifest(&from, &to, &referrers_tag(digest)));
        }
    }
}

/// Issue 7 item 1: a byte-for-byte copy of a signed artifact into another repository is refused
/// there by `verify` and `pull`, with `--key` and with a policy whose separate rules name the
/// same key, in both signature layouts; the original still verifies, and a mirror verifies only
/// through an explicit remap.
#[test]
fn signatures_replayed_into_another_repository_are_refused() {
    let Some(t) = Setup::new() else { return };
    let digest = t.push_signed("team-a/xdp-debug", &[]);
    t.replay("team-a/xdp-debug", "team-b/xdp-filter", &digest);
    let original = format!("{}:v1", t.at("team-a/xdp-debug"));
    let copy = format!("{}:v1", t.at("team-b/xdp-filter"));

    let v = t.verify_key(&original, &[]).json();
    assert_eq!(
        v["verified"]["signatures"].as_array().unwrap().len(),
        2,
        "{v}"
    );
    let msg = t.verify_key(&copy, &[]).rejected_with("no valid signature");
    let wrong_place = format!(
        "signed for repository \"{}\", not \"{}\"",
        t.at("team-a/xdp-debug"),
        t.at("team-b/xdp-filter")
    );
    assert!(
        msg.contains(&format!("legacy signature: {wrong_place}"))
            && msg.contains(&format!("bundle: {wrong_place}")),
        "{msg}"
    );
    let out = t.w.path("out");
    t.w.run(["pull", "--key", s(&t.public), &copy, "-o", s(&out)])
        .rejected_with("signed for repository");
    assert!(!out.join("xdp_pass.o").exists());

    // Separate [[trust]] rules naming the same key: each repository's signatures are its own.
    let policy = t.policy(
        "teams.toml",
        &format!(
            "[[trust]]\nrepositories = [\"{0}/team-a/**\"]\nkeys = [\"release.pub\"]\n\
             [[trust]]\nrepositories = [\"{0}/team-b/**\"]\nkeys = [\"release.pub\"]\n",
            t.reg.address
        ),
    );
    t.w.run(["verify", "--policy", s(&policy), &original])
        .expect(0);
    t.w.run(["verify", "--policy", s(&policy), &copy])
        .rejected_with("signed for repository");
    t.w.run(["pull", "--policy", s(&policy), &copy, "-o", s(&out)])
        .rejected_with("signed for repository");

    // A mirror: the copy counts when the policy (or --remap-identity) says whose name it bears.
    let mirror = t.policy(
        "mirror.toml",
        &format!(
            "[[trust]]\nrepositories = [\"{0}/team-b/**\"]\nkeys = [\"release.pub\"]\n\
             signed_identity = {{ remap = {{ prefix = \"{0}/team-b/xdp-filter\", signed_prefix = \"{0}/team-a/xdp-debug\" }} }}\n",
            t.reg.address
        ),
    );
    let v = t.verify_policy(&mirror, &copy);
    assert_eq!(
        v["verified"]["signatures"].as_array().unwrap().len(),
        2,
        "{v}"
    );
    assert_eq!(v["verified"]["trust"]["policy_rule"], 0, "{v}");
    let remap = format!("{}={}", t.at("team-b/xdp-filter"), t.at("team-a/xdp-debug"));
    let v = t.verify_key(&copy, &["--remap-identity", &remap]).json();
    assert_eq!(v["verified"]["trust"], "explicit_keys", "{v}");
    assert_eq!(
        v["verified"]["signatures"][0]["docker_reference"],
        t.at("team-a/xdp-debug")
    );
    // A remap for another prefix does not cover it.
    let other = format!("{}={}", t.at("team-c"), t.at("team-a"));
    t.verify_key(&copy, &["--remap-identity", &other])
        .rejected_with("signed for repository");
}

/// Issue 7 item 1, bundles: bpfship's bundles name the repository (the in-toto subject's name)
/// and are refused elsewhere; a digest-only bundle, as cosign 3 writes it, counts only where the
/// trust rule (or `--accept-digest-only-bundles`) explicitly accepts such bundles.
#[test]
fn bundles_are_tied_to_their_repository_and_digest_only_ones_need_consent() {
    let Some(t) = Setup::new() else { return };
    let digest = t.push_signed("team-a/bundled", &["--signature-format", "bundle"]);
    t.replay("team-a/bundled", "team-b/bundled", &digest);
    t.verify_key(&format!("{}:v1", t.at("team-a/bundled")), &[])
        .json();
    t.verify_key(&format!("{}:v1", t.at("team-b/bundled")), &[])
        .rejected_with("bundle: signed for repository");

    // A bundle over cosign 3's exact statement shape (digest only), signed with the release key.
    let plain =
        t.w.push(&t.xdp, &format!("{}:v1", t.at("cosign3/xdp")), None, &[]);
    let digest = plain["digest"].as_str().unwrap();
    let repo = Reference::parse(&t.at("cosign3/xdp")).unwrap();
    let subject = t.client.resolve(&repo.with_tag("v1")).unwrap();
    let statement = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{}"}},"annotations":{{}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1"}}"#,
        digest.strip_prefix("sha256:").unwrap()
    );
    let key = bpfship_verifier::keys::PrivateKey::from_encrypted_pem(
        &std::fs::read(&t.key).unwrap(),
        common::PASSWORD.as_bytes(),
    )
    .unwrap();
    let bundle = bpfship_verifier::bundle::sign_statement(&key, statement.as_bytes());
    push_bundle(
        &t.client,
        &repo,
        &subject,
        &bundle.to_json(),
        Some(bpfship_verifier::bundle::COSIGN_SIGN_PREDICATE),
    )
    .unwrap();
    let reference = format!("{}:v1", t.at("cosign3/xdp"));
    t.verify_key(&reference, &[])
        .rejected_with("names only the digest");
    let v = t
        .verify_key(&reference, &["--accept-digest-only-bundles"])
        .json();
    let sig = &v["verified"]["signatures"][0];
    assert_eq!(sig["layout"], "bundle", "{v}");
    assert!(sig.get("docker_reference").is_none(), "{v}");
    let rule = |accept: bool| {
        format!(
            "[[trust]]\nrepositories = [\"{}/cosign3/*\"]\nkeys = [\"release.pub\"]\naccept_digest_only_bundles = {accept}\n",
            t.reg.address
        )
    };
    let strict = t.policy("strict.toml", &rule(false));
    t.w.run(["verify", "--policy", s(&strict), &reference])
        .rejected_with("accept_digest_only_bundles");
    let lenient = t.policy("lenient.toml", &rule(true));
    t.w.run(["verify", "--policy", s(&lenient), &reference])
        .expect(0);
}

/// Issue 7 item 9: `allow_unsigned` excuses the absence of signatures, never a signature that is
/// there and fails; and verification says which trust decided (explicit keys or a policy rule).
#[test]
fn allow_unsigned_never_excuses_an_invalid_signature() {
    let Some(t) = Setup::new() else { return };
    let reference = format!("{}:v1", t.at("sandbox/x"));
    t.w.push(&t.xdp, &reference, None, &[]);
    let policy = t.policy(
        "sandbox.toml",
        &format!(
            "[[trust]]\nrepositories = [\"{}/sandbox/**\"]\nkeys = [\"release.pub\"]\nallow_unsigned = true\n",
            t.reg.address
        ),
    );
    let v = t.verify_policy(&policy, &reference);
    assert_eq!(v["verified"]["unsigned_allowed"], true, "{v}");
    assert_eq!(v["verified"]["trust"]["policy_rule"], 0, "{v}");
    // Someone signs it with a key the rule does not trust: no longer "unsigned", refused.
    let (other, _) = t.w.key_pair("other");
    t.w.run(["sign", "--key", s(&other), &reference]).expect(0);
    t.w.run(["verify", "--policy", s(&policy), &reference])
        .rejected_with("no valid signature");
    t.w.run([
        "pull",
        "--policy",
        s(&policy),
        &reference,
        "-o",
        s(&t.w.path("o")),
    ])
    .rejected_with("no valid signature");
    // With the release key's signature too, it verifies by that signature.
    t.w.run(["sign", "--key", s(&t.key), &reference]).expect(0);
    let v = t.verify_policy(&policy, &reference);
    assert_eq!(v["verified"]["unsigned_allowed"], false, "{v}");
}

/// Issue 7 item 2 (signing side): `push`/`sign --version` sign the version into both layouts and
/// verification exposes it (the highest among the signatures that verified).
#[test]
fn the_signed_version_is_verified_and_exposed() {
    let Some(t) = Setup::new() else { return };
    let reference = format!("{}:v1", t.at("net/versioned"));
    let pushed =
        t.w.push(&t.xdp, &reference, Some(&t.key), &["--version", "7"]);
    assert_eq!(pushed["signed"]["version"], 7, "{pushed}");
    let v = t.verify_key(&reference, &[]).json();
    assert_eq!(v["verified"]["version"], 7, "{v}");
    for sig in v["verified"]["signatures"].as_array().unwrap() {
        assert_eq!(sig["version"], 7, "{sig}");
    }
    let repo = Reference::parse(&reference).unwrap();
    let digest = v["verified"]["digest"].as_str().unwrap();
    let legacy = bpfship_registry::signatures::fetch_legacy(&t.client, &repo, digest).unwrap();
    assert!(
        String::from_utf8_lossy(&legacy[0].payload)
            .contains(r#""optional":{"dev.bpfship.version":"7"}"#)
    );
    t.w.run(["sign", "--key", s(&t.key), "--version", "9", &reference])
        .expect(0);
    let v = t.verify_key(&reference, &[]).json();
    assert_eq!(v["verified"]["version"], 9, "{v}");
    // Unversioned signatures expose no version.
    let plain = format!("{}:v1", t.at("net/plain"));
    t.w.push(&t.xdp, &plain, Some(&t.key), &[]);
    let v = t.verify_key(&plain, &[]).json();
    assert!(v["verified"].get("version").unwrap().is_null(), "{v}");
    // --version without --key is refused before anything is pushed.
    t.w.run(["push", "--version", "3", s(&t.xdp), &plain])
        .expect(2);
}
