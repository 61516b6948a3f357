//! One ublk queue: a thread with its own io_uring, one async task per tag,
//! and an eventfd task that wakes the ring when workers complete requests.

use std::rc::Rc;
use std::sync::Arc;

use io_uring::{opcode, types};
use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkQueue};
use libublk::uring_async::ublk_submit_sqe_async;
use libublk::{sys, BufDesc, UblkError, UblkUringData};

use crate::blockdev::BlockDevLike;
use crate::flush::FlushGroup;
use crate::worker::{BufPtr, EventFd, Job, Op, Pool, Slot};

/// What each queue thread needs (cloned into every queue thread).
#[derive(Clone)]
pub(crate) struct QueueShared {
    pub dev: Arc<dyn BlockDevLike>,
    pub workers: usize,
    pub size: u64,
    /// Writes are acknowledged only once durable.
    pub write_through: bool,
    /// Shared by all queues of the device.
    pub flush: Arc<FlushGroup>,
}

/// Decode a request; Err(-errno) for one the device cannot do.
fn decode(iod: &sys::ublksrv_io_desc, size: u64, buf_len: usize) -> Result<(Op, u64, u64), i32> {
    let op = iod.op_flags & 0xff;
    let offset = iod.start_sector << 9;
    let len = u64::from(iod.nr_sectors) << 9;
    let op = match op {
        sys::UBLK_IO_OP_READ => Op::Read,
        sys::UBLK_IO_OP_WRITE => Op::Write {
            fua: iod.op_flags & sys::UBLK_IO_F_FUA != 0,
        },
        sys::UBLK_IO_OP_FLUSH => return Ok((Op::Flush, 0, 0)),
        sys::UBLK_IO_OP_DISCARD => Op::Discard,
        sys::UBLK_IO_OP_WRITE_ZEROES => Op::WriteZeroes,
        _ => return Err(-libc::EOPNOTSUPP),
    };
    let bad = !offset.is_multiple_of(4096)
        || !len.is_multiple_of(4096)
        || len == 0
        || offset.checked_add(len).is_none_or(|end| end > size)
        || (matches!(op, Op::Read | Op::Write { .. }) && len > buf_len as u64);
    if bad {
        tracing::warn!(?op, offset, len, "ublk request out of range or unaligned");
        return Err(-libc::EINVAL);
    }
    Ok((op, offset, len))
}

async fn io_task(q: &UblkQueue<'_>, tag: u16, pool: &Pool, size: u64) -> Result<(), UblkError> {
    let buf_len = q.dev.dev_info.max_io_buf_bytes as usize;
    let mut buf = IoBuf::<u8>::new(buf_len);
    let slot = Arc::new(Slot::default());
    q.submit_io_prep_cmd(tag, BufDesc::Slice(buf.as_slice()), 0, Some(&buf))
        .await?;
    loop {
        let res = match decode(q.get_iod(tag), size, buf_len) {
            Err(e) => e,
            Ok((op, offset, len)) => {
                let s = buf.as_mut_slice();
                // SAFETY: this task waits for the slot below before touching
                // `buf` again, and `buf` lives as long as the task.
                let bp = unsafe { BufPtr::new(s.as_mut_ptr(), s.len()) };
                let job = Job {
                    op,
                    offset,
                    len,
                    buf: bp,
                    slot: slot.clone(),
                };
                if pool.submit(job) {
                    slot.wait().await
                } else {
                    -libc::EIO
                }
            }
        };
        q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), res)
            .await?;
    }
}

/// Keep a read of the eventfd in flight so completions from workers end
/// the ring's wait; returns when the read fails (ring going away).
async fn eventfd_task(efd: Arc<EventFd>) {
    // Leaked on purpose (8 bytes per queue lifetime): a read may still be
    // in flight in the kernel when the queue's ring is torn down.
    let buf: &'static mut [u8; 8] = Box::leak(Box::new([0u8; 8]));
    loop {
        let sqe = opcode::Read::new(types::Fd(efd.raw()), buf.as_mut_ptr(), 8).build();
        match ublk_submit_sqe_async(sqe, UblkUringData::Target as u64).await {
            Ok(r) if r >= 0 => continue,
            Ok(r) if r == -libc::EINTR || r == -libc::EAGAIN => continue,
            Ok(r) => {
                tracing::error!(errno = -r, "eventfd read failed on the queue ring");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "eventfd read submit failed");
                return;
            }
        }
    }
}

/// Body of one queue thread (libublk's `q_fn`).
pub(crate) fn run_queue(qid: u16, dev: &UblkDev, shared: &QueueShared) {
    let _span = tracing::info_span!("ublk_queue", dev = dev.dev_info.dev_id, qid).entered();
    let efd = match EventFd::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "queue setup failed");
            return;
        }
    };
    let name = format!("ublk{}q{}", dev.dev_info.dev_id, qid);
    let pool = match Pool::start(shared, efd.clone(), &name) {
        Ok(p) => Rc::new(p),
        Err(e) => {
            tracing::error!(error = %e, "queue setup failed");
            return;
        }
    };
    let q = match UblkQueue::new(qid, dev) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            tracing::error!(error = %e, "creating ublk queue failed");
            return;
        }
    };
    let exe = Rc::new(smol::LocalExecutor::new());
    let mut tasks = Vec::new();
    for tag in q.tags() {
        let q = q.clone();
        let pool = pool.clone();
        let size = shared.size;
        tasks.push(exe.spawn(async move {
            match io_task(&q, tag, &pool, size).await {
                Err(UblkError::QueueIsDown) | Ok(()) => {}
                Err(e) => tracing::error!(tag, error = %e, "ublk io task failed"),
            }
        }));
    }
    let efd_task = exe.spawn(eventfd_task(efd.clone()));
    let exe2 = exe.clone();
    smol::block_on(exe.run(async move {
        let run_ops = || while exe2.try_tick() {};
        let done = || tasks.iter().all(|t| t.is_finished());
        if let Err(e) = libublk::wait_and_handle_io_events(&q, Some(20), run_ops, done).await {
            tracing::error!(error = %e, "ublk queue event loop failed");
        }
    }));
    drop(efd_task);
    tracing::debug!("queue thread exits");
}
