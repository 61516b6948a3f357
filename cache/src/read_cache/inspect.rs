//! [`inspect`]: what a cache file holds, without opening it for an image
//! (for `lsvdctl cache info`). Read-only: never modifies the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use log_engine::{Error, Result};

use super::layout::{Geometry, SB_LEN};
use super::store::load_index;
use super::ReadCacheStats;

/// What [`inspect`] finds in a cache file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadCacheInfo {
    /// Lifetime hits/misses/evictions as of the last persisted index, and
    /// the entries it records.
    pub stats: ReadCacheStats,
    pub block_size: u32,
    pub slots: u32,
    /// Bytes the layout occupies.
    pub total_bytes: u64,
    /// Image the index belongs to; `None` without a valid index.
    pub image_uuid: Option<[u8; 16]>,
    /// Counter of the newest valid index region (0 = none).
    pub index_counter: u64,
    /// Segments with cached blocks.
    pub segments: u64,
}

/// Read the superblock and newest valid index of the cache at `path`.
/// Errors: missing file ([`Error::NotFound`]), no valid superblock
/// ([`Error::Corrupt`]). A missing or invalid index is not an error: the
/// result then shows no entries and no image.
pub fn inspect(path: &Path) -> Result<ReadCacheInfo> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("read cache {}", path.display())),
        _ => Error::io(format!("read cache {}: open", path.display()), e),
    })?;
    let mut sb = vec![0u8; SB_LEN as usize];
    file.read_exact_at(&mut sb, 0).map_err(|e| {
        Error::corrupt(
            format!("read cache {}", path.display()),
            format!("superblock unreadable: {e}"),
        )
    })?;
    let geo = Geometry::decode_sb(&sb)
        .map_err(|d| Error::corrupt(format!("read cache {}", path.display()), d))?;
    let (ix, _, _) = load_index(&file, &geo);
    let mut info = ReadCacheInfo {
        stats: ReadCacheStats {
            capacity: geo.nslots as u64 * geo.block_size as u64,
            ..Default::default()
        },
        block_size: geo.block_size,
        slots: geo.nslots,
        total_bytes: geo.total,
        image_uuid: None,
        index_counter: 0,
        segments: 0,
    };
    if let Some(ix) = ix {
        info.image_uuid = Some(ix.uuid);
        info.index_counter = ix.counter;
        info.segments = ix.segs.len() as u64;
        info.stats.hits = ix.hits;
        info.stats.misses = ix.misses;
        info.stats.evictions = ix.evictions;
        for e in ix.slots.iter().flatten() {
            info.stats.entries += 1;
            info.stats.bytes_cached += e.len as u64;
        }
    }
    Ok(info)
}
