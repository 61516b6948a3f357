//! lsvd eBPF offload sidecar: run a client's small eBPF function next to the data, hop by
//! hop along a chain of blocks (B+-tree lookups, list walks), instead of one client round
//! trip per block.
//!
//! Pipeline: [`loader`] (ELF section) → [`verifier`] (our own; proves memory safety,
//! no pointer leaks and a worst-case instruction bound) → [`vm`] (rbpf JIT, rbpf
//! interpreter, or our [`interp`]) → [`chain`] (per-hop I/O through a [`chain::BlockSource`],
//! LBA checks, hop/time limits). [`abi`] is the program ABI shared with
//! `include/lsvd_offload.h`; [`btree`] lays out the example B+-tree for tests.
//!
//! Serving: [`server`] (Unix socket, [`protocol`] frames, per-uid ownership, image access
//! through an [`server::ImageResolver`]; [`image_source`] adapts `log_engine::Image`),
//! [`client`] (Rust client library), [`access`] (peer credentials, access rule).

pub mod abi;
pub mod access;
pub mod asm;
pub mod btree;
pub mod chain;
pub mod client;
pub mod config;
pub mod image_source;
pub mod insn;
pub mod interp;
pub mod loader;
pub mod protocol;
pub mod server;
pub mod verifier;
pub mod vm;

/// Largest program in instructions (the kernel's unprivileged limit).
pub const MAX_INSNS: usize = 4096;

pub use chain::{run_chain, BlockSource, ChainError, ChainLimits, ChainResult};
pub use loader::{load_section, LoadError};
pub use verifier::{verify, Verified, VerifyError, VerifyErrorKind};
pub use vm::{Engine, Program, Vm, VmError};
