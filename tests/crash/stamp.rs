//! Sector stamps of the crash test (shared by the child and the checker
//! through `#[path]`). Every 512-byte sector a write carries:
//! `LSVDSTMP` magic, write id, the sector's own LBA (in 512-byte sectors),
//! the write's byte offset and length, a filler pattern, and an FNV-1a
//! checksum of the first 504 bytes in the last 8.

/// Sector size the stamps use.
pub const SECTOR: usize = 512;
const MAGIC: &[u8; 8] = b"LSVDSTMP";

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The data of write `wid` at byte `off`, `len` bytes.
pub fn stamped(wid: u64, off: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    for (i, s) in v.chunks_mut(SECTOR).enumerate() {
        let lba = off / SECTOR as u64 + i as u64;
        s[0..8].copy_from_slice(MAGIC);
        s[8..16].copy_from_slice(&wid.to_le_bytes());
        s[16..24].copy_from_slice(&lba.to_le_bytes());
        s[24..32].copy_from_slice(&off.to_le_bytes());
        s[32..40].copy_from_slice(&len.to_le_bytes());
        for (j, c) in s[40..504].chunks_mut(8).enumerate() {
            let x = (wid ^ lba)
                .wrapping_mul(0x9e3779b97f4a7c15)
                .wrapping_add(j as u64);
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let h = fnv(&s[..504]);
        s[504..512].copy_from_slice(&h.to_le_bytes());
    }
    v
}

/// What a sector holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sector {
    /// All zeros: never written (or discarded).
    Zero,
    /// A valid stamp: write id, write offset and length (bytes).
    Stamp { wid: u64, off: u64, len: u64 },
    /// Anything else (torn, misplaced, corrupt).
    Garbage,
}

/// Decode the sector at LBA `lba` (512-byte units).
pub fn decode(s: &[u8], lba: u64) -> Sector {
    if s.iter().all(|&b| b == 0) {
        return Sector::Zero;
    }
    let u = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&s[i..i + 8]);
        u64::from_le_bytes(a)
    };
    if &s[0..8] != MAGIC || u(504) != fnv(&s[..504]) || u(16) != lba {
        return Sector::Garbage;
    }
    let (wid, off, len) = (u(8), u(24), u(32));
    let first = off / SECTOR as u64;
    if lba < first || lba >= first + len / SECTOR as u64 {
        return Sector::Garbage;
    }
    Sector::Stamp { wid, off, len }
}
