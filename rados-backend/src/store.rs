//! [`RadosStore`]: one lsvd image as RADOS objects in a pool (and optional
//! namespace). Object naming (also in README.md), for image `NAME`:
//!
//! | object                | holds                                        |
//! |-----------------------|----------------------------------------------|
//! | `NAME`                | meta blob `superblock`                       |
//! | `NAME.<seq:016x>`     | segment `seq` (16 lowercase hex digits)      |
//! | `NAME.meta.<name>`    | any other meta blob (checkpoint manifests and parts) |
//!
//! # Invariants
//! - Image names are 1..=100 characters of `[A-Za-z0-9_-]` (no `.`), so the
//!   objects of one image are exactly `NAME` and `NAME.*`: images never see
//!   each other's objects, and `destroy` removes nothing else.
//! - A segment is written with one atomic RADOS op (exclusive create + write
//!   full): it is absent or whole, never torn, and never overwritten
//!   (`Exists` on a second write, e.g. a retry after a timeout that did land).
//! - `write_segment` returns `Ok` only after the OSD acknowledged the op
//!   (librados reports success only once the write is committed).
//! - A timed-out op leaves its connection unusable: the connection is rebuilt
//!   and the op re-sent, with backoff, until `retry_budget` is spent; then
//!   [`Error::Timeout`] (the op may or may not have happened).
//! - `destroy` removes the superblock object last, so an interrupted `rm`
//!   still lists the image and can be repeated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log_engine::store::{check_meta_name, Media, SegmentEntry, SegmentStore, SpaceInfo};
use log_engine::{Error, Result};
use parking_lot::Mutex;
use tracing::{debug_span, warn};

use crate::conn::{Conn, ConnConfig, RawError};
use crate::errors;

/// First bytes of an lsvd superblock (see log-engine/FORMAT.md).
const SUPERBLOCK_MAGIC: &[u8; 8] = b"LSVDSUPR";
const META_INFIX: &str = ".meta.";

/// Tunables of a [`RadosStore`].
#[derive(Clone, Debug)]
pub struct RadosOptions {
    /// librados mount / mon op / OSD op timeout, whole seconds.
    pub op_timeout_secs: u32,
    /// How long one store call keeps retrying transient failures before it
    /// answers [`Error::Timeout`].
    pub retry_budget: Duration,
    /// Threads used to stat segments when listing.
    pub list_parallelism: usize,
}

impl Default for RadosOptions {
    fn default() -> Self {
        RadosOptions {
            op_timeout_secs: 10,
            retry_budget: Duration::from_secs(30),
            list_parallelism: 8,
        }
    }
}

/// Where an image lives: cluster config, pool, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLocation {
    /// ceph.conf path; `None` = `CEPH_CONF` or librados' default search.
    pub conf_path: Option<String>,
    pub pool: String,
    /// RADOS namespace, empty for the default one.
    pub namespace: String,
    pub name: String,
}

impl ImageLocation {
    /// `rados:POOL/NAME` or `rados:POOL/NS/NAME` (without the conf).
    pub fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("rados:{}/{}", self.pool, self.name)
        } else {
            format!("rados:{}/{}/{}", self.pool, self.namespace, self.name)
        }
    }
}

/// Image names: 1..=100 of `[A-Za-z0-9_-]`.
pub fn check_image_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "bad RADOS image name {name:?}: 1..100 characters of [A-Za-z0-9_-]"
        )))
    }
}

/// Object name of segment `seq` of image `name`.
pub fn segment_object(name: &str, seq: u64) -> String {
    format!("{name}.{seq:016x}")
}

/// Object name of meta blob `meta` of image `name`.
pub fn meta_object(name: &str, meta: &str) -> String {
    if meta == "superblock" {
        name.to_string()
    } else {
        format!("{name}{META_INFIX}{meta}")
    }
}

/// What an object of an image is.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Superblock,
    Segment(u64),
    Meta(String),
}

fn classify(image: &str, oid: &str) -> Option<Kind> {
    if oid == image {
        return Some(Kind::Superblock);
    }
    let rest = oid.strip_prefix(image)?.strip_prefix('.')?;
    if let Some(m) = rest.strip_prefix("meta.") {
        return Some(Kind::Meta(m.to_string()));
    }
    if rest.len() == 16 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return u64::from_str_radix(rest, 16).ok().map(Kind::Segment);
    }
    None
}

/// A connection to a pool that rebuilds itself after timeouts.
#[derive(Debug)]
struct Pool {
    cfg: ConnConfig,
    retry_budget: Duration,
    conn: Mutex<Option<Arc<Conn>>>,
    /// Connections dropped after a timeout or shutdown (for tests, stats).
    reconnects: AtomicU64,
    /// For messages: `rados:POOL[/NS]/NAME` or `rados:POOL[/NS]`.
    label: String,
}

impl Pool {
    fn new(cfg: ConnConfig, opts: &RadosOptions, label: String) -> Result<Pool> {
        let p = Pool {
            cfg,
            retry_budget: opts.retry_budget,
            conn: Mutex::new(None),
            reconnects: AtomicU64::new(0),
            label,
        };
        // Connect now so a bad cluster or pool fails at open, not later.
        p.conn()?;
        Ok(p)
    }

    /// The current connection, connecting if needed (bounded by the mount
    /// timeout). Serialised so a cluster outage causes one reconnect at a
    /// time, not one per thread.
    fn conn(&self) -> Result<Arc<Conn>> {
        let mut g = self.conn.lock();
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let _span = debug_span!("rados_connect", pool = %self.cfg.pool).entered();
        let c = Arc::new(Conn::connect(&self.cfg).map_err(|e| errors::map(e, &self.label))?);
        *g = Some(c.clone());
        Ok(c)
    }

    /// Drop `bad` as the current connection (if nobody replaced it yet).
    fn invalidate(&self, bad: &Arc<Conn>) {
        let mut g = self.conn.lock();
        if g.as_ref().is_some_and(|c| Arc::ptr_eq(c, bad)) {
            *g = None;
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Run `f` on a connection, retrying transient failures with backoff
    /// (and a rebuilt connection after a timeout) within the retry budget.
    fn run<T>(&self, what: &str, mut f: impl FnMut(&Conn) -> Result<T, RawError>) -> Result<T> {
        let deadline = Instant::now() + self.retry_budget;
        let mut delay = Duration::from_millis(20);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (code, err) = match self.conn() {
                Ok(c) => match f(&c) {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        if errors::needs_reconnect(e.code) {
                            self.invalidate(&c);
                        }
                        if !errors::is_transient(e.code) {
                            return Err(errors::map(e, &self.label));
                        }
                        (e.code, errors::map(e, &self.label))
                    }
                },
                // Connecting failed: transient (timeout) or definitive
                // (missing pool, bad config).
                Err(e) if e.is_transient() => (-libc::ETIMEDOUT, e),
                Err(e) => return Err(e),
            };
            if Instant::now() + delay > deadline {
                return Err(Error::Timeout(format!(
                    "{what}: gave up after {attempt} attempts in {:?} (retry budget); last error: {err}",
                    self.retry_budget
                )));
            }
            warn!(what, attempt, code, error = %err, "transient RADOS error; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

/// One lsvd image in a RADOS pool. See the module docs.
#[derive(Debug)]
pub struct RadosStore {
    loc: ImageLocation,
    opts: RadosOptions,
    pool: Pool,
}

fn conn_config(loc: &ImageLocation, opts: &RadosOptions) -> ConnConfig {
    ConnConfig {
        conf_path: loc.conf_path.clone(),
        pool: loc.pool.clone(),
        namespace: loc.namespace.clone(),
        timeout_secs: opts.op_timeout_secs,
    }
}

impl RadosStore {
    /// Create a new, empty image store (the engine's `Image::create` then
    /// writes the superblock). [`Error::Exists`] if any object of the image
    /// exists; [`Error::NotFound`] if the pool does not.
    pub fn create(conf_path: Option<&str>, pool: &str, ns: &str, name: &str) -> Result<RadosStore> {
        Self::create_at(
            ImageLocation {
                conf_path: conf_path.map(str::to_string),
                pool: pool.to_string(),
                namespace: ns.to_string(),
                name: name.to_string(),
            },
            RadosOptions::default(),
        )
    }

    /// [`RadosStore::create`] with explicit options.
    pub fn create_at(loc: ImageLocation, opts: RadosOptions) -> Result<RadosStore> {
        let s = Self::connect(loc, opts)?;
        let objs = s.image_objects()?;
        if !objs.is_empty() {
            return Err(Error::Exists(format!(
                "{}: {} object(s) of an image by that name exist (e.g. {}); remove it first",
                s.describe(),
                objs.len(),
                objs[0]
            )));
        }
        Ok(s)
    }

    /// Open an existing image; [`Error::NotFound`] if its superblock object
    /// is absent.
    pub fn open(conf_path: Option<&str>, pool: &str, ns: &str, name: &str) -> Result<RadosStore> {
        Self::open_at(
            ImageLocation {
                conf_path: conf_path.map(str::to_string),
                pool: pool.to_string(),
                namespace: ns.to_string(),
                name: name.to_string(),
            },
            RadosOptions::default(),
        )
    }

    /// [`RadosStore::open`] with explicit options.
    pub fn open_at(loc: ImageLocation, opts: RadosOptions) -> Result<RadosStore> {
        let s = Self::connect(loc, opts)?;
        let sb = s.loc.name.clone();
        match s.pool.run(&format!("stat {sb}"), |c| c.stat(&sb)) {
            Ok(_) => Ok(s),
            Err(Error::NotFound(_)) => Err(Error::NotFound(format!(
                "lsvd image {} (no superblock object {sb:?})",
                s.describe()
            ))),
            Err(e) => Err(e),
        }
    }

    fn connect(loc: ImageLocation, opts: RadosOptions) -> Result<RadosStore> {
        check_image_name(&loc.name)?;
        let label = loc.describe();
        let pool = Pool::new(conn_config(&loc, &opts), &opts, label)?;
        Ok(RadosStore { loc, opts, pool })
    }

    /// How many times the connection was dropped and rebuilt after a
    /// timeout (each time the failed op was re-sent).
    pub fn reconnects(&self) -> u64 {
        self.pool.reconnects.load(Ordering::Relaxed)
    }

    /// Where this image lives.
    pub fn location(&self) -> &ImageLocation {
        &self.loc
    }

    /// Every object of this image (superblock, segments, meta blobs).
    pub fn image_objects(&self) -> Result<Vec<String>> {
        let name = &self.loc.name;
        let mut v: Vec<String> = self
            .pool
            .run(&format!("list objects of {name}"), |c| c.list(name))?
            .into_iter()
            .filter(|o| classify(name, o).is_some())
            .collect();
        v.sort();
        Ok(v)
    }
}

/// Names of the lsvd images in `pool` (and namespace `ns`): objects without
/// a `.` that start with the superblock magic.
pub fn list_images(conf_path: Option<&str>, pool: &str, ns: &str) -> Result<Vec<String>> {
    let opts = RadosOptions::default();
    let cfg = ConnConfig {
        conf_path: conf_path.map(str::to_string),
        pool: pool.to_string(),
        namespace: ns.to_string(),
        timeout_secs: opts.op_timeout_secs,
    };
    let label = if ns.is_empty() {
        format!("rados:{pool}")
    } else {
        format!("rados:{pool}/{ns}")
    };
    let p = Pool::new(cfg, &opts, label)?;
    let cands = p.run("list objects", |c| c.list(""))?;
    let mut out = Vec::new();
    for o in cands {
        if o.contains('.') || check_image_name(&o).is_err() {
            continue;
        }
        let mut magic = [0u8; 8];
        match p.run(&format!("read {o}"), |c| c.read(&o, 0, &mut magic)) {
            Ok(8) if &magic == SUPERBLOCK_MAGIC => out.push(o),
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

impl SegmentStore for RadosStore {
    fn media(&self) -> Media {
        Media::Object
    }

    fn describe(&self) -> String {
        self.loc.describe()
    }

    fn write_segment(&self, seq: u64, data: &[u8]) -> Result<()> {
        let oid = segment_object(&self.loc.name, seq);
        let _span = debug_span!("rados_write_segment", seq, len = data.len()).entered();
        self.pool
            .run(&format!("write {oid}"), |c| c.write_full(&oid, data, true))
    }

    fn read_segment(&self, seq: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let oid = segment_object(&self.loc.name, seq);
        let _span = debug_span!("rados_read_segment", seq, offset, len = buf.len()).entered();
        let want = buf.len();
        let n = self
            .pool
            .run(&format!("read {oid}"), |c| c.read(&oid, offset, buf))?;
        if n != want {
            return Err(Error::InvalidArgument(format!(
                "{}: read of {oid} [{offset}, +{want}] is past its end (got {n} bytes)",
                self.describe()
            )));
        }
        Ok(())
    }

    fn delete_segment(&self, seq: u64) -> Result<()> {
        let oid = segment_object(&self.loc.name, seq);
        let _span = debug_span!("rados_delete_segment", seq).entered();
        match self.pool.run(&format!("remove {oid}"), |c| c.remove(&oid)) {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list_segments(&self) -> Result<Vec<SegmentEntry>> {
        let name = &self.loc.name;
        let mut seqs: Vec<u64> = self
            .pool
            .run(&format!("list objects of {name}"), |c| c.list(name))?
            .iter()
            .filter_map(|o| match classify(name, o) {
                Some(Kind::Segment(s)) => Some(s),
                _ => None,
            })
            .collect();
        seqs.sort_unstable();
        // Lengths: one stat per segment, spread over a few threads.
        let par = self.opts.list_parallelism.max(1);
        let chunk = seqs.len().div_ceil(par).max(1);
        let results: Vec<Result<Vec<Option<SegmentEntry>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = seqs
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|&seq| {
                                let oid = segment_object(name, seq);
                                match self.pool.run(&format!("stat {oid}"), |c| c.stat(&oid)) {
                                    Ok(len) => Ok(Some(SegmentEntry { seq, len })),
                                    // Deleted since the listing: not there.
                                    Err(Error::NotFound(_)) => Ok(None),
                                    Err(e) => Err(e),
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Unavailable("segment stat thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(seqs.len());
        for r in results {
            out.extend(r?.into_iter().flatten());
        }
        Ok(out)
    }

    fn put_meta(&self, name: &str, data: &[u8]) -> Result<()> {
        check_meta_name(name)?;
        let oid = meta_object(&self.loc.name, name);
        let _span = debug_span!("rados_put_meta", name, len = data.len()).entered();
        self.pool
            .run(&format!("write {oid}"), |c| c.write_full(&oid, data, false))
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check_meta_name(name)?;
        let oid = meta_object(&self.loc.name, name);
        let _span = debug_span!("rados_get_meta", name).entered();
        // One read op sees the object whole (write_full is atomic): read
        // with a buffer larger than the object, growing it if it was not.
        let mut cap = 1usize << 20;
        loop {
            let r = self.pool.run(&format!("read {oid}"), |c| {
                let mut buf = vec![0u8; cap];
                let n = c.read(&oid, 0, &mut buf)?;
                buf.truncate(n);
                Ok(buf)
            });
            match r {
                Ok(buf) if buf.len() < cap => return Ok(Some(buf)),
                Ok(_) => {
                    cap = cap.checked_mul(4).ok_or_else(|| {
                        Error::InvalidArgument(format!("{}: {oid} is too large", self.describe()))
                    })?
                }
                Err(Error::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn delete_meta(&self, name: &str) -> Result<()> {
        check_meta_name(name)?;
        let oid = meta_object(&self.loc.name, name);
        match self.pool.run(&format!("remove {oid}"), |c| c.remove(&oid)) {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list_meta(&self) -> Result<Vec<String>> {
        let name = &self.loc.name;
        let mut v: Vec<String> = self
            .pool
            .run(&format!("list objects of {name}"), |c| c.list(name))?
            .iter()
            .filter_map(|o| match classify(name, o) {
                Some(Kind::Superblock) => Some("superblock".to_string()),
                Some(Kind::Meta(m)) => Some(m),
                _ => None,
            })
            .collect();
        v.sort();
        Ok(v)
    }

    fn space(&self) -> Result<SpaceInfo> {
        let used = self.list_segments()?.iter().map(|e| e.len).sum();
        Ok(SpaceInfo {
            capacity: None,
            used,
        })
    }

    fn destroy(&self) -> Result<()> {
        let name = &self.loc.name;
        let objs = self.image_objects()?;
        for o in objs.iter().filter(|o| *o != name) {
            match self.pool.run(&format!("remove {o}"), |c| c.remove(o)) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        match self.pool.run(&format!("remove {name}"), |c| c.remove(name)) {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_classify_back() {
        assert_eq!(segment_object("img", 0x12), "img.0000000000000012");
        assert_eq!(meta_object("img", "superblock"), "img");
        assert_eq!(meta_object("img", "ckpt.0001"), "img.meta.ckpt.0001");
        assert_eq!(classify("img", "img"), Some(Kind::Superblock));
        assert_eq!(
            classify("img", "img.0000000000000012"),
            Some(Kind::Segment(0x12))
        );
        assert_eq!(
            classify("img", "img.meta.ckpt.0001"),
            Some(Kind::Meta("ckpt.0001".into()))
        );
        // Other images sharing a prefix are not ours.
        assert_eq!(classify("img", "img1"), None);
        assert_eq!(classify("img", "img1.0000000000000012"), None);
        assert_eq!(classify("img", "img.000000000000001"), None);
        assert_eq!(classify("img", "img.000000000000001G"), None);
    }

    #[test]
    fn image_names_without_dots() {
        assert!(check_image_name("vm-1_a").is_ok());
        for bad in ["", "a.b", "a/b", "a b", &"x".repeat(101)] {
            assert!(check_image_name(bad).is_err(), "{bad:?}");
        }
    }
}
