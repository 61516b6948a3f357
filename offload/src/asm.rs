//! A tiny assembler for hand-written test programs (verifier rule tests, hostile corpus).

use crate::insn::{class, Insn, CALL, EXIT, JA, LDDW, SRC_X};

/// Access size of loads and stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// Program under construction.
#[derive(Debug, Clone, Default)]
pub struct Asm {
    code: Vec<u8>,
}

impl Asm {
    /// Empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    /// Appends one raw instruction.
    pub fn raw(mut self, op: u8, dst: u8, src: u8, off: i16, imm: i32) -> Asm {
        self.code.extend_from_slice(
            &Insn {
                op,
                dst,
                src,
                off,
                imm,
            }
            .encode(),
        );
        self
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(self, dst: u8, imm: i32) -> Asm {
        self.raw(class::ALU64 | 0xb0, dst, 0, 0, imm)
    }

    /// `dst = src` (64-bit).
    pub fn mov_reg(self, dst: u8, src: u8) -> Asm {
        self.raw(class::ALU64 | 0xb0 | SRC_X, dst, src, 0, 0)
    }

    /// 64-bit ALU `dst op= imm` (`op` is the high nibble, see [`crate::insn::alu`]).
    pub fn alu_imm(self, op: u8, dst: u8, imm: i32) -> Asm {
        self.raw(class::ALU64 | op, dst, 0, 0, imm)
    }

    /// 64-bit ALU `dst op= src`.
    pub fn alu_reg(self, op: u8, dst: u8, src: u8) -> Asm {
        self.raw(class::ALU64 | op | SRC_X, dst, src, 0, 0)
    }

    /// 32-bit ALU `dst op= imm`.
    pub fn alu32_imm(self, op: u8, dst: u8, imm: i32) -> Asm {
        self.raw(class::ALU | op, dst, 0, 0, imm)
    }

    /// 32-bit ALU `dst op= src`.
    pub fn alu32_reg(self, op: u8, dst: u8, src: u8) -> Asm {
        self.raw(class::ALU | op | SRC_X, dst, src, 0, 0)
    }

    /// `dst = *(size *)(src + off)`.
    pub fn ldx(self, size: Size, dst: u8, src: u8, off: i16) -> Asm {
        self.raw(0x61 | size.bits(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(self, size: Size, dst: u8, off: i16, src: u8) -> Asm {
        self.raw(0x63 | size.bits(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st(self, size: Size, dst: u8, off: i16, imm: i32) -> Asm {
        self.raw(0x62 | size.bits(), dst, 0, off, imm)
    }

    /// `if dst op imm goto +off` (64-bit; `op` from [`crate::insn::jmp`]).
    pub fn jmp_imm(self, op: u8, dst: u8, imm: i32, off: i16) -> Asm {
        self.raw(class::JMP | op, dst, 0, off, imm)
    }

    /// `if dst op src goto +off` (64-bit).
    pub fn jmp_reg(self, op: u8, dst: u8, src: u8, off: i16) -> Asm {
        self.raw(class::JMP | op | SRC_X, dst, src, off, 0)
    }

    /// `if (u32)dst op imm goto +off`.
    pub fn jmp32_imm(self, op: u8, dst: u8, imm: i32, off: i16) -> Asm {
        self.raw(class::JMP32 | op, dst, 0, off, imm)
    }

    /// `goto +off`.
    pub fn ja(self, off: i16) -> Asm {
        self.raw(JA, 0, 0, off, 0)
    }

    /// Local call to `pc + 1 + rel`.
    pub fn call_local(self, rel: i32) -> Asm {
        self.raw(CALL, 0, 1, 0, rel)
    }

    /// Helper call `id`.
    pub fn call_helper(self, id: i32) -> Asm {
        self.raw(CALL, 0, 0, 0, id)
    }

    /// `exit`.
    pub fn exit(self) -> Asm {
        self.raw(EXIT, 0, 0, 0, 0)
    }

    /// `dst = imm64` (two slots).
    pub fn lddw(self, dst: u8, v: u64) -> Asm {
        self.raw(LDDW, dst, 0, 0, v as u32 as i32)
            .raw(0, 0, 0, 0, (v >> 32) as u32 as i32)
    }

    /// Current length in instruction slots.
    pub fn len(&self) -> usize {
        self.code.len() / 8
    }

    /// True when no instruction was added.
    pub fn is_empty(&self) -> bool {
        self.code.is_empty()
    }

    /// The instruction bytes.
    pub fn build(self) -> Vec<u8> {
        self.code
    }
}
