//! What the ublk server needs from the device it serves.

use log_engine::Image;

/// A block device served over ublk. Offsets and lengths are byte values,
/// multiples of the 4096-byte block size, inside `0..size()`; calls may
/// block and are made from several worker threads at once.
pub trait BlockDevLike: Send + Sync {
    /// Device size in bytes (a multiple of 4096).
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> log_engine::Result<()>;
    /// Write `data` at `offset`; acknowledged writes are durable after the
    /// next `flush`.
    fn write(&self, offset: u64, data: &[u8]) -> log_engine::Result<()>;
    /// Make every write completed before the call durable.
    fn flush(&self) -> log_engine::Result<()>;
    /// The range reads as zeros afterwards (space may be released).
    fn discard(&self, offset: u64, len: u64) -> log_engine::Result<()>;
    /// The range reads as zeros afterwards.
    fn write_zeroes(&self, offset: u64, len: u64) -> log_engine::Result<()>;
}

impl BlockDevLike for Image {
    fn size(&self) -> u64 {
        Image::size(self)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> log_engine::Result<()> {
        Image::read(self, offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8]) -> log_engine::Result<()> {
        Image::write(self, offset, data).map(|_| ())
    }
    fn flush(&self) -> log_engine::Result<()> {
        Image::flush(self)
    }
    fn discard(&self, offset: u64, len: u64) -> log_engine::Result<()> {
        Image::discard(self, offset, len).map(|_| ())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> log_engine::Result<()> {
        Image::write_zeroes(self, offset, len).map(|_| ())
    }
}
