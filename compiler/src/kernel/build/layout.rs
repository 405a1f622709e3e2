//! Ops that only move elements: `Concat` and `Slice` along one axis.

use super::{Builder, Finish, KernelBody};
use crate::graph::NodeId;
use crate::kernel::*;

impl Builder<'_> {
    pub(super) fn concat(
        &mut self,
        id: NodeId,
        axis: usize,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let yd = self.dims(id);
        let out = finish.out;
        let outer: usize = yd[..axis].iter().product();
        let inner: usize = yd[axis + 1..].iter().product();
        let row = yd[axis] * inner;
        let mut body = Vec::new();
        let mut offset = 0usize;
        for &i in ins {
            let d = self.dims(i);
            let src = self.buf(i)?;
            let block = d[axis] * inner;
            body.extend(self.loops(&[outer, block], |_, v| {
                vec![Stmt::store(
                    out,
                    v[0].clone() * row + offset + v[1].clone(),
                    Val::load(src, v[0].clone() * block + v[1].clone()),
                )]
            }));
            offset += block;
        }
        Ok((body, 0))
    }

    pub(super) fn slice(
        &mut self,
        id: NodeId,
        axis: usize,
        start: usize,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(id));
        let x = self.buf(ins[0])?;
        let out = finish.out;
        let outer: usize = yd[..axis].iter().product();
        let inner: usize = yd[axis + 1..].iter().product();
        let block = yd[axis] * inner;
        let in_row = xd[axis] * inner;
        let body = self.loops(&[outer, block], |_, v| {
            vec![Stmt::store(
                out,
                v[0].clone() * block + v[1].clone(),
                Val::load(x, v[0].clone() * in_row + start * inner + v[1].clone()),
            )]
        });
        Ok((body, 0))
    }
}
