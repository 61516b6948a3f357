//! Read cache: keeps backend segment data in fixed-size blocks on a local
//! file or block device.
//!
//! [`CachingStore`] wraps any [`log_engine::SegmentStore`] and caches what
//! `read_segment` returns, keyed by (segment seq, block index of the segment
//! object). Everything else passes through.
//!
//! # Why cached data is never stale
//! Segments are immutable: an lsvd seq is written once, and overwrites,
//! discards and GC moves go to new segments (the extent map points there).
//! So a cached block of seq `s` stays right as long as
//! - `delete_segment(s)` drops every cached block of `s` (it does, before the
//!   backend delete);
//! - a seq deleted and written again with other content is not confused with
//!   its old self: each seq gets a fresh in-memory *generation* whenever it
//!   (re)appears, and a block fetched under an older generation is not
//!   inserted;
//! - across restarts, the persisted index is trusted only for the same image
//!   uuid, only for segments the backend still lists with the same length,
//!   and only after the segment's *fingerprint* (crc32c of its first 4 KiB,
//!   which holds the segment header with the image uuid, seq, lengths and
//!   write sequence numbers) was re-read from the backend and matched, the
//!   first time the seq is used after open.
//!
//! Every hit is checked against its per-page crc32c (which also covers the
//! key); a mismatch drops the entry and reads the backend: a bad entry is a
//! miss, never wrong data. A torn index region fails its crc and the other
//! (older) region or a cold start is used; an older region is safe because
//! entries whose slot was reused since fail their crc.
//!
//! Files: [`layout`] (on-disk format), [`policy`] (eviction + simulator),
//! `store.rs` ([`CachingStore`]), `inspect.rs` ([`inspect`]).

pub mod layout;
pub mod policy;

mod inspect;
mod store;

use std::path::PathBuf;

pub use inspect::{inspect, ReadCacheInfo};
pub use policy::Policy;
pub use store::CachingStore;

/// Key of one cached block: (segment seq, block index within the segment
/// object).
pub type Key = (u64, u32);

/// Default cache block size: 64 KiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 65536;

/// Where the cache lives and how big it may get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadCacheConfig {
    /// A regular file (created if missing) or a block device.
    pub path: PathBuf,
    /// Upper bound of bytes used on `path` (superblock, index and data).
    pub size: u64,
    /// Cache block size: a multiple of 4096, at most 1 MiB.
    pub block_size: u32,
}

impl ReadCacheConfig {
    /// A config with the default 64 KiB block size.
    pub fn new(path: impl Into<PathBuf>, size: u64) -> Self {
        ReadCacheConfig {
            path: path.into(),
            size,
            block_size: DEFAULT_BLOCK_SIZE,
        }
    }
}

/// Knobs beyond the config, for benchmarks and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// Eviction policy (default: S3-FIFO; it beat CLOCK and LRU on every
    /// zipf and scan-polluted trace of `lsvd-rcache-bench`, e.g. 59.3 % vs
    /// 53.1 % (CLOCK) / 50.6 % (LRU) hits on zipf 0.9 with a cache of 5 % of
    /// the keys, 39.7 % vs 30.8 % / 28.0 % with scans mixed in).
    pub policy: Policy,
    /// Also cache segments as they are written. Default off: in the bench
    /// (reads of recently written data, cache half the written size) it
    /// raised the hit rate by < 1 point (78.4 % -> 78.7 %) for 54 MiB more
    /// cache writes per 64 MiB written.
    pub write_through: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            policy: Policy::S3Fifo,
            write_through: false,
        }
    }
}

/// Counters of a cache. Hits and misses count cache blocks touched by
/// `read_segment` calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Valid bytes held in cache blocks.
    pub bytes_cached: u64,
    /// Bytes of data slots (slots * block size).
    pub capacity: u64,
    /// Cached blocks.
    pub entries: u64,
    pub evictions: u64,
}

/// The 16-byte uuid of the image in `store` (from its superblock), as
/// [`CachingStore::open`] wants it.
pub fn image_uuid(store: &dyn log_engine::SegmentStore) -> log_engine::Result<[u8; 16]> {
    let info = log_engine::read_info(store)?;
    parse_uuid(&info.uuid).ok_or_else(|| {
        log_engine::Error::corrupt(
            format!("image in {}", store.describe()),
            format!("uuid {:?} is not 32 hex digits", info.uuid),
        )
    })
}

/// Parse a uuid string (hex digits, hyphens ignored).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}
