//! Store specs: the strings users pass to pick and locate a store.
//!
//! - `dir:PATH` — a [`DirStore`] in directory `PATH`;
//! - `zoned-file:PATH,zone-size=64M,zones=64[,zone-cap=48M][,conv=N][,max-open=N][,max-active=N]`
//!   — a [`ZonedStore`] on an emulated zoned file ([`ZonedFile`]). Sizes take
//!   K/M/G/T suffixes. Defaults: `zone-cap` = `zone-size`, `conv=0`,
//!   `max-open=8`, `max-active=12`. The geometry options are needed to
//!   create; on open the geometry stored in the file is used (options given
//!   on open must match it).

use std::path::PathBuf;
use std::sync::Arc;

use super::dir::DirStore;
use super::SegmentStore;
use crate::size::parse_size;
use crate::zoned::{ZonedFile, ZonedGeometry, ZonedStore};
use crate::{Error, Result};

const FORMS: &str = "valid forms: dir:PATH | zoned-file:PATH,zone-size=SIZE,zones=N[,zone-cap=SIZE][,conv=N][,max-open=N][,max-active=N]";

/// A parsed store spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// `dir:PATH`
    Dir(PathBuf),
    /// `zoned-file:PATH,...`; `geometry` is `None` when no geometry option
    /// was given (enough to open, not to create).
    ZonedFile {
        path: PathBuf,
        geometry: Option<ZonedGeometry>,
    },
}

fn bad(spec: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("bad store spec {spec:?}: {why}; {FORMS}"))
}

/// Parse a store spec (see the module docs).
pub fn parse_spec(spec: &str) -> Result<StoreSpec> {
    let (kind, rest) = spec
        .split_once(':')
        .ok_or_else(|| bad(spec, "missing kind"))?;
    match kind {
        "dir" => {
            if rest.is_empty() {
                return Err(bad(spec, "empty path"));
            }
            Ok(StoreSpec::Dir(PathBuf::from(rest)))
        }
        "zoned-file" => {
            let mut parts = rest.split(',');
            let path = parts.next().unwrap_or("");
            if path.is_empty() {
                return Err(bad(spec, "empty path"));
            }
            let mut zone_size = None;
            let mut zones = None;
            let mut zone_cap = None;
            let mut conv = None;
            let mut max_open = None;
            let mut max_active = None;
            for p in parts {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| bad(spec, format!("option {p:?} is not key=value")))?;
                let num = |v: &str| -> Result<u32> {
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| bad(spec, format!("{k}={v:?} is not a number")))
                };
                match k {
                    "zone-size" => zone_size = Some(parse_size(v).map_err(|e| bad(spec, e))?),
                    "zone-cap" => zone_cap = Some(parse_size(v).map_err(|e| bad(spec, e))?),
                    "zones" => zones = Some(num(v)?),
                    "conv" => conv = Some(num(v)?),
                    "max-open" => max_open = Some(num(v)?),
                    "max-active" => max_active = Some(num(v)?),
                    _ => return Err(bad(spec, format!("unknown option {k:?}"))),
                }
            }
            let any = zone_size.is_some()
                || zones.is_some()
                || zone_cap.is_some()
                || conv.is_some()
                || max_open.is_some()
                || max_active.is_some();
            let geometry = if any {
                let zone_size = zone_size.ok_or_else(|| bad(spec, "zone-size is required"))?;
                let nr_zones = zones.ok_or_else(|| bad(spec, "zones is required"))?;
                Some(ZonedGeometry {
                    zone_size,
                    zone_capacity: zone_cap.unwrap_or(zone_size),
                    nr_zones,
                    nr_conventional: conv.unwrap_or(0),
                    max_open: max_open.unwrap_or(8),
                    max_active: max_active.unwrap_or(12),
                    write_granularity: 4096,
                })
            } else {
                None
            };
            Ok(StoreSpec::ZonedFile {
                path: PathBuf::from(path),
                geometry,
            })
        }
        _ => Err(bad(spec, format!("unknown kind {kind:?}"))),
    }
}

fn zoned_file_store(store: ZonedStore<ZonedFile>) -> Arc<dyn SegmentStore> {
    let path = store.device().path().to_path_buf();
    store.set_destroy_hook(move || {
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("remove zoned file {}", path.display()), e))
    });
    Arc::new(store)
}

/// Create a new, empty store from a spec.
pub fn create_store(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    match parse_spec(spec)? {
        StoreSpec::Dir(p) => Ok(Arc::new(DirStore::create(p)?)),
        StoreSpec::ZonedFile { path, geometry } => {
            let geometry = geometry
                .ok_or_else(|| bad(spec, "creating a zoned file needs zone-size and zones"))?;
            let dev = ZonedFile::create(&path, geometry)?;
            match ZonedStore::create(dev) {
                Ok(s) => Ok(zoned_file_store(s)),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    Err(e)
                }
            }
        }
    }
}

/// Open an existing store from a spec.
pub fn open_store(spec: &str) -> Result<Arc<dyn SegmentStore>> {
    match parse_spec(spec)? {
        StoreSpec::Dir(p) => Ok(Arc::new(DirStore::open(p)?)),
        StoreSpec::ZonedFile { path, geometry } => {
            let dev = ZonedFile::open(&path)?;
            if let Some(g) = geometry {
                use crate::zoned::ZonedDevice;
                if g != dev.geometry() {
                    return Err(bad(
                        spec,
                        format!(
                            "geometry differs from the one stored in {} ({:?})",
                            path.display(),
                            dev.geometry()
                        ),
                    ));
                }
            }
            Ok(zoned_file_store(ZonedStore::open(dev)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        assert_eq!(
            parse_spec("dir:/a/b").unwrap(),
            StoreSpec::Dir(PathBuf::from("/a/b"))
        );
        let s = parse_spec("zoned-file:/x.img,zone-size=64M,zones=64").unwrap();
        let StoreSpec::ZonedFile { path, geometry } = s else {
            panic!("not zoned")
        };
        assert_eq!(path, PathBuf::from("/x.img"));
        let g = geometry.unwrap();
        assert_eq!(g.zone_size, 64 << 20);
        assert_eq!(g.zone_capacity, 64 << 20);
        assert_eq!(
            (g.nr_zones, g.nr_conventional, g.max_open, g.max_active),
            (64, 0, 8, 12)
        );
        let s = parse_spec(
            "zoned-file:/x.img,zone-size=64M,zones=16,zone-cap=48M,conv=2,max-open=3,max-active=5",
        )
        .unwrap();
        let StoreSpec::ZonedFile { geometry, .. } = s else {
            panic!("not zoned")
        };
        let g = geometry.unwrap();
        assert_eq!(g.zone_capacity, 48 << 20);
        assert_eq!(
            (g.nr_zones, g.nr_conventional, g.max_open, g.max_active),
            (16, 2, 3, 5)
        );
        assert_eq!(
            parse_spec("zoned-file:/x.img").unwrap(),
            StoreSpec::ZonedFile {
                path: PathBuf::from("/x.img"),
                geometry: None
            }
        );
        for bad in [
            "",
            "dir:",
            "nfs:/x",
            "/plain/path",
            "zoned-file:,zones=3",
            "zoned-file:/x,zones=3",
            "zoned-file:/x,zone-size=1M,zones=x",
            "zoned-file:/x,zone-size=1M,zones=3,colour=red",
            "zoned-file:/x,zone-size=1Q,zones=3",
        ] {
            let e = parse_spec(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
            assert!(e.to_string().contains("valid forms"), "{bad}: {e}");
        }
    }

    #[test]
    fn create_open_destroy_by_spec() {
        let dir = tempfile::tempdir().unwrap();
        for spec in [
            format!("dir:{}/d", dir.path().display()),
            format!(
                "zoned-file:{}/z.img,zone-size=1M,zones=6",
                dir.path().display()
            ),
        ] {
            let s = create_store(&spec).unwrap();
            s.write_segment(7, &[3u8; 8192]).unwrap();
            s.put_meta("superblock", b"hello").unwrap();
            assert!(
                matches!(create_store(&spec), Err(Error::Exists(_))),
                "{spec}"
            );
            drop(s);
            let s = open_store(&spec).unwrap();
            let mut b = [0u8; 4096];
            s.read_segment(7, 4096, &mut b).unwrap();
            assert_eq!(b, [3u8; 4096]);
            assert_eq!(s.get_meta("superblock").unwrap().unwrap(), b"hello");
            s.destroy().unwrap();
            drop(s);
            assert!(
                matches!(open_store(&spec), Err(Error::NotFound(_))),
                "{spec}"
            );
        }
    }
}
