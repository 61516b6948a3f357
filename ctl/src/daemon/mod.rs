//! The `lsvd` daemon: opens images from the catalog and serves them over
//! NBD, driven through a local control socket ([`control`]).
//!
//! Runs in the foreground (for systemd). It also runs the offload server
//! (`--offload-socket`, default `<run-dir>/offload.sock`; `--no-offload`) over
//! its open images ([`offload`]). On SIGTERM or SIGINT it stops accepting
//! control, offload and NBD connections, lets in-flight requests finish, then
//! flushes and closes every image.
//!
//! # Invariants
//! - NBD is served on Unix sockets unless TCP is asked for, and never on an
//!   unspecified address (0.0.0.0, ::) without `--allow-any-address`.
//! - An image is exported at most once per daemon; the daemon holds it
//!   open from `export` to `unexport` (or shutdown), and closes it only
//!   after its last connection ended and a final flush.

pub mod control;
mod devices;
mod exports;
pub mod offload;
mod signals;

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tracing::{info, warn};

use crate::catalog::Catalog;
use control::{parse_request, read_line, Response, DEFAULT_CONTROL};
pub use exports::Daemon;

/// lsvd: serve lsvd images over NBD (foreground daemon).
#[derive(Debug, Parser)]
#[command(name = "lsvd", version)]
pub struct Args {
    /// Catalog directory (images/NAME.json).
    #[arg(long, env = "LSVD_HOME", default_value = crate::catalog::DEFAULT_HOME)]
    pub home: PathBuf,
    /// Control socket (JSON lines; see `lsvdctl export`).
    #[arg(long, env = "LSVD_CONTROL", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// Directory of the default per-export sockets `nbd-NAME.sock`
    /// (default: the control socket's directory).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Also serve every export by name on this TCP address
    /// (e.g. 127.0.0.1:10809).
    #[arg(long)]
    pub nbd_listen: Option<String>,
    /// Allow TCP listeners on unspecified addresses (0.0.0.0, ::).
    #[arg(long)]
    pub allow_any_address: bool,
    /// NBD request worker threads.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Offload server socket (default: `<run-dir>/offload.sock`, i.e.
    /// /run/lsvd/offload.sock with the default control socket).
    #[arg(long, env = "LSVD_OFFLOAD_SOCKET")]
    pub offload_socket: Option<PathBuf>,
    /// Engine of registered offload functions.
    #[arg(long, value_enum, default_value = "jit")]
    pub offload_engine: crate::cmd::offload::EngineArg,
    /// Do not run the offload server.
    #[arg(long, conflicts_with_all = ["offload_socket", "offload_config"])]
    pub no_offload: bool,
    /// Offload limits file: `key = value` lines that lower the offload server's limits
    /// (see offload/README.md); a value above its cap stops the daemon at start.
    #[arg(long, env = "LSVD_OFFLOAD_CONFIG")]
    pub offload_config: Option<PathBuf>,
}

/// Parse a TCP listen address, refusing unspecified addresses unless
/// `allow_any`.
pub fn tcp_address(s: &str, allow_any: bool) -> anyhow::Result<SocketAddr> {
    let a: SocketAddr = s
        .parse()
        .with_context(|| format!("bad TCP address {s:?} (want IP:PORT, e.g. 127.0.0.1:10809)"))?;
    if a.ip().is_unspecified() && !allow_any {
        bail!("refusing to listen on all interfaces ({a}); pass --allow-any-address to the daemon to allow it");
    }
    Ok(a)
}

/// Entry point of the `lsvd` binary.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LSVD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lsvd: error: {}", crate::cmd::one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(args: Args) -> anyhow::Result<()> {
    // Block the stop signals in every thread before any is spawned; one
    // thread waits for them.
    let stop_rx = signals::wait_for_stop()?;
    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => args
            .control
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("create run directory {}", run_dir.display()))?;
    // A bad limits file stops the daemon before it opens anything.
    let offload_cfg = if args.no_offload {
        None
    } else {
        Some(offload::config(
            args.offload_config.as_deref(),
            args.offload_engine.into(),
        )?)
    };
    let global_tcp = args
        .nbd_listen
        .as_deref()
        .map(|s| tcp_address(s, args.allow_any_address))
        .transpose()?;
    let daemon = Daemon::new(
        Catalog::new(&args.home),
        run_dir.clone(),
        args.allow_any_address,
        args.workers,
        global_tcp,
    )?;
    // Devices a previous daemon served and died with come back first, so a
    // filesystem mounted on them sees its I/O resume.
    for d in daemon.recover_devices() {
        info!(name = %d.name, path = %d.path, "recovered at start");
    }
    let control = bind_control(&args.control)?;
    let offload = if let Some(cfg) = offload_cfg {
        let path = args
            .offload_socket
            .clone()
            .unwrap_or_else(|| run_dir.join("offload.sock"));
        match offload::start(&daemon, &path, cfg) {
            Ok(h) => Some(h),
            Err(e) => {
                let _ = std::fs::remove_file(&args.control);
                daemon.shutdown();
                return Err(e);
            }
        }
    } else {
        None
    };
    let stopping = Arc::new(AtomicBool::new(false));
    let accept = {
        let daemon = Arc::clone(&daemon);
        let stopping = Arc::clone(&stopping);
        std::thread::Builder::new()
            .name("lsvd-control".into())
            .spawn(move || control_loop(control, daemon, stopping))?
    };
    info!(control = %args.control.display(), "lsvd daemon ready");
    let sig = stop_rx.recv().unwrap_or(0);
    info!(signal = sig, "stopping");
    stopping.store(true, Ordering::SeqCst);
    let _ = accept.join();
    let _ = std::fs::remove_file(&args.control);
    // Offload first: no new calls; the calls in flight finish before volumes close.
    if let Some(h) = offload {
        h.shutdown();
    }
    daemon.shutdown();
    info!("lsvd daemon stopped");
    Ok(())
}

fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create directory {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another daemon answers on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale control socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("bind control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod control socket {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn control_loop(l: UnixListener, daemon: Arc<Daemon>, stopping: Arc<AtomicBool>) {
    while !stopping.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                let daemon = Arc::clone(&daemon);
                let _ = s.set_nonblocking(false);
                let spawned = std::thread::Builder::new()
                    .name("lsvd-control-conn".into())
                    .spawn(move || control_conn(s, &daemon));
                if let Err(e) = spawned {
                    warn!("spawn control thread: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                warn!("control accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn control_conn(s: UnixStream, daemon: &Daemon) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(600)));
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    loop {
        let line = match read_line(&mut r) {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) => return,
        };
        let resp = match line.and_then(|l| parse_request(&l)) {
            Ok(req) => daemon.handle(req.op),
            Err(msg) => Response::err(msg),
        };
        let mut out = match serde_json::to_vec(&resp) {
            Ok(v) => v,
            Err(e) => {
                warn!("encode control response: {e}");
                return;
            }
        };
        out.push(b'\n');
        if w.write_all(&out).is_err() {
            return;
        }
    }
}
