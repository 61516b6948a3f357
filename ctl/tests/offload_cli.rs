//! `lsvdctl image import/export` and `lsvdctl offload ...` end to end: a B+-tree file is
//! imported into a catalog image, exported back, then `lsvdctl offload serve` (the real
//! server over the catalog) answers register/run/ls/rm from separate `lsvdctl` processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use lsvd_offload::btree;
use serde_json::Value;

fn lsvdctl(home: &Path, sock: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsvdctl"))
        .env("LSVD_HOME", home)
        .env("LSVD_OFFLOAD_SOCKET", sock)
        .args(args)
        .output()
        .expect("run lsvdctl")
}

fn ok_json(o: Output) -> Value {
    assert!(
        o.status.success(),
        "lsvdctl failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn btree_object() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../offload/examples/bpf/btree_lookup.o")
}

#[test]
fn import_export_and_offload_commands() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let sock = dir.path().join("offload.sock");
    let seed = 7;
    let tree = btree::build(&btree::demo_pairs(5000, seed), 16);
    let raw = dir.path().join("tree.raw");
    let bytes: Vec<u8> = tree.blocks.iter().flatten().copied().collect();
    std::fs::write(&raw, &bytes).unwrap();

    let o = lsvdctl(
        &home,
        &sock,
        &["image", "import", "t", raw.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.path().join("out.raw");
    let o = lsvdctl(
        &home,
        &sock,
        &["image", "export", "t", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);

    let serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_lsvdctl"))
            .env("LSVD_HOME", &home)
            .args(["offload", "serve", "--offload-socket"])
            .arg(&sock)
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let obj = btree_object();
    let reg = ok_json(lsvdctl(
        &home,
        &sock,
        &["offload", "register", "t", obj.to_str().unwrap(), "--json"],
    ));
    let id = reg["id"].as_u64().unwrap().to_string();
    let root = tree.root.to_string();
    for key in [1u64, 4999, 9999, 2, 10_001] {
        let r = ok_json(lsvdctl(
            &home,
            &sock,
            &[
                "offload",
                "run",
                &id,
                "--lba",
                &root,
                "--args-u64",
                &key.to_string(),
                "--json",
            ],
        ));
        let want = btree::lookup(&tree, key);
        assert_eq!(r["hops"], tree.levels, "key {key}");
        assert_eq!(r["r0"], want.is_some() as u64, "key {key}");
        if let Some(v) = want {
            assert_eq!(v, btree::demo_value(seed, key));
            assert_eq!(r["scratch_u64"][2], v, "key {key}");
        }
    }
    // Same lookup with the arguments as hex.
    let r = ok_json(lsvdctl(
        &home,
        &sock,
        &[
            "offload",
            "run",
            &id,
            "--lba",
            &root,
            "--args",
            "0100000000000000",
            "--json",
        ],
    ));
    assert_eq!(r["scratch_u64"][2], btree::demo_value(seed, 1));
    let ls = ok_json(lsvdctl(&home, &sock, &["offload", "ls", "--json"]));
    assert_eq!(ls.as_array().unwrap().len(), 1);
    assert_eq!(ls[0]["invocations"], 6);

    // Errors: JSON object with kind and hops, exit 1.
    let past = (tree.blocks.len() as u64).to_string();
    let o = lsvdctl(
        &home,
        &sock,
        &["offload", "run", &id, "--lba", &past, "--json"],
    );
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["error"]["kind"], "LbaOutOfRange");
    assert_eq!(e["error"]["hops"], 0);
    let o = lsvdctl(
        &home,
        &sock,
        &[
            "offload",
            "register",
            "nope",
            obj.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["error"]["kind"], "NotFound");

    ok_json(lsvdctl(&home, &sock, &["offload", "rm", &id, "--json"]));
    let o = lsvdctl(&home, &sock, &["offload", "rm", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NotFound"));
    drop(serve);
}
