//! lsvd-rados-bench: 4 KiB random writes and reads through the engine on a
//! RADOS image, many client threads, periodic flush. Phases in order, each
//! optional: `--create`, `--fill` (sequential 1 MiB writes over the whole
//! image, so reads hit stored data), random writes (`--io-total`), random
//! reads (`--read-secs`), `--rm`. tests/ceph/bench.sh runs one phase per
//! invocation next to `rbd bench` on the same cluster and prints the table.
//!
//! Output: one `RESULT` line per timed phase:
//! `RESULT phase=write ops=N secs=S iops=I` (and `phase=read`, `phase=fill`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use log_engine::{Compression, CreateOptions, GcConfig, Image, OpenOptions};
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(about = "4 KiB random-write/read benchmark of lsvd on RADOS")]
struct Args {
    /// Image spec, e.g. rados:test/bench?conf=/path/ceph.conf (created and removed).
    #[arg(long)]
    spec: String,
    /// Create the image (else open the existing one).
    #[arg(long)]
    create: bool,
    /// Image size for --create (bytes, K/M/G suffix).
    #[arg(long, default_value = "1G")]
    size: String,
    /// Write the whole image sequentially (1 MiB writes) first.
    #[arg(long)]
    fill: bool,
    /// Bytes of 4 KiB random writes (0 = none).
    #[arg(long, default_value = "0")]
    io_total: String,
    /// Client threads.
    #[arg(long, default_value_t = 32)]
    threads: usize,
    /// Each thread flushes after this many writes.
    #[arg(long, default_value_t = 256)]
    flush_every: u64,
    /// Seconds of random 4 KiB reads after the writes (0 = none).
    #[arg(long, default_value_t = 0)]
    read_secs: u64,
    /// Segment size (bytes, K/M/G suffix).
    #[arg(long, default_value = "8M")]
    segment_size: String,
    /// Segment uploads in flight.
    #[arg(long, default_value_t = 8)]
    upload_threads: usize,
    /// Run without the background garbage collector (e.g. for a read phase
    /// that should measure reads only).
    #[arg(long)]
    no_gc: bool,
    /// Remove the image at the end.
    #[arg(long)]
    rm: bool,
}

fn size(s: &str) -> Result<u64> {
    log_engine::size::parse_size(s).map_err(|e| anyhow::anyhow!("bad size {s:?}: {e}"))
}

fn main() -> Result<()> {
    let a = Args::parse();
    let total_ops = size(&a.io_total)? / 4096;
    let seg = u32::try_from(size(&a.segment_size)?).context("segment size")?;
    if a.threads == 0 {
        bail!("threads must be > 0");
    }
    let store = if a.create {
        let store =
            lsvd_rados::create_spec(&a.spec).with_context(|| format!("create {}", a.spec))?;
        Image::create(
            store.clone(),
            &CreateOptions {
                size: size(&a.size)?,
                segment_size: seg,
                compression: Compression::None,
            },
        )
        .context("create image")?;
        store
    } else {
        lsvd_rados::open_spec(&a.spec).with_context(|| format!("open {}", a.spec))?
    };
    let img = Arc::new(
        Image::open(
            store.clone(),
            OpenOptions {
                upload_threads: a.upload_threads,
                gc: GcConfig {
                    enabled: !a.no_gc,
                    ..GcConfig::default()
                },
                ..OpenOptions::default()
            },
        )
        .context("open image")?,
    );

    let blocks = img.size() / 4096;
    if blocks == 0 {
        bail!("empty image");
    }

    if a.fill {
        let t0 = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut off = 0u64;
        while off < img.size() {
            let n = (img.size() - off).min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..n]);
            img.write(off, &buf[..n])?;
            off += n as u64;
        }
        img.flush()?;
        println!(
            "RESULT phase=fill bytes={off} secs={:.2}",
            t0.elapsed().as_secs_f64()
        );
    }

    // Writes.
    if total_ops > 0 {
        let next = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..a.threads)
            .map(|t| {
                let (img, next, flush_every) = (img.clone(), next.clone(), a.flush_every);
                std::thread::spawn(move || -> Result<()> {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
                    let mut buf = vec![0u8; 4096];
                    let mut mine = 0u64;
                    while next.fetch_add(1, Ordering::Relaxed) < total_ops {
                        rng.fill(&mut buf[..]);
                        let lba = rng.gen_range(0..blocks);
                        img.write(lba * 4096, &buf)?;
                        mine += 1;
                        if mine.is_multiple_of(flush_every) {
                            img.flush()?;
                        }
                    }
                    img.flush()?;
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("writer panicked"))?
                .context("writer")?;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "RESULT phase=write ops={total_ops} secs={secs:.2} iops={:.0}",
            total_ops as f64 / secs
        );
        let st = img.stats();
        println!(
            "STATS segments={} store_bytes_written={} client_bytes_written={} gc_bytes_copied={}",
            st.segments, st.store_bytes_written, st.client_bytes_written, st.gc_bytes_copied
        );
    }

    // Reads.
    if a.read_secs > 0 {
        let done = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(a.read_secs);
        let handles: Vec<_> = (0..a.threads)
            .map(|t| {
                let (img, done) = (img.clone(), done.clone());
                std::thread::spawn(move || -> Result<()> {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + t as u64);
                    let mut buf = vec![0u8; 4096];
                    while Instant::now() < until {
                        let lba = rng.gen_range(0..blocks);
                        img.read(lba * 4096, &mut buf)?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("reader panicked"))?
                .context("reader")?;
        }
        let secs = t0.elapsed().as_secs_f64();
        let n = done.load(Ordering::Relaxed);
        println!(
            "RESULT phase=read ops={n} secs={secs:.2} iops={:.0}",
            n as f64 / secs
        );
    }
    let img = Arc::try_unwrap(img).map_err(|_| anyhow::anyhow!("image still shared"))?;
    img.close().context("close image")?;
    if a.rm {
        store.destroy().context("remove image")?;
    }
    Ok(())
}
