//! The WASM validator on arbitrary bytes, under the standard feature set and under a policy with
//! both opt-in features and every rule set: a report or an error, never a panic.
#![no_main]

use bpfship_verifier::policy::WasmRules;
use bpfship_verifier::wasm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let standard = WasmRules::default();
    let strict = WasmRules {
        allow_features: vec!["threads".into(), "legacy_exceptions".into()],
        allowed_imports: vec!["bpfship_host::*".into(), "bpfship:host/*".into()],
        restrict_imports: true,
        max_memory_pages: Some(16),
        required_exports: vec!["handle_event".into()],
    };
    for rules in [&standard, &strict] {
        if let Ok(report) = wasm::inspect(data, rules) {
            let _ = wasm::check_policy(rules, &report);
            serde_json::to_vec(&report).expect("a report always serialises");
        }
    }
});
