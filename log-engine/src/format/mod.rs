//! On-media formats, exactly as documented in `log-engine/FORMAT.md`.
//! Every decoder checks magic, version, lengths, uuid and crc32c and names the
//! object in its error.

pub mod checkpoint;
pub mod codec;
pub mod segment;
pub mod superblock;

pub use checkpoint::{
    decode_part, encode_part, manifest_name, parse_manifest_name, part_name, split_into_parts,
    Manifest, PartEntry, SegmentStat, PART_MAX_EXTENTS,
};
pub use segment::{
    build_segment, build_segment_parts, decode_object, ChunkEntry, Record, RecordKind,
    SegmentHeader, SegmentKind, SegmentParts,
};
pub use superblock::{SbRecord, Superblock};

/// Block size of every image, bytes.
pub const BLOCK_SIZE: u64 = 4096;
/// Format version written by this build.
pub const VERSION: u32 = 1;
/// Chunk size for uncompressed images.
pub const CHUNK_RAW: u32 = 4096;
/// Chunk size for zstd-compressed images.
pub const CHUNK_ZSTD: u32 = 65536;
/// Default segment size (8 MiB).
pub const DEFAULT_SEGMENT_SIZE: u32 = 8 << 20;
/// Smallest and largest segment sizes accepted.
pub const MIN_SEGMENT_SIZE: u32 = 64 << 10;
pub const MAX_SEGMENT_SIZE: u32 = 256 << 20;

/// Image-wide compression of segment data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

impl Compression {
    /// Chunk size used for this compression setting.
    pub fn chunk_size(self) -> u32 {
        match self {
            Compression::None => CHUNK_RAW,
            Compression::Zstd => CHUNK_ZSTD,
        }
    }
}

/// Name of a segment for messages: `segment 000000000000002a`.
pub fn segment_name(seq: u64) -> String {
    format!("segment {seq:016x}")
}
