//! kill -9 of the (only) OSD while the engine writes, then a restart: no
//! flushed write is lost, and I/O resumes by itself (timed-out ops are
//! re-sent on a rebuilt connection). Needs a bluestore cluster (memstore
//! loses everything on restart); tests/ceph/run.sh starts one.
//!
//! This test stops the cluster's OSD: keep it in its own test binary so no
//! other test runs meanwhile (`cargo test` runs binaries one at a time).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use log_engine::{Compression, CreateOptions, GcConfig, Image, OpenOptions, SegmentStore};
use lsvd_rados::RadosStore;
use lsvd_tests::{blocks, read_all, Model};
use rand::Rng;

const BLOCKS: u64 = 1024;

fn osd_pid(dir: &Path, conf: &str) -> i32 {
    let pid: i32 = std::fs::read_to_string(dir.join("run/osd.0.pid"))
        .expect("read osd.0.pid")
        .trim()
        .parse()
        .expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("osd cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains(conf),
        "pid {pid} is not our OSD"
    );
    pid
}

fn opts() -> OpenOptions {
    OpenOptions {
        upload_threads: 4,
        max_pending_bytes: 16 << 20,
        checkpoint_every: 8,
        gc: GcConfig {
            enabled: true,
            ..GcConfig::default()
        },
        store_timeout: Duration::from_secs(120),
        read_only: false,
    }
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh runs it"]
fn osd_kill9_and_restart_loses_no_flushed_write() {
    let Some(conf) = cluster("osd_kill9_and_restart") else {
        return;
    };
    let text = std::fs::read_to_string(&conf).unwrap();
    if !text.contains("osd objectstore = bluestore") {
        assert!(
            std::env::var("LSVD_REQUIRE_CEPH").as_deref() != Ok("1"),
            "osd restart test needs a bluestore cluster (ceph-up.sh DIR bluestore)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: cluster is not bluestore (osd restart test)"
        );
        return;
    }
    let dir = Path::new(&conf).parent().unwrap().to_path_buf();
    // Short librados timeout so the kill makes ops time out (and the store
    // rebuild its connection) rather than just wait.
    let spec = format!(
        "rados:{}/{}?conf={conf}&timeout=3&retry=20",
        pool(),
        unique("restart")
    );
    let parsed = lsvd_rados::parse_spec(&spec).unwrap();
    let rados = Arc::new(RadosStore::create_at(parsed.loc.clone(), parsed.options()).unwrap());
    let store: Arc<dyn SegmentStore> = rados.clone();
    Image::create(
        store.clone(),
        &CreateOptions {
            size: BLOCKS * 4096,
            segment_size: 256 << 10,
            compression: Compression::None,
        },
    )
    .unwrap();
    let img = Arc::new(Image::open(store, opts()).unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (img, stop, flushes) = (img.clone(), stop.clone(), flushes.clone());
        std::thread::spawn(move || {
            let mut rng = rand::thread_rng();
            let mut model = Model::new(BLOCKS);
            let mut tag = 0u64;
            let mut flush_errors = 0u32;
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..16 {
                    tag += 1;
                    let n = rng.gen_range(1..=8u64);
                    let lba = rng.gen_range(0..BLOCKS - n);
                    img.write(lba * 4096, &blocks(tag, lba, n)).unwrap();
                    model.write(lba, n, tag);
                }
                match img.flush() {
                    Ok(()) => {
                        flushes.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        flush_errors += 1;
                        eprintln!("flush failed (cluster down?): {e}");
                    }
                }
            }
            // Final flush must succeed once the cluster is back.
            img.flush().unwrap();
            (model, flush_errors)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let before_kill = flushes.load(Ordering::SeqCst);
    assert!(before_kill > 0, "no flush completed before the kill");
    let pid = osd_pid(&dir, &conf);
    // SAFETY: plain kill(2) of the OSD pid we verified above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    eprintln!("killed osd pid {pid} after {before_kill} flushes");
    std::thread::sleep(Duration::from_secs(6));
    let at_restart = flushes.load(Ordering::SeqCst);
    let st = Command::new("ceph-osd")
        .args(["-c", &conf, "-i", "0"])
        .status()
        .expect("restart ceph-osd");
    assert!(st.success(), "ceph-osd restart failed");
    let t_restart = Instant::now();
    // I/O resumes: more flushes complete after the restart.
    while flushes.load(Ordering::SeqCst) < at_restart + 3 {
        assert!(
            t_restart.elapsed() < Duration::from_secs(90),
            "no I/O progress 90 s after the OSD restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "first flushes after restart within {:?}",
        t_restart.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    let (model, flush_errors) = writer.join().unwrap();
    eprintln!(
        "flush errors while down: {flush_errors}; store reconnects: {}",
        rados.reconnects()
    );
    assert!(
        rados.reconnects() > 0,
        "ops should have timed out (timeout=3) and been re-sent on a new connection"
    );

    // Crash (drop without close) after the final flush, then reopen: every
    // flushed write is there.
    assert!(Arc::try_unwrap(img).is_ok(), "sole owner"); // dropped: a crash
    let img = Image::open(lsvd_rados::open_spec(&spec).unwrap(), opts()).unwrap();
    let got = read_all(&img, BLOCKS);
    for (lba, (g, want)) in got.iter().zip(&model.0).enumerate() {
        assert_eq!(
            *g,
            Some(*want),
            "block {lba} after kill -9 + restart + crash"
        );
    }
    img.close().unwrap();
    lsvd_rados::open_spec(&spec).unwrap().destroy().unwrap();
}
