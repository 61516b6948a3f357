//! Zoned media: the device trait every zoned medium implements (the emulated
//! zoned file here, a real ZNS or null_blk device in `zns-backend`), and the
//! segment store that packs segments into zones on top of any of them.

pub mod conformance;
pub mod device;
pub mod file_device;
pub mod store;

/// Little-endian field readers for the zoned layouts. Callers check the
/// buffer length (and the crc) before reading fields out of it.
mod le {
    pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([b[off], b[off + 1]])
    }
    pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[off..off + 4]);
        u32::from_le_bytes(a)
    }
    pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[off..off + 8]);
        u64::from_le_bytes(a)
    }
    pub(crate) fn round_up(n: u64, to: u64) -> u64 {
        n.div_ceil(to) * to
    }
}

pub use device::{
    check_append, check_finish, open_active_counts, ZoneCond, ZoneInfo, ZoneType, ZonedDevice,
    ZonedGeometry,
};
pub use file_device::ZonedFile;
pub use store::ZonedStore;
