//! The journal binding: a small metadata blob in the backend store
//! (`journal-binding`) saying whether the image depends on a journal, and
//! which generation. It is how an open tells a stale or foreign journal
//! from the right one:
//! - `Clean { base_seq }`: the backend holds every write (up to `base_seq`)
//!   by itself; no journal is needed, whatever the cache device holds.
//! - `Dirty { generation, base_seq }`: writes after `base_seq` may live
//!   only in the journal generation `generation`; a journal with another
//!   generation (or none) means cache loss.
//!
//! Format (little-endian, 52 bytes): magic `LSVDJBND`, version u32 (1),
//! state u32 (1 clean, 2 dirty), uuid \[16\], generation u64, base_seq u64,
//! crc32c u32 of the preceding bytes. Checked on every read.

use log_engine::{Error, Result, SegmentStore};

/// Name of the metadata blob in the store.
pub const META_NAME: &str = "journal-binding";
const MAGIC: &[u8; 8] = b"LSVDJBND";
const VERSION: u32 = 1;
const LEN: usize = 52;

/// What the backend says about its journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The backend alone holds every write up to `base_seq`.
    Clean { uuid: [u8; 16], base_seq: u64 },
    /// Writes after `base_seq` may be only in journal `generation`.
    Dirty {
        uuid: [u8; 16],
        generation: u64,
        base_seq: u64,
    },
}

impl Binding {
    pub fn encode(&self) -> Vec<u8> {
        let (state, uuid, generation, base_seq) = match *self {
            Binding::Clean { uuid, base_seq } => (1u32, uuid, 0u64, base_seq),
            Binding::Dirty {
                uuid,
                generation,
                base_seq,
            } => (2, uuid, generation, base_seq),
        };
        let mut b = Vec::with_capacity(LEN);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&state.to_le_bytes());
        b.extend_from_slice(&uuid);
        b.extend_from_slice(&generation.to_le_bytes());
        b.extend_from_slice(&base_seq.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Binding> {
        let what = format!("store metadata {META_NAME}");
        if b.len() != LEN || &b[0..8] != MAGIC {
            return Err(Error::corrupt(what, "bad length or magic"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if u32_at(LEN - 4) != crc32c::crc32c(&b[..LEN - 4]) {
            return Err(Error::corrupt(what, "crc32c mismatch"));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(Error::UnsupportedVersion { what, version });
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        let (generation, base_seq) = (u64_at(32), u64_at(40));
        match u32_at(12) {
            1 => Ok(Binding::Clean { uuid, base_seq }),
            2 => Ok(Binding::Dirty {
                uuid,
                generation,
                base_seq,
            }),
            s => Err(Error::corrupt(what, format!("bad state {s}"))),
        }
    }

    /// Read the binding from the store (`None` if the image never had one).
    pub fn load(store: &dyn SegmentStore) -> Result<Option<Binding>> {
        store
            .get_meta(META_NAME)?
            .map(|b| Binding::decode(&b))
            .transpose()
    }

    /// Replace the binding in the store (atomic, durable on return).
    pub fn store(&self, store: &dyn SegmentStore) -> Result<()> {
        store.put_meta(META_NAME, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_crc() {
        for b in [
            Binding::Clean {
                uuid: [3; 16],
                base_seq: 7,
            },
            Binding::Dirty {
                uuid: [4; 16],
                generation: 99,
                base_seq: 8,
            },
        ] {
            let mut e = b.encode();
            assert_eq!(Binding::decode(&e).unwrap(), b);
            e[20] ^= 1;
            assert!(Binding::decode(&e).is_err());
        }
    }
}
