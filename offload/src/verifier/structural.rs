//! Cheap structural checks that need no abstract state: opcodes, registers, `lddw`
//! pairs, jump and call targets, function boundaries, no helper calls. Run before the
//! path exploration and again from rbpf's `set_verifier` hook.

use super::{VerifyError, VerifyErrorKind::*};
use crate::insn::{alu, class, insn_count, jmp, Insn, CALL, EXIT, INSN_SIZE, JA, LDDW, SRC_X};
use crate::MAX_INSNS;

/// Facts the exploration needs about the code layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Number of instruction slots.
    pub n: usize,
    /// Slot `i` is the second half of an `lddw`.
    pub lddw_hi: Vec<bool>,
    /// Slot `i` is a jump target, a call target or a return address (exploration segments
    /// start there and states are recorded there).
    pub prune: Vec<bool>,
    /// Function entry slots, sorted (0 first).
    pub funcs: Vec<usize>,
    /// Whether any local call exists.
    pub has_calls: bool,
}

fn bad(i: usize, msg: impl Into<String>) -> VerifyError {
    VerifyError::new(BadInsn, i, msg)
}

/// Checks the layout of `code`; see the module doc.
pub fn structural_check(code: &[u8]) -> Result<Layout, VerifyError> {
    if code.is_empty() || !code.len().is_multiple_of(INSN_SIZE) {
        return Err(bad(
            0,
            format!("code length {} is not a non-zero multiple of 8", code.len()),
        ));
    }
    let n = insn_count(code);
    if n > MAX_INSNS {
        return Err(bad(n, format!("{n} instructions, more than {MAX_INSNS}")));
    }
    let at = |i: usize| Insn::at(code, i).ok_or_else(|| bad(i, "instruction past the end"));
    let mut lddw_hi = vec![false; n];
    let mut prune = vec![false; n];
    let mut funcs = vec![0usize];
    let mut has_calls = false;
    let mut i = 0;
    while i < n {
        let ins = at(i)?;
        if ins.dst > 10 || ins.src > 10 {
            return Err(bad(i, format!("bad register r{} / r{}", ins.dst, ins.src)));
        }
        let writes_dst = matches!(
            ins.class(),
            class::ALU | class::ALU64 | class::LDX | class::LD
        );
        if writes_dst && ins.dst == 10 {
            return Err(bad(i, "r10 is read-only"));
        }
        match ins.class() {
            class::LD => {
                if ins.op != LDDW {
                    return Err(bad(i, format!("unsupported load opcode {:#04x}", ins.op)));
                }
                if ins.src != 0 {
                    return Err(bad(
                        i,
                        "lddw with a pseudo source (map or global reference)",
                    ));
                }
                let hi =
                    Insn::at(code, i + 1).ok_or_else(|| bad(i, "lddw without its second half"))?;
                if hi.op != 0 || hi.dst != 0 || hi.src != 0 || hi.off != 0 || ins.off != 0 {
                    return Err(bad(i, "malformed lddw second half"));
                }
                lddw_hi[i + 1] = true;
                i += 2;
                continue;
            }
            class::LDX => {
                if ins.op & 0xe0 != 0x60 || ins.op & 0x07 != class::LDX || ins.imm != 0 {
                    return Err(bad(i, format!("unsupported load opcode {:#04x}", ins.op)));
                }
            }
            class::ST | class::STX => {
                if ins.op & 0xe0 != 0x60 {
                    return Err(bad(i, format!("unsupported store opcode {:#04x}", ins.op)));
                }
                if ins.class() == class::ST && ins.src != 0 {
                    return Err(bad(i, "store-immediate with a source register"));
                }
                if ins.class() == class::STX && ins.imm != 0 {
                    return Err(bad(i, "store-register with an immediate"));
                }
            }
            class::ALU | class::ALU64 => check_alu(i, &ins)?,
            _ => {
                // JMP / JMP32
                let op = ins.op & 0xf0;
                let is32 = ins.class() == class::JMP32;
                if ins.op == CALL {
                    if ins.dst != 0 || ins.off != 0 {
                        return Err(bad(i, "malformed call"));
                    }
                    match ins.src {
                        0 => {
                            return Err(VerifyError::new(
                                UnknownHelper,
                                i,
                                format!("call to helper {} (no helpers are allowed)", ins.imm),
                            ))
                        }
                        1 => {
                            let t = target(i, ins.imm as i64, n)
                                .ok_or_else(|| bad(i, "call target out of code"))?;
                            if !funcs.contains(&t) {
                                funcs.push(t);
                            }
                            has_calls = true;
                            prune[t] = true;
                            if i + 1 < n {
                                prune[i + 1] = true;
                            }
                        }
                        _ => return Err(bad(i, format!("unsupported call kind {}", ins.src))),
                    }
                } else if ins.op == EXIT {
                    if ins.dst != 0 || ins.src != 0 || ins.off != 0 || ins.imm != 0 {
                        return Err(bad(i, "malformed exit"));
                    }
                } else if ins.op == JA {
                    if ins.dst != 0 || ins.src != 0 || ins.imm != 0 {
                        return Err(bad(i, "malformed ja"));
                    }
                    let t =
                        target(i, ins.off as i64, n).ok_or_else(|| bad(i, "jump out of code"))?;
                    prune[t] = true;
                } else {
                    let known = matches!(
                        op,
                        jmp::JEQ
                            | jmp::JGT
                            | jmp::JGE
                            | jmp::JSET
                            | jmp::JNE
                            | jmp::JSGT
                            | jmp::JSGE
                            | jmp::JLT
                            | jmp::JLE
                            | jmp::JSLT
                            | jmp::JSLE
                    );
                    if !known || (is32 && matches!(op, jmp::JA | jmp::CALL | jmp::EXIT)) {
                        return Err(bad(i, format!("unknown jump opcode {:#04x}", ins.op)));
                    }
                    if ins.op & SRC_X == 0 && ins.src != 0 {
                        return Err(bad(i, "jump-immediate with a source register"));
                    }
                    let t =
                        target(i, ins.off as i64, n).ok_or_else(|| bad(i, "jump out of code"))?;
                    prune[t] = true;
                }
            }
        }
        i += 1;
    }
    for (i, hi) in lddw_hi.iter().enumerate() {
        if *hi && prune[i] {
            return Err(bad(i, "jump into the middle of an lddw"));
        }
    }
    funcs.sort_unstable();
    // Every function must end in exit or ja, and jumps must stay inside their function.
    for (k, &start) in funcs.iter().enumerate() {
        let end = funcs.get(k + 1).copied().unwrap_or(n);
        let last = at(end - 1)?;
        if (last.op != EXIT && last.op != JA) || lddw_hi[end - 1] {
            return Err(bad(end - 1, "code falls off the end of a function"));
        }
        for (j, _) in lddw_hi
            .iter()
            .enumerate()
            .take(end)
            .skip(start)
            .filter(|(_, hi)| !**hi)
        {
            let ins = at(j)?;
            let is_jump = matches!(ins.class(), class::JMP | class::JMP32)
                && ins.op != CALL
                && ins.op != EXIT;
            if is_jump {
                let t = (j as i64 + 1 + ins.off as i64) as usize;
                if t < start || t >= end {
                    return Err(bad(j, "jump crosses a function boundary"));
                }
            }
        }
    }
    Ok(Layout {
        n,
        lddw_hi,
        prune,
        funcs,
        has_calls,
    })
}

fn target(i: usize, rel: i64, n: usize) -> Option<usize> {
    let t = i as i64 + 1 + rel;
    (t >= 0 && (t as usize) < n).then_some(t as usize)
}

fn check_alu(i: usize, ins: &Insn) -> Result<(), VerifyError> {
    let op = ins.op & 0xf0;
    let x = ins.op & SRC_X != 0;
    let is64 = ins.class() == class::ALU64;
    if ins.off != 0 {
        return Err(bad(
            i,
            "ALU instruction with a non-zero offset (cpu v4 is not supported)",
        ));
    }
    match op {
        alu::END => {
            if is64 || !matches!(ins.imm, 16 | 32 | 64) || ins.src != 0 {
                return Err(bad(i, "malformed byte swap"));
            }
            return Ok(());
        }
        alu::NEG => {
            if x || ins.src != 0 || ins.imm != 0 {
                return Err(bad(i, "malformed neg"));
            }
            return Ok(());
        }
        0xe0 | 0xf0 => return Err(bad(i, format!("unknown ALU opcode {:#04x}", ins.op))),
        _ => {}
    }
    if x {
        if ins.imm != 0 {
            return Err(bad(i, "ALU-register with an immediate"));
        }
    } else {
        if ins.src != 0 {
            return Err(bad(i, "ALU-immediate with a source register"));
        }
        if matches!(op, alu::DIV | alu::MOD) && ins.imm == 0 {
            return Err(bad(i, "division by immediate zero"));
        }
        let width = if is64 { 64 } else { 32 };
        if matches!(op, alu::LSH | alu::RSH | alu::ARSH) && !(0..width).contains(&ins.imm) {
            return Err(bad(i, format!("shift by {} out of range", ins.imm)));
        }
    }
    Ok(())
}
