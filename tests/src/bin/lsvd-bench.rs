//! lsvd-bench: the log engine's benchmark (issue #2).
//!
//! On the filesystem holding `--dir` (default: a temp dir under /var/tmp):
//! - the peer: raw sequential write bandwidth of that filesystem (1 MiB
//!   writes to a plain file, fsync at the end), measured in the same run;
//! - lsvd 4 KiB random writes (flush at the end), 4 KiB random reads, 1 MiB
//!   sequential writes and reads, on the directory store and the emulated
//!   zoned file;
//! - GC write amplification with random 4 KiB overwrites at 80 % fill.
//!
//! Prints a table with each figure's ratio to the raw sequential bandwidth.
//! Usage: `cargo run --release -p lsvd-tests --bin lsvd-bench -- [--size-mib N] [--dir PATH]`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log_engine::{Compression, CreateOptions, GcConfig, GcPolicy, Image, OpenOptions};
use lsvd_tests::{spec, StoreKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Row {
    what: String,
    value: String,
    mib_s: f64,
}

fn raw_seq_write(dir: &Path, bytes: u64) -> f64 {
    let p = dir.join("raw.bin");
    let buf = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    let mut f = std::fs::File::create(&p).unwrap();
    for _ in 0..bytes >> 20 {
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    let s = t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&p).unwrap();
    bytes as f64 / s / (1 << 20) as f64
}

fn opts(gc: bool, threshold: u8) -> OpenOptions {
    OpenOptions {
        upload_threads: 4,
        max_pending_bytes: 128 << 20,
        checkpoint_every: 64,
        gc: GcConfig {
            policy: Default::default(),
            enabled: gc,
            threshold_pct: threshold,
            interval: Duration::from_millis(10),
        },
        store_timeout: Duration::from_secs(120),
        read_only: false,
    }
}

fn new_image(
    kind: StoreKind,
    dir: &Path,
    size: u64,
    gc: bool,
    threshold: u8,
) -> (Arc<Image>, PathBuf) {
    let d = dir.join(format!("{kind:?}-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&d).unwrap();
    let zones = (size * 3 / (64 << 20)).max(16);
    let s = match kind {
        StoreKind::Dir => spec(kind, &d),
        StoreKind::ZonedFile => format!(
            "zoned-file:{},zone-size=64M,zones={zones},max-open=8,max-active=12",
            d.join("zoned.img").display()
        ),
        StoreKind::ZnsDevice => lsvd_tests::zns_spec(),
    };
    let store = log_engine::store::spec::create_store(&s).unwrap();
    Image::create(
        store.clone(),
        &CreateOptions {
            size,
            segment_size: 8 << 20,
            compression: Compression::None,
        },
    )
    .unwrap();
    (
        Arc::new(Image::open(store, opts(gc, threshold)).unwrap()),
        d,
    )
}

fn new_image_gc(kind: StoreKind, dir: &Path, size: u64, policy: GcPolicy) -> (Arc<Image>, PathBuf) {
    let (img, d) = new_image(kind, dir, size, true, 70);
    // Reopen with the policy (options are per open).
    img.close().unwrap();
    drop(img);
    let mut o = opts(true, 70);
    o.gc.policy = policy;
    let store = log_engine::store::spec::open_store(&match kind {
        StoreKind::Dir => spec(kind, &d),
        StoreKind::ZonedFile => format!("zoned-file:{}", d.join("zoned.img").display()),
        StoreKind::ZnsDevice => lsvd_tests::zns_spec(),
    })
    .unwrap();
    (Arc::new(Image::open(store, o).unwrap()), d)
}

fn rand_writes(img: &Image, size: u64, n: u64, seed: u64) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let buf = vec![0x5au8; 4096];
    let blocks = size / 4096;
    let t = Instant::now();
    for _ in 0..n {
        img.write(rng.gen_range(0..blocks) * 4096, &buf).unwrap();
    }
    img.flush().unwrap();
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let size_mib: u64 = arg("--size-mib")
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let base = arg("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let size = size_mib << 20;
    let mut rows: Vec<Row> = Vec::new();

    let raw = raw_seq_write(tmp.path(), size);
    rows.push(Row {
        what: "raw fs sequential write (1 MiB, fsync)".into(),
        value: format!("{raw:.0} MiB/s"),
        mib_s: raw,
    });

    for kind in [StoreKind::Dir, StoreKind::ZonedFile] {
        let (img, d) = new_image(kind, tmp.path(), size, false, 70);
        // 4 KiB random writes: as many as the image size.
        let n = size / 4096;
        let iops = rand_writes(&img, size, n, 1);
        rows.push(Row {
            what: format!("{kind:?}: 4 KiB random write"),
            value: format!("{iops:.0} IOPS"),
            mib_s: iops * 4096.0 / (1 << 20) as f64,
        });
        // Close and reopen so reads come from the store, not memory.
        img.close().unwrap();
        drop(img);
        let store = log_engine::store::spec::open_store(&match kind {
            StoreKind::Dir => spec(kind, &d),
            StoreKind::ZonedFile => format!("zoned-file:{}", d.join("zoned.img").display()),
            StoreKind::ZnsDevice => lsvd_tests::zns_spec(),
        })
        .unwrap();
        let img = Image::open(store, opts(false, 70)).unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let mut buf = vec![0u8; 4096];
        let nr = (size / 4096).min(100_000);
        let t = Instant::now();
        for _ in 0..nr {
            img.read(rng.gen_range(0..size / 4096) * 4096, &mut buf)
                .unwrap();
        }
        let riops = nr as f64 / t.elapsed().as_secs_f64();
        rows.push(Row {
            what: format!("{kind:?}: 4 KiB random read (page cache warm)"),
            value: format!("{riops:.0} IOPS"),
            mib_s: riops * 4096.0 / (1 << 20) as f64,
        });
        img.close().unwrap();
        drop(img);

        let (img, _d) = new_image(kind, tmp.path(), size, false, 70);
        let buf = vec![0x33u8; 1 << 20];
        let t = Instant::now();
        for i in 0..size >> 20 {
            img.write(i << 20, &buf).unwrap();
        }
        img.flush().unwrap();
        let w = size as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64;
        rows.push(Row {
            what: format!("{kind:?}: 1 MiB sequential write"),
            value: format!("{w:.0} MiB/s"),
            mib_s: w,
        });
        let mut rbuf = vec![0u8; 1 << 20];
        let t = Instant::now();
        for i in 0..size >> 20 {
            img.read(i << 20, &mut rbuf).unwrap();
        }
        let r = size as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64;
        rows.push(Row {
            what: format!("{kind:?}: 1 MiB sequential read"),
            value: format!("{r:.0} MiB/s"),
            mib_s: r,
        });
        img.close().unwrap();
    }

    // GC write amplification at 80 % fill: both policies, uniform and
    // skewed (80 % of overwrites hit 20 % of the data) overwrites.
    let mut wa_rows = Vec::new();
    for kind in [StoreKind::Dir, StoreKind::ZonedFile] {
        for policy in [GcPolicy::Greedy, GcPolicy::CostBenefit] {
            for skewed in [false, true] {
                let gsize = (size / 2).max(64 << 20);
                let (img, _d) = new_image_gc(kind, tmp.path(), gsize, policy);
                let fill = gsize / 4096 * 8 / 10;
                let buf = vec![0x11u8; 1 << 20];
                for i in 0..fill / 256 {
                    img.write(i << 20, &buf).unwrap();
                }
                img.flush().unwrap();
                let before = img.stats();
                let mut rng = StdRng::seed_from_u64(3);
                let one = vec![0x22u8; 4096];
                for _ in 0..fill * 3 {
                    let lba = if skewed && rng.gen_bool(0.8) {
                        rng.gen_range(0..fill / 5)
                    } else {
                        rng.gen_range(0..fill)
                    };
                    img.write(lba * 4096, &one).unwrap();
                }
                img.flush().unwrap();
                let after = img.stats();
                let client = (after.client_bytes_written - before.client_bytes_written) as f64;
                let store = (after.store_bytes_written - before.store_bytes_written) as f64;
                wa_rows.push(format!(
                    "{:<10} {:<12} {:<8} {:>6.2} {:>10}",
                    format!("{kind:?}"),
                    format!("{policy:?}"),
                    if skewed { "80/20" } else { "uniform" },
                    store / client,
                    (after.gc_bytes_copied - before.gc_bytes_copied) >> 20
                ));
                img.close().unwrap();
            }
        }
    }

    println!(
        "\nlsvd log-engine benchmark, image {size_mib} MiB, segments 8 MiB, on {}",
        base.display()
    );
    println!("{:<48} {:>14} {:>10}", "measure", "value", "vs raw seq");
    for r in &rows {
        println!("{:<48} {:>14} {:>9.2}x", r.what, r.value, r.mib_s / raw);
    }
    println!("\nGC write amplification (store bytes / client bytes) at 80% fill, 3x overwrite with 4 KiB writes, threshold 70%");
    println!(
        "{:<10} {:<12} {:<8} {:>6} {:>10}",
        "store", "policy", "writes", "WA", "copied MiB"
    );
    for w in wa_rows {
        println!("{w}");
    }
}
