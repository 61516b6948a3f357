//! On-disk layout of the read-cache file (or device).
//!
//! ```text
//! [0, 4096)                      superblock
//! [4096, 4096 + R)               index region A
//! [4096 + R, 4096 + 2R)          index region B
//! [data_off, data_off + n*bs)    n data slots of block_size bytes
//! ```
//! `R` = `region_len(nslots)`; `data_off` = `4096 + 2R`; the whole layout is
//! at most the configured size, and the file is never extended past it.
//!
//! Superblock (little-endian): magic `LSVDRCSB` (8), version u32, block_size
//! u32, nslots u32, reserved u32, region_len u64, data_off u64, total u64,
//! crc32c u32 over the preceding 44 bytes.
//!
//! Index region: a 128-byte header then the payload.
//! Header: magic `LSVDRCIX` (8), version u32, reserved u32, counter u64
//! (higher = newer), image uuid (16), block_size u32, nslots u32, n_segs u32,
//! reserved u32, hits u64, misses u64, evictions u64, payload_len u64,
//! payload crc32c u32, header crc32c u32 over bytes 0..92 (the header's own
//! crc field is at 92; the rest is zero).
//! Payload: `nslots` slot entries of `16 + 4 * pages` bytes (seq u64, block
//! u32, len u32 (0 = empty), then one crc u32 per 4 KiB page of the block),
//! then `n_segs` segment records of 20 bytes (seq u64, len u64, fingerprint
//! u32). `pages = block_size / 4096`.
//!
//! # Invariants
//! - Every read of the superblock or a region checks magic, version, lengths
//!   and crc32c; any failure means "no index" (cold start), never an error
//!   that stops the cache and never trusted data.
//! - A page crc is crc32c(seq || block || page || data) ([`page_crc`]), so
//!   an entry that points at a slot reused since the index was written fails
//!   its check, and a 4 KiB hit reads and checks only 4 KiB.

use crate::read_cache::Key;

pub const SB_MAGIC: &[u8; 8] = b"LSVDRCSB";
pub const IX_MAGIC: &[u8; 8] = b"LSVDRCIX";
pub const VERSION: u32 = 1;
pub const SB_LEN: u64 = 4096;
pub const IX_HDR_LEN: usize = 128;
/// Largest block size (pages per block fit the index entry).
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
pub const PAGE: usize = 4096;
pub const SEG_REC_LEN: usize = 20;

/// Where everything lives for one (size, block_size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u32,
    pub nslots: u32,
    pub region_len: u64,
    pub data_off: u64,
    /// Bytes used by the layout (<= the configured size).
    pub total: u64,
}

fn align4k(x: u64) -> u64 {
    x.div_ceil(4096) * 4096
}

/// Bytes of one index region for `nslots` slots (room for as many segment
/// records as slots: a segment is only recorded if it has a cached block).
pub fn region_len(nslots: u32, block_size: u32) -> u64 {
    align4k(IX_HDR_LEN as u64 + nslots as u64 * (slot_entry_len(block_size) + SEG_REC_LEN) as u64)
}

/// Bytes of one slot entry in the index.
pub fn slot_entry_len(block_size: u32) -> usize {
    16 + 4 * (block_size as usize / PAGE)
}

impl Geometry {
    /// The largest layout fitting in `size` bytes, `None` if not even one
    /// slot fits.
    pub fn for_size(size: u64, block_size: u32) -> Option<Geometry> {
        let bs = block_size as u64;
        if bs == 0 || !bs.is_multiple_of(PAGE as u64) || block_size > MAX_BLOCK_SIZE {
            return None;
        }
        let per = bs + 2 * (slot_entry_len(block_size) + SEG_REC_LEN) as u64;
        let mut n = size.saturating_sub(SB_LEN + 2 * 4096) / per;
        n = n.min(u32::MAX as u64 / 2);
        loop {
            if n == 0 {
                return None;
            }
            let g = Self::with_slots(block_size, n as u32);
            if g.total <= size {
                return Some(g);
            }
            n -= 1;
        }
    }

    pub fn with_slots(block_size: u32, nslots: u32) -> Geometry {
        let region_len = region_len(nslots, block_size);
        let data_off = SB_LEN + 2 * region_len;
        Geometry {
            block_size,
            nslots,
            region_len,
            data_off,
            total: data_off + nslots as u64 * block_size as u64,
        }
    }

    pub fn region_off(&self, which: usize) -> u64 {
        SB_LEN + which as u64 * self.region_len
    }

    pub fn slot_off(&self, slot: u32) -> u64 {
        self.data_off + slot as u64 * self.block_size as u64
    }

    pub fn encode_sb(&self) -> Vec<u8> {
        let mut b = vec![0u8; SB_LEN as usize];
        b[0..8].copy_from_slice(SB_MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.nslots.to_le_bytes());
        b[24..32].copy_from_slice(&self.region_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.data_off.to_le_bytes());
        b[40..48].copy_from_slice(&self.total.to_le_bytes());
        let crc = crc32c::crc32c(&b[..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and check a superblock; `Err` says what is wrong.
    pub fn decode_sb(b: &[u8]) -> Result<Geometry, String> {
        if b.len() < 52 {
            return Err("superblock too short".into());
        }
        if &b[0..8] != SB_MAGIC {
            return Err("bad superblock magic".into());
        }
        let crc = le32(b, 48);
        if crc32c::crc32c(&b[..48]) != crc {
            return Err("superblock crc mismatch".into());
        }
        let v = le32(b, 8);
        if v != VERSION {
            return Err(format!("unsupported superblock version {v}"));
        }
        let g = Geometry::with_slots(le32(b, 12), le32(b, 16));
        if g.block_size == 0
            || !g.block_size.is_multiple_of(PAGE as u32)
            || g.block_size > MAX_BLOCK_SIZE
            || g.region_len != le64(b, 24)
            || g.data_off != le64(b, 32)
            || g.total != le64(b, 40)
        {
            return Err("superblock geometry inconsistent".into());
        }
        Ok(g)
    }
}

pub fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

pub fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// crc32c(seq || block || page || data): the check of one cached 4 KiB page.
pub fn page_crc(key: Key, page: u32, data: &[u8]) -> u32 {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&key.0.to_le_bytes());
    k[8..12].copy_from_slice(&key.1.to_le_bytes());
    k[12..].copy_from_slice(&page.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&k), data)
}

/// One cached block as recorded in the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotEntry {
    pub key: Key,
    /// Valid bytes (a multiple of 4096, at most the block size).
    pub len: u32,
    /// One [`page_crc`] per valid page.
    pub crcs: Vec<u32>,
}

/// One segment as recorded in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegRecord {
    pub seq: u64,
    pub len: u64,
    pub fingerprint: u32,
}

/// A decoded index region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    pub counter: u64,
    pub uuid: [u8; 16],
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// One per slot.
    pub slots: Vec<Option<SlotEntry>>,
    pub segs: Vec<SegRecord>,
}

impl Index {
    /// Encode for `g`; the result is at most `g.region_len` bytes.
    pub fn encode(&self, g: &Geometry) -> Vec<u8> {
        let el = slot_entry_len(g.block_size);
        let mut p = Vec::with_capacity(g.nslots as usize * el + self.segs.len() * SEG_REC_LEN);
        for i in 0..g.nslots as usize {
            let start = p.len();
            if let Some(Some(e)) = self.slots.get(i) {
                p.extend_from_slice(&e.key.0.to_le_bytes());
                p.extend_from_slice(&e.key.1.to_le_bytes());
                p.extend_from_slice(&e.len.to_le_bytes());
                for c in e.crcs.iter().take((el - 16) / 4) {
                    p.extend_from_slice(&c.to_le_bytes());
                }
            }
            p.resize(start + el, 0);
        }
        let max_segs = g.nslots as usize;
        for s in self.segs.iter().take(max_segs) {
            p.extend_from_slice(&s.seq.to_le_bytes());
            p.extend_from_slice(&s.len.to_le_bytes());
            p.extend_from_slice(&s.fingerprint.to_le_bytes());
        }
        let n_segs = self.segs.len().min(max_segs) as u32;
        let mut h = vec![0u8; IX_HDR_LEN];
        h[0..8].copy_from_slice(IX_MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.counter.to_le_bytes());
        h[24..40].copy_from_slice(&self.uuid);
        h[40..44].copy_from_slice(&g.block_size.to_le_bytes());
        h[44..48].copy_from_slice(&g.nslots.to_le_bytes());
        h[48..52].copy_from_slice(&n_segs.to_le_bytes());
        h[56..64].copy_from_slice(&self.hits.to_le_bytes());
        h[64..72].copy_from_slice(&self.misses.to_le_bytes());
        h[72..80].copy_from_slice(&self.evictions.to_le_bytes());
        h[80..88].copy_from_slice(&(p.len() as u64).to_le_bytes());
        h[88..92].copy_from_slice(&crc32c::crc32c(&p).to_le_bytes());
        let hc = crc32c::crc32c(&h[..92]);
        h[92..96].copy_from_slice(&hc.to_le_bytes());
        h.extend_from_slice(&p);
        h
    }

    /// Decode just the header: `(counter, payload_len)`; checks magic,
    /// version, geometry and header crc.
    pub fn decode_header(h: &[u8], g: &Geometry) -> Result<(u64, u64), String> {
        if h.len() < IX_HDR_LEN {
            return Err("index header too short".into());
        }
        if &h[0..8] != IX_MAGIC {
            return Err("bad index magic".into());
        }
        if crc32c::crc32c(&h[..92]) != le32(h, 92) {
            return Err("index header crc mismatch".into());
        }
        let v = le32(h, 8);
        if v != VERSION {
            return Err(format!("unsupported index version {v}"));
        }
        if le32(h, 40) != g.block_size || le32(h, 44) != g.nslots {
            return Err("index geometry differs from the superblock".into());
        }
        let n_segs = le32(h, 48) as u64;
        let plen = le64(h, 80);
        if n_segs > g.nslots as u64
            || plen
                != g.nslots as u64 * slot_entry_len(g.block_size) as u64
                    + n_segs * SEG_REC_LEN as u64
            || plen + IX_HDR_LEN as u64 > g.region_len
        {
            return Err("index lengths inconsistent".into());
        }
        Ok((le64(h, 16), plen))
    }

    /// Decode a whole region (header + payload), all checks included.
    pub fn decode(b: &[u8], g: &Geometry) -> Result<Index, String> {
        let (counter, plen) = Self::decode_header(b, g)?;
        let end = IX_HDR_LEN + plen as usize;
        if b.len() < end {
            return Err("index payload truncated".into());
        }
        let p = &b[IX_HDR_LEN..end];
        if crc32c::crc32c(p) != le32(b, 88) {
            return Err("index payload crc mismatch".into());
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[24..40]);
        let el = slot_entry_len(g.block_size);
        let mut slots = Vec::with_capacity(g.nslots as usize);
        for i in 0..g.nslots as usize {
            let o = i * el;
            let len = le32(p, o + 12);
            if len == 0 {
                slots.push(None);
            } else if len > g.block_size || !(len as usize).is_multiple_of(PAGE) {
                return Err(format!("slot {i}: bad length {len}"));
            } else {
                let crcs = (0..len as usize / PAGE)
                    .map(|k| le32(p, o + 16 + 4 * k))
                    .collect();
                slots.push(Some(SlotEntry {
                    key: (le64(p, o), le32(p, o + 8)),
                    len,
                    crcs,
                }));
            }
        }
        let n_segs = le32(b, 48) as usize;
        let base = g.nslots as usize * el;
        let segs = (0..n_segs)
            .map(|i| {
                let o = base + i * SEG_REC_LEN;
                SegRecord {
                    seq: le64(p, o),
                    len: le64(p, o + 8),
                    fingerprint: le32(p, o + 16),
                }
            })
            .collect();
        Ok(Index {
            counter,
            uuid,
            hits: le64(b, 56),
            misses: le64(b, 64),
            evictions: le64(b, 72),
            slots,
            segs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_fits_size() {
        for size in [1 << 20, 10 << 20, (1 << 30) + 12345, 64 << 30] {
            let g = Geometry::for_size(size, 65536).unwrap();
            assert!(g.total <= size);
            let bigger = Geometry::with_slots(65536, g.nslots + 1);
            assert!(bigger.total > size);
        }
        assert!(Geometry::for_size(65536, 65536).is_none());
    }

    #[test]
    fn index_roundtrip_and_corruption() {
        let g = Geometry::with_slots(65536, 8);
        let mut ix = Index {
            counter: 7,
            uuid: [3; 16],
            hits: 1,
            misses: 2,
            evictions: 3,
            slots: vec![None; 8],
            segs: vec![SegRecord {
                seq: 5,
                len: 1 << 20,
                fingerprint: 99,
            }],
        };
        ix.slots[2] = Some(SlotEntry {
            key: (5, 1),
            len: 8192,
            crcs: vec![42, 43],
        });
        let b = ix.encode(&g);
        assert_eq!(Index::decode(&b, &g).unwrap(), ix);
        for pos in [0, 20, 92, 130, b.len() - 1] {
            let mut c = b.clone();
            c[pos] ^= 0x40;
            assert!(Index::decode(&c, &g).is_err(), "flip at {pos}");
        }
        assert!(Index::decode(&b[..b.len() - 1], &g).is_err());
        let g2 = Geometry::with_slots(65536, 9);
        assert!(Index::decode(&b, &g2).is_err());
        let sb = g.encode_sb();
        assert_eq!(Geometry::decode_sb(&sb).unwrap(), g);
        let mut sb2 = sb.clone();
        sb2[13] ^= 1;
        assert!(Geometry::decode_sb(&sb2).is_err());
    }
}
