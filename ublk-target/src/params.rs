//! Device parameters: what the server is asked for, and the ublk limits
//! derived from it.

use libublk::sys;

/// The engine's block size: logical and physical block, discard granularity.
pub const BLOCK_SIZE: u32 = 4096;
const BLOCK_SHIFT: u8 = 12;

/// How to serve a device.
#[derive(Clone, Debug)]
pub struct ServeParams {
    /// Hardware queues (default: one per CPU).
    pub queues: u16,
    /// Requests in flight per queue (default 64).
    pub depth: u16,
    /// Largest request in bytes (default 1 MiB; a multiple of 4096).
    pub max_io_bytes: u32,
    /// Worker threads per queue running the device's blocking calls
    /// (default 2).
    pub workers_per_queue: usize,
    /// Reattach to this existing (quiesced) device id after a server crash
    /// instead of adding a new device.
    pub recover: Option<u32>,
    /// Device id to ask for when adding (None: the driver picks one).
    pub dev_id: Option<u32>,
    /// Acknowledge writes only once durable (see the crate docs).
    pub write_through: bool,
}

impl Default for ServeParams {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        ServeParams {
            queues: u16::try_from(cpus).unwrap_or(1).max(1),
            depth: 64,
            max_io_bytes: 1 << 20,
            workers_per_queue: 2,
            recover: None,
            dev_id: None,
            write_through: false,
        }
    }
}

impl ServeParams {
    /// Check the values make a device; returns a message naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.queues == 0 || self.queues > sys::UBLK_MAX_NR_QUEUES as u16 {
            return Err(format!(
                "queues={} (1..={})",
                self.queues,
                sys::UBLK_MAX_NR_QUEUES
            ));
        }
        if self.depth == 0 || u32::from(self.depth) > sys::UBLK_MAX_QUEUE_DEPTH {
            return Err(format!(
                "depth={} (1..={})",
                self.depth,
                sys::UBLK_MAX_QUEUE_DEPTH
            ));
        }
        if self.max_io_bytes < BLOCK_SIZE
            || !self.max_io_bytes.is_multiple_of(BLOCK_SIZE)
            || self.max_io_bytes > 32 << 20
        {
            return Err(format!(
                "max_io_bytes={} (a multiple of 4096, at most 32 MiB)",
                self.max_io_bytes
            ));
        }
        if self.workers_per_queue == 0 || self.workers_per_queue > 256 {
            return Err(format!(
                "workers_per_queue={} (1..=256)",
                self.workers_per_queue
            ));
        }
        Ok(())
    }
}

/// ublk parameters for a device of `size` bytes: 4 KiB blocks, a volatile
/// write cache with FUA (unless write-through), discard and write-zeroes in
/// 4 KiB units up to the largest request.
pub(crate) fn ublk_params(size: u64, max_io_bytes: u32, write_through: bool) -> sys::ublk_params {
    let max_sectors = max_io_bytes >> 9;
    sys::ublk_params {
        len: std::mem::size_of::<sys::ublk_params>() as u32,
        types: sys::UBLK_PARAM_TYPE_BASIC | sys::UBLK_PARAM_TYPE_DISCARD,
        basic: sys::ublk_param_basic {
            attrs: if write_through {
                0
            } else {
                sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA
            },
            logical_bs_shift: BLOCK_SHIFT,
            physical_bs_shift: BLOCK_SHIFT,
            io_opt_shift: BLOCK_SHIFT,
            io_min_shift: BLOCK_SHIFT,
            max_sectors,
            dev_sectors: size >> 9,
            ..Default::default()
        },
        discard: sys::ublk_param_discard {
            discard_alignment: 0,
            discard_granularity: BLOCK_SIZE,
            max_discard_sectors: max_sectors,
            max_write_zeroes_sectors: max_sectors,
            max_discard_segments: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}
