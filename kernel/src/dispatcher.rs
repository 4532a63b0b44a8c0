//! The canary dispatcher: a tiny program attached to the hook that tail-calls the stable
//! (slot 0) or canary (slot 1) version, choosing per event at random or by flow hash, with the
//! canary share in a map the agent updates. Also counts events per slot, and an exception
//! tracker that attributes XDP aborts to the slot that produced them.
//!
//! Maps:
//! * `config` (array, 1 × 16 bytes): canary share in basis points (0..=10000), split mode,
//!   flow-hash salt, id of the program currently attached to the hook.
//! * `slots` (prog array, 2 entries): the versions.
//! * `stats` (per-CPU array, 1 × 40 bytes): runs per slot, aborts per slot, last slot chosen
//!   on this CPU (read by the exception tracker, which runs on the same CPU right after).

use std::os::fd::AsRawFd;
use std::path::Path;

use crate::asm::{Asm, Cond, Op, Reg, Size};
use crate::fd::{MapFd, ProgramFd};
use crate::maps::{Array, PerCpuArray, ProgArray};
use crate::{KernelError, sys};

const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_PRANDOM: i32 = 7;
const HELPER_TAIL_CALL: i32 = 12;
const HELPER_HASH_RECALC: i32 = 34;

/// `stats` value: runs of slot 0 and 1, aborts of slot 0 and 1, last slot chosen.
type StatsValue = [u64; 5];
/// `config` value: canary basis points, split mode, salt, attached program id.
type ConfigValue = [u32; 4];

/// The hook family a dispatcher serves: decides the program type, context layout and the
/// value returned when no version can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    Xdp,
    Tc,
    Tracepoint,
    /// User-space function entry (kprobe-type programs).
    Uprobe,
}

impl HookKind {
    /// The kernel program type of programs at this hook.
    pub fn prog_type(self) -> u32 {
        match self {
            HookKind::Xdp => sys::PROG_TYPE_XDP,
            HookKind::Tc => sys::PROG_TYPE_SCHED_CLS,
            HookKind::Tracepoint => sys::PROG_TYPE_TRACEPOINT,
            HookKind::Uprobe => sys::PROG_TYPE_KPROBE,
        }
    }

    fn expected_attach_type(self) -> u32 {
        match self {
            HookKind::Xdp => sys::ATTACH_XDP,
            HookKind::Tc | HookKind::Tracepoint | HookKind::Uprobe => 0,
        }
    }

    /// Returned when both slots are empty: let the packet through (XDP_PASS, TC_ACT_OK).
    fn fallback_verdict(self) -> i32 {
        match self {
            HookKind::Xdp => 2,
            HookKind::Tc | HookKind::Tracepoint | HookKind::Uprobe => 0,
        }
    }

    /// Whether events carry a flow the dispatcher can hash.
    pub fn has_flows(self) -> bool {
        matches!(self, HookKind::Xdp | HookKind::Tc)
    }
}

/// How the dispatcher picks the slot for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SplitMode {
    /// Per flow (5-tuple hash): a connection always sees the same version.
    #[default]
    FlowHash,
    /// Per event, `bpf_get_prandom_u32`.
    Random,
}

/// Events and aborts per slot, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SlotCounters {
    pub runs: [u64; 2],
    pub aborts: [u64; 2],
}

/// A loaded dispatcher with its maps.
#[derive(Debug)]
pub struct Dispatcher {
    pub kind: HookKind,
    pub prog: ProgramFd,
    pub prog_id: u32,
    config: Array<ConfigValue>,
    slots: ProgArray,
    stats: PerCpuArray<StatsValue>,
    tracker: Option<ProgramFd>,
}

const PIN_PROG: &str = "dispatcher";
const PIN_CONFIG: &str = "dispatch_config";
const PIN_SLOTS: &str = "dispatch_slots";
const PIN_STATS: &str = "dispatch_stats";
const PIN_TRACKER: &str = "abort_tracker";

impl Dispatcher {
    /// Creates the maps and loads the dispatcher (not attached anywhere yet).
    pub fn create(kind: HookKind, mode: SplitMode, salt: u32) -> Result<Self, KernelError> {
        let config = Array::create("bpfship_cfg", 1)?;
        let slots = ProgArray::create("bpfship_slots", 2)?;
        let stats = PerCpuArray::create("bpfship_stats", 1)?;
        let insns = dispatcher_program(
            kind,
            config.map().as_raw_fd(),
            slots.map().as_raw_fd(),
            stats.map().as_raw_fd(),
        );
        let prog = ProgramFd::load(
            kind.prog_type(),
            kind.expected_attach_type(),
            &insns,
            "bpfship_disp",
        )?;
        let prog_id = prog.info()?.id;
        let mut d = Dispatcher {
            kind,
            prog,
            prog_id,
            config,
            slots,
            stats,
            tracker: None,
        };
        d.write_config(&DispatchConfig {
            canary_basis_points: 0,
            mode,
            salt,
            attached_id: 0,
        })?;
        if kind == HookKind::Xdp {
            let tracker = tracker_program(
                d.prog_id,
                d.config.map().as_raw_fd(),
                d.stats.map().as_raw_fd(),
            );
            d.tracker = Some(ProgramFd::load(
                sys::PROG_TYPE_TRACEPOINT,
                0,
                &tracker,
                "bpfship_aborts",
            )?);
        }
        Ok(d)
    }

    /// The exception-tracker program (XDP only), to attach to `xdp:xdp_exception`.
    pub fn tracker(&self) -> Option<&ProgramFd> {
        self.tracker.as_ref()
    }

    /// Puts a version in a slot (one map update: takes effect for the next event).
    pub fn set_slot(&self, slot: u32, prog: &ProgramFd) -> Result<(), KernelError> {
        self.slots.set(slot, prog)
    }

    /// Empties a slot; events meant for it fall through to the stable slot.
    pub fn clear_slot(&self, slot: u32) -> Result<(), KernelError> {
        self.slots.clear(slot)
    }

    /// Reads the current configuration.
    pub fn config(&self) -> Result<DispatchConfig, KernelError> {
        let [canary_basis_points, mode, salt, attached_id] = self.config.get(0)?;
        Ok(DispatchConfig {
            canary_basis_points,
            mode: if mode == 1 {
                SplitMode::FlowHash
            } else {
                SplitMode::Random
            },
            salt,
            attached_id,
        })
    }

    /// Writes the whole configuration (one map update).
    pub fn write_config(&self, c: &DispatchConfig) -> Result<(), KernelError> {
        let mode = match c.mode {
            SplitMode::FlowHash if self.kind.has_flows() => 1u32,
            _ => 0,
        };
        self.config.set(
            0,
            &[
                c.canary_basis_points.min(10_000),
                mode,
                c.salt,
                c.attached_id,
            ],
        )
    }

    /// Sets the canary share (basis points of events) — one map update.
    pub fn set_canary_share(&self, basis_points: u32) -> Result<(), KernelError> {
        let mut c = self.config()?;
        c.canary_basis_points = basis_points;
        self.write_config(&c)
    }

    /// Records which program runs at the hook, so aborts are attributed correctly.
    pub fn set_attached(&self, prog_id: u32) -> Result<(), KernelError> {
        let mut c = self.config()?;
        c.attached_id = prog_id;
        self.write_config(&c)
    }

    /// Events and aborts per slot since the dispatcher was created.
    pub fn counters(&self) -> Result<SlotCounters, KernelError> {
        let mut out = SlotCounters::default();
        for cpu in self.stats.get(0)? {
            out.runs[0] += cpu[0];
            out.runs[1] += cpu[1];
            out.aborts[0] += cpu[2];
            out.aborts[1] += cpu[3];
        }
        Ok(out)
    }

    /// Pins the dispatcher and its maps in `dir` so a restarted agent can adopt them.
    pub fn pin(&self, dir: &Path) -> Result<(), KernelError> {
        self.prog.pin(&dir.join(PIN_PROG))?;
        self.config.map().pin(&dir.join(PIN_CONFIG))?;
        self.slots.map().pin(&dir.join(PIN_SLOTS))?;
        self.stats.map().pin(&dir.join(PIN_STATS))?;
        if let Some(t) = &self.tracker {
            t.pin(&dir.join(PIN_TRACKER))?;
        }
        Ok(())
    }

    /// Opens a dispatcher pinned by [`Dispatcher::pin`]; `None` when none is pinned there.
    pub fn open_pinned(dir: &Path, kind: HookKind) -> Result<Option<Self>, KernelError> {
        if !dir.join(PIN_PROG).exists() {
            return Ok(None);
        }
        let prog = ProgramFd::open_pinned(&dir.join(PIN_PROG))?;
        let prog_id = prog.info()?.id;
        let tracker = if dir.join(PIN_TRACKER).exists() {
            Some(ProgramFd::open_pinned(&dir.join(PIN_TRACKER))?)
        } else {
            None
        };
        let map = |name: &str| MapFd::open_pinned(&dir.join(name));
        Ok(Some(Dispatcher {
            kind,
            prog,
            prog_id,
            config: Array::new(map(PIN_CONFIG)?)?,
            slots: ProgArray::new(map(PIN_SLOTS)?)?,
            stats: PerCpuArray::new(map(PIN_STATS)?)?,
            tracker,
        }))
    }

    /// Removes the dispatcher's pins (the kernel frees it once nothing references it).
    pub fn unpin(dir: &Path) {
        for name in [PIN_PROG, PIN_CONFIG, PIN_SLOTS, PIN_STATS, PIN_TRACKER] {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
}

/// The dispatcher's configuration map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    pub canary_basis_points: u32,
    pub mode: SplitMode,
    pub salt: u32,
    pub attached_id: u32,
}

/// Emits: count the event for `slot`, remember the slot on this CPU, tail-call it.
/// Falls through when the slot is empty. Expects the context in r6.
fn emit_slot(a: &mut Asm, slot: i32, slots_fd: i32, stats_fd: i32, skip: &'static str) {
    a.store_imm(Size::W, Reg::R10, -4, 0)
        .load_map_fd(Reg::R1, stats_fd)
        .alu64_reg(Op::Mov, Reg::R2, Reg::R10)
        .alu64_imm(Op::Add, Reg::R2, -4)
        .call(HELPER_MAP_LOOKUP)
        .jump_imm(Cond::Eq, Reg::R0, 0, skip)
        .load(Size::DW, Reg::R1, Reg::R0, (slot * 8) as i16)
        .alu64_imm(Op::Add, Reg::R1, 1)
        .store_reg(Size::DW, Reg::R0, (slot * 8) as i16, Reg::R1)
        .store_imm(Size::DW, Reg::R0, 32, slot)
        .label(skip)
        .alu64_reg(Op::Mov, Reg::R1, Reg::R6)
        .load_map_fd(Reg::R2, slots_fd)
        .alu64_imm(Op::Mov, Reg::R3, slot)
        .call(HELPER_TAIL_CALL);
}

/// murmur3's 32-bit finaliser on w0, then `w0 %= 10000`.
fn emit_mix_to_basis_points(a: &mut Asm) {
    a.alu32_reg(Op::Mov, Reg::R1, Reg::R0)
        .alu32_imm(Op::Rsh, Reg::R1, 16)
        .alu32_reg(Op::Xor, Reg::R0, Reg::R1)
        .alu32_imm(Op::Mul, Reg::R0, 0x85eb_ca6bu32 as i32)
        .alu32_reg(Op::Mov, Reg::R1, Reg::R0)
        .alu32_imm(Op::Rsh, Reg::R1, 13)
        .alu32_reg(Op::Xor, Reg::R0, Reg::R1)
        .alu32_imm(Op::Mul, Reg::R0, 0xc2b2_ae35u32 as i32)
        .alu32_reg(Op::Mov, Reg::R1, Reg::R0)
        .alu32_imm(Op::Rsh, Reg::R1, 16)
        .alu32_reg(Op::Xor, Reg::R0, Reg::R1)
        .alu32_imm(Op::Mod, Reg::R0, 10_000);
}

/// XDP flow hash: IPv4/IPv6 addresses and the first 4 bytes after the IP header (ports for
/// UDP/TCP) into w0; jumps to `none` for anything else.
fn emit_xdp_flow_hash(a: &mut Asm, none: &'static str) {
    a.load(Size::W, Reg::R2, Reg::R6, 0) // data
        .load(Size::W, Reg::R3, Reg::R6, 4) // data_end
        .alu64_reg(Op::Mov, Reg::R4, Reg::R2)
        .alu64_imm(Op::Add, Reg::R4, 38)
        .jump_reg(Cond::Gt, Reg::R4, Reg::R3, none)
        .load(Size::H, Reg::R5, Reg::R2, 12)
        .jump_imm(Cond::Ne, Reg::R5, 0x0008, "xdp_v6") // ETH_P_IP, network order
        .load(Size::W, Reg::R0, Reg::R2, 26)
        .load(Size::W, Reg::R5, Reg::R2, 30)
        .alu32_imm(Op::Mul, Reg::R0, 0x9e37_79b1u32 as i32)
        .alu32_reg(Op::Xor, Reg::R0, Reg::R5)
        .alu32_imm(Op::Mul, Reg::R0, 0x9e37_79b1u32 as i32)
        .load(Size::W, Reg::R5, Reg::R2, 34)
        .alu32_reg(Op::Xor, Reg::R0, Reg::R5)
        .goto("hashed")
        .label("xdp_v6")
        .jump_imm(Cond::Ne, Reg::R5, 0xdd86, none) // ETH_P_IPV6, network order
        .alu64_reg(Op::Mov, Reg::R4, Reg::R2)
        .alu64_imm(Op::Add, Reg::R4, 58)
        .jump_reg(Cond::Gt, Reg::R4, Reg::R3, none)
        .alu32_imm(Op::Mov, Reg::R0, 0);
    for off in [22i16, 26, 30, 34, 38, 42, 46, 50, 54] {
        a.load(Size::W, Reg::R5, Reg::R2, off)
            .alu32_reg(Op::Xor, Reg::R0, Reg::R5)
            .alu32_imm(Op::Mul, Reg::R0, 0x9e37_79b1u32 as i32);
    }
    a.goto("hashed");
}

/// The dispatcher's instructions for `kind`, with the map fds embedded.
pub fn dispatcher_program(
    kind: HookKind,
    config_fd: i32,
    slots_fd: i32,
    stats_fd: i32,
) -> Vec<u64> {
    let mut a = Asm::default();
    a.alu64_reg(Op::Mov, Reg::R6, Reg::R1)
        .store_imm(Size::W, Reg::R10, -4, 0)
        .load_map_fd(Reg::R1, config_fd)
        .alu64_reg(Op::Mov, Reg::R2, Reg::R10)
        .alu64_imm(Op::Add, Reg::R2, -4)
        .call(HELPER_MAP_LOOKUP)
        .jump_imm(Cond::Eq, Reg::R0, 0, "stable")
        .load(Size::W, Reg::R7, Reg::R0, 0) // canary basis points
        .load(Size::W, Reg::R8, Reg::R0, 4) // mode
        .load(Size::W, Reg::R9, Reg::R0, 8) // salt
        .jump_imm(Cond::Eq, Reg::R7, 0, "stable")
        .jump_imm(Cond::Ne, Reg::R8, 1, "random");
    match kind {
        HookKind::Xdp => emit_xdp_flow_hash(&mut a, "random"),
        HookKind::Tc => {
            a.alu64_reg(Op::Mov, Reg::R1, Reg::R6)
                .call(HELPER_HASH_RECALC)
                .goto("hashed");
        }
        HookKind::Tracepoint | HookKind::Uprobe => {
            a.goto("random");
        }
    }
    a.label("random")
        .call(HELPER_PRANDOM)
        .label("hashed")
        .alu32_reg(Op::Xor, Reg::R0, Reg::R9);
    emit_mix_to_basis_points(&mut a);
    a.jump_reg(Cond::Ge, Reg::R0, Reg::R7, "stable");
    emit_slot(&mut a, 1, slots_fd, stats_fd, "count_canary_done");
    a.label("stable");
    emit_slot(&mut a, 0, slots_fd, stats_fd, "count_stable_done");
    a.alu64_imm(Op::Mov, Reg::R0, kind.fallback_verdict())
        .exit();
    a.assemble()
}

/// The `xdp:xdp_exception` tracker: when the aborting program is the one attached at this
/// deployment's hook, count the abort for the slot that ran (the dispatcher's last choice on
/// this CPU), or for slot 0 when a version is attached directly.
pub fn tracker_program(dispatcher_id: u32, config_fd: i32, stats_fd: i32) -> Vec<u64> {
    let mut a = Asm::default();
    a.load(Size::W, Reg::R7, Reg::R1, 8) // prog_id field of xdp_exception
        .store_imm(Size::W, Reg::R10, -4, 0)
        .load_map_fd(Reg::R1, config_fd)
        .alu64_reg(Op::Mov, Reg::R2, Reg::R10)
        .alu64_imm(Op::Add, Reg::R2, -4)
        .call(HELPER_MAP_LOOKUP)
        .jump_imm(Cond::Eq, Reg::R0, 0, "out")
        .load(Size::W, Reg::R8, Reg::R0, 12)
        .jump_reg(Cond::Ne, Reg::R7, Reg::R8, "out")
        .load_map_fd(Reg::R1, stats_fd)
        .alu64_reg(Op::Mov, Reg::R2, Reg::R10)
        .alu64_imm(Op::Add, Reg::R2, -4)
        .call(HELPER_MAP_LOOKUP)
        .jump_imm(Cond::Eq, Reg::R0, 0, "out")
        .jump_imm(Cond::Ne, Reg::R7, dispatcher_id as i32, "slot0")
        .load(Size::DW, Reg::R9, Reg::R0, 32)
        .jump_imm(Cond::Eq, Reg::R9, 0, "slot0")
        .load(Size::DW, Reg::R1, Reg::R0, 24)
        .alu64_imm(Op::Add, Reg::R1, 1)
        .store_reg(Size::DW, Reg::R0, 24, Reg::R1)
        .goto("out")
        .label("slot0")
        .load(Size::DW, Reg::R1, Reg::R0, 16)
        .alu64_imm(Op::Add, Reg::R1, 1)
        .store_reg(Size::DW, Reg::R0, 16, Reg::R1)
        .label("out")
        .alu64_imm(Op::Mov, Reg::R0, 0)
        .exit();
    a.assemble()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_assemble_for_every_hook() {
        for kind in [
            HookKind::Xdp,
            HookKind::Tc,
            HookKind::Tracepoint,
            HookKind::Uprobe,
        ] {
            let p = dispatcher_program(kind, 3, 4, 5);
            assert!(p.len() > 20 && p.len() < 200, "{kind:?}: {}", p.len());
            // The program ends with `exit`.
            assert_eq!(p.last().map(|i| i.to_le_bytes()[0]), Some(0x95));
        }
        assert!(tracker_program(7, 3, 5).len() > 10);
    }
}
