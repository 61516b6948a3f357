//! [`CachingStore`]: a [`SegmentStore`] that caches `read_segment` data of
//! an inner store in a local file. See the module docs of `read_cache` for
//! why cached data is never stale.
//!
//! # Concurrency
//! - `shards`: 64 `RwLock<HashMap<Key, Entry>>`; a hit takes one shard read
//!   lock, then reads the slot without any lock.
//! - `ver`: a seqlock per slot (odd while the slot is being rewritten); a
//!   reader that sees it odd or changed across its read treats it as a miss.
//! - `alloc`: free list, slot owners and the eviction policy.
//! - `segs`: the segment table (length, fingerprint, generation).
//!
//! Lock order: `segs` → `alloc` → a shard. No lock is held across backend
//! I/O.
//!
//! # Invariants
//! - A key is in a shard only while its slot holds its data (pages written
//!   and page crcs set before the insert) and `alloc.owner[slot]` names it.
//! - A slot is in exactly one of: the free list, reserved by one filler
//!   (owner `None`, not free), owned by a key.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use log_engine::store::{Media, SegmentEntry, SegmentStore, SpaceInfo};
use log_engine::{Error, Result};
use parking_lot::{Mutex, RwLock};
use tracing::{debug, info, trace_span, warn};

use super::layout::{page_crc, Geometry, Index, SegRecord, SlotEntry, IX_HDR_LEN, PAGE, SB_LEN};
use super::policy::{bump, new_evictor, Evictor, Freq};
use super::{CacheOptions, Key, ReadCacheConfig, ReadCacheStats};

const SHARDS: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Entry {
    slot: u32,
    len: u32,
}

#[derive(Clone, Copy, Debug)]
struct Seg {
    len: u64,
    /// crc32c of the first 4 KiB as stored in the backend, once known.
    fp: Option<u32>,
    gen: u64,
    /// False for segments with entries loaded from the index whose
    /// fingerprint was not re-checked against the backend yet.
    verified: bool,
}

#[derive(Debug)]
struct Alloc {
    free: Vec<u32>,
    owner: Vec<Option<Key>>,
    ev: Box<dyn Evictor>,
}

#[derive(Debug, Default)]
struct PersistState {
    counter: u64,
    /// Region that holds the newest valid index (the next write goes to the
    /// other one).
    newest: usize,
}

/// A caching wrapper over a segment store. See the module docs.
#[derive(Debug)]
pub struct CachingStore {
    inner: Arc<dyn SegmentStore>,
    file: File,
    describe: String,
    geo: Geometry,
    pages: u32,
    uuid: [u8; 16],
    opts: CacheOptions,
    shards: Vec<RwLock<HashMap<Key, Entry>>>,
    segs: RwLock<HashMap<u64, Seg>>,
    alloc: Mutex<Alloc>,
    freq: Freq,
    ver: Box<[AtomicU64]>,
    crcs: Box<[AtomicU32]>,
    next_gen: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
    /// Lifetime counters loaded from the index.
    base: (u64, u64, u64),
    persist: Mutex<PersistState>,
}

fn io_err(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    Error::io(format!("read cache {}: {what}", path.display()), e)
}

fn key_hash(k: Key) -> u64 {
    (k.0 ^ (u64::from(k.1) << 40).rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl CachingStore {
    /// Open (or create) the cache described by `cfg` for the image
    /// `image_uuid` over `inner`, with the default [`CacheOptions`].
    pub fn open(
        inner: Arc<dyn SegmentStore>,
        cfg: &ReadCacheConfig,
        image_uuid: [u8; 16],
    ) -> Result<Arc<CachingStore>> {
        Self::open_with(inner, cfg, image_uuid, CacheOptions::default())
    }

    /// [`CachingStore::open`] with explicit options. A valid index of the same
    /// image and geometry makes a warm start; anything else (other image,
    /// other size or block size, torn or missing index) a cold one.
    pub fn open_with(
        inner: Arc<dyn SegmentStore>,
        cfg: &ReadCacheConfig,
        image_uuid: [u8; 16],
        opts: CacheOptions,
    ) -> Result<Arc<CachingStore>> {
        let path = &cfg.path;
        let geo_req = Geometry::for_size(cfg.size, cfg.block_size).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "read cache {}: size {} with block size {} holds no block (block size must be \
                 a multiple of 4096 up to 1 MiB)",
                path.display(),
                cfg.size,
                cfg.block_size
            ))
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err("open", path, e))?;
        lock_exclusive(&file).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Unavailable(format!(
                "read cache {} is in use by another CachingStore",
                path.display()
            )),
            _ => io_err("lock", path, e),
        })?;
        let md = file.metadata().map_err(|e| io_err("stat", path, e))?;
        let is_dev = md.file_type().is_block_device();
        let geo = if is_dev {
            let dev_len = device_len(&file).map_err(|e| io_err("size of device", path, e))?;
            Geometry::for_size(cfg.size.min(dev_len), cfg.block_size).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "read cache {}: device of {dev_len} bytes holds no block",
                    path.display()
                ))
            })?
        } else {
            geo_req
        };

        let mut sb = vec![0u8; SB_LEN as usize];
        let have_sb = file.read_exact_at(&mut sb, 0).is_ok()
            && Geometry::decode_sb(&sb).is_ok_and(|g| g == geo);
        let mut index = None;
        let mut pst = PersistState::default();
        if have_sb {
            let (ix, counter, newest) = load_index(&file, &geo);
            pst.counter = counter;
            pst.newest = newest;
            match ix {
                Some(ix) if ix.uuid == image_uuid => index = Some(ix),
                Some(_) => {
                    info!(path = %path.display(), "read cache belongs to another image: cold start")
                }
                None => {
                    info!(path = %path.display(), "read cache index missing or invalid: cold start")
                }
            }
        } else {
            info!(path = %path.display(), slots = geo.nslots, "formatting read cache");
            file.write_all_at(&geo.encode_sb(), 0)
                .map_err(|e| io_err("write superblock", path, e))?;
        }
        if !is_dev && md.len() != geo.total {
            // Also after a truncation or a size change: exactly the layout.
            file.set_len(geo.total)
                .map_err(|e| io_err("set length", path, e))?;
        }
        if index.is_none() {
            // Retire both regions so no older index can come back.
            let zero = vec![0u8; IX_HDR_LEN];
            for r in 0..2 {
                file.write_all_at(&zero, geo.region_off(r))
                    .map_err(|e| io_err("clear index", path, e))?;
            }
            file.sync_all().map_err(|e| io_err("sync", path, e))?;
        }

        let n = geo.nslots;
        let pages = geo.block_size / PAGE as u32;
        let freq: Freq = (0..n).map(|_| AtomicU8::new(0)).collect();
        let store = CachingStore {
            describe: format!("rcache:{}+{}", path.display(), inner.describe()),
            inner,
            file,
            geo,
            pages,
            uuid: image_uuid,
            opts,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            segs: RwLock::new(HashMap::new()),
            alloc: Mutex::new(Alloc {
                free: Vec::new(),
                owner: vec![None; n as usize],
                ev: new_evictor(opts.policy, n, freq.clone()),
            }),
            freq,
            ver: (0..n).map(|_| AtomicU64::new(0)).collect(),
            crcs: (0..n as u64 * pages as u64)
                .map(|_| AtomicU32::new(0))
                .collect(),
            next_gen: AtomicU64::new(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            base: index
                .as_ref()
                .map(|i| (i.hits, i.misses, i.evictions))
                .unwrap_or_default(),
            persist: Mutex::new(pst),
        };
        store.load(index)?;
        Ok(Arc::new(store))
    }

    /// Build the segment table from the backend listing and adopt the index
    /// entries that still match it.
    fn load(&self, index: Option<Index>) -> Result<()> {
        let listed = self.inner.list_segments()?;
        let mut segs = self.segs.write();
        for s in &listed {
            if s.len % PAGE as u64 == 0 {
                segs.insert(s.seq, self.new_seg(s.len, None));
            }
        }
        let mut alloc = self.alloc.lock();
        let mut used = vec![false; self.geo.nslots as usize];
        let mut adopted = 0u64;
        if let Some(ix) = index {
            for r in &ix.segs {
                if let Some(s) = segs.get_mut(&r.seq) {
                    if s.len == r.len {
                        s.fp = Some(r.fingerprint);
                        s.verified = false;
                    }
                }
            }
            for (slot, e) in ix.slots.into_iter().enumerate() {
                let Some(e) = e else { continue };
                let Some(s) = segs.get(&e.key.0) else {
                    continue;
                };
                if s.verified || self.block_len(s.len, e.key.1) != Some(e.len) {
                    continue;
                }
                if e.crcs.len() != e.len as usize / PAGE {
                    continue;
                }
                let base = slot * self.pages as usize;
                for (k, c) in e.crcs.iter().enumerate() {
                    self.crcs[base + k].store(*c, Ordering::Relaxed);
                }
                let mut sh = self.shard(e.key).write();
                if sh.contains_key(&e.key) {
                    continue;
                }
                sh.insert(
                    e.key,
                    Entry {
                        slot: slot as u32,
                        len: e.len,
                    },
                );
                alloc.owner[slot] = Some(e.key);
                alloc.ev.inserted(slot as u32, key_hash(e.key));
                used[slot] = true;
                adopted += 1;
                self.entries.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(e.len as u64, Ordering::Relaxed);
            }
        }
        alloc.free = (0..self.geo.nslots)
            .rev()
            .filter(|s| !used[*s as usize])
            .collect();
        info!(
            entries = adopted,
            slots = self.geo.nslots,
            "read cache opened"
        );
        Ok(())
    }

    fn new_seg(&self, len: u64, fp: Option<u32>) -> Seg {
        Seg {
            len,
            fp,
            gen: self.next_gen.fetch_add(1, Ordering::Relaxed),
            verified: true,
        }
    }

    fn shard(&self, k: Key) -> &RwLock<HashMap<Key, Entry>> {
        &self.shards[(key_hash(k) >> 58) as usize % SHARDS]
    }

    /// Valid bytes of block `b` of a segment of `len` bytes, `None` past the end.
    fn block_len(&self, len: u64, b: u32) -> Option<u32> {
        let bs = self.geo.block_size as u64;
        let start = b as u64 * bs;
        (start < len).then(|| (len - start).min(bs) as u32)
    }

    /// Counters since open (hits, misses, evictions) plus the current fill.
    pub fn stats(&self) -> ReadCacheStats {
        ReadCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes_cached: self.bytes.load(Ordering::Relaxed),
            capacity: self.geo.nslots as u64 * self.geo.block_size as u64,
            entries: self.entries.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// The inner store.
    pub fn inner(&self) -> &Arc<dyn SegmentStore> {
        &self.inner
    }

    /// Layout in use.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Write the index durably (to the region not holding the newest valid
    /// index), so a restart finds the cache warm. Data slots are synced first.
    pub fn persist_index(&self) -> Result<()> {
        let _span = trace_span!("rcache_persist").entered();
        let mut pst = self.persist.lock();
        let segs: HashMap<u64, (u64, u32)> = self
            .segs
            .read()
            .iter()
            .filter_map(|(seq, s)| s.fp.map(|fp| (*seq, (s.len, fp))))
            .collect();
        let mut slots: Vec<Option<SlotEntry>> = vec![None; self.geo.nslots as usize];
        let mut used_segs: HashMap<u64, (u64, u32)> = HashMap::new();
        for sh in &self.shards {
            for (k, e) in sh.read().iter() {
                let Some(s) = segs.get(&k.0) else { continue };
                let base = e.slot as usize * self.pages as usize;
                let crcs = (0..e.len as usize / PAGE)
                    .map(|p| self.crcs[base + p].load(Ordering::Relaxed))
                    .collect();
                slots[e.slot as usize] = Some(SlotEntry {
                    key: *k,
                    len: e.len,
                    crcs,
                });
                used_segs.insert(k.0, *s);
            }
        }
        let mut seg_recs: Vec<SegRecord> = used_segs
            .into_iter()
            .map(|(seq, (len, fingerprint))| SegRecord {
                seq,
                len,
                fingerprint,
            })
            .collect();
        seg_recs.sort_by_key(|r| r.seq);
        let st = self.stats();
        let ix = Index {
            counter: pst.counter + 1,
            uuid: self.uuid,
            hits: self.base.0 + st.hits,
            misses: self.base.1 + st.misses,
            evictions: self.base.2 + st.evictions,
            slots,
            segs: seg_recs,
        };
        let bytes = ix.encode(&self.geo);
        let region = 1 - pst.newest.min(1);
        self.file
            .sync_data()
            .map_err(|e| Error::io("read cache: sync data", e))?;
        self.file
            .write_all_at(&bytes, self.geo.region_off(region))
            .map_err(|e| Error::io("read cache: write index", e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("read cache: sync index", e))?;
        pst.counter += 1;
        pst.newest = region;
        debug!(counter = pst.counter, region, "read cache index persisted");
        Ok(())
    }

    /// Persist the index every `interval` from a background thread until the
    /// store is dropped.
    pub fn start_persister(self: &Arc<Self>, interval: Duration) {
        let weak: Weak<CachingStore> = Arc::downgrade(self);
        let r = std::thread::Builder::new()
            .name("rcache-persist".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(s) = weak.upgrade() else { return };
                if let Err(e) = s.persist_index() {
                    warn!(error = %e, "read cache: periodic index persist failed");
                }
            });
        if let Err(e) = r {
            warn!(error = %e, "read cache: could not start the persister thread");
        }
    }

    /// Check the fingerprint of `seq` (loaded from the index) against the
    /// backend; on mismatch drop its entries.
    fn verify(&self, seq: u64) -> Result<()> {
        let known = self.segs.read().get(&seq).copied();
        let Some(s) = known else {
            return Ok(());
        };
        if s.verified {
            return Ok(());
        }
        let mut hdr = vec![0u8; (s.len.min(PAGE as u64)) as usize];
        self.inner.read_segment(seq, 0, &mut hdr)?;
        let fp = crc32c::crc32c(&hdr);
        let stale = {
            let mut segs = self.segs.write();
            match segs.get_mut(&seq) {
                Some(cur) if cur.gen == s.gen && !cur.verified => {
                    let stale = cur.fp != Some(fp);
                    cur.verified = true;
                    cur.fp = Some(fp);
                    if stale {
                        cur.gen = self.next_gen.fetch_add(1, Ordering::Relaxed);
                    }
                    stale
                }
                _ => false,
            }
        };
        if stale {
            warn!(
                seq,
                "read cache: segment changed since the index was written; dropping its blocks"
            );
            self.drop_blocks(seq, s.len);
        }
        Ok(())
    }

    /// Drop every cached block of `seq` (a segment of `len` bytes).
    fn drop_blocks(&self, seq: u64, len: u64) {
        let nblocks = len.div_ceil(self.geo.block_size as u64);
        for b in 0..nblocks.min(u32::MAX as u64) as u32 {
            let _ = self.drop_key((seq, b), None);
        }
    }

    /// Remove `key` (if it sits in `only_slot`, when given) and free its slot.
    fn drop_key(&self, key: Key, only_slot: Option<u32>) -> bool {
        let mut alloc = self.alloc.lock();
        let removed = {
            let mut sh = self.shard(key).write();
            match sh.get(&key) {
                Some(e) if only_slot.is_none_or(|s| s == e.slot) => sh.remove(&key),
                _ => None,
            }
        };
        if let Some(e) = removed {
            if alloc.owner[e.slot as usize] == Some(key) {
                alloc.owner[e.slot as usize] = None;
                alloc.ev.removed(e.slot);
                alloc.free.push(e.slot);
            }
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(e.len as u64, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Serve `[off_in_block, +dst.len())` of block `key` from the cache.
    fn try_hit(&self, key: Key, off_in_block: u64, dst: &mut [u8]) -> bool {
        let Some(e) = self.shard(key).read().get(&key).copied() else {
            return false;
        };
        if off_in_block + dst.len() as u64 > e.len as u64 {
            return false;
        }
        let v1 = self.ver[e.slot as usize].load(Ordering::Acquire);
        if v1 & 1 == 1 {
            return false;
        }
        let p0 = (off_in_block / PAGE as u64) as usize;
        let p1 = (off_in_block + dst.len() as u64).div_ceil(PAGE as u64) as usize;
        let aligned = off_in_block.is_multiple_of(PAGE as u64) && dst.len().is_multiple_of(PAGE);
        let ok = if aligned {
            self.read_pages(key, e, v1, p0, p1, dst)
        } else {
            let mut tmp = vec![0u8; (p1 - p0) * PAGE];
            let ok = self.read_pages(key, e, v1, p0, p1, &mut tmp);
            if ok {
                let s = (off_in_block - (p0 * PAGE) as u64) as usize;
                dst.copy_from_slice(&tmp[s..s + dst.len()]);
            }
            ok
        };
        if !ok {
            return false;
        }
        bump(&self.freq, e.slot);
        true
    }

    /// Read pages `[p0, p1)` of `e`'s slot into `buf` and check them against
    /// their crcs and the slot's seqlock version `v1`.
    fn read_pages(
        &self,
        key: Key,
        e: Entry,
        v1: u64,
        p0: usize,
        p1: usize,
        buf: &mut [u8],
    ) -> bool {
        let base = e.slot as usize * self.pages as usize;
        let want: Vec<u32> = (p0..p1)
            .map(|p| self.crcs[base + p].load(Ordering::Relaxed))
            .collect();
        let off = self.geo.slot_off(e.slot) + (p0 * PAGE) as u64;
        if let Err(err) = self.file.read_exact_at(buf, off) {
            warn!(error = %err, slot = e.slot, "read cache: slot read failed; reading the backend");
            return false;
        }
        fence(Ordering::Acquire);
        if self.ver[e.slot as usize].load(Ordering::Acquire) != v1 {
            return false;
        }
        for (i, p) in (p0..p1).enumerate() {
            if page_crc(key, p as u32, &buf[i * PAGE..(i + 1) * PAGE]) != want[i] {
                // The entry may also have been evicted and its slot reused
                // before we read the version: only a live entry is corrupt.
                if self.drop_key(key, Some(e.slot)) {
                    warn!(
                        seq = key.0,
                        block = key.1,
                        slot = e.slot,
                        "read cache: crc mismatch; entry dropped, reading the backend"
                    );
                }
                return false;
            }
        }
        true
    }

    /// Take a slot for a new entry: a free one or the policy's victim.
    fn reserve_slot(&self) -> Option<u32> {
        let mut alloc = self.alloc.lock();
        if let Some(s) = alloc.free.pop() {
            return Some(s);
        }
        let s = alloc.ev.victim()?;
        if let Some(old) = alloc.owner[s as usize].take() {
            let mut sh = self.shard(old).write();
            if sh.get(&old).is_some_and(|e| e.slot == s) {
                if let Some(e) = sh.remove(&old) {
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    self.bytes.fetch_sub(e.len as u64, Ordering::Relaxed);
                }
            }
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Some(s)
    }

    /// Cache `data` (all valid bytes) as block `key` of segment generation
    /// `gen`. Best effort: failures only mean "not cached".
    fn insert(&self, key: Key, gen: u64, data: &[u8]) {
        if data.is_empty()
            || !data.len().is_multiple_of(PAGE)
            || self.shard(key).read().contains_key(&key)
        {
            return;
        }
        let Some(slot) = self.reserve_slot() else {
            return;
        };
        let v = &self.ver[slot as usize];
        v.fetch_add(1, Ordering::AcqRel);
        let base = slot as usize * self.pages as usize;
        for (p, page) in data.chunks(PAGE).enumerate() {
            self.crcs[base + p].store(page_crc(key, p as u32, page), Ordering::Relaxed);
        }
        let wr = self.file.write_all_at(data, self.geo.slot_off(slot));
        v.fetch_add(1, Ordering::Release);
        let ok = match wr {
            Ok(()) => {
                let segs = self.segs.read();
                let mut alloc = self.alloc.lock();
                let current = segs.get(&key.0).is_some_and(|s| s.gen == gen);
                let mut sh = self.shard(key).write();
                if current && !sh.contains_key(&key) {
                    sh.insert(
                        key,
                        Entry {
                            slot,
                            len: data.len() as u32,
                        },
                    );
                    alloc.owner[slot as usize] = Some(key);
                    alloc.ev.inserted(slot, key_hash(key));
                    self.entries.fetch_add(1, Ordering::Relaxed);
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    true
                } else {
                    false
                }
            }
            Err(e) => {
                warn!(error = %e, slot, "read cache: slot write failed");
                false
            }
        };
        if !ok {
            self.alloc.lock().free.push(slot);
        }
    }

    /// Read blocks `[b0, b1)` of `seq` from the backend, cache them and copy
    /// the part overlapping `[offset, offset + buf.len())` into `buf`.
    fn fill_run(
        &self,
        seq: u64,
        s: &Seg,
        b0: u32,
        b1: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let bs = self.geo.block_size as u64;
        let lo = b0 as u64 * bs;
        let hi = (b1 as u64 * bs).min(s.len);
        let mut tmp = vec![0u8; (hi - lo) as usize];
        self.inner.read_segment(seq, lo, &mut tmp)?;
        if b0 == 0 && s.fp.is_none() {
            let fp = crc32c::crc32c(&tmp[..tmp.len().min(PAGE)]);
            if let Some(cur) = self.segs.write().get_mut(&seq) {
                if cur.gen == s.gen && cur.fp.is_none() {
                    cur.fp = Some(fp);
                }
            }
        }
        for b in b0..b1 {
            let s0 = ((b - b0) as u64 * bs) as usize;
            let s1 = (s0 + bs as usize).min(tmp.len());
            self.insert((seq, b), s.gen, &tmp[s0..s1]);
        }
        let end = offset + buf.len() as u64;
        let c_lo = lo.max(offset);
        let c_hi = hi.min(end);
        if c_lo < c_hi {
            buf[(c_lo - offset) as usize..(c_hi - offset) as usize]
                .copy_from_slice(&tmp[(c_lo - lo) as usize..(c_hi - lo) as usize]);
        }
        Ok(())
    }

    fn cached_read(&self, seq: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let known = self.segs.read().get(&seq).copied();
        let Some(mut s) = known else {
            return self.inner.read_segment(seq, offset, buf);
        };
        let end = offset.checked_add(buf.len() as u64);
        if buf.is_empty() || end.is_none_or(|e| e > s.len) {
            return self.inner.read_segment(seq, offset, buf);
        }
        if !s.verified {
            self.verify(seq)?;
            let cur = self.segs.read().get(&seq).copied();
            match cur {
                Some(cur) => s = cur,
                None => return self.inner.read_segment(seq, offset, buf),
            }
        }
        let end = offset + buf.len() as u64;
        let bs = self.geo.block_size as u64;
        let first = (offset / bs) as u32;
        let last = ((end - 1) / bs) as u32;
        let mut miss_from: Option<u32> = None;
        for b in first..=last {
            let b_lo = b as u64 * bs;
            let lo = b_lo.max(offset);
            let hi = (b_lo + bs).min(end);
            let dst = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
            if self.try_hit((seq, b), lo - b_lo, dst) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = miss_from.take() {
                    self.fill_run(seq, &s, m, b, offset, buf)?;
                }
            } else {
                self.misses.fetch_add(1, Ordering::Relaxed);
                miss_from.get_or_insert(b);
            }
        }
        if let Some(m) = miss_from {
            self.fill_run(seq, &s, m, last + 1, offset, buf)?;
        }
        Ok(())
    }

    /// Drop everything (used by `destroy`).
    fn clear(&self) {
        let segs: Vec<(u64, u64)> = self.segs.write().drain().map(|(q, s)| (q, s.len)).collect();
        for (seq, len) in segs {
            self.drop_blocks(seq, len);
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: one cache per file at a time (released when
/// the file is closed).
fn lock_exclusive(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn device_len(f: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    f.seek(SeekFrom::End(0))
}

/// Read both index regions and return the newest valid one, plus the highest
/// counter seen and the region holding it.
pub(super) fn load_index(file: &File, geo: &Geometry) -> (Option<Index>, u64, usize) {
    let mut cands = Vec::new();
    for r in 0..2 {
        let mut h = vec![0u8; IX_HDR_LEN];
        if file.read_exact_at(&mut h, geo.region_off(r)).is_err() {
            continue;
        }
        if let Ok((counter, plen)) = Index::decode_header(&h, geo) {
            cands.push((counter, r, plen));
        }
    }
    cands.sort_by_key(|c| std::cmp::Reverse(c.0));
    let max = cands.first().map(|c| (c.0, c.1)).unwrap_or((0, 1));
    for (counter, r, plen) in cands {
        let mut b = vec![0u8; IX_HDR_LEN + plen as usize];
        if file.read_exact_at(&mut b, geo.region_off(r)).is_err() {
            continue;
        }
        match Index::decode(&b, geo) {
            Ok(ix) => return (Some(ix), max.0, max.1),
            Err(e) => debug!(region = r, counter, error = %e, "read cache index region rejected"),
        }
    }
    (None, max.0, max.1)
}

impl Drop for CachingStore {
    fn drop(&mut self) {
        if let Err(e) = self.persist_index() {
            warn!(error = %e, "read cache: index persist on close failed");
        }
    }
}

impl SegmentStore for CachingStore {
    fn media(&self) -> Media {
        self.inner.media()
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn write_segment(&self, seq: u64, data: &[u8]) -> Result<()> {
        self.inner.write_segment(seq, data)?;
        let len = data.len() as u64;
        if !len.is_multiple_of(PAGE as u64) {
            return Ok(());
        }
        let fp = crc32c::crc32c(&data[..data.len().min(PAGE)]);
        let seg = self.new_seg(len, Some(fp));
        let old = self.segs.write().insert(seq, seg);
        if let Some(old) = old {
            self.drop_blocks(seq, old.len);
        }
        if self.opts.write_through {
            let bs = self.geo.block_size as usize;
            for (b, chunk) in data.chunks(bs).enumerate() {
                self.insert((seq, b as u32), seg.gen, chunk);
            }
        }
        Ok(())
    }

    fn read_segment(&self, seq: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let _span = trace_span!("rcache_read", seq, offset, len = buf.len()).entered();
        self.cached_read(seq, offset, buf)
    }

    fn delete_segment(&self, seq: u64) -> Result<()> {
        let removed = self.segs.write().remove(&seq);
        if let Some(s) = removed {
            self.drop_blocks(seq, s.len);
        }
        self.inner.delete_segment(seq)
    }

    fn list_segments(&self) -> Result<Vec<SegmentEntry>> {
        let l = self.inner.list_segments()?;
        let mut segs = self.segs.write();
        for s in &l {
            if s.len % PAGE as u64 == 0 && !segs.contains_key(&s.seq) {
                let seg = self.new_seg(s.len, None);
                segs.insert(s.seq, seg);
            }
        }
        Ok(l)
    }

    fn segment_unit(&self, seq: u64) -> Option<u32> {
        self.inner.segment_unit(seq)
    }

    fn open_units(&self) -> Vec<u32> {
        self.inner.open_units()
    }

    fn put_meta(&self, name: &str, data: &[u8]) -> Result<()> {
        self.inner.put_meta(name, data)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_meta(name)
    }

    fn delete_meta(&self, name: &str) -> Result<()> {
        self.inner.delete_meta(name)
    }

    fn list_meta(&self) -> Result<Vec<String>> {
        self.inner.list_meta()
    }

    fn space(&self) -> Result<SpaceInfo> {
        self.inner.space()
    }

    fn destroy(&self) -> Result<()> {
        self.clear();
        self.inner.destroy()
    }
}
