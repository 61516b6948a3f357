//! [`BlockSource`] over a `log_engine::Image`, and a fixed table of images for tools,
//! tests and benchmarks ([`StaticResolver`]).

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use log_engine::Image;

use crate::abi::BLOCK_SIZE;
use crate::access::{may_read, Peer};
use crate::chain::BlockSource;
use crate::server::{ImageResolver, ResolveError};

/// Reads blocks of an open image (block `lba` = bytes `lba * 4096 ..`).
pub struct ImageBlockSource {
    image: Arc<Image>,
    blocks: u64,
}

impl ImageBlockSource {
    /// Wraps an open image; its size is read once (images do not change size).
    pub fn new(image: Arc<Image>) -> ImageBlockSource {
        let blocks = image.size() / BLOCK_SIZE as u64;
        ImageBlockSource { image, blocks }
    }

    /// The image.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }
}

impl BlockSource for ImageBlockSource {
    fn block_count(&self) -> u64 {
        self.blocks
    }

    fn read_block(&self, lba: u64, buf: &mut [u8; BLOCK_SIZE]) -> Result<(), io::Error> {
        let off = lba
            .checked_mul(BLOCK_SIZE as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "LBA overflow"))?;
        self.image.read(off, buf).map_err(io::Error::other)
    }
}

/// A fixed table: image name → (store path checked with [`may_read`], block source).
#[derive(Default)]
pub struct StaticResolver {
    images: HashMap<String, (PathBuf, Arc<dyn BlockSource>)>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Adds image `name` whose store lives at `store_path`.
    pub fn insert(&mut self, name: &str, store_path: PathBuf, src: Arc<dyn BlockSource>) {
        self.images.insert(name.to_string(), (store_path, src));
    }
}

impl ImageResolver for StaticResolver {
    fn resolve(&self, image: &str, peer: &Peer) -> Result<Arc<dyn BlockSource>, ResolveError> {
        let (path, src) = self
            .images
            .get(image)
            .ok_or_else(|| ResolveError::NotFound(format!("no image named {image:?}")))?;
        match may_read(path, peer) {
            Ok(true) => Ok(src.clone()),
            Ok(false) => Err(ResolveError::PermissionDenied(format!(
                "uid {} may not read the store of image {image:?} ({})",
                peer.uid,
                path.display()
            ))),
            Err(e) => Err(ResolveError::Unavailable(format!(
                "store of image {image:?} ({}): {e}",
                path.display()
            ))),
        }
    }
}
