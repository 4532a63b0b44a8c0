//! The eBPF validator on real objects built by clang from testdata/ebpf.

mod common;

use bpfship_verifier::ebpf::{EbpfError, Severity, check_policy, inspect};
use bpfship_verifier::policy::EbpfRules;

macro_rules! object_or_skip {
    ($name:expr) => {
        match common::object($name) {
            Some(b) => b,
            None => return,
        }
    };
}

#[test]
fn xdp_program_with_btf_map() {
    let r = inspect(&object_or_skip!("xdp_pass")).unwrap();
    assert!(r.is_valid(), "{:?}", r.diagnostics);
    assert_eq!(r.license.as_deref(), Some("GPL"));
    assert!(r.gpl_compatible && r.btf && r.btf_ext);
    let p = &r.programs[0];
    assert_eq!(
        (
            p.name.as_str(),
            p.section.as_str(),
            p.program_type.as_deref()
        ),
        ("xdp_pass", "xdp", Some("xdp"))
    );
    assert!(p.instructions > 3);
    assert_eq!(p.helpers, vec!["bpf_map_lookup_elem"]);
    let m = r.maps.iter().find(|m| m.name == "bpfship_health").unwrap();
    assert_eq!(
        (
            m.map_type.as_str(),
            m.key_size,
            m.value_size,
            m.max_entries,
            m.pinning.as_str()
        ),
        ("array", Some(4), Some(8), Some(2), "none")
    );
}

#[test]
fn tc_section_tracepoint_socket_filter() {
    let r = inspect(&object_or_skip!("tc_section")).unwrap();
    assert!(r.is_valid());
    assert_eq!(r.programs[0].program_type.as_deref(), Some("sched_cls"));
    assert_eq!(r.license.as_deref(), Some("Dual MIT/GPL"));

    let r = inspect(&object_or_skip!("tracepoint")).unwrap();
    let p = &r.programs[0];
    assert_eq!(p.program_type.as_deref(), Some("tracepoint"));
    assert_eq!(
        p.attach_target.as_deref(),
        Some("syscalls/sys_enter_getpid")
    );
    assert!(p.helpers.contains(&"bpf_get_current_pid_tgid".to_string()));
    let m = &r.maps[0];
    assert_eq!(
        (m.map_type.as_str(), m.pinning.as_str(), m.max_entries),
        ("hash", "by_name", Some(1024))
    );

    let r = inspect(&object_or_skip!("socket_filter")).unwrap();
    assert!(r.is_valid());
    assert_eq!(r.programs[0].program_type.as_deref(), Some("socket_filter"));
    assert!(!r.gpl_compatible);
}

#[test]
fn no_btf_gets_a_hint_and_fails_require_btf() {
    let r = inspect(&object_or_skip!("nobtf_xdp")).unwrap();
    assert!(r.is_valid());
    assert!(!r.btf);
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Hint && d.message.contains("-g"))
    );
    let rules = EbpfRules {
        require_btf: true,
        ..Default::default()
    };
    assert_eq!(check_policy(&rules, &r)[0].rule, "ebpf.require_btf");
}

#[test]
fn unknown_section_is_reported_without_hiding_the_others() {
    let r = inspect(&object_or_skip!("multi_prog")).unwrap();
    assert!(!r.is_valid());
    let names: Vec<_> = r
        .programs
        .iter()
        .map(|p| (p.name.as_str(), p.program_type.as_deref()))
        .collect();
    assert!(names.contains(&("first", Some("xdp"))), "{names:?}");
    assert!(names.contains(&("second", Some("sched_cls"))), "{names:?}");
    assert!(names.contains(&("third", None)), "{names:?}");
    let errs: Vec<_> = r
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].section.as_deref(), Some("weird/thing"));
    // the subprogram's helper counts for the program that calls it
    let first = r.programs.iter().find(|p| p.name == "first").unwrap();
    assert!(
        first.helpers.contains(&"bpf_ktime_get_ns".to_string()),
        "{first:?}"
    );
}

#[test]
fn license_rules() {
    let r = inspect(&object_or_skip!("no_license")).unwrap();
    assert!(!r.is_valid());
    assert!(r.license.is_none());
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.message.contains("no license section"))
    );

    let r = inspect(&object_or_skip!("gpl_helper_proprietary")).unwrap();
    assert!(!r.is_valid());
    assert_eq!(r.programs[0].gpl_only_helpers, vec!["bpf_trace_printk"]);
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.message.contains("GPL-only") && d.message.contains("Proprietary"))
    );
}

#[test]
fn policy_rules_refuse_what_they_name() {
    let r = inspect(&object_or_skip!("forbidden_helper")).unwrap();
    let rules = EbpfRules {
        allowed_program_types: vec!["xdp".into()],
        forbidden_helpers: vec!["bpf_probe_write_user".into(), "send_signal".into()],
        max_instructions: Some(2),
        require_btf: true,
    };
    let v = check_policy(&rules, &r);
    let rules_hit: Vec<_> = v.iter().map(|v| v.rule.as_str()).collect();
    assert_eq!(
        rules_hit,
        vec![
            "ebpf.allowed_program_types",
            "ebpf.forbidden_helpers",
            "ebpf.forbidden_helpers",
            "ebpf.max_instructions"
        ]
    );
    assert!(v[1].message.contains("bpf_probe_write_user"));
    assert!(check_policy(&EbpfRules::default(), &r).is_empty());
}

/// A forbidden helper called from a function the program calls, rather than from its own body:
/// a static function in the program's own section (pc-relative call, no relocation), a chain of
/// global and static functions in `.text`. Each is attributed to exactly the programs that reach it.
#[test]
fn helpers_hidden_in_called_functions_are_attributed() {
    let r = inspect(&object_or_skip!("hidden_helper")).unwrap();
    let program = |name: &str| {
        r.programs
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no program {name}: {:?}", r.programs))
    };
    let signal_back = program("signal_back");
    assert_eq!(signal_back.helpers, ["bpf_send_signal"], "{signal_back:?}");
    // Its own 2 instructions and the 3 of the function it calls.
    assert_eq!(signal_back.instructions, 5);
    // aya loads the static function as a program of its own: it is listed, and warned about.
    assert_eq!(program("hidden_in_section").helpers, ["bpf_send_signal"]);
    assert!(
        r.diagnostics.iter().any(|d| d.severity == Severity::Warning
            && d.message.contains("hidden_in_section is static"))
    );
    let write_back = program("write_back");
    assert_eq!(
        write_back.helpers,
        ["bpf_probe_write_user"],
        "{write_back:?}"
    );
    // 3 + global_step's 4 + write_user's 8; not harmless's 3.
    assert_eq!(write_back.instructions, 15);
    let innocent = program("innocent");
    assert_eq!(innocent.helpers, ["bpf_ktime_get_ns"], "{innocent:?}");
    assert_eq!(innocent.instructions, 2 + 3);
    assert_eq!(program("unknown_id").unknown_helper_ids, [9999]);

    let rules = EbpfRules {
        forbidden_helpers: vec!["bpf_probe_write_user".into(), "bpf_send_signal".into()],
        max_instructions: Some(10),
        ..Default::default()
    };
    let v: Vec<_> = check_policy(&rules, &r)
        .into_iter()
        .map(|v| format!("{}: {}", v.rule, v.message))
        .collect();
    for expected in [
        "ebpf.forbidden_helpers: program signal_back calls forbidden helper bpf_send_signal",
        "ebpf.forbidden_helpers: program hidden_in_section calls forbidden helper bpf_send_signal",
        "ebpf.forbidden_helpers: program write_back calls forbidden helper bpf_probe_write_user",
        "ebpf.max_instructions: program write_back has 15 instructions, more than the 10 allowed",
        "ebpf.forbidden_helpers: program unknown_id calls helper id 9999, unknown to this validator: it cannot be shown not to be forbidden",
    ] {
        assert!(
            v.iter().any(|m| m == expected),
            "missing {expected:?} in {v:#?}"
        );
    }
    assert_eq!(v.len(), 5, "{v:#?}");
    // Without forbidden_helpers, an unknown id is only a warning.
    assert!(check_policy(&EbpfRules::default(), &r).is_empty());
}

#[test]
fn not_bpf_not_elf_and_big_endian_are_clear_errors() {
    assert_eq!(
        inspect(b"hello world, not an elf").unwrap_err(),
        EbpfError::NotElf
    );
    let host_binary = std::fs::read("/bin/true").unwrap();
    assert!(matches!(
        inspect(&host_binary).unwrap_err(),
        EbpfError::NotBpf(62)
    ));
    let be = object_or_skip!("bigendian_xdp");
    let e = inspect(&be).unwrap_err();
    assert_eq!(e, EbpfError::WrongEndianness);
    assert!(e.to_string().contains("wrong endianness"));
}
