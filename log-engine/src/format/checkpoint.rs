//! Checkpoints: a manifest (`ckpt.<C:016x>`) plus bounded map parts
//! (`ckpt.<C:016x>.<k:08x>`), layout in `FORMAT.md`. Parts are written
//! first, the manifest last: the manifest is what makes a checkpoint exist.
//!
//! Invariants of a decoded [`Manifest`]: `next_seq > ckpt_seq`; parts have
//! `1..=PART_MAX_EXTENTS` extents, strictly increasing `first_lba` and
//! `blob_len` equal to the exact encoded size; segment entries are strictly
//! increasing by seq, below `next_seq`, with `live_blocks <= data_blocks`.
//!
//! Invariants of a decoded part: extents have `len >= 1`, are sorted by lba
//! and do not overlap, start at the manifest entry's `first_lba`, and point
//! only at segments with `1 <= seq <= ckpt_seq`. Checking that the last
//! extent of part `k` ends before part `k + 1`'s `first_lba` is left to the
//! caller, which sees both.

use super::codec::{check_crc, check_version, Reader, Writer, CRC_LEN};
use crate::extent_map::MapExtent;
use crate::{Error, Result};

/// Magic of a checkpoint manifest.
pub const MANIFEST_MAGIC: &[u8; 8] = b"LSVDCKPT";
/// Magic of a checkpoint map part.
pub const PART_MAGIC: &[u8; 8] = b"LSVDMAPP";
/// Most extents in one map part (24 MiB of extents).
pub const PART_MAX_EXTENTS: usize = 1 << 20;
/// Encoded `unit` meaning "no unit".
pub const NO_UNIT: u32 = u32::MAX;

const MANIFEST_FIXED_LEN: usize = 64;
const PART_FIXED_LEN: usize = 48;
const PART_ENTRY_LEN: usize = 24;
const SEGMENT_ENTRY_LEN: usize = 24;
const EXTENT_LEN: usize = 24;
const FLAG_ZOMBIE: u32 = 1;

/// Per-segment accounting saved in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentStat {
    pub seq: u64,
    /// Logical data blocks in the segment.
    pub data_blocks: u32,
    /// Blocks the map still points at.
    pub live_blocks: u32,
    /// No longer referenced; deletion pending.
    pub zombie: bool,
    /// Zone holding the segment on zoned stores. `Some(u32::MAX)` is not
    /// representable and is stored as `None`.
    pub unit: Option<u32>,
}

/// A manifest's description of one map part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartEntry {
    /// Lba of the part's first extent.
    pub first_lba: u64,
    pub n_extents: u32,
    /// The part blob's own trailing crc32c (the crc of the blob without its
    /// last 4 bytes). Not the crc of the whole blob: that is the same
    /// constant for every well-formed blob.
    pub crc: u32,
    /// Exact length of the part blob.
    pub blob_len: u64,
}

impl PartEntry {
    /// The manifest entry for a part blob made by [`encode_part`] from
    /// `extents`.
    pub fn of(extents: &[MapExtent], blob: &[u8]) -> PartEntry {
        let mut crc = [0u8; 4];
        if let Some(tail) = blob.len().checked_sub(CRC_LEN).and_then(|s| blob.get(s..)) {
            crc.copy_from_slice(tail);
        }
        PartEntry {
            first_lba: extents.first().map_or(0, |e| e.lba),
            n_extents: extents.len() as u32,
            crc: u32::from_le_bytes(crc),
            blob_len: blob.len() as u64,
        }
    }
}

/// The checkpoint manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub uuid: [u8; 16],
    /// `C`: the state after applying every segment with seq <= C.
    pub ckpt_seq: u64,
    /// Next segment seq to assign.
    pub next_seq: u64,
    /// Last client write sequence number covered.
    pub last_write_seq: u64,
    pub parts: Vec<PartEntry>,
    pub segments: Vec<SegmentStat>,
}

/// Name of manifest `seq`: `ckpt.<seq:016x>`.
pub fn manifest_name(seq: u64) -> String {
    format!("ckpt.{seq:016x}")
}

/// Name of map part `k` of checkpoint `seq`: `ckpt.<seq:016x>.<k:08x>`.
pub fn part_name(seq: u64, k: u32) -> String {
    format!("ckpt.{seq:016x}.{k:08x}")
}

fn parse_hex<const N: usize>(s: &str) -> Option<u64> {
    if s.len() != N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// The seq of a manifest name (`ckpt.` + 16 lower-case hex digits); `None`
/// for anything else, part names included.
pub fn parse_manifest_name(name: &str) -> Option<u64> {
    parse_hex::<16>(name.strip_prefix("ckpt.")?)
}

/// `(seq, k)` of a part name (`ckpt.<16 hex>.<8 hex>`); `None` otherwise.
pub fn parse_part_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("ckpt.")?;
    let (seq, k) = rest.split_once('.')?;
    Some((parse_hex::<16>(seq)?, parse_hex::<8>(k)? as u32))
}

fn manifest_what(seq: u64) -> String {
    format!("checkpoint manifest {}", manifest_name(seq))
}

fn part_what(seq: u64, k: u32) -> String {
    format!("checkpoint part {}", part_name(seq, k))
}

/// Exact blob length of a part holding `n` extents.
pub fn part_blob_len(n: u64) -> u64 {
    (PART_FIXED_LEN + CRC_LEN) as u64 + n * EXTENT_LEN as u64
}

/// Split a sorted extent list into parts of at most `max` extents (`max` 0
/// is taken as 1). Never yields an empty part.
pub fn split_into_parts(extents: &[MapExtent], max: usize) -> Vec<&[MapExtent]> {
    extents.chunks(max.max(1)).collect()
}

impl Manifest {
    /// Encode as in `FORMAT.md`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(
            MANIFEST_FIXED_LEN
                + PART_ENTRY_LEN * self.parts.len()
                + SEGMENT_ENTRY_LEN * self.segments.len()
                + CRC_LEN,
        );
        w.bytes(MANIFEST_MAGIC)
            .u32(super::VERSION)
            .u32(0)
            .bytes(&self.uuid)
            .u64(self.ckpt_seq)
            .u64(self.next_seq)
            .u64(self.last_write_seq)
            .u32(self.parts.len() as u32)
            .u32(self.segments.len() as u32);
        for p in &self.parts {
            w.u64(p.first_lba)
                .u32(p.n_extents)
                .u32(p.crc)
                .u64(p.blob_len);
        }
        for s in &self.segments {
            w.u64(s.seq)
                .u32(s.data_blocks)
                .u32(s.live_blocks)
                .u32(if s.zombie { FLAG_ZOMBIE } else { 0 })
                .u32(s.unit.unwrap_or(NO_UNIT));
        }
        w.finish_with_crc()
    }

    /// Decode and validate manifest `ckpt.<expected_seq>` of image
    /// `expected_uuid` (exactly the stored blob).
    pub fn decode(expected_uuid: &[u8; 16], expected_seq: u64, bytes: &[u8]) -> Result<Manifest> {
        let what = manifest_what(expected_seq);
        Reader::new(&what, bytes).magic(MANIFEST_MAGIC)?;
        let body = check_crc(&what, bytes)?;
        let mut r = Reader::new(&what, body);
        r.magic(MANIFEST_MAGIC)?;
        check_version(&what, r.u32("version")?)?;
        r.reserved_u32("flags")?;
        let uuid = r.uuid("uuid")?;
        if &uuid != expected_uuid {
            return Err(r.corrupt(format!(
                "belongs to image {}, expected {}",
                uuid::Uuid::from_bytes(uuid),
                uuid::Uuid::from_bytes(*expected_uuid)
            )));
        }
        let ckpt_seq = r.u64("checkpoint seq")?;
        if ckpt_seq != expected_seq {
            return Err(r.corrupt(format!("holds checkpoint seq {ckpt_seq:#x}")));
        }
        let next_seq = r.u64("next seq")?;
        if next_seq <= ckpt_seq {
            return Err(r.corrupt(format!("next seq {next_seq} <= checkpoint seq {ckpt_seq}")));
        }
        let last_write_seq = r.u64("last write seq")?;
        let n_parts = r.u32("n_parts")? as usize;
        let n_segments = r.u32("n_segments")? as usize;
        let need =
            n_parts as u64 * PART_ENTRY_LEN as u64 + n_segments as u64 * SEGMENT_ENTRY_LEN as u64;
        if need != r.remaining() as u64 {
            return Err(r.corrupt(format!(
                "{n_parts} parts and {n_segments} segments need {need} bytes, have {}",
                r.remaining()
            )));
        }
        let mut parts: Vec<PartEntry> = Vec::with_capacity(n_parts);
        for k in 0..n_parts {
            let p = PartEntry {
                first_lba: r.u64("part first lba")?,
                n_extents: r.u32("part extents")?,
                crc: r.u32("part crc")?,
                blob_len: r.u64("part blob length")?,
            };
            if p.n_extents == 0 || p.n_extents as usize > PART_MAX_EXTENTS {
                return Err(r.corrupt(format!("part {k}: {} extents", p.n_extents)));
            }
            if p.blob_len != part_blob_len(u64::from(p.n_extents)) {
                return Err(r.corrupt(format!(
                    "part {k}: blob length {} for {} extents",
                    p.blob_len, p.n_extents
                )));
            }
            if let Some(prev) = parts.last() {
                if p.first_lba <= prev.first_lba {
                    return Err(r.corrupt(format!("part {k}: first lba not increasing")));
                }
            }
            parts.push(p);
        }
        let mut segments: Vec<SegmentStat> = Vec::with_capacity(n_segments);
        for i in 0..n_segments {
            let seq = r.u64("segment seq")?;
            let data_blocks = r.u32("segment data blocks")?;
            let live_blocks = r.u32("segment live blocks")?;
            let flags = r.u32("segment flags")?;
            let unit = r.u32("segment unit")?;
            if flags & !FLAG_ZOMBIE != 0 {
                return Err(r.corrupt(format!("segment entry {i}: unknown flags {flags:#x}")));
            }
            if live_blocks > data_blocks {
                return Err(r.corrupt(format!(
                    "segment {seq:016x}: {live_blocks} live of {data_blocks} blocks"
                )));
            }
            if seq >= next_seq || segments.last().is_some_and(|s| s.seq >= seq) {
                return Err(r.corrupt(format!(
                    "segment entry {i}: seq {seq:#x} out of order or >= next seq"
                )));
            }
            segments.push(SegmentStat {
                seq,
                data_blocks,
                live_blocks,
                zombie: flags & FLAG_ZOMBIE != 0,
                unit: (unit != NO_UNIT).then_some(unit),
            });
        }
        r.expect_end()?;
        Ok(Manifest {
            uuid,
            ckpt_seq,
            next_seq,
            last_write_seq,
            parts,
            segments,
        })
    }
}

/// Encode map part `index` of checkpoint `ckpt_seq`. `extents` should be
/// sorted, non-overlapping, non-empty and at most [`PART_MAX_EXTENTS`] long
/// (as [`split_into_parts`] yields): [`decode_part`] refuses anything else.
/// Describe it in the manifest with [`PartEntry::of`].
pub fn encode_part(uuid: &[u8; 16], ckpt_seq: u64, index: u32, extents: &[MapExtent]) -> Vec<u8> {
    let mut w = Writer::with_capacity(part_blob_len(extents.len() as u64) as usize);
    w.bytes(PART_MAGIC)
        .u32(super::VERSION)
        .u32(index)
        .bytes(uuid)
        .u64(ckpt_seq)
        .u32(extents.len() as u32)
        .u32(0);
    for e in extents {
        w.u64(e.lba).u32(e.len).u32(e.seg_off).u64(e.seq);
    }
    w.finish_with_crc()
}

/// Decode map part `index` of checkpoint `ckpt_seq`, checking it against the
/// manifest's `entry` (length, crc, count, first lba) and the invariants in
/// the module docs.
pub fn decode_part(
    uuid: &[u8; 16],
    ckpt_seq: u64,
    index: u32,
    entry: &PartEntry,
    bytes: &[u8],
) -> Result<Vec<MapExtent>> {
    let what = part_what(ckpt_seq, index);
    Reader::new(&what, bytes).magic(PART_MAGIC)?;
    if bytes.len() as u64 != entry.blob_len {
        return Err(Error::corrupt(
            &what,
            format!("{} bytes, manifest says {}", bytes.len(), entry.blob_len),
        ));
    }
    let body = check_crc(&what, bytes)?;
    let mut r = Reader::new(&what, body);
    r.magic(PART_MAGIC)?;
    check_version(&what, r.u32("version")?)?;
    let crc = crc32c::crc32c(body);
    if crc != entry.crc {
        return Err(r.corrupt(format!(
            "crc32c {crc:#010x} differs from the manifest's {:#010x} (stale part?)",
            entry.crc
        )));
    }
    let k = r.u32("part index")?;
    if k != index {
        return Err(r.corrupt(format!("holds part index {k}")));
    }
    if &r.uuid("uuid")? != uuid {
        return Err(r.corrupt("belongs to another image"));
    }
    let c = r.u64("checkpoint seq")?;
    if c != ckpt_seq {
        return Err(r.corrupt(format!("holds checkpoint seq {c:#x}")));
    }
    let n = r.u32("n_extents")?;
    r.reserved_u32("reserved")?;
    if n != entry.n_extents || n == 0 || n as usize > PART_MAX_EXTENTS {
        return Err(r.corrupt(format!("{n} extents, manifest says {}", entry.n_extents)));
    }
    if r.remaining() != n as usize * EXTENT_LEN {
        return Err(r.corrupt(format!("{n} extents in {} bytes", r.remaining())));
    }
    let mut out: Vec<MapExtent> = Vec::with_capacity(n as usize);
    for i in 0..n {
        let e = MapExtent {
            lba: r.u64("extent lba")?,
            len: r.u32("extent len")?,
            seg_off: r.u32("extent segment offset")?,
            seq: r.u64("extent seq")?,
        };
        let bad = |d: String| Error::corrupt(&what, format!("extent {i}: {d}"));
        if e.len == 0 {
            return Err(bad("length 0".into()));
        }
        if e.lba.checked_add(u64::from(e.len)).is_none() || e.seg_off.checked_add(e.len).is_none() {
            return Err(bad("range overflows".into()));
        }
        if e.seq == 0 || e.seq > ckpt_seq {
            return Err(bad(format!(
                "segment seq {:#x} outside 1..={ckpt_seq:#x}",
                e.seq
            )));
        }
        match out.last() {
            None if e.lba != entry.first_lba => {
                return Err(bad(format!(
                    "first lba {}, manifest says {}",
                    e.lba, entry.first_lba
                )))
            }
            Some(p) if p.lba + u64::from(p.len) > e.lba => {
                return Err(bad(format!(
                    "lba {} overlaps or precedes the previous extent",
                    e.lba
                )))
            }
            _ => {}
        }
        out.push(e);
    }
    r.expect_end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UUID: [u8; 16] = *b"fedcba9876543210";

    fn ext(lba: u64, len: u32, seg_off: u32, seq: u64) -> MapExtent {
        MapExtent {
            lba,
            len,
            seg_off,
            seq,
        }
    }

    fn extents() -> Vec<MapExtent> {
        vec![
            ext(0, 3, 0, 1),
            ext(3, 1, 9, 4),
            ext(100, 70, 0, 7),
            ext(1 << 39, 2, 5, 7),
        ]
    }

    fn manifest() -> Manifest {
        let ex = extents();
        let blob = encode_part(&UUID, 7, 0, &ex);
        Manifest {
            uuid: UUID,
            ckpt_seq: 7,
            next_seq: 9,
            last_write_seq: 12345,
            parts: vec![PartEntry::of(&ex, &blob)],
            segments: vec![
                SegmentStat {
                    seq: 1,
                    data_blocks: 3,
                    live_blocks: 3,
                    zombie: false,
                    unit: None,
                },
                SegmentStat {
                    seq: 2,
                    data_blocks: 8,
                    live_blocks: 0,
                    zombie: true,
                    unit: Some(4),
                },
            ],
        }
    }

    fn is_corrupt_named<T: std::fmt::Debug>(r: &Result<T>, name: &str) -> bool {
        matches!(r, Err(Error::Corrupt { what, .. }) if what.ends_with(name))
    }

    #[test]
    fn names() {
        assert_eq!(manifest_name(0x2a), "ckpt.000000000000002a");
        assert_eq!(part_name(0x2a, 3), "ckpt.000000000000002a.00000003");
        assert_eq!(parse_manifest_name("ckpt.000000000000002a"), Some(0x2a));
        assert_eq!(
            parse_manifest_name(&manifest_name(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "ckpt.000000000000002a.00000003",
            "ckpt.000000000000002A",
            "ckpt.00000000000002a",
            "ckpt.+00000000000002a",
            "superblock",
            "ckpt.",
        ] {
            assert_eq!(parse_manifest_name(bad), None, "{bad}");
        }
        assert_eq!(
            parse_part_name("ckpt.000000000000002a.00000003"),
            Some((0x2a, 3))
        );
        assert_eq!(parse_part_name("ckpt.000000000000002a"), None);
        assert_eq!(parse_part_name("ckpt.000000000000002a.3"), None);
    }

    #[test]
    fn manifest_round_trip() {
        let m = manifest();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&UUID, 7, &bytes).unwrap(), m);
        let empty = Manifest {
            parts: vec![],
            segments: vec![],
            ckpt_seq: 0,
            next_seq: 1,
            ..m
        };
        assert_eq!(Manifest::decode(&UUID, 0, &empty.encode()).unwrap(), empty);
    }

    #[test]
    fn manifest_wrong_uuid_or_seq() {
        let bytes = manifest().encode();
        let name = manifest_name(7);
        assert!(is_corrupt_named(
            &Manifest::decode(b"0000000000000000", 7, &bytes),
            &name
        ));
        assert!(is_corrupt_named(
            &Manifest::decode(&UUID, 8, &bytes),
            &manifest_name(8)
        ));
    }

    #[test]
    fn manifest_invariants_are_checked() {
        let bad = [
            Manifest {
                next_seq: 7,
                ..manifest()
            },
            Manifest {
                segments: vec![manifest().segments[1], manifest().segments[0]],
                ..manifest()
            },
            Manifest {
                segments: vec![SegmentStat {
                    seq: 9,
                    ..manifest().segments[0]
                }],
                ..manifest()
            },
            Manifest {
                segments: vec![SegmentStat {
                    live_blocks: 4,
                    ..manifest().segments[0]
                }],
                ..manifest()
            },
            Manifest {
                parts: vec![manifest().parts[0], manifest().parts[0]],
                ..manifest()
            },
            Manifest {
                parts: vec![PartEntry {
                    blob_len: 99,
                    ..manifest().parts[0]
                }],
                ..manifest()
            },
            Manifest {
                parts: vec![PartEntry {
                    n_extents: 0,
                    blob_len: part_blob_len(0),
                    ..manifest().parts[0]
                }],
                ..manifest()
            },
        ];
        for m in bad {
            let r = Manifest::decode(&UUID, 7, &m.encode());
            assert!(is_corrupt_named(&r, &manifest_name(7)), "{m:?}");
        }
    }

    #[test]
    fn manifest_bit_flips_and_truncations() {
        let bytes = manifest().encode();
        let name = manifest_name(7);
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                is_corrupt_named(&Manifest::decode(&UUID, 7, &b), &name),
                "bit {bit}"
            );
        }
        for len in 0..bytes.len() {
            assert!(is_corrupt_named(
                &Manifest::decode(&UUID, 7, &bytes[..len]),
                &name
            ));
        }
    }

    #[test]
    fn part_round_trip_and_entry() {
        let ex = extents();
        let blob = encode_part(&UUID, 7, 3, &ex);
        let entry = PartEntry::of(&ex, &blob);
        assert_eq!(entry.first_lba, 0);
        assert_eq!(entry.n_extents, 4);
        assert_eq!(entry.blob_len, blob.len() as u64);
        assert_eq!(blob.len() as u64, part_blob_len(4));
        assert_eq!(decode_part(&UUID, 7, 3, &entry, &blob).unwrap(), ex);
    }

    #[test]
    fn part_whole_blob_crc_is_constant() {
        // Why the manifest stores the part's own crc, not the whole blob's.
        let a = encode_part(&UUID, 7, 0, &extents());
        let b = encode_part(&UUID, 8, 1, &extents()[..1]);
        assert_eq!(crc32c::crc32c(&a), crc32c::crc32c(&b));
        assert_ne!(
            PartEntry::of(&extents(), &a).crc,
            PartEntry::of(&extents()[..1], &b).crc
        );
    }

    #[test]
    fn part_mismatches_are_refused() {
        let ex = extents();
        let blob = encode_part(&UUID, 7, 3, &ex);
        let entry = PartEntry::of(&ex, &blob);
        let name = part_name(7, 3);
        // Another image, checkpoint or index.
        assert!(is_corrupt_named(
            &decode_part(b"0000000000000000", 7, 3, &entry, &blob),
            &name
        ));
        assert!(is_corrupt_named(
            &decode_part(&UUID, 8, 3, &entry, &blob),
            &part_name(8, 3)
        ));
        assert!(is_corrupt_named(
            &decode_part(&UUID, 7, 2, &entry, &blob),
            &part_name(7, 2)
        ));
        // A stale part of the same size: crc differs from the manifest's.
        let mut other = ex.clone();
        other[1].seg_off = 10;
        let stale = encode_part(&UUID, 7, 3, &other);
        assert_eq!(stale.len(), blob.len());
        assert!(is_corrupt_named(
            &decode_part(&UUID, 7, 3, &entry, &stale),
            &name
        ));
    }

    #[test]
    fn part_invariants_are_checked() {
        let bad = [
            vec![ext(5, 3, 0, 1), ext(2, 1, 0, 1)], // unsorted
            vec![ext(5, 3, 0, 1), ext(7, 1, 0, 1)], // overlap
            vec![ext(5, 0, 0, 1)],                  // empty extent
            vec![ext(5, 1, 0, 8)],                  // seq > C
            vec![ext(5, 1, 0, 0)],                  // seq 0
            vec![ext(u64::MAX, 1, 0, 1)],           // overflow
            vec![ext(5, 2, u32::MAX, 1)],           // offset overflow
        ];
        for ex in bad {
            let blob = encode_part(&UUID, 7, 0, &ex);
            let entry = PartEntry::of(&ex, &blob);
            assert!(
                is_corrupt_named(&decode_part(&UUID, 7, 0, &entry, &blob), &part_name(7, 0)),
                "{ex:?}"
            );
        }
        // first_lba disagreeing with the manifest.
        let ex = extents();
        let blob = encode_part(&UUID, 7, 0, &ex);
        let entry = PartEntry {
            first_lba: 1,
            ..PartEntry::of(&ex, &blob)
        };
        assert!(decode_part(&UUID, 7, 0, &entry, &blob).is_err());
    }

    #[test]
    fn part_bit_flips_and_truncations() {
        let ex = extents();
        let blob = encode_part(&UUID, 7, 1, &ex);
        let entry = PartEntry::of(&ex, &blob);
        let name = part_name(7, 1);
        for bit in 0..blob.len() * 8 {
            let mut b = blob.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                is_corrupt_named(&decode_part(&UUID, 7, 1, &entry, &b), &name),
                "bit {bit}"
            );
        }
        for len in 0..blob.len() {
            assert!(is_corrupt_named(
                &decode_part(&UUID, 7, 1, &entry, &blob[..len]),
                &name
            ));
        }
    }

    #[test]
    fn split_bounds_parts() {
        let ex: Vec<MapExtent> = (0..10).map(|i| ext(i * 2, 1, 0, 1)).collect();
        let parts = split_into_parts(&ex, 4);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(parts.concat(), ex);
        assert_eq!(split_into_parts(&ex, 0).len(), 10);
        assert!(split_into_parts(&[], 4).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn prop_checkpoint_round_trip(
            gaps in proptest::collection::vec((0u64..1000, 1u32..500, any::<u32>(), 1u64..50), 0..60),
            max in 1usize..8,
            segs in proptest::collection::vec((1u64..5, any::<u32>(), any::<u32>(), any::<bool>(), proptest::option::of(0u32..u32::MAX)), 0..10),
        ) {
            let mut lba = 0u64;
            let mut ex = Vec::new();
            for (gap, len, off, seq) in gaps {
                lba += gap;
                ex.push(ext(lba, len, off / 2, seq));
                lba += u64::from(len);
            }
            let mut seq = 0u64;
            let segments: Vec<SegmentStat> = segs.into_iter().map(|(d, a, b, zombie, unit)| {
                seq += d;
                SegmentStat { seq, data_blocks: a.max(b), live_blocks: a.min(b), zombie, unit }
            }).collect();
            let parts = split_into_parts(&ex, max);
            let blobs: Vec<Vec<u8>> = parts.iter().enumerate()
                .map(|(k, p)| encode_part(&UUID, 50, k as u32, p)).collect();
            let m = Manifest {
                uuid: UUID,
                ckpt_seq: 50,
                next_seq: 51 + seq,
                last_write_seq: 3,
                parts: parts.iter().zip(&blobs).map(|(p, b)| PartEntry::of(p, b)).collect(),
                segments,
            };
            let back = Manifest::decode(&UUID, 50, &m.encode()).unwrap();
            prop_assert_eq!(&back, &m);
            let mut all = Vec::new();
            for (k, (e, b)) in back.parts.iter().zip(&blobs).enumerate() {
                all.extend(decode_part(&UUID, 50, k as u32, e, b).unwrap());
            }
            prop_assert_eq!(all, ex);
        }
    }
}
