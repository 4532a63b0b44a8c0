//! Times keyless verification of one bundle in-process: preparing the trusted root, parsing the
//! bundle, and verifying (certificate chain, SCT, log entry, signature, identity), best of N.
//!
//! `cargo run --release -p bpfship-keyless --example keyless_verify -- ROOT BUNDLE FILE IDENTITY ISSUER [N]`
//! prints one line per phase and `total` (seconds, the best of N of each).

use std::path::Path;
use std::time::{Duration, Instant};

use bpfship_keyless::{Artifact, SigstoreBundle, TrustRoot, verify_keyless};
use bpfship_verifier::certificate_identity::{IdentityPolicy, Matcher};

fn best<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..n {
        let t0 = Instant::now();
        let v = f();
        best = best.min(t0.elapsed());
        last = Some(v);
    }
    (best, last.expect("n > 0"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, bundle, file, identity, issuer, rest @ ..] = args.as_slice() else {
        return Err("usage: keyless_verify ROOT BUNDLE FILE IDENTITY ISSUER [N]".into());
    };
    let n: usize = rest.first().map_or(Ok(200), |s| s.parse())?.max(1);
    let policy = IdentityPolicy::new(
        Matcher::exact("identity", identity)?,
        Matcher::exact("issuer", issuer)?,
    );
    let root_json = std::fs::read_to_string(root)?;
    let bundle_json = std::fs::read(bundle)?;
    let blob = std::fs::read(Path::new(file))?;

    let (t_root, trust) = best(n, || TrustRoot::from_json(&root_json, root));
    let trust = trust?;
    let (t_parse, parsed) = best(n, || SigstoreBundle::parse(&bundle_json));
    let parsed = parsed?;
    let artifact = Artifact::Bytes(&blob);
    let (t_verify, verified) = best(n, || verify_keyless(&trust, &parsed, &artifact, &policy));
    verified?;
    let (t_total, all) = best(n, || -> Result<(), bpfship_keyless::KeylessError> {
        let trust = TrustRoot::from_json(&std::fs::read_to_string(root).unwrap_or_default(), root)?;
        let parsed = SigstoreBundle::parse(&std::fs::read(bundle).unwrap_or_default())?;
        let blob = std::fs::read(file).unwrap_or_default();
        verify_keyless(&trust, &parsed, &Artifact::Bytes(&blob), &policy).map(drop)
    });
    all?;
    for (phase, t) in [
        ("trusted root", t_root),
        ("bundle parse", t_parse),
        ("verify", t_verify),
        ("total (read files, root, parse, verify)", t_total),
    ] {
        println!("{phase}\t{:.6}", t.as_secs_f64());
    }
    Ok(())
}
