//! `ZoneRange`: zones `A..=B` of a zoned device seen as a device of their
//! own (zones `0..=B-A`), so several images can live on one drive
//! (`zns:/dev/nvme0n1,zones=A-B`).
//!
//! # Invariants
//! - Every call is translated (`zone + A`) and checked against the range
//!   first: a zone outside it is an [`Error::InvalidArgument`], never an I/O
//!   to another image's zones.
//! - The open/active limits are the device's, unchanged: they are shared by
//!   every range of the drive.
//! - Conventional zones of the range are the device's leading conventional
//!   zones that fall inside it (still leading).

use std::sync::Arc;

use log_engine::zoned::{ZoneInfo, ZonedDevice, ZonedGeometry};
use log_engine::{Error, Result};

type OnDrop = Box<dyn FnOnce() + Send + Sync>;

/// Zones `first..=last` of `D`. See the module docs.
pub struct ZoneRange<D: ZonedDevice> {
    dev: Arc<D>,
    first: u32,
    count: u32,
    geo: ZonedGeometry,
    on_drop: Option<OnDrop>,
}

impl<D: ZonedDevice> std::fmt::Debug for ZoneRange<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneRange")
            .field("dev", &self.dev)
            .field("first", &self.first)
            .field("count", &self.count)
            .finish()
    }
}

impl<D: ZonedDevice> ZoneRange<D> {
    /// Zones `first..=last` of `dev`; refused when the range is empty or
    /// runs past the device.
    pub fn new(dev: Arc<D>, first: u32, last: u32) -> Result<Self> {
        let g = dev.geometry();
        if first > last || last >= g.nr_zones {
            return Err(Error::InvalidArgument(format!(
                "zone range {first}-{last} is outside {} (zones 0-{})",
                dev.describe(),
                g.nr_zones.saturating_sub(1)
            )));
        }
        let count = last - first + 1;
        let geo = ZonedGeometry {
            nr_zones: count,
            nr_conventional: g.nr_conventional.saturating_sub(first).min(count),
            ..g
        };
        Ok(ZoneRange {
            dev,
            first,
            count,
            geo,
            on_drop: None,
        })
    }

    /// All zones of `dev`.
    pub fn whole(dev: Arc<D>) -> Result<Self> {
        let n = dev.geometry().nr_zones;
        Self::new(dev, 0, n.saturating_sub(1))
    }

    /// Run `f` when the range is dropped (releases its claim on the drive).
    pub fn set_on_drop(&mut self, f: impl FnOnce() + Send + Sync + 'static) {
        self.on_drop = Some(Box::new(f));
    }

    /// First device zone of the range.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// Last device zone of the range.
    pub fn last(&self) -> u32 {
        self.first + self.count - 1
    }

    /// The whole device.
    pub fn device(&self) -> &Arc<D> {
        &self.dev
    }

    fn map(&self, zone: u32) -> Result<u32> {
        if zone >= self.count {
            return Err(Error::InvalidArgument(format!(
                "{}: zone {zone} out of range (the range has {} zones)",
                self.describe(),
                self.count
            )));
        }
        Ok(self.first + zone)
    }
}

impl<D: ZonedDevice> Drop for ZoneRange<D> {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl<D: ZonedDevice> ZonedDevice for ZoneRange<D> {
    fn geometry(&self) -> ZonedGeometry {
        self.geo
    }

    fn describe(&self) -> String {
        let g = self.dev.geometry();
        if self.first == 0 && self.count == g.nr_zones {
            self.dev.describe()
        } else {
            format!(
                "{} zones {}-{}",
                self.dev.describe(),
                self.first,
                self.last()
            )
        }
    }

    fn report_zones(&self) -> Result<Vec<ZoneInfo>> {
        let all = self.dev.report_zones()?;
        let base = self.first as u64 * self.geo.zone_size;
        let end = (self.first + self.count) as usize;
        let part = all.get(self.first as usize..end).ok_or_else(|| {
            Error::corrupt(
                format!("zone report of {}", self.dev.describe()),
                format!("{} zones, the range needs {end}", all.len()),
            )
        })?;
        Ok(part
            .iter()
            .map(|z| ZoneInfo {
                index: z.index - self.first,
                start: z.start - base,
                ..*z
            })
            .collect())
    }

    fn write(&self, zone: u32, offset: u64, data: &[u8]) -> Result<()> {
        self.dev.write(self.map(zone)?, offset, data)
    }

    fn read(&self, zone: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.dev.read(self.map(zone)?, offset, buf)
    }

    fn open(&self, zone: u32) -> Result<()> {
        self.dev.open(self.map(zone)?)
    }

    fn close(&self, zone: u32) -> Result<()> {
        self.dev.close(self.map(zone)?)
    }

    fn finish(&self, zone: u32) -> Result<()> {
        self.dev.finish(self.map(zone)?)
    }

    fn reset(&self, zone: u32) -> Result<()> {
        self.dev.reset(self.map(zone)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use log_engine::zoned::conformance::run_zoned_device_conformance;
    use log_engine::zoned::ZonedFile;

    fn geo(conv: u32) -> ZonedGeometry {
        ZonedGeometry {
            zone_size: 256 << 10,
            zone_capacity: 192 << 10,
            nr_zones: 16,
            nr_conventional: conv,
            max_open: 3,
            max_active: 5,
            write_granularity: 4096,
        }
    }

    /// A range in the middle of an emulated drive, starting inside the
    /// conventional zones, passes the device suite (with a power cycle).
    #[test]
    fn range_passes_device_conformance() {
        for (conv, first, last) in [(2u32, 1u32, 12u32), (0, 3, 14), (2, 2, 15)] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("z.img");
            let mut n = 0;
            let mut make = || {
                n += 1;
                let p = dir.path().join(format!("z{n}.img"));
                let f = ZonedFile::create(&p, geo(conv)).unwrap();
                ZoneRange::new(Arc::new(f), first, last).unwrap()
            };
            let mut reopen = |r: ZoneRange<ZonedFile>| {
                let path = r.device().path().to_path_buf();
                drop(r);
                let f = ZonedFile::open(&path).unwrap();
                ZoneRange::new(Arc::new(f), first, last).unwrap()
            };
            run_zoned_device_conformance(&mut make, Some(&mut reopen))
                .unwrap_or_else(|e| panic!("conv {conv} range {first}-{last}: {e}"));
            drop(p);
        }
    }

    #[test]
    fn range_geometry_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let f = Arc::new(ZonedFile::create(dir.path().join("z"), geo(2)).unwrap());
        let r = ZoneRange::new(f.clone(), 1, 4).unwrap();
        let g = r.geometry();
        assert_eq!((g.nr_zones, g.nr_conventional), (4, 1));
        assert_eq!((g.max_open, g.max_active), (3, 5));
        assert!(r.describe().ends_with("zones 1-4"), "{}", r.describe());
        let rep = r.report_zones().unwrap();
        assert_eq!(rep.len(), 4);
        assert_eq!((rep[0].index, rep[0].start), (0, 0));
        assert_eq!(rep[3].start, 3 * (256 << 10));
        assert!(matches!(
            r.write(4, 0, &[0u8; 4096]),
            Err(Error::InvalidArgument(_))
        ));
        let e = ZoneRange::new(f.clone(), 10, 16).unwrap_err().to_string();
        assert!(e.contains("zone range 10-16 is outside"), "{e}");
        assert!(e.contains("(zones 0-15)"), "{e}");
        assert!(ZoneRange::new(f.clone(), 5, 4).is_err());
        let w = ZoneRange::whole(f.clone()).unwrap();
        assert_eq!(w.geometry(), f.geometry());
        assert_eq!(w.describe(), f.describe());
    }
}
