//! On-disk format of the write journal (see `cache/JOURNAL.md`): the two
//! superblock slots, the record header, and 4 KiB-aligned buffers for
//! direct I/O. Every structure carries a magic, a version and a crc32c that
//! is checked on every read; a bad one is reported as "not a record here"
//! (scanning) or as a named [`Error::Corrupt`] (superblock).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ops::{Deref, DerefMut};

use log_engine::{Error, Result};

/// Block size of the journal: superblocks, record headers, data and record
/// lengths are all multiples of it (and aligned to it, for O_DIRECT).
pub const BLOCK: u64 = 4096;
/// Superblock slot A lives at offset 0, slot B at 4096; records start after.
pub const DATA_START: u64 = 2 * BLOCK;
/// Smallest journal: the superblocks and room for a few records.
pub const MIN_SIZE: u64 = 1 << 20;

pub const SB_MAGIC: &[u8; 8] = b"LSVDJSB\0";
pub const REC_MAGIC: &[u8; 8] = b"LSVDJREC";
pub const SB_VERSION: u32 = 1;
pub const REC_VERSION: u16 = 1;
/// Offset of the crc32c in a superblock or record header block.
const CRC_AT: usize = 4092;
/// Offset of the extent list in a record header.
const EXTENTS_AT: usize = 72;
/// Most extents one record header can list.
pub const MAX_EXTENTS: usize = (CRC_AT - EXTENTS_AT) / 16;

/// What a record does when replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// Data follows the header.
    Write = 1,
    /// TRIM: the extents read as zeros afterwards; no data.
    Discard = 2,
    /// WRITE_ZEROES: as discard; no data.
    Zeroes = 3,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(RecordKind::Write),
            2 => Some(RecordKind::Discard),
            3 => Some(RecordKind::Zeroes),
            _ => None,
        }
    }
}

/// The journal superblock (both slots hold this; the valid slot with the
/// higher `counter` wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Image uuid (16 bytes; the engine's uuid string, parsed).
    pub uuid: [u8; 16],
    /// Journal size in bytes (the file or device size when formatted).
    pub size: u64,
    /// Random nonce of this journal generation; records carry it, so records
    /// of earlier generations (before the last open) are never replayed.
    pub generation: u64,
    /// Backend write seq when this generation started: every record of the
    /// generation has a larger seq.
    pub base_seq: u64,
    /// Every write with seq <= this was durable (journal or backend) when a
    /// flush completed; replay that cannot reach it has lost flushed data.
    pub flushed_seq: u64,
    /// Incremented on every superblock write; chooses the newer slot.
    pub counter: u64,
    /// Unix seconds when the generation started.
    pub created: u64,
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// crc32c of a header block (everything before the crc field).
fn block_crc(b: &[u8]) -> u32 {
    crc32c::crc32c(&b[..CRC_AT])
}

impl Superblock {
    /// Encode into one 4096-byte block.
    pub fn encode(&self, b: &mut [u8]) {
        b[..BLOCK as usize].fill(0);
        b[0..8].copy_from_slice(SB_MAGIC);
        put_u32(b, 8, SB_VERSION);
        b[16..32].copy_from_slice(&self.uuid);
        put_u64(b, 32, self.size);
        put_u64(b, 40, self.generation);
        put_u64(b, 48, self.base_seq);
        put_u64(b, 56, self.flushed_seq);
        put_u64(b, 64, self.counter);
        put_u64(b, 72, self.created);
        let crc = block_crc(b);
        put_u32(b, CRC_AT, crc);
    }

    /// Decode one slot; `what` names it in errors.
    pub fn decode(b: &[u8], what: &str) -> Result<Superblock> {
        if b.len() < BLOCK as usize {
            return Err(Error::corrupt(what, "short superblock"));
        }
        if b.iter().take(BLOCK as usize).all(|&x| x == 0) {
            return Err(Error::corrupt(what, "blank (all zeros)"));
        }
        if &b[0..8] != SB_MAGIC {
            return Err(Error::corrupt(what, "bad magic (not an lsvd journal)"));
        }
        let crc = get_u32(b, CRC_AT);
        if crc != block_crc(b) {
            return Err(Error::corrupt(what, "crc32c mismatch"));
        }
        let version = get_u32(b, 8);
        if version != SB_VERSION {
            return Err(Error::UnsupportedVersion {
                what: what.to_string(),
                version,
            });
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let sb = Superblock {
            uuid,
            size: get_u64(b, 32),
            generation: get_u64(b, 40),
            base_seq: get_u64(b, 48),
            flushed_seq: get_u64(b, 56),
            counter: get_u64(b, 64),
            created: get_u64(b, 72),
        };
        if sb.size < MIN_SIZE || !sb.size.is_multiple_of(BLOCK) {
            return Err(Error::corrupt(what, format!("bad size {}", sb.size)));
        }
        Ok(sb)
    }
}

/// A record header as decoded from its first block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub uuid: [u8; 16],
    pub generation: u64,
    /// The engine's write seq of this write.
    pub seq: u64,
    /// Bytes of data after the header block (0 for discard/zeroes).
    pub data_len: u64,
    /// Bytes the record occupies: header block + data, a multiple of 4096.
    pub record_len: u64,
    /// crc32c of the data (the header crc covers this field, so the header
    /// crc protects header and data together).
    pub data_crc: u32,
    /// (byte offset, byte length) ranges of the image the record covers.
    pub extents: Vec<(u64, u64)>,
}

impl RecordHeader {
    /// Encode into the first 4096 bytes of `b`.
    pub fn encode(&self, b: &mut [u8]) {
        b[..BLOCK as usize].fill(0);
        b[0..8].copy_from_slice(REC_MAGIC);
        b[8..10].copy_from_slice(&REC_VERSION.to_le_bytes());
        b[10] = self.kind as u8;
        put_u32(b, 12, self.extents.len() as u32);
        b[16..32].copy_from_slice(&self.uuid);
        put_u64(b, 32, self.generation);
        put_u64(b, 40, self.seq);
        put_u64(b, 48, self.data_len);
        put_u64(b, 56, self.record_len);
        put_u32(b, 64, self.data_crc);
        for (i, &(off, len)) in self.extents.iter().take(MAX_EXTENTS).enumerate() {
            put_u64(b, EXTENTS_AT + 16 * i, off);
            put_u64(b, EXTENTS_AT + 16 * i + 8, len);
        }
        let crc = block_crc(b);
        put_u32(b, CRC_AT, crc);
    }

    /// Decode a header block. `None` when the block is not a record header
    /// (wrong magic or header crc): scanning then moves on by one block.
    /// `Err` for a well-formed header of an unknown version or with
    /// impossible lengths.
    pub fn decode(b: &[u8], at: u64) -> Option<Result<RecordHeader>> {
        if b.len() < BLOCK as usize || &b[0..8] != REC_MAGIC {
            return None;
        }
        if get_u32(b, CRC_AT) != block_crc(b) {
            return None;
        }
        let what = || format!("journal record at offset {at}");
        let mut v = [0u8; 2];
        v.copy_from_slice(&b[8..10]);
        let version = u16::from_le_bytes(v);
        if version != REC_VERSION {
            return Some(Err(Error::UnsupportedVersion {
                what: what(),
                version: version as u32,
            }));
        }
        let Some(kind) = RecordKind::from_u8(b[10]) else {
            return Some(Err(Error::corrupt(what(), format!("bad kind {}", b[10]))));
        };
        let n = get_u32(b, 12) as usize;
        if n > MAX_EXTENTS {
            return Some(Err(Error::corrupt(what(), format!("{n} extents"))));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let h = RecordHeader {
            kind,
            uuid,
            generation: get_u64(b, 32),
            seq: get_u64(b, 40),
            data_len: get_u64(b, 48),
            record_len: get_u64(b, 56),
            data_crc: get_u32(b, 64),
            extents: (0..n)
                .map(|i| {
                    (
                        get_u64(b, EXTENTS_AT + 16 * i),
                        get_u64(b, EXTENTS_AT + 16 * i + 8),
                    )
                })
                .collect(),
        };
        let ext_bytes: u64 = h.extents.iter().map(|e| e.1).sum();
        let ok = h.record_len == record_len_for(h.data_len)
            && (kind != RecordKind::Write || h.data_len == ext_bytes)
            && (kind == RecordKind::Write || h.data_len == 0);
        if !ok {
            return Some(Err(Error::corrupt(
                what(),
                format!(
                    "inconsistent lengths: data {} record {} extents {}",
                    h.data_len, h.record_len, ext_bytes
                ),
            )));
        }
        Some(Ok(h))
    }
}

/// Bytes a record with `data_len` bytes of data occupies.
pub fn record_len_for(data_len: u64) -> u64 {
    BLOCK + data_len.div_ceil(BLOCK) * BLOCK
}

/// Parse an image uuid string (hex with or without hyphens) into 16 bytes.
pub fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
    let bad = || Error::InvalidArgument(format!("bad image uuid {s:?}"));
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let h = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(h, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Format 16 uuid bytes as the usual hyphenated string.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A zeroed heap buffer aligned to 4096 bytes, for O_DIRECT I/O.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads through `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (`len` > 0, rounded up to 4096).
    pub fn new(len: usize) -> AlignedBuf {
        let len = len.max(1).div_ceil(BLOCK as usize) * BLOCK as usize;
        let layout = Self::layout(len);
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        match Layout::from_size_align(len, BLOCK as usize) {
            Ok(l) => l,
            // Only for sizes near isize::MAX, which no caller asks for.
            Err(_) => std::alloc::handle_alloc_error(Layout::new::<[u8; 4096]>()),
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr, Self::layout(self.len)) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised (zeroed) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_roundtrip_and_crc() {
        let sb = Superblock {
            uuid: [7; 16],
            size: 1 << 24,
            generation: 42,
            base_seq: 9,
            flushed_seq: 11,
            counter: 3,
            created: 5,
        };
        let mut b = AlignedBuf::new(4096);
        sb.encode(&mut b);
        assert_eq!(Superblock::decode(&b, "sb").unwrap(), sb);
        b[100] ^= 1;
        let e = Superblock::decode(&b, "sb").unwrap_err().to_string();
        assert!(e.contains("crc32c"), "{e}");
        let z = AlignedBuf::new(4096);
        assert!(Superblock::decode(&z, "sb")
            .unwrap_err()
            .to_string()
            .contains("blank"));
    }

    #[test]
    fn record_header_roundtrip_and_checks() {
        let h = RecordHeader {
            kind: RecordKind::Write,
            uuid: [1; 16],
            generation: 77,
            seq: 12,
            data_len: 8192,
            record_len: record_len_for(8192),
            data_crc: 99,
            extents: vec![(4096, 8192)],
        };
        let mut b = AlignedBuf::new(4096);
        h.encode(&mut b);
        assert_eq!(RecordHeader::decode(&b, 0).unwrap().unwrap(), h);
        b[41] ^= 1;
        assert!(RecordHeader::decode(&b, 0).is_none());
        let mut bad = h.clone();
        bad.record_len = 4096;
        bad.encode(&mut b);
        assert!(RecordHeader::decode(&b, 0).unwrap().is_err());
    }

    #[test]
    fn uuid_parse_format() {
        let s = "0123abcd-0000-4000-8000-00000000ffee";
        assert_eq!(uuid_string(&parse_uuid(s).unwrap()), s);
        assert!(parse_uuid("xyz").is_err());
    }
}
