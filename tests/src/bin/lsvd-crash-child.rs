//! Crash-test child: opens a `Disk` (engine + write journal) and writes
//! random stamped data from several threads until the parent kills it with
//! SIGKILL. Reports on stdout, one line each, flushed at once:
//! - `READY` once the disk is open;
//! - `A <wid> <seq> <offset> <len>` when write `wid` was acknowledged with
//!   engine write seq `seq`;
//! - `F <seq>` when a flush completed: every write with seq <= `seq` is
//!   durable.
//!
//! Every 512-byte sector written carries a stamp (see `lsvd_tests::stamp`):
//! the write id, the sector's own LBA and the write's extent.
//!
//! Usage: lsvd-crash-child STORE-SPEC JOURNAL-PATH JOURNAL-SIZE THREADS SEED WID-BASE [reorder]

#[path = "../../crash/stamp.rs"]
#[allow(dead_code)]
mod stamp;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
// Embedded stores and rados: specs alike.
use log_engine::{GcConfig, OpenOptions};
use lsvd_cache::disk::Disk;
use lsvd_cache::journal::JournalConfig;
use lsvd_ctl::stores::open_store;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

fn say(out: &Mutex<std::io::Stdout>, line: &str) {
    let mut o = out.lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 6 {
        bail!("usage: lsvd-crash-child STORE-SPEC JOURNAL JOURNAL-SIZE THREADS SEED WID-BASE [reorder]");
    }
    let store = open_store(&a[0]).with_context(|| format!("open store {}", a[0]))?;
    let mut jc = JournalConfig::new(&a[1], a[2].parse().context("journal size")?);
    let threads: u64 = a[3].parse().context("threads")?;
    let seed: u64 = a[4].parse().context("seed")?;
    let wid_base: u64 = a[5].parse().context("wid base")?;
    jc.reorder_for_tests = a.get(6).is_some_and(|s| s == "reorder");
    let opts = OpenOptions {
        upload_threads: 2,
        gc: GcConfig {
            interval: Duration::from_millis(50),
            ..Default::default()
        },
        ..Default::default()
    };
    let (disk, _) = Disk::open(store, &jc, None, opts, false).context("open disk")?;
    let disk = Arc::new(disk);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    say(&out, "READY");
    let size = disk.size();
    let mut hs = Vec::new();
    for t in 0..threads {
        let (disk, out) = (disk.clone(), out.clone());
        hs.push(std::thread::spawn(move || -> Result<()> {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (t + 1).wrapping_mul(0x9e37));
            let mut i = 0u64;
            loop {
                let wid = wid_base + (t << 24) + i;
                i += 1;
                // 4 KiB .. 2 MiB, mostly small.
                let blocks: u64 = match rng.gen_range(0..10) {
                    0..=5 => rng.gen_range(1..=4),
                    6..=8 => rng.gen_range(5..=64),
                    _ => rng.gen_range(65..=512),
                };
                let len = blocks * 4096;
                let off = rng.gen_range(0..=(size - len) / 4096) * 4096;
                let data = stamp::stamped(wid, off, len);
                let fua = rng.gen_range(0..16) == 0;
                let seq = disk.write(off, &data, fua)?;
                say(&out, &format!("A {wid} {seq} {off} {len}"));
            }
        }));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    loop {
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..30)));
        // Now and then push the engine's data to the backend, as the
        // journal's space management does under load.
        if rng.gen_range(0..8) == 0 {
            disk.flush_cache().context("flush cache")?;
        }
        let seq = disk.flush().context("flush")?;
        say(&out, &format!("F {seq}"));
        if hs.iter().any(|h| h.is_finished()) {
            for h in hs {
                h.join()
                    .map_err(|_| anyhow::anyhow!("writer panicked"))?
                    .context("writer")?;
            }
            bail!("a writer stopped");
        }
    }
}
