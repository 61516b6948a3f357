//! Test server: serve one lsvd image as /dev/ublkbN until SIGTERM/SIGINT.
//!
//!   lsvd-ublk-serve --store dir:/path [--create 256M] [--queues N] [--depth N]
//!                   [--workers N] [--write-through] [--recover ID] [--ready-file PATH]
//!
//! Prints the device path on stdout once the device is live (and writes it
//! to --ready-file, atomically, if given). Until the daemon (`lsvd`) serves
//! ublk devices this is what the guest tests run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use log_engine::{CreateOptions, Image, OpenOptions};
use lsvd_ublk::{serve, ServeParams};

#[derive(Parser, Debug)]
#[command(
    name = "lsvd-ublk-serve",
    about = "Serve an lsvd image as a ublk block device"
)]
struct Args {
    /// Segment store spec (dir:PATH, zoned-file:PATH,...).
    #[arg(long)]
    store: String,
    /// Create a new image of this size first (K/M/G suffixes).
    #[arg(long)]
    create: Option<String>,
    /// Hardware queues (default: one per CPU).
    #[arg(long)]
    queues: Option<u16>,
    /// Queue depth.
    #[arg(long, default_value_t = 64)]
    depth: u16,
    /// Worker threads per queue.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Acknowledge writes only once durable in the store (no volatile cache;
    /// safe against a server crash without a write journal).
    #[arg(long)]
    write_through: bool,
    /// Recover the quiesced ublk device ID left by a server that died.
    #[arg(long)]
    recover: Option<u32>,
    /// Disable the engine's background garbage collector.
    #[arg(long)]
    no_gc: bool,
    /// Write the device path here once it is live.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let store = if let Some(size) = &args.create {
        if args.recover.is_some() {
            bail!("--create and --recover exclude each other");
        }
        let size = log_engine::size::parse_size(size).context("bad --create size")?;
        let store = log_engine::store::spec::create_store(&args.store)
            .with_context(|| format!("creating store {}", args.store))?;
        Image::create(
            store.clone(),
            &CreateOptions {
                size,
                ..Default::default()
            },
        )
        .with_context(|| format!("creating an image in {}", args.store))?;
        store
    } else {
        log_engine::store::spec::open_store(&args.store)
            .with_context(|| format!("opening store {}", args.store))?
    };
    let mut open = OpenOptions::default();
    open.gc.enabled = !args.no_gc;
    let image = Arc::new(
        Image::open(store, open).with_context(|| format!("opening the image in {}", args.store))?,
    );

    let mut params = ServeParams {
        depth: args.depth,
        workers_per_queue: args.workers,
        recover: args.recover,
        write_through: args.write_through,
        ..Default::default()
    };
    if let Some(q) = args.queues {
        params.queues = q;
    }

    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }

    let handle = serve(image.clone(), &params).context("serving the image over ublk")?;
    println!("{}", handle.path());
    if let Some(f) = &args.ready_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, format!("{} {}\n", handle.path(), handle.dev_id()))
            .and_then(|()| std::fs::rename(&tmp, f))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    handle.stop().context("stopping the ublk device")?;
    image.close().context("closing the image")?;
    Ok(())
}
