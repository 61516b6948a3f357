//! The image: create/open/close, the public I/O API, and the background
//! threads (uploaders, checkpointer, GC). The paths live in their own files:
//! `write_path.rs`, `read_path.rs`, `checkpoint.rs`, `recovery.rs`, `gc.rs`,
//! `fsck.rs`.
//!
mod checkpoint;
mod fsck;
mod gc;
mod read_path;
mod recovery;
mod state;
mod write_path;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use tracing::{info, warn};

pub use fsck::fsck;

use crate::format::checkpoint::{manifest_name, Manifest};
use crate::format::superblock::Superblock;
use crate::format::Compression;
use crate::store::SegmentStore;
use crate::{Error, Result};
use state::{Counters, HeaderCache, Inner, State};

/// Options for [`Image::create`].
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Image size in bytes, a multiple of 4096.
    pub size: u64,
    /// Segment size in bytes (default 8 MiB).
    pub segment_size: u32,
    pub compression: Compression,
}

/// How GC ranks victims among the segments (or zones) below the threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GcPolicy {
    /// Least live data first.
    #[default]
    Greedy,
    /// Sprite LFS's cost-benefit: (1 - u) * age / (1 + u), oldest and
    /// emptiest first (age = how many segments were written since).
    CostBenefit,
}

/// Garbage-collector settings.
#[derive(Clone, Debug)]
pub struct GcConfig {
    /// Victim ranking.
    pub policy: GcPolicy,
    /// Run the background cleaner.
    pub enabled: bool,
    /// Segments (or zones) whose live share is below this percentage are
    /// cleaned.
    pub threshold_pct: u8,
    /// How often the background cleaner looks for work.
    pub interval: Duration,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            size: 1 << 30,
            segment_size: crate::format::DEFAULT_SEGMENT_SIZE,
            compression: Compression::None,
        }
    }
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            policy: GcPolicy::Greedy,
            enabled: true,
            threshold_pct: 70,
            interval: Duration::from_millis(500),
        }
    }
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            upload_threads: 4,
            max_pending_bytes: 256 << 20,
            checkpoint_every: 64,
            gc: GcConfig::default(),
            store_timeout: Duration::from_secs(60),
            read_only: false,
        }
    }
}

/// Options for [`Image::open`].
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Segment uploads in flight at once.
    pub upload_threads: usize,
    /// Sealed-but-not-durable bytes held in memory before writers wait.
    pub max_pending_bytes: u64,
    /// Write a checkpoint every this many segments.
    pub checkpoint_every: u32,
    pub gc: GcConfig,
    /// How long `flush` waits for a store that does not answer before it
    /// returns an error (uploads keep retrying in the background).
    pub store_timeout: Duration,
    pub read_only: bool,
}

/// Static facts about an image.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub uuid: String,
    pub size: u64,
    pub block_size: u32,
    pub segment_size: u32,
    pub chunk_size: u32,
    pub compression: Compression,
    pub store: String,
    pub created: u64,
}

/// Counters and gauges of an open image.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub segments: u64,
    /// Logical data blocks held in stored segments (live + dead).
    pub stored_blocks: u64,
    /// Blocks referenced by the map.
    pub live_blocks: u64,
    pub extents: u64,
    pub map_heap_bytes: u64,
    pub client_bytes_written: u64,
    /// Bytes handed to the store (segments, both client and GC).
    pub store_bytes_written: u64,
    pub gc_bytes_copied: u64,
    pub gc_runs: u64,
    pub segments_deleted: u64,
    pub checkpoints: u64,
    pub next_seq: u64,
    /// All segments with seq <= this are durable.
    pub durable_seq: u64,
    pub last_checkpoint_seq: u64,
}

/// What one GC pass did.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    pub victims: Vec<u64>,
    pub blocks_copied: u64,
    pub segments_deleted: u64,
}

/// Result of [`fsck`].
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub segments_checked: u64,
    pub chunks_checked: u64,
    pub checkpoint_seq: Option<u64>,
    pub extents_checked: u64,
    /// One line per problem, naming the object.
    pub problems: Vec<String>,
    /// Things worth knowing that are not damage.
    pub notes: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An open image. Share it with `Arc<Image>`: all methods take `&self` and
/// are safe from many threads. Dropping it without [`Image::close`] stops
/// its threads without flushing: what was not durable is lost, as in a crash.
pub struct Image {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("store", &self.inner.store.describe())
            .finish()
    }
}

fn info_of(sb: &Superblock, store: &dyn SegmentStore) -> ImageInfo {
    ImageInfo {
        uuid: sb.uuid_string(),
        size: sb.size,
        block_size: 4096,
        segment_size: sb.segment_size,
        chunk_size: sb.chunk_size,
        compression: sb.compression,
        store: store.describe(),
        created: sb.created,
    }
}

/// The segment size to create with: the requested one, lowered (in whole
/// chunks) until its largest object fits the store's limit (a zone's
/// capacity). Lowering is logged and shows in the image's info.
fn fit_segment_size(store: &dyn SegmentStore, opts: &CreateOptions) -> Result<u32> {
    use crate::format::segment::max_object_len;
    use crate::format::MIN_SEGMENT_SIZE;
    let Some(max) = store.max_segment_len() else {
        return Ok(opts.segment_size);
    };
    let step = opts.compression.chunk_size();
    let mut seg = opts.segment_size / step * step;
    while seg >= MIN_SEGMENT_SIZE && max_object_len(seg) > max {
        seg -= step;
    }
    if seg < MIN_SEGMENT_SIZE {
        return Err(Error::InvalidArgument(format!(
            "{} takes segments of at most {max} bytes (a zone's capacity less its placement \
             header): too small for the minimum segment size {MIN_SEGMENT_SIZE}",
            store.describe()
        )));
    }
    if seg != opts.segment_size {
        info!(
            requested = opts.segment_size,
            segment_size = seg,
            store = %store.describe(),
            "segment size lowered to fit the store's zone capacity"
        );
    }
    Ok(seg)
}

/// On media of fixed size (zoned devices), refuse an image that could not
/// stay within the device under endless overwrites: the GC bound
/// (`size / threshold` plus eight segments of slack) plus three zones (the
/// open append zones and one for GC to copy into) must fit.
fn check_capacity(store: &dyn SegmentStore, sb: &Superblock) -> Result<()> {
    // Object stores (a directory's free space is shared and changes) are
    // thin: a full one reports NoSpace on write.
    if store.media() != crate::store::Media::Zoned {
        return Ok(());
    }
    let Some(capacity) = store.space()?.capacity else {
        return Ok(());
    };
    let t = GcConfig::default().threshold_pct.clamp(10, 95) as u64;
    let zone = store.max_segment_len().unwrap_or(0) + 4096;
    let need = sb.size / 4096 * 100 / t * 4096 + 8 * sb.segment_size as u64 + 3 * zone;
    if need > capacity {
        let fits = capacity.saturating_sub(8 * sb.segment_size as u64 + 3 * zone) * t / 100;
        return Err(Error::NoSpace(format!(
            "{}: an image of {} bytes needs about {need} bytes of zone capacity to stay \
             within the device under endless overwrites (GC threshold {t} %, 8 segments and \
             3 zones of slack); the device offers {capacity}, enough for an image of about \
             {} MiB",
            store.describe(),
            sb.size,
            fits >> 20
        )));
    }
    Ok(())
}

impl Image {
    /// Write a new image's superblock and initial (empty) checkpoint into an
    /// empty store. Refuses a store that already holds an image.
    pub fn create(store: Arc<dyn SegmentStore>, opts: &CreateOptions) -> Result<ImageInfo> {
        let segment_size = fit_segment_size(&*store, opts)?;
        let sb = Superblock::new(opts.size, segment_size, opts.compression)?;
        check_capacity(&*store, &sb)?;
        if store.get_meta("superblock")?.is_some() {
            return Err(Error::Exists(format!(
                "an image already lives in {}",
                store.describe()
            )));
        }
        let manifest = Manifest {
            uuid: sb.uuid,
            ckpt_seq: 0,
            next_seq: 1,
            last_write_seq: 0,
            parts: Vec::new(),
            segments: Vec::new(),
        };
        store.put_meta(&manifest_name(0), &manifest.encode())?;
        store.put_meta("superblock", &sb.encode())?;
        info!(uuid = %sb.uuid_string(), size = sb.size, store = %store.describe(), "image created");
        Ok(info_of(&sb, &*store))
    }

    /// Open an image, recovering from its newest valid checkpoint and the
    /// contiguous log after it.
    pub fn open(store: Arc<dyn SegmentStore>, opts: OpenOptions) -> Result<Image> {
        if opts.upload_threads == 0 || opts.checkpoint_every == 0 {
            return Err(Error::InvalidArgument(
                "upload_threads and checkpoint_every must be > 0".into(),
            ));
        }
        let sb = recovery::read_superblock(&*store)?;
        let r = recovery::recover(&*store, &sb)?;
        if !opts.read_only {
            recovery::clean_after_recovery(&*store, &r)?;
        }
        let mut kept = r.valid_ckpts.clone();
        kept.retain(|&c| c <= r.ckpt_seq);
        let rolled = r.rolled_forward.len() as u32;
        let total_blocks = r.segs.values().map(|s| s.data_blocks as u64).sum();
        let state = State {
            map: r.map,
            segs: r.segs,
            total_blocks,
            batch: None,
            pending: Default::default(),
            pending_bytes: 0,
            next_seq: r.next_seq,
            durable_upto: r.next_seq - 1,
            durable_ahead: Default::default(),
            write_seq: r.write_seq,
            durable_write_seq: r.write_seq,
            pending_wseq: Default::default(),
            segs_since_ckpt: rolled,
            last_ckpt: r.ckpt_seq,
            kept_ckpts: kept,
            last_upload_error: None,
            no_space_since: None,
            closed: false,
            spare_buffers: Vec::new(),
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            sb,
            store,
            opts,
            state: Mutex::new(state),
            changed: Condvar::new(),
            gc_gate: RwLock::new(()),
            maint_lock: Mutex::new(()),
            headers: Mutex::new(HeaderCache::default()),
            upload_tx: tx,
            upload_rx: rx,
            counters: Counters::default(),
            shutdown: Default::default(),
            maint_wake: Condvar::new(),
            maint_mutex: Mutex::new(false),
        });
        let mut threads = Vec::new();
        if !inner.opts.read_only {
            for i in 0..inner.opts.upload_threads {
                let inn = inner.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("lsvd-upload-{i}"))
                        .spawn(move || write_path::uploader(inn))
                        .map_err(|e| Error::io("spawn uploader thread", e))?,
                );
            }
            let inn = inner.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("lsvd-maint".into())
                    .spawn(move || maintenance(inn))
                    .map_err(|e| Error::io("spawn maintenance thread", e))?,
            );
        }
        Ok(Image {
            inner,
            threads: Mutex::new(threads),
        })
    }

    pub fn info(&self) -> ImageInfo {
        info_of(&self.inner.sb, &*self.inner.store)
    }

    /// Image size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.sb.size
    }

    /// Read `buf.len()` bytes at byte `offset` (both multiples of 4096).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let _span = tracing::trace_span!("read", offset, len = buf.len()).entered();
        self.inner.read(offset, buf)
    }

    /// Write `data` at byte `offset` (both multiples of 4096). Returns the
    /// write's sequence number: client writes and discards are numbered
    /// 1, 2, 3, ... in the order they are applied (the write journal records
    /// it; see [`Image::durable_write_seq`]).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<u64> {
        let _span = tracing::trace_span!("write", offset, len = data.len()).entered();
        self.inner.write(offset, data)
    }

    /// Make every write completed before this call durable.
    pub fn flush(&self) -> Result<()> {
        let _span = tracing::trace_span!("flush").entered();
        self.inner.flush()
    }

    /// TRIM: the range reads as zeros afterwards. Returns the write seq.
    pub fn discard(&self, offset: u64, len: u64) -> Result<u64> {
        let _span = tracing::trace_span!("discard", offset, len).entered();
        self.inner.discard(offset, len)
    }

    /// WRITE_ZEROES: the range reads as zeros afterwards (stored as a
    /// discard record: no zero data is written). Returns the write seq.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<u64> {
        let _span = tracing::trace_span!("write_zeroes", offset, len).entered();
        self.inner.discard(offset, len)
    }

    /// Every client write with a sequence number up to this one is durable
    /// in the store (a write journal may release its records up to here).
    pub fn durable_write_seq(&self) -> u64 {
        self.inner.state.lock().durable_write_seq
    }

    /// Sequence number of the last write accepted (the next one gets +1).
    /// Right after open this is the last write the store holds, so a journal
    /// replays its records from here + 1.
    pub fn last_write_seq(&self) -> u64 {
        self.inner.state.lock().write_seq
    }

    /// Write a checkpoint now.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// Run one GC pass now.
    pub fn gc_once(&self) -> Result<GcReport> {
        self.inner.gc_once()
    }

    pub fn stats(&self) -> Stats {
        let i = &self.inner;
        let st = i.state.lock();
        let (mut stored, mut live, mut segments) = (0u64, 0u64, 0u64);
        for s in st.segs.values() {
            if s.durable {
                segments += 1;
                stored += s.data_blocks as u64;
            }
            live += s.live_blocks as u64;
        }
        Stats {
            segments,
            stored_blocks: stored,
            live_blocks: live,
            extents: st.map.len() as u64,
            map_heap_bytes: st.map.heap_bytes() as u64,
            client_bytes_written: Counters::get(&i.counters.client_bytes_written),
            store_bytes_written: Counters::get(&i.counters.store_bytes_written),
            gc_bytes_copied: Counters::get(&i.counters.gc_bytes_copied),
            gc_runs: Counters::get(&i.counters.gc_runs),
            segments_deleted: Counters::get(&i.counters.segments_deleted),
            checkpoints: Counters::get(&i.counters.checkpoints),
            next_seq: st.next_seq,
            durable_seq: st.durable_upto,
            last_checkpoint_seq: st.last_ckpt,
        }
    }

    /// Flush, checkpoint and stop the background threads. Further calls
    /// fail with `Unavailable`.
    pub fn close(&self) -> Result<()> {
        if self.inner.state.lock().closed {
            return Ok(());
        }
        let res = if self.inner.opts.read_only {
            Ok(())
        } else {
            self.inner.flush().and_then(|()| self.inner.checkpoint())
        };
        self.inner.state.lock().closed = true;
        self.stop_threads();
        res
    }

    fn stop_threads(&self) {
        self.inner.shutdown.store(true, Ordering::Release);
        self.inner.changed.notify_all();
        self.inner.wake_maintenance();
        for _ in 0..self.inner.opts.upload_threads {
            let _ = self.inner.upload_tx.send(None);
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if !self.inner.state.lock().closed && !self.inner.opts.read_only {
            warn!("image dropped without close: unflushed writes are lost");
        }
        self.stop_threads();
    }
}

/// Background maintenance: checkpoints every `checkpoint_every` segments,
/// GC when utilization is below the threshold.
fn maintenance(inner: Arc<Inner>) {
    let mut last_ckpt = std::time::Instant::now();
    while !inner.is_shutdown() {
        {
            let mut w = inner.maint_mutex.lock();
            if !*w {
                let _ = inner.maint_wake.wait_for(&mut w, inner.opts.gc.interval);
            }
            *w = false;
        }
        if inner.is_shutdown() {
            break;
        }
        let (want_ckpt, zombies) = {
            let st = inner.state.lock();
            (
                st.segs_since_ckpt >= inner.opts.checkpoint_every,
                st.segs.values().any(|s| s.zombie.is_some()),
            )
        };
        // Zombies are deleted only after checkpoints: don't let them wait
        // for `checkpoint_every` segments when GC has produced some.
        if want_ckpt || (zombies && last_ckpt.elapsed() > Duration::from_secs(1)) {
            if let Err(e) = inner.checkpoint() {
                warn!(error = %e, "background checkpoint failed");
            }
            last_ckpt = std::time::Instant::now();
        }
        if inner.opts.gc.enabled && inner.utilization() * 100.0 < inner.opts.gc.threshold_pct as f64
        {
            match inner.gc_once() {
                Ok(r) if !r.victims.is_empty() => {
                    // Zombies need checkpoints to be deleted.
                    if let Err(e) = inner.checkpoint() {
                        warn!(error = %e, "checkpoint after gc failed");
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "gc pass failed"),
            }
        }
    }
}

/// Read the superblock of the image in `store` without opening it.
pub fn read_info(store: &dyn SegmentStore) -> Result<ImageInfo> {
    let sb = recovery::read_superblock(store)?;
    Ok(info_of(&sb, store))
}

#[cfg(test)]
mod tests;
