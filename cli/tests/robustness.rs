//! `bpfship validate` on thousands of mutated eBPF objects and WASM modules (bit flips, byte
//! overwrites, truncations, forged ELF section/symbol sizes and offsets, forged WASM section
//! sizes and limits, splices), from a fixed seed: it must never panic or abort, must exit 0, 1
//! or 2, and must say something about every file.
//!
//! Files are validated in batches (one process per batch) to stay fast; a batch that dies is
//! re-run file by file to name the culprits, which are kept in target/robustness-failures/.

// Every mutator has one signature (`Mutator`), though some only need a slice.
#![allow(clippy::ptr_arg)]

mod common;

use std::path::{Path, PathBuf};

use common::{Work, s};

/// Cases per seed file and per kind of mutation: 11 ELF seeds × 7 mutators × 100 + 6 WASM seeds
/// × 6 mutators × 100 ≈ 10,600 files (about 2 s). `BPFSHIP_ROBUSTNESS_CASES` and
/// `BPFSHIP_ROBUSTNESS_SEED` run a deeper or different search.
const CASES: usize = 100;
const SEED: u64 = 0x6270_6673_6869_7021; // "bpfship!"

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const BATCH: usize = 400;

/// splitmix64: small, deterministic, good enough to pick offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    /// A size or offset an attacker would forge: huge, off by a little, or zero.
    fn forged(&mut self, real: u64, file_len: u64) -> u64 {
        match self.below(8) {
            0 => u64::MAX,
            1 => u64::MAX / 2 + self.below(1 << 20) as u64,
            2 => 1 << 40,
            3 => 0,
            4 => file_len + self.below(64) as u64,
            5 => real.wrapping_add(1 + self.below(16) as u64),
            6 => real.wrapping_sub(1 + self.below(16) as u64),
            _ => u32::MAX as u64 - self.below(8) as u64,
        }
    }
}

fn flip_bits(rng: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(8) {
        let i = rng.below(b.len());
        b[i] ^= 1 << rng.below(8);
    }
}

fn overwrite_bytes(rng: &mut Rng, b: &mut Vec<u8>) {
    const INTERESTING: [u8; 8] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe, 0x40, 0x20];
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(b.len());
        let run = 1 + rng.below(8);
        let v = INTERESTING[rng.below(INTERESTING.len())];
        for x in b.iter_mut().skip(i).take(run) {
            *x = v;
        }
    }
}

fn truncate(rng: &mut Rng, b: &mut Vec<u8>) {
    let len = b.len();
    b.truncate(match rng.below(3) {
        0 => rng.below(64.min(len)),
        1 => len - 1 - rng.below(64.min(len - 1)),
        _ => rng.below(len),
    });
}

/// A piece of the file repeated or moved elsewhere in it.
fn splice(rng: &mut Rng, b: &mut Vec<u8>) {
    let from = rng.below(b.len());
    let n = rng.below((b.len() - from).min(256)) + 1;
    let piece = b[from..from + n].to_vec();
    let to = rng.below(b.len());
    if rng.below(2) == 0 {
        let end = (to + n).min(b.len());
        b[to..end].copy_from_slice(&piece[..end - to]);
    } else {
        b.splice(to..to, piece);
    }
}

fn rd(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(n)?)?;
    let mut v = 0u64;
    for (i, x) in s.iter().enumerate() {
        v |= (*x as u64) << (8 * i);
    }
    Some(v)
}

fn wr(b: &mut [u8], at: usize, n: usize, v: u64) {
    let Some(end) = at.checked_add(n) else { return };
    if let Some(s) = b.get_mut(at..end) {
        for (i, x) in s.iter_mut().enumerate() {
            *x = (v >> (8 * i)) as u8;
        }
    }
}

/// Section headers of a little-endian ELF64 object: (offset of the header, sh_type).
fn elf_sections(b: &[u8]) -> Vec<(usize, u32)> {
    let (Some(shoff), Some(shnum)) = (rd(b, 0x28, 8), rd(b, 0x3c, 2)) else {
        return Vec::new();
    };
    (0..shnum as usize)
        .filter_map(|i| (shoff as usize).checked_add(i * 64))
        .filter_map(|h| Some((h, rd(b, h.checked_add(4)?, 4)? as u32)))
        .collect()
}

/// Forges one ELF size/offset/count: a section's sh_size/sh_offset/sh_link/sh_entsize, a
/// symbol's st_value/st_size/st_shndx/st_name, or the header's table offsets and counts.
fn forge_elf(rng: &mut Rng, b: &mut Vec<u8>) {
    let len = b.len() as u64;
    let sections = elf_sections(b);
    let little = b.get(5) == Some(&1);
    match rng.below(3) {
        // ELF header fields.
        0 => {
            let (at, n) = [
                (0x28, 8),
                (0x3c, 2),
                (0x3e, 2),
                (0x3a, 2),
                (0x20, 8),
                (0x12, 2),
            ][rng.below(6)];
            let v = rng.forged(rd(b, at, n).unwrap_or(0), len);
            wr(b, at, n, v);
        }
        // A section header field.
        1 if little && !sections.is_empty() => {
            let (h, _) = sections[rng.below(sections.len())];
            let (off, n) = [
                (0x18, 8),
                (0x20, 8),
                (0x28, 4),
                (0x2c, 4),
                (0x38, 8),
                (0x30, 8),
            ][rng.below(6)];
            let v = rng.forged(rd(b, h.wrapping_add(off), n).unwrap_or(0), len);
            wr(b, h.wrapping_add(off), n, v);
        }
        // A symbol in .symtab (SHT_SYMTAB = 2).
        _ if little => {
            let Some(&(h, _)) = sections.iter().find(|(_, t)| *t == 2) else {
                return flip_bits(rng, b);
            };
            let (Some(off), Some(size)) = (
                rd(b, h.wrapping_add(0x18), 8),
                rd(b, h.wrapping_add(0x20), 8),
            ) else {
                return;
            };
            let count = (size / 24) as usize;
            if count == 0 {
                return;
            }
            let sym = (off as usize).wrapping_add(24usize.wrapping_mul(rng.below(count)));
            let (f, n) = [(8, 8), (16, 8), (6, 2), (0, 4), (4, 1)][rng.below(5)];
            let v = rng.forged(rd(b, sym.wrapping_add(f), n).unwrap_or(0), len);
            wr(b, sym.wrapping_add(f), n, v);
        }
        _ => flip_bits(rng, b),
    }
}

/// Forged sizes in a BPF instruction stream: a random `call`/`ld_imm64`/jump target in the text.
fn forge_insn(rng: &mut Rng, b: &mut Vec<u8>) {
    // Executable sections (SHF_EXECINSTR = 4) hold instructions of 8 bytes.
    let execs: Vec<(u64, u64)> = elf_sections(b)
        .into_iter()
        .filter(|(h, _)| rd(b, h.wrapping_add(8), 8).is_some_and(|f| f & 4 != 0))
        .filter_map(|(h, _)| {
            Some((
                rd(b, h.wrapping_add(0x18), 8)?,
                rd(b, h.wrapping_add(0x20), 8)?,
            ))
        })
        .filter(|(o, s)| *s >= 8 && o.saturating_add(*s) <= b.len() as u64)
        .collect();
    if execs.is_empty() {
        return overwrite_bytes(rng, b);
    }
    let (off, size) = execs[rng.below(execs.len())];
    let insn = off as usize + 8 * rng.below((size / 8) as usize);
    match rng.below(4) {
        0 => b[insn] = [0x85, 0x18, 0x05, 0x95, 0x8d][rng.below(5)], // call, ld_imm64, ja, exit
        1 => wr(b, insn + 2, 2, rng.next()),                         // jump offset
        2 => wr(b, insn + 4, 4, rng.next()),                         // imm (helper id, call target)
        _ => b[insn + 1] = rng.next() as u8,                         // registers
    }
}

/// The sections of a WASM binary: (offset of the id byte, offset of the payload, payload size).
fn wasm_sections(b: &[u8]) -> Vec<(usize, usize, u64)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at < b.len() {
        let id = at;
        let (mut size, mut shift, mut p) = (0u64, 0, at + 1);
        loop {
            let Some(&x) = b.get(p) else { return out };
            size |= ((x & 0x7f) as u64) << shift;
            p += 1;
            shift += 7;
            if x & 0x80 == 0 || shift > 35 {
                break;
            }
        }
        out.push((id, p, size));
        at = p.saturating_add(size as usize);
    }
    out
}

fn leb(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Forges a WASM section size (LEB128 rewritten), a count at the start of a section, or the
/// limits of a memory/table.
fn forge_wasm(rng: &mut Rng, b: &mut Vec<u8>) {
    let sections = wasm_sections(b);
    if sections.is_empty() {
        return flip_bits(rng, b);
    }
    let (id, payload, size) = sections[rng.below(sections.len())];
    match rng.below(3) {
        0 => {
            let forged = rng.forged(size, b.len() as u64) & 0xffff_ffff;
            b.splice(id + 1..payload, leb(forged));
        }
        1 if payload < b.len() => {
            // The vector count at the start of most sections.
            let end = (payload + 1).min(b.len());
            let v = [u32::MAX as u64, 1 << 28, 0, 100_000][rng.below(4)];
            b.splice(payload..end, leb(v));
        }
        _ if b.get(id) == Some(&5) => {
            // Memory section: the limits flag and bounds (shared, 64-bit, huge maximum).
            if let Some(flags) = b.get_mut(payload + 1) {
                *flags = [0x00, 0x01, 0x03, 0x04, 0x05, 0x07, 0xff][rng.below(7)];
            }
            let at = (payload + 2).min(b.len());
            let end = (at + 1).min(b.len());
            b.splice(
                at..end,
                leb([u32::MAX as u64, 65_537, 1 << 48][rng.below(3)]),
            );
        }
        _ => overwrite_bytes(rng, b),
    }
}

type Mutator = fn(&mut Rng, &mut Vec<u8>);

/// Seed files by name: (eBPF objects, WASM modules).
type Seeds = Vec<(String, Vec<u8>)>;

fn seeds() -> Option<(Seeds, Seeds)> {
    let dir = common::ebpf_objects()?;
    let mut elf: Seeds = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "o").then(|| {
                (
                    p.file_stem().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
        })
        .collect();
    elf.sort();
    let mut wasm: Seeds = std::fs::read_dir(common::root().join("testdata/wasm"))
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "wat").then(|| {
                (
                    p.file_stem().unwrap().to_string_lossy().into_owned(),
                    wat::parse_file(&p).expect("testdata WAT parses"),
                )
            })
        })
        .collect();
    wasm.sort();
    Some((elf, wasm))
}

/// Writes every mutated case into `dir`; returns their paths.
fn generate(dir: &Path) -> Option<Vec<PathBuf>> {
    let (elf, wasm) = seeds()?;
    assert!(elf.len() >= 9, "eBPF seeds: {}", elf.len());
    assert!(wasm.len() >= 5, "WASM seeds: {}", wasm.len());
    let elf_mutators: [(&str, Mutator); 7] = [
        ("flip", flip_bits),
        ("bytes", overwrite_bytes),
        ("trunc", truncate),
        ("splice", splice),
        ("elf", forge_elf),
        ("elf2", forge_elf),
        ("insn", forge_insn),
    ];
    let wasm_mutators: [(&str, Mutator); 6] = [
        ("flip", flip_bits),
        ("bytes", overwrite_bytes),
        ("trunc", truncate),
        ("splice", splice),
        ("wasm", forge_wasm),
        ("wasm2", forge_wasm),
    ];
    let mut rng = Rng(env_or("BPFSHIP_ROBUSTNESS_SEED", SEED));
    let cases = env_or("BPFSHIP_ROBUSTNESS_CASES", CASES);
    let mut paths = Vec::new();
    let mut emit =
        |rng: &mut Rng, seeds: &[(String, Vec<u8>)], mutators: &[(&str, Mutator)], ext| {
            for (name, bytes) in seeds {
                for (m, f) in mutators {
                    for i in 0..cases {
                        let mut b = bytes.clone();
                        // Sometimes two mutations stacked.
                        f(rng, &mut b);
                        if rng.below(4) == 0 && !b.is_empty() {
                            let (_, g) = mutators[rng.below(mutators.len())];
                            g(rng, &mut b);
                        }
                        let p = dir.join(format!("{name}.{m}.{i}.{ext}"));
                        std::fs::write(&p, &b).unwrap();
                        paths.push(p);
                    }
                }
            }
        };
    emit(&mut rng, &elf, &elf_mutators, "o");
    emit(&mut rng, &wasm, &wasm_mutators, "wasm");
    Some(paths)
}

/// Runs `validate --output json` on `files`; checks the exit code, that stdout is one report
/// naming every file with a verdict and, for errors, a message. `Err` says what went wrong.
fn validate_batch(
    w: &Work,
    policy: Option<&Path>,
    files: &[PathBuf],
) -> Result<(usize, usize), String> {
    let mut cmd = w.cmd();
    cmd.args(["validate", "--output", "json"]);
    if let Some(p) = policy {
        cmd.arg("--policy").arg(p);
    }
    let out = cmd.args(files).output().map_err(|e| e.to_string())?;
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(sig) = out.status.signal() {
        return Err(format!("killed by signal {sig}"));
    }
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !(0..=2).contains(&code) {
        return Err(format!("exit {code}: {stderr}"));
    }
    if stderr.contains("panicked") {
        return Err(format!("a panic was printed: {stderr}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("stdout is not one JSON report ({e}); exit {code}: {stderr}"))?;
    let reported = v["files"].as_array().ok_or("no files array")?;
    if reported.len() != files.len() {
        return Err(format!(
            "{} files reported of {}",
            reported.len(),
            files.len()
        ));
    }
    let (mut valid, mut errors) = (0, 0);
    for (f, r) in files.iter().zip(reported) {
        if r["file"].as_str() != Some(s(f)) {
            return Err(format!("report out of order at {}", f.display()));
        }
        match (&r["valid"], &r["error"], &r["report"]) {
            (serde_json::Value::Bool(ok), serde_json::Value::Null, rep) if rep.is_object() => {
                valid += usize::from(*ok);
            }
            (serde_json::Value::Bool(false), serde_json::Value::String(e), _)
                if !e.trim().is_empty() =>
            {
                errors += 1;
            }
            _ => return Err(format!("no verdict or message for {}: {r}", f.display())),
        }
    }
    // The exit code agrees with the verdicts.
    let expected = if errors > 0 {
        2
    } else if valid < files.len() {
        1
    } else {
        0
    };
    if code != expected {
        return Err(format!("exit {code}, expected {expected}: {stderr}"));
    }
    if code != 0 && stderr.trim().is_empty() {
        return Err("failed without a message on stderr".into());
    }
    Ok((valid, errors))
}

#[test]
fn validate_survives_mutated_inputs() {
    let w = Work::new();
    let cases = w.path("cases");
    std::fs::create_dir(&cases).unwrap();
    let Some(files) = generate(&cases) else {
        return;
    };
    let policy = w.write(
        "policy.toml",
        b"version = 1\n[ebpf]\nforbidden_helpers = [\"bpf_probe_write_user\"]\nmax_instructions = 4096\nrequire_btf = true\n[wasm]\nrestrict_imports = true\nallowed_imports = [\"bpfship_host::*\"]\nmax_memory_pages = 16\nrequired_exports = [\"handle_event\"]\n",
    );
    let started = std::time::Instant::now();
    let (mut valid, mut errors, mut failures) = (0, 0, Vec::new());
    for (n, batch) in files.chunks(BATCH).enumerate() {
        let policy = (n % 2 == 1).then_some(policy.as_path());
        match validate_batch(&w, policy, batch) {
            Ok((v, e)) => {
                valid += v;
                errors += e;
            }
            Err(why) => {
                // Name the culprits: each file on its own.
                for f in batch {
                    if let Err(e) = validate_batch(&w, policy, std::slice::from_ref(f)) {
                        failures.push(format!("{}: {e}", f.display()));
                        let keep = common::root().join("target/robustness-failures");
                        std::fs::create_dir_all(&keep).unwrap();
                        std::fs::copy(f, keep.join(f.file_name().unwrap())).unwrap();
                    }
                }
                if failures.is_empty() {
                    failures.push(format!("batch {n} failed ({why}) but no file alone did"));
                }
            }
        }
    }
    eprintln!(
        "robustness: {} mutated files in {:.1?}: {valid} valid, {errors} unreadable/unparsable, {} invalid",
        files.len(),
        started.elapsed(),
        files.len() - valid - errors
    );
    assert!(
        files.len() >= 3000 || std::env::var_os("BPFSHIP_ROBUSTNESS_CASES").is_some(),
        "{} cases",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "{} failing inputs (kept in target/robustness-failures):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The mutations reach past the first checks: some files still parse, some are refused.
    assert!(valid > 0 && valid < files.len(), "valid: {valid}");
}

/// A module of `funcs` functions whose bodies make it larger than the 1 MiB from which
/// `validate` maps files instead of reading them; with `bad`, that function adds an i64 to an i32.
fn large_module(funcs: usize, bad: Option<usize>) -> Vec<u8> {
    let mut wat = String::from("(module\n");
    for f in 0..funcs {
        wat.push_str("(func (param i32) (result i32) local.get 0\n");
        for _ in 0..80 {
            wat.push_str("i32.const 7 i32.add\n");
        }
        if bad == Some(f) {
            wat.push_str("i64.const 1 i32.add\n");
        }
        wat.push_str(")\n");
    }
    wat.push(')');
    wat::parse_str(&wat).unwrap()
}

/// The mapped read of a large file gives the same verdicts and messages as validating a copy.
#[test]
fn large_files_are_validated_as_mapped_with_the_verdict_of_a_copy() {
    use bpfship_verifier::policy::WasmRules;
    let w = Work::new();
    for (name, bad) in [("good.wasm", None), ("bad.wasm", Some(4321))] {
        let bytes = large_module(5000, bad);
        assert!(bytes.len() > 1 << 20, "{name}: {} bytes", bytes.len());
        let file = w.write(name, &bytes);
        let expected = bpfship_verifier::wasm::inspect(&bytes, &WasmRules::default()).unwrap();
        let run = w.run(["validate", "--output", "json", s(&file)]);
        let code = if expected.valid { 0 } else { 1 };
        let run = run.expect(code);
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let findings = &report["files"][0]["report"];
        assert_eq!(findings["valid"], expected.valid, "{name}: {}", run.stdout);
        assert_eq!(findings["sha256"], expected.sha256.as_str(), "{name}");
        assert_eq!(findings["functions"], 5000, "{name}");
        match &expected.error {
            Some(e) => assert_eq!(findings["error"], e.as_str(), "{name}"),
            None => assert!(findings["error"].is_null(), "{name}: {}", run.stdout),
        }
    }
}

/// An input that never ends (a file, a policy, a key, an artifact to push) is refused once it is
/// larger than anything bpfship reads, not read forever.
#[test]
fn an_endless_input_is_refused() {
    let w = Work::new();
    let run = w.run(["validate", "/dev/zero"]).expect(2);
    assert!(
        run.stdout
            .contains("/dev/zero: error: cannot read /dev/zero: more than 256 MiB"),
        "{}",
        run.stdout
    );
    let module = w.write("m.wasm", &common::wasm("handler"));
    for (args, says) in [
        (
            vec!["validate", "--policy", "/dev/zero", s(&module)],
            "/dev/zero: cannot read policy: larger than 1 MiB",
        ),
        (
            vec!["public-key", "--key", "/dev/zero"],
            "cannot read key /dev/zero: more than 256 MiB",
        ),
        (
            vec!["push", "/dev/zero", "127.0.0.1:1/endless:v1"],
            "cannot read /dev/zero: more than 256 MiB",
        ),
    ] {
        let run = w.run(&args).expect(2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
}
