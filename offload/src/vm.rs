//! VM engines over a verified [`Program`].
//!
//! Invariants:
//! - A [`Program`] exists only for code our verifier accepted; its verification result is
//!   kept in a process-wide registry keyed by the code bytes (hashed by the map). rbpf is
//!   given [`rbpf_verifier`] through `set_verifier`; it re-runs the structural check and
//!   refuses code absent from the registry, and it runs again before every JIT compile.
//! - rbpf engines run only verified code, so they need no run-time checks; our [`interp`]
//!   engine additionally meters instructions (budget = the verifier's bound) and checks
//!   every access.
//! - rbpf's x86 JIT has one 4 KiB code page and panics on larger code: compile runs under
//!   `catch_unwind` and falls back to rbpf's interpreter. Programs with bpf-to-bpf calls
//!   also use rbpf's interpreter, because rbpf's JIT keeps one r10 for all frames (callee
//!   stack slots would overlap the caller's). rbpf's cranelift engine is never used.

use std::collections::HashMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use crate::abi::{fill_ctx, read_outcome, HopOutcome, BLOCK_SIZE, CTX_SIZE, SCRATCH_SIZE};
use crate::interp::{self, Fault, Regions, BLOCK_ADDR, SCRATCH_ADDR};
use crate::verifier::{self, structural_check, Verified, VerifyError};

/// Execution engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// rbpf's x86-64 JIT (falls back to [`Engine::RbpfInterp`] when it cannot compile).
    Jit,
    /// rbpf's interpreter.
    RbpfInterp,
    /// Our metered, bounds-checked interpreter.
    Interp,
}

/// Errors while setting up or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Our interpreter stopped the program.
    #[error("program fault: {0}")]
    Fault(#[from] Fault),
    /// rbpf refused or failed.
    #[error("rbpf: {0}")]
    Rbpf(String),
}

/// Code bytes → (number of live [`Program`]s, verification result).
type Registry = Mutex<HashMap<Vec<u8>, (usize, Verified)>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Verifier hook installed into rbpf with `set_verifier`: structural check plus "this exact
/// code was accepted by the full verifier".
pub fn rbpf_verifier(prog: &[u8]) -> Result<(), io::Error> {
    structural_check(prog)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let reg = registry()
        .lock()
        .map_err(|_| io::Error::other("verifier registry poisoned"))?;
    if reg.contains_key(prog) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "program was not accepted by the lsvd verifier",
        ))
    }
}

/// Verification result of registered code, if any.
pub fn registered(prog: &[u8]) -> Option<Verified> {
    registry().lock().ok()?.get(prog).map(|(_, v)| v.clone())
}

/// Verified program code.
#[derive(Debug)]
pub struct Program {
    code: Vec<u8>,
    verified: Verified,
}

impl Program {
    /// Verifies `code` and registers it for the rbpf engines.
    pub fn new(code: Vec<u8>) -> Result<Program, VerifyError> {
        Program::with_limits(
            code,
            verifier::MAX_INSN_BOUND,
            verifier::MAX_PROCESSED,
            verifier::MAX_TIME,
        )
    }

    /// Like [`Program::new`] with lower verifier limits (per-hop instruction bound,
    /// processed instructions, time); values above the defaults are lowered to them.
    pub fn with_limits(
        code: Vec<u8>,
        insn_bound: u64,
        processed: u64,
        time: std::time::Duration,
    ) -> Result<Program, VerifyError> {
        let verified = verifier::verify_with_limits(
            &code,
            insn_bound.min(verifier::MAX_INSN_BOUND),
            processed.min(verifier::MAX_PROCESSED),
            time.min(verifier::MAX_TIME),
        )?;
        if let Ok(mut reg) = registry().lock() {
            reg.entry(code.clone())
                .or_insert_with(|| (0, verified.clone()))
                .0 += 1;
        }
        Ok(Program { code, verified })
    }

    /// Instruction bytes.
    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// What the verifier proved.
    pub fn verified(&self) -> &Verified {
        &self.verified
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(mut reg) = registry().lock() {
            if let Some(e) = reg.get_mut(&self.code) {
                e.0 -= 1;
                if e.0 == 0 {
                    reg.remove(&self.code);
                }
            }
        }
    }
}

/// rbpf stack-usage calculator: the verifier's per-function usage. rbpf passes its
/// `Box<dyn Any>` itself as the `dyn Any`, so unwrap that layer first.
fn stack_calc(_prog: &[u8], pc: usize, data: &mut dyn std::any::Any) -> u16 {
    type Usage = Vec<(usize, u16)>;
    let usage = match data.downcast_ref::<Box<dyn std::any::Any>>() {
        Some(inner) => inner.downcast_ref::<Usage>(),
        None => data.downcast_ref::<Usage>(),
    };
    usage
        .and_then(|v| v.iter().find(|(p, _)| *p == pc).map(|(_, u)| *u))
        .unwrap_or(0)
}

/// Bytes of x86 code rbpf's JIT can hold (one page).
pub const JIT_CODE_BYTES: usize = 4096;

/// Upper estimate of the x86 bytes rbpf's JIT emits for `code` (measured per instruction
/// kind: division/modulo up to ~40 bytes, loads ~5, ALU-immediate ~8, compare+jump ~13),
/// so programs that would overflow its single page never reach it.
pub fn jit_size_estimate(code: &[u8]) -> usize {
    use crate::insn::{alu, class, Insn};
    let mut total = 96; // prologue + epilogue
    for i in 0..crate::insn::insn_count(code) {
        let Some(ins) = Insn::at(code, i) else { break };
        total += match ins.class() {
            class::ALU | class::ALU64 => match ins.op & 0xf0 {
                alu::DIV | alu::MOD => 48,
                alu::MUL => 32,
                _ => 12,
            },
            class::JMP | class::JMP32 => 16,
            _ => 12,
        };
    }
    total
}

/// JIT-compiles under `catch_unwind` (rbpf panics when the code overflows its page);
/// false when the JIT refused or panicked.
fn try_jit(vm: &mut rbpf::EbpfVmMbuff<'_>) -> bool {
    match catch_unwind(AssertUnwindSafe(|| vm.jit_compile())) {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!("rbpf JIT refused the program, using its interpreter: {e}");
            false
        }
        Err(_) => {
            tracing::warn!("rbpf JIT panicked (code too large?), using its interpreter");
            false
        }
    }
}

/// Buffers of one hop; boxed so their addresses stay fixed for rbpf's allowed memory.
struct HopBuffers {
    ctx: [u8; CTX_SIZE],
    block: [u8; BLOCK_SIZE],
    scratch: [u8; SCRATCH_SIZE],
}

/// A program instantiated on one engine, with its own ctx, block and scratch buffers.
pub struct Vm<'p> {
    prog: &'p Program,
    engine: Engine,
    rbpf: Option<rbpf::EbpfVmMbuff<'p>>,
    bufs: Box<HopBuffers>,
}

fn rb(e: io::Error) -> VmError {
    VmError::Rbpf(e.to_string())
}

impl<'p> Vm<'p> {
    /// Instantiates `prog` on `engine` (see the module doc for fallbacks; check
    /// [`Vm::engine`] for the engine actually used).
    pub fn new(prog: &'p Program, engine: Engine) -> Result<Vm<'p>, VmError> {
        let bufs = Box::new(HopBuffers {
            ctx: [0; CTX_SIZE],
            block: [0; BLOCK_SIZE],
            scratch: [0; SCRATCH_SIZE],
        });
        if engine == Engine::Interp {
            return Ok(Vm {
                prog,
                engine,
                rbpf: None,
                bufs,
            });
        }
        let mut vm = rbpf::EbpfVmMbuff::new(None).map_err(rb)?;
        vm.set_verifier(rbpf_verifier).map_err(rb)?;
        vm.set_stack_usage_calculator(stack_calc, Box::new(prog.verified.stack_usage.clone()))
            .map_err(rb)?;
        vm.set_program(&prog.code).map_err(rb)?;
        let b = bufs.block.as_ptr() as u64;
        let s = bufs.scratch.as_ptr() as u64;
        vm.register_allowed_memory(b..b + BLOCK_SIZE as u64);
        vm.register_allowed_memory(s..s + SCRATCH_SIZE as u64);
        let mut actual = Engine::RbpfInterp;
        let fits = jit_size_estimate(&prog.code) <= JIT_CODE_BYTES;
        if engine == Engine::Jit && !prog.verified.has_calls && fits {
            rbpf_verifier(&prog.code).map_err(rb)?;
            if try_jit(&mut vm) {
                actual = Engine::Jit;
            }
        }
        Ok(Vm {
            prog,
            engine: actual,
            rbpf: Some(vm),
            bufs,
        })
    }

    /// Engine actually in use.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The program.
    pub fn program(&self) -> &'p Program {
        self.prog
    }

    /// The block buffer the next hop will see.
    pub fn block_mut(&mut self) -> &mut [u8; BLOCK_SIZE] {
        &mut self.bufs.block
    }

    /// Scratch (persistent across hops).
    pub fn scratch(&self) -> &[u8; SCRATCH_SIZE] {
        &self.bufs.scratch
    }

    /// Scratch, writable (the executor copies arguments in before hop 0).
    pub fn scratch_mut(&mut self) -> &mut [u8; SCRATCH_SIZE] {
        &mut self.bufs.scratch
    }

    /// Runs one hop over the current block; returns r0 and what the program asked for.
    pub fn run_hop(&mut self, cur_lba: u64, hop: u32) -> Result<(u64, HopOutcome), VmError> {
        let bufs = &mut *self.bufs;
        let r0 = match (&self.rbpf, self.engine) {
            (Some(vm), Engine::Jit) => {
                let (b, s) = (bufs.block.as_ptr() as u64, bufs.scratch.as_ptr() as u64);
                fill_ctx(&mut bufs.ctx, b, s, cur_lba, hop);
                // SAFETY: the program passed our verifier (registry checked by the rbpf
                // hook at set_program and before compiling), so every access it makes is
                // inside ctx, block, scratch or its stack, and it terminates.
                unsafe { vm.execute_program_jit(&mut [], &mut bufs.ctx) }.map_err(rb)?
            }
            (Some(vm), _) => {
                let (b, s) = (bufs.block.as_ptr() as u64, bufs.scratch.as_ptr() as u64);
                fill_ctx(&mut bufs.ctx, b, s, cur_lba, hop);
                vm.execute_program(&[], &bufs.ctx).map_err(rb)?
            }
            (None, _) => {
                fill_ctx(&mut bufs.ctx, BLOCK_ADDR, SCRATCH_ADDR, cur_lba, hop);
                let mut regions = Regions {
                    ctx: &mut bufs.ctx,
                    block: &bufs.block,
                    scratch: &mut bufs.scratch,
                };
                let v = &self.prog.verified;
                interp::run(&self.prog.code, &v.stack_usage, &mut regions, v.insn_bound)?.r0
            }
        };
        Ok((r0, read_outcome(&bufs.ctx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asm::{Asm, Size};
    use crate::insn::alu;

    fn divs(n: usize) -> Program {
        let mut a = Asm::new().mov_imm(0, 5).mov_imm(4, 3);
        for _ in 0..n {
            a = a.alu_reg(alu::DIV, 0, 4);
        }
        Program::new(a.st(Size::W, 1, 28, 1).exit().build()).unwrap()
    }

    #[test]
    fn jit_panic_is_caught() {
        let p = divs(400); // about 16 KiB of x86 code
        assert!(jit_size_estimate(p.code()) > JIT_CODE_BYTES);
        let mut vm = rbpf::EbpfVmMbuff::new(None).unwrap();
        vm.set_verifier(rbpf_verifier).unwrap();
        vm.set_program(p.code()).unwrap();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let ok = try_jit(&mut vm);
        std::panic::set_hook(prev);
        assert!(!ok);
        // Through Vm::new the estimate avoids the JIT and the result is unchanged.
        let mut v = Vm::new(&p, Engine::Jit).unwrap();
        assert_eq!(v.engine(), Engine::RbpfInterp);
        assert_eq!(v.run_hop(0, 0).unwrap().0, 0);
    }

    #[test]
    fn estimate_admits_only_code_that_compiles() {
        for n in [10, 50, 70, 80, 90] {
            let p = divs(n);
            let v = Vm::new(&p, Engine::Jit).unwrap();
            let fits = jit_size_estimate(p.code()) <= JIT_CODE_BYTES;
            assert_eq!(v.engine() == Engine::Jit, fits, "{n} divisions");
        }
    }
}
