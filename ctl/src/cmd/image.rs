//! `lsvdctl image create|info|ls|rm|fsck`.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use log_engine::size::format_size;
use log_engine::{Compression, CreateOptions, Error, Image, ImageInfo, SegmentStore};
use serde_json::json;

use super::{size_arg, store_create, store_open, store_parse, EXIT_DAMAGE, EXIT_OK};
use crate::catalog::{spec_local_path, validate_name, Catalog, CatalogEntry};
use crate::cli::{CompressArg, CreateArgs, ImageCmd};
use crate::output::{format_time, key_values, print, print_json, size_both, Table};
use crate::volume::{CacheSettings, Volume};

pub(crate) fn run(catalog: &Catalog, cmd: ImageCmd) -> anyhow::Result<u8> {
    match cmd {
        ImageCmd::Create(a) => create(catalog, a),
        ImageCmd::Info { name, json } => info(catalog, &name, json),
        ImageCmd::Ls { json } => ls(catalog, json),
        ImageCmd::Rm { name, force } => rm(catalog, &name, force),
        ImageCmd::Fsck { name, json } => fsck(catalog, &name, json),
        ImageCmd::Import(a) => super::offload::import(catalog, a),
        ImageCmd::Export(a) => super::offload::export(catalog, a),
    }
}

/// Validated arguments of `image create`.
struct CreatePlan {
    name: String,
    spec: String,
    opts: CreateOptions,
    cache: Option<CacheSettings>,
}

/// Check everything that can be checked without touching the disk.
fn plan_create(catalog: &Catalog, a: &CreateArgs) -> anyhow::Result<CreatePlan> {
    // `image create rados:POOL/NAME`: the spec names the store, its last
    // part is the catalog name.
    let mut a = a.clone();
    if crate::stores::is_rados(&a.name) {
        if a.store.is_some() {
            bail!("give either a rados: image spec or --store, not both");
        }
        let name = crate::stores::rados_image_name(&a.name).ok_or_else(|| {
            anyhow!(
                "bad rados image spec {:?}: expected rados:POOL[/NS]/NAME",
                a.name
            )
        })?;
        a.store = Some(std::mem::replace(&mut a.name, name));
    }
    let a = &a;
    validate_name(&a.name)?;
    let size = size_arg("image size", &a.size)?;
    if size == 0 || !size.is_multiple_of(4096) {
        bail!(
            "image size {size} ({}) must be a non-zero multiple of 4096",
            format_size(size)
        );
    }
    let seg = size_arg("segment size", &a.segment_size)?;
    let segment_size = u32::try_from(seg)
        .ok()
        .filter(|s| *s > 0 && s.is_multiple_of(4096))
        .ok_or_else(|| {
            anyhow!(
                "segment size {seg} ({}) must be a non-zero multiple of 4096 below 4 GiB",
                format_size(seg)
            )
        })?;
    let spec = match &a.store {
        Some(s) => absolute_spec(s)?,
        None => catalog.default_store_spec(&a.name),
    };
    // `--zones A-B` is part of a zns: spec (`zns:/dev/X,zones=A-B`).
    let spec = match &a.zones {
        Some(z) => lsvd_zns::with_zones(&spec, z)?,
        None => spec,
    };
    store_parse(&spec)?;
    let compression = match a.compress {
        CompressArg::None => Compression::None,
        CompressArg::Zstd => Compression::Zstd,
    };
    let cache = match &a.cache_dir {
        None => None,
        Some(dir) => {
            let journal_size = size_arg("journal size", &a.journal_size)?;
            if journal_size < (1 << 20) || !journal_size.is_multiple_of(4096) {
                bail!("journal size {journal_size} must be at least 1M and a multiple of 4096");
            }
            let read_cache_size = size_arg("read cache size", &a.read_cache_size)?;
            let dir = if dir.is_relative() {
                std::env::current_dir()
                    .context("current directory")?
                    .join(dir)
            } else {
                dir.clone()
            };
            Some(CacheSettings {
                dir: dir.display().to_string(),
                journal_size,
                read_cache_size,
            })
        }
    };
    Ok(CreatePlan {
        name: a.name.clone(),
        spec,
        opts: CreateOptions {
            size,
            segment_size,
            compression,
        },
        cache,
    })
}

/// `spec` with a relative local path made absolute, so the catalog entry
/// names the same store from any working directory.
fn absolute_spec(spec: &str) -> anyhow::Result<String> {
    match (spec_local_path(spec), spec.split_once(':')) {
        (Some(p), Some((kind, rest))) if p.is_relative() => {
            let cwd = std::env::current_dir().context("current directory")?;
            let params = rest.split_once(',').map(|(_, r)| format!(",{r}"));
            Ok(format!(
                "{kind}:{}{}",
                cwd.join(p).display(),
                params.unwrap_or_default()
            ))
        }
        _ => Ok(spec.to_string()),
    }
}

/// True if `p` does not exist or is an empty directory.
fn absent_or_empty_dir(p: &Path) -> anyhow::Result<bool> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("inspect {}", p.display())),
        Ok(m) if m.is_dir() => Ok(fs::read_dir(p)
            .with_context(|| format!("inspect {}", p.display()))?
            .next()
            .is_none()),
        Ok(_) => Ok(false),
    }
}

fn create(catalog: &Catalog, a: CreateArgs) -> anyhow::Result<u8> {
    let plan = plan_create(catalog, &a)?;
    let name = &plan.name;
    // Refuse before touching anything: an existing name, a store already
    // used by another image, or a local store path holding anything.
    if let Some(e) = catalog.get(name)? {
        bail!("image {name:?} already exists (store {})", e.store);
    }
    if let Some(other) = catalog.find_by_store_path(&plan.spec)? {
        bail!("store {} is already used by image {other:?}", plan.spec);
    }
    let local = spec_local_path(&plan.spec);
    if let Some(p) = &local {
        if !absent_or_empty_dir(p)? {
            bail!(
                "store path {} already exists; refusing to overwrite it",
                p.display()
            );
        }
    }
    // Everything below is undone on failure. Concurrent creators of one
    // name are serialised by the lock; the checks are repeated under it.
    let _lock = catalog.lock_for_create(name)?;
    if let Some(e) = catalog.get(name)? {
        bail!("image {name:?} already exists (store {})", e.store);
    }
    if let Some(p) = &local {
        if !absent_or_empty_dir(p)? {
            bail!(
                "store path {} already exists; refusing to overwrite it",
                p.display()
            );
        }
    }
    let created_data_dir = a.store.is_none() && !catalog.data_dir().exists();
    if a.store.is_none() {
        let data = catalog.data_dir();
        fs::create_dir_all(&data)
            .with_context(|| format!("create data directory {}", data.display()))?;
    }
    let pre_existing_dir = local.as_deref().is_some_and(Path::exists);
    let undo_local = || {
        if let Some(p) = &local {
            let r = if pre_existing_dir {
                // It was empty when we started: empty it again, keep it.
                fs::read_dir(p).and_then(|rd| {
                    rd.into_iter().try_for_each(|de| {
                        let path = de?.path();
                        if path.is_dir() {
                            fs::remove_dir_all(&path)
                        } else {
                            fs::remove_file(&path)
                        }
                    })
                })
            } else if p.is_dir() {
                fs::remove_dir_all(p)
            } else {
                fs::remove_file(p)
            };
            let r = r.or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound if pre_existing_dir => fs::create_dir(p),
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            });
            if let Err(e) = r {
                tracing::warn!("cleanup of {} failed: {e}", p.display());
            }
        }
        if created_data_dir {
            // Only if still empty.
            let _ = fs::remove_dir(catalog.data_dir());
        }
    };
    let store = match store_create(&plan.spec, a.force) {
        Ok(s) => s,
        Err(e) => {
            // Exists: someone else's store appeared at the path after our
            // check; it is not ours to remove.
            if !matches!(e.downcast_ref::<Error>(), Some(Error::Exists(_))) {
                undo_local();
            }
            return Err(e.context(format!("create store {}", plan.spec)));
        }
    };
    let mut entry = CatalogEntry::new(name, &plan.spec);
    entry.cache = plan.cache.clone();
    let result = Image::create(store.clone(), &plan.opts)
        .with_context(|| format!("create image {name:?} in {}", plan.spec))
        .and_then(|info| {
            if entry.cache.is_some() {
                // Make the journal (and bind it to the image) now, so a bad
                // cache directory fails the create, not the first use.
                let (v, _) = Volume::open(&entry, super::open_options(false), false)?;
                v.close().context("close the new image")?;
            }
            catalog.insert(&entry)?;
            Ok(info)
        });
    let info = match result {
        Ok(info) => info,
        Err(e) => {
            if let Err(d) = store.destroy() {
                tracing::warn!("cleanup of store {} failed: {d}", plan.spec);
            }
            drop(store);
            undo_local();
            return Err(e);
        }
    };
    if info.segment_size != plan.opts.segment_size {
        print(&format!(
            "note: segment size lowered from {} to {} so that a segment fits a zone's capacity\n",
            format_size(u64::from(plan.opts.segment_size)),
            format_size(u64::from(info.segment_size))
        ));
    }
    print(&format!(
        "created image {name}: {}, segment size {}, compression {}, store {}\n",
        format_size(info.size),
        format_size(u64::from(info.segment_size)),
        compression_name(info.compression),
        plan.spec
    ));
    Ok(EXIT_OK)
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Zstd => "zstd",
    }
}

fn info_json(entry: &CatalogEntry, info: &ImageInfo) -> serde_json::Value {
    json!({
        "name": entry.name,
        "store": entry.store,
        "created": entry.created,
        "uuid": info.uuid,
        "size": info.size,
        "block_size": info.block_size,
        "segment_size": info.segment_size,
        "chunk_size": info.chunk_size,
        "compression": compression_name(info.compression),
    })
}

fn info(catalog: &Catalog, name: &str, json: bool) -> anyhow::Result<u8> {
    let entry = catalog.require(name)?;
    let store = store_open(&entry)?;
    let info = log_engine::read_info(&*store)
        .with_context(|| format!("read superblock of image {name:?}"))?;
    let segments = store
        .list_segments()
        .with_context(|| format!("list segments of image {name:?}"))?;
    let space = store
        .space()
        .with_context(|| format!("store space of image {name:?}"))?;
    if json {
        let mut v = info_json(&entry, &info);
        v["segments"] = json!(segments.len());
        v["store_used"] = json!(space.used);
        v["store_capacity"] = json!(space.capacity);
        print_json(&v);
    } else {
        print(&key_values(&[
            ("name", entry.name.clone()),
            ("store", entry.store.clone()),
            ("uuid", info.uuid.clone()),
            ("size", size_both(info.size)),
            ("block size", info.block_size.to_string()),
            ("segment size", size_both(u64::from(info.segment_size))),
            ("chunk size", size_both(u64::from(info.chunk_size))),
            (
                "compression",
                compression_name(info.compression).to_string(),
            ),
            ("created", format_time(entry.created)),
            ("segments", segments.len().to_string()),
            ("store used", size_both(space.used)),
            (
                "store capacity",
                space.capacity.map_or("unlimited".to_string(), size_both),
            ),
        ]));
    }
    Ok(EXIT_OK)
}

fn ls(catalog: &Catalog, json: bool) -> anyhow::Result<u8> {
    let mut rows = Vec::new();
    for (name, entry) in catalog.list()? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                rows.push((name, None, None, Some(e.to_string())));
                continue;
            }
        };
        let info = store_open(&entry).and_then(|s| {
            log_engine::read_info(&*s).map_err(|e| anyhow::Error::new(e).context("read superblock"))
        });
        match info {
            Ok(i) => rows.push((name, Some(entry), Some(i), None)),
            Err(e) => rows.push((name, Some(entry), None, Some(super::one_line(&e)))),
        }
    }
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(name, entry, info, err)| match (entry, info) {
                (Some(e), Some(i)) => {
                    let mut v = info_json(e, i);
                    v["error"] = serde_json::Value::Null;
                    v
                }
                _ => json!({
                    "name": name,
                    "store": entry.as_ref().map(|e| e.store.clone()),
                    "created": entry.as_ref().map(|e| e.created),
                    "size": null,
                    "error": err,
                }),
            })
            .collect();
        print_json(&serde_json::Value::Array(v));
    } else {
        let mut t = Table::new(&["NAME", "SIZE", "COMPRESSION", "CREATED", "STORE"]);
        for (name, entry, info, err) in &rows {
            t.row(vec![
                name.clone(),
                info.as_ref().map_or("?".into(), |i| format_size(i.size)),
                info.as_ref()
                    .map_or("?".into(), |i| compression_name(i.compression).into()),
                entry
                    .as_ref()
                    .map_or("?".into(), |e| format_time(e.created)),
                match (entry, err) {
                    (Some(e), None) => e.store.clone(),
                    (Some(e), Some(err)) => format!("{} (error: {err})", e.store),
                    (None, Some(err)) => format!("(error: {err})"),
                    (None, None) => String::new(),
                },
            ]);
        }
        print(&t.render());
    }
    Ok(EXIT_OK)
}

fn rm(catalog: &Catalog, name: &str, force: bool) -> anyhow::Result<u8> {
    let entry = catalog.require(name)?;
    let destroyed = store_open(&entry).and_then(|store| {
        store
            .destroy()
            .with_context(|| format!("destroy store {} of image {name:?}", entry.store))
    });
    match destroyed {
        Ok(()) => {}
        Err(e) if matches!(e.downcast_ref::<Error>(), Some(Error::NotFound(_))) => {
            tracing::warn!("store of image {name:?} is already gone: {e:#}");
        }
        Err(e) if force => {
            eprintln!(
                "lsvdctl: warning: {}; removing the catalog entry anyway (--force)",
                super::one_line(&e)
            );
        }
        Err(e) => bail!(
            "{} (use --force to remove the catalog entry anyway)",
            super::one_line(&e)
        ),
    }
    if let Some(c) = &entry.cache {
        for p in [c.journal_path(name), c.read_cache_path(name)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("remove {}: {e}", p.display()),
            }
        }
    }
    catalog.remove(name)?;
    print(&format!("removed image {name}\n"));
    Ok(EXIT_OK)
}

fn fsck(catalog: &Catalog, name: &str, json: bool) -> anyhow::Result<u8> {
    let entry = catalog.require(name)?;
    let store = store_open(&entry)?;
    let report = match log_engine::fsck(&*store) {
        Ok(r) => r,
        // Damage that stops the check itself (e.g. an unreadable superblock)
        // is still damage: report it like any other problem.
        Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
            log_engine::FsckReport {
                problems: vec![e.to_string()],
                ..Default::default()
            }
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("fsck image {name:?}"))),
    };
    print_fsck(&entry, &*store, &report, json);
    if !report.is_clean() {
        eprintln!(
            "lsvdctl: image {name:?} is damaged: {} problem(s), first: {}",
            report.problems.len(),
            report.problems[0].replace('\n', " ")
        );
    }
    Ok(if report.is_clean() {
        EXIT_OK
    } else {
        EXIT_DAMAGE
    })
}

fn print_fsck(
    entry: &CatalogEntry,
    store: &dyn SegmentStore,
    r: &log_engine::FsckReport,
    json: bool,
) {
    if json {
        print_json(&json!({
            "name": entry.name,
            "store": store.describe(),
            "clean": r.is_clean(),
            "segments_checked": r.segments_checked,
            "chunks_checked": r.chunks_checked,
            "checkpoint_seq": r.checkpoint_seq,
            "extents_checked": r.extents_checked,
            "problems": r.problems,
            "notes": r.notes,
        }));
        return;
    }
    let mut out = key_values(&[
        ("image", entry.name.clone()),
        ("store", store.describe()),
        ("segments checked", r.segments_checked.to_string()),
        ("chunks checked", r.chunks_checked.to_string()),
        (
            "checkpoint",
            r.checkpoint_seq.map_or("none".into(), |s| s.to_string()),
        ),
        ("extents checked", r.extents_checked.to_string()),
    ]);
    if r.is_clean() {
        out.push_str("result: clean\n");
    } else {
        out.push_str(&format!(
            "result: DAMAGED, {} problem(s):\n",
            r.problems.len()
        ));
        for p in &r.problems {
            out.push_str(&format!("  {}\n", p.replace('\n', " ")));
        }
    }
    for n in &r.notes {
        out.push_str(&format!("note: {}\n", n.replace('\n', " ")));
    }
    print(&out);
}
