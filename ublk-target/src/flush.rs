//! Group commit: many requests that each need "everything I wrote is
//! durable" share one device flush.
//!
//! Invariant: `flush_after()` returns Ok only after a `flush()` of the
//! device that *started* after the call began has succeeded, so every write
//! completed before the call is durable. Concurrent callers wait for the
//! same flush instead of issuing their own.

use std::sync::{Condvar, Mutex};

use crate::blockdev::BlockDevLike;

#[derive(Default)]
struct State {
    /// Generation of the last flush started.
    started: u64,
    /// Generation of the last flush finished.
    done: u64,
    /// A flush is running now.
    running: bool,
    /// Generation of the last flush that failed, and its error.
    failed: Option<(u64, String)>,
}

/// Group commit over [`BlockDevLike::flush`] (public for tests).
#[derive(Default)]
pub struct FlushGroup {
    state: Mutex<State>,
    cv: Condvar,
}

impl FlushGroup {
    /// Make every write completed before this call durable.
    pub fn flush_after(&self, dev: &dyn BlockDevLike) -> log_engine::Result<()> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // A flush already running may have started before our write
        // completed: only one started after this point counts.
        let target = g.started + 1;
        loop {
            if g.done >= target {
                return match &g.failed {
                    Some((gen, msg)) if *gen >= target => Err(log_engine::Error::Unavailable(
                        format!("flush failed: {msg}"),
                    )),
                    _ => Ok(()),
                };
            }
            if !g.running {
                g.running = true;
                g.started += 1;
                let mine = g.started;
                drop(g);
                let r = dev.flush();
                g = self.state.lock().unwrap_or_else(|p| p.into_inner());
                g.running = false;
                g.done = mine;
                if let Err(e) = &r {
                    g.failed = Some((mine, e.to_string()));
                }
                self.cv.notify_all();
                continue;
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// Counts flushes; every write bumps `written`, a flush records the
    /// `written` value it started with.
    #[derive(Default)]
    struct Counting {
        written: AtomicU64,
        durable: AtomicU64,
        flushes: AtomicU64,
    }
    impl BlockDevLike for Counting {
        fn size(&self) -> u64 {
            4096
        }
        fn read(&self, _: u64, _: &mut [u8]) -> log_engine::Result<()> {
            Ok(())
        }
        fn write(&self, _: u64, _: &[u8]) -> log_engine::Result<()> {
            self.written.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn flush(&self) -> log_engine::Result<()> {
            let w = self.written.load(Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            self.durable.fetch_max(w, Ordering::SeqCst);
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn discard(&self, _: u64, _: u64) -> log_engine::Result<()> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64) -> log_engine::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_write_is_durable_when_flush_after_returns_and_flushes_are_shared() {
        let dev = Arc::new(Counting::default());
        let fg = Arc::new(FlushGroup::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (dev, fg) = (dev.clone(), fg.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        dev.write(0, &[]).unwrap();
                        let mine = dev.written.load(Ordering::SeqCst);
                        fg.flush_after(dev.as_ref()).unwrap();
                        assert!(dev.durable.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let flushes = dev.flushes.load(Ordering::SeqCst);
        assert!(
            flushes < 400,
            "{flushes} flushes for 400 writes: not grouped"
        );
    }
}
