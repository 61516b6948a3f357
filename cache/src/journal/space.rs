//! Space of the circular log: records are allocated at the head in append
//! order and released from the tail once the backend holds them.
//!
//! Invariants:
//! - live records are disjoint and lie in `[DATA_START, size)`; a record
//!   never straddles the end (when it does not fit, the head wraps to
//!   `DATA_START` and the end of the device stays unused for this lap);
//! - release is strictly from the tail (the oldest allocation), and only of
//!   records whose device write completed and whose seq the backend holds
//!   durably, so a record is never overwritten before its data is safe
//!   elsewhere.

use std::collections::VecDeque;

use super::format::DATA_START;

/// One allocated record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Live {
    pub ticket: u64,
    pub pos: u64,
    pub len: u64,
    pub seq: u64,
}

#[derive(Debug)]
pub(crate) struct Space {
    end: u64,
    head: u64,
    live: VecDeque<Live>,
    used: u64,
}

impl Space {
    pub fn new(size: u64) -> Space {
        Space {
            end: size,
            head: DATA_START,
            live: VecDeque::new(),
            used: 0,
        }
    }

    /// Bytes records may use in total.
    pub fn capacity(&self) -> u64 {
        self.end - DATA_START
    }

    /// Bytes held by live records.
    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn live_records(&self) -> usize {
        self.live.len()
    }

    /// Where a record of `len` bytes would go now, if it fits.
    fn place(&self, len: u64) -> Option<u64> {
        let Some(tail) = self.live.front().map(|l| l.pos) else {
            return if self.head + len <= self.end {
                Some(self.head)
            } else if DATA_START + len <= self.end {
                Some(DATA_START)
            } else {
                None
            };
        };
        if self.head > tail {
            if self.head + len <= self.end {
                Some(self.head)
            } else if DATA_START + len <= tail {
                Some(DATA_START)
            } else {
                None
            }
        } else if self.head + len <= tail {
            // Wrapped: the head is behind the tail (head == tail is full).
            Some(self.head)
        } else {
            None
        }
    }

    /// Allocate `len` bytes for the record `ticket`/`seq`; `None` when full.
    pub fn alloc(&mut self, ticket: u64, seq: u64, len: u64) -> Option<u64> {
        let pos = self.place(len)?;
        self.head = pos + len;
        self.used += len;
        self.live.push_back(Live {
            ticket,
            pos,
            len,
            seq,
        });
        Some(pos)
    }

    /// Release tail records whose write completed (`ticket <= done_ticket`)
    /// and whose seq is durable in the backend (`seq <= durable`). Returns
    /// how many were released.
    pub fn release(&mut self, done_ticket: u64, durable: u64) -> usize {
        let mut n = 0;
        while let Some(l) = self.live.front() {
            if l.ticket > done_ticket || l.seq > durable {
                break;
            }
            self.used -= l.len;
            self.live.pop_front();
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_never_overlaps() {
        let size = DATA_START + 10 * 4096;
        let mut s = Space::new(size);
        let a = s.alloc(1, 1, 4 * 4096).unwrap();
        let b = s.alloc(2, 2, 4 * 4096).unwrap();
        assert_eq!((a, b), (DATA_START, DATA_START + 4 * 4096));
        // 2 blocks left at the end: a 3-block record does not fit anywhere.
        assert!(s.alloc(3, 3, 3 * 4096).is_none());
        assert_eq!(s.release(1, 1), 1);
        // Now it wraps to the start, in front of record 2.
        assert_eq!(s.alloc(3, 3, 3 * 4096), Some(DATA_START));
        assert!(s.alloc(4, 4, 2 * 4096).is_none(), "would overlap record 2");
        assert_eq!(s.alloc(4, 4, 4096), Some(DATA_START + 3 * 4096));
        // Not done yet: not released even though durable.
        assert_eq!(s.release(2, 100), 1);
        assert_eq!(s.release(3, 100), 1);
        assert_eq!(s.used(), 4096);
        assert_eq!(s.release(4, 3), 0, "seq 4 not durable");
        assert_eq!(s.release(4, 4), 1);
        assert_eq!(s.used(), 0);
    }
}
