//! The superblock: the image's identity and geometry, stored as the meta blob
//! `superblock` (layout in `FORMAT.md`).
//!
//! Invariants (checked by [`Superblock::new`] and again by
//! [`Superblock::decode`]): block size 4096; `size` is a non-zero multiple of
//! 4096 no larger than [`MAX_IMAGE_SIZE`]; `chunk_size` is a multiple of 4096
//! in `4096..=`[`MAX_CHUNK_SIZE`]; `segment_size` is a multiple of
//! `chunk_size` within [`MIN_SEGMENT_SIZE`]`..=`[`MAX_SEGMENT_SIZE`].

use super::codec::{check_crc, check_version, Reader, Writer};
use super::{Compression, BLOCK_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, VERSION};
use crate::{Error, Result};

/// Magic of the superblock.
pub const SUPERBLOCK_MAGIC: &[u8; 8] = b"LSVDSUPR";
/// Name of the superblock meta blob.
pub const SUPERBLOCK_NAME: &str = "superblock";
/// Largest image: 2^40 blocks of 4096 bytes (4 PiB), the extent map's lba limit.
pub const MAX_IMAGE_SIZE: u64 = 1 << 52;
/// Largest chunk size accepted by readers (1 MiB).
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// Record type: snapshot `{id u64, seq u64, name utf-8}` (not written by v1).
pub const RECORD_SNAPSHOT: u16 = 1;
/// Record type: clone parent `{uuid [16], snapshot seq u64, store spec}` (not written by v1).
pub const RECORD_CLONE_PARENT: u16 = 2;

const FLAG_ZSTD: u32 = 1;
const FIXED_LEN: usize = 64;

/// A trailing superblock record. Unknown kinds are kept as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SbRecord {
    pub kind: u16,
    pub data: Vec<u8>,
}

/// The decoded superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: [u8; 16],
    /// Image size in bytes.
    pub size: u64,
    /// Segment size in bytes.
    pub segment_size: u32,
    /// Unit of data crc and compression in segments.
    pub chunk_size: u32,
    pub compression: Compression,
    /// Creation time, unix seconds.
    pub created: u64,
    pub records: Vec<SbRecord>,
}

fn check_geometry(size: u64, segment_size: u32, chunk_size: u32) -> Result<(), String> {
    if size == 0 || !size.is_multiple_of(BLOCK_SIZE) {
        return Err(format!(
            "image size {size} is not a non-zero multiple of {BLOCK_SIZE}"
        ));
    }
    if size > MAX_IMAGE_SIZE {
        return Err(format!(
            "image size {size} exceeds the maximum {MAX_IMAGE_SIZE}"
        ));
    }
    if chunk_size == 0
        || !chunk_size.is_multiple_of(BLOCK_SIZE as u32)
        || chunk_size > MAX_CHUNK_SIZE
    {
        return Err(format!(
            "chunk size {chunk_size} is not a multiple of {BLOCK_SIZE} up to {MAX_CHUNK_SIZE}"
        ));
    }
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
        return Err(format!(
            "segment size {segment_size} is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}"
        ));
    }
    if !segment_size.is_multiple_of(chunk_size) {
        return Err(format!(
            "segment size {segment_size} is not a multiple of the chunk size {chunk_size}"
        ));
    }
    Ok(())
}

impl Superblock {
    /// A new image's superblock: random v4 uuid, `created` = now, chunk size
    /// from `compression`. Fails with [`Error::InvalidArgument`] when the
    /// geometry breaks the invariants in the module docs.
    pub fn new(size: u64, segment_size: u32, compression: Compression) -> Result<Self> {
        let chunk_size = compression.chunk_size();
        check_geometry(size, segment_size, chunk_size).map_err(Error::InvalidArgument)?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Superblock {
            uuid: *uuid::Uuid::new_v4().as_bytes(),
            size,
            segment_size,
            chunk_size,
            compression,
            created,
            records: Vec::new(),
        })
    }

    /// Image size in 4096-byte blocks.
    pub fn blocks(&self) -> u64 {
        self.size / BLOCK_SIZE
    }

    /// The uuid in the usual hyphenated lower-case form.
    pub fn uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string()
    }

    /// Encode as in `FORMAT.md`. Records longer than `u32::MAX` bytes are not
    /// representable (callers never build such records).
    pub fn encode(&self) -> Vec<u8> {
        let rec_len: usize = self.records.iter().map(|r| 8 + r.data.len()).sum();
        let mut w = Writer::with_capacity(FIXED_LEN + rec_len + 4);
        let flags = match self.compression {
            Compression::None => 0,
            Compression::Zstd => FLAG_ZSTD,
        };
        w.bytes(SUPERBLOCK_MAGIC)
            .u32(VERSION)
            .u32(flags)
            .bytes(&self.uuid)
            .u64(self.size)
            .u32(BLOCK_SIZE as u32)
            .u32(self.segment_size)
            .u32(self.chunk_size)
            .u32(self.records.len() as u32)
            .u64(self.created);
        for r in &self.records {
            w.u16(r.kind).u16(0).u32(r.data.len() as u32).bytes(&r.data);
        }
        w.finish_with_crc()
    }

    /// Decode and validate a superblock blob (exactly the encoded bytes).
    /// Errors are [`Error::Corrupt`] naming `superblock`, or
    /// [`Error::UnsupportedVersion`] for a well-formed blob of another version.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let what = SUPERBLOCK_NAME;
        let mut r = Reader::new(what, bytes);
        r.magic(SUPERBLOCK_MAGIC)?;
        let body = check_crc(what, bytes)?;
        let mut r = Reader::new(what, body);
        r.magic(SUPERBLOCK_MAGIC)?;
        check_version(what, r.u32("version")?)?;
        let flags = r.u32("flags")?;
        if flags & !FLAG_ZSTD != 0 {
            return Err(r.corrupt(format!("unknown flags {flags:#x}")));
        }
        let compression = if flags & FLAG_ZSTD != 0 {
            Compression::Zstd
        } else {
            Compression::None
        };
        let uuid = r.uuid("uuid")?;
        let size = r.u64("size")?;
        let block_size = r.u32("block size")?;
        if u64::from(block_size) != BLOCK_SIZE {
            return Err(r.corrupt(format!("block size {block_size}, expected {BLOCK_SIZE}")));
        }
        let segment_size = r.u32("segment size")?;
        let chunk_size = r.u32("chunk size")?;
        check_geometry(size, segment_size, chunk_size).map_err(|d| r.corrupt(d))?;
        let n = r.u32("record count")?;
        let created = r.u64("created")?;
        // Each record takes at least 8 bytes: bound the allocation by the input.
        if n as usize > r.remaining() / 8 {
            return Err(r.corrupt(format!("{n} records do not fit in {} bytes", r.remaining())));
        }
        let mut records = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let kind = r.u16("record type")?;
            r.reserved_u16("record reserved")?;
            let len = r.u32("record length")?;
            let data = r.take(len as usize, "record data")?.to_vec();
            records.push(SbRecord { kind, data });
        }
        r.expect_end()?;
        Ok(Superblock {
            uuid,
            size,
            segment_size,
            chunk_size,
            compression,
            created,
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE};

    fn sample() -> Superblock {
        let mut sb = Superblock::new(1 << 30, DEFAULT_SEGMENT_SIZE, Compression::Zstd).unwrap();
        sb.records.push(SbRecord {
            kind: 77,
            data: b"future".to_vec(),
        });
        sb
    }

    fn is_corrupt_sb(r: Result<Superblock>) -> bool {
        matches!(r, Err(Error::Corrupt { ref what, .. }) if what == "superblock")
    }

    #[test]
    fn new_and_round_trip() {
        let sb = Superblock::new(1 << 30, DEFAULT_SEGMENT_SIZE, Compression::None).unwrap();
        assert_eq!(sb.chunk_size, 4096);
        assert_eq!(sb.blocks(), (1 << 30) / 4096);
        assert_eq!(sb.uuid_string().len(), 36);
        assert_ne!(sb.uuid, [0; 16]);
        assert!(sb.created > 1_600_000_000);
        assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
        let sb = sample();
        assert_eq!(sb.chunk_size, 65536);
        assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
        let other = Superblock::new(1 << 30, DEFAULT_SEGMENT_SIZE, Compression::None).unwrap();
        assert_ne!(other.uuid, sb.uuid);
    }

    #[test]
    fn new_rejects_bad_geometry() {
        let bad = [
            (0, DEFAULT_SEGMENT_SIZE, Compression::None),
            (4097, DEFAULT_SEGMENT_SIZE, Compression::None),
            (
                MAX_IMAGE_SIZE + 4096,
                DEFAULT_SEGMENT_SIZE,
                Compression::None,
            ),
            (1 << 30, MIN_SEGMENT_SIZE - 4096, Compression::None),
            (1 << 30, MAX_SEGMENT_SIZE + 65536, Compression::None),
            (1 << 30, MIN_SEGMENT_SIZE + 4096, Compression::Zstd),
            (1 << 30, 0, Compression::None),
        ];
        for (size, seg, c) in bad {
            assert!(
                matches!(
                    Superblock::new(size, seg, c),
                    Err(Error::InvalidArgument(_))
                ),
                "{size} {seg} {c:?}"
            );
        }
        assert!(Superblock::new(4096, MIN_SEGMENT_SIZE, Compression::Zstd).is_ok());
        assert!(Superblock::new(MAX_IMAGE_SIZE, MAX_SEGMENT_SIZE, Compression::None).is_ok());
    }

    /// Re-encode with a field changed and a valid crc: decode must still refuse.
    fn with_field(sb: &Superblock, off: usize, val: &[u8]) -> Vec<u8> {
        let mut bytes = sb.encode();
        bytes[off..off + val.len()].copy_from_slice(val);
        let n = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn decode_revalidates_invariants() {
        let sb = sample();
        for (off, val) in [
            (40, 8192u32.to_le_bytes().to_vec()),    // block size
            (44, 0u32.to_le_bytes().to_vec()),       // segment size
            (44, 100_000u32.to_le_bytes().to_vec()), // not a chunk multiple
            (48, 0u32.to_le_bytes().to_vec()),       // chunk size
            (32, 4097u64.to_le_bytes().to_vec()),    // image size
            (32, 0u64.to_le_bytes().to_vec()),
            (12, 2u32.to_le_bytes().to_vec()), // unknown flag
            (52, 2u32.to_le_bytes().to_vec()), // record count
            (66, 1u16.to_le_bytes().to_vec()), // record reserved
        ] {
            assert!(
                is_corrupt_sb(Superblock::decode(&with_field(&sb, off, &val))),
                "{off}"
            );
        }
        let v2 = with_field(&sb, 8, &2u32.to_le_bytes());
        assert!(matches!(
            Superblock::decode(&v2),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
    }

    #[test]
    fn every_bit_flip_is_corrupt() {
        let bytes = sample().encode();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(is_corrupt_sb(Superblock::decode(&b)), "bit {bit}");
        }
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let mut bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                is_corrupt_sb(Superblock::decode(&bytes[..len])),
                "len {len}"
            );
        }
        bytes.push(0);
        assert!(is_corrupt_sb(Superblock::decode(&bytes)));
    }
}
