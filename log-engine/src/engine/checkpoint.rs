//! Checkpoints: the extent map and the segment table at a segment boundary.
//!
//! Writing: under the state lock, seal the open batch and take a snapshot
//! of the map and table at `C` = the last assigned seq (so the snapshot is
//! exactly "all segments <= C applied"); wait until every segment <= C is
//! durable; write the map parts, then the manifest (which makes the
//! checkpoint exist). The two newest checkpoints are kept: if the newest is
//! lost or corrupt, recovery falls back to the previous one and rolls
//! forward from there, losing nothing.
//!
//! Deletion rule: a segment that became unreferenced (a zombie) is deleted
//! only after two checkpoints were written since, so neither kept checkpoint
//! can reference it and no roll-forward needs it.

use std::sync::atomic::Ordering;

use tracing::{debug, info, warn};

use super::state::{Counters, Inner};
use crate::extent_map::{ExtentMap, MapExtent};
use crate::format::checkpoint::{
    decode_part, encode_part, manifest_name, parse_manifest_name, part_name, Manifest, PartEntry,
    SegmentStat, PART_MAX_EXTENTS,
};
use crate::store::SegmentStore;
use crate::{Error, Result};

impl Inner {
    /// Write a checkpoint now (seals the open batch).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let _m = self.maint_lock.lock();
        self.checkpoint_locked()
    }

    /// Checkpoint with `maint_lock` already held.
    pub(crate) fn checkpoint_locked(&self) -> Result<()> {
        let mut st = self.state.lock();
        if self.opts.read_only {
            return Ok(());
        }
        self.seal(&mut st);
        let c = st.last_assigned();
        if c == st.last_ckpt && st.segs_since_ckpt == 0 {
            return Ok(());
        }
        let extents: Vec<MapExtent> = st.map.iter().collect();
        let segments: Vec<SegmentStat> = st
            .segs
            .range(..=c)
            .map(|(&seq, s)| SegmentStat {
                seq,
                data_blocks: s.data_blocks,
                live_blocks: s.live_blocks,
                zombie: s.zombie.is_some(),
                unit: self.store.segment_unit(seq),
            })
            .collect();
        // Only zombies already unreferenced in this snapshot age with it.
        let zombies: Vec<u64> = segments
            .iter()
            .filter(|s| s.zombie)
            .map(|s| s.seq)
            .collect();
        let last_write_seq = st.write_seq;
        self.wait_durable(st, c)?;

        let uuid = self.sb.uuid;
        let mut parts = Vec::new();
        for (k, chunk) in extents.chunks(PART_MAX_EXTENTS).enumerate() {
            let blob = encode_part(&uuid, c, k as u32, chunk);
            self.store.put_meta(&part_name(c, k as u32), &blob)?;
            parts.push(PartEntry::of(chunk, &blob));
        }
        let manifest = Manifest {
            uuid,
            ckpt_seq: c,
            next_seq: c + 1,
            last_write_seq,
            parts,
            segments,
        };
        self.store.put_meta(&manifest_name(c), &manifest.encode())?;
        Counters::add(&self.counters.checkpoints, 1);
        info!(seq = c, extents = extents.len(), "checkpoint written");

        // Bookkeeping: kept checkpoints, zombie ages.
        let (old_ckpts, doomed) = {
            let mut st = self.state.lock();
            st.last_ckpt = c;
            st.segs_since_ckpt = st.last_assigned().saturating_sub(c) as u32;
            st.kept_ckpts.push(c);
            let n_old = st.kept_ckpts.len().saturating_sub(2);
            let old: Vec<u64> = st.kept_ckpts.drain(..n_old).collect();
            let mut doomed = Vec::new();
            for seq in zombies {
                if let Some(age) = st.segs.get_mut(&seq).and_then(|s| s.zombie.as_mut()) {
                    *age = age.saturating_add(1);
                    if *age >= 2 {
                        doomed.push(seq);
                    }
                }
            }
            (old, doomed)
        };
        for old in old_ckpts {
            if let Err(e) = delete_checkpoint(&*self.store, old) {
                warn!(seq = old, error = %e, "cannot delete old checkpoint");
            }
        }
        self.delete_segments(&doomed);
        Ok(())
    }

    /// Delete zombie segments (no reader can be inside them: gate held).
    pub(crate) fn delete_segments(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let _gate = self.gc_gate.write();
        for &seq in seqs {
            match self.store.delete_segment(seq) {
                Ok(()) => {
                    let mut st = self.state.lock();
                    if let Some(s) = st.segs.remove(&seq) {
                        st.total_blocks -= s.data_blocks as u64;
                    }
                    drop(st);
                    self.headers.lock().remove(seq);
                    self.counters
                        .segments_deleted
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(seq, "segment deleted");
                }
                Err(e) => warn!(seq, error = %e, "cannot delete segment; will retry"),
            }
        }
    }
}

/// Delete a checkpoint: manifest first (so it stops existing), then parts.
pub(crate) fn delete_checkpoint(store: &dyn SegmentStore, seq: u64) -> Result<()> {
    store.delete_meta(&manifest_name(seq))?;
    let prefix = format!("{}.", manifest_name(seq));
    for name in store.list_meta()? {
        if name.starts_with(&prefix) {
            store.delete_meta(&name)?;
        }
    }
    Ok(())
}

/// A checkpoint loaded from the store.
pub(crate) struct LoadedCheckpoint {
    pub manifest: Manifest,
    pub map: ExtentMap,
}

/// Checkpoint seqs in the store, newest first.
pub(crate) fn list_checkpoints(store: &dyn SegmentStore) -> Result<Vec<u64>> {
    let mut v: Vec<u64> = store
        .list_meta()?
        .iter()
        .filter_map(|n| parse_manifest_name(n))
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    Ok(v)
}

/// Load and verify checkpoint `seq` (manifest and every part).
pub(crate) fn load_checkpoint(
    store: &dyn SegmentStore,
    uuid: &[u8; 16],
    seq: u64,
) -> Result<LoadedCheckpoint> {
    let name = manifest_name(seq);
    let bytes = store
        .get_meta(&name)?
        .ok_or_else(|| Error::NotFound(format!("checkpoint {name}")))?;
    let manifest = Manifest::decode(uuid, seq, &bytes)?;
    let mut extents = Vec::new();
    for (k, entry) in manifest.parts.iter().enumerate() {
        let pname = part_name(seq, k as u32);
        let blob = store.get_meta(&pname)?.ok_or_else(|| {
            Error::corrupt(
                format!("checkpoint {name}"),
                format!("part {pname} is missing"),
            )
        })?;
        extents.extend(decode_part(uuid, seq, k as u32, entry, &blob)?);
    }
    let map = ExtentMap::from_sorted(extents)
        .map_err(|e| Error::corrupt(format!("checkpoint {name}"), e.to_string()))?;
    Ok(LoadedCheckpoint { manifest, map })
}
