//! [`Disk`]: what front ends (NBD, ublk, the CLI) use — the log engine with
//! the write journal in front of it (and, later, the read cache under it).
//!
//! # Write order and why nothing acknowledged is lost
//!
//! A write goes **engine first**: `Image::write` applies it under the
//! engine's lock and returns its write seq, so seqs follow apply order (and
//! reads see the data at once, served from the engine's memory). Then the
//! journal record carrying that seq is written, and the write is
//! acknowledged when the record is on the device.
//!
//! Replay (on open) takes the backend's state (every write up to
//! `S = Image::last_write_seq()` after recovery: the backend holds a prefix
//! of the write seqs, because segments are recovered contiguously and each
//! segment holds writes in seq order) and applies journal records
//! `S+1, S+2, ...` in seq order, stopping at the first missing, torn or
//! damaged seq.
//!
//! *Prefix consistency.* Replay applies exactly the writes `1..=R` for
//! some `R`: the backend's prefix `1..=S` and the contiguous records
//! `S+1..=R`. As seqs are the engine's apply order, the image after replay
//! is the image as it was right after write `R` was applied — if write N
//! is visible, every write before N is too.
//!
//! *Flushed writes survive.* `flush` takes `T = Image::last_write_seq()`
//! at its start: every write acknowledged before the flush started has a
//! seq <= T (it was applied before). It then waits until every seq <= T is
//! *covered* — its record is written, or the backend holds it durably
//! (`durable_write_seq`) — fdatasyncs the journal and records
//! `flushed_seq = T` in the journal superblock. Waiting for *every* seq <= T
//! (not just the acknowledged ones) matters: a concurrent write with a
//! smaller seq whose record was still in flight would otherwise leave a gap
//! that stops replay before the acknowledged write. After a crash, each seq
//! <= T is either in the backend (so `S` >= it; records are released only
//! once `durable_write_seq` passes them) or in the journal, so replay
//! reaches `R >= T`. If it cannot (damaged record, lost backend segments),
//! `R < flushed_seq` shows it and the open refuses unless the caller
//! accepts cache loss.
//!
//! *Engine errors.* A failed engine write may have consumed a seq without a
//! record (a hole). The next flush then flushes the engine as well, so the
//! backend covers the hole and the journal's coverage can pass it.
//!
//! # Read cache
//! With a [`ReadCacheConfig`], the engine runs over a
//! [`crate::read_cache::CachingStore`] wrapping the backend store (segment
//! reads are cached on local flash; segments are immutable, so cached data
//! is never stale). The journal binding is kept in the backend itself.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log_engine::{Error, Image, OpenOptions, Result, SegmentStore};
use parking_lot::{Condvar, Mutex};
use tracing::{info, warn};

use crate::journal::binding::Binding;
use crate::journal::format::{parse_uuid, uuid_string, RecordKind};
use crate::journal::scan::{self, probe, scan};
use crate::journal::{Journal, JournalConfig, JournalStats};
use crate::read_cache::{CachingStore, ReadCacheStats};

pub use crate::read_cache::ReadCacheConfig;

/// How often the read cache's index is persisted while the disk is open.
const READ_CACHE_PERSIST: Duration = Duration::from_secs(30);

/// What [`Disk::open`] found and did.
#[derive(Clone, Debug, Default)]
pub struct OpenReport {
    /// Last write seq the backend held at open (before replay).
    pub backend_seq: u64,
    /// Highest valid record seq in the journal, if the journal was readable
    /// and belonged to this image.
    pub journal_last_seq: Option<u64>,
    /// The journal superblock's flushed seq, if readable.
    pub journal_flushed_seq: Option<u64>,
    pub replayed_records: u64,
    pub replayed_bytes: u64,
    /// Image write seq after replay (every write up to here is present).
    pub replayed_to: u64,
    /// Valid records beyond the point where replay stopped (not applied).
    pub discarded_records: u64,
    /// Why replay stopped before the journal's last record, if it did.
    pub stop_reason: Option<String>,
    /// Set when the journal could not be used (or lost data) and the caller
    /// accepted it: what happened and how far back the image went.
    pub cache_loss: Option<String>,
    pub replay_time: Duration,
}

/// Journal and cache state for `lsvdctl cache info`.
#[derive(Clone, Debug)]
pub struct CacheInfo {
    pub journal_path: PathBuf,
    pub journal: JournalStats,
    /// Engine: every write up to here is durable in the backend.
    pub durable_write_seq: u64,
    /// Engine: last write applied.
    pub last_write_seq: u64,
    /// Read-cache counters, when a read cache is in use.
    pub read_cache: Option<ReadCacheStats>,
}

struct Shared {
    /// The backend store (holds the journal binding).
    store: Arc<dyn SegmentStore>,
    rcache: Option<Arc<CachingStore>>,
    image: Image,
    journal: Journal,
    /// An engine write failed (a seq may have no record): the next flush
    /// flushes the engine too.
    hole: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// An open disk. Share it with `Arc<Disk>`: all methods take `&self`.
pub struct Disk {
    sh: Arc<Shared>,
    releaser: Mutex<Option<JoinHandle<()>>>,
    journal_path: PathBuf,
    /// Held while the disk is open (see [`crate::journal::JournalLock`]).
    lock: Mutex<Option<crate::journal::JournalLock>>,
    closed: AtomicBool,
}

/// How long an open waits for another process to let go of the journal.
const JOURNAL_LOCK_WAIT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("image", &self.sh.image)
            .field("journal", &self.journal_path)
            .finish()
    }
}

fn loss_error(jcfg: &JournalConfig, reason: &str, backend_seq: u64) -> Error {
    Error::corrupt(
        format!("write journal {}", jcfg.path.display()),
        format!(
            "{reason}; opening from the backend alone would take the image back to write \
             seq {backend_seq}: pass accept_cache_loss (--accept-cache-loss) to do so"
        ),
    )
}

impl Disk {
    /// Open the image in `store` with its write journal: recover the engine,
    /// replay the journal (see the module docs), flush, and start a new
    /// journal generation. If the journal is missing, blank, foreign, stale
    /// or lost flushed data, the open fails unless `accept_cache_loss`, in
    /// which case the image opens from the backend (plus whatever prefix of
    /// the journal is still usable) and the report says what was lost.
    pub fn open(
        store: Arc<dyn SegmentStore>,
        jcfg: &JournalConfig,
        read_cache: Option<&ReadCacheConfig>,
        opts: OpenOptions,
        accept_cache_loss: bool,
    ) -> Result<(Disk, OpenReport)> {
        let _span = tracing::info_span!("disk_open", journal = %jcfg.path.display()).entered();
        if opts.read_only {
            return Err(Error::InvalidArgument(
                "a Disk with a write journal cannot be opened read-only; open the Image".into(),
            ));
        }
        let started = Instant::now();
        let mut jlock = crate::journal::lock(&jcfg.path, JOURNAL_LOCK_WAIT)?;
        let binding = Binding::load(&*store);
        // The engine reads through the read cache, if any; the journal
        // binding stays in the backend store itself.
        let (engine_store, rcache) = match read_cache {
            Some(rc) => {
                let cs =
                    CachingStore::open(store.clone(), rc, crate::read_cache::image_uuid(&*store)?)?;
                cs.start_persister(READ_CACHE_PERSIST);
                (cs.clone() as Arc<dyn SegmentStore>, Some(cs))
            }
            None => (store.clone(), None),
        };
        let image = Image::open(engine_store, opts)?;
        let uuid = parse_uuid(&image.info().uuid)?;
        let backend_seq = image.last_write_seq();
        let mut rep = OpenReport {
            backend_seq,
            replayed_to: backend_seq,
            ..Default::default()
        };

        // Decide what the journal is worth.
        let mut loss: Option<String> = None;
        let mut usable = None;
        let found = probe(&jcfg.path)?;
        let sb = found.as_ref().map(|p| p.superblock.clone());
        if let Some(Ok(sb)) = &sb {
            if sb.uuid == uuid {
                rep.journal_flushed_seq = Some(sb.flushed_seq);
            }
        }
        match binding {
            Err(e) => loss = Some(format!("the backend's journal binding is unreadable: {e}")),
            Ok(None) => {}
            Ok(Some(Binding::Clean { base_seq, .. })) => {
                if backend_seq < base_seq {
                    loss = Some(format!(
                        "the backend was closed cleanly at write seq {base_seq} but now holds \
                         only {backend_seq} (lost segments)"
                    ));
                }
            }
            Ok(Some(Binding::Dirty {
                generation,
                base_seq,
                ..
            })) => match sb {
                None => loss = Some("the journal is missing".into()),
                Some(Err(e)) => loss = Some(format!("the journal is unusable: {e}")),
                Some(Ok(sb)) if sb.uuid != uuid => {
                    loss = Some(format!(
                        "the journal belongs to image {}, not {}",
                        uuid_string(&sb.uuid),
                        uuid_string(&uuid)
                    ))
                }
                Some(Ok(sb)) if sb.generation != generation => {
                    loss = Some(format!(
                        "the journal is stale (generation {:016x}, the image expects {:016x})",
                        sb.generation, generation
                    ))
                }
                Some(Ok(sb)) => {
                    if backend_seq < base_seq {
                        loss = Some(format!(
                            "the backend holds write seq {backend_seq} but the journal \
                             generation started at {base_seq} (lost segments)"
                        ));
                    }
                    usable = Some(sb);
                }
            },
        }

        // Plan the replay: contiguous seqs after the backend's.
        let mut plan = Vec::new();
        if let Some(sb) = &usable {
            let s = scan(&jcfg.path, sb)?;
            rep.journal_last_seq = s.records.last().map(|r| r.header.seq);
            let mut next = backend_seq + 1;
            for r in s.records.into_iter().filter(|r| r.header.seq > backend_seq) {
                if r.header.seq == next {
                    next += 1;
                    plan.push(r);
                } else {
                    rep.discarded_records += 1;
                    if rep.stop_reason.is_none() {
                        let why = s
                            .damaged
                            .iter()
                            .find(|d| d.1 == next)
                            .map(|d| {
                                format!("record seq {next} at offset {} is damaged: {}", d.0, d.2)
                            })
                            .unwrap_or_else(|| format!("record seq {next} is missing"));
                        rep.stop_reason = Some(why);
                    }
                }
            }
            let reach = next - 1;
            if reach < sb.flushed_seq && loss.is_none() {
                loss = Some(format!(
                    "flushed writes up to seq {} are not recoverable: {}",
                    sb.flushed_seq,
                    rep.stop_reason
                        .clone()
                        .unwrap_or_else(|| format!("records after seq {reach} are missing"))
                ));
            }
        }
        if let Some(why) = &loss {
            if !accept_cache_loss {
                return Err(loss_error(jcfg, why, backend_seq));
            }
        }

        // Replay.
        if !plan.is_empty() {
            let size = usable.as_ref().map_or(0, |sb| sb.size);
            let mut reader = scan::RecordReader::open(&jcfg.path, size)?;
            for r in &plan {
                let h = &r.header;
                let (off, len) = h.extents.first().copied().unwrap_or((0, 0));
                let seq = match h.kind {
                    RecordKind::Write => {
                        let data = reader.read(r)?;
                        rep.replayed_bytes += data.len() as u64;
                        image.write(off, &data)?
                    }
                    RecordKind::Discard => image.discard(off, len)?,
                    RecordKind::Zeroes => image.write_zeroes(off, len)?,
                };
                if seq != h.seq {
                    return Err(Error::corrupt(
                        format!("write journal {}", jcfg.path.display()),
                        format!("replay of record seq {} got engine seq {seq}", h.seq),
                    ));
                }
                rep.replayed_records += 1;
            }
        }
        image.flush()?;
        rep.replayed_to = image.last_write_seq();
        if let Some(why) = loss {
            let msg = format!(
                "{why}; image opened at write seq {} (backend had {backend_seq}{})",
                rep.replayed_to,
                rep.journal_last_seq
                    .map(|s| format!(", journal's last record {s}"))
                    .unwrap_or_default()
            );
            warn!(%msg, "cache loss accepted");
            rep.cache_loss = Some(msg);
        }

        // New generation: clean binding first (the backend now holds
        // everything), then the journal superblock, then the dirty binding.
        // A crash between steps leaves a binding that needs no journal, or
        // one that matches the journal.
        let base = image.last_write_seq();
        Binding::Clean {
            uuid,
            base_seq: base,
        }
        .store(&*store)?;
        let journal = Journal::start(jcfg, uuid, base)?;
        if jlock.is_none() {
            jlock = crate::journal::lock(&jcfg.path, JOURNAL_LOCK_WAIT)?;
        }
        Binding::Dirty {
            uuid,
            generation: journal.generation(),
            base_seq: base,
        }
        .store(&*store)?;
        rep.replay_time = started.elapsed();
        info!(
            backend_seq,
            replayed = rep.replayed_records,
            replayed_to = rep.replayed_to,
            ms = rep.replay_time.as_millis() as u64,
            "disk open"
        );
        let sh = Arc::new(Shared {
            store,
            rcache,
            image,
            journal,
            hole: AtomicBool::new(false),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let s2 = sh.clone();
        let releaser = std::thread::Builder::new()
            .name("lsvd-journal-release".into())
            .spawn(move || release_thread(s2))
            .map_err(|e| Error::io("spawn journal release thread", e))?;
        Ok((
            Disk {
                sh,
                releaser: Mutex::new(Some(releaser)),
                journal_path: jcfg.path.clone(),
                lock: Mutex::new(jlock),
                closed: AtomicBool::new(false),
            },
            rep,
        ))
    }

    /// Image size in bytes.
    pub fn size(&self) -> u64 {
        self.sh.image.size()
    }

    /// The engine (for info and stats; write through the `Disk`).
    pub fn image(&self) -> &Image {
        &self.sh.image
    }

    /// Read `buf.len()` bytes at `offset` (4096-aligned).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.sh.image.read(offset, buf)
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        if !offset.is_multiple_of(4096) || !len.is_multiple_of(4096) {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} and length {len} must each be a multiple of 4096"
            )));
        }
        match offset.checked_add(len) {
            Some(e) if e <= self.size() => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "range {offset}+{len} is past the end of the disk ({} bytes)",
                self.size()
            ))),
        }
    }

    fn engine<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.sh.hole.store(true, Ordering::Release);
        }
        r
    }

    /// Append the record of engine write `seq`; a failure leaves a seq
    /// without a record (a hole), which the next flush covers by flushing
    /// the engine.
    fn journal(&self, seq: u64, kind: RecordKind, extent: (u64, u64), data: &[u8]) -> Result<()> {
        let r = self.sh.journal.append(seq, kind, extent, data);
        if r.is_err() {
            self.sh.hole.store(true, Ordering::Release);
        }
        r
    }

    /// Write `data` at `offset`; returns the write seq of its last piece.
    /// Complete once the journal holds it; with `fua`, once it is durable.
    /// Writes larger than a journal record are split (each piece atomic).
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<u64> {
        let _span = tracing::trace_span!("disk_write", offset, len = data.len(), fua).entered();
        self.check(offset, data.len() as u64)?;
        let max = self.sh.journal.max_record_data().max(4096) as usize;
        let mut seq = 0;
        for (i, piece) in data.chunks(max).enumerate() {
            let off = offset + (i * max) as u64;
            seq = self.engine(self.sh.image.write(off, piece))?;
            self.journal(seq, RecordKind::Write, (off, piece.len() as u64), piece)?;
        }
        if fua && seq > 0 {
            self.sync_upto(seq)?;
        }
        Ok(seq)
    }

    /// TRIM; complete once journaled.
    pub fn discard(&self, offset: u64, len: u64) -> Result<u64> {
        self.check(offset, len)?;
        if len == 0 {
            return Ok(self.sh.image.last_write_seq());
        }
        let seq = self.engine(self.sh.image.discard(offset, len))?;
        self.journal(seq, RecordKind::Discard, (offset, len), &[])?;
        Ok(seq)
    }

    /// WRITE_ZEROES; complete once journaled.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<u64> {
        self.check(offset, len)?;
        if len == 0 {
            return Ok(self.sh.image.last_write_seq());
        }
        let seq = self.engine(self.sh.image.write_zeroes(offset, len))?;
        self.journal(seq, RecordKind::Zeroes, (offset, len), &[])?;
        Ok(seq)
    }

    /// Make every write completed before this call durable; returns the
    /// write seq up to which everything is durable.
    pub fn flush(&self) -> Result<u64> {
        let _span = tracing::trace_span!("disk_flush").entered();
        let target = self.sh.image.last_write_seq();
        self.sync_upto(target)?;
        Ok(target)
    }

    fn sync_upto(&self, target: u64) -> Result<()> {
        if self.sh.hole.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.sh.image.flush() {
                self.sh.hole.store(true, Ordering::Release);
                return Err(e);
            }
        }
        let img = &self.sh.image;
        self.sh
            .journal
            .sync_upto(target, &|| img.durable_write_seq())
    }

    /// Journal and cache state.
    pub fn cache_info(&self) -> CacheInfo {
        CacheInfo {
            journal_path: self.journal_path.clone(),
            journal: self.sh.journal.stats(),
            durable_write_seq: self.sh.image.durable_write_seq(),
            last_write_seq: self.sh.image.last_write_seq(),
            read_cache: self.sh.rcache.as_ref().map(|c| c.stats()),
        }
    }

    /// Flush the engine so the whole journal can be released (`cache
    /// flush`).
    pub fn flush_cache(&self) -> Result<()> {
        self.sh.image.flush()?;
        self.sh
            .journal
            .note_durable(self.sh.image.durable_write_seq());
        Ok(())
    }

    /// Flush everything to the backend, mark the binding clean (no journal
    /// needed) and stop. Further calls fail.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_releaser();
        let uuid = parse_uuid(&self.sh.image.info().uuid)?;
        let res = self.sh.image.close();
        self.sh.journal.close();
        res?;
        if let Some(c) = &self.sh.rcache {
            c.persist_index()?;
        }
        let base = self.sh.image.last_write_seq();
        Binding::Clean {
            uuid,
            base_seq: base,
        }
        .store(&*self.sh.store)?;
        // The read cache (held by the engine) is let go when the Disk drops.
        *self.lock.lock() = None;
        Ok(())
    }

    fn stop_releaser(&self) {
        *self.sh.stop.lock() = true;
        self.sh.wake.notify_all();
        if let Some(t) = self.releaser.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Like a crash: the journal keeps what the backend does not have.
        self.stop_releaser();
        self.sh.journal.close();
    }
}

/// Background: release journal records the backend holds; when writers
/// wait for space (or the log is over half full), flush the engine so
/// records become releasable.
fn release_thread(sh: Arc<Shared>) {
    let mut last_flush = Instant::now() - Duration::from_secs(1);
    loop {
        {
            let mut stop = sh.stop.lock();
            if *stop {
                return;
            }
            sh.wake.wait_for(&mut stop, Duration::from_millis(10));
            if *stop {
                return;
            }
        }
        sh.journal.note_durable(sh.image.durable_write_seq());
        let pressed = sh.journal.space_waiters() > 0;
        if pressed || (sh.journal.fill() > 0.5 && last_flush.elapsed() > Duration::from_millis(50))
        {
            if let Err(e) = sh.image.flush() {
                warn!(error = %e, "background engine flush for journal space failed");
            }
            last_flush = Instant::now();
            sh.journal.note_durable(sh.image.durable_write_seq());
        }
    }
}
