//! Conformance suites: one for every [`ZonedDevice`] (the emulated file now,
//! `null_blk` and QEMU ZNS later) and one for every [`SegmentStore`].
//!
//! Each check returns an error naming the rule that was broken, so a failing
//! backend says what it got wrong.

use std::sync::Arc;

use super::device::{ZoneCond, ZoneType, ZonedDevice};
use crate::store::SegmentStore;
use crate::{Error, Result};

fn fail(what: impl Into<String>) -> Error {
    Error::corrupt("conformance", what.into())
}

fn expect_violation<T>(r: Result<T>, what: &str) -> Result<()> {
    match r {
        Err(Error::ZoneViolation(_)) => Ok(()),
        Err(e) => Err(fail(format!("{what}: expected a zone violation, got {e}"))),
        Ok(_) => Err(fail(format!(
            "{what}: expected a zone violation, got success"
        ))),
    }
}

fn check(cond: bool, what: impl Into<String>) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(fail(what))
    }
}

fn pattern(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_add((i / 4096) as u8))
        .collect()
}

/// Run the zoned-device suite. `make` returns a fresh device (all sequential
/// zones empty); `reopen` (if given) simulates a power cycle: it drops the
/// device and opens it again. Needs at least 3 sequential zones and, to check
/// the limits, `max_open`/`max_active` smaller than the number of sequential
/// zones.
pub fn run_zoned_device_conformance<D: ZonedDevice>(
    make: &mut dyn FnMut() -> D,
    reopen: Option<&mut dyn FnMut(D) -> D>,
) -> Result<()> {
    let dev = make();
    let g = dev.geometry();
    let gran = g.write_granularity as u64;
    let cap = g.zone_capacity;
    let first = g.nr_conventional;
    check(g.nr_zones >= first + 3, "need at least 3 sequential zones")?;
    let zones = dev.report_zones()?;
    check(zones.len() == g.nr_zones as usize, "report_zones length")?;
    for z in &zones {
        if z.index < first {
            check(
                z.zone_type == ZoneType::Conventional && z.cond == ZoneCond::NotWp,
                format!("zone {} should be conventional", z.index),
            )?;
        } else {
            check(
                z.zone_type == ZoneType::SequentialRequired
                    && z.cond == ZoneCond::Empty
                    && z.wp == 0
                    && z.capacity == cap
                    && z.len == g.zone_size,
                format!("zone {} should be an empty sequential zone: {z:?}", z.index),
            )?;
        }
    }
    let wp = |dev: &D, z: u32| -> Result<(u64, ZoneCond)> {
        let r = dev.report_zones()?;
        let zi = r
            .get(z as usize)
            .ok_or_else(|| fail(format!("zone {z} missing from report")))?;
        Ok((zi.wp, zi.cond))
    };

    // Sequential writes.
    let z = first;
    let a = pattern(1, 2 * gran as usize);
    dev.write(z, 0, &a)?;
    check(
        wp(&dev, z)? == (2 * gran, ZoneCond::ImplicitOpen),
        "wp after first write / implicit open",
    )?;
    expect_violation(dev.write(z, 0, &a), "write below wp")?;
    expect_violation(dev.write(z, 3 * gran, &a), "write above wp")?;
    expect_violation(dev.write(z, 2 * gran, &a[..100]), "unaligned length")?;
    expect_violation(dev.write(z, 2 * gran + 512, &a), "unaligned offset")?;
    let b = pattern(9, gran as usize);
    dev.write(z, 2 * gran, &b)?;
    check(wp(&dev, z)?.0 == 3 * gran, "wp advances")?;
    let mut r = vec![0u8; 3 * gran as usize];
    dev.read(z, 0, &mut r)?;
    check(
        r[..2 * gran as usize] == a[..] && r[2 * gran as usize..] == b[..],
        "read back",
    )?;
    expect_violation(dev.read(z, 3 * gran, &mut r[..gran as usize]), "read at wp")?;
    expect_violation(
        dev.read(z, 2 * gran, &mut r[..2 * gran as usize]),
        "read across wp",
    )?;

    // Capacity.
    let rest = (cap - 3 * gran) as usize;
    expect_violation(
        dev.write(z, 3 * gran, &vec![0u8; rest + gran as usize]),
        "write past capacity",
    )?;
    dev.write(z, 3 * gran, &vec![7u8; rest])?;
    check(wp(&dev, z)? == (cap, ZoneCond::Full), "full at capacity")?;
    expect_violation(dev.write(z, cap, &b), "write to full zone")?;
    let mut last = vec![0u8; gran as usize];
    dev.read(z, cap - gran, &mut last)?;
    check(last.iter().all(|&x| x == 7), "read last block")?;
    if cap < g.zone_size {
        expect_violation(dev.read(z, cap, &mut last), "read beyond capacity")?;
    }

    // Reset and finish.
    dev.reset(z)?;
    check(wp(&dev, z)? == (0, ZoneCond::Empty), "reset empties")?;
    expect_violation(dev.read(z, 0, &mut last), "read of reset zone")?;
    dev.write(z, 0, &b)?;
    dev.finish(z)?;
    check(wp(&dev, z)?.1 == ZoneCond::Full, "finish makes full")?;
    expect_violation(dev.write(z, wp(&dev, z)?.0, &b), "write after finish")?;
    dev.reset(z)?;
    dev.finish(z)?;
    check(wp(&dev, z)?.1 == ZoneCond::Full, "finish of empty zone")?;
    dev.reset(z)?;

    // Close keeps data, a closed zone accepts writes at wp again.
    dev.write(z, 0, &b)?;
    dev.close(z)?;
    check(wp(&dev, z)? == (gran, ZoneCond::Closed), "close")?;
    dev.write(z, gran, &b)?;
    check(
        wp(&dev, z)?.1 == ZoneCond::ImplicitOpen,
        "write reopens closed zone",
    )?;
    dev.reset(z)?;

    // Open limit with explicit opens.
    let nseq = g.nr_zones - first;
    if g.max_open != 0 && g.max_open < nseq {
        for i in 0..g.max_open {
            dev.open(first + i)?;
        }
        expect_violation(
            dev.open(first + g.max_open),
            "explicit open beyond max_open",
        )?;
        expect_violation(
            dev.write(first + g.max_open, 0, &b),
            "write beyond max_open (all explicit)",
        )?;
        for i in 0..g.max_open {
            dev.close(first + i)?;
            check(
                wp(&dev, first + i)?.1 == ZoneCond::Empty,
                "closing an unwritten zone empties it",
            )?;
        }
        // Implicitly open zones are closed to make room.
        let nimp = g.max_open.min(if g.max_active == 0 {
            u32::MAX
        } else {
            g.max_active - 1
        });
        if nimp == g.max_open && g.max_open < nseq {
            for i in 0..g.max_open {
                dev.write(first + i, 0, &b)?;
            }
            dev.write(first + g.max_open, 0, &b)?;
            let rep = dev.report_zones()?;
            let open = rep.iter().filter(|z| z.cond.is_open()).count() as u32;
            let closed = rep.iter().filter(|z| z.cond == ZoneCond::Closed).count() as u32;
            check(open <= g.max_open, "open count within max_open")?;
            check(
                closed >= 1,
                "an implicitly open zone was closed to make room",
            )?;
            for i in 0..=g.max_open {
                dev.reset(first + i)?;
            }
        }
    }
    // Active limit: closed zones count.
    if g.max_active != 0 && g.max_active < nseq {
        for i in 0..g.max_active {
            dev.write(first + i, 0, &b)?;
            dev.close(first + i)?;
        }
        let rep = dev.report_zones()?;
        check(
            rep.iter().filter(|z| z.cond.is_active()).count() as u32 == g.max_active,
            "closed zones are active",
        )?;
        expect_violation(
            dev.write(first + g.max_active, 0, &b),
            "write beyond max_active",
        )?;
        expect_violation(dev.open(first + g.max_active), "open beyond max_active")?;
        // Finishing one frees an active slot.
        dev.finish(first)?;
        dev.write(first + g.max_active, 0, &b)?;
        for i in 0..=g.max_active {
            dev.reset(first + i)?;
        }
    }

    // Conventional zones: random writes.
    if first > 0 {
        dev.write(0, 2 * gran, &b)?;
        dev.write(0, 0, &a[..gran as usize])?;
        dev.write(0, 2 * gran, &a[..gran as usize])?;
        let mut rr = vec![0u8; gran as usize];
        dev.read(0, 2 * gran, &mut rr)?;
        check(rr[..] == a[..gran as usize], "conventional overwrite")?;
        expect_violation(dev.reset(0), "reset of a conventional zone")?;
    }

    // Persistence across a power cycle.
    if let Some(reopen) = reopen {
        dev.write(first, 0, &a)?;
        dev.write(first + 1, 0, &b)?;
        dev.close(first + 1)?;
        dev.open(first + 2)?;
        dev.write(first + 2, 0, &b)?;
        dev.finish(first + 2)?;
        let dev = reopen(dev);
        check(dev.geometry() == g, "geometry after reopen")?;
        check(
            wp(&dev, first)? == (2 * gran, ZoneCond::Closed),
            "open zone closed by power cycle",
        )?;
        check(
            wp(&dev, first + 1)? == (gran, ZoneCond::Closed),
            "closed zone after reopen",
        )?;
        check(
            wp(&dev, first + 2)? == (cap, ZoneCond::Full),
            "full zone after reopen",
        )?;
        let mut r = vec![0u8; 2 * gran as usize];
        dev.read(first, 0, &mut r)?;
        check(r == a, "data after reopen")?;
        dev.write(first, 2 * gran, &b)?;
        check(wp(&dev, first)?.0 == 3 * gran, "append after reopen")?;
    }
    Ok(())
}

/// Drops a store and opens the same one again.
pub type ReopenStore<'a> = dyn FnMut(Arc<dyn SegmentStore>) -> Arc<dyn SegmentStore> + 'a;

/// Run the segment-store suite on a fresh store from `make`. `reopen` (if
/// given) drops the store and opens the same one again. `capacity_hint`:
/// for stores with a bounded capacity, also fill the store up (NoSpace) and
/// cycle write/delete to check space is reclaimed.
pub fn run_segment_store_conformance(
    make: &mut dyn FnMut() -> Arc<dyn SegmentStore>,
    mut reopen: Option<&mut ReopenStore<'_>>,
    seg_len: usize,
) -> Result<()> {
    let s = make();
    check(s.list_segments()?.is_empty(), "new store has no segments")?;
    check(s.list_meta()?.is_empty(), "new store has no metadata")?;
    let seg = |seq: u64| pattern(seq as u8, seg_len);
    for seq in [3u64, 1, 2] {
        s.write_segment(seq, &seg(seq))?;
    }
    match s.write_segment(2, &seg(2)) {
        Err(Error::Exists(_)) => {}
        other => {
            return Err(fail(format!(
                "duplicate seq: expected Exists, got {other:?}"
            )))
        }
    }
    let l = s.list_segments()?;
    check(
        l.iter().map(|e| e.seq).collect::<Vec<_>>() == vec![1, 2, 3],
        "list sorted",
    )?;
    check(l.iter().all(|e| e.len == seg_len as u64), "listed lengths")?;
    let mut b = vec![0u8; 4096];
    s.read_segment(2, 4096, &mut b)?;
    check(b[..] == seg(2)[4096..8192], "read range")?;
    let mut whole = vec![0u8; seg_len];
    s.read_segment(3, 0, &mut whole)?;
    check(whole == seg(3), "read whole")?;
    check(
        s.read_segment(3, seg_len as u64 - 100, &mut b).is_err(),
        "read past end is an error",
    )?;
    check(
        matches!(s.read_segment(99, 0, &mut b), Err(Error::NotFound(_))),
        "read of a missing segment is NotFound",
    )?;
    s.delete_segment(1)?;
    s.delete_segment(1)?;
    s.delete_segment(424242)?;
    check(
        matches!(s.read_segment(1, 0, &mut b), Err(Error::NotFound(_))),
        "deleted segment is gone",
    )?;

    s.put_meta("superblock", b"v1")?;
    s.put_meta("ckpt.0000000000000001", &pattern(5, 100_000))?;
    s.put_meta("superblock", b"v2")?;
    s.put_meta("zz", b"gone soon")?;
    s.delete_meta("zz")?;
    s.delete_meta("never-there")?;
    check(
        s.get_meta("superblock")?.as_deref() == Some(&b"v2"[..]),
        "meta replace",
    )?;
    check(s.get_meta("zz")?.is_none(), "deleted meta")?;
    check(
        s.list_meta()?
            == vec![
                "ckpt.0000000000000001".to_string(),
                "superblock".to_string(),
            ],
        "list_meta sorted",
    )?;

    let s = match reopen.as_mut() {
        Some(r) => {
            let s = r(s);
            check(
                s.list_segments()?.iter().map(|e| e.seq).collect::<Vec<_>>() == vec![2, 3],
                "segments after reopen (deleted one stays deleted)",
            )?;
            s.read_segment(2, 0, &mut whole)?;
            check(whole == seg(2), "segment data after reopen")?;
            check(
                s.get_meta("superblock")?.as_deref() == Some(&b"v2"[..]),
                "meta after reopen",
            )?;
            check(
                s.get_meta("ckpt.0000000000000001")? == Some(pattern(5, 100_000)),
                "big meta after reopen",
            )?;
            check(s.get_meta("zz")?.is_none(), "deleted meta after reopen")?;
            check(
                matches!(s.write_segment(3, &seg(3)), Err(Error::Exists(_))),
                "Exists after reopen",
            )?;
            s
        }
        None => s,
    };

    // Concurrent writers and readers.
    std::thread::scope(|sc| -> Result<()> {
        let mut hs = Vec::new();
        for t in 0..4u64 {
            let s = &s;
            hs.push(sc.spawn(move || -> Result<()> {
                for k in 0..4u64 {
                    let seq = 100 + t * 10 + k;
                    s.write_segment(seq, &seg(seq))?;
                    let mut b = vec![0u8; 4096];
                    for _ in 0..8 {
                        s.read_segment(2, 0, &mut b)?;
                        if b[..] != seg(2)[..4096] {
                            return Err(fail("concurrent read of segment 2"));
                        }
                        s.read_segment(seq, seg_len as u64 - 4096, &mut b)?;
                        if b[..] != seg(seq)[seg_len - 4096..] {
                            return Err(fail(format!("concurrent read of segment {seq}")));
                        }
                    }
                }
                Ok(())
            }));
        }
        for h in hs {
            h.join().map_err(|_| fail("thread panicked"))??;
        }
        Ok(())
    })?;
    check(
        s.list_segments()?.len() == 2 + 16,
        "all concurrent segments listed",
    )?;
    for t in 0..4u64 {
        for k in 0..4u64 {
            let seq = 100 + t * 10 + k;
            s.read_segment(seq, 0, &mut whole)?;
            check(
                whole == seg(seq),
                format!("segment {seq} after concurrent writes"),
            )?;
            s.delete_segment(seq)?;
        }
    }
    check(s.list_segments()?.len() == 2, "concurrent segments deleted")?;
    Ok(())
}
