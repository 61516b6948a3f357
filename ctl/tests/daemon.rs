//! End-to-end tests of the `lsvd` daemon and `lsvdctl export|unexport`:
//! real binaries, real images in a temporary home, NBD spoken over the
//! daemon's sockets with the protocol encoders of `lsvd_nbd::proto`.
//! (The real third-party clients — qemu-io, nbdinfo, nbdcopy, fio,
//! qemu-storage-daemon — run in tests/nbd/run.sh.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lsvd_nbd::proto::*;

mod common;
use common::{go, lsvdctl, request};

struct Daemon {
    home: tempfile::TempDir,
    child: Option<Child>,
}

impl Daemon {
    fn start(images: &[&str]) -> Daemon {
        Self::start_with(images, &[])
    }
    fn start_with(images: &[&str], extra: &[&str]) -> Daemon {
        let home = tempfile::tempdir().unwrap();
        for img in images {
            let out = lsvdctl(home.path(), &["image", "create", img, "--size", "16M"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let child = Command::new(env!("CARGO_BIN_EXE_lsvd"))
            .args(["--home", home.path().to_str().unwrap()])
            .arg("--control")
            .arg(home.path().join("run/lsvd.sock"))
            .args(extra)
            .env("LSVD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon {
            home,
            child: Some(child),
        };
        let t = Instant::now();
        while UnixStream::connect(d.control()).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
    fn control(&self) -> PathBuf {
        self.home.path().join("run/lsvd.sock")
    }
    fn ctl(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lsvdctl"));
        c.args(args)
            .env("LSVD_HOME", self.home.path())
            .env("LSVD_CONTROL", self.control());
        c.output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "lsvdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
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

fn block(seed: u8) -> Vec<u8> {
    (0..65536u32)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn export_serve_list_unexport_and_clean_shutdown() {
    let mut d = Daemon::start(&["a", "b"]);
    let out = d.ok(&["export", "a"]);
    let sock = d.home.path().join("run/nbd-a.sock");
    assert!(
        out.contains(&format!("nbd+unix:///a?socket={}", sock.display())),
        "{out}"
    );
    // Exporting twice, unknown images, open addresses: refused, daemon fine.
    let again = d.ctl(&["export", "a"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exported"));
    let nope = d.ctl(&["export", "zz"]);
    assert!(String::from_utf8_lossy(&nope.stderr).contains("no image named"));
    let any = d.ctl(&["export", "b", "--tcp", "0.0.0.0:0"]);
    assert!(String::from_utf8_lossy(&any.stderr).contains("allow-any-address"));
    // Garbage on the control socket gets an error line.
    let mut c = UnixStream::connect(d.control()).unwrap();
    c.write_all(b"{garbage\n{\"version\":9,\"op\":\"list\"}\n")
        .unwrap();
    let mut r = BufReader::new(c);
    for want in ["bad request", "version 9"] {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(
            line.contains("\"ok\":false") && line.contains(want),
            "{line}"
        );
    }

    // Serve a: write through NBD.
    let mut s = go(UnixStream::connect(&sock).unwrap());
    assert_eq!(request(&mut s, CMD_WRITE, 0, &block(1), 65536).0, 0);
    assert_eq!(request(&mut s, CMD_FLUSH, 0, &[], 0).0, 0);
    assert_eq!(request(&mut s, CMD_READ, 0, &[], 65536), (0, block(1)));
    // b over TCP on a loopback port, read-only.
    let out = d.ok(&["export", "b", "--tcp", "127.0.0.1:0", "--read-only"]);
    let addr = out
        .split("nbd://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut t = go(TcpStream::connect(&addr).unwrap());
    assert_eq!(request(&mut t, CMD_WRITE, 0, &block(2), 65536).0, EPERM);
    assert_eq!(
        request(&mut t, CMD_READ, 0, &[], 4096),
        (0, vec![0u8; 4096])
    );

    let ls: serde_json::Value = serde_json::from_str(&d.ok(&["export", "ls", "--json"])).unwrap();
    let ls = ls.as_array().unwrap();
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[0]["name"], "a");
    assert_eq!(ls[0]["connections"], 1);
    assert_eq!(ls[1]["read_only"], true);
    assert!(d.ok(&["export", "ls"]).contains("nbd://127.0.0.1:"));

    // Unexport b: its client is disconnected, the socket goes away.
    d.ok(&["unexport", "b"]);
    let mut buf = [0u8; 1];
    assert_eq!(t.read(&mut buf).unwrap_or(0), 0);
    assert!(TcpStream::connect(&addr).is_err());
    assert!(!d.ctl(&["unexport", "b"]).status.success());

    // A write that is acknowledged but never flushed by the client
    // survives a SIGTERM: the daemon flushes on the way out.
    assert_eq!(request(&mut s, CMD_WRITE, 65536, &block(3), 65536).0, 0);
    let st = d.stop();
    assert!(st.success(), "{st:?}");
    assert!(!sock.exists() && !d.control().exists());
    let out = lsvdctl(d.home.path(), &["io", "read", "a", "--length", "128K"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&out.stdout[..65536], &block(1)[..]);
    assert_eq!(&out.stdout[65536..], &block(3)[..]);
}

#[test]
fn lsvdctl_without_daemon_names_the_socket() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lsvdctl"))
        .args(["export", "ls", "--control"])
        .arg(home.path().join("none.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none.sock") && err.contains("lsvd"), "{err}");
}

#[test]
fn shared_tcp_listener_serves_every_export_by_name() {
    // A free loopback port (tiny race with other processes; fine in tests).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&["a", "b"], &["--nbd-listen", &addr]);
    d.ok(&["export", "a"]);
    d.ok(&["export", "b"]);
    for (name, seed) in [("a", 7u8), ("b", 9u8)] {
        let mut s = TcpStream::connect(&addr).unwrap();
        let mut g = [0u8; 18];
        s.read_exact(&mut g).unwrap();
        s.write_all(&CLIENT_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
        s.write_all(
            &OptionHeader {
                option: OPT_EXPORT_NAME,
                len: 1,
            }
            .encode(),
        )
        .unwrap();
        s.write_all(name.as_bytes()).unwrap();
        let mut h = [0u8; 8 + 2 + 124];
        s.read_exact(&mut h).unwrap();
        assert_eq!(u64::from_be_bytes(h[..8].try_into().unwrap()), 16 << 20);
        assert_eq!(request(&mut s, CMD_WRITE, 0, &block(seed), 65536).0, 0);
        assert_eq!(request(&mut s, CMD_READ, 0, &[], 65536), (0, block(seed)));
    }
    // Unexported names disappear from the shared listener.
    d.ok(&["unexport", "b"]);
    let mut s = TcpStream::connect(&addr).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    s.write_all(&CLIENT_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    s.write_all(
        &OptionHeader {
            option: OPT_EXPORT_NAME,
            len: 1,
        }
        .encode(),
    )
    .unwrap();
    s.write_all(b"b").unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "unknown export must be refused");
}

#[test]
fn daemon_refuses_all_interfaces_without_opt_in() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lsvd"))
        .args(["--home", home.path().to_str().unwrap()])
        .arg("--control")
        .arg(home.path().join("lsvd.sock"))
        .args(["--nbd-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-any-address"));
}

/// `lsvdctl map` answers clearly where ublk is missing (this host kernel has
/// no ublk_drv; the QEMU guest suite maps for real), unknown devices are
/// refused, an exported image cannot be mapped, and `device ls` is empty.
#[test]
fn map_errors_are_clear() {
    let d = Daemon::start(&["vm"]);
    let out = d.ctl(&["map", "vm"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    if !std::path::Path::new("/dev/ublk-control").exists() {
        assert!(err.contains("load the ublk_drv module"), "{err}");
    }
    let out = d.ctl(&["unmap", "/dev/ublkb9"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a mapped image or device"), "{err}");
    d.ok(&["export", "vm"]);
    let out = d.ctl(&["map", "vm"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("unexport it before mapping"), "{err}");
    let ls = d.ok(&["device", "ls", "--json"]);
    assert_eq!(ls.trim(), "[]", "{ls}");
}
