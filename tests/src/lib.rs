//! Shared helpers for lsvd's integration tests: a block-level model of the
//! disk, deterministic block contents, and stores in temporary directories.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use log_engine::{Compression, CreateOptions, GcConfig, Image, OpenOptions, SegmentStore};
use lsvd_ctl::stores::{create_store_force, open_store};

/// Which embedded store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Dir,
    ZonedFile,
    /// A real zoned block device named by `LSVD_TEST_ZNS` (a `zns:` spec);
    /// its tests are `#[ignore]`d on the host and run in the QEMU guest by
    /// `tests/vm/guest/zns-suite.sh`. Every create erases the device.
    ZnsDevice,
}

/// The `zns:` spec of the device under test, from `LSVD_TEST_ZNS`.
pub fn zns_spec() -> String {
    match std::env::var("LSVD_TEST_ZNS") {
        Ok(s) if s.starts_with("zns:") => s,
        _ => panic!(
            "LSVD_TEST_ZNS=zns:/dev/DEVICE is required: this test runs on a real zoned \
             device in the QEMU guest (tests/vm/guest/zns-suite.sh)"
        ),
    }
}

/// Store spec string for `kind` under `dir`.
pub fn spec(kind: StoreKind, dir: &Path) -> String {
    match kind {
        StoreKind::Dir => format!("dir:{}", dir.join("img").display()),
        // 64 zones of 1 MiB: room for small segments, GC and metadata.
        StoreKind::ZonedFile => format!(
            "zoned-file:{},zone-size=1M,zones=64,max-open=4,max-active=6",
            dir.join("zoned.img").display()
        ),
        StoreKind::ZnsDevice => zns_spec(),
    }
}

/// Create a store and an image in it.
pub fn create(
    kind: StoreKind,
    dir: &Path,
    blocks: u64,
    seg: u32,
    compress: bool,
) -> Arc<dyn SegmentStore> {
    // A real device keeps the previous test's store: erase it.
    let force = kind == StoreKind::ZnsDevice;
    let store = create_store_force(&spec(kind, dir), force).expect("create store");
    Image::create(
        store.clone(),
        &CreateOptions {
            size: blocks * 4096,
            segment_size: seg,
            compression: if compress {
                Compression::Zstd
            } else {
                Compression::None
            },
        },
    )
    .expect("create image");
    store
}

/// Reopen the store from its spec (as a new process would).
pub fn reopen_store(kind: StoreKind, dir: &Path) -> Arc<dyn SegmentStore> {
    open_store(&spec(kind, dir)).expect("open store")
}

/// Open options for tests: small checkpoints interval, GC under control.
pub fn test_opts(background_gc: bool) -> OpenOptions {
    OpenOptions {
        upload_threads: 3,
        max_pending_bytes: 8 << 20,
        checkpoint_every: 4,
        gc: GcConfig {
            policy: Default::default(),
            enabled: background_gc,
            threshold_pct: 70,
            interval: Duration::from_millis(20),
        },
        store_timeout: Duration::from_secs(30),
        read_only: false,
    }
}

/// Content of block `lba` written with tag `tag` (tag 0 = zeros). The first
/// 16 bytes carry the tag and the lba, so a misplaced block is caught.
pub fn block(tag: u64, lba: u64) -> [u8; 4096] {
    let mut b = [0u8; 4096];
    if tag == 0 {
        return b;
    }
    b[..8].copy_from_slice(&tag.to_le_bytes());
    b[8..16].copy_from_slice(&lba.to_le_bytes());
    let mut x = tag ^ lba.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for c in b[16..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    b
}

/// Tag of a block read back: `Some(tag)` if it is exactly `block(tag, lba)`
/// (0 for zeros), `None` if it is anything else (garbage, misplaced).
pub fn tag_of(data: &[u8], lba: u64) -> Option<u64> {
    let tag = u64::from_le_bytes(data[..8].try_into().ok()?);
    (block(tag, lba)[..] == data[..]).then_some(tag)
}

/// The model: one tag per block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model(pub Vec<u64>);

impl Model {
    pub fn new(blocks: u64) -> Self {
        Model(vec![0; blocks as usize])
    }
    pub fn write(&mut self, lba: u64, n: u64, tag: u64) {
        for i in lba..lba + n {
            self.0[i as usize] = tag;
        }
    }
    pub fn zero(&mut self, lba: u64, n: u64) {
        self.write(lba, n, 0)
    }
}

/// Bytes for writing `n` blocks at `lba` with `tag`.
pub fn blocks(tag: u64, lba: u64, n: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n as usize * 4096);
    for i in lba..lba + n {
        v.extend_from_slice(&block(tag, i));
    }
    v
}

/// Read the whole image and return its tags (`None` for garbage blocks).
pub fn read_all(img: &Image, nblocks: u64) -> Vec<Option<u64>> {
    let mut out = Vec::with_capacity(nblocks as usize);
    let step = 64u64;
    let mut buf = vec![0u8; (step * 4096) as usize];
    let mut lba = 0;
    while lba < nblocks {
        let n = step.min(nblocks - lba);
        let b = &mut buf[..(n * 4096) as usize];
        img.read(lba * 4096, b).expect("read");
        for i in 0..n {
            out.push(tag_of(
                &b[(i * 4096) as usize..((i + 1) * 4096) as usize],
                lba + i,
            ));
        }
        lba += n;
    }
    out
}

/// Does the image content equal the model exactly?
pub fn matches(content: &[Option<u64>], m: &Model) -> bool {
    content.len() == m.0.len() && content.iter().zip(&m.0).all(|(c, t)| *c == Some(*t))
}
