//! Mapping librados error codes to [`log_engine::Error`], always naming the
//! object (or pool) the operation was about.

use log_engine::Error;

use crate::conn::RawError;

/// Is this errno worth retrying on a (possibly rebuilt) connection?
/// `ETIMEDOUT`: an op or mount timeout (the op may or may not have
/// happened); `ESHUTDOWN`/`ENOTCONN`/`ECONNREFUSED`/`EAGAIN`/`EINTR`: the
/// handle or cluster is not (yet) usable; `EBLOCKLISTED` is `ESHUTDOWN`.
pub fn is_transient(code: i32) -> bool {
    matches!(
        -code,
        libc::ETIMEDOUT
            | libc::ESHUTDOWN
            | libc::ENOTCONN
            | libc::ECONNREFUSED
            | libc::ECONNRESET
            | libc::EAGAIN
            | libc::EINTR
    )
}

/// Does this failure make the handle unusable (rebuild before retrying)?
pub fn needs_reconnect(code: i32) -> bool {
    matches!(-code, libc::ETIMEDOUT | libc::ESHUTDOWN | libc::ENOTCONN)
}

/// Definitive mapping (for errors that are not retried, or retried too long).
pub fn map(e: RawError, store: &str) -> Error {
    let msg = format!("{store}: {e}");
    match -e.code {
        libc::ENOENT => Error::NotFound(msg),
        libc::EEXIST => Error::Exists(msg),
        libc::ENOSPC | libc::EDQUOT => Error::NoSpace(msg),
        libc::EINVAL | libc::ENAMETOOLONG => Error::InvalidArgument(msg),
        c if is_transient(-c) => Error::Timeout(msg),
        c => Error::io(
            format!("{store}: {}", e.what),
            std::io::Error::from_raw_os_error(c),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(code: i32) -> RawError {
        RawError {
            what: "write object img.0000000000000001".into(),
            code: -code,
        }
    }

    #[test]
    fn errno_maps_to_engine_errors_naming_the_object() {
        let kind = |e: &Error| match e {
            Error::NotFound(_) => "NotFound",
            Error::Exists(_) => "Exists",
            Error::NoSpace(_) => "NoSpace",
            Error::Timeout(_) => "Timeout",
            Error::Io { .. } => "Io",
            Error::InvalidArgument(_) => "InvalidArgument",
            _ => "other",
        };
        for (code, want) in [
            (libc::ENOENT, "NotFound"),
            (libc::EEXIST, "Exists"),
            (libc::ENOSPC, "NoSpace"),
            (libc::EDQUOT, "NoSpace"),
            (libc::ETIMEDOUT, "Timeout"),
            (libc::EIO, "Io"),
            (libc::EINVAL, "InvalidArgument"),
        ] {
            let e = map(raw(code), "rados:p/img");
            assert_eq!(kind(&e), want, "errno {code} -> {e:?}");
            let s = e.to_string();
            assert!(
                s.contains("img.0000000000000001") && s.contains("rados:p/img"),
                "{s}"
            );
        }
        assert!(map(raw(libc::ETIMEDOUT), "x").is_transient());
        assert!(!map(raw(libc::EIO), "x").is_transient());
        assert!(needs_reconnect(-libc::ETIMEDOUT) && !needs_reconnect(-libc::ENOENT));
    }
}
