//! Checks of the lowering decisions (`kernel::lowering`): each one must be
//! one the code generator can emit without changing a result. Decisions
//! that have defaults before `passes::lowering` runs (a vector loop's tail,
//! its reduction chains, a wrapped dot tile's steps) are only required
//! after that pass.

use super::{AfterPass, Problem, Sink};
use crate::kernel::lowering::{aliased_writes, outer_reductions, overlap_tail_ok, reads_or_sets, vector_reductions};
use crate::kernel::{
    AccId, DotSteps, Gemm, GemmTile, Kernel, Loop, LoopMode, MAX_WRAPPED_STEPS, MAX_WRITTEN_OUT, Stmt, Unroll, VarId,
    VectorTail,
};
use std::collections::HashSet;

/// A lowering decision the code generator cannot carry out as recorded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LoweringRule {
    /// Only serial and vector loops have iterations to write out.
    #[error("{mode:?} loop v{var} is written out; expected a serial or vector loop")]
    WrittenOutMode {
        /// The loop variable.
        var: VarId,
        /// Its mode.
        mode: LoopMode,
    },
    /// Written-out code grows with the iterations.
    #[error("loop v{var} is written out with {iterations} iterations; expected at most {MAX_WRITTEN_OUT}")]
    TooLongToWriteOut {
        /// The loop variable.
        var: VarId,
        /// Iterations (vectors, for a vector loop) written out.
        iterations: usize,
    },
    /// The tail does not match the loop's extent (or the loop is not a
    /// vector loop).
    #[error("{mode:?} loop v{var} of extent {extent} has tail {tail:?}; expected {expected}")]
    WrongTail {
        /// The loop variable.
        var: VarId,
        /// Its mode.
        mode: LoopMode,
        /// Its extent.
        extent: usize,
        /// The recorded tail.
        tail: VectorTail,
        /// What the extent allows.
        expected: &'static str,
    },
    /// Repeating a lane of this body would change a result.
    #[error(
        "vector loop v{var} has an overlapping tail, but repeating a lane may change a result (an accumulating, re-read or aliased store, a loop or product inside, or an index not affine in v{var})"
    )]
    OverlapChangesResult {
        /// The loop variable.
        var: VarId,
    },
    /// Whether an overlapping tail is legal depends on the arena layout.
    #[error(
        "vector loop v{var} has an overlapping tail before memory planning; expected one only once buffers have offsets"
    )]
    OverlapUnplanned {
        /// The loop variable.
        var: VarId,
    },
    /// Body copies per iteration only exist in rolled vector loops.
    #[error(
        "{mode:?} loop v{var} has {copies} body copies per iteration; expected 1, or more only in a rolled vector loop"
    )]
    BadCopies {
        /// The loop variable.
        var: VarId,
        /// Its mode.
        mode: LoopMode,
        /// The recorded copies.
        copies: usize,
    },
    /// A kept partial that the loop cannot keep.
    #[error("loop v{var} keeps the lane partials of a{acc}; expected {expected}")]
    BadKeep {
        /// The loop variable.
        var: VarId,
        /// The accumulator.
        acc: AccId,
        /// What is missing.
        expected: &'static str,
    },
    /// Lane partials start here with no vector to hold them.
    #[error("loop v{var} starts lane partials with 0 chains; expected at least 1")]
    NoChains {
        /// The loop variable.
        var: VarId,
    },
    /// Chains recorded where no partials start.
    #[error(
        "{mode:?} loop v{var} has {chains} chains but keeps no partials; expected chains only on vector loops or loops that keep partials"
    )]
    ChainsWithoutPartials {
        /// The loop variable.
        var: VarId,
        /// Its mode.
        mode: LoopMode,
        /// The recorded chains.
        chains: usize,
    },
    /// A dot tile's step walk the code generator has no form for.
    #[error("dot tile with steps {steps:?}: expected {expected}")]
    BadDotSteps {
        /// The recorded steps.
        steps: DotSteps,
        /// What the tile's layout allows.
        expected: String,
    },
}

/// Checks every lowering decision of `kernel`.
pub(super) fn check_kernel(sink: &mut Sink<'_>, kernel: &Kernel, pass: AfterPass) {
    let program = sink.program;
    let planned = program.offsets.len() == program.buffers.len()
        && kernel.reads.iter().chain(&kernel.writes).all(|&b| b < program.buffers.len());
    let aliased = planned.then(|| aliased_writes(program, kernel));
    let lanes = program.target.vector_lanes;
    let mut checker =
        Checker { sink, kernel, lanes, aliased, decided: pass >= AfterPass::Lowering, kept: HashSet::new() };
    checker.stmts(&kernel.body, "");
}

struct Checker<'s, 'p> {
    sink: &'s mut Sink<'p>,
    kernel: &'s Kernel,
    /// Lanes of the program's vectors.
    lanes: usize,
    /// Written buffers sharing memory with a read one (once planned).
    aliased: Option<HashSet<usize>>,
    /// Whether `passes::lowering` has run.
    decided: bool,
    /// Accumulators whose partials enclosing loops keep.
    kept: HashSet<AccId>,
}

fn child(path: &str, step: impl std::fmt::Display) -> String {
    if path.is_empty() { step.to_string() } else { format!("{path}.{step}") }
}

impl Checker<'_, '_> {
    fn report(&mut self, path: &str, rule: LoweringRule) {
        self.sink.kernel_error(&self.kernel.name, path, Problem::Lowering(rule));
    }

    fn stmts(&mut self, body: &[Stmt], path: &str) {
        for (i, s) in body.iter().enumerate() {
            let path = child(path, i);
            match s {
                Stmt::Loop(l) => self.lp(l, &path),
                Stmt::If { then, otherwise, .. } => {
                    self.stmts(then, &child(&path, "then"));
                    self.stmts(otherwise, &child(&path, "else"));
                }
                Stmt::Gemm(g) => self.gemm(g, &path),
                Stmt::Store { .. } | Stmt::Let { .. } | Stmt::Reduce { .. } | Stmt::Set { .. } => {}
            }
        }
    }

    fn lp(&mut self, l: &Loop, path: &str) {
        let (var, mode, d) = (l.var, l.mode, &l.lowering);
        let vector = mode == LoopMode::Vector;
        if d.unroll == Unroll::WrittenOut {
            let iterations = if vector { l.extent / self.lanes } else { l.extent };
            if mode == LoopMode::Parallel {
                self.report(path, LoweringRule::WrittenOutMode { var, mode });
            } else if iterations > MAX_WRITTEN_OUT {
                self.report(path, LoweringRule::TooLongToWriteOut { var, iterations });
            }
        }
        self.tail(l, path);
        if d.copies == 0 || (d.copies > 1 && !(vector && d.unroll == Unroll::Rolled)) {
            self.report(path, LoweringRule::BadCopies { var, mode, copies: d.copies });
        }
        if d.chains > 0 && !vector && d.keep_partials.is_empty() {
            self.report(path, LoweringRule::ChainsWithoutPartials { var, mode, chains: d.chains });
        }
        let starts_partials = if vector {
            self.decided
                && l.extent >= self.lanes
                && outer_reductions(&l.body).iter().any(|(acc, _)| !self.kept.contains(acc))
        } else {
            !d.keep_partials.is_empty()
        };
        if starts_partials && d.chains == 0 {
            self.report(path, LoweringRule::NoChains { var });
        }
        self.keep(l, path);
        let newly: Vec<AccId> = d.keep_partials.iter().copied().filter(|a| self.kept.insert(*a)).collect();
        self.stmts(&l.body, path);
        for acc in newly {
            self.kept.remove(&acc);
        }
    }

    fn tail(&mut self, l: &Loop, path: &str) {
        let (var, mode, extent, tail) = (l.var, l.mode, l.extent, l.lowering.tail);
        let wrong = |expected| LoweringRule::WrongTail { var, mode, extent, tail, expected };
        if mode != LoopMode::Vector || extent.is_multiple_of(self.lanes) {
            if tail != VectorTail::None {
                let expected =
                    if mode == LoopMode::Vector { "none (whole vectors)" } else { "none (not a vector loop)" };
                self.report(path, wrong(expected));
            }
            return;
        }
        match tail {
            VectorTail::None if self.decided => {
                self.report(path, wrong("a tail for the last extent % lanes iterations"))
            }
            VectorTail::Overlap if extent < self.lanes => self.report(path, wrong("a scalar tail (no whole vector)")),
            VectorTail::Overlap => match &self.aliased {
                None => self.report(path, LoweringRule::OverlapUnplanned { var }),
                Some(aliased) if !overlap_tail_ok(&l.body, var, aliased) => {
                    self.report(path, LoweringRule::OverlapChangesResult { var })
                }
                Some(_) => {}
            },
            VectorTail::ScalarWrittenOut | VectorTail::Scalar | VectorTail::None => {}
        }
    }

    /// Kept partials: rolled serial or parallel loops, accumulators reduced
    /// in this body's vector loops and declared outside it, never read or
    /// set in the body, not kept further out.
    fn keep(&mut self, l: &Loop, path: &str) {
        let reduced = vector_reductions(&l.body, false);
        for &acc in &l.lowering.keep_partials {
            let expected = if l.mode == LoopMode::Vector || l.lowering.unroll == Unroll::WrittenOut {
                "a rolled serial or parallel loop"
            } else if !reduced.iter().any(|(a, _)| *a == acc) {
                "an accumulator declared outside the loop and reduced in its vector loops"
            } else if reads_or_sets(&l.body, acc) {
                "no read or set of it inside the loop"
            } else if self.kept.contains(&acc) {
                "partials not kept by an enclosing loop already"
            } else if l.lowering.keep_partials.iter().filter(|a| **a == acc).count() > 1 {
                "each accumulator kept once"
            } else {
                continue;
            };
            self.report(path, LoweringRule::BadKeep { var: l.var, acc, expected });
        }
    }

    fn gemm(&mut self, g: &Gemm, path: &str) {
        let GemmTile::Dot { steps, .. } = g.tile else { return };
        let expected = match (g.k_split, steps) {
            (_, DotSteps::Rolled(0)) => Some("at least one step per iteration".to_string()),
            (None, DotSteps::Rolled(n)) if !(g.k / self.lanes).is_multiple_of(n) => {
                Some(format!("a divisor of the {} vector steps per iteration", g.k / self.lanes))
            }
            (None, DotSteps::WrittenOut) => Some("a rolled loop (only split tiles are written out)".to_string()),
            (Some(s), DotSteps::Rolled(_)) if s.wraps(g.k, self.lanes) && self.decided => {
                Some("written out (a wrapped split tile)".to_string())
            }
            (Some(_), DotSteps::Rolled(n)) if n > 1 => Some("1 step per iteration in a split tile".to_string()),
            (Some(s), DotSteps::WrittenOut) if g.k / s.outer.max(1) / self.lanes > MAX_WRAPPED_STEPS => {
                Some(format!("a rolled loop (at most {MAX_WRAPPED_STEPS} steps per segment are written out)"))
            }
            _ => None,
        };
        if let Some(expected) = expected {
            self.report(path, LoweringRule::BadDotSteps { steps, expected });
        }
    }
}
