//! Why a connection ended.

use std::io;

use crate::proto::ProtoError;

/// A connection-level failure: the connection is closed, the server and
/// the other connections go on.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error("connection i/o: {0}")]
    Io(#[from] io::Error),
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    #[error("{0}")]
    Refused(String),
}

pub type Result<T, E = NbdError> = std::result::Result<T, E>;
