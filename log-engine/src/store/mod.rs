//! The segment-store trait and the embedded stores.
//!
//! A store holds two kinds of things for one image:
//! - **segments**: immutable log segments named by a 64-bit sequence number,
//!   written whole once, read by range, deleted after GC;
//! - **metadata blobs**: small named objects (the superblock, checkpoint
//!   manifests and parts) that are replaced atomically.
//!
//! Two kinds of media sit behind it ([`Media`]): object stores (a directory,
//! RADOS) where a deleted segment's space comes back at once, and zoned stores
//! (the emulated zoned file, a ZNS drive) where segments are appended into
//! zones and space comes back only when every segment of a zone is deleted and
//! the zone is reset. GC asks [`SegmentStore::segment_unit`] to group segments
//! by zone.
//!
//! # Contract
//! - `write_segment` returns only once the segment is durable; a segment that
//!   was not acknowledged may be absent or torn after a crash, never half
//!   visible under its name with good crcs.
//! - All methods take `&self` and may be called concurrently from several
//!   threads (the engine runs several uploads and many reads at once); a store
//!   serialises internally where its medium needs it (one writer per zone).
//! - A store may fail or time out ([`crate::Error::Timeout`]); the engine
//!   retries transient errors with backoff and never acknowledges data the
//!   store did not acknowledge.

pub mod dir;
pub mod mem;
pub mod spec;

use crate::{Error, Result};

/// What kind of medium backs a store; decides how GC reclaims space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    /// Whole objects; deleting a segment frees its space.
    Object,
    /// Zones written sequentially; space comes back by zone reset only.
    Zoned,
}

/// A segment as listed by the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentEntry {
    /// Sequence number (the segment's name).
    pub seq: u64,
    /// Stored length in bytes as written (header + stored data, padded).
    pub len: u64,
}

/// Space accounting of a store, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceInfo {
    /// Capacity for segments, if the medium has a fixed size.
    pub capacity: Option<u64>,
    /// Bytes occupied by segments (for zoned stores: written or finished zones).
    pub used: u64,
}

/// One store for one image. See the module docs for the contract.
pub trait SegmentStore: Send + Sync + std::fmt::Debug {
    /// Object or zoned medium.
    fn media(&self) -> Media;

    /// Human-readable description, e.g. `dir:/var/lib/lsvd/img1`.
    fn describe(&self) -> String;

    /// Store a whole segment durably under `seq`. `data.len()` is a multiple
    /// of 4096. Fails with [`crate::Error::Exists`] if `seq` is already
    /// stored, [`crate::Error::NoSpace`] when the medium is full.
    fn write_segment(&self, seq: u64, data: &[u8]) -> Result<()>;

    /// [`Self::write_segment`] of the concatenation of `parts` (a segment's
    /// header and its data), for stores that can write them without first
    /// copying them into one buffer. The default concatenates.
    fn write_segment_parts(&self, seq: u64, parts: &[&[u8]]) -> Result<()> {
        self.write_segment(seq, &parts.concat())
    }

    /// Read `buf.len()` bytes of segment `seq` starting at `offset`.
    /// [`crate::Error::NotFound`] if the segment does not exist; a read past
    /// the end of the segment is an error, never silently short.
    fn read_segment(&self, seq: u64, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Delete segment `seq`. Deleting a missing segment is not an error.
    /// On zoned stores the zone is reset once all its segments are deleted.
    fn delete_segment(&self, seq: u64) -> Result<()>;

    /// All segments, sorted by `seq`.
    fn list_segments(&self) -> Result<Vec<SegmentEntry>>;

    /// For zoned stores, the zone that holds segment `seq` (GC reclaims by
    /// zone); `None` on object stores or for an unknown segment.
    fn segment_unit(&self, _seq: u64) -> Option<u32> {
        None
    }

    /// Zones currently open for appends: GC must not choose them as victims.
    fn open_units(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Atomically create or replace the metadata blob `name`.
    fn put_meta(&self, name: &str, data: &[u8]) -> Result<()>;

    /// Read metadata blob `name`, `None` if absent.
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Delete metadata blob `name`; absent is not an error.
    fn delete_meta(&self, name: &str) -> Result<()>;

    /// Names of all metadata blobs, sorted.
    fn list_meta(&self) -> Result<Vec<String>>;

    /// Space used and available.
    fn space(&self) -> Result<SpaceInfo>;

    /// Largest segment object the medium takes (zoned stores: what fits in
    /// one zone's capacity); `None` = no limit below the format's own.
    fn max_segment_len(&self) -> Option<u64> {
        None
    }

    /// Remove every segment and blob of this image and the store's own
    /// container (directory, zones reset). Used by `image rm`.
    fn destroy(&self) -> Result<()>;
}

/// Check a metadata blob name: 1..=200 characters of `[A-Za-z0-9._-]`,
/// not starting with `.`, so every store can use it as a file-name or
/// object-name suffix.
pub fn check_meta_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "bad metadata name {name:?}: 1..200 characters of [A-Za-z0-9._-], not starting with '.'"
        )))
    }
}
