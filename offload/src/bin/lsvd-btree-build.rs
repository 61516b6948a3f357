//! `lsvd-btree-build`: lays out the example B+-tree (4 KiB nodes, u64 keys and values,
//! fanout up to 254, layout of `include/lsvd_offload.h`) into a raw file or an existing
//! image, and prints where the root is and the expected answers of some lookups.
//!
//! Keys are `1, 3, 5, ..., 2n-1` (even keys are absent); the value of key `k` is
//! `splitmix64(seed ^ k * φ)` (`lsvd_offload::btree::demo_value`). Block 0 is a filler;
//! the root is the last block written.
//!
//! ```text
//! lsvd-btree-build --levels 3 --out tree.raw            # then: lsvdctl image import t tree.raw
//! lsvd-btree-build --keys 100000 --fanout 64 --store dir:/var/lib/lsvd/data/t --json
//! ```

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use lsvd_offload::btree;
use serde_json::json;

struct Opts {
    keys: Option<u64>,
    levels: Option<u32>,
    fanout: usize,
    seed: u64,
    out: Option<PathBuf>,
    store: Option<String>,
    answers: u64,
    json: bool,
}

const USAGE: &str =
    "usage: lsvd-btree-build (--keys N | --levels L) [--fanout F (2..=254, default 254)]
       [--seed S (default 1)] (--out FILE | --store SPEC) [--answers N (default 8)] [--json]
  --out FILE    write the blocks to a raw file (then `lsvdctl image import NAME FILE`)
  --store SPEC  write into the existing image in store SPEC (dir:PATH, zoned-file:...),
                which must not be open elsewhere";

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        keys: None,
        levels: None,
        fanout: btree::FANOUT,
        seed: 1,
        out: None,
        store: None,
        answers: 8,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--keys" => o.keys = Some(val()?.parse().context("--keys")?),
            "--levels" => o.levels = Some(val()?.parse().context("--levels")?),
            "--fanout" => o.fanout = val()?.parse().context("--fanout")?,
            "--seed" => o.seed = val()?.parse().context("--seed")?,
            "--out" => o.out = Some(PathBuf::from(val()?)),
            "--store" => o.store = Some(val()?),
            "--answers" => o.answers = val()?.parse().context("--answers")?,
            "--json" => o.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if !(2..=btree::FANOUT).contains(&o.fanout) {
        bail!("--fanout must be 2..={}", btree::FANOUT);
    }
    if o.out.is_some() == o.store.is_some() {
        bail!("give exactly one of --out and --store\n{USAGE}");
    }
    Ok(o)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("lsvd-btree-build: error: {e:#}");
        std::process::exit(1);
    }
}

/// Largest tree built in memory (blocks).
const MAX_BLOCKS: u64 = 1 << 20;

fn run() -> anyhow::Result<()> {
    let o = parse()?;
    let n = match (o.keys, o.levels) {
        (Some(k), None) => k,
        (None, Some(l)) if (1..=16).contains(&l) => btree::keys_for_levels(l, o.fanout)
            .with_context(|| format!("{l} levels at fanout {} overflow", o.fanout))?,
        (None, Some(l)) => bail!("--levels {l} must be 1..=16"),
        _ => bail!("give exactly one of --keys and --levels\n{USAGE}"),
    };
    if n == 0 {
        bail!("the tree needs at least one key");
    }
    if n / 2 > MAX_BLOCKS * o.fanout as u64 || n > (u64::MAX - 1) / 2 {
        bail!("{n} keys is more than this tool builds in memory");
    }
    let leaves = n.div_ceil(o.fanout as u64);
    if leaves + leaves / (o.fanout as u64 - 1) + 2 > MAX_BLOCKS {
        bail!(
            "{n} keys at fanout {} need more than {MAX_BLOCKS} blocks",
            o.fanout
        );
    }
    let tree = btree::build(&btree::demo_pairs(n, o.seed), o.fanout);
    let bytes = tree.blocks.len() as u64 * 4096;
    let target = if let Some(p) = &o.out {
        let mut f = std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?;
        for b in &tree.blocks {
            f.write_all(b)
                .with_context(|| format!("write {}", p.display()))?;
        }
        f.sync_all()
            .with_context(|| format!("sync {}", p.display()))?;
        p.display().to_string()
    } else {
        let spec = o.store.clone().unwrap_or_default();
        let store = log_engine::store::spec::open_store(&spec)
            .with_context(|| format!("open store {spec}"))?;
        let img = log_engine::Image::open(store, log_engine::OpenOptions::default())
            .with_context(|| format!("open the image in {spec}"))?;
        if img.size() < bytes {
            let _ = img.close();
            bail!(
                "the image ({} bytes) is smaller than the tree ({bytes} bytes)",
                img.size()
            );
        }
        let w = btree::write_to_image(&img, &tree.blocks);
        let c = img.close();
        w.context("write the tree")?;
        c.context("close the image")?;
        spec
    };
    // Sample answers: present keys spread over the range, then absent ones.
    let mut answers = Vec::new();
    let k = o.answers.min(n);
    for i in 0..k {
        let idx = if k <= 1 { 0 } else { i * (n - 1) / (k - 1) };
        let key = 2 * idx + 1;
        answers.push((key, btree::lookup(&tree, key)));
    }
    for key in [0u64, 2, 2 * n, 2 * n + 1] {
        answers.push((key, btree::lookup(&tree, key)));
    }
    if o.json {
        let a: Vec<_> = answers.iter().map(|(k, v)| json!([k, v])).collect();
        println!(
            "{}",
            json!({"target": target, "root": tree.root, "levels": tree.levels,
                "blocks": tree.blocks.len(), "bytes": bytes, "keys": n, "fanout": o.fanout,
                "seed": o.seed, "answers": a})
        );
    } else {
        println!(
            "wrote {} blocks ({bytes} bytes) to {target}: {n} keys, fanout {}, {} levels, root LBA {}",
            tree.blocks.len(),
            o.fanout,
            tree.levels,
            tree.root
        );
        for (k, v) in answers {
            match v {
                Some(v) => println!("key {k} -> {v} ({v:#x})"),
                None => println!("key {k} -> absent"),
            }
        }
    }
    Ok(())
}
