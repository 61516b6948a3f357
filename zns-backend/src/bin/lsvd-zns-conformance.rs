//! `lsvd-zns-conformance DEV [--zones A-B] [--seg-len BYTES]`: run log-engine's
//! zoned-device and segment-store conformance suites on a real host-managed
//! zoned block device (or a zone range of it). DESTROYS the data in those
//! zones. Prints `PASS`/`FAIL` per suite with its figures; exits 1 when any
//! suite fails.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use log_engine::zoned::conformance::{run_segment_store_conformance, run_zoned_device_conformance};
use log_engine::zoned::{ZoneCond, ZoneType, ZonedDevice, ZonedStore};
use log_engine::SegmentStore;
use lsvd_zns::spec::{open_range, parse_zone_range, ZnsSpec};
use lsvd_zns::{BlockZonedDevice, ZoneRange};

type Range = ZoneRange<BlockZonedDevice>;

/// Open the range and reset every sequential zone that is not empty.
fn fresh(spec: &ZnsSpec) -> log_engine::Result<Range> {
    let r = open_range(spec)?;
    for z in r.report_zones()? {
        if z.zone_type == ZoneType::SequentialRequired && z.cond != ZoneCond::Empty {
            r.reset(z.index)?;
        }
    }
    Ok(r)
}

/// What the suite's power-cycle part cannot do on a real drive (closing the
/// device does not power it off): data and write pointers survive closing
/// and reopening the device.
fn reopen_check(spec: &ZnsSpec) -> anyhow::Result<()> {
    let r = fresh(spec)?;
    let g = r.geometry();
    let z = g.nr_conventional;
    let data: Vec<u8> = (0..3 * g.write_granularity as usize)
        .map(|i| (i / 4096) as u8 ^ 0x5a)
        .collect();
    r.write(z, 0, &data)?;
    r.write(z + 1, 0, &data)?;
    r.finish(z + 1)?;
    drop(r);
    let r = open_range(spec)?;
    let rep = r.report_zones()?;
    let (a, b) = (rep[z as usize], rep[z as usize + 1]);
    if a.wp != data.len() as u64 || !a.cond.is_active() {
        bail!(
            "after reopen zone {z}: {a:?}, expected wp {} and active",
            data.len()
        );
    }
    if b.cond != ZoneCond::Full || b.wp != g.zone_capacity {
        bail!("after reopen zone {}: {b:?}, expected full", z + 1);
    }
    let mut back = vec![0u8; data.len()];
    r.read(z, 0, &mut back)?;
    if back != data {
        bail!("data of zone {z} differs after reopen");
    }
    // Unaligned read inside the written range.
    let mut part = vec![0u8; 5000];
    r.read(z, 100, &mut part)?;
    if part[..] != data[100..5100] {
        bail!("unaligned read differs");
    }
    r.write(z, data.len() as u64, &data[..4096])?;
    r.reset(z)?;
    r.reset(z + 1)?;
    Ok(())
}

/// Figures: the cost of the write-cache flush that makes each write
/// durable, next to the data write itself (256 KiB writes into one zone).
fn flush_figures(spec: &ZnsSpec) -> anyhow::Result<String> {
    let r = fresh(spec)?;
    let g = r.geometry();
    let z = g.nr_conventional;
    let w = 256usize << 10;
    let n = (g.zone_capacity / w as u64).min(32);
    let data = vec![0xa5u8; w];
    let before = r.device().io_stats();
    for i in 0..n {
        r.write(z, i * w as u64, &data)?;
    }
    let after = r.device().io_stats();
    r.reset(z)?;
    let k = (after.writes - before.writes).max(1) as f64;
    Ok(format!(
        "{k} durable writes of {} KiB: data {:.2} ms/write, flush {:.2} ms/write (queue/write_cache: {})",
        w >> 10,
        (after.data_secs - before.data_secs) * 1e3 / k,
        (after.flush_secs - before.flush_secs) * 1e3 / k,
        r.device()
            .sysfs()
            .write_cache
            .as_deref()
            .unwrap_or("unknown")
    ))
}

fn run() -> anyhow::Result<bool> {
    let mut args = std::env::args().skip(1);
    let mut dev: Option<PathBuf> = None;
    let mut zones = None;
    let mut seg_len = 512usize << 10;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--zones" => {
                let v = args.next().context("--zones needs A-B")?;
                zones = Some(parse_zone_range(&v).map_err(anyhow::Error::msg)?);
            }
            "--seg-len" => {
                seg_len = args
                    .next()
                    .context("--seg-len needs a byte count")?
                    .parse()
                    .context("--seg-len")?;
            }
            "-h" | "--help" => {
                println!("usage: lsvd-zns-conformance DEV [--zones A-B] [--seg-len BYTES]");
                return Ok(true);
            }
            _ if dev.is_none() && !a.starts_with('-') => dev = Some(PathBuf::from(a)),
            _ => bail!("unexpected argument {a:?}; usage: lsvd-zns-conformance DEV [--zones A-B]"),
        }
    }
    let spec = ZnsSpec {
        path: dev.context("usage: lsvd-zns-conformance DEV [--zones A-B]")?,
        zones,
    };
    let g = open_range(&spec)?.geometry();
    let what = spec.to_spec();
    println!(
        "{what}: {} zones ({} conventional), zone size {} MiB, capacity {} MiB, max open {}, max active {}, write granularity {}",
        g.nr_zones,
        g.nr_conventional,
        g.zone_size >> 20,
        g.zone_capacity >> 20,
        g.max_open,
        g.max_active,
        g.write_granularity
    );
    let mut ok = true;
    let mut report = |name: &str, t: Instant, r: anyhow::Result<()>| {
        let secs = t.elapsed().as_secs_f64();
        match r {
            Ok(()) => println!("PASS {name} on {what} ({secs:.1} s)"),
            Err(e) => {
                println!("FAIL {name} on {what} ({secs:.1} s): {e:#}");
                ok = false;
            }
        }
    };

    let t = Instant::now();
    let mut make = || fresh(&spec).unwrap_or_else(|e| panic!("preparing {what}: {e}"));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_zoned_device_conformance(&mut make, None)
    }));
    let r = match r {
        Ok(r) => r.map_err(anyhow::Error::from),
        Err(_) => Err(anyhow::anyhow!("panicked")),
    };
    report("zoned-device", t, r);

    let t = Instant::now();
    report("reopen", t, reopen_check(&spec));

    let t = Instant::now();
    report(
        "durable-write figures",
        t,
        flush_figures(&spec).map(|line| println!("figures: {line}")),
    );

    let t = Instant::now();
    let r = (|| -> anyhow::Result<()> {
        let mut err = None;
        let mut make = || -> Arc<dyn SegmentStore> {
            match fresh(&spec).and_then(ZonedStore::format) {
                Ok(s) => Arc::new(s),
                Err(e) => panic!("format {what}: {e}"),
            }
        };
        let mut reopen = |s: Arc<dyn SegmentStore>| -> Arc<dyn SegmentStore> {
            drop(s);
            match open_range(&spec).and_then(ZonedStore::open) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    err = Some(format!("reopen {what}: {e}"));
                    panic!("reopen {what}: {e}")
                }
            }
        };
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_segment_store_conformance(&mut make, Some(&mut reopen), seg_len)
        }));
        match res {
            Ok(r) => r?,
            Err(_) => bail!("panicked: {}", err.unwrap_or_default()),
        }
        // Leave the zones empty, and the conventional zones zeroed: a store
        // created later on them must not find this run's metadata records
        // (ZonedStore's destroy only invalidates the first block).
        let s = open_range(&spec).and_then(ZonedStore::open)?;
        s.destroy()?;
        drop(s);
        let r = open_range(&spec)?;
        let g = r.geometry();
        let zero = vec![0u8; 1 << 20];
        for z in 0..g.nr_conventional {
            let mut off = 0;
            while off < g.zone_size {
                let n = (g.zone_size - off).min(zero.len() as u64);
                r.write(z, off, &zero[..n as usize])?;
                off += n;
            }
        }
        Ok(())
    })();
    report(
        &format!("segment-store (segments of {seg_len} bytes)"),
        t,
        r,
    );
    Ok(ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("lsvd-zns-conformance: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
