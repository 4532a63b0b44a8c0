//! The kernel layer on the real kernel: the dispatcher loads, splits by the configured share
//! (random and per flow), swaps slots and hooks atomically, and a verifier rejection carries the
//! log. Needs root; prints SKIP otherwise.

mod common;

use bpfship_agent::kernel::{self, Dispatcher, Hook, HookKind, LinkFd, SplitMode, XdpMode};

fn pin_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(tag)
        .tempdir_in("/sys/fs/bpf")
        .expect("bpffs mounted at /sys/fs/bpf")
}

/// Loads the test version `name`'s XDP program `filter`, its maps pinned under `pins/name`.
fn load_xdp(name: &str, pins: &tempfile::TempDir) -> kernel::LoadedProgram {
    kernel::load_program(
        &common::object(name),
        "filter",
        HookKind::Xdp,
        &pins.path().join(name),
    )
    .unwrap()
}

/// An Ethernet + IPv4 + UDP frame with the given source port.
fn udp_frame(src_port: u16) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[12] = 0x08; // ETH_P_IP
    f[14] = 0x45;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, 0, 2]);
    f[30..34].copy_from_slice(&[10, 0, 0, 1]);
    f[34..36].copy_from_slice(&src_port.to_be_bytes());
    f[36..38].copy_from_slice(&9000u16.to_be_bytes());
    f
}

/// |z| of an observed count against a binomial expectation.
fn z_score(hits: u64, n: u64, p: f64) -> f64 {
    let mean = n as f64 * p;
    (hits as f64 - mean) / (n as f64 * p * (1.0 - p)).sqrt()
}

#[test]
fn dispatcher_splits_by_share_and_flow() {
    if !common::can_use_kernel("dispatcher_splits_by_share_and_flow") {
        return;
    }
    let pins = pin_dir("kd-split");
    let (v1, v2) = (load_xdp("v1", &pins), load_xdp("v2", &pins));
    let d = Dispatcher::create(HookKind::Xdp, SplitMode::Random, 0x1234_5678)
        .expect("dispatcher loads");
    d.set_slot(0, &v1.fd).unwrap();
    d.set_slot(1, &v2.fd).unwrap();
    d.set_canary_share(1000).unwrap();

    // Random split: 10% of 20,000 runs.
    let frame = udp_frame(40000);
    let run = d.prog.test_run(&frame, 20_000).unwrap();
    assert_eq!(run.retval, 2, "XDP_PASS from the versions");
    let c = d.counters().unwrap();
    assert_eq!(c.runs[0] + c.runs[1], 20_000);
    let z = z_score(c.runs[1], 20_000, 0.10);
    assert!(
        z.abs() < 5.0,
        "canary share {} of 20000 (z = {z:.2})",
        c.runs[1]
    );

    // Flow split: one flow always lands on the same side; over many flows the share is ~10%.
    let mut cfg = d.config().unwrap();
    cfg.mode = SplitMode::FlowHash;
    d.write_config(&cfg).unwrap();
    let before = d.counters().unwrap();
    d.prog.test_run(&udp_frame(40001), 500).unwrap();
    let after = d.counters().unwrap();
    let moved = [
        after.runs[0] - before.runs[0],
        after.runs[1] - before.runs[1],
    ];
    assert!(
        moved == [500, 0] || moved == [0, 500],
        "one flow split across versions: {moved:?}"
    );
    let mut canary_flows = 0u64;
    for port in 0..4000u16 {
        let b = d.counters().unwrap();
        d.prog.test_run(&udp_frame(20000 + port), 1).unwrap();
        let a = d.counters().unwrap();
        canary_flows += a.runs[1] - b.runs[1];
    }
    let z = z_score(canary_flows, 4000, 0.10);
    assert!(
        z.abs() < 5.0,
        "canary flows {canary_flows} of 4000 (z = {z:.2})"
    );

    // 0% and 100%, and an empty canary slot falls through to stable.
    d.set_canary_share(0).unwrap();
    let b = d.counters().unwrap();
    d.prog.test_run(&frame, 1000).unwrap();
    assert_eq!(d.counters().unwrap().runs[1], b.runs[1]);
    d.set_canary_share(10_000).unwrap();
    d.clear_slot(1).unwrap();
    let r = d.prog.test_run(&frame, 100).unwrap();
    assert_eq!(r.retval, 2);
    // Both slots empty: the dispatcher's own fallback verdict (XDP_PASS).
    d.clear_slot(0).unwrap();
    assert_eq!(d.prog.test_run(&frame, 10).unwrap().retval, 2);
}

#[test]
fn verifier_rejection_carries_the_log() {
    if !common::can_use_kernel("verifier_rejection_carries_the_log") {
        return;
    }
    let pins = pin_dir("kd-reject");
    let err = kernel::load_program(
        &common::object("v5_reject"),
        "filter",
        HookKind::Xdp,
        pins.path(),
    )
    .expect_err("the verifier must refuse v5");
    let log = err.verifier_log().expect("a verifier log");
    assert!(
        log.contains("invalid access to packet") || log.contains("R"),
        "log: {log}"
    );
    // Wrong hook for the program type is refused before the kernel sees it.
    let err = kernel::load_program(&common::object("v1"), "filter", HookKind::Tc, pins.path())
        .unwrap_err();
    assert!(err.to_string().contains("needs Tc"), "{err}");
}

#[test]
fn hook_swap_and_pins_survive_the_process() {
    if !common::can_use_kernel("hook_swap_and_pins_survive_the_process") {
        return;
    }
    let pins = pin_dir("kd-hook");
    let veth = common::VethPair::create("kd1", 231);
    let (v1, v2) = (load_xdp("v1", &pins), load_xdp("v2", &pins));
    let hook = Hook::Xdp {
        interface: veth.host.clone(),
        mode: XdpMode::Generic,
    };
    let link = kernel::attach(&hook, &v1.fd).expect("attach v1");
    // A second attach on the same hook is refused by the kernel (never two programs).
    assert!(kernel::attach(&hook, &v2.fd).is_err());
    link.replace(&v2.fd, &v1.fd).expect("swap to v2");
    // Replacing with the wrong expected program fails: no blind swaps.
    assert!(link.replace(&v1.fd, &v1.fd).is_err());
    link.pin(&pins.path().join("link")).unwrap();
    v2.pin(&pins.path().join("v2prog")).unwrap();
    drop(link);
    drop(v2);
    let reopened = kernel::LoadedProgram::open_pinned(&pins.path().join("v2prog")).unwrap();
    let link = LinkFd::open_pinned(&pins.path().join("link")).unwrap();
    link.replace(&v1.fd, &reopened.fd)
        .expect("the pinned link still runs v2");
    std::fs::remove_file(pins.path().join("link")).unwrap();
    std::fs::remove_file(pins.path().join("v2prog")).unwrap();
}

#[test]
fn tc_sections_are_renamed_and_split_on_tcx() {
    if !common::can_use_kernel("tc_sections_are_renamed_and_split_on_tcx") {
        return;
    }
    let elf = std::fs::read(common::objects().unwrap().join("../tc_section.o")).unwrap();
    let pins = pin_dir("kd-tc");
    let a = kernel::load_program(&elf, "tc_accept", HookKind::Tc, &pins.path().join("a")).unwrap();
    assert_eq!(a.renamed.len(), 1, "the `tc` section is renamed for aya");
    assert_eq!(
        (a.renamed[0].from.as_str(), a.renamed[0].to.as_str()),
        ("tc", "classifier")
    );
    let b = kernel::load_program(&elf, "tc_accept", HookKind::Tc, &pins.path().join("b")).unwrap();
    let d = Dispatcher::create(HookKind::Tc, SplitMode::Random, 1).unwrap();
    d.set_slot(0, &a.fd).unwrap();
    d.set_slot(1, &b.fd).unwrap();
    d.set_canary_share(5000).unwrap();
    d.prog.test_run(&udp_frame(1234), 10_000).unwrap();
    let c = d.counters().unwrap();
    assert_eq!(c.runs[0] + c.runs[1], 10_000);
    assert!(z_score(c.runs[1], 10_000, 0.5).abs() < 5.0, "{c:?}");
    // tcx: attach the dispatcher on ingress, then swap to a version in one link update.
    let veth = common::VethPair::create("kd2", 234);
    let hook = Hook::Tc {
        interface: veth.host.clone(),
        direction: kernel::TcDirection::Ingress,
    };
    let link = match kernel::attach(&hook, &d.prog) {
        Ok(link) => link,
        Err(e) if !bpfship_test_support::kernel_at_least(6, 6) => {
            bpfship_test_support::skip(bpfship_test_support::Missing::Kernel(format!(
                "tcx links need Linux 6.6 ({e})"
            )));
            return;
        }
        Err(e) => panic!("tcx attach: {e}"),
    };
    assert_eq!(link.program_id().unwrap(), d.prog_id);
    link.replace(&a.fd, &d.prog).expect("swap to the version");
    assert_eq!(link.program_id().unwrap(), a.id);
}

/// A signed version may declare a per-CPU `bpfship_health` map: the agent refuses to load it
/// (before reading it) instead of reading 8 × CPUs bytes into an 8-byte value.
#[test]
fn per_cpu_health_map_is_refused() {
    if !common::can_use_kernel("per_cpu_health_map_is_refused") {
        return;
    }
    let pins = pin_dir("kd-percpu");
    let hook = Hook::Xdp {
        interface: "lo".into(),
        mode: XdpMode::Generic,
    };
    let runtime = bpfship_agent::hook::HookRuntime::adopt(
        hook,
        pins.path().join("d"),
        SplitMode::Random,
        1,
        [None, None, None],
    )
    .unwrap();
    let err = runtime
        .load(&common::object("percpu_health"), "filter", "v-percpu")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the version's bpfship_health map does not follow the health convention (array, u32 keys, u64 values): map bpfship_health is a percpu_array map, not array"
    );
    assert!(!pins.path().join("d/v-percpu").exists(), "nothing pinned");
    // A conforming version loads.
    runtime
        .load(&common::object("v1"), "filter", "v-good")
        .unwrap();
}

/// The instrumented version passes the verifier, returns what it returned before, and counts
/// each verdict — run directly and behind the dispatcher (the instrumented program is what sits
/// in the slot).
#[test]
fn instrumented_program_verifies_and_counts_verdicts() {
    use bpfship_agent::kernel::instrument::{VerdictCounting, VerdictSet};
    if !common::can_use_kernel("instrumented_program_verifies_and_counts_verdicts") {
        return;
    }
    let pins = pin_dir("kd-verdicts");
    let p = kernel::load_program_counting_verdicts(
        &common::object("vd_mixed"),
        "filter",
        HookKind::Xdp,
        &pins.path().join("m"),
    )
    .unwrap();
    let Some(VerdictCounting::Instrumented(rewrite)) = &p.verdicts else {
        panic!("not instrumented: {:?}", p.verdicts);
    };
    assert_eq!(rewrite.exits, 1);
    assert!(rewrite.added_instructions > 10);
    let set = VerdictSet::Xdp;
    let (drop, pass) = (set.index("drop").unwrap(), set.index("pass").unwrap());
    assert_eq!(p.fd.test_run(&udp_frame(40001), 300).unwrap().retval, 1);
    assert_eq!(p.fd.test_run(&udp_frame(40000), 200).unwrap().retval, 2);
    let c = p.verdict_counts().unwrap();
    assert_eq!((c[drop], c[pass]), (300, 200), "{c:?}");
    assert_eq!(c.iter().sum::<u64>(), 500);

    let d = Dispatcher::create(HookKind::Xdp, SplitMode::Random, 7).unwrap();
    d.set_slot(0, &p.fd).unwrap();
    assert_eq!(d.prog.test_run(&udp_frame(40003), 100).unwrap().retval, 1);
    assert_eq!(p.verdict_counts().unwrap()[drop], 400);

    // After a restart the agent adopts the pinned version with what the rewrite did.
    p.pin(&pins.path().join("vprog")).unwrap();
    let adopted = kernel::LoadedProgram::open_pinned(&pins.path().join("vprog")).unwrap();
    assert_eq!(adopted.verdicts, p.verdicts);
    std::fs::remove_file(pins.path().join("vprog")).unwrap();

    // TC: TC_ACT_OK counted in the `ok` bucket, TC_ACT_SHOT in `shot`.
    let elf = common::object("tcv_ok1");
    let tc = kernel::load_program_counting_verdicts(
        &elf,
        "classify",
        HookKind::Tc,
        &pins.path().join("t"),
    )
    .unwrap();
    assert!(matches!(
        tc.verdicts,
        Some(VerdictCounting::Instrumented(_))
    ));
    assert_eq!(tc.fd.test_run(&udp_frame(1), 50).unwrap().retval, 0);
    let shot = kernel::load_program_counting_verdicts(
        &common::object("tcv_shot"),
        "classify",
        HookKind::Tc,
        &pins.path().join("s"),
    )
    .unwrap();
    assert_eq!(shot.fd.test_run(&udp_frame(1), 30).unwrap().retval, 2);
    let tcs = VerdictSet::Tc;
    assert_eq!(tc.verdict_counts().unwrap()[tcs.index("ok").unwrap()], 50);
    assert_eq!(
        shot.verdict_counts().unwrap()[tcs.index("shot").unwrap()],
        30
    );
}

/// The rewrite at ELF level, checked with aya's own linker (no root): the main function grows
/// by the epilogue, its exits jump there, the call to the subprogram still reaches it after aya
/// appends it, and func/line info stay attached to the same instructions.
#[test]
fn rewrite_keeps_calls_and_btf_info_valid() {
    use bpfship_agent::kernel::instrument::{self, VerdictSet};
    let Some(_) = common::objects() else {
        eprintln!("SKIP rewrite_keeps_calls_and_btf_info_valid: cannot build the test programs");
        return;
    };
    let elf = common::object("vd_mixed");
    let ep = instrument::epilogue(VerdictSet::Xdp, 3);
    let (copy, rewrite) = instrument::instrument_elf(&elf, "filter", &ep).unwrap();
    let link = |bytes: &[u8]| {
        let mut obj = aya_obj::Object::parse(bytes).unwrap();
        // As aya computes it before linking.
        let text: std::collections::HashSet<usize> =
            obj.functions.keys().map(|(s, _)| *s).collect();
        obj.relocate_calls(&text).unwrap();
        let key = obj.programs["filter"].function_key();
        obj.functions[&key].clone()
    };
    let (before, after) = (link(&elf), link(&copy));
    let main = 17; // instructions of `filter` (see the disassembly in the test program)
    assert_eq!(
        before.instructions.len() + ep.len(),
        after.instructions.len()
    );
    assert_eq!(rewrite.added_instructions, ep.len());
    // The call (pc 15) targets the subprogram's first instruction in both links.
    let target = |f: &aya_obj::Function| 15 + 1 + f.instructions[15].imm as usize;
    assert_eq!(target(&before), main);
    assert_eq!(target(&after), main + ep.len());
    assert_eq!(
        after.instructions[target(&after)].code,
        before.instructions[target(&before)].code
    );
    // func_info: the subprogram's entry moved with it; line info of the main function did not.
    let offs = |f: &aya_obj::Function| -> Vec<u32> {
        f.func_info.func_info.iter().map(|i| i.insn_off).collect()
    };
    assert_eq!(offs(&before), vec![0, main as u32]);
    assert_eq!(offs(&after), vec![0, (main + ep.len()) as u32]);
    let lines = |f: &aya_obj::Function| -> Vec<u32> {
        f.line_info
            .line_info
            .iter()
            .map(|l| l.insn_off)
            .filter(|o| (*o as usize) < main)
            .collect()
    };
    assert_eq!(lines(&before), lines(&after));
    // The exit at 16 became `ja` to the epilogue (first instruction after the main function).
    let ja = after.instructions[16];
    assert_eq!((ja.code, 16 + 1 + ja.off as usize), (0x05, main));
}
