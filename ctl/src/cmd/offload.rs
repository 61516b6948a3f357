//! `lsvdctl offload register|ls|rm|run` (clients of the offload socket),
//! `lsvdctl offload serve` (hidden: the offload server over the catalog's images,
//! in-process, as the daemon runs it), and `lsvdctl image import|export` (raw file to
//! image and back).
//!
//! Errors of the offload commands with `--json` print
//! `{"error": {"kind": ..., "message": ..., "hops": ...}}` on stdout and exit 1; without
//! `--json` they are the usual one-line `lsvdctl: error: KIND: message`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use log_engine::size::format_size;
use lsvd_offload::access::{may_read, Peer};
use lsvd_offload::client::{Client, ClientError};
use lsvd_offload::image_source::ImageBlockSource;
use lsvd_offload::protocol::DEFAULT_SOCKET;
use lsvd_offload::server::{ImageResolver, ResolveError, Server, ServerConfig};
use lsvd_offload::{BlockSource, Engine};
use serde_json::json;

use super::{open_image, open_options, store_open, EXIT_ERROR, EXIT_OK};
use crate::catalog::{spec_local_path, Catalog};
use crate::cli::{CompressArg, CreateArgs, ImageCmd};
use crate::output::{print, print_json, Table};

/// `lsvdctl offload ...`.
#[derive(Debug, Args)]
pub struct OffloadArgs {
    /// Offload server socket.
    #[arg(long, global = true, env = "LSVD_OFFLOAD_SOCKET", default_value = DEFAULT_SOCKET)]
    pub offload_socket: PathBuf,
    #[command(subcommand)]
    pub cmd: OffloadCmd,
}

/// Offload subcommands.
#[derive(Debug, Subcommand)]
pub enum OffloadCmd {
    /// Load, verify and register a function (one ELF section of FILE.o) for IMAGE.
    Register {
        /// Image the function will read.
        image: String,
        /// eBPF object built with `clang -O2 -target bpf -c`.
        file: PathBuf,
        /// ELF section holding the function.
        #[arg(long, default_value = "offload")]
        section: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your functions (root: everyone's).
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a function.
    Rm {
        /// Function id.
        id: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a function from a start block.
    Run {
        /// Function id.
        id: u64,
        /// Start block (4 KiB units).
        #[arg(long)]
        lba: u64,
        /// Arguments copied into scratch, as hex bytes (e.g. 0300000000000000).
        #[arg(long, default_value = "")]
        args: String,
        /// Arguments as comma-separated u64 values, little-endian (appended after --args).
        #[arg(long)]
        args_u64: Option<String>,
        /// Hop limit (0: the server's default, 64).
        #[arg(long, default_value_t = 0)]
        max_hops: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the offload server over the catalog's images in this process (testing; the
    /// lsvd daemon runs the same server).
    #[command(hide = true)]
    Serve {
        /// Engine for registered functions.
        #[arg(long, value_enum, default_value = "jit")]
        engine: EngineArg,
        /// Worker threads.
        #[arg(long)]
        workers: Option<usize>,
        /// Offload limits file (as the daemon's `--offload-config`).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
}

/// Engine choice of `offload serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// rbpf x86-64 JIT (falls back to rbpf's interpreter when it cannot compile).
    Jit,
    /// rbpf's interpreter.
    RbpfInterp,
    /// lsvd's metered interpreter.
    Interp,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Jit => Engine::Jit,
            EngineArg::RbpfInterp => Engine::RbpfInterp,
            EngineArg::Interp => Engine::Interp,
        }
    }
}

/// `lsvdctl image import NAME FILE`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Image name; created when it does not exist (size: the file's, rounded up to 4 KiB,
    /// or --size).
    pub name: String,
    /// Raw file to copy into the image from offset 0.
    pub file: PathBuf,
    /// Size of a new image (K/M/G/T), at least the file's size.
    #[arg(long)]
    pub size: Option<String>,
    /// Store of a new image (see `image create --store`).
    #[arg(long)]
    pub store: Option<String>,
}

/// `lsvdctl image export NAME FILE`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Image name.
    pub name: String,
    /// File to write (created or truncated).
    pub file: PathBuf,
}

/// Runs `lsvdctl offload ...`.
pub fn run(catalog: &Catalog, a: OffloadArgs) -> anyhow::Result<u8> {
    let sock = a.offload_socket;
    let json = match &a.cmd {
        OffloadCmd::Register { json, .. }
        | OffloadCmd::Ls { json }
        | OffloadCmd::Rm { json, .. }
        | OffloadCmd::Run { json, .. } => *json,
        OffloadCmd::Serve {
            engine,
            workers,
            config,
        } => return serve(catalog, &sock, *engine, *workers, config.as_deref()),
    };
    match client_cmd(&sock, a.cmd) {
        Ok(()) => Ok(EXIT_OK),
        Err(e) if json => {
            let (kind, message, hops) =
                match e.downcast_ref::<ClientError>().and_then(|c| c.remote()) {
                    Some(r) => (r.kind.as_str().to_string(), r.message.clone(), r.hop),
                    None => ("Client".to_string(), format!("{e:#}"), None),
                };
            print_json(&json!({"error": {"kind": kind, "message": message, "hops": hops}}));
            Ok(EXIT_ERROR)
        }
        Err(e) => Err(e),
    }
}

fn client_cmd(sock: &Path, cmd: OffloadCmd) -> anyhow::Result<()> {
    let mut c = Client::connect(sock)?;
    match cmd {
        OffloadCmd::Register {
            image,
            file,
            section,
            json,
        } => {
            let elf = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let r = c.register(&image, &section, &elf)?;
            if json {
                print_json(&json!({"id": r.fn_id, "image": image, "section": section,
                    "insns": r.insns, "insn_bound": r.insn_bound}));
            } else {
                print(&format!(
                    "registered function {} for image {image} ({} instructions, at most {} per hop)\n",
                    r.fn_id, r.insns, r.insn_bound
                ));
            }
        }
        OffloadCmd::Ls { json } => {
            let fns = c.list()?;
            if json {
                let v: Vec<_> = fns
                    .iter()
                    .map(|f| {
                        json!({"id": f.id, "uid": f.uid, "image": f.image, "section": f.section,
                        "insns": f.insns, "insn_bound": f.insn_bound, "engine": f.engine,
                        "invocations": f.invocations})
                    })
                    .collect();
                print_json(&json!(v));
            } else {
                let mut t = Table::new(&[
                    "ID", "UID", "IMAGE", "SECTION", "INSNS", "BOUND", "ENGINE", "CALLS",
                ]);
                for f in &fns {
                    t.row(vec![
                        f.id.to_string(),
                        f.uid.to_string(),
                        f.image.clone(),
                        f.section.clone(),
                        f.insns.to_string(),
                        f.insn_bound.to_string(),
                        f.engine.clone(),
                        f.invocations.to_string(),
                    ]);
                }
                print(&t.render());
            }
        }
        OffloadCmd::Rm { id, json } => {
            c.unregister(id)?;
            if json {
                print_json(&json!({"removed": id}));
            } else {
                print(&format!("removed function {id}\n"));
            }
        }
        OffloadCmd::Run {
            id,
            lba,
            args,
            args_u64,
            max_hops,
            json,
        } => {
            let mut bytes = parse_hex(&args)?;
            if let Some(list) = args_u64 {
                for w in list.split(',').filter(|w| !w.trim().is_empty()) {
                    let v = parse_u64(w.trim())
                        .with_context(|| format!("bad --args-u64 value {w:?}"))?;
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
            let r = c.invoke(id, lba, max_hops, &bytes)?;
            let words: Vec<u64> = (0..8).map(|i| r.scratch_u64(8 * i)).collect();
            let used = r.scratch.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
            if json {
                print_json(&json!({"r0": r.r0, "hops": r.hops, "scratch_u64": words,
                    "scratch": hex(&r.scratch[..used])}));
            } else {
                print(&format!(
                    "r0 {}\nhops {}\nscratch u64[0..8] {:?}\n",
                    r.r0, r.hops, words
                ));
            }
        }
        OffloadCmd::Serve { .. } => unreachable!("handled by run"),
    }
    Ok(())
}

fn parse_u64(s: &str) -> anyhow::Result<u64> {
    Ok(match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16)?,
        None => s.parse()?,
    })
}

/// Hex bytes, optionally `0x`-prefixed, whitespace and `:` ignored.
pub fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':')
        .collect();
    if !digits.len().is_multiple_of(2) {
        bail!("bad --args: odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|p| {
            let t = std::str::from_utf8(p).map_err(|_| anyhow!("bad --args: not hex"))?;
            u8::from_str_radix(t, 16).map_err(|_| anyhow!("bad --args: {t:?} is not hex"))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// [`ImageResolver`] over an lsvd catalog, for `offload serve` and the daemon.
///
/// Access: a peer may use an image when it may read the image's local store path
/// ([`may_read`]); stores without a local path are root's only. Images are opened
/// read-only on first use and kept open (a server process that also writes the image
/// must hand in its own open image instead).
pub struct CatalogResolver {
    catalog: Catalog,
    open: Mutex<HashMap<String, Arc<dyn BlockSource>>>,
}

impl CatalogResolver {
    /// A resolver over `catalog`.
    pub fn new(catalog: Catalog) -> CatalogResolver {
        CatalogResolver {
            catalog,
            open: Mutex::new(HashMap::new()),
        }
    }
}

/// The access rule of the offload server (the standalone one and the daemon's): `peer`
/// may use catalog image `image` when it may read the image's local store path
/// ([`may_read`]: owner/group/other bits and search permission on its parents); stores
/// without a local path are root's only. Returns the catalog entry.
pub fn check_access(
    catalog: &Catalog,
    image: &str,
    peer: &Peer,
) -> Result<crate::catalog::CatalogEntry, ResolveError> {
    let entry = match catalog.get(image) {
        Ok(Some(e)) => e,
        Ok(None) => return Err(ResolveError::NotFound(format!("no image named {image:?}"))),
        Err(log_engine::Error::InvalidArgument(m)) => return Err(ResolveError::NotFound(m)),
        Err(e) => return Err(ResolveError::Unavailable(e.to_string())),
    };
    check_store_access(spec_local_path(&entry.store).as_deref(), image, peer)?;
    Ok(entry)
}

/// [`check_access`] once the image's local store path is known (`None`: a store without
/// a local path, root's only).
pub fn check_store_access(
    store: Option<&Path>,
    image: &str,
    peer: &Peer,
) -> Result<(), ResolveError> {
    let denied = || {
        ResolveError::PermissionDenied(format!(
            "uid {} may not read the store of image {image:?}",
            peer.uid
        ))
    };
    match store {
        Some(p) => match may_read(p, peer) {
            Ok(true) => Ok(()),
            Ok(false) => Err(denied()),
            Err(e) => Err(ResolveError::Unavailable(format!(
                "store {} of image {image:?}: {e}",
                p.display()
            ))),
        },
        None if peer.is_root() => Ok(()),
        None => Err(denied()),
    }
}

impl ImageResolver for CatalogResolver {
    fn resolve(&self, image: &str, peer: &Peer) -> Result<Arc<dyn BlockSource>, ResolveError> {
        let entry = check_access(&self.catalog, image, peer)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = open.get(image) {
            return Ok(s.clone());
        }
        let img = store_open(&entry)
            .and_then(|s| {
                log_engine::Image::open(s, open_options(true)).map_err(anyhow::Error::from)
            })
            .map_err(|e| ResolveError::Unavailable(format!("open image {image:?}: {e:#}")))?;
        let src: Arc<dyn BlockSource> = Arc::new(ImageBlockSource::new(Arc::new(img)));
        open.insert(image.to_string(), src.clone());
        Ok(src)
    }
}

fn serve(
    catalog: &Catalog,
    sock: &Path,
    engine: EngineArg,
    workers: Option<usize>,
    config: Option<&Path>,
) -> anyhow::Result<u8> {
    let base = ServerConfig {
        engine: engine.into(),
        ..Default::default()
    };
    let mut cfg = match config {
        Some(f) => lsvd_offload::config::load_limits(f, base)?,
        None => base,
    };
    if let Some(w) = workers {
        cfg.workers = w;
    }
    let server = Server::new(cfg, Arc::new(CatalogResolver::new(catalog.clone())))?;
    let _handle = server
        .spawn(sock)
        .with_context(|| format!("listen on {}", sock.display()))?;
    eprintln!("lsvdctl: offload server listening on {}", sock.display());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Progress on stderr when it is a terminal.
struct Progress {
    on: bool,
    what: String,
    total: u64,
    start: Instant,
    last: Instant,
}

impl Progress {
    fn new(what: String, total: u64) -> Progress {
        let now = Instant::now();
        Progress {
            on: std::io::stderr().is_terminal(),
            what,
            total,
            start: now,
            last: now,
        }
    }

    fn update(&mut self, done: u64, force: bool) {
        if !self.on || (!force && self.last.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.last = Instant::now();
        let pct = (done * 100).checked_div(self.total).unwrap_or(100);
        let bar: String = (0..30)
            .map(|i| if i * 100 < pct * 30 { '#' } else { ' ' })
            .collect();
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r{} [{bar}] {pct:3}% {} of {} ({:.1} MiB/s)",
            self.what,
            format_size(done),
            format_size(self.total),
            done as f64 / secs / (1 << 20) as f64
        );
        if force {
            let _ = writeln!(e);
        }
        let _ = e.flush();
    }
}

/// Bytes per engine call of import/export.
const CHUNK: usize = 1 << 20;

/// `lsvdctl image import NAME FILE`.
pub fn import(catalog: &Catalog, a: ImportArgs) -> anyhow::Result<u8> {
    let mut f = File::open(&a.file).with_context(|| format!("open {}", a.file.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("stat {}", a.file.display()))?
        .len();
    let created = if catalog.get(&a.name)?.is_none() {
        let rounded = len.div_ceil(4096).max(1) * 4096;
        let size = match &a.size {
            Some(s) => super::size_arg("image size", s)?,
            None => rounded,
        };
        if size < len {
            bail!(
                "--size {size} is smaller than {} ({len} bytes)",
                a.file.display()
            );
        }
        super::image::run(
            catalog,
            ImageCmd::Create(CreateArgs {
                name: a.name.clone(),
                size: size.to_string(),
                store: a.store.clone(),
                zones: None,
                force: false,
                segment_size: "8M".into(),
                compress: CompressArg::None,
                cache_dir: None,
                journal_size: "1G".into(),
                read_cache_size: "1G".into(),
            }),
        )?;
        true
    } else {
        false
    };
    let image = open_image(catalog, &a.name, false, false)?;
    let size = image.size();
    if len > size {
        let _ = image.close();
        bail!(
            "{} is {len} bytes, larger than image {:?} ({size} bytes)",
            a.file.display(),
            a.name
        );
    }
    let mut p = Progress::new(format!("import {}", a.name), len);
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    let res = (|| -> anyhow::Result<()> {
        while off < len {
            let want = CHUNK.min((len - off) as usize);
            f.read_exact(&mut buf[..want])
                .with_context(|| format!("read {} at {off}", a.file.display()))?;
            let n = want.div_ceil(4096) * 4096;
            buf[want..n].fill(0);
            // A new image reads zeros already: skip zero chunks (sparse import).
            if !(created && buf[..n].iter().all(|b| *b == 0)) {
                image
                    .write(off, &buf[..n], false)
                    .with_context(|| format!("write image {:?} at {off}", a.name))?;
            }
            off += want as u64;
            p.update(off, false);
        }
        image.flush().context("flush")?;
        Ok(())
    })();
    p.update(off, true);
    let closed = image.close();
    res?;
    closed.with_context(|| format!("close image {:?}", a.name))?;
    print(&format!(
        "imported {} ({}) into image {}\n",
        a.file.display(),
        format_size(len),
        a.name
    ));
    Ok(EXIT_OK)
}

/// `lsvdctl image export NAME FILE`.
pub fn export(catalog: &Catalog, a: ExportArgs) -> anyhow::Result<u8> {
    let image = open_image(catalog, &a.name, true, false)?;
    let size = image.size();
    let res = (|| -> anyhow::Result<()> {
        let mut f =
            File::create(&a.file).with_context(|| format!("create {}", a.file.display()))?;
        let mut p = Progress::new(format!("export {}", a.name), size);
        let mut buf = vec![0u8; CHUNK];
        let mut off = 0u64;
        while off < size {
            let n = CHUNK.min((size - off) as usize);
            image
                .read(off, &mut buf[..n])
                .with_context(|| format!("read image {:?} at {off}", a.name))?;
            f.write_all(&buf[..n])
                .with_context(|| format!("write {}", a.file.display()))?;
            off += n as u64;
            p.update(off, false);
        }
        p.update(off, true);
        f.sync_all()
            .with_context(|| format!("sync {}", a.file.display()))?;
        Ok(())
    })();
    let closed = image.close();
    res?;
    closed.with_context(|| format!("close image {:?}", a.name))?;
    print(&format!(
        "exported image {} ({}) to {}\n",
        a.name,
        format_size(size),
        a.file.display()
    ));
    Ok(EXIT_OK)
}
