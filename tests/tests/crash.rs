//! Crash test of the write journal: a child process (`lsvd-crash-child`)
//! writes random stamped data from several threads with random flushes and
//! is killed with SIGKILL at a random moment; this parent then damages the
//! leftovers as the variant says, reopens the disk (replaying the journal)
//! and checks, sector by sector:
//! (a) every write acknowledged before the last completed flush is present
//!     (unless the open reported accepted cache loss);
//! (b) prefix consistency: the image is exactly the image after write seq
//!     `R = OpenReport::replayed_to` — every known write with seq <= R is
//!     visible where no later write <= R covers it, no write > R is.
//!
//! Seqs come from the engine (the child's `A wid seq` lines, and the
//! journal's records read before the reopen); writes the child never saw
//! acknowledged and that are not in the journal can only come from the
//! backend (seq <= the backend's seq), which is checked.
//!
//! Variants: plain, reordered completions (journal test hook), journal
//! wiped, torn journal tail, corrupted journal record, lost newest
//! segments. Cycles per store: `CRASH_CYCLES` (default 20); seed:
//! `CRASH_SEED`. CI and soaks: `tests/crash/run.sh --cycles N`.

#[path = "../crash/stamp.rs"]
#[allow(dead_code)]
mod stamp;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// Embedded stores and rados: specs alike.
use log_engine::{CreateOptions, Image, OpenOptions, SegmentStore};
use lsvd_cache::disk::{Disk, OpenReport};
use lsvd_cache::journal::scan::{open_for_read, probe, read_record, scan};
use lsvd_cache::journal::{JournalConfig, RecordKind};
use lsvd_ctl::stores::{create_store_force, open_store};
use rand::{Rng, SeedableRng};

const IMAGE: u64 = 16 << 20;
const SEG: u32 = 2 << 20;
const JOURNAL: u64 = 16 << 20;
const THREADS: u64 = 4;
const SECTORS: usize = (IMAGE / 512) as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Plain,
    Reorder,
    Wipe,
    Torn,
    Corrupt,
    LostSegments,
}

const VARIANTS: [Variant; 6] = [
    Variant::Plain,
    Variant::Reorder,
    Variant::Wipe,
    Variant::Torn,
    Variant::Corrupt,
    Variant::LostSegments,
];

/// Store under test: `dir`, `zoned-file`, or a RADOS spec prefix from
/// `LSVD_CRASH_RADOS` (each run gets its own image name).
fn spec(kind: &str, dir: &Path, seed: u64) -> String {
    if kind == "rados" {
        let prefix = std::env::var("LSVD_CRASH_RADOS")
            .expect("LSVD_CRASH_RADOS=rados:POOL/NAME is required for the RADOS crash test");
        return format!("{prefix}-{}", seed % 1_000_000_007);
    }
    if kind == "zns" {
        return std::env::var("LSVD_CRASH_ZNS")
            .ok()
            .filter(|s| s.starts_with("zns:"))
            .expect(
                "LSVD_CRASH_ZNS=zns:/dev/DEVICE is required for the zoned-device crash test \
                 (tests/vm/guest/zns-suite.sh runs it in the QEMU guest)",
            );
    }
    if kind == "zoned-file" {
        format!(
            "zoned-file:{},zone-size=4M,zones=32,max-open=4,max-active=6",
            dir.join("zoned.img").display()
        )
    } else {
        format!("dir:{}", dir.join("img").display())
    }
}

fn open_opts() -> OpenOptions {
    OpenOptions {
        upload_threads: 2,
        ..Default::default()
    }
}

/// A write the checker knows: its seq and extent.
#[derive(Clone, Copy, Debug)]
struct Known {
    seq: u64,
    off: u64,
    len: u64,
}

struct Harness {
    kind: &'static str,
    dir: tempfile::TempDir,
    spec: String,
    jc: JournalConfig,
    /// Visible write id per sector after the previous cycle (0 = zeros).
    base: Vec<u64>,
    rng: rand::rngs::StdRng,
    violations: Vec<String>,
    counts: BTreeMap<Variant, u64>,
    loss_opens: u64,
    replayed: u64,
}

impl Harness {
    fn new(kind: &'static str, seed: u64) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = spec(kind, dir.path(), seed);
        // A real zoned device keeps the last run's store: erase it.
        let store = create_store_force(&spec, kind == "zns").expect("create store");
        Image::create(
            store,
            &CreateOptions {
                size: IMAGE,
                segment_size: SEG,
                ..Default::default()
            },
        )
        .expect("create image");
        let jc = JournalConfig::new(dir.path().join("journal"), JOURNAL);
        Harness {
            kind,
            dir,
            spec,
            jc,
            base: vec![0; SECTORS],
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            violations: Vec::new(),
            counts: BTreeMap::new(),
            loss_opens: 0,
            replayed: 0,
        }
    }

    fn violation(&mut self, cycle: usize, v: Variant, msg: String) {
        let store = self.kind;
        let line = format!("[{store} cycle {cycle} {v:?}] {msg}");
        eprintln!("VIOLATION {line}");
        self.violations.push(line);
    }

    /// Run the child until a random SIGKILL; returns acks and last flush.
    fn run_child(&mut self, cycle: usize, reorder: bool) -> (HashMap<u64, Known>, u64) {
        let log = self.dir.path().join("child.stderr");
        let errf = std::fs::File::create(&log).expect("child log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lsvd-crash-child"));
        cmd.arg(&self.spec)
            .arg(&self.jc.path)
            .arg(JOURNAL.to_string())
            .arg(THREADS.to_string())
            .arg(self.rng.gen::<u64>().to_string())
            .arg(((cycle as u64 + 1) << 32).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(errf));
        if reorder {
            cmd.arg("reorder");
        }
        let mut child = cmd.spawn().expect("spawn lsvd-crash-child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l == "READY" => break,
                Ok(l) => lines.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "crash child did not start: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(self.rng.gen_range(30..400)));
        let exited_early = child.try_wait().ok().flatten();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let _ = reader.join();
        lines.extend(rx.try_iter());
        if let Some(st) = exited_early {
            panic!(
                "crash child exited by itself ({st}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let mut acks = HashMap::new();
        let mut flushed = 0;
        for l in lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
            match (f.first().copied(), num(1), num(2), num(3), num(4)) {
                (Some("A"), Some(wid), Some(seq), Some(off), Some(len)) => {
                    acks.insert(wid, Known { seq, off, len });
                }
                (Some("F"), Some(seq), ..) => flushed = flushed.max(seq),
                _ => {} // a line cut by the kill
            }
        }
        (acks, flushed)
    }

    fn cycle(&mut self, cycle: usize) {
        let variant = VARIANTS[cycle % VARIANTS.len()];
        let (acks, flushed) = self.run_child(cycle, variant == Variant::Reorder);

        // What the journal holds (read before any damage): wid -> seq.
        let mut journal: HashMap<u64, Known> = HashMap::new();
        let mut records = Vec::new();
        let mut sb_flushed = 0;
        if let Some(Ok(sb)) = probe(&self.jc.path).expect("probe").map(|p| p.superblock) {
            sb_flushed = sb.flushed_seq;
            let s = scan(&self.jc.path, &sb).expect("scan journal");
            let f = open_for_read(&self.jc.path).expect("open journal");
            for r in &s.records {
                if r.header.kind != RecordKind::Write {
                    continue;
                }
                let data = read_record(&f, &self.jc.path, r).expect("read record");
                let (off, len) = r.header.extents[0];
                if let stamp::Sector::Stamp { wid, .. } = stamp::decode(&data[..512], off / 512) {
                    journal.insert(
                        wid,
                        Known {
                            seq: r.header.seq,
                            off,
                            len,
                        },
                    );
                }
            }
            records = s.records;
        }
        for (wid, k) in &journal {
            if let Some(a) = acks.get(wid) {
                if a.seq != k.seq {
                    let m = format!("write {wid}: acked seq {} but journal seq {}", a.seq, k.seq);
                    self.violation(cycle, variant, m);
                }
            }
        }

        // Damage as the variant says.
        let mut applied = variant;
        match variant {
            Variant::Plain | Variant::Reorder => {}
            Variant::Wipe => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&self.jc.path)
                    .expect("open journal");
                f.write_all_at(&[0u8; 8192], 0).expect("wipe");
            }
            Variant::Torn => {
                let floor = flushed.max(sb_flushed);
                match records.iter().rfind(|r| r.header.seq > floor) {
                    Some(r) => {
                        let mut junk = vec![0u8; 4096];
                        self.rng.fill(&mut junk[..]);
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&self.jc.path)
                            .expect("open journal");
                        f.write_all_at(&junk, r.pos + r.header.record_len - 4096)
                            .expect("tear");
                    }
                    None => {
                        eprintln!(
                            "torn: no record above seq {floor} (records {}, last {:?})",
                            records.len(),
                            records.last().map(|r| r.header.seq)
                        );
                        applied = Variant::Plain
                    }
                }
            }
            Variant::Corrupt => {
                if records.is_empty() {
                    applied = Variant::Plain;
                } else {
                    let r = &records[self.rng.gen_range(0..records.len())];
                    let at = r.pos + self.rng.gen_range(0..r.header.record_len);
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&self.jc.path)
                        .expect("open journal");
                    let mut b = [0u8; 1];
                    f.read_exact_at(&mut b, at).expect("read");
                    b[0] ^= 0x5a;
                    f.write_all_at(&b, at).expect("corrupt");
                }
            }
            Variant::LostSegments => {
                let store = open_store(&self.spec).expect("open store");
                if !lose_newest_segments(&*store, self.rng.gen_range(1..=3)) {
                    applied = Variant::Plain;
                }
            }
        }
        *self.counts.entry(applied).or_default() += 1;

        // Reopen: damaged journals may refuse, then accept the loss.
        let may_refuse = matches!(
            applied,
            Variant::Wipe | Variant::Corrupt | Variant::LostSegments
        );
        let store = open_store(&self.spec).expect("open store");
        let (disk, rep, accepted) = match Disk::open(store, &self.jc, None, open_opts(), false) {
            Ok((d, r)) => {
                if applied == Variant::Wipe {
                    self.violation(cycle, variant, "opened silently on a wiped journal".into());
                }
                (d, r, false)
            }
            Err(e) if may_refuse => {
                let store = open_store(&self.spec).expect("open store");
                match Disk::open(store, &self.jc, None, open_opts(), true) {
                    Ok((d, r)) => {
                        if r.cache_loss.is_none() {
                            let m = format!("refused ({e}) then opened without reporting loss");
                            self.violation(cycle, variant, m);
                        }
                        self.loss_opens += 1;
                        (d, r, true)
                    }
                    Err(e2) => {
                        let m = format!("open with accept_cache_loss failed: {e2} (first: {e})");
                        self.violation(cycle, variant, m);
                        return;
                    }
                }
            }
            Err(e) => {
                self.violation(cycle, variant, format!("open failed: {e}"));
                return;
            }
        };
        self.replayed += rep.replayed_records;
        self.check(
            cycle, variant, &disk, &rep, &acks, &journal, flushed, accepted,
        );
        if let Err(e) = disk.close() {
            self.violation(cycle, variant, format!("close failed: {e}"));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        cycle: usize,
        variant: Variant,
        disk: &Disk,
        rep: &OpenReport,
        acks: &HashMap<u64, Known>,
        journal: &HashMap<u64, Known>,
        flushed: u64,
        accepted: bool,
    ) {
        let r = rep.replayed_to;
        let mut known: HashMap<u64, Known> = journal.clone();
        known.extend(acks.iter().map(|(w, k)| (*w, *k)));
        // (a) flushed writes survive.
        if !accepted && r < flushed {
            let m = format!("image at seq {r} but a flush completed at {flushed} (report {rep:?})");
            self.violation(cycle, variant, m);
        }
        // Seqs above the backend's can only come from the journal.
        let seqs: std::collections::HashSet<u64> = known.values().map(|k| k.seq).collect();
        let lo = rep.backend_seq.max(self.cycle_floor(&known));
        for s in lo + 1..=r {
            if !seqs.contains(&s) {
                let m = format!("seq {s} <= {r} applied by replay but in no journal record");
                self.violation(cycle, variant, m);
                break;
            }
        }
        // (b) the image is exactly the image after write seq R.
        let mut expect = self.base.clone();
        let mut order: Vec<(&u64, &Known)> = known.iter().filter(|(_, k)| k.seq <= r).collect();
        order.sort_by_key(|(_, k)| k.seq);
        for (wid, k) in order {
            let first = (k.off / 512) as usize;
            for e in &mut expect[first..first + (k.len / 512) as usize] {
                *e = *wid;
            }
        }
        let mut visible = vec![0u64; SECTORS];
        let mut buf = vec![0u8; 1 << 20];
        for chunk in 0..(IMAGE >> 20) {
            disk.read(chunk << 20, &mut buf).expect("read image");
            for (i, s) in buf.chunks(512).enumerate() {
                let lba = (chunk << 11) + i as u64;
                visible[lba as usize] = match stamp::decode(s, lba) {
                    stamp::Sector::Zero => 0,
                    stamp::Sector::Stamp { wid, .. } => wid,
                    stamp::Sector::Garbage => u64::MAX,
                };
            }
        }
        let mut bad = 0;
        let mut first_bad = None;
        for lba in 0..SECTORS {
            let (v, e) = (visible[lba], expect[lba]);
            if v == e {
                continue;
            }
            // A write nobody reported: only from the backend, never newer
            // than R; its sectors are self-consistent (checked by decode).
            let unknown = v != u64::MAX && v != 0 && !known.contains_key(&v) && v != self.base[lba];
            if unknown {
                continue;
            }
            bad += 1;
            first_bad.get_or_insert((lba, v, e));
        }
        if let Some((lba, v, e)) = first_bad {
            let seq = |w: u64| known.get(&w).map(|k| k.seq);
            let m = format!(
                "{bad} sectors differ from the image at seq {r}; first: sector {lba} holds write \
                 {v:#x} (seq {:?}) but write {e:#x} (seq {:?}) is expected; flush {flushed}, \
                 report {rep:?}",
                seq(v),
                seq(e)
            );
            self.violation(cycle, variant, m);
        }
        self.base = visible;
    }

    /// Seq floor of this cycle: writes at or below it are from earlier
    /// cycles (the smallest seq the child reported, minus one).
    fn cycle_floor(&self, known: &HashMap<u64, Known>) -> u64 {
        known.values().map(|k| k.seq).min().unwrap_or(1) - 1
    }
}

/// Delete up to `n` of the newest segments written after the newest
/// checkpoint (what a backend that lost its latest objects looks like).
fn lose_newest_segments(store: &dyn SegmentStore, n: usize) -> bool {
    let ckpt = store
        .list_meta()
        .expect("list meta")
        .iter()
        .filter_map(|m| m.strip_prefix("ckpt."))
        .filter(|s| s.len() == 16)
        .filter_map(|s| u64::from_str_radix(s, 16).ok())
        .max()
        .unwrap_or(0);
    let segs: Vec<u64> = store
        .list_segments()
        .expect("list segments")
        .iter()
        .map(|e| e.seq)
        .filter(|&s| s > ckpt)
        .collect();
    for &s in segs.iter().rev().take(n) {
        store.delete_segment(s).expect("delete segment");
    }
    !segs.is_empty()
}

fn run(kind: &'static str) {
    let cycles: usize = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let name = kind;
    eprintln!("crash[{name}]: {cycles} cycles, CRASH_SEED={seed}");
    let mut h = Harness::new(kind, seed);
    let t0 = Instant::now();
    for c in 0..cycles {
        h.cycle(c);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "crash[{name}]: cycles={cycles} violations={} cycles/s={:.2} replayed_records={} \
         loss_opens={} variants={:?} seed={seed}",
        h.violations.len(),
        cycles as f64 / secs,
        h.replayed,
        h.loss_opens,
        h.counts
    );
    assert!(
        h.violations.is_empty(),
        "{} violations (CRASH_SEED={seed}):\n{}",
        h.violations.len(),
        h.violations.join("\n")
    );
}

#[test]
fn crash_dir_store() {
    run("dir");
}

#[test]
fn crash_zoned_file_store() {
    run("zoned-file");
}

/// The same on a real Ceph cluster: run by `tests/ceph/run.sh` (which sets
/// `LSVD_CRASH_RADOS`); ignored elsewhere rather than passing without one.
#[test]
#[ignore = "needs a Ceph cluster: tests/ceph/run.sh runs it"]
fn crash_rados_store() {
    run("rados");
}

#[test]
#[ignore = "needs a zoned block device (LSVD_CRASH_ZNS): tests/vm/guest/zns-suite.sh runs it"]
fn crash_zns_device() {
    run("zns");
}
