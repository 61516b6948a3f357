//! Chain executor: LBA checks before reads, n_next, hop and time limits, I/O errors.

mod common;

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use common::load;
use lsvd_offload::asm::{Asm, Size::*};
use lsvd_offload::chain::{MemSource, MAX_HOPS_CAP};
use lsvd_offload::{run_chain, BlockSource, ChainError, ChainLimits, Engine, Program, Vm};

/// MemSource that records every LBA read and can fail one.
struct Recording {
    inner: MemSource,
    reads: Mutex<Vec<u64>>,
    fail_at: Option<u64>,
}

impl BlockSource for Recording {
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
    fn read_block(&self, lba: u64, buf: &mut [u8; 4096]) -> Result<(), io::Error> {
        self.reads.lock().unwrap().push(lba);
        if Some(lba) == self.fail_at {
            return Err(io::Error::other("injected"));
        }
        self.inner.read_block(lba, buf)
    }
}

fn node(key: u64, value: u64, next: u64) -> [u8; 4096] {
    let mut b = [0u8; 4096];
    for (i, w) in [key, value, next].iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    b
}

/// List 1 -> 2 -> 3 (end) with keys 10, 20, 30, plus `extra` blocks.
fn list(next_of_3: u64, fail_at: Option<u64>) -> Recording {
    let blocks = vec![
        [0u8; 4096],
        node(10, 1, 2),
        node(20, 2, 3),
        node(30, 3, next_of_3),
    ];
    Recording {
        inner: MemSource { blocks },
        reads: Mutex::new(Vec::new()),
        fail_at,
    }
}

fn args(key: u64) -> Vec<u8> {
    key.to_le_bytes().to_vec()
}

#[test]
fn start_lba_checked_before_any_read() {
    let prog = Program::new(load("list_walk.o")).unwrap();
    let mut vm = Vm::new(&prog, Engine::Interp).unwrap();
    let src = list(0, None);
    let e = run_chain(&mut vm, &src, 4, &args(10), &ChainLimits::default()).unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::LbaOutOfRange {
                hop: 0,
                lba: 4,
                block_count: 4
            }
        ),
        "{e}"
    );
    assert!(src.reads.lock().unwrap().is_empty());
}

#[test]
fn next_lba_checked_before_reading_it() {
    let prog = Program::new(load("list_walk.o")).unwrap();
    for engine in [Engine::Jit, Engine::RbpfInterp, Engine::Interp] {
        let mut vm = Vm::new(&prog, engine).unwrap();
        let src = list(1 << 40, None);
        let e = run_chain(&mut vm, &src, 1, &args(99), &ChainLimits::default()).unwrap_err();
        assert!(
            matches!(e, ChainError::LbaOutOfRange { hop: 2, lba, .. } if lba == 1 << 40),
            "{e}"
        );
        assert_eq!(*src.reads.lock().unwrap(), vec![1, 2, 3]);
    }
}

#[test]
fn hop_limit_on_a_cycle() {
    let prog = Program::new(load("list_walk.o")).unwrap();
    let mut vm = Vm::new(&prog, Engine::Jit).unwrap();
    let src = list(1, None); // 3 -> 1: a cycle
    let e = run_chain(&mut vm, &src, 1, &args(99), &ChainLimits::default()).unwrap_err();
    assert!(matches!(e, ChainError::HopLimit { limit: 64 }), "{e}");
    assert_eq!(src.reads.lock().unwrap().len(), 64);
    let src = list(1, None);
    let lim = ChainLimits {
        max_hops: 5,
        ..ChainLimits::default()
    };
    let e = run_chain(&mut vm, &src, 1, &args(99), &lim).unwrap_err();
    assert!(matches!(e, ChainError::HopLimit { limit: 5 }), "{e}");
    assert_eq!(*src.reads.lock().unwrap(), vec![1, 2, 3, 1, 2]);
    let lim = ChainLimits {
        max_hops: MAX_HOPS_CAP + 1,
        ..ChainLimits::default()
    };
    assert!(matches!(
        run_chain(&mut vm, &src, 1, &args(99), &lim),
        Err(ChainError::BadLimit(_))
    ));
    // Found within the limit.
    let r = run_chain(
        &mut vm,
        &list(1, None),
        1,
        &args(30),
        &ChainLimits::default(),
    )
    .unwrap();
    assert_eq!((r.r0, r.hops), (1, 3));
}

#[test]
fn bad_next() {
    // Not done, n_next = 0.
    let p0 = Program::new(Asm::new().mov_imm(0, 0).exit().build()).unwrap();
    // Not done, n_next = 2.
    let p2 = Program::new(Asm::new().st(W, 1, 32, 2).mov_imm(0, 0).exit().build()).unwrap();
    for (p, want) in [(&p0, 0), (&p2, 2)] {
        for engine in [Engine::Jit, Engine::Interp] {
            let mut vm = Vm::new(p, engine).unwrap();
            let e =
                run_chain(&mut vm, &list(0, None), 1, &[], &ChainLimits::default()).unwrap_err();
            assert!(
                matches!(e, ChainError::BadNext { hop: 0, n_next } if n_next == want),
                "{e}"
            );
        }
    }
}

#[test]
fn io_error_reported_with_hop_and_lba() {
    let prog = Program::new(load("list_walk.o")).unwrap();
    let mut vm = Vm::new(&prog, Engine::Interp).unwrap();
    let e = run_chain(
        &mut vm,
        &list(0, Some(2)),
        1,
        &args(30),
        &ChainLimits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ChainError::IoError { hop: 1, lba: 2, .. }),
        "{e}"
    );
}

#[test]
fn time_limits() {
    let prog = Program::new(load("list_walk.o")).unwrap();
    let mut vm = Vm::new(&prog, Engine::Interp).unwrap();
    let lim = ChainLimits {
        vm_time: Duration::ZERO,
        ..ChainLimits::default()
    };
    let e = run_chain(&mut vm, &list(0, None), 1, &args(30), &lim).unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::Timeout {
                hop: 0,
                what: "vm",
                ..
            }
        ),
        "{e}"
    );
    let lim = ChainLimits {
        total_time: Duration::ZERO,
        ..ChainLimits::default()
    };
    let e = run_chain(&mut vm, &list(0, None), 1, &args(30), &lim).unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::Timeout {
                hop: 0,
                what: "total",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn args_copied_into_zeroed_scratch() {
    // r0 = scratch[0..8] + scratch[4088..4096]; done.
    let code = Asm::new()
        .ldx(DW, 3, 1, 8)
        .ldx(DW, 0, 3, 0)
        .ldx(DW, 4, 3, 4088)
        .alu_reg(0x00, 0, 4)
        .st(W, 1, 28, 1)
        .exit()
        .build();
    let prog = Program::new(code).unwrap();
    let mut vm = Vm::new(&prog, Engine::Jit).unwrap();
    vm.scratch_mut().fill(0xff); // leftovers from an earlier chain must not leak
    let r = run_chain(
        &mut vm,
        &list(0, None),
        1,
        &args(41),
        &ChainLimits::default(),
    )
    .unwrap();
    assert_eq!(r.r0, 41);
    let too_big = vec![0u8; 4097];
    assert!(matches!(
        run_chain(
            &mut vm,
            &list(0, None),
            1,
            &too_big,
            &ChainLimits::default()
        ),
        Err(ChainError::ArgsTooLarge(4097))
    ));
}
