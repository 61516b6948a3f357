//! ublk devices served by the daemon: `lsvdctl map NAME` -> `/dev/ublkbN`.
//!
//! A journaled image is served write-back through its journal (a write is
//! acknowledged once its journal record is on the cache device, FLUSH and FUA
//! make the journal durable), a plain image write-through (a write is
//! acknowledged once a flush that started after it has made it durable in the
//! store), so a daemon crash never loses an acknowledged write either way.
//! An image is either exported over NBD or mapped, never both (two engines on
//! one store would corrupt it).
//!
//! Recovery: the mapped devices are recorded in `<run-dir>/devices.json`
//! (written atomically on every map and unmap). Devices are added with
//! UBLK_F_USER_RECOVERY, so when the daemon dies (kill -9) the kernel keeps
//! `/dev/ublkbN` quiesced; a restarted daemon (or `lsvdctl recover`)
//! reopens each recorded image (replaying its journal) and reattaches to the
//! same device id, and the filesystem on it sees no error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use lsvd_ublk::{serve, BlockDevLike, DeviceHandle, ServeParams};
use tracing::{info, warn};

use super::control::DeviceInfo;
use super::exports::Daemon;
use crate::catalog::validate_name;
use crate::volume::Volume;

/// What `devices.json` records per device.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Saved {
    name: String,
    dev_id: u32,
}

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
        self.map_inner(name, queues, depth, accept_cache_loss, None)
    }

    fn state_path(&self) -> PathBuf {
        self.run_dir.join("devices.json")
    }

    /// Record the mapped devices (temp file + rename).
    fn save_state(&self) {
        let saved: Vec<Saved> = self
            .mapped
            .lock()
            .values()
            .map(|m| Saved {
                name: m.info.name.clone(),
                dev_id: m.info.dev_id,
            })
            .collect();
        let path = self.state_path();
        let tmp = path.with_extension("json.tmp");
        let res = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            warn!("cannot record mapped devices in {}: {e}", path.display());
        }
    }

    /// Reattach every recorded device whose kernel side still exists
    /// (quiesced after the previous daemon died). Returns what came back.
    pub(super) fn recover_devices(&self) -> Vec<DeviceInfo> {
        let path = self.state_path();
        let saved: Vec<Saved> = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(v) => v,
                Err(e) => {
                    warn!("ignoring unreadable {}: {e}", path.display());
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        };
        let mut back = Vec::new();
        for s in saved {
            if self.mapped.lock().contains_key(&s.name) {
                continue;
            }
            if !Path::new(&format!("/dev/ublkc{}", s.dev_id)).exists() {
                info!(name = %s.name, dev_id = s.dev_id, "recorded device is gone; not recovering it");
                continue;
            }
            match self.map_inner(&s.name, None, None, false, Some(s.dev_id)) {
                Ok(d) => {
                    info!(name = %d.name, path = %d.path, "device recovered");
                    back.push(d);
                }
                Err(e) => warn!(name = %s.name, "cannot recover device {}: {e:#}", s.dev_id),
            }
        }
        self.save_state();
        back
    }

    fn map_inner(
        &self,
        name: &str,
        queues: Option<u16>,
        depth: Option<u16>,
        accept_cache_loss: bool,
        recover: Option<u32>,
    ) -> anyhow::Result<DeviceInfo> {
        validate_name(name)?;
        if let Some(d) = self.mapped.lock().get(name) {
            bail!("image {name:?} is already mapped at {}", d.info.path);
        }
        if let Some(why) = ublk_unavailable() {
            bail!("{why}");
        }
        let volume = self.acquire_volume(name, false, accept_cache_loss)?;
        let journaled = matches!(*volume, Volume::Journaled(_));
        let mut params = ServeParams {
            write_through: !journaled,
            recover,
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
                if let Err(ce) = self.release_volume(name) {
                    warn!("{ce:#}");
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
        self.save_state();
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
        let res = self.retire_device(m);
        self.save_state();
        res
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
            if let Err(e) = self.retire_device(m) {
                warn!("unmap {name:?}: {e:#}");
            }
        }
        self.save_state();
    }
}

impl Daemon {
    /// Stop the device (in-flight requests finish, the kernel device goes away),
    /// then flush the image and close it (unless offload functions still use it).
    fn retire_device(&self, mut m: Mapped) -> anyhow::Result<DeviceInfo> {
        let name = m.info.name.clone();
        if let Some(h) = m.handle.take() {
            h.stop()
                .with_context(|| format!("stop device {}", m.info.path))?;
        }
        m.volume
            .flush()
            .with_context(|| format!("flush image {name:?}"))?;
        self.release_volume(&name)?;
        info!(name, path = %m.info.path, "unmapped");
        Ok(m.info)
    }
}
