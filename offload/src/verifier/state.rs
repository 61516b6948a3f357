//! Abstract machine state: register values, per-frame stacks, the call chain.

use super::scalar::Scalar;
use crate::abi::STACK_SIZE;

/// Memory regions a pointer can point into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// The 168-byte context (constant offsets only).
    Ctx,
    /// The current block (read-only).
    Block,
    /// The scratch buffer (read-write).
    Scratch,
    /// The stack of call frame `n` (offsets relative to that frame's r10, constant only).
    Stack(u8),
}

/// Abstract value of a register or spilled stack slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    /// Never written on this path: reading it is an error.
    Uninit,
    /// A number.
    Scalar(Scalar),
    /// A pointer `region_base + off` with `off` in the given range (signed view used).
    Ptr(Region, Scalar),
}

impl Val {
    /// True when every concrete value of `self` is one of `other` (for pruning and loop
    /// detection). `Uninit` in `other` accepts anything: a state that never reads the
    /// register was explored safely without it.
    pub fn within(&self, other: &Val) -> bool {
        match (self, other) {
            (_, Val::Uninit) => true,
            (Val::Scalar(a), Val::Scalar(b)) => a.within(b),
            (Val::Ptr(r1, a), Val::Ptr(r2, b)) => r1 == r2 && a.within(b),
            _ => false,
        }
    }
}

/// Number of 8-byte stack slots per frame.
pub const SLOTS: usize = STACK_SIZE / 8;

/// One 8-byte stack slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Bytes with bit `i` of the mask set are initialised scalar bytes; others uninit.
    Bytes(u8),
    /// A whole register spilled with an aligned 8-byte store.
    Spill(Val),
}

impl Slot {
    /// True when every read that is valid on `other` is valid on `self` and yields a value
    /// `other` allows.
    fn within(&self, other: &Slot) -> bool {
        match (self, other) {
            (Slot::Bytes(a), Slot::Bytes(m)) => a & m == *m,
            (Slot::Spill(Val::Scalar(_)), Slot::Bytes(_)) => true,
            (Slot::Spill(_), Slot::Bytes(m)) => *m == 0,
            (Slot::Spill(a), Slot::Spill(b)) => a.within(b),
            (Slot::Bytes(_), Slot::Spill(_)) => false,
        }
    }
}

/// Sparse stack of one frame: slots not listed are `Slot::Bytes(0)` (uninitialised).
/// Invariant: entries sorted by slot index, no duplicates, none equal to `Bytes(0)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stack(Vec<(u8, Slot)>);

impl Stack {
    /// Slot `i` (`0..SLOTS`).
    pub fn get(&self, i: usize) -> Slot {
        match self.0.binary_search_by_key(&(i as u8), |e| e.0) {
            Ok(k) => self.0[k].1,
            Err(_) => Slot::Bytes(0),
        }
    }

    /// Sets slot `i`.
    pub fn set(&mut self, i: usize, v: Slot) {
        match self.0.binary_search_by_key(&(i as u8), |e| e.0) {
            Ok(k) if v == Slot::Bytes(0) => {
                self.0.remove(k);
            }
            Ok(k) => self.0[k].1 = v,
            Err(_) if v == Slot::Bytes(0) => {}
            Err(k) => self.0.insert(k, (i as u8, v)),
        }
    }

    fn within(&self, other: &Stack) -> bool {
        // Unlisted slots of `other` are uninitialised and accept anything.
        other.0.iter().all(|(i, s)| self.get(*i as usize).within(s))
    }
}

/// State of one call frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// r0..r9 (r10 is implicit: `Ptr(Stack(depth), 0)`).
    pub regs: [Val; 10],
    /// Stack slots; slot `i` covers bytes `[-(SLOTS - i) * 8, -(SLOTS - i - 1) * 8)` from r10.
    pub stack: Stack,
    /// Instruction index to resume at after this frame exits (unused for frame 0).
    pub ret_pc: usize,
    /// Entry instruction of the function this frame runs.
    pub func: usize,
}

impl Frame {
    /// A fresh frame for function `func` returning to `ret_pc`.
    pub fn new(func: usize, ret_pc: usize) -> Frame {
        Frame {
            regs: [Val::Uninit; 10],
            stack: Stack::default(),
            ret_pc,
            func,
        }
    }
}

/// Whole abstract state: the call chain, innermost frame last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Frames, outermost first.
    pub frames: Vec<Frame>,
}

impl State {
    /// True when `self` is covered by `other`: same call chain and every value within.
    pub fn within(&self, other: &State) -> bool {
        self.frames.len() == other.frames.len()
            && self.frames.iter().zip(&other.frames).all(|(a, b)| {
                a.ret_pc == b.ret_pc
                    && a.func == b.func
                    && a.regs.iter().zip(&b.regs).all(|(x, y)| x.within(y))
                    && a.stack.within(&b.stack)
            })
    }

    /// Innermost frame.
    pub fn cur(&mut self) -> &mut Frame {
        let n = self.frames.len() - 1;
        &mut self.frames[n]
    }

    /// Depth index of the innermost frame.
    pub fn depth(&self) -> u8 {
        (self.frames.len() - 1) as u8
    }
}
