//! The program ABI shared with `include/lsvd_offload.h`.
//!
//! A program is `u64 f(struct lsvd_ctx *ctx)`. The context is [`CTX_SIZE`] bytes:
//!
//! | offset | field | access |
//! |---|---|---|
//! | 0 | `const u8 *data` (the current block, [`BLOCK_SIZE`] bytes) | read-only |
//! | 8 | `u8 *scratch` ([`SCRATCH_SIZE`] bytes, kept across hops) | read-only pointer |
//! | 16 | `u64 cur_lba` | read-only |
//! | 24 | `u32 hop` | read-only |
//! | 28 | `u32 done` | read-write |
//! | 32 | `u32 n_next` | read-write |
//! | 36 | `u32 pad` | read-only |
//! | 40 | `u64 next_lba[16]` | read-write |
//!
//! Invariant: the executor zeroes `done`, `n_next` and `next_lba` before each hop, so a
//! program never observes values from a previous hop except through scratch.

/// Bytes of one block (`data` region), read-only for the program.
pub const BLOCK_SIZE: usize = 4096;
/// Bytes of the scratch region, read-write, persistent across the hops of one chain.
pub const SCRATCH_SIZE: usize = 4096;
/// Bytes of eBPF stack available in total (all frames together).
pub const STACK_SIZE: usize = 512;
/// Size of `struct lsvd_ctx`.
pub const CTX_SIZE: usize = 168;
/// Maximum call frames (main function included).
pub const MAX_FRAMES: usize = 8;
/// Maximum number of next LBAs in the context (v1 uses only one).
pub const MAX_NEXT: usize = 16;
/// Maximum argument bytes copied into scratch before hop 0.
pub const MAX_ARGS: usize = SCRATCH_SIZE;

/// Offset of `data`.
pub const OFF_DATA: usize = 0;
/// Offset of `scratch`.
pub const OFF_SCRATCH: usize = 8;
/// Offset of `cur_lba`.
pub const OFF_CUR_LBA: usize = 16;
/// Offset of `hop`.
pub const OFF_HOP: usize = 24;
/// Offset of `done`.
pub const OFF_DONE: usize = 28;
/// Offset of `n_next`.
pub const OFF_N_NEXT: usize = 32;
/// Offset of `pad`.
pub const OFF_PAD: usize = 36;
/// Offset of `next_lba[0]`.
pub const OFF_NEXT_LBA: usize = 40;

/// True when the byte range `[off, off + len)` of the context may be written by a program
/// (only `done`, `n_next` and `next_lba`).
pub fn ctx_writable(off: usize, len: usize) -> bool {
    let end = off + len;
    (off >= OFF_DONE && end <= OFF_PAD) || (off >= OFF_NEXT_LBA && end <= CTX_SIZE)
}

/// Writes a fresh context for one hop into `ctx`.
pub fn fill_ctx(ctx: &mut [u8; CTX_SIZE], data: u64, scratch: u64, cur_lba: u64, hop: u32) {
    ctx.fill(0);
    ctx[OFF_DATA..OFF_DATA + 8].copy_from_slice(&data.to_le_bytes());
    ctx[OFF_SCRATCH..OFF_SCRATCH + 8].copy_from_slice(&scratch.to_le_bytes());
    ctx[OFF_CUR_LBA..OFF_CUR_LBA + 8].copy_from_slice(&cur_lba.to_le_bytes());
    ctx[OFF_HOP..OFF_HOP + 4].copy_from_slice(&hop.to_le_bytes());
}

/// What a program asked for at the end of one hop, read back from the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HopOutcome {
    /// `done != 0`.
    pub done: bool,
    /// Value of `n_next`.
    pub n_next: u32,
    /// Value of `next_lba[0]`.
    pub next_lba0: u64,
}

/// Reads `done`, `n_next` and `next_lba[0]` from a context after a hop.
pub fn read_outcome(ctx: &[u8; CTX_SIZE]) -> HopOutcome {
    let u32_at = |o: usize| u32::from_le_bytes([ctx[o], ctx[o + 1], ctx[o + 2], ctx[o + 3]]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&ctx[OFF_NEXT_LBA..OFF_NEXT_LBA + 8]);
    HopOutcome {
        done: u32_at(OFF_DONE) != 0,
        n_next: u32_at(OFF_N_NEXT),
        next_lba0: u64::from_le_bytes(b),
    }
}
