//! What verdict counting costs per packet: each test program loaded twice, as published and
//! instrumented (`kernel::load_program_counting_verdicts`), run with `BPF_PROG_TEST_RUN` in
//! alternation in one run (root; run by bench/verdicts.sh).
//!
//! Usage: verdict_bench OBJECTS_DIR [REPEAT]

use std::path::PathBuf;
use std::time::Instant;

use bpfship_agent::kernel::instrument::VerdictCounting;
use bpfship_agent::kernel::{self, HookKind, ProgramFd};

#[path = "common/frame.rs"]
mod frame;
use frame::frame;

/// One test run of `repeat` packets: (wall ns per packet, kernel's own ns per packet). The
/// kernel reports whole nanoseconds; the wall time over the syscall gives the fraction.
fn run(prog: &ProgramFd, repeat: u32) -> (f64, f64) {
    let t = Instant::now();
    let r = prog.test_run(&frame(), repeat).expect("test run");
    let wall = t.elapsed().as_nanos() as f64 / f64::from(repeat);
    (wall, f64::from(r.duration_ns))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(objects) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: verdict_bench OBJECTS_DIR [REPEAT]");
        std::process::exit(2);
    };
    let repeat: u32 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    if let Err(e) = kernel::bpf_available() {
        eprintln!("verdict_bench: needs root and BPF: {e}");
        std::process::exit(2);
    }
    let pins = PathBuf::from(format!("/sys/fs/bpf/bpfship-vbench-{}", std::process::id()));
    println!(
        "## verdict counting (BPF_PROG_TEST_RUN, repeat {repeat}, alternating, best of 7 each)"
    );
    println!("| program | unmodified ns/packet | instrumented ns/packet | added | epilogue |");
    println!("|---|---|---|---|---|");
    for (name, program, kind) in [
        ("vd_pass1", "filter", HookKind::Xdp),
        ("tcv_ok1", "classify", HookKind::Tc),
    ] {
        let elf = std::fs::read(objects.join(format!("{name}.o"))).expect("built object");
        let maps = pins.join(name);
        let plain = kernel::load_program(&elf, program, kind, &maps).unwrap();
        let counted = kernel::load_program_counting_verdicts(&elf, program, kind, &maps).unwrap();
        let Some(VerdictCounting::Instrumented(rewrite)) = &counted.verdicts else {
            panic!("{name} not instrumented: {:?}", counted.verdicts);
        };
        let (mut best_plain, mut best_counted) = ((f64::MAX, f64::MAX), (f64::MAX, f64::MAX));
        run(&plain.fd, repeat / 10); // warm up
        run(&counted.fd, repeat / 10);
        for _ in 0..7 {
            let p = run(&plain.fd, repeat);
            let c = run(&counted.fd, repeat);
            best_plain = (best_plain.0.min(p.0), best_plain.1.min(p.1));
            best_counted = (best_counted.0.min(c.0), best_counted.1.min(c.1));
        }
        let counts = counted.verdict_counts().unwrap_or_default();
        assert!(
            counts.iter().sum::<u64>() > 0,
            "the instrumented program counted"
        );
        println!(
            "| {name} ({kind:?}) | {:.2} (kernel {:.0}) | {:.2} (kernel {:.0}) | {:+.2} ns | +{} instructions, {} exit(s) |",
            best_plain.0,
            best_plain.1,
            best_counted.0,
            best_counted.1,
            best_counted.0 - best_plain.0,
            rewrite.added_instructions,
            rewrite.exits
        );
    }
    let _ = std::fs::remove_dir_all(&pins);
}
