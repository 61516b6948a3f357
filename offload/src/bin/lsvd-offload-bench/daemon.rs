//! `lsvd-offload-bench --daemon` (host) and `--ublk DEV` (guest): B+-tree lookups
//! served by the real `lsvd` daemon, offloaded over its offload socket vs the same
//! lookups done by the client with one 4 KiB read per level over the daemon's NBD
//! export (`--daemon`) or with `pread` on the daemon's ublk device (`--ublk`).
//!
//! Both methods read the same open volume of the same daemon, in the same run; every
//! answer is checked. Cache states:
//! - warm: the whole tree was read once through the peer method before the rows (the
//!   store's segment files, and for `--ublk` the device's page cache, hold it); the
//!   ublk peer reads buffered.
//! - cold: before each round `sync; echo 3 > /proc/sys/vm/drop_caches` (the store's
//!   files leave the page cache; the image is plain, without lsvd read cache, so
//!   nothing else caches blocks), then every thread does `--cold-ops` lookups; the
//!   ublk peer reads with O_DIRECT. Within a round the first lookups pull the upper
//!   levels back into the page cache, so later lookups of the round are cold only in
//!   their lower levels (the usual shape of a cold B+-tree).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lsvd_offload::btree::{self, Tree};
use lsvd_offload::client::Client;

use super::nbd::Nbd;
use super::{OBJECT, SEED};

/// Options of the daemon/ublk modes.
pub struct DOpts {
    pub dir: PathBuf,
    pub levels: u32,
    pub fanout: usize,
    /// Warm lookups per row.
    pub ops: u64,
    /// Cold rounds per row.
    pub rounds: u32,
    /// Cold lookups per thread per round.
    pub cold_ops: u64,
    pub no_cold: bool,
    /// Guest mode: the mapped device, the daemon's offload socket and the image name.
    pub ublk: Option<PathBuf>,
    pub offload_socket: Option<PathBuf>,
    pub image: String,
    /// Host mode: the binaries (default: next to this one).
    pub lsvd: Option<PathBuf>,
    pub lsvdctl: Option<PathBuf>,
}

/// How a thread reads a block for the per-level walk.
enum Peer {
    Nbd(Nbd),
    Dev(File, AlignedBlock),
    Offload(Client, u64),
}

/// A 4 KiB buffer aligned for O_DIRECT.
struct AlignedBlock(Box<[u8]>, usize);

impl AlignedBlock {
    fn new() -> AlignedBlock {
        let v = vec![0u8; 8192].into_boxed_slice();
        let off = v.as_ptr().align_offset(4096);
        AlignedBlock(v, off)
    }
    fn get(&mut self) -> &mut [u8] {
        &mut self.0[self.1..self.1 + 4096]
    }
}

struct Row {
    state: &'static str,
    method: String,
    threads: usize,
    mean_us: f64,
    p99_us: f64,
    per_s: f64,
    n: usize,
}

/// The daemon started by `--daemon` (SIGTERM on drop).
struct DaemonProc(Child);

impl Drop for DaemonProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn sibling(name: &str, given: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let me = std::env::current_exe()?;
    let p = me.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found (build it: cargo build --release -p lsvd-ctl --bins, or give --{name})",
            p.display()
        );
    }
    Ok(p)
}

fn drop_caches() -> anyhow::Result<()> {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("echo 3 > /proc/sys/vm/drop_caches (cold rows need root; --no-cold skips them)")
}

fn wait_socket(p: &Path, child: &mut Child) -> anyhow::Result<()> {
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(p).is_err() {
        if let Some(st) = child.try_wait()? {
            bail!("lsvd exited ({st}) before {} appeared", p.display());
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("{} did not appear within 60 s", p.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn lookup(p: &mut Peer, tree: &Tree, key: u64) -> anyhow::Result<Option<u64>> {
    match p {
        Peer::Offload(c, id) => {
            let r = c.invoke(*id, tree.root, 0, &btree::lookup_args(key))?;
            if r.hops != tree.levels {
                bail!(
                    "offload: {} hops, the tree has {} levels",
                    r.hops,
                    tree.levels
                );
            }
            Ok((r.r0 == 1).then(|| r.scratch_u64(16)))
        }
        Peer::Nbd(n) => super::walk(tree.root, key, &mut |lba, b| n.read(lba * 4096, b)),
        Peer::Dev(f, buf) => super::walk(tree.root, key, &mut |lba, b| {
            let a = buf.get();
            f.read_exact_at(a, lba * 4096)
                .with_context(|| format!("pread block {lba}"))?;
            b.copy_from_slice(a);
            Ok(())
        }),
    }
}

/// Runs one row: `threads` threads, each connected once, `rounds` rounds of `per`
/// lookups per thread (`cold`: caches dropped before each round).
#[allow(clippy::too_many_arguments)]
fn row(
    state: &'static str,
    method: &str,
    threads: usize,
    rounds: u32,
    per: u64,
    cold: bool,
    tree: &Tree,
    keys: u64,
    connect: &(dyn Fn() -> anyhow::Result<Peer> + Sync),
) -> anyhow::Result<Row> {
    let bar = Barrier::new(threads + 1);
    let mut wall = Duration::ZERO;
    let mut prep: anyhow::Result<()> = Ok(());
    let results: Vec<anyhow::Result<Vec<u32>>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let bar = &bar;
                sc.spawn(move || -> anyhow::Result<Vec<u32>> {
                    let mut rng = 0x9e37_79b9u64 ^ ((t as u64 + 1) * 0x1234_5678_9abc);
                    let mut next = move || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        2 * (rng % keys) + 1
                    };
                    let mut c = connect();
                    // Warm-up (connection, VM): not measured.
                    if let Ok(c) = c.as_mut() {
                        for _ in 0..20 {
                            let _ = lookup(c, tree, next());
                        }
                    }
                    let mut lat = Vec::new();
                    let mut failed = None;
                    for _ in 0..rounds {
                        bar.wait();
                        if failed.is_none() {
                            match c.as_mut() {
                                Ok(c) => {
                                    for _ in 0..per {
                                        let key = next();
                                        let t0 = Instant::now();
                                        let v = lookup(c, tree, key);
                                        let ns = t0.elapsed().as_nanos().min(u32::MAX as u128);
                                        match v {
                                            Ok(v) if v == Some(btree::demo_value(SEED, key)) => {
                                                lat.push(ns as u32)
                                            }
                                            Ok(v) => {
                                                failed = Some(anyhow::anyhow!(
                                                    "{method}: wrong answer for key {key}: {v:?}"
                                                ));
                                                break;
                                            }
                                            Err(e) => {
                                                failed = Some(e);
                                                break;
                                            }
                                        }
                                    }
                                }
                                Err(e) => failed = Some(anyhow::anyhow!("connect: {e:#}")),
                            }
                        }
                        bar.wait();
                    }
                    match failed {
                        Some(e) => Err(e),
                        None => Ok(lat),
                    }
                })
            })
            .collect();
        for _ in 0..rounds {
            if cold && prep.is_ok() {
                prep = drop_caches();
            }
            bar.wait();
            let t0 = Instant::now();
            bar.wait();
            wall += t0.elapsed();
        }
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    prep?;
    let l = super::Latencies::of(results)?;
    Ok(Row {
        state,
        method: method.into(),
        threads,
        mean_us: l.mean_us,
        p99_us: l.p99_us,
        per_s: l.n as f64 / wall.as_secs_f64().max(1e-9),
        n: l.n,
    })
}

/// Runs the daemon (`--daemon`) or ublk (`--ublk`) comparison.
pub fn run(o: DOpts) -> anyhow::Result<()> {
    let n = btree::keys_for_levels(o.levels, o.fanout).context("tree too large")?;
    let tree = btree::build(&btree::demo_pairs(n, SEED), o.fanout);
    eprintln!(
        "tree: {n} keys, fanout {}, {} levels, {} blocks, root {}",
        o.fanout,
        tree.levels,
        tree.blocks.len(),
        tree.root
    );
    let bytes: Vec<u8> = tree.blocks.iter().flatten().copied().collect();
    let mut _daemon = None;
    let sock: PathBuf;
    // Per-level peers: (name, connect) for the warm rows and for the cold rows.
    let (warm_peers, cold_peers): (Vec<Named>, Vec<Named>);
    match &o.ublk {
        None => {
            if o.dir.exists() {
                bail!("{} exists; give a new --dir", o.dir.display());
            }
            let (lsvd, ctl) = (sibling("lsvd", &o.lsvd)?, sibling("lsvdctl", &o.lsvdctl)?);
            let home = o.dir.join("home");
            let run = o.dir.join("run");
            std::fs::create_dir_all(&run)?;
            let size = (bytes.len() as u64).div_ceil(1 << 20) * (1 << 20) + (4 << 20);
            let st = Command::new(&ctl)
                .env("LSVD_HOME", &home)
                .args(["image", "create", &o.image, "--size", &size.to_string()])
                .args(["--segment-size", "4M"])
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                bail!("lsvdctl image create failed");
            }
            let control = run.join("lsvd.sock");
            sock = run.join("offload.sock");
            let mut child = Command::new(&lsvd)
                .arg("--home")
                .arg(&home)
                .arg("--control")
                .arg(&control)
                .arg("--offload-socket")
                .arg(&sock)
                .env(
                    "LSVD_LOG",
                    std::env::var("LSVD_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("start {}", lsvd.display()))?;
            wait_socket(&control, &mut child)?;
            wait_socket(&sock, &mut child)?;
            _daemon = Some(DaemonProc(child));
            let st = Command::new(&ctl)
                .env("LSVD_HOME", &home)
                .env("LSVD_CONTROL", &control)
                .args(["export", &o.image])
                .stdout(Stdio::null())
                .status()?;
            if !st.success() {
                bail!("lsvdctl export failed");
            }
            let nbd_sock = run.join(format!("nbd-{}.sock", o.image));
            let mut w = Nbd::connect(&nbd_sock, "")?;
            for (i, c) in bytes.chunks(64 << 10).enumerate() {
                w.write((i as u64) << 16, c)?;
            }
            w.flush()?;
            let nbd: Arc<Connect> = Arc::new(Box::new(move || {
                Ok(Peer::Nbd(Nbd::connect(&nbd_sock, "")?))
            }));
            warm_peers = vec![("nbd-per-level", nbd.clone())];
            cold_peers = vec![("nbd-per-level", nbd)];
        }
        Some(dev) => {
            sock = o
                .offload_socket
                .clone()
                .context("--ublk needs --offload-socket (the daemon's)")?;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(dev)
                .with_context(|| format!("open {}", dev.display()))?;
            f.write_all_at(&bytes, 0)
                .with_context(|| format!("write the tree to {}", dev.display()))?;
            f.sync_all()?;
            let (a, b) = (dev.clone(), dev.clone());
            let direct: Arc<Connect> = Arc::new(Box::new(move || {
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&a)?;
                Ok(Peer::Dev(f, AlignedBlock::new()))
            }));
            let buffered: Arc<Connect> = Arc::new(Box::new(move || {
                Ok(Peer::Dev(File::open(&b)?, AlignedBlock::new()))
            }));
            warm_peers = vec![
                ("ublk-pread", buffered),
                ("ublk-pread-odirect", direct.clone()),
            ];
            cold_peers = vec![("ublk-pread-odirect", direct)];
        }
    }
    let id = Client::connect(&sock)?
        .register(&o.image, "offload", OBJECT)
        .context("register btree_lookup.o")?
        .fn_id;
    let offload: Connect = {
        let s = sock.clone();
        Box::new(move || Ok(Peer::Offload(Client::connect(&s)?, id)))
    };
    // Warm: every block read once through the peer.
    {
        let mut p = (warm_peers[0].1)()?;
        let mut b = [0u8; 4096];
        for lba in 0..tree.blocks.len() as u64 {
            match &mut p {
                Peer::Nbd(n) => n.read(lba * 4096, &mut b)?,
                Peer::Dev(f, a) => f.read_exact_at(a.get(), lba * 4096)?,
                Peer::Offload(..) => {}
            }
        }
    }
    let mut rows = Vec::new();
    for threads in [1usize, 16] {
        let per = (o.ops / threads as u64).max(1);
        rows.push(row(
            "warm", "offload", threads, 1, per, false, &tree, n, &offload,
        )?);
        for (name, c) in &warm_peers {
            rows.push(row("warm", name, threads, 1, per, false, &tree, n, &**c)?);
        }
    }
    if !o.no_cold {
        for threads in [1usize, 16] {
            rows.push(row(
                "cold", "offload", threads, o.rounds, o.cold_ops, true, &tree, n, &offload,
            )?);
            for (name, c) in &cold_peers {
                rows.push(row(
                    "cold", name, threads, o.rounds, o.cold_ops, true, &tree, n, &**c,
                )?);
            }
        }
    }
    print_table(&rows, &o, &tree, warm_peers[0].0);
    drop(_daemon);
    if o.ublk.is_none() {
        let _ = std::fs::remove_dir_all(&o.dir);
    }
    Ok(())
}

/// A per-level method: its name and how a thread connects.
type Named = (&'static str, Arc<Connect>);

type Connect = Box<dyn Fn() -> anyhow::Result<Peer> + Sync + Send>;

fn print_table(rows: &[Row], o: &DOpts, tree: &Tree, peer: &str) {
    let via = match &o.ublk {
        Some(d) => format!("the lsvd daemon's ublk device {}", d.display()),
        None => "the lsvd daemon's NBD export (Unix socket)".into(),
    };
    println!(
        "B+-tree lookups served by the lsvd daemon: {} levels, fanout {}, {} blocks; \
         offload = one INVOKE on the daemon's offload socket, {peer} = one 4 KiB read per \
         level through {via}; every answer checked",
        tree.levels,
        o.fanout,
        tree.blocks.len()
    );
    println!(
        "warm: tree read once through {peer} before (page cache holds it{}); {} lookups per row",
        if o.ublk.is_some() {
            ", buffered preads"
        } else {
            ""
        },
        o.ops
    );
    if !o.no_cold {
        println!(
            "cold: sync + echo 3 > /proc/sys/vm/drop_caches before each of {} rounds of {} \
             lookups per thread (plain image, no lsvd read cache{})",
            o.rounds,
            o.cold_ops,
            if o.ublk.is_some() {
                "; preads with O_DIRECT"
            } else {
                ""
            }
        );
    }
    println!(
        "{:<5} {:<14} {:>7} {:>8} {:>10} {:>10} {:>11} {:>13} {:>12}",
        "cache",
        "method",
        "threads",
        "lookups",
        "mean us",
        "p99 us",
        "lookups/s",
        "speedup mean",
        "speedup tput"
    );
    for r in rows {
        let off = rows
            .iter()
            .find(|p| p.method == "offload" && p.threads == r.threads && p.state == r.state);
        let (sm, st) = match off {
            Some(off) if r.method != "offload" && off.mean_us > 0.0 && r.per_s > 0.0 => (
                format!("{:.2}x", r.mean_us / off.mean_us),
                format!("{:.2}x", off.per_s / r.per_s),
            ),
            _ => ("-".into(), "-".into()),
        };
        println!(
            "{:<5} {:<14} {:>7} {:>8} {:>10.1} {:>10.1} {:>11.0} {:>13} {:>12}",
            r.state, r.method, r.threads, r.n, r.mean_us, r.p99_us, r.per_s, sm, st
        );
    }
    println!(
        "speedup (on each per-level row) = its mean latency / offload mean latency, and \
         offload lookups/s / its lookups/s (same cache state and thread count)"
    );
}
