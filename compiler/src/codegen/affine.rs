//! Affine-index analysis: the affine form of an index, and the forms a loop
//! body uses, which become induction variables (see `stmt.rs`).

use crate::kernel::{BufId, Idx, Stmt, Val, VarId};

/// An affine index `constant + sum(coefficient * var)`, terms sorted by variable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Affine {
    /// `Some(buf)`: the byte address of that element of `buf` (a pointer
    /// induction variable); `None`: the index itself.
    pub(super) buf: Option<BufId>,
    pub(super) constant: i64,
    pub(super) terms: Vec<(VarId, i64)>,
}

impl Affine {
    pub(super) fn coefficient(&self, v: VarId) -> i64 {
        self.terms.iter().find(|t| t.0 == v).map_or(0, |t| t.1)
    }
}

/// The affine form of `i`, if it is one.
pub(crate) fn affine(i: &Idx) -> Option<Affine> {
    fn go(i: &Idx, scale: i64, out: &mut Affine) -> bool {
        match i {
            Idx::Const(c) => {
                out.constant += c * scale;
                true
            }
            Idx::Var(v) => {
                match out.terms.iter_mut().find(|t| t.0 == *v) {
                    Some(t) => t.1 += scale,
                    None => out.terms.push((*v, scale)),
                }
                true
            }
            Idx::Add(a, b) => go(a, scale, out) && go(b, scale, out),
            Idx::Mul(a, k) => go(a, scale * k, out),
            _ => false,
        }
    }
    let mut out = Affine { buf: None, constant: 0, terms: Vec::new() };
    if !go(i, 1, &mut out) {
        return None;
    }
    out.terms.retain(|t| t.1 != 0);
    out.terms.sort();
    Some(out)
}

/// Every maximal affine sub-expression of the indices in `body` (including
/// matrix offsets of products), each once.
pub(super) fn collect_affine(body: &[Stmt], out: &mut Vec<Affine>) {
    fn idx(i: &Idx, out: &mut Vec<Affine>) {
        if let Some(a) = affine(i) {
            if !a.terms.is_empty() && !out.contains(&a) {
                out.push(a);
            }
            return;
        }
        match i {
            Idx::Mul(a, _) | Idx::Div(a, _) | Idx::Rem(a, _) | Idx::Table(_, a) | Idx::FloatTable(_, a) => idx(a, out),
            Idx::Add(a, b) | Idx::Min(a, b) | Idx::Max(a, b) | Idx::Xor(a, b) => {
                idx(a, out);
                idx(b, out)
            }
            Idx::Const(_) | Idx::Var(_) => {}
        }
    }
    // One pointer per address form up to a constant: the taps of a window
    // or a stencil share it (fewer loop-carried pointers to keep in
    // registers) and differ only in the immediate offset of their access.
    fn address(buf: BufId, i: &Idx, out: &mut Vec<Affine>) {
        if let Some(mut a) = affine(i) {
            a.buf = Some(buf);
            a.constant = 0;
            if !a.terms.is_empty() && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    fn val(v: &Val, out: &mut Vec<Affine>) {
        v.visit(&mut |n| match n {
            crate::kernel::Node::Idx(i) => idx(i, out),
            crate::kernel::Node::Val(Val::Load(b, i)) => address(*b, i, out),
            _ => {}
        });
    }
    for s in body {
        match s {
            Stmt::Loop(l) => collect_affine(&l.body, out),
            Stmt::Store { buf, idx: i, val: v, .. } => {
                idx(i, out);
                address(*buf, i, out);
                val(v, out);
            }
            Stmt::Let { init: v, .. } | Stmt::Reduce { val: v, .. } | Stmt::Set { val: v, .. } => val(v, out),
            Stmt::If { cond, then, otherwise } => {
                cond.visit(&mut |n| {
                    if let crate::kernel::Node::Idx(i) = n {
                        idx(i, out)
                    }
                });
                collect_affine(then, out);
                collect_affine(otherwise, out);
            }
            Stmt::Gemm(g) => {
                for m in [&g.a, &g.b, &g.c] {
                    idx(&m.offset, out);
                }
                if let Some(crate::kernel::Bias::PerRow(_, o) | crate::kernel::Bias::PerColumn(_, o)) = &g.epilogue.bias
                {
                    idx(o, out);
                }
                for m in g.epilogue.pre_activation.iter().chain(g.epilogue.grad_mask.as_ref().map(|(_, m)| m)) {
                    idx(&m.offset, out);
                }
            }
        }
    }
}
