//! A thin, safe wrapper over librados (the raw FFI of the `ceph` crate):
//! one cluster handle plus one I/O context on a pool and namespace.
//!
//! # Invariants
//! - A [`Conn`] owns both handles; on drop the I/O context is destroyed
//!   before the cluster handle is shut down (never the other way round).
//! - Every call returns the raw librados result: `>= 0` success, `-errno`
//!   failure. Mapping to [`log_engine::Error`] happens in [`crate::errors`].
//! - Timeouts (`client_mount_timeout`, `rados_osd_op_timeout`,
//!   `rados_mon_op_timeout`) are set before connecting, so no call blocks
//!   for longer than about the op timeout; an op that timed out leaves the
//!   handle unusable (see NOTES: no further acks), so callers rebuild the
//!   whole `Conn` after `-ETIMEDOUT`.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::ptr;

use ceph::rados as ffi;

/// librados `LIBRADOS_CREATE_EXCLUSIVE`.
const CREATE_EXCLUSIVE: i32 = 1;
/// librados `LIBRADOS_OPERATION_FULL_TRY`: on a full pool or cluster, fail
/// the write with `-EDQUOT`/`-ENOSPC` instead of pausing it forever.
pub const OP_FULL_TRY: i32 = 64;

/// Where and how to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnConfig {
    /// ceph.conf path; `None` = librados default search (`CEPH_CONF`, /etc/ceph).
    pub conf_path: Option<String>,
    pub pool: String,
    /// RADOS namespace inside the pool; empty = default namespace.
    pub namespace: String,
    /// Whole seconds (librados rejects fractions) for mount, mon and OSD ops.
    pub timeout_secs: u32,
}

/// Raw failure: what was being done and the negative errno.
#[derive(Debug)]
pub struct RawError {
    pub what: String,
    pub code: i32,
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (errno {})",
            self.what,
            std::io::Error::from_raw_os_error(-self.code),
            -self.code
        )
    }
}

fn cstr(s: &str, what: &str) -> Result<CString, RawError> {
    CString::new(s).map_err(|_| RawError {
        what: format!("{what} {s:?} contains a NUL byte"),
        code: -libc::EINVAL,
    })
}

fn check(r: i32, what: impl FnOnce() -> String) -> Result<i32, RawError> {
    if r < 0 {
        Err(RawError {
            what: what(),
            code: r,
        })
    } else {
        Ok(r)
    }
}

/// One cluster connection + I/O context. See the module docs.
#[derive(Debug)]
pub struct Conn {
    cluster: ffi::rados_t,
    io: ffi::rados_ioctx_t,
}

// SAFETY: librados cluster handles and I/O contexts are thread-safe (the C
// API documents concurrent use of one ioctx from many threads for object
// operations); we never change the ioctx's namespace after construction.
unsafe impl Send for Conn {}
// SAFETY: see above; all methods take `&self` and only issue object ops.
unsafe impl Sync for Conn {}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: handles were created by us and are released exactly once,
        // the I/O context before the cluster.
        unsafe {
            if !self.io.is_null() {
                ffi::rados_ioctx_destroy(self.io);
            }
            if !self.cluster.is_null() {
                ffi::rados_shutdown(self.cluster);
            }
        }
    }
}

impl Conn {
    /// Connect (bounded by `timeout_secs`) and open the pool.
    pub fn connect(cfg: &ConnConfig) -> Result<Conn, RawError> {
        let id = cstr("admin", "client id")?;
        let mut c = Conn {
            cluster: ptr::null_mut(),
            io: ptr::null_mut(),
        };
        // SAFETY: out-pointer to a local; id lives across the call.
        check(
            unsafe { ffi::rados_create(&mut c.cluster, id.as_ptr()) },
            || "create cluster handle".into(),
        )?;
        let conf = match &cfg.conf_path {
            Some(p) => Some(cstr(p, "conf path")?),
            None => None,
        };
        let conf_ptr = conf.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        // SAFETY: valid handle; NULL path = default search.
        check(
            unsafe { ffi::rados_conf_read_file(c.cluster, conf_ptr) },
            || {
                format!(
                    "read ceph config {}",
                    cfg.conf_path.as_deref().unwrap_or("(default search)")
                )
            },
        )?;
        let t = cfg.timeout_secs.max(1).to_string();
        for key in [
            "client_mount_timeout",
            "rados_osd_op_timeout",
            "rados_mon_op_timeout",
        ] {
            let k = cstr(key, "option")?;
            let v = cstr(&t, "value")?;
            // SAFETY: valid handle and strings.
            check(
                unsafe { ffi::rados_conf_set(c.cluster, k.as_ptr(), v.as_ptr()) },
                || format!("set {key}={t}"),
            )?;
        }
        // SAFETY: valid, configured handle.
        check(unsafe { ffi::rados_connect(c.cluster) }, || {
            format!(
                "connect to the cluster of {} (within {t} s)",
                cfg.conf_path.as_deref().unwrap_or("(default ceph.conf)")
            )
        })?;
        let pool = cstr(&cfg.pool, "pool")?;
        // SAFETY: connected handle; out-pointer to our field.
        check(
            unsafe { ffi::rados_ioctx_create(c.cluster, pool.as_ptr(), &mut c.io) },
            || format!("open pool {:?}", cfg.pool),
        )?;
        if !cfg.namespace.is_empty() {
            let ns = cstr(&cfg.namespace, "namespace")?;
            // SAFETY: valid ioctx; librados copies the string.
            unsafe { ffi::rados_ioctx_set_namespace(c.io, ns.as_ptr()) };
        }
        Ok(c)
    }

    /// Write `data` as the whole object `oid`. `exclusive`: fail with
    /// `-EEXIST` if it exists. Atomic: readers see all of it or nothing.
    pub fn write_full(&self, oid: &str, data: &[u8], exclusive: bool) -> Result<(), RawError> {
        let o = cstr(oid, "object name")?;
        // SAFETY: the op is created, filled with pointers that outlive the
        // synchronous operate call, and released exactly once.
        let r = unsafe {
            let op = ffi::rados_create_write_op();
            if op.is_null() {
                return Err(RawError {
                    what: format!("create write op for {oid}"),
                    code: -libc::ENOMEM,
                });
            }
            if exclusive {
                ffi::rados_write_op_create(op, CREATE_EXCLUSIVE, ptr::null());
            }
            ffi::rados_write_op_write_full(op, data.as_ptr() as *const c_char, data.len());
            let r =
                ffi::rados_write_op_operate(op, self.io, o.as_ptr(), ptr::null_mut(), OP_FULL_TRY);
            ffi::rados_release_write_op(op);
            r
        };
        check(r, || format!("write object {oid} ({} bytes)", data.len())).map(|_| ())
    }

    /// Read up to `buf.len()` bytes of `oid` at `off`; returns bytes read.
    pub fn read(&self, oid: &str, off: u64, buf: &mut [u8]) -> Result<usize, RawError> {
        let o = cstr(oid, "object name")?;
        // SAFETY: buf is valid for buf.len() bytes for the call.
        let r = unsafe {
            ffi::rados_read(
                self.io,
                o.as_ptr(),
                buf.as_mut_ptr() as *mut c_char,
                buf.len(),
                off,
            )
        };
        check(r, || format!("read object {oid} [{off}, +{}]", buf.len())).map(|n| n as usize)
    }

    /// Size of `oid`.
    pub fn stat(&self, oid: &str) -> Result<u64, RawError> {
        let o = cstr(oid, "object name")?;
        let mut size = 0u64;
        // SAFETY: out-pointers to locals.
        let r = unsafe { ffi::rados_stat(self.io, o.as_ptr(), &mut size, ptr::null_mut()) };
        check(r, || format!("stat object {oid}")).map(|_| size)
    }

    /// Remove `oid` (`-ENOENT` if absent).
    pub fn remove(&self, oid: &str) -> Result<(), RawError> {
        let o = cstr(oid, "object name")?;
        // SAFETY: valid ioctx and string.
        let r = unsafe { ffi::rados_remove(self.io, o.as_ptr()) };
        check(r, || format!("remove object {oid}")).map(|_| ())
    }

    /// Names of all objects in the namespace whose name starts with
    /// `prefix` (a full scan of the pool's PGs, filtered by the OSDs to our
    /// namespace and here by prefix).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, RawError> {
        let mut ctx: ffi::rados_list_ctx_t = ptr::null_mut();
        // SAFETY: out-pointer to a local.
        check(
            unsafe { ffi::rados_nobjects_list_open(self.io, &mut ctx) },
            || "open object listing".into(),
        )?;
        let mut out = Vec::new();
        let res = loop {
            let mut entry: *const c_char = ptr::null();
            // SAFETY: ctx is open; entry points to a local; librados keeps
            // the returned string valid until the next call on ctx. (The
            // crate declares the out-params one pointer level too deep.)
            let r = unsafe {
                ffi::rados_nobjects_list_next(
                    ctx,
                    &mut entry as *mut *const c_char as *mut *mut *const c_char,
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            };
            if r == -libc::ENOENT {
                break Ok(());
            }
            if r < 0 {
                break Err(RawError {
                    what: format!("list objects with prefix {prefix:?}"),
                    code: r,
                });
            }
            if entry.is_null() {
                continue;
            }
            // SAFETY: non-null NUL-terminated string owned by ctx.
            let name = unsafe { CStr::from_ptr(entry) }.to_string_lossy();
            if name.starts_with(prefix) {
                out.push(name.into_owned());
            }
        };
        // SAFETY: ctx was opened above and is closed once.
        unsafe { ffi::rados_nobjects_list_close(ctx) };
        res.map(|_| out)
    }
}
