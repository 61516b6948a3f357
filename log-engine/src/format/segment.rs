//! Log segments: one immutable object per segment, a header (records and a
//! chunk table, covered by one crc32c) padded to a multiple of 4096, then the
//! data area (layout in `FORMAT.md`).
//!
//! Invariants of a decoded [`SegmentHeader`] (all checked by
//! [`SegmentHeader::decode`]):
//! - every record has `len >= 1` and `lba + len` does not overflow; only GC
//!   copy records carry a source (`src_seq`, `src_off`);
//! - `data_len == 4096 * sum(len of data and GC-copy records)`;
//! - `chunks.len() == ceil(data_len / chunk_size)`; chunk `k` holds logical
//!   bytes `[k*chunk, min((k+1)*chunk, data_len))`; stored chunks are
//!   contiguous from offset 0 of the data area and end at `stored_len`; a
//!   chunk is raw iff its stored length equals its logical length, and is a
//!   zstd frame (strictly shorter) only when `compressed` is set;
//! - `header_len` is the exact padded header length, at most
//!   [`MAX_SEGMENT_SIZE`], and the padding is zero.
//!
//! Readers check the crc of every chunk they return
//! ([`SegmentHeader::read_data`]); the chunk crcs are themselves under the
//! header crc, so every data byte is covered.

use super::codec::{check_crc, check_version, round_up, Reader, Writer, CRC_LEN};
use super::superblock::MAX_CHUNK_SIZE;
use super::{segment_name, Compression, BLOCK_SIZE, MAX_SEGMENT_SIZE, VERSION};
use crate::{Error, Result};

/// Magic of a segment header.
pub const SEGMENT_MAGIC: &[u8; 8] = b"LSVDSEGM";
/// Length of the fixed part of the header.
pub const FIXED_HEADER_LEN: usize = 96;
/// Length of one extent record.
pub const RECORD_LEN: usize = 32;
/// Length of one chunk-table entry.
pub const CHUNK_ENTRY_LEN: usize = 16;
/// zstd level used for segment chunks. Measured on 48 MiB of binaries,
/// libraries and docs in 64 KiB chunks: level 1 compresses at ~500 MB/s to
/// 42.6 %, level 3 at ~380 MB/s to 40.4 %; the write path favours speed.
pub const ZSTD_LEVEL: i32 = 1;

const FLAG_COMPRESSED: u32 = 1;
const OFF_N_RECORDS: usize = 44;

/// Who wrote a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// Client writes.
    Write,
    /// Copies made by the garbage collector.
    Gc,
}

/// What an extent record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// New client data (owns `len` blocks of segment data).
    Data,
    /// The range reads as zeros (TRIM, WRITE_ZEROES); owns no data.
    Discard,
    /// A GC copy of blocks `src_off..src_off+len` of segment `src_seq`
    /// (owns `len` blocks); applies only where the map still points there.
    GcCopy,
}

impl RecordKind {
    /// True for records that own blocks in the data area.
    pub fn has_data(self) -> bool {
        !matches!(self, RecordKind::Discard)
    }

    fn code(self) -> u16 {
        match self {
            RecordKind::Data => 0,
            RecordKind::Discard => 1,
            RecordKind::GcCopy => 2,
        }
    }
}

/// One extent record of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub lba: u64,
    /// Length in blocks, >= 1.
    pub len: u32,
    pub kind: RecordKind,
    /// GC copy: source segment; else 0.
    pub src_seq: u64,
    /// GC copy: block offset in the source segment's data; else 0.
    pub src_off: u32,
}

impl Record {
    /// A data record.
    pub fn data(lba: u64, len: u32) -> Self {
        Record {
            lba,
            len,
            kind: RecordKind::Data,
            src_seq: 0,
            src_off: 0,
        }
    }

    /// A discard record.
    pub fn discard(lba: u64, len: u32) -> Self {
        Record {
            kind: RecordKind::Discard,
            ..Record::data(lba, len)
        }
    }

    /// A GC-copy record.
    pub fn gc_copy(lba: u64, len: u32, src_seq: u64, src_off: u32) -> Self {
        Record {
            lba,
            len,
            kind: RecordKind::GcCopy,
            src_seq,
            src_off,
        }
    }

    /// Why this record is malformed, if it is.
    fn problem(&self) -> Option<String> {
        if self.len == 0 {
            return Some("length 0".into());
        }
        if self.lba.checked_add(u64::from(self.len)).is_none() {
            return Some(format!("lba {} + len {} overflows", self.lba, self.len));
        }
        match self.kind {
            RecordKind::GcCopy => {
                if self.src_off.checked_add(self.len).is_none() {
                    return Some(format!(
                        "source offset {} + len {} overflows",
                        self.src_off, self.len
                    ));
                }
            }
            _ => {
                if self.src_seq != 0 || self.src_off != 0 {
                    return Some("source fields set on a non-GC record".into());
                }
            }
        }
        None
    }
}

/// One entry of the chunk table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Offset from the start of the data area.
    pub stored_off: u64,
    /// Stored bytes; equal to the logical length for a raw chunk.
    pub stored_len: u32,
    /// crc32c of the stored bytes.
    pub crc: u32,
}

/// A decoded, validated segment header (see the module invariants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub uuid: [u8; 16],
    pub seq: u64,
    pub kind: SegmentKind,
    /// Chunks may be zstd frames.
    pub compressed: bool,
    pub chunk_size: u32,
    /// Logical (uncompressed) data bytes.
    pub data_len: u64,
    /// Bytes of the data area as stored.
    pub stored_len: u64,
    /// Bytes before the data area, a multiple of 4096.
    pub header_len: u32,
    /// First client write sequence number in this segment (0 = none).
    pub write_seq_first: u64,
    /// Last client write sequence number in this segment (0 = none).
    pub write_seq_last: u64,
    pub records: Vec<Record>,
    pub chunks: Vec<ChunkEntry>,
}

/// Padded header length for `n_records` and `n_chunks`, `None` on overflow.
pub fn header_len_for(n_records: u64, n_chunks: u64) -> Option<u64> {
    let raw = (RECORD_LEN as u64)
        .checked_mul(n_records)?
        .checked_add((CHUNK_ENTRY_LEN as u64).checked_mul(n_chunks)?)?
        .checked_add((FIXED_HEADER_LEN + CRC_LEN) as u64)?;
    round_up(raw, BLOCK_SIZE)
}

/// Most records an engine batch may hold besides its data records: discard
/// records seal the batch once there are this many (or `seg_blocks`, if
/// larger), plus the few pieces one huge discard splits into.
pub fn max_discard_records(seg_blocks: u64) -> u64 {
    seg_blocks.max(4096)
}

/// Largest stored object the engine writes for `segment_size` bytes of data:
/// one data record and one raw chunk per block, the discard records
/// [`max_discard_records`] allows, and the data. Zoned stores use it to fit
/// segments into a zone's capacity.
pub fn max_object_len(segment_size: u32) -> u64 {
    let blocks = u64::from(segment_size) / BLOCK_SIZE;
    let records = blocks + max_discard_records(blocks) + 1024;
    header_len_for(records, blocks).map_or(u64::MAX, |h| h + u64::from(segment_size))
}

fn check_chunk_size(chunk_size: u32) -> Result<(), String> {
    if chunk_size == 0
        || !chunk_size.is_multiple_of(BLOCK_SIZE as u32)
        || chunk_size > MAX_CHUNK_SIZE
    {
        return Err(format!(
            "chunk size {chunk_size} is not a multiple of {BLOCK_SIZE} up to {MAX_CHUNK_SIZE}"
        ));
    }
    Ok(())
}

fn check_write_seq(first: u64, last: u64) -> Result<(), String> {
    if (first == 0) != (last == 0) || first > last {
        return Err(format!("bad write sequence range {first}..={last}"));
    }
    Ok(())
}

/// Blocks of data owned by `records`, `None` on overflow.
fn data_blocks_of(records: &[Record]) -> Option<u64> {
    records
        .iter()
        .filter(|r| r.kind.has_data())
        .try_fold(0u64, |acc, r| acc.checked_add(u64::from(r.len)))
}

/// Build a whole segment object: header padded to 4096, then the data area,
/// total padded to 4096.
///
/// `data` holds the blocks of the data and GC-copy records in record order;
/// its length must be `4096 * sum(len of those records)`. With
/// [`Compression::Zstd`] each chunk is compressed on its own and stored raw
/// when zstd does not shrink it. Caller mistakes give
/// [`Error::InvalidArgument`].
#[allow(clippy::too_many_arguments)]
pub fn build_segment(
    uuid: &[u8; 16],
    seq: u64,
    kind: SegmentKind,
    records: &[Record],
    data: &[u8],
    compression: Compression,
    chunk_size: u32,
    write_seq: (u64, u64),
) -> Result<Vec<u8>> {
    let parts = build_segment_parts(
        uuid,
        seq,
        kind,
        records,
        data,
        compression,
        chunk_size,
        write_seq,
    )?;
    let mut out = parts.header;
    out.extend_from_slice(&parts.body);
    Ok(out)
}

/// A segment object in two parts, so a store can write it without first
/// copying the data behind the header: `header` (padded to 4096) then
/// `body` (the data area, padded to 4096; borrowed from the caller's data
/// when it is stored raw).
#[derive(Debug)]
pub struct SegmentParts<'a> {
    pub header: Vec<u8>,
    pub body: std::borrow::Cow<'a, [u8]>,
}

impl SegmentParts<'_> {
    /// Total object length.
    pub fn len(&self) -> usize {
        self.header.len() + self.body.len()
    }

    /// Never empty (the header is at least 4096 bytes).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// [`build_segment`] without concatenating header and data.
#[allow(clippy::too_many_arguments)]
pub fn build_segment_parts<'a>(
    uuid: &[u8; 16],
    seq: u64,
    kind: SegmentKind,
    records: &[Record],
    data: &'a [u8],
    compression: Compression,
    chunk_size: u32,
    write_seq: (u64, u64),
) -> Result<SegmentParts<'a>> {
    let name = segment_name(seq);
    let bad = |d: String| Error::InvalidArgument(format!("building {name}: {d}"));
    check_chunk_size(chunk_size).map_err(bad)?;
    check_write_seq(write_seq.0, write_seq.1).map_err(bad)?;
    for (i, r) in records.iter().enumerate() {
        if let Some(p) = r.problem() {
            return Err(bad(format!("record {i}: {p}")));
        }
    }
    let blocks = data_blocks_of(records)
        .filter(|&b| b <= u64::from(u32::MAX))
        .ok_or_else(|| bad("too many data blocks".into()))?;
    if data.len() as u64 != blocks * BLOCK_SIZE {
        return Err(bad(format!(
            "data is {} bytes, records own {blocks} blocks",
            data.len()
        )));
    }
    let n_chunks = data.len().div_ceil(chunk_size as usize);
    let header_len = header_len_for(records.len() as u64, n_chunks as u64)
        .filter(|&h| h <= u64::from(MAX_SEGMENT_SIZE))
        .ok_or_else(|| bad(format!("header for {} records too large", records.len())))?;

    // Chunk table and data area.
    let mut chunks = Vec::with_capacity(n_chunks);
    let area: std::borrow::Cow<[u8]> = match compression {
        Compression::None => {
            let mut off = 0u64;
            for c in data.chunks(chunk_size as usize) {
                chunks.push(ChunkEntry {
                    stored_off: off,
                    stored_len: c.len() as u32,
                    crc: crc32c::crc32c(c),
                });
                off += c.len() as u64;
            }
            std::borrow::Cow::Borrowed(data)
        }
        Compression::Zstd => {
            let mut z = zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .map_err(|e| Error::io(format!("zstd compressor for {name}"), e))?;
            let mut area = vec![0u8; data.len()];
            let mut pos = 0usize;
            for c in data.chunks(chunk_size as usize) {
                // Only a frame strictly shorter than the chunk fits the
                // destination; anything else (including zstd's "destination
                // too small") stores the chunk raw.
                let dst = &mut area[pos..pos + c.len() - 1];
                let stored_len = match z.compress_to_buffer(c, dst) {
                    Ok(n) if n < c.len() => n,
                    _ => {
                        area[pos..pos + c.len()].copy_from_slice(c);
                        c.len()
                    }
                };
                chunks.push(ChunkEntry {
                    stored_off: pos as u64,
                    stored_len: stored_len as u32,
                    crc: crc32c::crc32c(&area[pos..pos + stored_len]),
                });
                pos += stored_len;
            }
            area.truncate(pos);
            std::borrow::Cow::Owned(area)
        }
    };

    let total = header_len as usize + (area.len()).next_multiple_of(BLOCK_SIZE as usize);
    let mut w = Writer::with_capacity(header_len as usize);
    let flags = match compression {
        Compression::None => 0,
        Compression::Zstd => FLAG_COMPRESSED,
    };
    w.bytes(SEGMENT_MAGIC)
        .u32(VERSION)
        .u32(flags)
        .bytes(uuid)
        .u64(seq)
        .u32(match kind {
            SegmentKind::Write => 0,
            SegmentKind::Gc => 1,
        })
        .u32(records.len() as u32)
        .u32(n_chunks as u32)
        .u32(chunk_size)
        .u64(data.len() as u64)
        .u64(area.len() as u64)
        .u32(header_len as u32)
        .u32(0)
        .u64(write_seq.0)
        .u64(write_seq.1);
    for r in records {
        w.u64(r.lba)
            .u32(r.len)
            .u16(r.kind.code())
            .u16(0)
            .u64(r.src_seq)
            .u32(r.src_off)
            .u32(0);
    }
    for c in &chunks {
        w.u64(c.stored_off).u32(c.stored_len).u32(c.crc);
    }
    w.crc();
    w.pad_to(BLOCK_SIZE as usize);
    debug_assert_eq!(w.len(), header_len as usize);
    let header = w.into_inner();
    let padded = area.len().next_multiple_of(BLOCK_SIZE as usize);
    let body = if padded == area.len() {
        area
    } else {
        let mut v = area.into_owned();
        v.resize(padded, 0);
        std::borrow::Cow::Owned(v)
    };
    debug_assert_eq!(header.len() + body.len(), total);
    Ok(SegmentParts { header, body })
}

impl SegmentHeader {
    /// From the first bytes of a segment object (at least the 96-byte fixed
    /// part; a reader fetches 4096), the header length to read before
    /// calling [`SegmentHeader::decode`]. Checks magic, seq and that
    /// `header_len` agrees with the record and chunk counts; the crc can
    /// only be checked by `decode`.
    pub fn fixed_len_hint(first_4k: &[u8], what_seq: u64) -> Result<u32> {
        let what = segment_name(what_seq);
        let mut r = Reader::new(&what, first_4k);
        r.magic(SEGMENT_MAGIC)?;
        r.take(24, "fixed header")?;
        let seq = r.u64("seq")?;
        if seq != what_seq {
            return Err(r.corrupt(format!("header has seq {seq:#x}")));
        }
        r.u32("kind")?;
        let n_records = r.u32("n_records")?;
        let n_chunks = r.u32("n_chunks")?;
        r.take(20, "fixed header")?;
        let header_len = r.u32("header_len")?;
        r.take(FIXED_HEADER_LEN - r.pos(), "fixed header")?;
        Self::check_header_len(&r, n_records, n_chunks, header_len)?;
        Ok(header_len)
    }

    fn check_header_len(r: &Reader, n_records: u32, n_chunks: u32, header_len: u32) -> Result<()> {
        let expect = header_len_for(u64::from(n_records), u64::from(n_chunks));
        if expect != Some(u64::from(header_len)) || header_len > MAX_SEGMENT_SIZE {
            return Err(r.corrupt(format!(
                "header_len {header_len} does not match {n_records} records and {n_chunks} chunks"
            )));
        }
        Ok(())
    }

    /// Decode and validate a segment header. `bytes` starts at the beginning
    /// of the object and holds at least `header_len` bytes (more is fine).
    /// With `expected_uuid` the header must belong to that image; its seq
    /// must be `expected_seq`.
    pub fn decode(
        expected_uuid: Option<&[u8; 16]>,
        expected_seq: u64,
        bytes: &[u8],
    ) -> Result<SegmentHeader> {
        let what = segment_name(expected_seq);
        let mut r = Reader::new(&what, bytes);
        r.magic(SEGMENT_MAGIC)?;
        r.take(OFF_N_RECORDS - 8, "fixed header")?;
        let n_records = r.u32("n_records")?;
        let n_chunks = r.u32("n_chunks")?;
        let crc_end = (RECORD_LEN as u64)
            .checked_mul(u64::from(n_records))
            .and_then(|x| x.checked_add(CHUNK_ENTRY_LEN as u64 * u64::from(n_chunks)))
            .and_then(|x| x.checked_add((FIXED_HEADER_LEN + CRC_LEN) as u64))
            .filter(|&x| x <= bytes.len() as u64)
            .ok_or_else(|| {
                r.corrupt(format!(
                    "truncated: {n_records} records and {n_chunks} chunks do not fit in {} bytes",
                    bytes.len()
                ))
            })?;
        let body = check_crc(&what, &bytes[..crc_end as usize])?;

        let mut r = Reader::new(&what, body);
        r.magic(SEGMENT_MAGIC)?;
        check_version(&what, r.u32("version")?)?;
        let flags = r.u32("flags")?;
        if flags & !FLAG_COMPRESSED != 0 {
            return Err(r.corrupt(format!("unknown flags {flags:#x}")));
        }
        let compressed = flags & FLAG_COMPRESSED != 0;
        let uuid = r.uuid("uuid")?;
        if let Some(expected) = expected_uuid {
            if &uuid != expected {
                return Err(r.corrupt(format!(
                    "belongs to image {}, expected {}",
                    uuid::Uuid::from_bytes(uuid),
                    uuid::Uuid::from_bytes(*expected)
                )));
            }
        }
        let seq = r.u64("seq")?;
        if seq != expected_seq {
            return Err(r.corrupt(format!("header has seq {seq:#x}")));
        }
        let kind = match r.u32("kind")? {
            0 => SegmentKind::Write,
            1 => SegmentKind::Gc,
            k => return Err(r.corrupt(format!("unknown segment kind {k}"))),
        };
        r.u32("n_records")?;
        r.u32("n_chunks")?;
        let chunk_size = r.u32("chunk size")?;
        check_chunk_size(chunk_size).map_err(|d| r.corrupt(d))?;
        let data_len = r.u64("data_len")?;
        let stored_len = r.u64("stored_len")?;
        let header_len = r.u32("header_len")?;
        Self::check_header_len(&r, n_records, n_chunks, header_len)?;
        r.reserved_u32("reserved")?;
        let write_seq_first = r.u64("first write seq")?;
        let write_seq_last = r.u64("last write seq")?;
        check_write_seq(write_seq_first, write_seq_last).map_err(|d| r.corrupt(d))?;

        let mut records = Vec::with_capacity(n_records as usize);
        for i in 0..n_records {
            let lba = r.u64("record lba")?;
            let len = r.u32("record len")?;
            let kind = match r.u16("record kind")? {
                0 => RecordKind::Data,
                1 => RecordKind::Discard,
                2 => RecordKind::GcCopy,
                k => return Err(r.corrupt(format!("record {i}: unknown kind {k}"))),
            };
            r.reserved_u16("record reserved")?;
            let src_seq = r.u64("record source seq")?;
            let src_off = r.u32("record source offset")?;
            r.reserved_u32("record reserved")?;
            let rec = Record {
                lba,
                len,
                kind,
                src_seq,
                src_off,
            };
            if let Some(p) = rec.problem() {
                return Err(r.corrupt(format!("record {i}: {p}")));
            }
            records.push(rec);
        }
        let blocks = data_blocks_of(&records).filter(|&b| b <= u64::from(u32::MAX));
        if blocks.and_then(|b| b.checked_mul(BLOCK_SIZE)) != Some(data_len) {
            return Err(r.corrupt(format!(
                "data_len {data_len} does not match the records' {blocks:?} blocks"
            )));
        }
        if u64::from(n_chunks) != data_len.div_ceil(u64::from(chunk_size)) {
            return Err(r.corrupt(format!(
                "{n_chunks} chunks for {data_len} bytes of data in chunks of {chunk_size}"
            )));
        }
        let mut chunks = Vec::with_capacity(n_chunks as usize);
        let mut next_off = 0u64;
        for k in 0..u64::from(n_chunks) {
            let stored_off = r.u64("chunk offset")?;
            let c_len = r.u32("chunk length")?;
            let crc = r.u32("chunk crc")?;
            let logical = (data_len - k * u64::from(chunk_size)).min(u64::from(chunk_size));
            if stored_off != next_off {
                return Err(r.corrupt(format!(
                    "chunk {k} stored at {stored_off}, expected {next_off}"
                )));
            }
            let c_len64 = u64::from(c_len);
            if c_len == 0 || c_len64 > logical || (!compressed && c_len64 != logical) {
                return Err(r.corrupt(format!(
                    "chunk {k} stored length {c_len} for {logical} logical bytes"
                )));
            }
            next_off += c_len64;
            chunks.push(ChunkEntry {
                stored_off,
                stored_len: c_len,
                crc,
            });
        }
        if next_off != stored_len {
            return Err(r.corrupt(format!("stored_len {stored_len}, chunks end at {next_off}")));
        }
        r.expect_end()?;
        match bytes.get(crc_end as usize..header_len as usize) {
            None => {
                return Err(Error::corrupt(
                    &what,
                    format!(
                        "truncated: header_len {header_len}, only {} bytes",
                        bytes.len()
                    ),
                ))
            }
            Some(pad) if pad.iter().any(|&b| b != 0) => {
                return Err(Error::corrupt(&what, "non-zero header padding"));
            }
            Some(_) => {}
        }
        Ok(SegmentHeader {
            uuid,
            seq,
            kind,
            compressed,
            chunk_size,
            data_len,
            stored_len,
            header_len,
            write_seq_first,
            write_seq_last,
            records,
            chunks,
        })
    }

    /// Logical data blocks in this segment.
    pub fn data_blocks(&self) -> u64 {
        self.data_len / BLOCK_SIZE
    }

    /// Length of the whole object: header, stored data, padding.
    pub fn object_len(&self) -> u64 {
        round_up(self.stored_len, BLOCK_SIZE)
            .and_then(|s| s.checked_add(u64::from(self.header_len)))
            .unwrap_or(u64::MAX)
    }

    /// For each record, the block offset of its first block in the logical
    /// data (`None` for discards).
    pub fn data_offsets(&self) -> Vec<Option<u32>> {
        let mut off = 0u32;
        self.records
            .iter()
            .map(|r| {
                r.kind.has_data().then(|| {
                    let o = off;
                    off = off.wrapping_add(r.len);
                    o
                })
            })
            .collect()
    }

    fn what(&self) -> String {
        segment_name(self.seq)
    }

    /// Logical byte range of chunk `k`.
    fn chunk_range(&self, k: usize) -> (u64, u64) {
        let cs = u64::from(self.chunk_size);
        let lo = k as u64 * cs;
        (lo, (lo + cs).min(self.data_len))
    }

    fn bad_table(&self, k: usize) -> Error {
        Error::corrupt(self.what(), format!("chunk {k}: inconsistent chunk table"))
    }

    fn chunk(&self, k: usize) -> Result<&ChunkEntry> {
        self.chunks
            .get(k)
            .ok_or_else(|| Error::corrupt(self.what(), format!("chunk {k} missing from table")))
    }

    fn check_chunk_crc(&self, k: usize, stored: &[u8]) -> Result<()> {
        let c = self.chunk(k)?;
        let crc = crc32c::crc32c(stored);
        if crc != c.crc || stored.len() != c.stored_len as usize {
            return Err(Error::corrupt(
                self.what(),
                format!(
                    "chunk {k}: crc32c mismatch (stored {:#010x}, computed {crc:#010x})",
                    c.crc
                ),
            ));
        }
        Ok(())
    }

    /// Decompress chunk `k` (crc already checked) into `out`, which must be
    /// exactly the chunk's logical length.
    fn inflate(
        &self,
        k: usize,
        stored: &[u8],
        out: &mut [u8],
        dec: &mut Option<zstd::bulk::Decompressor<'static>>,
    ) -> Result<()> {
        if stored.len() == out.len() {
            out.copy_from_slice(stored);
            return Ok(());
        }
        let d = match dec {
            Some(d) => d,
            None => dec.insert(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| Error::io(format!("zstd decompressor for {}", self.what()), e))?,
            ),
        };
        match d.decompress_to_buffer(stored, out) {
            Ok(n) if n == out.len() => Ok(()),
            Ok(n) => Err(Error::corrupt(
                self.what(),
                format!(
                    "chunk {k}: decompressed to {n} bytes, expected {}",
                    out.len()
                ),
            )),
            Err(e) => Err(Error::corrupt(self.what(), format!("chunk {k}: zstd: {e}"))),
        }
    }

    /// Read logical data bytes `[logical_off, logical_off + buf.len())` of
    /// this segment into `buf`.
    ///
    /// `read_stored(offset, dst)` must fill `dst` from byte `offset` of the
    /// object (header included). Only the chunks covering the range are read,
    /// in one `read_stored` call; each chunk's crc is checked and compressed
    /// chunks are decompressed. A range past `data_len` is
    /// [`Error::InvalidArgument`]; a crc mismatch is [`Error::Corrupt`]
    /// naming the segment and chunk. On error `buf` holds unspecified bytes.
    pub fn read_data(
        &self,
        logical_off: u64,
        buf: &mut [u8],
        read_stored: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let end = logical_off
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.data_len)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "read of {} bytes at {logical_off} past the {} data bytes of {}",
                    buf.len(),
                    self.data_len,
                    self.what()
                ))
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        let cs = u64::from(self.chunk_size);
        let k0 = (logical_off / cs) as usize;
        let k1 = ((end - 1) / cs) as usize + 1;
        let first = *self.chunk(k0)?;
        let last = *self.chunk(k1 - 1)?;
        let s_lo = first.stored_off;
        let s_hi = last.stored_off.saturating_add(u64::from(last.stored_len));
        let span = s_hi
            .checked_sub(s_lo)
            .filter(|&n| n <= 2 * buf.len() as u64 + 2 * cs)
            .ok_or_else(|| self.bad_table(k0))?;
        let obj_off = u64::from(self.header_len) + s_lo;
        let all_raw = (k0..k1).all(|k| {
            let (lo, hi) = self.chunk_range(k);
            self.chunks.get(k).map(|c| u64::from(c.stored_len)) == Some(hi - lo)
        });
        let (g_lo, _) = self.chunk_range(k0);
        let (_, g_hi) = self.chunk_range(k1 - 1);

        if all_raw && g_lo == logical_off && g_hi == end {
            // Chunk-aligned raw range: read straight into the caller's buffer.
            read_stored(obj_off, buf)?;
            for k in k0..k1 {
                let (lo, hi) = self.chunk_range(k);
                let piece = &buf[(lo - logical_off) as usize..(hi - logical_off) as usize];
                self.check_chunk_crc(k, piece)?;
            }
            return Ok(());
        }

        let mut stored = vec![0u8; span as usize];
        read_stored(obj_off, &mut stored)?;
        let mut dec = None;
        let mut tmp = Vec::new();
        for k in k0..k1 {
            let c = *self.chunk(k)?;
            let piece = c
                .stored_off
                .checked_sub(s_lo)
                .and_then(|at| stored.get(at as usize..at as usize + c.stored_len as usize))
                .ok_or_else(|| self.bad_table(k))?;
            self.check_chunk_crc(k, piece)?;
            let (lo, hi) = self.chunk_range(k);
            let want_lo = lo.max(logical_off);
            let want_hi = hi.min(end);
            let dst = &mut buf[(want_lo - logical_off) as usize..(want_hi - logical_off) as usize];
            if want_lo == lo && want_hi == hi {
                self.inflate(k, piece, dst, &mut dec)?;
            } else {
                tmp.resize((hi - lo) as usize, 0);
                self.inflate(k, piece, &mut tmp, &mut dec)?;
                dst.copy_from_slice(&tmp[(want_lo - lo) as usize..(want_hi - lo) as usize]);
            }
        }
        Ok(())
    }

    /// Check every chunk of a whole object held in memory: its length is
    /// exactly [`SegmentHeader::object_len`], every chunk crc matches, every
    /// compressed chunk inflates to its logical length and the padding is zero.
    pub fn verify_data(&self, object: &[u8]) -> Result<()> {
        if object.len() as u64 != self.object_len() {
            return Err(Error::corrupt(
                self.what(),
                format!(
                    "object is {} bytes, header says {}",
                    object.len(),
                    self.object_len()
                ),
            ));
        }
        let area = &object[self.header_len as usize..];
        let mut dec = None;
        let mut tmp = Vec::new();
        for k in 0..self.chunks.len() {
            let c = self.chunks[k];
            let piece = usize::try_from(c.stored_off)
                .ok()
                .and_then(|o| area.get(o..o.checked_add(c.stored_len as usize)?))
                .ok_or_else(|| Error::corrupt(self.what(), format!("chunk {k} out of range")))?;
            self.check_chunk_crc(k, piece)?;
            let (lo, hi) = self.chunk_range(k);
            tmp.resize((hi - lo) as usize, 0);
            self.inflate(k, piece, &mut tmp, &mut dec)?;
        }
        if area[self.stored_len as usize..].iter().any(|&b| b != 0) {
            return Err(Error::corrupt(self.what(), "non-zero data padding"));
        }
        Ok(())
    }
}

/// Decode the header of a whole segment object and verify all its data
/// (used by recovery and fsck).
pub fn decode_object(
    expected_uuid: Option<&[u8; 16]>,
    seq: u64,
    object: &[u8],
) -> Result<SegmentHeader> {
    let h = SegmentHeader::decode(expected_uuid, seq, object)?;
    h.verify_data(object)?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    const UUID: [u8; 16] = *b"0123456789abcdef";

    fn is_corrupt_seg(r: &Result<impl std::fmt::Debug>, seq: u64) -> bool {
        matches!(r, Err(Error::Corrupt { what, .. }) if *what == segment_name(seq))
    }

    /// Blocks of mixed content: zeros, text-like (compressible), random.
    fn mixed_data(blocks: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut d = vec![0u8; blocks * 4096];
        for b in d.chunks_mut(4096) {
            match rng.gen_range(0..3) {
                0 => {}
                1 => {
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = b"lsvd log segment "[i % 17];
                    }
                }
                _ => rng.fill(b),
            }
        }
        d
    }

    fn sample_records() -> Vec<Record> {
        vec![
            Record::data(100, 3),
            Record::discard(5, 1000),
            Record::gc_copy(7, 20, 3, 11),
            Record::data(u64::MAX - 10, 10),
        ]
    }

    fn build(c: Compression, chunk: u32, seq: u64) -> (Vec<u8>, Vec<u8>) {
        let data = mixed_data(33, seq);
        let obj = build_segment(
            &UUID,
            seq,
            SegmentKind::Write,
            &sample_records(),
            &data,
            c,
            chunk,
            (5, 9),
        )
        .unwrap();
        (obj, data)
    }

    /// read_data through a closure over the object, counting calls.
    fn read(h: &SegmentHeader, obj: &[u8], off: u64, len: usize) -> (Result<Vec<u8>>, usize) {
        let mut buf = vec![0xaa; len];
        let mut calls = 0;
        let r = h.read_data(off, &mut buf, &mut |o, dst| {
            calls += 1;
            let src = obj
                .get(o as usize..o as usize + dst.len())
                .ok_or_else(|| Error::InvalidArgument("read past end".into()))?;
            dst.copy_from_slice(src);
            Ok(())
        });
        (r.map(|()| buf), calls)
    }

    #[test]
    fn round_trip_and_reads() {
        for (c, chunk) in [
            (Compression::None, 4096),
            (Compression::Zstd, 65536),
            (Compression::Zstd, 8192),
        ] {
            let (obj, data) = build(c, chunk, 42);
            assert_eq!(obj.len() % 4096, 0);
            let hint = SegmentHeader::fixed_len_hint(&obj[..4096], 42).unwrap();
            let h = decode_object(Some(&UUID), 42, &obj).unwrap();
            assert_eq!(hint, h.header_len);
            assert_eq!(h.header_len, 4096);
            assert_eq!(h.object_len(), obj.len() as u64);
            assert_eq!(h.records, sample_records());
            assert_eq!(h.kind, SegmentKind::Write);
            assert_eq!(h.compressed, c == Compression::Zstd);
            assert_eq!(h.chunk_size, chunk);
            assert_eq!((h.write_seq_first, h.write_seq_last), (5, 9));
            assert_eq!(h.data_len, data.len() as u64);
            assert_eq!(h.data_blocks(), 33);
            assert_eq!(h.data_offsets(), vec![Some(0), None, Some(3), Some(23)]);
            assert_eq!(
                SegmentHeader::decode(None, 42, &obj[..4096]).unwrap(),
                h,
                "header alone decodes"
            );
            // Whole, block-aligned and unaligned ranges.
            for (off, len) in [
                (0u64, data.len()),
                (4096, 4096),
                (8192 * 3, 3 * 4096),
                (1, 1),
                (4095, 2),
                (65535, 9000),
                (data.len() as u64 - 5, 5),
                (7, 0),
            ] {
                let (got, calls) = read(&h, &obj, off, len);
                assert_eq!(
                    got.unwrap(),
                    &data[off as usize..off as usize + len],
                    "{c:?} {off} {len}"
                );
                assert!(calls <= 1);
            }
            let (r, calls) = read(&h, &obj, data.len() as u64 - 4095, 4096);
            assert!(matches!(r, Err(Error::InvalidArgument(_))));
            assert_eq!(calls, 0);
        }
    }

    #[test]
    fn reads_touch_only_covering_chunks() {
        let (obj, data) = build(Compression::None, 4096, 3);
        let h = SegmentHeader::decode(Some(&UUID), 3, &obj).unwrap();
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 8192];
        h.read_data(4096 * 5, &mut buf, &mut |o, dst| {
            seen.push((o, dst.len()));
            dst.copy_from_slice(&obj[o as usize..o as usize + dst.len()]);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(4096 + 4096 * 5, 8192)]);
        assert_eq!(buf, &data[4096 * 5..4096 * 7]);
    }

    #[test]
    fn zstd_shrinks_compressible_and_stores_random_raw() {
        let zeros = vec![0u8; 64 * 4096];
        let recs = [Record::data(0, 64)];
        let obj = build_segment(
            &UUID,
            1,
            SegmentKind::Write,
            &recs,
            &zeros,
            Compression::Zstd,
            65536,
            (1, 1),
        )
        .unwrap();
        let h = decode_object(Some(&UUID), 1, &obj).unwrap();
        assert!(h.stored_len < 1000, "zeros stored in {}", h.stored_len);
        assert!(h.chunks.iter().all(|c| c.stored_len < 65536));
        assert_eq!(read(&h, &obj, 0, zeros.len()).0.unwrap(), zeros);

        let mut rnd = vec![0u8; 64 * 4096];
        rand::rngs::StdRng::seed_from_u64(9).fill(&mut rnd[..]);
        let obj = build_segment(
            &UUID,
            2,
            SegmentKind::Gc,
            &recs,
            &rnd,
            Compression::Zstd,
            65536,
            (0, 0),
        )
        .unwrap();
        let h = decode_object(Some(&UUID), 2, &obj).unwrap();
        assert_eq!(h.stored_len, h.data_len, "random data is stored raw");
        assert!(h.chunks.iter().all(|c| c.stored_len == 65536));
        assert_eq!(h.kind, SegmentKind::Gc);
        assert_eq!(read(&h, &obj, 100, 70000).0.unwrap(), &rnd[100..70100]);
    }

    #[test]
    fn build_rejects_bad_arguments() {
        type Case = (Vec<Record>, usize, u32, (u64, u64));
        let cases: Vec<Case> = vec![
            (vec![Record::data(0, 1)], 8192, 4096, (0, 0)), // data length
            (
                vec![Record::data(0, 0), Record::data(0, 1)],
                4096,
                4096,
                (0, 0),
            ),
            (vec![Record::data(u64::MAX, 1)], 4096, 4096, (0, 0)),
            (vec![Record::data(0, 1)], 4096, 1000, (0, 0)), // chunk size
            (vec![Record::data(0, 1)], 4096, 0, (0, 0)),
            (vec![Record::data(0, 1)], 4096, 4096, (0, 3)), // write seq
            (vec![Record::data(0, 1)], 4096, 4096, (4, 3)),
            (
                vec![Record {
                    src_seq: 1,
                    ..Record::data(0, 1)
                }],
                4096,
                4096,
                (0, 0),
            ),
            (vec![Record::gc_copy(0, 1, 1, u32::MAX)], 4096, 4096, (0, 0)),
        ];
        for (recs, n, chunk, ws) in cases {
            let data = vec![0u8; n];
            let r = build_segment(
                &UUID,
                1,
                SegmentKind::Write,
                &recs,
                &data,
                Compression::None,
                chunk,
                ws,
            );
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{recs:?} {n} {chunk}"
            );
        }
    }

    #[test]
    fn empty_and_discard_only_segments() {
        let recs = [Record::discard(0, 8)];
        for recs in [&recs[..], &[]] {
            let obj = build_segment(
                &UUID,
                7,
                SegmentKind::Write,
                recs,
                &[],
                Compression::Zstd,
                65536,
                (3, 3),
            )
            .unwrap();
            assert_eq!(obj.len(), 4096);
            let h = decode_object(Some(&UUID), 7, &obj).unwrap();
            assert!(h.chunks.is_empty());
            assert_eq!(h.records, recs);
            assert_eq!(read(&h, &obj, 0, 0).0.unwrap(), Vec::<u8>::new());
        }
    }

    #[test]
    fn large_header_spans_several_blocks() {
        let recs: Vec<Record> = (0..300).map(|i| Record::discard(i * 10, 5)).collect();
        let mut all = recs.clone();
        all.push(Record::data(1, 2));
        let data = mixed_data(2, 1);
        let obj = build_segment(
            &UUID,
            8,
            SegmentKind::Write,
            &all,
            &data,
            Compression::None,
            4096,
            (1, 2),
        )
        .unwrap();
        let hl = SegmentHeader::fixed_len_hint(&obj[..4096], 8).unwrap();
        assert_eq!(hl, 12288);
        assert!(is_corrupt_seg(
            &SegmentHeader::decode(None, 8, &obj[..4096]),
            8
        ));
        let h = SegmentHeader::decode(None, 8, &obj[..hl as usize]).unwrap();
        assert_eq!(h.records, all);
        assert_eq!(read(&h, &obj, 4096, 4096).0.unwrap(), &data[4096..]);
    }

    #[test]
    fn wrong_uuid_or_seq_is_refused() {
        let (obj, _) = build(Compression::None, 4096, 5);
        assert!(is_corrupt_seg(
            &SegmentHeader::decode(Some(b"xxxxxxxxxxxxxxxx"), 5, &obj),
            5
        ));
        assert!(is_corrupt_seg(
            &SegmentHeader::decode(Some(&UUID), 6, &obj),
            6
        ));
        assert!(is_corrupt_seg(&decode_object(Some(&UUID), 4, &obj), 4));
        assert!(is_corrupt_seg(&SegmentHeader::fixed_len_hint(&obj, 6), 6));
        assert!(SegmentHeader::decode(None, 5, &obj).is_ok());
    }

    #[test]
    fn every_header_bit_flip_is_corrupt() {
        for c in [Compression::None, Compression::Zstd] {
            let (obj, _) = build(c, c.chunk_size(), 11);
            let h = SegmentHeader::decode(Some(&UUID), 11, &obj).unwrap();
            for bit in 0..h.header_len as usize * 8 {
                let mut b = obj[..h.header_len as usize].to_vec();
                b[bit / 8] ^= 1 << (bit % 8);
                let r = SegmentHeader::decode(Some(&UUID), 11, &b);
                assert!(is_corrupt_seg(&r, 11), "bit {bit}: {r:?}");
                // The hint either refuses or still names a sane length.
                if let Ok(l) = SegmentHeader::fixed_len_hint(&b, 11) {
                    assert_eq!(l % 4096, 0);
                }
            }
        }
    }

    #[test]
    fn data_bit_flips_are_caught() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for c in [Compression::None, Compression::Zstd] {
            let (obj, data) = build(c, c.chunk_size(), 12);
            let h = decode_object(Some(&UUID), 12, &obj).unwrap();
            let area = h.header_len as usize..obj.len();
            for _ in 0..400 {
                let byte = rng.gen_range(area.clone());
                let mut b = obj.clone();
                b[byte] ^= 1 << rng.gen_range(0..8);
                assert!(is_corrupt_seg(&h.verify_data(&b), 12), "byte {byte}");
                let rel = (byte - h.header_len as usize) as u64;
                if rel < h.stored_len {
                    let (r, _) = read(&h, &b, 0, data.len());
                    match r {
                        Err(Error::Corrupt { what, detail }) => {
                            assert_eq!(what, segment_name(12));
                            assert!(detail.contains("chunk"), "{detail}");
                        }
                        other => panic!("byte {byte}: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn every_truncation_fails() {
        let (obj, _) = build(Compression::Zstd, 65536, 13);
        let h = SegmentHeader::decode(None, 13, &obj).unwrap();
        for len in 0..obj.len() {
            assert!(
                is_corrupt_seg(&decode_object(None, 13, &obj[..len]), 13),
                "{len}"
            );
            if len < h.header_len as usize {
                assert!(is_corrupt_seg(
                    &SegmentHeader::decode(None, 13, &obj[..len]),
                    13
                ));
            }
            if len < FIXED_HEADER_LEN {
                assert!(is_corrupt_seg(
                    &SegmentHeader::fixed_len_hint(&obj[..len], 13),
                    13
                ));
            }
        }
        let mut longer = obj.clone();
        longer.extend_from_slice(&[0; 4096]);
        assert!(is_corrupt_seg(&decode_object(None, 13, &longer), 13));
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (0u64..1 << 40, 1u32..12, 0u8..3, 1u64..1000, 0u32..5000).prop_map(|(lba, len, k, s, o)| {
            match k {
                0 => Record::data(lba, len),
                1 => Record::discard(lba, len),
                _ => Record::gc_copy(lba, len, s, o),
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn prop_round_trip(
            records in proptest::collection::vec(arb_record(), 0..20),
            seed in any::<u64>(),
            zstd in any::<bool>(),
            chunk_blocks in prop_oneof![Just(1u32), Just(2), Just(16)],
            reads in proptest::collection::vec((any::<u64>(), 0usize..100_000), 8),
        ) {
            let blocks: u64 = records.iter().filter(|r| r.kind.has_data()).map(|r| u64::from(r.len)).sum();
            let data = mixed_data(blocks as usize, seed);
            let c = if zstd { Compression::Zstd } else { Compression::None };
            let chunk = chunk_blocks * 4096;
            let obj = build_segment(&UUID, seed, SegmentKind::Gc, &records, &data, c, chunk, (0, 0)).unwrap();
            let h = decode_object(Some(&UUID), seed, &obj).unwrap();
            prop_assert_eq!(&h.records, &records);
            prop_assert_eq!(h.data_len, data.len() as u64);
            prop_assert_eq!(h.object_len(), obj.len() as u64);
            let offs = h.data_offsets();
            let mut next = 0u32;
            for (r, o) in records.iter().zip(&offs) {
                if r.kind.has_data() {
                    prop_assert_eq!(*o, Some(next));
                    next += r.len;
                } else {
                    prop_assert_eq!(*o, None);
                }
            }
            if !data.is_empty() {
                for (off, len) in reads {
                    let off = off % data.len() as u64;
                    let len = len.min(data.len() - off as usize);
                    let (got, calls) = read(&h, &obj, off, len);
                    prop_assert_eq!(got.unwrap(), &data[off as usize..off as usize + len]);
                    prop_assert!(calls <= 1);
                }
            }
        }
    }
}
