//! The extent map: LBA ranges -> (segment seq, block offset in segment data).
//!
//! SKELETON: the implementation is being written; the API below is the
//! contract other modules build on.
//!
//! Invariants: extents are sorted by `lba`, never overlap, never have
//! `len == 0`; two adjacent extents that continue each other (same seq,
//! contiguous lba and offset) are merged when inserted. Limits of the packed
//! representation: lba < 2^40, len < 2^24, seq < 2^48, seg_off < 2^16.

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
