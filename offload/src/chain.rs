//! Chain executor: runs a verified program hop by hop over blocks read through a
//! [`BlockSource`].
//!
//! Per hop `h` (hop 0 reads the client's start LBA): check the LBA is `< block_count`
//! *before* reading it, read the block, run the function, then: `done != 0` ends the chain
//! with r0; otherwise `n_next` must be 1 (v1 follows one next block) and `next_lba[0]`
//! becomes the next hop's LBA. Limits: hop count ([`ChainLimits::max_hops`], capped at
//! [`MAX_HOPS_CAP`]), VM time and total time (checked after each hop; a hop itself is
//! bounded by the verifier's instruction bound). The function never sees a device address:
//! only LBAs of this image.

use std::io;
use std::time::{Duration, Instant};

use crate::abi::{BLOCK_SIZE, MAX_ARGS, SCRATCH_SIZE};
use crate::interp::Fault;
use crate::vm::{Vm, VmError};

/// Read access to an image's blocks (the daemon wires it to the image and its read cache).
pub trait BlockSource: Send + Sync {
    /// Number of 4 KiB blocks; valid LBAs are `0..block_count()`.
    fn block_count(&self) -> u64;
    /// Reads block `lba` (always `< block_count()`) into `buf`.
    fn read_block(&self, lba: u64, buf: &mut [u8; BLOCK_SIZE]) -> Result<(), io::Error>;
}

/// Largest hop limit a client may ask for.
pub const MAX_HOPS_CAP: u32 = 1024;

/// Limits of one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainLimits {
    /// Largest number of hops (blocks) (default 64, at most [`MAX_HOPS_CAP`]).
    pub max_hops: u32,
    /// Largest time spent in the VM over all hops.
    pub vm_time: Duration,
    /// Largest time including I/O.
    pub total_time: Duration,
}

impl Default for ChainLimits {
    fn default() -> Self {
        ChainLimits {
            max_hops: 64,
            vm_time: Duration::from_millis(100),
            total_time: Duration::from_secs(1),
        }
    }
}

/// Outcome of a completed chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainResult {
    /// r0 of the last hop.
    pub r0: u64,
    /// Scratch after the last hop.
    pub scratch: Box<[u8; SCRATCH_SIZE]>,
    /// Hops run (blocks read).
    pub hops: u32,
    /// Time spent in the VM over all hops.
    pub vm_time: Duration,
}

/// Why a chain stopped without `done`.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Arguments longer than scratch.
    #[error("arguments are {0} bytes, more than {MAX_ARGS}")]
    ArgsTooLarge(usize),
    /// Requested hop limit above the cap.
    #[error("hop limit {0} above the cap {MAX_HOPS_CAP}")]
    BadLimit(u32),
    /// The start LBA or a requested next LBA is outside the image.
    #[error("hop {hop}: LBA {lba} outside the image of {block_count} blocks")]
    LbaOutOfRange {
        /// Hop that would have read it.
        hop: u32,
        /// The LBA.
        lba: u64,
        /// Image size in blocks.
        block_count: u64,
    },
    /// Not done and `n_next != 1`.
    #[error("hop {hop}: not done and n_next = {n_next} (v1 follows exactly one next block)")]
    BadNext {
        /// Hop.
        hop: u32,
        /// Value of n_next.
        n_next: u32,
    },
    /// The chain needed more hops than allowed.
    #[error("hop limit of {limit} reached")]
    HopLimit {
        /// The limit.
        limit: u32,
    },
    /// VM or total time exceeded.
    #[error("hop {hop}: {what} time limit {limit:?} exceeded")]
    Timeout {
        /// Hop after which it was detected.
        hop: u32,
        /// "vm" or "total".
        what: &'static str,
        /// The limit.
        limit: Duration,
    },
    /// Our interpreter's instruction budget ran out (a verifier bug if it ever happens).
    #[error("hop {hop}: instruction budget exhausted")]
    InsnBudget {
        /// Hop.
        hop: u32,
    },
    /// Other VM failure.
    #[error("hop {hop}: {source}")]
    Vm {
        /// Hop.
        hop: u32,
        /// Cause.
        source: VmError,
    },
    /// Reading a block failed.
    #[error("hop {hop}: reading LBA {lba}: {source}")]
    IoError {
        /// Hop.
        hop: u32,
        /// LBA being read.
        lba: u64,
        /// Cause.
        source: io::Error,
    },
}

/// Runs `vm`'s program as a chain starting at `start_lba` with `args` copied into zeroed
/// scratch before hop 0.
pub fn run_chain(
    vm: &mut Vm<'_>,
    src: &dyn BlockSource,
    start_lba: u64,
    args: &[u8],
    limits: &ChainLimits,
) -> Result<ChainResult, ChainError> {
    if args.len() > MAX_ARGS {
        return Err(ChainError::ArgsTooLarge(args.len()));
    }
    if limits.max_hops > MAX_HOPS_CAP {
        return Err(ChainError::BadLimit(limits.max_hops));
    }
    let started = Instant::now();
    let mut vm_time = Duration::ZERO;
    let scratch = vm.scratch_mut();
    scratch.fill(0);
    scratch[..args.len()].copy_from_slice(args);
    let block_count = src.block_count();
    let mut lba = start_lba;
    let mut hop: u32 = 0;
    if lba >= block_count {
        return Err(ChainError::LbaOutOfRange {
            hop,
            lba,
            block_count,
        });
    }
    loop {
        if hop >= limits.max_hops {
            return Err(ChainError::HopLimit {
                limit: limits.max_hops,
            });
        }
        src.read_block(lba, vm.block_mut())
            .map_err(|source| ChainError::IoError { hop, lba, source })?;
        let t = Instant::now();
        let res = vm.run_hop(lba, hop);
        vm_time += t.elapsed();
        let (r0, out) = match res {
            Ok(v) => v,
            Err(VmError::Fault(Fault::InsnBudget { .. })) => {
                return Err(ChainError::InsnBudget { hop })
            }
            Err(source) => return Err(ChainError::Vm { hop, source }),
        };
        if vm_time > limits.vm_time {
            return Err(ChainError::Timeout {
                hop,
                what: "vm",
                limit: limits.vm_time,
            });
        }
        if started.elapsed() > limits.total_time {
            return Err(ChainError::Timeout {
                hop,
                what: "total",
                limit: limits.total_time,
            });
        }
        if out.done {
            return Ok(ChainResult {
                r0,
                scratch: Box::new(*vm.scratch()),
                hops: hop + 1,
                vm_time,
            });
        }
        if out.n_next != 1 {
            return Err(ChainError::BadNext {
                hop,
                n_next: out.n_next,
            });
        }
        lba = out.next_lba0;
        if lba >= block_count {
            return Err(ChainError::LbaOutOfRange {
                hop,
                lba,
                block_count,
            });
        }
        hop += 1;
    }
}

/// A [`BlockSource`] over blocks in memory (LBA = index), for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct MemSource {
    /// The blocks.
    pub blocks: Vec<[u8; BLOCK_SIZE]>,
}

impl BlockSource for MemSource {
    fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }

    fn read_block(&self, lba: u64, buf: &mut [u8; BLOCK_SIZE]) -> Result<(), io::Error> {
        let b = usize::try_from(lba)
            .ok()
            .and_then(|i| self.blocks.get(i))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("no block {lba}"))
            })?;
        buf.copy_from_slice(b);
        Ok(())
    }
}
