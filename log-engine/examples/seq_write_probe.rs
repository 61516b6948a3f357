//! Probe: time the phases of a sequential write (in-memory batching vs the
//! flush that waits for uploads) on a directory store.
//! `cargo run --release -p log-engine --example seq_write_probe -- DIR MIB`
use std::sync::Arc;
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
    let img = Arc::new(Image::open(store, OpenOptions::default()).expect("open"));
    let buf = vec![7u8; 1 << 20];
    let t = Instant::now();
    for i in 0..mib {
        img.write(i << 20, &buf).expect("write");
    }
    let w = t.elapsed();
    img.flush().expect("flush");
    let f = t.elapsed();
    println!(
        "{mib} MiB: writes {:.3} s, flush done at {:.3} s -> {:.0} MiB/s",
        w.as_secs_f64(),
        f.as_secs_f64(),
        mib as f64 / f.as_secs_f64()
    );
    img.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}
