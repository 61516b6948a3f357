//! Verifier soundness: every program the verifier accepts runs in the reference
//! interpreter (`lsvd_offload::interp`) without a fault and within the verifier's
//! instruction bound, on block and scratch contents chosen by the input.
//!
//! Input byte 0 picks the program source: raw instruction bytes, a mutation of one of the
//! clang-built examples, or a structured program (prologue loading the ctx pointers, then
//! ALU / load / store / branch items drawn from the input, then `done = 1; exit`).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lsvd_offload::abi::{fill_ctx, BLOCK_SIZE, CTX_SIZE, SCRATCH_SIZE};
use lsvd_offload::asm::{Asm, Size};
use lsvd_offload::insn::{alu, jmp};
use lsvd_offload::interp::{self, Regions, BLOCK_ADDR, SCRATCH_ADDR};
use lsvd_offload::verifier::{verify_with_limits, MAX_INSN_BOUND};

const EXAMPLES: [&[u8]; 5] = [
    include_bytes!("../../examples/bpf/btree_lookup.o"),
    include_bytes!("../../examples/bpf/chain_sum.o"),
    include_bytes!("../../examples/bpf/filter_sum.o"),
    include_bytes!("../../examples/bpf/list_walk.o"),
    include_bytes!("../../examples/bpf/local_calls.o"),
];

/// Verifier work limit per input: `LSVD_FUZZ_MAX_PROCESSED` (default 100,000; the
/// daemon's limit is 1,000,000). Inputs that need more are refused with `VerifierLimit`
/// and never reach the interpreter, so a lower limit trades deep loop programs for
/// throughput: most of the time at 100,000 goes to programs refused at the limit.
fn max_processed() -> u64 {
    static M: OnceLock<u64> = OnceLock::new();
    *M.get_or_init(|| {
        std::env::var("LSVD_FUZZ_MAX_PROCESSED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000)
    })
}

fn seeds() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        EXAMPLES
            .iter()
            .filter_map(|e| lsvd_offload::load_section(e, "offload").ok())
            .collect()
    })
}

/// Byte reader that yields zeros when the input runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

const SCALARS: [u8; 5] = [0, 4, 5, 7, 8];
const SIZES: [Size; 4] = [Size::B, Size::H, Size::W, Size::DW];
const ALU_OPS: [u8; 13] = [
    alu::ADD, alu::SUB, alu::MUL, alu::DIV, alu::OR, alu::AND, alu::LSH, alu::RSH,
    alu::MOD, alu::XOR, alu::MOV, alu::ARSH, alu::NEG,
];
const JMP_OPS: [u8; 11] = [
    jmp::JEQ, jmp::JGT, jmp::JGE, jmp::JSET, jmp::JNE, jmp::JSGT, jmp::JSGE, jmp::JLT,
    jmp::JLE, jmp::JSLT, jmp::JSLE,
];

fn pick<T: Copy>(b: &mut Bytes<'_>, xs: &[T]) -> T {
    xs[b.u8() as usize % xs.len()]
}

/// r2 = data, r3 = scratch, r1 = ctx; scalar registers initialised; items; done; exit.
fn structured(b: &mut Bytes<'_>) -> Vec<u8> {
    let mut a = Asm::new().ldx(Size::DW, 2, 1, 0).ldx(Size::DW, 3, 1, 8);
    for (i, r) in SCALARS.iter().enumerate() {
        a = a.mov_imm(*r, i as i32 * 5 + 1);
    }
    let n = 1 + b.u8() as usize % 32;
    for left in (0..n).rev() {
        let d = pick(b, &SCALARS);
        let s = pick(b, &SCALARS);
        let sz = pick(b, &SIZES);
        a = match b.u8() % 10 {
            0 | 1 => {
                let op = pick(b, &ALU_OPS);
                let k = b.u32() as i32 >> (b.u8() % 32);
                match b.u8() % 4 {
                    0 => a.alu_imm(op, d, k),
                    1 => a.alu32_imm(op, d, k),
                    2 => a.alu32_reg(op, d, s),
                    _ => a.alu_reg(op, d, s),
                }
            }
            2 => {
                let base = if b.u8() & 1 == 0 { 2 } else { 3 };
                a.ldx(sz, d, base, (b.u16() % 4200) as i16 - 50)
            }
            3 => {
                let mask = pick(b, &[0xffi32, 0xfff, 0xff8, 0x1fff, -1]);
                a.mov_reg(9, s)
                    .alu_imm(alu::AND, 9, mask)
                    .alu_reg(alu::ADD, 9, 2)
                    .ldx(sz, d, 9, 0)
            }
            4 => a.stx(sz, 3, (b.u16() % 4200) as i16 - 50, s),
            5 => a.stx(Size::DW, 10, -8 * (1 + (b.u8() % 70) as i16), s),
            6 => a.ldx(sz, d, 10, -8 * (1 + (b.u8() % 70) as i16)),
            7 => {
                let op = pick(b, &JMP_OPS);
                let off = (b.u8() as usize % (left + 1)) as i16;
                if b.u8() & 1 == 0 {
                    a.jmp_imm(op, d, b.u32() as i32 >> (b.u8() % 32), off)
                } else {
                    a.jmp_reg(op, d, s, off)
                }
            }
            8 => {
                // Backward jump: a loop the verifier must bound or refuse.
                let back = -((b.u8() % 8) as i16) - 2;
                a.alu_imm(alu::ADD, d, 1)
                    .jmp_imm(pick(b, &JMP_OPS), d, b.u8() as i32, back)
            }
            _ => a.ldx(sz, d, 1, (b.u8() % 180) as i16),
        };
    }
    a.st(Size::W, 1, 28, 1).exit().build()
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let code = match b.u8() % 3 {
        0 => {
            let n = (b.0.len() / 8).min(512) * 8;
            let c = b.0[..n].to_vec();
            b.0 = &b.0[n..];
            c
        }
        1 => {
            let s = seeds();
            if s.is_empty() {
                return;
            }
            let mut c = s[b.u8() as usize % s.len()].clone();
            for _ in 0..1 + b.u8() % 8 {
                let i = b.u16() as usize % c.len();
                c[i] = b.u8();
            }
            c
        }
        _ => structured(&mut b),
    };
    let Ok(v) = verify_with_limits(
        &code,
        MAX_INSN_BOUND,
        max_processed(),
        Duration::from_millis(100),
    )
    else {
        return;
    };
    // Block and scratch contents from the rest of the input.
    let mut block = [0u8; BLOCK_SIZE];
    let mut scratch = [0u8; SCRATCH_SIZE];
    let fill = b.0;
    if !fill.is_empty() {
        for (i, x) in block.iter_mut().enumerate() {
            *x = fill[i % fill.len()].wrapping_add(i as u8);
        }
        for (i, x) in scratch.iter_mut().enumerate() {
            *x = fill[(i * 7) % fill.len()] ^ (i >> 3) as u8;
        }
    }
    let mut ctx = [0u8; CTX_SIZE];
    for hop in [0u32, 1] {
        fill_ctx(&mut ctx, BLOCK_ADDR, SCRATCH_ADDR, 12345, hop);
        let mut r = Regions {
            ctx: &mut ctx,
            block: &block,
            scratch: &mut scratch,
        };
        match interp::run(&code, &v.stack_usage, &mut r, v.insn_bound) {
            Ok(res) => assert!(
                res.executed <= v.insn_bound,
                "ran {} > bound {}",
                res.executed,
                v.insn_bound
            ),
            Err(f) => panic!("accepted program faulted: {f} (verified {v:?})"),
        }
    }
});
