//! `lsvd-offload-bench`: B+-tree point lookups on one image, offloaded vs client-side.
//!
//! One 6-level B+-tree (fanout 8 by default: 32,769 keys, ~4,700 4 KiB nodes) is written
//! into a `log_engine::Image` on a `DirStore`. Compared, each at 1 and 16 client threads,
//! warm cache, every answer checked:
//! - `offload-jit` / `offload-interp`: one `Client::invoke` over the offload Unix socket
//!   (the server reads each node through `ImageBlockSource`, runs `btree_lookup.o`);
//! - `client-socket`: the client walks the tree itself with one 4 KiB read round trip per
//!   level over a Unix socket to a block server that reads the same image (the stand-in
//!   for NBD/ublk preads while lsvd has no NBD export: same transport kind, no NBD
//!   framing, so it flatters the peer slightly);
//! - `client-inproc`: the same walk with `Image::read` in this process (no transport at
//!   all: a lower bound no remote client can reach).
//!
//! Prints mean / p99 latency and lookups/s, and the VM's share of the offloaded call time.
//!
//! `--daemon` (host) and `--ublk DEV` (guest) compare against the real `lsvd` daemon
//! instead: see [`daemon`].

mod daemon;
mod nbd;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use log_engine::store::dir::DirStore;
use log_engine::{CreateOptions, Image, OpenOptions};
use lsvd_offload::btree;
use lsvd_offload::client::Client;
use lsvd_offload::image_source::{ImageBlockSource, StaticResolver};
use lsvd_offload::server::{Server, ServerConfig, ServerHandle, ServerStats};
use lsvd_offload::Engine;

const OBJECT: &[u8] = include_bytes!("../../../examples/bpf/btree_lookup.o");
const SEED: u64 = 42;

struct Opts {
    dir: PathBuf,
    levels: u32,
    fanout: usize,
    ops: u64,
}

const USAGE: &str = "usage: lsvd-offload-bench [--dir DIR] [--levels L (6)] [--fanout F (8)] \
[--ops N (20000 per row)]
       lsvd-offload-bench --daemon [--lsvd PATH] [--lsvdctl PATH] [--dir DIR] [--levels L] \
[--fanout F] [--ops N] [--rounds R (20)] [--cold-ops K (8)] [--no-cold]
       lsvd-offload-bench --ublk /dev/ublkbN --offload-socket SOCK --image NAME [same options]";

enum Mode {
    Standalone(Opts),
    Daemon(daemon::DOpts),
}

fn parse() -> anyhow::Result<Mode> {
    let mut o = Opts {
        dir: std::env::temp_dir().join(format!("lsvd-offload-bench.{}", std::process::id())),
        levels: 6,
        fanout: 8,
        ops: 20_000,
    };
    let mut d = daemon::DOpts {
        dir: PathBuf::new(),
        levels: 6,
        fanout: 8,
        ops: 20_000,
        rounds: 20,
        cold_ops: 8,
        no_cold: false,
        ublk: None,
        offload_socket: None,
        image: "bench".into(),
        lsvd: None,
        lsvdctl: None,
    };
    let mut daemon_mode = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut v = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--dir" => o.dir = PathBuf::from(v()?),
            "--levels" => o.levels = v()?.parse()?,
            "--fanout" => o.fanout = v()?.parse()?,
            "--ops" => o.ops = v()?.parse()?,
            "--daemon" => daemon_mode = true,
            "--ublk" => {
                d.ublk = Some(PathBuf::from(v()?));
                daemon_mode = true
            }
            "--offload-socket" => d.offload_socket = Some(PathBuf::from(v()?)),
            "--image" => d.image = v()?,
            "--lsvd" => d.lsvd = Some(PathBuf::from(v()?)),
            "--lsvdctl" => d.lsvdctl = Some(PathBuf::from(v()?)),
            "--rounds" => d.rounds = v()?.parse()?,
            "--cold-ops" => d.cold_ops = v()?.parse()?,
            "--no-cold" => d.no_cold = true,
            _ => bail!("{USAGE}"),
        }
    }
    if !daemon_mode {
        return Ok(Mode::Standalone(o));
    }
    d.dir = o.dir;
    d.levels = o.levels;
    d.fanout = o.fanout;
    d.ops = o.ops;
    Ok(Mode::Daemon(d))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("lsvd-offload-bench: error: {e:#}");
        std::process::exit(1);
    }
}

/// One way of doing a lookup: returns the value (None = absent).
type Lookup<'a> = dyn Fn(&mut Conn, u64) -> anyhow::Result<Option<u64>> + Sync + 'a;

/// Per-thread connection state.
enum Conn {
    Offload(Client, u64),
    Blocks(UnixStream),
    None,
}

struct Row {
    name: String,
    threads: usize,
    mean_us: f64,
    p99_us: f64,
    per_s: f64,
    vm_share: Option<(f64, f64)>,
}

fn run() -> anyhow::Result<()> {
    let o = match parse()? {
        Mode::Standalone(o) => o,
        Mode::Daemon(d) => return daemon::run(d),
    };
    if o.dir.exists() {
        bail!("{} exists; give a new --dir", o.dir.display());
    }
    std::fs::create_dir_all(&o.dir)?;
    let res = bench(&o);
    let _ = std::fs::remove_dir_all(&o.dir);
    res
}

fn bench(o: &Opts) -> anyhow::Result<()> {
    let n = btree::keys_for_levels(o.levels, o.fanout).context("tree too large")?;
    let tree = btree::build(&btree::demo_pairs(n, SEED), o.fanout);
    eprintln!(
        "tree: {n} keys, fanout {}, {} levels, {} blocks, root {}",
        o.fanout,
        tree.levels,
        tree.blocks.len(),
        tree.root
    );
    let store_path = o.dir.join("store");
    let store = Arc::new(DirStore::create(&store_path)?);
    let size = (tree.blocks.len() as u64 * 4096).div_ceil(1 << 20) * (1 << 20) + (1 << 20);
    Image::create(
        store.clone(),
        &CreateOptions {
            size,
            ..Default::default()
        },
    )?;
    let image = Arc::new(Image::open(store, OpenOptions::default())?);
    btree::write_to_image(&image, &tree.blocks)?;
    image.checkpoint()?;

    let mut resolver = StaticResolver::new();
    resolver.insert(
        "bench",
        store_path.clone(),
        Arc::new(ImageBlockSource::new(image.clone())),
    );
    let resolver = Arc::new(resolver);
    let mut servers: Vec<(&str, ServerHandle, u64)> = Vec::new();
    for (name, engine) in [
        ("offload-jit", Engine::Jit),
        ("offload-interp", Engine::Interp),
    ] {
        let cfg = ServerConfig {
            engine,
            workers: 16,
            ..Default::default()
        };
        let h = Server::new(cfg, resolver.clone())?.spawn(o.dir.join(format!("{name}.sock")))?;
        let mut c = Client::connect(h.path())?;
        let id = c.register("bench", "offload", OBJECT)?.fn_id;
        let engine_used = c.list()?.first().map(|f| f.engine.clone());
        eprintln!("{name}: function {id}, engine {engine_used:?}");
        servers.push((name, h, id));
    }
    let block_sock = o.dir.join("blocks.sock");
    spawn_block_server(&block_sock, image.clone())?;

    let root = tree.root;
    let offload = |c: &mut Conn, key: u64| -> anyhow::Result<Option<u64>> {
        let Conn::Offload(cl, id) = c else {
            bail!("no client")
        };
        let r = cl.invoke(*id, root, 0, &btree::lookup_args(key))?;
        if r.hops != o.levels {
            bail!("{} hops", r.hops);
        }
        Ok((r.r0 == 1).then(|| r.scratch_u64(16)))
    };
    let by_socket = |c: &mut Conn, key: u64| -> anyhow::Result<Option<u64>> {
        let Conn::Blocks(s) = c else {
            bail!("no socket")
        };
        walk(root, key, &mut |lba, b| {
            s.write_all(&lba.to_le_bytes())?;
            s.read_exact(b)?;
            Ok(())
        })
    };
    let img = image.clone();
    let inproc = move |_: &mut Conn, key: u64| -> anyhow::Result<Option<u64>> {
        walk(root, key, &mut |lba, b| {
            img.read(lba * 4096, b)?;
            Ok(())
        })
    };

    let mut rows = Vec::new();
    for threads in [1usize, 16] {
        for (name, h, id) in &servers {
            let path = h.path().to_path_buf();
            let id = *id;
            let before = h.server().stats();
            let row = measure(
                name,
                threads,
                o.ops,
                n,
                &|| Ok(Conn::Offload(Client::connect(&path)?, id)),
                &offload,
            )?;
            let after = h.server().stats();
            rows.push(with_vm_share(row, &before, &after));
        }
        let bs = block_sock.clone();
        rows.push(measure(
            "client-socket",
            threads,
            o.ops,
            n,
            &|| Ok(Conn::Blocks(UnixStream::connect(&bs)?)),
            &by_socket,
        )?);
        rows.push(measure(
            "client-inproc",
            threads,
            o.ops,
            n,
            &|| Ok(Conn::None),
            &inproc,
        )?);
    }
    print_table(&rows, o);
    for (_, h, _) in servers {
        h.shutdown();
    }
    image.close()?;
    Ok(())
}

enum Step {
    Next(u64),
    Found(Option<u64>),
}

/// One level of the lookup, as the client does it (same rules as btree_lookup.c).
fn node_step(b: &[u8; 4096], key: u64) -> Step {
    let rd = |o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    };
    let nk = (rd(8) as usize).min(btree::FANOUT);
    let key_at = |i: usize| rd(btree::OFF_KEYS + 8 * i);
    let val_at = |i: usize| rd(btree::OFF_VALS + 8 * i);
    if rd(0) == btree::KIND_LEAF {
        return Step::Found((0..nk).find(|i| key_at(*i) == key).map(val_at));
    }
    let mut c = 0;
    for i in 1..nk {
        if key < key_at(i) {
            break;
        }
        c = i;
    }
    Step::Next(val_at(c))
}

/// Serves `u64 LBA` → 4 KiB block read through the image, one connection per thread.
fn spawn_block_server(path: &Path, image: Arc<Image>) -> anyhow::Result<()> {
    let l = UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let image = image.clone();
            std::thread::spawn(move || {
                let mut lba = [0u8; 8];
                let mut b = vec![0u8; 4096];
                while s.read_exact(&mut lba).is_ok() {
                    let off = u64::from_le_bytes(lba).saturating_mul(4096);
                    if image.read(off, &mut b).is_err() || s.write_all(&b).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}

fn measure(
    name: &str,
    threads: usize,
    ops: u64,
    keys: u64,
    connect: &(dyn Fn() -> anyhow::Result<Conn> + Sync),
    lookup: &Lookup<'_>,
) -> anyhow::Result<Row> {
    let per = ops / threads as u64;
    // Warm-up: every thread connects and does a few lookups first.
    let start = std::sync::Barrier::new(threads + 1);
    let (results, wall): (Vec<anyhow::Result<Vec<u32>>>, Duration) = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let start = &start;
                sc.spawn(move || -> anyhow::Result<Vec<u32>> {
                    let mut c = connect();
                    let mut rng = 0x9e37_79b9u64 ^ ((t as u64 + 1) * 0x1234_5678_9abc);
                    let mut next = || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng
                    };
                    if let Ok(c) = c.as_mut() {
                        for _ in 0..200 {
                            let _ = lookup(c, 2 * (next() % keys) + 1);
                        }
                    }
                    start.wait();
                    let mut c = c?;
                    let mut lat = Vec::with_capacity(per as usize);
                    for _ in 0..per {
                        let key = 2 * (next() % keys) + 1;
                        let t0 = Instant::now();
                        let v = lookup(&mut c, key)?;
                        lat.push(t0.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                        if v != Some(btree::demo_value(SEED, key)) {
                            bail!("{name}: wrong answer for key {key}: {v:?}");
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        let r = hs
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect();
        (r, t0.elapsed())
    });
    let l = Latencies::of(results)?;
    Ok(Row {
        name: name.into(),
        threads,
        mean_us: l.mean_us,
        p99_us: l.p99_us,
        per_s: l.n as f64 / wall.as_secs_f64().max(1e-9),
        vm_share: None,
    })
}

/// The per-level client: reads one node per level from `tree_root` until the key's leaf.
fn walk(
    tree_root: u64,
    key: u64,
    read: &mut dyn FnMut(u64, &mut [u8]) -> anyhow::Result<()>,
) -> anyhow::Result<Option<u64>> {
    let mut lba = tree_root;
    let mut b = [0u8; 4096];
    for _ in 0..64 {
        read(lba, &mut b)?;
        match node_step(&b, key) {
            Step::Next(l) => lba = l,
            Step::Found(v) => return Ok(v),
        }
    }
    bail!("walk did not end")
}

/// Mean and p99 of per-operation latencies (nanoseconds) gathered by several threads.
struct Latencies {
    mean_us: f64,
    p99_us: f64,
    n: usize,
}

impl Latencies {
    fn of(per_thread: Vec<anyhow::Result<Vec<u32>>>) -> anyhow::Result<Latencies> {
        let mut all = Vec::new();
        for r in per_thread {
            all.extend(r?);
        }
        all.sort_unstable();
        let mean = all.iter().map(|x| *x as f64).sum::<f64>() / all.len().max(1) as f64;
        let p99 = all
            .get((all.len() * 99 / 100).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0);
        Ok(Latencies {
            mean_us: mean / 1000.0,
            p99_us: p99 as f64 / 1000.0,
            n: all.len(),
        })
    }
}

/// VM share: of the server's call time (arrival → answer) and of the client-observed mean.
fn with_vm_share(mut row: Row, before: &ServerStats, after: &ServerStats) -> Row {
    let calls = after.calls_ok - before.calls_ok;
    let vm = (after.vm_ns - before.vm_ns) as f64;
    let call = (after.call_ns - before.call_ns) as f64;
    if calls > 0 && call > 0.0 {
        let client_total = row.mean_us * 1000.0 * calls as f64;
        row.vm_share = Some((vm / call, vm / client_total));
    }
    row
}

fn print_table(rows: &[Row], o: &Opts) {
    println!(
        "B+-tree lookups, {} levels, fanout {}, {} lookups per row, warm cache",
        o.levels, o.fanout, o.ops
    );
    println!(
        "{:<15} {:>7} {:>10} {:>10} {:>12} {:>9} {:>12} {:>12}",
        "method", "threads", "mean us", "p99 us", "lookups/s", "vs sock", "vm/server", "vm/client"
    );
    for r in rows {
        let peer = rows
            .iter()
            .find(|p| p.name == "client-socket" && p.threads == r.threads)
            .map_or(0.0, |p| p.mean_us);
        let (vs, vc) = match r.vm_share {
            Some((a, b)) => (format!("{:.1}%", a * 100.0), format!("{:.1}%", b * 100.0)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<15} {:>7} {:>10.1} {:>10.1} {:>12.0} {:>8.2}x {:>12} {:>12}",
            r.name,
            r.threads,
            r.mean_us,
            r.p99_us,
            r.per_s,
            if r.mean_us > 0.0 {
                peer / r.mean_us
            } else {
                0.0
            },
            vs,
            vc
        );
    }
    println!(
        "vs sock = client-socket mean latency / this mean latency (speed-up of the row over the \
         per-level client at the same thread count)"
    );
}
