//! lsvd-zns-bench: the zoned-store measures of issue #9 on one store spec
//! (a real device `zns:/dev/X`, or an emulated `zoned-file:` for the peer).
//! `tests/vm/guest/zns-bench.sh` runs it in the guest next to
//! `fio --zonemode=zbd` on the raw device and prints the ratios.
//!
//! Measures, each on a fresh image (the device is erased first):
//! - 4 KiB random writes over the whole image, flush at the end: MiB/s;
//! - GC write amplification (store bytes / client bytes) at 80 % fill: 80 %
//!   of the image's blocks written in 1 MiB writes, then 3x that in random
//!   4 KiB overwrites with the background cleaner on (greedy and
//!   cost-benefit, threshold 70 %).
//!
//! Usage: `lsvd-zns-bench --spec SPEC [--size-mib N (128)] [--gc-mib N (64)]`
//! Prints `key value` lines (machine-read by the script) and a summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use log_engine::{Compression, CreateOptions, GcConfig, GcPolicy, Image, OpenOptions};
use lsvd_ctl::stores::{create_store_force, open_store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn opts(gc: bool, policy: GcPolicy) -> OpenOptions {
    OpenOptions {
        upload_threads: 2,
        max_pending_bytes: 64 << 20,
        checkpoint_every: 64,
        gc: GcConfig {
            policy,
            enabled: gc,
            threshold_pct: 70,
            interval: Duration::from_millis(10),
        },
        store_timeout: Duration::from_secs(120),
        read_only: false,
    }
}

fn fresh(spec: &str, size: u64, gc: bool, policy: GcPolicy) -> anyhow::Result<Image> {
    let zoned_file = spec.starts_with("zoned-file:");
    if zoned_file {
        // The emulated file is recreated from its spec.
        if let Some(path) = spec
            .strip_prefix("zoned-file:")
            .and_then(|r| r.split(',').next())
        {
            let _ = std::fs::remove_file(path);
        }
    }
    let store = create_store_force(spec, !zoned_file).with_context(|| format!("create {spec}"))?;
    let info = Image::create(
        store,
        &CreateOptions {
            size,
            segment_size: 8 << 20,
            compression: Compression::None,
        },
    )
    .with_context(|| format!("create image on {spec}"))?;
    println!("segment_size {}", info.segment_size);
    // Reopen with the cleaner options (per open); the spec without the
    // geometry parameters names the same emulated file.
    let open_spec = if zoned_file {
        spec.split(',').next().unwrap_or(spec).to_string()
    } else {
        spec.to_string()
    };
    let store = open_store(&open_spec).with_context(|| format!("open {open_spec}"))?;
    Ok(Image::open(store, opts(gc, policy))?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(spec) = arg("--spec") else {
        bail!("usage: lsvd-zns-bench --spec SPEC [--size-mib N] [--gc-mib N]");
    };
    let size = arg("--size-mib").map_or(Ok(128), |s| s.parse::<u64>())? << 20;
    let gc_size = arg("--gc-mib").map_or(Ok(64), |s| s.parse::<u64>())? << 20;

    // 4 KiB random writes over the whole image.
    let img = fresh(&spec, size, false, GcPolicy::Greedy)?;
    let blocks = size / 4096;
    let mut rng = StdRng::seed_from_u64(1);
    let buf = vec![0x5au8; 4096];
    let t = Instant::now();
    for _ in 0..blocks {
        img.write(rng.gen_range(0..blocks) * 4096, &buf)?;
    }
    img.flush()?;
    let secs = t.elapsed().as_secs_f64();
    img.close()?;
    // A zoned device is held by one store at a time in a process.
    drop(img);
    let mib_s = size as f64 / secs / (1 << 20) as f64;
    println!("randwrite4k_mib_s {mib_s:.1}");
    println!("randwrite4k_iops {:.0}", blocks as f64 / secs);

    for policy in [GcPolicy::Greedy, GcPolicy::CostBenefit] {
        let img = Arc::new(fresh(&spec, gc_size, true, policy)?);
        let fill = gc_size / 4096 * 8 / 10;
        let big = vec![0x11u8; 1 << 20];
        for i in 0..fill / 256 {
            img.write(i << 20, &big)?;
        }
        img.flush()?;
        let before = img.stats();
        let one = vec![0x22u8; 4096];
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..fill * 3 {
            img.write(rng.gen_range(0..fill) * 4096, &one)?;
        }
        img.flush()?;
        let after = img.stats();
        let client = (after.client_bytes_written - before.client_bytes_written) as f64;
        let store = (after.store_bytes_written - before.store_bytes_written) as f64;
        println!("wa80_{policy:?} {:.2}", store / client);
        println!(
            "gc_copied_mib_{policy:?} {}",
            (after.gc_bytes_copied - before.gc_bytes_copied) >> 20
        );
        Arc::try_unwrap(img)
            .map_err(|_| anyhow::anyhow!("image still shared"))?
            .close()?;
    }
    Ok(())
}
