//! Worker threads that run the device's blocking calls for one queue, and
//! the per-request completion slot they fill.
//!
//! Invariant: a request's data buffer is touched by exactly one side at a
//! time. The queue's task for that tag hands the buffer to a worker with the
//! job and does nothing but wait on the slot until the worker has completed
//! it; the worker does not touch the buffer after completing.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crossbeam_channel::{Receiver, Sender};

use crate::blockdev::BlockDevLike;
use crate::error::{Error, Result};
use crate::flush::FlushGroup;
use crate::queue::QueueShared;

/// What a request asks of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Write { fua: bool },
    Flush,
    Discard,
    WriteZeroes,
}

/// A request's data buffer, handed to a worker (see the module invariant).
pub(crate) struct BufPtr {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is owned by the tag's task, which does not touch it
// while the worker holds it (module invariant); it outlives the job because
// the task waits for the completion before reusing or freeing it.
unsafe impl Send for BufPtr {}

impl BufPtr {
    /// # Safety
    /// `ptr..ptr+len` must stay valid and untouched by others until the
    /// job's slot is completed.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        BufPtr { ptr, len }
    }
}

pub(crate) struct Job {
    pub op: Op,
    pub offset: u64,
    pub len: u64,
    pub buf: BufPtr,
    pub slot: Arc<Slot>,
}

#[derive(Default)]
struct SlotState {
    result: Option<i32>,
    waker: Option<Waker>,
}

/// Where a worker puts a request's result (bytes done, or -errno).
#[derive(Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
}

impl Slot {
    fn complete(&self, res: i32) {
        let waker = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.result = Some(res);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Wait for the result of the job last submitted with this slot.
    pub(crate) fn wait(&self) -> SlotWait<'_> {
        SlotWait { slot: self }
    }
}

pub(crate) struct SlotWait<'a> {
    slot: &'a Slot,
}

impl Future for SlotWait<'_> {
    type Output = i32;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<i32> {
        let mut st = self.slot.state.lock().unwrap_or_else(|p| p.into_inner());
        match st.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// An eventfd the workers write after each completion; the queue thread
/// keeps a read of it in flight on its io_uring.
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> Result<Arc<Self>> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Io {
                context: "eventfd".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Arc::new(EventFd(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    pub(crate) fn raw(&self) -> i32 {
        self.0.as_raw_fd()
    }

    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. An eventfd write only fails
        // on counter overflow, which cannot happen with the reader draining.
        unsafe {
            libc::write(self.raw(), (&one as *const u64).cast(), 8);
        }
    }
}

/// Errno for an engine error returned to the kernel.
fn errno(e: &log_engine::Error) -> i32 {
    use log_engine::Error as E;
    match e {
        E::InvalidArgument(..) => -libc::EINVAL,
        E::NoSpace(..) => -libc::ENOSPC,
        _ => -libc::EIO,
    }
}

fn run(dev: &dyn BlockDevLike, fg: &FlushGroup, write_through: bool, job: &Job) -> i32 {
    let len = job.len as usize;
    if matches!(job.op, Op::Read | Op::Write { .. }) && len > job.buf.len {
        return -libc::EINVAL;
    }
    let r = match job.op {
        Op::Read => {
            let _s = tracing::trace_span!("ublk_read", offset = job.offset, len).entered();
            // SAFETY: module invariant; len <= the buffer length (checked by
            // the queue before submitting).
            let buf = unsafe { std::slice::from_raw_parts_mut(job.buf.ptr, len) };
            dev.read(job.offset, buf)
        }
        Op::Write { fua } => {
            let _s = tracing::trace_span!("ublk_write", offset = job.offset, len, fua).entered();
            // SAFETY: as above.
            let buf = unsafe { std::slice::from_raw_parts(job.buf.ptr, len) };
            dev.write(job.offset, buf).and_then(|()| {
                if fua || write_through {
                    fg.flush_after(dev)
                } else {
                    Ok(())
                }
            })
        }
        Op::Flush => {
            let _s = tracing::trace_span!("ublk_flush").entered();
            fg.flush_after(dev)
        }
        Op::Discard => {
            let _s = tracing::trace_span!("ublk_discard", offset = job.offset, len).entered();
            dev.discard(job.offset, job.len).and_then(|()| {
                if write_through {
                    fg.flush_after(dev)
                } else {
                    Ok(())
                }
            })
        }
        Op::WriteZeroes => {
            let _s = tracing::trace_span!("ublk_write_zeroes", offset = job.offset, len).entered();
            dev.write_zeroes(job.offset, job.len).and_then(|()| {
                if write_through {
                    fg.flush_after(dev)
                } else {
                    Ok(())
                }
            })
        }
    };
    match r {
        Ok(()) => i32::try_from(job.len).unwrap_or(i32::MAX),
        Err(e) => {
            tracing::error!(op = ?job.op, offset = job.offset, len = job.len, error = %e, "ublk request failed");
            errno(&e)
        }
    }
}

/// A queue's workers. Dropping the pool closes the job channel; workers exit
/// once it is drained.
pub(crate) struct Pool {
    tx: Option<Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    pub(crate) fn start(shared: &QueueShared, efd: Arc<EventFd>, name: &str) -> Result<Pool> {
        let workers = shared.workers;
        let (tx, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::unbounded();
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let rx = rx.clone();
            let dev = shared.dev.clone();
            let fg = shared.flush.clone();
            let write_through = shared.write_through;
            let efd = efd.clone();
            let t = std::thread::Builder::new()
                .name(format!("{name}-w{i}"))
                .spawn(move || {
                    for job in rx.iter() {
                        let res = run(dev.as_ref(), &fg, write_through, &job);
                        job.slot.complete(res);
                        efd.signal();
                    }
                })
                .map_err(|source| Error::Io {
                    context: format!("spawning worker {name}-w{i}"),
                    source,
                })?;
            threads.push(t);
        }
        Ok(Pool {
            tx: Some(tx),
            threads,
        })
    }

    /// Hand a job to the workers; false if they are gone.
    pub(crate) fn submit(&self, job: Job) -> bool {
        match &self.tx {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
