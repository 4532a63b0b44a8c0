//! eBPF ELF inspection and validation: what an object holds (programs, their types, instruction
//! counts and helpers; maps; license; BTF and CO-RE) and what is wrong with it, reported per
//! section so one bad section never hides the others.
//!
//! Parsing is our own, bounds-checked, over the `object` crate's ELF reader: `aya-obj` panics and
//! can abort on malformed input (DESIGN §8), so untrusted bytes never reach it from here.

mod btf;
mod calls;
mod helpers;
mod sections;

use std::collections::{BTreeMap, HashMap};

use object::LittleEndian as LE;
use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader as _, SectionHeader as _, Sym as _};
use serde::Serialize;

use crate::digest::{ReportDigest, sha256_digest};
use crate::policy::{EbpfRules, Violation};
pub use btf::map_type_name;
pub use sections::{SectionDef, aya_section_name, classify as classify_section};

/// Helpers the kernel only lets GPL-compatible programs call (`gpl_only = true` in the kernel's
/// helper prototypes), the ones commonly met in practice.
pub const GPL_ONLY_HELPERS: &[&str] = &[
    "probe_read",
    "probe_read_str",
    "probe_read_user",
    "probe_read_user_str",
    "probe_read_kernel",
    "probe_read_kernel_str",
    "probe_write_user",
    "trace_printk",
    "trace_vprintk",
    "override_return",
    "send_signal",
    "send_signal_thread",
    "perf_event_output",
    "perf_event_read",
    "perf_event_read_value",
    "get_stackid",
    "get_stack",
    "get_task_stack",
    "skb_output",
    "xdp_output",
    "get_current_task",
    "get_current_task_btf",
    "current_task_under_cgroup",
    "probe_read_kernel",
    "d_path",
    "copy_from_user",
    "copy_from_user_task",
    "snprintf_btf",
    "seq_printf_btf",
    "find_vma",
    "get_func_ip",
    "get_attach_cookie",
    "task_pt_regs",
];

/// Licenses the kernel treats as GPL-compatible (`license_is_gpl_compatible`).
const GPL_COMPATIBLE_LICENSES: &[&str] = &[
    "GPL",
    "GPL v2",
    "GPL and additional rights",
    "Dual BSD/GPL",
    "Dual MIT/GPL",
    "Dual MPL/GPL",
];

/// `.bss`/`.data` larger than this is refused: the kernel caps map values far lower, and aya
/// aborts allocating forged sizes.
const MAX_GLOBAL_DATA_BYTES: u64 = 512 * 1024 * 1024;

/// Why a file is not a usable eBPF object at all (as opposed to findings in the report).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EbpfError {
    #[error("not an ELF file")]
    NotElf,
    #[error(
        "wrong endianness: big-endian eBPF object (built with -target bpfeb); this host loads little-endian (bpfel) objects"
    )]
    WrongEndianness,
    #[error("not a 64-bit ELF object (eBPF objects are ELF64)")]
    Not64Bit,
    #[error("not an eBPF object: ELF machine {0} (expected EM_BPF = 247)")]
    NotBpf(u16),
    #[error("malformed ELF: {0}")]
    Malformed(String),
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Hint,
    Warning,
    Error,
}

/// One finding, tied to a section when it concerns one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    pub message: String,
}

/// One program (a global function in a program section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramInfo {
    pub name: String,
    pub section: String,
    /// Kernel program type (`xdp`, `sched_cls`, `tracepoint`…), `None` for unknown sections.
    pub program_type: Option<String>,
    /// Attach target named by the section (`syscalls/sys_enter_getpid`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach_target: Option<String>,
    /// Instruction slots, including every function it can call, directly or not (what the
    /// loader hands the kernel).
    pub instructions: u64,
    /// Helpers called by it or any function it can reach, by name (`bpf_map_lookup_elem`…),
    /// sorted.
    pub helpers: Vec<String>,
    /// Helper ids it can call that this validator has no name for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_helper_ids: Vec<i32>,
    /// The subset of `helpers` that needs a GPL-compatible license.
    pub gpl_only_helpers: Vec<String>,
    /// Calls to kernel functions (kfuncs).
    pub kfunc_calls: u64,
}

/// One map definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapInfo {
    pub name: String,
    pub map_type: String,
    pub key_size: Option<u32>,
    pub value_size: Option<u32>,
    pub max_entries: Option<u32>,
    pub map_flags: Option<u32>,
    /// `none` or `by_name` (libbpf `LIBBPF_PIN_BY_NAME`).
    pub pinning: String,
    /// Where it was declared: `btf` (`.maps`), `legacy` (`maps`), or `global_data` (`.bss`…).
    pub declared_in: String,
}

/// Everything the validator found in an eBPF object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EbpfReport {
    pub elf_sha256: String,
    pub license: Option<String>,
    pub gpl_compatible: bool,
    pub btf: bool,
    pub btf_ext: bool,
    pub core_relocations: u64,
    pub programs: Vec<ProgramInfo>,
    pub maps: Vec<MapInfo>,
    pub diagnostics: Vec<Diagnostic>,
}

impl EbpfReport {
    /// True when no finding is an error.
    pub fn is_valid(&self) -> bool {
        !self
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    fn push(&mut self, severity: Severity, section: Option<&str>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            severity,
            section: section.map(str::to_owned),
            message: message.into(),
        });
    }
}

/// A section as the inspector sees it.
struct Section<'a> {
    index: usize,
    name: &'a str,
    sh_type: u32,
    flags: u64,
    size: u64,
    data: &'a [u8],
}

/// A symbol: name, section index, value, size, type.
struct Symbol<'a> {
    name: &'a str,
    shndx: usize,
    value: u64,
    size: u64,
    kind: u8,
    global: bool,
}

/// Inspects an eBPF ELF object. `Err` when the file is not a usable eBPF object at all; every
/// other problem is a diagnostic in the report.
pub fn inspect(bytes: &[u8]) -> Result<EbpfReport, EbpfError> {
    inspect_with(bytes, ReportDigest::Compute)
}

/// [`inspect`], with the report's `elf_sha256` computed or left empty.
pub fn inspect_with(bytes: &[u8], digest: ReportDigest) -> Result<EbpfReport, EbpfError> {
    if bytes.len() < 16 || &bytes[..4] != b"\x7fELF" {
        return Err(EbpfError::NotElf);
    }
    if bytes[5] == elf::ELFDATA2MSB {
        return Err(EbpfError::WrongEndianness);
    }
    if bytes[4] != elf::ELFCLASS64 {
        return Err(EbpfError::Not64Bit);
    }
    let e = LE;
    let header =
        FileHeader64::<LE>::parse(bytes).map_err(|err| EbpfError::Malformed(err.to_string()))?;
    let machine = header.e_machine(e);
    if machine != elf::EM_BPF {
        return Err(EbpfError::NotBpf(machine));
    }
    let table = header
        .sections(e, bytes)
        .map_err(|err| EbpfError::Malformed(format!("section table: {err}")))?;

    let mut report = EbpfReport {
        elf_sha256: match digest {
            ReportDigest::Compute => sha256_digest(bytes),
            ReportDigest::Skip => String::new(),
        },
        license: None,
        gpl_compatible: false,
        btf: false,
        btf_ext: false,
        core_relocations: 0,
        programs: Vec::new(),
        maps: Vec::new(),
        diagnostics: Vec::new(),
    };
    if header.e_type(e) != elf::ET_REL {
        report.push(
            Severity::Error,
            None,
            format!("ELF type {} is not a relocatable object (ET_REL); eBPF objects come from `clang -c`", header.e_type(e)),
        );
    }

    let mut sections = Vec::new();
    // Per section index: relocation offset → symbol index.
    let mut relocations: HashMap<usize, BTreeMap<u64, usize>> = HashMap::new();
    for (index, sh) in table.iter().enumerate() {
        let name = table
            .section_name(e, sh)
            .ok()
            .and_then(|n| std::str::from_utf8(n).ok())
            .unwrap_or("");
        let sh_type = sh.sh_type(e);
        let size = sh.sh_size(e);
        let data = if sh_type == elf::SHT_NOBITS {
            &[][..]
        } else {
            match sh.data(e, bytes) {
                Ok(d) => d,
                Err(_) => {
                    report.push(
                        Severity::Error,
                        Some(name),
                        format!(
                            "section data out of the file (offset {:#x}, size {size})",
                            sh.sh_offset(e)
                        ),
                    );
                    &[][..]
                }
            }
        };
        match sh.rel(e, bytes) {
            Ok(Some((rels, _))) => {
                let target = relocations.entry(sh.sh_info(e) as usize).or_default();
                for r in rels {
                    target.insert(r.r_offset.get(e), r.r_sym(e) as usize);
                }
            }
            Ok(None) => {}
            Err(err) => report.push(
                Severity::Error,
                Some(name),
                format!("unreadable relocations: {err}"),
            ),
        }
        sections.push(Section {
            index,
            name,
            sh_type,
            flags: sh.sh_flags(e),
            size,
            data,
        });
    }

    let mut symbols = Vec::new();
    match table.symbols(e, bytes, elf::SHT_SYMTAB) {
        Ok(symtab) => {
            for sym in symtab.iter() {
                let name = symtab
                    .symbol_name(e, sym)
                    .ok()
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .unwrap_or("");
                symbols.push(Symbol {
                    name,
                    shndx: sym.st_shndx(e) as usize,
                    value: sym.st_value(e),
                    size: sym.st_size(e),
                    kind: sym.st_type(),
                    global: sym.st_bind() != elf::STB_LOCAL,
                });
            }
        }
        Err(err) => report.push(Severity::Error, None, format!("symbol table: {err}")),
    }

    check_license(&sections, &mut report);
    check_btf(&sections, &mut report);
    collect_maps(&sections, &symbols, &mut report);
    collect_programs(&sections, &symbols, &relocations, &mut report);
    check_gpl_helpers(&mut report);
    Ok(report)
}

fn check_license(sections: &[Section], report: &mut EbpfReport) {
    match sections.iter().find(|s| s.name == "license") {
        None => report.push(
            Severity::Error,
            None,
            "no license section: declare one with `char LICENSE[] SEC(\"license\") = \"GPL\";` (the kernel needs it; it is never assumed)",
        ),
        Some(s) => {
            let end = s.data.iter().position(|&b| b == 0).unwrap_or(s.data.len());
            match std::str::from_utf8(&s.data[..end]) {
                Ok(l) => {
                    report.license = Some(l.to_owned());
                    report.gpl_compatible = GPL_COMPATIBLE_LICENSES.contains(&l);
                }
                Err(_) => report.push(Severity::Error, Some("license"), "license is not UTF-8 text"),
            }
        }
    }
}

fn check_btf(sections: &[Section], report: &mut EbpfReport) {
    match sections.iter().find(|s| s.name == ".BTF") {
        Some(s) => {
            report.btf = true;
            if let Err(err) = btf::Btf::parse(s.data) {
                report.push(Severity::Error, Some(".BTF"), format!("unreadable BTF: {err}"));
            }
        }
        None => report.push(
            Severity::Hint,
            None,
            "no BTF: compile with -g to get BTF (needed for CO-RE, BTF-defined maps and readable verifier logs)",
        ),
    }
    if let Some(s) = sections.iter().find(|s| s.name == ".BTF.ext") {
        report.btf_ext = true;
        match btf::core_relocation_count(s.data) {
            Ok(n) => report.core_relocations = n,
            Err(err) => report.push(
                Severity::Error,
                Some(".BTF.ext"),
                format!("unreadable BTF.ext: {err}"),
            ),
        }
    }
}

fn collect_maps(sections: &[Section], symbols: &[Symbol], report: &mut EbpfReport) {
    if let Some(maps_sec) = sections.iter().find(|s| s.name == ".maps") {
        let defs = sections
            .iter()
            .find(|s| s.name == ".BTF")
            .and_then(|s| btf::Btf::parse(s.data).ok())
            .map(|b| b.map_defs())
            .unwrap_or_default();
        if defs.is_empty() {
            report.push(
                Severity::Error,
                Some(".maps"),
                "BTF-defined maps without readable BTF: compile with -g",
            );
        }
        for (name, def) in defs {
            if !symbols
                .iter()
                .any(|s| s.shndx == maps_sec.index && s.name == name)
            {
                report.push(
                    Severity::Warning,
                    Some(".maps"),
                    format!("map {name} has BTF but no symbol"),
                );
            }
            let Some(map_type) = def.map_type else {
                report.push(
                    Severity::Error,
                    Some(".maps"),
                    format!("map {name} declares no type"),
                );
                continue;
            };
            report.maps.push(MapInfo {
                name,
                map_type: btf::map_type_name(map_type).to_owned(),
                key_size: def.key_size,
                value_size: def.value_size,
                max_entries: def.max_entries,
                map_flags: def.map_flags,
                pinning: pinning_name(def.pinning.unwrap_or(0)),
                declared_in: "btf".into(),
            });
        }
    }
    if let Some(legacy) = sections.iter().find(|s| s.name == "maps") {
        for sym in symbols
            .iter()
            .filter(|s| s.shndx == legacy.index && !s.name.is_empty())
        {
            let field = |i: u64| -> Option<u32> {
                let off = usize::try_from(sym.value.checked_add(i * 4)?).ok()?;
                legacy
                    .data
                    .get(off..off + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            };
            let (Some(t), Some(k), Some(v), Some(m)) = (field(0), field(1), field(2), field(3))
            else {
                report.push(
                    Severity::Error,
                    Some("maps"),
                    format!("legacy map {} lies outside the maps section", sym.name),
                );
                continue;
            };
            report.maps.push(MapInfo {
                name: sym.name.to_owned(),
                map_type: btf::map_type_name(t).to_owned(),
                key_size: Some(k),
                value_size: Some(v),
                max_entries: Some(m),
                map_flags: field(4),
                pinning: pinning_name(field(6).unwrap_or(0)),
                declared_in: "legacy".into(),
            });
        }
    }
    for s in sections.iter().filter(|s| {
        [".bss", ".data", ".rodata"].contains(&s.name)
            || s.name.starts_with(".data.")
            || s.name.starts_with(".rodata.")
    }) {
        if s.size > MAX_GLOBAL_DATA_BYTES {
            report.push(
                Severity::Error,
                Some(s.name),
                format!("global data section of {} bytes is larger than any map value the kernel allows", s.size),
            );
            continue;
        }
        if s.size == 0 {
            continue;
        }
        report.maps.push(MapInfo {
            name: s.name.to_owned(),
            map_type: "array".into(),
            key_size: Some(4),
            value_size: u32::try_from(s.size).ok(),
            max_entries: Some(1),
            map_flags: None,
            pinning: "none".into(),
            declared_in: "global_data".into(),
        });
    }
}

fn pinning_name(p: u32) -> String {
    match p {
        0 => "none".into(),
        1 => "by_name".into(),
        n => format!("unknown({n})"),
    }
}

fn collect_programs(
    sections: &[Section],
    symbols: &[Symbol],
    relocations: &HashMap<usize, BTreeMap<u64, usize>>,
    report: &mut EbpfReport,
) {
    let graph = calls::CallGraph::new(sections, symbols, relocations);
    for sec in sections
        .iter()
        .filter(|s| calls::is_code(s) && s.name != ".text")
    {
        let def = sections::classify(sec.name);
        if def.is_none() {
            report.push(
                Severity::Error,
                Some(sec.name),
                format!(
                    "unknown section name \"{}\": no program type (libbpf would refuse it too); use a libbpf name such as xdp, tc, tracepoint/<category>/<name>",
                    sec.name
                ),
            );
        }
        if sec.data.len() % 8 != 0 {
            report.push(
                Severity::Error,
                Some(sec.name),
                format!(
                    "code size {} is not a multiple of the 8-byte instruction size",
                    sec.data.len()
                ),
            );
        }
        // aya loads every named function of a program section as a program, static or not.
        let funcs: Vec<&Symbol> = symbols
            .iter()
            .filter(|s| s.shndx == sec.index && s.kind == elf::STT_FUNC && !s.name.is_empty())
            .collect();
        if !funcs.iter().any(|f| f.global) {
            report.push(
                Severity::Warning,
                Some(sec.name),
                "code section without a global function symbol",
            );
        }
        for f in funcs {
            let inside = usize::try_from(f.value)
                .ok()
                .zip(usize::try_from(f.size).ok())
                .and_then(|(start, len)| sec.data.get(start..start.checked_add(len)?))
                .is_some();
            if !inside || f.value % 8 != 0 {
                report.push(
                    Severity::Error,
                    Some(sec.name),
                    format!(
                        "program {} (offset {}, size {}) lies outside its section or off an instruction boundary",
                        f.name, f.value, f.size
                    ),
                );
                continue;
            }
            if !f.global {
                report.push(
                    Severity::Warning,
                    Some(sec.name),
                    format!(
                        "function {} is static in a program section: aya loads it as a program of its own, libbpf refuses it",
                        f.name
                    ),
                );
            }
            let reach = graph.reach(sec.index, f.value / 8);
            for id in &reach.unknown_helper_ids {
                report.push(
                    Severity::Warning,
                    Some(sec.name),
                    format!(
                        "program {} calls helper id {id}, unknown to this validator",
                        f.name
                    ),
                );
            }
            for bad in &reach.bad_calls {
                report.push(
                    Severity::Error,
                    Some(sec.name),
                    format!("program {}: {bad}", f.name),
                );
            }
            let gpl_only_helpers = reach
                .helpers
                .iter()
                .filter(|h| GPL_ONLY_HELPERS.contains(&h.trim_start_matches("bpf_")))
                .cloned()
                .collect();
            report.programs.push(ProgramInfo {
                name: f.name.to_owned(),
                section: sec.name.to_owned(),
                program_type: def.map(|d| d.program_type.to_owned()),
                attach_target: def.and_then(|d| sections::attach_target(sec.name, d)),
                instructions: reach.instructions,
                helpers: reach.helpers.into_iter().collect(),
                unknown_helper_ids: reach.unknown_helper_ids.into_iter().collect(),
                gpl_only_helpers,
                kfunc_calls: reach.kfunc_calls,
            });
        }
    }
    if report.programs.is_empty() && report.is_valid() {
        report.push(
            Severity::Error,
            None,
            "no programs: the object has no program sections",
        );
    }
}

fn check_gpl_helpers(report: &mut EbpfReport) {
    if report.gpl_compatible || report.license.is_none() {
        return;
    }
    let license = report.license.clone().unwrap_or_default();
    let findings: Vec<(String, String)> = report
        .programs
        .iter()
        .filter(|p| !p.gpl_only_helpers.is_empty())
        .map(|p| (p.section.clone(), format!(
            "program {} calls GPL-only helpers ({}) but the license \"{license}\" is not GPL-compatible",
            p.name,
            p.gpl_only_helpers.join(", ")
        )))
        .collect();
    for (section, message) in findings {
        report.push(Severity::Error, Some(&section), message);
    }
}

/// Checks a report against a policy's eBPF rules.
pub fn check_policy(rules: &EbpfRules, report: &EbpfReport) -> Vec<Violation> {
    let mut out = Vec::new();
    for p in &report.programs {
        let ty = p.program_type.as_deref().unwrap_or("unknown");
        if !rules.allowed_program_types.is_empty()
            && !rules.allowed_program_types.iter().any(|t| t == ty)
        {
            out.push(Violation {
                rule: "ebpf.allowed_program_types".into(),
                message: format!(
                    "program {} (section {}) has type {ty}, which the policy does not allow",
                    p.name, p.section
                ),
            });
        }
        for h in &p.helpers {
            if rules
                .forbidden_helpers
                .iter()
                .any(|f| f == h || format!("bpf_{f}") == *h)
            {
                out.push(Violation {
                    rule: "ebpf.forbidden_helpers".into(),
                    message: format!("program {} calls forbidden helper {h}", p.name),
                });
            }
        }
        if !rules.forbidden_helpers.is_empty() {
            for id in &p.unknown_helper_ids {
                out.push(Violation {
                    rule: "ebpf.forbidden_helpers".into(),
                    message: format!(
                        "program {} calls helper id {id}, unknown to this validator: it cannot be shown not to be forbidden",
                        p.name
                    ),
                });
            }
        }
        if let Some(max) = rules.max_instructions
            && p.instructions > max
        {
            out.push(Violation {
                rule: "ebpf.max_instructions".into(),
                message: format!(
                    "program {} has {} instructions, more than the {max} allowed",
                    p.name, p.instructions
                ),
            });
        }
    }
    if rules.require_btf && !report.btf {
        out.push(Violation {
            rule: "ebpf.require_btf".into(),
            message: "the object has no BTF (compile with -g)".into(),
        });
    }
    out
}

/// A stable digest of the object's map definitions (name, type, sizes, entries, flags, pinning):
/// equal digests mean maps can be carried across versions.
pub fn map_abi_hash(report: &EbpfReport) -> String {
    let mut maps: Vec<_> = report
        .maps
        .iter()
        .map(|m| {
            format!(
                "{}:{}:{:?}:{:?}:{:?}:{:?}:{}",
                m.name, m.map_type, m.key_size, m.value_size, m.max_entries, m.map_flags, m.pinning
            )
        })
        .collect();
    maps.sort();
    sha256_digest(maps.join("\n").as_bytes())
}
