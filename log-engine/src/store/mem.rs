//! An in-memory object store with fault injection, for tests of the engine's
//! behaviour against a store that fails, times out or fills up. Not a
//! product store: nothing survives the process.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Media, SegmentEntry, SegmentStore, SpaceInfo};
use crate::{Error, Result};

/// What the next operations should do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Work normally.
    #[default]
    None,
    /// Segment writes fail with `Timeout` (nothing stored).
    WriteTimeout,
    /// Segment writes fail with `NoSpace`.
    Full,
    /// Every operation fails with an I/O error.
    Dead,
}

/// In-memory store.
#[derive(Debug, Default)]
pub struct MemStore {
    segs: Mutex<BTreeMap<u64, Vec<u8>>>,
    meta: Mutex<BTreeMap<String, Vec<u8>>>,
    fault: Mutex<Fault>,
    /// Fail only this many more operations, then heal (0 = until changed).
    fault_budget: AtomicU32,
    /// Artificial latency per segment write, in microseconds.
    write_delay_us: AtomicU64,
    /// Segment writes acknowledged.
    pub writes: AtomicU64,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inject a fault; `count` = number of operations to fail (0 = all).
    pub fn set_fault(&self, f: Fault, count: u32) {
        *self.fault.lock() = f;
        self.fault_budget.store(count, Ordering::SeqCst);
    }

    pub fn set_write_delay(&self, d: Duration) {
        self.write_delay_us
            .store(d.as_micros() as u64, Ordering::SeqCst);
    }

    fn check(&self, op: &str, is_seg_write: bool) -> Result<()> {
        let f = *self.fault.lock();
        let hit = match f {
            Fault::None => false,
            Fault::Dead => true,
            Fault::WriteTimeout | Fault::Full => is_seg_write,
        };
        if !hit {
            return Ok(());
        }
        let b = self.fault_budget.load(Ordering::SeqCst);
        if b == 1 {
            *self.fault.lock() = Fault::None;
        }
        if b > 0 {
            self.fault_budget.store(b - 1, Ordering::SeqCst);
        }
        Err(match f {
            Fault::WriteTimeout => Error::Timeout(format!("mem store: {op} timed out (injected)")),
            Fault::Full => Error::NoSpace(format!("mem store: {op}: full (injected)")),
            _ => Error::io(
                format!("mem store: {op}"),
                std::io::Error::other("store is dead (injected)"),
            ),
        })
    }
}

impl SegmentStore for MemStore {
    fn media(&self) -> Media {
        Media::Object
    }
    fn describe(&self) -> String {
        "mem:".into()
    }
    fn write_segment(&self, seq: u64, data: &[u8]) -> Result<()> {
        self.check("write segment", true)?;
        let d = self.write_delay_us.load(Ordering::Relaxed);
        if d > 0 {
            std::thread::sleep(Duration::from_micros(d));
        }
        let mut s = self.segs.lock();
        if s.contains_key(&seq) {
            return Err(Error::Exists(crate::format::segment_name(seq)));
        }
        s.insert(seq, data.to_vec());
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn read_segment(&self, seq: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check("read segment", false)?;
        let s = self.segs.lock();
        let d = s
            .get(&seq)
            .ok_or_else(|| Error::NotFound(crate::format::segment_name(seq)))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| d.get(start..end))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "read past the end of {}",
                    crate::format::segment_name(seq)
                ))
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn delete_segment(&self, seq: u64) -> Result<()> {
        self.check("delete segment", false)?;
        self.segs.lock().remove(&seq);
        Ok(())
    }
    fn list_segments(&self) -> Result<Vec<SegmentEntry>> {
        self.check("list segments", false)?;
        Ok(self
            .segs
            .lock()
            .iter()
            .map(|(&seq, d)| SegmentEntry {
                seq,
                len: d.len() as u64,
            })
            .collect())
    }
    fn put_meta(&self, name: &str, data: &[u8]) -> Result<()> {
        self.check("put meta", false)?;
        self.meta.lock().insert(name.to_string(), data.to_vec());
        Ok(())
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.check("get meta", false)?;
        Ok(self.meta.lock().get(name).cloned())
    }
    fn delete_meta(&self, name: &str) -> Result<()> {
        self.check("delete meta", false)?;
        self.meta.lock().remove(name);
        Ok(())
    }
    fn list_meta(&self) -> Result<Vec<String>> {
        self.check("list meta", false)?;
        Ok(self.meta.lock().keys().cloned().collect())
    }
    fn space(&self) -> Result<SpaceInfo> {
        Ok(SpaceInfo {
            capacity: None,
            used: self.segs.lock().values().map(|d| d.len() as u64).sum(),
        })
    }
    fn destroy(&self) -> Result<()> {
        self.segs.lock().clear();
        self.meta.lock().clear();
        Ok(())
    }
}
