//! Zoned media: the device trait every zoned medium implements (the emulated
//! zoned file here, a real ZNS or null_blk device in `zns-backend`), and the
//! segment store that packs segments into zones on top of any of them.

pub mod conformance;
pub mod device;
pub mod file_device;
pub mod store;

pub use device::{ZoneCond, ZoneInfo, ZoneType, ZonedDevice, ZonedGeometry};
pub use file_device::ZonedFile;
pub use store::ZonedStore;
