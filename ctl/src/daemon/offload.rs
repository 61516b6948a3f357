//! The offload server inside the daemon: functions registered over the offload socket
//! read the image through the daemon's own open [`Volume`] (the one serving the NBD
//! export or the ublk device), so an offloaded read sees every acknowledged write,
//! including writes still only in the image's journal.
//!
//! # Invariants
//! - One opener per image: every open volume of the daemon has exactly one entry in
//!   `Daemon::opened` (its [`VolumeSource`]), whether it is exported, mapped, or held
//!   open for offload alone (`Daemon::held`). An export or map of a held image takes
//!   the held volume over instead of opening the image again.
//! - Access is decided per request by [`check_access`] (the rule of the standalone
//!   server: the peer may read the image's store path); function ownership by the
//!   offload server (`SO_PEERCRED`).
//! - An image neither exported nor mapped is opened on first offload use, by the same
//!   [`Volume::open`] as an export (journal replay, read cache), writable, and stays
//!   open while a registered function refers to it (closed when the last is removed,
//!   or at shutdown).
//! - Unexport/unmap never breaks a running call: when functions still refer to the
//!   image its volume stays open (held); otherwise the volume is closed only after the
//!   calls in flight, which hold a clone of its source, finished (at most the server's
//!   total call time).

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use lsvd_offload::abi::BLOCK_SIZE;
use lsvd_offload::access::Peer;
use lsvd_offload::server::{ImageResolver, ResolveError};
use lsvd_offload::BlockSource;
use tracing::{info, warn};

use super::exports::{open_options, Daemon};
use crate::catalog::{spec_local_path, CatalogEntry};
use crate::cmd::offload::{check_access, check_store_access};
use crate::volume::Volume;

/// How long closing a volume waits for offload calls in flight (above the server's
/// 1 s cap per call).
const DRAIN: Duration = Duration::from_secs(5);

/// The blocks of an open volume, for the offload chain executor.
pub struct VolumeSource {
    volume: Arc<Volume>,
    blocks: u64,
    /// Opened read-only (a plain image exported read-only): cannot serve a writable
    /// export or a map.
    read_only: bool,
    /// Local path of the store the volume was opened from (for the access check of
    /// calls on the open volume, without reading the catalog each time).
    store: Option<PathBuf>,
}

impl VolumeSource {
    pub(super) fn new(
        volume: Arc<Volume>,
        read_only: bool,
        entry: &CatalogEntry,
    ) -> Arc<VolumeSource> {
        let blocks = volume.size() / BLOCK_SIZE as u64;
        Arc::new(VolumeSource {
            volume,
            blocks,
            read_only,
            store: spec_local_path(&entry.store),
        })
    }
}

impl BlockSource for VolumeSource {
    fn block_count(&self) -> u64 {
        self.blocks
    }

    fn read_block(&self, lba: u64, buf: &mut [u8; BLOCK_SIZE]) -> Result<(), io::Error> {
        let off = lba
            .checked_mul(BLOCK_SIZE as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "LBA overflow"))?;
        self.volume.read(off, buf).map_err(io::Error::other)
    }
}

/// The daemon's [`ImageResolver`] (weak: the daemon owns the server).
pub struct DaemonResolver {
    pub(super) daemon: Weak<Daemon>,
}

impl ImageResolver for DaemonResolver {
    fn resolve(&self, image: &str, peer: &Peer) -> Result<Arc<dyn BlockSource>, ResolveError> {
        let d = self
            .daemon
            .upgrade()
            .ok_or_else(|| ResolveError::Unavailable("the daemon is stopping".into()))?;
        // An open volume: checked against the store it was opened from (same rule, no
        // catalog read per call). Otherwise through the catalog, then opened.
        let open = d.opened.lock().get(image).cloned();
        let src = match open {
            Some(src) => {
                check_store_access(src.store.as_deref(), image, peer)?;
                src
            }
            None => {
                check_access(&d.catalog, image, peer)?;
                d.offload_source(image)?
            }
        };
        let src: Arc<dyn BlockSource> = src;
        Ok(src)
    }

    fn release(&self, image: &str) {
        if let Some(d) = self.daemon.upgrade() {
            d.release_held(image);
        }
    }
}

impl Daemon {
    /// The open volume of `image` for an offload call, opening it (and holding it for
    /// offload) when the daemon does not serve it.
    fn offload_source(&self, image: &str) -> Result<Arc<VolumeSource>, ResolveError> {
        if let Some(s) = self.opened.lock().get(image) {
            return Ok(s.clone());
        }
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ResolveError::Unavailable("the daemon is stopping".into()));
        }
        let _admin = self.admin.lock();
        if let Some(s) = self.opened.lock().get(image) {
            return Ok(s.clone());
        }
        let entry = self
            .catalog
            .require(image)
            .map_err(|e| ResolveError::NotFound(format!("{e:#}")))?;
        let (volume, _) = Volume::open(&entry, open_options(false), false)
            .map_err(|e| ResolveError::Unavailable(format!("open image {image:?}: {e:#}")))?;
        let src = VolumeSource::new(Arc::new(volume), false, &entry);
        info!(name = image, "opened for offload");
        self.opened.lock().insert(image.to_string(), src.clone());
        self.held.lock().insert(image.to_string());
        Ok(src)
    }

    /// The volume for a new export or map of `name` (admin lock held by the caller):
    /// the volume held for offload when there is one (and it is writable, or `read_only`
    /// is asked), else a new open. The caller serves it, or gives it back with
    /// [`Daemon::release_volume`] when serving fails.
    pub(super) fn acquire_volume(
        &self,
        name: &str,
        read_only: bool,
        accept_cache_loss: bool,
    ) -> anyhow::Result<Arc<Volume>> {
        if self.held.lock().remove(name) {
            let src = self.opened.lock().get(name).cloned();
            match src {
                Some(s) if read_only || !s.read_only => {
                    info!(name, "taking over the volume held for offload");
                    return Ok(s.volume.clone());
                }
                Some(_) => self.close_volume(name)?,
                None => {}
            }
        }
        let entry = self.catalog.require(name)?;
        let (volume, _report) = Volume::open(&entry, open_options(read_only), accept_cache_loss)?;
        let volume = Arc::new(volume);
        // Only a plain image honours read-only opens (a journaled one is writable).
        let ro = read_only && matches!(*volume, Volume::Plain(_));
        self.opened.lock().insert(
            name.to_string(),
            VolumeSource::new(volume.clone(), ro, &entry),
        );
        Ok(volume)
    }

    /// `name` stopped being exported or mapped (admin lock held, volume flushed): keep
    /// its volume open for offload while functions refer to it, else close it once
    /// the offload calls in flight finished.
    pub(super) fn release_volume(&self, name: &str) -> anyhow::Result<()> {
        let keep = !self.closing.load(std::sync::atomic::Ordering::SeqCst)
            && self
                .offload
                .get()
                .is_some_and(|s| s.has_functions_for(name));
        if keep && self.opened.lock().contains_key(name) {
            info!(name, "volume kept open for offload functions");
            self.held.lock().insert(name.to_string());
            return Ok(());
        }
        self.close_volume(name)
    }

    /// Close a volume held for offload alone (its last function was removed).
    fn release_held(&self, name: &str) {
        let _admin = self.admin.lock();
        if !self.held.lock().remove(name) {
            return;
        }
        if self
            .offload
            .get()
            .is_some_and(|s| s.has_functions_for(name))
        {
            // Registered again meanwhile.
            self.held.lock().insert(name.to_string());
            return;
        }
        if let Err(e) = self.close_volume(name) {
            warn!("{e:#}");
        }
    }

    /// Close every volume held for offload (shutdown; the offload server is stopped).
    pub(super) fn close_held(&self) {
        let names: Vec<String> = std::mem::take(&mut *self.held.lock()).into_iter().collect();
        for name in names {
            if let Err(e) = self.close_volume(&name) {
                warn!("{e:#}");
            }
        }
    }

    /// Forget `name`'s volume, wait for the offload calls reading it, flush and close it.
    fn close_volume(&self, name: &str) -> anyhow::Result<()> {
        let Some(src) = self.opened.lock().remove(name) else {
            return Ok(());
        };
        let t = Instant::now();
        // Calls in flight hold clones of the source (taken at resolve).
        while Arc::strong_count(&src) > 1 && t.elapsed() < DRAIN {
            std::thread::sleep(Duration::from_millis(2));
        }
        if Arc::strong_count(&src) > 1 {
            warn!(
                name,
                "offload calls still reading after {DRAIN:?}; closing anyway"
            );
        }
        let flushed = if src.read_only {
            Ok(())
        } else {
            src.volume.flush()
        };
        let closed = src.volume.close();
        anyhow::Context::with_context(flushed, || format!("flush image {name:?}"))?;
        anyhow::Context::with_context(closed, || format!("close image {name:?}"))?;
        info!(name, "closed");
        Ok(())
    }
}

/// The server settings: the defaults, lowered by the limits file if one is given.
pub fn config(
    file: Option<&std::path::Path>,
    engine: lsvd_offload::Engine,
) -> anyhow::Result<lsvd_offload::server::ServerConfig> {
    let base = lsvd_offload::server::ServerConfig {
        engine,
        ..Default::default()
    };
    let cfg = match file {
        Some(f) => lsvd_offload::config::load_limits(f, base)?,
        None => base,
    };
    info!(
        max_hops = cfg.max_hops,
        default_hops = cfg.default_hops,
        vm_time = ?cfg.vm_time,
        total_time = ?cfg.total_time,
        max_hop_insns = cfg.max_hop_insns,
        fns_per_uid = cfg.fns_per_uid,
        fns_total = cfg.fns_total,
        "offload limits"
    );
    Ok(cfg)
}

/// Starts the daemon's offload server on `path` (a stale socket file is replaced).
pub fn start(
    daemon: &Arc<Daemon>,
    path: &std::path::Path,
    cfg: lsvd_offload::server::ServerConfig,
) -> anyhow::Result<lsvd_offload::server::ServerHandle> {
    use anyhow::Context;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("another offload server answers on {}", path.display());
    }
    let resolver = Arc::new(DaemonResolver {
        daemon: Arc::downgrade(daemon),
    });
    let server =
        lsvd_offload::server::Server::new(cfg, resolver).context("start the offload server")?;
    let handle = server
        .spawn(path)
        .with_context(|| format!("listen on offload socket {}", path.display()))?;
    let _ = daemon.offload.set(server);
    info!(socket = %path.display(), "offload server listening");
    Ok(handle)
}
