//! Reference interpreter: faults instead of panics on unverified code, eBPF ALU semantics.

use lsvd_offload::asm::{Asm, Size::*};
use lsvd_offload::insn::{alu, jmp};
use lsvd_offload::interp::{run, Fault, Regions, BLOCK_ADDR, SCRATCH_ADDR};
use lsvd_offload::{abi, Engine, Program, Vm};

fn exec(code: &[u8], budget: u64) -> Result<u64, Fault> {
    let mut ctx = [0u8; abi::CTX_SIZE];
    abi::fill_ctx(&mut ctx, BLOCK_ADDR, SCRATCH_ADDR, 7, 0);
    let block = [3u8; 4096];
    let mut scratch = [0u8; 4096];
    let mut r = Regions {
        ctx: &mut ctx,
        block: &block,
        scratch: &mut scratch,
    };
    run(code, &[], &mut r, budget).map(|x| x.r0)
}

#[test]
fn faults_not_panics() {
    let pro = || Asm::new().ldx(DW, 2, 1, 0).ldx(DW, 3, 1, 8);
    assert!(matches!(
        exec(&pro().ldx(DW, 0, 2, 4089).exit().build(), 100),
        Err(Fault::OutOfBounds { pc: 2, .. })
    ));
    assert!(matches!(
        exec(&pro().st(B, 2, 0, 1).mov_imm(0, 0).exit().build(), 100),
        Err(Fault::ReadOnly { pc: 2, .. })
    ));
    assert!(matches!(
        exec(
            &Asm::new().st(DW, 1, 16, 1).mov_imm(0, 0).exit().build(),
            100
        ),
        Err(Fault::ReadOnly { .. })
    ));
    assert!(matches!(
        exec(&Asm::new().call_helper(1).exit().build(), 100),
        Err(Fault::Helper { pc: 0 })
    ));
    assert_eq!(
        exec(&Asm::new().ja(-1).build(), 1000),
        Err(Fault::InsnBudget { budget: 1000 })
    );
    assert!(matches!(
        exec(&Asm::new().ja(5).build(), 100),
        Err(Fault::BadInsn { .. })
    ));
    assert!(matches!(
        exec(&Asm::new().mov_imm(0, 1).build(), 100),
        Err(Fault::BadInsn { pc: 1 })
    ));
    assert!(matches!(
        exec(&Asm::new().call_local(-1).build(), 10_000),
        Err(Fault::CallDepth { .. })
    ));
    assert!(matches!(
        exec(&Asm::new().raw(0xff, 0, 0, 0, 0).build(), 100),
        Err(Fault::BadInsn { pc: 0 })
    ));
    assert!(matches!(
        exec(
            &Asm::new().mov_imm(0, 0).ldx(DW, 0, 0, 0).exit().build(),
            100
        ),
        Err(Fault::OutOfBounds { .. })
    ));
    // Reads ctx fields and the block.
    assert_eq!(
        exec(&Asm::new().ldx(DW, 0, 1, 16).exit().build(), 100),
        Ok(7)
    );
    assert_eq!(exec(&pro().ldx(B, 0, 2, 4095).exit().build(), 100), Ok(3));
}

/// Constant-folded ALU cases: our interpreter and rbpf (interpreter and JIT) agree.
#[test]
fn alu_semantics_match_rbpf() {
    let cases: Vec<(Asm, u64)> = vec![
        (
            Asm::new()
                .mov_imm(0, 9)
                .mov_imm(4, 0)
                .alu_reg(alu::DIV, 0, 4),
            0,
        ),
        (
            Asm::new()
                .mov_imm(0, 9)
                .mov_imm(4, 0)
                .alu_reg(alu::MOD, 0, 4),
            9,
        ),
        (Asm::new().mov_imm(0, -1).alu32_imm(alu::ADD, 0, 1), 0),
        (
            Asm::new().mov_imm(0, -1).alu32_imm(alu::MOV, 0, -1),
            0xffff_ffff,
        ),
        (
            Asm::new().mov_imm(0, -8).alu_imm(alu::ARSH, 0, 1),
            (-4i64) as u64,
        ),
        (
            Asm::new().mov_imm(0, -8).alu32_imm(alu::ARSH, 0, 1),
            0xffff_fffc,
        ),
        (
            Asm::new().mov_imm(0, 5).alu_imm(alu::NEG, 0, 0),
            (-5i64) as u64,
        ),
        (
            Asm::new()
                .lddw(0, 0x0102_0304_0506_0708)
                .raw(0xdc, 0, 0, 0, 64),
            0x0807_0605_0403_0201,
        ),
        (
            Asm::new()
                .lddw(0, 0x0102_0304_0506_0708)
                .raw(0xdc, 0, 0, 0, 16),
            0x0807,
        ),
        (
            Asm::new().mov_imm(0, 0x0506_0708).raw(0xd4, 0, 0, 0, 32),
            0x0506_0708,
        ),
        (
            Asm::new()
                .mov_imm(0, 1)
                .mov_imm(4, 65)
                .alu_reg(alu::LSH, 0, 4),
            2,
        ),
        (
            Asm::new()
                .mov_imm(0, 1)
                .mov_imm(4, 33)
                .alu32_reg(alu::LSH, 0, 4),
            2,
        ),
        (
            Asm::new()
                .mov_imm(0, 0)
                .mov_imm(4, -1)
                .jmp32_imm(jmp::JSGT, 4, 0, 1)
                .mov_imm(0, 3),
            3,
        ),
    ];
    for (i, (a, want)) in cases.into_iter().enumerate() {
        let code = a.st(W, 1, 28, 1).exit().build();
        assert_eq!(exec(&code, 100), Ok(want), "case {i}");
        let prog = Program::new(code).unwrap_or_else(|e| panic!("case {i}: {e}"));
        for engine in [Engine::Jit, Engine::RbpfInterp] {
            let mut vm = Vm::new(&prog, engine).unwrap();
            let (r0, out) = vm.run_hop(0, 0).unwrap();
            assert_eq!(r0, want, "case {i} {engine:?}");
            assert!(out.done);
        }
    }
}

/// rbpf's JIT treats le16/le32 as no-ops (no truncation); the verifier refuses them when
/// the value may be wider, so no accepted program can tell the engines apart.
#[test]
fn truncating_le_is_refused() {
    let code = Asm::new()
        .lddw(0, 0x0102_0304_0506_0708)
        .raw(0xd4, 0, 0, 0, 32)
        .st(W, 1, 28, 1)
        .exit()
        .build();
    assert_eq!(exec(&code, 100), Ok(0x0506_0708));
    let e = Program::new(code).unwrap_err();
    assert_eq!(e.kind, lsvd_offload::VerifyErrorKind::BadInsn);
}
