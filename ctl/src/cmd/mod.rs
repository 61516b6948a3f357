//! The commands of `lsvdctl`, one file per command group, and what they share:
//! exit codes, error printing, store and image opening.

mod cache;
pub mod export;
pub mod image;
pub mod io;
mod map;
pub mod offload;
pub mod zns;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use log_engine::size::parse_size;
use log_engine::{GcConfig, OpenOptions, SegmentStore};

use crate::catalog::{Catalog, CatalogEntry};
use crate::cli::{Cli, Command};
use crate::volume::Volume;

/// Success.
pub const EXIT_OK: u8 = 0;
/// Any error; one line `lsvdctl: error: ...` on stderr.
pub const EXIT_ERROR: u8 = 1;
/// Bad command line (clap's own exit code).
pub const EXIT_USAGE: u8 = 2;
/// A check failed: `image fsck` found damage, `io verify` a mismatch.
pub const EXIT_DAMAGE: u8 = 3;

/// Entry point of the `lsvdctl` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    init_tracing();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lsvdctl: error: {}", one_line(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Run one parsed command; the exit code on success or check failure.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Some(conf) = &cli.ceph_conf {
        // librados and lsvd-rados read the cluster from CEPH_CONF.
        std::env::set_var("CEPH_CONF", conf);
    }
    let catalog = Catalog::new(&cli.home);
    match cli.command {
        Command::Image(c) => image::run(&catalog, c),
        Command::Offload(a) => offload::run(&catalog, a),
        Command::Io(c) => io::run(&catalog, c, cli.accept_cache_loss),
        Command::Cache(c) => cache::run(&catalog, c, cli.accept_cache_loss),
        Command::Map {
            name,
            queues,
            depth,
            accept_cache_loss,
            control,
        } => map::map(
            &name,
            queues,
            depth,
            accept_cache_loss || cli.accept_cache_loss,
            &control.control,
        ),
        Command::Unmap { target, control } => map::unmap(&target, &control.control),
        Command::Recover { control } => map::recover(&control.control),
        Command::Device(crate::cli::DeviceCmd::Ls { json, control }) => {
            map::ls(json, &control.control)
        }
        Command::Export(a) => export::export(a),
        Command::Unexport { name, control } => export::unexport(&name, &control.control),
        Command::Zns(c) => zns::run(c),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LSVD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// An error and its causes on one line: `a: b: c`.
pub fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace(['\n', '\r'], " ")
}

/// Parse a size argument; `what` names it in the error.
pub(crate) fn size_arg(what: &str, s: &str) -> anyhow::Result<u64> {
    parse_size(s).with_context(|| format!("bad {what}"))
}

/// Check that `off`/`len` are 4 KiB aligned and inside an image of `size`.
pub(crate) fn check_range(off: u64, len: u64, size: u64) -> anyhow::Result<()> {
    if !off.is_multiple_of(4096) || !len.is_multiple_of(4096) {
        bail!("offset {off} and length {len} must each be a multiple of 4096");
    }
    match off.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => bail!("range {off}+{len} runs past the end of the image ({size} bytes)"),
    }
}

/// Check a store spec's syntax.
pub(crate) fn store_parse(s: &str) -> anyhow::Result<()> {
    // The parser's errors name the spec: `bad store spec "...": why`.
    crate::stores::parse_spec(s)?;
    Ok(())
}

/// Create a new, empty store.
pub(crate) fn store_create(s: &str, force: bool) -> anyhow::Result<Arc<dyn SegmentStore>> {
    Ok(crate::stores::create_store_force(s, force)?)
}

/// Open the store of a catalog entry.
pub(crate) fn store_open(entry: &CatalogEntry) -> anyhow::Result<Arc<dyn SegmentStore>> {
    crate::stores::open_store(&entry.store)
        .with_context(|| format!("open store of image {:?}", entry.name))
}

/// Engine options for the short-lived opens of `lsvdctl io`: no background
/// GC (the process exits right after), modest memory.
pub(crate) fn open_options(read_only: bool) -> OpenOptions {
    OpenOptions {
        upload_threads: 2,
        max_pending_bytes: 64 << 20,
        checkpoint_every: 16,
        gc: GcConfig {
            policy: Default::default(),
            enabled: false,
            threshold_pct: 50,
            interval: Duration::from_secs(10),
        },
        store_timeout: Duration::from_secs(30),
        read_only,
    }
}

/// Look `name` up in the catalog and open its image (with its write
/// journal and read cache, if it has them).
pub(crate) fn open_image(
    catalog: &Catalog,
    name: &str,
    read_only: bool,
    accept_cache_loss: bool,
) -> anyhow::Result<Volume> {
    let entry = catalog.require(name)?;
    let (v, _report) = Volume::open(&entry, open_options(read_only), accept_cache_loss)?;
    Ok(v)
}
