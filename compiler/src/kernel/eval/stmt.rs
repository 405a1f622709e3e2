//! Statements and loops.
//!
//! Every loop runs its iterations one after another, whatever its mode: a
//! parallel loop as if one thread ran the whole range (thread 0, so
//! per-thread scratch is thread 0's copy), a vector loop one iteration per
//! lane in order. A `Reduce` inside a vector loop therefore folds its
//! values in iteration order, where the JIT keeps four lane partials (and
//! up to four chains of them) and combines them at the end: a sum may
//! differ by rounding, never by more (the differential tests compare at
//! 1e-5 relative). A maximum is the same either way, NaN included, since a
//! NaN wins every comparison it takes part in.

use super::expr::{self, Frame};
use super::gemm;
use super::{Fault, memory::Arena};
use crate::kernel::{AccId, Stmt, VarId};

/// Runs `body` in `frame`.
pub(super) fn run(body: &[Stmt], arena: &mut Arena, frame: &mut Frame) -> Result<(), Fault> {
    for s in body {
        statement(s, arena, frame)?;
    }
    Ok(())
}

fn statement(s: &Stmt, arena: &mut Arena, frame: &mut Frame) -> Result<(), Fault> {
    match s {
        Stmt::Loop(l) => {
            let outer = frame.bind(l.var, None);
            for i in 0..l.extent {
                frame.bind(l.var, Some(i as i64));
                run(&l.body, arena, frame)?;
            }
            frame.bind(l.var, outer);
        }
        Stmt::Store { buf, idx, val, accumulate } => {
            let x = expr::value(val, arena, frame)?;
            let at = expr::index(idx, arena, frame)?;
            let x = if *accumulate { arena.load(*buf, at)? + x } else { x };
            arena.store(*buf, at, x)?;
        }
        Stmt::Let { acc, init } => {
            let x = expr::value(init, arena, frame)?;
            frame.declare(*acc, x);
        }
        Stmt::Reduce { acc, op, val } => {
            let x = expr::value(val, arena, frame)?;
            let a = frame.acc(*acc)?;
            frame.assign(*acc, expr::combine(*op, a, x))?;
        }
        Stmt::Set { acc, val } => {
            let x = expr::value(val, arena, frame)?;
            frame.assign(*acc, x)?;
        }
        Stmt::If { cond, then, otherwise } => {
            let branch = if expr::condition(cond, arena, frame)? { then } else { otherwise };
            run(branch, arena, frame)?;
        }
        Stmt::Gemm(g) => gemm::run(g, arena, frame)?,
    }
    Ok(())
}

/// The largest loop variable and declared accumulator of `body`, to size
/// a [`Frame`].
pub(super) fn max_ids(body: &[Stmt]) -> (Option<VarId>, Option<AccId>) {
    fn walk(body: &[Stmt], vars: &mut Option<VarId>, accs: &mut Option<AccId>) {
        for s in body {
            match s {
                Stmt::Loop(l) => {
                    *vars = (*vars).max(Some(l.var));
                    walk(&l.body, vars, accs);
                }
                Stmt::Let { acc, .. } => *accs = (*accs).max(Some(*acc)),
                Stmt::If { then, otherwise, .. } => {
                    walk(then, vars, accs);
                    walk(otherwise, vars, accs);
                }
                Stmt::Store { .. } | Stmt::Reduce { .. } | Stmt::Set { .. } | Stmt::Gemm(_) => {}
            }
        }
    }
    let (mut vars, mut accs) = (None, None);
    walk(body, &mut vars, &mut accs);
    (vars, accs)
}
