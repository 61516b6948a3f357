//! Engine unit tests on the in-memory store (fault injection included).
//! The model-based and crash tests on the real stores are in `tests/`.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::store::mem::{Fault, MemStore};

fn opts() -> OpenOptions {
    OpenOptions {
        upload_threads: 2,
        max_pending_bytes: 4 << 20,
        checkpoint_every: 4,
        gc: GcConfig {
            policy: Default::default(),
            enabled: false,
            ..GcConfig::default()
        },
        store_timeout: Duration::from_secs(10),
        read_only: false,
    }
}

fn new_image(blocks: u64) -> (Arc<MemStore>, Image) {
    let store = Arc::new(MemStore::new());
    Image::create(
        store.clone(),
        &CreateOptions {
            size: blocks * 4096,
            segment_size: 64 << 10,
            compression: Compression::None,
        },
    )
    .unwrap();
    let img = Image::open(store.clone(), opts()).unwrap();
    (store, img)
}

fn pat(v: u8, blocks: usize) -> Vec<u8> {
    vec![v; blocks * 4096]
}

#[test]
fn write_read_reopen() {
    let (store, img) = new_image(256);
    img.write(0, &pat(1, 3)).unwrap();
    img.write(8192, &pat(2, 40)).unwrap(); // spans several 16-block segments
    let mut b = vec![0u8; 4096 * 50];
    img.read(0, &mut b).unwrap();
    assert!(b[..8192].iter().all(|&x| x == 1));
    assert!(b[8192..8192 + 40 * 4096].iter().all(|&x| x == 2));
    assert!(b[8192 + 40 * 4096..].iter().all(|&x| x == 0));
    img.close().unwrap();
    assert!(
        img.read(0, &mut b).is_err(),
        "closed image must refuse reads"
    );
    let img = Image::open(store, opts()).unwrap();
    let mut c = vec![0u8; 4096 * 50];
    img.read(0, &mut c).unwrap();
    assert_eq!(b, c);
    img.close().unwrap();
}

#[test]
fn bad_requests_are_refused() {
    let (_s, img) = new_image(16);
    assert!(matches!(
        img.write(100, &pat(1, 1)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        img.write(0, &[0u8; 100]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        img.write(16 * 4096, &pat(1, 1)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        img.write(u64::MAX - 4095, &pat(1, 1)),
        Err(Error::InvalidArgument(_))
    ));
    let mut b = vec![0u8; 8192];
    assert!(matches!(
        img.read(15 * 4096, &mut b),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        img.discard(0, 17 * 4096),
        Err(Error::InvalidArgument(_))
    ));
    img.close().unwrap();
}

#[test]
fn discard_and_zeroes_survive_restart() {
    let (store, img) = new_image(64);
    img.write(0, &pat(7, 64)).unwrap();
    img.flush().unwrap();
    img.checkpoint().unwrap();
    img.discard(4096 * 4, 4096 * 8).unwrap();
    img.write_zeroes(4096 * 40, 4096 * 2).unwrap();
    img.flush().unwrap();
    drop(img); // crash after flush: discards must be durable
    let img = Image::open(store, opts()).unwrap();
    let mut b = pat(0xff, 64);
    img.read(0, &mut b).unwrap();
    for blk in 0..64 {
        let zero = (4..12).contains(&blk) || (40..42).contains(&blk);
        let want = if zero { 0 } else { 7 };
        assert!(
            b[blk * 4096..(blk + 1) * 4096].iter().all(|&x| x == want),
            "block {blk}"
        );
    }
    img.close().unwrap();
}

#[test]
fn dead_store_flush_times_out_then_recovers() {
    let (store, _) = (Arc::new(MemStore::new()), ());
    Image::create(
        store.clone(),
        &CreateOptions {
            size: 1 << 20,
            segment_size: 64 << 10,
            compression: Compression::None,
        },
    )
    .unwrap();
    let img = Image::open(
        store.clone(),
        OpenOptions {
            store_timeout: Duration::from_millis(300),
            ..opts()
        },
    )
    .unwrap();
    store.set_fault(Fault::WriteTimeout, 0);
    img.write(0, &pat(3, 4)).unwrap();
    let err = img.flush().unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(
        err.to_string().contains("timed out (injected)"),
        "error should carry the store's: {err}"
    );
    // Data is still readable from memory while the store is down.
    let mut b = pat(0, 4);
    img.read(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 3));
    // The store heals: the retried upload lands and flush succeeds.
    store.set_fault(Fault::None, 0);
    img.flush().unwrap();
    img.close().unwrap();
    let img = Image::open(store, opts()).unwrap();
    let mut c = pat(0, 4);
    img.read(0, &mut c).unwrap();
    assert_eq!(b, c);
    img.close().unwrap();
}

#[test]
fn full_store_then_space_returns() {
    let (store, img) = new_image(64);
    store.set_fault(Fault::Full, 3);
    img.write(0, &pat(9, 16)).unwrap();
    img.flush().unwrap(); // retried past the three NoSpace answers
    let mut b = pat(0, 16);
    img.read(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 9));
    img.close().unwrap();
}

#[test]
fn dead_store_open_is_a_clear_error() {
    let (store, img) = new_image(16);
    img.close().unwrap();
    store.set_fault(Fault::Dead, 0);
    let err = Image::open(store, opts()).unwrap_err();
    assert!(err.to_string().contains("dead"), "{err}");
}

#[test]
fn read_only_refuses_writes() {
    let (store, img) = new_image(16);
    img.write(0, &pat(1, 1)).unwrap();
    img.close().unwrap();
    let img = Image::open(
        store,
        OpenOptions {
            read_only: true,
            ..opts()
        },
    )
    .unwrap();
    assert!(matches!(
        img.write(0, &pat(2, 1)),
        Err(Error::Unavailable(_))
    ));
    let mut b = pat(0, 1);
    img.read(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 1));
    img.close().unwrap();
}

#[test]
fn concurrent_writers_and_readers() {
    let (store, img) = new_image(1024);
    let img = Arc::new(img);
    let mut hs = Vec::new();
    for t in 0..4u8 {
        let img = img.clone();
        hs.push(std::thread::spawn(move || {
            let base = t as u64 * 256;
            for round in 0..20u8 {
                for i in (0..256u64).step_by(8) {
                    img.write((base + i) * 4096, &pat(t * 32 + round, 8))
                        .unwrap();
                }
                let mut b = pat(0, 256);
                img.read(base * 4096, &mut b).unwrap();
                assert!(
                    b.iter().all(|&x| x == t * 32 + round),
                    "thread {t} round {round}"
                );
                if round % 5 == 0 {
                    img.flush().unwrap();
                }
            }
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    img.gc_once().unwrap();
    img.checkpoint().unwrap();
    img.close().unwrap();
    let img = Image::open(store, opts()).unwrap();
    for t in 0..4u8 {
        let mut b = pat(0, 256);
        img.read(t as u64 * 256 * 4096, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == t * 32 + 19));
    }
    img.close().unwrap();
}

#[test]
fn gc_reclaims_and_keeps_data() {
    let (store, img) = new_image(256);
    for round in 0..10u8 {
        img.write(0, &pat(round, 256)).unwrap();
        img.flush().unwrap();
    }
    img.checkpoint().unwrap();
    let before = store.list_segments().unwrap().len();
    for _ in 0..3 {
        img.gc_once().unwrap();
        img.write(0, &pat(9, 1)).unwrap(); // new data so checkpoints advance
        img.checkpoint().unwrap();
    }
    let after = store.list_segments().unwrap().len();
    assert!(after < before, "gc deleted nothing: {before} -> {after}");
    let mut b = pat(0, 256);
    img.read(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 9));
    img.close().unwrap();
    let rep = fsck(&*store).unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}

#[test]
fn create_refuses_existing_image() {
    let (store, img) = new_image(16);
    img.close().unwrap();
    let err = Image::create(store, &CreateOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Exists(_)), "{err}");
}

#[test]
fn write_seqs_and_durability() {
    let (store, img) = new_image(256);
    assert_eq!(img.write(0, &pat(1, 1)).unwrap(), 1);
    assert_eq!(img.discard(0, 4096).unwrap(), 2);
    // 40 blocks span three 16-block segments but are one write.
    assert_eq!(img.write(4096, &pat(2, 40)).unwrap(), 3);
    assert_eq!(img.write_zeroes(0, 4096).unwrap(), 4);
    assert!(img.durable_write_seq() < 4);
    img.flush().unwrap();
    assert_eq!(img.durable_write_seq(), 4);
    assert_eq!(img.last_write_seq(), 4);
    drop(img); // crash after flush
    let img = Image::open(store, opts()).unwrap();
    assert_eq!(img.last_write_seq(), 4, "recovered write seq");
    assert_eq!(img.durable_write_seq(), 4);
    assert_eq!(img.write(0, &pat(3, 1)).unwrap(), 5);
    img.close().unwrap();
}

/// On zones smaller than the requested segment, create lowers the segment
/// size to fit (and says so in the info); an image too big for the device's
/// zones to hold under overwrites is refused with the size that would fit.
#[test]
fn zoned_create_fits_segments_and_capacity() {
    use crate::zoned::{ZonedFile, ZonedGeometry, ZonedStore};
    let dir = tempfile::tempdir().unwrap();
    let geo = ZonedGeometry {
        zone_size: 4 << 20,
        zone_capacity: 3 << 20,
        nr_zones: 40,
        nr_conventional: 0,
        max_open: 4,
        max_active: 6,
        write_granularity: 4096,
    };
    let mk = |name: &str| -> Arc<dyn SegmentStore> {
        let dev = ZonedFile::create(dir.path().join(name), geo).unwrap();
        Arc::new(ZonedStore::create(dev).unwrap())
    };
    let store = mk("a.img");
    let co = CreateOptions {
        size: 16 << 20,
        segment_size: 8 << 20,
        ..Default::default()
    };
    let info = Image::create(store.clone(), &co).unwrap();
    assert!(info.segment_size < 3 << 20, "{}", info.segment_size);
    assert!(info.segment_size >= 2 << 20, "{}", info.segment_size);
    assert!(
        crate::format::segment::max_object_len(info.segment_size)
            <= store.max_segment_len().unwrap()
    );
    // Fill it with whole-segment writes and read back after reopen.
    let img = Image::open(store.clone(), opts()).unwrap();
    let big = pat(7, (info.segment_size / 4096) as usize);
    img.write(0, &big).unwrap();
    img.flush().unwrap();
    img.close().unwrap();
    let img = Image::open(store, opts()).unwrap();
    let mut back = vec![0u8; big.len()];
    img.read(0, &mut back).unwrap();
    assert_eq!(back, big);
    img.close().unwrap();

    // 38 data zones x 3 MiB = 114 MiB: 64 MiB images fit, 96 MiB do not.
    let co = CreateOptions {
        size: 96 << 20,
        segment_size: 1 << 20,
        ..Default::default()
    };
    let err = Image::create(mk("b.img"), &co).unwrap_err();
    assert!(matches!(err, Error::NoSpace(_)), "{err}");
    assert!(
        err.to_string().contains("enough for an image of about"),
        "{err}"
    );
    let co = CreateOptions {
        size: 64 << 20,
        ..co
    };
    Image::create(mk("c.img"), &co).unwrap();
}
