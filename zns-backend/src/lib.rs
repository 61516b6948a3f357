//! lsvd's segment store on a real host-managed zoned block device (NVMe ZNS
//! namespace, `null_blk` in zoned mode).
//!
//! - [`ioctl`]: the `linux/blkzoned.h` ioctls;
//! - [`sysfs`]: the device's zoned model, geometry and limits from sysfs;
//! - [`device`]: [`BlockZonedDevice`], the [`log_engine::zoned::ZonedDevice`]
//!   on a block device;
//! - [`range`]: [`ZoneRange`], a zone range of a device as a device;
//! - [`spec`]: the `zns:/dev/X[,zones=A-B]` store spec;
//! - [`info`]: `lsvdctl zns info`.

mod buf;
pub mod device;
pub mod info;
pub mod ioctl;
pub mod range;
pub mod spec;
pub mod sysfs;

pub use device::{BlockZonedDevice, IoStats};
pub use info::{zns_info, ZnsInfo};
pub use range::ZoneRange;
pub use spec::{create_store, format_store, is_zns, open_store, parse_spec, with_zones, ZnsSpec};
