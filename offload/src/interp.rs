//! Reference interpreter: small, metered and bounds-checked, over the same ctx / block /
//! scratch / stack regions as the VM engines. It never panics on any input: every fault
//! (bad instruction, out-of-bounds or read-only access, budget exhausted, call depth) is
//! returned as a [`Fault`]. It is the oracle for differential tests and fuzzing: every
//! program our verifier accepts must run here without a fault and within its bound.
//!
//! Regions live at fixed virtual addresses ([`CTX_ADDR`], [`BLOCK_ADDR`], [`SCRATCH_ADDR`],
//! [`STACK_ADDR`]); the ctx `data` and `scratch` fields must hold those addresses.
//! The stack is one [`STACK_SIZE`]-byte area shared by all frames, like rbpf's interpreter:
//! a local call lowers r10 by the caller's stack usage as computed by the verifier.

use crate::abi::{ctx_writable, BLOCK_SIZE, CTX_SIZE, MAX_FRAMES, SCRATCH_SIZE, STACK_SIZE};
use crate::insn::{alu, alu_concrete, class, jmp_concrete, Insn, CALL, EXIT, JA, LDDW, SRC_X};

/// Virtual address of the context.
pub const CTX_ADDR: u64 = 0x1_0000_0000;
/// Virtual address of the block.
pub const BLOCK_ADDR: u64 = 0x2_0000_0000;
/// Virtual address of scratch.
pub const SCRATCH_ADDR: u64 = 0x3_0000_0000;
/// Virtual address of the lowest stack byte (r10 starts at `STACK_ADDR + STACK_SIZE`).
pub const STACK_ADDR: u64 = 0x4_0000_0000;

/// Why the interpreter stopped a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// More instructions than the budget.
    #[error("instruction budget of {budget} exhausted")]
    InsnBudget {
        /// The budget.
        budget: u64,
    },
    /// Access outside every region.
    #[error("insn {pc}: {len}-byte access at {addr:#x} is outside all regions")]
    OutOfBounds {
        /// Instruction index.
        pc: usize,
        /// Address.
        addr: u64,
        /// Access length.
        len: usize,
    },
    /// Write to a read-only region or ctx field.
    #[error("insn {pc}: write to read-only address {addr:#x}")]
    ReadOnly {
        /// Instruction index.
        pc: usize,
        /// Address.
        addr: u64,
    },
    /// Unknown or malformed instruction, or execution left the code.
    #[error("insn {pc}: bad instruction")]
    BadInsn {
        /// Instruction index.
        pc: usize,
    },
    /// Helper call (no helpers exist in v1).
    #[error("insn {pc}: helper call")]
    Helper {
        /// Instruction index.
        pc: usize,
    },
    /// Call chain deeper than allowed, or stack exhausted by frames.
    #[error("insn {pc}: call depth exceeded")]
    CallDepth {
        /// Instruction index.
        pc: usize,
    },
}

/// Memory a hop runs over.
pub struct Regions<'a> {
    /// Context (`data`/`scratch` fields hold [`BLOCK_ADDR`]/[`SCRATCH_ADDR`]).
    pub ctx: &'a mut [u8; CTX_SIZE],
    /// Current block.
    pub block: &'a [u8; BLOCK_SIZE],
    /// Scratch.
    pub scratch: &'a mut [u8; SCRATCH_SIZE],
}

/// Result of a successful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunResult {
    /// r0 at exit.
    pub r0: u64,
    /// Instructions executed (`lddw` counts once).
    pub executed: u64,
}

struct Mem<'a, 'b> {
    r: &'b mut Regions<'a>,
    stack: [u8; STACK_SIZE],
}

impl Mem<'_, '_> {
    fn slice(&mut self, pc: usize, addr: u64, len: usize, write: bool) -> Result<&mut [u8], Fault> {
        let oob = Fault::OutOfBounds { pc, addr, len };
        let within = |base: u64, size: usize| -> Option<usize> {
            let off = addr.checked_sub(base)?;
            let end = off.checked_add(len as u64)?;
            (end <= size as u64).then_some(off as usize)
        };
        if let Some(o) = within(CTX_ADDR, CTX_SIZE) {
            if write && !ctx_writable(o, len) {
                return Err(Fault::ReadOnly { pc, addr });
            }
            return Ok(&mut self.r.ctx[o..o + len]);
        }
        if let Some(o) = within(SCRATCH_ADDR, SCRATCH_SIZE) {
            return Ok(&mut self.r.scratch[o..o + len]);
        }
        if let Some(o) = within(STACK_ADDR, STACK_SIZE) {
            return Ok(&mut self.stack[o..o + len]);
        }
        if within(BLOCK_ADDR, BLOCK_SIZE).is_some() {
            return Err(if write {
                Fault::ReadOnly { pc, addr }
            } else {
                oob
            });
        }
        Err(oob)
    }

    fn load(&mut self, pc: usize, addr: u64, len: usize) -> Result<u64, Fault> {
        let mut b = [0u8; 8];
        if let Some(o) = addr.checked_sub(BLOCK_ADDR) {
            if o.checked_add(len as u64)
                .is_some_and(|e| e <= BLOCK_SIZE as u64)
            {
                b[..len].copy_from_slice(&self.r.block[o as usize..o as usize + len]);
                return Ok(u64::from_le_bytes(b));
            }
        }
        let s = self.slice(pc, addr, len, false)?;
        b[..len].copy_from_slice(s);
        Ok(u64::from_le_bytes(b))
    }

    fn store(&mut self, pc: usize, addr: u64, len: usize, v: u64) -> Result<(), Fault> {
        let s = self.slice(pc, addr, len, true)?;
        s.copy_from_slice(&v.to_le_bytes()[..len]);
        Ok(())
    }
}

struct CallFrame {
    ret: usize,
    saved: [u64; 4],
    r10: u64,
    func: usize,
}

/// Runs `code` once over `regions` with at most `budget` instructions. `stack_usage` gives
/// the verifier's stack bytes per function entry (missing entries count as 0).
pub fn run(
    code: &[u8],
    stack_usage: &[(usize, u16)],
    regions: &mut Regions<'_>,
    budget: u64,
) -> Result<RunResult, Fault> {
    let mut m = Mem {
        r: regions,
        stack: [0u8; STACK_SIZE],
    };
    let usage = |f: usize| {
        stack_usage
            .iter()
            .find(|(p, _)| *p == f)
            .map(|(_, u)| *u as u64)
            .unwrap_or(0)
    };
    let mut reg = [0u64; 11];
    reg[1] = CTX_ADDR;
    reg[10] = STACK_ADDR + STACK_SIZE as u64;
    let mut frames: Vec<CallFrame> = Vec::new();
    let mut func = 0usize;
    let mut pc = 0usize;
    let mut executed = 0u64;
    loop {
        let ins = Insn::at(code, pc).ok_or(Fault::BadInsn { pc })?;
        executed += 1;
        if executed > budget {
            return Err(Fault::InsnBudget { budget });
        }
        let (d, s) = (ins.dst as usize, ins.src as usize);
        if d > 10 || s > 10 {
            return Err(Fault::BadInsn { pc });
        }
        let mut next = pc + 1;
        match ins.class() {
            class::ALU | class::ALU64 => {
                let is64 = ins.class() == class::ALU64;
                let op = ins.op & 0xf0;
                if d == 10 || matches!(op, 0xe0 | 0xf0) || (op == alu::END && is64) {
                    return Err(Fault::BadInsn { pc });
                }
                let x = ins.op & SRC_X != 0;
                let b = if op == alu::END {
                    ins.imm as u32 as u64
                } else if x {
                    reg[s]
                } else if is64 {
                    ins.imm as i64 as u64
                } else {
                    ins.imm as u32 as u64
                };
                reg[d] = alu_concrete(op, is64, reg[d], b, x);
            }
            class::LD => {
                let hi = Insn::at(code, pc + 1).ok_or(Fault::BadInsn { pc })?;
                if ins.op != LDDW || d == 10 {
                    return Err(Fault::BadInsn { pc });
                }
                reg[d] = (ins.imm as u32 as u64) | ((hi.imm as u32 as u64) << 32);
                next = pc + 2;
            }
            class::LDX => {
                if ins.op & 0xe0 != 0x60 || d == 10 {
                    return Err(Fault::BadInsn { pc });
                }
                let addr = reg[s].wrapping_add(ins.off as i64 as u64);
                reg[d] = m.load(pc, addr, ins.mem_size())?;
            }
            class::ST | class::STX => {
                if ins.op & 0xe0 != 0x60 {
                    return Err(Fault::BadInsn { pc });
                }
                let v = if ins.class() == class::ST {
                    ins.imm as i64 as u64
                } else {
                    reg[s]
                };
                let addr = reg[d].wrapping_add(ins.off as i64 as u64);
                m.store(pc, addr, ins.mem_size(), v)?;
            }
            _ => {
                let is64 = ins.class() == class::JMP;
                if ins.op == JA {
                    next = jump(pc, ins.off as i64)?;
                } else if ins.op == EXIT {
                    match frames.pop() {
                        None => {
                            return Ok(RunResult {
                                r0: reg[0],
                                executed,
                            })
                        }
                        Some(f) => {
                            reg[6..10].copy_from_slice(&f.saved);
                            reg[10] = f.r10;
                            func = f.func;
                            next = f.ret;
                        }
                    }
                } else if ins.op == CALL {
                    if ins.src != 1 {
                        return Err(Fault::Helper { pc });
                    }
                    if frames.len() + 1 >= MAX_FRAMES {
                        return Err(Fault::CallDepth { pc });
                    }
                    let tgt = jump(pc, ins.imm as i64)?;
                    let mut saved = [0u64; 4];
                    saved.copy_from_slice(&reg[6..10]);
                    frames.push(CallFrame {
                        ret: pc + 1,
                        saved,
                        r10: reg[10],
                        func,
                    });
                    reg[10] = reg[10]
                        .checked_sub(usage(func))
                        .filter(|r| *r >= STACK_ADDR)
                        .ok_or(Fault::CallDepth { pc })?;
                    func = tgt;
                    next = tgt;
                } else {
                    let op = ins.op & 0xf0;
                    if !is64 && matches!(op, 0x00 | 0x80 | 0x90) {
                        return Err(Fault::BadInsn { pc });
                    }
                    if matches!(op, 0xe0 | 0xf0) {
                        return Err(Fault::BadInsn { pc });
                    }
                    let b = if ins.op & SRC_X != 0 {
                        reg[s]
                    } else {
                        ins.imm as i64 as u64
                    };
                    if jmp_concrete(op, is64, reg[d], b) {
                        next = jump(pc, ins.off as i64)?;
                    }
                }
            }
        }
        pc = next;
    }
}

fn jump(pc: usize, rel: i64) -> Result<usize, Fault> {
    let t = pc as i64 + 1 + rel;
    if t < 0 {
        return Err(Fault::BadInsn { pc });
    }
    Ok(t as usize)
}
