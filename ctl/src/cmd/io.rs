//! `lsvdctl io write|verify|read`: move data in and out of an image.

use std::fs::File;
use std::io::Write;
use std::time::Instant;

use crate::volume::Volume;
use anyhow::Context;
use log_engine::size::format_size;

use super::{check_range, open_image, size_arg, EXIT_DAMAGE, EXIT_OK};
use crate::catalog::Catalog;
use crate::cli::{IoCmd, PatternArgs};
use crate::output::print;
use crate::pattern;

/// Bytes moved per engine call (a typical block-layer request size).
const CHUNK: u64 = 256 << 10;

pub(crate) fn run(catalog: &Catalog, cmd: IoCmd, acl: bool) -> anyhow::Result<u8> {
    match cmd {
        IoCmd::Write(a) => write(catalog, &a, acl),
        IoCmd::Verify(a) => verify(catalog, &a, acl),
        IoCmd::Read {
            name,
            offset,
            length,
            output,
        } => {
            let off = size_arg("offset", &offset)?;
            let len = length.map(|l| size_arg("length", &l)).transpose()?;
            read(catalog, &name, off, len, output.as_deref(), acl)
        }
    }
}

/// Calls `f(offset, len)` for consecutive pieces of at most [`CHUNK`] bytes.
fn for_chunks(
    off: u64,
    len: u64,
    mut f: impl FnMut(u64, usize) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut pos = off;
    while pos < off + len {
        let n = CHUNK.min(off + len - pos);
        f(pos, n as usize)?;
        pos += n;
    }
    Ok(())
}

fn rate(len: u64, t: Instant) -> String {
    let s = t.elapsed().as_secs_f64();
    let mib = len as f64 / (1 << 20) as f64;
    format!("{s:.2} s, {:.1} MiB/s", if s > 0.0 { mib / s } else { 0.0 })
}

fn ranged(
    catalog: &Catalog,
    a: &PatternArgs,
    read_only: bool,
    acl: bool,
) -> anyhow::Result<(Volume, u64, u64)> {
    let off = size_arg("offset", &a.offset)?;
    let len = size_arg("length", &a.length)?;
    let image = open_image(catalog, &a.name, read_only, acl)?;
    if let Err(e) = check_range(off, len, image.info().size) {
        // Nothing was written: close cleanly rather than drop (a crash).
        let _ = image.close();
        return Err(e);
    }
    Ok((image, off, len))
}

fn write(catalog: &Catalog, a: &PatternArgs, acl: bool) -> anyhow::Result<u8> {
    let (image, off, len) = ranged(catalog, a, false, acl)?;
    let t = Instant::now();
    let mut buf = vec![0u8; CHUNK as usize];
    for_chunks(off, len, |pos, n| {
        pattern::fill(a.pattern, pos, &mut buf[..n]);
        image
            .write(pos, &buf[..n], false)
            .with_context(|| format!("write {n} bytes at offset {pos} of image {:?}", a.name))
    })?;
    image
        .flush()
        .with_context(|| format!("flush image {:?}", a.name))?;
    image
        .close()
        .with_context(|| format!("close image {:?}", a.name))?;
    print(&format!(
        "wrote {} at offset {off} of image {} with pattern {} ({})\n",
        format_size(len),
        a.name,
        a.pattern,
        rate(len, t)
    ));
    Ok(EXIT_OK)
}

fn verify(catalog: &Catalog, a: &PatternArgs, acl: bool) -> anyhow::Result<u8> {
    let (image, off, len) = ranged(catalog, a, true, acl)?;
    let t = Instant::now();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut bad = None;
    for_chunks(off, len, |pos, n| {
        if bad.is_none() {
            image
                .read(pos, &mut buf[..n])
                .with_context(|| format!("read {n} bytes at offset {pos} of image {:?}", a.name))?;
            bad = pattern::check(a.pattern, pos, &buf[..n]);
        }
        Ok(())
    })?;
    image
        .close()
        .with_context(|| format!("close image {:?}", a.name))?;
    match bad {
        None => {
            print(&format!(
                "verified {} at offset {off} of image {} with pattern {}: ok ({})\n",
                format_size(len),
                a.name,
                a.pattern,
                rate(len, t)
            ));
            Ok(EXIT_OK)
        }
        Some(m) => {
            eprintln!(
                "lsvdctl: verify failed: image {} pattern {}: {m}",
                a.name, a.pattern
            );
            Ok(EXIT_DAMAGE)
        }
    }
}

fn read(
    catalog: &Catalog,
    name: &str,
    off: u64,
    len: Option<u64>,
    output: Option<&std::path::Path>,
    acl: bool,
) -> anyhow::Result<u8> {
    let image = open_image(catalog, name, true, acl)?;
    let size = image.info().size;
    let len = len.unwrap_or(size.saturating_sub(off));
    check_range(off, len, size)?;
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(
            File::create(p).with_context(|| format!("create output file {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut buf = vec![0u8; CHUNK as usize];
    for_chunks(off, len, |pos, n| {
        image
            .read(pos, &mut buf[..n])
            .with_context(|| format!("read {n} bytes at offset {pos} of image {name:?}"))?;
        out.write_all(&buf[..n]).context("write output")
    })?;
    out.flush().context("write output")?;
    drop(out);
    if let Some(p) = output {
        File::open(p)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("sync output file {}", p.display()))?;
    }
    image
        .close()
        .with_context(|| format!("close image {name:?}"))?;
    Ok(EXIT_OK)
}
