//! The directory store: one directory per image, one file per object.
//!
//! Layout of the directory:
//! - `seg.<seq:016x>`: segment `seq`, exactly the bytes handed to
//!   [`SegmentStore::write_segment`];
//! - `meta.<name>`: metadata blob `name`;
//! - `.tmp.*`: a write in progress (or left over by a crash); never listed,
//!   removed by [`DirStore::open`].
//!
//! # Invariants
//! - A file appears under its final name only once its contents are durable:
//!   objects are written to a temp file, fsynced, renamed into place and the
//!   directory is fsynced before the call returns. So a crash leaves either no
//!   object or the whole object, never a torn one under its final name.
//! - Segments are never overwritten: the rename uses `RENAME_NOREPLACE` (or
//!   `link` + `unlink` where the filesystem lacks it), so two writers of the
//!   same `seq` cannot both succeed.
//! - Metadata blobs are replaced atomically (plain `rename`).
//! - Open read descriptors are cached (at most [`FD_CACHE_CAP`]); deleting a
//!   segment drops its cached descriptor.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{check_meta_name, Media, SegmentEntry, SegmentStore, SpaceInfo};
use crate::error::IoContext;
use crate::{Error, Result};

/// Maximum number of open read descriptors kept by a [`DirStore`].
pub const FD_CACHE_CAP: usize = 64;

const SEG_PREFIX: &str = "seg.";
const META_PREFIX: &str = "meta.";
const TMP_PREFIX: &str = ".tmp.";

/// Segment store backed by one directory. See the module docs.
#[derive(Debug)]
pub struct DirStore {
    path: PathBuf,
    fds: Mutex<FdCache>,
    tmp_counter: AtomicU64,
}

/// A tiny LRU of open segment files, keyed by seq.
#[derive(Debug, Default)]
struct FdCache {
    map: HashMap<u64, (Arc<File>, u64)>,
    tick: u64,
}

impl FdCache {
    fn get(&mut self, seq: u64) -> Option<Arc<File>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(&seq).map(|(f, t)| {
            *t = tick;
            f.clone()
        })
    }

    fn insert(&mut self, seq: u64, f: Arc<File>) {
        if self.map.len() >= FD_CACHE_CAP && !self.map.contains_key(&seq) {
            if let Some(victim) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            {
                self.map.remove(&victim);
            }
        }
        self.tick += 1;
        self.map.insert(seq, (f, self.tick));
    }

    fn remove(&mut self, seq: u64) {
        self.map.remove(&seq);
    }
}

/// File name of segment `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("{SEG_PREFIX}{seq:016x}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(SEG_PREFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync directory {}", path.display()))
}

/// `rename(from, to)` failing with `EEXIST` if `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let cfrom = std::ffi::CString::new(from.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let cto = std::ffi::CString::new(to.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // Filesystem without RENAME_NOREPLACE: link (fails if present) + unlink.
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        _ => Err(e),
    }
}

impl DirStore {
    /// Create a new store in directory `path` (created if missing). An
    /// existing non-empty directory is refused with [`Error::Exists`].
    pub fn create(path: impl AsRef<Path>) -> Result<DirStore> {
        let path = path.as_ref().to_path_buf();
        match fs::read_dir(&path) {
            Ok(mut it) => {
                if it.next().is_some() {
                    return Err(Error::Exists(format!(
                        "directory {} is not empty",
                        path.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&path)
                    .ctx(|| format!("create store directory {}", path.display()))?;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fsync_dir(parent)?;
                }
            }
            Err(e) => {
                return Err(Error::io(
                    format!("read store directory {}", path.display()),
                    e,
                ))
            }
        }
        // Probe writability now so a bad path fails at create, not at the
        // first segment.
        let probe = path.join(format!("{TMP_PREFIX}probe"));
        File::create(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .ctx(|| format!("store directory {} is not writable", path.display()))?;
        Ok(DirStore::new(path))
    }

    /// Open an existing store; [`Error::NotFound`] if `path` does not exist.
    /// Removes temp files left by a crash.
    pub fn open(path: impl AsRef<Path>) -> Result<DirStore> {
        let path = path.as_ref().to_path_buf();
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "store directory {}",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(Error::io(
                    format!("open store directory {}", path.display()),
                    e,
                ))
            }
        };
        for ent in rd {
            let ent = ent.ctx(|| format!("list {}", path.display()))?;
            if ent
                .file_name()
                .as_bytes()
                .starts_with(TMP_PREFIX.as_bytes())
            {
                let p = ent.path();
                tracing::info!(path = %p.display(), "removing leftover temp file");
                fs::remove_file(&p).ctx(|| format!("remove temp file {}", p.display()))?;
            }
        }
        Ok(DirStore::new(path))
    }

    fn new(path: PathBuf) -> DirStore {
        DirStore {
            path,
            fds: Mutex::new(FdCache::default()),
            tmp_counter: AtomicU64::new(0),
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.path
            .join(format!("{TMP_PREFIX}{what}.{}.{n}", std::process::id()))
    }

    /// Write `data` to a fresh temp file and fsync it; returns its path.
    fn write_tmp(&self, what: &str, data: &[u8]) -> Result<PathBuf> {
        self.write_tmp_parts(what, &[data])
    }

    /// Write `parts` one after the other into a new temp file, fsync it.
    fn write_tmp_parts(&self, what: &str, parts: &[&[u8]]) -> Result<PathBuf> {
        let tmp = self.tmp_path(what);
        let res = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            for p in parts {
                f.write_all(p)?;
            }
            f.sync_all()
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e).ctx(|| format!("write {}", tmp.display()));
        }
        Ok(tmp)
    }

    fn open_segment(&self, seq: u64) -> Result<Arc<File>> {
        if let Some(f) = self.fds.lock().get(seq) {
            return Ok(f);
        }
        let p = self.path.join(segment_file_name(seq));
        let f = match File::open(&p) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "segment {seq:016x} ({})",
                    p.display()
                )))
            }
            Err(e) => return Err(Error::io(format!("open {}", p.display()), e)),
        };
        self.fds.lock().insert(seq, f.clone());
        Ok(f)
    }

    fn list_prefixed(&self) -> Result<Vec<(String, fs::DirEntry)>> {
        let rd = fs::read_dir(&self.path).ctx(|| format!("list {}", self.path.display()))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.ctx(|| format!("list {}", self.path.display()))?;
            if let Some(name) = ent.file_name().to_str() {
                out.push((name.to_string(), ent));
            }
        }
        Ok(out)
    }
}

impl SegmentStore for DirStore {
    fn media(&self) -> Media {
        Media::Object
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.path.display())
    }

    fn write_segment(&self, seq: u64, data: &[u8]) -> Result<()> {
        self.write_segment_parts(seq, &[data])
    }

    fn write_segment_parts(&self, seq: u64, parts: &[&[u8]]) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if !len.is_multiple_of(4096) {
            return Err(Error::InvalidArgument(format!(
                "segment {seq:016x}: length {len} is not a multiple of 4096"
            )));
        }
        let fin = self.path.join(segment_file_name(seq));
        let tmp = self.write_tmp_parts(&segment_file_name(seq), parts)?;
        if let Err(e) = rename_noreplace(&tmp, &fin) {
            let _ = fs::remove_file(&tmp);
            if e.kind() == io::ErrorKind::AlreadyExists {
                return Err(Error::Exists(format!(
                    "segment {seq:016x} ({})",
                    fin.display()
                )));
            }
            return Err(e).ctx(|| format!("rename {} to {}", tmp.display(), fin.display()));
        }
        fsync_dir(&self.path)
    }

    fn read_segment(&self, seq: u64, offset: u64, buf: &mut [u8]) -> Result<()> {
        let f = self.open_segment(seq)?;
        match f.read_exact_at(buf, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(Error::InvalidArgument(format!(
                    "read of {} bytes at {offset} past the end of segment {seq:016x}",
                    buf.len()
                )))
            }
            Err(e) => Err(Error::io(
                format!(
                    "read segment {seq:016x} at {offset} in {}",
                    self.path.display()
                ),
                e,
            )),
        }
    }

    fn delete_segment(&self, seq: u64) -> Result<()> {
        self.fds.lock().remove(seq);
        let p = self.path.join(segment_file_name(seq));
        match fs::remove_file(&p) {
            Ok(()) => fsync_dir(&self.path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("delete {}", p.display()), e)),
        }
    }

    fn list_segments(&self) -> Result<Vec<SegmentEntry>> {
        let mut out = Vec::new();
        for (name, ent) in self.list_prefixed()? {
            if let Some(seq) = parse_segment_name(&name) {
                let md = match ent.metadata() {
                    Ok(md) => md,
                    // Deleted while listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(format!("stat {}", ent.path().display()), e)),
                };
                out.push(SegmentEntry { seq, len: md.len() });
            }
        }
        out.sort_by_key(|e| e.seq);
        Ok(out)
    }

    fn put_meta(&self, name: &str, data: &[u8]) -> Result<()> {
        check_meta_name(name)?;
        let fin = self.path.join(format!("{META_PREFIX}{name}"));
        let tmp = self.write_tmp(&format!("{META_PREFIX}{name}"), data)?;
        if let Err(e) = fs::rename(&tmp, &fin) {
            let _ = fs::remove_file(&tmp);
            return Err(e).ctx(|| format!("rename {} to {}", tmp.display(), fin.display()));
        }
        fsync_dir(&self.path)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check_meta_name(name)?;
        let p = self.path.join(format!("{META_PREFIX}{name}"));
        match fs::read(&p) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
        }
    }

    fn delete_meta(&self, name: &str) -> Result<()> {
        check_meta_name(name)?;
        let p = self.path.join(format!("{META_PREFIX}{name}"));
        match fs::remove_file(&p) {
            Ok(()) => fsync_dir(&self.path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("delete {}", p.display()), e)),
        }
    }

    fn list_meta(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .list_prefixed()?
            .into_iter()
            .filter_map(|(n, _)| n.strip_prefix(META_PREFIX).map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    fn space(&self) -> Result<SpaceInfo> {
        let used: u64 = self.list_segments()?.iter().map(|e| e.len).sum();
        let cpath = std::ffi::CString::new(self.path.as_os_str().as_bytes()).map_err(|_| {
            Error::InvalidArgument(format!("path {} has a NUL", self.path.display()))
        })?;
        // SAFETY: statvfs is plain old data; the path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statvfs(cpath.as_ptr(), &mut st) };
        if r != 0 {
            return Err(io::Error::last_os_error())
                .ctx(|| format!("statvfs {}", self.path.display()));
        }
        let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
        Ok(SpaceInfo {
            capacity: Some(free.saturating_add(used)),
            used,
        })
    }

    fn destroy(&self) -> Result<()> {
        self.fds.lock().map.clear();
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", self.path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoned::conformance::run_segment_store_conformance;

    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let p2 = p.clone();
        let mut make = || -> Arc<dyn SegmentStore> { Arc::new(DirStore::create(&p).unwrap()) };
        let mut reopen = |s: Arc<dyn SegmentStore>| -> Arc<dyn SegmentStore> {
            drop(s);
            Arc::new(DirStore::open(&p2).unwrap())
        };
        run_segment_store_conformance(&mut make, Some(&mut reopen), 64 << 10).unwrap();
    }

    #[test]
    fn create_open_temp_files_destroy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        assert!(matches!(DirStore::open(&p), Err(Error::NotFound(_))));
        let s = DirStore::create(&p).unwrap();
        s.write_segment(1, &[1u8; 4096]).unwrap();
        assert!(matches!(DirStore::create(&p), Err(Error::Exists(_))));
        assert!(matches!(
            s.write_segment(2, &[1u8; 100]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            s.put_meta("../x", b""),
            Err(Error::InvalidArgument(_))
        ));
        // A crash left a temp file: not listed, removed on open.
        std::fs::write(p.join(".tmp.seg.0000000000000002.1.0"), b"junk").unwrap();
        assert_eq!(s.list_segments().unwrap().len(), 1);
        assert_eq!(s.list_meta().unwrap().len(), 0);
        drop(s);
        let s = DirStore::open(&p).unwrap();
        assert!(!p.join(".tmp.seg.0000000000000002.1.0").exists());
        let sp = s.space().unwrap();
        assert_eq!(sp.used, 4096);
        assert!(sp.capacity.unwrap() >= 4096);
        s.destroy().unwrap();
        assert!(!p.exists());
        // Unwritable path: a clear error naming it.
        let e = DirStore::create("/proc/lsvd-no-such-dir").unwrap_err();
        assert!(e.to_string().contains("/proc/lsvd-no-such-dir"), "{e}");
    }

    #[test]
    fn write_and_read_cost() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStore::create(dir.path().join("img")).unwrap();
        let seg = vec![7u8; 4 << 20];
        let t = std::time::Instant::now();
        for seq in 0..8 {
            s.write_segment(seq, &seg).unwrap();
        }
        eprintln!("DirStore: 4 MiB segment write: {:?} each", t.elapsed() / 8);
        let mut b = vec![0u8; 4096];
        let t = std::time::Instant::now();
        for i in 0..4096u64 {
            s.read_segment(i % 8, (i * 4096) % (4 << 20), &mut b)
                .unwrap();
        }
        let cached = t.elapsed() / 4096;
        let t = std::time::Instant::now();
        for i in 0..4096u64 {
            let f = File::open(s.path().join(segment_file_name(i % 8))).unwrap();
            f.read_exact_at(&mut b, (i * 4096) % (4 << 20)).unwrap();
        }
        let reopened = t.elapsed() / 4096;
        eprintln!("DirStore: 4 KiB read: {cached:?} with fd cache, {reopened:?} opening the file each time");
    }
}
