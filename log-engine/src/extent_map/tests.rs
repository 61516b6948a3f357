//! Tests of the extent map: split/merge corner cases, limits, bulk load, and
//! a property test against a per-block model.

use super::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use rand::{Rng, SeedableRng};

fn x(lba: u64, len: u32, seq: u64, seg_off: u32) -> MapExtent {
    MapExtent {
        lba,
        len,
        seg_off,
        seq,
    }
}

fn t(seq: u64, off: u32) -> Target {
    Target { seq, off }
}

fn all(m: &ExtentMap) -> Vec<MapExtent> {
    m.iter().collect()
}

/// Insert and return what was removed, checking invariants.
fn ins(m: &mut ExtentMap, lba: u64, len: u32, tg: Target) -> Vec<MapExtent> {
    let mut r = Vec::new();
    m.insert(lba, len, tg, &mut r).unwrap();
    m.validate().unwrap();
    r
}

fn rm(m: &mut ExtentMap, lba: u64, len: u64) -> Vec<MapExtent> {
    let mut r = Vec::new();
    m.remove(lba, len, &mut r);
    m.validate().unwrap();
    r
}

#[test]
fn overwrite_middle_splits() {
    let mut m = ExtentMap::new();
    assert!(ins(&mut m, 0, 10, t(1, 0)).is_empty());
    let r = ins(&mut m, 3, 2, t(2, 0));
    assert_eq!(r, vec![x(3, 2, 1, 3)]);
    assert_eq!(all(&m), vec![x(0, 3, 1, 0), x(3, 2, 2, 0), x(5, 5, 1, 5)]);
    assert_eq!(m.len(), 3);
    assert_eq!(m.blocks_mapped(), 10);
}

#[test]
fn overlap_head_and_tail() {
    let mut m = ExtentMap::new();
    ins(&mut m, 10, 10, t(1, 0));
    let r = ins(&mut m, 5, 10, t(2, 0));
    assert_eq!(r, vec![x(10, 5, 1, 0)]);
    assert_eq!(all(&m), vec![x(5, 10, 2, 0), x(15, 5, 1, 5)]);

    let mut m = ExtentMap::new();
    ins(&mut m, 10, 10, t(1, 0));
    let r = ins(&mut m, 15, 10, t(2, 0));
    assert_eq!(r, vec![x(15, 5, 1, 5)]);
    assert_eq!(all(&m), vec![x(10, 5, 1, 0), x(15, 10, 2, 0)]);
    assert_eq!(m.blocks_mapped(), 15);
}

#[test]
fn cover_several_extents() {
    let mut m = ExtentMap::new();
    ins(&mut m, 0, 4, t(1, 0));
    ins(&mut m, 4, 4, t(2, 0));
    ins(&mut m, 10, 2, t(3, 5));
    let r = ins(&mut m, 2, 9, t(4, 0));
    assert_eq!(r, vec![x(2, 2, 1, 2), x(4, 4, 2, 0), x(10, 1, 3, 5)]);
    assert_eq!(all(&m), vec![x(0, 2, 1, 0), x(2, 9, 4, 0), x(11, 1, 3, 6)]);
    assert_eq!(m.blocks_mapped(), 12);
}

#[test]
fn exact_replace() {
    let mut m = ExtentMap::new();
    ins(&mut m, 0, 8, t(1, 0));
    let r = ins(&mut m, 0, 8, t(2, 3));
    assert_eq!(r, vec![x(0, 8, 1, 0)]);
    assert_eq!(all(&m), vec![x(0, 8, 2, 3)]);
}

#[test]
fn adjacent_merge_both_sides() {
    let mut m = ExtentMap::new();
    ins(&mut m, 0, 4, t(1, 0));
    assert!(ins(&mut m, 4, 4, t(1, 4)).is_empty());
    assert_eq!(all(&m), vec![x(0, 8, 1, 0)]);

    ins(&mut m, 12, 4, t(1, 12));
    assert_eq!(m.len(), 2);
    ins(&mut m, 8, 4, t(1, 8));
    assert_eq!(all(&m), vec![x(0, 16, 1, 0)]);

    // Successor merge only.
    let mut m = ExtentMap::new();
    ins(&mut m, 10, 5, t(7, 20));
    ins(&mut m, 6, 4, t(7, 16));
    assert_eq!(all(&m), vec![x(6, 9, 7, 16)]);
}

#[test]
fn rewrite_same_target_merges_and_reports() {
    let mut m = ExtentMap::new();
    ins(&mut m, 0, 10, t(1, 0));
    let r = ins(&mut m, 3, 2, t(1, 3));
    assert_eq!(r, vec![x(3, 2, 1, 3)]);
    assert_eq!(all(&m), vec![x(0, 10, 1, 0)]);
}

#[test]
fn overwrite_that_continues_trimmed_neighbours_merges() {
    let mut m = ExtentMap::new();
    ins(&mut m, 0, 10, t(1, 0));
    ins(&mut m, 10, 10, t(2, 0));
    // [5, 15) -> seq 1 off 5: continues [0,5) of seq 1.
    let r = ins(&mut m, 5, 10, t(1, 5));
    assert_eq!(r, vec![x(5, 5, 1, 5), x(10, 5, 2, 0)]);
    assert_eq!(all(&m), vec![x(0, 15, 1, 0), x(15, 5, 2, 5)]);
}

#[test]
fn no_merge_when_not_contiguous() {
    let mut m = ExtentMap::new();
    ins(&mut m, 0, 4, t(1, 0));
    ins(&mut m, 4, 4, t(1, 5)); // offset gap
    ins(&mut m, 8, 4, t(2, 9)); // other seq, offsets would continue
    ins(&mut m, 13, 4, t(2, 13)); // lba gap
    assert_eq!(
        all(&m),
        vec![x(0, 4, 1, 0), x(4, 4, 1, 5), x(8, 4, 2, 9), x(13, 4, 2, 13)]
    );
}

#[test]
fn remove_partial_and_spanning() {
    let mut m = ExtentMap::new();
    ins(&mut m, 0, 10, t(1, 0));
    assert_eq!(rm(&mut m, 2, 2), vec![x(2, 2, 1, 2)]);
    assert_eq!(all(&m), vec![x(0, 2, 1, 0), x(4, 6, 1, 4)]);
    assert_eq!(rm(&mut m, 0, 1), vec![x(0, 1, 1, 0)]);
    assert_eq!(rm(&mut m, 9, 100), vec![x(9, 1, 1, 9)]);
    assert_eq!(all(&m), vec![x(1, 1, 1, 1), x(4, 5, 1, 4)]);
    assert!(rm(&mut m, 2, 2).is_empty());
    assert_eq!(rm(&mut m, 0, u64::MAX), vec![x(1, 1, 1, 1), x(4, 5, 1, 4)]);
    assert!(m.is_empty());
    assert_eq!(m.blocks_mapped(), 0);
    assert!(rm(&mut m, 0, 10).is_empty());
    assert!(rm(&mut m, LBA_LIMIT, 10).is_empty());
}

#[test]
fn remap_if_only_matching_blocks() {
    let mut m = ExtentMap::new();
    ins(&mut m, 0, 10, t(1, 0));
    ins(&mut m, 10, 10, t(2, 0));
    ins(&mut m, 7, 1, t(3, 0)); // block 7 moved away since GC read it
    let mut r = Vec::new();
    // GC copied seq 1 blocks 5..15 (lba 5..15) to seq 9 offset 100.
    let n = m.remap_if(5, 10, t(1, 5), t(9, 100), &mut r).unwrap();
    m.validate().unwrap();
    assert_eq!(n, 4);
    assert_eq!(r, vec![x(5, 2, 1, 5), x(8, 2, 1, 8)]);
    assert_eq!(
        all(&m),
        vec![
            x(0, 5, 1, 0),
            x(5, 2, 9, 100),
            x(7, 1, 3, 0),
            x(8, 2, 9, 103),
            x(10, 10, 2, 0)
        ]
    );
    // Nothing matches: offsets shifted by one.
    r.clear();
    assert_eq!(m.remap_if(0, 5, t(1, 1), t(9, 0), &mut r).unwrap(), 0);
    assert!(r.is_empty());
    // Unmapped range.
    assert_eq!(m.remap_if(100, 5, t(1, 0), t(9, 0), &mut r).unwrap(), 0);
}

#[test]
fn lookup_pieces_and_holes() {
    let mut m = ExtentMap::new();
    ins(&mut m, 10, 10, t(1, 0));
    ins(&mut m, 20, 5, t(2, 7));
    ins(&mut m, 30, 2, t(3, 0));
    let p = m.lookup(5, 30);
    let piece = |lba, len, target| Piece { lba, len, target };
    assert_eq!(
        p,
        vec![
            piece(5, 5, None),
            piece(10, 10, Some(t(1, 0))),
            piece(20, 5, Some(t(2, 7))),
            piece(25, 5, None),
            piece(30, 2, Some(t(3, 0))),
            piece(32, 3, None),
        ]
    );
    assert_eq!(
        m.lookup(12, 10),
        vec![piece(12, 8, Some(t(1, 2))), piece(20, 2, Some(t(2, 7)))]
    );
    let mut out = vec![piece(0, 1, None)];
    m.lookup_into(31, 1, &mut out);
    assert_eq!(out, vec![piece(31, 1, Some(t(3, 1)))]);
    m.lookup_into(31, 0, &mut out);
    assert!(out.is_empty());
    assert_eq!(ExtentMap::new().lookup(3, 4), vec![piece(3, 4, None)]);
    // A hole longer than u32::MAX blocks comes as several pieces.
    let big = m.lookup(100, 1 << 33);
    assert_eq!(big.iter().map(|p| u64::from(p.len)).sum::<u64>(), 1 << 33);
    assert!(big.iter().all(|p| p.target.is_none()));
    assert_eq!(big.len(), 3);
    // Saturating end.
    let sat = m.lookup(u64::MAX - 2, 10);
    assert_eq!(sat.iter().map(|p| u64::from(p.len)).sum::<u64>(), 2);
}

#[test]
fn iter_range_clips() {
    let mut m = ExtentMap::new();
    ins(&mut m, 10, 10, t(1, 0));
    ins(&mut m, 30, 10, t(2, 0));
    let v: Vec<_> = m.iter_range(15, 20).collect();
    assert_eq!(v, vec![x(15, 5, 1, 5), x(30, 5, 2, 0)]);
    assert_eq!(m.iter_range(20, 10).count(), 0);
    assert_eq!(m.iter_range(0, 0).count(), 0);
}

#[test]
fn limits_are_errors_not_panics() {
    let mut m = ExtentMap::new();
    let mut r = Vec::new();
    let inv = |res: Result<()>| matches!(res, Err(Error::InvalidArgument(_)));
    assert!(inv(m.insert(LBA_LIMIT, 1, t(1, 0), &mut r)));
    assert!(inv(m.insert(LBA_LIMIT - 1, 2, t(1, 0), &mut r)));
    assert!(inv(m.insert(u64::MAX, 1, t(1, 0), &mut r)));
    assert!(inv(m.insert(0, 0, t(1, 0), &mut r)));
    assert!(inv(m.insert(0, 1 << 24, t(1, 0), &mut r)));
    assert!(inv(m.insert(0, u32::MAX, t(1, 0), &mut r)));
    assert!(inv(m.insert(0, 1, t(SEQ_LIMIT, 0), &mut r)));
    assert!(inv(m.insert(0, 1, t(u64::MAX, 0), &mut r)));
    assert!(inv(m.insert(0, 2, t(1, 65535), &mut r)));
    assert!(inv(m.insert(0, 1, t(1, u32::MAX), &mut r)));
    assert!(m.is_empty());
    m.insert(LBA_LIMIT - 1, 1, t(SEQ_LIMIT - 1, 65535), &mut r)
        .unwrap();
    m.insert(0, 65536, t(1, 0), &mut r).unwrap();
    assert_eq!(
        all(&m),
        vec![x(0, 65536, 1, 0), x(LBA_LIMIT - 1, 1, SEQ_LIMIT - 1, 65535)]
    );
    let bad = |res: Result<u64>| matches!(res, Err(Error::InvalidArgument(_)));
    assert!(bad(m.remap_if(0, 2, t(1, 65535), t(2, 0), &mut r)));
    assert!(bad(m.remap_if(0, 2, t(1, 0), t(SEQ_LIMIT, 0), &mut r)));
    assert!(bad(m.remap_if(LBA_LIMIT, 1, t(1, 0), t(2, 0), &mut r)));
    assert!(r.is_empty());
    m.validate().unwrap();
}

#[test]
fn from_sorted_round_trip_and_merge() {
    let mut m = ExtentMap::with_chunk_max(8);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut r = Vec::new();
    for _ in 0..500 {
        let lba = rng.gen_range(0..5000);
        let len = rng.gen_range(1..20);
        m.insert(
            lba,
            len,
            t(rng.gen_range(0..4), rng.gen_range(0..1000)),
            &mut r,
        )
        .unwrap();
    }
    m.validate().unwrap();
    let v = all(&m);
    let back = ExtentMap::from_sorted(v.iter().copied()).unwrap();
    back.validate().unwrap();
    assert_eq!(back, m);
    assert_eq!(all(&back), v);
    let small = ExtentMap::from_sorted_with_chunk_max(v.iter().copied(), 4).unwrap();
    small.validate().unwrap();
    assert_eq!(small, m);
    assert_eq!(m.clone(), m);
    assert!(m.clone().heap_bytes() <= m.heap_bytes());

    // Continuing extents merge on load; empty input gives an empty map.
    let j = ExtentMap::from_sorted([x(0, 2, 1, 0), x(2, 3, 1, 2), x(5, 1, 1, 6)]).unwrap();
    assert_eq!(all(&j), vec![x(0, 5, 1, 0), x(5, 1, 1, 6)]);
    assert_eq!(j.blocks_mapped(), 6);
    assert!(ExtentMap::from_sorted([]).unwrap().is_empty());
}

#[test]
fn from_sorted_rejects_bad_input() {
    let cases: Vec<Vec<MapExtent>> = vec![
        vec![x(10, 2, 1, 0), x(5, 2, 1, 0)],       // unsorted
        vec![x(0, 4, 1, 0), x(3, 2, 2, 0)],        // overlapping
        vec![x(0, 4, 1, 0), x(0, 4, 2, 0)],        // duplicate lba
        vec![x(0, 0, 1, 0)],                       // zero length
        vec![x(LBA_LIMIT, 1, 1, 0)],               // lba out of limit
        vec![x(LBA_LIMIT - 1, 2, 1, 0)],           // end out of limit
        vec![x(0, 1 << 24, 1, 0)],                 // length out of limit
        vec![x(0, 1, SEQ_LIMIT, 0)],               // seq out of limit
        vec![x(0, 2, 1, 65535)],                   // offset out of limit
        vec![x(0, 1, 1, 0), x(u64::MAX, 1, 1, 0)], // huge lba
        vec![x(0, 1, 1, u32::MAX), x(1, 1, 1, 0)], // huge offset
        vec![x(0, u32::MAX, 1, 0)],                // huge length
    ];
    for c in cases {
        match ExtentMap::from_sorted(c.clone()) {
            Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("extent #"), "{detail}"),
            other => panic!("{c:?} gave {other:?}"),
        }
    }
}

#[test]
fn live_blocks_by_seq_counts() {
    let mut m = ExtentMap::new();
    ins(&mut m, 0, 10, t(1, 0));
    ins(&mut m, 20, 5, t(2, 0));
    ins(&mut m, 5, 2, t(2, 5));
    let live = m.live_blocks_by_seq();
    assert_eq!(live.get(&1), Some(&8));
    assert_eq!(live.get(&2), Some(&7));
    assert_eq!(live.len(), 2);
}

#[test]
fn chunks_split_and_merge_back() {
    let mut m = ExtentMap::with_chunk_max(8);
    // Non-mergeable extents: every other block, ascending then a middle fill.
    for i in 0..400u64 {
        ins(&mut m, i * 2, 1, t(i, 0));
    }
    assert_eq!(m.len(), 400);
    assert!(m.chunks.len() >= 50);
    let full = m.heap_bytes();
    // Remove most of it in scattered pieces, then one spanning remove.
    for i in (0..800u64).step_by(6) {
        rm(&mut m, i, 3);
    }
    assert!(m.len() < 200);
    assert!(m.heap_bytes() < full);
    // Left: lbas 4, 10, 16, ... (every lba = 4 mod 6).
    assert!(all(&m).iter().all(|e| e.lba % 6 == 4 && e.len == 1));
    let r = rm(&mut m, 5, 790);
    assert_eq!(r.len(), 131);
    assert!(r.iter().all(|e| e.len == 1));
    assert_eq!(all(&m), vec![x(4, 1, 2, 0), x(796, 1, 398, 0)]);
    assert_eq!(m.chunks.len(), 1);
    // One insert spanning every chunk.
    for i in 0..400u64 {
        ins(&mut m, i * 2, 1, t(i, 0));
    }
    let r = ins(&mut m, 0, 800, t(1000, 0));
    assert_eq!(r.len(), 400);
    assert_eq!(all(&m), vec![x(0, 800, 1000, 0)]);
}

/// The memory goal, measured from capacities: under 24 bytes per extent for
/// random single-block extents, for in-order appends and after removals.
#[test]
fn heap_bytes_per_extent_under_24() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut m = ExtentMap::new();
    let mut r = Vec::new();
    for _ in 0..200_000 {
        let lba = rng.gen_range(0..1u64 << 32);
        m.insert(
            lba,
            1,
            t(rng.gen_range(0..1 << 20), rng.gen_range(0..2048)),
            &mut r,
        )
        .unwrap();
    }
    m.validate().unwrap();
    let per = m.heap_bytes() as f64 / m.len() as f64;
    assert!(per <= 24.0, "random: {per} bytes/extent");
    // Remove half the extents at random.
    let lbas: Vec<u64> = m.iter().map(|e| e.lba).collect();
    for (i, lba) in lbas.into_iter().enumerate() {
        if i % 2 == 0 || rng.gen_bool(0.1) {
            m.remove(lba, 1, &mut r);
        }
    }
    m.validate().unwrap();
    let per = m.heap_bytes() as f64 / m.len() as f64;
    assert!(per <= 24.0, "after removals: {per} bytes/extent");

    let mut s = ExtentMap::new();
    for i in 0..200_000u64 {
        // Two interleaved streams: consecutive blocks never continue each other.
        s.insert(i, 1, t(i % 2, (i / 2 % 60000) as u32), &mut r)
            .unwrap();
    }
    assert_eq!(s.len(), 200_000);
    let per = s.heap_bytes() as f64 / s.len() as f64;
    assert!(per <= 24.0, "appends: {per} bytes/extent");
}

// ---- property test against a per-block model ----

const SPACE: u64 = 300;
const MODEL: usize = 400;

#[derive(Clone, Debug)]
enum Op {
    /// `cont`: take the target that continues block `lba - 1`, if mapped.
    Insert {
        lba: u64,
        len: u32,
        seq: u64,
        off: u32,
        cont: bool,
    },
    Remove {
        lba: u64,
        len: u64,
    },
    /// `expect` is the current target of block `lba + pick % len` (shifted
    /// back to `lba`), off by one when `miss`.
    Remap {
        lba: u64,
        len: u32,
        pick: u32,
        miss: bool,
        seq: u64,
        off: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SPACE, 1u32..40, 0u64..3, 0u32..200, any::<bool>()).prop_map(
            |(lba, len, seq, off, cont)| Op::Insert { lba, len, seq, off, cont }
        ),
        1 => (0..SPACE, 1u64..80).prop_map(|(lba, len)| Op::Remove { lba, len }),
        2 => (0..SPACE, 1u32..40, any::<u32>(), prop::bool::weighted(0.2), 0u64..4, 0u32..200)
            .prop_map(|(lba, len, pick, miss, seq, off)| Op::Remap { lba, len, pick, miss, seq, off }),
    ]
}

type Block = (u64, u64, u32); // (lba, seq, off)

fn expand(v: &[MapExtent]) -> Vec<Block> {
    let mut out: Vec<Block> = v
        .iter()
        .flat_map(|e| (0..e.len).map(move |i| (e.lba + u64::from(i), e.seq, e.seg_off + i)))
        .collect();
    out.sort_unstable();
    out
}

fn check_lookup(m: &ExtentMap, model: &[Option<Target>], lba: u64, len: u64) {
    let pieces = m.lookup(lba, len);
    let mut cur = lba;
    let mut prev_hole = false;
    for p in &pieces {
        assert_eq!(p.lba, cur, "pieces must be contiguous: {pieces:?}");
        assert!(p.len > 0);
        match p.target {
            None => {
                assert!(!prev_hole, "adjacent holes: {pieces:?}");
                prev_hole = true;
            }
            Some(_) => prev_hole = false,
        }
        for i in 0..u64::from(p.len) {
            let want = model[(p.lba + i) as usize];
            let got = p.target.map(|t| Target {
                seq: t.seq,
                off: t.off + i as u32,
            });
            assert_eq!(got, want, "block {}", p.lba + i);
        }
        cur += u64::from(p.len);
    }
    assert_eq!(cur, lba + len);
    // Mapped pieces are exactly the extents clipped to the range.
    let mapped: Vec<MapExtent> = pieces
        .iter()
        .filter_map(|p| {
            p.target.map(|t| MapExtent {
                lba: p.lba,
                len: p.len,
                seg_off: t.off,
                seq: t.seq,
            })
        })
        .collect();
    let clipped: Vec<MapExtent> = m.iter_range(lba, len).collect();
    assert_eq!(mapped, clipped);
}

fn run_ops(chunk_max: usize, ops: &[Op]) {
    let mut m = ExtentMap::with_chunk_max(chunk_max);
    let mut model: Vec<Option<Target>> = vec![None; MODEL];
    let mut removed = Vec::new();
    for o in ops {
        removed.clear();
        let mut want: Vec<Block> = Vec::new();
        let (lo, n) = match *o {
            Op::Insert {
                lba,
                len,
                seq,
                off,
                cont,
            } => {
                let mut tg = t(seq, off);
                if cont && lba > 0 {
                    if let Some(p) = model[lba as usize - 1] {
                        tg = t(p.seq, p.off + 1);
                    }
                }
                m.insert(lba, len, tg, &mut removed).unwrap();
                for i in 0..len {
                    let b = (lba + u64::from(i)) as usize;
                    if let Some(old) = model[b] {
                        want.push((b as u64, old.seq, old.off));
                    }
                    model[b] = Some(t(tg.seq, tg.off + i));
                }
                (lba, u64::from(len))
            }
            Op::Remove { lba, len } => {
                m.remove(lba, len, &mut removed);
                for b in lba..lba + len {
                    if let Some(old) = model[b as usize].take() {
                        want.push((b, old.seq, old.off));
                    }
                }
                (lba, len)
            }
            Op::Remap {
                lba,
                len,
                pick,
                miss,
                seq,
                off,
            } => {
                let k = pick % len;
                let mut expect = t(seq % 3, off);
                if let Some(cur) = model[(lba + u64::from(k)) as usize] {
                    if cur.off >= k {
                        expect = t(cur.seq, cur.off - k + u32::from(miss));
                    }
                }
                let new = t(seq, off);
                let got = m.remap_if(lba, len, expect, new, &mut removed).unwrap();
                let mut count = 0;
                for i in 0..len {
                    let b = (lba + u64::from(i)) as usize;
                    if model[b] == Some(t(expect.seq, expect.off + i)) {
                        want.push((b as u64, expect.seq, expect.off + i));
                        model[b] = Some(t(new.seq, new.off + i));
                        count += 1;
                    }
                }
                assert_eq!(got, count, "remap count for {o:?}");
                (lba, u64::from(len))
            }
        };
        want.sort_unstable();
        assert_eq!(expand(&removed), want, "removed accounting for {o:?}");
        m.validate().unwrap();
        let mapped = model.iter().filter(|b| b.is_some()).count() as u64;
        assert_eq!(m.blocks_mapped(), mapped);
        check_lookup(&m, &model, 0, MODEL as u64);
        check_lookup(&m, &model, lo.saturating_sub(3), n + 6);
    }
    // Extents are maximal: no neighbour continues another.
    let v = all(&m);
    for w in v.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(
            !(a.lba + u64::from(a.len) == b.lba
                && a.seq == b.seq
                && a.seg_off + a.len == b.seg_off),
            "unmerged neighbours {a:?} {b:?}"
        );
    }
    // Per-seq live counts agree with the model.
    let mut live: HashMap<u64, u64> = HashMap::new();
    for tg in model.iter().flatten() {
        *live.entry(tg.seq).or_insert(0) += 1;
    }
    assert_eq!(m.live_blocks_by_seq(), live);
    // Bulk load and clone give the same map.
    let back = ExtentMap::from_sorted_with_chunk_max(v.iter().copied(), chunk_max).unwrap();
    back.validate().unwrap();
    assert_eq!(back, m);
    assert_eq!(m.clone(), m);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn prop_matches_block_model(chunk_max in 4usize..12, ops in prop::collection::vec(op(), 1..120)) {
        run_ops(chunk_max, &ops);
    }
}

#[test]
fn model_run_default_chunks() {
    // A long deterministic run with the production chunk size.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let ops: Vec<Op> = (0..3000)
        .map(|_| op().new_tree(&mut runner).unwrap().current())
        .collect();
    run_ops(CHUNK_MAX, &ops);
}
