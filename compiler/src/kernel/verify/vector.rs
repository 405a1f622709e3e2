//! What a vector loop may hold, as the code generator lowers it: the body
//! runs once per four iterations with every value an `f32x4`, the loop
//! variable standing for lane 0.

use crate::kernel::{AccId, BufId, Cond, Idx, Loop, LoopMode, Node, Stmt, Val, VarId};
use std::collections::HashSet;

/// A rule of vector loops that the body breaks.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum VectorRule {
    /// Products are lowered with scalar loop variables.
    #[error("holds a matrix product; expected only loops, stores and scalar statements")]
    GemmInside,
    /// An inner loop that is not serial would be re-vectorised or split
    /// across threads inside the lanes.
    #[error("holds {mode:?} loop v{inner}; expected only serial loops inside a vector loop")]
    InnerNotSerial {
        /// The inner loop's variable.
        inner: VarId,
        /// Its mode.
        mode: LoopMode,
    },
    /// Branches are taken once for all four lanes.
    #[error("an `if` condition depends on the lane; expected one that is the same for all four iterations")]
    LaneDependentCondition,
    /// An accumulator declared outside holds one scalar, not four lanes.
    #[error("sets a{acc}, declared outside the loop; expected only accumulators declared in the loop body to be set")]
    SetOfOuterAccumulator {
        /// The accumulator.
        acc: AccId,
    },
    /// An outer accumulator reduced in the loop keeps lane partials that
    /// are only combined when the loop ends.
    #[error("reads a{acc}, whose lane partials are only combined after the loop; expected no read inside it")]
    PartialRead {
        /// The accumulator.
        acc: AccId,
    },
    /// Four iterations run at once, so a buffer read at another index than
    /// it is written sees the wrong iteration's value.
    #[error(
        "stores %{buf} and loads it at a different index; expected loads of a stored buffer at the stored index only"
    )]
    StoredBufferLoadedElsewhere {
        /// The buffer.
        buf: BufId,
    },
}

#[derive(Default)]
struct Facts {
    declared: HashSet<AccId>,
    reduced: Vec<AccId>,
    read: HashSet<AccId>,
    set: Vec<AccId>,
    stores: Vec<(BufId, Idx)>,
    loads: Vec<(BufId, Idx)>,
    rules: Vec<VectorRule>,
}

/// The rules vector loop `l` breaks.
pub(super) fn check(l: &Loop) -> Vec<VectorRule> {
    let mut facts = Facts::default();
    collect(&l.body, l.var, &mut facts);
    let mut rules = std::mem::take(&mut facts.rules);
    for &acc in &facts.set {
        if !facts.declared.contains(&acc) {
            rules.push(VectorRule::SetOfOuterAccumulator { acc });
        }
    }
    let mut partial_reads: Vec<AccId> =
        facts.reduced.iter().copied().filter(|a| !facts.declared.contains(a) && facts.read.contains(a)).collect();
    partial_reads.sort();
    partial_reads.dedup();
    rules.extend(partial_reads.into_iter().map(|acc| VectorRule::PartialRead { acc }));
    let mut clashing: Vec<BufId> = facts
        .stores
        .iter()
        .filter(|(b, i)| facts.loads.iter().any(|(lb, li)| lb == b && li != i))
        .map(|(b, _)| *b)
        .collect();
    clashing.sort();
    clashing.dedup();
    rules.extend(clashing.into_iter().map(|buf| VectorRule::StoredBufferLoadedElsewhere { buf }));
    rules
}

fn val(v: &Val, facts: &mut Facts) {
    v.visit(&mut |n| match n {
        Node::Val(Val::Acc(a)) => {
            facts.read.insert(*a);
        }
        Node::Val(Val::Load(b, i)) => facts.loads.push((*b, i.clone())),
        _ => {}
    });
}

/// Whether the condition is the same for the four lanes: it does not move
/// with the loop variable and reads no vector-valued accumulator.
fn lane_uniform(c: &Cond, v: VarId, declared: &HashSet<AccId>) -> bool {
    let mut uniform = true;
    c.visit(&mut |n| match n {
        Node::Idx(i) if i.uses(v) => uniform = false,
        Node::Val(Val::Acc(a)) if declared.contains(a) => uniform = false,
        _ => {}
    });
    uniform
}

fn collect(body: &[Stmt], v: VarId, facts: &mut Facts) {
    for s in body {
        match s {
            Stmt::Loop(inner) => {
                if inner.mode != LoopMode::Serial {
                    facts.rules.push(VectorRule::InnerNotSerial { inner: inner.var, mode: inner.mode });
                }
                collect(&inner.body, v, facts);
            }
            Stmt::Store { buf, idx, val: x, .. } => {
                facts.stores.push((*buf, idx.clone()));
                val(x, facts);
            }
            Stmt::Let { acc, init } => {
                val(init, facts);
                facts.declared.insert(*acc);
            }
            Stmt::Reduce { acc, val: x, .. } => {
                facts.reduced.push(*acc);
                val(x, facts);
            }
            Stmt::Set { acc, val: x } => {
                facts.set.push(*acc);
                facts.read.insert(*acc);
                val(x, facts);
            }
            Stmt::If { cond, then, otherwise } => {
                if !lane_uniform(cond, v, &facts.declared) {
                    facts.rules.push(VectorRule::LaneDependentCondition);
                }
                cond.visit(&mut |n| {
                    if let Node::Val(Val::Acc(a)) = n {
                        facts.read.insert(*a);
                    }
                });
                collect(then, v, facts);
                collect(otherwise, v, facts);
            }
            Stmt::Gemm(_) => facts.rules.push(VectorRule::GemmInside),
        }
    }
}
