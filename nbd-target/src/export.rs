//! Exports: a named [`BlockDev`] with its options, and the table of exports
//! one listener serves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::aligned::Aligned;
use crate::blockdev::BlockDev;
use crate::proto::*;

/// Largest READ or WRITE payload accepted (and advertised as the maximum
/// block size): 32 MiB.
pub const MAX_REQUEST: u32 = 32 << 20;
/// Minimum block size advertised; requests finer than the device's block
/// size are done by read-modify-write.
pub const MIN_BLOCK: u32 = 512;

/// One exported device.
pub struct Export {
    name: String,
    description: String,
    read_only: bool,
    dev: Aligned<Arc<dyn BlockDev>>,
    /// Connections currently in transmission on this export.
    pub(crate) connections: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    /// Moving average of the time a read takes on the device, in ns: reads
    /// run on the connection's reader thread while it is small (see
    /// `transmission::READ_INLINE_NS`).
    pub(crate) read_ns: AtomicU64,
}

/// Counters of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportStats {
    pub connections: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl Export {
    pub fn new(name: impl Into<String>, dev: Arc<dyn BlockDev>, read_only: bool) -> Self {
        Export {
            name: name.into(),
            description: String::new(),
            read_only,
            dev: Aligned::new(dev),
            connections: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            read_ns: AtomicU64::new(0),
        }
    }

    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    pub fn size(&self) -> u64 {
        self.dev.size()
    }
    pub fn description(&self) -> &str {
        &self.description
    }
    pub(crate) fn dev(&self) -> &Aligned<Arc<dyn BlockDev>> {
        &self.dev
    }
    /// The served device.
    pub fn block_dev(&self) -> &Arc<dyn BlockDev> {
        self.dev.dev()
    }

    pub fn stats(&self) -> ExportStats {
        ExportStats {
            connections: self.connections.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// Transmission flags: flush, FUA, trim and write-zeroes always;
    /// multi-conn because a flush makes every connection's completed writes
    /// durable ([`BlockDev::flush`] contract).
    pub fn transmission_flags(&self) -> u16 {
        let mut f = TFLAG_HAS_FLAGS
            | TFLAG_SEND_FLUSH
            | TFLAG_SEND_FUA
            | TFLAG_SEND_TRIM
            | TFLAG_SEND_WRITE_ZEROES
            | TFLAG_CAN_MULTI_CONN;
        if self.read_only {
            f |= TFLAG_READ_ONLY;
        }
        f
    }

    /// Advertised block sizes: (minimum, preferred, maximum).
    pub fn block_sizes(&self) -> (u32, u32, u32) {
        let pref = self.dev.dev().block_size().max(MIN_BLOCK);
        (MIN_BLOCK, pref, MAX_REQUEST)
    }
}

/// The exports a listener serves, shared and changeable while it runs.
#[derive(Clone, Default)]
pub struct Exports {
    inner: Arc<RwLock<BTreeMap<String, Arc<Export>>>>,
}

impl Exports {
    pub fn new() -> Self {
        Self::default()
    }

    /// A table holding just `e`.
    pub fn single(e: Arc<Export>) -> Self {
        let t = Self::new();
        t.insert(e);
        t
    }

    pub fn insert(&self, e: Arc<Export>) {
        self.inner.write().insert(e.name().to_string(), e);
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Export>> {
        self.inner.write().remove(name)
    }

    /// The export called `name`; the empty name selects the export when
    /// there is exactly one.
    pub fn lookup(&self, name: &str) -> Option<Arc<Export>> {
        let t = self.inner.read();
        if name.is_empty() && t.len() == 1 {
            return t.values().next().cloned();
        }
        t.get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Export>> {
        self.inner.read().values().cloned().collect()
    }
}
