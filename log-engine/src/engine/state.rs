//! Shared state of an open image.
//!
//! Invariants (all under `Inner::state`):
//! - every map target's `seq` is either the open batch, a pending (sealed,
//!   not yet durable) segment, or a durable segment in `segs`;
//! - `segs[s].live_blocks` equals the number of map blocks that point into
//!   segment `s` (checked by fsck and the property tests);
//! - `durable_upto` is the highest `s` such that every segment `<= s` is
//!   durable in the store; `flush` waits for it to pass the last sealed seq;
//! - sequence numbers are assigned without gaps: every assigned seq becomes a
//!   segment (a batch takes its seq at its first record, never empty).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use super::OpenOptions;
use crate::extent_map::ExtentMap;
use crate::format::segment::{Record, SegmentHeader, SegmentKind};
use crate::format::superblock::Superblock;
use crate::store::SegmentStore;

/// Per-segment accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegInfo {
    /// Data blocks the segment holds (live + dead).
    pub data_blocks: u32,
    /// Blocks the map points to.
    pub live_blocks: u32,
    /// Durable in the store.
    pub durable: bool,
    /// No longer referenced; deleted once two checkpoints have passed.
    /// Value = checkpoints written since it became a zombie.
    pub zombie: Option<u8>,
}

/// A batch of writes not yet in the store: the open batch, or a sealed one
/// waiting for its upload. Holds raw (uncompressed) data so reads can be
/// served from memory until the segment is durable.
#[derive(Debug)]
pub(crate) struct Batch {
    pub seq: u64,
    pub kind: SegmentKind,
    pub records: Vec<Record>,
    pub data: Vec<u8>,
    /// Client write sequence numbers covered (0, 0 when none).
    pub write_seq: (u64, u64),
}

impl Batch {
    pub fn data_blocks(&self) -> u32 {
        (self.data.len() / 4096) as u32
    }
}

/// The mutable state, under one lock.
pub(crate) struct State {
    pub map: ExtentMap,
    pub segs: BTreeMap<u64, SegInfo>,
    /// Sum of `data_blocks` over `segs` (stored, pending, open, zombies):
    /// the space the image occupies, kept up to date for GC backpressure.
    pub total_blocks: u64,
    /// Open batch (None until the first write after a seal).
    pub batch: Option<Batch>,
    /// Sealed batches waiting to be durable.
    pub pending: BTreeMap<u64, Arc<Batch>>,
    pub pending_bytes: u64,
    pub next_seq: u64,
    pub durable_upto: u64,
    /// Durable seqs above `durable_upto` (uploads complete out of order).
    pub durable_ahead: BTreeSet<u64>,
    /// Client write sequence number of the last write accepted.
    pub write_seq: u64,
    /// Every client write with seq <= this is in a durable segment.
    pub durable_write_seq: u64,
    /// Last client write seq of each sealed, not yet durable segment.
    pub pending_wseq: BTreeMap<u64, u64>,
    pub segs_since_ckpt: u32,
    pub last_ckpt: u64,
    /// Checkpoints kept in the store, oldest first.
    pub kept_ckpts: Vec<u64>,
    /// Last store error seen by an uploader, for error messages.
    pub last_upload_error: Option<String>,
    /// Since when uploads have been failing with `NoSpace` (None once one
    /// succeeds): waiters then fail with `NoSpace` instead of a timeout.
    pub no_space_since: Option<std::time::Instant>,
    pub closed: bool,
    /// Emptied data buffers of uploaded batches, reused by new batches.
    pub spare_buffers: Vec<Vec<u8>>,
}

impl State {
    /// Decrement live counts for blocks no longer mapped.
    pub fn account_removed(&mut self, removed: &[crate::extent_map::MapExtent]) {
        for r in removed {
            if let Some(s) = self.segs.get_mut(&r.seq) {
                s.live_blocks = s.live_blocks.saturating_sub(r.len);
            }
        }
    }

    /// Mark `seq` durable and advance `durable_upto` over contiguous seqs.
    pub fn mark_durable(&mut self, seq: u64) {
        self.no_space_since = None;
        if let Some(b) = self.pending.remove(&seq) {
            self.pending_bytes -= b.data.len() as u64;
        }
        if let Some(s) = self.segs.get_mut(&seq) {
            s.durable = true;
        }
        self.durable_ahead.insert(seq);
        while self.durable_ahead.remove(&(self.durable_upto + 1)) {
            self.durable_upto += 1;
            if let Some(w) = self.pending_wseq.remove(&self.durable_upto) {
                self.durable_write_seq = self.durable_write_seq.max(w);
            }
        }
    }

    /// Highest assigned seq.
    pub fn last_assigned(&self) -> u64 {
        self.next_seq - 1
    }
}

/// Monotonic counters, readable without the lock.
#[derive(Default)]
pub(crate) struct Counters {
    pub client_bytes_written: AtomicU64,
    pub store_bytes_written: AtomicU64,
    pub gc_bytes_copied: AtomicU64,
    pub gc_runs: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub checkpoints: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Cache of verified segment headers (the crc was checked when loaded).
#[derive(Default)]
pub(crate) struct HeaderCache {
    map: HashMap<u64, Arc<SegmentHeader>>,
}

impl HeaderCache {
    const MAX: usize = 512;

    pub fn get(&self, seq: u64) -> Option<Arc<SegmentHeader>> {
        self.map.get(&seq).cloned()
    }

    pub fn insert(&mut self, seq: u64, h: Arc<SegmentHeader>) {
        if self.map.len() >= Self::MAX {
            // Evict an arbitrary entry; headers are cheap to reload.
            if let Some(k) = self.map.keys().next().copied() {
                self.map.remove(&k);
            }
        }
        self.map.insert(seq, h);
    }

    pub fn remove(&mut self, seq: u64) {
        self.map.remove(&seq);
    }
}

/// Everything the image's threads share.
pub(crate) struct Inner {
    pub sb: Superblock,
    pub store: Arc<dyn SegmentStore>,
    pub opts: OpenOptions,
    pub state: Mutex<State>,
    /// Signalled when `durable_upto` advances, pending bytes shrink, or a
    /// checkpoint/GC is wanted.
    pub changed: Condvar,
    /// Readers hold it shared for the whole read; segment deletion holds it
    /// exclusively, so no read is ever cut short by GC.
    pub gc_gate: RwLock<()>,
    /// Only one checkpoint or GC pass at a time.
    pub maint_lock: Mutex<()>,
    pub headers: Mutex<HeaderCache>,
    /// Sealed batches to upload; `None` tells an uploader to exit.
    pub upload_tx: crossbeam_channel::Sender<Option<Arc<Batch>>>,
    pub upload_rx: crossbeam_channel::Receiver<Option<Arc<Batch>>>,
    pub counters: Counters,
    pub shutdown: AtomicBool,
    /// Wakes the maintenance thread.
    pub maint_wake: Condvar,
    pub maint_mutex: Mutex<bool>,
}

impl Inner {
    pub fn seg_blocks(&self) -> u32 {
        self.sb.segment_size / 4096
    }
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
    pub fn wake_maintenance(&self) {
        let mut w = self.maint_mutex.lock();
        *w = true;
        self.maint_wake.notify_all();
    }
}
