//! Scalar abstract domain: an unsigned interval and a signed interval over the same u64
//! value, kept consistent by [`Scalar::normalize`].
//!
//! Invariant: every concrete value a register can hold at a program point lies in both
//! `[umin, umax]` (as u64) and `[smin, smax]` (as i64). Empty intervals never escape: a
//! refinement that would empty a range reports the branch as infeasible instead.

use crate::insn::{alu, alu_concrete, jmp, jmp_concrete};

/// Interval abstraction of a 64-bit scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scalar {
    /// Unsigned lower bound.
    pub umin: u64,
    /// Unsigned upper bound.
    pub umax: u64,
    /// Signed lower bound.
    pub smin: i64,
    /// Signed upper bound.
    pub smax: i64,
}

impl Scalar {
    /// Any 64-bit value.
    pub const TOP: Scalar = Scalar {
        umin: 0,
        umax: u64::MAX,
        smin: i64::MIN,
        smax: i64::MAX,
    };

    /// Exactly `v`.
    pub fn konst(v: u64) -> Scalar {
        Scalar {
            umin: v,
            umax: v,
            smin: v as i64,
            smax: v as i64,
        }
    }

    /// Unsigned interval `[lo, hi]`.
    pub fn urange(lo: u64, hi: u64) -> Scalar {
        Scalar {
            umin: lo,
            umax: hi,
            ..Scalar::TOP
        }
        .normalize()
        .unwrap_or(Scalar::TOP)
    }

    /// Any value of `bytes` bytes, zero-extended.
    pub fn of_size(bytes: usize) -> Scalar {
        if bytes >= 8 {
            Scalar::TOP
        } else {
            Scalar::urange(0, (1u64 << (bytes * 8)) - 1)
        }
    }

    /// The single value, if known.
    pub fn as_const(&self) -> Option<u64> {
        (self.umin == self.umax).then_some(self.umin)
    }

    /// True when every value of `self` is a value of `other`.
    pub fn within(&self, other: &Scalar) -> bool {
        self.umin >= other.umin
            && self.umax <= other.umax
            && self.smin >= other.smin
            && self.smax <= other.smax
    }

    /// Intersects the two views; `None` when empty.
    pub fn normalize(mut self) -> Option<Scalar> {
        // Signed range that does not cross zero gives an unsigned range and vice versa.
        if self.smin >= 0 || self.smax < 0 {
            self.umin = self.umin.max(self.smin as u64);
            self.umax = self.umax.min(self.smax as u64);
        }
        if (self.umin as i64) <= (self.umax as i64) {
            // The unsigned range does not cross the sign boundary.
            self.smin = self.smin.max(self.umin as i64);
            self.smax = self.smax.min(self.umax as i64);
        }
        if self.umin > self.umax || self.smin > self.smax {
            return None;
        }
        Some(self)
    }

    fn from_signed(smin: i64, smax: i64) -> Scalar {
        Scalar {
            smin,
            smax,
            ..Scalar::TOP
        }
        .normalize()
        .unwrap_or(Scalar::TOP)
    }

    /// The low 32 bits as a zero-extended scalar.
    pub fn low32(&self) -> Scalar {
        if self.umax <= u32::MAX as u64 {
            return *self;
        }
        if self.umin >> 32 == self.umax >> 32 {
            return Scalar::urange(self.umin & 0xffff_ffff, self.umax & 0xffff_ffff);
        }
        Scalar::of_size(4)
    }

    /// Abstract ALU: `op` (high nibble) of `a` and `b`; `to_be` for `END`.
    pub fn alu(op: u8, is64: bool, a: Scalar, b: Scalar, to_be: bool) -> Scalar {
        if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
            return Scalar::konst(alu_concrete(op, is64, x, y, to_be));
        }
        if !is64 {
            let (a, b) = (a.low32(), b.low32());
            if op == alu::ARSH || op == alu::NEG || op == alu::END {
                return Scalar::of_size(4);
            }
            if op == alu::MOV {
                return b;
            }
            if matches!(op, alu::LSH | alu::RSH) && b.umax >= 32 {
                // 32-bit shifts mask the amount to 5 bits: a range reaching 32 wraps.
                return Scalar::of_size(4);
            }
            let r = Scalar::alu64_ranges(op, a, b);
            return if r.umax <= u32::MAX as u64 {
                r
            } else {
                Scalar::of_size(4)
            };
        }
        Scalar::alu64_ranges(op, a, b)
    }

    fn alu64_ranges(op: u8, a: Scalar, b: Scalar) -> Scalar {
        let bits = |v: u64| 64 - v.leading_zeros();
        let mask_up = |v: u64| {
            if bits(v) >= 64 {
                u64::MAX
            } else {
                (1u64 << bits(v)) - 1
            }
        };
        match op {
            alu::MOV => b,
            alu::ADD => {
                let u = match (a.umin.checked_add(b.umin), a.umax.checked_add(b.umax)) {
                    (Some(lo), Some(hi)) => Scalar::urange(lo, hi),
                    _ => Scalar::TOP,
                };
                let s = match (a.smin.checked_add(b.smin), a.smax.checked_add(b.smax)) {
                    (Some(lo), Some(hi)) => Scalar::from_signed(lo, hi),
                    _ => Scalar::TOP,
                };
                meet(u, s)
            }
            alu::SUB => {
                let u = if a.umin >= b.umax {
                    Scalar::urange(a.umin - b.umax, a.umax - b.umin)
                } else {
                    Scalar::TOP
                };
                let s = match (a.smin.checked_sub(b.smax), a.smax.checked_sub(b.smin)) {
                    (Some(lo), Some(hi)) => Scalar::from_signed(lo, hi),
                    _ => Scalar::TOP,
                };
                meet(u, s)
            }
            alu::MUL => match a.umax.checked_mul(b.umax) {
                Some(hi) => Scalar::urange(a.umin * b.umin, hi),
                None => Scalar::TOP,
            },
            alu::DIV => match a.umax.checked_div(b.umin) {
                None => Scalar::urange(0, a.umax),
                Some(hi) => Scalar::urange(a.umin / b.umax, hi),
            },
            alu::MOD => {
                if b.umin == 0 {
                    Scalar::urange(0, a.umax)
                } else {
                    Scalar::urange(0, a.umax.min(b.umax - 1))
                }
            }
            alu::AND => Scalar::urange(0, a.umax.min(b.umax)),
            alu::OR => Scalar::urange(a.umin.max(b.umin), mask_up(a.umax.max(b.umax))),
            alu::XOR => Scalar::urange(0, mask_up(a.umax.max(b.umax))),
            alu::LSH => match b.as_const() {
                Some(k) if k < 64 && a.umax.leading_zeros() as u64 >= k => {
                    Scalar::urange(a.umin << k, a.umax << k)
                }
                _ => Scalar::TOP,
            },
            alu::RSH => {
                if b.umax < 64 {
                    Scalar::urange(a.umin >> b.umax, a.umax >> b.umin)
                } else {
                    Scalar::urange(0, a.umax)
                }
            }
            alu::ARSH => match b.as_const() {
                Some(k) if k < 64 => Scalar::from_signed(a.smin >> k, a.smax >> k),
                _ => Scalar::TOP,
            },
            _ => Scalar::TOP,
        }
    }
}

fn meet(a: Scalar, b: Scalar) -> Scalar {
    Scalar {
        umin: a.umin.max(b.umin),
        umax: a.umax.min(b.umax),
        smin: a.smin.max(b.smin),
        smax: a.smax.min(b.smax),
    }
    .normalize()
    .unwrap_or(Scalar::TOP)
}

/// Result of abstractly evaluating a conditional jump on two scalars: the refined operands
/// on each edge, or `None` for an edge that no concrete values can take.
pub type Edge = Option<(Scalar, Scalar)>;

/// Refines `a op b` for a 64-bit comparison; returns (taken, not-taken).
pub fn branch64(op: u8, a: Scalar, b: Scalar) -> (Edge, Edge) {
    if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
        return if jmp_concrete(op, true, x, y) {
            (Some((a, b)), None)
        } else {
            (None, Some((a, b)))
        };
    }
    match op {
        jmp::JEQ => (eq(a, b), Some(ne(a, b))),
        jmp::JNE => (Some(ne(a, b)), eq(a, b)),
        jmp::JLT => (ult(a, b), ule(b, a).map(swap)),
        jmp::JLE => (ule(a, b), ult(b, a).map(swap)),
        jmp::JGT => (ult(b, a).map(swap), ule(a, b)),
        jmp::JGE => (ule(b, a).map(swap), ult(a, b)),
        jmp::JSLT => (slt(a, b), sle(b, a).map(swap)),
        jmp::JSLE => (sle(a, b), slt(b, a).map(swap)),
        jmp::JSGT => (slt(b, a).map(swap), sle(a, b)),
        jmp::JSGE => (sle(b, a).map(swap), slt(a, b)),
        jmp::JSET => {
            let taken = (a.umax != 0 && b.umax != 0).then_some((a, b));
            (taken, Some((a, b)))
        }
        _ => (Some((a, b)), None),
    }
}

/// Refines `a op b` for a 32-bit comparison: exact refinement when both operands fit in 31
/// bits (then 32-bit signed and unsigned compares equal the 64-bit ones), else both edges
/// are taken unrefined unless both are constants.
pub fn branch32(op: u8, a: Scalar, b: Scalar) -> (Edge, Edge) {
    if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
        return if jmp_concrete(op, false, x, y) {
            (Some((a, b)), None)
        } else {
            (None, Some((a, b)))
        };
    }
    if a.umax <= i32::MAX as u64 && b.umax <= i32::MAX as u64 {
        return branch64(op, a, b);
    }
    let unsigned = matches!(
        op,
        jmp::JEQ | jmp::JNE | jmp::JGT | jmp::JGE | jmp::JLT | jmp::JLE | jmp::JSET
    );
    if unsigned && a.umax <= u32::MAX as u64 && b.umax <= u32::MAX as u64 {
        // Both are zero-extended 32-bit values: unsigned compares agree with 64-bit ones.
        return branch64(op, a, b);
    }
    (Some((a, b)), Some((a, b)))
}

fn swap((a, b): (Scalar, Scalar)) -> (Scalar, Scalar) {
    (b, a)
}

fn eq(a: Scalar, b: Scalar) -> Edge {
    let m = Scalar {
        umin: a.umin.max(b.umin),
        umax: a.umax.min(b.umax),
        smin: a.smin.max(b.smin),
        smax: a.smax.min(b.smax),
    }
    .normalize()?;
    Some((m, m))
}

fn ne(mut a: Scalar, mut b: Scalar) -> (Scalar, Scalar) {
    let trim = |x: &mut Scalar, k: u64| {
        let mut y = *x;
        if y.umin == k && y.umin < y.umax {
            y.umin += 1;
        } else if y.umax == k && y.umin < y.umax {
            y.umax -= 1;
        }
        if let Some(n) = y.normalize() {
            *x = n;
        }
    };
    if let Some(k) = b.as_const() {
        trim(&mut a, k);
    }
    if let Some(k) = a.as_const() {
        trim(&mut b, k);
    }
    (a, b)
}

/// a < b unsigned.
fn ult(a: Scalar, b: Scalar) -> Edge {
    if a.umin >= b.umax {
        return None;
    }
    let na = Scalar {
        umax: a.umax.min(b.umax - 1),
        ..a
    }
    .normalize()?;
    let nb = Scalar {
        umin: b.umin.max(a.umin + 1),
        ..b
    }
    .normalize()?;
    Some((na, nb))
}

/// a <= b unsigned.
fn ule(a: Scalar, b: Scalar) -> Edge {
    if a.umin > b.umax {
        return None;
    }
    let na = Scalar {
        umax: a.umax.min(b.umax),
        ..a
    }
    .normalize()?;
    let nb = Scalar {
        umin: b.umin.max(a.umin),
        ..b
    }
    .normalize()?;
    Some((na, nb))
}

/// a < b signed.
fn slt(a: Scalar, b: Scalar) -> Edge {
    if a.smin >= b.smax {
        return None;
    }
    let na = Scalar {
        smax: a.smax.min(b.smax - 1),
        ..a
    }
    .normalize()?;
    let nb = Scalar {
        smin: b.smin.max(a.smin + 1),
        ..b
    }
    .normalize()?;
    Some((na, nb))
}

/// a <= b signed.
fn sle(a: Scalar, b: Scalar) -> Edge {
    if a.smin > b.smax {
        return None;
    }
    let na = Scalar {
        smax: a.smax.min(b.smax),
        ..a
    }
    .normalize()?;
    let nb = Scalar {
        smin: b.smin.max(a.smin),
        ..b
    }
    .normalize()?;
    Some((na, nb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_links_views() {
        let s = Scalar::urange(3, 10);
        assert_eq!((s.smin, s.smax), (3, 10));
        let t = Scalar::from_signed(-5, -1);
        assert_eq!((t.umin, t.umax), ((-5i64) as u64, u64::MAX));
    }

    #[test]
    fn add_and_overflow() {
        let r = Scalar::alu(
            alu::ADD,
            true,
            Scalar::urange(1, 5),
            Scalar::konst(10),
            false,
        );
        assert_eq!((r.umin, r.umax), (11, 15));
        let r = Scalar::alu(alu::ADD, true, Scalar::TOP, Scalar::konst(1), false);
        assert_eq!(r, Scalar::TOP);
    }

    #[test]
    fn branch_refines_unsigned() {
        let (t, f) = branch64(jmp::JLT, Scalar::konst(3), Scalar::urange(0, 254));
        let (_, nb) = t.unwrap();
        assert_eq!((nb.umin, nb.umax), (4, 254));
        let (_, fb) = f.unwrap();
        assert_eq!((fb.umin, fb.umax), (0, 3));
        let (t, f) = branch64(jmp::JGT, Scalar::konst(300), Scalar::urange(0, 254));
        assert!(t.is_some() && f.is_none());
    }

    #[test]
    fn ne_trims_endpoint() {
        let (t, f) = branch64(jmp::JNE, Scalar::konst(4), Scalar::urange(4, 9));
        assert_eq!(t.unwrap().1.umin, 5);
        assert_eq!(f.unwrap().1, Scalar::konst(4));
    }
}
