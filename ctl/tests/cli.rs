//! End-to-end tests of the `lsvdctl` binary, each in its own temporary home.
//!
//! Tests named `engine_*` need a working engine and stores (`Image::create`,
//! `Image::open`, `read_info`, `fsck`, the `dir:`/`zoned-file:` stores); the
//! others exercise only the command line, the catalog and the refusal paths
//! that must hold before anything is written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lsvd_ctl::catalog::{Catalog, CatalogEntry};
use lsvd_ctl::pattern;

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn catalog(&self) -> Catalog {
        Catalog::new(self.path())
    }

    /// Run lsvdctl with `LSVD_HOME` pointing at this home.
    fn run(&self, args: &[&str]) -> Output {
        run_with_home(self.path(), args)
    }

    /// Run and require exit 0; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "lsvdctl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
}

fn run_with_home(home: &Path, args: &[&str]) -> Output {
    run_in(home, Path::new("/"), args)
}

/// Run with `LSVD_HOME=home` in working directory `cwd`.
fn run_in(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsvdctl"))
        .args(args)
        .current_dir(cwd)
        .env("LSVD_HOME", home)
        .env_remove("LSVD_LOG")
        .output()
        .unwrap()
}

/// Assert exit code 1 and exactly one stderr line `lsvdctl: error: ...`
/// containing every one of `needles`; returns the line.
#[track_caller]
fn assert_error(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("lsvdctl: error: "), "{line}");
    for n in needles {
        assert!(line.contains(n), "{line:?} does not contain {n:?}");
    }
    line.to_string()
}

/// Every file under `root` with its bytes (directories as empty markers).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        let Ok(rd) = fs::read_dir(p) else { return };
        for de in rd {
            let path = de.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if path.is_dir() {
                out.insert(rel, None);
                walk(root, &path, out);
            } else {
                out.insert(rel, Some(fs::read(&path).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// A catalog entry plus store files made by hand: an "existing image" that
/// does not need the engine.
fn fake_image(home: &Home, name: &str) -> PathBuf {
    let data = home.path().join("data").join(name);
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("superblock"), b"precious superblock").unwrap();
    fs::write(data.join("0000000000000001.seg"), vec![0xAB; 8192]).unwrap();
    let spec = format!("dir:{}", data.display());
    home.catalog()
        .insert(&CatalogEntry::new(name, &spec))
        .unwrap();
    data
}

// ---------------------------------------------------------------- no engine

#[test]
fn usage_errors_exit_2() {
    let h = Home::new();
    for args in [
        &["image"][..],
        &["image", "create", "a"],
        &["image", "frobnicate"],
        &["io", "write", "a"],
        &["image", "create", "a", "--size", "1G", "--compress", "lz4"],
    ] {
        let out = h.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert!(!h.path().join("images").exists());
}

#[test]
fn help_documents_exit_codes() {
    let h = Home::new();
    let out = h.ok(&["--help"]);
    assert!(out.contains("3  check failed"), "{out}");
    assert!(out.contains("LSVD_HOME"), "{out}");
}

#[test]
fn bad_sizes_are_refused_before_touching_disk() {
    let h = Home::new();
    for (size, needle) in [
        ("4097", "multiple of 4096"),
        ("0", "multiple of 4096"),
        ("6K", "multiple of 4096"),
        ("10X", "bad image size"),
        ("lots", "bad image size"),
        ("99999999999T", "bad image size"),
    ] {
        let out = h.run(&["image", "create", "a", "--size", size]);
        assert_error(&out, &[needle]);
    }
    let out = h.run(&[
        "image",
        "create",
        "a",
        "--size",
        "1G",
        "--segment-size",
        "3000",
    ]);
    assert_error(&out, &["segment size"]);
    let out = h.run(&[
        "image",
        "create",
        "a",
        "--size",
        "1G",
        "--segment-size",
        "8G",
    ]);
    assert_error(&out, &["segment size"]);
    assert_eq!(snapshot(h.path()), BTreeMap::new(), "home was touched");
}

#[test]
fn bad_names_are_refused() {
    let h = Home::new();
    let long = "x".repeat(65);
    for name in [".hidden", "a/b", "a b", "../up", long.as_str()] {
        let out = h.run(&["image", "create", name, "--size", "1G"]);
        assert_error(&out, &["invalid image name"]);
    }
    assert_eq!(snapshot(h.path()), BTreeMap::new(), "home was touched");
}

#[test]
fn bad_store_specs_are_refused() {
    let h = Home::new();
    let z = h.path().join("z");
    let z = z.display();
    for spec in [
        "bogus:/x".to_string(),
        "dir:".to_string(),
        "/just/a/path".to_string(),
        format!("zoned-file:{z}"),
        format!("zoned-file:{z},zones=4"),
        format!("zoned-file:{z},zone-size=64M,zones=four"),
        format!("zoned-file:{z},zone-size=64M,zones=4,colour=red"),
    ] {
        let out = h.run(&["image", "create", "a", "--size", "1G", "--store", &spec]);
        assert_error(&out, &["bad store spec", &spec]);
    }
    assert_eq!(snapshot(h.path()), BTreeMap::new(), "home was touched");
}

#[test]
fn unknown_image_is_an_error() {
    let h = Home::new();
    for args in [
        &["image", "info", "nope"][..],
        &["image", "info", "nope", "--json"],
        &["image", "rm", "nope"],
        &["image", "fsck", "nope"],
        &["io", "write", "nope", "--length", "4K"],
        &["io", "verify", "nope", "--length", "4K"],
        &["io", "read", "nope"],
    ] {
        assert_error(&h.run(args), &["no image named \"nope\""]);
    }
}

#[test]
fn empty_catalog_lists_nothing() {
    let h = Home::new();
    assert_eq!(
        h.ok(&["image", "ls"]),
        "NAME  SIZE  COMPRESSION  CREATED  STORE\n"
    );
    assert_eq!(h.json(&["image", "ls", "--json"]), serde_json::json!([]));
}

#[test]
fn create_over_existing_name_fails_and_leaves_it_untouched() {
    let h = Home::new();
    fake_image(&h, "vm");
    let before = snapshot(h.path());
    for args in [
        &["image", "create", "vm", "--size", "1G"][..],
        &[
            "image",
            "create",
            "vm",
            "--size",
            "64M",
            "--compress",
            "zstd",
        ],
        &[
            "image",
            "create",
            "vm",
            "--size",
            "1G",
            "--store",
            "dir:/tmp/elsewhere",
        ],
        // Bad input over an existing name is refused just the same.
        &["image", "create", "vm", "--size", "4097"],
    ] {
        let out = h.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    let line = assert_error(&h.run(&["image", "create", "vm", "--size", "1G"]), &[]);
    assert!(line.contains("\"vm\" already exists"), "{line}");
    assert_eq!(snapshot(h.path()), before, "existing image was modified");
}

#[test]
fn create_refuses_a_store_in_use_or_non_empty() {
    let h = Home::new();
    let data = fake_image(&h, "vm");
    let before = snapshot(h.path());
    // Another name on the same store path.
    let spec = format!("dir:{}", data.display());
    let out = h.run(&["image", "create", "vm2", "--size", "1G", "--store", &spec]);
    assert_error(&out, &["already used by image \"vm\""]);
    // A non-empty directory that no image claims.
    let stray = h.path().join("stray");
    fs::create_dir(&stray).unwrap();
    fs::write(stray.join("keep"), b"x").unwrap();
    let spec = format!("dir:{}", stray.display());
    let out = h.run(&["image", "create", "vm3", "--size", "1G", "--store", &spec]);
    assert_error(&out, &["already exists", "stray"]);
    assert_eq!(fs::read(stray.join("keep")).unwrap(), b"x");
    // An existing file as a zoned-file path.
    let file = h.path().join("zfile");
    fs::write(&file, b"y").unwrap();
    let spec = format!("zoned-file:{},zone-size=4M,zones=4", file.display());
    let out = h.run(&["image", "create", "vm4", "--size", "1G", "--store", &spec]);
    assert_error(&out, &["already exists", "zfile"]);
    assert_eq!(fs::read(&file).unwrap(), b"y");
    fs::remove_dir_all(&stray).unwrap();
    fs::remove_file(&file).unwrap();
    assert_eq!(snapshot(h.path()), before);
}

#[test]
fn create_while_another_create_holds_the_name_fails() {
    let h = Home::new();
    let lock = h.catalog().lock_for_create("vm").unwrap();
    let before = snapshot(h.path());
    let out = h.run(&["image", "create", "vm", "--size", "1G"]);
    assert_error(&out, &["being created by another process", ".vm.lock"]);
    assert_eq!(snapshot(h.path()), before);
    drop(lock);
}

#[test]
fn unwritable_home_is_an_error() {
    let h = Home::new();
    let file = h.path().join("file");
    fs::write(&file, b"").unwrap();
    let home = file.join("home");
    let out = run_with_home(&home, &["image", "create", "a", "--size", "1G"]);
    assert_error(&out, &[&home.display().to_string()]);
    assert_eq!(fs::read(&file).unwrap(), b"");
}

#[test]
fn unwritable_store_path_is_an_error_and_leaves_no_entry() {
    let h = Home::new();
    let file = h.path().join("file");
    fs::write(&file, b"").unwrap();
    let spec = format!("dir:{}", file.join("store").display());
    let out = h.run(&["image", "create", "a", "--size", "1G", "--store", &spec]);
    assert_error(&out, &[&file.display().to_string()]);
    assert!(h.catalog().get("a").unwrap().is_none());
    assert_eq!(fs::read(&file).unwrap(), b"");
}

#[test]
fn rm_force_removes_an_entry_whose_store_is_broken() {
    let h = Home::new();
    // A "directory store" that is a regular file cannot be opened.
    let file = h.path().join("not-a-dir");
    fs::write(&file, b"keep me").unwrap();
    let spec = format!("dir:{}", file.display());
    h.catalog()
        .insert(&CatalogEntry::new("broken", &spec))
        .unwrap();
    let out = h.run(&["image", "rm", "broken"]);
    assert_error(&out, &["--force"]);
    assert!(h.catalog().get("broken").unwrap().is_some());
    let out = h.run(&["image", "rm", "broken", "--force"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(h.catalog().get("broken").unwrap().is_none());
    assert_eq!(fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn broken_catalog_entry_is_reported_by_ls() {
    let h = Home::new();
    h.catalog().ensure_dirs().unwrap();
    fs::write(h.catalog().entry_path("junk"), b"{oops").unwrap();
    let v = h.json(&["image", "ls", "--json"]);
    assert_eq!(v[0]["name"], "junk");
    assert!(v[0]["error"].as_str().unwrap().contains("corrupt"), "{v}");
    let text = h.ok(&["image", "ls"]);
    assert!(text.contains("junk") && text.contains("error"), "{text}");
    assert_error(
        &h.run(&["image", "info", "junk"]),
        &["corrupt", "junk.json"],
    );
}

// ------------------------------------------------------------- with engine

/// Needs the real stores (open of a missing store says NotFound).
#[test]
fn engine_rm_of_an_image_whose_store_is_gone_removes_the_entry() {
    let h = Home::new();
    let spec = format!("dir:{}", h.path().join("data/gone").display());
    h.catalog()
        .insert(&CatalogEntry::new("gone", &spec))
        .unwrap();
    assert!(h
        .ok(&["image", "rm", "gone"])
        .contains("removed image gone"));
    assert!(h.catalog().get("gone").unwrap().is_none());
}

#[test]
fn engine_create_info_ls_rm() {
    let h = Home::new();
    let out = h.ok(&["image", "create", "vm1", "--size", "64M"]);
    assert!(out.contains("created image vm1"), "{out}");
    let entry = h.catalog().get("vm1").unwrap().unwrap();
    let data = h.path().join("data/vm1");
    assert_eq!(entry.store, format!("dir:{}", data.display()));
    assert!(data.is_dir());

    let info = h.ok(&["image", "info", "vm1"]);
    assert!(info.contains("67108864 (64.0 MiB)"), "{info}");
    assert!(info.contains("compression:"), "{info}");
    let v = h.json(&["image", "info", "vm1", "--json"]);
    assert_eq!(v["name"], "vm1");
    assert_eq!(v["size"], 64 << 20);
    assert_eq!(v["block_size"], 4096);
    assert_eq!(v["segment_size"], 8 << 20);
    assert_eq!(v["compression"], "none");
    assert_eq!(v["store"], entry.store);
    assert!(v["uuid"].as_str().is_some_and(|u| !u.is_empty()), "{v}");
    assert!(v["segments"].is_u64() && v["store_used"].is_u64(), "{v}");

    h.ok(&[
        "image",
        "create",
        "vm2",
        "--size",
        "1G",
        "--segment-size",
        "4M",
        "--compress",
        "zstd",
    ]);
    let v = h.json(&["image", "ls", "--json"]);
    let names: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names, ["vm1", "vm2"]);
    assert_eq!(v[1]["size"], 1u64 << 30);
    assert_eq!(v[1]["segment_size"], 4 << 20);
    assert_eq!(v[1]["compression"], "zstd");
    assert!(v[1]["error"].is_null());
    let text = h.ok(&["image", "ls"]);
    assert!(
        text.contains("vm2") && text.contains("1.0 GiB") && text.contains("zstd"),
        "{text}"
    );

    assert!(h.ok(&["image", "rm", "vm1"]).contains("removed image vm1"));
    assert!(!data.exists(), "store directory left behind");
    assert!(h.catalog().get("vm1").unwrap().is_none());
    assert_error(&h.run(&["image", "info", "vm1"]), &["no image named"]);
    let v = h.json(&["image", "ls", "--json"]);
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[test]
fn engine_failed_create_over_real_image_leaves_it_byte_identical() {
    let h = Home::new();
    h.ok(&["image", "create", "vm", "--size", "16M"]);
    h.ok(&[
        "io",
        "write",
        "vm",
        "--offset",
        "0",
        "--length",
        "1M",
        "--pattern",
        "3",
    ]);
    let before = snapshot(h.path());
    assert!(before.len() > 2);
    assert_error(
        &h.run(&["image", "create", "vm", "--size", "16M"]),
        &["already exists"],
    );
    assert_error(&h.run(&["image", "create", "vm", "--size", "0"]), &[]);
    let spec = format!("dir:{}", h.path().join("data/vm").display());
    assert_error(
        &h.run(&["image", "create", "vm2", "--size", "16M", "--store", &spec]),
        &["already used"],
    );
    assert_eq!(snapshot(h.path()), before, "existing image was modified");
    assert_eq!(
        h.run(&["io", "verify", "vm", "--length", "1M", "--pattern", "3"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn engine_io_write_verify_read_fsck() {
    let h = Home::new();
    h.ok(&[
        "image",
        "create",
        "vm",
        "--size",
        "16M",
        "--segment-size",
        "1M",
    ]);
    let out = h.ok(&[
        "io",
        "write",
        "vm",
        "--offset",
        "1M",
        "--length",
        "2M",
        "--pattern",
        "7",
    ]);
    assert!(out.contains("wrote 2.0 MiB"), "{out}");
    let out = h.ok(&[
        "io",
        "verify",
        "vm",
        "--offset",
        "1M",
        "--length",
        "2M",
        "--pattern",
        "7",
    ]);
    assert!(out.contains(": ok"), "{out}");
    // A sub-range verifies on its own.
    h.ok(&[
        "io",
        "verify",
        "vm",
        "--offset",
        "2M",
        "--length",
        "4K",
        "--pattern",
        "7",
    ]);

    // Wrong seed: exit 3 and the first bad block named.
    let out = h.run(&[
        "io",
        "verify",
        "vm",
        "--offset",
        "1M",
        "--length",
        "2M",
        "--pattern",
        "8",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("block at offset 1048576") && err.contains("seed 7"),
        "{err}"
    );
    // Unwritten range reads as zeros.
    let out = h.run(&[
        "io",
        "verify",
        "vm",
        "--offset",
        "8M",
        "--length",
        "4K",
        "--pattern",
        "7",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zeros"));

    // Read back to a file and to stdout.
    let file = h.path().join("out.bin");
    h.ok(&[
        "io",
        "read",
        "vm",
        "--offset",
        "1M",
        "--length",
        "2M",
        "-o",
        file.to_str().unwrap(),
    ]);
    let mut want = vec![0u8; 2 << 20];
    pattern::fill(7, 1 << 20, &mut want);
    assert!(
        fs::read(&file).unwrap() == want,
        "read -o returned other data"
    );
    let out = h.run(&["io", "read", "vm", "--offset", "1M", "--length", "8K"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == want[..8192]);

    // Misaligned or out-of-range requests are refused.
    assert_error(
        &h.run(&["io", "write", "vm", "--offset", "100", "--length", "4K"]),
        &["multiple of 4096"],
    );
    assert_error(
        &h.run(&["io", "write", "vm", "--offset", "15M", "--length", "2M"]),
        &["past the end"],
    );

    let out = h.ok(&["image", "fsck", "vm"]);
    assert!(out.contains("result: clean"), "{out}");
    let v = h.json(&["image", "fsck", "vm", "--json"]);
    assert_eq!(v["clean"], true);
    assert_eq!(v["problems"], serde_json::json!([]));
    assert!(v["segments_checked"].as_u64().unwrap() >= 2, "{v}");
}

#[test]
fn engine_fsck_reports_damage_with_exit_3() {
    let h = Home::new();
    h.ok(&[
        "image",
        "create",
        "vm",
        "--size",
        "16M",
        "--segment-size",
        "1M",
    ]);
    h.ok(&["io", "write", "vm", "--length", "4M", "--pattern", "1"]);
    // Flip one byte in the middle of the largest file of the store (a data
    // segment: the image is uncompressed and holds 4 MiB of pattern).
    let data = h.path().join("data/vm");
    let snap = snapshot(&data);
    let (victim, bytes) = snap
        .iter()
        .filter_map(|(p, b)| Some((p, b.as_ref()?)))
        .max_by_key(|(_, b)| b.len())
        .unwrap();
    let mut bytes = bytes.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(data.join(victim), &bytes).unwrap();

    let out = h.run(&["image", "fsck", "vm"]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DAMAGED"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));
    let out = h.run(&["image", "fsck", "vm", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clean"], false);
    assert!(!v["problems"].as_array().unwrap().is_empty());
}

#[test]
fn engine_zoned_file_store() {
    let h = Home::new();
    let z = h.path().join("zones.img");
    let spec = format!("zoned-file:{},zone-size=4M,zones=24", z.display());
    // A relative path is made absolute in the catalog entry.
    let rel = "zoned-file:zones.img,zone-size=4M,zones=24";
    let args = [
        "image",
        "create",
        "zvm",
        "--size",
        "32M",
        "--segment-size",
        "1M",
        "--store",
        rel,
    ];
    let out = run_in(h.path(), h.path(), &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(h.catalog().get("zvm").unwrap().unwrap().store, spec);
    assert!(z.exists());
    h.ok(&[
        "io",
        "write",
        "zvm",
        "--offset",
        "4M",
        "--length",
        "3M",
        "--pattern",
        "9",
    ]);
    h.ok(&[
        "io",
        "verify",
        "zvm",
        "--offset",
        "4M",
        "--length",
        "3M",
        "--pattern",
        "9",
    ]);
    assert!(h.ok(&["image", "fsck", "zvm"]).contains("result: clean"));
    assert_eq!(h.json(&["image", "info", "zvm", "--json"])["store"], spec);
    h.ok(&["image", "rm", "zvm"]);
    assert!(!z.exists(), "zoned file left behind");
}

/// A 1 MiB tmpfs mounted over a directory; unmounted on drop.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    /// `None` (and a message saying the test is skipped) when mounting is not
    /// possible here (not root, no CAP_SYS_ADMIN, no tmpfs).
    fn mount() -> Option<TinyFs> {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
            .arg(dir.path())
            .output();
        match st {
            Ok(o) if o.status.success() => Some(TinyFs { dir }),
            other => {
                eprintln!(
                    "SKIPPED: cannot mount a 1 MiB tmpfs here ({other:?}); full-disk case not run"
                );
                None
            }
        }
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Full disk: skipped (with a message) where tmpfs cannot be mounted.
#[test]
fn engine_full_disk_is_a_clear_error() {
    let Some(fs_) = TinyFs::mount() else { return };
    let home = fs_.dir.path().join("home");
    run_ok(
        &home,
        &[
            "image",
            "create",
            "vm",
            "--size",
            "64M",
            "--segment-size",
            "256K",
        ],
    );
    let out = run_with_home(
        &home,
        &["io", "write", "vm", "--length", "4M", "--pattern", "1"],
    );
    let line = assert_error(&out, &[]);
    assert!(line.to_lowercase().contains("no space"), "{line}");

    // Creating a new image on the full file system fails cleanly and leaves
    // no catalog entry and no store behind.
    let filler = fs_.dir.path().join("filler");
    let _ = fs::write(&filler, vec![1u8; 1 << 20]);
    let out = run_with_home(&home, &["image", "create", "vm2", "--size", "64M"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!home.join("images/vm2.json").exists());
    assert!(!home.join("data/vm2").exists());
    assert!(Catalog::new(&home).get("vm").unwrap().is_some());
}

fn run_ok(home: &Path, args: &[&str]) {
    let out = run_with_home(home, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image with a local cache: the journal and read cache are made at
/// create, used by io, reported by `cache info`, emptied by `cache flush`,
/// and removed with the image.
#[test]
fn engine_image_with_cache_dir() {
    let h = Home::new();
    let cache = h.path().join("nvme");
    let cache_s = cache.to_str().unwrap();
    h.ok(&[
        "image",
        "create",
        "vm",
        "--size",
        "64M",
        "--segment-size",
        "1M",
        "--cache-dir",
        cache_s,
        "--journal-size",
        "8M",
        "--read-cache-size",
        "4M",
    ]);
    assert!(cache.join("vm.journal").exists(), "journal not created");
    h.ok(&[
        "io",
        "write",
        "vm",
        "--offset",
        "0",
        "--length",
        "4M",
        "--pattern",
        "11",
    ]);
    h.ok(&[
        "io",
        "verify",
        "vm",
        "--offset",
        "0",
        "--length",
        "4M",
        "--pattern",
        "11",
    ]);
    let info = h.json(&["cache", "info", "vm", "--json"]);
    assert_eq!(info["journal"]["size"], 8 << 20, "{info}");
    assert!(
        info["read_cache"]["capacity"].as_u64().unwrap() > 0,
        "{info}"
    );
    assert!(
        info["read_cache"]["hits"].as_u64().unwrap()
            + info["read_cache"]["misses"].as_u64().unwrap()
            > 0,
        "{info}"
    );
    h.ok(&["cache", "flush", "vm"]);
    let text = h.ok(&["image", "fsck", "vm"]);
    assert!(text.contains("result: clean"), "{text}");
    // A plain image has no cache to report.
    h.ok(&["image", "create", "plain", "--size", "16M"]);
    assert_error(&h.run(&["cache", "info", "plain"]), &["no local cache"]);
    // Bad journal size is refused before anything is made.
    assert_error(
        &h.run(&[
            "image",
            "create",
            "vm2",
            "--size",
            "16M",
            "--cache-dir",
            cache_s,
            "--journal-size",
            "4K",
        ]),
        &["journal size"],
    );
    assert!(!h.path().join("images/vm2.json").exists());
    h.ok(&["image", "rm", "vm"]);
    assert!(!cache.join("vm.journal").exists(), "journal left behind");
    assert!(!cache.join("vm.rcache").exists(), "read cache left behind");
}
