//! Recovery: rebuild the in-memory state from the store on open.
//!
//! 1. Read and verify the superblock.
//! 2. Load the newest checkpoint whose manifest and parts all verify; a
//!    corrupt or incomplete newer one is reported and skipped.
//! 3. Roll forward the contiguous run of segments `C+1, C+2, ...`, each
//!    verified whole (header crc and every chunk crc) before any of its
//!    records is applied. The first missing or corrupt segment ends the
//!    roll-forward (prefix consistency); segments past it are never applied
//!    and are removed (unless read-only). A transient store error fails the
//!    open instead: we never cut the log short because the store hiccupped.
//! 4. Segments at or below `C` that the checkpoint does not list are
//!    leftovers of an interrupted GC deletion and are removed.

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::checkpoint::{delete_checkpoint, list_checkpoints, load_checkpoint};
use super::state::SegInfo;
use crate::extent_map::{ExtentMap, MapExtent, Target};
use crate::format::segment::{decode_object, RecordKind, SegmentHeader};
use crate::format::superblock::Superblock;
use crate::format::{checkpoint::Manifest, segment_name};
use crate::store::SegmentStore;
use crate::{Error, Result};

/// What recovery found; also the basis of fsck.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub map: ExtentMap,
    pub segs: BTreeMap<u64, SegInfo>,
    pub ckpt_seq: u64,
    /// Next seq to assign = first seq not applied.
    pub next_seq: u64,
    pub write_seq: u64,
    /// Segments applied by roll-forward.
    pub rolled_forward: Vec<u64>,
    /// Segments past the prefix (not applied).
    pub orphans: Vec<u64>,
    /// Stored segments <= checkpoint that the checkpoint does not list.
    pub leftovers: Vec<u64>,
    /// Valid checkpoints found, ascending.
    pub valid_ckpts: Vec<u64>,
    /// Checkpoints that failed verification, with the reason.
    pub bad_ckpts: Vec<(u64, String)>,
    /// Why roll-forward stopped, if a segment was there but bad.
    pub stop_reason: Option<String>,
}

/// Read and verify the superblock.
pub(crate) fn read_superblock(store: &dyn SegmentStore) -> Result<Superblock> {
    let bytes = store
        .get_meta("superblock")?
        .ok_or_else(|| Error::NotFound(format!("no lsvd superblock in {}", store.describe())))?;
    Superblock::decode(&bytes)
}

/// Rebuild state from the store (no writes to the store).
pub(crate) fn recover(store: &dyn SegmentStore, sb: &Superblock) -> Result<Recovered> {
    let mut r = Recovered::default();
    let stored = store.list_segments()?;
    // seq -> stored length, one lookup per segment during roll-forward.
    let stored_seqs: BTreeMap<u64, u64> = stored.iter().map(|e| (e.seq, e.len)).collect();

    // The newest checkpoint that verifies and whose referenced segments
    // all exist. An older one is as good a starting point (the two newest
    // are kept, and segments after either are never deleted), so a lost
    // newest checkpoint or a lost segment it needs costs only the writes
    // after the gap, never consistency.
    let mut loaded: Option<(Manifest, ExtentMap)> = None;
    for seq in list_checkpoints(store)? {
        if loaded.is_some() {
            // Older checkpoints only need to be verifiable for fsck.
            match load_checkpoint(store, &sb.uuid, seq) {
                Ok(_) => r.valid_ckpts.push(seq),
                Err(e) if e.is_transient() => {}
                Err(e) => r.bad_ckpts.push((seq, e.to_string())),
            }
            continue;
        }
        match load_checkpoint(store, &sb.uuid, seq) {
            Ok(c) => {
                let missing =
                    c.manifest.segments.iter().find(|s| {
                        !s.zombie && s.live_blocks > 0 && !stored_seqs.contains_key(&s.seq)
                    });
                if let Some(m) = missing {
                    let why = format!(
                        "{} is missing from {} but this checkpoint maps {} blocks to it",
                        segment_name(m.seq),
                        store.describe(),
                        m.live_blocks
                    );
                    warn!(seq, reason = %why, "checkpoint unusable; trying an older one");
                    r.bad_ckpts.push((seq, why));
                    continue;
                }
                r.valid_ckpts.push(seq);
                loaded = Some((c.manifest, c.map));
            }
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                warn!(seq, error = %e, "checkpoint unusable; trying an older one");
                r.bad_ckpts.push((seq, e.to_string()));
            }
        }
    }
    r.valid_ckpts.sort_unstable();
    let (manifest, map) = loaded.ok_or_else(|| {
        let why = r.bad_ckpts.first().map_or_else(
            || "there is none".to_string(),
            |(s, w)| format!("checkpoint {s:016x}: {w}"),
        );
        Error::corrupt(
            format!("image in {}", store.describe()),
            format!("no usable checkpoint ({why})"),
        )
    })?;
    r.map = map;
    r.ckpt_seq = manifest.ckpt_seq;
    r.write_seq = manifest.last_write_seq;
    for s in &manifest.segments {
        if !stored_seqs.contains_key(&s.seq) {
            continue; // a zombie whose deletion finished, or an empty one
        }
        r.segs.insert(
            s.seq,
            SegInfo {
                data_blocks: s.data_blocks,
                live_blocks: s.live_blocks,
                durable: true,
                zombie: s.zombie.then_some(1),
            },
        );
    }
    r.leftovers = stored_seqs
        .range(..=r.ckpt_seq)
        .map(|(s, _)| *s)
        .filter(|s| !r.segs.contains_key(s))
        .collect();

    // Roll forward the contiguous prefix after the checkpoint.
    let mut next = manifest.ckpt_seq + 1;
    let mut removed: Vec<MapExtent> = Vec::new();
    while let Some(&entry) = stored_seqs.get(&next) {
        let mut obj = vec![0u8; entry as usize];
        if let Err(e) = store.read_segment(next, 0, &mut obj) {
            if e.is_transient() {
                return Err(e);
            }
            r.stop_reason = Some(e.to_string());
            break;
        }
        let hdr = match decode_object(Some(&sb.uuid), next, &obj) {
            Ok(h) => h,
            Err(e) => {
                warn!(seq = next, error = %e, "roll-forward stops at a bad segment");
                r.stop_reason = Some(e.to_string());
                break;
            }
        };
        apply_segment(&mut r, &hdr, &mut removed)?;
        r.rolled_forward.push(next);
        next += 1;
    }
    r.next_seq = next.max(manifest.next_seq);
    r.orphans = stored_seqs.range(next..).map(|(s, _)| *s).collect();
    if !r.rolled_forward.is_empty() || !r.orphans.is_empty() {
        info!(
            checkpoint = r.ckpt_seq,
            applied = r.rolled_forward.len(),
            orphans = r.orphans.len(),
            "recovery rolled forward"
        );
    }
    Ok(r)
}

/// Apply one verified segment's records to the map and the table.
pub(crate) fn apply_segment(
    r: &mut Recovered,
    hdr: &SegmentHeader,
    removed: &mut Vec<MapExtent>,
) -> Result<()> {
    let seq = hdr.seq;
    let offsets = hdr.data_offsets();
    let data_blocks = (hdr.data_len / 4096) as u32;
    r.segs.insert(
        seq,
        SegInfo {
            data_blocks,
            live_blocks: 0,
            durable: true,
            zombie: None,
        },
    );
    let mut live: i64 = 0;
    for (rec, off) in hdr.records.iter().zip(offsets) {
        removed.clear();
        match (rec.kind, off) {
            (RecordKind::Data, Some(off)) => {
                r.map
                    .insert(rec.lba, rec.len, Target { seq, off }, removed)?;
                live += rec.len as i64;
            }
            (RecordKind::GcCopy, Some(off)) => {
                let n = r.map.remap_if(
                    rec.lba,
                    rec.len,
                    Target {
                        seq: rec.src_seq,
                        off: rec.src_off,
                    },
                    Target { seq, off },
                    removed,
                )?;
                live += n as i64;
            }
            (RecordKind::Discard, _) => r.map.remove(rec.lba, rec.len as u64, removed),
            (_, None) => {
                return Err(Error::corrupt(
                    segment_name(seq),
                    "data record without data offset",
                ));
            }
        }
        for x in removed.iter() {
            if x.seq == seq {
                live -= x.len as i64;
            } else if let Some(s) = r.segs.get_mut(&x.seq) {
                s.live_blocks = s.live_blocks.saturating_sub(x.len);
            }
        }
    }
    if let Some(s) = r.segs.get_mut(&seq) {
        s.live_blocks = live.max(0) as u32;
    }
    if hdr.write_seq_last > r.write_seq {
        r.write_seq = hdr.write_seq_last;
    }
    Ok(())
}

/// After a successful open (not read-only): remove what recovery found
/// unusable, so new segments never collide with stale ones.
pub(crate) fn clean_after_recovery(store: &dyn SegmentStore, r: &Recovered) -> Result<()> {
    for &seq in r.orphans.iter().chain(r.leftovers.iter()) {
        warn!(seq, "removing segment outside the recovered log");
        store.delete_segment(seq)?;
    }
    for (seq, why) in &r.bad_ckpts {
        warn!(seq, reason = %why, "removing unusable checkpoint");
        delete_checkpoint(store, *seq)?;
    }
    Ok(())
}
