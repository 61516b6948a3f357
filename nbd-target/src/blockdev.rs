//! [`BlockDev`]: what the NBD server serves, and its implementation for the
//! log engine's [`Image`].
//!
//! The server never talks to the engine directly: anything that implements
//! this trait (the engine today, the write journal's disk later) can be
//! exported.

use std::io;

use log_engine::{Error as EngineError, Image};

/// A block device the NBD server can export.
///
/// # Contract
/// - Offsets and lengths passed in are multiples of [`BlockDev::block_size`]
///   and inside `0..size()` (the server checks both before calling).
/// - `write` with `fua == true` returns only once the data is durable.
/// - `flush` makes every write *completed* before the call durable, whichever
///   connection issued it (this is what lets the server advertise
///   `NBD_FLAG_CAN_MULTI_CONN`).
/// - After `discard` or `write_zeroes` the range reads as zeros.
/// - Errors map to protocol errors by kind: `InvalidInput` → EINVAL,
///   `StorageFull` → ENOSPC, `PermissionDenied`/`ReadOnlyFilesystem` →
///   EPERM, anything else → EIO.
pub trait BlockDev: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// I/O granularity the device needs (the server does read-modify-write
    /// for client requests finer than this). A power of two.
    fn block_size(&self) -> u32 {
        4096
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write(&self, off: u64, data: &[u8], fua: bool) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    fn discard(&self, off: u64, len: u64) -> io::Result<()>;
    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()>;
}

/// Convert an engine error into an `io::Error` whose kind carries the
/// protocol meaning (see the [`BlockDev`] contract).
pub fn engine_to_io(e: EngineError) -> io::Error {
    let kind = match &e {
        EngineError::InvalidArgument(_) => io::ErrorKind::InvalidInput,
        EngineError::NoSpace(_) => io::ErrorKind::StorageFull,
        EngineError::Io { source, .. } => source.kind(),
        EngineError::Timeout(_) => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl BlockDev for Image {
    fn size(&self) -> u64 {
        Image::size(self)
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        Image::read(self, off, buf).map_err(engine_to_io)
    }
    fn write(&self, off: u64, data: &[u8], fua: bool) -> io::Result<()> {
        Image::write(self, off, data).map_err(engine_to_io)?;
        if fua {
            Image::flush(self).map_err(engine_to_io)?;
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Image::flush(self).map_err(engine_to_io)
    }
    fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        Image::discard(self, off, len)
            .map(|_| ())
            .map_err(engine_to_io)
    }
    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        Image::write_zeroes(self, off, len)
            .map(|_| ())
            .map_err(engine_to_io)
    }
}

impl<T: BlockDev + ?Sized> BlockDev for std::sync::Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn block_size(&self) -> u32 {
        (**self).block_size()
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read(off, buf)
    }
    fn write(&self, off: u64, data: &[u8], fua: bool) -> io::Result<()> {
        (**self).write(off, data, fua)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn discard(&self, off: u64, len: u64) -> io::Result<()> {
        (**self).discard(off, len)
    }
    fn write_zeroes(&self, off: u64, len: u64) -> io::Result<()> {
        (**self).write_zeroes(off, len)
    }
}

/// The protocol error number for an I/O error.
pub fn nbd_errno(e: &io::Error) -> u32 {
    use crate::proto::*;
    match e.kind() {
        io::ErrorKind::InvalidInput => EINVAL,
        io::ErrorKind::StorageFull => ENOSPC,
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => EPERM,
        io::ErrorKind::OutOfMemory => ENOMEM,
        io::ErrorKind::Unsupported => ENOTSUP,
        _ => EIO,
    }
}
