//! Recovery tests: run random writes with flushes and checkpoints, crash,
//! then damage the store the way a crash or a lost object can (drop or
//! truncate the newest segments, drop the newest checkpoint) and check that
//! the image opens in a state equal to the model after some prefix of the
//! writes, never a mix. Then keep writing and check again, so the segments
//! recovery threw away can never collide with new ones.

use std::path::Path;

use log_engine::Image;
use lsvd_tests::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BLOCKS: u64 = 512;
const SEG: u32 = 64 << 10;

#[derive(Clone, Copy, Debug)]
enum Damage {
    DropNewestSegments(usize),
    TruncateNewestSegment,
    DropNewestCheckpoint,
    DropCheckpointAndSegments(usize),
}

/// Random writes; returns the full history of models (one per write).
fn workload(img: &Image, rng: &mut StdRng, history: &mut Vec<Model>, tag: &mut u64, ops: usize) {
    let mut model = history.last().cloned().unwrap();
    for _ in 0..ops {
        let lba = rng.gen_range(0..BLOCKS);
        // At most one segment (16 blocks): such writes are atomic across a crash.
        let n = rng.gen_range(1..=(BLOCKS - lba).min(16));
        if rng.gen_bool(0.1) {
            img.discard(lba * 4096, n * 4096).unwrap();
            model.zero(lba, n);
        } else {
            *tag += 1;
            img.write(lba * 4096, &blocks(*tag, lba, n)).unwrap();
            model.write(lba, n, *tag);
        }
        history.push(model.clone());
        if rng.gen_bool(0.08) {
            img.flush().unwrap();
        }
    }
}

fn damage(kind: StoreKind, dir: &Path, d: Damage) {
    let store = reopen_store(kind, dir);
    let segs = store.list_segments().unwrap();
    let newest_ckpt = store
        .list_meta()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("ckpt.") && n.len() == "ckpt.".len() + 16)
        .max();
    match d {
        Damage::DropNewestSegments(k) | Damage::DropCheckpointAndSegments(k) => {
            // Lost objects the log can survive: newer than the oldest kept
            // checkpoint (recovery falls back to it and rolls forward to the
            // gap). Losing what every checkpoint needs is unrecoverable media
            // loss, reported as such (see `all_checkpoints_need_a_lost_segment`).
            let oldest_ckpt = store
                .list_meta()
                .unwrap()
                .into_iter()
                .filter(|n| n.starts_with("ckpt.") && n.len() == "ckpt.".len() + 16)
                .filter_map(|n| u64::from_str_radix(&n["ckpt.".len()..], 16).ok())
                .min()
                .unwrap_or(0);
            for e in segs.iter().rev().filter(|e| e.seq > oldest_ckpt).take(k) {
                store.delete_segment(e.seq).unwrap();
            }
            if matches!(d, Damage::DropCheckpointAndSegments(_)) {
                if let Some(c) = newest_ckpt {
                    store.delete_meta(&c).unwrap();
                }
            }
        }
        Damage::DropNewestCheckpoint => {
            if let Some(c) = newest_ckpt {
                store.delete_meta(&c).unwrap();
            }
        }
        Damage::TruncateNewestSegment => {
            // A crash can tear only a segment that was never acknowledged:
            // one newer than the newest checkpoint.
            let ckpt_seq = newest_ckpt
                .as_deref()
                .and_then(|n| u64::from_str_radix(&n["ckpt.".len()..], 16).ok())
                .unwrap_or(0);
            let Some(last) = segs.last().filter(|e| e.seq > ckpt_seq) else {
                return;
            };
            // Only the directory store has files to truncate; elsewhere drop it.
            if kind == StoreKind::Dir {
                let p = dir.join("img").join(format!("seg.{:016x}", last.seq));
                let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                f.set_len(last.len / 2).unwrap();
            } else {
                store.delete_segment(last.seq).unwrap();
            }
        }
    }
}

fn cycle(kind: StoreKind, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let store = create(kind, dir.path(), BLOCKS, SEG, seed.is_multiple_of(2));
    let mut history = vec![Model::new(BLOCKS)];
    let mut tag = 0;
    for round in 0..3 {
        let img = Image::open(store_for(kind, dir.path(), round), test_opts(false)).unwrap();
        workload(&img, &mut rng, &mut history, &mut tag, 150);
        if rng.gen_bool(0.5) {
            img.gc_once().unwrap();
            img.checkpoint().unwrap();
        }
        drop(img); // crash
        let d = match rng.gen_range(0..4) {
            0 => Damage::DropNewestSegments(rng.gen_range(1..4)),
            1 => Damage::TruncateNewestSegment,
            2 => Damage::DropNewestCheckpoint,
            _ => Damage::DropCheckpointAndSegments(rng.gen_range(1..3)),
        };
        damage(kind, dir.path(), d);
        let img = Image::open(reopen_store(kind, dir.path()), test_opts(false))
            .unwrap_or_else(|e| panic!("seed {seed} round {round} {d:?}: open failed: {e}"));
        let got = read_all(&img, BLOCKS);
        let hit = history.iter().rposition(|m| matches(&got, m));
        if hit.is_none() {
            // Say how far the content is from the nearest model, and where.
            let (best, diff) = history
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    (
                        i,
                        got.iter()
                            .zip(&m.0)
                            .filter(|(g, t)| **g != Some(**t))
                            .count(),
                    )
                })
                .min_by_key(|&(_, d)| d)
                .unwrap();
            let bad: Vec<_> = got
                .iter()
                .zip(&history[best].0)
                .enumerate()
                .filter(|(_, (g, t))| **g != Some(**t))
                .take(8)
                .map(|(lba, (g, t))| (lba, *g, *t))
                .collect();
            panic!(
                "seed {seed} round {round} {d:?}: not a prefix state; nearest model #{best} of {} differs in {diff} blocks, e.g. (lba, got, want) {bad:?}",
                history.len()
            );
        }
        history.truncate(hit.unwrap() + 1);
        img.close().unwrap();
        let rep = log_engine::fsck(&*reopen_store(kind, dir.path())).unwrap();
        assert!(
            rep.is_clean(),
            "seed {seed} round {round} {d:?}: fsck {:?}",
            rep.problems
        );
    }
    let _ = store;
}

fn store_for(
    kind: StoreKind,
    dir: &Path,
    _round: usize,
) -> std::sync::Arc<dyn log_engine::SegmentStore> {
    reopen_store(kind, dir)
}

fn seeds() -> u64 {
    std::env::var("LSVD_RECOVERY_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

#[test]
fn dir_store_damage_keeps_prefix() {
    for seed in 0..seeds() {
        cycle(StoreKind::Dir, seed);
    }
}

#[test]
fn zoned_file_damage_keeps_prefix() {
    for seed in 100..100 + seeds() {
        cycle(StoreKind::ZonedFile, seed);
    }
}

/// Dropping only the newest checkpoint loses nothing: the previous one and
/// the segments after it are still there.
#[test]
fn lost_newest_checkpoint_loses_nothing() {
    for kind in [StoreKind::Dir, StoreKind::ZonedFile] {
        let dir = tempfile::tempdir().unwrap();
        create(kind, dir.path(), BLOCKS, SEG, false);
        let mut rng = StdRng::seed_from_u64(7);
        let mut history = vec![Model::new(BLOCKS)];
        let mut tag = 0;
        let img = Image::open(reopen_store(kind, dir.path()), test_opts(false)).unwrap();
        workload(&img, &mut rng, &mut history, &mut tag, 300);
        img.gc_once().unwrap();
        img.checkpoint().unwrap();
        workload(&img, &mut rng, &mut history, &mut tag, 50);
        img.close().unwrap();
        damage(kind, dir.path(), Damage::DropNewestCheckpoint);
        let img = Image::open(reopen_store(kind, dir.path()), test_opts(false)).unwrap();
        assert!(
            matches(&read_all(&img, BLOCKS), history.last().unwrap()),
            "{kind:?}"
        );
        img.close().unwrap();
    }
}

/// Losing a segment every kept checkpoint maps data to cannot be undone: the
/// open fails with an error naming the segment instead of serving a state
/// that never existed.
#[test]
fn all_checkpoints_need_a_lost_segment() {
    let dir = tempfile::tempdir().unwrap();
    create(StoreKind::Dir, dir.path(), BLOCKS, SEG, false);
    let img = Image::open(reopen_store(StoreKind::Dir, dir.path()), test_opts(false)).unwrap();
    img.write(0, &blocks(1, 0, 16)).unwrap();
    img.checkpoint().unwrap();
    img.write(16 * 4096, &blocks(2, 16, 16)).unwrap();
    img.checkpoint().unwrap();
    img.close().unwrap();
    let store = reopen_store(StoreKind::Dir, dir.path());
    let first = store.list_segments().unwrap()[0].seq;
    store.delete_segment(first).unwrap();
    let err = Image::open(reopen_store(StoreKind::Dir, dir.path()), test_opts(false)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no usable checkpoint") && msg.contains(&format!("{first:016x}")),
        "{msg}"
    );
}
