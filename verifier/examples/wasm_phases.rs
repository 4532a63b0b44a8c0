//! Benchmark helper (not a test): where `bpfship validate` spends its time on one WASM file.
//! `cargo run --release -p bpfship-verifier --example wasm_phases -- FILE [RUNS]`
//! Prints the best of RUNS for: reading the file, SHA-256, wasmparser's serial parse+validate of
//! the module sections (bodies only collected), and the full `wasm::inspect` with and without
//! the report's digest (what `validate --output text` runs).

use std::time::Instant;

use bpfship_verifier::digest::ReportDigest;
use bpfship_verifier::policy::WasmRules;
use bpfship_verifier::wasm;
use wasmparser::{Parser, ValidPayload, Validator};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(v);
    }
    (best, out.expect("runs >= 1"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: wasm_phases FILE [RUNS]");
    let runs: usize = args.next().map_or(5, |r| r.parse().expect("RUNS"));
    let (t_read, bytes) = best(runs, || std::fs::read(&path).expect("read"));
    let mb = bytes.len() as f64 / 1e6;
    let (t_sha, _) = best(runs, || bpfship_verifier::digest::sha256_digest(&bytes));
    let rules = WasmRules::default();
    let features = wasm::features_for(&rules).expect("features");
    let (t_serial, n) = best(runs, || {
        let mut v = Validator::new_with_features(features);
        let mut n = 0usize;
        for p in Parser::new(0).parse_all(&bytes) {
            if let Ok(ValidPayload::Func(..)) = v.payload(&p.expect("parse")) {
                n += 1;
            }
        }
        n
    });
    let (t_serial_full, _) = best(runs, || {
        let mut v = Validator::new_with_features(features);
        v.validate_all(&bytes).is_ok()
    });
    let (t_inspect, report) = best(runs, || wasm::inspect(&bytes, &rules).expect("wasm"));
    let (t_inspect_nodigest, _) = best(runs, || {
        wasm::inspect_with(&bytes, &rules, ReportDigest::Skip, wasm::ExportList::All).expect("wasm")
    });
    let line = |what: &str, t: f64| println!("{what:<40} {:>8.1} ms {:>8.0} MB/s", t * 1e3, mb / t);
    println!("{path}: {mb:.1} MB, {n} functions, valid={}", report.valid);
    line("read file", t_read);
    line("sha256", t_sha);
    line("module sections (bodies collected)", t_serial);
    line("wasmparser validate_all (1 core)", t_serial_full);
    line("wasm::inspect (all cores)", t_inspect);
    line("wasm::inspect, no digest (all cores)", t_inspect_nodigest);
}
