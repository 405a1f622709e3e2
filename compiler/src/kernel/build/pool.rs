//! Max and average pooling and their gradients. A max pool whose gradient is
//! needed records each window's first maximum (its argmax) for the backward
//! kernel; small unpadded windows have their taps written out.

use super::{Builder, Finish, KernelBody, activation_grad_expr};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::{Op, Pool2d};
use std::ops::Div;

/// Max pools with at most this many taps per window have them written out
/// (see `max_pool_unrolled`); larger windows keep their loops.
const MAX_UNROLLED_TAPS: usize = 16;

impl Builder<'_> {
    /// Input position of tap `k` of window position `o` along one axis.
    fn window_pos(o: &Idx, k: &Idx, stride: usize, dilation: usize, padding: usize) -> Idx {
        o.clone() * stride + k.clone() * dilation - padding as i64
    }

    pub(super) fn pool(
        &mut self,
        id: NodeId,
        pl: &Pool2d,
        is_max: bool,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(id));
        let x = self.buf(ins[0])?;
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let padded = pl.padding != [0, 0];
        let divisor = (pl.kernel[0] * pl.kernel[1]) as f32;
        let has_grad = is_max
            && self.graph.node_ids().any(|n| {
                self.live.contains(&n)
                    && self.graph.node(n).op == Op::MaxPool2dGrad(*pl)
                    && self.graph.node(n).inputs[0] == ins[0]
            });
        let argmax = has_grad.then(|| {
            let len = yd.iter().product();
            let buf = self.scratch(format!("{}.argmax", self.graph.node(id).name), len, false);
            self.argmax.insert((ins[0], *pl), buf);
            buf
        });
        if is_max && !padded && pl.kernel[0] * pl.kernel[1] <= MAX_UNROLLED_TAPS {
            return Ok(self.max_pool_unrolled(x, pl, [h, w], [xd[0] * xd[1], oh, ow], argmax, out));
        }
        let body = self.loops(&[xd[0] * xd[1], oh, ow], |b, i| {
            let (nc, oy, ox) = (i[0].clone(), i[1].clone(), i[2].clone());
            let acc = b.acc();
            let arg = b.acc();
            let init = if is_max { f32::NEG_INFINITY } else { 0.0 };
            let mut s = vec![Stmt::Let { acc, init: Val::Const(init) }];
            if argmax.is_some() {
                s.push(Stmt::Let { acc: arg, init: Val::Const(-1.0) });
            }
            s.extend(b.loops(&[pl.kernel[0], pl.kernel[1]], |_, k| {
                let iy = Self::window_pos(&oy, &k[0], pl.stride[0], pl.dilation[0], pl.padding[0]);
                let ix = Self::window_pos(&ox, &k[1], pl.stride[1], pl.dilation[1], pl.padding[1]);
                let plane = nc.clone() * (h * w);
                // Padded taps are clamped into the plane (and never win);
                // unpadded ones are in range already, and their index stays
                // affine so the vector form needs no per-lane conversion.
                let within = if padded {
                    iy.clone().clamp(0, h - 1) * w + ix.clone().clamp(0, w - 1)
                } else {
                    iy.clone() * w + ix.clone()
                };
                let valid = Cond::in_range(iy.clone(), 0, h).and(Cond::in_range(ix.clone(), 0, w));
                let val = if padded {
                    let at = plane + within.clone();
                    Val::select(valid.clone(), Val::load(x, at), Val::Const(init))
                } else {
                    Val::load(x, plane + iy * w + ix)
                };
                let mut s = Vec::new();
                if argmax.is_some() {
                    // The first valid tap, then any strictly larger one or
                    // a NaN (PyTorch's first maximum, where a NaN wins; -1
                    // while no tap is valid).
                    let first = Cond::val(Cmp::Lt, Val::Acc(arg), Val::Const(0.0));
                    let first = if padded { first.and(valid.clone()) } else { first };
                    let nan = Cond::IsNan(Box::new(val.clone()));
                    let nan = if padded { nan.and(valid) } else { nan };
                    let larger = Cond::Or(Box::new(Cond::val(Cmp::Gt, val.clone(), Val::Acc(acc))), Box::new(nan));
                    let wins = Cond::Or(Box::new(larger), Box::new(first));
                    s.push(Stmt::Set { acc: arg, val: Val::select(wins, Val::FromIdx(within), Val::Acc(arg)) });
                }
                s.push(Stmt::Reduce { acc, op: if is_max { RedOp::Max } else { RedOp::Add }, val });
                s
            }));
            let result = if is_max { Val::Acc(acc) } else { Val::Acc(acc).div(Val::Const(divisor)) };
            let at = (nc * oh + oy) * ow + ox;
            if let Some(am) = argmax {
                s.push(Stmt::store(am, at.clone(), Val::Acc(arg)));
            }
            s.push(Stmt::store(out, at, result));
            s
        });
        Ok((body, (yd.iter().product::<usize>() * pl.kernel[0] * pl.kernel[1]) as u64))
    }

    /// An unpadded max pool with a small window, its taps written out: the
    /// first tap initialises the maximum, each later one wins when it is
    /// larger or a NaN (PyTorch's first maximum, where a NaN wins), and the
    /// value and the argmax are selected with that one condition. The
    /// argmax is tracked as the winning tap's constant offset from the
    /// window's origin and converted to a plane index once, at the store.
    /// With no inner loop left, the vector loop over `ox` can end with an
    /// overlapping iteration instead of a scalar tail.
    fn max_pool_unrolled(
        &mut self,
        x: BufId,
        pl: &Pool2d,
        [h, w]: [i64; 2],
        [planes, oh, ow]: [usize; 3],
        argmax: Option<BufId>,
        out: BufId,
    ) -> KernelBody {
        let body = self.loops(&[planes, oh, ow], |b, i| {
            let (nc, oy, ox) = (i[0].clone(), i[1].clone(), i[2].clone());
            let (acc, arg) = (b.acc(), b.acc());
            let origin = oy.clone() * pl.stride[0] * w + ox.clone() * pl.stride[1];
            let mut s = Vec::new();
            for ky in 0..pl.kernel[0] {
                for kx in 0..pl.kernel[1] {
                    let off = (ky * pl.dilation[0]) as i64 * w + (kx * pl.dilation[1]) as i64;
                    let val = Val::load(x, nc.clone() * (h * w) + origin.clone() + off);
                    if ky == 0 && kx == 0 {
                        s.push(Stmt::Let { acc, init: val });
                        if argmax.is_some() {
                            s.push(Stmt::Let { acc: arg, init: Val::Const(off as f32) });
                        }
                        continue;
                    }
                    let larger = Cond::val(Cmp::Gt, val.clone(), Val::Acc(acc));
                    let wins = Cond::Or(Box::new(larger), Box::new(Cond::IsNan(Box::new(val.clone()))));
                    if argmax.is_some() {
                        let pick = Val::select(wins.clone(), Val::Const(off as f32), Val::Acc(arg));
                        s.push(Stmt::Set { acc: arg, val: pick });
                    }
                    s.push(Stmt::Set { acc, val: Val::select(wins, val, Val::Acc(acc)) });
                }
            }
            let at = (nc * oh + oy) * ow + ox;
            if let Some(am) = argmax {
                let index = Val::bin(BinOp::Add, Val::FromIdx(origin), Val::Acc(arg));
                s.push(Stmt::store(am, at.clone(), index));
            }
            s.push(Stmt::store(out, at, Val::Acc(acc)));
            s
        });
        (body, (planes * oh * ow * pl.kernel[0] * pl.kernel[1]) as u64)
    }

    pub(super) fn max_pool_grad(
        &mut self,
        _id: NodeId,
        pl: &Pool2d,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(ins[1]));
        let (x, dy) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let plane = (h * w) as usize;
        let disjoint = (0..2).all(|a| pl.dilation[a] == 1 && pl.kernel[a] <= pl.stride[a]);
        if let Some(&am) = self.argmax.get(&(ins[0], *pl))
            && disjoint
        {
            // Windows do not overlap, so each input element belongs to at
            // most one window: gather its gradient instead of scattering
            // (one contiguous, vectorisable pass, no zeroing, no branches).
            let covers =
                |a: usize, len: i64, out: usize| (len - 1 + pl.padding[a] as i64) / (pl.stride[a] as i64) < out as i64;
            let (full_y, full_x) = (covers(0, h, oh), covers(1, w, ow));
            let body = self.loops(&[xd[0] * xd[1], h as usize, w as usize], |_, i| {
                let (nc, y, xx) = (i[0].clone(), i[1].clone(), i[2].clone());
                let window = |v: &Idx, a: usize, full: bool, out: usize| {
                    let o = (v.clone() + pl.padding[a] as i64) / pl.stride[a] as i64;
                    if full { o } else { o.clamp(0, out as i64 - 1) }
                };
                let w_at = (nc.clone() * oh + window(&y, 0, full_y, oh)) * ow + window(&xx, 1, full_x, ow);
                let me = y.clone() * w + xx.clone();
                let hit = Cond::val(Cmp::Eq, Val::load(am, w_at.clone()), Val::FromIdx(me.clone()));
                let g = Val::select(hit, Val::load(dy, w_at), Val::Const(0.0));
                let at = nc * plane + me;
                let g = match finish.mask {
                    Some((a, pre)) => activation_grad_expr(a, Val::load(pre, at.clone()), g),
                    None => g,
                };
                vec![Stmt::store(out, at, g)]
            });
            return Ok((body, xd.iter().product::<usize>() as u64));
        }
        if let Some(&am) = self.argmax.get(&(ins[0], *pl)) {
            // The forward kernel recorded each window's first maximum.
            let body = vec![self.loop_over(xd[0] * xd[1], |b, nc| {
                let base = nc.clone() * plane;
                let mut s = vec![b.zero_pass(out, base.clone(), plane)];
                s.extend(b.loops(&[oh, ow], |_, i| {
                    let w_at = (nc.clone() * oh + i[0].clone()) * ow + i[1].clone();
                    let to = base.clone() + Idx::FloatTable(am, Box::new(w_at.clone()));
                    let recorded = Cond::val(Cmp::Ge, Val::load(am, w_at.clone()), Val::Const(0.0));
                    vec![Stmt::If {
                        cond: recorded,
                        then: vec![Stmt::store_add(out, to, Val::load(dy, w_at))],
                        otherwise: vec![],
                    }]
                }));
                s.extend(b.mask_pass(finish, base, plane));
                s
            })];
            return Ok((body, yd.iter().product::<usize>() as u64));
        }
        let body = vec![self.loop_over(xd[0] * xd[1], |b, nc| {
            let base = nc.clone() * plane;
            let mut s = vec![b.zero_pass(out, base.clone(), plane)];
            s.extend(b.loops(&[oh, ow], |b, i| {
                let (oy, ox) = (i[0].clone(), i[1].clone());
                let (m, found) = (b.acc(), b.acc());
                let tap = |k: &[Idx]| {
                    let iy = Self::window_pos(&oy, &k[0], pl.stride[0], pl.dilation[0], pl.padding[0]);
                    let ix = Self::window_pos(&ox, &k[1], pl.stride[1], pl.dilation[1], pl.padding[1]);
                    let at = base.clone() + iy.clone().clamp(0, h - 1) * w + ix.clone().clamp(0, w - 1);
                    (Cond::in_range(iy, 0, h).and(Cond::in_range(ix, 0, w)), at)
                };
                let mut s = vec![Stmt::Let { acc: m, init: Val::Const(f32::NEG_INFINITY) }];
                s.extend(b.loops(&pl.kernel, |_, k| {
                    let (valid, at) = tap(k);
                    let v = Val::select(valid, Val::load(x, at), Val::Const(f32::NEG_INFINITY));
                    vec![Stmt::Reduce { acc: m, op: RedOp::Max, val: v }]
                }));
                s.push(Stmt::Let { acc: found, init: Val::Const(0.0) });
                let g = Val::load(dy, (nc.clone() * oh + oy.clone()) * ow + ox.clone());
                s.extend(b.loops(&pl.kernel, |_, k| {
                    let (valid, at) = tap(k);
                    // The maximum, or a NaN (which is the maximum then).
                    let is_max = Cond::Or(
                        Box::new(Cond::val(Cmp::Eq, Val::load(x, at.clone()), Val::Acc(m))),
                        Box::new(Cond::IsNan(Box::new(Val::load(x, at.clone())))),
                    );
                    let hit = valid.and(is_max).and(Cond::val(Cmp::Eq, Val::Acc(found), Val::Const(0.0)));
                    vec![Stmt::If {
                        cond: hit,
                        then: vec![Stmt::store_add(out, at, g.clone()), Stmt::Set { acc: found, val: Val::Const(1.0) }],
                        otherwise: vec![],
                    }]
                }));
                s
            }));
            s.extend(b.mask_pass(finish, base, plane));
            s
        })];
        Ok((body, (yd.iter().product::<usize>() * pl.kernel[0] * pl.kernel[1] * 2) as u64))
    }

    pub(super) fn avg_pool_grad(
        &mut self,
        id: NodeId,
        pl: &Pool2d,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (yd, xd) = (self.dims(ins[0]), self.dims(id));
        let dy = self.buf(ins[0])?;
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let plane = (h * w) as usize;
        let divisor = (pl.kernel[0] * pl.kernel[1]) as f32;
        // Windows that tile the image (stride = window, no padding): every
        // input element is in at most one window, so its gradient is read,
        // not scattered: one pass of whole rows over the image.
        let [kh, kw] = pl.kernel;
        if pl.stride == pl.kernel && pl.padding == [0, 0] && pl.dilation == [1, 1] {
            let (covered_h, covered_w) = (oh * kh, ow * kw);
            let body = vec![self.loop_over(xd[0] * xd[1], |b, nc| {
                let base = nc.clone() * plane;
                let mut s = Vec::new();
                // Rows and columns past the last window get no gradient.
                if covered_h < h as usize || covered_w < w as usize {
                    s.push(b.zero_pass(out, base.clone(), plane));
                }
                s.extend(b.loops(&[covered_h, covered_w], |_, i| {
                    let (iy, ix) = (i[0].clone(), i[1].clone());
                    let g = Val::load(dy, (nc.clone() * oh + iy.clone() / kh as i64) * ow + ix.clone() / kw as i64);
                    vec![Stmt::store(out, base.clone() + iy * w + ix, g.div(Val::Const(divisor)))]
                }));
                s.extend(b.mask_pass(finish, base, plane));
                s
            })];
            return Ok((body, (xd.iter().product::<usize>()) as u64));
        }
        let body = vec![self.loop_over(xd[0] * xd[1], |b, nc| {
            let base = nc.clone() * plane;
            let mut s = vec![b.zero_pass(out, base.clone(), plane)];
            s.extend(b.loops(&[oh, ow], |b, i| {
                let (oy, ox) = (i[0].clone(), i[1].clone());
                let g = Val::load(dy, (nc.clone() * oh + oy.clone()) * ow + ox.clone()).div(Val::Const(divisor));
                b.loops(&pl.kernel, |_, k| {
                    let iy = Self::window_pos(&oy, &k[0], pl.stride[0], pl.dilation[0], pl.padding[0]);
                    let ix = Self::window_pos(&ox, &k[1], pl.stride[1], pl.dilation[1], pl.padding[1]);
                    let at = base.clone() + iy.clone().clamp(0, h - 1) * w + ix.clone().clamp(0, w - 1);
                    vec![Stmt::If {
                        cond: Cond::in_range(iy, 0, h).and(Cond::in_range(ix, 0, w)),
                        then: vec![Stmt::store_add(out, at, g.clone())],
                        otherwise: vec![],
                    }]
                })
            }));
            s.extend(b.mask_pass(finish, base, plane));
            s
        })];
        Ok((body, (yd.iter().product::<usize>() * pl.kernel[0] * pl.kernel[1]) as u64))
    }
}
