//! The call graph of an object's code: which instructions a program can reach. A program's
//! helpers and instruction count are those of every function it can call, directly or not:
//! pc-relative calls within a section (no relocation: static functions placed in the program's
//! own section), relocated calls into `.text` (static functions through the section symbol, global
//! functions through their own), and function addresses taken for callbacks (`bpf_loop`…).
//! Functions are delimited as the loaders delimit them (by their `STT_FUNC` symbols); a call into
//! code no symbol covers takes the code up to the next function or the section's end.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use object::elf;

use super::{Section, Symbol, helpers};

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_LD | BPF_IMM | BPF_DW`: a 16-byte instruction.
const LD_IMM64: u8 = 0x18;
/// `src_reg` of a call to a helper, a bpf-to-bpf call, a kfunc call.
const HELPER: u8 = 0;
const PSEUDO_CALL: u8 = 1;
const KFUNC: u8 = 2;
/// `src_reg` of an `ld_imm64` loading a function's address.
const PSEUDO_FUNC: u8 = 4;
/// Bound on the functions one program may reach (the kernel allows 256 subprograms).
const MAX_FUNCTIONS: usize = 4096;

/// One function: a range of instruction slots in a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Function {
    section: usize,
    start: u64,
    end: u64,
}

/// What a program can reach.
#[derive(Debug, Default)]
pub(super) struct Reach {
    /// Helpers called, by name (`bpf_map_lookup_elem`…).
    pub helpers: BTreeSet<String>,
    /// Helper ids this validator has no name for.
    pub unknown_helper_ids: BTreeSet<i32>,
    pub kfunc_calls: u64,
    /// Instruction slots of every reachable function, each counted once.
    pub instructions: u64,
    /// Calls whose target is no code: described, for an error.
    pub bad_calls: Vec<String>,
}

/// The code of every executable section, with its call relocations and function symbols.
pub(super) struct CallGraph<'a> {
    sections: &'a [Section<'a>],
    symbols: &'a [Symbol<'a>],
    /// Per section index: relocation offset → symbol index.
    relocations: &'a HashMap<usize, BTreeMap<u64, usize>>,
    /// Per executable section index: its functions' ranges from their symbols.
    functions: HashMap<usize, Vec<(u64, u64)>>,
}

/// True for a section holding code.
pub(super) fn is_code(s: &Section) -> bool {
    s.sh_type == elf::SHT_PROGBITS && s.flags & u64::from(elf::SHF_EXECINSTR) != 0
}

impl<'a> CallGraph<'a> {
    pub(super) fn new(
        sections: &'a [Section<'a>],
        symbols: &'a [Symbol<'a>],
        relocations: &'a HashMap<usize, BTreeMap<u64, usize>>,
    ) -> Self {
        let mut functions: HashMap<usize, Vec<(u64, u64)>> = HashMap::new();
        for sym in symbols.iter().filter(|s| s.kind == elf::STT_FUNC) {
            if sections.get(sym.shndx).is_some_and(is_code) {
                let start = sym.value / 8;
                let end = start.saturating_add(sym.size.div_ceil(8));
                functions.entry(sym.shndx).or_default().push((start, end));
            }
        }
        for list in functions.values_mut() {
            list.sort_unstable();
        }
        Self {
            sections,
            symbols,
            relocations,
            functions,
        }
    }

    fn slots(&self, section: usize) -> u64 {
        self.sections
            .get(section)
            .map_or(0, |s| s.data.len() as u64 / 8)
    }

    /// The function holding instruction slot `at` of `section`: the symbol covering it, or the
    /// code from `at` to the next function start (or the section's end).
    fn function_at(&self, section: usize, at: u64) -> Option<Function> {
        let slots = self.slots(section);
        if at >= slots {
            return None;
        }
        let list = self
            .functions
            .get(&section)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if let Some(&(start, end)) = list
            .iter()
            .rev()
            .find(|&&(start, end)| start <= at && at < end)
        {
            return Some(Function {
                section,
                start,
                end: end.min(slots),
            });
        }
        let end = list
            .iter()
            .map(|&(start, _)| start)
            .find(|&start| start > at)
            .unwrap_or(slots);
        Some(Function {
            section,
            start: at,
            end,
        })
    }

    /// Everything reachable from the function at `start` (a slot index) in `section`.
    pub(super) fn reach(&self, section: usize, start: u64) -> Reach {
        let mut out = Reach::default();
        let mut seen = BTreeSet::new();
        let mut queue: Vec<Function> = self.function_at(section, start).into_iter().collect();
        while let Some(f) = queue.pop() {
            if !seen.insert(f) {
                continue;
            }
            if seen.len() > MAX_FUNCTIONS {
                out.bad_calls
                    .push(format!("more than {MAX_FUNCTIONS} reachable functions"));
                break;
            }
            out.instructions += f.end - f.start;
            let code = &self.sections[f.section].data;
            let mut slot = f.start;
            while slot < f.end {
                let Some(insn) = code.get(slot as usize * 8..slot as usize * 8 + 8) else {
                    break;
                };
                let opcode = insn[0];
                let src_reg = insn[1] >> 4;
                let imm = i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]));
                let target = match (opcode, src_reg) {
                    (CALL, HELPER) => {
                        match usize::try_from(imm)
                            .ok()
                            .filter(|&i| i > 0)
                            .and_then(|i| helpers::HELPER_NAMES.get(i))
                        {
                            Some(name) => {
                                out.helpers.insert(format!("bpf_{name}"));
                            }
                            None => {
                                out.unknown_helper_ids.insert(imm as i32);
                            }
                        }
                        None
                    }
                    (CALL, KFUNC) => {
                        out.kfunc_calls += 1;
                        None
                    }
                    (CALL, PSEUDO_CALL) => Some(self.call_target(f.section, slot, imm, true)),
                    (LD_IMM64, PSEUDO_FUNC) => Some(self.call_target(f.section, slot, imm, false)),
                    _ => None,
                };
                match target {
                    Some(Target::Code(section, at)) => match self.function_at(section, at) {
                        Some(callee) => queue.push(callee),
                        None => out.bad_calls.push(self.describe(f.section, slot)),
                    },
                    Some(Target::Extern) => out.kfunc_calls += 1,
                    Some(Target::Nowhere) => out.bad_calls.push(self.describe(f.section, slot)),
                    None => {}
                }
                slot += if opcode == LD_IMM64 { 2 } else { 1 };
            }
        }
        out
    }

    /// Where the call (or function address load) at `slot` of `section` leads, as libbpf and aya
    /// resolve it: through its relocation's symbol, else relative to the next instruction.
    fn call_target(&self, section: usize, slot: u64, imm: i64, is_call: bool) -> Target {
        let reloc = self
            .relocations
            .get(&section)
            .and_then(|r| r.get(&(slot * 8)))
            .and_then(|&i| self.symbols.get(i));
        let at = match reloc {
            Some(sym) if sym.shndx == elf::SHN_UNDEF as usize => return Target::Extern,
            Some(sym) if !self.sections.get(sym.shndx).is_some_and(is_code) => {
                return Target::Nowhere;
            }
            Some(sym) => {
                let base = i64::try_from(sym.value).unwrap_or(i64::MAX);
                let at = if is_call {
                    (base / 8).checked_add(imm + 1)
                } else {
                    base.checked_add(imm).map(|b| b / 8)
                };
                return match at.and_then(|a| u64::try_from(a).ok()) {
                    Some(a) => Target::Code(sym.shndx, a),
                    None => Target::Nowhere,
                };
            }
            None => i64::try_from(slot)
                .ok()
                .and_then(|s| s.checked_add(imm + 1)),
        };
        match at.and_then(|a| u64::try_from(a).ok()) {
            Some(a) => Target::Code(section, a),
            None => Target::Nowhere,
        }
    }

    fn describe(&self, section: usize, slot: u64) -> String {
        format!(
            "the call at instruction {slot} of section {} leads to no code",
            self.sections[section].name
        )
    }
}

/// A call's destination.
enum Target {
    /// Instruction slot in a code section.
    Code(usize, u64),
    /// An undefined symbol: a kernel function (kfunc) the loader resolves.
    Extern,
    /// No code: out of range, or a symbol in a data section.
    Nowhere,
}
