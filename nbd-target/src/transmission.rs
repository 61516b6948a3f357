//! The transmission phase: read requests, run them (possibly many at once),
//! write replies.
//!
//! # Invariants
//! - Requests are parsed in order by one reader; each runs as a job on an
//!   [`Executor`], so replies may go out of order (matched by cookie).
//! - Replies are written whole under the connection's writer lock: two
//!   replies never interleave.
//! - A write payload is always consumed, even when the request is refused,
//!   so the stream stays in sync; payloads above [`MAX_REQUEST`] are
//!   skipped, not buffered.
//! - At most [`MAX_INFLIGHT_BYTES`] of payload/read buffers per connection
//!   are held at once; the reader waits for room (backpressure).
//! - [`run`] returns only after every job it started has replied (or failed
//!   to reply because the client is gone): no acknowledged work is pending.

use std::io::{self, Read, Write};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tracing::{debug, trace_span, warn};

use crate::error::Result;
use crate::export::{Export, MAX_REQUEST};
use crate::handshake::{skip, Session};
use crate::proto::*;

/// Payload bytes one connection may hold in flight.
pub const MAX_INFLIGHT_BYTES: u64 = 128 << 20;
/// Requests one connection may have in flight.
pub const MAX_INFLIGHT_REQUESTS: u64 = 256;

/// Runs request jobs.
pub trait Executor: Send + Sync {
    fn execute(&self, job: Box<dyn FnOnce() + Send>);
}

/// Runs each job on the caller's thread (tests, fuzzing).
pub struct Inline;
impl Executor for Inline {
    fn execute(&self, job: Box<dyn FnOnce() + Send>) {
        job()
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of worker threads shared by all connections.
pub struct Pool {
    tx: Mutex<Option<crossbeam_channel::Sender<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Pool {
    pub fn new(n: usize) -> io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nbd-worker-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    })?,
            );
        }
        Ok(Pool {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Stop the workers after the queued jobs ran.
    pub fn shutdown(&self) {
        self.tx.lock().take();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Executor for Pool {
    fn execute(&self, job: Box<dyn FnOnce() + Send>) {
        let tx = self.tx.lock().clone();
        match tx {
            Some(tx) => {
                if let Err(e) = tx.send(job) {
                    (e.into_inner())()
                }
            }
            None => job(),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown()
    }
}

/// Count of jobs and bytes in flight on one connection.
#[derive(Default)]
struct InFlight {
    state: Mutex<(u64, u64)>,
    cv: Condvar,
}

impl InFlight {
    fn acquire(&self, bytes: u64) {
        let mut s = self.state.lock();
        while s.0 > 0 && (s.0 >= MAX_INFLIGHT_REQUESTS || s.1 + bytes > MAX_INFLIGHT_BYTES) {
            self.cv.wait(&mut s);
        }
        s.0 += 1;
        s.1 += bytes;
    }
    fn release(&self, bytes: u64) {
        let mut s = self.state.lock();
        s.0 -= 1;
        s.1 -= bytes;
        self.cv.notify_all();
    }
    fn wait_idle(&self) {
        let mut s = self.state.lock();
        while s.0 > 0 {
            self.cv.wait(&mut s);
        }
    }
}

/// The writing half of a connection, shared by the jobs.
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// Replies waiting to be written, and whether a thread is writing.
#[derive(Default)]
struct ReplyQueue {
    pending: Vec<Vec<u8>>,
    flushing: bool,
}

/// Flush-combining reply writer: replies are queued whole; one thread at a
/// time writes everything queued with `writev`, so replies never
/// interleave and a burst of replies costs one system call.
///
/// Invariant: a reply queued with `flush == true` is written before the
/// queueing call returns or by the thread flushing at that moment, which
/// drains the queue until it finds it empty.
struct Replies {
    q: Mutex<ReplyQueue>,
    w: SharedWriter,
    /// A write to the client failed (gone, or not reading within the
    /// socket's write timeout): the connection is ended, later replies
    /// are dropped.
    dead: std::sync::atomic::AtomicBool,
}

impl Replies {
    fn push(&self, bytes: Vec<u8>, flush: bool) {
        let mut q = self.q.lock();
        q.pending.push(bytes);
        if flush {
            self.drain(q);
        }
    }

    fn flush(&self) {
        let q = self.q.lock();
        self.drain(q);
    }

    fn drain<'a>(&'a self, mut q: parking_lot::MutexGuard<'a, ReplyQueue>) {
        if q.flushing || q.pending.is_empty() {
            return;
        }
        q.flushing = true;
        loop {
            let batch = std::mem::take(&mut q.pending);
            drop(q);
            if !self.dead.load(std::sync::atomic::Ordering::Relaxed) {
                if let Err(e) = write_all_vectored(&mut **self.w.lock(), &batch) {
                    debug!("reply not delivered, ending the connection: {e}");
                    self.dead.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            q = self.q.lock();
            if q.pending.is_empty() {
                q.flushing = false;
                return;
            }
        }
    }
}

fn write_all_vectored(w: &mut dyn Write, bufs: &[Vec<u8>]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| io::IoSlice::new(b))
        .collect();
    let mut s = &mut slices[..];
    while !s.is_empty() {
        let n = s.len().min(1024);
        match w.write_vectored(&s[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => io::IoSlice::advance_slices(&mut s, k),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.flush()
}

struct Ctx {
    export: Arc<Export>,
    structured: bool,
    replies: Replies,
    inflight: InFlight,
}

impl Ctx {
    /// Queue a reply; written at once when `flush`, otherwise by the next
    /// flush (the request loop flushes before it waits for input).
    fn send_with(&self, bytes: Vec<u8>, flush: bool) {
        self.replies.push(bytes, flush);
    }
    fn send(&self, bytes: &[u8]) {
        self.send_with(bytes.to_vec(), true);
    }
    fn simple(&self, cookie: u64, err: u32) {
        self.send(&simple_reply(err, cookie));
    }
    fn read_error(&self, cookie: u64, err: u32, msg: &str) {
        if self.structured {
            let p = structured_error(err, msg);
            let mut b =
                structured_header(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, p.len() as u32)
                    .to_vec();
            b.extend_from_slice(&p);
            self.send(&b);
        } else {
            self.simple(cookie, err);
        }
    }
}

/// What the request loop decided for one request.
enum Plan {
    /// Reply this error right away.
    Fail(u32),
    /// Run it.
    Run,
}

/// Check a request against the export (size, alignment, limits, mode).
fn plan(req: &Request, export: &Export, min_block: u32) -> Plan {
    let size = export.size();
    let len = u64::from(req.len);
    let is_write = matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM);
    match req.kind {
        CMD_READ | CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES => {}
        CMD_FLUSH => return Plan::Run,
        _ => return Plan::Fail(EINVAL),
    }
    if is_write && export.read_only() {
        return Plan::Fail(EPERM);
    }
    if req.len == 0 {
        return Plan::Fail(EINVAL);
    }
    if matches!(req.kind, CMD_READ | CMD_WRITE) && req.len > MAX_REQUEST {
        return Plan::Fail(EINVAL);
    }
    let mb = u64::from(min_block.max(1));
    if !req.offset.is_multiple_of(mb) || !len.is_multiple_of(mb) {
        return Plan::Fail(EINVAL);
    }
    match req.offset.checked_add(len) {
        Some(end) if end <= size => Plan::Run,
        _ if matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES) => Plan::Fail(ENOSPC),
        _ => Plan::Fail(EINVAL),
    }
}

fn errno_msg(e: &io::Error) -> (u32, String) {
    (crate::blockdev::nbd_errno(e), e.to_string())
}

/// Serve requests from `r` until the client disconnects, sends garbage, or
/// the stream ends; replies go to `writer`.
pub fn run<R: Read>(
    r: &mut R,
    writer: SharedWriter,
    session: Session,
    exec: &dyn Executor,
) -> Result<()> {
    let ctx = Arc::new(Ctx {
        export: session.export,
        structured: session.structured,
        replies: Replies {
            q: Mutex::new(ReplyQueue::default()),
            w: writer,
            dead: std::sync::atomic::AtomicBool::new(false),
        },
        inflight: InFlight::default(),
    });
    let mut br = io::BufReader::with_capacity(INPUT_BUFFER, r);
    let res = loop_requests(&mut br, &ctx, session.min_block, exec);
    ctx.replies.flush();
    ctx.inflight.wait_idle();
    ctx.replies.flush();
    res
}

/// Input buffer of a connection: a burst of pipelined requests is parsed
/// from one `read`.
const INPUT_BUFFER: usize = 256 * 1024;

/// Fill `buf` from `r`; when that must wait for the client, first write the
/// replies queued so far (the client may be waiting for them).
fn fill<R: Read>(r: &mut io::BufReader<R>, ctx: &Ctx, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        if r.buffer().is_empty() {
            ctx.replies.flush();
        }
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads run on the reader thread while the export's average read time is
/// below this; slower devices (cold disks, remote stores) get their reads
/// run concurrently on the pool.
pub const READ_INLINE_NS: u64 = 50_000;
/// Largest read run on the reader thread.
const READ_INLINE_MAX: u32 = 256 * 1024;

/// Requests run on the reader's own thread: ones that only touch memory in
/// the engine (writes without FUA, trims, zeroes) and small reads while
/// reads are fast, so a pipeline of small requests costs no thread
/// hand-off and its replies go out in one batch. Flushes and FUA writes,
/// which wait for the store, always go to the pool.
fn runs_inline(req: &Request, export: &Export) -> bool {
    match req.kind {
        CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES => req.flags & CMD_FLAG_FUA == 0,
        CMD_READ => {
            req.len <= READ_INLINE_MAX
                && export.read_ns.load(std::sync::atomic::Ordering::Relaxed) < READ_INLINE_NS
        }
        _ => false,
    }
}

/// Fold one read's duration into the export's moving average (1/8 weight).
fn note_read_time(export: &Export, ns: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let old = export.read_ns.load(Relaxed);
    export.read_ns.store(old - old / 8 + ns / 8, Relaxed);
}

fn loop_requests<R: Read>(
    r: &mut io::BufReader<R>,
    ctx: &Arc<Ctx>,
    min_block: u32,
    exec: &dyn Executor,
) -> Result<()> {
    let mut hb = [0u8; REQUEST_LEN];
    loop {
        if ctx.replies.dead.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client does not take its replies",
            )
            .into());
        }
        // EOF between requests is a (rude but harmless) disconnect.
        match fill(r, ctx, &mut hb)? {
            0 => return Ok(()),
            REQUEST_LEN => {}
            _ => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
        }
        let req = Request::decode(&hb)?;
        let export = &ctx.export;
        if req.kind == CMD_DISC {
            debug!("client sent DISC");
            return Ok(());
        }
        let decision = plan(&req, export, min_block);
        if req.kind == CMD_WRITE {
            if let Plan::Fail(e) = decision {
                ctx.replies.flush();
                skip(r, u64::from(req.len))?;
                ctx.simple(req.cookie, e);
                continue;
            }
        }
        if let Plan::Fail(e) = decision {
            if req.kind == CMD_READ {
                ctx.read_error(req.cookie, e, "request refused");
            } else {
                ctx.simple(req.cookie, e);
            }
            continue;
        }
        let bytes = if matches!(req.kind, CMD_READ | CMD_WRITE) {
            u64::from(req.len)
        } else {
            0
        };
        ctx.inflight.acquire(bytes);
        let payload = if req.kind == CMD_WRITE {
            let mut p = vec![0u8; req.len as usize];
            let got = fill(r, ctx, &mut p);
            if !matches!(got, Ok(n) if n == p.len()) {
                // The client vanished mid-payload: nothing was acknowledged.
                ctx.inflight.release(bytes);
                return Err(got
                    .err()
                    .unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into())
                    .into());
            }
            p
        } else {
            Vec::new()
        };
        let guard = Release(Arc::clone(ctx), bytes);
        if runs_inline(&req, &ctx.export) {
            execute(&guard.0, req, payload, false);
        } else {
            exec.execute(Box::new(move || {
                execute(&guard.0, req, payload, true);
            }));
        }
    }
}

/// Releases a job's in-flight share when the job ends, however it ends.
struct Release(Arc<Ctx>, u64);
impl Drop for Release {
    fn drop(&mut self) {
        self.0.inflight.release(self.1)
    }
}

/// Run one checked request and queue its reply (written at once if
/// `flush`).
fn execute(ctx: &Ctx, req: Request, payload: Vec<u8>, flush: bool) {
    let dev = ctx.export.dev();
    let fua = req.flags & CMD_FLAG_FUA != 0;
    let len = u64::from(req.len);
    let _span = trace_span!("nbd", kind = req.kind, offset = req.offset, len).entered();
    match req.kind {
        CMD_READ => {
            let hdr = if ctx.structured { 20 + 8 } else { 16 };
            let mut buf = vec![0u8; hdr + req.len as usize];
            let t0 = std::time::Instant::now();
            let res = dev.read(req.offset, &mut buf[hdr..]);
            note_read_time(&ctx.export, t0.elapsed().as_nanos() as u64);
            match res {
                Ok(()) => {
                    if ctx.structured {
                        buf[..20].copy_from_slice(&structured_header(
                            REPLY_FLAG_DONE,
                            REPLY_TYPE_OFFSET_DATA,
                            req.cookie,
                            8 + req.len,
                        ));
                        buf[20..28].copy_from_slice(&req.offset.to_be_bytes());
                    } else {
                        buf[..16].copy_from_slice(&simple_reply(0, req.cookie));
                    }
                    ctx.export
                        .bytes_read
                        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                    ctx.send_with(buf, flush);
                }
                Err(e) => {
                    let (n, m) = errno_msg(&e);
                    warn!(offset = req.offset, len, "nbd read failed: {e}");
                    ctx.read_error(req.cookie, n, &m);
                }
            }
        }
        CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM | CMD_FLUSH => {
            let res = match req.kind {
                CMD_WRITE => dev.write(req.offset, &payload, fua),
                CMD_WRITE_ZEROES => {
                    dev.write_zeroes(req.offset, len, req.flags & CMD_FLAG_NO_HOLE != 0, fua)
                }
                CMD_TRIM => dev.discard(req.offset, len, fua),
                _ => dev.flush(),
            };
            match res {
                Ok(()) => {
                    if req.kind == CMD_WRITE {
                        ctx.export
                            .bytes_written
                            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                    }
                    ctx.send_with(simple_reply(0, req.cookie).to_vec(), flush)
                }
                Err(e) => {
                    warn!(
                        kind = req.kind,
                        offset = req.offset,
                        len,
                        "nbd request failed: {e}"
                    );
                    ctx.send_with(simple_reply(errno_msg(&e).0, req.cookie).to_vec(), flush)
                }
            }
        }
        _ => ctx.simple(req.cookie, EINVAL),
    }
}
