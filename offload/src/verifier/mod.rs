//! Our verifier for the offload ABI (see [`crate::abi`]).
//!
//! It proves, for every path, memory safety (each load/store inside ctx, block, scratch or
//! stack with the right permission), that no pointer value escapes (into ctx, scratch, or
//! r0 at exit), that no uninitialised register or stack byte is read, and termination with
//! a worst-case instruction count per hop.
//!
//! Design: path exploration in the style of the Linux verifier. Register values are
//! abstracted as [`state::Val`] (pointers with interval offsets, scalars with unsigned and
//! signed intervals). Conditional jumps decided by the intervals follow one edge; others
//! fork with refined intervals. Exploration is depth-first over "segments" that start at
//! jump targets; each finished segment records its state and its worst-case remaining
//! instruction count, so a later state covered by a recorded one is pruned with a known
//! remaining count, and a state covered by one of its own ancestors at the same
//! instruction is an unbounded loop. The worst-case hop length is the longest explored
//! path. Limits: 1,000,000 processed instructions or 1 s → `VerifierLimit`; a path over
//! [`MAX_INSN_BOUND`] → `InsnBound`.

mod explore;
mod liveness;
pub mod scalar;
pub mod state;
mod structural;

use std::time::Duration;

pub use explore::verify_with_limits;
pub use structural::structural_check;

/// Largest accepted worst-case instruction count per hop.
pub const MAX_INSN_BOUND: u64 = 100_000;
/// Largest number of instructions the verifier processes before giving up.
pub const MAX_PROCESSED: u64 = 1_000_000;
/// Largest verification time.
pub const MAX_TIME: Duration = Duration::from_secs(1);

/// Why a program was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyErrorKind {
    /// Unknown opcode, bad register, jump out of code, falls off the end, bad `lddw`.
    BadInsn,
    /// A loop whose state repeats: it can run forever.
    UnboundedLoop,
    /// Worst-case path longer than the budget.
    InsnBound,
    /// Access outside ctx, block, scratch or stack bounds.
    OutOfBounds,
    /// Write to the block or a read-only ctx field.
    ReadOnly,
    /// Read of a register never written.
    UninitRegister,
    /// Read of stack bytes never written.
    UninitStack,
    /// Forbidden arithmetic on a pointer (unbounded offset, 32-bit, mul, ...).
    PointerArith,
    /// A pointer value could become visible to the client or the device.
    PointerLeak,
    /// A helper call (none are allowed in v1).
    UnknownHelper,
    /// A local call to a function already on the call chain.
    Recursion,
    /// The verifier ran out of its own budget (insns processed, time, call depth).
    VerifierLimit,
}

/// A refusal: kind, instruction index and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("verifier: {kind:?} at insn {insn}: {msg}")]
pub struct VerifyError {
    /// Kind of refusal.
    pub kind: VerifyErrorKind,
    /// Instruction index (slot) it was found at.
    pub insn: usize,
    /// Human-readable detail.
    pub msg: String,
}

impl VerifyError {
    pub(crate) fn new(kind: VerifyErrorKind, insn: usize, msg: impl Into<String>) -> Self {
        VerifyError {
            kind,
            insn,
            msg: msg.into(),
        }
    }
}

/// What the verifier proved about an accepted program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Worst-case instructions executed in one hop (`lddw` counts once).
    pub insn_bound: u64,
    /// Stack bytes each function uses below its r10 (multiple of 8), keyed by entry insn.
    pub stack_usage: Vec<(usize, u16)>,
    /// Whether the program contains bpf-to-bpf calls.
    pub has_calls: bool,
    /// Instructions processed by the verifier.
    pub processed: u64,
}

impl Verified {
    /// Stack usage of the function entered at `pc`, if it is a function entry.
    pub fn stack_usage_at(&self, pc: usize) -> Option<u16> {
        self.stack_usage
            .iter()
            .find(|(p, _)| *p == pc)
            .map(|(_, u)| *u)
    }
}

/// Verifies `code` (raw instruction bytes) with the default limits.
pub fn verify(code: &[u8]) -> Result<Verified, VerifyError> {
    verify_with_limits(code, MAX_INSN_BOUND, MAX_PROCESSED, MAX_TIME)
}
