//! Disk + write journal on real stores (DirStore) and a real journal file:
//! replay after a simulated crash (drop without close), cache-loss rules
//! (missing, blank, foreign, stale journal), damaged records, backpressure.

use std::sync::Arc;

use log_engine::store::dir::DirStore;
use log_engine::{CreateOptions, Image, OpenOptions, SegmentStore};
use lsvd_cache::disk::Disk;
use lsvd_cache::journal::{inspect, JournalConfig};

const SEG: u32 = 1 << 20;

fn store(dir: &std::path::Path, name: &str) -> Arc<dyn SegmentStore> {
    Arc::new(DirStore::create(dir.join(name)).unwrap())
}

fn reopen_store(dir: &std::path::Path, name: &str) -> Arc<dyn SegmentStore> {
    Arc::new(DirStore::open(dir.join(name)).unwrap())
}

fn new_image(dir: &std::path::Path, name: &str) -> Arc<dyn SegmentStore> {
    let s = store(dir, name);
    Image::create(
        s.clone(),
        &CreateOptions {
            size: 64 << 20,
            segment_size: SEG,
            ..Default::default()
        },
    )
    .unwrap();
    s
}

fn opts() -> OpenOptions {
    OpenOptions {
        upload_threads: 2,
        ..Default::default()
    }
}

fn block(tag: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    for (i, c) in v.chunks_mut(8).enumerate() {
        c.copy_from_slice(&(tag.wrapping_mul(1_000_003) + i as u64).to_le_bytes());
    }
    v
}

fn read(d: &Disk, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    d.read(off, &mut b).unwrap();
    b
}

#[test]
fn replay_after_crash_restores_acknowledged_writes() {
    let t = tempfile::tempdir().unwrap();
    let s = new_image(t.path(), "img");
    let jc = JournalConfig::new(t.path().join("journal"), 16 << 20);
    let (d, rep) = Disk::open(s, &jc, None, opts(), false).unwrap();
    assert_eq!(rep.replayed_records, 0);
    for i in 0..20u64 {
        let seq = d.write(i * 8192, &block(i, 8192), false).unwrap();
        assert_eq!(seq, i + 1);
    }
    d.discard(0, 8192).unwrap();
    let f = d.flush().unwrap();
    assert_eq!(f, 21);
    d.write(4096 * 1000, &block(99, 4096), false).unwrap();
    let info = d.cache_info();
    assert!(info.journal.records_written >= 22);
    assert!(
        info.journal.io_uring,
        "journal I/O must go through io_uring"
    );
    drop(d); // crash: the engine never uploaded its open batch
    let ji = inspect(&jc.path).unwrap();
    assert_eq!(ji.last_seq, Some(22));

    let s = reopen_store(t.path(), "img");
    let (d, rep) = Disk::open(s, &jc, None, opts(), false).unwrap();
    assert!(rep.replayed_records >= 1, "{rep:?}");
    assert_eq!(rep.replayed_to, 22, "{rep:?}");
    assert!(rep.cache_loss.is_none());
    assert_eq!(read(&d, 0, 8192), vec![0u8; 8192]);
    for i in 1..20u64 {
        assert_eq!(read(&d, i * 8192, 8192), block(i, 8192), "write {i}");
    }
    assert_eq!(read(&d, 4096 * 1000, 4096), block(99, 4096));
    // New writes continue the seq.
    assert_eq!(d.write(0, &block(5, 4096), true).unwrap(), 23);
    d.close().unwrap();
    // After a clean close a fresh (or no) journal is fine.
    std::fs::remove_file(&jc.path).unwrap();
    let s = reopen_store(t.path(), "img");
    let (d, rep) = Disk::open(s, &jc, None, opts(), false).unwrap();
    assert!(rep.cache_loss.is_none());
    assert_eq!(read(&d, 0, 4096), block(5, 4096));
    d.close().unwrap();
}

#[test]
fn lost_or_foreign_journal_needs_accept_cache_loss() {
    let t = tempfile::tempdir().unwrap();
    let s = new_image(t.path(), "img");
    let s2 = new_image(t.path(), "other");
    let jc = JournalConfig::new(t.path().join("journal"), 8 << 20);
    let jc2 = JournalConfig::new(t.path().join("journal2"), 8 << 20);
    let (d, _) = Disk::open(s, &jc, None, opts(), false).unwrap();
    let (d2, _) = Disk::open(s2, &jc2, None, opts(), false).unwrap();
    d.write(0, &block(1, 4096), false).unwrap();
    d.flush().unwrap();
    d2.write(0, &block(2, 4096), false).unwrap();
    d2.flush().unwrap();
    drop(d);
    drop(d2);
    let saved = std::fs::read(&jc.path).unwrap();

    // Foreign: image "img" with the other image's journal.
    std::fs::copy(&jc2.path, &jc.path).unwrap();
    let e = Disk::open(reopen_store(t.path(), "img"), &jc, None, opts(), false).unwrap_err();
    assert!(e.to_string().contains("belongs to image"), "{e}");
    // Missing.
    std::fs::remove_file(&jc.path).unwrap();
    let e = Disk::open(reopen_store(t.path(), "img"), &jc, None, opts(), false).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    // Blank.
    std::fs::write(&jc.path, vec![0u8; 8 << 20]).unwrap();
    let e = Disk::open(reopen_store(t.path(), "img"), &jc, None, opts(), false).unwrap_err();
    assert!(e.to_string().contains("accept_cache_loss"), "{e}");

    // Stale: a journal of an earlier generation of the same image.
    std::fs::write(&jc.path, &saved).unwrap();
    let (d, rep) = Disk::open(reopen_store(t.path(), "img"), &jc, None, opts(), false).unwrap();
    assert_eq!(rep.replayed_to, 1);
    assert_eq!(read(&d, 0, 4096), block(1, 4096));
    d.write(4096, &block(3, 4096), false).unwrap();
    drop(d);
    std::fs::write(&jc.path, &saved).unwrap();
    let e = Disk::open(reopen_store(t.path(), "img"), &jc, None, opts(), false).unwrap_err();
    assert!(e.to_string().contains("stale"), "{e}");
    let (d, rep) = Disk::open(reopen_store(t.path(), "img"), &jc, None, opts(), true).unwrap();
    let loss = rep.cache_loss.clone().unwrap();
    assert!(loss.contains("stale"), "{loss}");
    // The backend alone: write 1 (flushed by the open) but not write 2.
    assert_eq!(read(&d, 0, 4096), block(1, 4096));
    assert_eq!(read(&d, 4096, 4096), vec![0u8; 4096]);
    d.close().unwrap();
}

#[test]
fn damaged_record_stops_replay_and_flushed_loss_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let s = new_image(t.path(), "img");
    let jc = JournalConfig::new(t.path().join("journal"), 8 << 20);
    let (d, _) = Disk::open(s, &jc, None, opts(), false).unwrap();
    for i in 0..6u64 {
        d.write(i * 4096, &block(10 + i, 4096), false).unwrap();
    }
    d.flush().unwrap();
    drop(d);
    // Damage the data of the record with seq 3.
    let sb = lsvd_cache::journal::scan::probe(&jc.path)
        .unwrap()
        .unwrap()
        .superblock
        .unwrap();
    let recs = lsvd_cache::journal::scan::scan(&jc.path, &sb).unwrap();
    let r3 = recs.records.iter().find(|r| r.header.seq == 3).unwrap();
    let mut bytes = std::fs::read(&jc.path).unwrap();
    bytes[(r3.pos + 4096 + 100) as usize] ^= 0xff;
    std::fs::write(&jc.path, &bytes).unwrap();
    let e = Disk::open(reopen_store(t.path(), "img"), &jc, None, opts(), false).unwrap_err();
    assert!(e.to_string().contains("seq 3"), "{e}");
    let (d, rep) = Disk::open(reopen_store(t.path(), "img"), &jc, None, opts(), true).unwrap();
    assert_eq!(rep.replayed_to, 2, "{rep:?}");
    assert_eq!(rep.discarded_records, 3);
    assert!(rep.stop_reason.unwrap().contains("damaged"));
    assert_eq!(read(&d, 4096, 4096), block(11, 4096));
    assert_eq!(read(&d, 2 * 4096, 4096), vec![0u8; 4096]);
    d.close().unwrap();
}

#[test]
fn concurrent_writers_share_device_writes() {
    let t = tempfile::tempdir().unwrap();
    let s = new_image(t.path(), "img");
    let jc = JournalConfig::new(t.path().join("journal"), 32 << 20);
    let (d, _) = Disk::open(s, &jc, None, opts(), false).unwrap();
    let d = Arc::new(d);
    let hs: Vec<_> = (0..16u64)
        .map(|th| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    d.write((th * 50 + i) * 4096, &block(i, 4096), false)
                        .unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let st = d.cache_info().journal;
    assert_eq!(st.records_written, 800);
    assert!(
        st.device_writes < st.records_written,
        "group commit: {} device writes for {} records",
        st.device_writes,
        st.records_written
    );
    d.close().unwrap();
}

#[test]
fn full_journal_waits_and_drops_nothing() {
    let t = tempfile::tempdir().unwrap();
    let s = new_image(t.path(), "img");
    // 1 MiB journal: every few writes fill it.
    let jc = JournalConfig::new(t.path().join("journal"), 1 << 20);
    let (d, _) = Disk::open(s, &jc, None, opts(), false).unwrap();
    let d = Arc::new(d);
    let mut hs = Vec::new();
    for th in 0..4u64 {
        let d = d.clone();
        hs.push(std::thread::spawn(move || {
            for i in 0..40u64 {
                let off = (th * 40 + i) * 65536;
                d.write(off, &block(th * 1000 + i, 65536), false).unwrap();
            }
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    d.flush().unwrap();
    let st = d.cache_info().journal;
    assert!(st.bytes_written > 4 * (1 << 20), "{st:?}");
    let d = Arc::try_unwrap(d).unwrap();
    drop(d);
    let (d, _) = Disk::open(reopen_store(t.path(), "img"), &jc, None, opts(), false).unwrap();
    for th in 0..4u64 {
        for i in 0..40u64 {
            let off = (th * 40 + i) * 65536;
            assert_eq!(read(&d, off, 65536), block(th * 1000 + i, 65536));
        }
    }
    d.close().unwrap();
}

#[test]
fn read_cache_under_the_engine() {
    use lsvd_cache::disk::ReadCacheConfig;
    let t = tempfile::tempdir().unwrap();
    let s = new_image(t.path(), "img");
    let jc = JournalConfig::new(t.path().join("journal"), 8 << 20);
    let rc = ReadCacheConfig::new(t.path().join("rcache"), 16 << 20);
    let (d, _) = Disk::open(s, &jc, Some(&rc), opts(), false).unwrap();
    for i in 0..16u64 {
        d.write(i * 65536, &block(i, 65536), false).unwrap();
    }
    d.flush().unwrap();
    drop(d); // crash: replay goes through the engine over the cache
    let (d, rep) =
        Disk::open(reopen_store(t.path(), "img"), &jc, Some(&rc), opts(), false).unwrap();
    assert_eq!(rep.replayed_to, 16);
    d.close().unwrap();
    drop(d);
    let (d, _) = Disk::open(reopen_store(t.path(), "img"), &jc, Some(&rc), opts(), false).unwrap();
    for _ in 0..2 {
        for i in 0..16u64 {
            assert_eq!(read(&d, i * 65536, 65536), block(i, 65536));
        }
    }
    let st = d.cache_info().read_cache.expect("read cache in use");
    assert!(st.hits > 0, "{st:?}");
    d.close().unwrap();
}
