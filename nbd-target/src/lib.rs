//! # lsvd-nbd
//!
//! lsvd's NBD front end: a Network Block Device server (fixed newstyle
//! negotiation, simple and structured replies) that serves any
//! [`BlockDev`] — the log engine's [`log_engine::Image`] implements it.
//!
//! - [`proto`]: wire constants and pure encoders/decoders (fuzzed);
//! - [`handshake`]: the option negotiation;
//! - [`transmission`]: request parsing, checking, concurrent execution and
//!   replies;
//! - [`aligned`]: read-modify-write so 512-byte (or byte-granular) requests
//!   work on a 4 KiB device;
//! - [`export`]: named exports and their tables;
//! - [`server`]: Unix/TCP listeners, connection threads, clean stop.
//!
//! Served: `NBD_OPT_GO`, `INFO`, `LIST`, `EXPORT_NAME`, `ABORT`,
//! `STRUCTURED_REPLY`; `READ`, `WRITE`, `FLUSH`, `TRIM`, `WRITE_ZEROES`
//! (with `FUA` and `NO_HOLE`) and `DISC`. Advertised block sizes: minimum
//! 512, preferred 4096, maximum 32 MiB. `CAN_MULTI_CONN` holds because a
//! flush makes every connection's completed writes durable.

pub mod aligned;
pub mod blockdev;
pub mod error;
pub mod export;
pub mod handshake;
pub mod proto;
pub mod server;
pub mod transmission;

pub use blockdev::BlockDev;
pub use error::NbdError;
pub use export::{Export, ExportStats, Exports};
pub use server::{Address, ListenerHandle, Server};

/// Run a whole connection (negotiation then transmission) over one
/// in-memory byte stream with requests executed inline: the entry point of
/// the fuzz target. Output goes to `out`.
pub fn serve_bytes(input: &[u8], exports: &Exports, out: Box<dyn std::io::Write + Send>) {
    struct Duplex<'a> {
        r: &'a [u8],
    }
    impl std::io::Read for Duplex<'_> {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.r.read(b)
        }
    }
    impl std::io::Write for Duplex<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut d = Duplex { r: input };
    if let Ok(handshake::Outcome::Transmit(s)) = handshake::negotiate(&mut d, exports) {
        let w: transmission::SharedWriter = std::sync::Arc::new(parking_lot::Mutex::new(out));
        let _ = transmission::run(&mut d.r, w, s, &transmission::Inline);
    }
}
