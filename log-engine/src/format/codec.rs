//! Little-endian encoding helpers shared by every format.
//!
//! [`Writer`] appends fixed-width little-endian integers to a `Vec<u8>`;
//! [`Reader`] reads them back from a byte slice and answers a short input
//! with [`Error::Corrupt`] naming the object instead of panicking. Every
//! decoder in [`crate::format`] is written on top of [`Reader`], so malformed
//! bytes from a store can never index out of bounds.

use crate::{Error, Result};

/// Length of the trailing crc32c of every structure.
pub const CRC_LEN: usize = 4;

/// Round `n` up to a multiple of `align` (a power of two or any non-zero
/// value), `None` on overflow.
pub fn round_up(n: u64, align: u64) -> Option<u64> {
    debug_assert!(align > 0);
    let rem = n % align;
    if rem == 0 {
        Some(n)
    } else {
        n.checked_add(align - rem)
    }
}

/// Append-only little-endian encoder.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(cap),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Append raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Append `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }

    /// Append the crc32c of everything written so far.
    pub fn crc(&mut self) -> &mut Self {
        let crc = crc32c::crc32c(&self.buf);
        self.u32(crc)
    }

    /// Pad with zeros up to a multiple of `align` bytes.
    pub fn pad_to(&mut self, align: usize) -> &mut Self {
        let rem = self.buf.len() % align;
        if rem != 0 {
            self.zeros(align - rem);
        }
        self
    }

    /// The encoded bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// Append the crc32c of everything written so far and return the bytes.
    pub fn finish_with_crc(mut self) -> Vec<u8> {
        self.crc();
        self.buf
    }
}

/// Bounds-checked little-endian decoder over a byte slice.
///
/// Every read past the end returns [`Error::Corrupt`] with `what` (the object
/// name) and the field that was being read.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    what: &'a str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, naming `what` in its errors.
    pub fn new(what: &'a str, buf: &'a [u8]) -> Self {
        Reader { what, buf, pos: 0 }
    }

    /// Current offset from the start of `buf`.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An error about this object.
    pub fn corrupt(&self, detail: impl Into<String>) -> Error {
        Error::corrupt(self.what, detail)
    }

    /// Take the next `n` bytes; `field` names them in the error.
    pub fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.corrupt(format!(
                "truncated: {field} needs {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u16(&mut self, field: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A 16-byte uuid.
    pub fn uuid(&mut self, field: &str) -> Result<[u8; 16]> {
        self.array(field)
    }

    /// Read a `u32` that must be zero (reserved fields).
    pub fn reserved_u32(&mut self, field: &str) -> Result<()> {
        let at = self.pos;
        let v = self.u32(field)?;
        if v != 0 {
            return Err(self.corrupt(format!("{field} at offset {at} is {v:#x}, must be 0")));
        }
        Ok(())
    }

    /// Read a `u16` that must be zero (reserved fields).
    pub fn reserved_u16(&mut self, field: &str) -> Result<()> {
        let at = self.pos;
        let v = self.u16(field)?;
        if v != 0 {
            return Err(self.corrupt(format!("{field} at offset {at} is {v:#x}, must be 0")));
        }
        Ok(())
    }

    /// Check the 8-byte magic.
    pub fn magic(&mut self, magic: &[u8; 8]) -> Result<()> {
        let got = self.take(8, "magic")?;
        if got != magic {
            return Err(self.corrupt(format!(
                "bad magic {:?}, expected {:?}",
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(magic)
            )));
        }
        Ok(())
    }

    /// Fail unless every byte was consumed.
    pub fn expect_end(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.corrupt(format!(
                "{} unexpected trailing bytes at offset {}",
                self.remaining(),
                self.pos
            )));
        }
        Ok(())
    }
}

/// Verify that the last 4 bytes of `bytes` are the crc32c (little-endian) of
/// everything before them; return the bytes before the crc.
pub fn check_crc<'a>(what: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let Some(body_len) = bytes.len().checked_sub(CRC_LEN) else {
        return Err(Error::corrupt(
            what,
            format!("truncated: {} bytes, too short for a crc", bytes.len()),
        ));
    };
    let (body, tail) = bytes.split_at(body_len);
    let mut stored = [0u8; CRC_LEN];
    stored.copy_from_slice(tail);
    let stored = u32::from_le_bytes(stored);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(Error::corrupt(
            what,
            format!("crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    Ok(body)
}

/// Check a version field read after the crc was verified: a structure with
/// a good crc and another version was written by another build.
pub fn check_version(what: &str, version: u32) -> Result<()> {
    if version != super::VERSION {
        return Err(Error::UnsupportedVersion {
            what: what.to_string(),
            version,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_reader_round_trip() {
        let mut w = Writer::new();
        w.bytes(b"MAGICMAG")
            .u16(0xbeef)
            .u32(0xdead_beef)
            .u64(u64::MAX - 7);
        let bytes = w.finish_with_crc();
        let body = check_crc("thing", &bytes).unwrap();
        let mut r = Reader::new("thing", body);
        r.magic(b"MAGICMAG").unwrap();
        assert_eq!(r.u16("a").unwrap(), 0xbeef);
        assert_eq!(r.u32("b").unwrap(), 0xdead_beef);
        assert_eq!(r.u64("c").unwrap(), u64::MAX - 7);
        r.expect_end().unwrap();
    }

    #[test]
    fn short_input_is_corrupt_naming_object() {
        let mut r = Reader::new("segment 0000000000000001", &[1, 2, 3]);
        let e = r.u32("n_records").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Corrupt { .. }));
        assert!(msg.contains("segment 0000000000000001"), "{msg}");
        assert!(msg.contains("n_records"), "{msg}");
        // The failed read consumed nothing.
        assert_eq!(r.u16("x").unwrap(), 0x0201);
    }

    #[test]
    fn check_crc_rejects_bad_and_short() {
        assert!(matches!(
            check_crc("x", &[1, 2]),
            Err(Error::Corrupt { .. })
        ));
        let mut bytes = Writer::new();
        bytes.bytes(b"hello");
        let mut bytes = bytes.finish_with_crc();
        assert_eq!(check_crc("x", &bytes).unwrap(), b"hello");
        bytes[1] ^= 4;
        assert!(matches!(check_crc("x", &bytes), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn reserved_nonzero_is_corrupt() {
        let mut r = Reader::new("x", &[0, 0, 1, 0, 0, 0]);
        r.reserved_u16("r0").unwrap();
        assert!(matches!(r.reserved_u32("r1"), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn round_up_works() {
        assert_eq!(round_up(0, 4096), Some(0));
        assert_eq!(round_up(1, 4096), Some(4096));
        assert_eq!(round_up(4096, 4096), Some(4096));
        assert_eq!(round_up(u64::MAX, 4096), None);
    }
}
