//! Sums over axes: `SumTo` (the backward of a broadcast) and `BiasGrad`
//! (a bias's gradient, summed over every axis but its own).

use super::{Builder, Finish, KernelBody, broadcast_strides, contiguous_strides, unsupported};
use crate::graph::NodeId;
use crate::kernel::*;

impl Builder<'_> {
    pub(super) fn sum_to(&mut self, id: NodeId, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(id));
        let x = self.buf(ins[0])?;
        let out = finish.out;
        let strides =
            broadcast_strides(&yd, &xd).ok_or_else(|| unsupported(self.graph, id, "shape does not broadcast"))?;
        let xs = contiguous_strides(&xd);
        let total: usize = yd.iter().product();
        let mut body = vec![self.zero_pass(out, Idx::Const(0), total)];
        body.extend(self.loops(&xd, |_, i| {
            let to = i.iter().zip(&strides).fold(Idx::Const(0), |a, (v, &s)| a + v.clone() * s);
            let from = i.iter().zip(&xs).fold(Idx::Const(0), |a, (v, &s)| a + v.clone() * s);
            vec![Stmt::store_add(out, to, Val::load(x, from))]
        }));
        Ok((body, xd.iter().product::<usize>() as u64))
    }

    pub(super) fn bias_grad(
        &mut self,
        _id: NodeId,
        axis: usize,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let d = self.dims(ins[0]);
        let dy = self.buf(ins[0])?;
        let outer: usize = d[..axis].iter().product();
        let mid = d[axis];
        let inner: usize = d[axis + 1..].iter().product();
        let out = finish.out;
        let body = vec![self.loop_over(mid, |b, c| {
            let acc = b.acc();
            let mut s = vec![Stmt::Let { acc, init: Val::Const(0.0) }];
            s.extend(b.loops(&[outer, inner], |_, i| {
                let at = (i[0].clone() * mid + c.clone()) * inner + i[1].clone();
                vec![Stmt::Reduce { acc, op: RedOp::Add, val: Val::load(dy, at) }]
            }));
            s.push(Stmt::store(out, c, Val::Acc(acc)));
            s
        })];
        Ok((body, d.iter().product::<usize>() as u64))
    }
}
