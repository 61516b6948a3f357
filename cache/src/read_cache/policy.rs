//! Eviction policies over cache slots, and a simulator to compare them.
//!
//! A policy tracks which slots hold entries and picks a victim when the cache
//! is full. Hits never take a lock: they bump a per-slot access counter
//! ([`Freq`], an atomic 0..=3) that the policies read when they evict.
//!
//! - [`Policy::Clock`]: CLOCK (second chance) — the hand sweeps slots, a slot
//!   with a non-zero counter gets it decremented and is skipped.
//! - [`Policy::S3Fifo`]: S3-FIFO (Yang et al., SOSP'23) — new keys enter a
//!   small FIFO (10 % of the slots); keys hit more than once there move to
//!   the main FIFO (CLOCK-like reinsertion), the others go to a ghost queue of
//!   key hashes so a quick re-reference goes straight to main. Scan-resistant.
//! - [`Policy::Lru`]: exact LRU; needs a lock on every hit, so only the
//!   simulator uses it (as the reference point).
//!
//! # Invariants
//! - A slot is known to the policy between `inserted` and `removed` (or being
//!   returned by `victim`); `victim` only returns known slots and forgets them.
//! - Queues may hold stale `(slot, incarnation)` pairs of removed slots; they
//!   are skipped when popped, so `removed` is O(1).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// Per-slot access counters shared between the cache's lock-free hit path
/// and the policy.
pub type Freq = Arc<[AtomicU8]>;

/// Highest value of an access counter.
pub const FREQ_MAX: u8 = 3;

/// Record one access to `slot` (saturating at [`FREQ_MAX`]).
pub fn bump(freq: &[AtomicU8], slot: u32) {
    if let Some(f) = freq.get(slot as usize) {
        let v = f.load(Ordering::Relaxed);
        if v < FREQ_MAX {
            f.store(v + 1, Ordering::Relaxed);
        }
    }
}

/// Which eviction policy a cache or simulation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Clock,
    S3Fifo,
    /// Simulation only (see the module docs).
    Lru,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Clock => "clock",
            Policy::S3Fifo => "s3-fifo",
            Policy::Lru => "lru",
        }
    }
}

/// The interface the cache drives. Called under the cache's allocation lock.
pub trait Evictor: Send + std::fmt::Debug {
    /// `slot` now holds the entry whose key hashes to `key`.
    fn inserted(&mut self, slot: u32, key: u64);
    /// `slot` was emptied by the cache (segment deleted, write failed).
    fn removed(&mut self, slot: u32);
    /// Choose and forget a slot to evict; `None` if the policy knows none.
    fn victim(&mut self) -> Option<u32>;
    /// A hit on `slot`, for policies that need more than the counter (LRU).
    fn touched(&mut self, _slot: u32) {}
}

/// Build the evictor for `policy` over `nslots` slots.
pub fn new_evictor(policy: Policy, nslots: u32, freq: Freq) -> Box<dyn Evictor> {
    match policy {
        Policy::Clock => Box::new(Clock::new(nslots, freq)),
        Policy::S3Fifo => Box::new(S3Fifo::new(nslots, freq)),
        Policy::Lru => Box::new(Lru::new(nslots)),
    }
}

/// CLOCK: one hand over all slots.
#[derive(Debug)]
pub struct Clock {
    used: Vec<bool>,
    n_used: u32,
    hand: u32,
    freq: Freq,
}

impl Clock {
    pub fn new(nslots: u32, freq: Freq) -> Self {
        Clock {
            used: vec![false; nslots as usize],
            n_used: 0,
            hand: 0,
            freq,
        }
    }
}

impl Evictor for Clock {
    fn inserted(&mut self, slot: u32, _key: u64) {
        if let Some(u) = self.used.get_mut(slot as usize) {
            if !*u {
                *u = true;
                self.n_used += 1;
            }
            self.freq[slot as usize].store(0, Ordering::Relaxed);
        }
    }

    fn removed(&mut self, slot: u32) {
        if let Some(u) = self.used.get_mut(slot as usize) {
            if *u {
                *u = false;
                self.n_used -= 1;
            }
        }
    }

    fn victim(&mut self) -> Option<u32> {
        if self.n_used == 0 {
            return None;
        }
        let n = self.used.len() as u32;
        // Every used slot is decremented at most FREQ_MAX times before it is
        // chosen, so this terminates within (FREQ_MAX + 1) sweeps.
        loop {
            let s = self.hand;
            self.hand = (self.hand + 1) % n;
            if !self.used[s as usize] {
                continue;
            }
            let f = &self.freq[s as usize];
            let v = f.load(Ordering::Relaxed);
            if v > 0 {
                f.store(v - 1, Ordering::Relaxed);
                continue;
            }
            self.used[s as usize] = false;
            self.n_used -= 1;
            return Some(s);
        }
    }
}

/// Where a slot currently lives in S3-FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Q {
    None,
    Small,
    Main,
}

/// S3-FIFO over slots (see the module docs).
#[derive(Debug)]
pub struct S3Fifo {
    small: VecDeque<(u32, u32)>,
    main: VecDeque<(u32, u32)>,
    /// Per slot: queue, incarnation, key hash.
    state: Vec<(Q, u32, u64)>,
    n_small: usize,
    n_main: usize,
    small_target: usize,
    ghost: VecDeque<u64>,
    ghost_set: HashMap<u64, u32>,
    ghost_cap: usize,
    freq: Freq,
}

impl S3Fifo {
    pub fn new(nslots: u32, freq: Freq) -> Self {
        let n = nslots as usize;
        S3Fifo {
            small: VecDeque::new(),
            main: VecDeque::new(),
            state: vec![(Q::None, 0, 0); n],
            n_small: 0,
            n_main: 0,
            small_target: (n / 10).max(1),
            ghost: VecDeque::new(),
            ghost_set: HashMap::new(),
            ghost_cap: (n - n / 10).max(1),
            freq,
        }
    }

    fn ghost_add(&mut self, key: u64) {
        self.ghost.push_back(key);
        *self.ghost_set.entry(key).or_insert(0) += 1;
        while self.ghost.len() > self.ghost_cap {
            if let Some(k) = self.ghost.pop_front() {
                if let Some(c) = self.ghost_set.get_mut(&k) {
                    *c -= 1;
                    if *c == 0 {
                        self.ghost_set.remove(&k);
                    }
                }
            }
        }
    }

    fn live(&self, slot: u32, inc: u32, q: Q) -> bool {
        let st = self.state[slot as usize];
        st.0 == q && st.1 == inc
    }

    fn push(&mut self, slot: u32, q: Q) {
        let st = &mut self.state[slot as usize];
        st.0 = q;
        st.1 = st.1.wrapping_add(1);
        let e = (slot, st.1);
        match q {
            Q::Small => {
                self.small.push_back(e);
                self.n_small += 1;
            }
            Q::Main => {
                self.main.push_back(e);
                self.n_main += 1;
            }
            Q::None => {}
        }
    }

    /// Take `slot` out of its queue count (its queue entry goes stale).
    fn forget(&mut self, slot: u32) {
        let st = &mut self.state[slot as usize];
        match st.0 {
            Q::Small => self.n_small -= 1,
            Q::Main => self.n_main -= 1,
            Q::None => {}
        }
        st.0 = Q::None;
        st.1 = st.1.wrapping_add(1);
    }

    fn evict_main(&mut self) -> Option<u32> {
        // Each live slot is reinserted at most FREQ_MAX times.
        while let Some((s, inc)) = self.main.pop_front() {
            if !self.live(s, inc, Q::Main) {
                continue;
            }
            let f = &self.freq[s as usize];
            let v = f.load(Ordering::Relaxed);
            if v > 0 {
                f.store(v - 1, Ordering::Relaxed);
                self.main.push_back((s, inc));
                continue;
            }
            self.forget(s);
            return Some(s);
        }
        None
    }

    fn evict_small(&mut self) -> Option<u32> {
        while let Some((s, inc)) = self.small.pop_front() {
            if !self.live(s, inc, Q::Small) {
                continue;
            }
            let v = self.freq[s as usize].load(Ordering::Relaxed);
            if v > 1 {
                self.forget(s);
                self.freq[s as usize].store(0, Ordering::Relaxed);
                self.push(s, Q::Main);
                continue;
            }
            let key = self.state[s as usize].2;
            self.forget(s);
            self.ghost_add(key);
            return Some(s);
        }
        None
    }
}

impl Evictor for S3Fifo {
    fn inserted(&mut self, slot: u32, key: u64) {
        if slot as usize >= self.state.len() {
            return;
        }
        self.forget(slot);
        self.state[slot as usize].2 = key;
        self.freq[slot as usize].store(0, Ordering::Relaxed);
        if self.ghost_set.contains_key(&key) {
            self.push(slot, Q::Main);
        } else {
            self.push(slot, Q::Small);
        }
    }

    fn removed(&mut self, slot: u32) {
        if (slot as usize) < self.state.len() {
            self.forget(slot);
        }
    }

    fn victim(&mut self) -> Option<u32> {
        if self.n_small >= self.small_target || self.n_main == 0 {
            if let Some(s) = self.evict_small() {
                return Some(s);
            }
        }
        self.evict_main().or_else(|| self.evict_small())
    }
}

/// Exact LRU (simulation only): a tick per access, victim = oldest tick.
#[derive(Debug)]
pub struct Lru {
    ticks: Vec<u64>,
    order: std::collections::BTreeMap<u64, u32>,
    now: u64,
}

impl Lru {
    pub fn new(nslots: u32) -> Self {
        Lru {
            ticks: vec![0; nslots as usize],
            order: Default::default(),
            now: 0,
        }
    }
}

impl Evictor for Lru {
    fn inserted(&mut self, slot: u32, _key: u64) {
        self.removed(slot);
        self.now += 1;
        if let Some(t) = self.ticks.get_mut(slot as usize) {
            *t = self.now;
            self.order.insert(self.now, slot);
        }
    }
    fn removed(&mut self, slot: u32) {
        if let Some(t) = self.ticks.get_mut(slot as usize) {
            if *t != 0 {
                self.order.remove(t);
                *t = 0;
            }
        }
    }
    fn victim(&mut self) -> Option<u32> {
        let (&t, &s) = self.order.iter().next()?;
        self.order.remove(&t);
        self.ticks[s as usize] = 0;
        Some(s)
    }
    fn touched(&mut self, slot: u32) {
        if self.ticks.get(slot as usize).is_some_and(|t| *t != 0) {
            self.inserted(slot, 0);
        }
    }
}

/// Result of [`simulate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimResult {
    pub hits: u64,
    pub misses: u64,
}

impl SimResult {
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }
}

/// Replay `trace` (block keys) through `policy` with `nslots` slots and
/// count hits. Uses the same evictors as the cache.
pub fn simulate(policy: Policy, nslots: u32, trace: &[u64]) -> SimResult {
    let freq: Freq = (0..nslots).map(|_| AtomicU8::new(0)).collect();
    let mut ev = new_evictor(policy, nslots, freq.clone());
    let mut map: HashMap<u64, u32> = HashMap::new();
    let mut slot_key: Vec<Option<u64>> = vec![None; nslots as usize];
    let mut free: Vec<u32> = (0..nslots).rev().collect();
    let mut r = SimResult::default();
    for &k in trace {
        if let Some(&s) = map.get(&k) {
            r.hits += 1;
            bump(&freq, s);
            ev.touched(s);
            continue;
        }
        r.misses += 1;
        let slot = match free.pop() {
            Some(s) => s,
            None => match ev.victim() {
                Some(s) => {
                    if let Some(old) = slot_key[s as usize].take() {
                        map.remove(&old);
                    }
                    s
                }
                None => continue,
            },
        };
        slot_key[slot as usize] = Some(k);
        map.insert(k, slot);
        ev.inserted(slot, k);
    }
    r
}

/// Distinct keys of a trace (helper for reports).
pub fn distinct(trace: &[u64]) -> usize {
    trace.iter().collect::<HashSet<_>>().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_policies_hit_a_working_set_that_fits() {
        let trace: Vec<u64> = (0..10).flat_map(|_| 0..50u64).collect();
        for p in [Policy::Clock, Policy::S3Fifo, Policy::Lru] {
            let r = simulate(p, 64, &trace);
            assert_eq!(r.misses, 50, "{p:?}");
            assert_eq!(r.hits, 450, "{p:?}");
        }
    }

    #[test]
    fn victims_are_distinct_known_slots() {
        for p in [Policy::Clock, Policy::S3Fifo, Policy::Lru] {
            let freq: Freq = (0..8).map(|_| AtomicU8::new(0)).collect();
            let mut ev = new_evictor(p, 8, freq.clone());
            for s in 0..8 {
                ev.inserted(s, s as u64);
            }
            bump(&freq, 3);
            ev.removed(5);
            let mut got = Vec::new();
            while let Some(s) = ev.victim() {
                got.push(s);
            }
            got.sort();
            assert_eq!(got, vec![0, 1, 2, 3, 4, 6, 7], "{p:?}");
        }
    }
}
