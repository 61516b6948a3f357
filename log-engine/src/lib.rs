//! # log-engine
//!
//! The log-structured virtual disk at the heart of lsvd. Client writes are
//! batched into large immutable **log segments** stored in a
//! [`store::SegmentStore`]; an [`extent_map`] maps each LBA to the segment
//! and offset holding its newest data; periodic **checkpoints** save the map
//! so that **recovery** only rolls forward the segments written after it; a
//! **garbage collector** copies live data out of mostly-dead segments (or
//! zones) and deletes them.
//!
//! Where to find things:
//! - formats: [`format`] (and `FORMAT.md`)
//! - write path: `engine/write_path.rs`; read path: `engine/read_path.rs`
//! - checkpoints: `engine/checkpoint.rs`; recovery: `engine/recovery.rs`
//! - GC: `engine/gc.rs`; fsck: `engine/fsck.rs`
//! - stores: [`store::dir`], [`zoned`]

pub mod engine;
pub mod error;
pub mod extent_map;
pub mod format;
pub mod size;
pub mod store;
pub mod zoned;

pub use engine::{
    fsck, read_info, CreateOptions, FsckReport, GcConfig, GcPolicy, GcReport, Image, ImageInfo,
    OpenOptions, Stats,
};
pub use error::{Error, Result};
pub use format::Compression;
pub use store::{Media, SegmentStore};
