//! Batch normalisation over axis 1: the batch's per-channel mean and
//! variance, the normalisation as one multiply-add per element (per channel
//! `a = weight / sqrt(var + eps)` and `b = bias - mean * a`, PyTorch's CPU
//! form), the weight gradient's sum and the input gradient.

use super::{Builder, Finish, KernelBody, activation_expr, make_kernel};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::BatchNorm;
use std::ops::{Add, Div, Mul, Sub};

/// One per-channel sum: its accumulator and the term each element adds.
pub(super) type ChannelSum<'t> = (AccId, &'t dyn Fn(&Idx) -> Val);

/// An input gradient's per-channel factors ([`Builder::grad_input_factors`]).
pub(super) struct GradInputFactors {
    scale: AccId,
    k: AccId,
    mean_grad: AccId,
    training: bool,
}

impl GradInputFactors {
    /// `(dy - (x - mean) * k - mean_grad) * scale` at `at` in training
    /// mode, else `dy * scale`.
    pub(super) fn input_grad(&self, s: &Stats, dy: BufId, at: &Idx, ch: &Idx) -> Val {
        let g = Val::load(dy, at.clone());
        let g = if self.training {
            let centred = Val::load(s.x, at.clone()).sub(Val::load(s.mean, ch.clone()));
            g.sub(centred.mul(Val::Acc(self.k))).sub(Val::Acc(self.mean_grad))
        } else {
            g
        };
        g.mul(Val::Acc(self.scale))
    }
}

/// The operands of a normalisation or its input gradient past `x`, `mean`, `var`.
pub(super) struct Stats {
    pub(super) x: BufId,
    pub(super) mean: BufId,
    pub(super) var: BufId,
}

impl Builder<'_> {
    /// `(outer, channels, inner)` of `[N, C, ..]`.
    pub(super) fn channel_dims(&self, x: NodeId) -> (usize, usize, usize) {
        let d = self.dims(x);
        (d[0], d[1], d[2..].iter().product())
    }

    pub(super) fn stats(&self, ins: &[NodeId]) -> Result<Stats, BuildError> {
        Ok(Stats { x: self.buf(ins[0])?, mean: self.buf(ins[1])?, var: self.buf(ins[2])? })
    }

    /// `acc = 1 / sqrt(var[c] + eps)`.
    pub(super) fn inverse_std(&mut self, var: BufId, c: &Idx, eps: f32) -> (AccId, Stmt) {
        let r = self.acc();
        let init = Val::Const(1.0).div(Val::load(var, c.clone()).add(Val::Const(eps)).un(UnOp::Sqrt));
        (r, Stmt::Let { acc: r, init })
    }

    /// A per-channel sum over `n` and the inner axes of `term(element)`,
    /// finished by `done(sum)` into `out[c]`.
    fn channel_sum(
        &mut self,
        x: NodeId,
        out: BufId,
        term: impl Fn(&Idx, &Idx) -> Val,
        done: impl Fn(&mut Self, &Idx, Val) -> (Vec<Stmt>, Val),
    ) -> Vec<Stmt> {
        let dims = self.channel_dims(x);
        vec![self.loop_over(dims.1, |b, ch| {
            let acc = b.acc();
            let term_at = |at: &Idx| term(at, &ch);
            let mut s = b.channel_sums_into(&[(acc, &term_at)], dims, &ch);
            let (pre, value) = done(b, &ch, Val::Acc(acc));
            s.extend(pre);
            s.push(Stmt::store(out, ch, value));
            s
        })]
    }

    /// `acc = sum over n and the inner axes of term(element)` for each
    /// `(acc, term)`, all in one loop nest (each sum in its own partials,
    /// in the order a loop of its own would add).
    pub(super) fn channel_sums_into(
        &mut self,
        sums: &[ChannelSum<'_>],
        (outer, c, inner): (usize, usize, usize),
        ch: &Idx,
    ) -> Vec<Stmt> {
        let mut s: Vec<Stmt> = sums.iter().map(|&(acc, _)| Stmt::Let { acc, init: Val::Const(0.0) }).collect();
        s.extend(self.loops(&[outer, inner], |_, i| {
            let at = (i[0].clone() * c + ch.clone()) * inner + i[1].clone();
            sums.iter().map(|(acc, term)| Stmt::Reduce { acc: *acc, op: RedOp::Add, val: term(&at) }).collect()
        }));
        s
    }

    /// A normalisation's per-channel factors from `r = 1 / std`: `scale =
    /// weight * r` (or `r`) and `shift = bias - mean * scale` (or `-mean *
    /// scale`), as lets.
    pub(super) fn affine_factors(
        &mut self,
        r: AccId,
        ch: &Idx,
        mean: BufId,
        affine: Option<(BufId, BufId)>,
    ) -> (AccId, AccId, Vec<Stmt>) {
        let (scale, shift) = (self.acc(), self.acc());
        let a = match affine {
            Some((w, _)) => Val::load(w, ch.clone()).mul(Val::Acc(r)),
            None => Val::Acc(r),
        };
        let mean_scale = Val::load(mean, ch.clone()).mul(Val::Acc(scale));
        let shift_val = match affine {
            Some((_, bias)) => Val::load(bias, ch.clone()).sub(mean_scale),
            None => Val::Const(0.0).sub(mean_scale),
        };
        (scale, shift, vec![Stmt::Let { acc: scale, init: a }, Stmt::Let { acc: shift, init: shift_val }])
    }

    /// Stores the normalised `y` at `at`, through a fused activation: the
    /// normalised value itself is stored only when the activation's
    /// backward needs it.
    pub(super) fn store_normalised(&mut self, finish: &Finish, at: Idx, y: Val) -> Vec<Stmt> {
        match finish.activation {
            None => vec![Stmt::store(finish.out, at, y)],
            Some(a) => {
                let v = self.acc();
                let mut st = vec![Stmt::Let { acc: v, init: y }];
                if let Some(pre) = finish.pre {
                    st.push(Stmt::store(pre, at.clone(), Val::Acc(v)));
                }
                st.push(Stmt::store(finish.out, at, activation_expr(a, Val::Acc(v))));
                st
            }
        }
    }

    /// The input gradient's per-channel factors from `r = 1 / std`, as
    /// lets: `scale = weight * r` (or `r`), and in training mode `k =
    /// sum_dy_xhat * r / M` and `mean_grad = sum_dy / M`.
    pub(super) fn grad_input_factors(
        &mut self,
        r: AccId,
        ch: &Idx,
        weight: Option<BufId>,
        (sum_dy, sum_dy_xhat): (BufId, BufId),
        count: Val,
        training: bool,
    ) -> (GradInputFactors, Vec<Stmt>) {
        let scale = self.acc();
        let init = match weight {
            Some(w) => Val::load(w, ch.clone()).mul(Val::Acc(r)),
            None => Val::Acc(r),
        };
        let mut st = vec![Stmt::Let { acc: scale, init }];
        let (k, mean_grad) = (self.acc(), self.acc());
        if training {
            let kv = Val::load(sum_dy_xhat, ch.clone()).mul(Val::Acc(r)).div(count.clone());
            st.push(Stmt::Let { acc: k, init: kv });
            st.push(Stmt::Let { acc: mean_grad, init: Val::load(sum_dy, ch.clone()).div(count) });
        }
        (GradInputFactors { scale, k, mean_grad, training }, st)
    }

    pub(super) fn batch_mean(&mut self, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let x = self.buf(ins[0])?;
        let (outer, _, inner) = self.channel_dims(ins[0]);
        let count = Val::Const((outer * inner) as f32);
        let body = self.channel_sum(
            ins[0],
            finish.out,
            |at, _| Val::load(x, at.clone()),
            |_, _, s| (vec![], s.div(count.clone())),
        );
        Ok((body, self.dims(ins[0]).iter().product::<usize>() as u64))
    }

    pub(super) fn batch_var(&mut self, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let (x, mean) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let (outer, _, inner) = self.channel_dims(ins[0]);
        let count = Val::Const((outer * inner) as f32);
        let term = |at: &Idx, ch: &Idx| {
            let d = Val::load(x, at.clone()).sub(Val::load(mean, ch.clone()));
            d.clone().mul(d)
        };
        let body = self.channel_sum(ins[0], finish.out, term, |_, _, s| (vec![], s.div(count.clone())));
        Ok((body, 3 * self.dims(ins[0]).iter().product::<usize>() as u64))
    }

    /// `[x, mean, var]` or `[x, mean, var, weight, bias]` (either mode's forward).
    pub(super) fn batch_norm(&mut self, eps: f32, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let s = self.stats(ins)?;
        let affine = if ins.len() == 5 { Some((self.buf(ins[3])?, self.buf(ins[4])?)) } else { None };
        let dims = self.channel_dims(ins[0]);
        let body = self.normalise(&s, affine, eps, dims, finish);
        Ok((body, 2 * self.dims(ins[0]).iter().product::<usize>() as u64))
    }

    /// `x * a + b` per channel over `(outer, c, inner)` in memory order,
    /// image by image.
    pub(super) fn normalise(
        &mut self,
        s: &Stats,
        affine: Option<(BufId, BufId)>,
        eps: f32,
        (outer, c, inner): (usize, usize, usize),
        finish: &Finish,
    ) -> Vec<Stmt> {
        self.loops(&[outer, c], |b, i| {
            let ch = &i[1];
            let (r, let_r) = b.inverse_std(s.var, ch, eps);
            let mut st = vec![let_r];
            let (scale, shift, lets) = b.affine_factors(r, ch, s.mean, affine);
            st.extend(lets);
            let base = (i[0].clone() * c + ch.clone()) * inner;
            st.push(b.loop_over(inner, |b, e| {
                let at = base.clone() + e;
                let y = Val::load(s.x, at.clone()).mul(Val::Acc(scale)).add(Val::Acc(shift));
                b.store_normalised(finish, at, y)
            }));
            st
        })
    }

    /// `[x, mean, var, dy]`: `sum(dy * (x - mean)) / sqrt(var + eps)` per channel.
    pub(super) fn batch_norm_grad_weight(
        &mut self,
        eps: f32,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let s = self.stats(ins)?;
        let dy = self.buf(ins[3])?;
        let term = |at: &Idx, ch: &Idx| {
            Val::load(dy, at.clone()).mul(Val::load(s.x, at.clone()).sub(Val::load(s.mean, ch.clone())))
        };
        let done = |b: &mut Self, ch: &Idx, sum: Val| {
            let (r, let_r) = b.inverse_std(s.var, ch, eps);
            (vec![let_r], sum.mul(Val::Acc(r)))
        };
        let body = self.channel_sum(ins[0], finish.out, term, done);
        Ok((body, 3 * self.dims(ins[0]).iter().product::<usize>() as u64))
    }

    /// `[x, mean, var, dy, sum_dy, sum_dy_xhat]` or `[.., weight]`: in training
    /// mode `(dy - (x - mean) * k - sum_dy / M) * w / std` with
    /// `k = sum_dy_xhat / (std M)` (PyTorch's CPU form), else `dy * w / std`.
    pub(super) fn batch_norm_grad_input(
        &mut self,
        eps: f32,
        training: bool,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let s = self.stats(ins)?;
        let (dy, sum_dy, sum_dy_xhat) = (self.buf(ins[3])?, self.buf(ins[4])?, self.buf(ins[5])?);
        let weight = if ins.len() == 7 { Some(self.buf(ins[6])?) } else { None };
        let (outer, c, inner) = self.channel_dims(ins[0]);
        let count = Val::Const((outer * inner) as f32);
        let out = finish.out;
        let body = self.loops(&[outer, c], |b, i| {
            let ch = &i[1];
            let (r, let_r) = b.inverse_std(s.var, ch, eps);
            let mut st = vec![let_r];
            let (factors, lets) = b.grad_input_factors(r, ch, weight, (sum_dy, sum_dy_xhat), count.clone(), training);
            st.extend(lets);
            let base = (i[0].clone() * c + ch.clone()) * inner;
            st.push(b.loop_over(inner, |_, e| {
                let at = base.clone() + e;
                vec![Stmt::store(out, at.clone(), factors.input_grad(&s, dy, &at, ch))]
            }));
            st
        });
        Ok((body, 5 * self.dims(ins[0]).iter().product::<usize>() as u64))
    }

    /// An evaluation-mode normalisation folded into the product before it:
    /// per output channel `a = weight / sqrt(var + eps)`, the product's
    /// weight rows times `a` and its bias `(bias - mean) * a + beta`, in a
    /// kernel of their own over the weights (no pass over the activations).
    /// Returns the folded weight and bias buffers.
    pub(super) fn fold_batch_norm(
        &mut self,
        product_ins: &[NodeId],
        bn_node: NodeId,
        bn: BatchNorm,
    ) -> Result<(BufId, BufId), BuildError> {
        let bn_ins = self.graph.node(bn_node).inputs.clone();
        let (mean, var) = (self.buf(bn_ins[1])?, self.buf(bn_ins[2])?);
        let affine = if bn_ins.len() == 5 { Some((self.buf(bn_ins[3])?, self.buf(bn_ins[4])?)) } else { None };
        let w = self.buf(product_ins[1])?;
        let product_bias = product_ins.get(2).map(|&b| self.buf(b)).transpose()?;
        let wd = self.dims(product_ins[1]);
        let (c, k) = (wd[0], wd[1..].iter().product::<usize>());
        let name = self.graph.node(bn_node).name.clone();
        let (weight, bias) = (
            self.scratch(format!("{name}.folded_weight"), c * k, false),
            self.scratch(format!("{name}.folded_bias"), c, false),
        );
        let body = vec![self.loop_over(c, |b, ch| {
            let (r, let_r) = b.inverse_std(var, &ch, bn.eps);
            let a = b.acc();
            let init = match affine {
                Some((g, _)) => Val::load(g, ch.clone()).mul(Val::Acc(r)),
                None => Val::Acc(r),
            };
            let centred = match product_bias {
                Some(pb) => Val::load(pb, ch.clone()).sub(Val::load(mean, ch.clone())),
                None => Val::Const(0.0).sub(Val::load(mean, ch.clone())),
            };
            let shifted = match affine {
                Some((_, beta)) => centred.mul(Val::Acc(a)).add(Val::load(beta, ch.clone())),
                None => centred.mul(Val::Acc(a)),
            };
            vec![
                let_r,
                Stmt::Let { acc: a, init },
                Stmt::store(bias, ch.clone(), shifted),
                b.loop_over(k, |_, e| {
                    let at = ch.clone() * k as i64 + e;
                    vec![Stmt::store(weight, at.clone(), Val::load(w, at).mul(Val::Acc(a)))]
                }),
            ]
        })];
        self.pre_kernels.push(make_kernel(format!("{name}.fold"), vec![bn_node], body, (c * (k + 4)) as u64));
        Ok((weight, bias))
    }
}
