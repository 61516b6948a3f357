//! Read-cache benchmark. Prints three tables:
//!
//! 1. eviction policy hit rates (LRU, CLOCK, S3-FIFO) on a zipf trace and on
//!    a scan-polluted zipf trace, simulated with the cache's own evictors;
//! 2. random 4 KiB read IOPS on a real `Image` over a `DirStore`: no cache
//!    (the peer), cold read cache, warm cache, warm after a restart — on the
//!    plain directory store (page-cache hot, the worst case for a cache) and
//!    with an emulated backend latency (`--latency-us`, default 300 µs per
//!    read, standing in for a network store);
//! 3. hit rate and cache bytes written with and without write-through of
//!    fresh segments, for reads of recently written data.
//!
//! Usage: `lsvd-rcache-bench [--dir DIR] [--image-mib N] [--reads N]
//! [--threads N] [--latency-us N]`

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log_engine::store::dir::DirStore;
use log_engine::store::{Media, SegmentEntry, SegmentStore, SpaceInfo};
use log_engine::{Compression, CreateOptions, GcConfig, Image, OpenOptions};
use lsvd_cache::read_cache::policy::{simulate, Policy};
use lsvd_cache::read_cache::{image_uuid, CacheOptions, CachingStore, ReadCacheConfig};

type R<T> = Result<T, Box<dyn Error>>;

/// xorshift64* PRNG (deterministic, no dependency).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s) over `n` items by inverse CDF; item ranks are scattered over the
/// key space so hot items are not neighbours.
struct Zipf {
    cdf: Vec<f64>,
}
impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for i in 0..n {
            acc += 1.0 / ((i + 1) as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    fn sample(&self, r: &mut Rng) -> u64 {
        let u = r.f64();
        let rank = self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1) as u64;
        let n = self.cdf.len() as u64;
        // Scatter: multiply by a large odd number modulo n (a bijection when
        // gcd(mult, n) == 1; n is chosen a power of two).
        (rank.wrapping_mul(0x9E37_79B9_7F4A_7C15 | 1)) % n
    }
}

struct Args {
    dir: PathBuf,
    image_mib: u64,
    reads: u64,
    threads: u64,
    latency_us: u64,
}

fn parse_args() -> R<Args> {
    let mut a = Args {
        dir: std::env::temp_dir(),
        image_mib: 256,
        reads: 20000,
        threads: 2,
        latency_us: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--dir" => a.dir = PathBuf::from(v()?),
            "--image-mib" => a.image_mib = v()?.parse()?,
            "--reads" => a.reads = v()?.parse()?,
            "--threads" => a.threads = v()?.parse()?,
            "--latency-us" => a.latency_us = v()?.parse()?,
            "-h" | "--help" => {
                println!("lsvd-rcache-bench [--dir DIR] [--image-mib N] [--reads N] [--threads N] [--latency-us N]");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {k}").into()),
        }
    }
    Ok(a)
}

fn policy_table() {
    let n_keys = 1 << 16;
    let len = 1_000_000;
    let z = Zipf::new(n_keys, 0.9);
    let mut r = Rng(42);
    let zipf: Vec<u64> = (0..len).map(|_| z.sample(&mut r)).collect();
    // Scan-polluted: the same zipf stream, interleaved with sequential scans
    // of never-repeated keys (1/3 of all accesses, in bursts of 2000).
    let mut scan = Vec::with_capacity(len * 3 / 2);
    let mut cold = 1u64 << 40;
    for (i, k) in zipf.iter().enumerate() {
        scan.push(*k);
        if i % 4000 == 3999 {
            for _ in 0..2000 {
                scan.push(cold);
                cold += 1;
            }
        }
    }
    println!("\n## Eviction policy hit rates (simulated, same evictors as the cache)");
    println!("zipf s=0.9 over {n_keys} blocks, {len} accesses; scan = same + 1/3 one-time sequential scans\n");
    println!("| trace | cache (% of keys) | LRU | CLOCK | S3-FIFO |");
    println!("|---|---|---|---|---|");
    for (name, t) in [("zipf", &zipf), ("zipf+scan", &scan)] {
        for pct in [1u32, 5, 10, 25] {
            let slots = n_keys as u32 * pct / 100;
            let rs: Vec<String> = [Policy::Lru, Policy::Clock, Policy::S3Fifo]
                .iter()
                .map(|p| format!("{:.1}%", 100.0 * simulate(*p, slots, t).hit_rate()))
                .collect();
            println!("| {name} | {pct}% | {} | {} | {} |", rs[0], rs[1], rs[2]);
        }
    }
}

/// A store wrapper that sleeps before every segment read: an emulated
/// network backend (labelled as such in the output).
#[derive(Debug)]
struct Slow {
    inner: Arc<dyn SegmentStore>,
    delay: Duration,
    reads: AtomicU64,
}
impl SegmentStore for Slow {
    fn media(&self) -> Media {
        self.inner.media()
    }
    fn describe(&self) -> String {
        format!("slow:{}", self.inner.describe())
    }
    fn write_segment(&self, seq: u64, data: &[u8]) -> log_engine::Result<()> {
        self.inner.write_segment(seq, data)
    }
    fn read_segment(&self, seq: u64, offset: u64, buf: &mut [u8]) -> log_engine::Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.inner.read_segment(seq, offset, buf)
    }
    fn delete_segment(&self, seq: u64) -> log_engine::Result<()> {
        self.inner.delete_segment(seq)
    }
    fn list_segments(&self) -> log_engine::Result<Vec<SegmentEntry>> {
        self.inner.list_segments()
    }
    fn put_meta(&self, name: &str, data: &[u8]) -> log_engine::Result<()> {
        self.inner.put_meta(name, data)
    }
    fn get_meta(&self, name: &str) -> log_engine::Result<Option<Vec<u8>>> {
        self.inner.get_meta(name)
    }
    fn delete_meta(&self, name: &str) -> log_engine::Result<()> {
        self.inner.delete_meta(name)
    }
    fn list_meta(&self) -> log_engine::Result<Vec<String>> {
        self.inner.list_meta()
    }
    fn space(&self) -> log_engine::Result<SpaceInfo> {
        self.inner.space()
    }
    fn destroy(&self) -> log_engine::Result<()> {
        self.inner.destroy()
    }
}

fn open_opts() -> OpenOptions {
    OpenOptions {
        gc: GcConfig {
            enabled: false,
            ..GcConfig::default()
        },
        ..OpenOptions::default()
    }
}

/// Random 4 KiB reads over `[0, blocks)`; returns IOPS.
fn rand_reads(img: &Image, blocks: u64, reads: u64, threads: u64, seed: u64) -> R<f64> {
    let t0 = Instant::now();
    std::thread::scope(|s| -> R<()> {
        let hs: Vec<_> = (0..threads)
            .map(|th| {
                s.spawn(move || -> Result<(), log_engine::Error> {
                    let mut r = Rng(seed * 1000 + th + 1);
                    let mut b = vec![0u8; 4096];
                    for _ in 0..reads / threads {
                        let lba = r.next() % blocks;
                        img.read(lba * 4096, &mut b)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| "reader thread panicked")??;
        }
        Ok(())
    })?;
    Ok(reads as f64 / t0.elapsed().as_secs_f64())
}

fn make_image(dir: &Path, mib: u64) -> R<u64> {
    let store: Arc<dyn SegmentStore> = Arc::new(DirStore::create(dir)?);
    Image::create(
        store.clone(),
        &CreateOptions {
            size: mib << 20,
            segment_size: 4 << 20,
            compression: Compression::None,
        },
    )?;
    let img = Image::open(store, open_opts())?;
    let mut r = Rng(7);
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..mib {
        for c in buf.chunks_mut(8) {
            c.copy_from_slice(&r.next().to_le_bytes());
        }
        img.write(i << 20, &buf)?;
    }
    img.close()?;
    Ok((mib << 20) / 4096)
}

fn iops_table(a: &Args, work: &Path) -> R<()> {
    let img_dir = work.join("img");
    let blocks = make_image(&img_dir, a.image_mib)?;
    println!(
        "\n## Random 4 KiB read IOPS, image {} MiB on DirStore, {} reads, {} threads",
        a.image_mib, a.reads, a.threads
    );
    println!("cache 2x the image (everything fits), 64 KiB blocks, S3-FIFO\n");
    println!("| backend | no cache (peer) | cold cache | warm (same run) | warm after restart | backend reads cold/warm |");
    println!("|---|---|---|---|---|---|");
    for delay_us in [0, a.latency_us] {
        let cache_path = work.join(format!("rcache-{delay_us}"));
        let _ = std::fs::remove_file(&cache_path);
        let cfg = ReadCacheConfig::new(&cache_path, 2 * (a.image_mib << 20));
        let slow = |d: u64| -> R<Arc<Slow>> {
            Ok(Arc::new(Slow {
                inner: Arc::new(DirStore::open(&img_dir)?),
                delay: Duration::from_micros(d),
                reads: AtomicU64::new(0),
            }))
        };
        // Peer: no cache.
        let peer = {
            let s = slow(delay_us)?;
            let img = Image::open(s, open_opts())?;
            let v = rand_reads(&img, blocks, a.reads, a.threads, 1)?;
            img.close()?;
            v
        };
        let s = slow(delay_us)?;
        let uuid = image_uuid(&*s)?;
        let cache = CachingStore::open(s.clone(), &cfg, uuid)?;
        let img = Image::open(cache.clone(), open_opts())?;
        let r0 = s.reads.load(Ordering::Relaxed);
        let cold = rand_reads(&img, blocks, a.reads, a.threads, 2)?;
        let r1 = s.reads.load(Ordering::Relaxed);
        // Fill the rest so the "warm" runs measure a full cache.
        let mut b = vec![0u8; 1 << 20];
        for i in 0..a.image_mib {
            img.read(i << 20, &mut b)?;
        }
        let r2 = s.reads.load(Ordering::Relaxed);
        let warm = rand_reads(&img, blocks, a.reads, a.threads, 3)?;
        let r3 = s.reads.load(Ordering::Relaxed);
        img.close()?;
        drop(img);
        drop(cache);
        let s = slow(delay_us)?;
        let cache = CachingStore::open(s.clone(), &cfg, uuid)?;
        let img = Image::open(cache.clone(), open_opts())?;
        let restart = rand_reads(&img, blocks, a.reads, a.threads, 4)?;
        let st = cache.stats();
        img.close()?;
        let label = if delay_us == 0 {
            "dir (page-cache hot)".to_string()
        } else {
            format!("dir + {delay_us} µs emulated latency")
        };
        println!(
            "| {label} | {peer:.0} | {cold:.0} | {warm:.0} | {restart:.0} (hit {:.1}%) | {}/{} |",
            100.0 * st.hits as f64 / (st.hits + st.misses).max(1) as f64,
            r1 - r0,
            r3 - r2
        );
    }
    Ok(())
}

/// Write-through: write `mib` MiB of new data in random 64 KiB pieces, then
/// read random 4 KiB blocks of what was written, with a cache half the
/// written size.
fn write_through_table(a: &Args, work: &Path) -> R<()> {
    println!("\n## Write-through of fresh segments (reads of recently written data)");
    println!("image 256 MiB; 64 MiB written as random 64 KiB writes, then {} zipf 4 KiB reads of it; cache 32 MiB\n", a.reads);
    println!("| write-through | hit rate | IOPS | cache bytes written (MiB) |");
    println!("|---|---|---|---|");
    for wt in [false, true] {
        let d = work.join(format!("wt-{wt}"));
        let store: Arc<dyn SegmentStore> = Arc::new(DirStore::create(&d)?);
        Image::create(
            store.clone(),
            &CreateOptions {
                size: 256 << 20,
                segment_size: 4 << 20,
                compression: Compression::None,
            },
        )?;
        let uuid = image_uuid(&*store)?;
        let cfg = ReadCacheConfig::new(d.join("rcache"), 32 << 20);
        let cache = CachingStore::open_with(
            store,
            &cfg,
            uuid,
            CacheOptions {
                write_through: wt,
                ..CacheOptions::default()
            },
        )?;
        let img = Image::open(cache.clone(), open_opts())?;
        let mut r = Rng(11);
        let mut buf = vec![0u8; 65536];
        let mut written = Vec::new();
        for _ in 0..1024 {
            let off = (r.next() % 4096) * 65536;
            for c in buf.chunks_mut(8) {
                c.copy_from_slice(&r.next().to_le_bytes());
            }
            img.write(off, &buf)?;
            written.push(off / 4096);
        }
        img.flush()?;
        let s0 = cache.stats();
        let z = Zipf::new(written.len() * 16, 0.9);
        let t0 = Instant::now();
        let mut b = vec![0u8; 4096];
        for _ in 0..a.reads {
            let k = z.sample(&mut r) as usize;
            let lba = written[k / 16 % written.len()] + (k % 16) as u64;
            img.read(lba * 4096, &mut b)?;
        }
        let iops = a.reads as f64 / t0.elapsed().as_secs_f64();
        let s1 = cache.stats();
        let hits = s1.hits - s0.hits;
        let misses = s1.misses - s0.misses;
        let filled = (s1.entries + s1.evictions) * 65536;
        img.close()?;
        println!(
            "| {wt} | {:.1}% | {iops:.0} | {} |",
            100.0 * hits as f64 / (hits + misses).max(1) as f64,
            filled >> 20
        );
    }
    Ok(())
}

fn main() -> R<()> {
    let a = parse_args()?;
    let work = a
        .dir
        .join(format!("lsvd-rcache-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    policy_table();
    let r = iops_table(&a, &work).and_then(|_| write_through_table(&a, &work));
    let _ = std::fs::remove_dir_all(&work);
    r
}
