//! NBD wire constants and the pure encoders/decoders of the protocol
//! (NetworkBlockDevice/nbd `doc/proto.md`, fixed newstyle negotiation).
//!
//! Everything here works on byte slices and never panics on any input: the
//! decoders return [`ProtoError`] for short or malformed data. They are what
//! the fuzz target (nbd-target/fuzz) exercises.

use thiserror::Error;

/// `NBDMAGIC`, first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: second server magic, and the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;

// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

// Info types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;

// Structured reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

// Error values (the protocol's errno numbers).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// Longest option payload the server reads (longer ones get
/// `NBD_REP_ERR_TOO_BIG` and their payload is skipped).
pub const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Longest export name (the spec's NBD_MAX_STRING).
pub const MAX_NAME_LEN: usize = 4096;
/// Size of a request header.
pub const REQUEST_LEN: usize = 28;

/// A malformed piece of protocol data.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("{what}: need {need} bytes, got {got}")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{what}: bad magic {got:#x}")]
    BadMagic { what: &'static str, got: u64 },
    #[error("{0}")]
    Invalid(String),
}

fn need(what: &'static str, b: &[u8], n: usize) -> Result<(), ProtoError> {
    if b.len() < n {
        Err(ProtoError::Short {
            what,
            need: n,
            got: b.len(),
        })
    } else {
        Ok(())
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Header of a client option: `IHAVEOPT`, option, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

impl OptionHeader {
    pub const LEN: usize = 16;

    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need("option header", b, Self::LEN)?;
        let magic = be64(b, 0);
        if magic != IHAVEOPT {
            return Err(ProtoError::BadMagic {
                what: "option header",
                got: magic,
            });
        }
        Ok(OptionHeader {
            option: be32(b, 8),
            len: be32(b, 12),
        })
    }

    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        out[8..12].copy_from_slice(&self.option.to_be_bytes());
        out[12..].copy_from_slice(&self.len.to_be_bytes());
        out
    }
}

/// Payload of `NBD_OPT_INFO` / `NBD_OPT_GO`: export name and requested infos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub infos: Vec<u16>,
}

impl InfoRequest {
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need("info request", b, 4)?;
        let name_len = be32(b, 0) as usize;
        if name_len > MAX_NAME_LEN {
            return Err(ProtoError::Invalid(format!(
                "export name of {name_len} bytes is longer than {MAX_NAME_LEN}"
            )));
        }
        need("info request", b, 4 + name_len + 2)?;
        let name = decode_name(&b[4..4 + name_len])?;
        let n = be16(b, 4 + name_len) as usize;
        let rest = &b[4 + name_len + 2..];
        if rest.len() != n * 2 {
            return Err(ProtoError::Invalid(format!(
                "info request announces {n} info types but carries {} bytes",
                rest.len()
            )));
        }
        let infos = rest.chunks_exact(2).map(|c| be16(c, 0)).collect();
        Ok(InfoRequest { name, infos })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(self.infos.len() as u16).to_be_bytes());
        for i in &self.infos {
            out.extend_from_slice(&i.to_be_bytes());
        }
        out
    }
}

/// An export name: UTF-8, at most [`MAX_NAME_LEN`] bytes.
pub fn decode_name(b: &[u8]) -> Result<String, ProtoError> {
    if b.len() > MAX_NAME_LEN {
        return Err(ProtoError::Invalid(format!(
            "export name of {} bytes is longer than {MAX_NAME_LEN}",
            b.len()
        )));
    }
    String::from_utf8(b.to_vec())
        .map_err(|_| ProtoError::Invalid("export name is not UTF-8".into()))
}

/// One option reply: header plus payload.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A decoded option reply header (used by tests and clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply: u32,
    pub len: u32,
}

impl OptionReplyHeader {
    pub const LEN: usize = 20;
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need("option reply", b, Self::LEN)?;
        let magic = be64(b, 0);
        if magic != REPLY_MAGIC {
            return Err(ProtoError::BadMagic {
                what: "option reply",
                got: magic,
            });
        }
        Ok(OptionReplyHeader {
            option: be32(b, 8),
            reply: be32(b, 12),
            len: be32(b, 16),
        })
    }
}

/// `NBD_INFO_EXPORT` payload.
pub fn info_export(size: u64, tflags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&tflags.to_be_bytes());
    out
}

/// `NBD_INFO_BLOCK_SIZE` payload.
pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&min.to_be_bytes());
    out.extend_from_slice(&preferred.to_be_bytes());
    out.extend_from_slice(&max.to_be_bytes());
    out
}

/// `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION` payload.
pub fn info_string(kind: u16, s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + s.len());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

/// A transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

impl Request {
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need("request", b, REQUEST_LEN)?;
        let magic = be32(b, 0);
        if magic != REQUEST_MAGIC {
            return Err(ProtoError::BadMagic {
                what: "request",
                got: magic as u64,
            });
        }
        Ok(Request {
            flags: be16(b, 4),
            kind: be16(b, 6),
            cookie: be64(b, 8),
            offset: be64(b, 16),
            len: be32(b, 24),
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        out[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.kind.to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..].copy_from_slice(&self.len.to_be_bytes());
        out
    }
}

/// Simple reply header (data of a successful read follows it).
pub fn simple_reply(error: u32, cookie: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..].copy_from_slice(&cookie.to_be_bytes());
    out
}

/// Structured reply chunk header; `len` bytes of payload follow.
pub fn structured_header(flags: u16, kind: u16, cookie: u64, len: u32) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&kind.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..].copy_from_slice(&len.to_be_bytes());
    out
}

/// Payload of a `NBD_REPLY_TYPE_ERROR` chunk.
pub fn structured_error(error: u32, msg: &str) -> Vec<u8> {
    let msg = &msg.as_bytes()[..msg.len().min(4096)];
    let mut out = Vec::with_capacity(6 + msg.len());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Decoded simple reply header (for tests and clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    pub error: u32,
    pub cookie: u64,
}

impl SimpleReply {
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        need("simple reply", b, 16)?;
        let magic = be32(b, 0);
        if magic != SIMPLE_REPLY_MAGIC {
            return Err(ProtoError::BadMagic {
                what: "simple reply",
                got: magic as u64,
            });
        }
        Ok(SimpleReply {
            error: be32(b, 4),
            cookie: be64(b, 8),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip_and_errors() {
        let r = Request {
            flags: CMD_FLAG_FUA,
            kind: CMD_WRITE,
            cookie: 77,
            offset: 4096,
            len: 512,
        };
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        assert!(matches!(
            Request::decode(&r.encode()[..27]),
            Err(ProtoError::Short { .. })
        ));
        let mut bad = r.encode();
        bad[0] ^= 1;
        assert!(matches!(
            Request::decode(&bad),
            Err(ProtoError::BadMagic { .. })
        ));
    }

    #[test]
    fn info_request_roundtrip_and_errors() {
        let r = InfoRequest {
            name: "vm1".into(),
            infos: vec![INFO_BLOCK_SIZE, INFO_NAME],
        };
        assert_eq!(InfoRequest::decode(&r.encode()).unwrap(), r);
        let enc = r.encode();
        for cut in 0..enc.len() {
            assert!(InfoRequest::decode(&enc[..cut]).is_err(), "cut {cut}");
        }
        // Name length pointing far past the payload.
        let mut huge = enc.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(InfoRequest::decode(&huge).is_err());
        // Non-UTF-8 name.
        let bad = [0, 0, 0, 1, 0xff, 0, 0];
        assert!(InfoRequest::decode(&bad).is_err());
    }
}
