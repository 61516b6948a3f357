//! Adding (or recovering) a ublk device and running its server threads.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::UblkDev;
use libublk::{sys, UblkFlags};

use crate::blockdev::BlockDevLike;
use crate::error::{ublk, Error, Result};
use crate::flush::FlushGroup;
use crate::params::{ublk_params, ServeParams, BLOCK_SIZE};
use crate::queue::{run_queue, QueueShared};

/// ublk control flags of every lsvd device: a crashed server leaves the
/// device quiesced for a new one to recover, and requests the dead server
/// held are re-issued to it (the engine's writes are idempotent).
const CTRL_FLAGS: u64 = (sys::UBLK_F_USER_RECOVERY | sys::UBLK_F_USER_RECOVERY_REISSUE) as u64;

/// A served device. Dropping it without [`DeviceHandle::stop`] stops it too.
pub struct DeviceHandle {
    dev_id: u32,
    path: String,
    dev: Arc<dyn BlockDevLike>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for DeviceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceHandle")
            .field("dev_id", &self.dev_id)
            .field("path", &self.path)
            .finish()
    }
}

impl DeviceHandle {
    /// The ublk device id (N in /dev/ublkbN).
    pub fn dev_id(&self) -> u32 {
        self.dev_id
    }

    /// The block device path, `/dev/ublkbN`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Stop serving: the kernel fails new I/O, the queues drain, the device
    /// is deleted and the served device flushed.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    /// Wait until the device is stopped by someone else (e.g. `ublk del`).
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::NotStarted("ublk server thread panicked".into()))?,
            None => Ok(()),
        }
    }

    fn stop_inner(&mut self) -> Result<()> {
        if self.thread.is_none() {
            return Ok(());
        }
        let id = i32::try_from(self.dev_id)
            .map_err(|_| Error::InvalidArgument(format!("device id {}", self.dev_id)))?;
        let kill = UblkCtrl::new_simple(id)
            .map_err(ublk(format!("opening ublk device {id}")))
            .and_then(|c| {
                c.kill_dev()
                    .map_err(ublk(format!("stopping ublk device {id}")))
            });
        if let Err(e) = &kill {
            tracing::warn!(dev = id, error = %e, "stopping the device failed");
        }
        let served = self.join();
        let flushed = self.dev.flush().map_err(|e| Error::Io {
            context: format!("flushing the device behind ublk {id}"),
            source: std::io::Error::other(e),
        });
        kill?;
        served?;
        flushed
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!(dev = self.dev_id, error = %e, "stopping ublk device on drop");
        }
    }
}

/// Serve `dev` as a ublk block device; returns once `/dev/ublkbN` is live.
///
/// With `params.recover = Some(id)`, reattaches to the quiesced device `id`
/// left by a server that died (`UBLK_F_USER_RECOVERY`): requests it held are
/// re-issued to `dev`.
pub fn serve(dev: Arc<dyn BlockDevLike>, params: &ServeParams) -> Result<DeviceHandle> {
    params.validate().map_err(Error::InvalidArgument)?;
    let size = dev.size();
    if size == 0 || !size.is_multiple_of(u64::from(BLOCK_SIZE)) {
        return Err(Error::InvalidArgument(format!(
            "device size {size} is not a positive multiple of 4096"
        )));
    }
    let (started_tx, started_rx) = mpsc::channel::<(u32, String)>();
    let p = params.clone();
    let dev2 = dev.clone();
    let thread = std::thread::Builder::new()
        .name("ublk-server".into())
        .spawn(move || run_device(dev2, &p, size, started_tx))
        .map_err(|source| Error::Io {
            context: "spawning the ublk server thread".into(),
            source,
        })?;
    match started_rx.recv() {
        Ok((dev_id, path)) => Ok(DeviceHandle {
            dev_id,
            path,
            dev,
            thread: Some(thread),
        }),
        Err(_) => {
            // The thread ended before the device started: return its error.
            match thread.join() {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(Error::NotStarted("server thread ended".into())),
                Err(_) => Err(Error::NotStarted("server thread panicked".into())),
            }
        }
    }
}

fn run_device(
    dev: Arc<dyn BlockDevLike>,
    params: &ServeParams,
    size: u64,
    started: mpsc::Sender<(u32, String)>,
) -> Result<()> {
    let (id, dev_flags) = match params.recover {
        Some(id) => {
            let id =
                i32::try_from(id).map_err(|_| Error::InvalidArgument(format!("device id {id}")))?;
            let ctrl =
                UblkCtrl::new_simple(id).map_err(ublk(format!("opening ublk device {id}")))?;
            let mut old = sys::ublk_params {
                len: std::mem::size_of::<sys::ublk_params>() as u32,
                types: sys::UBLK_PARAM_TYPE_BASIC,
                ..Default::default()
            };
            ctrl.get_params(&mut old)
                .map_err(ublk(format!("reading parameters of ublk device {id}")))?;
            if old.basic.dev_sectors != size >> 9 {
                return Err(Error::InvalidArgument(format!(
                    "ublk device {id} has {} bytes, the image {size}: not the same device",
                    old.basic.dev_sectors << 9
                )));
            }
            ctrl.start_user_recover()
                .map_err(ublk(format!("START_USER_RECOVERY on ublk device {id}")))?;
            (id, UblkFlags::UBLK_DEV_F_RECOVER_DEV)
        }
        None => (
            params.dev_id.map_or(-1, |d| d as i32),
            UblkFlags::UBLK_DEV_F_ADD_DEV,
        ),
    };
    let ctrl = UblkCtrlBuilder::default()
        .name("lsvd")
        .id(id)
        .nr_queues(params.queues)
        .depth(params.depth)
        .io_buf_bytes(params.max_io_bytes)
        .ctrl_flags(CTRL_FLAGS)
        .dev_flags(dev_flags)
        .build()
        .map_err(ublk("creating the ublk device"))?;
    let recovering = params.recover.is_some();
    let max_io = params.max_io_bytes;
    let write_through = params.write_through;
    let tgt_init = move |udev: &mut UblkDev| {
        udev.tgt.dev_size = size;
        udev.tgt.params = ublk_params(size, max_io, write_through);
        // One extra SQE/CQE per queue for the eventfd read.
        let depth = udev.dev_info.queue_depth;
        udev.tgt.sq_depth = depth.saturating_add(2);
        udev.tgt.cq_depth = depth.saturating_add(2);
        udev.tgt.extra_ios = 1;
        Ok(())
    };
    let shared = QueueShared {
        dev,
        workers: params.workers_per_queue,
        size,
        write_through,
        flush: Arc::new(FlushGroup::default()),
    };
    let q_fn = move |qid: u16, udev: &UblkDev| run_queue(qid, udev, &shared);
    let on_start = move |c: &UblkCtrl| {
        let info = c.dev_info();
        let _ = started.send((info.dev_id, c.get_bdev_path()));
    };
    ctrl.run_target(tgt_init, q_fn, on_start)
        .map_err(ublk("running the ublk device"))?;
    if recovering {
        // A recovered control does not delete its device on drop.
        if let Err(e) = ctrl.del_dev() {
            tracing::debug!(error = %e, "deleting the recovered device");
        }
    }
    Ok(())
}
