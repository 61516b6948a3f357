//! Listeners and connections: accept clients on Unix or TCP sockets, run
//! each connection's negotiation and transmission on its own thread, and
//! stop them cleanly.
//!
//! # Invariants
//! - A listener serves one [`Exports`] table (one export for a per-export
//!   socket, all of them for a shared TCP port).
//! - The negotiation has a read timeout ([`HANDSHAKE_TIMEOUT`]): a client
//!   that connects and says nothing does not hold a thread forever.
//! - Stopping a connection shuts down the read side only: the requests
//!   already read finish and their replies are still sent.
//! - At most [`MAX_CONNECTIONS`] connections per server; more are closed on
//!   accept.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{debug, info, info_span, warn};

use crate::export::{Export, Exports};
use crate::handshake::{negotiate, Outcome};
use crate::transmission::{self, Executor, Pool, SharedWriter};

/// Time a client has for the whole negotiation.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A reply write that makes no progress for this long ends the connection
/// (a client that sends requests but never reads replies).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// When a connection is stopped, in-flight requests get this long to
/// finish and reply before the socket is closed both ways.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Most concurrent connections per server.
pub const MAX_CONNECTIONS: usize = 512;

/// A connected socket of either kind.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }
    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        };
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(b),
            Stream::Tcp(s) => s.read(b),
        }
    }
}
impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(b),
            Stream::Tcp(s) => s.write(b),
        }
    }
    fn write_vectored(&mut self, b: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(b),
            Stream::Tcp(s) => s.write_vectored(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Conn {
    listener: u64,
    export: Mutex<Option<String>>,
    stream: Stream,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The NBD server: a worker pool and the live connections.
pub struct Server {
    pool: Pool,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// A running listener; [`ListenerHandle::stop`] (or drop) stops accepting
/// and disconnects its clients.
pub struct ListenerHandle {
    id: u64,
    addr: Address,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    server: Arc<Server>,
}

impl ListenerHandle {
    /// The bound address (a TCP port 0 is resolved).
    pub fn address(&self) -> &Address {
        &self.addr
    }

    /// Stop accepting, end this listener's connections (in-flight requests
    /// finish) and remove a Unix socket file.
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return; // already stopped
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.server.disconnect(|c| c.listener == self.id);
        if let Address::Unix(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.stop()
    }
}

fn poll_readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0
}

impl Server {
    /// A server with `workers` request threads.
    pub fn new(workers: usize) -> io::Result<Arc<Server>> {
        Ok(Arc::new(Server {
            pool: Pool::new(workers)?,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }))
    }

    /// Listen on a Unix socket at `path` (a stale socket file is replaced;
    /// any other existing file is an error).
    pub fn listen_unix(
        self: &Arc<Self>,
        path: &Path,
        exports: Exports,
    ) -> io::Result<ListenerHandle> {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another server", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let l = UnixListener::bind(path)?;
        let addr = Address::Unix(path.to_path_buf());
        self.spawn_listener(
            addr,
            exports,
            l.as_raw_fd(),
            move || l.accept().map(|(s, _)| Stream::Unix(s)),
            (),
        )
    }

    /// Listen on TCP `addr`.
    pub fn listen_tcp(
        self: &Arc<Self>,
        addr: SocketAddr,
        exports: Exports,
    ) -> io::Result<ListenerHandle> {
        let l = TcpListener::bind(addr)?;
        let bound = Address::Tcp(l.local_addr()?);
        self.spawn_listener(
            bound,
            exports,
            l.as_raw_fd(),
            move || {
                l.accept().map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                })
            },
            (),
        )
    }

    fn spawn_listener(
        self: &Arc<Self>,
        addr: Address,
        exports: Exports,
        fd: i32,
        accept: impl Fn() -> io::Result<Stream> + Send + 'static,
        _: (),
    ) -> io::Result<ListenerHandle> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, server, addr2) = (Arc::clone(&stop), Arc::clone(self), addr.clone());
        let thread = std::thread::Builder::new()
            .name(format!("nbd-accept-{id}"))
            .spawn(move || {
                info!(%addr2, "nbd listening");
                while !stop2.load(Ordering::SeqCst) {
                    if !poll_readable(fd, 100) {
                        continue;
                    }
                    match accept() {
                        Ok(s) => server.start_conn(id, s, exports.clone()),
                        Err(e) => {
                            warn!(%addr2, "accept: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                // `accept` (and the listener it owns) drops here.
            })?;
        Ok(ListenerHandle {
            id,
            addr,
            stop,
            thread: Some(thread),
            server: Arc::clone(self),
        })
    }

    fn start_conn(self: &Arc<Self>, listener: u64, stream: Stream, exports: Exports) {
        if self.conns.lock().len() >= MAX_CONNECTIONS {
            warn!("too many NBD connections; refusing one");
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = match stream.try_clone() {
            Ok(h) => h,
            Err(e) => {
                warn!("clone connection: {e}");
                return;
            }
        };
        let conn = Arc::new(Conn {
            listener,
            export: Mutex::new(None),
            stream: handle,
            thread: Mutex::new(None),
        });
        self.conns.lock().insert(id, Arc::clone(&conn));
        let server = Arc::clone(self);
        let conn2 = Arc::clone(&conn);
        let t = std::thread::Builder::new()
            .name(format!("nbd-conn-{id}"))
            .spawn(move || {
                let _span = info_span!("nbd_conn", id).entered();
                if let Err(e) = server.serve(stream, &exports, &conn2) {
                    debug!("connection ended: {e}");
                }
                conn2.stream.shutdown(Shutdown::Both);
                server.conns.lock().remove(&id);
            });
        match t {
            Ok(t) => *conn.thread.lock() = Some(t),
            Err(e) => {
                warn!("spawn connection thread: {e}");
                self.conns.lock().remove(&id);
            }
        }
    }

    fn serve(
        &self,
        mut stream: Stream,
        exports: &Exports,
        conn: &Conn,
    ) -> crate::error::Result<()> {
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let session = match negotiate(&mut stream, exports)? {
            Outcome::Abort => return Ok(()),
            Outcome::Transmit(s) => s,
        };
        stream.set_read_timeout(None)?;
        let export = Arc::clone(&session.export);
        *conn.export.lock() = Some(export.name().to_string());
        export.connections.fetch_add(1, Ordering::Relaxed);
        info!(export = export.name(), "nbd client connected");
        let writer: SharedWriter = Arc::new(Mutex::new(Box::new(stream.try_clone()?)));
        let res = transmission::run(&mut stream, writer, session, &self.pool as &dyn Executor);
        export.connections.fetch_sub(1, Ordering::Relaxed);
        info!(export = export.name(), "nbd client disconnected");
        res
    }

    /// End the connections `pick` selects (read side first, so in-flight
    /// requests still reply) and wait for their threads.
    fn disconnect(&self, pick: impl Fn(&Conn) -> bool) {
        let chosen: Vec<Arc<Conn>> = self
            .conns
            .lock()
            .values()
            .filter(|c| pick(c))
            .cloned()
            .collect();
        for c in &chosen {
            c.stream.shutdown(Shutdown::Read);
        }
        let deadline = std::time::Instant::now() + STOP_GRACE;
        for c in chosen {
            let t = c.thread.lock().take();
            if let Some(t) = t {
                // A connection stuck writing to a client that does not read
                // is cut after the grace period.
                while !t.is_finished() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if !t.is_finished() {
                    warn!("connection did not finish in {STOP_GRACE:?}; closing it");
                    c.stream.shutdown(Shutdown::Both);
                }
                let _ = t.join();
            }
        }
    }

    /// End every connection on `export` (whatever listener it came from).
    pub fn disconnect_export(&self, export: &Export) {
        self.disconnect(|c| c.export.lock().as_deref() == Some(export.name()))
    }

    /// End every connection and stop the workers.
    pub fn shutdown(&self) {
        self.disconnect(|_| true);
        self.pool.shutdown();
    }
}
