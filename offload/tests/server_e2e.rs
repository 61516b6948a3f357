//! The offload server end to end over a real Unix socket and a real image
//! (`log_engine::Image` on a `DirStore` in a temp dir) holding a B+-tree laid out by the
//! builder: lookups, hostile programs, run-time errors, garbage on the wire, limits, and
//! permissions (a child process under `setpriv` as uid 65534).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::obj_path;
use log_engine::store::dir::DirStore;
use log_engine::{CreateOptions, Image, OpenOptions};
use lsvd_offload::btree;
use lsvd_offload::client::{Client, ClientError};
use lsvd_offload::image_source::{ImageBlockSource, StaticResolver};
use lsvd_offload::protocol::{encode_frame, op, ErrorKind, Request, Response};
use lsvd_offload::server::{Server, ServerConfig, ServerHandle};

const SEED: u64 = 0x5eed;
const IMAGE_BLOCKS: u64 = 4096; // 16 MiB

struct Fixture {
    handle: ServerHandle,
    _dir: tempfile::TempDir,
    tree: btree::Tree,
    sock: PathBuf,
    _images: Vec<Arc<Image>>,
}

fn make_image(path: &Path, blocks: &[[u8; 4096]]) -> Arc<Image> {
    let store = Arc::new(DirStore::create(path).expect("create store"));
    Image::create(
        store.clone(),
        &CreateOptions {
            size: IMAGE_BLOCKS * 4096,
            ..Default::default()
        },
    )
    .expect("create image");
    let img = Image::open(store, OpenOptions::default()).expect("open image");
    btree::write_to_image(&img, blocks).expect("write tree");
    Arc::new(img)
}

/// Image "img" (store readable by all) with a 3-level tree (fanout 16), image "private"
/// (store mode 0700, owned by root), server on `<tmp>/offload.sock`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tree = btree::build(&btree::demo_pairs(1000, SEED), 16);
    assert_eq!(tree.levels, 3);
    let pub_path = dir.path().join("img");
    let priv_path = dir.path().join("private");
    let img = make_image(&pub_path, &tree.blocks);
    let private = make_image(&priv_path, &tree.blocks);
    std::fs::set_permissions(&pub_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&priv_path, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut r = StaticResolver::new();
    r.insert(
        "img",
        pub_path,
        Arc::new(ImageBlockSource::new(img.clone())),
    );
    r.insert(
        "private",
        priv_path,
        Arc::new(ImageBlockSource::new(private.clone())),
    );
    let sock = dir.path().join("offload.sock");
    let cfg = ServerConfig {
        workers: 2,
        frame_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let handle = Server::new(cfg, Arc::new(r)).unwrap().spawn(&sock).unwrap();
    Fixture {
        _dir: dir,
        handle,
        tree,
        sock,
        _images: vec![img, private],
    }
}

fn obj(name: &str) -> Vec<u8> {
    std::fs::read(obj_path(name)).unwrap()
}

fn kind_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorKind {
    match r {
        Err(ClientError::Remote(e)) => e.kind,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Looks up a present and an absent key and checks the answers against the reference.
fn check_lookups(c: &mut Client, fx: &Fixture, fn_id: u64) {
    for key in [1u64, 3, 999, 1999, 2, 1000, 5000] {
        let r = c
            .invoke(fn_id, fx.tree.root, 0, &btree::lookup_args(key))
            .unwrap_or_else(|e| panic!("key {key}: {e}"));
        let want = btree::lookup(&fx.tree, key);
        assert_eq!(r.hops, 3, "key {key}");
        assert_eq!(r.r0, want.is_some() as u64, "key {key}");
        assert_eq!(r.scratch_u64(8), want.is_some() as u64, "key {key}");
        if let Some(v) = want {
            assert_eq!(v, btree::demo_value(SEED, key));
            assert_eq!(r.scratch_u64(16), v, "key {key}");
        }
    }
}

fn register_lookup(c: &mut Client) -> u64 {
    c.register("img", "offload", &obj("btree_lookup.o"))
        .unwrap()
        .fn_id
}

#[test]
fn register_invoke_list_remove() {
    let fx = fixture();
    let mut c = Client::connect(&fx.sock).unwrap();
    let reg = c
        .register("img", "offload", &obj("btree_lookup.o"))
        .unwrap();
    assert!(reg.insn_bound > 254 && reg.insns > 10);
    check_lookups(&mut c, &fx, reg.fn_id);
    let l = c.list().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0].id, l[0].uid, l[0].image.as_str()),
        (reg.fn_id, 0, "img")
    );
    assert_eq!(l[0].engine, "jit");
    assert_eq!(l[0].invocations, 7);
    c.unregister(reg.fn_id).unwrap();
    assert_eq!(kind_of(c.unregister(reg.fn_id)), ErrorKind::NotFound);
    assert_eq!(kind_of(c.invoke(reg.fn_id, 1, 0, &[])), ErrorKind::NotFound);
    assert!(c.list().unwrap().is_empty());
    // Unknown image, missing section.
    assert_eq!(
        kind_of(c.register("nope", "offload", &obj("btree_lookup.o"))),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind_of(c.register("img", "nope", &obj("btree_lookup.o"))),
        ErrorKind::NoSection
    );
    let s = fx.handle.server().stats();
    assert_eq!(s.calls_ok, 7);
    assert!(s.vm_ns > 0 && s.vm_ns <= s.chain_ns && s.chain_ns <= s.call_ns);
}

#[test]
fn hostile_programs_refused_and_server_keeps_working() {
    let fx = fixture();
    let mut c = Client::connect(&fx.sock).unwrap();
    let cases: &[(&str, ErrorKind)] = &[
        ("unbounded_loop", ErrorKind::UnboundedLoop),
        ("overbudget_loop", ErrorKind::InsnBound),
        ("oob_read", ErrorKind::OutOfBounds),
        ("oob_negative", ErrorKind::OutOfBounds),
        ("oob_offbyone", ErrorKind::OutOfBounds),
        ("write_block", ErrorKind::ReadOnly),
        ("write_ctx_ro", ErrorKind::ReadOnly),
        ("ptr_unbounded", ErrorKind::PointerArith),
        ("helper_call", ErrorKind::UnknownHelper),
        ("leak_ctx", ErrorKind::PointerLeak),
        ("leak_scratch", ErrorKind::PointerLeak),
        ("leak_r0", ErrorKind::PointerLeak),
        ("recursion", ErrorKind::Recursion),
        ("map_ref", ErrorKind::Relocation),
        ("global_var", ErrorKind::Relocation),
        ("cross_section_call", ErrorKind::Relocation),
    ];
    for (name, kind) in cases {
        let r = c.register("img", "offload", &obj(&format!("hostile/{name}.o")));
        match r {
            Err(ClientError::Remote(e)) => {
                assert_eq!(e.kind, *kind, "{name}: {e}");
                assert!(!e.message.is_empty());
            }
            other => panic!("{name}: expected {kind:?}, got {other:?}"),
        }
    }
    // Not ELF, wrong machine, oversized.
    assert_eq!(
        kind_of(c.register("img", "offload", b"not an elf")),
        ErrorKind::BadElf
    );
    let mut x86 = obj("btree_lookup.o");
    x86[18] = 62;
    assert_eq!(
        kind_of(c.register("img", "offload", &x86)),
        ErrorKind::BadElf
    );
    assert_eq!(
        kind_of(c.register("img", "offload", &vec![0u8; (1 << 20) + 1])),
        ErrorKind::TooLarge
    );
    assert!(c.list().unwrap().is_empty());
    let id = register_lookup(&mut c);
    check_lookups(&mut c, &fx, id);
}

#[test]
fn run_time_errors_then_valid_lookups() {
    let fx = fixture();
    let mut c = Client::connect(&fx.sock).unwrap();
    let lookup = register_lookup(&mut c);
    let probe = obj("chain_probe.o");
    let goto = c.register("img", "probe_goto_arg", &probe).unwrap().fn_id;
    let cycle = c.register("img", "probe_self_cycle", &probe).unwrap().fn_id;
    let bad = c.register("img", "probe_bad_next", &probe).unwrap().fn_id;
    let first = c.register("img", "probe_first_word", &probe).unwrap().fn_id;
    let last = IMAGE_BLOCKS - 1;
    let arg = |v: u64| v.to_le_bytes();

    // Start LBA: last block fine, one past refused before any read.
    assert_eq!(c.invoke(first, last, 0, &[]).unwrap().hops, 1);
    let e = c.invoke(first, last + 1, 0, &[]).unwrap_err();
    let e = e.remote().unwrap();
    assert_eq!((e.kind, e.hop), (ErrorKind::LbaOutOfRange, Some(0)));
    check_lookups(&mut c, &fx, lookup);
    assert_eq!(
        kind_of(c.invoke(first, u64::MAX, 0, &[])),
        ErrorKind::LbaOutOfRange
    );

    // Next LBA chosen by the program: last block fine, one past refused.
    let r = c.invoke(goto, 1, 0, &arg(last)).unwrap();
    assert_eq!((r.r0, r.hops), (last, 2));
    let e = c.invoke(goto, 1, 0, &arg(last + 1)).unwrap_err();
    assert_eq!(e.remote().unwrap().kind, ErrorKind::LbaOutOfRange);
    check_lookups(&mut c, &fx, lookup);

    // Self cycle stops at the hop limit (default 64, or the client's own).
    let e = c.invoke(cycle, 5, 0, &[]).unwrap_err();
    let e = e.remote().unwrap();
    assert_eq!((e.kind, e.hop), (ErrorKind::HopLimit, Some(64)));
    let e = c.invoke(cycle, 5, 1024, &[]).unwrap_err();
    assert_eq!(e.remote().unwrap().hop, Some(1024));
    assert_eq!(kind_of(c.invoke(cycle, 5, 1025, &[])), ErrorKind::BadLimit);
    check_lookups(&mut c, &fx, lookup);

    // Bad n_next.
    for n in [0u64, 2, 16, 0xffff_ffff] {
        let e = c.invoke(bad, 7, 0, &arg(n)).unwrap_err();
        let e = e.remote().unwrap();
        assert_eq!((e.kind, e.hop), (ErrorKind::BadNext, Some(0)), "n_next {n}");
    }
    // Arguments over 4096 bytes.
    assert_eq!(
        kind_of(c.invoke(lookup, fx.tree.root, 0, &[0u8; 4097])),
        ErrorKind::ArgsTooLarge
    );
    assert!(c.invoke(lookup, fx.tree.root, 0, &[0u8; 4096]).is_ok());
    check_lookups(&mut c, &fx, lookup);
}

/// Sends raw bytes on a fresh connection and returns what the server answered before
/// closing (it must close).
fn raw_exchange(sock: &Path, bytes: &[u8], shut_write: bool) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    if shut_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn garbage_truncated_huge_and_vanishing_clients() {
    let fx = fixture();
    let mut c = Client::connect(&fx.sock).unwrap();
    let lookup = register_lookup(&mut c);
    let good = encode_frame(op::LIST, 9, &[]);
    let mut huge = good.clone();
    huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_crc = good.clone();
    bad_crc[20] ^= 1;
    let mut bad_ver = good.clone();
    bad_ver[4] = 9;
    let bad_payload = encode_frame(op::INVOKE, 3, &[1, 2, 3]);
    let unknown_op = encode_frame(0x7777, 4, &[]);
    let resp_op = encode_frame(op::INVOKED, 5, &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("zeros", vec![0u8; 100]),
        ("huge length", huge),
        ("bad crc", bad_crc),
        ("bad version", bad_ver),
        ("bad payload", bad_payload),
        ("unknown op", unknown_op),
        ("response op", resp_op),
    ];
    for (what, bytes) in &cases {
        let out = raw_exchange(&fx.sock, bytes, false);
        // One error frame, then the close.
        let f = lsvd_offload::protocol::decode_frame(&out)
            .unwrap_or_else(|e| panic!("{what}: answer {out:?}: {e}"));
        match Response::decode(f.op, &f.payload).unwrap() {
            Response::Error(e) => assert_eq!(e.kind, ErrorKind::BadRequest, "{what}"),
            r => panic!("{what}: {r:?}"),
        }
        check_lookups(&mut c, &fx, lookup);
    }
    // Truncated header / payload followed by EOF: closed without an answer frame or
    // with a BadRequest; either way the server lives.
    for cut in [1usize, 10, 23, good.len() - 1] {
        let reg = Request::Register {
            image: "img".into(),
            section: "offload".into(),
            elf: obj("btree_lookup.o"),
        };
        let f = encode_frame(reg.op(), 1, &reg.encode());
        let _ = raw_exchange(&fx.sock, &f[..cut.min(f.len() - 1)], true);
        let _ = raw_exchange(&fx.sock, &f[..f.len() - 1], true);
    }
    // Clients that vanish mid-call: an invoke sent, connection dropped at once.
    for _ in 0..20 {
        let mut s = UnixStream::connect(&fx.sock).unwrap();
        let req = Request::Invoke {
            fn_id: lookup,
            start_lba: fx.tree.root,
            max_hops: 0,
            args: btree::lookup_args(3).to_vec(),
        };
        s.write_all(&encode_frame(req.op(), 1, &req.encode()))
            .unwrap();
        drop(s);
    }
    // Random bytes.
    let mut x = 0x1234_5678_9abc_def0u64;
    for _ in 0..50 {
        let n = (x % 200) as usize;
        let bytes: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = raw_exchange(&fx.sock, &bytes, true);
    }
    check_lookups(&mut c, &fx, lookup);
    assert!(fx.handle.server().stats().bad_frames >= cases.len() as u64);
}

#[test]
fn pipelined_calls_and_in_flight_limit() {
    let fx = fixture();
    let mut c = Client::connect(&fx.sock).unwrap();
    let lookup = register_lookup(&mut c);
    let cycle = c
        .register("img", "probe_self_cycle", &obj("chain_probe.o"))
        .unwrap()
        .fn_id;
    // 200 long calls written back to back without reading: all get an answer with their
    // id, the ones beyond 64 in flight a LimitExceeded.
    let mut s = UnixStream::connect(&fx.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut batch = Vec::new();
    for id in 1..=200u64 {
        let req = Request::Invoke {
            fn_id: cycle,
            start_lba: 1,
            max_hops: 1024,
            args: vec![],
        };
        batch.extend(encode_frame(req.op(), id, &req.encode()));
    }
    s.write_all(&batch).unwrap();
    let mut seen = std::collections::HashSet::new();
    let (mut hop_limit, mut busy) = (0, 0);
    for _ in 0..200 {
        let f = lsvd_offload::protocol::read_frame(&mut s, || ())
            .unwrap()
            .unwrap();
        assert!(seen.insert(f.id), "id {} answered twice", f.id);
        match Response::decode(f.op, &f.payload).unwrap() {
            Response::Error(e) if e.kind == ErrorKind::HopLimit => hop_limit += 1,
            Response::Error(e) if e.kind == ErrorKind::LimitExceeded => busy += 1,
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(hop_limit + busy, 200);
    assert!(hop_limit >= 64, "{hop_limit} ran");
    assert!(busy > 0, "no call refused for the in-flight limit");
    check_lookups(&mut c, &fx, lookup);
}

#[test]
fn client_that_stops_reading_does_not_hold_the_workers() {
    let fx = fixture();
    let mut c = Client::connect(&fx.sock).unwrap();
    let lookup = register_lookup(&mut c);
    let first = c
        .register("img", "probe_first_word", &obj("chain_probe.o"))
        .unwrap()
        .fn_id;
    // Two stalled connections, each with far more 4 KiB answers queued than a socket
    // buffer holds; they never read.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = UnixStream::connect(&fx.sock).unwrap();
        let mut batch = Vec::new();
        for id in 1..=600u64 {
            let req = Request::Invoke {
                fn_id: first,
                start_lba: 1,
                max_hops: 0,
                args: vec![],
            };
            batch.extend(encode_frame(req.op(), id, &req.encode()));
        }
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&batch);
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    // REGISTER needs a pool worker: it must still be served (the write timeout of the
    // fixture is 1 s).
    let t = std::time::Instant::now();
    let id = register_lookup(&mut c);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    check_lookups(&mut c, &fx, id);
    check_lookups(&mut c, &fx, lookup);
    drop(stalled);
}

#[test]
fn function_limit_per_uid() {
    let fx = fixture();
    let mut c = Client::connect(&fx.sock).unwrap();
    let elf = obj("chain_probe.o");
    let ids: Vec<u64> = (0..64)
        .map(|_| c.register("img", "probe_first_word", &elf).unwrap().fn_id)
        .collect();
    assert_eq!(
        kind_of(c.register("img", "probe_first_word", &elf)),
        ErrorKind::LimitExceeded
    );
    c.unregister(ids[0]).unwrap();
    c.register("img", "probe_first_word", &elf).unwrap();
}

/// Environment of the unprivileged child.
const CHILD_ENV: &str = "LSVD_OFFLOAD_PERM_CHILD";

#[test]
fn permissions_between_uids() {
    let fx = fixture();
    let mut c = Client::connect(&fx.sock).unwrap();
    let root_fn = register_lookup(&mut c);
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&exe)
        .args(["--exact", "perm_child", "--ignored", "--nocapture"])
        .env(
            CHILD_ENV,
            format!("{}:{root_fn}:{}", fx.sock.display(), fx.tree.root),
        )
        .output()
        .expect("setpriv (util-linux) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child did not run:\n{text}");
    // Root sees the child's function and may remove it; root's own is untouched.
    let l = c.list().unwrap();
    let theirs: Vec<_> = l.iter().filter(|f| f.uid == 65534).collect();
    assert_eq!(theirs.len(), 1, "{l:?}");
    c.unregister(theirs[0].id).unwrap();
    check_lookups(&mut c, &fx, root_fn);
}

/// Runs as uid 65534 under `permissions_between_uids` (ignored when run directly).
#[test]
#[ignore]
fn perm_child() {
    let Ok(env) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = env.rsplitn(3, ':');
    let root: u64 = parts.next().unwrap().parse().unwrap();
    let root_fn: u64 = parts.next().unwrap().parse().unwrap();
    let sock = parts.next().unwrap();
    // SAFETY: getuid has no preconditions.
    assert_eq!(unsafe { libc::getuid() }, 65534);
    let mut c = Client::connect(sock).unwrap();
    assert!(c.list().unwrap().is_empty(), "root's function visible");
    assert_eq!(
        kind_of(c.invoke(root_fn, root, 0, &btree::lookup_args(3))),
        ErrorKind::PermissionDenied
    );
    assert_eq!(kind_of(c.unregister(root_fn)), ErrorKind::PermissionDenied);
    let elf = std::fs::read(obj_path("btree_lookup.o")).unwrap();
    assert_eq!(
        kind_of(c.register("private", "offload", &elf)),
        ErrorKind::PermissionDenied
    );
    let mine = c.register("img", "offload", &elf).unwrap().fn_id;
    let r = c.invoke(mine, root, 0, &btree::lookup_args(3)).unwrap();
    assert_eq!(r.r0, 1);
    assert_eq!(r.scratch_u64(16), btree::demo_value(SEED, 3));
    let l = c.list().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].id, l[0].uid), (mine, 65534));
}
