//! Softmax and log-softmax along one axis (a maximum, a sum of
//! exponentials, then the normalised line), and their gradients from the
//! output (one sum per line, then the line).

use super::{Builder, Finish, KernelBody};
use crate::graph::NodeId;
use crate::kernel::*;
use std::ops::{Div, Mul, Sub};

impl Builder<'_> {
    /// The tensor of `dims` as `[outer, len, inner]` around `axis`.
    fn around(dims: &[usize], axis: usize) -> (usize, usize, usize) {
        (dims[..axis].iter().product(), dims[axis], dims[axis + 1..].iter().product())
    }

    pub(super) fn softmax(
        &mut self,
        axis: usize,
        log: bool,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let d = self.dims(ins[0]);
        let x = self.buf(ins[0])?;
        let out = finish.out;
        let (outer, len, inner) = Self::around(&d, axis);
        let body = self.loops(&[outer, inner], |b, i| {
            let at = |k: &Idx| (i[0].clone() * len + k.clone()) * inner + i[1].clone();
            let (max, sum) = (b.acc(), b.acc());
            let shifted = |k: &Idx| Val::load(x, at(k)).sub(Val::Acc(max));
            let mut st = vec![Stmt::Let { acc: max, init: Val::Const(f32::NEG_INFINITY) }];
            st.push(
                b.loop_over(len, |_, k| vec![Stmt::Reduce { acc: max, op: RedOp::Max, val: Val::load(x, at(&k)) }]),
            );
            st.push(Stmt::Let { acc: sum, init: Val::Const(0.0) });
            st.push(b.loop_over(len, |_, k| {
                vec![Stmt::Reduce { acc: sum, op: RedOp::Add, val: shifted(&k).un(UnOp::Exp) }]
            }));
            if log {
                let ln_sum = b.acc();
                st.push(Stmt::Let { acc: ln_sum, init: Val::Acc(sum).un(UnOp::Ln) });
                st.push(b.loop_over(len, |_, k| vec![Stmt::store(out, at(&k), shifted(&k).sub(Val::Acc(ln_sum)))]));
            } else {
                st.push(b.loop_over(len, |_, k| {
                    vec![Stmt::store(out, at(&k), shifted(&k).un(UnOp::Exp).div(Val::Acc(sum)))]
                }));
            }
            st
        });
        Ok((body, 5 * d.iter().product::<usize>() as u64))
    }

    pub(super) fn softmax_grad(
        &mut self,
        axis: usize,
        log: bool,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let d = self.dims(ins[0]);
        let (y, dy) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let out = finish.out;
        let (outer, len, inner) = Self::around(&d, axis);
        let body = self.loops(&[outer, inner], |b, i| {
            let at = |k: &Idx| (i[0].clone() * len + k.clone()) * inner + i[1].clone();
            let (yk, gk) = (|k: &Idx| Val::load(y, at(k)), |k: &Idx| Val::load(dy, at(k)));
            let sum = b.acc();
            let mut st = vec![Stmt::Let { acc: sum, init: Val::Const(0.0) }];
            if log {
                st.push(b.loop_over(len, |_, k| vec![Stmt::Reduce { acc: sum, op: RedOp::Add, val: gk(&k) }]));
                st.push(b.loop_over(len, |_, k| {
                    vec![Stmt::store(out, at(&k), gk(&k).sub(yk(&k).un(UnOp::Exp).mul(Val::Acc(sum))))]
                }));
            } else {
                st.push(
                    b.loop_over(len, |_, k| vec![Stmt::Reduce { acc: sum, op: RedOp::Add, val: gk(&k).mul(yk(&k)) }]),
                );
                st.push(b.loop_over(len, |_, k| vec![Stmt::store(out, at(&k), yk(&k).mul(gk(&k).sub(Val::Acc(sum))))]));
            }
            st
        });
        Ok((body, 4 * d.iter().product::<usize>() as u64))
    }
}
