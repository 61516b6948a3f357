//! Probe: 4 KiB random writes into an image on a directory store, for
//! profiling the write path (`perf record` this).
//! `cargo run --release -p log-engine --example rand_write_probe -- DIR MIB`
use std::time::Instant;

use log_engine::store::spec::create_store;
use log_engine::{CreateOptions, Image, OpenOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "/var/tmp/lsvd-probe".into());
    let mib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let _ = std::fs::remove_dir_all(&dir);
    let store = create_store(&format!("dir:{dir}")).expect("store");
    Image::create(
        store.clone(),
        &CreateOptions {
            size: mib << 20,
            ..Default::default()
        },
    )
    .expect("create");
    let img = Image::open(store, OpenOptions::default()).expect("open");
    let buf = vec![7u8; 4096];
    let blocks = (mib << 20) / 4096;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let t = Instant::now();
    for _ in 0..blocks {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        img.write((x % blocks) * 4096, &buf).expect("write");
    }
    let w = t.elapsed();
    img.flush().expect("flush");
    let f = t.elapsed();
    println!(
        "{blocks} x 4 KiB: writes {:.3} s ({:.0} IOPS in memory), flushed at {:.3} s -> {:.0} IOPS",
        w.as_secs_f64(),
        blocks as f64 / w.as_secs_f64(),
        f.as_secs_f64(),
        blocks as f64 / f.as_secs_f64()
    );
    img.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}
