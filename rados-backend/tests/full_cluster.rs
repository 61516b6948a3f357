//! A full cluster answers `NoSpace` naming the object (not a hang), and
//! writes work again once it has room. The OSD is made "full" by lowering
//! the cluster's full ratio (`ceph osd set-full-ratio`): the OSD reports
//! itself full, the mon flags the pool full, and our writes (sent with
//! `FULL_TRY`) get `ENOSPC`. Needs no mgr.
//!
//! Changes cluster-wide settings: keep it in its own test binary (`cargo
//! test` runs binaries one at a time).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use log_engine::store::SegmentStore;
use log_engine::Error;
use lsvd_rados::{ImageLocation, RadosOptions, RadosStore};

fn ceph(conf: &str, args: &[&str]) -> String {
    let out = Command::new("ceph")
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .expect("run ceph");
    assert!(
        out.status.success(),
        "ceph {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pool_full(conf: &str) -> bool {
    ceph(conf, &["osd", "dump"]).lines().any(|l| {
        l.starts_with("pool ") && l.contains(&format!("'{}'", pool())) && l.contains(",full")
    })
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh runs it"]
fn full_cluster_answers_no_space_then_recovers() {
    let Some(conf) = cluster("full_cluster") else {
        return;
    };
    let name = unique("full");
    let s = RadosStore::create_at(
        ImageLocation {
            conf_path: Some(conf.clone()),
            pool: pool(),
            namespace: String::new(),
            name: name.clone(),
        },
        RadosOptions {
            op_timeout_secs: 5,
            retry_budget: Duration::from_secs(10),
            ..RadosOptions::default()
        },
    )
    .unwrap();
    // Some data so the OSD's usage is above the tiny ratio below.
    let seg = vec![7u8; 4 << 20];
    for seq in 1..=4 {
        s.write_segment(seq, &seg).unwrap();
    }
    ceph(&conf, &["osd", "set-nearfull-ratio", "0.00001"]);
    ceph(&conf, &["osd", "set-backfillfull-ratio", "0.00002"]);
    ceph(&conf, &["osd", "set-full-ratio", "0.00003"]);
    wait_for("the pool to be flagged full", || pool_full(&conf));

    let t0 = Instant::now();
    let r = s.write_segment(5, &seg);
    let took = t0.elapsed();
    // Restore before asserting, so a failure leaves a usable cluster.
    ceph(&conf, &["osd", "set-full-ratio", "0.95"]);
    ceph(&conf, &["osd", "set-backfillfull-ratio", "0.9"]);
    ceph(&conf, &["osd", "set-nearfull-ratio", "0.85"]);
    match r {
        Err(Error::NoSpace(m)) => assert!(m.contains(&format!("{name}.0000000000000005")), "{m}"),
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "NoSpace took {took:?}");
    eprintln!("full cluster: NoSpace after {took:?}");

    wait_for("the pool to have room again", || !pool_full(&conf));
    s.write_segment(5, &seg).unwrap();
    let mut buf = vec![0u8; 4096];
    s.read_segment(5, 0, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 7));
    s.destroy().unwrap();
}
