//! An image as the tools and the daemon open it: plain (the engine alone)
//! or journaled (the engine behind its write journal and read cache, when
//! the catalog entry has cache settings). Everything that opens an image
//! goes through [`Volume::open`], so an image with a journal is never
//! written around it (which would reuse write seqs the journal still holds).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use log_engine::{Image, ImageInfo, OpenOptions};
use lsvd_cache::disk::{Disk, OpenReport, ReadCacheConfig};
use lsvd_cache::journal::JournalConfig;
use lsvd_nbd::blockdev::{engine_to_io, BlockDev};
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogEntry;

/// Local cache settings of an image (`image create --cache-dir ...`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSettings {
    /// Directory holding `NAME.journal` and `NAME.rcache`.
    pub dir: String,
    /// Write journal size in bytes.
    pub journal_size: u64,
    /// Read cache size in bytes (0 = no read cache).
    pub read_cache_size: u64,
}

impl CacheSettings {
    pub fn journal_path(&self, name: &str) -> PathBuf {
        PathBuf::from(&self.dir).join(format!("{name}.journal"))
    }
    pub fn read_cache_path(&self, name: &str) -> PathBuf {
        PathBuf::from(&self.dir).join(format!("{name}.rcache"))
    }
    pub fn journal_config(&self, name: &str) -> JournalConfig {
        JournalConfig::new(self.journal_path(name), self.journal_size)
    }
    pub fn read_cache_config(&self, name: &str) -> Option<ReadCacheConfig> {
        (self.read_cache_size > 0)
            .then(|| ReadCacheConfig::new(self.read_cache_path(name), self.read_cache_size))
    }
}

/// An open image, plain or journaled.
#[derive(Debug)]
pub enum Volume {
    Plain(Image),
    Journaled(Disk),
}

impl Volume {
    /// Open the image of `entry`. A journaled image replays its journal;
    /// if the journal is lost or unusable the open fails unless
    /// `accept_cache_loss`, and the report says how far back it went.
    /// `opts.read_only` is honoured for plain images; a journaled image is
    /// always opened writable (its journal must be replayed), and callers
    /// that only read simply do not write.
    pub fn open(
        entry: &CatalogEntry,
        mut opts: OpenOptions,
        accept_cache_loss: bool,
    ) -> anyhow::Result<(Volume, Option<OpenReport>)> {
        let store = crate::stores::open_store(&entry.store)
            .with_context(|| format!("open store of image {:?}", entry.name))?;
        match &entry.cache {
            None => Ok((
                Volume::Plain(
                    Image::open(store, opts)
                        .with_context(|| format!("open image {:?}", entry.name))?,
                ),
                None,
            )),
            Some(c) => {
                opts.read_only = false;
                std::fs::create_dir_all(&c.dir)
                    .with_context(|| format!("create cache directory {}", c.dir))?;
                let (disk, rep) = Disk::open(
                    store,
                    &c.journal_config(&entry.name),
                    c.read_cache_config(&entry.name).as_ref(),
                    opts,
                    accept_cache_loss,
                )
                .with_context(|| format!("open image {:?} with its write journal", entry.name))?;
                if let Some(loss) = &rep.cache_loss {
                    eprintln!("lsvd: image {:?}: cache loss accepted: {loss}", entry.name);
                }
                Ok((Volume::Journaled(disk), Some(rep)))
            }
        }
    }

    pub fn image(&self) -> &Image {
        match self {
            Volume::Plain(i) => i,
            Volume::Journaled(d) => d.image(),
        }
    }

    pub fn info(&self) -> ImageInfo {
        self.image().info()
    }

    pub fn size(&self) -> u64 {
        self.image().size()
    }

    pub fn read(&self, off: u64, buf: &mut [u8]) -> log_engine::Result<()> {
        match self {
            Volume::Plain(i) => i.read(off, buf),
            Volume::Journaled(d) => d.read(off, buf),
        }
    }

    /// Write; with `fua` durable before it returns.
    pub fn write(&self, off: u64, data: &[u8], fua: bool) -> log_engine::Result<()> {
        match self {
            Volume::Plain(i) => {
                i.write(off, data)?;
                if fua {
                    i.flush()?;
                }
                Ok(())
            }
            Volume::Journaled(d) => d.write(off, data, fua).map(|_| ()),
        }
    }

    /// Everything written before is durable (in the journal, or the store).
    pub fn flush(&self) -> log_engine::Result<()> {
        match self {
            Volume::Plain(i) => i.flush(),
            Volume::Journaled(d) => d.flush().map(|_| ()),
        }
    }

    pub fn discard(&self, off: u64, len: u64) -> log_engine::Result<()> {
        match self {
            Volume::Plain(i) => i.discard(off, len).map(|_| ()),
            Volume::Journaled(d) => d.discard(off, len).map(|_| ()),
        }
    }

    pub fn write_zeroes(&self, off: u64, len: u64) -> log_engine::Result<()> {
        match self {
            Volume::Plain(i) => i.write_zeroes(off, len).map(|_| ()),
            Volume::Journaled(d) => d.write_zeroes(off, len).map(|_| ()),
        }
    }

    pub fn close(&self) -> log_engine::Result<()> {
        match self {
            Volume::Plain(i) => i.close(),
            Volume::Journaled(d) => d.close(),
        }
    }
}

impl BlockDev for Volume {
    fn size(&self) -> u64 {
        Volume::size(self)
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        Volume::read(self, off, buf).map_err(engine_to_io)
    }
    fn write(&self, off: u64, data: &[u8], fua: bool) -> std::io::Result<()> {
        Volume::write(self, off, data, fua).map_err(engine_to_io)
    }
    fn flush(&self) -> std::io::Result<()> {
        Volume::flush(self).map_err(engine_to_io)
    }
    fn discard(&self, off: u64, len: u64) -> std::io::Result<()> {
        Volume::discard(self, off, len).map_err(engine_to_io)
    }
    fn write_zeroes(&self, off: u64, len: u64) -> std::io::Result<()> {
        Volume::write_zeroes(self, off, len).map_err(engine_to_io)
    }
}

impl lsvd_ublk::BlockDevLike for Volume {
    fn size(&self) -> u64 {
        Volume::size(self)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> log_engine::Result<()> {
        Volume::read(self, offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8]) -> log_engine::Result<()> {
        Volume::write(self, offset, data, false)
    }
    fn flush(&self) -> log_engine::Result<()> {
        Volume::flush(self)
    }
    fn discard(&self, offset: u64, len: u64) -> log_engine::Result<()> {
        Volume::discard(self, offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> log_engine::Result<()> {
        Volume::write_zeroes(self, offset, len)
    }
}

/// Shared handle used by the daemon.
pub type SharedVolume = Arc<Volume>;
