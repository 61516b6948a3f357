//! One pass/fail pair per verifier rule, on hand-assembled programs.
//! Convention: r1 = ctx; the prologue loads r2 = data (block) and r3 = scratch.

mod common;

use std::time::Duration;

use common::{accept, refuse};
use lsvd_offload::asm::{Asm, Size::*};
use lsvd_offload::insn::{alu, jmp};
use lsvd_offload::verifier::verify_with_limits;
use lsvd_offload::VerifyErrorKind::*;

fn pro() -> Asm {
    Asm::new().ldx(DW, 2, 1, 0).ldx(DW, 3, 1, 8)
}

fn epi(a: Asm) -> Vec<u8> {
    a.mov_imm(0, 0).exit().build()
}

#[test]
fn bad_insn() {
    accept(&epi(pro()));
    refuse(&epi(pro().raw(0xff, 0, 0, 0, 0)), BadInsn); // unknown opcode
    refuse(&epi(pro().ja(5)), BadInsn); // jump out of code
    refuse(&pro().mov_imm(0, 0).build(), BadInsn); // falls off the end
    refuse(&epi(pro().raw(0x18, 4, 0, 0, 1)), BadInsn); // lddw whose second half is an insn
    accept(&epi(pro().lddw(4, 1 << 40)));
    refuse(&epi(pro().ja(1).lddw(4, 1)), BadInsn); // jump into the middle of lddw
    refuse(&epi(pro().mov_imm(10, 0)), BadInsn); // r10 is read-only
    refuse(
        &epi(pro().raw(0x18, 4, 1, 0, 0).raw(0, 0, 0, 0, 0)),
        BadInsn,
    ); // map lddw
    refuse(&epi(pro().alu_imm(alu::DIV, 4, 0)), BadInsn); // division by immediate zero
}

#[test]
fn uninit_register() {
    accept(&Asm::new().mov_imm(2, 1).mov_reg(0, 2).exit().build());
    let e = refuse(&Asm::new().mov_reg(0, 2).exit().build(), UninitRegister);
    assert_eq!(e.insn, 0);
    refuse(&Asm::new().exit().build(), UninitRegister); // r0 never set
    refuse(&epi(pro().alu_imm(alu::ADD, 5, 1)), UninitRegister);
}

#[test]
fn uninit_stack() {
    accept(
        &Asm::new()
            .st(DW, 10, -8, 3)
            .ldx(DW, 0, 10, -8)
            .exit()
            .build(),
    );
    refuse(&Asm::new().ldx(DW, 0, 10, -8).exit().build(), UninitStack);
    // Half-initialised slot.
    refuse(
        &Asm::new()
            .st(W, 10, -8, 3)
            .ldx(DW, 0, 10, -8)
            .exit()
            .build(),
        UninitStack,
    );
    accept(&Asm::new().st(W, 10, -8, 3).ldx(W, 0, 10, -8).exit().build());
}

#[test]
fn out_of_bounds_block_and_scratch() {
    accept(&epi(pro().ldx(DW, 4, 2, 4088)));
    refuse(&epi(pro().ldx(DW, 4, 2, 4089)), OutOfBounds);
    refuse(&epi(pro().ldx(B, 4, 2, -1)), OutOfBounds);
    accept(&epi(pro()
        .st(W, 3, 4092, 1)
        .ldx(W, 4, 3, 4092)
        .st(B, 3, 0, 1)));
    refuse(&epi(pro().st(W, 3, 4093, 1)), OutOfBounds);
    // Variable offset: index < 4096 is fine, <= 4096 is one byte too far.
    let idx = |op: u8, lim: i32| {
        epi(pro()
            .ldx(DW, 4, 3, 0)
            .jmp_imm(op, 4, lim, 2)
            .alu_reg(alu::ADD, 2, 4)
            .ldx(B, 5, 2, 0))
    };
    accept(&idx(jmp::JGE, 4096));
    refuse(&idx(jmp::JGT, 4096), OutOfBounds);
    refuse(&epi(pro().mov_imm(4, 1).ldx(DW, 5, 4, 0)), OutOfBounds); // scalar as pointer
}

#[test]
fn out_of_bounds_stack_and_ctx() {
    accept(&epi(Asm::new().st(DW, 10, -512, 1)));
    refuse(&epi(Asm::new().st(DW, 10, -520, 1)), OutOfBounds);
    refuse(&epi(Asm::new().st(B, 10, 0, 1)), OutOfBounds);
    accept(&epi(Asm::new().ldx(DW, 4, 1, 160)));
    refuse(&epi(Asm::new().ldx(DW, 4, 1, 161)), OutOfBounds);
    refuse(&epi(Asm::new().ldx(B, 4, 1, -1)), OutOfBounds);
}

#[test]
fn read_only() {
    refuse(&epi(pro().st(B, 2, 0, 1)), ReadOnly); // block
    accept(&epi(Asm::new().st(W, 1, 28, 1).st(W, 1, 32, 1).st(
        DW,
        1,
        40 + 15 * 8,
        9,
    )));
    refuse(&epi(Asm::new().st(W, 1, 24, 1)), ReadOnly); // hop
    refuse(&epi(Asm::new().st(DW, 1, 16, 1)), ReadOnly); // cur_lba
    refuse(&epi(Asm::new().st(DW, 1, 0, 1)), ReadOnly); // data pointer
    refuse(&epi(Asm::new().st(DW, 1, 32, 1)), ReadOnly); // n_next + pad
}

#[test]
fn pointer_arith() {
    // data + byte (0..=255) is bounded.
    accept(&epi(pro()
        .ldx(B, 4, 3, 0)
        .alu_reg(alu::ADD, 2, 4)
        .ldx(B, 5, 2, 0)));
    // data + u64 is not.
    refuse(
        &epi(pro().ldx(DW, 4, 3, 0).alu_reg(alu::ADD, 2, 4)),
        PointerArith,
    );
    refuse(&epi(pro().alu_imm(alu::MUL, 2, 2)), PointerArith);
    refuse(&epi(pro().alu32_imm(alu::ADD, 2, 2)), PointerArith);
    refuse(
        &epi(pro().ldx(B, 4, 3, 0).alu_reg(alu::ADD, 1, 4)),
        PointerArith,
    ); // ctx + var
    refuse(
        &epi(pro().ldx(B, 4, 3, 0).mov_reg(5, 10).alu_reg(alu::SUB, 5, 4)),
        PointerArith,
    ); // stack - var
    accept(&epi(pro().mov_reg(4, 2).alu_imm(alu::ADD, 4, 100).alu_reg(
        alu::SUB,
        4,
        2,
    ))); // ptr - ptr
}

#[test]
fn pointer_leak() {
    refuse(&epi(pro().stx(DW, 3, 0, 2)), PointerLeak); // into scratch
    refuse(&epi(pro().stx(DW, 1, 40, 2)), PointerLeak); // into ctx
    refuse(&pro().mov_reg(0, 2).exit().build(), PointerLeak); // r0
    refuse(&epi(pro().jmp_imm(jmp::JGT, 2, 5, 0)), PointerLeak); // compare with scalar
    refuse(&epi(pro().jmp_reg(jmp::JGT, 2, 3, 0)), PointerLeak); // compare across regions
    refuse(&epi(Asm::new().ldx(W, 4, 1, 0)), PointerLeak); // half of ctx->data
    refuse(&epi(pro().stx(W, 10, -8, 2)), PointerLeak); // partial spill
                                                        // Spill and reload keeps the pointer type; a partial overwrite makes its rest unreadable.
    accept(&epi(pro()
        .stx(DW, 10, -8, 2)
        .ldx(DW, 4, 10, -8)
        .ldx(B, 5, 4, 0)));
    refuse(
        &epi(pro().stx(DW, 10, -8, 2).st(B, 10, -8, 0).ldx(B, 5, 10, -7)),
        UninitStack,
    );
    // Comparing a pointer with 0 and same-region pointers is fine.
    accept(&epi(pro()
        .jmp_imm(jmp::JEQ, 2, 0, 0)
        .mov_reg(4, 2)
        .jmp_reg(jmp::JGT, 4, 2, 0)));
}

#[test]
fn unknown_helper() {
    refuse(&epi(Asm::new().call_helper(1)), UnknownHelper);
    // A local call is not a helper.
    accept(&Asm::new().call_local(1).exit().mov_imm(0, 2).exit().build());
}

#[test]
fn recursion_and_depth() {
    // main: call f; exit. f: call f; exit (recursion).
    refuse(
        &Asm::new()
            .call_local(1)
            .exit()
            .call_local(-1)
            .mov_imm(0, 1)
            .exit()
            .build(),
        Recursion,
    );
    // A chain of 8 frames is fine, 9 is refused.
    let chain = |frames: usize| {
        let mut a = Asm::new();
        for _ in 0..frames - 1 {
            a = a.call_local(1).exit();
        }
        a.mov_imm(0, 7).exit().build()
    };
    let v = accept(&chain(8));
    assert!(v.has_calls);
    refuse(&chain(9), VerifierLimit);
    // Combined stack of the call chain must fit 512 bytes.
    let stack = |main_use: i16| {
        Asm::new()
            .st(DW, 10, -main_use, 1)
            .call_local(1)
            .exit()
            .st(DW, 10, -64, 2)
            .mov_imm(0, 0)
            .exit()
            .build()
    };
    let v = accept(&stack(448));
    assert_eq!(v.stack_usage, vec![(0, 448), (3, 64)]);
    refuse(&stack(456), OutOfBounds);
    // A callee may read the caller's stack through a passed pointer, not return its own.
    accept(
        &Asm::new()
            .st(DW, 10, -8, 5)
            .mov_reg(1, 10)
            .alu_imm(alu::ADD, 1, -8)
            .call_local(1)
            .exit()
            .ldx(DW, 0, 1, 0)
            .exit()
            .build(),
    );
    refuse(
        &Asm::new()
            .call_local(1)
            .exit()
            .mov_reg(0, 10)
            .exit()
            .build(),
        PointerLeak,
    );
}

#[test]
fn loops_bounded_and_unbounded() {
    // r4 = 0; L: r4 += 1; if r4 < 10 goto L; r0 = 0; exit  -> 1 + 2 * 10 + 2 insns.
    let v = accept(&epi(Asm::new()
        .mov_imm(4, 0)
        .alu_imm(alu::ADD, 4, 1)
        .jmp_imm(jmp::JLT, 4, 10, -2)));
    assert_eq!(v.insn_bound, 23);
    // Data-dependent but bounded: n = byte; for (i = 0; i < n; i++).
    let v = accept(&epi(pro()
        .ldx(B, 4, 2, 0)
        .mov_imm(5, 0)
        .jmp_reg(jmp::JGE, 5, 4, 2)
        .alu_imm(alu::ADD, 5, 1)
        .ja(-3)));
    assert_eq!(v.insn_bound, 2 + 2 + 255 * 3 + 1 + 2);
    // L: r4 = byte; if r4 != 0 goto L  -> the state repeats.
    refuse(
        &epi(pro().ldx(B, 4, 2, 0).jmp_imm(jmp::JNE, 4, 0, -2)),
        UnboundedLoop,
    );
    // ja -1.
    refuse(&epi(Asm::new().ja(-1)), UnboundedLoop);
}

#[test]
fn insn_bound() {
    let counted = |n: i32| {
        epi(Asm::new()
            .mov_imm(4, 0)
            .alu_imm(alu::ADD, 4, 1)
            .jmp_imm(jmp::JLT, 4, n, -2))
    };
    assert_eq!(accept(&counted(40_000)).insn_bound, 80_003);
    refuse(&counted(60_000), InsnBound);
}

#[test]
fn verifier_limit() {
    // 8 unknown branches that each leave a different live constant in r5 (256 distinct
    // states), then a 100-iteration loop: about 256 * 200 processed instructions.
    let mut a = pro().mov_imm(5, 0);
    for i in 0..8 {
        a = a
            .ldx(B, 4, 2, i)
            .alu_imm(alu::LSH, 5, 1)
            .jmp_imm(jmp::JEQ, 4, 0, 1)
            .alu_imm(alu::ADD, 5, 1);
    }
    let code = a
        .mov_imm(6, 0)
        .alu_imm(alu::ADD, 6, 1)
        .jmp_imm(jmp::JLT, 6, 100, -2)
        .mov_reg(0, 5)
        .exit()
        .build();
    let ok = verify_with_limits(&code, 100_000, 1_000_000, Duration::from_secs(1)).unwrap();
    assert!(ok.processed > 256 * 200, "processed {}", ok.processed);
    let e =
        verify_with_limits(&code, 100_000, ok.processed - 1, Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.kind, VerifierLimit);
    // Time limit.
    let long = epi(Asm::new()
        .mov_imm(4, 0)
        .alu_imm(alu::ADD, 4, 1)
        .jmp_imm(jmp::JLT, 4, 5000, -2));
    let e = verify_with_limits(&long, 100_000, 1_000_000, Duration::ZERO).unwrap_err();
    assert_eq!(e.kind, VerifierLimit);
}

#[test]
fn jmp32_and_alu32() {
    // (u32)x < 100 bounds a zero-extended 32-bit value.
    accept(&epi(pro()
        .ldx(W, 4, 3, 0)
        .jmp32_imm(jmp::JGE, 4, 100, 2)
        .alu_reg(alu::ADD, 2, 4)
        .ldx(B, 5, 2, 0)));
    // 32-bit ALU zero-extends: w4 = byte + 4000 stays < 4096 + 255.
    refuse(
        &epi(pro()
            .ldx(B, 4, 3, 0)
            .alu32_imm(alu::ADD, 4, 4000)
            .alu_reg(alu::ADD, 2, 4)
            .ldx(B, 5, 2, 0)),
        OutOfBounds,
    );
    accept(&epi(pro()
        .ldx(B, 4, 3, 0)
        .alu32_imm(alu::ADD, 4, 3840)
        .alu_reg(alu::ADD, 2, 4)
        .ldx(B, 5, 2, 0)));
}

#[test]
fn shift32_amount_wraps() {
    // w4 = 8000 >> w5 with w5 in [32, 33]: the amount is masked to 0 or 1, so w4 is 8000
    // or 4000: the verifier must not conclude 0 (it widens to any u32 and refuses the add).
    let prog = |k: i32| {
        epi(pro()
            .ldx(B, 5, 3, 0)
            .alu_imm(alu::AND, 5, 1)
            .alu_imm(alu::ADD, 5, k)
            .mov_imm(4, 8000)
            .alu32_reg(alu::RSH, 4, 5)
            .alu_reg(alu::ADD, 2, 4)
            .ldx(B, 6, 2, 0))
    };
    refuse(&prog(32), PointerArith);
    accept(&prog(2)); // 8000 >> [2, 3] <= 2000
}

#[test]
fn mod32_disagreement_is_refused() {
    // w4 %= w5 with a 64-bit dividend and a possibly-zero divisor: rbpf keeps the upper
    // half, the kernel (and our interpreter) zero-extend.
    refuse(
        &epi(pro()
            .ldx(DW, 4, 3, 0)
            .ldx(B, 5, 3, 8)
            .alu32_reg(alu::MOD, 4, 5)),
        BadInsn,
    );
    accept(&epi(pro().ldx(W, 4, 3, 0).ldx(B, 5, 3, 8).alu32_reg(
        alu::MOD,
        4,
        5,
    )));
}

/// Constructs where rbpf's engines disagree with each other or with the kernel are
/// refused unless the operands make every reading agree (found by tests/differential.rs).
#[test]
fn engine_disagreements_refused() {
    // rbpf's interpreter zero-extends the immediate of a 64-bit unsigned compare.
    refuse(
        &epi(pro().ldx(DW, 4, 3, 0).jmp_imm(jmp::JLT, 4, -5, 0)),
        BadInsn,
    );
    accept(&epi(pro().ldx(H, 4, 3, 0).jmp_imm(jmp::JLT, 4, -5, 0))); // u16 < both readings
    accept(&epi(pro().ldx(DW, 4, 3, 0).jmp_imm(jmp::JSLT, 4, -5, 0))); // signed is fine
                                                                       // rbpf's JIT moves all 64 bits for `wX = wY`.
    refuse(
        &epi(pro().ldx(DW, 4, 3, 0).alu32_reg(alu::MOV, 5, 4)),
        BadInsn,
    );
    accept(&epi(pro().ldx(W, 4, 3, 0).alu32_reg(alu::MOV, 5, 4)));
    accept(&epi(pro().ldx(DW, 4, 3, 0).alu32_imm(alu::MOV, 5, -1)));
}
