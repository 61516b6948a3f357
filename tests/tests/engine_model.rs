//! Property test: random sequences of write / read / discard / write_zeroes /
//! flush / checkpoint / GC / clean reopen / crash against a plain in-memory
//! model, on both embedded stores, with compression on and off.
//!
//! Crash = drop the image without closing it (uploads in flight are lost)
//! and reopen. The recovered content must equal the model as it was after
//! some prefix of the operations that is not older than the last completed
//! flush: everything flushed survives, and nothing newer is half applied.

use log_engine::Image;
use lsvd_tests::*;
use proptest::prelude::*;

const BLOCKS: u64 = 384;
const SEG: u32 = 64 << 10; // 16 blocks: many segments, much GC

#[derive(Clone, Debug)]
enum Op {
    Write { lba: u64, n: u64 },
    Read { lba: u64, n: u64 },
    Discard { lba: u64, n: u64 },
    Zeroes { lba: u64, n: u64 },
    Flush,
    Checkpoint,
    Gc,
    Reopen,
    Crash,
}

/// Ranges up to 40 blocks for reads and discards.
fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..BLOCKS).prop_flat_map(|lba| (Just(lba), 1..=(BLOCKS - lba).min(40)))
}

/// Writes up to the segment size (16 blocks): atomic across a crash. Larger
/// writes are split over segments and are covered by `large_writes`.
fn write_range() -> impl Strategy<Value = (u64, u64)> {
    (0..BLOCKS).prop_flat_map(|lba| (Just(lba), 1..=(BLOCKS - lba).min(16)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => write_range().prop_map(|(lba, n)| Op::Write { lba, n }),
        4 => range().prop_map(|(lba, n)| Op::Read { lba, n }),
        2 => range().prop_map(|(lba, n)| Op::Discard { lba, n }),
        1 => range().prop_map(|(lba, n)| Op::Zeroes { lba, n }),
        2 => Just(Op::Flush),
        1 => Just(Op::Checkpoint),
        2 => Just(Op::Gc),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn run(
    kind: StoreKind,
    compress: bool,
    background_gc: bool,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = create(kind, dir.path(), BLOCKS, SEG, compress);
    let mut img = Some(Image::open(store, test_opts(background_gc)).unwrap());
    let mut model = Model::new(BLOCKS);
    // Models since the last completed flush: a crash may land on any of them.
    let mut since_flush: Vec<Model> = vec![model.clone()];
    let mut tag = 0u64;
    for (i, op) in ops.into_iter().enumerate() {
        let im = img.as_ref().unwrap();
        match op {
            Op::Write { lba, n } => {
                tag += 1;
                im.write(lba * 4096, &blocks(tag, lba, n)).unwrap();
                model.write(lba, n, tag);
                since_flush.push(model.clone());
            }
            Op::Read { lba, n } => {
                let mut buf = vec![0u8; (n * 4096) as usize];
                im.read(lba * 4096, &mut buf).unwrap();
                for k in 0..n {
                    let got = tag_of(
                        &buf[(k * 4096) as usize..((k + 1) * 4096) as usize],
                        lba + k,
                    );
                    prop_assert_eq!(
                        got,
                        Some(model.0[(lba + k) as usize]),
                        "op {} block {}",
                        i,
                        lba + k
                    );
                }
            }
            Op::Discard { lba, n } | Op::Zeroes { lba, n } => {
                if matches!(op, Op::Discard { .. }) {
                    im.discard(lba * 4096, n * 4096).unwrap();
                } else {
                    im.write_zeroes(lba * 4096, n * 4096).unwrap();
                }
                model.zero(lba, n);
                since_flush.push(model.clone());
            }
            Op::Flush => {
                im.flush().unwrap();
                since_flush = vec![model.clone()];
            }
            Op::Checkpoint => im.checkpoint().unwrap(),
            Op::Gc => {
                im.gc_once().unwrap();
            }
            Op::Reopen => {
                img.take().unwrap().close().unwrap();
                let store = reopen_store(kind, dir.path());
                img = Some(Image::open(store, test_opts(background_gc)).unwrap());
                let got = read_all(img.as_ref().unwrap(), BLOCKS);
                prop_assert!(
                    matches(&got, &model),
                    "op {}: content differs after clean reopen",
                    i
                );
                since_flush = vec![model.clone()];
            }
            Op::Crash => {
                drop(img.take());
                let store = reopen_store(kind, dir.path());
                let im = Image::open(store, test_opts(background_gc)).unwrap();
                let got = read_all(&im, BLOCKS);
                let hit = since_flush.iter().rposition(|m| matches(&got, m));
                prop_assert!(
                    hit.is_some(),
                    "op {}: state after crash is not a prefix state since the last flush ({} candidates)",
                    i,
                    since_flush.len()
                );
                model = since_flush[hit.unwrap()].clone();
                since_flush = vec![model.clone()];
                img = Some(im);
            }
        }
    }
    let im = img.take().unwrap();
    let got = read_all(&im, BLOCKS);
    prop_assert!(matches(&got, &model), "final content differs");
    im.close().unwrap();
    // A zoned device is opened by one store at a time in a process.
    drop(im);
    let report = log_engine::fsck(&*reopen_store(kind, dir.path())).unwrap();
    prop_assert!(report.is_clean(), "fsck: {:?}", report.problems);
    let store = reopen_store(kind, dir.path());
    let im = Image::open(store, test_opts(false)).unwrap();
    prop_assert!(
        matches(&read_all(&im, BLOCKS), &model),
        "content differs after final reopen"
    );
    im.close().unwrap();
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 200, .. ProptestConfig::default() })]

    #[test]
    fn dir_store(ops in prop::collection::vec(op(), 1..120)) {
        run(StoreKind::Dir, false, false, ops)?;
    }

    #[test]
    fn dir_store_zstd(ops in prop::collection::vec(op(), 1..120)) {
        run(StoreKind::Dir, true, false, ops)?;
    }

    #[test]
    fn zoned_file(ops in prop::collection::vec(op(), 1..120)) {
        run(StoreKind::ZonedFile, false, false, ops)?;
    }

    #[test]
    fn zoned_file_zstd(ops in prop::collection::vec(op(), 1..120)) {
        run(StoreKind::ZonedFile, true, false, ops)?;
    }

    #[test]
    fn dir_store_background_gc(ops in prop::collection::vec(op(), 1..120)) {
        run(StoreKind::Dir, false, true, ops)?;
    }

    #[test]
    fn zoned_file_background_gc(ops in prop::collection::vec(op(), 1..120)) {
        run(StoreKind::ZonedFile, false, true, ops)?;
    }

    #[test]
    #[ignore = "needs a zoned block device (LSVD_TEST_ZNS): run in the guest by tests/vm/guest/zns-suite.sh"]
    fn zns_device(ops in prop::collection::vec(op(), 1..120)) {
        run(StoreKind::ZnsDevice, false, false, ops)?;
    }

    #[test]
    #[ignore = "needs a zoned block device (LSVD_TEST_ZNS): run in the guest by tests/vm/guest/zns-suite.sh"]
    fn zns_device_background_gc(ops in prop::collection::vec(op(), 1..120)) {
        run(StoreKind::ZnsDevice, true, true, ops)?;
    }
}
