//! The deterministic data pattern of `lsvdctl io write` / `io verify`.
//!
//! Every 4 KiB block is a pure function of `(seed, byte offset of the block
//! in the image)`, so any sub-range written with one seed can be verified on
//! its own, and a block found in the wrong place tells where it came from:
//!
//! ```text
//! bytes 0..8    block offset (u64 LE)
//! bytes 8..16   seed (u64 LE)
//! bytes 16..    splitmix64 stream seeded from (seed, offset), u64 LE words
//! ```

/// Block size of the pattern (the engine's block size).
pub const BLOCK: usize = 4096;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fill one block (`block.len() == BLOCK`) for `seed` at byte `offset`.
fn fill_block(seed: u64, offset: u64, block: &mut [u8]) {
    let mut state = seed ^ offset.rotate_left(32) ^ 0x6C73_7664_7061_7474; // "lsvdpatt"
    for (i, word) in block.chunks_exact_mut(8).enumerate() {
        let v = match i {
            0 => offset,
            1 => seed,
            _ => splitmix64(&mut state),
        };
        word.copy_from_slice(&v.to_le_bytes());
    }
}

/// Fill `buf` (a whole number of blocks) with the pattern of `seed` for the
/// image range starting at byte `offset` (a multiple of [`BLOCK`]).
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    debug_assert_eq!(buf.len() % BLOCK, 0);
    for (i, block) in buf.chunks_exact_mut(BLOCK).enumerate() {
        fill_block(seed, offset + (i * BLOCK) as u64, block);
    }
}

/// The first block of a range that does not hold the expected pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Byte offset of the bad block in the image.
    pub block_offset: u64,
    /// First differing byte within the block.
    pub byte: usize,
    /// What the block holds instead, as far as can be told.
    pub found: Found,
}

/// Diagnosis of a bad block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The block reads as zeros (never written, discarded, or lost).
    Zeros,
    /// An intact pattern block of another offset and/or seed (a misdirected
    /// or stale write).
    Pattern { offset: u64, seed: u64 },
    /// Anything else (torn or corrupted data).
    Garbage,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "block at offset {} (byte {} of the block) ",
            self.block_offset, self.byte
        )?;
        match self.found {
            Found::Zeros => write!(f, "reads as zeros"),
            Found::Pattern { offset, seed } => write!(
                f,
                "holds the pattern of seed {seed} for offset {offset} instead"
            ),
            Found::Garbage => write!(f, "holds data that is not the expected pattern"),
        }
    }
}

/// Check `buf` against the pattern of `seed` at `offset`; the first bad
/// block, or `None` if every block matches.
pub fn check(seed: u64, offset: u64, buf: &[u8]) -> Option<Mismatch> {
    let mut want = vec![0u8; BLOCK];
    for (i, got) in buf.chunks(BLOCK).enumerate() {
        let block_offset = offset + (i * BLOCK) as u64;
        fill_block(seed, block_offset, &mut want);
        let Some(byte) = got.iter().zip(&want).position(|(a, b)| a != b) else {
            if got.len() == BLOCK {
                continue;
            }
            // Short trailing block: treat the missing tail as a mismatch.
            return Some(Mismatch {
                block_offset,
                byte: got.len(),
                found: Found::Garbage,
            });
        };
        return Some(Mismatch {
            block_offset,
            byte,
            found: diagnose(got),
        });
    }
    None
}

fn diagnose(got: &[u8]) -> Found {
    if got.iter().all(|&b| b == 0) {
        return Found::Zeros;
    }
    let word = |i: usize| -> Option<u64> {
        let b: [u8; 8] = got.get(i * 8..i * 8 + 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    };
    if let (Some(offset), Some(seed)) = (word(0), word(1)) {
        if got.len() == BLOCK {
            let mut other = vec![0u8; BLOCK];
            fill_block(seed, offset, &mut other);
            if other == got {
                return Found::Pattern { offset, seed };
            }
        }
    }
    Found::Garbage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_subranges() {
        let mut buf = vec![0u8; 8 * BLOCK];
        fill(7, 40960, &mut buf);
        assert_eq!(check(7, 40960, &buf), None);
        // A sub-range verifies on its own.
        assert_eq!(
            check(7, 40960 + 2 * BLOCK as u64, &buf[2 * BLOCK..5 * BLOCK]),
            None
        );
        // Different seeds and offsets give different data.
        let mut other = vec![0u8; 8 * BLOCK];
        fill(8, 40960, &mut other);
        assert_ne!(buf[16..BLOCK], other[16..BLOCK]);
        fill(7, 0, &mut other);
        assert_ne!(buf[16..BLOCK], other[16..BLOCK]);
    }

    #[test]
    fn diagnoses_first_bad_block() {
        let mut buf = vec![0u8; 4 * BLOCK];
        fill(1, 0, &mut buf);
        // Block 2 zeroed, block 3 corrupted: the first bad one is reported.
        buf[2 * BLOCK..3 * BLOCK].fill(0);
        buf[3 * BLOCK + 100] ^= 1;
        let m = check(1, 0, &buf).unwrap();
        assert_eq!(m.block_offset, 2 * BLOCK as u64);
        // Offset 8192 is 00 20 .. in LE: byte 0 matches the zeros, byte 1 not.
        assert_eq!(m.byte, 1);
        assert_eq!(m.found, Found::Zeros);
        let m = check(1, 3 * BLOCK as u64, &buf[3 * BLOCK..]).unwrap();
        assert_eq!((m.byte, m.found), (100, Found::Garbage));
        // A block of another offset is recognised.
        let mut moved = vec![0u8; BLOCK];
        fill(1, 12 * BLOCK as u64, &mut moved);
        let m = check(1, 0, &moved).unwrap();
        assert_eq!(
            m.found,
            Found::Pattern {
                offset: 12 * BLOCK as u64,
                seed: 1
            }
        );
        assert!(m.to_string().contains("seed 1 for offset 49152"), "{m}");
    }
}
