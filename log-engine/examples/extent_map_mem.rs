//! Memory and speed figures of the extent map, measured with a counting
//! global allocator (live heap bytes before/after building each map).
//!
//! Run: `cargo run --release -p log-engine --example extent_map_mem [n]`
//! (default n = 1,000,000 extents).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use log_engine::extent_map::{ExtentMap, MapExtent, Target};
use rand::{Rng, SeedableRng};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn report(name: &str, extents: usize, measured: usize, computed: Option<usize>) {
    let per = measured as f64 / extents.max(1) as f64;
    match computed {
        Some(c) => println!(
            "{name:<44} {extents:>9} extents  {measured:>11} B measured ({per:5.2} B/extent)  heap_bytes() {c}"
        ),
        None => println!("{name:<44} {extents:>9} extents  {measured:>11} B measured ({per:5.2} B/extent)"),
    }
}

fn main() -> anyhow_free::Result {
    let n: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| format!("bad count {s:?}: {e}"))?,
        None => 1_000_000,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let writes: Vec<(u64, Target)> = (0..n)
        .map(|_| {
            (
                rng.gen_range(0..1u64 << 32),
                Target {
                    seq: rng.gen_range(0..1 << 20),
                    off: rng.gen_range(0..2048),
                },
            )
        })
        .collect();
    let probes: Vec<u64> = (0..n).map(|_| rng.gen_range(0..1u64 << 32)).collect();
    let mut removed: Vec<MapExtent> = Vec::with_capacity(64);

    // 1. Random single-block writes.
    let before = live();
    let t0 = Instant::now();
    let mut m = ExtentMap::new();
    for &(lba, tg) in &writes {
        removed.clear();
        m.insert(lba, 1, tg, &mut removed)?;
    }
    let ins = t0.elapsed();
    report(
        "random 4 KiB extents (insert)",
        m.len(),
        live() - before,
        Some(m.heap_bytes()),
    );
    println!(
        "  {n} random inserts: {:.3} s ({:.0} ns/insert)",
        ins.as_secs_f64(),
        ins.as_nanos() as f64 / n as f64
    );

    let mut out = Vec::with_capacity(64);
    let mut mapped = 0u64;
    let t0 = Instant::now();
    for &lba in &probes {
        m.lookup_into(lba, 1, &mut out);
        mapped += out.iter().filter(|p| p.target.is_some()).count() as u64;
    }
    let lk = t0.elapsed();
    let t0 = Instant::now();
    for &(lba, _) in &writes {
        m.lookup_into(lba, 1, &mut out);
        mapped += out.iter().filter(|p| p.target.is_some()).count() as u64;
    }
    let lk_hit = t0.elapsed();
    let t0 = Instant::now();
    for &lba in &probes {
        m.lookup_into(lba, 4096, &mut out);
        mapped += out.len() as u64;
    }
    let lk_wide = t0.elapsed();
    println!(
        "  {n} random lookups len 1: {:.3} s ({:.0} ns); at mapped lbas: {:.0} ns; len 4096 (16 MiB): {:.0} ns  [checksum {mapped}]",
        lk.as_secs_f64(),
        lk.as_nanos() as f64 / n as f64,
        lk_hit.as_nanos() as f64 / n as f64,
        lk_wide.as_nanos() as f64 / n as f64
    );

    // 2. Clone and bulk load of the same map.
    let before = live();
    let c = m.clone();
    report(
        "  clone() of it",
        c.len(),
        live() - before,
        Some(c.heap_bytes()),
    );
    drop(c);
    let v: Vec<MapExtent> = m.iter().collect();
    let before = live();
    let t0 = Instant::now();
    let b = ExtentMap::from_sorted(v.iter().copied())?;
    let fs = t0.elapsed();
    report(
        "  from_sorted() of it",
        b.len(),
        live() - before,
        Some(b.heap_bytes()),
    );
    println!("  from_sorted: {:.3} s", fs.as_secs_f64());
    drop(b);
    drop(v);

    // 3. Remove every other extent.
    let lbas: Vec<u64> = m.iter().map(|e| e.lba).step_by(2).collect();
    let before_rm = live();
    let heap_before = m.heap_bytes();
    for &lba in &lbas {
        removed.clear();
        m.remove(lba, 1, &mut removed);
    }
    let now = heap_before as isize + (live() as isize - before_rm as isize);
    report(
        "  after removing half",
        m.len(),
        now as usize,
        Some(m.heap_bytes()),
    );
    drop(m);

    // 4. BTreeMap baseline with the same keys.
    let before = live();
    let mut bt: BTreeMap<u64, (u32, u32, u64)> = BTreeMap::new();
    for &(lba, tg) in &writes {
        bt.insert(lba, (1, tg.off, tg.seq));
    }
    report(
        "BTreeMap<u64,(u32,u32,u64)> baseline",
        bt.len(),
        live() - before,
        None,
    );
    drop(bt);

    // 5. Sequential 4 KiB writes into 8 MiB segments: merged per segment.
    let before = live();
    let mut s = ExtentMap::new();
    for i in 0..n as u64 {
        removed.clear();
        s.insert(
            i,
            1,
            Target {
                seq: i / 2048,
                off: (i % 2048) as u32,
            },
            &mut removed,
        )?;
    }
    report(
        "sequential 4 KiB writes, merged",
        s.len(),
        live() - before,
        Some(s.heap_bytes()),
    );
    drop(s);

    // 6. Sequential writes from two interleaved streams: no merging.
    let before = live();
    let t0 = Instant::now();
    let mut s = ExtentMap::new();
    for i in 0..n as u64 {
        removed.clear();
        s.insert(
            i,
            1,
            Target {
                seq: i % 2,
                off: ((i / 2) % 60000) as u32,
            },
            &mut removed,
        )?;
    }
    let el = t0.elapsed();
    report(
        "sequential, 2 interleaved streams (appends)",
        s.len(),
        live() - before,
        Some(s.heap_bytes()),
    );
    println!("  {n} appends: {:.3} s", el.as_secs_f64());
    Ok(())
}

/// Keep the example free of extra dependencies: errors are boxed.
mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
