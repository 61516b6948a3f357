//! `lsvdctl cache info|flush`: the local write journal and read cache.

use anyhow::{bail, Context};
use log_engine::size::format_size;
use lsvd_cache::{journal, read_cache};
use serde_json::json;

use super::{open_image, EXIT_OK};
use crate::catalog::Catalog;
use crate::cli::CacheCmd;
use crate::output::{key_values, print, print_json};
use crate::volume::Volume;

pub(crate) fn run(catalog: &Catalog, cmd: CacheCmd, acl: bool) -> anyhow::Result<u8> {
    match cmd {
        CacheCmd::Info { name, json } => info(catalog, &name, json),
        CacheCmd::Flush { name } => flush(catalog, &name, acl),
    }
}

fn info(catalog: &Catalog, name: &str, json: bool) -> anyhow::Result<u8> {
    let entry = catalog.require(name)?;
    let Some(c) = &entry.cache else {
        bail!("image {name:?} has no local cache (create it with --cache-dir)");
    };
    let jpath = c.journal_path(name);
    let j =
        journal::inspect(&jpath).with_context(|| format!("inspect journal {}", jpath.display()))?;
    let rc = match c.read_cache_config(name) {
        Some(cfg) => Some(
            read_cache::inspect(&cfg.path)
                .with_context(|| format!("inspect read cache {}", cfg.path.display()))?,
        ),
        None => None,
    };
    let fill = if j.size > 0 {
        j.used as f64 / j.size as f64
    } else {
        0.0
    };
    let hit_rate = rc.as_ref().map(|r| {
        let total = r.stats.hits + r.stats.misses;
        if total == 0 {
            0.0
        } else {
            r.stats.hits as f64 / total as f64
        }
    });
    if json {
        print_json(&json!({
            "name": name,
            "journal": {
                "path": jpath.display().to_string(),
                "size": j.size,
                "used": j.used,
                "fill": fill,
                "records": j.records,
                "generation": j.generation,
                "base_seq": j.base_seq,
                "flushed_seq": j.flushed_seq,
                "replay_from_seq": j.replay_from_seq,
                "last_seq": j.last_seq,
                "damaged_records": j.damaged,
                "image_uuid": j.image_uuid,
            },
            "read_cache": rc.as_ref().map(|r| json!({
                "path": c.read_cache_path(name).display().to_string(),
                "capacity": r.stats.capacity,
                "bytes_cached": r.stats.bytes_cached,
                "entries": r.stats.entries,
                "hits": r.stats.hits,
                "misses": r.stats.misses,
                "evictions": r.stats.evictions,
                "hit_rate": hit_rate,
            })),
        }));
        return Ok(EXIT_OK);
    }
    let mut pairs = vec![
        ("journal", jpath.display().to_string()),
        ("journal size", format_size(j.size)),
        (
            "journal fill",
            format!(
                "{} ({:.1}%), {} records",
                format_size(j.used),
                fill * 100.0,
                j.records
            ),
        ),
        (
            "replay point",
            j.replay_from_seq.map_or("nothing to replay".into(), |s| {
                format!("from write seq {s}")
            }),
        ),
        (
            "last record",
            j.last_seq.map_or("none".into(), |s| s.to_string()),
        ),
        ("flushed up to", j.flushed_seq.to_string()),
        ("damaged records", j.damaged.to_string()),
    ];
    match (&rc, hit_rate) {
        (Some(r), Some(h)) => {
            pairs.push(("read cache", c.read_cache_path(name).display().to_string()));
            pairs.push((
                "read cache use",
                format!(
                    "{} of {}",
                    format_size(r.stats.bytes_cached),
                    format_size(r.stats.capacity)
                ),
            ));
            pairs.push((
                "read cache hits",
                format!(
                    "{:.1}% ({} hits, {} misses)",
                    h * 100.0,
                    r.stats.hits,
                    r.stats.misses
                ),
            ));
        }
        _ => pairs.push(("read cache", "none".into())),
    }
    print(&key_values(&pairs));
    Ok(EXIT_OK)
}

fn flush(catalog: &Catalog, name: &str, acl: bool) -> anyhow::Result<u8> {
    let v = open_image(catalog, name, false, acl)?;
    let res = match &v {
        Volume::Journaled(d) => d
            .flush_cache()
            .with_context(|| format!("flush cache of {name:?}")),
        Volume::Plain(_) => Err(anyhow::anyhow!("image {name:?} has no local cache")),
    };
    v.close().with_context(|| format!("close image {name:?}"))?;
    res?;
    print(&format!(
        "flushed the write journal of image {name} to its backend\n"
    ));
    Ok(EXIT_OK)
}
