//! The WASM validator on modules compiled from testdata/wasm/*.wat.

use std::path::Path;

use bpfship_verifier::digest::ReportDigest;
use bpfship_verifier::policy::WasmRules;
use bpfship_verifier::wasm::{
    ExportList, WasmError, WasmKind, WasmReport, check_policy, inspect, inspect_with,
};

fn wasm(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../testdata/wasm/{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every module in testdata/wasm.
const TESTDATA_MODULES: [&str; 6] = [
    "handler",
    "invalid",
    "forbidden_import",
    "oversized_memory",
    "threads",
    "component",
];

fn serial_verdict(bytes: &[u8], rules: &WasmRules) -> bool {
    let features = bpfship_verifier::wasm::features_for(rules).unwrap();
    wasmparser::Validator::new_with_features(features)
        .validate_all(bytes)
        .is_ok()
}

#[test]
fn valid_handler_findings() {
    let r = inspect(&wasm("handler"), &WasmRules::default()).unwrap();
    assert!(r.valid, "{:?}", r.error);
    assert_eq!(r.kind, WasmKind::Module);
    assert_eq!(r.imports.len(), 1);
    assert_eq!(
        (
            r.imports[0].module.as_str(),
            r.imports[0].name.as_str(),
            r.imports[0].kind.as_str()
        ),
        ("bpfship_host", "log", "func")
    );
    assert!(
        r.exports
            .iter()
            .any(|e| e.name == "handle_event" && e.kind == "func")
    );
    assert_eq!(
        (r.memories[0].initial_pages, r.memories[0].maximum_pages),
        (1, Some(16))
    );
    assert_eq!(r.functions, 1);
}

#[test]
fn invalid_module_names_the_offset() {
    let r = inspect(&wasm("invalid"), &WasmRules::default()).unwrap();
    assert!(!r.valid);
    let e = r.error.unwrap();
    assert!(
        e.contains("type mismatch") && e.contains("offset 0x"),
        "{e}"
    );
}

#[test]
fn threads_only_when_the_policy_opts_in() {
    let bytes = wasm("threads");
    let r = inspect(&bytes, &WasmRules::default()).unwrap();
    assert!(!r.valid, "threads must be refused by default");
    let allow = WasmRules {
        allow_features: vec!["threads".into()],
        ..Default::default()
    };
    assert!(inspect(&bytes, &allow).unwrap().valid);
    let bogus = WasmRules {
        allow_features: vec!["everything".into()],
        ..Default::default()
    };
    assert_eq!(
        inspect(&bytes, &bogus).unwrap_err(),
        WasmError::UnknownFeature("everything".into())
    );
}

#[test]
fn component_is_recognised() {
    let r = inspect(&wasm("component"), &WasmRules::default()).unwrap();
    assert!(r.valid, "{:?}", r.error);
    assert_eq!(r.kind, WasmKind::Component);
    assert!(r.exports.iter().any(|e| e.name == "run"));
}

#[test]
fn policy_rules() {
    let rules = WasmRules {
        restrict_imports: true,
        allowed_imports: vec!["bpfship_host::*".into()],
        max_memory_pages: Some(256),
        required_exports: vec!["handle_event".into()],
        ..Default::default()
    };
    let ok = inspect(&wasm("handler"), &rules).unwrap();
    assert!(check_policy(&rules, &ok).is_empty());
    let v = check_policy(&rules, &inspect(&wasm("forbidden_import"), &rules).unwrap());
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].rule, "wasm.allowed_imports");
    assert!(v[0].message.contains("wasi_snapshot_preview1::sock_open"));
    let v = check_policy(&rules, &inspect(&wasm("oversized_memory"), &rules).unwrap());
    assert_eq!(v[0].rule, "wasm.max_memory_pages");
    let v = check_policy(&rules, &inspect(&wasm("component"), &rules).unwrap());
    assert!(v.iter().any(|v| v.rule == "wasm.required_exports"));
}

#[test]
fn not_wasm() {
    assert_eq!(
        inspect(b"\x7fELF....", &WasmRules::default()).unwrap_err(),
        WasmError::NotWasm
    );
}

/// xorshift64*, fixed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutations_never_panic_and_match_serial_validation() {
    let rules = WasmRules::default();
    let mut rng = Rng(0x0a5d_5eed);
    let mut cases = 0;
    let mut valid_cases = 0;
    for name in TESTDATA_MODULES {
        let orig = wasm(name);
        for _ in 0..800 {
            let mut b = orig.clone();
            match rng.below(4) {
                0 => {
                    let i = 8 + rng.below(b.len() - 8);
                    b[i] ^= 1 << rng.below(8);
                }
                1 => b.truncate(8 + rng.below(b.len() - 8)),
                2 => {
                    // forge a LEB128 length: 5-byte maximal varint
                    let i = 8 + rng.below(b.len() - 8);
                    let forged = [0xff, 0xff, 0xff, 0xff, 0x0f];
                    for (k, byte) in forged.iter().enumerate() {
                        if let Some(x) = b.get_mut(i + k) {
                            *x = *byte;
                        }
                    }
                }
                _ => {
                    let i = 8 + rng.below(b.len() - 8);
                    b[i] = rng.next() as u8;
                }
            }
            let r = std::panic::catch_unwind(|| inspect(&b, &rules))
                .unwrap_or_else(|_| panic!("inspect panicked on a mutation of {name}: {b:02x?}"))
                .unwrap();
            assert_eq!(
                r.valid,
                serial_verdict(&b, &rules),
                "verdict differs from serial validation on {b:02x?}"
            );
            // Without the digest: same verdict, and for a valid module the same report but for
            // the digest.
            let fast = inspect_with(&b, &rules, ReportDigest::Skip, ExportList::All).unwrap();
            assert_eq!(
                fast.valid, r.valid,
                "digest-less verdict differs on {b:02x?}"
            );
            assert_eq!(fast.error.is_some(), r.error.is_some());
            if r.valid {
                assert_eq!(
                    fast,
                    WasmReport {
                        sha256: String::new(),
                        ..r
                    }
                );
                valid_cases += 1;
            }
            cases += 1;
        }
    }
    eprintln!(
        "{cases} WASM mutations ({valid_cases} still valid): no panic, verdicts equal serial validation"
    );
}

#[test]
fn digest_less_report_equals_full_report() {
    // Many functions (several validation batches), exports of every kind, imports and a memory.
    let mut wat = String::from(
        "(module (import \"env\" \"log\" (func $log (param i32)))\n (memory (export \"mem\") 1 4)\n (global (export \"g\") i32 (i32.const 7))\n (table (export \"t\") 1 funcref)\n",
    );
    for i in 0..3000 {
        wat.push_str(&format!(
            " (func (export \"f{i}\") (param i32) (result i32) local.get 0 i32.const {i} i32.add (call $log (local.get 0)) (block (br 0)) (i32.mul (i32.const 3)))\n"
        ));
    }
    wat.push(')');
    let big = wat::parse_str(&wat).unwrap();
    first_exports_and_the_required_ones(&big);
    let mut inputs = vec![("big".to_string(), big.clone())];
    for name in TESTDATA_MODULES {
        inputs.push((name.to_string(), wasm(name)));
    }
    // An invalid body late in a big module: the same error either way.
    let mut broken = big;
    let at = broken.len() - 40;
    broken[at] = 0x6a; // an i32.add short of operands somewhere in the last bodies
    inputs.push(("big-broken".to_string(), broken));
    let rules = WasmRules::default();
    for (name, bytes) in inputs {
        let full = inspect(&bytes, &rules).unwrap();
        let fast = inspect_with(&bytes, &rules, ReportDigest::Skip, ExportList::All).unwrap();
        assert!(full.sha256.starts_with("sha256:"), "{name}");
        assert!(fast.sha256.is_empty(), "{name}");
        assert_eq!(fast.valid, full.valid, "{name}");
        if full.valid {
            assert_eq!(
                fast,
                WasmReport {
                    sha256: String::new(),
                    ..full
                },
                "{name}"
            );
        } else {
            assert!(fast.error.is_some(), "{name}");
        }
    }
}

/// `ExportList::First`: the first N exports and those the policy requires are named, every export
/// is counted, and the policy check gives what it gives on the full list.
fn first_exports_and_the_required_ones(module: &[u8]) {
    let required = WasmRules {
        required_exports: vec!["f2500".into(), "missing".into()],
        ..WasmRules::default()
    };
    for rules in [WasmRules::default(), required] {
        let full = inspect(module, &rules).unwrap();
        for digest in [ReportDigest::Compute, ReportDigest::Skip] {
            let page = inspect_with(module, &rules, digest, ExportList::First(50)).unwrap();
            assert_eq!(page.export_count, full.export_count);
            assert_eq!(full.export_count, full.exports.len());
            let names: Vec<&str> = page.exports.iter().map(|e| e.name.as_str()).collect();
            let mut expected: Vec<&str> =
                full.exports[..50].iter().map(|e| e.name.as_str()).collect();
            if !rules.required_exports.is_empty() {
                expected.push("f2500");
            }
            assert_eq!(names, expected, "{digest:?}");
            assert_eq!(check_policy(&rules, &page), check_policy(&rules, &full));
            assert_eq!(page.valid, full.valid);
        }
    }
}

/// `ref.func` may name a function that only the export section declares: the body pass, which
/// runs without the export section, must not reject it; an undeclared one is still rejected with
/// the serial validator's message.
#[test]
fn ref_func_declared_only_by_an_export() {
    let rules = WasmRules::default();
    let mut filler = String::new();
    for i in 0..2000 {
        filler.push_str(&format!(
            " (func (export \"filler{i}\") (result i32) i32.const {i})\n"
        ));
    }
    for (wat, valid) in [
        (
            format!(
                "(module (func $f (export \"f\")) {filler} (func (result funcref) ref.func $f))"
            ),
            true,
        ),
        (
            format!("(module (func $f) {filler} (func (result funcref) ref.func $f))"),
            false,
        ),
    ] {
        let bytes = wat::parse_str(&wat).unwrap();
        let report = inspect(&bytes, &rules).unwrap();
        assert_eq!(report.valid, valid, "{:?}", report.error);
        assert_eq!(report.valid, serial_verdict(&bytes, &rules));
        if !valid {
            let Err(serial) = wasmparser::Validator::new_with_features(
                bpfship_verifier::wasm::features_for(&rules).unwrap(),
            )
            .validate_all(&bytes) else {
                panic!("the serial validator accepts it");
            };
            assert_eq!(
                report.error.as_deref(),
                Some(format!("{} (at offset {:#x})", serial.message(), serial.offset()).as_str())
            );
        }
    }
}
