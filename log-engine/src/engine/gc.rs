//! Garbage collection: copy the live blocks of mostly-dead segments (object
//! stores) or zones (zoned stores) into a new GC segment, then let the
//! victims become zombies that the checkpoint rule deletes.
//!
//! Policy (greedy, measured against cost-benefit in the bench): a victim is
//! a durable segment covered by the last checkpoint whose live share is
//! below `threshold_pct`, least live first; on zoned stores the unit is the
//! zone (all its segments), and zones still open for appends are skipped.
//! Segments with no live block become zombies without copying.
//!
//! Safety: the copy is applied with `remap_if`, only to blocks that still
//! point at the victim, both live and on replay; so a GC segment never
//! shadows a newer client write whatever its sequence number.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{debug, info};

use super::state::{Batch, Counters, Inner, SegInfo};
use super::{GcPolicy, GcReport};
use crate::extent_map::{MapExtent, Piece, Target};
use crate::format::segment::{Record, RecordKind, SegmentKind};
use crate::store::Media;
use crate::Result;

/// One live run to copy out of a victim.
struct LiveRun {
    lba: u64,
    len: u32,
    src_seq: u64,
    src_off: u32,
}

impl Inner {
    /// Space the image may occupy before writers must wait for GC, in
    /// blocks: with greedy cleaning below T % live, stored <= live / T, plus
    /// slack for segments GC may not touch yet (open, pending, newer than the
    /// last checkpoint, zombies waiting for their two checkpoints).
    pub(crate) fn space_limit_blocks(&self) -> u64 {
        let t = self.opts.gc.threshold_pct.clamp(10, 95) as u64;
        self.sb.size / 4096 * 100 / t + 8 * self.seg_blocks() as u64
    }

    /// Writers call this first: when the image occupies more than
    /// [`Self::space_limit_blocks`], clean (inline, in the writer's thread)
    /// until it does not, or until GC can make no more progress. This is what
    /// keeps space bounded under endless overwrites, however fast the writer.
    pub(crate) fn gc_backpressure(&self) -> Result<()> {
        if !self.opts.gc.enabled {
            return Ok(());
        }
        let limit = self.space_limit_blocks();
        if self.state.lock().total_blocks <= limit {
            return Ok(());
        }
        let _m = self.maint_lock.lock();
        for _ in 0..8 {
            let before = self.state.lock().total_blocks;
            if before <= limit {
                break;
            }
            self.gc_locked()?;
            self.checkpoint_locked()?;
            if self.state.lock().total_blocks >= before {
                // Nothing freed this round (victims wait for checkpoints);
                // one more checkpoint ages the zombies.
                self.checkpoint_locked()?;
            }
        }
        Ok(())
    }

    /// One GC pass; returns what it did.
    pub(crate) fn gc_once(&self) -> Result<GcReport> {
        let _m = self.maint_lock.lock();
        self.gc_locked()
    }

    /// Utilization of stored segments: live / stored blocks (1.0 if empty).
    pub(crate) fn utilization(&self) -> f64 {
        let st = self.state.lock();
        let (live, total) = st
            .segs
            .values()
            .filter(|s| s.durable && s.zombie.is_none())
            .fold((0u64, 0u64), |(l, t), s| {
                (l + s.live_blocks as u64, t + s.data_blocks as u64)
            });
        if total == 0 {
            1.0
        } else {
            live as f64 / total as f64
        }
    }

    /// Victim rank under the configured policy: lower is cleaned first.
    fn rank(&self, live: u64, total: u64, age: u64) -> u64 {
        let u = live as f64 / total.max(1) as f64;
        match self.opts.gc.policy {
            GcPolicy::Greedy => (u * 1e6) as u64,
            GcPolicy::CostBenefit => {
                let benefit = (1.0 - u) * (age as f64 + 1.0) / (1.0 + u);
                (1e12 / (benefit + 1e-9)).min(u64::MAX as f64 / 2.0) as u64
            }
        }
    }

    fn choose_victims(&self, report: &mut GcReport) -> Vec<u64> {
        let threshold = self.opts.gc.threshold_pct as u64;
        let budget = self.seg_blocks() as u64 * 2;
        let mut st = self.state.lock();
        let last_ckpt = st.last_ckpt;
        // Fully dead segments: zombies at once, nothing to copy.
        for (&seq, s) in st.segs.range_mut(..=last_ckpt) {
            if s.durable && s.zombie.is_none() && s.live_blocks == 0 {
                s.zombie = Some(0);
                report.victims.push(seq);
            }
        }
        let eligible = |s: &SegInfo| s.durable && s.zombie.is_none() && s.data_blocks > 0;
        let mut victims = Vec::new();
        match self.store.media() {
            Media::Object => {
                let now = st.next_seq;
                let mut cands: Vec<(u64, u64, u64)> = st
                    .segs
                    .range(..=last_ckpt)
                    .filter(|(_, s)| eligible(s))
                    .filter(|(_, s)| {
                        (s.live_blocks as u64) * 100 < threshold * s.data_blocks as u64
                    })
                    .map(|(&seq, s)| {
                        (
                            self.rank(s.live_blocks as u64, s.data_blocks as u64, now - seq),
                            s.live_blocks as u64,
                            seq,
                        )
                    })
                    .collect();
                cands.sort_unstable();
                let mut copied = 0;
                for (_, live, seq) in cands {
                    if copied + live > budget && !victims.is_empty() {
                        break;
                    }
                    copied += live;
                    victims.push(seq);
                }
            }
            Media::Zoned => {
                let open = self.store.open_units();
                let mut units: BTreeMap<u32, (u64, u64, Vec<u64>, bool)> = BTreeMap::new();
                for (&seq, s) in st.segs.iter() {
                    let Some(u) = self.store.segment_unit(seq) else {
                        continue;
                    };
                    let e = units.entry(u).or_default();
                    e.2.push(seq);
                    // A unit qualifies only if every segment in it can be cleaned now.
                    if seq > last_ckpt || !s.durable {
                        e.3 = true;
                    }
                    if s.zombie.is_none() {
                        e.0 += s.live_blocks as u64;
                        e.1 += s.data_blocks as u64;
                    }
                }
                let mut best: Option<(u64, u32)> = None;
                let now = st.next_seq;
                for (u, (live, total, seqs, blocked)) in &units {
                    if *blocked || open.contains(u) || *total == 0 {
                        continue;
                    }
                    if live * 100 < threshold * total {
                        let newest = seqs.iter().max().copied().unwrap_or(now);
                        let rank = self.rank(*live, *total, now.saturating_sub(newest));
                        if best.is_none_or(|(r, _)| rank < r) {
                            best = Some((rank, *u));
                        }
                    }
                }
                if let Some((_, u)) = best {
                    if let Some((_, _, seqs, _)) = units.remove(&u) {
                        victims = seqs
                            .into_iter()
                            .filter(|s| {
                                st.segs
                                    .get(s)
                                    .is_some_and(|i| i.durable && i.zombie.is_none())
                            })
                            .collect();
                    }
                }
            }
        }
        victims
    }

    pub(crate) fn gc_locked(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        if self.opts.read_only {
            return Ok(report);
        }
        let victims = self.choose_victims(&mut report);
        Counters::add(&self.counters.gc_runs, 1);
        if victims.is_empty() {
            return Ok(report);
        }

        // Find the live runs of each victim: walk its records and keep the
        // map pieces that still point at the record's own data.
        let mut runs: Vec<LiveRun> = Vec::new();
        {
            let _gate = self.gc_gate.read();
            for &v in &victims {
                let hdr = self.segment_header(v)?;
                let offsets = hdr.data_offsets();
                let st = self.state.lock();
                for (rec, off) in hdr.records.iter().zip(offsets) {
                    let Some(off) = off else { continue };
                    for p in st.map.lookup(rec.lba, rec.len as u64) {
                        if let Piece {
                            lba,
                            len,
                            target: Some(t),
                        } = p
                        {
                            let want = off as u64 + (lba - rec.lba);
                            if t.seq == v && t.off as u64 == want {
                                runs.push(LiveRun {
                                    lba,
                                    len,
                                    src_seq: v,
                                    src_off: t.off,
                                });
                            }
                        }
                    }
                }
            }
        }

        // Copy them, in segment-sized GC batches.
        let seg_bytes = self.sb.segment_size as usize;
        let mut i = 0;
        while i < runs.len() {
            let mut records = Vec::new();
            let mut data: Vec<u8> = Vec::new();
            {
                let _gate = self.gc_gate.read();
                while i < runs.len() {
                    let r = &runs[i];
                    let bytes = r.len as usize * 4096;
                    if !data.is_empty() && data.len() + bytes > seg_bytes {
                        break;
                    }
                    let at = data.len();
                    data.resize(at + bytes, 0);
                    self.read_segment_data(r.src_seq, r.src_off as u64 * 4096, &mut data[at..])?;
                    records.push(Record {
                        lba: r.lba,
                        len: r.len,
                        kind: RecordKind::GcCopy,
                        src_seq: r.src_seq,
                        src_off: r.src_off,
                    });
                    i += 1;
                }
            }
            let copied = self.commit_gc_batch(records, data)?;
            report.blocks_copied += copied;
        }

        // Victims now hold no live block: they become zombies.
        let mut st = self.state.lock();
        for &v in &victims {
            if let Some(s) = st.segs.get_mut(&v) {
                if s.live_blocks == 0 {
                    s.zombie = Some(0);
                    report.victims.push(v);
                } else {
                    debug!(
                        seq = v,
                        live = s.live_blocks,
                        "victim still live after copy; kept"
                    );
                }
            }
        }
        drop(st);
        Counters::add(&self.counters.gc_bytes_copied, report.blocks_copied * 4096);
        info!(
            victims = report.victims.len(),
            blocks = report.blocks_copied,
            "gc pass"
        );
        Ok(report)
    }

    /// Give a GC batch a seq, apply it conditionally, queue its upload.
    fn commit_gc_batch(&self, records: Vec<Record>, data: Vec<u8>) -> Result<u64> {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let mut removed: Vec<MapExtent> = Vec::new();
        let mut live = 0u64;
        let mut off = 0u32;
        for r in &records {
            removed.clear();
            live += st.map.remap_if(
                r.lba,
                r.len,
                Target {
                    seq: r.src_seq,
                    off: r.src_off,
                },
                Target { seq, off },
                &mut removed,
            )?;
            st.account_removed(&removed);
            off += r.len;
        }
        st.total_blocks += off as u64;
        st.segs.insert(
            seq,
            SegInfo {
                data_blocks: off,
                live_blocks: live as u32,
                durable: false,
                zombie: None,
            },
        );
        let b = Arc::new(Batch {
            seq,
            kind: SegmentKind::Gc,
            records,
            data,
            write_seq: (0, 0),
        });
        st.pending_bytes += b.data.len() as u64;
        st.pending.insert(seq, b.clone());
        drop(st);
        let _ = self.upload_tx.send(Some(b));
        Ok(live)
    }
}
