//! The eBPF ELF validator on arbitrary bytes: `inspect` must return a report or an error, never
//! panic, and whatever it reports must go through the policy checks, the map ABI hash and JSON
//! serialisation (what `bpfship validate` does with it).
#![no_main]

use bpfship_verifier::ebpf;
use bpfship_verifier::policy::EbpfRules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = ebpf::inspect(data) else {
        return;
    };
    let _ = report.is_valid();
    let rules = EbpfRules {
        allowed_program_types: vec!["xdp".into(), "sched_cls".into(), "tracepoint".into()],
        forbidden_helpers: vec!["bpf_probe_write_user".into(), "bpf_send_signal".into()],
        max_instructions: Some(4096),
        require_btf: true,
    };
    let _ = ebpf::check_policy(&rules, &report);
    let _ = ebpf::check_policy(&EbpfRules::default(), &report);
    let _ = ebpf::map_abi_hash(&report);
    serde_json::to_vec(&report).expect("a report always serialises");
});
