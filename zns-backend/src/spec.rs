//! The `zns:` store spec: `zns:/dev/nvme0n1[,zones=A-B]` — a
//! [`ZonedStore`] on a host-managed zoned block device, on all its zones or
//! on zones `A..=B` (inclusive) so several images can share one drive.
//!
//! # Invariants
//! - One process opens a drive once (`O_EXCL`, so no other process can use
//!   it meanwhile); the images of the process share that open device
//!   through a registry keyed by device number, and each image claims its
//!   zone range: overlapping claims are refused, a claim ends when its store
//!   is dropped.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use log_engine::error::IoContext;
use log_engine::zoned::{ZonedDevice, ZonedStore};
use log_engine::{Error, Result, SegmentStore};

use crate::device::BlockZonedDevice;
use crate::range::ZoneRange;

/// The spec prefix.
pub const PREFIX: &str = "zns:";
const FORM: &str = "valid form: zns:/dev/DEVICE[,zones=A-B]";

/// A parsed `zns:` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZnsSpec {
    pub path: PathBuf,
    /// Inclusive zone range of the device; `None` = every zone.
    pub zones: Option<(u32, u32)>,
}

fn bad(spec: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("bad store spec {spec:?}: {why}; {FORM}"))
}

/// True for a `zns:` spec.
pub fn is_zns(spec: &str) -> bool {
    spec.starts_with(PREFIX)
}

/// Parse a zone range `A-B` (inclusive) or a single zone `A`.
pub fn parse_zone_range(s: &str) -> std::result::Result<(u32, u32), String> {
    let num = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("zone range {s:?}: {v:?} is not a zone number"))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let a = num(s)?;
            (a, a)
        }
    };
    if a > b {
        return Err(format!(
            "zone range {s:?}: first zone {a} is after last zone {b}"
        ));
    }
    Ok((a, b))
}

/// Parse a `zns:` spec.
pub fn parse_spec(spec: &str) -> Result<ZnsSpec> {
    let rest = spec
        .strip_prefix(PREFIX)
        .ok_or_else(|| bad(spec, "not a zns: spec"))?;
    let mut parts = rest.split(',');
    let path = parts.next().unwrap_or("");
    if path.is_empty() {
        return Err(bad(spec, "empty device path"));
    }
    if !path.starts_with('/') {
        return Err(bad(spec, format!("device path {path:?} is not absolute")));
    }
    let mut zones = None;
    for p in parts {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| bad(spec, format!("option {p:?} is not key=value")))?;
        match k {
            "zones" => {
                if zones.is_some() {
                    return Err(bad(spec, "zones given twice"));
                }
                zones = Some(parse_zone_range(v).map_err(|e| bad(spec, e))?);
            }
            _ => return Err(bad(spec, format!("unknown option {k:?}"))),
        }
    }
    Ok(ZnsSpec {
        path: PathBuf::from(path),
        zones,
    })
}

impl ZnsSpec {
    /// The canonical spec string.
    pub fn to_spec(&self) -> String {
        match self.zones {
            None => format!("{PREFIX}{}", self.path.display()),
            Some((a, b)) => format!("{PREFIX}{},zones={a}-{b}", self.path.display()),
        }
    }
}

/// Fold a `--zones A-B` option into a `zns:` spec (refused for other specs
/// and when the spec already names a range).
pub fn with_zones(spec: &str, zones: &str) -> Result<String> {
    if !is_zns(spec) {
        return Err(Error::InvalidArgument(format!(
            "--zones {zones} applies to a zns: store, not to {spec:?}"
        )));
    }
    let mut s = parse_spec(spec)?;
    if s.zones.is_some() {
        return Err(Error::InvalidArgument(format!(
            "--zones {zones} given but {spec:?} already names a zone range"
        )));
    }
    s.zones =
        Some(parse_zone_range(zones).map_err(|e| Error::InvalidArgument(format!("--zones: {e}")))?);
    Ok(s.to_spec())
}

struct Entry {
    dev: Weak<BlockZonedDevice>,
    claims: Vec<(u32, u32)>,
}

fn registry() -> &'static Mutex<HashMap<u64, Entry>> {
    static REG: std::sync::OnceLock<Mutex<HashMap<u64, Entry>>> = std::sync::OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Open (or share, inside this process) the device of `spec` and claim its
/// zone range.
pub fn open_range(spec: &ZnsSpec) -> Result<ZoneRange<BlockZonedDevice>> {
    let path: &Path = &spec.path;
    // Checks (block device, zoned, not a partition) before anything else.
    crate::sysfs::sysfs_dir(path)?;
    let rdev = std::fs::metadata(path)
        .ctx(|| format!("stat {}", path.display()))?
        .rdev();
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    let shared = reg.get(&rdev).and_then(|e| e.dev.upgrade());
    let dev = match shared {
        Some(d) => d,
        None => {
            let d = Arc::new(BlockZonedDevice::open(path)?);
            reg.insert(
                rdev,
                Entry {
                    dev: Arc::downgrade(&d),
                    claims: Vec::new(),
                },
            );
            d
        }
    };
    let mut range = match spec.zones {
        None => ZoneRange::whole(dev)?,
        Some((a, b)) => ZoneRange::new(dev, a, b)?,
    };
    let (a, b) = (range.first(), range.last());
    let entry = reg.get_mut(&rdev).ok_or_else(|| {
        Error::Unavailable(format!(
            "{}: device registry entry vanished",
            path.display()
        ))
    })?;
    if let Some(&(c, d)) = entry.claims.iter().find(|&&(c, d)| a <= d && c <= b) {
        return Err(Error::Unavailable(format!(
            "zones {a}-{b} of {} overlap zones {c}-{d}, already used by another image in this process",
            path.display()
        )));
    }
    entry.claims.push((a, b));
    range.set_on_drop(move || {
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = reg.get_mut(&rdev) {
            if let Some(i) = e.claims.iter().position(|&c| c == (a, b)) {
                e.claims.remove(i);
            }
        }
    });
    Ok(range)
}

/// Create a new, empty store on the zones of `spec`. Refuses zones holding
/// data (an [`Error::Exists`] from [`ZonedStore::create`]).
pub fn create_store(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    let s = parse_spec(spec)?;
    let range = open_range(&s)?;
    Ok(Arc::new(ZonedStore::create(range)?))
}

/// Erase the zones of `spec` (reset every sequential zone, invalidate
/// metadata on conventional zones) and create a new store there: what
/// `--force` asks for on a device that holds another image or unknown data.
pub fn format_store(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    let s = parse_spec(spec)?;
    let range = open_range(&s)?;
    tracing::warn!(dev = %range.describe(), "erasing the zones for a new store (--force)");
    Ok(Arc::new(ZonedStore::format(range)?))
}

/// Open the existing store on the zones of `spec`.
pub fn open_store(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    let s = parse_spec(spec)?;
    let range = open_range(&s)?;
    let g = range.geometry();
    tracing::debug!(dev = %range.describe(), zones = g.nr_zones, "opening zns store");
    Ok(Arc::new(ZonedStore::open(range)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(
            parse_spec("zns:/dev/nvme0n1").unwrap(),
            ZnsSpec {
                path: "/dev/nvme0n1".into(),
                zones: None
            }
        );
        let s = parse_spec("zns:/dev/nullb0,zones=2-9").unwrap();
        assert_eq!(s.zones, Some((2, 9)));
        assert_eq!(s.to_spec(), "zns:/dev/nullb0,zones=2-9");
        assert_eq!(
            parse_spec("zns:/dev/x,zones=5").unwrap().zones,
            Some((5, 5))
        );
        for (bad, why) in [
            ("zns:", "empty device path"),
            ("zns:dev/x", "not absolute"),
            ("zns:/dev/x,zones=9-2", "after last zone"),
            ("zns:/dev/x,zones=a-2", "not a zone number"),
            ("zns:/dev/x,zones", "not key=value"),
            ("zns:/dev/x,size=3", "unknown option"),
            ("zns:/dev/x,zones=1-2,zones=3-4", "twice"),
            ("dir:/x", "not a zns: spec"),
        ] {
            let e = parse_spec(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("valid form: zns:"), "{bad}: {e}");
        }
    }

    #[test]
    fn fold_zones() {
        assert_eq!(
            with_zones("zns:/dev/nullb0", "0-7").unwrap(),
            "zns:/dev/nullb0,zones=0-7"
        );
        assert!(with_zones("zns:/dev/nullb0,zones=1-2", "0-7").is_err());
        let e = with_zones("dir:/x", "0-7").unwrap_err().to_string();
        assert!(e.contains("applies to a zns: store"), "{e}");
        assert!(with_zones("zns:/dev/nullb0", "7-0").is_err());
    }

    #[test]
    fn not_a_block_device() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let spec = format!("zns:{}", f.path().display());
        let e = create_store(&spec).unwrap_err().to_string();
        assert!(e.contains("is not a block device"), "{e}");
        let e = open_store("zns:/dev/null").unwrap_err().to_string();
        assert!(e.contains("/dev/null is not a block device"), "{e}");
    }
}
