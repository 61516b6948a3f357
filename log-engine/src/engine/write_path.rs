//! The write path: client writes and discards go into the open batch (and
//! the extent map) under the state lock; a full batch is sealed and handed to
//! the uploader threads, which build the segment object and store it; a
//! segment counts once the store acknowledged it (`mark_durable`). `flush`
//! seals the open batch and waits until every segment up to it is durable.
//!
//! Atomicity: a write of at most the segment size lands in one segment, so
//! after a crash it is either wholly there or not at all; a larger write is
//! split over several segments and, if it was not flushed, may be cut at a
//! segment boundary (still prefix-consistent: later writes are not there).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;
use tracing::{debug, warn};

use super::state::{Batch, Counters, Inner, SegInfo, State};
use crate::extent_map::{MapExtent, Target};
use crate::format::segment::{build_segment_parts, Record, RecordKind, SegmentKind};
use crate::{Error, Result};

/// How long uploads may fail with `NoSpace` before waiters get the error.
const NO_SPACE_GRACE: Duration = Duration::from_secs(2);

impl Inner {
    /// Check a byte range: 4 KiB aligned and inside the image.
    pub(crate) fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        if !offset.is_multiple_of(4096) || !len.is_multiple_of(4096) {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} and length {len} must each be a multiple of 4096"
            )));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.sb.size => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "range {offset}+{len} is past the end of the image ({} bytes)",
                self.sb.size
            ))),
        }
    }

    pub(crate) fn check_writable(&self, st: &State) -> Result<()> {
        if st.closed {
            return Err(Error::Unavailable("image is closed".into()));
        }
        if self.opts.read_only {
            return Err(Error::Unavailable("image is open read-only".into()));
        }
        Ok(())
    }

    /// Wait (bounded by `store_timeout`) while too much sealed data waits
    /// for the store: backpressure instead of unbounded memory.
    fn wait_for_room<'a>(&'a self, mut st: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>> {
        let deadline = Instant::now() + self.opts.store_timeout;
        while st.pending_bytes > self.opts.max_pending_bytes {
            self.check_no_space(&st)?;
            if self.changed.wait_until(&mut st, deadline).timed_out() {
                return Err(Error::Timeout(format!(
                    "{} bytes wait for the store ({}); last store error: {}",
                    st.pending_bytes,
                    self.store.describe(),
                    st.last_upload_error.as_deref().unwrap_or("none")
                )));
            }
        }
        Ok(st)
    }

    /// When the store has kept answering `NoSpace` for a while (GC could not
    /// help), waiting longer is pointless: say so. The data stays in memory
    /// and uploads keep retrying, so nothing acknowledged is dropped.
    fn check_no_space(&self, st: &State) -> Result<()> {
        match st.no_space_since {
            Some(t) if t.elapsed() >= NO_SPACE_GRACE => Err(Error::NoSpace(format!(
                "{} is full: {}",
                self.store.describe(),
                st.last_upload_error.as_deref().unwrap_or("no space")
            ))),
            _ => Ok(()),
        }
    }

    /// The open batch, created with the next seq if there is none.
    fn open_batch<'a>(&self, st: &'a mut State) -> &'a mut Batch {
        if st.batch.is_none() {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.segs.insert(seq, SegInfo::default());
            st.batch = Some(Batch {
                seq,
                kind: SegmentKind::Write,
                records: Vec::new(),
                data: st
                    .spare_buffers
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(self.sb.segment_size as usize)),
                write_seq: (0, 0),
            });
        }
        st.batch.as_mut().expect("batch was just created")
    }

    /// Client write of whole blocks.
    pub(crate) fn write(&self, offset: u64, data: &[u8]) -> Result<u64> {
        self.check_range(offset, data.len() as u64)?;
        let mut wseq = 0;
        let seg_bytes = self.sb.segment_size as usize;
        let mut lba = offset / 4096;
        let mut rest = data;
        let mut removed: Vec<MapExtent> = Vec::new();
        while !rest.is_empty() {
            self.gc_backpressure()?;
            let mut st = self.wait_for_room(self.state.lock())?;
            self.check_writable(&st)?;
            let mut room = seg_bytes - st.batch.as_ref().map_or(0, |b| b.data.len());
            // A write that fits in one segment goes into one segment, so it
            // is atomic across a crash; only larger writes are split.
            if rest.len() <= seg_bytes && rest.len() > room {
                self.seal(&mut st);
                room = seg_bytes;
            }
            let n = room.min(rest.len());
            let (now, later) = rest.split_at(n);
            let blocks = (n / 4096) as u32;
            if wseq == 0 {
                st.write_seq += 1;
                wseq = st.write_seq;
            }
            let batch = self.open_batch(&mut st);
            let seq = batch.seq;
            let off = batch.data_blocks();
            batch.data.extend_from_slice(now);
            batch.records.push(Record {
                lba,
                len: blocks,
                kind: RecordKind::Data,
                src_seq: 0,
                src_off: 0,
            });
            // Only the piece that completes the write stamps the batch: a
            // journal may release a write once the segment holding its seq
            // is durable, which must mean all of the write is.
            if later.is_empty() {
                if batch.write_seq.0 == 0 {
                    batch.write_seq.0 = wseq;
                }
                batch.write_seq.1 = wseq;
            }
            let full = batch.data.len() >= seg_bytes;
            removed.clear();
            st.map
                .insert(lba, blocks, Target { seq, off }, &mut removed)?;
            st.account_removed(&removed);
            if let Some(s) = st.segs.get_mut(&seq) {
                s.data_blocks += blocks;
                s.live_blocks += blocks;
            }
            st.total_blocks += blocks as u64;
            if full {
                self.seal(&mut st);
            }
            drop(st);
            Counters::add(&self.counters.client_bytes_written, n as u64);
            lba += blocks as u64;
            rest = later;
        }
        Ok(wseq)
    }

    /// TRIM / WRITE_ZEROES: a discard record, the range unmapped.
    pub(crate) fn discard(&self, offset: u64, len: u64) -> Result<u64> {
        self.check_range(offset, len)?;
        let mut st = self.wait_for_room(self.state.lock())?;
        self.check_writable(&st)?;
        st.write_seq += 1;
        let wseq = st.write_seq;
        if len == 0 {
            return Ok(wseq);
        }
        let mut lba = offset / 4096;
        let end = lba + len / 4096;
        let mut removed = Vec::new();
        while lba < end {
            let n = (end - lba).min(u32::MAX as u64 / 2) as u32;
            let batch = self.open_batch(&mut st);
            batch.records.push(Record {
                lba,
                len: n,
                kind: RecordKind::Discard,
                src_seq: 0,
                src_off: 0,
            });
            if batch.write_seq.0 == 0 {
                batch.write_seq.0 = wseq;
            }
            batch.write_seq.1 = wseq;
            st.map.remove(lba, n as u64, &mut removed);
            lba += n as u64;
        }
        st.account_removed(&removed);
        // A segment's header must stay bounded: seal when records pile up.
        let most = crate::format::segment::max_discard_records(self.seg_blocks() as u64);
        if st
            .batch
            .as_ref()
            .is_some_and(|b| b.records.len() as u64 >= most)
        {
            self.seal(&mut st);
        }
        Ok(wseq)
    }

    /// Seal the open batch (if any) and queue it for upload.
    pub(crate) fn seal(&self, st: &mut State) {
        if let Some(b) = st.batch.take() {
            let b = Arc::new(b);
            if b.write_seq.1 != 0 {
                st.pending_wseq.insert(b.seq, b.write_seq.1);
            }
            st.pending_bytes += b.data.len() as u64;
            st.pending.insert(b.seq, b.clone());
            debug!(
                seq = b.seq,
                bytes = b.data.len(),
                records = b.records.len(),
                "seal segment"
            );
            // The receiver lives in `self`, so the channel never disconnects.
            let _ = self.upload_tx.send(Some(b));
        }
    }

    /// Make everything written before this call durable.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(Error::Unavailable("image is closed".into()));
        }
        self.seal(&mut st);
        let target = st.last_assigned();
        self.wait_durable(st, target)
    }

    /// Wait until every segment `<= target` is durable.
    pub(crate) fn wait_durable(&self, mut st: MutexGuard<'_, State>, target: u64) -> Result<()> {
        let deadline = Instant::now() + self.opts.store_timeout;
        while st.durable_upto < target {
            if self.is_shutdown() {
                return Err(Error::Unavailable("image is shutting down".into()));
            }
            self.check_no_space(&st)?;
            if self.changed.wait_until(&mut st, deadline).timed_out() && st.durable_upto < target {
                return Err(Error::Timeout(format!(
                    "segment {:016x} not durable in {} after {:?}; last store error: {}",
                    st.durable_upto + 1,
                    self.store.describe(),
                    self.opts.store_timeout,
                    st.last_upload_error.as_deref().unwrap_or("none")
                )));
            }
        }
        Ok(())
    }

    /// Build and store one sealed batch, retrying with backoff until the
    /// store acknowledges it or the image shuts down.
    pub(crate) fn upload(&self, b: &Batch) {
        let parts = match build_segment_parts(
            &self.sb.uuid,
            b.seq,
            b.kind,
            &b.records,
            &b.data,
            self.sb.compression,
            self.sb.chunk_size,
            b.write_seq,
        ) {
            Ok(p) => p,
            Err(e) => {
                // A bug, not a store problem: the batch is inconsistent.
                // Keep the data in memory (reads still work) and say so loudly.
                tracing::error!(seq = b.seq, error = %e, "cannot build segment");
                self.state.lock().last_upload_error =
                    Some(format!("build segment {:016x}: {e}", b.seq));
                return;
            }
        };
        let slices: [&[u8]; 2] = [&parts.header, &parts.body];
        let mut delay = Duration::from_millis(10);
        loop {
            match self.store.write_segment_parts(b.seq, &slices) {
                Ok(()) => break,
                Err(Error::Exists(_)) if self.same_segment_stored(b.seq, &slices.concat()) => break,
                Err(e) => {
                    warn!(seq = b.seq, error = %e, "segment upload failed; retrying");
                    {
                        let mut st = self.state.lock();
                        st.last_upload_error = Some(e.to_string());
                        if matches!(e, Error::NoSpace(_)) {
                            st.no_space_since.get_or_insert_with(Instant::now);
                        }
                    }
                    self.changed.notify_all();
                    if matches!(e, Error::NoSpace(_)) {
                        self.wake_maintenance();
                    }
                    if self.is_shutdown() {
                        return;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        Counters::add(&self.counters.store_bytes_written, parts.len() as u64);
        let mut st = self.state.lock();
        st.mark_durable(b.seq);
        st.segs_since_ckpt += 1;
        let want_ckpt = st.segs_since_ckpt >= self.opts.checkpoint_every;
        drop(st);
        self.changed.notify_all();
        if want_ckpt {
            self.wake_maintenance();
        }
    }

    /// Keep the data buffer of an uploaded batch for a later batch (saves
    /// faulting in fresh pages for every segment). Only when we hold the last
    /// reference: readers copy out under the lock and never keep one.
    fn recycle(&self, b: Arc<Batch>) {
        if let Ok(mut b) = Arc::try_unwrap(b) {
            if b.data.capacity() >= self.sb.segment_size as usize {
                b.data.clear();
                let mut st = self.state.lock();
                if st.spare_buffers.len() < 4 {
                    st.spare_buffers.push(std::mem::take(&mut b.data));
                }
            }
        }
    }

    /// After an `Exists` answer (e.g. a retry after a timeout that did
    /// write), the segment counts only if the stored bytes are ours.
    fn same_segment_stored(&self, seq: u64, object: &[u8]) -> bool {
        let mut buf = vec![0u8; object.len()];
        self.store.read_segment(seq, 0, &mut buf).is_ok() && buf == object
    }
}

/// Uploader thread body.
pub(crate) fn uploader(inner: Arc<Inner>) {
    while !inner.is_shutdown() {
        match inner.upload_rx.recv() {
            Ok(Some(b)) => {
                inner.upload(&b);
                inner.recycle(b);
            }
            Ok(None) | Err(_) => break,
        }
    }
}
