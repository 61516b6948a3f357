//! Shared helpers for the tests that need a real Ceph cluster.
//!
//! A cluster comes from `CEPH_CONF` (tests/ceph/run.sh starts one and sets
//! it). The cluster tests are `#[ignore]`d in the plain workspace run;
//! without `CEPH_CONF` they FAIL when run, never pass silently.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Pool the test cluster has (tests/ceph/ceph-up.sh creates `test`).
pub fn pool() -> String {
    std::env::var("LSVD_CEPH_POOL").unwrap_or_else(|_| "test".to_string())
}

/// The cluster's ceph.conf. These tests are `#[ignore]`d in the plain
/// workspace run and run by `tests/ceph/run.sh` against a real cluster; run
/// without one they fail, never pass silently. (Always `Some`; the `Option`
/// keeps the callers' `let Some(conf) = cluster(..) else { .. }` shape.)
pub fn cluster(test: &str) -> Option<String> {
    match std::env::var("CEPH_CONF") {
        Ok(c) if !c.is_empty() => {
            assert!(
                std::path::Path::new(&c).exists(),
                "{test}: CEPH_CONF={c} does not exist"
            );
            Some(c)
        }
        _ => panic!(
            "{test}: CEPH_CONF is unset: no Ceph cluster (start one with \
             tests/ceph/ceph-up.sh DIR, or run tests/ceph/run.sh)"
        ),
    }
}

pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// `rados -p POOL [-N NS] ls`, sorted: the objects as Ceph's own tool sees them.
pub fn rados_ls(conf: &str, pool: &str, ns: &str) -> Vec<String> {
    let mut cmd = Command::new("rados");
    cmd.args(["-c", conf, "-p", pool]);
    if !ns.is_empty() {
        cmd.args(["-N", ns]);
    }
    let out = cmd.arg("ls").output().expect("run `rados ls`");
    assert!(
        out.status.success(),
        "rados ls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// `rados put` of a small object (a foreign object lsvd must not touch).
pub fn rados_put(conf: &str, pool: &str, ns: &str, oid: &str) {
    let mut cmd = Command::new("rados");
    cmd.args(["-c", conf, "-p", pool]);
    if !ns.is_empty() {
        cmd.args(["-N", ns]);
    }
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), b"foreign").unwrap();
    let st = cmd
        .args(["put", oid, f.path().to_str().unwrap()])
        .status()
        .expect("run `rados put`");
    assert!(st.success(), "rados put {oid} failed");
}
