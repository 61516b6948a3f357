//! Write-journal benchmark: 4 KiB random writes through the `Disk` (engine +
//! journal) against the engine alone (flush per write, flush every 32
//! writes), with IOPS and p50/p99 latency, and the time to replay a full
//! 1 GiB journal. Prints one table; peers are measured in the same run on
//! the same file system.
//!
//! Usage: lsvd-journal-bench [--dir DIR] [--ops N] [--replay-mib M]
//!   --dir DIR        where stores and journals go (default: a temp dir)
//!   --ops N          writes per single-thread row (default 5000)
//!   --replay-mib M   journal size for the replay rows (default 1024)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use log_engine::store::dir::DirStore;
use log_engine::{CreateOptions, GcConfig, Image, OpenOptions, SegmentStore};
use lsvd_cache::disk::Disk;
use lsvd_cache::journal::binding::Binding;
use lsvd_cache::journal::format::parse_uuid;
use lsvd_cache::journal::{Journal, JournalConfig, RecordKind};
use rand::{Rng, SeedableRng};

const IMAGE: u64 = 4 << 30;

/// One benchmarked operation: (rng, op index).
type Op = Arc<dyn Fn(&mut rand::rngs::StdRng, usize) -> Result<()> + Send + Sync>;

fn opts() -> OpenOptions {
    OpenOptions {
        gc: GcConfig {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn new_store(dir: &Path, name: &str) -> Result<Arc<dyn SegmentStore>> {
    let s: Arc<dyn SegmentStore> = Arc::new(DirStore::create(dir.join(name))?);
    Image::create(
        s.clone(),
        &CreateOptions {
            size: IMAGE,
            ..Default::default()
        },
    )?;
    Ok(s)
}

struct Row {
    name: String,
    ops: usize,
    secs: f64,
    lat: Vec<Duration>,
}

impl Row {
    fn print(&mut self) {
        self.lat.sort_unstable();
        let pct = |p: f64| {
            let i = ((self.lat.len() as f64 * p) as usize).min(self.lat.len() - 1);
            self.lat[i].as_secs_f64() * 1e6
        };
        println!(
            "| {:<44} | {:>7} | {:>9.0} | {:>9.1} | {:>9.1} |",
            self.name,
            self.ops,
            self.ops as f64 / self.secs,
            pct(0.50),
            pct(0.99)
        );
    }
}

/// Run `op` `n` times on each of `threads` threads; per-op latencies.
fn measure(name: &str, threads: usize, n: usize, op: Op) -> Result<Row> {
    let t0 = Instant::now();
    let mut hs = Vec::new();
    for t in 0..threads {
        let op = op.clone();
        hs.push(std::thread::spawn(move || -> Result<Vec<Duration>> {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64 + 1);
            let mut lat = Vec::with_capacity(n);
            for i in 0..n {
                let s = Instant::now();
                op(&mut rng, i)?;
                lat.push(s.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("bench thread panicked"))??,
        );
    }
    Ok(Row {
        name: name.to_string(),
        ops: threads * n,
        secs: t0.elapsed().as_secs_f64(),
        lat,
    })
}

fn rand_off(rng: &mut rand::rngs::StdRng) -> u64 {
    rng.gen_range(0..IMAGE / 4096) * 4096
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let tmp;
    let dir: PathBuf = match arg("--dir") {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            tempfile::tempdir_in(d)?.keep()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let ops: usize = arg("--ops").map_or(Ok(5000), |s| s.parse())?;
    let replay_mib: u64 = arg("--replay-mib").map_or(Ok(1024), |s| s.parse())?;
    let data = Arc::new(vec![0x5au8; 4096]);
    println!(
        "lsvd-journal-bench: 4 KiB random writes, dir store and journal file in {}",
        dir.display()
    );
    println!(
        "| {:<44} | {:>7} | {:>9} | {:>9} | {:>9} |",
        "mode", "ops", "IOPS", "p50 us", "p99 us"
    );
    println!(
        "|{:-<46}|{:->9}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", ""
    );

    // Journal rows.
    let jc = JournalConfig::new(dir.join("journal"), 256 << 20);
    let (disk, _) = Disk::open(new_store(&dir, "j")?, &jc, None, opts(), false)?;
    let disk = Arc::new(disk);
    for (name, threads, fua) in [
        ("journal, ack on journal write, 1 thread", 1, false),
        ("journal, FUA (fdatasync) per write, 1 thread", 1, true),
        ("journal, ack on journal write, 8 threads", 8, false),
        ("journal, FUA per write, 8 threads", 8, true),
    ] {
        let (d, data) = (disk.clone(), data.clone());
        let n = if fua { ops / 4 } else { ops };
        measure(
            name,
            threads,
            n / threads,
            Arc::new(move |rng, _| {
                d.write(rand_off(rng), &data, fua)?;
                Ok(())
            }),
        )?
        .print();
    }
    let journal_stats = disk.cache_info().journal;
    Arc::try_unwrap(disk)
        .map_err(|_| anyhow::anyhow!("disk still shared"))?
        .close()?;

    // Engine-only rows.
    let img = Arc::new(Image::open(new_store(&dir, "e")?, opts())?);
    for (name, every) in [
        ("engine only, flush per write, 1 thread", 1usize),
        ("engine only, flush every 32 writes, 1 thread", 32),
    ] {
        let i2 = img.clone();
        let data = data.clone();
        let n = if every == 1 { ops / 10 } else { ops };
        measure(
            name,
            1,
            n,
            Arc::new(move |rng, k| {
                i2.write(rand_off(rng), &data)?;
                if (k + 1) % every == 0 {
                    i2.flush()?;
                }
                Ok(())
            }),
        )?
        .print();
    }
    img.close()?;
    println!(
        "journal: {} records in {} groups ({} device writes, {} fdatasyncs), io_uring: {}",
        journal_stats.records_written,
        journal_stats.groups,
        journal_stats.device_writes,
        journal_stats.syncs,
        journal_stats.io_uring
    );

    // Replay of a full journal.
    println!();
    println!(
        "| {:<44} | {:>9} | {:>9} | {:>9} |",
        "replay of a full journal", "records", "MiB", "seconds"
    );
    println!("|{:-<46}|{:->11}|{:->11}|{:->11}|", "", "", "", "");
    for (name, rec) in [("1 MiB records", 1u64 << 20), ("4 KiB records", 4096)] {
        let store = new_store(&dir, &format!("r{rec}"))?;
        let uuid = parse_uuid(&log_engine::read_info(&*store)?.uuid)?;
        let jc = JournalConfig::new(
            dir.join(format!("journal-r{rec}")),
            (replay_mib << 20) + 8192,
        );
        let j = Journal::start(&jc, uuid, 0)?;
        let per = rec + 4096;
        let n = (j.size() - 8192) / per - 1;
        let buf = vec![0xa5u8; rec as usize];
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for seq in 1..=n {
            let off = rng.gen_range(0..(IMAGE - rec) / 4096) * 4096;
            j.append(seq, RecordKind::Write, (off, rec), &buf)
                .context("fill journal")?;
        }
        j.sync_upto(n, &|| 0)?;
        Binding::Dirty {
            uuid,
            generation: j.generation(),
            base_seq: 0,
        }
        .store(&*store)?;
        j.close();
        drop(j);
        let t0 = Instant::now();
        let (disk, rep) = Disk::open(store, &jc, None, opts(), false)?;
        let secs = t0.elapsed().as_secs_f64();
        anyhow::ensure!(
            rep.replayed_records == n,
            "replayed {} of {n}",
            rep.replayed_records
        );
        println!(
            "| {:<44} | {:>9} | {:>9} | {:>9.2} |",
            format!("{replay_mib} MiB journal, {name} (incl. upload)"),
            n,
            rep.replayed_bytes >> 20,
            secs
        );
        disk.close()?;
    }
    Ok(())
}
