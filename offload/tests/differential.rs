//! Differential oracle over random programs: every program the verifier accepts must run
//! in our interpreter without a fault and within the verifier's instruction bound, and
//! rbpf's JIT and interpreter must produce the same r0, scratch and ctx outcome.
//! (A start for the cargo-fuzz targets planned for later.)

use lsvd_offload::asm::{Asm, Size};
use lsvd_offload::insn::{alu, jmp};
use lsvd_offload::interp::{self, Regions, BLOCK_ADDR, SCRATCH_ADDR};
use lsvd_offload::{abi, verify, Engine, Program, Vm};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const SCALARS: [u8; 6] = [0, 4, 5, 6, 7, 8];
const SIZES: [Size; 4] = [Size::B, Size::H, Size::W, Size::DW];
const ALU_OPS: [u8; 12] = [
    alu::ADD,
    alu::SUB,
    alu::MUL,
    alu::DIV,
    alu::OR,
    alu::AND,
    alu::LSH,
    alu::RSH,
    alu::MOD,
    alu::XOR,
    alu::MOV,
    alu::ARSH,
];
const JMP_OPS: [u8; 11] = [
    jmp::JEQ,
    jmp::JGT,
    jmp::JGE,
    jmp::JSET,
    jmp::JNE,
    jmp::JSGT,
    jmp::JSGE,
    jmp::JLT,
    jmp::JLE,
    jmp::JSLT,
    jmp::JSLE,
];

fn imm(r: &mut Rng) -> i32 {
    match r.below(4) {
        0 => r.below(8) as i32,
        1 => r.below(4096) as i32,
        2 => -(r.below(100) as i32),
        _ => r.next() as i32,
    }
}

fn size_bytes(s: Size) -> i64 {
    match s {
        Size::B => 1,
        Size::H => 2,
        Size::W => 4,
        Size::DW => 8,
    }
}

/// One random program: prologue, `n` random items, epilogue.
fn gen(r: &mut Rng) -> Vec<u8> {
    let mut a = Asm::new().ldx(Size::DW, 2, 1, 0).ldx(Size::DW, 3, 1, 8);
    for (i, reg) in SCALARS.iter().enumerate() {
        a = a.mov_imm(*reg, i as i32 * 3 + 1);
    }
    let n = 1 + r.below(24) as usize;
    let mut items: Vec<Vec<u8>> = Vec::new();
    for _ in 0..n {
        let d = r.pick(&SCALARS);
        let s = r.pick(&SCALARS);
        let sz = r.pick(&SIZES);
        let it = match r.below(13) {
            11 | 12 => {
                // Range-checked variable offset: trusts the verifier's ALU ranges.
                let k = r.pick(&[255, 4088, 4095, 4096, 8191]);
                Asm::new()
                    .mov_reg(9, s)
                    .jmp_imm(jmp::JGT, 9, k, 2)
                    .alu_reg(alu::ADD, 9, 2)
                    .ldx(sz, d, 9, 0)
            }
            0 | 1 => {
                let op = r.pick(&ALU_OPS);
                let k = match op {
                    alu::LSH | alu::RSH | alu::ARSH => r.below(32) as i32,
                    alu::DIV | alu::MOD => 1 + r.below(9) as i32,
                    _ => imm(r),
                };
                match r.below(4) {
                    0 => Asm::new().alu_imm(op, d, k),
                    1 => Asm::new().alu32_imm(op, d, k),
                    2 => Asm::new().alu32_reg(op, d, s),
                    _ => Asm::new().alu_reg(op, d, s),
                }
            }
            2 => {
                // Block or scratch load at a fixed offset near the edges.
                let base = if r.below(2) == 0 { 2 } else { 3 };
                let off = if r.below(2) == 0 {
                    r.below(64) as i16
                } else {
                    4096 - r.below(16) as i16
                };
                Asm::new().ldx(sz, d, base, off)
            }
            3 => {
                // Variable-offset block load: r9 = data + (s & mask).
                let mask = r.pick(&[0xff, 0xfff, 0xff8, 0x1fff]);
                Asm::new()
                    .mov_reg(9, s)
                    .alu_imm(alu::AND, 9, mask)
                    .alu_reg(alu::ADD, 9, 2)
                    .ldx(sz, d, 9, 0)
            }
            4 => {
                let off = if r.below(2) == 0 {
                    8 * r.below(16) as i16
                } else {
                    4096 - size_bytes(sz) as i16
                };
                if r.below(2) == 0 {
                    Asm::new().stx(sz, 3, off, s)
                } else {
                    Asm::new().st(sz, 3, off, imm(r))
                }
            }
            5 => {
                let off = -8 * (1 + r.below(8) as i16);
                Asm::new().stx(Size::DW, 10, off, s).ldx(sz, d, 10, off)
            }
            6 => {
                let k = r.below(3);
                match k {
                    0 => Asm::new().st(Size::W, 1, 28, r.below(2) as i32),
                    1 => Asm::new().stx(Size::W, 1, 32, s),
                    _ => Asm::new().stx(Size::DW, 1, 40 + 8 * r.below(16) as i16, s),
                }
            }
            7 | 8 => {
                // Forward conditional jump; offset fixed up below.
                let op = r.pick(&JMP_OPS);
                let off = 1 + r.below(4) as i16;
                match r.below(3) {
                    0 => Asm::new().jmp_imm(op, d, imm(r), off),
                    1 => Asm::new().jmp_reg(op, d, s, off),
                    _ => Asm::new().jmp32_imm(op, d, imm(r), off),
                }
            }
            9 => {
                // Bounded loop: r8 counts down from k; body touches the block.
                let k = 1 + r.below(40) as i32;
                Asm::new()
                    .mov_imm(8, k)
                    .ldx(Size::B, 7, 2, 0)
                    .alu_reg(alu::ADD, 0, 7)
                    .alu_imm(alu::SUB, 8, 1)
                    .jmp_imm(jmp::JNE, 8, 0, -4)
            }
            _ => Asm::new().ldx(Size::W, d, 1, r.pick(&[16, 20, 24, 28, 32, 36, 40])),
        };
        items.push(it.build());
    }
    // Fix forward jumps so they stay inside the program (at most onto the final exit).
    let total: usize = items.iter().map(|i| i.len() / 8).sum();
    let mut pos = 0usize;
    let mut body = Vec::new();
    for it in &mut items {
        let len = it.len() / 8;
        let last = (len - 1) * 8;
        let is_fwd_jump = matches!(it[last] & 0x07, 0x05 | 0x06)
            && i16::from_le_bytes([it[last + 2], it[last + 3]]) > 0
            && len == 1;
        if is_fwd_jump {
            let room = (total - pos - 1) as i16; // slots after this one, before the exit
            let off = i16::from_le_bytes([it[last + 2], it[last + 3]]).min(room);
            it[last + 2..last + 4].copy_from_slice(&off.to_le_bytes());
        }
        pos += len;
        body.extend_from_slice(it);
    }
    let mut code = a.build();
    code.extend_from_slice(&body);
    code.extend_from_slice(&Asm::new().exit().build());
    code
}

/// Runs `code` (if accepted) in all engines on random block and scratch and asserts the
/// oracle property. Returns whether the verifier accepted it.
fn check(code: &[u8], r: &mut Rng) -> bool {
    let Ok(v) = verify(code) else { return false };
    let mut block = [0u8; 4096];
    let mut scratch = [0u8; 4096];
    for b in block.iter_mut().chain(scratch.iter_mut()) {
        *b = r.next() as u8;
    }
    // Ours, metered with the verifier's bound.
    let mut ctx = [0u8; abi::CTX_SIZE];
    abi::fill_ctx(&mut ctx, BLOCK_ADDR, SCRATCH_ADDR, 5, 0);
    let mut s_ours = scratch;
    let mut regions = Regions {
        ctx: &mut ctx,
        block: &block,
        scratch: &mut s_ours,
    };
    let res = interp::run(code, &v.stack_usage, &mut regions, v.insn_bound)
        .unwrap_or_else(|f| panic!("accepted program faulted: {f}\n{}", hex(code)));
    assert!(res.executed <= v.insn_bound);
    let out_ours = abi::read_outcome(&ctx);
    let prog = Program::new(code.to_vec()).unwrap();
    for engine in [Engine::Jit, Engine::RbpfInterp] {
        let mut vm = Vm::new(&prog, engine).unwrap();
        *vm.block_mut() = block;
        *vm.scratch_mut() = scratch;
        let (r0, out) = vm.run_hop(5, 0).unwrap();
        assert_eq!(r0, res.r0, "{engine:?} r0\n{}", hex(code));
        assert_eq!(out, out_ours, "{engine:?} ctx outcome\n{}", hex(code));
        let diff = vm
            .scratch()
            .iter()
            .zip(s_ours.iter())
            .position(|(x, y)| x != y);
        assert_eq!(diff, None, "{engine:?} scratch differs\n{}", hex(code));
    }
    true
}

fn env(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

#[test]
fn accepted_programs_agree_and_stay_in_bounds() {
    // OFFLOAD_DIFF_SEED / OFFLOAD_DIFF_ITERS allow longer ad-hoc runs.
    let mut r = Rng(env("OFFLOAD_DIFF_SEED", 0x2545_f491_4f6c_dd1d) | 1);
    let (mut accepted, mut total) = (0, 0);
    for _ in 0..env("OFFLOAD_DIFF_ITERS", 2000) {
        let code = gen(&mut r);
        total += 1;
        if check(&code, &mut r) {
            accepted += 1;
        }
    }
    eprintln!("{accepted} of {total} random programs accepted");
    assert!(
        accepted * 5 > total,
        "generator too hostile: only {accepted} of {total} accepted"
    );
}

/// Mutations of the clang-built examples (real loop shapes): flip one field of one
/// instruction at a time.
#[test]
fn mutated_examples_agree_and_stay_in_bounds() {
    let mut r = Rng(env("OFFLOAD_DIFF_SEED", 0x9e37_79b9_7f4a_7c15) | 1);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bpf");
    let mut accepted = 0;
    let iters = env("OFFLOAD_DIFF_ITERS", 2000) / 10;
    for name in [
        "btree_lookup.o",
        "list_walk.o",
        "chain_sum.o",
        "local_calls.o",
    ] {
        let elf = std::fs::read(dir.join(name)).unwrap();
        let base = lsvd_offload::load_section(&elf, "offload").unwrap();
        for _ in 0..iters {
            let mut code = base.clone();
            let n = code.len() / 8;
            for _ in 0..1 + r.below(2) {
                let i = r.below(n as u64) as usize * 8;
                match r.below(4) {
                    0 => code[i + 1] = (r.below(11) as u8) | ((r.below(11) as u8) << 4),
                    1 => {
                        let off = (i16::from_le_bytes([code[i + 2], code[i + 3]]) as i64
                            + r.below(17) as i64
                            - 8) as i16;
                        code[i + 2..i + 4].copy_from_slice(&off.to_le_bytes());
                    }
                    2 => code[i + 4..i + 8].copy_from_slice(&(imm(&mut r)).to_le_bytes()),
                    _ => {
                        code[i] = r.pick(&[
                            0x07, 0x0f, 0x17, 0x1f, 0x27, 0x57, 0x5f, 0x67, 0x77, 0xbf, 0x61, 0x69,
                            0x71, 0x79, 0x2d, 0x3d, 0xad, 0xbd, 0x15, 0x55, 0x05,
                        ])
                    }
                }
            }
            if check(&code, &mut r) {
                accepted += 1;
            }
        }
    }
    eprintln!("{accepted} of {} mutants accepted", 5 * iters);
    assert!(accepted > 0);
}

fn hex(code: &[u8]) -> String {
    code.iter().map(|b| format!("{b:02x}")).collect()
}

/// Arbitrary bytes (biased toward real opcodes): the verifier and our interpreter return
/// errors or results, never panic; anything accepted satisfies the oracle.
#[test]
fn random_bytes_never_panic() {
    const OPS: [u8; 24] = [
        0x07, 0x0f, 0x17, 0x1f, 0x24, 0x2c, 0x37, 0x57, 0x67, 0x77, 0xb7, 0xbf, 0xb4, 0xbc, 0x61,
        0x79, 0x62, 0x7b, 0x05, 0x15, 0x2d, 0x85, 0x95, 0x18,
    ];
    let mut r = Rng(env("OFFLOAD_DIFF_SEED", 0xdead_beef_cafe_f00d) | 1);
    for _ in 0..env("OFFLOAD_DIFF_ITERS", 2000) {
        let n = 1 + r.below(40) as usize;
        let mut code = vec![0u8; n * 8];
        for c in code.chunks_mut(8) {
            for b in c.iter_mut() {
                *b = r.next() as u8;
            }
            if r.below(4) != 0 {
                c[0] = r.pick(&OPS);
                c[1] &= 0x9a; // registers mostly in range
                c[2] = (r.below(8) as u8).wrapping_sub(3);
                c[3] = if c[2] > 0x80 { 0xff } else { 0 };
            }
        }
        if r.below(2) == 0 {
            code.extend_from_slice(&Asm::new().mov_imm(0, 0).exit().build());
        }
        let _ = check(&code, &mut r);
        // Our interpreter on unverified code: a result or a fault, never a panic.
        let mut ctx = [0u8; abi::CTX_SIZE];
        abi::fill_ctx(&mut ctx, BLOCK_ADDR, SCRATCH_ADDR, 1, 0);
        let block = [0u8; 4096];
        let mut scratch = [0u8; 4096];
        let mut regions = Regions {
            ctx: &mut ctx,
            block: &block,
            scratch: &mut scratch,
        };
        let _ = interp::run(&code, &[], &mut regions, 10_000);
    }
}
