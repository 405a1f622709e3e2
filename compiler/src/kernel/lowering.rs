//! Lowering decisions as data: how a backend writes each loop, matrix
//! product and kernel out.
//!
//! None of them changes a result (the kernel interpreter ignores them);
//! they choose the instructions. `passes::lowering` makes them after memory
//! planning (an overlapping tail depends on which buffers share memory),
//! the verifier checks each one is legal, and a code generator emits what
//! they say without deciding anything itself. This module also holds the
//! facts about a loop body that both the pass and the checks need.

use super::{AccId, BufId, Idx, Kernel, Node, Program, RedOp, Stmt, Val, VarId};
use std::collections::HashSet;

/// A written-out loop has at most this many iterations (a vector loop: this
/// many vectors). A ceiling on code size that the verifier enforces, above
/// what `passes::lowering` chooses today.
pub const MAX_WRITTEN_OUT: usize = 16;

/// How a loop's iterations (a vector loop's full vectors) are emitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unroll {
    /// As a loop.
    #[default]
    Rolled,
    /// Every iteration inline, without a loop: each index becomes a
    /// constant offset from the enclosing induction variables, where a loop
    /// would carry one induction variable per index. Serial and vector
    /// loops of at most [`MAX_WRITTEN_OUT`] iterations.
    WrittenOut,
}

/// How a vector loop's last `extent % lanes` iterations run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VectorTail {
    /// There are none: a vector loop whose extent is a multiple of 4, and
    /// every loop that is not vectorised.
    #[default]
    None,
    /// One more vector iteration that ends at the last element and overlaps
    /// the one before, its repeated lanes leaving outer reductions alone.
    /// Legal only where repeating a lane changes nothing
    /// ([`overlap_tail_ok`]) and the extent holds a whole vector.
    Overlap,
    /// A scalar loop.
    Scalar,
    /// The scalar iterations written out.
    ScalarWrittenOut,
}

/// How the code generator lowers one [`super::Loop`]. The defaults are the
/// plain form (rolled, no copies, no kept partials); before
/// `passes::lowering` has run a vector loop's tail is not decided yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopLowering {
    /// Serial loops: the whole loop; vector loops: the full vectors.
    pub unroll: Unroll,
    /// Vector loops only: the iterations after the last full vector.
    pub tail: VectorTail,
    /// Rolled vector loops: copies of the body per iteration, for
    /// consecutive vectors, copy `c` adding into partial vector `c` of each
    /// outer reduction so the adds of one iteration do not wait on each
    /// other; the full vectors left over (fewer than `copies`) are written
    /// out. 1 everywhere else.
    pub copies: usize,
    /// Independent partial vectors kept per accumulator whose lane partials
    /// start at this loop (a vector loop's outer reductions not kept by an
    /// enclosing loop, or `keep_partials`); combined pairwise, then lane by
    /// lane, when they end. 0 where none start.
    pub chains: usize,
    /// Rolled serial and parallel loops: accumulators reduced only inside
    /// the vector loops of this body (declared outside it, never read or
    /// set in it) whose lane partials are kept across this whole loop and
    /// combined once at its end, instead of on every exit of the vector
    /// loop: a per-channel sum over a batch (a bias gradient) then runs at
    /// the speed of its loads. In the order the partials are started.
    pub keep_partials: Vec<AccId>,
}

impl Default for LoopLowering {
    fn default() -> LoopLowering {
        LoopLowering { unroll: Unroll::Rolled, tail: VectorTail::None, copies: 1, chains: 0, keep_partials: Vec::new() }
    }
}

/// Whether the backend may reorder a kernel's instructions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Emission {
    /// The backend's optimiser runs: value numbering merges the repeated
    /// index and load arithmetic of elementwise bodies.
    #[default]
    Optimised,
    /// Instructions keep the order they are emitted in (Cranelift's
    /// `opt_level=none`): a register tile's emitted order is its schedule,
    /// loads next to the products that use them, where the optimiser
    /// re-elaborates pure loads and products accumulator by accumulator
    /// and stretches live ranges into spills.
    AsScheduled,
}

/// How a dot tile ([`super::GemmTile::Dot`]) walks its `k / lanes` vector steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotSteps {
    /// A loop taking this many vector steps per iteration (fewer pointer
    /// updates per product). Unsplit tiles: a divisor of the step count, so
    /// there is no remainder loop; split tiles: 1 per segment.
    Rolled(usize),
    /// Every vector step written out with no pointer updates: each segment
    /// of a split tile, or all steps of a wrapped one
    /// ([`super::KSplit::wraps`], which is always written out). At most
    /// [`super::MAX_WRAPPED_STEPS`] steps.
    WrittenOut,
}

impl Default for DotSteps {
    fn default() -> DotSteps {
        DotSteps::Rolled(1)
    }
}

/// Written buffers of `kernel` that share arena memory with another buffer
/// it reads (an in-place update aliases its input). Needs memory planning.
pub(crate) fn aliased_writes(program: &Program, kernel: &Kernel) -> HashSet<BufId> {
    let span = |buf: BufId| {
        let copies = if program.buffers[buf].per_thread { program.threads.max(1) } else { 1 };
        (program.offsets[buf], program.offsets[buf] + program.buffers[buf].len * copies)
    };
    kernel
        .writes
        .iter()
        .copied()
        .filter(|&w| {
            let (ws, we) = span(w);
            kernel.reads.iter().any(|&r| r != w && span(r).0 < we && ws < span(r).1)
        })
        .collect()
}

/// Whether a vector loop's scalar tail may instead be one more vector
/// iteration that ends at the last element and overlaps the one before.
/// Repeating a lane must change nothing: every store writes a buffer the
/// loop does not read (the same value again), and outer reductions skip the
/// repeated lanes. Accumulating stores keep the scalar tail: reading back a
/// vector that half overlaps the one just stored defeats store-to-load
/// forwarding (measured 2x slower on the col2im of a convolution's input
/// gradient).
/// Every index must be affine in the loop variable: lane patterns derived
/// from divisibility assume iterations start at multiples of 4. `aliased`
/// are written buffers that share memory with a read one.
pub(crate) fn overlap_tail_ok(body: &[Stmt], v: VarId, aliased: &HashSet<BufId>) -> bool {
    let mut loaded = HashSet::new();
    let mut ok = true;
    let check_idx = |i: &Idx, ok: &mut bool| {
        if i.uses(v) && i.coefficient(v).is_none() {
            *ok = false;
        }
    };
    fn walk(body: &[Stmt], f: &mut dyn FnMut(&Stmt)) {
        for s in body {
            f(s);
            match s {
                Stmt::Loop(l) => walk(&l.body, f),
                Stmt::If { then, otherwise, .. } => {
                    walk(then, f);
                    walk(otherwise, f);
                }
                _ => {}
            }
        }
    }
    let mut stores: Vec<(BufId, bool)> = Vec::new();
    walk(body, &mut |s| {
        let visit_val = |x: &Val, ok: &mut bool, loaded: &mut HashSet<BufId>| {
            x.visit(&mut |n| match n {
                Node::Val(Val::Load(b, i)) => {
                    loaded.insert(*b);
                    check_idx(i, ok);
                }
                Node::Idx(i) => check_idx(i, ok),
                _ => {}
            })
        };
        match s {
            Stmt::Store { buf, idx, val, accumulate } => {
                check_idx(idx, &mut ok);
                visit_val(val, &mut ok, &mut loaded);
                stores.push((*buf, *accumulate));
            }
            Stmt::Let { init: x, .. } | Stmt::Set { val: x, .. } | Stmt::Reduce { val: x, .. } => {
                visit_val(x, &mut ok, &mut loaded)
            }
            Stmt::If { cond, .. } => cond.visit(&mut |n| match n {
                Node::Val(Val::Load(b, i)) => {
                    loaded.insert(*b);
                    check_idx(i, &mut ok);
                }
                Node::Idx(i) => check_idx(i, &mut ok),
                _ => {}
            }),
            Stmt::Loop(_) | Stmt::Gemm(_) => ok = false,
        }
    });
    ok && stores.iter().all(|&(b, acc)| !acc && !loaded.contains(&b) && !aliased.contains(&b))
}

/// Accumulators reduced inside the vector loops of `body` (`in_vector`:
/// `body` is itself inside one) and not declared in `body`, in order of
/// first reduction.
pub(crate) fn vector_reductions(body: &[Stmt], in_vector: bool) -> Vec<(AccId, RedOp)> {
    let mut declared = HashSet::new();
    let mut found = Vec::new();
    fn walk(body: &[Stmt], in_vector: bool, declared: &mut HashSet<AccId>, found: &mut Vec<(AccId, RedOp)>) {
        for s in body {
            match s {
                Stmt::Let { acc, .. } => {
                    declared.insert(*acc);
                }
                Stmt::Reduce { acc, op, .. } if in_vector && !found.iter().any(|(a, _)| a == acc) => {
                    found.push((*acc, *op));
                }
                Stmt::Loop(l) => walk(&l.body, in_vector || l.mode == super::LoopMode::Vector, declared, found),
                Stmt::If { then, otherwise, .. } => {
                    walk(then, in_vector, declared, found);
                    walk(otherwise, in_vector, declared, found);
                }
                _ => {}
            }
        }
    }
    walk(body, in_vector, &mut declared, &mut found);
    found.retain(|(a, _)| !declared.contains(a));
    found
}

/// Whether `body` reads accumulator `acc` (as a value) or sets it.
pub(crate) fn reads_or_sets(body: &[Stmt], acc: AccId) -> bool {
    // Whether an expression walked by `visit` mentions the accumulator.
    type Walk<'a> = &'a dyn Fn(&mut dyn FnMut(Node<'_>));
    let mentions = |visit: Walk<'_>| {
        let mut hit = false;
        visit(&mut |n| {
            if let Node::Val(Val::Acc(a)) = n {
                hit |= *a == acc;
            }
        });
        hit
    };
    let reads = |v: &Val| mentions(&|f| v.visit(f));
    let cond_reads = |c: &super::Cond| mentions(&|f| c.visit(f));
    body.iter().any(|s| match s {
        Stmt::Loop(l) => reads_or_sets(&l.body, acc),
        Stmt::Store { val, .. } => reads(val),
        Stmt::Let { init, .. } => reads(init),
        Stmt::Reduce { val, .. } => reads(val),
        Stmt::Set { acc: a, val } => *a == acc || reads(val),
        Stmt::If { cond, then, otherwise } => {
            cond_reads(cond) || reads_or_sets(then, acc) || reads_or_sets(otherwise, acc)
        }
        Stmt::Gemm(_) => false,
    })
}

/// Accumulators reduced in `body` but declared outside it, in order of
/// first reduction.
pub(crate) fn outer_reductions(body: &[Stmt]) -> Vec<(AccId, RedOp)> {
    fn walk(body: &[Stmt], declared: &mut HashSet<AccId>, out: &mut Vec<(AccId, RedOp)>) {
        for s in body {
            match s {
                Stmt::Let { acc, .. } => {
                    declared.insert(*acc);
                }
                Stmt::Reduce { acc, op, .. } if !declared.contains(acc) && !out.iter().any(|(a, _)| a == acc) => {
                    out.push((*acc, *op));
                }
                Stmt::Loop(l) => walk(&l.body, declared, out),
                Stmt::If { then, otherwise, .. } => {
                    walk(then, declared, out);
                    walk(otherwise, declared, out);
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(body, &mut HashSet::new(), &mut out);
    out
}
