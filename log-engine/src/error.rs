//! Errors of the log engine. Every error names what it was about (a segment,
//! a checkpoint, a path) so a user or a test can tell what broke.

use std::io;

/// Result alias for the whole crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine and its stores.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error from the operating system, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// On-disk data failed a magic, version, length or crc32c check.
    /// `what` names the object (e.g. `segment 0000000000000012`).
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// A named object (segment, checkpoint, image, zone) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Creating something that already exists.
    #[error("already exists: {0}")]
    Exists(String),
    /// Caller error: misaligned request, out-of-range LBA, bad option.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The store (or a zone) has no room left for this write.
    #[error("no space: {0}")]
    NoSpace(String),
    /// The store did not answer in time; the operation may or may not have
    /// happened (callers must treat it as unknown and retry idempotently).
    #[error("timed out: {0}")]
    Timeout(String),
    /// A zoned-device rule was broken (write not at the write pointer, too many
    /// open or active zones, write past capacity, ...). Mirrors what a
    /// host-managed drive answers with an I/O error.
    #[error("zone violation: {0}")]
    ZoneViolation(String),
    /// The image is read-only, closed, or in a failed state.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Format version this build does not understand.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: String, version: u32 },
}

impl Error {
    /// Wrap an `io::Error` with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// True when retrying the same operation later may succeed (timeouts and
    /// transient I/O errors), false for definitive answers (corrupt, not found).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// Extension to attach context to `io::Result`s.
pub trait IoContext<T> {
    /// Turn an `io::Error` into [`Error::Io`] with the given context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                Error::NoSpace(format!("{}: {e}", context()))
            } else {
                Error::io(context(), e)
            }
        })
    }
}
