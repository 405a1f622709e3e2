//! The buffers a statement list reads and writes, derived from its body.
//!
//! Kernels record these sets (`Kernel::reads`, `Kernel::writes`) for
//! scheduling and memory planning; they are always computed here, never
//! written by hand.

use crate::kernel::*;

/// Collects the buffers a statement list reads and writes.
pub(crate) fn accesses(body: &[Stmt], reads: &mut Vec<BufId>, writes: &mut Vec<BufId>) {
    fn idx(i: &Idx, reads: &mut Vec<BufId>) {
        match i {
            Idx::Const(_) | Idx::Var(_) => {}
            Idx::Table(t, a) | Idx::FloatTable(t, a) => {
                reads.push(*t);
                idx(a, reads)
            }
            Idx::Mul(a, _) | Idx::Div(a, _) | Idx::Rem(a, _) => idx(a, reads),
            Idx::Add(a, b) | Idx::Min(a, b) | Idx::Max(a, b) | Idx::Xor(a, b) => {
                idx(a, reads);
                idx(b, reads)
            }
        }
    }
    fn val(v: &Val, reads: &mut Vec<BufId>) {
        v.visit(&mut |n| match n {
            Node::Val(Val::Load(b, _)) => reads.push(*b),
            Node::Idx(i) => idx(i, reads),
            _ => {}
        });
    }
    fn cond(c: &Cond, reads: &mut Vec<BufId>) {
        c.visit(&mut |n| match n {
            Node::Val(Val::Load(b, _)) => reads.push(*b),
            Node::Idx(i) => idx(i, reads),
            _ => {}
        });
    }
    for s in body {
        match s {
            Stmt::Loop(l) => accesses(&l.body, reads, writes),
            Stmt::Store { buf, idx: i, val: v, accumulate } => {
                writes.push(*buf);
                if *accumulate {
                    reads.push(*buf);
                }
                idx(i, reads);
                val(v, reads);
            }
            Stmt::Let { init: v, .. } | Stmt::Reduce { val: v, .. } | Stmt::Set { val: v, .. } => val(v, reads),
            Stmt::If { cond: c, then, otherwise } => {
                cond(c, reads);
                accesses(then, reads, writes);
                accesses(otherwise, reads, writes);
            }
            Stmt::Gemm(g) => {
                for m in [&g.a, &g.b] {
                    reads.push(m.buf);
                    idx(&m.offset, reads);
                }
                reads.extend(g.b_rows.iter().chain(&g.c_rows).copied());
                writes.push(g.c.buf);
                if g.epilogue.accumulate {
                    reads.push(g.c.buf);
                }
                match &g.epilogue.bias {
                    Some(Bias::PerRow(b, _) | Bias::PerColumn(b, _)) => reads.push(*b),
                    None => {}
                }
                if let Some((_, m)) = &g.epilogue.grad_mask {
                    reads.push(m.buf);
                }
                if let Some(m) = &g.epilogue.pre_activation {
                    writes.push(m.buf);
                }
            }
        }
    }
}
