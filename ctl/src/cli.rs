//! The argument grammar of `lsvdctl` (clap derive).
//!
//! Sizes and offsets are taken as strings and parsed by the commands with
//! [`log_engine::size::parse_size`] (K/M/G/T suffixes), so a bad size is an
//! ordinary error (exit 1) with the same one-line format as every other error.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  error (unknown image, bad size, bad store spec, existing name, I/O error, no space, ...)
  2  usage error (bad command line)
  3  check failed: `image fsck` found damage or `io verify` found a mismatch

Environment:
  LSVD_HOME  catalog directory (same as --home; default /var/lib/lsvd)
  LSVD_LOG   log filter for messages on stderr (e.g. warn, info, debug; default error)";

/// lsvdctl: manage lsvd log-structured virtual disk images.
#[derive(Debug, Parser)]
#[command(name = "lsvdctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Catalog directory: images/NAME.json entries and default stores in data/NAME.
    #[arg(long, global = true, env = "LSVD_HOME", default_value = crate::catalog::DEFAULT_HOME)]
    pub home: PathBuf,

    /// Open images even if their write journal is lost or unusable (they go
    /// back to what the backend holds; the tool says how far).
    #[arg(long, global = true)]
    pub accept_cache_loss: bool,

    /// Ceph configuration for `rados:` stores (also `CEPH_CONF`).
    #[arg(long, global = true, env = "CEPH_CONF")]
    pub ceph_conf: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect, check and remove images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Write, read and verify image data (test patterns).
    #[command(subcommand)]
    Io(IoCmd),
    /// Register, list, remove and run eBPF offload functions.
    Offload(crate::cmd::offload::OffloadArgs),
    /// Serve an image as a ublk block device through the `lsvd` daemon;
    /// prints the device path (`/dev/ublkbN`).
    Map {
        name: String,
        /// Hardware queues (default: one per CPU).
        #[arg(long)]
        queues: Option<u16>,
        /// Requests in flight per queue (default 64).
        #[arg(long)]
        depth: Option<u16>,
        /// Open even if the image's write journal is lost or unusable.
        #[arg(long)]
        accept_cache_loss: bool,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Remove a ublk device (by `/dev/ublkbN` or image name): in-flight
    /// requests finish, the image is flushed and closed.
    Unmap {
        target: String,
        #[command(flatten)]
        control: ControlArg,
    },
    /// ublk devices served by the daemon.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Reattach the ublk devices of a daemon that died (a restarted daemon
    /// also does it when it starts); prints the devices that came back.
    Recover {
        #[command(flatten)]
        control: ControlArg,
    },
    /// The local write journal and read cache of an image.
    #[command(subcommand)]
    Cache(CacheCmd),
    /// Serve an image over NBD through the `lsvd` daemon
    /// (`export NAME [--unix PATH | --tcp ADDR] [--read-only]`), or list
    /// the exports (`export ls [--json]`).
    Export(ExportArgs),
    /// Stop serving an image: its clients are disconnected after their
    /// in-flight requests, the image is flushed and closed.
    Unexport {
        name: String,
        #[command(flatten)]
        control: ControlArg,
    },
    /// Host-managed zoned block devices (NVMe ZNS, null_blk zoned) for
    /// `zns:` stores.
    #[command(subcommand)]
    Zns(ZnsCmd),
}

#[derive(Debug, Subcommand)]
pub enum ZnsCmd {
    /// Show a zoned drive: model, zone size and capacity, zone count,
    /// conventional zones, open/active limits, block sizes and how many
    /// zones are in each condition. Read-only.
    Info {
        /// The device (e.g. /dev/nvme0n1).
        device: PathBuf,
        /// Print JSON (with one entry per zone).
        #[arg(long)]
        json: bool,
    },
}

/// Where the `lsvd` daemon's control socket is.
#[derive(Debug, Args)]
pub struct ControlArg {
    /// Control socket of the `lsvd` daemon.
    #[arg(long, env = "LSVD_CONTROL", default_value = crate::daemon::control::DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub sub: Option<ExportSub>,
    /// Image to export.
    pub name: Option<String>,
    /// Serve on this Unix socket (default: `nbd-NAME.sock` in the daemon's
    /// run directory).
    #[arg(long, conflicts_with = "tcp")]
    pub unix: Option<PathBuf>,
    /// Serve on this TCP address instead (e.g. 127.0.0.1:10810).
    #[arg(long)]
    pub tcp: Option<String>,
    /// Refuse writes.
    #[arg(long)]
    pub read_only: bool,
    /// Open even if the image's write journal is lost or unusable: the
    /// image goes back to what its backend holds (said in the daemon's log).
    #[arg(long)]
    pub accept_cache_loss: bool,
    #[command(flatten)]
    pub control: ControlArg,
}

#[derive(Debug, Subcommand)]
pub enum ExportSub {
    /// List the exports of the daemon.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Create an image and add it to the catalog.
    Create(CreateArgs),
    /// Show an image's superblock facts and store usage.
    Info {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the images of the catalog.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an image: its store and its catalog entry.
    Rm {
        name: String,
        /// Remove the catalog entry even if the store cannot be opened or
        /// destroyed (its data may be left behind).
        #[arg(long)]
        force: bool,
    },
    /// Check every crc of every segment and checkpoint and the map against
    /// the log. Exits 3 if anything is damaged.
    Fsck {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy a raw file into an image (created if missing), like `rbd import`.
    Import(crate::cmd::offload::ImportArgs),
    /// Copy a whole image into a raw file.
    Export(crate::cmd::offload::ExportArgs),
}

/// Data compression of a new image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    None,
    Zstd,
}

#[derive(Clone, Debug, Args)]
pub struct CreateArgs {
    /// Image name: 1-64 characters of A-Z a-z 0-9 . _ -, not starting with '.';
    /// or `rados:POOL[/NS]/NAME` to create NAME in a RADOS pool.
    pub name: String,
    /// Image size (K/M/G/T suffixes), a non-zero multiple of 4 KiB.
    #[arg(long)]
    pub size: String,
    /// Where segments go: `dir:PATH`,
    /// `zoned-file:PATH,zone-size=64M,zones=64[,zone-cap=..][,conv=N][,max-open=N][,max-active=N]`
    /// or `zns:/dev/DEVICE[,zones=A-B]` (a host-managed zoned block device).
    /// Default: `dir:<home>/data/NAME`.
    #[arg(long)]
    pub store: Option<String>,
    /// With a `zns:` store: use only zones A to B (inclusive) of the device,
    /// so several images can share one drive (same as `,zones=A-B`).
    #[arg(long, requires = "store")]
    pub zones: Option<String>,
    /// With a `zns:` store: erase the zones first, even if they hold another
    /// image's store or data lsvd does not know (refused without it).
    #[arg(long, requires = "store")]
    pub force: bool,
    /// Log segment size (K/M/G suffixes), a multiple of 4 KiB.
    #[arg(long, default_value = "8M")]
    pub segment_size: String,
    /// Compress data chunks.
    #[arg(long, value_enum, default_value = "none")]
    pub compress: CompressArg,
    /// Local fast directory (an NVMe file system) for the image's write
    /// journal (`NAME.journal`) and read cache (`NAME.rcache`). Without it the
    /// image has neither: writes are durable only after a flush uploads them.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Write journal size (with --cache-dir).
    #[arg(long, default_value = "1G", requires = "cache_dir")]
    pub journal_size: String,
    /// Read cache size, 0 for none (with --cache-dir).
    #[arg(long, default_value = "1G", requires = "cache_dir")]
    pub read_cache_size: String,
}

#[derive(Debug, Subcommand)]
pub enum IoCmd {
    /// Write the deterministic test pattern of SEED over a range, then flush.
    Write(PatternArgs),
    /// Read a range and check it holds the pattern of SEED; exits 3 and names
    /// the first bad block on a mismatch.
    Verify(PatternArgs),
    /// Read a range to a file or stdout.
    Read {
        name: String,
        /// Start, in bytes (K/M/G/T suffixes), a multiple of 4 KiB.
        #[arg(long, default_value = "0")]
        offset: String,
        /// Length, a multiple of 4 KiB (default: to the end of the image).
        #[arg(long)]
        length: Option<String>,
        /// Output file (default: stdout).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct PatternArgs {
    pub name: String,
    /// Start, in bytes (K/M/G/T suffixes), a multiple of 4 KiB.
    #[arg(long, default_value = "0")]
    pub offset: String,
    /// Length, a multiple of 4 KiB.
    #[arg(long)]
    pub length: String,
    /// Pattern seed: the same seed, offset and length verify what was written.
    #[arg(long, default_value_t = 1)]
    pub pattern: u64,
}

#[derive(Debug, Subcommand)]
pub enum CacheCmd {
    /// Journal fill, replay point and read-cache hit rate (read from the
    /// cache files; works while the image is closed).
    Info {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay anything the journal holds, upload it to the backend and
    /// empty the journal (the backend alone then holds the image).
    Flush { name: String },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// List the daemon's ublk devices.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlArg,
    },
}
