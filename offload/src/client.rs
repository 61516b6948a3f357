//! Rust client of the offload socket: one request at a time per [`Client`] (use one
//! client per thread for parallel calls).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::protocol::{
    read_frame, write_frame, DecodeError, FnInfo, FrameError, RemoteError, Request, Response,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting or talking to the socket failed.
    #[error("offload socket {path}: {source}")]
    Connect {
        /// Socket path.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// The stream broke or carried a bad frame.
    #[error("offload socket")]
    Frame(#[from] FrameError),
    /// The server's answer did not decode.
    #[error("offload socket: bad answer")]
    Decode(#[from] DecodeError),
    /// The server closed the connection before answering.
    #[error("offload socket: server closed the connection")]
    Closed,
    /// The server answered with an unexpected kind.
    #[error("offload socket: unexpected answer {0}")]
    Unexpected(String),
    /// The server refused or the call failed there.
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

impl ClientError {
    /// The server's error, when it sent one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            ClientError::Remote(e) => Some(e),
            _ => None,
        }
    }
}

/// A successful REGISTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// Function id.
    pub fn_id: u64,
    /// Instructions.
    pub insns: u32,
    /// Worst-case instructions per hop.
    pub insn_bound: u64,
}

/// A successful INVOKE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoked {
    /// r0 of the last hop.
    pub r0: u64,
    /// Hops run.
    pub hops: u32,
    /// Scratch after the last hop.
    pub scratch: Vec<u8>,
}

impl Invoked {
    /// Little-endian u64 at byte `off` of scratch (0 past the end).
    pub fn scratch_u64(&self, off: usize) -> u64 {
        self.scratch
            .get(off..off + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    }
}

/// A connection to the offload server.
pub struct Client {
    stream: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the socket at `path` (answers are awaited up to 30 s).
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let err = |source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(err)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(err)?;
        Ok(Client { stream, next_id: 1 })
    }

    /// Changes how long an answer is awaited (`None`: forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)
    }

    /// Sends `req` and returns the server's answer (an error answer is returned as
    /// `Ok(Response::Error)`).
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        write_frame(&mut self.stream, req.op(), id, &req.encode()).map_err(FrameError::Io)?;
        loop {
            let f = read_frame(&mut self.stream, || ())?.ok_or(ClientError::Closed)?;
            let resp = Response::decode(f.op, &f.payload)?;
            if f.id == id || (f.id == 0 && matches!(resp, Response::Error(_))) {
                return Ok(resp);
            }
            // An answer to an earlier, abandoned request: skip it.
        }
    }

    fn call_ok(&mut self, req: &Request) -> Result<Response, ClientError> {
        match self.call(req)? {
            Response::Error(e) => Err(ClientError::Remote(e)),
            r => Ok(r),
        }
    }

    /// Registers section `section` of the ELF object `elf` for `image`.
    pub fn register(
        &mut self,
        image: &str,
        section: &str,
        elf: &[u8],
    ) -> Result<Registered, ClientError> {
        let req = Request::Register {
            image: image.into(),
            section: section.into(),
            elf: elf.to_vec(),
        };
        match self.call_ok(&req)? {
            Response::Registered {
                fn_id,
                insns,
                insn_bound,
            } => Ok(Registered {
                fn_id,
                insns,
                insn_bound,
            }),
            r => Err(ClientError::Unexpected(format!("{r:?}"))),
        }
    }

    /// Runs function `fn_id` from `start_lba` (`max_hops` 0 = server default).
    pub fn invoke(
        &mut self,
        fn_id: u64,
        start_lba: u64,
        max_hops: u32,
        args: &[u8],
    ) -> Result<Invoked, ClientError> {
        let req = Request::Invoke {
            fn_id,
            start_lba,
            max_hops,
            args: args.to_vec(),
        };
        match self.call_ok(&req)? {
            Response::Invoked { r0, hops, scratch } => Ok(Invoked { r0, hops, scratch }),
            r => Err(ClientError::Unexpected(format!("{r:?}"))),
        }
    }

    /// Removes function `fn_id`.
    pub fn unregister(&mut self, fn_id: u64) -> Result<(), ClientError> {
        match self.call_ok(&Request::Unregister { fn_id })? {
            Response::Unregistered => Ok(()),
            r => Err(ClientError::Unexpected(format!("{r:?}"))),
        }
    }

    /// Functions visible to this uid (root: all).
    pub fn list(&mut self) -> Result<Vec<FnInfo>, ClientError> {
        match self.call_ok(&Request::List)? {
            Response::Listed(v) => Ok(v),
            r => Err(ClientError::Unexpected(format!("{r:?}"))),
        }
    }
}
