//! Path exploration with interval refinement, state pruning and a worst-case path length.
//! See the module documentation of [`super`] for the overall design.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::liveness::{live_in, CALL_CLOBBER};
use super::scalar::{branch32, branch64, Scalar};
use super::state::{Frame, Region, Slot, State, Val, SLOTS};
use super::structural::{structural_check, Layout};
use super::{Verified, VerifyError, VerifyErrorKind::*};
use crate::abi::{
    ctx_writable, BLOCK_SIZE, CTX_SIZE, MAX_FRAMES, OFF_DATA, OFF_SCRATCH, SCRATCH_SIZE, STACK_SIZE,
};
use crate::insn::{alu, class, jmp, Insn, CALL, EXIT, JA, SRC_X};

/// Recorded finished states per instruction (oldest dropped first).
const VISITED_PER_PC: usize = 64;
/// Ancestors at the same instruction compared for loop detection.
const ANCESTORS_CHECKED: usize = 16;
/// Largest pointer offset magnitude arithmetic may produce.
const MAX_PTR_OFF: i64 = 1 << 31;

/// How a segment ended.
enum Seg {
    /// The program exited after `c` instructions.
    Exit(u64),
    /// After `c` instructions the path continues in these states.
    Next(u64, Vec<(usize, State)>),
}

/// A segment on the current exploration path whose successors are being explored.
struct Node {
    pc: usize,
    state: State,
    c: u64,
    depth_before: u64,
    children: Vec<(usize, State)>,
    next_child: usize,
    max_child: u64,
}

struct Explorer<'a> {
    code: &'a [u8],
    lay: Layout,
    max_bound: u64,
    max_processed: u64,
    max_time: Duration,
    start: Instant,
    processed: u64,
    visited: HashMap<usize, Vec<(State, u64)>>,
    active: HashMap<usize, Vec<usize>>,
    stack_usage: HashMap<usize, u16>,
    call_edges: Vec<(usize, usize)>,
    live: Vec<u16>,
}

/// Verifies `code` with explicit limits (tests use small ones).
pub fn verify_with_limits(
    code: &[u8],
    max_bound: u64,
    max_processed: u64,
    max_time: Duration,
) -> Result<Verified, VerifyError> {
    let lay = structural_check(code)?;
    let has_calls = lay.has_calls;
    let live = live_in(code, lay.n);
    let mut ex = Explorer {
        code,
        lay,
        max_bound,
        max_processed,
        max_time,
        start: Instant::now(),
        processed: 0,
        visited: HashMap::new(),
        active: HashMap::new(),
        stack_usage: HashMap::new(),
        call_edges: Vec::new(),
        live,
    };
    let mut f0 = Frame::new(0, 0);
    f0.regs[1] = Val::Ptr(Region::Ctx, Scalar::konst(0));
    let bound = ex.run(State { frames: vec![f0] })?;
    ex.check_stack_chains()?;
    let mut stack_usage: Vec<(usize, u16)> = ex
        .lay
        .funcs
        .iter()
        .map(|f| (*f, ex.stack_usage.get(f).copied().unwrap_or(0)))
        .collect();
    stack_usage.sort_unstable();
    Ok(Verified {
        insn_bound: bound,
        stack_usage,
        has_calls,
        processed: ex.processed,
    })
}

fn err(kind: super::VerifyErrorKind, pc: usize, msg: impl Into<String>) -> VerifyError {
    VerifyError::new(kind, pc, msg)
}

impl Explorer<'_> {
    /// Depth-first exploration; returns the worst-case path length from `init`.
    fn run(&mut self, init: State) -> Result<u64, VerifyError> {
        let mut path: Vec<Node> = Vec::new();
        match self.segment(0, init.clone(), 0)? {
            Seg::Exit(c) => return Ok(c),
            Seg::Next(c, children) => self.push(&mut path, 0, init, c, 0, children),
        }
        loop {
            let Some(top) = path.last_mut() else {
                unreachable!("the root is popped only at the end");
            };
            if top.next_child < top.children.len() {
                let idx = top.next_child;
                top.next_child += 1;
                let (pc, mut st) =
                    std::mem::replace(&mut top.children[idx], (0, State { frames: Vec::new() }));
                let depth = top.depth_before + top.c;
                self.forget_dead(pc, &mut st);
                if let Some(rem) = self.pruned(pc, &st) {
                    if depth + rem > self.max_bound {
                        return Err(self.bound_err(pc, depth + rem));
                    }
                    let top = path.last_mut().unwrap_or_else(|| unreachable!());
                    top.max_child = top.max_child.max(rem);
                    continue;
                }
                if let Some(ancestors) = self.active.get(&pc) {
                    // Only the nearest ancestors: enough to catch repeating loop states
                    // early; any longer cycle still ends at the path-length bound.
                    let near = ancestors.iter().rev().take(ANCESTORS_CHECKED);
                    if near.into_iter().any(|&k| st.within(&path[k].state)) {
                        return Err(err(
                            UnboundedLoop,
                            pc,
                            "loop state repeats: no bound on the number of iterations",
                        ));
                    }
                }
                match self.segment(pc, st.clone(), depth)? {
                    Seg::Exit(c) => {
                        self.record(pc, st, c);
                        let top = path.last_mut().unwrap_or_else(|| unreachable!());
                        top.max_child = top.max_child.max(c);
                    }
                    Seg::Next(c, children) => self.push(&mut path, pc, st, c, depth, children),
                }
            } else {
                let node = path.pop().unwrap_or_else(|| unreachable!());
                if let Some(v) = self.active.get_mut(&node.pc) {
                    v.pop();
                }
                let rem = node.c + node.max_child;
                self.record(node.pc, node.state, rem);
                match path.last_mut() {
                    Some(parent) => parent.max_child = parent.max_child.max(rem),
                    None => return Ok(rem),
                }
            }
        }
    }

    fn push(
        &mut self,
        path: &mut Vec<Node>,
        pc: usize,
        state: State,
        c: u64,
        depth: u64,
        children: Vec<(usize, State)>,
    ) {
        self.active.entry(pc).or_default().push(path.len());
        path.push(Node {
            pc,
            state,
            c,
            depth_before: depth,
            children,
            next_child: 0,
            max_child: 0,
        });
    }

    /// Sets registers dead at `pc` (innermost frame) or at the return address (outer
    /// frames) to `Uninit`: they are written before being read on every path.
    fn forget_dead(&self, pc: usize, st: &mut State) {
        let n = st.frames.len();
        for k in 0..n {
            let live = if k + 1 == n {
                self.live.get(pc).copied().unwrap_or(u16::MAX)
            } else {
                let ret = st.frames[k + 1].ret_pc;
                self.live.get(ret).copied().unwrap_or(u16::MAX) & !CALL_CLOBBER
            };
            for (r, v) in st.frames[k].regs.iter_mut().enumerate() {
                if live & (1 << r) == 0 {
                    *v = Val::Uninit;
                }
            }
        }
    }

    fn pruned(&self, pc: usize, st: &State) -> Option<u64> {
        self.visited
            .get(&pc)?
            .iter()
            .filter(|(s, _)| st.within(s))
            .map(|(_, r)| *r)
            .max()
    }

    fn record(&mut self, pc: usize, st: State, rem: u64) {
        let v = self.visited.entry(pc).or_default();
        if v.len() >= VISITED_PER_PC {
            v.remove(0);
        }
        v.push((st, rem));
    }

    fn bound_err(&self, pc: usize, len: u64) -> VerifyError {
        err(
            InsnBound,
            pc,
            format!(
                "a path runs at least {len} instructions, more than the bound {}",
                self.max_bound
            ),
        )
    }

    /// Runs straight-line code from `pc` until exit, a fork, or the next prune point.
    fn segment(&mut self, mut pc: usize, mut st: State, depth: u64) -> Result<Seg, VerifyError> {
        let mut c: u64 = 0;
        loop {
            if c > 0 && self.lay.prune.get(pc).copied().unwrap_or(false) {
                return Ok(Seg::Next(c, vec![(pc, st)]));
            }
            self.processed += 1;
            if self.processed > self.max_processed {
                return Err(err(
                    VerifierLimit,
                    pc,
                    format!("more than {} instructions processed", self.max_processed),
                ));
            }
            if self.processed.is_multiple_of(4096) && self.start.elapsed() > self.max_time {
                return Err(err(
                    VerifierLimit,
                    pc,
                    format!("verification took more than {:?}", self.max_time),
                ));
            }
            c += 1;
            if depth + c > self.max_bound {
                return Err(self.bound_err(pc, depth + c));
            }
            let ins = Insn::at(self.code, pc)
                .ok_or_else(|| err(BadInsn, pc, "execution falls off the end"))?;
            match ins.class() {
                class::ALU | class::ALU64 => {
                    self.alu(&mut st, pc, &ins)?;
                    pc += 1;
                }
                class::LD => {
                    let hi = Insn::at(self.code, pc + 1)
                        .ok_or_else(|| err(BadInsn, pc, "truncated lddw"))?;
                    let v = (ins.imm as u32 as u64) | ((hi.imm as u32 as u64) << 32);
                    st.cur().regs[ins.dst as usize] = Val::Scalar(Scalar::konst(v));
                    pc += 2;
                }
                class::LDX => {
                    let v = self.load(&mut st, pc, &ins)?;
                    st.cur().regs[ins.dst as usize] = v;
                    pc += 1;
                }
                class::ST | class::STX => {
                    self.store(&mut st, pc, &ins)?;
                    pc += 1;
                }
                _ => {
                    if ins.op == JA {
                        pc = (pc as i64 + 1 + ins.off as i64) as usize;
                    } else if ins.op == CALL {
                        pc = self.call(&mut st, pc, &ins)?;
                    } else if ins.op == EXIT {
                        match self.exit(&mut st, pc)? {
                            Some(ret) => pc = ret,
                            None => return Ok(Seg::Exit(c)),
                        }
                    } else {
                        let tgt = (pc as i64 + 1 + ins.off as i64) as usize;
                        let (taken, not) = self.branch(&st, pc, &ins)?;
                        match (taken, not) {
                            (Some(t), None) => {
                                st = t;
                                pc = tgt;
                            }
                            (None, Some(f)) => {
                                st = f;
                                pc += 1;
                            }
                            (Some(t), Some(f)) => {
                                return Ok(Seg::Next(c, vec![(pc + 1, f), (tgt, t)]))
                            }
                            (None, None) => return Ok(Seg::Next(c, Vec::new())),
                        }
                    }
                }
            }
        }
    }

    fn reg(&self, st: &State, pc: usize, r: u8) -> Result<Val, VerifyError> {
        if r == 10 {
            return Ok(Val::Ptr(Region::Stack(st.depth()), Scalar::konst(0)));
        }
        let f = st
            .frames
            .last()
            .ok_or_else(|| err(BadInsn, pc, "no frame"))?;
        match f.regs[r as usize] {
            Val::Uninit => Err(err(
                UninitRegister,
                pc,
                format!("r{r} is read before it is written"),
            )),
            v => Ok(v),
        }
    }

    fn alu(&self, st: &mut State, pc: usize, ins: &Insn) -> Result<(), VerifyError> {
        let is64 = ins.class() == class::ALU64;
        let op = ins.op & 0xf0;
        let x = ins.op & SRC_X != 0;
        let d = ins.dst as usize;
        if op == alu::END {
            let v = match self.reg(st, pc, ins.dst)? {
                Val::Scalar(a) if !x && ins.imm < 64 && a.umax >> ins.imm != 0 => {
                    return Err(err(
                        BadInsn,
                        pc,
                        format!(
                            "le{} of a value wider than {} bits (rbpf's JIT does not truncate: engines disagree)",
                            ins.imm, ins.imm
                        ),
                    ))
                }
                Val::Scalar(a) => Scalar::alu(alu::END, true, a, Scalar::konst(ins.imm as u64), x),
                _ => return Err(err(PointerArith, pc, "byte swap of a pointer")),
            };
            st.cur().regs[d] = Val::Scalar(v);
            return Ok(());
        }
        let src = if x {
            self.reg(st, pc, ins.src)?
        } else if is64 {
            Val::Scalar(Scalar::konst(ins.imm as i64 as u64))
        } else {
            Val::Scalar(Scalar::konst(ins.imm as u32 as u64))
        };
        if op == alu::MOV {
            let v = match (is64, src) {
                (true, v) => v,
                (false, Val::Scalar(s)) if x && s.umax > u32::MAX as u64 => {
                    // rbpf's x86 JIT compiles `wX = wY` as a 64-bit move (no truncation).
                    return Err(err(
                        BadInsn,
                        pc,
                        "32-bit register move of a value that may exceed 32 bits (rbpf's JIT does not zero-extend: engines disagree)",
                    ));
                }
                (false, Val::Scalar(s)) => Val::Scalar(s.low32()),
                _ => return Err(err(PointerArith, pc, "32-bit move of a pointer")),
            };
            st.cur().regs[d] = v;
            return Ok(());
        }
        let dst = self.reg(st, pc, ins.dst)?;
        let res = match (dst, src) {
            (Val::Scalar(a), Val::Scalar(b)) => {
                if !is64 && op == alu::MOD && b.low32().umin == 0 && a.umax > u32::MAX as u64 {
                    return Err(err(
                        BadInsn,
                        pc,
                        "32-bit modulo by a possibly-zero divisor of a 64-bit value (engines disagree)",
                    ));
                }
                Val::Scalar(Scalar::alu(op, is64, a, b, false))
            }
            (Val::Ptr(r, off), Val::Scalar(b)) if is64 && (op == alu::ADD || op == alu::SUB) => {
                Val::Ptr(r, self.ptr_off(pc, r, off, op, b)?)
            }
            (Val::Scalar(a), Val::Ptr(r, off)) if is64 && op == alu::ADD => {
                Val::Ptr(r, self.ptr_off(pc, r, off, op, a)?)
            }
            (Val::Ptr(r1, o1), Val::Ptr(r2, o2)) if is64 && op == alu::SUB && r1 == r2 => {
                Val::Scalar(Scalar::alu(alu::SUB, true, o1, o2, false))
            }
            _ => {
                return Err(err(
                    PointerArith,
                    pc,
                    format!("ALU op {:#04x} not allowed on a pointer", ins.op),
                ))
            }
        };
        st.cur().regs[d] = res;
        Ok(())
    }

    fn ptr_off(
        &self,
        pc: usize,
        r: Region,
        off: Scalar,
        op: u8,
        b: Scalar,
    ) -> Result<Scalar, VerifyError> {
        if matches!(r, Region::Ctx | Region::Stack(_)) && b.as_const().is_none() {
            return Err(err(
                PointerArith,
                pc,
                format!("variable offset added to a {r:?} pointer"),
            ));
        }
        let n = Scalar::alu(op, true, off, b, false);
        if n.smin < -MAX_PTR_OFF || n.smax > MAX_PTR_OFF {
            return Err(err(
                PointerArith,
                pc,
                format!(
                    "pointer plus a scalar of unbounded range ({}..={})",
                    b.smin, b.smax
                ),
            ));
        }
        Ok(n)
    }

    /// Checks `[off + ins.off, off + ins.off + size)` against `[lo, hi)`; returns the
    /// constant start offset when the range is a single point.
    #[allow(clippy::too_many_arguments)]
    fn bounds(
        &self,
        pc: usize,
        r: Region,
        off: Scalar,
        disp: i16,
        size: usize,
        lo: i64,
        hi: i64,
    ) -> Result<i64, VerifyError> {
        let start = off.smin + disp as i64;
        let end = off.smax + disp as i64 + size as i64;
        if start < lo || end > hi {
            return Err(err(
                OutOfBounds,
                pc,
                format!("{size}-byte access at {r:?}{start:+}..{end:+} outside {lo}..{hi}"),
            ));
        }
        Ok(start)
    }

    fn load(&mut self, st: &mut State, pc: usize, ins: &Insn) -> Result<Val, VerifyError> {
        let size = ins.mem_size();
        let (r, off) = match self.reg(st, pc, ins.src)? {
            Val::Ptr(r, off) => (r, off),
            _ => {
                return Err(err(
                    OutOfBounds,
                    pc,
                    format!("load through r{} which is not a pointer", ins.src),
                ))
            }
        };
        match r {
            Region::Block => {
                self.bounds(pc, r, off, ins.off, size, 0, BLOCK_SIZE as i64)?;
                Ok(Val::Scalar(Scalar::of_size(size)))
            }
            Region::Scratch => {
                self.bounds(pc, r, off, ins.off, size, 0, SCRATCH_SIZE as i64)?;
                Ok(Val::Scalar(Scalar::of_size(size)))
            }
            Region::Ctx => {
                let o = self.bounds(pc, r, off, ins.off, size, 0, CTX_SIZE as i64)? as usize;
                if size == 8 && o == OFF_DATA {
                    Ok(Val::Ptr(Region::Block, Scalar::konst(0)))
                } else if size == 8 && o == OFF_SCRATCH {
                    Ok(Val::Ptr(Region::Scratch, Scalar::konst(0)))
                } else if o < OFF_SCRATCH + 8 {
                    Err(err(PointerLeak, pc, "partial load of a ctx pointer field"))
                } else {
                    Ok(Val::Scalar(Scalar::of_size(size)))
                }
            }
            Region::Stack(f) => {
                let o = self.bounds(pc, r, off, ins.off, size, -(STACK_SIZE as i64), 0)?;
                self.note_stack(st, f, o);
                let base = (o + STACK_SIZE as i64) as usize;
                let frame = st
                    .frames
                    .get(f as usize)
                    .ok_or_else(|| err(PointerLeak, pc, "pointer to a returned stack frame"))?;
                if size == 8 && base.is_multiple_of(8) {
                    match frame.stack.get(base / 8) {
                        Slot::Spill(v) => return Ok(v),
                        Slot::Bytes(0xff) => return Ok(Val::Scalar(Scalar::TOP)),
                        Slot::Bytes(_) => {}
                    }
                }
                for b in base..base + size {
                    match frame.stack.get(b / 8) {
                        Slot::Spill(Val::Scalar(_)) => {}
                        Slot::Spill(_) => {
                            return Err(err(PointerLeak, pc, "partial load of a spilled pointer"))
                        }
                        Slot::Bytes(m) if m & (1 << (b % 8)) != 0 => {}
                        Slot::Bytes(_) => {
                            return Err(err(
                                UninitStack,
                                pc,
                                format!(
                                    "stack byte fp{} read before it is written",
                                    b as i64 - STACK_SIZE as i64
                                ),
                            ))
                        }
                    }
                }
                Ok(Val::Scalar(Scalar::of_size(size)))
            }
        }
    }

    fn note_stack(&mut self, st: &State, frame: u8, o: i64) {
        let Some(func) = st.frames.get(frame as usize).map(|f| f.func) else {
            return;
        };
        let used = ((-o + 7) / 8 * 8) as u16;
        let e = self.stack_usage.entry(func).or_insert(0);
        *e = (*e).max(used);
    }

    fn store(&mut self, st: &mut State, pc: usize, ins: &Insn) -> Result<(), VerifyError> {
        let size = ins.mem_size();
        let val = if ins.class() == class::ST {
            Val::Scalar(Scalar::konst(ins.imm as i64 as u64))
        } else {
            self.reg(st, pc, ins.src)?
        };
        let (r, off) = match self.reg(st, pc, ins.dst)? {
            Val::Ptr(r, off) => (r, off),
            _ => {
                return Err(err(
                    OutOfBounds,
                    pc,
                    format!("store through r{} which is not a pointer", ins.dst),
                ))
            }
        };
        let is_ptr = matches!(val, Val::Ptr(..));
        match r {
            Region::Block => Err(err(ReadOnly, pc, "store into the read-only block")),
            Region::Scratch => {
                self.bounds(pc, r, off, ins.off, size, 0, SCRATCH_SIZE as i64)?;
                if is_ptr {
                    return Err(err(PointerLeak, pc, "pointer stored into scratch"));
                }
                Ok(())
            }
            Region::Ctx => {
                let o = self.bounds(pc, r, off, ins.off, size, 0, CTX_SIZE as i64)? as usize;
                if !ctx_writable(o, size) {
                    return Err(err(
                        ReadOnly,
                        pc,
                        format!("store into read-only ctx bytes {o}..{}", o + size),
                    ));
                }
                if is_ptr {
                    return Err(err(PointerLeak, pc, "pointer stored into ctx"));
                }
                Ok(())
            }
            Region::Stack(f) => {
                let o = self.bounds(pc, r, off, ins.off, size, -(STACK_SIZE as i64), 0)?;
                self.note_stack(st, f, o);
                let base = (o + STACK_SIZE as i64) as usize;
                if let Val::Ptr(Region::Stack(g), _) = val {
                    if g > f {
                        return Err(err(
                            PointerLeak,
                            pc,
                            "pointer to a callee frame stored in a caller frame",
                        ));
                    }
                }
                let frame = st
                    .frames
                    .get_mut(f as usize)
                    .ok_or_else(|| err(PointerLeak, pc, "pointer to a returned stack frame"))?;
                if size == 8 && base.is_multiple_of(8) {
                    frame.stack.set(base / 8, Slot::Spill(val));
                    return Ok(());
                }
                if is_ptr {
                    return Err(err(PointerLeak, pc, "partial store of a pointer"));
                }
                for b in base..base + size {
                    let mask = match frame.stack.get(b / 8) {
                        Slot::Spill(Val::Scalar(_)) => 0xff,
                        Slot::Spill(_) => 0,
                        Slot::Bytes(m) => m,
                    };
                    frame.stack.set(b / 8, Slot::Bytes(mask | (1 << (b % 8))));
                }
                debug_assert!(base + size <= SLOTS * 8);
                Ok(())
            }
        }
    }

    fn call(&mut self, st: &mut State, pc: usize, ins: &Insn) -> Result<usize, VerifyError> {
        let tgt = (pc as i64 + 1 + ins.imm as i64) as usize;
        if st.frames.iter().any(|f| f.func == tgt) {
            return Err(err(
                Recursion,
                pc,
                format!("recursive call to the function at {tgt}"),
            ));
        }
        if st.frames.len() >= MAX_FRAMES {
            return Err(err(
                VerifierLimit,
                pc,
                format!("call chain deeper than {MAX_FRAMES} frames"),
            ));
        }
        let caller = st.frames.last().map(|f| f.func).unwrap_or(0);
        if !self.call_edges.contains(&(caller, tgt)) {
            self.call_edges.push((caller, tgt));
        }
        let mut nf = Frame::new(tgt, pc + 1);
        nf.regs[1..6].copy_from_slice(&st.cur().regs[1..6]);
        st.frames.push(nf);
        Ok(tgt)
    }

    /// Handles `exit`: `None` when the program ends, else the return address.
    fn exit(&mut self, st: &mut State, pc: usize) -> Result<Option<usize>, VerifyError> {
        let r0 = self.reg(st, pc, 0)?;
        if st.frames.len() == 1 {
            return match r0 {
                Val::Scalar(_) => Ok(None),
                _ => Err(err(PointerLeak, pc, "pointer returned in r0")),
            };
        }
        if let Val::Ptr(Region::Stack(g), _) = r0 {
            if g >= st.depth() {
                return Err(err(
                    PointerLeak,
                    pc,
                    "function returns a pointer to its own stack",
                ));
            }
        }
        let done = st
            .frames
            .pop()
            .ok_or_else(|| err(BadInsn, pc, "no frame"))?;
        let caller = st.cur();
        caller.regs[0] = r0;
        for r in 1..6 {
            caller.regs[r] = Val::Uninit;
        }
        Ok(Some(done.ret_pc))
    }

    fn branch(
        &self,
        st: &State,
        pc: usize,
        ins: &Insn,
    ) -> Result<(Option<State>, Option<State>), VerifyError> {
        let is64 = ins.class() == class::JMP;
        let op = ins.op & 0xf0;
        let x = ins.op & SRC_X != 0;
        let a = self.reg(st, pc, ins.dst)?;
        let unsigned_cmp = matches!(
            op,
            jmp::JEQ | jmp::JNE | jmp::JGT | jmp::JGE | jmp::JLT | jmp::JLE
        );
        if is64 && !x && ins.imm < 0 && unsigned_cmp {
            // rbpf's interpreter zero-extends this immediate; the kernel, rbpf's JIT and
            // our interpreter sign-extend. Accept only when both readings agree.
            let (c1, c2) = (ins.imm as u32 as u64, ins.imm as i64 as u64);
            let agree = matches!(a, Val::Scalar(s) if s.umax < c1 || s.umin > c2);
            if !agree {
                return Err(err(
                    BadInsn,
                    pc,
                    "64-bit unsigned compare with a negative immediate (rbpf's interpreter zero-extends it: engines disagree)",
                ));
            }
        }
        let b = if x {
            self.reg(st, pc, ins.src)?
        } else if is64 {
            Val::Scalar(Scalar::konst(ins.imm as i64 as u64))
        } else {
            Val::Scalar(Scalar::konst(ins.imm as u32 as u64))
        };
        let apply = |edge: Option<(Scalar, Scalar)>,
                     wrap_a: &dyn Fn(Scalar) -> Val,
                     wrap_b: &dyn Fn(Scalar) -> Val| {
            edge.map(|(na, nb)| {
                let mut s = st.clone();
                if x && ins.src != 10 {
                    s.cur().regs[ins.src as usize] = wrap_b(nb);
                }
                s.cur().regs[ins.dst as usize] = wrap_a(na);
                s
            })
        };
        match (a, b) {
            (Val::Scalar(sa), Val::Scalar(sb)) => {
                let (t, f) = if is64 {
                    branch64(op, sa, sb)
                } else {
                    branch32(op, sa, sb)
                };
                Ok((
                    apply(t, &Val::Scalar, &Val::Scalar),
                    apply(f, &Val::Scalar, &Val::Scalar),
                ))
            }
            (Val::Ptr(r1, o1), Val::Ptr(r2, o2)) => {
                if r1 != r2 || !is64 || op == jmp::JSET {
                    return Err(err(
                        PointerLeak,
                        pc,
                        "comparison of pointers into different regions",
                    ));
                }
                let sop = match op {
                    jmp::JGT => jmp::JSGT,
                    jmp::JGE => jmp::JSGE,
                    jmp::JLT => jmp::JSLT,
                    jmp::JLE => jmp::JSLE,
                    o => o,
                };
                let (t, f) = branch64(sop, o1, o2);
                let wa = move |s| Val::Ptr(r1, s);
                let wb = move |s| Val::Ptr(r2, s);
                if ins.dst == 10 || ins.src == 10 {
                    // r10 itself is not refined.
                    let keep = |e: Option<(Scalar, Scalar)>| e.map(|_| st.clone());
                    return Ok((keep(t), keep(f)));
                }
                Ok((apply(t, &wa, &wb), apply(f, &wa, &wb)))
            }
            (Val::Ptr(..), Val::Scalar(s)) | (Val::Scalar(s), Val::Ptr(..))
                if is64 && s.as_const() == Some(0) && (op == jmp::JEQ || op == jmp::JNE) =>
            {
                // Pointers are never null: decided without revealing anything.
                if op == jmp::JEQ {
                    Ok((None, Some(st.clone())))
                } else {
                    Ok((Some(st.clone()), None))
                }
            }
            _ => Err(err(
                PointerLeak,
                pc,
                "comparison of a pointer with a scalar",
            )),
        }
    }

    /// The stack of a whole call chain must fit in [`STACK_SIZE`] bytes.
    fn check_stack_chains(&self) -> Result<(), VerifyError> {
        fn worst(f: usize, ex: &Explorer<'_>, depth: usize) -> u64 {
            let own = ex.stack_usage.get(&f).copied().unwrap_or(0) as u64;
            if depth > MAX_FRAMES {
                return own;
            }
            let callee = ex
                .call_edges
                .iter()
                .filter(|(c, _)| *c == f)
                .map(|(_, t)| worst(*t, ex, depth + 1))
                .max()
                .unwrap_or(0);
            own + callee
        }
        let total = worst(0, self, 1);
        if total > STACK_SIZE as u64 {
            return Err(err(
                OutOfBounds,
                0,
                format!("call chain uses {total} stack bytes, more than {STACK_SIZE}"),
            ));
        }
        Ok(())
    }
}
