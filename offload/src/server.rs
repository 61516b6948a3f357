//! The offload server: accepts clients on a Unix stream socket, registers their
//! functions and runs them over images (see [`crate::protocol`] for the wire format).
//!
//! Threads: one accept thread, one reader thread per connection, and a pool of
//! `workers` threads that run REGISTER (load + verify) and pipelined INVOKEs (chains).
//! LIST and UNREGISTER are answered by the reader, and so is an INVOKE that finds its
//! connection idle (nothing in flight, no further bytes waiting): the common
//! one-call-at-a-time client then costs one thread switch less. Responses from workers are written under the
//! connection's write lock, each frame whole.
//!
//! Invariants:
//! - The peer's credentials come from `SO_PEERCRED` at accept and never from the client.
//! - A function belongs to the uid that registered it and to one image. Only its owner
//!   may invoke it; its owner or root may remove it; LIST shows a uid its own functions
//!   (root: all). REGISTER and INVOKE also need access to the image, decided by the
//!   [`ImageResolver`] on every request (so revoking access takes effect at once).
//! - Limits (see [`ServerConfig`]) are checked before the work they bound. A bad frame
//!   closes its connection only (after an error frame, best effort); nothing a client
//!   sends can stop the server or another connection. A client vanishing mid-call only
//!   makes the write of its answer fail.
//! - A worker (and a reader) keeps the VM of the last function it ran and reuses it while
//!   consecutive jobs run the same function (JIT compile once, not per call).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::abi::MAX_ARGS;
use crate::access::{peer_of, Peer};
use crate::chain::{run_chain, BlockSource, ChainError, ChainLimits, MAX_HOPS_CAP};
use crate::loader::{load_section, LoadError, MAX_OBJECT_BYTES};
use crate::protocol::{
    read_frame, write_frame, ErrorKind, FnInfo, FrameError, RemoteError, Request, Response,
};
use crate::verifier::{self, VerifyError, VerifyErrorKind};
use crate::vm::{Engine, Program, Vm, VmError};
use crate::MAX_INSNS;

/// Why an image could not be resolved for a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No such image.
    #[error("{0}")]
    NotFound(String),
    /// The peer may not read the image.
    #[error("{0}")]
    PermissionDenied(String),
    /// The image exists but cannot be opened now.
    #[error("{0}")]
    Unavailable(String),
}

/// Finds an image by name for a peer, checking the peer may read it (the daemon wires it
/// to its catalog and open images; `lsvd_ctl` has a catalog-backed one).
pub trait ImageResolver: Send + Sync {
    /// The image's blocks, or why the peer cannot have them.
    fn resolve(&self, image: &str, peer: &Peer) -> Result<Arc<dyn BlockSource>, ResolveError>;

    /// Called when no registered function refers to `image` any more (after an
    /// UNREGISTER, or a REGISTER refused after the image was resolved): a resolver that
    /// opened the image for the offload server alone may close it. Called without any
    /// server lock held; calls still in flight may hold blocks sources of the image.
    fn release(&self, _image: &str) {}
}

/// Hard caps: a configuration may lower these, never raise them.
pub mod caps {
    use std::time::Duration;
    /// ELF object bytes.
    pub const OBJECT_BYTES: usize = crate::loader::MAX_OBJECT_BYTES;
    /// Instructions per function.
    pub const INSNS: usize = crate::MAX_INSNS;
    /// Verifier: processed instructions.
    pub const VERIFIER_PROCESSED: u64 = crate::verifier::MAX_PROCESSED;
    /// Verifier: time.
    pub const VERIFIER_TIME: Duration = crate::verifier::MAX_TIME;
    /// Worst-case instructions per hop.
    pub const HOP_INSNS: u64 = crate::verifier::MAX_INSN_BOUND;
    /// Hops per call.
    pub const HOPS: u32 = crate::chain::MAX_HOPS_CAP;
    /// VM time per call.
    pub const VM_TIME: Duration = Duration::from_millis(100);
    /// Total time per call.
    pub const TOTAL_TIME: Duration = Duration::from_secs(1);
    /// Argument bytes.
    pub const ARGS: usize = crate::abi::MAX_ARGS;
    /// Functions per uid.
    pub const FNS_PER_UID: usize = 64;
    /// Functions per daemon.
    pub const FNS_TOTAL: usize = 1024;
    /// Calls in flight per connection.
    pub const IN_FLIGHT: usize = 64;
}

/// Server settings. Defaults are the limits of issue 8; [`Server::new`] refuses values
/// above [`caps`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Engine for new functions.
    pub engine: Engine,
    /// Largest ELF object.
    pub max_object_bytes: usize,
    /// Largest function in instructions.
    pub max_insns: usize,
    /// Verifier budget: processed instructions.
    pub verifier_processed: u64,
    /// Verifier budget: time.
    pub verifier_time: Duration,
    /// Largest worst-case instructions per hop.
    pub max_hop_insns: u64,
    /// Hops when the client asks for 0.
    pub default_hops: u32,
    /// Largest hop limit a client may ask for.
    pub max_hops: u32,
    /// VM time per call.
    pub vm_time: Duration,
    /// Total time per call.
    pub total_time: Duration,
    /// Largest argument bytes.
    pub max_args: usize,
    /// Functions per uid.
    pub fns_per_uid: usize,
    /// Functions in the whole server.
    pub fns_total: usize,
    /// Calls (REGISTER/INVOKE) in flight per connection.
    pub in_flight_per_conn: usize,
    /// Worker threads.
    pub workers: usize,
    /// Connections served at once (more are answered with an error and closed).
    pub max_connections: usize,
    /// Once a frame started, the rest must arrive within this time; an answer that
    /// cannot be written within it closes the connection.
    pub frame_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            engine: Engine::Jit,
            max_object_bytes: caps::OBJECT_BYTES,
            max_insns: caps::INSNS,
            verifier_processed: caps::VERIFIER_PROCESSED,
            verifier_time: caps::VERIFIER_TIME,
            max_hop_insns: caps::HOP_INSNS,
            default_hops: 64,
            max_hops: caps::HOPS,
            vm_time: caps::VM_TIME,
            total_time: caps::TOTAL_TIME,
            max_args: caps::ARGS,
            fns_per_uid: caps::FNS_PER_UID,
            fns_total: caps::FNS_TOTAL,
            in_flight_per_conn: caps::IN_FLIGHT,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            max_connections: 256,
            frame_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration value above its cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("offload config: {field} = {value} is above the cap {cap} (or zero)")]
pub struct ConfigError {
    /// Field name.
    pub field: &'static str,
    /// Value given.
    pub value: String,
    /// Its cap.
    pub cap: String,
}

impl ServerConfig {
    /// Checks every limit against [`caps`] (and that none is zero).
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn chk<T: PartialOrd + std::fmt::Debug + Default>(
            field: &'static str,
            v: T,
            cap: T,
        ) -> Result<(), ConfigError> {
            if v > cap || v == T::default() {
                return Err(ConfigError {
                    field,
                    value: format!("{v:?}"),
                    cap: format!("{cap:?}"),
                });
            }
            Ok(())
        }
        chk(
            "max_object_bytes",
            self.max_object_bytes,
            caps::OBJECT_BYTES,
        )?;
        chk("max_insns", self.max_insns, caps::INSNS)?;
        chk(
            "verifier_processed",
            self.verifier_processed,
            caps::VERIFIER_PROCESSED,
        )?;
        chk("verifier_time", self.verifier_time, caps::VERIFIER_TIME)?;
        chk("max_hop_insns", self.max_hop_insns, caps::HOP_INSNS)?;
        chk("max_hops", self.max_hops, caps::HOPS)?;
        chk("default_hops", self.default_hops, self.max_hops)?;
        chk("vm_time", self.vm_time, caps::VM_TIME)?;
        chk("total_time", self.total_time, caps::TOTAL_TIME)?;
        chk("max_args", self.max_args, caps::ARGS)?;
        chk("fns_per_uid", self.fns_per_uid, caps::FNS_PER_UID)?;
        chk("fns_total", self.fns_total, caps::FNS_TOTAL)?;
        chk(
            "in_flight_per_conn",
            self.in_flight_per_conn,
            caps::IN_FLIGHT,
        )?;
        chk("workers", self.workers, 1024)?;
        chk("max_connections", self.max_connections, 65536)?;
        Ok(())
    }
}

/// Counters since start (for benchmarks and monitoring).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Successful invocations.
    pub calls_ok: u64,
    /// Failed invocations.
    pub calls_failed: u64,
    /// Hops run by successful calls.
    pub hops: u64,
    /// Nanoseconds in the VM (successful calls).
    pub vm_ns: u64,
    /// Nanoseconds in run_chain (block reads + VM) of successful calls.
    pub chain_ns: u64,
    /// Nanoseconds from a request's arrival to just before its answer is written
    /// (successful calls).
    pub call_ns: u64,
    /// Connections closed because of a bad frame.
    pub bad_frames: u64,
}

#[derive(Default)]
struct Counters {
    calls_ok: AtomicU64,
    calls_failed: AtomicU64,
    hops: AtomicU64,
    vm_ns: AtomicU64,
    chain_ns: AtomicU64,
    call_ns: AtomicU64,
    bad_frames: AtomicU64,
}

/// A registered function.
struct Func {
    id: u64,
    uid: u32,
    image: String,
    section: String,
    prog: Arc<Program>,
    engine: Engine,
    invocations: AtomicU64,
}

impl Func {
    fn info(&self) -> FnInfo {
        FnInfo {
            id: self.id,
            uid: self.uid,
            image: self.image.clone(),
            section: self.section.clone(),
            insns: (self.prog.code().len() / 8) as u32,
            insn_bound: self.prog.verified().insn_bound,
            engine: engine_name(self.engine).into(),
            invocations: self.invocations.load(Ordering::Relaxed),
        }
    }
}

/// Name of an engine as LIST shows it.
pub fn engine_name(e: Engine) -> &'static str {
    match e {
        Engine::Jit => "jit",
        Engine::RbpfInterp => "rbpf-interp",
        Engine::Interp => "interp",
    }
}

/// Write side of a connection.
struct Conn {
    peer: Peer,
    out: Mutex<UnixStream>,
    in_flight: AtomicUsize,
}

impl Conn {
    /// Writes one answer. The stream has a write timeout: a peer that stops reading
    /// gets its connection shut down instead of holding a worker.
    fn send(&self, id: u64, resp: &Response) {
        let mut s = lock(&self.out);
        if let Err(e) = write_frame(&mut *s, resp.op(), id, &resp.encode()) {
            tracing::debug!(
                peer_pid = self.peer.pid,
                "answer not delivered, closing: {e}"
            );
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

enum Work {
    Register {
        image: String,
        section: String,
        elf: Vec<u8>,
    },
    Invoke {
        func: Arc<Func>,
        start_lba: u64,
        max_hops: u32,
        args: Vec<u8>,
    },
}

struct Job {
    conn: Arc<Conn>,
    id: u64,
    arrived: Instant,
    work: Work,
}

struct Inner {
    cfg: ServerConfig,
    resolver: Arc<dyn ImageResolver>,
    fns: Mutex<HashMap<u64, Arc<Func>>>,
    next_id: AtomicU64,
    jobs: Mutex<Option<Sender<Job>>>,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, UnixStream>>,
    next_conn: AtomicU64,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of our locks cannot leave the maps inconsistent (single
    // inserts/removes), so keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An offload server (cheap to clone; all clones are the same server).
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// A server listening on a socket path, running on its own threads.
pub struct ServerHandle {
    server: Server,
    path: PathBuf,
    listener: UnixListener,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// A server with its worker pool started; see [`Server::serve`] / [`Server::spawn`].
    pub fn new(cfg: ServerConfig, resolver: Arc<dyn ImageResolver>) -> Result<Server, ConfigError> {
        cfg.validate()?;
        let (tx, rx) = crossbeam_channel::bounded::<Job>(cfg.workers * 64);
        let inner = Arc::new(Inner {
            cfg,
            resolver,
            fns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            jobs: Mutex::new(Some(tx)),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            counters: Counters::default(),
        });
        let mut workers = Vec::new();
        for i in 0..inner.cfg.workers {
            let (inner, rx) = (inner.clone(), rx.clone());
            let h = std::thread::Builder::new()
                .name(format!("offload-worker-{i}"))
                .spawn(move || worker(&inner, rx))
                .map_err(|e| ConfigError {
                    field: "workers",
                    value: format!("{i} (spawn failed: {e})"),
                    cap: "-".into(),
                })?;
            workers.push(h);
        }
        Ok(Server {
            inner,
            workers: Arc::new(Mutex::new(workers)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.cfg
    }

    /// Counters since start.
    pub fn stats(&self) -> ServerStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            calls_ok: l(&c.calls_ok),
            calls_failed: l(&c.calls_failed),
            hops: l(&c.hops),
            vm_ns: l(&c.vm_ns),
            chain_ns: l(&c.chain_ns),
            call_ns: l(&c.call_ns),
            bad_frames: l(&c.bad_frames),
        }
    }

    /// Whether a registered function refers to `image` (its owner may still invoke it).
    pub fn has_functions_for(&self, image: &str) -> bool {
        lock(&self.inner.fns).values().any(|f| f.image == image)
    }

    /// Accepts connections on `listener` until [`Server::shutdown`] (blocking).
    pub fn serve(&self, listener: UnixListener) {
        for s in listener.incoming() {
            if self.inner.stop.load(Ordering::SeqCst) {
                break;
            }
            match s {
                Ok(s) => self.accept(s),
                Err(_) if self.inner.stop.load(Ordering::SeqCst) => break,
                Err(e) => {
                    tracing::warn!("offload accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Binds `path` (usually [`crate::protocol::DEFAULT_SOCKET`]; a stale socket file is replaced, the
    /// parent directory created), makes it connectable by every uid (access is decided
    /// per request), and serves on a new thread.
    pub fn spawn(&self, path: impl AsRef<Path>) -> io::Result<ServerHandle> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let me = self.clone();
        let ours = listener.try_clone()?;
        let accept = std::thread::Builder::new()
            .name("offload-accept".into())
            .spawn(move || me.serve(listener))?;
        Ok(ServerHandle {
            server: self.clone(),
            path,
            listener: ours,
            accept: Some(accept),
        })
    }

    fn accept(&self, s: UnixStream) {
        let inner = &self.inner;
        let peer = match peer_of(&s) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("offload: SO_PEERCRED failed, closing: {e}");
                return;
            }
        };
        let n = lock(&inner.conns).len();
        let out = match s.try_clone().and_then(|o| {
            o.set_write_timeout(Some(inner.cfg.frame_timeout))
                .map(|_| o)
        }) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("offload: cannot clone socket: {e}");
                return;
            }
        };
        let conn = Arc::new(Conn {
            peer,
            out: Mutex::new(out),
            in_flight: AtomicUsize::new(0),
        });
        if n >= inner.cfg.max_connections {
            let msg = format!("server has {n} connections, the maximum");
            conn.send(0, &err(ErrorKind::LimitExceeded, msg));
            return;
        }
        let cid = inner.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(c) = s.try_clone() {
            lock(&inner.conns).insert(cid, c);
        }
        let inner2 = inner.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("offload-conn-{cid}"))
            .spawn(move || {
                let span = tracing::info_span!("offload_conn", cid, uid = conn.peer.uid);
                let _e = span.enter();
                reader(&inner2, &s, &conn);
                lock(&inner2.conns).remove(&cid);
                let _ = s.shutdown(std::net::Shutdown::Both);
            });
        if let Err(e) = spawned {
            tracing::warn!("offload: cannot start a connection thread: {e}");
            lock(&inner.conns).remove(&cid);
        }
    }

    /// Stops accepting (a [`Server::serve`] loop notices at its next connection or when
    /// `listener`, a clone of its listening socket, is given: it is shut down, which wakes
    /// the accept), closes every connection and stops the workers after the jobs already
    /// queued.
    pub fn shutdown(&self, listener: Option<&UnixListener>) {
        let inner = &self.inner;
        inner.stop.store(true, Ordering::SeqCst);
        if let Some(l) = listener {
            use std::os::fd::AsRawFd;
            // SAFETY: shutdown(2) on an open socket fd we own a clone of; it only changes
            // the socket's state (Linux wakes a blocked accept with EINVAL).
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        for (_, c) in lock(&inner.conns).drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        lock(&inner.jobs).take();
        let ws: Vec<_> = lock(&self.workers).drain(..).collect();
        for w in ws {
            let _ = w.join();
        }
    }
}

impl ServerHandle {
    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the server and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(a) = self.accept.take() {
            self.server.shutdown(Some(&self.listener));
            let _ = a.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> Response {
    Response::Error(RemoteError::new(kind, msg))
}

/// Reads requests until the peer closes, a bad frame, or shutdown.
fn reader(inner: &Arc<Inner>, s: &UnixStream, conn: &Arc<Conn>) {
    // INVOKEs that find the connection idle run here, with a VM kept while the same
    // function comes again (no hand-off to the pool: one thread switch less per call).
    let mut carry: Option<Job> = None;
    loop {
        let job = match carry.take() {
            Some(j) => j,
            None => match next_inline_job(inner, s, conn) {
                Some(j) => j,
                None => return,
            },
        };
        let Work::Invoke { func, .. } = &job.work else {
            return;
        };
        let func = func.clone();
        let mut vm = match Vm::new(&func.prog, func.engine) {
            Ok(vm) => vm,
            Err(e) => {
                finish(inner, &job, Err(vm_setup_error(e)));
                continue;
            }
        };
        run_invoke(inner, job, &mut vm);
        loop {
            let Some(j) = next_inline_job(inner, s, conn) else {
                return;
            };
            match &j.work {
                Work::Invoke { func: f, .. } if Arc::ptr_eq(&f.prog, &func.prog) => {
                    run_invoke(inner, j, &mut vm)
                }
                _ => {
                    carry = Some(j);
                    break;
                }
            }
        }
    }
}

/// Bytes already waiting on the socket (0 when unknown).
fn pending_bytes(s: &UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer given; the fd is open.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// Reads and handles frames until one is an INVOKE to run on this thread (the connection
/// has nothing in flight and no further request waiting); `None` when the connection
/// ends (peer closed, bad frame, shutdown).
fn next_inline_job(inner: &Arc<Inner>, s: &UnixStream, conn: &Arc<Conn>) -> Option<Job> {
    let mut r = s;
    let timeout_set = std::cell::Cell::new(false);
    loop {
        if timeout_set.replace(false) {
            s.set_read_timeout(None).ok()?;
        }
        let started = || {
            if !timeout_set.replace(true) {
                let _ = s.set_read_timeout(Some(inner.cfg.frame_timeout));
            }
        };
        let frame = match read_frame(&mut r, started) {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                inner.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                let msg = format!(
                    "frame incomplete after {:?}, closing the connection",
                    inner.cfg.frame_timeout
                );
                tracing::info!("{msg}");
                conn.send(0, &err(ErrorKind::BadRequest, msg));
                return None;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!("connection closed: {e}");
                return None;
            }
            Err(e) => {
                inner.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::info!("bad frame, closing the connection: {e}");
                conn.send(0, &err(ErrorKind::BadRequest, e.to_string()));
                return None;
            }
        };
        let arrived = Instant::now();
        let req = match Request::decode(frame.op, &frame.payload) {
            Ok(r) => r,
            Err(e) => {
                inner.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::info!("bad request, closing the connection: {e}");
                conn.send(frame.id, &err(ErrorKind::BadRequest, e.to_string()));
                return None;
            }
        };
        let Some(work) = handle_inline(inner, conn, frame.id, req) else {
            continue;
        };
        let idle = conn.in_flight.load(Ordering::SeqCst) == 0 && pending_bytes(s) == 0;
        if idle && matches!(work, Work::Invoke { .. }) {
            conn.in_flight.fetch_add(1, Ordering::SeqCst);
            return Some(Job {
                conn: conn.clone(),
                id: frame.id,
                arrived,
                work,
            });
        }
        dispatch(inner, conn, frame.id, arrived, work);
    }
}

/// Answers LIST and UNREGISTER; checks INVOKE's ownership and arguments; returns the
/// work for the pool otherwise.
fn handle_inline(inner: &Inner, conn: &Conn, id: u64, req: Request) -> Option<Work> {
    let peer = &conn.peer;
    match req {
        Request::List => {
            let fns = lock(&inner.fns);
            let mut v: Vec<FnInfo> = fns
                .values()
                .filter(|f| peer.is_root() || f.uid == peer.uid)
                .map(|f| f.info())
                .collect();
            drop(fns);
            v.sort_by_key(|f| f.id);
            conn.send(id, &Response::Listed(v));
            None
        }
        Request::Unregister { fn_id } => {
            let mut released = None;
            let mut fns = lock(&inner.fns);
            let resp = match fns.get(&fn_id) {
                None => err(ErrorKind::NotFound, format!("no function {fn_id}")),
                Some(f) if f.uid != peer.uid && !peer.is_root() => err(
                    ErrorKind::PermissionDenied,
                    format!("function {fn_id} belongs to another uid"),
                ),
                Some(_) => {
                    let gone = fns.remove(&fn_id);
                    tracing::info!(fn_id, uid = peer.uid, "function removed");
                    if let Some(f) = gone.filter(|f| !fns.values().any(|g| g.image == f.image)) {
                        released = Some(f.image.clone());
                    }
                    Response::Unregistered
                }
            };
            drop(fns);
            conn.send(id, &resp);
            if let Some(image) = released {
                inner.resolver.release(&image);
            }
            None
        }
        Request::Register {
            image,
            section,
            elf,
        } => Some(Work::Register {
            image,
            section,
            elf,
        }),
        Request::Invoke {
            fn_id,
            start_lba,
            max_hops,
            args,
        } => {
            let func = lock(&inner.fns).get(&fn_id).cloned();
            let resp = match func {
                None => err(ErrorKind::NotFound, format!("no function {fn_id}")),
                Some(f) if f.uid != peer.uid => err(
                    ErrorKind::PermissionDenied,
                    format!("function {fn_id} belongs to another uid"),
                ),
                Some(_) if args.len() > inner.cfg.max_args => err(
                    ErrorKind::ArgsTooLarge,
                    format!(
                        "arguments are {} bytes, more than {}",
                        args.len(),
                        inner.cfg.max_args
                    ),
                ),
                Some(_) if max_hops > inner.cfg.max_hops => err(
                    ErrorKind::BadLimit,
                    format!("hop limit {max_hops} above the cap {}", inner.cfg.max_hops),
                ),
                Some(func) => {
                    return Some(Work::Invoke {
                        func,
                        start_lba,
                        max_hops,
                        args,
                    })
                }
            };
            conn.send(id, &resp);
            None
        }
    }
}

fn dispatch(inner: &Inner, conn: &Arc<Conn>, id: u64, arrived: Instant, work: Work) {
    let limit = inner.cfg.in_flight_per_conn;
    if conn.in_flight.fetch_add(1, Ordering::SeqCst) >= limit {
        conn.in_flight.fetch_sub(1, Ordering::SeqCst);
        let msg = format!("{limit} calls already in flight on this connection");
        conn.send(id, &err(ErrorKind::LimitExceeded, msg));
        return;
    }
    let job = Job {
        conn: conn.clone(),
        id,
        arrived,
        work,
    };
    let tx = lock(&inner.jobs).clone();
    let sent = match tx {
        Some(tx) => tx.send(job).map_err(|e| e.into_inner()),
        None => Err(job),
    };
    if let Err(job) = sent {
        job.conn.in_flight.fetch_sub(1, Ordering::SeqCst);
        job.conn
            .send(id, &err(ErrorKind::Internal, "server is shutting down"));
    }
}

/// Worker loop: runs jobs, reusing the VM while consecutive jobs run the same function.
fn worker(inner: &Inner, rx: Receiver<Job>) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let func = match &job.work {
            Work::Register { .. } => {
                run_register(inner, job);
                continue;
            }
            Work::Invoke { func, .. } => func.clone(),
        };
        let prog = func.prog.clone();
        let mut vm = match Vm::new(&prog, func.engine) {
            Ok(vm) => vm,
            Err(e) => {
                finish(inner, &job, Err(vm_setup_error(e)));
                continue;
            }
        };
        run_invoke(inner, job, &mut vm);
        // Keep this VM while the queue brings the same function.
        loop {
            let j = match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            };
            match &j.work {
                Work::Invoke { func: f, .. } if Arc::ptr_eq(&f.prog, &prog) => {
                    run_invoke(inner, j, &mut vm)
                }
                _ => {
                    next = Some(j);
                    break;
                }
            }
        }
    }
}

fn vm_setup_error(e: VmError) -> RemoteError {
    RemoteError::new(ErrorKind::Internal, format!("VM setup: {e}"))
}

/// Sends the answer of a pool job and releases its in-flight slot.
fn finish(inner: &Inner, job: &Job, res: Result<Response, RemoteError>) {
    let resp = match res {
        Ok(r) => r,
        Err(e) => Response::Error(e),
    };
    let ok = !matches!(resp, Response::Error(_));
    // Counters first, so a client that got its answer sees them updated.
    if let Work::Invoke { .. } = job.work {
        let c = &inner.counters;
        if ok {
            c.calls_ok.fetch_add(1, Ordering::Relaxed);
            c.call_ns
                .fetch_add(job.arrived.elapsed().as_nanos() as u64, Ordering::Relaxed);
        } else {
            c.calls_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    job.conn.send(job.id, &resp);
    job.conn.in_flight.fetch_sub(1, Ordering::SeqCst);
}

fn resolve_error(e: ResolveError) -> RemoteError {
    match e {
        ResolveError::NotFound(m) => RemoteError::new(ErrorKind::NotFound, m),
        ResolveError::PermissionDenied(m) => RemoteError::new(ErrorKind::PermissionDenied, m),
        ResolveError::Unavailable(m) => RemoteError::new(ErrorKind::ImageUnavailable, m),
    }
}

fn run_invoke(inner: &Inner, job: Job, vm: &mut Vm<'_>) {
    let Work::Invoke {
        func,
        start_lba,
        max_hops,
        args,
    } = &job.work
    else {
        return;
    };
    let span = tracing::debug_span!("offload_invoke", fn_id = func.id, start_lba);
    let _e = span.enter();
    func.invocations.fetch_add(1, Ordering::Relaxed);
    let res = (|| {
        let src = inner
            .resolver
            .resolve(&func.image, &job.conn.peer)
            .map_err(resolve_error)?;
        let limits = ChainLimits {
            max_hops: if *max_hops == 0 {
                inner.cfg.default_hops
            } else {
                *max_hops
            },
            vm_time: inner.cfg.vm_time,
            total_time: inner.cfg.total_time,
        };
        let t = Instant::now();
        let r = run_chain(vm, src.as_ref(), *start_lba, args, &limits).map_err(chain_error)?;
        let c = &inner.counters;
        c.hops.fetch_add(r.hops as u64, Ordering::Relaxed);
        c.vm_ns
            .fetch_add(r.vm_time.as_nanos() as u64, Ordering::Relaxed);
        c.chain_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(Response::Invoked {
            r0: r.r0,
            hops: r.hops,
            scratch: r.scratch.to_vec(),
        })
    })();
    if let Err(e) = &res {
        tracing::debug!("invoke failed: {e}");
    }
    finish(inner, &job, res);
}

fn run_register(inner: &Inner, job: Job) {
    let Work::Register {
        image,
        section,
        elf,
    } = &job.work
    else {
        return;
    };
    let peer = &job.conn.peer;
    let span = tracing::info_span!("offload_register", image, section, uid = peer.uid);
    let _e = span.enter();
    let res = register(inner, peer, image, section, elf);
    match &res {
        Ok(Response::Registered { fn_id, .. }) => tracing::info!(fn_id, "function registered"),
        Err(e) => {
            tracing::info!("register refused: {e}");
            if !lock(&inner.fns).values().any(|f| &f.image == image) {
                inner.resolver.release(image);
            }
        }
        _ => {}
    }
    finish(inner, &job, res);
}

fn count_check(inner: &Inner, uid: u32) -> Result<(), RemoteError> {
    count_check_locked(inner, &lock(&inner.fns), uid)
}

fn count_check_locked(
    inner: &Inner,
    fns: &HashMap<u64, Arc<Func>>,
    uid: u32,
) -> Result<(), RemoteError> {
    let mine = fns.values().filter(|f| f.uid == uid).count();
    if mine >= inner.cfg.fns_per_uid {
        return Err(RemoteError::new(
            ErrorKind::LimitExceeded,
            format!(
                "uid {uid} has {mine} functions, the maximum is {}",
                inner.cfg.fns_per_uid
            ),
        ));
    }
    if fns.len() >= inner.cfg.fns_total {
        return Err(RemoteError::new(
            ErrorKind::LimitExceeded,
            format!("the server holds {} functions, the maximum", fns.len()),
        ));
    }
    Ok(())
}

fn register(
    inner: &Inner,
    peer: &Peer,
    image: &str,
    section: &str,
    elf: &[u8],
) -> Result<Response, RemoteError> {
    let cfg = &inner.cfg;
    count_check(inner, peer.uid)?;
    inner.resolver.resolve(image, peer).map_err(resolve_error)?;
    if elf.len() > cfg.max_object_bytes.min(MAX_OBJECT_BYTES) {
        return Err(RemoteError::new(
            ErrorKind::TooLarge,
            format!(
                "object is {} bytes, more than {}",
                elf.len(),
                cfg.max_object_bytes
            ),
        ));
    }
    let code = load_section(elf, section).map_err(load_error)?;
    let n = code.len() / 8;
    if n > cfg.max_insns.min(MAX_INSNS) {
        return Err(RemoteError::new(
            ErrorKind::TooLarge,
            format!("section has {n} instructions, more than {}", cfg.max_insns),
        ));
    }
    let prog = Program::with_limits(
        code,
        cfg.max_hop_insns,
        cfg.verifier_processed,
        cfg.verifier_time,
    )
    .map_err(verify_error)?;
    // The engine actually used (the JIT falls back for local calls or large code).
    let engine = Vm::new(&prog, cfg.engine).map_err(vm_setup_error)?.engine();
    let insn_bound = prog.verified().insn_bound;
    let mut fns = lock(&inner.fns);
    count_check_locked(inner, &fns, peer.uid)?;
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    fns.insert(
        id,
        Arc::new(Func {
            id,
            uid: peer.uid,
            image: image.to_string(),
            section: section.to_string(),
            prog: Arc::new(prog),
            engine,
            invocations: AtomicU64::new(0),
        }),
    );
    Ok(Response::Registered {
        fn_id: id,
        insns: n as u32,
        insn_bound,
    })
}

fn load_error(e: LoadError) -> RemoteError {
    let kind = match &e {
        LoadError::BadElf(_) => ErrorKind::BadElf,
        LoadError::NoSection(_) => ErrorKind::NoSection,
        LoadError::Relocation { .. } => ErrorKind::Relocation,
        LoadError::TooLarge(_) => ErrorKind::TooLarge,
    };
    RemoteError::new(kind, e.to_string())
}

/// Wire kind of a verifier refusal.
pub fn verify_kind(k: VerifyErrorKind) -> ErrorKind {
    use VerifyErrorKind as V;
    match k {
        V::BadInsn => ErrorKind::BadInsn,
        V::UnboundedLoop => ErrorKind::UnboundedLoop,
        V::InsnBound => ErrorKind::InsnBound,
        V::OutOfBounds => ErrorKind::OutOfBounds,
        V::ReadOnly => ErrorKind::ReadOnly,
        V::UninitRegister => ErrorKind::UninitRegister,
        V::UninitStack => ErrorKind::UninitStack,
        V::PointerArith => ErrorKind::PointerArith,
        V::PointerLeak => ErrorKind::PointerLeak,
        V::UnknownHelper => ErrorKind::UnknownHelper,
        V::Recursion => ErrorKind::Recursion,
        V::VerifierLimit => ErrorKind::VerifierLimit,
    }
}

fn verify_error(e: VerifyError) -> RemoteError {
    let mut r = RemoteError::new(verify_kind(e.kind), e.to_string());
    r.insn = u32::try_from(e.insn).ok();
    r
}

fn chain_error(e: ChainError) -> RemoteError {
    let (kind, hop) = match &e {
        ChainError::ArgsTooLarge(_) => (ErrorKind::ArgsTooLarge, None),
        ChainError::BadLimit(_) => (ErrorKind::BadLimit, None),
        ChainError::LbaOutOfRange { hop, .. } => (ErrorKind::LbaOutOfRange, Some(*hop)),
        ChainError::BadNext { hop, .. } => (ErrorKind::BadNext, Some(*hop)),
        ChainError::HopLimit { limit } => (ErrorKind::HopLimit, Some(*limit)),
        ChainError::Timeout { hop, .. } => (ErrorKind::Timeout, Some(*hop)),
        ChainError::InsnBudget { hop } => (ErrorKind::VmFault, Some(*hop)),
        ChainError::Vm { hop, .. } => (ErrorKind::VmFault, Some(*hop)),
        ChainError::IoError { hop, .. } => (ErrorKind::IoError, Some(*hop)),
    };
    let mut r = RemoteError::new(kind, e.to_string());
    r.hop = hop;
    r
}

// Keep the caps and the executor's constants in step.
const _: () = assert!(caps::HOPS == MAX_HOPS_CAP && caps::ARGS == MAX_ARGS);
const _: () = assert!(verifier::MAX_INSN_BOUND == caps::HOP_INSNS);
