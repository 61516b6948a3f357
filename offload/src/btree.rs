//! The example B+-tree's on-block layout (same as `struct lsvd_bt_node` in
//! `include/lsvd_offload.h`) and a builder that lays a tree out for given keys.
//!
//! Node (one 4 KiB block, little-endian): `u64 kind` ([`KIND_INTERNAL`] or [`KIND_LEAF`]),
//! `u64 nkeys` (≤ [`FANOUT`]), `u64 keys[FANOUT]`, `u64 vals[FANOUT]`. Keys are sorted
//! ascending. In an internal node `keys[i]` is the smallest key under child `i` and
//! `vals[i]` the child's LBA; a lookup follows the last `i` with `keys[i] <= key` (or
//! child 0). In a leaf `vals[i]` is the value of `keys[i]`.
//!
//! Lookup arguments in scratch: `struct lsvd_bt_args { u64 key; u64 found; u64 value; }`;
//! the program sets `found` and `value` and returns `found`.

use crate::abi::BLOCK_SIZE;

/// Largest number of keys per node.
pub const FANOUT: usize = 254;
/// `kind` of an internal node.
pub const KIND_INTERNAL: u64 = 1;
/// `kind` of a leaf.
pub const KIND_LEAF: u64 = 2;
/// Byte offset of `keys[0]`.
pub const OFF_KEYS: usize = 16;
/// Byte offset of `vals[0]`.
pub const OFF_VALS: usize = OFF_KEYS + 8 * FANOUT;

/// One encoded node.
pub fn encode_node(kind: u64, keys: &[u64], vals: &[u64]) -> [u8; BLOCK_SIZE] {
    assert!(
        keys.len() == vals.len() && keys.len() <= FANOUT,
        "node too large"
    );
    let mut b = [0u8; BLOCK_SIZE];
    b[0..8].copy_from_slice(&kind.to_le_bytes());
    b[8..16].copy_from_slice(&(keys.len() as u64).to_le_bytes());
    for (i, (k, v)) in keys.iter().zip(vals).enumerate() {
        b[OFF_KEYS + 8 * i..OFF_KEYS + 8 * i + 8].copy_from_slice(&k.to_le_bytes());
        b[OFF_VALS + 8 * i..OFF_VALS + 8 * i + 8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// A tree laid out in blocks (LBA = index in `blocks`).
#[derive(Debug, Clone)]
pub struct Tree {
    /// All blocks; block 0 is a filler so no node sits at LBA 0.
    pub blocks: Vec<[u8; BLOCK_SIZE]>,
    /// LBA of the root.
    pub root: u64,
    /// Number of levels (1 = the root is a leaf).
    pub levels: u32,
}

/// Builds a tree of `pairs` (sorted by key, unique, non-empty) with at most `fanout`
/// (2..=[`FANOUT`]) entries per node.
pub fn build(pairs: &[(u64, u64)], fanout: usize) -> Tree {
    assert!((2..=FANOUT).contains(&fanout), "fanout out of range");
    assert!(!pairs.is_empty(), "empty tree");
    assert!(
        pairs.windows(2).all(|w| w[0].0 < w[1].0),
        "keys must be sorted and unique"
    );
    let mut blocks = vec![[0xa5u8; BLOCK_SIZE]];
    // Current level: (smallest key, lba) per node.
    let mut level: Vec<(u64, u64)> = Vec::new();
    for chunk in pairs.chunks(fanout) {
        let keys: Vec<u64> = chunk.iter().map(|p| p.0).collect();
        let vals: Vec<u64> = chunk.iter().map(|p| p.1).collect();
        level.push((keys[0], blocks.len() as u64));
        blocks.push(encode_node(KIND_LEAF, &keys, &vals));
    }
    let mut levels = 1;
    while level.len() > 1 {
        let mut up = Vec::new();
        for chunk in level.chunks(fanout) {
            let keys: Vec<u64> = chunk.iter().map(|p| p.0).collect();
            let vals: Vec<u64> = chunk.iter().map(|p| p.1).collect();
            up.push((keys[0], blocks.len() as u64));
            blocks.push(encode_node(KIND_INTERNAL, &keys, &vals));
        }
        level = up;
        levels += 1;
    }
    Tree {
        blocks,
        root: level[0].1,
        levels,
    }
}

/// Reference lookup over the built blocks (what the eBPF program must compute).
pub fn lookup(tree: &Tree, key: u64) -> Option<u64> {
    let rd = |b: &[u8; BLOCK_SIZE], o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    };
    let mut lba = tree.root;
    loop {
        let b = tree.blocks.get(lba as usize)?;
        let n = (rd(b, 8) as usize).min(FANOUT);
        let keys: Vec<u64> = (0..n).map(|i| rd(b, OFF_KEYS + 8 * i)).collect();
        if rd(b, 0) == KIND_LEAF {
            return keys
                .iter()
                .position(|k| *k == key)
                .map(|i| rd(b, OFF_VALS + 8 * i));
        }
        let i = keys.iter().rposition(|k| *k <= key).unwrap_or(0);
        lba = rd(b, OFF_VALS + 8 * i);
    }
}

/// Value stored under `key` in a demo tree of seed `seed` (splitmix64 of both).
pub fn demo_value(seed: u64, key: u64) -> u64 {
    let mut z = seed ^ key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Demo pairs: keys `1, 3, 5, ..., 2n-1` (even keys are absent), values
/// [`demo_value`]`(seed, key)`.
pub fn demo_pairs(n: u64, seed: u64) -> Vec<(u64, u64)> {
    (0..n)
        .map(|i| {
            let k = 2 * i + 1;
            (k, demo_value(seed, k))
        })
        .collect()
}

/// Smallest number of keys that gives `levels` levels at `fanout` (`fanout^(levels-1) + 1`,
/// or 1 for one level); `None` on overflow.
pub fn keys_for_levels(levels: u32, fanout: usize) -> Option<u64> {
    if levels <= 1 {
        return Some(1);
    }
    (fanout as u64).checked_pow(levels - 1)?.checked_add(1)
}

/// Lookup arguments (`struct lsvd_bt_args`) for `key`.
pub fn lookup_args(key: u64) -> [u8; 24] {
    let mut a = [0u8; 24];
    a[..8].copy_from_slice(&key.to_le_bytes());
    a
}

/// Writes `blocks` to `image` from block 0, in writes of up to 256 KiB, then flushes.
pub fn write_to_image(
    image: &log_engine::Image,
    blocks: &[[u8; BLOCK_SIZE]],
) -> log_engine::Result<()> {
    for (i, chunk) in blocks.chunks(64).enumerate() {
        let buf: Vec<u8> = chunk.iter().flat_map(|b| b.iter().copied()).collect();
        image.write((i * 64 * BLOCK_SIZE) as u64, &buf)?;
    }
    image.flush()
}
