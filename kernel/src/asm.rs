//! A minimal eBPF assembler with labels: enough to write the dispatcher and the abort counter
//! without a C toolchain on the host.

use std::collections::HashMap;

/// eBPF registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

/// Memory access widths.
#[derive(Debug, Clone, Copy)]
pub enum Size {
    W = 0x00,
    H = 0x08,
    B = 0x10,
    DW = 0x18,
}

/// Conditional jump operations.
#[derive(Debug, Clone, Copy)]
pub enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ge = 0x30,
    Ne = 0x50,
}

enum Item {
    Insn(u64),
    /// A jump whose offset is resolved against a label.
    Jump {
        code: u8,
        regs: u8,
        imm: i32,
        label: &'static str,
    },
}

/// Builds a program as a list of 8-byte instructions.
#[derive(Default)]
pub struct Asm {
    items: Vec<Item>,
    labels: HashMap<&'static str, usize>,
}

fn encode(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> u64 {
    encode_raw(code, (dst as u8) | ((src as u8) << 4), off, imm)
}

fn encode_raw(code: u8, regs: u8, off: i16, imm: i32) -> u64 {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = regs;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    u64::from_le_bytes(b)
}

const ALU64: u8 = 0x07;
const ALU32: u8 = 0x04;
const JMP: u8 = 0x05;
const K: u8 = 0x00;
const X: u8 = 0x08;

/// ALU operations.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Add = 0x00,
    Mul = 0x20,
    Lsh = 0x60,
    Rsh = 0x70,
    Mod = 0x90,
    Xor = 0xa0,
    Mov = 0xb0,
}

impl Asm {
    fn push(&mut self, insn: u64) -> &mut Self {
        self.items.push(Item::Insn(insn));
        self
    }

    /// Marks the position of the next instruction.
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.insert(name, self.items.len());
        self
    }

    /// 64-bit `dst op= imm`.
    pub fn alu64_imm(&mut self, op: Op, dst: Reg, imm: i32) -> &mut Self {
        self.push(encode(ALU64 | K | op as u8, dst, Reg::R0, 0, imm))
    }

    /// 64-bit `dst op= src`.
    pub fn alu64_reg(&mut self, op: Op, dst: Reg, src: Reg) -> &mut Self {
        self.push(encode(ALU64 | X | op as u8, dst, src, 0, 0))
    }

    /// 32-bit `dst op= imm` (upper half zeroed).
    pub fn alu32_imm(&mut self, op: Op, dst: Reg, imm: i32) -> &mut Self {
        self.push(encode(ALU32 | K | op as u8, dst, Reg::R0, 0, imm))
    }

    /// 32-bit `dst op= src` (upper half zeroed).
    pub fn alu32_reg(&mut self, op: Op, dst: Reg, src: Reg) -> &mut Self {
        self.push(encode(ALU32 | X | op as u8, dst, src, 0, 0))
    }

    /// `dst = *(size *)(src + off)`.
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(encode(0x61 | size as u8, dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = src`.
    pub fn store_reg(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(encode(0x63 | size as u8, dst, src, off, 0))
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(encode(0x62 | size as u8, dst, Reg::R0, off, imm))
    }

    /// `dst = map` via a map file descriptor (two instruction slots).
    pub fn load_map_fd(&mut self, dst: Reg, fd: i32) -> &mut Self {
        self.push(encode_raw(0x18, (dst as u8) | (1 << 4), 0, fd));
        self.push(0)
    }

    /// Calls helper `id`.
    pub fn call(&mut self, id: i32) -> &mut Self {
        self.push(encode(0x85, Reg::R0, Reg::R0, 0, id))
    }

    /// Returns r0.
    pub fn exit(&mut self) -> &mut Self {
        self.push(encode(0x95, Reg::R0, Reg::R0, 0, 0))
    }

    /// `if dst cond imm goto label` (unsigned comparisons).
    pub fn jump_imm(&mut self, cond: Cond, dst: Reg, imm: i32, label: &'static str) -> &mut Self {
        self.items.push(Item::Jump {
            code: JMP | K | cond as u8,
            regs: dst as u8,
            imm,
            label,
        });
        self
    }

    /// `if dst cond src goto label` (unsigned comparisons).
    pub fn jump_reg(&mut self, cond: Cond, dst: Reg, src: Reg, label: &'static str) -> &mut Self {
        self.items.push(Item::Jump {
            code: JMP | X | cond as u8,
            regs: (dst as u8) | ((src as u8) << 4),
            imm: 0,
            label,
        });
        self
    }

    /// `goto label`.
    pub fn goto(&mut self, label: &'static str) -> &mut Self {
        self.items.push(Item::Jump {
            code: JMP,
            regs: 0,
            imm: 0,
            label,
        });
        self
    }

    /// Resolves labels into the final instruction stream.
    ///
    /// # Panics
    /// On a jump to an undefined label: the programs are fixed in this crate, so that is a bug
    /// caught by the unit tests, not a runtime condition.
    pub fn assemble(&self) -> Vec<u64> {
        self.items
            .iter()
            .enumerate()
            .map(|(pc, item)| match item {
                Item::Insn(i) => *i,
                Item::Jump {
                    code,
                    regs,
                    imm,
                    label,
                } => {
                    let target = self.labels[label];
                    let off = target as i64 - pc as i64 - 1;
                    encode_raw(*code, *regs, off as i16, *imm)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_instructions() {
        let mut a = Asm::default();
        a.alu64_reg(Op::Mov, Reg::R6, Reg::R1) // r6 = r1: bf 16 00 00 00000000
            .alu64_imm(Op::Mov, Reg::R0, 2) // r0 = 2: b7 00 .. 02
            .exit();
        let insns = a.assemble();
        assert_eq!(insns[0].to_le_bytes(), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(insns[1].to_le_bytes(), [0xb7, 0x00, 0, 0, 2, 0, 0, 0]);
        assert_eq!(insns[2].to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn resolves_forward_and_backward_jumps() {
        let mut a = Asm::default();
        a.label("top")
            .jump_imm(Cond::Eq, Reg::R0, 0, "end")
            .goto("top")
            .label("end")
            .exit();
        let insns = a.assemble();
        assert_eq!(insns[0].to_le_bytes()[2..4], 1i16.to_le_bytes());
        assert_eq!(insns[1].to_le_bytes()[2..4], (-2i16).to_le_bytes());
    }
}
