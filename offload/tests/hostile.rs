//! Start of the hostile suite: programs that must be refused, each with the right kind.
//! C sources are in examples/bpf/hostile/ (objects committed, rebuilt by examples/build.sh).

mod common;

use common::{obj_path, refuse};
use lsvd_offload::asm::{Asm, Size::*};
use lsvd_offload::insn::{alu, jmp};
use lsvd_offload::vm::{rbpf_verifier, registered};
use lsvd_offload::{load_section, LoadError, Program, VerifyErrorKind, VerifyErrorKind::*};

fn hostile(name: &str) -> Vec<u8> {
    let elf = std::fs::read(obj_path(&format!("hostile/{name}.o"))).unwrap();
    load_section(&elf, "offload").unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn c_programs_refused_with_the_right_kind() {
    let cases: &[(&str, VerifyErrorKind)] = &[
        ("unbounded_loop", UnboundedLoop),
        ("overbudget_loop", InsnBound),
        ("oob_read", OutOfBounds),
        ("oob_negative", OutOfBounds),
        ("oob_offbyone", OutOfBounds),
        ("write_block", ReadOnly),
        ("write_ctx_ro", ReadOnly),
        ("ptr_unbounded", PointerArith),
        ("helper_call", UnknownHelper),
        ("leak_ctx", PointerLeak),
        ("leak_scratch", PointerLeak),
        ("leak_r0", PointerLeak),
        ("recursion", Recursion),
    ];
    for (name, kind) in cases {
        let code = hostile(name);
        let e = refuse(&code, *kind);
        assert!(!e.msg.is_empty(), "{name}");
        // And the VM layer refuses it too (no Program, not registered for rbpf).
        assert!(Program::new(code.clone()).is_err(), "{name}");
        assert!(registered(&code).is_none());
        assert!(
            rbpf_verifier(&code).is_err(),
            "{name}: rbpf hook must refuse unverified code"
        );
    }
}

#[test]
fn relocations_refused_by_the_loader() {
    for name in ["global_var", "map_ref", "cross_section_call"] {
        let elf = std::fs::read(obj_path(&format!("hostile/{name}.o"))).unwrap();
        match load_section(&elf, "offload") {
            Err(LoadError::Relocation { .. }) => {}
            other => panic!("{name}: expected Relocation, got {other:?}"),
        }
    }
}

#[test]
fn malformed_elf_refused() {
    let good = std::fs::read(obj_path("list_walk.o")).unwrap();
    assert!(load_section(&good, "offload").is_ok());
    assert!(matches!(
        load_section(&good, "nope"),
        Err(LoadError::NoSection(_))
    ));
    assert!(matches!(
        load_section(&good[..10], "offload"),
        Err(LoadError::BadElf(_))
    ));
    assert!(matches!(
        load_section(b"not an elf at all, no", "offload"),
        Err(LoadError::BadElf(_))
    ));
    // Truncations at every 64 bytes: never a panic, always an error.
    for cut in (0..good.len()).step_by(64) {
        assert!(
            load_section(&good[..cut], "offload").is_err(),
            "cut at {cut}"
        );
    }
    // Wrong machine, class and byte order.
    let mut m = good.clone();
    m[18] = 62; // EM_X86_64
    assert!(matches!(
        load_section(&m, "offload"),
        Err(LoadError::BadElf(_))
    ));
    let mut c = good.clone();
    c[4] = 1; // ELFCLASS32
    assert!(matches!(
        load_section(&c, "offload"),
        Err(LoadError::BadElf(_))
    ));
    let mut d = good.clone();
    d[5] = 2; // big-endian
    assert!(matches!(
        load_section(&d, "offload"),
        Err(LoadError::BadElf(_))
    ));
    // Random byte flips: no panic.
    let mut x = 0x9e37_79b9_u32;
    for _ in 0..2000 {
        let mut f = good.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % f.len();
            f[i] ^= (x >> 8) as u8 | 1;
        }
        if let Ok(code) = load_section(&f, "offload") {
            let _ = lsvd_offload::verify(&code);
        }
    }
    // Over the size limits.
    let mut big = good.clone();
    big.resize(lsvd_offload::loader::MAX_OBJECT_BYTES + 1, 0);
    assert!(matches!(
        load_section(&big, "offload"),
        Err(LoadError::TooLarge(_))
    ));
}

fn pro() -> Asm {
    Asm::new().ldx(DW, 2, 1, 0).ldx(DW, 3, 1, 8)
}

fn epi(a: Asm) -> Vec<u8> {
    a.mov_imm(0, 0).exit().build()
}

#[test]
fn hand_assembled_programs_refused() {
    let cases: Vec<(&str, Vec<u8>, VerifyErrorKind)> = vec![
        ("goto -1", epi(Asm::new().ja(-1)), UnboundedLoop),
        (
            "spin on block byte",
            epi(pro().ldx(B, 4, 2, 0).jmp_imm(jmp::JNE, 4, 0, -2)),
            UnboundedLoop,
        ),
        (
            "200k-iteration counted loop",
            epi(Asm::new()
                .mov_imm(4, 0)
                .alu_imm(alu::ADD, 4, 1)
                .jmp_imm(jmp::JLT, 4, 200_000, -2)),
            InsnBound,
        ),
        (
            "block read 1 past the end",
            epi(pro().ldx(B, 4, 2, 4096)),
            OutOfBounds,
        ),
        (
            "scratch read before start",
            epi(pro().ldx(B, 4, 3, -1)),
            OutOfBounds,
        ),
        (
            "stack below 512",
            epi(Asm::new().st(DW, 10, -520, 0)),
            OutOfBounds,
        ),
        (
            "ctx past the end",
            epi(Asm::new().ldx(DW, 4, 1, 168)),
            OutOfBounds,
        ),
        ("write block", epi(pro().st(DW, 2, 0, 0)), ReadOnly),
        ("write ctx.hop", epi(Asm::new().st(W, 1, 24, 0)), ReadOnly),
        (
            "write ctx.scratch",
            epi(Asm::new().st(DW, 1, 8, 0)),
            ReadOnly,
        ),
        (
            "uninit register",
            Asm::new().mov_reg(0, 7).exit().build(),
            UninitRegister,
        ),
        (
            "uninit stack",
            Asm::new().ldx(DW, 0, 10, -16).exit().build(),
            UninitStack,
        ),
        (
            "pointer + unknown",
            epi(pro().ldx(DW, 4, 3, 0).alu_reg(alu::ADD, 3, 4)),
            PointerArith,
        ),
        (
            "pointer xor",
            epi(pro().alu_imm(alu::XOR, 2, 1)),
            PointerArith,
        ),
        ("helper 6", epi(Asm::new().call_helper(6)), UnknownHelper),
        (
            "leak via next_lba",
            epi(pro().stx(DW, 1, 40, 3)),
            PointerLeak,
        ),
        (
            "leak via r0",
            pro().mov_reg(0, 3).exit().build(),
            PointerLeak,
        ),
        (
            "leak via branch",
            epi(pro().jmp_imm(jmp::JGT, 3, 0x1000, 0)),
            PointerLeak,
        ),
        (
            "self recursion",
            Asm::new()
                .call_local(1)
                .exit()
                .call_local(-1)
                .mov_imm(0, 0)
                .exit()
                .build(),
            Recursion,
        ),
        (
            "lddw map reference",
            epi(pro().raw(0x18, 4, 1, 0, 3).raw(0, 0, 0, 0, 0)),
            BadInsn,
        ),
        (
            "truncated lddw",
            pro().raw(0x18, 4, 0, 0, 3).build(),
            BadInsn,
        ),
    ];
    for (name, code, kind) in cases {
        let e = lsvd_offload::verify(&code)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(e.kind, kind, "{name}: {e}");
    }
}
