//! Training-mode batch normalisation one channel at a time: the forward's
//! mean, variance and normalisation, and the backward's two sums and input
//! gradient, each as one kernel whose outer loop is the channel (the
//! groups `passes::fuse` forms as channel blocks).
//!
//! Run as separate kernels, each of those passes reads the whole
//! activation (the 32-channel 32x32 stage of a ResNet at batch 128: 16 MB
//! a pass, six passes per normalisation). Within a channel the later
//! passes re-read what the first just brought into the core's caches (a
//! channel of that stage: 512 KiB per tensor), and the backward's two sums
//! share one pass. Each sum adds the terms its own kernel did, in the same
//! order, so the values are the same.

use super::{Builder, Finish, make_kernel};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::Op;
use std::ops::{Add, Div, Mul, Sub};

impl Builder<'_> {
    /// The buffer of `id`'s value, or a per-channel scratch buffer when the
    /// value is only read inside the block.
    fn channel_value(&mut self, id: NodeId, channels: usize) -> BufId {
        match self.value_buf.get(&id) {
            Some(&buf) => buf,
            None => {
                let name = format!("{}.channel_block", self.graph.node(id).name);
                self.scratch(name, channels, false)
            }
        }
    }

    /// `[BatchMean, BatchVar, BatchNormTrain]` of one `x`, and optionally
    /// the activation after it: per channel the mean, the (biased)
    /// variance about it, then `x * a + b` with `a = weight / sqrt(var +
    /// eps)` and `b = bias - mean * a`, as [`Self::batch_norm`] computes it.
    pub(super) fn batch_norm_train_block(&mut self, nodes: &[NodeId]) -> Result<Vec<Kernel>, BuildError> {
        let graph = self.graph;
        let (mean_node, var_node, bn_node) = (nodes[0], nodes[1], nodes[2]);
        let Op::BatchNormTrain(bn) = graph.node(bn_node).op else {
            return Err(super::unsupported(graph, bn_node, "a channel block ends in its normalisation"));
        };
        let ins = graph.node(bn_node).inputs.clone();
        let x = self.buf(ins[0])?;
        let affine = if ins.len() == 5 { Some((self.buf(ins[3])?, self.buf(ins[4])?)) } else { None };
        let dims = self.channel_dims(ins[0]);
        let (outer, c, inner) = dims;
        let (mean, var) = (self.channel_value(mean_node, c), self.channel_value(var_node, c));
        let mut finish = Finish { out: 0, activation: None, pre: None, mask: None };
        match nodes.get(3).map(|&n| (n, &graph.node(n).op)) {
            Some((act, Op::Activate(a))) => {
                finish.activation = Some(*a);
                finish.out = self.buf(act)?;
                finish.pre = self.value_buf.get(&bn_node).copied();
            }
            _ => finish.out = self.buf(bn_node)?,
        }
        let count = Val::Const((outer * inner) as f32);
        let body = vec![self.loop_over(c, |b, ch| {
            let (sum, squares) = (b.acc(), b.acc());
            let load_x = |at: &Idx| Val::load(x, at.clone());
            let mut s = b.channel_sums_into(&[(sum, &load_x)], dims, &ch);
            s.push(Stmt::store(mean, ch.clone(), Val::Acc(sum).div(count.clone())));
            let square = |at: &Idx| {
                let d = Val::load(x, at.clone()).sub(Val::load(mean, ch.clone()));
                d.clone().mul(d)
            };
            s.extend(b.channel_sums_into(&[(squares, &square)], dims, &ch));
            s.push(Stmt::store(var, ch.clone(), Val::Acc(squares).div(count.clone())));
            let (r, let_r) = b.inverse_std(var, &ch, bn.eps);
            s.push(let_r);
            let (scale, shift, lets) = b.affine_factors(r, &ch, mean, affine);
            s.extend(lets);
            s.extend(b.loops(&[outer, inner], |b, i| {
                let at = (i[0].clone() * c + ch.clone()) * inner + i[1].clone();
                let y = Val::load(x, at.clone()).mul(Val::Acc(scale)).add(Val::Acc(shift));
                b.store_normalised(&finish, at, y)
            }));
            s
        })];
        let flops = 6 * (outer * c * inner) as u64;
        Ok(vec![make_kernel(self.name_of(nodes), nodes.to_vec(), body, flops)])
    }

    /// `[BiasGrad, BatchNormGradWeight, BatchNormGradInput]` of one `dy`:
    /// per channel `sum(dy)`, `sum(dy * (x - mean)) / std`, then the input
    /// gradient as [`Self::batch_norm_grad_input`] computes it.
    pub(super) fn batch_norm_grad_block(&mut self, nodes: &[NodeId]) -> Result<Vec<Kernel>, BuildError> {
        let graph = self.graph;
        let (sum_node, xhat_node, dx_node) = (nodes[0], nodes[1], nodes[2]);
        let Op::BatchNormGradInput { eps, training } = graph.node(dx_node).op else {
            return Err(super::unsupported(graph, dx_node, "a channel block ends in its input gradient"));
        };
        let ins = graph.node(dx_node).inputs.clone();
        let s = self.stats(&ins)?;
        let dy = self.buf(ins[3])?;
        let weight = if ins.len() == 7 { Some(self.buf(ins[6])?) } else { None };
        let dims = self.channel_dims(ins[0]);
        let (outer, c, inner) = dims;
        let (sum_dy, sum_dy_xhat) = (self.channel_value(sum_node, c), self.channel_value(xhat_node, c));
        let out = self.buf(dx_node)?;
        let count = Val::Const((outer * inner) as f32);
        let body = vec![self.loop_over(c, |b, ch| {
            let (sum, xhat_sum) = (b.acc(), b.acc());
            // Both sums in one pass over `dy` and `x`.
            let load_dy = |at: &Idx| Val::load(dy, at.clone());
            let centred_dy =
                |at: &Idx| Val::load(dy, at.clone()).mul(Val::load(s.x, at.clone()).sub(Val::load(s.mean, ch.clone())));
            let mut st = b.channel_sums_into(&[(sum, &load_dy), (xhat_sum, &centred_dy)], dims, &ch);
            st.push(Stmt::store(sum_dy, ch.clone(), Val::Acc(sum)));
            let (r, let_r) = b.inverse_std(s.var, &ch, eps);
            st.push(let_r);
            st.push(Stmt::store(sum_dy_xhat, ch.clone(), Val::Acc(xhat_sum).mul(Val::Acc(r))));
            let sums = (sum_dy, sum_dy_xhat);
            let (factors, lets) = b.grad_input_factors(r, &ch, weight, sums, count.clone(), training);
            st.extend(lets);
            st.extend(b.loops(&[outer, inner], |_, i| {
                let at = (i[0].clone() * c + ch.clone()) * inner + i[1].clone();
                vec![Stmt::store(out, at.clone(), factors.input_grad(&s, dy, &at, &ch))]
            }));
            st
        })];
        let flops = 9 * (outer * c * inner) as u64;
        Ok(vec![make_kernel(self.name_of(nodes), nodes.to_vec(), body, flops)])
    }
}
