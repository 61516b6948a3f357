//! The offload server inside the `lsvd` daemon, end to end: real `lsvd` and `lsvdctl`
//! binaries, a journaled image exported over NBD (spoken with `lsvd_nbd::proto`), the
//! offload client of `lsvd_offload` and `lsvdctl offload` on the daemon's socket.
//! The permission test runs `lsvdctl` as uid 65534 under `setpriv` (util-linux; root).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lsvd_nbd::proto::*;
use lsvd_offload::btree::{self, Tree};
use lsvd_offload::client::{Client, ClientError};
use lsvd_offload::protocol::ErrorKind;
use serde_json::Value;

mod common;
use common::{go, lsvdctl, ok, request as nbd};

const ELF: &[u8] = include_bytes!("../../offload/examples/bpf/btree_lookup.o");
const OBJ: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../offload/examples/bpf/btree_lookup.o"
);

struct Daemon {
    home: tempfile::TempDir,
    /// World-searchable directory of the offload socket (the home is 0700).
    sockdir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra daemon arguments.
    extra: Vec<String>,
}

impl Daemon {
    /// A home with journaled image `t` (16 MiB, journal and read cache).
    fn new() -> Daemon {
        Daemon::with_args(&[])
    }

    /// As [`Daemon::new`], the daemon started with `extra` arguments.
    fn with_args(extra: &[&str]) -> Daemon {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let cache = home.path().join("cache");
        ok(lsvdctl(
            home.path(),
            &[
                "image",
                "create",
                "t",
                "--size",
                "16M",
                "--cache-dir",
                cache.to_str().unwrap(),
                "--journal-size",
                "16M",
                "--read-cache-size",
                "8M",
            ],
        ));
        let sockdir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(sockdir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut d = Daemon {
            home,
            sockdir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.start();
        d
    }
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_lsvd"))
            .args(["--home", self.home.path().to_str().unwrap()])
            .arg("--control")
            .arg(self.control())
            .arg("--offload-socket")
            .arg(self.offload())
            .args(&self.extra)
            .env("LSVD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while UnixStream::connect(self.control()).is_err()
            || UnixStream::connect(self.offload()).is_err()
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn control(&self) -> PathBuf {
        self.home.path().join("run/lsvd.sock")
    }
    fn offload(&self) -> PathBuf {
        self.sockdir.path().join("offload.sock")
    }
    fn nbd(&self) -> PathBuf {
        self.home.path().join("run/nbd-t.sock")
    }
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lsvdctl"))
            .args(args)
            .env("LSVD_HOME", self.home.path())
            .env("LSVD_CONTROL", self.control())
            .env("LSVD_OFFLOAD_SOCKET", self.offload())
            .output()
            .unwrap()
    }
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe { libc_kill(child.id() as i32, 15) };
        child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Writes the tree's blocks through NBD (no FLUSH).
fn write_tree(s: &mut UnixStream, tree: &Tree) {
    for (i, chunk) in tree.blocks.chunks(16).enumerate() {
        let buf: Vec<u8> = chunk.iter().flatten().copied().collect();
        let (e, _) = nbd(s, CMD_WRITE, (i * 16 * 4096) as u64, &buf, buf.len() as u32);
        assert_eq!(e, 0);
    }
}

fn tree(seed: u64) -> Tree {
    btree::build(&btree::demo_pairs(3000, seed), 16)
}

/// Looks up a spread of keys and checks every answer against the tree.
fn check(c: &mut Client, id: u64, tree: &Tree, seed: u64) {
    for key in [1u64, 2, 777, 1999, 3001, 5999, 6001] {
        let r = c
            .invoke(id, tree.root, 0, &btree::lookup_args(key))
            .unwrap();
        let want = btree::lookup(tree, key);
        assert_eq!(r.r0, want.is_some() as u64, "key {key}");
        assert_eq!(r.hops, tree.levels, "key {key}");
        if let Some(v) = want {
            assert_eq!(v, btree::demo_value(seed, key));
            assert_eq!(r.scratch_u64(16), v, "key {key}");
        }
    }
}

fn kind_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorKind {
    match r {
        Err(ClientError::Remote(e)) => e.kind,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[test]
fn offload_sees_unflushed_nbd_writes_of_a_journaled_image() {
    let d = Daemon::new();
    ok(d.ctl(&["export", "t"]));
    let mut s = go(UnixStream::connect(d.nbd()).unwrap());
    let t1 = tree(1);
    write_tree(&mut s, &t1);
    // Registered and run with lsvdctl against the daemon's socket.
    let reg: Value =
        serde_json::from_str(&ok(d.ctl(&["offload", "register", "t", OBJ, "--json"]))).unwrap();
    let id = reg["id"].as_u64().unwrap();
    let r: Value = serde_json::from_str(&ok(d.ctl(&[
        "offload",
        "run",
        &id.to_string(),
        "--lba",
        &t1.root.to_string(),
        "--args-u64",
        "777",
        "--json",
    ])))
    .unwrap();
    assert_eq!(r["r0"], 1);
    assert_eq!(r["scratch_u64"][2], btree::demo_value(1, 777));
    let mut c = Client::connect(d.offload()).unwrap();
    check(&mut c, id, &t1, 1);
    // Same layout, other values: overwritten through NBD, seen at once.
    let t2 = tree(2);
    write_tree(&mut s, &t2);
    check(&mut c, id, &t2, 2);
    // The functions list names the image; an unknown image is NotFound.
    let ls = c.list().unwrap();
    assert_eq!((ls.len(), ls[0].image.as_str()), (1, "t"));
    assert_eq!(
        kind_of(c.register("nope", "offload", ELF)),
        ErrorKind::NotFound
    );
}

#[test]
fn another_uid_is_refused() {
    let d = Daemon::new();
    ok(d.ctl(&["export", "t"]));
    let mut s = go(UnixStream::connect(d.nbd()).unwrap());
    let t1 = tree(3);
    write_tree(&mut s, &t1);
    let mut c = Client::connect(d.offload()).unwrap();
    let id = c.register("t", "offload", ELF).unwrap().fn_id;
    check(&mut c, id, &t1, 3);
    let obj = OBJ;
    let as_nobody = |args: &[&str]| -> Value {
        let out = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_lsvdctl"))
            .args(args)
            .env("LSVD_HOME", "/nonexistent")
            .env("LSVD_OFFLOAD_SOCKET", d.offload())
            .output()
            .expect("setpriv (util-linux) must be installed");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let root = t1.root.to_string();
    let e = as_nobody(&["offload", "run", &id.to_string(), "--lba", &root, "--json"]);
    assert_eq!(e["error"]["kind"], "PermissionDenied", "{e}");
    let e = as_nobody(&["offload", "rm", &id.to_string(), "--json"]);
    assert_eq!(e["error"]["kind"], "PermissionDenied", "{e}");
    // The store is under a 0700 home: uid 65534 may not read the image.
    let e = as_nobody(&["offload", "register", "t", obj, "--json"]);
    assert_eq!(e["error"]["kind"], "PermissionDenied", "{e}");
    // Root's function still works.
    check(&mut c, id, &t1, 3);
}

#[test]
fn unexport_and_reexport_during_invokes() {
    let d = Daemon::new();
    ok(d.ctl(&["export", "t"]));
    let mut s = go(UnixStream::connect(d.nbd()).unwrap());
    let t1 = tree(4);
    write_tree(&mut s, &t1);
    let mut c = Client::connect(d.offload()).unwrap();
    let id = c.register("t", "offload", ELF).unwrap().fn_id;
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let t1 = Arc::new(t1);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, calls, t1, sock) = (stop.clone(), calls.clone(), t1.clone(), d.offload());
            std::thread::spawn(move || {
                let mut c = Client::connect(sock).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    check(&mut c, id, &t1, 4);
                    calls.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let wait_calls = |n: u64| {
        let t = Instant::now();
        let start = calls.load(Ordering::SeqCst);
        while calls.load(Ordering::SeqCst) < start + n {
            assert!(t.elapsed() < Duration::from_secs(60), "invokes stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_calls(3);
    for _ in 0..3 {
        drop(s);
        ok(d.ctl(&["unexport", "t"]));
        // Held open for the function: invokes go on.
        wait_calls(3);
        // Exporting again takes the held volume over (one opener).
        ok(d.ctl(&["export", "t"]));
        s = go(UnixStream::connect(d.nbd()).unwrap());
        assert_eq!(
            nbd(&mut s, CMD_READ, t1.root * 4096, &[], 4096),
            (0, t1.blocks[t1.root as usize].to_vec())
        );
        wait_calls(3);
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    // With no export and no function left the volume is closed; offload reopens it.
    drop(s);
    ok(d.ctl(&["unexport", "t"]));
    c.unregister(id).unwrap();
    let id = c.register("t", "offload", ELF).unwrap().fn_id;
    check(&mut c, id, &t1, 4);
    // An image used by offload alone can be exported (the held volume is shared).
    ok(d.ctl(&["export", "t"]));
    let mut s = go(UnixStream::connect(d.nbd()).unwrap());
    let t2 = tree(5);
    write_tree(&mut s, &t2);
    check(&mut c, id, &t2, 5);
}

#[test]
fn sigterm_with_registered_functions() {
    let mut d = Daemon::new();
    ok(d.ctl(&["export", "t"]));
    let mut s = go(UnixStream::connect(d.nbd()).unwrap());
    let t1 = tree(6);
    write_tree(&mut s, &t1);
    let mut c = Client::connect(d.offload()).unwrap();
    let id = c.register("t", "offload", ELF).unwrap().fn_id;
    check(&mut c, id, &t1, 6);
    // The function keeps the image held after the export ends.
    ok(d.ctl(&["unexport", "t"]));
    check(&mut c, id, &t1, 6);
    let st = d.stop();
    assert!(st.success(), "{st:?}");
    assert!(!d.offload().exists() && !d.control().exists());
    // The client sees the connection end, not a hang.
    assert!(c.invoke(id, t1.root, 0, &btree::lookup_args(1)).is_err());
    // Everything written (never flushed by the client) is there after a restart.
    d.start();
    ok(d.ctl(&["export", "t"]));
    let mut s = go(UnixStream::connect(d.nbd()).unwrap());
    for (i, b) in t1.blocks.iter().enumerate().step_by(7) {
        assert_eq!(
            nbd(&mut s, CMD_READ, i as u64 * 4096, &[], 4096),
            (0, b.to_vec())
        );
    }
    let mut c = Client::connect(d.offload()).unwrap();
    assert!(c.list().unwrap().is_empty(), "functions do not survive");
    let id = c.register("t", "offload", ELF).unwrap().fn_id;
    check(&mut c, id, &t1, 6);
    assert!(d.stop().success());
}

#[test]
fn read_only_export_then_writable_export_of_a_held_plain_image() {
    let d = Daemon::new();
    ok(lsvdctl(
        d.home.path(),
        &["image", "create", "p", "--size", "16M"],
    ));
    // Written first through a writable export, then served read-only.
    let t1 = tree(7);
    ok(d.ctl(&["export", "p"]));
    let sock = d.home.path().join("run/nbd-p.sock");
    let mut s = go(UnixStream::connect(&sock).unwrap());
    write_tree(&mut s, &t1);
    drop(s);
    ok(d.ctl(&["unexport", "p"]));
    ok(d.ctl(&["export", "p", "--read-only"]));
    let mut c = Client::connect(d.offload()).unwrap();
    let id = c.register("p", "offload", ELF).unwrap().fn_id;
    check(&mut c, id, &t1, 7);
    // Unexported: held (read-only) for the function.
    ok(d.ctl(&["unexport", "p"]));
    check(&mut c, id, &t1, 7);
    // A writable export cannot use the read-only volume: it is closed and reopened
    // writable; the function reads the new one.
    ok(d.ctl(&["export", "p"]));
    let mut s = go(UnixStream::connect(&sock).unwrap());
    let t2 = tree(8);
    write_tree(&mut s, &t2);
    check(&mut c, id, &t2, 8);
}

#[test]
fn default_offload_socket_and_no_offload() {
    for (extra, want) in [(None, true), (Some("--no-offload"), false)] {
        let home = tempfile::tempdir().unwrap();
        let control = home.path().join("run/lsvd.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lsvd"));
        cmd.args(["--home", home.path().to_str().unwrap()])
            .arg("--control")
            .arg(&control)
            .env("LSVD_LOG", "warn")
            .env_remove("LSVD_OFFLOAD_SOCKET")
            .stdin(Stdio::null());
        if let Some(e) = extra {
            cmd.arg(e);
        }
        let mut child = cmd.spawn().unwrap();
        let t = Instant::now();
        while UnixStream::connect(&control).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The control socket answers once the daemon is up (offload started before).
        let ls = Command::new(env!("CARGO_BIN_EXE_lsvdctl"))
            .args(["export", "ls"])
            .env("LSVD_HOME", home.path())
            .env("LSVD_CONTROL", &control)
            .output()
            .unwrap();
        ok(ls);
        let sock = home.path().join("run/offload.sock");
        assert_eq!(UnixStream::connect(&sock).is_ok(), want, "{extra:?}");
        unsafe { libc_kill(child.id() as i32, 15) };
        assert!(child.wait().unwrap().success());
        assert!(!sock.exists());
    }
}

#[test]
fn limits_file_lowers_the_limits_and_a_bad_one_stops_the_daemon() {
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        conf.path(),
        "# lower than the defaults\nmax_hops = 3\ndefault_hops = 2\nfns_per_uid = 1\n",
    )
    .unwrap();
    let d = Daemon::with_args(&["--offload-config", conf.path().to_str().unwrap()]);
    ok(d.ctl(&["export", "t"]));
    let mut s = go(UnixStream::connect(d.nbd()).unwrap());
    let t1 = tree(8);
    assert_eq!(t1.levels, 3, "the tree this test is written for");
    write_tree(&mut s, &t1);
    let mut c = Client::connect(d.offload()).unwrap();
    let id = c.register("t", "offload", ELF).unwrap().fn_id;
    let args = btree::lookup_args(777);
    // The default hop count (2) is below the tree's depth; asking for 3 works; 4 passes
    // the file's cap.
    assert_eq!(
        kind_of(c.invoke(id, t1.root, 0, &args)),
        ErrorKind::HopLimit
    );
    let r = c.invoke(id, t1.root, 3, &args).unwrap();
    assert_eq!((r.r0, r.hops), (1, 3));
    assert_eq!(r.scratch_u64(16), btree::demo_value(8, 777));
    assert_eq!(
        kind_of(c.invoke(id, t1.root, 4, &args)),
        ErrorKind::BadLimit
    );
    // One function per uid.
    match c.register("t", "offload", ELF) {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::LimitExceeded);
            assert!(e.message.contains("the maximum is 1"), "{}", e.message);
        }
        other => panic!("a second function was not refused: {other:?}"),
    }
    // Files that pass a cap or are malformed stop the daemon before it serves anything.
    for (text, want) in [
        ("max_hops = 1025\n", "max_hops = 1025 is above the cap 1024"),
        ("vm_time = 1s\n", "vm_time"),
        ("max_hops = 4\nbogus = 1\n", "line 2: unknown key \"bogus\""),
    ] {
        std::fs::write(conf.path(), text).unwrap();
        let home = tempfile::tempdir().unwrap();
        let control = home.path().join("run/lsvd.sock");
        let out = Command::new(env!("CARGO_BIN_EXE_lsvd"))
            .args(["--home", home.path().to_str().unwrap()])
            .arg("--control")
            .arg(&control)
            .arg("--offload-config")
            .arg(conf.path())
            .env("LSVD_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(want), "{text}: {err}");
        assert!(!control.exists(), "{text}");
    }
}
