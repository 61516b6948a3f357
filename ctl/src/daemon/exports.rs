//! The daemon's exports: which images are open and where they are served.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};
use log_engine::{GcConfig, OpenOptions};
use lsvd_nbd::{Address, BlockDev, Export, Exports, ListenerHandle, Server};
use parking_lot::Mutex;
use tracing::{info, warn};

use super::control::{ExportInfo, Op, Response};
use super::tcp_address;
use crate::catalog::{validate_name, Catalog};
use crate::volume::Volume;

/// One served image.
struct Served {
    image: Arc<Volume>,
    export: Arc<Export>,
    listener: ListenerHandle,
}

/// The daemon's state: the catalog, the NBD server and the exports.
pub struct Daemon {
    pub(super) catalog: Catalog,
    pub(super) run_dir: PathBuf,
    allow_any: bool,
    server: Arc<Server>,
    /// Every export, for the shared TCP listener (`--nbd-listen`).
    all: Exports,
    global: Mutex<Option<ListenerHandle>>,
    served: Mutex<BTreeMap<String, Served>>,
    /// ublk devices by image name (see `devices.rs`).
    pub(super) mapped: Mutex<BTreeMap<String, super::devices::Mapped>>,
    /// Serializes export/unexport/map/unmap and offload opens so a name is opened at
    /// most once.
    pub(super) admin: Mutex<()>,
    /// Every open volume (exported, mapped or held for offload), as offload reads it.
    pub(super) opened: Mutex<BTreeMap<String, Arc<super::offload::VolumeSource>>>,
    /// Images open for offload alone (neither exported nor mapped).
    pub(super) held: Mutex<BTreeSet<String>>,
    /// The offload server, when the daemon runs one.
    pub(super) offload: OnceLock<lsvd_offload::server::Server>,
    /// Set by shutdown: volumes are closed, no longer held or opened for offload.
    pub(super) closing: AtomicBool,
}

/// Engine options of a long-lived daemon open: background GC on.
pub(super) fn open_options(read_only: bool) -> OpenOptions {
    OpenOptions {
        upload_threads: 4,
        max_pending_bytes: 256 << 20,
        checkpoint_every: 16,
        gc: GcConfig {
            policy: Default::default(),
            enabled: !read_only,
            threshold_pct: 50,
            interval: Duration::from_secs(10),
        },
        store_timeout: Duration::from_secs(30),
        read_only,
    }
}

fn uri(name: &str, addr: &Address) -> String {
    match addr {
        Address::Unix(p) => format!("nbd+unix:///{name}?socket={}", p.display()),
        Address::Tcp(a) => format!("nbd://{a}/{name}"),
    }
}

impl Daemon {
    pub fn new(
        catalog: Catalog,
        run_dir: PathBuf,
        allow_any: bool,
        workers: usize,
        global_tcp: Option<SocketAddr>,
    ) -> anyhow::Result<Arc<Daemon>> {
        let server = Server::new(workers).context("start NBD workers")?;
        let all = Exports::new();
        let global = match global_tcp {
            Some(a) => Some(
                server
                    .listen_tcp(a, all.clone())
                    .with_context(|| format!("listen on TCP {a}"))?,
            ),
            None => None,
        };
        Ok(Arc::new(Daemon {
            catalog,
            run_dir,
            allow_any,
            server,
            all,
            global: Mutex::new(global),
            served: Mutex::new(BTreeMap::new()),
            mapped: Mutex::new(BTreeMap::new()),
            admin: Mutex::new(()),
            opened: Mutex::new(BTreeMap::new()),
            held: Mutex::new(BTreeSet::new()),
            offload: OnceLock::new(),
            closing: AtomicBool::new(false),
        }))
    }

    /// Answer one control operation.
    pub fn handle(&self, op: Op) -> Response {
        let res = match op {
            Op::Export {
                name,
                unix,
                tcp,
                read_only,
                accept_cache_loss,
            } => self.export(&name, unix, tcp, read_only, accept_cache_loss),
            Op::Unexport { name } => self.unexport(&name).map(|i| vec![i]),
            Op::List => Ok(self.list()),
            Op::Map {
                name,
                queues,
                depth,
                accept_cache_loss,
            } => {
                let _admin = self.admin.lock();
                if self.served.lock().contains_key(&name) {
                    return Response::err(format!(
                        "image {name:?} is exported over NBD; unexport it before mapping it"
                    ));
                }
                return match self.map(&name, queues, depth, accept_cache_loss) {
                    Ok(d) => Response::devices(vec![d]),
                    Err(e) => Response::err(crate::cmd::one_line(&e)),
                };
            }
            Op::Unmap { target } => {
                let _admin = self.admin.lock();
                return match self.unmap(&target) {
                    Ok(d) => Response::devices(vec![d]),
                    Err(e) => Response::err(crate::cmd::one_line(&e)),
                };
            }
            Op::Devices => return Response::devices(self.devices()),
            Op::Recover => {
                let _admin = self.admin.lock();
                return Response::devices(self.recover_devices());
            }
        };
        match res {
            Ok(v) => Response::ok(v),
            Err(e) => Response::err(crate::cmd::one_line(&e)),
        }
    }

    fn info(name: &str, s: &Served) -> ExportInfo {
        let st = s.export.stats();
        let addr = s.listener.address();
        ExportInfo {
            name: name.to_string(),
            address: addr.to_string(),
            uri: uri(name, addr),
            size: s.export.size(),
            read_only: s.export.read_only(),
            connections: st.connections,
            bytes_read: st.bytes_read,
            bytes_written: st.bytes_written,
        }
    }

    pub fn list(&self) -> Vec<ExportInfo> {
        self.served
            .lock()
            .iter()
            .map(|(n, s)| Self::info(n, s))
            .collect()
    }

    fn export(
        &self,
        name: &str,
        unix: Option<String>,
        tcp: Option<String>,
        read_only: bool,
        accept_cache_loss: bool,
    ) -> anyhow::Result<Vec<ExportInfo>> {
        let _admin = self.admin.lock();
        validate_name(name)?;
        if self.served.lock().contains_key(name) {
            bail!("image {name:?} is already exported");
        }
        if self.mapped.lock().contains_key(name) {
            bail!("image {name:?} is mapped as a ublk device; unmap it before exporting it");
        }
        if unix.is_some() && tcp.is_some() {
            bail!("give a Unix socket path or a TCP address, not both");
        }
        let tcp = tcp
            .as_deref()
            .map(|t| tcp_address(t, self.allow_any))
            .transpose()?;
        let image = self.acquire_volume(name, read_only, accept_cache_loss)?;
        let dev: Arc<dyn BlockDev> = image.clone();
        let export = Arc::new(Export::new(name, dev, read_only));
        let table = Exports::single(Arc::clone(&export));
        let listener = match tcp {
            Some(a) => self
                .server
                .listen_tcp(a, table)
                .with_context(|| format!("listen on TCP {a}")),
            None => {
                let path = unix
                    .map(PathBuf::from)
                    .unwrap_or_else(|| self.run_dir.join(format!("nbd-{name}.sock")));
                self.server
                    .listen_unix(&path, table)
                    .with_context(|| format!("listen on {}", path.display()))
            }
        };
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                if let Err(ce) = self.release_volume(name) {
                    warn!("{ce:#}");
                }
                return Err(e.context(format!("export {name:?}")));
            }
        };
        self.all.insert(Arc::clone(&export));
        let served = Served {
            image,
            export,
            listener,
        };
        let info = Self::info(name, &served);
        info!(name, address = %info.address, read_only, "exported");
        self.served.lock().insert(name.to_string(), served);
        Ok(vec![info])
    }

    /// Stop one export and close its image; returns its last state.
    fn unexport(&self, name: &str) -> anyhow::Result<ExportInfo> {
        let _admin = self.admin.lock();
        let Some(served) = self.served.lock().remove(name) else {
            bail!("no export named {name:?}");
        };
        self.retire(name, served)
    }

    fn retire(&self, name: &str, mut s: Served) -> anyhow::Result<ExportInfo> {
        self.all.remove(name);
        s.listener.stop();
        self.server.disconnect_export(&s.export);
        let info = Self::info(name, &s);
        let flushed = if s.export.read_only() {
            Ok(())
        } else {
            s.image.flush()
        };
        drop(s);
        // Closed unless offload functions still use it (then held open for them).
        let closed = self.release_volume(name);
        info!(name, "unexported");
        flushed.with_context(|| format!("flush image {name:?}"))?;
        closed?;
        Ok(info)
    }

    /// Stop everything: shared listener, every export (clients end after
    /// their in-flight requests), workers; flush and close every image.
    pub fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let _admin = self.admin.lock();
        self.unmap_all();
        if let Some(mut g) = self.global.lock().take() {
            g.stop();
        }
        let all: Vec<(String, Served)> = std::mem::take(&mut *self.served.lock())
            .into_iter()
            .collect();
        for (name, s) in all {
            if let Err(e) = self.retire(&name, s) {
                warn!("{e:#}");
            }
        }
        self.close_held();
        self.server.shutdown();
    }
}
