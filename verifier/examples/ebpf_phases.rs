//! Benchmark helper (not a test): how in-process eBPF validation time splits between parsing and
//! checks, over every `*.o` in a directory.
//! `cargo run --release -p bpfship-verifier --example ebpf_phases -- DIR [POLICY] [RUNS]`
//!
//! Phases, each timed over the whole corpus (best of RUNS):
//! * parse: the ELF reading `ebpf::inspect` starts with (header, section table and names, section
//!   data, symbol table and names, with the `object` crate);
//! * digest: the SHA-256 of the file that the report carries;
//! * inspect: the whole of `ebpf::inspect` (parse + built-in checks: license, BTF and BTF.ext,
//!   maps, program types, instruction scan, helpers, GPL-only helpers);
//! * policy: `ebpf::check_policy` on the reports.
//!
//! Checks = (inspect - parse - digest) + policy. Reading the files and writing the output are the CLI's.

use std::time::Instant;

use bpfship_verifier::ebpf;
use bpfship_verifier::policy::Policy;
use object::LittleEndian as LE;
use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader as _, SectionHeader as _, Sym as _};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(v);
    }
    (best, out.expect("runs >= 1"))
}

/// The parsing `ebpf::inspect` does before its checks; returns a count so nothing is optimized
/// away.
fn parse(bytes: &[u8]) -> usize {
    let e = LE;
    let Ok(header) = FileHeader64::<LE>::parse(bytes) else {
        return 0;
    };
    let Ok(table) = header.sections(e, bytes) else {
        return 0;
    };
    let mut n = 0;
    for sh in table.iter() {
        let name = table
            .section_name(e, sh)
            .ok()
            .and_then(|n| std::str::from_utf8(n).ok())
            .unwrap_or("");
        n += name.len();
        if sh.sh_type(e) != elf::SHT_NOBITS {
            n += sh.data(e, bytes).map_or(0, <[u8]>::len);
        }
    }
    if let Ok(symtab) = table.symbols(e, bytes, elf::SHT_SYMTAB) {
        for sym in symtab.iter() {
            n += symtab
                .symbol_name(e, sym)
                .ok()
                .and_then(|n| std::str::from_utf8(n).ok())
                .map_or(0, str::len);
            n += sym.st_shndx(e) as usize;
        }
    }
    n
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: ebpf_phases DIR [POLICY] [RUNS]");
    let policy = args
        .next()
        .map(|p| Policy::load(std::path::Path::new(&p)).expect("policy"));
    let runs: usize = args.next().map_or(5, |r| r.parse().expect("RUNS"));
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("DIR")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    paths.sort();
    let (t_read, files) = best(runs, || {
        paths
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect::<Vec<_>>()
    });
    let (t_parse, _) = best(runs, || files.iter().map(|b| parse(b)).sum::<usize>());
    let (t_digest, _) = best(runs, || {
        files
            .iter()
            .map(|b| bpfship_verifier::digest::sha256_digest(b).len())
            .sum::<usize>()
    });
    let (t_inspect, reports) = best(runs, || {
        files
            .iter()
            .filter_map(|b| ebpf::inspect(b).ok())
            .collect::<Vec<_>>()
    });
    let (t_policy, _) = best(runs, || {
        policy.as_ref().map_or(0, |p| {
            reports
                .iter()
                .map(|r| ebpf::check_policy(&p.rules.ebpf, r).len())
                .sum::<usize>()
        })
    });
    let (t_json, _) = best(runs, || serde_json::to_vec(&reports).expect("json").len());
    let n = files.len() as f64;
    let line = |what: &str, t: f64| {
        println!(
            "{what:<32} {:>9.2} ms {:>7.2} us/object",
            t * 1e3,
            t * 1e6 / n
        )
    };
    println!(
        "{} objects ({} parsed as eBPF), one core",
        files.len(),
        reports.len()
    );
    line("read files", t_read);
    line("parse (ELF tables)", t_parse);
    line("digest (sha256)", t_digest);
    line("inspect (parse + checks)", t_inspect);
    line("policy checks", t_policy);
    line("serialize JSON", t_json);
    let checks = (t_inspect - t_parse - t_digest).max(0.0) + t_policy;
    let total = t_parse + t_digest + checks;
    println!("parse share {:.0}", 100.0 * t_parse / total);
    println!("digest share {:.0}", 100.0 * t_digest / total);
    println!("check share {:.0}", 100.0 * checks / total);
    println!(
        "in-process objects/s (one core) {:.0}",
        n / (t_inspect + t_policy)
    );
}
