//! The image: create/open/close, the public I/O API, and the background
//! threads (uploaders, checkpointer, GC). The paths live in their own files:
//! `write_path.rs`, `read_path.rs`, `checkpoint.rs`, `recovery.rs`, `gc.rs`,
//! `fsck.rs`.
//!
//! SKELETON: signatures are the contract; bodies are being written.

use std::sync::Arc;
use std::time::Duration;

use crate::format::Compression;
use crate::store::SegmentStore;
use crate::Result;

/// Options for [`Image::create`].
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Image size in bytes, a multiple of 4096.
    pub size: u64,
    /// Segment size in bytes (default 8 MiB).
    pub segment_size: u32,
    pub compression: Compression,
}

/// Garbage-collector settings.
#[derive(Clone, Debug)]
pub struct GcConfig {
    /// Run the background cleaner.
    pub enabled: bool,
    /// Segments (or zones) whose live share is below this percentage are
    /// cleaned.
    pub threshold_pct: u8,
    /// How often the background cleaner looks for work.
    pub interval: Duration,
}

/// Options for [`Image::open`].
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Segment uploads in flight at once.
    pub upload_threads: usize,
    /// Sealed-but-not-durable bytes held in memory before writers wait.
    pub max_pending_bytes: u64,
    /// Write a checkpoint every this many segments.
    pub checkpoint_every: u32,
    pub gc: GcConfig,
    /// How long `flush` waits for a store that does not answer before it
    /// returns an error (uploads keep retrying in the background).
    pub store_timeout: Duration,
    pub read_only: bool,
}

/// Static facts about an image.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    pub uuid: String,
    pub size: u64,
    pub block_size: u32,
    pub segment_size: u32,
    pub chunk_size: u32,
    pub compression: Compression,
    pub store: String,
    pub created: u64,
}

/// Counters and gauges of an open image.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub segments: u64,
    /// Logical data blocks held in stored segments (live + dead).
    pub stored_blocks: u64,
    /// Blocks referenced by the map.
    pub live_blocks: u64,
    pub extents: u64,
    pub map_heap_bytes: u64,
    pub client_bytes_written: u64,
    /// Bytes handed to the store (segments, both client and GC).
    pub store_bytes_written: u64,
    pub gc_bytes_copied: u64,
    pub gc_runs: u64,
    pub segments_deleted: u64,
    pub checkpoints: u64,
    pub next_seq: u64,
    /// All segments with seq <= this are durable.
    pub durable_seq: u64,
    pub last_checkpoint_seq: u64,
}

/// What one GC pass did.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    pub victims: Vec<u64>,
    pub blocks_copied: u64,
    pub segments_deleted: u64,
}

/// Result of [`fsck`].
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub segments_checked: u64,
    pub chunks_checked: u64,
    pub checkpoint_seq: Option<u64>,
    pub extents_checked: u64,
    /// One line per problem, naming the object.
    pub problems: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An open image. Cheap to share: all methods take `&self` and are safe from
/// many threads.
pub struct Image {
    _store: Arc<dyn SegmentStore>,
}

impl Image {
    /// Write a new image's superblock and initial checkpoint into an empty store.
    pub fn create(_store: Arc<dyn SegmentStore>, _opts: &CreateOptions) -> Result<ImageInfo> {
        todo!()
    }
    /// Open (and recover) an image.
    pub fn open(_store: Arc<dyn SegmentStore>, _opts: OpenOptions) -> Result<Image> {
        todo!()
    }
    pub fn info(&self) -> ImageInfo {
        todo!()
    }
    /// Read `buf.len()` bytes at byte `offset` (both multiples of 4096).
    pub fn read(&self, _offset: u64, _buf: &mut [u8]) -> Result<()> {
        todo!()
    }
    /// Write `data` at byte `offset` (both multiples of 4096).
    pub fn write(&self, _offset: u64, _data: &[u8]) -> Result<()> {
        todo!()
    }
    /// Make every write completed before this call durable.
    pub fn flush(&self) -> Result<()> {
        todo!()
    }
    /// TRIM: the range reads as zeros afterwards.
    pub fn discard(&self, _offset: u64, _len: u64) -> Result<()> {
        todo!()
    }
    pub fn write_zeroes(&self, _offset: u64, _len: u64) -> Result<()> {
        todo!()
    }
    pub fn checkpoint(&self) -> Result<()> {
        todo!()
    }
    pub fn gc_once(&self) -> Result<GcReport> {
        todo!()
    }
    pub fn stats(&self) -> Stats {
        todo!()
    }
    /// Flush, checkpoint, stop background threads.
    pub fn close(self) -> Result<()> {
        todo!()
    }
}

/// Read the superblock of the image in `store` without opening it.
pub fn read_info(_store: &dyn SegmentStore) -> Result<ImageInfo> {
    todo!()
}

/// Check every crc of every segment and checkpoint and the map against the log.
pub fn fsck(_store: &dyn SegmentStore) -> Result<FsckReport> {
    todo!()
}
