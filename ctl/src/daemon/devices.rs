//! ublk devices served by the daemon: `lsvdctl map NAME` -> `/dev/ublkbN`.
//!
//! A journaled image is served write-back through its journal (a write is
//! acknowledged once its journal record is on the cache device, FLUSH and FUA
//! make the journal durable), a plain image write-through (a write is
//! acknowledged once a flush that started after it has made it durable in the
//! store), so a daemon crash never loses an acknowledged write either way.
//! An image is either exported over NBD or mapped, never both (two engines on
//! one store would corrupt it).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use lsvd_ublk::{serve, BlockDevLike, DeviceHandle, ServeParams};
use tracing::{info, warn};

use super::control::DeviceInfo;
use super::exports::{open_options, Daemon};
use crate::catalog::validate_name;
use crate::volume::Volume;

/// One mapped image.
pub(crate) struct Mapped {
    volume: Arc<Volume>,
    handle: Option<DeviceHandle>,
    info: DeviceInfo,
}

/// Why this machine cannot serve ublk devices, if it cannot.
fn ublk_unavailable() -> Option<String> {
    if !Path::new("/dev/ublk-control").exists() {
        return Some(
            "/dev/ublk-control is missing: load the ublk_drv module (modprobe ublk_drv)".into(),
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mapping a ublk device needs root".into());
    }
    None
}

impl Daemon {
    /// Serve image `name` as a ublk device (admin lock held by the caller).
    pub(super) fn map(
        &self,
        name: &str,
        queues: Option<u16>,
        depth: Option<u16>,
        accept_cache_loss: bool,
    ) -> anyhow::Result<DeviceInfo> {
        validate_name(name)?;
        if let Some(d) = self.mapped.lock().get(name) {
            bail!("image {name:?} is already mapped at {}", d.info.path);
        }
        if let Some(why) = ublk_unavailable() {
            bail!("{why}");
        }
        let entry = self.catalog.require(name)?;
        let (volume, _report) = Volume::open(&entry, open_options(false), accept_cache_loss)?;
        let volume = Arc::new(volume);
        let journaled = matches!(*volume, Volume::Journaled(_));
        let mut params = ServeParams {
            write_through: !journaled,
            ..ServeParams::default()
        };
        if let Some(q) = queues {
            params.queues = q.max(1);
        }
        if let Some(d) = depth {
            params.depth = d.max(1);
        }
        let dev: Arc<dyn BlockDevLike> = volume.clone();
        let handle = match serve(dev, &params) {
            Ok(h) => h,
            Err(e) => {
                if let Err(ce) = volume.close() {
                    warn!("close image {name:?}: {ce}");
                }
                return Err(
                    anyhow::Error::new(e).context(format!("serve image {name:?} over ublk"))
                );
            }
        };
        let info = DeviceInfo {
            name: name.to_string(),
            path: handle.path().to_string(),
            dev_id: handle.dev_id(),
            size: volume.size(),
            journaled,
        };
        info!(name, path = %info.path, journaled, "mapped");
        self.mapped.lock().insert(
            name.to_string(),
            Mapped {
                volume,
                handle: Some(handle),
                info: info.clone(),
            },
        );
        Ok(info)
    }

    /// Remove the device of `target` (`/dev/ublkbN` or an image name).
    pub(super) fn unmap(&self, target: &str) -> anyhow::Result<DeviceInfo> {
        let name = {
            let m = self.mapped.lock();
            m.iter()
                .find(|(n, d)| n.as_str() == target || d.info.path == target)
                .map(|(n, _)| n.clone())
        };
        let Some(name) = name else {
            bail!("{target:?} is not a mapped image or device");
        };
        let Some(m) = self.mapped.lock().remove(&name) else {
            bail!("{target:?} is not mapped");
        };
        retire(m)
    }

    pub(super) fn devices(&self) -> Vec<DeviceInfo> {
        self.mapped
            .lock()
            .values()
            .map(|m| m.info.clone())
            .collect()
    }

    /// Remove every device (daemon shutdown).
    pub(super) fn unmap_all(&self) {
        let all: Vec<Mapped> = std::mem::take(&mut *self.mapped.lock())
            .into_values()
            .collect();
        for m in all {
            let name = m.info.name.clone();
            if let Err(e) = retire(m) {
                warn!("unmap {name:?}: {e:#}");
            }
        }
    }
}

/// Stop the device (in-flight requests finish, the kernel device goes away),
/// then flush and close the image.
fn retire(mut m: Mapped) -> anyhow::Result<DeviceInfo> {
    let name = m.info.name.clone();
    if let Some(h) = m.handle.take() {
        h.stop()
            .with_context(|| format!("stop device {}", m.info.path))?;
    }
    m.volume
        .flush()
        .and_then(|()| m.volume.close())
        .with_context(|| format!("flush and close image {name:?}"))?;
    info!(name, path = %m.info.path, "unmapped");
    Ok(m.info)
}
