//! The image catalog: how `lsvdctl` (and later the `lsvd` daemon) finds an
//! image by name.
//!
//! Layout under the home directory (`--home`, `$LSVD_HOME`, default
//! [`DEFAULT_HOME`]):
//!
//! ```text
//! <home>/images/<NAME>.json   catalog entry: {format, version, name, store, created}
//! <home>/data/<NAME>/         default store of image NAME (`dir:<home>/data/<NAME>`)
//! ```
//!
//! # Invariants
//! - An entry exists only for an image whose store was created successfully:
//!   `lsvdctl image create` writes it last.
//! - An entry is never half written and never replaced: it is written to a
//!   hidden temporary file, synced, then hard-linked to its final name (which
//!   fails if the name exists), so two concurrent creators of one name cannot
//!   both win.
//! - Files whose name starts with `.` are temporaries and are ignored.
//! - The `name` field of an entry equals its file stem; an entry that does not
//!   parse, has another `format`/`version`, or disagrees with its file name is
//!   reported as [`Error::Corrupt`] naming the file, never silently skipped or
//!   a panic.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log_engine::error::IoContext;
use log_engine::{Error, Result};
use serde::{Deserialize, Serialize};

/// Home directory used when neither `--home` nor `$LSVD_HOME` is given.
pub const DEFAULT_HOME: &str = "/var/lib/lsvd";
/// Value of the `format` field of every entry.
pub const ENTRY_FORMAT: &str = "lsvd-catalog-entry";
/// Current entry version.
pub const ENTRY_VERSION: u32 = 1;
/// Longest valid image name.
pub const MAX_NAME_LEN: usize = 64;

/// One catalog entry (`images/<name>.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Always [`ENTRY_FORMAT`].
    pub format: String,
    /// Always [`ENTRY_VERSION`] for entries this build writes.
    pub version: u32,
    /// Image name, equal to the file stem.
    pub name: String,
    /// Store spec, e.g. `dir:/var/lib/lsvd/data/vm1`.
    pub store: String,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Local write journal and read cache, if the image has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::volume::CacheSettings>,
    /// crc32c of the fields above (see [`CatalogEntry::content_crc`]),
    /// checked on every read like every other lsvd on-disk format.
    #[serde(default)]
    pub crc32c: u32,
}

impl CatalogEntry {
    /// A new entry stamped with the current time.
    pub fn new(name: &str, store: &str) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut e = CatalogEntry {
            format: ENTRY_FORMAT.to_string(),
            version: ENTRY_VERSION,
            name: name.to_string(),
            store: store.to_string(),
            created,
            cache: None,
            crc32c: 0,
        };
        e.crc32c = e.content_crc();
        e
    }

    /// crc32c over the entry's fields in a fixed order (NUL-separated), so
    /// the check does not depend on how the JSON is laid out.
    pub fn content_crc(&self) -> u32 {
        let cache = self.cache.as_ref().map_or(String::new(), |c| {
            format!("{}\0{}\0{}", c.dir, c.journal_size, c.read_cache_size)
        });
        let canon = format!(
            "{}\0{}\0{}\0{}\0{}\0{cache}",
            self.format, self.version, self.name, self.store, self.created
        );
        crc32c::crc32c(canon.as_bytes())
    }
}

/// Check an image name: 1..=64 characters from `[A-Za-z0-9._-]`, not
/// starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "invalid image name {name:?}: must be 1 to {MAX_NAME_LEN} characters long"
        )));
    }
    if name.starts_with('.') {
        return Err(Error::InvalidArgument(format!(
            "invalid image name {name:?}: must not start with '.'"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::InvalidArgument(format!(
            "invalid image name {name:?}: character {c:?} not allowed (use A-Z a-z 0-9 . _ -)"
        )));
    }
    Ok(())
}

/// The local file-system path a store spec names, for the specs whose first
/// parameter is a path (`dir:PATH`, `zoned-file:PATH,...`); `None` otherwise.
pub fn spec_local_path(spec: &str) -> Option<PathBuf> {
    let (kind, rest) = spec.split_once(':')?;
    match kind {
        "dir" | "zoned-file" => {
            let path = rest.split(',').next().unwrap_or("");
            (!path.is_empty()).then(|| PathBuf::from(path))
        }
        _ => None,
    }
}

/// The catalog rooted at one home directory.
#[derive(Clone, Debug)]
pub struct Catalog {
    home: PathBuf,
}

impl Catalog {
    /// A catalog at `home`; nothing is created until [`Catalog::insert`].
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Catalog { home: home.into() }
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/images`.
    pub fn images_dir(&self) -> PathBuf {
        self.home.join("images")
    }

    /// `<home>/data`, parent of the default stores.
    pub fn data_dir(&self) -> PathBuf {
        self.home.join("data")
    }

    /// Path of the entry of `name` (which must be valid).
    pub fn entry_path(&self, name: &str) -> PathBuf {
        self.images_dir().join(format!("{name}.json"))
    }

    /// Store spec used when `image create` gets no `--store`.
    pub fn default_store_spec(&self, name: &str) -> String {
        format!("dir:{}", self.data_dir().join(name).display())
    }

    /// Create `<home>/images` (and `<home>`) if missing.
    pub fn ensure_dirs(&self) -> Result<()> {
        let dir = self.images_dir();
        fs::create_dir_all(&dir).ctx(|| format!("create catalog directory {}", dir.display()))
    }

    /// The entry of `name`, `None` if there is none.
    pub fn get(&self, name: &str) -> Result<Option<CatalogEntry>> {
        validate_name(name)?;
        let path = self.entry_path(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("read catalog entry {}", path.display()),
                    e,
                ))
            }
        };
        parse_entry(&path, name, &bytes).map(Some)
    }

    /// The entry of `name`, or [`Error::NotFound`] naming the catalog.
    pub fn require(&self, name: &str) -> Result<CatalogEntry> {
        self.get(name)?.ok_or_else(|| {
            Error::NotFound(format!(
                "no image named {name:?} in catalog {}",
                self.images_dir().display()
            ))
        })
    }

    /// Every entry, sorted by name. An entry that cannot be read is returned
    /// as an error next to its name so one bad file does not hide the rest.
    pub fn list(&self) -> Result<Vec<(String, Result<CatalogEntry>)>> {
        let dir = self.images_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list catalog {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for de in rd {
            let de = de.ctx(|| format!("list catalog {}", dir.display()))?;
            let file_name = de.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.starts_with('.') {
                continue;
            }
            let Some(name) = file_name.strip_suffix(".json") else {
                continue;
            };
            let path = de.path();
            let entry = validate_name(name).and_then(|()| {
                let bytes =
                    fs::read(&path).ctx(|| format!("read catalog entry {}", path.display()))?;
                parse_entry(&path, name, &bytes)
            });
            out.push((name.to_string(), entry));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The image whose store spec names the same local path as `spec`, if any.
    pub fn find_by_store_path(&self, spec: &str) -> Result<Option<String>> {
        let Some(path) = spec_local_path(spec) else {
            return Ok(None);
        };
        for (name, entry) in self.list()? {
            if let Ok(e) = entry {
                if spec_local_path(&e.store).as_deref() == Some(path.as_path()) {
                    return Ok(Some(name));
                }
            }
        }
        Ok(None)
    }

    /// Add `entry` atomically; [`Error::Exists`] if the name is taken (the
    /// existing entry is left as it was).
    pub fn insert(&self, entry: &CatalogEntry) -> Result<()> {
        validate_name(&entry.name)?;
        self.ensure_dirs()?;
        let path = self.entry_path(&entry.name);
        let tmp =
            self.images_dir()
                .join(format!(".{}.json.tmp-{}", entry.name, std::process::id()));
        let mut entry = entry.clone();
        entry.crc32c = entry.content_crc();
        let entry = &entry;
        let mut json = serde_json::to_vec_pretty(entry)
            .map_err(|e| Error::InvalidArgument(format!("encode catalog entry: {e}")))?;
        json.push(b'\n');
        let write = || -> Result<()> {
            let mut f =
                fs::File::create(&tmp).ctx(|| format!("create catalog entry {}", tmp.display()))?;
            f.write_all(&json)
                .ctx(|| format!("write catalog entry {}", tmp.display()))?;
            f.sync_all()
                .ctx(|| format!("sync catalog entry {}", tmp.display()))?;
            // hard_link never replaces an existing file: the name is claimed
            // atomically or not at all.
            fs::hard_link(&tmp, &path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Exists(format!("image {:?}", entry.name))
                } else {
                    Error::io(format!("publish catalog entry {}", path.display()), e)
                }
            })?;
            Ok(())
        };
        let res = write();
        let _ = fs::remove_file(&tmp);
        res?;
        sync_dir(&self.images_dir())
    }

    /// Claim the right to create image `name`: an exclusive lock file
    /// `images/.<name>.lock`, removed when the returned guard drops. Fails
    /// with [`Error::Exists`] while another process holds it (a lock left by
    /// a crashed process must be removed by hand; the message names it).
    pub fn lock_for_create(&self, name: &str) -> Result<CreateLock> {
        validate_name(name)?;
        let dir = self.images_dir();
        let created_dir = !dir.exists();
        self.ensure_dirs()?;
        let path = dir.join(format!(".{name}.lock"));
        let res = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{}", std::process::id()));
        match res {
            Ok(()) => Ok(CreateLock {
                path,
                dir,
                created_dir,
            }),
            Err(e) => {
                if created_dir {
                    let _ = fs::remove_dir(&dir);
                }
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Err(Error::Exists(format!(
                        "image {name:?} is being created by another process (lock file {}; remove it if no lsvdctl is running)",
                        path.display()
                    )))
                } else {
                    Err(Error::io(format!("create lock file {}", path.display()), e))
                }
            }
        }
    }

    /// Remove the entry of `name`; [`Error::NotFound`] if there is none.
    pub fn remove(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let path = self.entry_path(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.images_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("no image named {name:?}")))
            }
            Err(e) => Err(Error::io(
                format!("remove catalog entry {}", path.display()),
                e,
            )),
        }
    }
}

/// Guard of [`Catalog::lock_for_create`]: removes the lock file on drop,
/// and the catalog directory too if the lock created it and it is still
/// empty (a failed first create leaves the home as it was).
#[derive(Debug)]
pub struct CreateLock {
    path: PathBuf,
    dir: PathBuf,
    created_dir: bool,
}

impl Drop for CreateLock {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!("remove lock file {}: {e}", self.path.display());
        }
        if self.created_dir {
            // Fails (harmlessly) unless the directory is empty.
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

fn parse_entry(path: &Path, name: &str, bytes: &[u8]) -> Result<CatalogEntry> {
    let what = || format!("catalog entry {}", path.display());
    let entry: CatalogEntry =
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt(what(), e.to_string()))?;
    if entry.format != ENTRY_FORMAT {
        return Err(Error::corrupt(
            what(),
            format!("format is {:?}, expected {ENTRY_FORMAT:?}", entry.format),
        ));
    }
    if entry.version != ENTRY_VERSION {
        return Err(Error::UnsupportedVersion {
            what: what(),
            version: entry.version,
        });
    }
    if entry.crc32c != entry.content_crc() {
        return Err(Error::corrupt(
            what(),
            format!(
                "crc32c mismatch (stored {:08x}, computed {:08x})",
                entry.crc32c,
                entry.content_crc()
            ),
        ));
    }
    if entry.name != name {
        return Err(Error::corrupt(
            what(),
            format!(
                "names image {:?} but the file is named {name:?}",
                entry.name
            ),
        ));
    }
    Ok(entry)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("sync directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampered_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::new(dir.path());
        cat.insert(&CatalogEntry::new("vm", "dir:/a")).unwrap();
        assert_eq!(cat.require("vm").unwrap().store, "dir:/a");
        let p = cat.entry_path("vm");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("dir:/a", "dir:/b");
        std::fs::write(&p, text).unwrap();
        let err = cat.require("vm").unwrap_err().to_string();
        assert!(err.contains("crc32c mismatch"), "{err}");
    }

    #[test]
    fn names() {
        for ok in ["a", "vm-1", "disk_2.img", "A.b-c_d", &"x".repeat(64)] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a b",
            "é",
            "..",
            &"x".repeat(65),
            "a\n",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn local_path() {
        assert_eq!(spec_local_path("dir:/a/b"), Some(PathBuf::from("/a/b")));
        assert_eq!(
            spec_local_path("zoned-file:/z,zone-size=64M,zones=4"),
            Some(PathBuf::from("/z"))
        );
        assert_eq!(spec_local_path("dir:"), None);
        assert_eq!(spec_local_path("rados:pool/img"), None);
    }

    #[test]
    fn insert_get_list_remove() {
        let home = tempfile::tempdir().unwrap();
        let cat = Catalog::new(home.path());
        assert!(cat.get("a").unwrap().is_none());
        assert!(cat.list().unwrap().is_empty());
        let e = CatalogEntry::new("a", "dir:/x");
        cat.insert(&e).unwrap();
        assert_eq!(cat.get("a").unwrap(), Some(e.clone()));
        // No clobber: a second insert fails and keeps the first entry.
        let before = fs::read(cat.entry_path("a")).unwrap();
        let err = cat.insert(&CatalogEntry::new("a", "dir:/y")).unwrap_err();
        assert!(matches!(err, Error::Exists(_)), "{err}");
        assert_eq!(fs::read(cat.entry_path("a")).unwrap(), before);
        assert_eq!(
            cat.find_by_store_path("dir:/x").unwrap().as_deref(),
            Some("a")
        );
        // No temporaries left behind.
        let names: Vec<_> = fs::read_dir(cat.images_dir())
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        cat.remove("a").unwrap();
        assert!(cat.get("a").unwrap().is_none());
        assert!(matches!(cat.remove("a"), Err(Error::NotFound(_))));
    }

    #[test]
    fn create_lock_is_exclusive_and_cleans_up() {
        let home = tempfile::tempdir().unwrap();
        let cat = Catalog::new(home.path().join("h"));
        let lock = cat.lock_for_create("a").unwrap();
        let err = cat.lock_for_create("a").unwrap_err();
        assert!(matches!(err, Error::Exists(_)), "{err}");
        assert!(err.to_string().contains(".a.lock"), "{err}");
        // Another name is independent.
        drop(cat.lock_for_create("b").unwrap());
        drop(lock);
        // The lock created the catalog directory and nothing else was
        // written: it is gone again.
        assert!(!cat.images_dir().exists());
        let lock = cat.lock_for_create("a").unwrap();
        cat.insert(&CatalogEntry::new("a", "dir:/x")).unwrap();
        drop(lock);
        assert!(cat.get("a").unwrap().is_some());
        let names: Vec<_> = fs::read_dir(cat.images_dir())
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn bad_entries_are_reported_not_skipped() {
        let home = tempfile::tempdir().unwrap();
        let cat = Catalog::new(home.path());
        cat.ensure_dirs().unwrap();
        fs::write(cat.entry_path("junk"), b"{not json").unwrap();
        let mut other = CatalogEntry::new("other", "dir:/o");
        other.name = "renamed".into();
        fs::write(cat.entry_path("other"), serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(matches!(cat.get("junk"), Err(Error::Corrupt { .. })));
        assert!(matches!(cat.get("other"), Err(Error::Corrupt { .. })));
        let list = cat.list().unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|(_, e)| e.is_err()));
    }
}
