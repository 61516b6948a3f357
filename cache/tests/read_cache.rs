//! Read cache over real stores (DirStore in a temp dir) and the real engine.

use std::fs::OpenOptions as FsOpen;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use log_engine::store::dir::DirStore;
use log_engine::{Compression, CreateOptions, GcConfig, Image, OpenOptions, SegmentStore};
use lsvd_cache::read_cache::{
    image_uuid, inspect, CacheOptions, CachingStore, Policy, ReadCacheConfig,
};
use rand::{Rng, SeedableRng};

const BS: u32 = 65536;

fn cfg(dir: &Path, size: u64) -> ReadCacheConfig {
    ReadCacheConfig {
        path: dir.join("rcache"),
        size,
        block_size: BS,
    }
}

fn dir_store(dir: &Path) -> Arc<dyn SegmentStore> {
    let p = dir.join("img");
    if p.exists() {
        Arc::new(DirStore::open(&p).unwrap())
    } else {
        Arc::new(DirStore::create(&p).unwrap())
    }
}

/// Deterministic segment bytes for raw-store tests.
fn seg_bytes(tag: u64, len: usize) -> Vec<u8> {
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = vec![0u8; len];
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    v
}

fn read_all(s: &dyn SegmentStore, seq: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    s.read_segment(seq, 0, &mut b).unwrap();
    b
}

// ---------------------------------------------------------------- engine ---

fn block(tag: u64, lba: u64) -> Vec<u8> {
    let mut b = seg_bytes(tag ^ lba.wrapping_mul(31), 4096);
    if tag == 0 {
        b.fill(0);
    } else {
        b[..8].copy_from_slice(&tag.to_le_bytes());
        b[8..16].copy_from_slice(&lba.to_le_bytes());
    }
    b
}

fn opts() -> OpenOptions {
    OpenOptions {
        upload_threads: 2,
        max_pending_bytes: 4 << 20,
        checkpoint_every: 4,
        gc: GcConfig {
            policy: Default::default(),
            enabled: false,
            threshold_pct: 70,
            interval: Duration::from_millis(20),
        },
        store_timeout: Duration::from_secs(30),
        read_only: false,
    }
}

fn check(img: &Image, model: &[u64]) {
    let mut buf = vec![0u8; 32 * 4096];
    for start in (0..model.len()).step_by(32) {
        let n = 32.min(model.len() - start);
        let b = &mut buf[..n * 4096];
        img.read(start as u64 * 4096, b).unwrap();
        for i in 0..n {
            let lba = (start + i) as u64;
            assert!(
                b[i * 4096..(i + 1) * 4096] == block(model[start + i], lba)[..],
                "lba {lba}: expected tag {}",
                model[start + i]
            );
        }
    }
}

fn open_cached(dir: &Path, size: u64, o: CacheOptions) -> (Arc<CachingStore>, Image) {
    let inner = dir_store(dir);
    let uuid = image_uuid(&*inner).unwrap();
    let cache = CachingStore::open_with(inner, &cfg(dir, size), uuid, o).unwrap();
    let img = Image::open(cache.clone(), opts()).unwrap();
    (cache, img)
}

/// Random writes, overwrites, discards, GC and reopens through a small
/// cache (lots of eviction), checked against a model after every phase and
/// with both policies; the cache file never exceeds its size.
#[test]
fn engine_model_through_cache() {
    for (policy, wt) in [(Policy::S3Fifo, false), (Policy::Clock, true)] {
        let t = tempfile::tempdir().unwrap();
        let blocks = 2048u64;
        Image::create(
            dir_store(t.path()),
            &CreateOptions {
                size: blocks * 4096,
                segment_size: 256 * 1024,
                compression: Compression::None,
            },
        )
        .unwrap();
        let size = 3 << 20;
        let o = CacheOptions {
            policy,
            write_through: wt,
        };
        let mut model = vec![0u64; blocks as usize];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut tag = 1u64;
        let mut gc_deleted = 0;
        for round in 0..4 {
            let (cache, img) = open_cached(t.path(), size, o);
            check(&img, &model);
            for op in 0..300 {
                let lba = rng.gen_range(0..blocks - 16);
                let n = rng.gen_range(1..=16u64);
                match rng.gen_range(0..10) {
                    0 => {
                        img.discard(lba * 4096, n * 4096).unwrap();
                        for i in lba..lba + n {
                            model[i as usize] = 0;
                        }
                    }
                    1..=6 => {
                        let mut d = Vec::new();
                        for i in lba..lba + n {
                            d.extend_from_slice(&block(tag, i));
                            model[i as usize] = tag;
                        }
                        img.write(lba * 4096, &d).unwrap();
                        tag += 1;
                    }
                    _ => {
                        let mut b = vec![0u8; n as usize * 4096];
                        img.read(lba * 4096, &mut b).unwrap();
                        for i in 0..n as usize {
                            let l = lba + i as u64;
                            assert!(
                                b[i * 4096..(i + 1) * 4096] == block(model[l as usize], l)[..],
                                "{policy:?} round {round} op {op} lba {l}"
                            );
                        }
                    }
                }
                if op % 100 == 99 {
                    img.flush().unwrap();
                    img.gc_once().unwrap();
                }
            }
            img.flush().unwrap();
            img.gc_once().unwrap();
            check(&img, &model);
            gc_deleted += img.stats().segments_deleted;
            let len = std::fs::metadata(t.path().join("rcache")).unwrap().len();
            assert!(len <= size, "cache file {len} > {size}");
            let st = cache.stats();
            assert!(st.hits > 0 && st.misses > 0, "{st:?}");
            assert!(st.bytes_cached <= st.capacity, "{st:?}");
            img.close().unwrap();
            drop(img);
            cache.persist_index().unwrap();
        }
        assert!(gc_deleted > 0, "GC never deleted a segment");
    }
}

/// A second read of the same range hits; the first misses.
#[test]
fn second_read_hits_and_index_survives_restart() {
    let t = tempfile::tempdir().unwrap();
    let blocks = 1024u64;
    Image::create(
        dir_store(t.path()),
        &CreateOptions {
            size: blocks * 4096,
            segment_size: 256 * 1024,
            compression: Compression::None,
        },
    )
    .unwrap();
    let mut model = vec![0u64; blocks as usize];
    {
        let (_c, img) = open_cached(t.path(), 16 << 20, CacheOptions::default());
        let mut d = Vec::new();
        for i in 0..blocks {
            d.extend_from_slice(&block(5, i));
            model[i as usize] = 5;
        }
        for (k, c) in d.chunks(64 * 4096).enumerate() {
            img.write(k as u64 * 64 * 4096, c).unwrap();
        }
        img.close().unwrap();
    }
    // Fresh process: data comes from the store now.
    let (cache, img) = open_cached(t.path(), 16 << 20, CacheOptions::default());
    let s0 = cache.stats();
    let mut b = vec![0u8; 64 * 4096];
    img.read(0, &mut b).unwrap();
    let s1 = cache.stats();
    assert!(s1.misses > s0.misses, "first read misses: {s0:?} -> {s1:?}");
    img.read(0, &mut b).unwrap();
    // The engine keeps segment headers in memory, so the second read only
    // touches data blocks, all of which must hit now.
    let s2 = cache.stats();
    assert_eq!(s2.misses, s1.misses, "second read must not miss: {s2:?}");
    assert!(s2.hits > s1.hits, "second read hits: {s2:?}");
    check(&img, &model);
    let warm = cache.stats();
    img.close().unwrap();
    drop(img);
    drop(cache); // persists the index
    let info = inspect(&t.path().join("rcache")).unwrap();
    assert_eq!(info.stats.entries, warm.entries, "{info:?}");
    assert!(info.index_counter > 0);

    let (cache, img) = open_cached(t.path(), 16 << 20, CacheOptions::default());
    assert_eq!(cache.stats().entries, warm.entries, "warm after restart");
    check(&img, &model);
    let s = cache.stats();
    assert_eq!(s.misses, 0, "everything hits after a warm restart: {s:?}");
    assert!(s.hits > 0);
    img.close().unwrap();
}

/// The image changes while the cache is not in use (writes, discards, GC
/// deletes): reopening with the old index serves only current data.
#[test]
fn image_changed_without_cache_then_reopened_with_it() {
    let t = tempfile::tempdir().unwrap();
    let blocks = 1024u64;
    Image::create(
        dir_store(t.path()),
        &CreateOptions {
            size: blocks * 4096,
            segment_size: 128 * 1024,
            compression: Compression::None,
        },
    )
    .unwrap();
    let mut model = vec![0u64; blocks as usize];
    let write = |img: &Image, model: &mut Vec<u64>, tag: u64, lba: u64, n: u64| {
        let mut d = Vec::new();
        for i in lba..lba + n {
            d.extend_from_slice(&block(tag, i));
            model[i as usize] = tag;
        }
        img.write(lba * 4096, &d).unwrap();
    };
    {
        let (cache, img) = open_cached(t.path(), 16 << 20, CacheOptions::default());
        for k in 0..16 {
            write(&img, &mut model, 1, k * 64, 64);
        }
        img.close().unwrap();
        drop(img);
        drop(cache);
    }
    {
        let (cache, img) = open_cached(t.path(), 16 << 20, CacheOptions::default());
        check(&img, &model); // fills the cache
        img.close().unwrap();
        drop(img);
        assert!(cache.stats().entries > 0);
    }
    {
        let img = Image::open(dir_store(t.path()), opts()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for tag in 2..200 {
            let lba = rng.gen_range(0..blocks - 8);
            if tag % 5 == 0 {
                img.discard(lba * 4096, 8 * 4096).unwrap();
                for i in lba..lba + 8 {
                    model[i as usize] = 0;
                }
            } else {
                write(&img, &mut model, tag, lba, 8);
            }
        }
        img.flush().unwrap();
        let r = img.gc_once().unwrap();
        assert!(r.segments_deleted > 0 || !r.victims.is_empty(), "{r:?}");
        img.close().unwrap();
    }
    let (cache, img) = open_cached(t.path(), 16 << 20, CacheOptions::default());
    check(&img, &model);
    assert!(cache.stats().hits > 0, "{:?}", cache.stats());
    img.close().unwrap();
}

// ------------------------------------------------------------- raw store ---

fn raw_cache(dir: &Path, size: u64, uuid: u8) -> Arc<CachingStore> {
    CachingStore::open(dir_store(dir), &cfg(dir, size), [uuid; 16]).unwrap()
}

#[test]
fn delete_drops_entries_and_reused_seq_is_not_stale() {
    let t = tempfile::tempdir().unwrap();
    let c = raw_cache(t.path(), 8 << 20, 1);
    let a = seg_bytes(1, 300 * 1024);
    c.write_segment(10, &a).unwrap();
    assert_eq!(read_all(&*c, 10, a.len()), a);
    let st = c.stats();
    assert_eq!(st.entries, 5, "{st:?}"); // 300 KiB in 64 KiB blocks
    assert_eq!(st.bytes_cached, a.len() as u64);
    assert_eq!(read_all(&*c, 10, a.len()), a);
    c.delete_segment(10).unwrap();
    let st = c.stats();
    assert_eq!((st.entries, st.bytes_cached), (0, 0), "{st:?}");
    // Same seq, other content and length.
    let b = seg_bytes(2, 200 * 1024);
    c.write_segment(10, &b).unwrap();
    assert_eq!(read_all(&*c, 10, b.len()), b);
    let mut part = vec![0u8; 8192];
    c.read_segment(10, 70000 - 70000 % 4096, &mut part).unwrap();
    let o = 70000 - 70000 % 4096;
    assert_eq!(part, b[o..o + 8192]);
}

/// The index of a previous run is not trusted for a segment that was deleted
/// and rewritten behind the cache's back (same seq, same length).
#[test]
fn segment_rewritten_behind_the_cache_is_detected() {
    let t = tempfile::tempdir().unwrap();
    let a = seg_bytes(1, 256 * 1024);
    {
        let c = raw_cache(t.path(), 8 << 20, 1);
        c.write_segment(3, &a).unwrap();
        assert_eq!(read_all(&*c, 3, a.len()), a);
        c.persist_index().unwrap();
    }
    let raw = dir_store(t.path());
    raw.delete_segment(3).unwrap();
    let b = seg_bytes(9, 256 * 1024);
    raw.write_segment(3, &b).unwrap();
    let c = raw_cache(t.path(), 8 << 20, 1);
    assert_eq!(c.stats().entries, 4, "index adopted before verification");
    assert_eq!(read_all(&*c, 3, b.len()), b, "stale data served");
    // A segment gone from the backend is dropped at open.
    drop(c);
    raw.delete_segment(3).unwrap();
    let c = raw_cache(t.path(), 8 << 20, 1);
    assert_eq!(c.stats().entries, 0);
}

#[test]
fn corrupted_cache_entry_reads_backend() {
    let t = tempfile::tempdir().unwrap();
    let c = raw_cache(t.path(), 8 << 20, 1);
    let a = seg_bytes(4, 512 * 1024);
    c.write_segment(1, &a).unwrap();
    assert_eq!(read_all(&*c, 1, a.len()), a);
    let entries = c.stats().entries;
    // Flip bytes in every data slot of the file.
    let g = c.geometry();
    let f = FsOpen::new()
        .write(true)
        .read(true)
        .open(t.path().join("rcache"))
        .unwrap();
    for s in 0..g.nslots {
        let off = g.slot_off(s) + 4096 + 17;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, off).unwrap();
        b[0] ^= 0x5a;
        f.write_all_at(&b, off).unwrap();
    }
    let before = c.stats();
    assert_eq!(read_all(&*c, 1, a.len()), a, "wrong data from a bad entry");
    let after = c.stats();
    assert!(after.misses > before.misses, "{before:?} -> {after:?}");
    // Bad entries were replaced by good ones.
    assert_eq!(after.entries, entries);
    let s = c.stats();
    assert_eq!(read_all(&*c, 1, a.len()), a);
    assert_eq!(c.stats().misses, s.misses, "refilled entries hit");
}

#[test]
fn stale_or_torn_index_means_cold_start() {
    let t = tempfile::tempdir().unwrap();
    let a = seg_bytes(4, 512 * 1024);
    {
        let c = raw_cache(t.path(), 8 << 20, 1);
        c.write_segment(1, &a).unwrap();
        read_all(&*c, 1, a.len());
    } // drop persists
      // Another image: cold.
    {
        let c = raw_cache(t.path(), 8 << 20, 2);
        assert_eq!(c.stats().entries, 0);
        assert_eq!(read_all(&*c, 1, a.len()), a);
    } // persists an index for image 2
    {
        let c = raw_cache(t.path(), 8 << 20, 2);
        assert_eq!(c.stats().entries, 8);
        c.persist_index().unwrap(); // both regions now hold image 2
    }
    // Tear both index regions: flip a byte in each payload.
    let path = t.path().join("rcache");
    let g = {
        let c = raw_cache(t.path(), 8 << 20, 2);
        c.geometry()
    };
    let f = FsOpen::new().read(true).write(true).open(&path).unwrap();
    for r in 0..2 {
        let off = g.region_off(r) + 200;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, off).unwrap();
        b[0] ^= 1;
        f.write_all_at(&b, off).unwrap();
    }
    let info = inspect(&path).unwrap();
    assert_eq!(info.image_uuid, None, "{info:?}");
    {
        let c = raw_cache(t.path(), 8 << 20, 2);
        assert_eq!(c.stats().entries, 0, "torn index adopted");
        assert_eq!(read_all(&*c, 1, a.len()), a);
    }
    // Truncated file: the superblock survives but the index does not.
    let ok = raw_cache(t.path(), 8 << 20, 2);
    drop(ok);
    f.set_len(4096 + 64).unwrap();
    assert!(inspect(&path).unwrap().image_uuid.is_none());
    let c = raw_cache(t.path(), 8 << 20, 2);
    assert_eq!(c.stats().entries, 0);
    assert_eq!(read_all(&*c, 1, a.len()), a);
    assert!(std::fs::metadata(&path).unwrap().len() <= 8 << 20);
    // A different size re-formats (cold) and the file shrinks to fit.
    drop(c);
    let c = raw_cache(t.path(), 2 << 20, 2);
    assert_eq!(c.stats().entries, 0);
    assert!(std::fs::metadata(&path).unwrap().len() <= 2 << 20);
    assert!(inspect(&t.path().join("nope")).is_err());
}

/// Many readers on a tiny cache (constant eviction): every read is exact.
#[test]
fn concurrent_readers_under_eviction() {
    let t = tempfile::tempdir().unwrap();
    let c = raw_cache(t.path(), 1 << 20, 1); // ~15 slots
    let nseg = 8u64;
    let len = 512 * 1024;
    for s in 0..nseg {
        c.write_segment(s, &seg_bytes(s + 100, len)).unwrap();
    }
    let segs: Vec<Vec<u8>> = (0..nseg).map(|s| seg_bytes(s + 100, len)).collect();
    let segs = Arc::new(segs);
    std::thread::scope(|sc| {
        for th in 0..4u64 {
            let c = c.clone();
            let segs = segs.clone();
            sc.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(th);
                for _ in 0..1500 {
                    let s = rng.gen_range(0..nseg);
                    let off = rng.gen_range(0..len / 4096 - 20) * 4096;
                    let n = rng.gen_range(1..=20) * 4096;
                    let mut b = vec![0u8; n];
                    c.read_segment(s, off as u64, &mut b).unwrap();
                    assert!(b == segs[s as usize][off..off + n], "seg {s} off {off}");
                }
            });
        }
    });
    let st = c.stats();
    assert!(st.evictions > 0 && st.hits > 0, "{st:?}");
    assert!(st.entries <= c.geometry().nslots as u64);
    assert!(std::fs::metadata(t.path().join("rcache")).unwrap().len() <= 1 << 20);
}

#[test]
fn one_user_per_file_and_periodic_persist() {
    let t = tempfile::tempdir().unwrap();
    let c = raw_cache(t.path(), 8 << 20, 1);
    let second = CachingStore::open(dir_store(t.path()), &cfg(t.path(), 8 << 20), [1; 16]);
    assert!(
        matches!(second, Err(log_engine::Error::Unavailable(_))),
        "{second:?}"
    );
    c.start_persister(Duration::from_millis(30));
    let a = seg_bytes(8, 256 * 1024);
    c.write_segment(2, &a).unwrap();
    read_all(&*c, 2, a.len());
    let path = t.path().join("rcache");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = inspect(&path).unwrap();
        if info.stats.entries == 4 {
            assert_eq!(info.image_uuid, Some([1; 16]));
            assert_eq!(info.segments, 1);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never persisted: {info:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_config_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let inner = dir_store(t.path());
    for (size, bs) in [(1 << 20, 1000), (64 << 10, 65536), (8 << 20, 0)] {
        let c = ReadCacheConfig {
            path: t.path().join("x"),
            size,
            block_size: bs,
        };
        assert!(CachingStore::open(inner.clone(), &c, [0; 16]).is_err());
    }
}

/// The cache on a block device (needs root and a scratch device, so it is
/// ignored by default and run by hand):
/// `losetup -f --show scratch.img` then
/// `LSVD_RCACHE_DEV=/dev/loopN cargo test -p lsvd-cache --test read_cache -- --ignored`.
/// Fails (never passes silently) without `LSVD_RCACHE_DEV`.
#[test]
#[ignore]
fn block_device_cache() {
    let dev =
        std::env::var("LSVD_RCACHE_DEV").expect("set LSVD_RCACHE_DEV to a scratch block device");
    let t = tempfile::tempdir().unwrap();
    let c = ReadCacheConfig {
        path: dev.into(),
        size: u64::MAX, // clamped to the device size
        block_size: BS,
    };
    let a = seg_bytes(6, 1 << 20);
    {
        let cache = CachingStore::open(dir_store(t.path()), &c, [4; 16]).unwrap();
        cache.write_segment(1, &a).unwrap();
        assert_eq!(read_all(&*cache, 1, a.len()), a);
        assert_eq!(cache.stats().entries, 16);
    }
    let info = inspect(&c.path).unwrap();
    assert_eq!(info.stats.entries, 16, "{info:?}");
    let cache = CachingStore::open(dir_store(t.path()), &c, [4; 16]).unwrap();
    assert_eq!(cache.stats().entries, 16);
    assert_eq!(read_all(&*cache, 1, a.len()), a);
    assert_eq!(cache.stats().misses, 0);
}
