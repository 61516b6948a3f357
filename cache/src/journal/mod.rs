//! The write journal: a circular log on a local file or block device that
//! holds every acknowledged write until the backend has it durably, and is
//! replayed after a crash. Format: `cache/JOURNAL.md`.
//!
//! Contract (what [`crate::disk::Disk`] builds on):
//! - [`Journal::append`] returns once the record is written to the device
//!   (O_DIRECT, through io_uring): the write may be acknowledged.
//! - [`Journal::sync_upto`]`(T)` returns once every write with seq <= T is
//!   in the journal or durable in the backend, the device was fdatasync'ed,
//!   and the superblock records `flushed_seq >= T`.
//! - A record's space is reused only after the backend holds its seq
//!   durably ([`Journal::note_durable`]); when the log is full, appends wait
//!   (nothing is dropped); the caller frees space by flushing the engine.
//! - One submission thread owns the device (and the io_uring): every record
//!   queued while it was busy goes down in the next group, contiguous
//!   records as one `writev` (group commit).
//!
//! Modules: `format` (superblock, record header, aligned buffers), `space`
//! (circular allocation), `device` (io_uring I/O), `scan` (reading records
//! back: replay and [`inspect`]), `binding` (the marker in the backend that
//! says which journal generation the image depends on).

pub mod binding;
mod device;
pub mod format;
pub mod scan;
mod space;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log_engine::{Error, Result};
use parking_lot::{Condvar, Mutex};
use tracing::{debug, warn};

use device::{Device, Run, MAX_IOVS};
pub use format::RecordKind;
use format::{record_len_for, AlignedBuf, RecordHeader, Superblock, BLOCK, DATA_START, MIN_SIZE};
pub use scan::{inspect, JournalInfo};
use space::Space;

/// Where the journal lives and how to drive it.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// A regular file (created if missing) or a block device.
    pub path: PathBuf,
    /// Size in bytes for a regular file (the file is grown or cut to it);
    /// 0 = keep the existing file's size. Ignored for block devices.
    pub size: u64,
    /// Open with O_DIRECT (default). Falls back to buffered I/O with a
    /// warning where the file system refuses O_DIRECT (tmpfs).
    pub direct: bool,
    /// Test hook: submit each record of a group as its own write, newest
    /// first, so completions (and what a crash leaves) are out of order.
    pub reorder_for_tests: bool,
}

impl JournalConfig {
    pub fn new(path: impl Into<PathBuf>, size: u64) -> JournalConfig {
        JournalConfig {
            path: path.into(),
            size,
            direct: true,
            reorder_for_tests: false,
        }
    }
}

/// Counters and gauges of a running journal.
#[derive(Clone, Debug, Default)]
pub struct JournalStats {
    pub size: u64,
    /// Bytes held by records not yet released.
    pub used: u64,
    pub live_records: u64,
    pub generation: u64,
    /// Backend write seq when this generation started (the replay point).
    pub base_seq: u64,
    /// Every write with seq <= this is in the journal or the backend.
    pub covered_seq: u64,
    /// Highest seq a completed flush made durable.
    pub flushed_seq: u64,
    pub records_written: u64,
    pub bytes_written: u64,
    /// Device writes issued (a group commit issues one per contiguous run).
    pub device_writes: u64,
    /// Group commits (submission rounds).
    pub groups: u64,
    pub syncs: u64,
    /// Writers currently waiting for space.
    pub space_waiters: u64,
    pub io_uring: bool,
}

struct Queued {
    ticket: u64,
    pos: u64,
    seq: u64,
    buf: AlignedBuf,
}

struct State {
    space: Space,
    queue: Vec<Queued>,
    next_ticket: u64,
    /// Every ticket <= this is written (groups complete in order).
    done_ticket: u64,
    /// Written seqs above `covered`.
    done_seqs: BTreeSet<u64>,
    /// Every seq <= this is written to the journal or durable in the backend.
    covered: u64,
    sync_wanted: u64,
    sync_done: u64,
    /// Highest seq a requested sync will record as flushed.
    flush_target: u64,
    sb: Superblock,
    failed: Option<String>,
    shutdown: bool,
    space_waiters: u64,
    stats: JournalStats,
}

impl State {
    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(e) => Err(Error::Unavailable(format!("write journal failed: {e}"))),
            None if self.shutdown => Err(Error::Unavailable("write journal is closed".into())),
            None => Ok(()),
        }
    }

    fn advance_covered(&mut self) {
        while let Some(&s) = self.done_seqs.first() {
            if s <= self.covered {
                self.done_seqs.pop_first();
            } else if s == self.covered + 1 {
                self.covered = s;
                self.done_seqs.pop_first();
            } else {
                break;
            }
        }
    }
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
    path: PathBuf,
    reorder: bool,
}

/// A running journal generation. See the module docs for the contract.
pub struct Journal {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    uuid: [u8; 16],
    generation: u64,
    size: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.shared.path)
            .field("generation", &self.generation)
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random 64-bit nonce (never 0).
fn nonce() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// Open the journal file or device for writing; returns it and its size.
fn open_device(cfg: &JournalConfig) -> Result<(File, u64)> {
    let what = || format!("journal {}", cfg.path.display());
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if let Ok(m) = std::fs::metadata(&cfg.path) {
            if !m.file_type().is_block_device() {
                o.create(true);
            }
        } else {
            o.create(true);
        }
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(&cfg.path)
    };
    let mut file = match open(cfg.direct) {
        Err(e) if cfg.direct && e.raw_os_error() == Some(libc::EINVAL) => {
            warn!(path = %cfg.path.display(), "O_DIRECT refused; journal uses buffered I/O + fdatasync");
            open(false)
        }
        r => r,
    }
    .map_err(|e| Error::io(format!("open {}", what()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", what()), e))?;
    let size = if meta.file_type().is_block_device() {
        file.seek(SeekFrom::End(0))
            .map_err(|e| Error::io(format!("size of {}", what()), e))?
    } else {
        if cfg.size > 0 && meta.len() != cfg.size {
            file.set_len(cfg.size)
                .map_err(|e| Error::io(format!("resize {}", what()), e))?;
            // Write the new range once: direct writes into holes or
            // unwritten extents would need a metadata update each (and an
            // fsync to make it durable).
            zero_fill(&cfg.path, meta.len().min(cfg.size), cfg.size)
                .map_err(|e| Error::io(format!("zero-fill {}", what()), e))?;
        }
        if cfg.size > 0 {
            cfg.size
        } else {
            meta.len()
        }
    };
    let size = size / BLOCK * BLOCK;
    if size < MIN_SIZE {
        return Err(Error::InvalidArgument(format!(
            "{} is {size} bytes; a journal needs at least {MIN_SIZE}",
            what()
        )));
    }
    Ok((file, size))
}

/// An exclusive `flock` on the journal file or device, held by the
/// process using it. Besides keeping two processes off one journal, it
/// waits out a killed predecessor: the lock is released only when the last
/// reference to its open file goes, and io_uring holds one per request, so
/// once we have the lock no write of the dead process can still land.
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

/// Lock the journal at `path`, waiting up to `wait`. `Ok(None)` when the
/// path does not exist (nothing to protect yet).
pub fn lock(path: &Path, wait: Duration) -> Result<Option<JournalLock>> {
    use std::os::fd::AsRawFd;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("open journal {}", path.display()), e)),
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        // SAFETY: flock on a valid descriptor we own.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Some(JournalLock { _file: f }));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::io(format!("lock journal {}", path.display()), e));
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Unavailable(format!(
                "journal {} is in use by another process",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Write zeros over `[from, to)` of a regular file and sync it.
fn zero_fill(path: &Path, from: u64, to: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; 8 << 20];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    f.sync_all()
}

impl Journal {
    /// Start a new generation on the device: write a fresh superblock (both
    /// slots, synced) for image `uuid` whose backend holds every write up to
    /// `base_seq`, and start the submission thread. Records of earlier
    /// generations become invisible (they carry another generation nonce).
    pub fn start(cfg: &JournalConfig, uuid: [u8; 16], base_seq: u64) -> Result<Journal> {
        let (file, size) = open_device(cfg)?;
        let mut dev = Device::new(file);
        let generation = nonce();
        let mut sb = Superblock {
            uuid,
            size,
            generation,
            base_seq,
            flushed_seq: base_seq,
            counter: 0,
            created: now_secs(),
        };
        let mut buf = AlignedBuf::new(BLOCK as usize);
        for c in 1..=2u64 {
            sb.counter = c;
            sb.encode(&mut buf);
            dev.write_at((c % 2) * BLOCK, &buf)
                .map_err(|e| Error::io(format!("write superblock of {}", cfg.path.display()), e))?;
        }
        dev.datasync()
            .map_err(|e| Error::io(format!("fdatasync {}", cfg.path.display()), e))?;
        let stats = JournalStats {
            size,
            generation,
            base_seq,
            covered_seq: base_seq,
            flushed_seq: base_seq,
            io_uring: dev.uses_io_uring(),
            ..Default::default()
        };
        let shared = Arc::new(Shared {
            st: Mutex::new(State {
                space: Space::new(size),
                queue: Vec::new(),
                next_ticket: 1,
                done_ticket: 0,
                done_seqs: BTreeSet::new(),
                covered: base_seq,
                sync_wanted: 0,
                sync_done: 0,
                flush_target: base_seq,
                sb,
                failed: None,
                shutdown: false,
                space_waiters: 0,
                stats,
            }),
            cv: Condvar::new(),
            path: cfg.path.clone(),
            reorder: cfg.reorder_for_tests,
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("lsvd-journal".into())
            .spawn(move || submission_thread(sh, dev))
            .map_err(|e| Error::io("spawn journal thread", e))?;
        debug!(path = %cfg.path.display(), generation, base_seq, size, "journal generation started");
        Ok(Journal {
            shared,
            thread: Mutex::new(Some(thread)),
            uuid,
            generation,
            size,
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Size of the journal in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Largest data length one record may carry (callers split larger
    /// writes): a quarter of the log, so several records always fit.
    pub fn max_record_data(&self) -> u64 {
        ((self.size - DATA_START) / 4 / BLOCK).saturating_sub(1) * BLOCK
    }

    /// Append the record of write `seq` and return once it is on the
    /// device. `data` is the written data for [`RecordKind::Write`], empty
    /// otherwise; `extent` is (byte offset, byte length). Waits while the
    /// log is full (see [`Journal::space_waiters`]).
    pub fn append(
        &self,
        seq: u64,
        kind: RecordKind,
        extent: (u64, u64),
        data: &[u8],
    ) -> Result<()> {
        let _span = tracing::trace_span!("journal_append", seq, len = data.len()).entered();
        let data_len = data.len() as u64;
        if data_len > self.max_record_data() {
            return Err(Error::InvalidArgument(format!(
                "journal record of {data_len} bytes exceeds the limit of {}",
                self.max_record_data()
            )));
        }
        let record_len = record_len_for(data_len);
        let mut buf = AlignedBuf::new(record_len as usize);
        buf[BLOCK as usize..BLOCK as usize + data.len()].copy_from_slice(data);
        let hdr = RecordHeader {
            kind,
            uuid: self.uuid,
            generation: self.generation,
            seq,
            data_len,
            record_len,
            data_crc: crc32c::crc32c(data),
            extents: vec![extent],
        };
        hdr.encode(&mut buf);
        let sh = &*self.shared;
        let mut st = sh.st.lock();
        let ticket = loop {
            st.check_failed()?;
            let ticket = st.next_ticket;
            if let Some(pos) = st.space.alloc(ticket, seq, record_len) {
                st.next_ticket += 1;
                st.queue.push(Queued {
                    ticket,
                    pos,
                    seq,
                    buf,
                });
                break ticket;
            }
            st.space_waiters += 1;
            sh.cv.wait_for(&mut st, Duration::from_millis(50));
            st.space_waiters -= 1;
        };
        sh.cv.notify_all();
        while st.done_ticket < ticket {
            st.check_failed()?;
            sh.cv.wait(&mut st);
        }
        Ok(())
    }

    /// Make every write with seq <= `target` durable: wait until each is
    /// written to the journal (or durable in the backend, as `durable`
    /// reports), then fdatasync the device and record `flushed_seq`.
    pub fn sync_upto(&self, target: u64, durable: &dyn Fn() -> u64) -> Result<()> {
        let _span = tracing::trace_span!("journal_sync", target).entered();
        let sh = &*self.shared;
        loop {
            let d = durable();
            let mut st = sh.st.lock();
            st.check_failed()?;
            self.note_durable_locked(&mut st, d);
            if st.covered >= target {
                break;
            }
            sh.cv.wait_for(&mut st, Duration::from_millis(5));
            if st.covered >= target {
                break;
            }
        }
        let mut st = sh.st.lock();
        st.flush_target = st.flush_target.max(target);
        st.sync_wanted += 1;
        let mine = st.sync_wanted;
        sh.cv.notify_all();
        while st.sync_done < mine {
            st.check_failed()?;
            sh.cv.wait(&mut st);
        }
        Ok(())
    }

    /// The backend holds every write with seq <= `durable`: release the
    /// records that are no longer needed and count those seqs as covered.
    pub fn note_durable(&self, durable: u64) {
        let mut st = self.shared.st.lock();
        self.note_durable_locked(&mut st, durable);
    }

    fn note_durable_locked(&self, st: &mut State, durable: u64) {
        let mut changed = false;
        if durable > st.covered {
            st.covered = durable;
            st.advance_covered();
            changed = true;
        }
        let done = st.done_ticket;
        if st.space.release(done, durable) > 0 {
            changed = true;
        }
        if changed {
            self.shared.cv.notify_all();
        }
    }

    /// Writers waiting for space right now (the caller should flush the
    /// engine so records can be released).
    pub fn space_waiters(&self) -> u64 {
        self.shared.st.lock().space_waiters
    }

    /// Share of the log held by live records, 0.0 to 1.0.
    pub fn fill(&self) -> f64 {
        let st = self.shared.st.lock();
        st.space.used() as f64 / st.space.capacity() as f64
    }

    pub fn stats(&self) -> JournalStats {
        let st = self.shared.st.lock();
        let mut s = st.stats.clone();
        s.used = st.space.used();
        s.live_records = st.space.live_records() as u64;
        s.covered_seq = st.covered;
        s.flushed_seq = st.sb.flushed_seq;
        s.space_waiters = st.space_waiters;
        s
    }

    /// Stop the submission thread after the queued work is done. Later
    /// calls fail with `Unavailable`.
    pub fn close(&self) {
        {
            let mut st = self.shared.st.lock();
            st.shutdown = true;
            self.shared.cv.notify_all();
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    /// Path of the journal file or device.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// The submission thread: take everything queued, write it (contiguous
/// records as one writev), mark it done; then, if a flush asked, fdatasync
/// and write the superblock with the new `flushed_seq`.
fn submission_thread(sh: Arc<Shared>, mut dev: Device) {
    let mut sb_buf = AlignedBuf::new(BLOCK as usize);
    loop {
        let (mut batch, sync_round, flush_target) = {
            let mut st = sh.st.lock();
            while st.queue.is_empty() && st.sync_wanted == st.sync_done && !st.shutdown {
                sh.cv.wait(&mut st);
            }
            if st.queue.is_empty() && st.sync_wanted == st.sync_done {
                return;
            }
            if st.failed.is_some() {
                // Waiters see the failure; drop the work.
                st.queue.clear();
                st.sync_done = st.sync_wanted;
                sh.cv.notify_all();
                continue;
            }
            (
                std::mem::take(&mut st.queue),
                st.sync_wanted,
                st.flush_target,
            )
        };
        if !batch.is_empty() {
            batch.sort_by_key(|q| q.ticket);
            let res = write_group(&mut dev, &batch, sh.reorder);
            let mut st = sh.st.lock();
            match res {
                Ok(n_writes) => {
                    st.done_ticket = batch.last().map_or(st.done_ticket, |q| q.ticket);
                    for q in &batch {
                        if q.seq > st.covered {
                            st.done_seqs.insert(q.seq);
                        }
                        st.stats.bytes_written += q.buf.len() as u64;
                    }
                    st.advance_covered();
                    st.stats.records_written += batch.len() as u64;
                    st.stats.device_writes += n_writes;
                    st.stats.groups += 1;
                }
                Err(e) => {
                    warn!(path = %sh.path.display(), error = %e, "journal write failed");
                    st.failed = Some(e.to_string());
                }
            }
            sh.cv.notify_all();
        }
        let need_sync = sh.st.lock().sync_done < sync_round;
        if need_sync {
            let res = dev.datasync().and_then(|()| {
                let mut st = sh.st.lock();
                st.sb.counter += 1;
                st.sb.flushed_seq = st.sb.flushed_seq.max(flush_target);
                st.sb.encode(&mut sb_buf);
                let slot = (st.sb.counter % 2) * BLOCK;
                drop(st);
                dev.write_at(slot, &sb_buf)
            });
            let mut st = sh.st.lock();
            match res {
                Ok(()) => {
                    st.sync_done = sync_round;
                    st.stats.syncs += 1;
                }
                Err(e) => {
                    warn!(path = %sh.path.display(), error = %e, "journal sync failed");
                    st.failed = Some(format!("fdatasync/superblock: {e}"));
                }
            }
            sh.cv.notify_all();
        }
    }
}

/// Write one group; returns the number of device writes issued.
fn write_group(dev: &mut Device, batch: &[Queued], reorder: bool) -> std::io::Result<u64> {
    let mut runs: Vec<Run<'_>> = Vec::new();
    for q in batch {
        let extend = !reorder
            && runs.last().is_some_and(|r| {
                r.bufs.len() < MAX_IOVS
                    && r.pos + r.bufs.iter().map(|b| b.len() as u64).sum::<u64>() == q.pos
            });
        match runs.last_mut() {
            Some(r) if extend => r.bufs.push(&q.buf),
            _ => runs.push(Run {
                pos: q.pos,
                bufs: vec![&q.buf],
            }),
        }
    }
    if reorder {
        runs.reverse();
    }
    dev.write_runs(&runs)?;
    Ok(runs.len() as u64)
}
