//! Corruption tests: flip bits in stored segments and checkpoints. Reads
//! must return the right data or a clear error naming the segment, never
//! wrong data; fsck must report the damage; a corrupt newest checkpoint
//! falls back to the previous one.

use log_engine::format::segment::SegmentHeader;
use log_engine::{Error, Image};
use lsvd_tests::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BLOCKS: u64 = 256;
const SEG: u32 = 64 << 10;

fn populated(compress: bool) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    create(StoreKind::Dir, dir.path(), BLOCKS, SEG, compress);
    let img = Image::open(reopen_store(StoreKind::Dir, dir.path()), test_opts(false)).unwrap();
    let mut model = Model::new(BLOCKS);
    let mut rng = StdRng::seed_from_u64(1);
    for tag in 1..=60u64 {
        let lba = rng.gen_range(0..BLOCKS);
        let n = rng.gen_range(1..=(BLOCKS - lba).min(16));
        img.write(lba * 4096, &blocks(tag, lba, n)).unwrap();
        model.write(lba, n, tag);
    }
    img.close().unwrap();
    (dir, model)
}

fn flip(path: &std::path::Path, byte: u64, bit: u8) {
    let mut b = std::fs::read(path).unwrap();
    b[byte as usize] ^= 1 << bit;
    std::fs::write(path, b).unwrap();
}

#[test]
fn segment_bit_flips_never_return_wrong_data() {
    for compress in [false, true] {
        let mut rng = StdRng::seed_from_u64(compress as u64);
        for round in 0..24 {
            let (dir, model) = populated(compress);
            let store = reopen_store(StoreKind::Dir, dir.path());
            let segs = store.list_segments().unwrap();
            let victim = segs[rng.gen_range(0..segs.len())];
            let path = dir
                .path()
                .join("img")
                .join(format!("seg.{:016x}", victim.seq));
            let raw = std::fs::read(&path).unwrap();
            let hdr = SegmentHeader::decode(None, victim.seq, &raw).unwrap();
            // A byte the crcs cover: header (up to its crc) or stored data.
            let covered_header = hdr.header_len as u64; // fixed part + tables + crc are inside
            let byte = if rng.gen_bool(0.3) || hdr.stored_len == 0 {
                rng.gen_range(0..96.min(covered_header))
            } else {
                hdr.header_len as u64 + rng.gen_range(0..hdr.stored_len)
            };
            flip(&path, byte, rng.gen_range(0..8));
            let name = format!("{:016x}", victim.seq);

            let rep = log_engine::fsck(&*reopen_store(StoreKind::Dir, dir.path())).unwrap();
            assert!(
                !rep.is_clean(),
                "round {round}: fsck missed a flip at byte {byte} of {name}"
            );
            assert!(
                rep.problems.iter().any(|p| p.contains(&name)),
                "round {round}: fsck does not name {name}: {:?}",
                rep.problems
            );

            // Opening works (the checkpoint covers every segment); reads are
            // right or fail naming the segment.
            let img =
                Image::open(reopen_store(StoreKind::Dir, dir.path()), test_opts(false)).unwrap();
            let mut errors = 0;
            for lba in 0..BLOCKS {
                let mut buf = vec![0u8; 4096];
                match img.read(lba * 4096, &mut buf) {
                    Ok(()) => assert_eq!(
                        tag_of(&buf, lba),
                        Some(model.0[lba as usize]),
                        "round {round}: wrong data at block {lba} after flipping {name} byte {byte}"
                    ),
                    Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                        assert!(
                            e.to_string().contains(&name),
                            "error does not name {name}: {e}"
                        );
                        errors += 1;
                    }
                    Err(e) => panic!("round {round}: unexpected error {e}"),
                }
            }
            let _ = errors;
            drop(img);
        }
    }
}

#[test]
fn corrupt_newest_checkpoint_falls_back() {
    let (dir, model) = populated(false);
    let store = reopen_store(StoreKind::Dir, dir.path());
    let newest = store
        .list_meta()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("ckpt.") && n.len() == "ckpt.".len() + 16)
        .max()
        .unwrap();
    let path = dir.path().join("img").join(format!("meta.{newest}"));
    flip(&path, 40, 3);
    let rep = log_engine::fsck(&*reopen_store(StoreKind::Dir, dir.path())).unwrap();
    assert!(
        rep.problems.iter().any(|p| p.contains("checkpoint")),
        "{:?}",
        rep.problems
    );
    let img = Image::open(reopen_store(StoreKind::Dir, dir.path()), test_opts(false)).unwrap();
    assert!(matches(&read_all(&img, BLOCKS), &model));
    img.close().unwrap();
}

#[test]
fn all_checkpoints_corrupt_is_a_clear_error() {
    let (dir, _model) = populated(false);
    let store = reopen_store(StoreKind::Dir, dir.path());
    for n in store.list_meta().unwrap() {
        if n.starts_with("ckpt.") && n.len() == "ckpt.".len() + 16 {
            flip(&dir.path().join("img").join(format!("meta.{n}")), 20, 0);
        }
    }
    let err = Image::open(reopen_store(StoreKind::Dir, dir.path()), test_opts(false)).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

#[test]
fn corrupt_superblock_is_a_clear_error() {
    let (dir, _model) = populated(false);
    flip(&dir.path().join("img").join("meta.superblock"), 33, 1);
    let err = Image::open(reopen_store(StoreKind::Dir, dir.path()), test_opts(false)).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}
