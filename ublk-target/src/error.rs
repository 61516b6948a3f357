//! Errors of the ublk front end.

/// Errors from setting up, recovering or stopping a ublk device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A libublk / ublk driver call failed.
    #[error("ublk: {context}: {source}")]
    Ublk {
        context: String,
        #[source]
        source: libublk::UblkError,
    },
    /// An OS call (eventfd, thread spawn, ...) failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Parameters that cannot describe a device (size, depth, ...).
    #[error("invalid parameter: {0}")]
    InvalidArgument(String),
    /// The server thread ended before the device started.
    #[error("ublk device did not start: {0}")]
    NotStarted(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn ublk(context: impl Into<String>) -> impl FnOnce(libublk::UblkError) -> Error {
    let context = context.into();
    move |source| Error::Ublk { context, source }
}
