//! Wire protocol of the offload socket (Unix stream socket, default
//! [`DEFAULT_SOCKET`]).
//!
//! Every message is one frame: a [`HEADER_LEN`]-byte header then `len` payload bytes.
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | `u32 magic` = [`MAGIC`] (`"LSOF"` little-endian) | |
//! | 4 | `u16 version` = [`VERSION`] | |
//! | 6 | `u16 op` | request or response kind ([`op`]) |
//! | 8 | `u64 id` | request id chosen by the client, echoed in the response |
//! | 16 | `u32 len` | payload bytes, at most [`MAX_PAYLOAD`] |
//! | 20 | `u32 crc` | crc32c of header bytes 0..20 followed by the payload |
//!
//! All integers little-endian. Strings are `u16 len` + UTF-8 bytes, byte blobs `u32 len` +
//! bytes. A payload must be consumed exactly (trailing bytes are an error).
//!
//! Invariants: decoding never panics and never allocates more than the frame's (bounded)
//! length; every field is range-checked ([`DecodeError`] names the field). A receiver
//! that sees a bad frame cannot resynchronise the stream, so the server answers with an
//! error frame (id 0 if unknown) and closes that connection only.

use std::io::{self, Read, Write};

use crate::abi::SCRATCH_SIZE;
use crate::loader::MAX_OBJECT_BYTES;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/lsvd/offload.sock";
/// Frame magic (`b"LSOF"` read as little-endian u32).
pub const MAGIC: u32 = u32::from_le_bytes(*b"LSOF");
/// Protocol version.
pub const VERSION: u16 = 1;
/// Header bytes.
pub const HEADER_LEN: usize = 24;
/// Largest payload: an object of [`MAX_OBJECT_BYTES`] plus names and lengths.
pub const MAX_PAYLOAD: usize = MAX_OBJECT_BYTES + 4096;
/// Longest image or section name.
pub const MAX_NAME: usize = 256;
/// Longest error message sent (longer ones are cut).
pub const MAX_MESSAGE: usize = 1024;

/// Frame kinds.
pub mod op {
    /// Request: register a function.
    pub const REGISTER: u16 = 1;
    /// Request: run a function.
    pub const INVOKE: u16 = 2;
    /// Request: remove a function.
    pub const UNREGISTER: u16 = 3;
    /// Request: list functions.
    pub const LIST: u16 = 4;
    /// Response to REGISTER.
    pub const REGISTERED: u16 = 0x81;
    /// Response to INVOKE.
    pub const INVOKED: u16 = 0x82;
    /// Response to UNREGISTER.
    pub const UNREGISTERED: u16 = 0x83;
    /// Response to LIST.
    pub const LISTED: u16 = 0x84;
    /// Error response to any request.
    pub const ERROR: u16 = 0xff;
}

/// Why bytes are not a valid frame or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Wrong magic.
    #[error("bad frame magic {0:#010x}")]
    Magic(u32),
    /// Unknown version.
    #[error("unsupported protocol version {0}")]
    Version(u16),
    /// Payload length above [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    TooLarge(u32),
    /// crc32c mismatch.
    #[error("frame crc mismatch: header says {want:#010x}, computed {got:#010x}")]
    Crc {
        /// Stored.
        want: u32,
        /// Computed.
        got: u32,
    },
    /// Unknown op for this direction.
    #[error("unknown op {0:#06x}")]
    Op(u16),
    /// The payload ended inside a field.
    #[error("payload truncated in field {0}")]
    Truncated(&'static str),
    /// Bytes left after the last field.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// A field is out of range.
    #[error("bad field {field}: {detail}")]
    Field {
        /// Field name.
        field: &'static str,
        /// Why.
        detail: String,
    },
}

/// Errors reading or writing frames on a stream.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Transport failure.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer closed the stream inside a frame.
    #[error("stream closed inside a frame ({0} of the bytes it announced were missing)")]
    Truncated(usize),
    /// The bytes are not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Kind ([`op`]).
    pub op: u16,
    /// Request id.
    pub id: u64,
    /// Payload length.
    pub len: u32,
    /// crc32c of header bytes 0..20 and the payload.
    pub crc: u32,
}

impl Header {
    /// Parses and checks magic, version and length (the crc needs the payload).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(DecodeError::Magic(magic));
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[8..16]);
        let len = u32_at(16);
        if len as usize > MAX_PAYLOAD {
            return Err(DecodeError::TooLarge(len));
        }
        Ok(Header {
            op: u16::from_le_bytes([b[6], b[7]]),
            id: u64::from_le_bytes(id),
            len,
            crc: u32_at(20),
        })
    }
}

/// A checked frame: op, id and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Kind ([`op`]).
    pub op: u16,
    /// Request id.
    pub id: u64,
    /// Payload.
    pub payload: Vec<u8>,
}

fn frame_crc(hdr20: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(hdr20), payload)
}

/// Encodes one frame (header + payload). Payloads above [`MAX_PAYLOAD`] are the caller's
/// bug and are refused by every decoder.
pub fn encode_frame(op: u16, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&op.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = frame_crc(&out[..20], payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes one whole frame from `buf` (which must hold exactly one frame).
pub fn decode_frame(buf: &[u8]) -> Result<Frame, DecodeError> {
    let hb: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::Truncated("header"))?;
    let h = Header::decode(hb)?;
    let payload = &buf[HEADER_LEN..];
    match payload.len().cmp(&(h.len as usize)) {
        std::cmp::Ordering::Less => return Err(DecodeError::Truncated("payload")),
        std::cmp::Ordering::Greater => {
            return Err(DecodeError::Trailing(payload.len() - h.len as usize))
        }
        std::cmp::Ordering::Equal => {}
    }
    check_crc(hb, &h, payload)?;
    Ok(Frame {
        op: h.op,
        id: h.id,
        payload: payload.to_vec(),
    })
}

fn check_crc(hb: &[u8; HEADER_LEN], h: &Header, payload: &[u8]) -> Result<(), DecodeError> {
    let got = frame_crc(&hb[..20], payload);
    if got != h.crc {
        return Err(DecodeError::Crc { want: h.crc, got });
    }
    Ok(())
}

/// Reads one frame. `Ok(None)` on a clean end of stream before the first header byte.
/// The first read is awaited with the stream's current timeout; `on_more` is called once
/// before any further read the frame needs (the server uses it to bound how long the rest
/// of a started frame may take).
pub fn read_frame(
    r: &mut impl Read,
    mut on_more: impl FnMut(),
) -> Result<Option<Frame>, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    let first = loop {
        match r.read(&mut hb) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if first == 0 {
        return Ok(None);
    }
    let mut more_called = false;
    let mut more = || {
        if !more_called {
            more_called = true;
            on_more();
        }
    };
    if first < HEADER_LEN {
        more();
        read_full(r, &mut hb[first..])?;
    }
    let h = Header::decode(&hb)?;
    let mut payload = vec![0u8; h.len as usize];
    if !payload.is_empty() {
        more();
        read_full(r, &mut payload)?;
    }
    check_crc(&hb, &h, &payload)?;
    Ok(Some(Frame {
        op: h.op,
        id: h.id,
        payload,
    }))
}

fn read_full(r: &mut impl Read, mut buf: &mut [u8]) -> Result<(), FrameError> {
    while !buf.is_empty() {
        match r.read(buf) {
            Ok(0) => return Err(FrameError::Truncated(buf.len())),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, op: u16, id: u64, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode_frame(op, id, payload))
}

/// Field writer.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Strings longer than u16 are cut (callers keep names short; messages are capped).
    fn str(self, s: &str) -> Self {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut e = self.u16(end as u16);
        e.0.extend_from_slice(&s.as_bytes()[..end]);
        e
    }
    fn bytes(self, b: &[u8]) -> Self {
        let mut e = self.u32(b.len() as u32);
        e.0.extend_from_slice(b);
        e
    }
}

/// Field reader over a payload.
struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, f: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, f)?[0])
    }
    fn u16(&mut self, f: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, f)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, f: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, f)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, f: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, f)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self, f: &'static str, max: usize) -> Result<String, DecodeError> {
        let n = self.u16(f)? as usize;
        if n > max {
            return Err(DecodeError::Field {
                field: f,
                detail: format!("{n} bytes, more than {max}"),
            });
        }
        let b = self.take(n, f)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Field {
            field: f,
            detail: "not UTF-8".into(),
        })
    }
    fn bytes(&mut self, f: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32(f)? as usize;
        if n > max {
            return Err(DecodeError::Field {
                field: f,
                detail: format!("{n} bytes, more than {max}"),
            });
        }
        Ok(self.take(n, f)?.to_vec())
    }
    fn end(self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.0.len()))
        }
    }
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Load, verify and register section `section` of ELF object `elf` for `image`.
    Register {
        /// Image name.
        image: String,
        /// ELF section holding the function.
        section: String,
        /// The object file.
        elf: Vec<u8>,
    },
    /// Run function `fn_id` from `start_lba` with `args` copied into scratch.
    Invoke {
        /// Function id from REGISTER.
        fn_id: u64,
        /// First block.
        start_lba: u64,
        /// Hop limit (0 = the server's default).
        max_hops: u32,
        /// Arguments (≤ [`SCRATCH_SIZE`] bytes; larger ones decode, and are refused with
        /// `ArgsTooLarge` by the server, so the client learns why).
        args: Vec<u8>,
    },
    /// Remove function `fn_id`.
    Unregister {
        /// Function id.
        fn_id: u64,
    },
    /// List functions (own ones; root sees all).
    List,
}

impl Request {
    /// Frame op of this request.
    pub fn op(&self) -> u16 {
        match self {
            Request::Register { .. } => op::REGISTER,
            Request::Invoke { .. } => op::INVOKE,
            Request::Unregister { .. } => op::UNREGISTER,
            Request::List => op::LIST,
        }
    }

    /// Payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Register {
                image,
                section,
                elf,
            } => Enc::default().str(image).str(section).bytes(elf).0,
            Request::Invoke {
                fn_id,
                start_lba,
                max_hops,
                args,
            } => {
                Enc::default()
                    .u64(*fn_id)
                    .u64(*start_lba)
                    .u32(*max_hops)
                    .bytes(args)
                    .0
            }
            Request::Unregister { fn_id } => Enc::default().u64(*fn_id).0,
            Request::List => Vec::new(),
        }
    }

    /// Decodes the payload of a request frame of kind `op`.
    pub fn decode(op: u16, payload: &[u8]) -> Result<Request, DecodeError> {
        let mut d = Dec(payload);
        let r = match op {
            op::REGISTER => Request::Register {
                image: d.str("image", MAX_NAME)?,
                section: d.str("section", MAX_NAME)?,
                // Up to the frame size: the server answers TooLarge itself.
                elf: d.bytes("elf", MAX_PAYLOAD)?,
            },
            op::INVOKE => Request::Invoke {
                fn_id: d.u64("fn_id")?,
                start_lba: d.u64("start_lba")?,
                max_hops: d.u32("max_hops")?,
                // Up to the frame size: the server answers ArgsTooLarge itself.
                args: d.bytes("args", MAX_PAYLOAD)?,
            },
            op::UNREGISTER => Request::Unregister {
                fn_id: d.u64("fn_id")?,
            },
            op::LIST => Request::List,
            other => return Err(DecodeError::Op(other)),
        };
        d.end()?;
        Ok(r)
    }
}

/// Error kinds sent to clients (stable codes on the wire; `as_str` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed request.
    BadRequest,
    /// No such function or image.
    NotFound,
    /// Not the owner, or no access to the image.
    PermissionDenied,
    /// Arguments larger than scratch.
    ArgsTooLarge,
    /// Too many functions (per uid or per daemon) or calls in flight.
    LimitExceeded,
    /// The image could not be opened.
    ImageUnavailable,
    /// Loader: not an eBPF ELF object / malformed.
    BadElf,
    /// Loader: section absent.
    NoSection,
    /// Loader: relocation refused.
    Relocation,
    /// Loader: object or section too large.
    TooLarge,
    /// Verifier refusals.
    BadInsn,
    /// Verifier: loop without bound.
    UnboundedLoop,
    /// Verifier: per-hop instruction bound exceeded.
    InsnBound,
    /// Verifier: out-of-bounds access.
    OutOfBounds,
    /// Verifier: write to read-only memory.
    ReadOnly,
    /// Verifier: uninitialised register read.
    UninitRegister,
    /// Verifier: uninitialised stack read.
    UninitStack,
    /// Verifier: forbidden pointer arithmetic.
    PointerArith,
    /// Verifier: pointer leak.
    PointerLeak,
    /// Verifier: helper call.
    UnknownHelper,
    /// Verifier: recursion.
    Recursion,
    /// Verifier: its own budget ran out.
    VerifierLimit,
    /// Run time: LBA outside the image.
    LbaOutOfRange,
    /// Run time: not done and n_next != 1.
    BadNext,
    /// Run time: hop limit reached.
    HopLimit,
    /// Run time: VM or total time exceeded.
    Timeout,
    /// Run time: hop limit request above the cap.
    BadLimit,
    /// Run time: VM fault (a verifier bug if it ever happens).
    VmFault,
    /// Run time: reading a block failed.
    IoError,
    /// Server-side failure.
    Internal,
}

const KINDS: [(ErrorKind, u16, &str); 30] = {
    use ErrorKind::*;
    [
        (BadRequest, 1, "BadRequest"),
        (NotFound, 2, "NotFound"),
        (PermissionDenied, 3, "PermissionDenied"),
        (ArgsTooLarge, 4, "ArgsTooLarge"),
        (LimitExceeded, 5, "LimitExceeded"),
        (ImageUnavailable, 6, "ImageUnavailable"),
        (BadElf, 10, "BadElf"),
        (NoSection, 11, "NoSection"),
        (Relocation, 12, "Relocation"),
        (TooLarge, 13, "TooLarge"),
        (BadInsn, 20, "BadInsn"),
        (UnboundedLoop, 21, "UnboundedLoop"),
        (InsnBound, 22, "InsnBound"),
        (OutOfBounds, 23, "OutOfBounds"),
        (ReadOnly, 24, "ReadOnly"),
        (UninitRegister, 25, "UninitRegister"),
        (UninitStack, 26, "UninitStack"),
        (PointerArith, 27, "PointerArith"),
        (PointerLeak, 28, "PointerLeak"),
        (UnknownHelper, 29, "UnknownHelper"),
        (Recursion, 30, "Recursion"),
        (VerifierLimit, 31, "VerifierLimit"),
        (LbaOutOfRange, 40, "LbaOutOfRange"),
        (BadNext, 41, "BadNext"),
        (HopLimit, 42, "HopLimit"),
        (Timeout, 43, "Timeout"),
        (BadLimit, 44, "BadLimit"),
        (VmFault, 45, "VmFault"),
        (IoError, 46, "IoError"),
        (Internal, 60, "Internal"),
    ]
};

impl ErrorKind {
    /// Wire code.
    pub fn code(self) -> u16 {
        KINDS.iter().find(|k| k.0 == self).map_or(60, |k| k.1)
    }

    /// Kind of a wire code.
    pub fn from_code(c: u16) -> Option<ErrorKind> {
        KINDS.iter().find(|k| k.1 == c).map(|k| k.0)
    }

    /// Name used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        KINDS
            .iter()
            .find(|k| k.0 == self)
            .map_or("Internal", |k| k.2)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RemoteError {
    /// Kind.
    pub kind: ErrorKind,
    /// Human-readable detail (at most [`MAX_MESSAGE`] bytes).
    pub message: String,
    /// Hop the chain stopped at, for run-time errors.
    pub hop: Option<u32>,
    /// Instruction index, for verifier refusals.
    pub insn: Option<u32>,
}

impl RemoteError {
    /// An error without hop or instruction.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RemoteError {
        let mut message: String = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        RemoteError {
            kind,
            message,
            hop: None,
            insn: None,
        }
    }
}

/// One registered function as LIST shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnInfo {
    /// Function id.
    pub id: u64,
    /// Owner uid.
    pub uid: u32,
    /// Image name.
    pub image: String,
    /// Section name.
    pub section: String,
    /// Instructions.
    pub insns: u32,
    /// Verifier's worst-case instructions per hop.
    pub insn_bound: u64,
    /// Engine name (`jit`, `rbpf-interp`, `interp`).
    pub engine: String,
    /// Successful and failed invocations so far.
    pub invocations: u64,
}

/// A server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// REGISTER succeeded.
    Registered {
        /// New function id.
        fn_id: u64,
        /// Instructions.
        insns: u32,
        /// Worst-case instructions per hop.
        insn_bound: u64,
    },
    /// INVOKE finished with `done`.
    Invoked {
        /// r0 of the last hop.
        r0: u64,
        /// Hops run.
        hops: u32,
        /// Scratch after the last hop (≤ [`SCRATCH_SIZE`] bytes).
        scratch: Vec<u8>,
    },
    /// UNREGISTER succeeded.
    Unregistered,
    /// LIST result.
    Listed(Vec<FnInfo>),
    /// Any request failed.
    Error(RemoteError),
}

/// Most functions a LIST reply may carry (the daemon-wide cap is lower).
pub const MAX_LIST: usize = 4096;

impl Response {
    /// Frame op of this response.
    pub fn op(&self) -> u16 {
        match self {
            Response::Registered { .. } => op::REGISTERED,
            Response::Invoked { .. } => op::INVOKED,
            Response::Unregistered => op::UNREGISTERED,
            Response::Listed(_) => op::LISTED,
            Response::Error(_) => op::ERROR,
        }
    }

    /// Payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Registered {
                fn_id,
                insns,
                insn_bound,
            } => Enc::default().u64(*fn_id).u32(*insns).u64(*insn_bound).0,
            Response::Invoked { r0, hops, scratch } => {
                Enc::default().u64(*r0).u32(*hops).bytes(scratch).0
            }
            Response::Unregistered => Vec::new(),
            Response::Listed(fns) => {
                let mut e = Enc::default().u32(fns.len() as u32);
                for f in fns {
                    e = e
                        .u64(f.id)
                        .u32(f.uid)
                        .str(&f.image)
                        .str(&f.section)
                        .u32(f.insns)
                        .u64(f.insn_bound)
                        .str(&f.engine)
                        .u64(f.invocations);
                }
                e.0
            }
            Response::Error(err) => {
                Enc::default()
                    .u16(err.kind.code())
                    .u8(err.hop.is_some() as u8)
                    .u32(err.hop.unwrap_or(0))
                    .u8(err.insn.is_some() as u8)
                    .u32(err.insn.unwrap_or(0))
                    .str(&err.message)
                    .0
            }
        }
    }

    /// Decodes the payload of a response frame of kind `op`.
    pub fn decode(op: u16, payload: &[u8]) -> Result<Response, DecodeError> {
        let mut d = Dec(payload);
        let r = match op {
            op::REGISTERED => Response::Registered {
                fn_id: d.u64("fn_id")?,
                insns: d.u32("insns")?,
                insn_bound: d.u64("insn_bound")?,
            },
            op::INVOKED => Response::Invoked {
                r0: d.u64("r0")?,
                hops: d.u32("hops")?,
                scratch: d.bytes("scratch", SCRATCH_SIZE)?,
            },
            op::UNREGISTERED => Response::Unregistered,
            op::LISTED => {
                let n = d.u32("count")? as usize;
                if n > MAX_LIST {
                    return Err(DecodeError::Field {
                        field: "count",
                        detail: format!("{n} functions, more than {MAX_LIST}"),
                    });
                }
                let mut fns = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    fns.push(FnInfo {
                        id: d.u64("id")?,
                        uid: d.u32("uid")?,
                        image: d.str("image", MAX_NAME)?,
                        section: d.str("section", MAX_NAME)?,
                        insns: d.u32("insns")?,
                        insn_bound: d.u64("insn_bound")?,
                        engine: d.str("engine", MAX_NAME)?,
                        invocations: d.u64("invocations")?,
                    });
                }
                Response::Listed(fns)
            }
            op::ERROR => {
                let code = d.u16("kind")?;
                let kind = ErrorKind::from_code(code).ok_or(DecodeError::Field {
                    field: "kind",
                    detail: format!("unknown error code {code}"),
                })?;
                let has_hop = d.u8("has_hop")?;
                let hop = d.u32("hop")?;
                let has_insn = d.u8("has_insn")?;
                let insn = d.u32("insn")?;
                if has_hop > 1 || has_insn > 1 {
                    return Err(DecodeError::Field {
                        field: "has_hop/has_insn",
                        detail: "flag not 0 or 1".into(),
                    });
                }
                Response::Error(RemoteError {
                    kind,
                    message: d.str("message", MAX_MESSAGE)?,
                    hop: (has_hop == 1).then_some(hop),
                    insn: (has_insn == 1).then_some(insn),
                })
            }
            other => return Err(DecodeError::Op(other)),
        };
        d.end()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_damage() {
        let req = Request::Invoke {
            fn_id: 7,
            start_lba: 99,
            max_hops: 6,
            args: vec![1, 2, 3],
        };
        let f = encode_frame(req.op(), 42, &req.encode());
        let d = decode_frame(&f).unwrap();
        assert_eq!((d.op, d.id), (op::INVOKE, 42));
        assert_eq!(Request::decode(d.op, &d.payload).unwrap(), req);
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x40;
            assert!(decode_frame(&g).is_err(), "flip at byte {i} accepted");
        }
        assert!(decode_frame(&f[..f.len() - 1]).is_err());
        let mut read = &f[..];
        assert_eq!(read_frame(&mut read, || ()).unwrap().unwrap(), d);
        let mut cut = &f[..30];
        assert!(matches!(
            read_frame(&mut cut, || ()),
            Err(FrameError::Truncated(_))
        ));
    }

    #[test]
    fn responses_round_trip() {
        let rs = [
            Response::Registered {
                fn_id: 1,
                insns: 30,
                insn_bound: 2805,
            },
            Response::Invoked {
                r0: 1,
                hops: 6,
                scratch: vec![9; SCRATCH_SIZE],
            },
            Response::Unregistered,
            Response::Listed(vec![FnInfo {
                id: 3,
                uid: 1000,
                image: "img".into(),
                section: "offload".into(),
                insns: 30,
                insn_bound: 100,
                engine: "jit".into(),
                invocations: 5,
            }]),
            Response::Error(RemoteError {
                kind: ErrorKind::HopLimit,
                message: "hop limit of 64 reached".into(),
                hop: Some(63),
                insn: None,
            }),
        ];
        for r in rs {
            assert_eq!(Response::decode(r.op(), &r.encode()).unwrap(), r);
        }
        for (k, c, _) in KINDS {
            assert_eq!(ErrorKind::from_code(c), Some(k));
            assert_eq!(k.code(), c);
        }
    }

    #[test]
    fn huge_length_refused_before_allocation() {
        let mut f = encode_frame(op::LIST, 1, &[]);
        f[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_frame(&f).unwrap_err(),
            DecodeError::TooLarge(u32::MAX)
        );
    }
}
