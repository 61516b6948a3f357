//! `lsvdctl zns info`: what a zoned drive is and the state of its zones.
//!
//! Read-only: the device is opened without `O_EXCL` (so it works while an
//! image uses it) and only sysfs and `BLKREPORTZONE` are consulted.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use log_engine::error::IoContext;
use log_engine::{Error, Result};

use crate::device::report_all;
use crate::ioctl::{self, SECTOR};
use crate::sysfs::{self, ZonedModel};

/// Number of zones in each condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CondCounts {
    pub not_wp: u32,
    pub empty: u32,
    pub implicit_open: u32,
    pub explicit_open: u32,
    pub closed: u32,
    pub full: u32,
    pub read_only: u32,
    pub offline: u32,
}

/// One zone, for `--zones` listings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ZoneLine {
    pub index: u32,
    /// Bytes.
    pub start: u64,
    pub capacity: u64,
    /// Bytes written into the zone.
    pub written: u64,
    pub cond: &'static str,
    pub zone_type: &'static str,
}

/// Facts about a zoned drive.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ZnsInfo {
    pub device: String,
    pub name: String,
    pub zoned: ZonedModel,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub zone_size: u64,
    /// Capacity of the sequential zones (bytes); `None` without any.
    pub zone_capacity: Option<u64>,
    pub nr_zones: u32,
    pub conventional: u32,
    pub max_open_zones: u32,
    pub max_active_zones: u32,
    pub zone_append_max_bytes: u64,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    pub write_cache: Option<String>,
    pub conditions: CondCounts,
    pub zones: Vec<ZoneLine>,
}

fn cond_name(c: u8) -> &'static str {
    match c {
        ioctl::BLK_ZONE_COND_NOT_WP => "not-wp",
        ioctl::BLK_ZONE_COND_EMPTY => "empty",
        ioctl::BLK_ZONE_COND_IMP_OPEN => "implicit-open",
        ioctl::BLK_ZONE_COND_EXP_OPEN => "explicit-open",
        ioctl::BLK_ZONE_COND_CLOSED => "closed",
        ioctl::BLK_ZONE_COND_READONLY => "read-only",
        ioctl::BLK_ZONE_COND_FULL => "full",
        ioctl::BLK_ZONE_COND_OFFLINE => "offline",
        _ => "unknown",
    }
}

/// Gather the facts of the zoned drive at `dev`. Refuses a device that is
/// not zoned (the same error as the `zns:` store).
pub fn zns_info(dev: &Path) -> Result<ZnsInfo> {
    let si = sysfs::read(dev)?;
    if si.model == ZonedModel::None {
        sysfs::require_host_managed(dev, &si)?;
    }
    let f = File::open(dev).ctx(|| format!("open {}", dev.display()))?;
    let zs = report_all(f.as_raw_fd(), dev)?;
    let mut c = CondCounts::default();
    let mut conv = 0;
    let mut cap = None;
    let mut zones = Vec::with_capacity(zs.len());
    for (i, z) in zs.iter().enumerate() {
        let slot = match z.cond {
            ioctl::BLK_ZONE_COND_NOT_WP => &mut c.not_wp,
            ioctl::BLK_ZONE_COND_EMPTY => &mut c.empty,
            ioctl::BLK_ZONE_COND_IMP_OPEN => &mut c.implicit_open,
            ioctl::BLK_ZONE_COND_EXP_OPEN => &mut c.explicit_open,
            ioctl::BLK_ZONE_COND_CLOSED => &mut c.closed,
            ioctl::BLK_ZONE_COND_READONLY => &mut c.read_only,
            ioctl::BLK_ZONE_COND_FULL => &mut c.full,
            ioctl::BLK_ZONE_COND_OFFLINE => &mut c.offline,
            other => {
                return Err(Error::corrupt(
                    format!("zone report of {}", dev.display()),
                    format!("zone {i} has unknown condition {other}"),
                ))
            }
        };
        *slot += 1;
        let is_conv = z.zone_type == ioctl::BLK_ZONE_TYPE_CONVENTIONAL;
        if is_conv {
            conv += 1;
        } else if cap.is_none() {
            cap = Some(z.capacity * SECTOR);
        }
        let written = match z.cond {
            ioctl::BLK_ZONE_COND_EMPTY | ioctl::BLK_ZONE_COND_NOT_WP => 0,
            ioctl::BLK_ZONE_COND_FULL => z.capacity * SECTOR,
            _ => z.wp.saturating_sub(z.start) * SECTOR,
        };
        zones.push(ZoneLine {
            index: i as u32,
            start: z.start * SECTOR,
            capacity: z.capacity * SECTOR,
            written,
            cond: cond_name(z.cond),
            zone_type: match z.zone_type {
                ioctl::BLK_ZONE_TYPE_CONVENTIONAL => "conventional",
                ioctl::BLK_ZONE_TYPE_SEQWRITE_REQ => "seq-write-required",
                ioctl::BLK_ZONE_TYPE_SEQWRITE_PREF => "seq-write-preferred",
                _ => "unknown",
            },
        });
    }
    Ok(ZnsInfo {
        device: dev.display().to_string(),
        name: si.name.clone(),
        zoned: si.model,
        model: si.device_model.clone(),
        serial: si.serial.clone(),
        zone_size: si.chunk_sectors * SECTOR,
        zone_capacity: cap,
        nr_zones: zs.len() as u32,
        conventional: conv,
        max_open_zones: si.max_open_zones,
        max_active_zones: si.max_active_zones,
        zone_append_max_bytes: si.zone_append_max_bytes,
        logical_block_size: si.logical_block_size,
        physical_block_size: si.physical_block_size,
        write_cache: si.write_cache.clone(),
        conditions: c,
        zones,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_block() {
        let e = zns_info(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("/dev/null is not a block device"), "{e}");
    }
}
