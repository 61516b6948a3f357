//! The extent map: LBA ranges -> (segment seq, block offset in segment data).
//!
//! # Model
//!
//! The map is a set of extents `[lba, lba + len) -> (seq, seg_off)`: block
//! `lba + i` lives at block `seg_off + i` of segment `seq`'s logical data.
//! Blocks not covered by any extent are unmapped and read as zeros.
//!
//! # Invariants
//!
//! - Extents are sorted by `lba` and never overlap.
//! - No extent has `len == 0`.
//! - Limits of the packed representation, checked on every input (violations
//!   are [`Error::InvalidArgument`] for calls and [`Error::Corrupt`] for
//!   [`ExtentMap::from_sorted`], never a panic or a silent truncation):
//!   every block of an extent has `lba < 2^40` (so `lba + len <= 2^40`),
//!   `1 <= len < 2^24`, `seq < 2^48`, and every block's segment offset is
//!   `< 2^16` (so `seg_off + len <= 2^16`; 2^16 blocks = 256 MiB, the largest
//!   segment).
//! - An inserted extent is merged with each neighbour that continues it (same
//!   seq, contiguous lba and offset), on both sides. Since removals only ever
//!   shorten or delete extents, a map built by [`ExtentMap::insert`],
//!   [`ExtentMap::remove`], [`ExtentMap::remap_if`] and
//!   [`ExtentMap::from_sorted`] never holds two adjacent extents that continue
//!   each other. Callers must not rely on that for correctness, only for size.
//! - Every mutation reports each mapped block it overwrote or unmapped exactly
//!   once, in `removed`, with that block's *old* target; the engine uses this
//!   to keep per-segment live counts exact.
//!
//! # Layout and cost
//!
//! Each extent is packed into 16 bytes (`lba:40|len:24`, `seq:48|off:16`).
//! Extents live in a two-level structure: a `Vec` of sorted chunks (each a
//! `Vec` of at most [`CHUNK_MAX`] entries) and a `Vec` of each chunk's first
//! lba, binary-searched to find a chunk. A chunk splits in two when it
//! overflows and merges with (or borrows from) a neighbour when it falls below
//! a quarter full. Chunk capacity is managed explicitly: it grows by
//! `clamp(len / 8, 4, 64)` entries at a time and is trimmed when it exceeds
//! the length by more than twice that, so the heap cost stays around
//! 16 * 1.125 bytes per extent plus ~32 bytes per chunk, i.e. under 24 bytes
//! per extent for large maps (see [`ExtentMap::heap_bytes`]).
//!
//! Lookups cost two binary searches (`O(log n)`); a mutation touching `k`
//! extents costs `O(log n + CHUNK_MAX + k)`.

use std::collections::HashMap;
use std::fmt;

use crate::error::{Error, Result};

/// Exclusive upper bound of a block address (and of `lba + len`).
pub const LBA_LIMIT: u64 = 1 << 40;
/// Exclusive upper bound of an extent length in blocks.
pub const LEN_LIMIT: u64 = 1 << 24;
/// Exclusive upper bound of a segment sequence number.
pub const SEQ_LIMIT: u64 = 1 << 48;
/// Exclusive upper bound of a block offset in a segment's data (and
/// `seg_off + len <= OFF_LIMIT`).
pub const OFF_LIMIT: u64 = 1 << 16;
/// Maximum number of extents in one chunk of the default map.
pub const CHUNK_MAX: usize = 512;

/// One extent of the map (also the checkpoint record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapExtent {
    /// First block.
    pub lba: u64,
    /// Length in blocks.
    pub len: u32,
    /// Block offset of `lba` in the segment's logical data.
    pub seg_off: u32,
    /// Segment sequence number.
    pub seq: u64,
}

/// Where a block lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub seq: u64,
    /// Block offset in the segment's logical data.
    pub off: u32,
}

/// One piece of a lookup: a mapped run or a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub lba: u64,
    pub len: u32,
    /// `None` = unmapped (reads as zeros).
    pub target: Option<Target>,
}

/// A packed extent: `a = lba << 24 | len`, `b = seq << 16 | off`.
///
/// Only built from values already checked against the limits.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Entry {
    a: u64,
    b: u64,
}

impl Entry {
    fn new(lba: u64, len: u64, seq: u64, off: u64) -> Entry {
        debug_assert!((1..LEN_LIMIT).contains(&len) && lba + len <= LBA_LIMIT);
        debug_assert!(seq < SEQ_LIMIT && off + len <= OFF_LIMIT);
        Entry {
            a: (lba << 24) | len,
            b: (seq << 16) | off,
        }
    }

    fn lba(self) -> u64 {
        self.a >> 24
    }

    fn len(self) -> u64 {
        self.a & (LEN_LIMIT - 1)
    }

    fn end(self) -> u64 {
        self.lba() + self.len()
    }

    fn seq(self) -> u64 {
        self.b >> 16
    }

    fn off(self) -> u64 {
        self.b & (OFF_LIMIT - 1)
    }

    /// Segment offset of block `lba` (which must lie in this extent).
    fn off_at(self, lba: u64) -> u64 {
        self.off() + (lba - self.lba())
    }

    /// The part of this extent inside `[lo, hi)`; the caller guarantees it is
    /// not empty.
    fn clip(self, lo: u64, hi: u64) -> Entry {
        let s = self.lba().max(lo);
        let e = self.end().min(hi);
        debug_assert!(s < e);
        Entry::new(s, e - s, self.seq(), self.off_at(s))
    }

    fn to_extent(self) -> MapExtent {
        // len < 2^24 and off < 2^16: both fit in u32.
        MapExtent {
            lba: self.lba(),
            len: self.len() as u32,
            seg_off: self.off() as u32,
            seq: self.seq(),
        }
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}+{} -> {}:{}]",
            self.lba(),
            self.len(),
            self.seq(),
            self.off()
        )
    }
}

/// How many entries a chunk of length `len` grows by when it is full.
fn growth(len: usize) -> usize {
    (len / 8).clamp(4, 64)
}

/// Make room for `additional` more entries, growing by the map's own policy
/// (never by doubling).
fn reserve(chunk: &mut Vec<Entry>, additional: usize) {
    if chunk.capacity() - chunk.len() < additional {
        let want = additional + growth(chunk.len() + additional);
        chunk.reserve_exact(want);
    }
}

/// Give back capacity that is far beyond the policy's slack.
fn trim(chunk: &mut Vec<Entry>) {
    let g = growth(chunk.len());
    if chunk.capacity() > chunk.len() + 2 * g {
        chunk.shrink_to(chunk.len() + g);
    }
}

fn check_range(lba: u64, len: u64) -> Result<()> {
    if len == 0 || len >= LEN_LIMIT {
        return Err(Error::InvalidArgument(format!(
            "extent map: length {len} blocks at lba {lba} is outside 1..2^24"
        )));
    }
    if lba >= LBA_LIMIT || lba + len > LBA_LIMIT {
        return Err(Error::InvalidArgument(format!(
            "extent map: blocks {lba}+{len} reach past the 2^40-block limit"
        )));
    }
    Ok(())
}

fn check_target(what: &str, t: Target, len: u64) -> Result<()> {
    if t.seq >= SEQ_LIMIT {
        return Err(Error::InvalidArgument(format!(
            "extent map: {what} segment seq {} is not below 2^48",
            t.seq
        )));
    }
    if u64::from(t.off) + len > OFF_LIMIT {
        return Err(Error::InvalidArgument(format!(
            "extent map: {what} segment offset {}+{len} blocks reaches past 2^16",
            t.off
        )));
    }
    Ok(())
}

/// Push hole pieces covering `[lo, hi)` (split at `u32::MAX` blocks).
fn push_hole(out: &mut Vec<Piece>, mut lo: u64, hi: u64) {
    while lo < hi {
        let n = (hi - lo).min(u64::from(u32::MAX));
        out.push(Piece {
            lba: lo,
            len: n as u32,
            target: None,
        });
        lo += n;
    }
}

/// The extent map. See the module docs for invariants and costs.
#[derive(Clone)]
pub struct ExtentMap {
    /// Sorted, non-empty chunks of sorted entries.
    chunks: Vec<Vec<Entry>>,
    /// `firsts[k] == chunks[k][0].lba()`.
    firsts: Vec<u64>,
    /// Number of extents.
    n_extents: usize,
    /// Number of mapped blocks.
    n_blocks: u64,
    /// Split threshold of a chunk (`CHUNK_MAX` except in tests).
    chunk_max: usize,
}

impl Default for ExtentMap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ExtentMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtentMap")
            .field("extents", &self.n_extents)
            .field("blocks", &self.n_blocks)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

/// Two maps are equal when they hold the same extents (the chunk layout does
/// not matter).
impl PartialEq for ExtentMap {
    fn eq(&self, other: &Self) -> bool {
        self.n_extents == other.n_extents
            && self.n_blocks == other.n_blocks
            && self.iter().eq(other.iter())
    }
}

impl Eq for ExtentMap {}

impl ExtentMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::with_chunk_max(CHUNK_MAX)
    }

    /// An empty map whose chunks split above `chunk_max` entries (at least 4).
    /// Small values exercise the chunk logic in tests.
    pub(crate) fn with_chunk_max(chunk_max: usize) -> Self {
        ExtentMap {
            chunks: Vec::new(),
            firsts: Vec::new(),
            n_extents: 0,
            n_blocks: 0,
            chunk_max: chunk_max.max(4),
        }
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.n_extents
    }

    /// True when no block is mapped.
    pub fn is_empty(&self) -> bool {
        self.n_extents == 0
    }

    /// Number of mapped blocks.
    pub fn blocks_mapped(&self) -> u64 {
        self.n_blocks
    }

    /// Heap bytes held by the map, computed from capacities.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Vec<Entry>>()
            + self.firsts.capacity() * std::mem::size_of::<u64>()
            + self
                .chunks
                .iter()
                .map(|c| c.capacity() * std::mem::size_of::<Entry>())
                .sum::<usize>()
    }

    /// Extents in lba order.
    pub fn iter(&self) -> impl Iterator<Item = MapExtent> + '_ {
        self.chunks.iter().flatten().map(|e| e.to_extent())
    }

    /// Extents overlapping `[lba, lba + len)`, clipped to it, in lba order.
    /// `lba + len` saturates at `u64::MAX`.
    pub fn iter_range(&self, lba: u64, len: u64) -> impl Iterator<Item = MapExtent> + '_ {
        let end = lba.saturating_add(len);
        let (k, j) = self.first_ending_after(lba);
        self.chunks
            .get(k..)
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .flat_map(move |(i, c)| c.get(if i == 0 { j } else { 0 }..).unwrap_or(&[]))
            .take_while(move |e| e.lba() < end)
            .map(move |e| e.clip(lba, end).to_extent())
    }

    /// Map of segment seq -> number of blocks the map points into it.
    pub fn live_blocks_by_seq(&self) -> HashMap<u64, u64> {
        let mut m = HashMap::new();
        for e in self.chunks.iter().flatten() {
            *m.entry(e.seq()).or_insert(0) += e.len();
        }
        m
    }

    /// The pieces covering exactly `[lba, lba + len)` in order: one piece per
    /// extent overlapping the range (clipped to it), holes as `target: None`
    /// (holes longer than `u32::MAX` blocks come as several pieces).
    /// `lba + len` saturates at `u64::MAX`.
    pub fn lookup(&self, lba: u64, len: u64) -> Vec<Piece> {
        let mut out = Vec::new();
        self.lookup_into(lba, len, &mut out);
        out
    }

    /// Like [`ExtentMap::lookup`], into `out` (cleared first).
    pub fn lookup_into(&self, lba: u64, len: u64, out: &mut Vec<Piece>) {
        out.clear();
        if len == 0 {
            return;
        }
        let end = lba.saturating_add(len);
        let mut cur = lba;
        let (mut k, mut j) = self.first_ending_after(lba);
        'chunks: while let Some(chunk) = self.chunks.get(k) {
            for &e in chunk.get(j..).unwrap_or(&[]) {
                if e.lba() >= end {
                    break 'chunks;
                }
                if e.lba() > cur {
                    push_hole(out, cur, e.lba());
                }
                let s = e.lba().max(cur);
                let t = e.end().min(end);
                out.push(Piece {
                    lba: s,
                    len: (t - s) as u32,
                    target: Some(Target {
                        seq: e.seq(),
                        off: e.off_at(s) as u32,
                    }),
                });
                cur = t;
            }
            k += 1;
            j = 0;
        }
        push_hole(out, cur, end);
    }

    /// Map `[lba, lba + len)` to `target` (block `lba + i` to offset
    /// `target.off + i`), trimming or splitting the extents it overlaps. Every
    /// mapped block overwritten is pushed to `removed` with its old target
    /// (one [`MapExtent`] per old extent touched).
    pub fn insert(
        &mut self,
        lba: u64,
        len: u32,
        target: Target,
        removed: &mut Vec<MapExtent>,
    ) -> Result<()> {
        let len = u64::from(len);
        check_range(lba, len)?;
        check_target("target", target, len)?;
        self.replace_range(lba, lba + len, Some(target), removed);
        Ok(())
    }

    /// Unmap `[lba, lba + len)` (discard); unmapped blocks are pushed to
    /// `removed` with their old targets. Blocks at or past 2^40 are never
    /// mapped, so the range is clipped there.
    pub fn remove(&mut self, lba: u64, len: u64, removed: &mut Vec<MapExtent>) {
        if len == 0 || lba >= LBA_LIMIT {
            return;
        }
        let hi = lba.saturating_add(len).min(LBA_LIMIT);
        self.replace_range(lba, hi, None, removed);
    }

    /// The GC conditional update: each block `lba + i` currently mapped to
    /// `(expect.seq, expect.off + i)` is remapped to `(new.seq, new.off + i)`;
    /// blocks mapped elsewhere or unmapped are left alone. Returns the number
    /// of blocks remapped; their old targets are pushed to `removed`. `expect`
    /// and `new` must both satisfy the limits for `len` blocks.
    pub fn remap_if(
        &mut self,
        lba: u64,
        len: u32,
        expect: Target,
        new: Target,
        removed: &mut Vec<MapExtent>,
    ) -> Result<u64> {
        let len = u64::from(len);
        check_range(lba, len)?;
        check_target("expected", expect, len)?;
        check_target("new", new, len)?;
        let pieces = self.lookup(lba, len);
        let mut n = 0;
        for p in pieces {
            let Some(t) = p.target else { continue };
            let i = p.lba - lba;
            if t.seq == expect.seq && u64::from(t.off) == u64::from(expect.off) + i {
                let to = Target {
                    seq: new.seq,
                    // new.off + i + p.len <= 2^16: checked above.
                    off: new.off + i as u32,
                };
                self.replace_range(p.lba, p.lba + u64::from(p.len), Some(to), removed);
                n += u64::from(p.len);
            }
        }
        Ok(n)
    }

    /// Bulk load from extents sorted by lba (a checkpoint). Adjacent extents
    /// that continue each other are merged. Fails with [`Error::Corrupt`] on
    /// unsorted, overlapping or zero-length extents and on values outside the
    /// limits, naming the offending extent's index.
    pub fn from_sorted(extents: impl IntoIterator<Item = MapExtent>) -> Result<Self> {
        Self::from_sorted_with_chunk_max(extents, CHUNK_MAX)
    }

    pub(crate) fn from_sorted_with_chunk_max(
        extents: impl IntoIterator<Item = MapExtent>,
        chunk_max: usize,
    ) -> Result<Self> {
        let mut map = Self::with_chunk_max(chunk_max);
        let load = (map.chunk_max * 3 / 4).max(1);
        let bad = |i: usize, x: &MapExtent, detail: &str| {
            Error::corrupt(
                "extent map records",
                format!(
                    "extent #{i} (lba {} len {} seq {} seg_off {}): {detail}",
                    x.lba, x.len, x.seq, x.seg_off
                ),
            )
        };
        let mut chunk: Vec<Entry> = Vec::new();
        let mut pending: Option<Entry> = None;
        for (i, x) in extents.into_iter().enumerate() {
            let len = u64::from(x.len);
            if len == 0 {
                return Err(bad(i, &x, "zero length"));
            }
            if len >= LEN_LIMIT {
                return Err(bad(i, &x, "length not below 2^24"));
            }
            if x.lba >= LBA_LIMIT || x.lba + len > LBA_LIMIT {
                return Err(bad(i, &x, "reaches past block 2^40"));
            }
            if x.seq >= SEQ_LIMIT {
                return Err(bad(i, &x, "seq not below 2^48"));
            }
            if u64::from(x.seg_off) + len > OFF_LIMIT {
                return Err(bad(i, &x, "segment offset reaches past 2^16"));
            }
            let e = Entry::new(x.lba, len, x.seq, u64::from(x.seg_off));
            if let Some(p) = pending {
                if x.lba < p.end() {
                    return Err(bad(
                        i,
                        &x,
                        &format!("not after the previous extent ending at {}", p.end()),
                    ));
                }
                if x.lba == p.end()
                    && x.seq == p.seq()
                    && u64::from(x.seg_off) == p.off() + p.len()
                    && p.len() + len < LEN_LIMIT
                {
                    pending = Some(Entry::new(p.lba(), p.len() + len, p.seq(), p.off()));
                    continue;
                }
                if chunk.is_empty() {
                    chunk.reserve_exact(load);
                }
                chunk.push(p);
                if chunk.len() == load {
                    map.push_chunk(std::mem::take(&mut chunk));
                }
            }
            pending = Some(e);
        }
        if let Some(p) = pending {
            chunk.push(p);
        }
        if !chunk.is_empty() {
            chunk.shrink_to_fit();
            map.push_chunk(chunk);
        }
        Ok(map)
    }

    /// Check every structural invariant (for tests and fsck). Cost `O(n)`.
    pub fn validate(&self) -> Result<()> {
        let bad = |d: String| Error::corrupt("in-memory extent map", d);
        if self.chunks.len() != self.firsts.len() {
            return Err(bad("chunk index length mismatch".into()));
        }
        let mut prev_end = 0u64;
        let mut n = 0usize;
        let mut blocks = 0u64;
        for (k, c) in self.chunks.iter().enumerate() {
            let Some(first) = c.first() else {
                return Err(bad(format!("chunk {k} is empty")));
            };
            if self.firsts[k] != first.lba() {
                return Err(bad(format!("chunk {k} index says {}", self.firsts[k])));
            }
            if c.len() > self.chunk_max {
                return Err(bad(format!("chunk {k} has {} entries", c.len())));
            }
            for e in c {
                if e.len() == 0 || e.end() > LBA_LIMIT || e.off() + e.len() > OFF_LIMIT {
                    return Err(bad(format!("bad extent {e:?}")));
                }
                if n > 0 && e.lba() < prev_end {
                    return Err(bad(format!("extent {e:?} overlaps or is unsorted")));
                }
                prev_end = e.end();
                n += 1;
                blocks += e.len();
            }
        }
        if n != self.n_extents || blocks != self.n_blocks {
            return Err(bad(format!(
                "counters say {} extents {} blocks, found {n} and {blocks}",
                self.n_extents, self.n_blocks
            )));
        }
        Ok(())
    }

    // ---- internals ----

    fn push_chunk(&mut self, chunk: Vec<Entry>) {
        if let Some(first) = chunk.first() {
            self.firsts.push(first.lba());
            self.n_extents += chunk.len();
            self.n_blocks += chunk.iter().map(|e| e.len()).sum::<u64>();
            self.chunks.push(chunk);
        }
    }

    /// Index of the chunk that would hold `lba` (0 when before all chunks).
    fn find_chunk(&self, lba: u64) -> usize {
        self.firsts.partition_point(|&f| f <= lba).saturating_sub(1)
    }

    /// `(chunk, index)` of the first entry ending after `lba`, within the
    /// chunk that would hold `lba`; the index may equal the chunk's length.
    fn first_ending_after(&self, lba: u64) -> (usize, usize) {
        let k = self.find_chunk(lba);
        let j = self
            .chunks
            .get(k)
            .map_or(0, |c| c.partition_point(|e| e.end() <= lba));
        (k, j)
    }

    fn entry_containing(&self, lba: u64) -> Option<Entry> {
        let (k, j) = self.first_ending_after(lba);
        let e = *self.chunks.get(k)?.get(j)?;
        (e.lba() <= lba).then_some(e)
    }

    /// Replace `[lo, hi)` by nothing (`new == None`) or by one extent mapping
    /// it to `new`, pushing the old mapped pieces of `[lo, hi)` to `removed`.
    /// The new extent absorbs neighbours that continue it. Callers have
    /// checked the limits; `lo < hi <= LBA_LIMIT`.
    fn replace_range(
        &mut self,
        lo: u64,
        hi: u64,
        new: Option<Target>,
        removed: &mut Vec<MapExtent>,
    ) {
        debug_assert!(lo < hi && hi <= LBA_LIMIT);
        // The structural range [slo, shi) grows over neighbours the new
        // extent continues; their blocks keep the same target, so they are
        // not reported as removed.
        let mut slo = lo;
        let mut shi = hi;
        let mut new_entry = None;
        if let Some(t) = new {
            let toff = u64::from(t.off);
            let mut off0 = toff;
            if lo > 0 {
                if let Some(p) = self.entry_containing(lo - 1) {
                    if p.seq() == t.seq && p.off_at(lo - 1) + 1 == toff && hi - p.lba() < LEN_LIMIT
                    {
                        slo = p.lba();
                        off0 = p.off();
                    }
                }
            }
            if let Some(s) = self.entry_containing(hi) {
                if s.seq() == t.seq && s.off_at(hi) == toff + (hi - lo) && s.end() - slo < LEN_LIMIT
                {
                    shi = s.end();
                }
            }
            new_entry = Some(Entry::new(slo, shi - slo, t.seq, off0));
        }

        if self.chunks.is_empty() {
            if let Some(e) = new_entry {
                let mut c = Vec::with_capacity(growth(0));
                c.push(e);
                self.push_chunk(c);
            }
            return;
        }

        let (ci, j0) = self.first_ending_after(slo);
        let mut k = ci;
        let mut start = j0;
        loop {
            let chunk = &mut self.chunks[k];
            let old_len = chunk.len();
            let stop = start + chunk[start..].partition_point(|e| e.lba() < shi);
            let mut repl: [Option<Entry>; 3] = [None, None, None];
            if start < stop {
                let first = chunk[start];
                let last = chunk[stop - 1];
                for &e in &chunk[start..stop] {
                    let a = e.lba().max(lo);
                    let b = e.end().min(hi);
                    if a < b {
                        removed.push(e.clip(a, b).to_extent());
                    }
                    self.n_extents -= 1;
                    self.n_blocks -= e.len();
                }
                if first.lba() < slo {
                    repl[0] = Some(first.clip(first.lba(), slo));
                }
                if last.end() > shi {
                    repl[2] = Some(last.clip(shi, last.end()));
                }
            }
            if k == ci {
                repl[1] = new_entry;
            }
            let added = repl.iter().flatten().count();
            for e in repl.iter().flatten() {
                self.n_extents += 1;
                self.n_blocks += e.len();
            }
            if added > stop - start {
                reserve(chunk, added - (stop - start));
            }
            chunk.splice(start..stop, repl.into_iter().flatten());
            let next_overlaps = stop == old_len
                && self
                    .chunks
                    .get(k + 1)
                    .and_then(|c| c.first())
                    .is_some_and(|e| e.lba() < shi);
            if !next_overlaps {
                break;
            }
            k += 1;
            start = 0;
        }
        self.fixup(ci, k);
    }

    /// Restore the chunk invariants after chunks `ci..=ck` were edited: drop
    /// empty chunks, refresh the first-lba index, split oversized chunks and
    /// merge or rebalance undersized ones.
    fn fixup(&mut self, ci: usize, ck: usize) {
        let survivors = if self.chunks[ci..=ck].iter().any(|c| c.is_empty()) {
            let kept: Vec<Vec<Entry>> = self
                .chunks
                .drain(ci..=ck)
                .filter(|c| !c.is_empty())
                .collect();
            let n = kept.len();
            self.firsts.splice(ci..=ck, kept.iter().map(|c| c[0].lba()));
            self.chunks.splice(ci..ci, kept);
            n
        } else {
            for k in ci..=ck {
                self.firsts[k] = self.chunks[k][0].lba();
            }
            ck - ci + 1
        };
        for k in (ci..ci + survivors).rev() {
            self.fix_chunk(k);
        }
    }

    /// Split chunk `k` if oversized; merge it with, or balance it against, a
    /// neighbour if under a quarter full; trim spare capacity.
    fn fix_chunk(&mut self, k: usize) {
        let Some(len) = self.chunks.get(k).map(|c| c.len()) else {
            return;
        };
        let max = self.chunk_max;
        if len > max {
            let chunk = &mut self.chunks[k];
            let right = chunk.split_off(len / 2);
            trim(chunk);
            self.firsts.insert(k + 1, right[0].lba());
            self.chunks.insert(k + 1, right);
            return;
        }
        if len >= max / 4 || self.chunks.len() < 2 {
            trim(&mut self.chunks[k]);
            return;
        }
        let (l, r) = if k > 0 { (k - 1, k) } else { (k, k + 1) };
        let (a, b) = self.chunks.split_at_mut(r);
        let (left, right) = (&mut a[l], &mut b[0]);
        let total = left.len() + right.len();
        if total <= max {
            reserve(left, right.len());
            left.append(right);
            trim(left);
            self.chunks.remove(r);
            self.firsts.remove(r);
        } else {
            let want_left = total / 2;
            if left.len() > want_left {
                let tail = left.split_off(want_left);
                reserve(right, tail.len());
                right.splice(0..0, tail);
            } else {
                let n = want_left - left.len();
                reserve(left, n);
                left.extend(right.drain(..n));
            }
            trim(left);
            trim(right);
            self.firsts[r] = right[0].lba();
        }
    }
}

#[cfg(test)]
mod tests;
