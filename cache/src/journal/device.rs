//! The journal's device I/O, owned by the single submission thread: runs of
//! contiguous records go down as one `writev` each (one device write shared
//! by every record of a group commit), all runs of a group submitted at
//! once through io_uring; `fdatasync` through io_uring too. When io_uring is
//! not available (old kernel, seccomp) the same calls fall back to
//! `pwritev`/`fdatasync`, with a warning.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};
use tracing::warn;

use super::format::AlignedBuf;

/// Ring entries (and most runs submitted per `submit_and_wait`).
const RING_ENTRIES: u32 = 128;
/// Most buffers in one `writev` (IOV_MAX is 1024 on Linux).
pub(crate) const MAX_IOVS: usize = 256;

/// A run of records that are contiguous on the device.
pub(crate) struct Run<'a> {
    pub pos: u64,
    pub bufs: Vec<&'a AlignedBuf>,
}

pub(crate) struct Device {
    file: File,
    ring: Option<IoUring>,
}

impl Device {
    pub fn new(file: File) -> Device {
        let ring = match IoUring::new(RING_ENTRIES) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "io_uring unavailable; journal falls back to pwritev");
                None
            }
        };
        Device { file, ring }
    }

    /// True when I/O goes through io_uring.
    pub fn uses_io_uring(&self) -> bool {
        self.ring.is_some()
    }

    /// Write every run; returns once all are complete. Runs are submitted
    /// in the order given (the kernel may complete them in any order).
    pub fn write_runs(&mut self, runs: &[Run<'_>]) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let iovs: Vec<Vec<libc::iovec>> = runs
            .iter()
            .map(|r| {
                r.bufs
                    .iter()
                    .map(|b| libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    })
                    .collect()
            })
            .collect();
        let want: Vec<usize> = runs
            .iter()
            .map(|r| r.bufs.iter().map(|b| b.len()).sum())
            .collect();
        let Some(ring) = self.ring.as_mut() else {
            for (i, r) in runs.iter().enumerate() {
                // SAFETY: the iovecs point into buffers borrowed for this call.
                let n = unsafe {
                    libc::pwritev(
                        fd,
                        iovs[i].as_ptr(),
                        iovs[i].len() as libc::c_int,
                        r.pos as libc::off_t,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("journal write at offset {}: {e}", r.pos),
                    ));
                }
                check_len(n as i64, want[i], r.pos)?;
            }
            return Ok(());
        };
        for chunk_start in (0..runs.len()).step_by(RING_ENTRIES as usize) {
            let chunk_end = (chunk_start + RING_ENTRIES as usize).min(runs.len());
            for i in chunk_start..chunk_end {
                let e = opcode::Writev::new(types::Fd(fd), iovs[i].as_ptr(), iovs[i].len() as u32)
                    .offset(runs[i].pos)
                    .build()
                    .user_data(i as u64);
                // SAFETY: iovecs and buffers outlive the wait below.
                unsafe {
                    ring.submission()
                        .push(&e)
                        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                }
            }
            let n = chunk_end - chunk_start;
            let mut seen = 0;
            let mut first_err = None;
            while seen < n {
                ring.submit_and_wait(n - seen)?;
                for cqe in ring.completion() {
                    seen += 1;
                    let i = cqe.user_data() as usize;
                    if let Err(e) = check_len(cqe.result() as i64, want[i], runs[i].pos) {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Write one buffer at `pos`.
    pub fn write_at(&mut self, pos: u64, buf: &AlignedBuf) -> io::Result<()> {
        self.write_runs(&[Run {
            pos,
            bufs: vec![buf],
        }])
    }

    /// fdatasync: every completed write is on stable storage afterwards.
    pub fn datasync(&mut self) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let Some(ring) = self.ring.as_mut() else {
            return self.file.sync_data();
        };
        let e = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(u64::MAX);
        // SAFETY: no buffers involved.
        unsafe {
            ring.submission()
                .push(&e)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        loop {
            ring.submit_and_wait(1)?;
            if let Some(cqe) = ring.completion().next() {
                let r = cqe.result();
                return if r < 0 {
                    Err(io::Error::from_raw_os_error(-r))
                } else {
                    Ok(())
                };
            }
        }
    }
}

fn check_len(res: i64, want: usize, pos: u64) -> io::Result<()> {
    if res < 0 {
        let errno = io::Error::from_raw_os_error(-res as i32);
        return Err(io::Error::new(
            errno.kind(),
            format!("journal write at offset {pos}: {errno}"),
        ));
    }
    if res as usize != want {
        return Err(io::Error::other(format!(
            "short journal write at offset {pos}: {res} of {want} bytes"
        )));
    }
    Ok(())
}
