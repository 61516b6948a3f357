//! lsvd's ublk front end: serves a block device (a [`log_engine::Image`], or
//! anything implementing [`BlockDevLike`]) as `/dev/ublkbN` through the Linux
//! ublk driver, using `libublk`.
//!
//! Shape of the server (see `queue.rs` and `worker.rs`):
//! - one ublk queue per CPU by default, each served by its own thread with its
//!   own io_uring and one async task per tag (request slot);
//! - the device's calls are blocking (reads may go to the store), so every
//!   request is handed to a small pool of worker threads per queue; a worker
//!   completes the request's slot and writes the queue's eventfd, whose read
//!   is always in flight on the queue's ring, so the queue thread wakes at
//!   once (a waker alone cannot interrupt the ring's wait);
//! - created with `UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE`: when
//!   the server dies the device stays (quiesced) and requests it held are
//!   re-issued to the server that recovers it ([`ServeParams::recover`]).
//!
//! Durability contract, two modes ([`ServeParams::write_through`]):
//! - write-back (default): the device advertises a volatile write cache and
//!   FUA. A write is acknowledged once the device accepted it (for the
//!   engine: in memory); it is durable after a FLUSH (or when it carried
//!   FUA). Writes acknowledged but not yet flushed are lost if the server
//!   dies, which a still-mounted filesystem does not expect: recovery after
//!   a server crash is only safe with a write journal in front of the engine.
//! - write-through: no volatile cache is advertised; a write is
//!   acknowledged only after a device flush that started after it finished
//!   (concurrent writes share flushes: group commit, see `flush.rs`), so no
//!   acknowledged write is lost when the server dies.

mod blockdev;
mod error;
mod flush;
mod params;
mod queue;
mod server;
mod worker;

pub use blockdev::BlockDevLike;
pub use error::{Error, Result};
#[doc(hidden)]
pub use flush::FlushGroup;
pub use params::ServeParams;
pub use server::{serve, DeviceHandle};
