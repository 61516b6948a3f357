//! fsck: verify every crc of every segment and checkpoint, and the extent
//! map against the log, without changing anything.

use std::collections::{BTreeMap, HashMap};

use super::recovery::{read_superblock, recover};
use super::FsckReport;
use crate::format::segment::{decode_object, SegmentHeader};
use crate::format::segment_name;
use crate::store::SegmentStore;
use crate::Result;

/// Check the image in `store`. Store errors that prevent checking are
/// returned as `Err`; damage is listed in the report.
pub fn fsck(store: &dyn SegmentStore) -> Result<FsckReport> {
    let mut rep = FsckReport::default();
    let sb = match read_superblock(store) {
        Ok(sb) => sb,
        Err(e) => {
            rep.problems.push(format!("superblock: {e}"));
            return Ok(rep);
        }
    };
    let r = match recover(store, &sb) {
        Ok(r) => r,
        Err(e) if e.is_transient() => return Err(e),
        Err(e) => {
            rep.problems.push(e.to_string());
            return Ok(rep);
        }
    };
    rep.checkpoint_seq = Some(r.ckpt_seq);
    for (seq, why) in &r.bad_ckpts {
        rep.problems.push(format!("checkpoint {seq:016x}: {why}"));
    }
    if let Some(why) = &r.stop_reason {
        rep.problems.push(format!("log ends early: {why}"));
    }
    if !r.orphans.is_empty() {
        rep.problems.push(format!(
            "{} segment(s) after a gap in the log are not applied: first {}",
            r.orphans.len(),
            segment_name(r.orphans[0])
        ));
    }
    for seq in &r.leftovers {
        rep.notes.push(format!(
            "{}: unreferenced leftover (removed at next open)",
            segment_name(*seq)
        ));
    }

    // Every stored segment, whole.
    let mut headers: BTreeMap<u64, SegmentHeader> = BTreeMap::new();
    for e in store.list_segments()? {
        let mut obj = vec![0u8; e.len as usize];
        let res = store
            .read_segment(e.seq, 0, &mut obj)
            .and_then(|()| decode_object(Some(&sb.uuid), e.seq, &obj));
        match res {
            Ok(h) => {
                rep.segments_checked += 1;
                rep.chunks_checked += h.chunks.len() as u64;
                headers.insert(e.seq, h);
            }
            Err(err) if err.is_transient() => return Err(err),
            Err(err) => rep.problems.push(err.to_string()),
        }
    }

    // The map against the log: every extent must lie inside a data record
    // of its segment that holds the same LBAs.
    let mut runs: HashMap<u64, Vec<(u32, u32, u64)>> = HashMap::new();
    for (&seq, h) in &headers {
        let v = runs.entry(seq).or_default();
        for (rec, off) in h.records.iter().zip(h.data_offsets()) {
            if let Some(off) = off {
                v.push((off, rec.len, rec.lba));
            }
        }
        // The map merges extents that continue each other, so an extent may
        // span consecutive records: merge runs contiguous in both offset and
        // lba before checking.
        v.sort_unstable();
        let mut merged: Vec<(u32, u32, u64)> = Vec::with_capacity(v.len());
        for &(off, len, lba) in v.iter() {
            match merged.last_mut() {
                Some(m) if m.0 + m.1 == off && m.2 + m.1 as u64 == lba => m.1 += len,
                _ => merged.push((off, len, lba)),
            }
        }
        *v = merged;
    }
    for e in r.map.iter() {
        rep.extents_checked += 1;
        let Some(v) = runs.get(&e.seq) else {
            rep.problems.push(format!(
                "map: blocks {}+{} point to {} which is missing or corrupt",
                e.lba,
                e.len,
                segment_name(e.seq)
            ));
            continue;
        };
        let ok = v.iter().any(|&(off, len, lba)| {
            e.seg_off >= off
                && e.seg_off as u64 + e.len as u64 <= off as u64 + len as u64
                && lba + (e.seg_off - off) as u64 == e.lba
        });
        if !ok {
            rep.problems.push(format!(
                "map: blocks {}+{} -> {} offset {} match no record of that segment",
                e.lba,
                e.len,
                segment_name(e.seq),
                e.seg_off
            ));
        }
    }
    let live = r.map.live_blocks_by_seq();
    for (&seq, s) in &r.segs {
        let m = live.get(&seq).copied().unwrap_or(0);
        if m != s.live_blocks as u64 {
            rep.problems.push(format!(
                "{}: live count {} in the table but {} blocks in the map",
                segment_name(seq),
                s.live_blocks,
                m
            ));
        }
    }
    Ok(rep)
}
