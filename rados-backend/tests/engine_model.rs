//! Property test of the engine on the RADOS store against a real cluster:
//! random write / read / discard / write_zeroes / flush / checkpoint / GC /
//! clean reopen / crash (drop without close) vs a plain model, as
//! tests/tests/engine_model.rs does for the embedded stores. Few, short
//! cases (every op is Ceph round trips): `PROPTEST_CASES` (default 6; tests/ceph/run.sh uses 16).
//!
//! After a crash the content must equal the model after some prefix of the
//! ops not older than the last completed flush.

mod common;

use std::sync::Arc;

use common::*;
use log_engine::{Compression, CreateOptions, Image, SegmentStore};
use lsvd_tests::*;
use proptest::prelude::*;

const BLOCKS: u64 = 256;
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

fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..BLOCKS).prop_flat_map(|lba| (Just(lba), 1..=(BLOCKS - lba).min(40)))
}

/// Writes up to the segment size: atomic across a crash.
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

fn create_image(spec: &str, compress: bool) -> Arc<dyn SegmentStore> {
    let store = lsvd_rados::create_spec(spec).expect("create store");
    Image::create(
        store.clone(),
        &CreateOptions {
            size: BLOCKS * 4096,
            segment_size: SEG,
            compression: if compress {
                Compression::Zstd
            } else {
                Compression::None
            },
        },
    )
    .expect("create image");
    store
}

fn reopen(spec: &str) -> Arc<dyn SegmentStore> {
    lsvd_rados::open_spec(spec).expect("open store")
}

fn run(conf: &str, compress: bool, background_gc: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let spec = format!("rados:{}/{}?conf={conf}", pool(), unique("model"));
    let store = create_image(&spec, compress);
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
                let store = reopen(&spec);
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
                let store = reopen(&spec);
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
    let report = log_engine::fsck(&*reopen(&spec)).unwrap();
    prop_assert!(report.is_clean(), "fsck: {:?}", report.problems);
    let store = reopen(&spec);
    let im = Image::open(store, test_opts(false)).unwrap();
    prop_assert!(
        matches(&read_all(&im, BLOCKS), &model),
        "content differs after final reopen"
    );
    im.close().unwrap();
    lsvd_rados::open_spec(&spec).unwrap().destroy().unwrap();
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// One proptest run; skipped (visibly) without a cluster.
fn check(test: &str, compress: bool, background_gc: bool) {
    let Some(conf) = cluster(test) else {
        return;
    };
    let cfg = ProptestConfig {
        cases: cases(),
        max_shrink_iters: 50,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest::test_runner::TestRunner::new(cfg)
        .run(&prop::collection::vec(op(), 1..60), |ops| {
            run(&conf, compress, background_gc, ops)
        })
        .unwrap();
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh runs it"]
fn rados_model() {
    check("rados_model", false, false);
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh runs it"]
fn rados_model_zstd_background_gc() {
    check("rados_model_zstd_background_gc", true, true);
}
