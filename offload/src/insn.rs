//! eBPF instruction decoding and the concrete semantics shared by the verifier and the
//! reference interpreter (so both agree bit for bit on ALU results and branch outcomes).

/// Bytes per instruction slot.
pub const INSN_SIZE: usize = 8;

/// Instruction classes (low 3 bits of the opcode).
pub mod class {
    /// Non-standard loads (only `lddw` is accepted).
    pub const LD: u8 = 0x00;
    /// Load from memory into a register.
    pub const LDX: u8 = 0x01;
    /// Store immediate.
    pub const ST: u8 = 0x02;
    /// Store register.
    pub const STX: u8 = 0x03;
    /// 32-bit ALU.
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, call, exit.
    pub const JMP: u8 = 0x05;
    /// 32-bit jumps.
    pub const JMP32: u8 = 0x06;
    /// 64-bit ALU.
    pub const ALU64: u8 = 0x07;
}

/// `lddw dst, imm64` (two slots).
pub const LDDW: u8 = 0x18;
/// `call imm` (src 0 = helper, src 1 = local function).
pub const CALL: u8 = 0x85;
/// `exit`.
pub const EXIT: u8 = 0x95;
/// `ja off`.
pub const JA: u8 = 0x05;
/// Memory mode bits for LDX/ST/STX.
pub const MODE_MEM: u8 = 0x60;
/// Source bit: operand is a register.
pub const SRC_X: u8 = 0x08;

/// ALU operations (high 4 bits).
pub mod alu {
    #![allow(missing_docs)]
    pub const ADD: u8 = 0x00;
    pub const SUB: u8 = 0x10;
    pub const MUL: u8 = 0x20;
    pub const DIV: u8 = 0x30;
    pub const OR: u8 = 0x40;
    pub const AND: u8 = 0x50;
    pub const LSH: u8 = 0x60;
    pub const RSH: u8 = 0x70;
    pub const NEG: u8 = 0x80;
    pub const MOD: u8 = 0x90;
    pub const XOR: u8 = 0xa0;
    pub const MOV: u8 = 0xb0;
    pub const ARSH: u8 = 0xc0;
    pub const END: u8 = 0xd0;
}

/// Jump operations (high 4 bits).
pub mod jmp {
    #![allow(missing_docs)]
    pub const JA: u8 = 0x00;
    pub const JEQ: u8 = 0x10;
    pub const JGT: u8 = 0x20;
    pub const JGE: u8 = 0x30;
    pub const JSET: u8 = 0x40;
    pub const JNE: u8 = 0x50;
    pub const JSGT: u8 = 0x60;
    pub const JSGE: u8 = 0x70;
    pub const CALL: u8 = 0x80;
    pub const EXIT: u8 = 0x90;
    pub const JLT: u8 = 0xa0;
    pub const JLE: u8 = 0xb0;
    pub const JSLT: u8 = 0xc0;
    pub const JSLE: u8 = 0xd0;
}

/// One decoded 8-byte instruction slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode byte.
    pub op: u8,
    /// Destination register (0..=15 as encoded; valid ones are 0..=10).
    pub dst: u8,
    /// Source register.
    pub src: u8,
    /// Signed offset.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    /// Decodes slot `idx` of `code`; `None` when it is past the end.
    pub fn at(code: &[u8], idx: usize) -> Option<Insn> {
        let b = code.get(idx * INSN_SIZE..idx * INSN_SIZE + INSN_SIZE)?;
        Some(Insn {
            op: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    /// Encodes this instruction into 8 bytes.
    pub fn encode(&self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [
            self.op,
            (self.src << 4) | (self.dst & 0x0f),
            o[0],
            o[1],
            i[0],
            i[1],
            i[2],
            i[3],
        ]
    }

    /// Instruction class.
    pub fn class(&self) -> u8 {
        self.op & 0x07
    }

    /// Access size in bytes of a LDX/ST/STX instruction.
    pub fn mem_size(&self) -> usize {
        match (self.op >> 3) & 0x03 {
            0 => 4,
            1 => 2,
            2 => 1,
            _ => 8,
        }
    }
}

/// Number of instruction slots in `code`.
pub fn insn_count(code: &[u8]) -> usize {
    code.len() / INSN_SIZE
}

/// Concrete result of ALU operation `op` (high nibble) on `a` and `b`, with eBPF
/// semantics: `x / 0 = 0`, `x % 0 = x`, shifts masked to the operand width, 32-bit results
/// zero-extended. For `END`, `b` is the immediate width (16, 32, 64) and `to_be` selects
/// `be` (otherwise `le`, which on little-endian truncates).
pub fn alu_concrete(op: u8, is64: bool, a: u64, b: u64, to_be: bool) -> u64 {
    if op == alu::END {
        return end_concrete(a, b, to_be);
    }
    if is64 {
        match op {
            alu::ADD => a.wrapping_add(b),
            alu::SUB => a.wrapping_sub(b),
            alu::MUL => a.wrapping_mul(b),
            alu::DIV => a.checked_div(b).unwrap_or(0),
            alu::OR => a | b,
            alu::AND => a & b,
            alu::LSH => a.wrapping_shl((b & 63) as u32),
            alu::RSH => a.wrapping_shr((b & 63) as u32),
            alu::NEG => (a as i64).wrapping_neg() as u64,
            alu::MOD => a.checked_rem(b).unwrap_or(a),
            alu::XOR => a ^ b,
            alu::MOV => b,
            alu::ARSH => ((a as i64).wrapping_shr((b & 63) as u32)) as u64,
            _ => end_concrete(a, b, to_be),
        }
    } else {
        let (a, b) = (a as u32, b as u32);
        let r: u32 = match op {
            alu::ADD => a.wrapping_add(b),
            alu::SUB => a.wrapping_sub(b),
            alu::MUL => a.wrapping_mul(b),
            alu::DIV => a.checked_div(b).unwrap_or(0),
            alu::OR => a | b,
            alu::AND => a & b,
            alu::LSH => a.wrapping_shl(b & 31),
            alu::RSH => a.wrapping_shr(b & 31),
            alu::NEG => (a as i32).wrapping_neg() as u32,
            alu::MOD => a.checked_rem(b).unwrap_or(a),
            alu::XOR => a ^ b,
            alu::MOV => b,
            alu::ARSH => ((a as i32).wrapping_shr(b & 31)) as u32,
            _ => return end_concrete(a as u64, b as u64, to_be),
        };
        r as u64
    }
}

fn end_concrete(a: u64, width: u64, to_be: bool) -> u64 {
    match (width, to_be) {
        (16, false) => a as u16 as u64,
        (32, false) => a as u32 as u64,
        (16, true) => (a as u16).swap_bytes() as u64,
        (32, true) => (a as u32).swap_bytes() as u64,
        (_, true) => a.swap_bytes(),
        _ => a,
    }
}

/// Concrete outcome of conditional jump `op` (high nibble) comparing `a` with `b`
/// (already sign-extended for 64-bit immediates); `is64 = false` compares low 32 bits.
pub fn jmp_concrete(op: u8, is64: bool, a: u64, b: u64) -> bool {
    let (ua, ub, sa, sb) = if is64 {
        (a, b, a as i64, b as i64)
    } else {
        (
            a as u32 as u64,
            b as u32 as u64,
            a as u32 as i32 as i64,
            b as u32 as i32 as i64,
        )
    };
    match op {
        jmp::JEQ => ua == ub,
        jmp::JGT => ua > ub,
        jmp::JGE => ua >= ub,
        jmp::JSET => ua & ub != 0,
        jmp::JNE => ua != ub,
        jmp::JSGT => sa > sb,
        jmp::JSGE => sa >= sb,
        jmp::JLT => ua < ub,
        jmp::JLE => ua <= ub,
        jmp::JSLT => sa < sb,
        jmp::JSLE => sa <= sb,
        _ => true,
    }
}
