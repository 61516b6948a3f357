//! What sysfs says about a block device: the zoned model, zone geometry and
//! limits (`/sys/block/DEV/queue/*`) and the drive's model and serial.
//!
//! The device node is resolved to its sysfs directory through its device
//! number (`/sys/dev/block/MAJ:MIN`), so any path to the node works
//! (`/dev/nvme0n1`, a udev symlink). Partitions are refused: zones belong to
//! the whole device.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use log_engine::error::IoContext;
use log_engine::{Error, Result};

/// The zoned model of a block device (`queue/zoned`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZonedModel {
    None,
    HostAware,
    HostManaged,
}

/// Everything sysfs tells about one block device.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SysfsInfo {
    /// Kernel name (`nvme0n1`, `nullb0`).
    pub name: String,
    pub model: ZonedModel,
    /// `queue/chunk_sectors`: zone size in 512-byte sectors.
    pub chunk_sectors: u64,
    pub nr_zones: u32,
    /// 0 = no limit.
    pub max_open_zones: u32,
    /// 0 = no limit.
    pub max_active_zones: u32,
    pub zone_append_max_bytes: u64,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    /// `queue/write_cache`: `write back` (volatile cache) or `write through`.
    pub write_cache: Option<String>,
    /// `device/model` (NVMe, SCSI); `None` for null_blk.
    pub device_model: Option<String>,
    /// `device/serial`; `None` when absent.
    pub serial: Option<String>,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The sysfs directory of the whole block device at `dev`. Errors name
/// `dev`: not a block device, a partition, no sysfs entry.
pub fn sysfs_dir(dev: &Path) -> Result<PathBuf> {
    let md = match std::fs::metadata(dev) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound(format!("device {}", dev.display())))
        }
        r => r.ctx(|| format!("stat {}", dev.display()))?,
    };
    if !md.file_type().is_block_device() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a block device (a zns: store needs a host-managed zoned block device; \
             use a dir: or zoned-file: store for a file)",
            dev.display()
        )));
    }
    let rdev = md.rdev();
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    let link = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    let dir = std::fs::canonicalize(&link)
        .ctx(|| format!("sysfs entry {} of {}", link.display(), dev.display()))?;
    if dir.join("partition").exists() {
        let parent = dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Err(Error::InvalidArgument(format!(
            "{} is a partition; zones belong to the whole device (/dev/{parent}): \
             give the whole device, with --zones A-B to use part of it",
            dev.display()
        )));
    }
    Ok(dir)
}

/// Parse `queue/zoned`.
pub fn parse_model(s: &str) -> Option<ZonedModel> {
    match s.trim() {
        "none" => Some(ZonedModel::None),
        "host-aware" => Some(ZonedModel::HostAware),
        "host-managed" => Some(ZonedModel::HostManaged),
        _ => None,
    }
}

/// Read the sysfs facts of the whole block device at `dev`.
pub fn read(dev: &Path) -> Result<SysfsInfo> {
    let dir = sysfs_dir(dev)?;
    read_dir(dev, &dir)
}

/// Read the sysfs facts from `dir` (the device's sysfs directory).
pub fn read_dir(dev: &Path, dir: &Path) -> Result<SysfsInfo> {
    let q = dir.join("queue");
    let attr = |n: &str| -> Result<String> {
        let p = q.join(n);
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .ctx(|| format!("read {} (for {})", p.display(), dev.display()))
    };
    let num = |n: &str| -> Result<u64> {
        let v = attr(n)?;
        v.parse::<u64>().map_err(|_| {
            Error::corrupt(
                format!("{}/{n} of {}", q.display(), dev.display()),
                format!("{v:?} is not a number"),
            )
        })
    };
    // Zone attributes are absent on some kernels for non-zoned devices.
    let num_or0 = |n: &str| -> Result<u64> {
        if q.join(n).exists() {
            num(n)
        } else {
            Ok(0)
        }
    };
    let z = attr("zoned")?;
    let model = parse_model(&z).ok_or_else(|| {
        Error::corrupt(
            format!("{}/zoned of {}", q.display(), dev.display()),
            format!("unknown zoned model {z:?}"),
        )
    })?;
    let u32_of = |n: &str, v: u64| -> Result<u32> {
        u32::try_from(v).map_err(|_| {
            Error::corrupt(
                format!("{}/{n} of {}", q.display(), dev.display()),
                format!("{v} is out of range"),
            )
        })
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(SysfsInfo {
        name,
        model,
        chunk_sectors: num_or0("chunk_sectors")?,
        nr_zones: u32_of("nr_zones", num_or0("nr_zones")?)?,
        max_open_zones: u32_of("max_open_zones", num_or0("max_open_zones")?)?,
        max_active_zones: u32_of("max_active_zones", num_or0("max_active_zones")?)?,
        zone_append_max_bytes: num_or0("zone_append_max_bytes")?,
        logical_block_size: u32_of("logical_block_size", num("logical_block_size")?)?,
        physical_block_size: u32_of("physical_block_size", num("physical_block_size")?)?,
        write_cache: read_trim(&q.join("write_cache")),
        device_model: read_trim(&dir.join("device/model")),
        serial: read_trim(&dir.join("device/serial")),
    })
}

/// Refuse anything but a host-managed zoned device, with an error that
/// names the device and the stores that fit it.
pub fn require_host_managed(dev: &Path, info: &SysfsInfo) -> Result<()> {
    match info.model {
        ZonedModel::HostManaged => Ok(()),
        ZonedModel::None => Err(Error::InvalidArgument(format!(
            "{} is not a zoned block device (queue/zoned=none): use a dir: or zoned-file: store",
            dev.display()
        ))),
        ZonedModel::HostAware => Err(Error::InvalidArgument(format!(
            "{} is a host-aware zoned device (queue/zoned=host-aware): lsvd's zns: store \
             needs a host-managed device (sequential-write-required zones); put a file system \
             on it and use a dir: or zoned-file: store",
            dev.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models() {
        assert_eq!(parse_model("none\n"), Some(ZonedModel::None));
        assert_eq!(parse_model("host-managed"), Some(ZonedModel::HostManaged));
        assert_eq!(parse_model("host-aware"), Some(ZonedModel::HostAware));
        assert_eq!(parse_model("drive-managed"), None);
    }

    #[test]
    fn regular_file_is_not_a_block_device() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = read(f.path()).unwrap_err().to_string();
        assert!(e.contains("is not a block device"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
    }

    #[test]
    fn dev_null_is_not_a_block_device() {
        let e = read(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("/dev/null is not a block device"), "{e}");
    }

    #[test]
    fn missing_device() {
        let e = read(Path::new("/dev/no-such-zns")).unwrap_err().to_string();
        assert_eq!(e, "not found: device /dev/no-such-zns");
    }

    #[test]
    fn not_zoned_message() {
        let mut info = SysfsInfo {
            name: "loop0".into(),
            model: ZonedModel::None,
            chunk_sectors: 0,
            nr_zones: 0,
            max_open_zones: 0,
            max_active_zones: 0,
            zone_append_max_bytes: 0,
            logical_block_size: 512,
            physical_block_size: 512,
            write_cache: None,
            device_model: None,
            serial: None,
        };
        let e = require_host_managed(Path::new("/dev/loop0"), &info)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid argument: /dev/loop0 is not a zoned block device (queue/zoned=none): \
             use a dir: or zoned-file: store"
        );
        info.model = ZonedModel::HostAware;
        let e = require_host_managed(Path::new("/dev/sdb"), &info)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/sdb is a host-aware"), "{e}");
    }
}
