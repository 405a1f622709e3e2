//! Lowering decisions: how each loop, dot tile and kernel is written out
//! (see `kernel::lowering`), chosen after memory planning because an
//! overlapping vector tail depends on which buffers share memory.
//!
//! The thresholds below were measured on x86-64 with Cranelift; they should
//! come from the target description once there is one.

use crate::kernel::lowering::{aliased_writes, outer_reductions, overlap_tail_ok, reads_or_sets, vector_reductions};
use crate::kernel::{
    AccId, DotSteps, Emission, Gemm, GemmTile, Kernel, Loop, LoopMode, Program, Stmt, Unroll, VectorTail,
};
use std::collections::{HashMap, HashSet};

/// Serial loops up to this extent are written out when their copies stay
/// small (see [`fits_written_out`]).
const MAX_WRITTEN_OUT_EXTENT: usize = 16;

/// Vector loops up to this extent (in elements) have their full vectors
/// written out when their copies stay small.
const MAX_WRITTEN_OUT_VECTOR_EXTENT: usize = 32;

/// Statements a written-out loop may expand to, all copies together.
const MAX_WRITTEN_OUT_STATEMENTS: usize = 48;

/// Independent partial vectors per outer reduction of a vector loop (the
/// FADD latency is 3 cycles; 4 chains keep adds issuing every cycle).
const REDUCTION_CHAINS: usize = 4;

/// Vector steps per iteration of an unsplit dot tile's loop, at most.
const MAX_DOT_STEPS_PER_ITERATION: usize = 5;

/// Segments of a split dot tile with at most this many vector steps are
/// written out instead of looped (kernels holding a product keep their
/// emitted order, so the operands of one step stay next to its products).
const MAX_WRITTEN_OUT_DOT_STEPS: usize = 8;

/// Records every lowering decision of `program`.
pub fn choose_lowering(mut program: Program) -> Program {
    let lanes = program.target.vector_lanes;
    let aliased: Vec<HashSet<usize>> = program.kernels.iter().map(|k| aliased_writes(&program, k)).collect();
    for (kernel, aliased) in program.kernels.iter_mut().zip(&aliased) {
        kernel.emission = emission(kernel);
        let mut walk = Walk { lanes, aliased, declared: HashMap::new(), kept: HashSet::new() };
        walk.stmts(&mut kernel.body, false);
    }
    program
}

/// Kernels holding a register-tiled product keep their emitted order (the
/// tile's schedule); everything else gets the optimiser, kernels whose
/// products are all calls to the micro-kernels included (their tiles are
/// compiled by rustc; left in order, the epilogue pass over C recomputed
/// each element's address and reloaded its bias: LeNet's conv1 epilogue
/// took a fifth of the kernel).
fn emission(kernel: &Kernel) -> Emission {
    fn any_gemm(body: &[Stmt]) -> bool {
        body.iter().any(|s| match s {
            Stmt::Gemm(g) => !matches!(g.tile, GemmTile::Micro { .. }),
            Stmt::Loop(l) => any_gemm(&l.body),
            Stmt::If { then, otherwise, .. } => any_gemm(then) || any_gemm(otherwise),
            _ => false,
        })
    }
    if any_gemm(&kernel.body) { Emission::AsScheduled } else { Emission::Optimised }
}

/// The state the decisions depend on, walked in the order the code
/// generator emits statements.
struct Walk<'a> {
    /// Lanes of the target's vectors.
    lanes: usize,
    /// Written buffers that share memory with a read one.
    aliased: &'a HashSet<usize>,
    /// Accumulators declared so far, and whether inside a vector loop.
    declared: HashMap<AccId, bool>,
    /// Accumulators whose lane partials an enclosing loop keeps.
    kept: HashSet<AccId>,
}

impl Walk<'_> {
    fn stmts(&mut self, body: &mut [Stmt], vec: bool) {
        for s in body {
            match s {
                Stmt::Let { acc, .. } => {
                    self.declared.insert(*acc, vec);
                }
                Stmt::Loop(l) => self.lower_loop(l, vec),
                Stmt::If { then, otherwise, .. } => {
                    self.stmts(then, vec);
                    self.stmts(otherwise, vec);
                }
                Stmt::Gemm(g) => choose_dot_steps(g, self.lanes),
                Stmt::Store { .. } | Stmt::Reduce { .. } | Stmt::Set { .. } => {}
            }
        }
    }

    /// Keeps lane partials across `l` for the accumulators its body only
    /// adds into from its vector loops (declared outside it, as scalars,
    /// never read or set inside it, not kept further out already).
    fn keep_partials(&mut self, l: &mut Loop) {
        let keep: Vec<AccId> = vector_reductions(&l.body, false)
            .into_iter()
            .map(|(acc, _)| acc)
            .filter(|&acc| {
                !reads_or_sets(&l.body, acc) && self.declared.get(&acc) == Some(&false) && !self.kept.contains(&acc)
            })
            .collect();
        l.lowering.chains = if keep.is_empty() { 0 } else { REDUCTION_CHAINS };
        self.kept.extend(keep.iter().copied());
        l.lowering.keep_partials = keep;
    }

    fn lower_loop(&mut self, l: &mut Loop, vec: bool) {
        match l.mode {
            LoopMode::Serial
                if l.extent <= MAX_WRITTEN_OUT_EXTENT && fits_written_out(&l.body, l.extent, self.lanes) =>
            {
                l.lowering.unroll = Unroll::WrittenOut;
                self.stmts(&mut l.body, vec);
            }
            LoopMode::Serial | LoopMode::Parallel => {
                self.keep_partials(l);
                self.stmts(&mut l.body, vec);
                for acc in &l.lowering.keep_partials {
                    self.kept.remove(acc);
                }
            }
            LoopMode::Vector => self.lower_vector_loop(l, vec),
        }
    }

    fn lower_vector_loop(&mut self, l: &mut Loop, vec: bool) {
        let lanes = self.lanes;
        let main = l.extent / lanes * lanes;
        let overlap = main > 0 && main < l.extent && overlap_tail_ok(&l.body, l.var, self.aliased);
        if main > 0 {
            let outer = outer_reductions(&l.body);
            // The lane partials of outer reductions not kept further out
            // start here.
            let started: Vec<AccId> = outer
                .iter()
                .map(|&(acc, _)| acc)
                .filter(|acc| self.declared.contains_key(acc) && !self.kept.contains(acc))
                .collect();
            let reduces = outer.iter().any(|(acc, _)| self.kept.contains(acc) || started.contains(acc));
            l.lowering.chains = if started.is_empty() { 0 } else { REDUCTION_CHAINS };
            if main <= MAX_WRITTEN_OUT_VECTOR_EXTENT && fits_written_out(&l.body, main / lanes, lanes) {
                l.lowering.unroll = Unroll::WrittenOut;
            } else if reduces && main / lanes >= 2 * REDUCTION_CHAINS {
                // One vector per chain each iteration: the adds into a
                // partial no longer wait on each other.
                l.lowering.copies = REDUCTION_CHAINS;
            }
            self.kept.extend(started.iter().copied());
            self.stmts(&mut l.body, true);
            for acc in &started {
                self.kept.remove(acc);
            }
        }
        l.lowering.tail = if main == l.extent {
            VectorTail::None
        } else if overlap {
            VectorTail::Overlap
        } else if fits_written_out(&l.body, l.extent - main, lanes) {
            VectorTail::ScalarWrittenOut
        } else {
            VectorTail::Scalar
        };
        if main < l.extent && !overlap {
            self.stmts(&mut l.body, vec);
        }
    }
}

/// How a dot tile walks its vector steps: an unsplit tile takes the largest
/// divisor of its step count up to [`MAX_DOT_STEPS_PER_ITERATION`] per
/// iteration (fewer pointer updates, no remainder loop); a split tile
/// writes short segments out, and a wrapped one every step.
fn choose_dot_steps(g: &mut Gemm, lanes: usize) {
    let GemmTile::Dot { steps, .. } = &mut g.tile else { return };
    *steps = match g.k_split {
        None => {
            let count = g.k / lanes;
            let per = (1..=MAX_DOT_STEPS_PER_ITERATION).rev().find(|u| count.is_multiple_of(*u)).unwrap_or(1);
            DotSteps::Rolled(if count == 0 { 1 } else { per })
        }
        Some(split) if split.wraps(g.k, lanes) => DotSteps::WrittenOut,
        Some(split) if g.k / split.outer / lanes <= MAX_WRITTEN_OUT_DOT_STEPS => DotSteps::WrittenOut,
        Some(_) => DotSteps::Rolled(1),
    };
}

/// Statements a loop body expands to when it and its short serial loops
/// are written out; `None` when it holds a loop that is not.
fn written_out_size(body: &[Stmt], lanes: usize) -> Option<usize> {
    body.iter().try_fold(0, |n, s| {
        Some(
            n + match s {
                Stmt::Loop(l) if l.mode == LoopMode::Serial && l.extent <= MAX_WRITTEN_OUT_EXTENT => {
                    l.extent * written_out_size(&l.body, lanes)?
                }
                // A short vector loop is written out too: its full vectors
                // and one (overlapping or scalar) tail.
                Stmt::Loop(l) if l.mode == LoopMode::Vector && l.extent <= MAX_WRITTEN_OUT_VECTOR_EXTENT => {
                    l.extent.div_ceil(lanes) * written_out_size(&l.body, lanes)?
                }
                Stmt::Loop(_) | Stmt::Gemm(_) => return None,
                Stmt::If { then, otherwise, .. } => {
                    1 + written_out_size(then, lanes)? + written_out_size(otherwise, lanes)?
                }
                _ => 1,
            },
        )
    })
}

/// Whether `copies` inline copies of `body` (and of its short inner loops)
/// stay small: straight-line code lets every index be a constant offset
/// from one induction variable, where a loop would keep one per index.
fn fits_written_out(body: &[Stmt], copies: usize, lanes: usize) -> bool {
    written_out_size(body, lanes).is_some_and(|n| n * copies <= MAX_WRITTEN_OUT_STATEMENTS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Buffer, BufferKind, Idx, LoopLowering, RedOp, Val};

    /// One kernel over buffers `x` (0) and `y` (1) of 64 elements, `y`
    /// placed at `y_offset` (0: sharing `x`'s memory, an in-place update).
    fn lowered(body: Vec<Stmt>, y_offset: usize) -> Program {
        let buffer = |name: &str| Buffer { name: name.into(), len: 64, kind: BufferKind::Scratch, per_thread: false };
        let kernel = Kernel {
            name: "k".into(),
            nodes: vec![],
            body,
            reads: vec![0],
            writes: vec![1],
            in_place: vec![(0, 1)],
            flops: 0,
            threads: 1,
            emission: Emission::Optimised,
        };
        let program = Program {
            target: crate::target::Target::baseline(),
            buffers: vec![buffer("x"), buffer("y")],
            kernels: vec![kernel],
            values: vec![],
            updates: vec![],
            offsets: vec![0, y_offset],
            arena_len: 256,
            threads: 1,
        };
        choose_lowering(program)
    }

    fn loop_at(program: &Program, path: &[usize]) -> LoopLowering {
        let mut body = &program.kernels[0].body;
        let mut found = None;
        for &i in path {
            let Stmt::Loop(l) = &body[i] else { panic!("no loop at {path:?}") };
            found = Some(l.lowering.clone());
            body = &l.body;
        }
        found.expect("a path")
    }

    #[test]
    fn a_vector_tail_overlaps_unless_memory_is_shared() {
        let copy = |extent| {
            vec![Stmt::lp(0, extent, LoopMode::Vector, vec![Stmt::store(1, Idx::var(0), Val::load(0, Idx::var(0)))])]
        };
        assert_eq!(loop_at(&lowered(copy(42), 64), &[0]).tail, VectorTail::Overlap);
        // In place: repeating a lane would read what it just wrote.
        assert_eq!(loop_at(&lowered(copy(42), 0), &[0]).tail, VectorTail::ScalarWrittenOut);
        assert_eq!(loop_at(&lowered(copy(40), 64), &[0]).tail, VectorTail::None);
        // Short loops are written out, long ones rolled.
        assert_eq!(loop_at(&lowered(copy(12), 64), &[0]).unroll, Unroll::WrittenOut);
        assert_eq!(loop_at(&lowered(copy(40), 64), &[0]).unroll, Unroll::Rolled);
    }

    #[test]
    fn long_reductions_get_chains_and_outer_loops_keep_their_partials() {
        let sum = |extent| {
            vec![
                Stmt::Let { acc: 0, init: Val::Const(0.0) },
                Stmt::lp(
                    0,
                    4,
                    LoopMode::Serial,
                    vec![Stmt::lp(
                        1,
                        extent,
                        LoopMode::Vector,
                        vec![Stmt::Reduce { acc: 0, op: RedOp::Add, val: Val::load(0, Idx::var(1)) }],
                    )],
                ),
                Stmt::store(1, Idx::Const(0), Val::Acc(0)),
            ]
        };
        let program = lowered(sum(64), 64);
        let outer = loop_at(&program, &[1]);
        assert_eq!((outer.keep_partials, outer.chains), (vec![0], REDUCTION_CHAINS));
        let inner = loop_at(&program, &[1, 0]);
        // The outer loop started the partials; the vector loop adds into
        // them four vectors per iteration.
        assert_eq!((inner.copies, inner.chains, inner.unroll), (REDUCTION_CHAINS, 0, Unroll::Rolled));
        // 16 elements: four vectors, written out.
        let short = loop_at(&lowered(sum(16), 64), &[1, 0]);
        assert_eq!((short.copies, short.unroll), (1, Unroll::WrittenOut));
    }
}
