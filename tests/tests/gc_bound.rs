//! GC keeps space bounded: overwrite 10x the image size at random with the
//! background cleaner on, and check that the stored data never exceeds the
//! bound the threshold implies. Also reports the write amplification.

use std::time::Duration;

use log_engine::{GcConfig, Image, OpenOptions};
use lsvd_tests::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BLOCKS: u64 = 2048; // 8 MiB image
const SEG: u32 = 256 << 10;

fn run(kind: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = create(kind, dir.path(), BLOCKS, SEG, false);
    let threshold = 70u8;
    let opts = OpenOptions {
        checkpoint_every: 8,
        gc: GcConfig {
            policy: Default::default(),
            enabled: true,
            threshold_pct: threshold,
            interval: Duration::from_millis(5),
        },
        ..test_opts(true)
    };
    let img = Image::open(store.clone(), opts).unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let mut model = Model::new(BLOCKS);
    // Fill once, then overwrite 10x the image size at random.
    for lba in (0..BLOCKS).step_by(64) {
        img.write(lba * 4096, &blocks(1, lba, 64)).unwrap();
        model.write(lba, 64, 1);
    }
    let total = BLOCKS * 10;
    let mut written = 0;
    let mut tag = 1;
    let mut worst = 0u64;
    // Bound: with greedy cleaning below T, a segment is kept only while at
    // least T% live, so stored <= live / T; plus slack for the segments not
    // yet eligible (open, pending, newer than the last checkpoint, zombies
    // awaiting their two checkpoints).
    let image_bytes = BLOCKS * 4096;
    let slack = 24 * SEG as u64;
    let bound = image_bytes * 100 / threshold as u64 + slack;
    while written < total {
        let n = rng.gen_range(1..=16u64);
        let lba = rng.gen_range(0..BLOCKS - n);
        tag += 1;
        img.write(lba * 4096, &blocks(tag, lba, n)).unwrap();
        model.write(lba, n, tag);
        written += n;
        if tag % 64 == 0 {
            // Let GC keep up with the writer (it is throttled by design only
            // through backpressure; here the writer is far faster).
            img.flush().unwrap();
            let used: u64 = store.list_segments().unwrap().iter().map(|e| e.len).sum();
            worst = worst.max(used);
            assert!(
                used <= bound,
                "{kind:?}: stored {used} bytes > bound {bound} after {written} blocks"
            );
        }
    }
    img.flush().unwrap();
    let st = img.stats();
    let wa = st.store_bytes_written as f64 / st.client_bytes_written as f64;
    println!(
        "{kind:?}: client {} MiB, store {} MiB, gc copied {} MiB, write amplification {:.2}, peak stored {} MiB (bound {} MiB)",
        st.client_bytes_written >> 20,
        st.store_bytes_written >> 20,
        st.gc_bytes_copied >> 20,
        wa,
        worst >> 20,
        bound >> 20
    );
    assert!(
        st.gc_bytes_copied > 0 || st.segments_deleted > 0,
        "GC never ran"
    );
    assert!(matches(&read_all(&img, BLOCKS), &model));
    img.close().unwrap();
    let rep = log_engine::fsck(&*reopen_store(kind, dir.path())).unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}

#[test]
fn dir_store_space_bounded_under_overwrites() {
    run(StoreKind::Dir);
}

#[test]
fn zoned_file_space_bounded_under_overwrites() {
    run(StoreKind::ZonedFile);
}
