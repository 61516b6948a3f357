//! The contract write-through mode relies on, checked without ublk: a write
//! followed by a successful `Image::flush()` survives a SIGKILL of the
//! process at any time. A child process writes stamped blocks from several
//! threads (write, group flush as write-through mode does, then report the block as acknowledged on stdout),
//! the parent kills it with SIGKILL, reopens the image and reads back every
//! acknowledged block.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log_engine::{CreateOptions, Image, OpenOptions};

const BLOCKS: u64 = 4096; // 16 MiB image

fn stamp(block: u64, round: u64) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    for (i, c) in b.chunks_mut(16).enumerate() {
        c[..8].copy_from_slice(&block.to_le_bytes());
        c[8..16].copy_from_slice(&(round ^ i as u64).to_le_bytes());
    }
    b
}

fn child(dir: &str) {
    let store = log_engine::store::spec::open_store(&format!("dir:{dir}")).unwrap();
    let img = Arc::new(Image::open(store, OpenOptions::default()).unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let fg = Arc::new(lsvd_ublk::FlushGroup::default());
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let (img, out, fg) = (img.clone(), out.clone(), fg.clone());
            std::thread::spawn(move || {
                let mut round = 1u64;
                loop {
                    // Each thread owns blocks t, t+16*7, ...; rewrites them in rounds.
                    let mut b = t;
                    while b < BLOCKS {
                        img.write(b * 4096, &stamp(b, round)).unwrap();
                        fg.flush_after(img.as_ref()).unwrap();
                        let mut o = out.lock().unwrap();
                        writeln!(o, "{b} {round}").unwrap();
                        o.flush().unwrap();
                        b += 16 * 7;
                    }
                    round += 1;
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn flushed_writes_survive_sigkill() {
    if let Ok(dir) = std::env::var("LSVD_ENGINE_KILL_CHILD") {
        child(&dir);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    let store = log_engine::store::spec::create_store(&format!("dir:{dir}")).unwrap();
    Image::create(
        store,
        &CreateOptions {
            size: BLOCKS * 4096,
            ..Default::default()
        },
    )
    .unwrap();
    for cycle in 0..3 {
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "flushed_writes_survive_sigkill", "--nocapture"])
            .env("LSVD_ENGINE_KILL_CHILD", &dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = c.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acked = std::collections::HashMap::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut it = line.split_whitespace();
                if let (Some(b), Some(r)) = (it.next(), it.next()) {
                    if let (Ok(b), Ok(r)) = (b.parse::<u64>(), r.parse::<u64>()) {
                        acked.insert(b, r);
                    }
                }
            }
            acked
        });
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(1500 + 500 * cycle));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        let _ = c.wait();
        let acked = reader.join().unwrap();
        assert!(
            !acked.is_empty(),
            "child acknowledged nothing in {:?}",
            start.elapsed()
        );
        let store = log_engine::store::spec::open_store(&format!("dir:{dir}")).unwrap();
        let img = Image::open(store, OpenOptions::default()).unwrap();
        let mut lost = Vec::new();
        let mut buf = vec![0u8; 4096];
        for (&b, &r) in &acked {
            img.read(b * 4096, &mut buf).unwrap();
            // A later round may have landed (written, not yet acknowledged).
            let got_round = u64::from_le_bytes(buf[8..16].try_into().unwrap());
            let got_block = u64::from_le_bytes(buf[..8].try_into().unwrap());
            if got_block != b || got_round < r {
                lost.push((b, r, got_block, got_round));
            }
        }
        img.close().unwrap();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} of {} acknowledged blocks lost after SIGKILL, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
    }
}
