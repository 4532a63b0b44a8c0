//! Verdict counting by instrumentation at load: every `exit` of the program's main function
//! (not of its subprograms) becomes a jump to an epilogue appended to that function, which
//! increments a per-CPU counter indexed by the return value (bounded) and exits with `r0`
//! unchanged. The version's outcomes are then counted without its cooperation.
//!
//! The rewrite is applied to the ELF object before aya parses it, and moves nothing: an `exit`
//! and the `ja` replacing it are both one instruction, and the epilogue goes after the main
//! function's last instruction. So jump offsets, pc-relative calls (aya links subprograms
//! after the main function, after this rewrite), relocation offsets and the `.BTF.ext`
//! func/line info offsets all stay valid as they are. That needs the main function to be the
//! last function of its section (clang puts each `SEC()` program in its own section): when it
//! is not, or a jump would not reach, the version loads unmodified and status says why.
//! The counter map is the agent's own: its fd goes into the epilogue as a `BPF_PSEUDO_MAP_FD`
//! load without a relocation entry, which aya passes through untouched.

use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};

use crate::HookKind;
use crate::asm::{Asm, Cond, Op, Reg, Size};
use crate::fd::ProgramFd;
use crate::maps::{MapShapeError, PerCpuArray};
use crate::rename::{name_at, u16_at, u32_at, u64_at};
use crate::{KernelError, sys};

/// Name of the counter map the agent attaches to an instrumented version (and a name a
/// version may not use for a map of its own).
pub const VERDICT_MAP: &str = "bpfship_verdict";

/// Counters per version (key 0 of the map; key 1 records what the rewrite did).
pub const SLOTS: usize = 16;
const EXITS_SLOT: u32 = 1;

/// The counter map's value: one counter per verdict bucket.
pub type VerdictValue = [u64; SLOTS];

/// The return values a hook's programs give, as buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictSet {
    /// `XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT`, then anything else.
    Xdp,
    /// `TC_ACT_UNSPEC` (-1, tcx "next"), `TC_ACT_OK` … `TC_ACT_TRAP`, then anything else.
    Tc,
    /// Zero and non-zero (tracepoints, uprobes and other types).
    ZeroNonZero,
}

impl VerdictSet {
    /// The set for programs at `kind`.
    pub fn for_hook(kind: HookKind) -> Self {
        match kind {
            HookKind::Xdp => VerdictSet::Xdp,
            HookKind::Tc => VerdictSet::Tc,
            HookKind::Tracepoint | HookKind::Uprobe => VerdictSet::ZeroNonZero,
        }
    }

    /// Bucket names, in counter order; the last bucket takes every other value.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            VerdictSet::Xdp => &["aborted", "drop", "pass", "tx", "redirect", "other"],
            VerdictSet::Tc => &[
                "unspec",
                "ok",
                "reclassify",
                "shot",
                "pipe",
                "stolen",
                "queued",
                "repeat",
                "redirect",
                "trap",
                "other",
            ],
            VerdictSet::ZeroNonZero => &["zero", "non_zero"],
        }
    }

    /// The bucket of a verdict name.
    pub fn index(self, name: &str) -> Option<usize> {
        self.names().iter().position(|n| *n == name)
    }

    /// Counters by bucket name: `counts`, minus `since` when given (an interval's events).
    pub fn named(
        self,
        counts: &VerdictValue,
        since: Option<&VerdictValue>,
    ) -> std::collections::BTreeMap<String, u64> {
        self.names()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let base = since.map_or(0, |s| s[i]);
                (n.to_string(), counts[i].saturating_sub(base))
            })
            .collect()
    }

    /// Added to the 32-bit return value to get its bucket (TC starts at -1).
    fn bias(self) -> i32 {
        match self {
            VerdictSet::Tc => 1,
            VerdictSet::Xdp | VerdictSet::ZeroNonZero => 0,
        }
    }
}

/// Why a version was not instrumented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotInstrumented {
    #[error("the object is not a little-endian ELF64 file with sane section headers")]
    Malformed,
    #[error("program {0} is not a function symbol of the object")]
    NoSuchFunction(String),
    #[error(
        "program {0} is not the last function of its section: the epilogue would move the next one"
    )]
    NotLastInSection(String),
    #[error("program {0} has no exit instruction")]
    NoExit(String),
    #[error("an exit at instruction {pc} is too far from the epilogue for a jump ({distance})")]
    OutOfRange { pc: usize, distance: usize },
    #[error("the object already has a symbol named {VERDICT_MAP}")]
    NameTaken,
}

/// What the rewrite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    /// Exits turned into jumps to the epilogue.
    pub exits: usize,
    /// Instructions added (the epilogue).
    pub added_instructions: usize,
}

/// The epilogue: count `r0`'s bucket in `counters` (per-CPU array, key 0, [`VerdictValue`])
/// and return `r0`.
pub fn epilogue(set: VerdictSet, counters_fd: i32) -> Vec<u64> {
    let last = set.names().len() as i32 - 1;
    let mut a = Asm::default();
    a.alu64_reg(Op::Mov, Reg::R6, Reg::R0)
        .store_imm(Size::W, Reg::R10, -4, 0)
        .load_map_fd(Reg::R1, counters_fd)
        .alu64_reg(Op::Mov, Reg::R2, Reg::R10)
        .alu64_imm(Op::Add, Reg::R2, -4)
        .call(1) // bpf_map_lookup_elem
        .jump_imm(Cond::Eq, Reg::R0, 0, "out")
        .alu32_reg(Op::Mov, Reg::R1, Reg::R6);
    if set.bias() != 0 {
        a.alu32_imm(Op::Add, Reg::R1, set.bias());
    }
    a.jump_imm(Cond::Gt, Reg::R1, last, "other")
        .goto("count")
        .label("other")
        .alu64_imm(Op::Mov, Reg::R1, last)
        .label("count")
        .alu64_imm(Op::Lsh, Reg::R1, 3)
        .alu64_reg(Op::Add, Reg::R0, Reg::R1)
        .load(Size::DW, Reg::R1, Reg::R0, 0)
        .alu64_imm(Op::Add, Reg::R1, 1)
        .store_reg(Size::DW, Reg::R0, 0, Reg::R1)
        .label("out")
        .alu64_reg(Op::Mov, Reg::R0, Reg::R6)
        .exit();
    a.assemble()
}

const EXIT: u8 = 0x95;
const JA: u8 = 0x05;
const LD_IMM64: u8 = 0x18;

/// Replaces every `exit` of `insns` (one function) with a jump to `epilogue`, appended after
/// it. Nothing else moves: jumps, calls and per-instruction metadata keep their offsets.
pub fn rewrite_exits(
    insns: &[u64],
    epilogue: &[u64],
) -> Result<(Vec<u64>, usize), NotInstrumented> {
    let end = insns.len();
    let mut out = insns.to_vec();
    let mut exits = 0;
    let mut pc = 0;
    while pc < end {
        let code = insns[pc].to_le_bytes()[0];
        if code == EXIT {
            let distance = end - pc - 1;
            let off = i16::try_from(distance)
                .map_err(|_| NotInstrumented::OutOfRange { pc, distance })?;
            let mut b = [0u8; 8];
            b[0] = JA;
            b[2..4].copy_from_slice(&off.to_le_bytes());
            out[pc] = u64::from_le_bytes(b);
            exits += 1;
        }
        // A 64-bit immediate load takes two slots.
        pc += if code == LD_IMM64 { 2 } else { 1 };
    }
    if exits == 0 {
        return Err(NotInstrumented::NoExit(String::new()));
    }
    out.extend_from_slice(epilogue);
    Ok((out, exits))
}

struct Section {
    header: usize,
    offset: usize,
    size: usize,
}

fn section(elf: &[u8], shoff: usize, shentsize: usize, i: usize) -> Option<Section> {
    let header = shoff.checked_add(i.checked_mul(shentsize)?)?;
    Some(Section {
        header,
        offset: u64_at(elf, header + 0x18)? as usize,
        size: u64_at(elf, header + 0x20)? as usize,
    })
}

/// Instruments `program` in a private copy of `elf` with `epilogue`.
pub fn instrument_elf(
    elf: &[u8],
    program: &str,
    epilogue: &[u64],
) -> Result<(Vec<u8>, Rewrite), NotInstrumented> {
    let bad = || NotInstrumented::Malformed;
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(bad());
    }
    let shoff = u64_at(elf, 0x28).ok_or_else(bad)? as usize;
    let shentsize = u16_at(elf, 0x3a).ok_or_else(bad)? as usize;
    let shnum = u16_at(elf, 0x3c).ok_or_else(bad)? as usize;
    if shentsize < 0x40 {
        return Err(bad());
    }
    let symtab = (0..shnum)
        .find(|i| {
            section(elf, shoff, shentsize, *i)
                .and_then(|s| u32_at(elf, s.header + 4))
                .is_some_and(|t| t == 2) // SHT_SYMTAB
        })
        .and_then(|i| section(elf, shoff, shentsize, i))
        .ok_or_else(bad)?;
    let strtab_index = u32_at(elf, symtab.header + 0x28).ok_or_else(bad)? as usize;
    let strtab = section(elf, shoff, shentsize, strtab_index).ok_or_else(bad)?;
    let strings = elf
        .get(strtab.offset..strtab.offset.checked_add(strtab.size).ok_or_else(bad)?)
        .ok_or_else(bad)?;
    // Find the program's function symbol, and refuse a symbol named like our map.
    let mut found = None;
    for entry in (0..symtab.size / 24).map(|k| symtab.offset + k * 24) {
        let name = name_at(strings, u32_at(elf, entry).ok_or_else(bad)?).unwrap_or("");
        if name == VERDICT_MAP {
            return Err(NotInstrumented::NameTaken);
        }
        let info = *elf.get(entry + 4).ok_or_else(bad)?;
        if name == program && info & 0xf == 2 {
            found = Some(entry); // STT_FUNC
        }
    }
    let sym = found.ok_or_else(|| NotInstrumented::NoSuchFunction(program.into()))?;
    let shndx = u16_at(elf, sym + 6).ok_or_else(bad)? as usize;
    let value = u64_at(elf, sym + 8).ok_or_else(bad)? as usize;
    let size = u64_at(elf, sym + 16).ok_or_else(bad)? as usize;
    let text = section(elf, shoff, shentsize, shndx).ok_or_else(bad)?;
    if value.checked_add(size) != Some(text.size) {
        return Err(NotInstrumented::NotLastInSection(program.into()));
    }
    let data = elf
        .get(text.offset..text.offset.checked_add(text.size).ok_or_else(bad)?)
        .ok_or_else(bad)?;
    if !size.is_multiple_of(8) || !value.is_multiple_of(8) {
        return Err(bad());
    }
    let insns: Vec<u64> = data[value..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let (rewritten, exits) = rewrite_exits(&insns, epilogue).map_err(|e| match e {
        NotInstrumented::NoExit(_) => NotInstrumented::NoExit(program.into()),
        other => other,
    })?;
    let mut out = elf.to_vec();
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let new_offset = out.len();
    out.extend_from_slice(&data[..value]);
    for i in &rewritten {
        out.extend_from_slice(&i.to_le_bytes());
    }
    let new_size = out.len() - new_offset;
    let new_sym_size = (size + epilogue.len() * 8) as u64;
    out[text.header + 0x18..text.header + 0x20].copy_from_slice(&(new_offset as u64).to_le_bytes());
    out[text.header + 0x20..text.header + 0x28].copy_from_slice(&(new_size as u64).to_le_bytes());
    out[sym + 16..sym + 24].copy_from_slice(&new_sym_size.to_le_bytes());
    Ok((
        out,
        Rewrite {
            exits,
            added_instructions: epilogue.len(),
        },
    ))
}

/// How a version's verdicts are counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "path", rename_all = "snake_case")]
pub enum VerdictCounting {
    /// Exits rewritten at load; the counters are the version's `bpfship_verdict` map.
    Instrumented(Rewrite),
    /// Loaded unmodified: no verdict counts for this version.
    Unmodified { reason: String },
}

/// A version's verdict counters.
#[derive(Debug)]
pub struct VerdictMap(PerCpuArray<VerdictValue>);

impl VerdictMap {
    /// Creates the counters of a version about to be loaded.
    pub(crate) fn create() -> Result<Self, KernelError> {
        Ok(VerdictMap(PerCpuArray::create(VERDICT_MAP, 2)?))
    }

    pub(crate) fn fd(&self) -> i32 {
        self.0.map().as_raw_fd()
    }

    /// Records the rewrite in the map itself, so an agent that adopts the pinned version after a
    /// restart can still say what was done.
    pub(crate) fn record(&self, r: &Rewrite) -> Result<(), KernelError> {
        let mut v = [0u64; SLOTS];
        v[0] = r.exits as u64;
        v[1] = r.added_instructions as u64;
        self.0.set_all(EXITS_SLOT, &v)
    }

    /// The counters of `prog`, when it was instrumented.
    pub fn of(prog: &ProgramFd) -> Result<Option<Self>, KernelError> {
        match prog.map_named(VERDICT_MAP)? {
            None => Ok(None),
            Some(m) => Ok(Some(VerdictMap(
                PerCpuArray::new(m).map_err(|e: MapShapeError| KernelError::MapShape(e))?,
            ))),
        }
    }

    /// What the rewrite did, as recorded at load.
    pub fn rewrite(&self) -> Result<Rewrite, KernelError> {
        let v = self.0.get(EXITS_SLOT)?;
        let first = v.first().copied().unwrap_or_default();
        Ok(Rewrite {
            exits: first[0] as usize,
            added_instructions: first[1] as usize,
        })
    }

    /// Events per verdict bucket so far, summed over CPUs.
    pub fn counts(&self) -> Result<VerdictValue, KernelError> {
        let mut out = [0u64; SLOTS];
        for cpu in self.0.get(0)? {
            for (o, c) in out.iter_mut().zip(cpu) {
                *o += c;
            }
        }
        Ok(out)
    }
}

/// Whether `fexit` programs (the other way to see verdicts, as xdp-tools' xdpdump does) load
/// on this kernel: tries a minimal one on `bpf_fentry_test1` and reports the refusal.
pub fn fexit_available() -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))?;
    let id = btf
        .id_by_type_name_kind("bpf_fentry_test1", aya_obj::btf::BtfKind::Func)
        .map_err(|e| format!("no bpf_fentry_test1 in the kernel BTF: {e}"))?;
    let mut a = Asm::default();
    a.alu64_imm(Op::Mov, Reg::R0, 0).exit();
    sys::prog_load_tracing(&a.assemble(), id, "bpfship_fexit")
        .map(drop)
        .map_err(|e| format!("fexit programs do not load here: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, off: i16, imm: i32) -> u64 {
        let mut b = [0u8; 8];
        b[0] = code;
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        u64::from_le_bytes(b)
    }

    fn code(i: u64) -> u8 {
        i.to_le_bytes()[0]
    }

    fn off(i: u64) -> i16 {
        i16::from_le_bytes([i.to_le_bytes()[2], i.to_le_bytes()[3]])
    }

    /// r0 = 1; if r1 == 0 goto +2; exit; call +3 (subprogram); r0 = 2; exit
    #[test]
    fn exits_jump_to_the_epilogue_and_nothing_else_moves() {
        let prog = vec![
            insn(0xb7, 0, 1),     // 0: r0 = 1
            insn(0x15, 2, 0),     // 1: if r1 == 0 goto 4 (across the exit at 2)
            insn(EXIT, 0, 0),     // 2
            insn(0x85, 0, 3),     // 3: pc-relative call (src_reg would be 1)
            insn(LD_IMM64, 0, 7), // 4: ld_imm64, two slots
            insn(0, 0, EXIT as i32),
            insn(0xb7, 0, 2), // 6
            insn(EXIT, 0, 0), // 7
        ];
        let ep = epilogue(VerdictSet::Xdp, 42);
        let (out, exits) = rewrite_exits(&prog, &ep).unwrap();
        assert_eq!(exits, 2);
        assert_eq!(out.len(), prog.len() + ep.len());
        // Each exit became `ja` to the first epilogue instruction (index 8).
        assert_eq!((code(out[2]), 2 + 1 + off(out[2]) as usize), (JA, 8));
        assert_eq!((code(out[7]), 7 + 1 + off(out[7]) as usize), (JA, 8));
        // Jumps across the rewritten exit, calls and the second slot of ld_imm64 are intact.
        for i in [0, 1, 3, 4, 5, 6] {
            assert_eq!(out[i], prog[i], "instruction {i}");
        }
        assert_eq!(&out[8..], &ep[..]);
        // Only the epilogue's own exit remains.
        assert_eq!(out.iter().filter(|i| code(**i) == EXIT).count(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_rewrite() {
        let ep = epilogue(VerdictSet::Tc, 3);
        assert!(matches!(
            rewrite_exits(&[insn(0xb7, 0, 0)], &ep),
            Err(NotInstrumented::NoExit(_))
        ));
        let mut far = vec![insn(EXIT, 0, 0)];
        far.resize(40_000, insn(0xb7, 0, 0));
        assert_eq!(
            rewrite_exits(&far, &ep),
            Err(NotInstrumented::OutOfRange {
                pc: 0,
                distance: 39_999
            })
        );
        assert_eq!(
            instrument_elf(b"not an elf", "x", &ep),
            Err(NotInstrumented::Malformed)
        );
    }

    #[test]
    fn buckets_name_each_hook_verdict() {
        assert_eq!(VerdictSet::Xdp.index("tx"), Some(3));
        assert_eq!(VerdictSet::Tc.index("shot"), Some(3)); // TC_ACT_SHOT = 2, biased by 1
        assert_eq!(VerdictSet::ZeroNonZero.names().len(), 2);
        for set in [VerdictSet::Xdp, VerdictSet::Tc, VerdictSet::ZeroNonZero] {
            assert!(set.names().len() <= SLOTS);
        }
    }

    #[test]
    fn named_counts_are_an_interval_when_asked() {
        let mut then = [0u64; SLOTS];
        let mut now = [0u64; SLOTS];
        (then[1], now[1], now[2]) = (5, 12, 3);
        let all = VerdictSet::Xdp.named(&now, None);
        assert_eq!((all["drop"], all["pass"], all.len()), (12, 3, 6));
        let interval = VerdictSet::Xdp.named(&now, Some(&then));
        assert_eq!((interval["drop"], interval["aborted"]), (7, 0));
    }
}
