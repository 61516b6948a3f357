//! Register liveness (backward dataflow per instruction). A register dead at a program
//! point is written before it is read on every path from there, so the exploration may
//! forget its value: states that differ only in dead registers then prune each other (the
//! Linux verifier does the same). Bit `r` of a mask is register `r` (r0..r9).

use crate::insn::{alu, class, Insn, CALL, EXIT, JA, LDDW, SRC_X};

/// Registers r0..r5, clobbered by a call.
pub const CALL_CLOBBER: u16 = 0b11_1111;

/// `live_in[pc]` for every instruction slot (0 for `lddw` second halves).
pub fn live_in(code: &[u8], n: usize) -> Vec<u16> {
    let mut uses = vec![0u16; n];
    let mut defs = vec![0u16; n];
    let mut succ: Vec<[Option<usize>; 2]> = vec![[None, None]; n];
    let bit = |r: u8| if r < 10 { 1u16 << r } else { 0 };
    let mut i = 0;
    while i < n {
        let Some(ins) = Insn::at(code, i) else { break };
        let next = (i + 1 < n).then_some(i + 1);
        match ins.class() {
            class::LD if ins.op == LDDW => {
                defs[i] = bit(ins.dst);
                succ[i] = [(i + 2 < n).then_some(i + 2), None];
                i += 2;
                continue;
            }
            class::LDX => {
                uses[i] = bit(ins.src);
                defs[i] = bit(ins.dst);
                succ[i] = [next, None];
            }
            class::ST => {
                uses[i] = bit(ins.dst);
                succ[i] = [next, None];
            }
            class::STX => {
                uses[i] = bit(ins.dst) | bit(ins.src);
                succ[i] = [next, None];
            }
            class::ALU | class::ALU64 => {
                let op = ins.op & 0xf0;
                let x = ins.op & SRC_X != 0 && op != alu::END;
                uses[i] = if op == alu::MOV { 0 } else { bit(ins.dst) }
                    | if x { bit(ins.src) } else { 0 };
                defs[i] = bit(ins.dst);
                succ[i] = [next, None];
            }
            _ => {
                let tgt = usize::try_from(i as i64 + 1 + ins.off as i64)
                    .ok()
                    .filter(|t| *t < n);
                if ins.op == EXIT {
                    uses[i] = 1;
                } else if ins.op == CALL {
                    uses[i] = CALL_CLOBBER & !1;
                    defs[i] = CALL_CLOBBER;
                    succ[i] = [next, None];
                } else if ins.op == JA {
                    succ[i] = [tgt, None];
                } else {
                    uses[i] = bit(ins.dst) | if ins.op & SRC_X != 0 { bit(ins.src) } else { 0 };
                    succ[i] = [next, tgt];
                }
            }
        }
        i += 1;
    }
    let mut live = vec![0u16; n];
    let mut changed = true;
    while changed {
        changed = false;
        for i in (0..n).rev() {
            let out = succ[i].iter().flatten().fold(0u16, |m, s| m | live[*s]);
            let v = uses[i] | (out & !defs[i]);
            if v != live[i] {
                live[i] = v;
                changed = true;
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::Asm;

    #[test]
    fn straight_line() {
        // 0: r2 = 1; 1: r0 = r2; 2: exit
        let code = Asm::new().mov_imm(2, 1).mov_reg(0, 2).exit().build();
        let l = live_in(&code, 3);
        assert_eq!(l, vec![0, 1 << 2, 1]);
    }

    #[test]
    fn loop_keeps_counter_live() {
        // 0: r4 = 0; 1: r4 += 1; 2: if r4 < 10 goto 1; 3: r0 = 0; 4: exit
        let code = Asm::new()
            .mov_imm(4, 0)
            .alu_imm(0x00, 4, 1)
            .jmp_imm(0xa0, 4, 10, -2)
            .mov_imm(0, 0)
            .exit()
            .build();
        let l = live_in(&code, 5);
        assert_eq!(l[1], 1 << 4);
        assert_eq!(l[3], 0);
    }
}
