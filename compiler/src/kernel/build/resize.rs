//! Nearest and bilinear resizing and their gradients, reading source
//! positions and weights from per-axis tables computed at build time by the
//! interpreter's own index rules.

use super::{Builder, Finish, KernelBody};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::{Resize, ResizeMode};
use std::ops::{Add, Mul};

impl Builder<'_> {
    /// Per destination position along one axis: source taps and weights.
    fn resize_taps(r: &Resize, axis: usize, in_len: usize, out_len: usize) -> Vec<(usize, usize, f32, f32)> {
        (0..out_len).map(|dst| resize_tap(r, axis, dst, in_len, out_len)).collect()
    }

    pub(super) fn resize(
        &mut self,
        id: NodeId,
        r: &Resize,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(id));
        let x = self.buf(ins[0])?;
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let name = self.graph.node(id).name.clone();
        let ty = Self::resize_taps(r, 0, xd[2], oh);
        let tx = Self::resize_taps(r, 1, xd[3], ow);
        let t = self.resize_tables(&name, &ty, &tx);
        let body = self.loops(&[xd[0] * xd[1], oh, ow], |_, i| {
            let (nc, oy, ox) = (i[0].clone(), i[1].clone(), i[2].clone());
            let plane = nc.clone() * (h * w);
            let at = |ty: BufId, tx: BufId| {
                Val::load(
                    x,
                    plane.clone() + Idx::Table(ty, Box::new(oy.clone())) * w + Idx::Table(tx, Box::new(ox.clone())),
                )
            };
            let v = match r.mode {
                ResizeMode::Nearest => at(t.y0, t.x0),
                ResizeMode::Bilinear => {
                    let wgt = |tb: BufId, i: &Idx| Val::load(tb, i.clone());
                    let row0 = wgt(t.wx0, &ox).mul(at(t.y0, t.x0)).add(wgt(t.wx1, &ox).mul(at(t.y0, t.x1)));
                    let row1 = wgt(t.wx0, &ox).mul(at(t.y1, t.x0)).add(wgt(t.wx1, &ox).mul(at(t.y1, t.x1)));
                    wgt(t.hy0, &oy).mul(row0).add(wgt(t.hy1, &oy).mul(row1))
                }
            };
            vec![Stmt::store(out, (nc * oh + oy) * ow + ox, v)]
        });
        Ok((body, (yd.iter().product::<usize>() * 8) as u64))
    }

    fn resize_tables(
        &mut self,
        name: &str,
        ty: &[(usize, usize, f32, f32)],
        tx: &[(usize, usize, f32, f32)],
    ) -> ResizeTables {
        let ints = |v: &[(usize, usize, f32, f32)], f: fn(&(usize, usize, f32, f32)) -> usize| {
            v.iter().map(|t| f(t) as i32).collect::<Vec<i32>>()
        };
        let floats = |v: &[(usize, usize, f32, f32)], f: fn(&(usize, usize, f32, f32)) -> f32| {
            v.iter().map(f).collect::<Vec<f32>>()
        };
        ResizeTables {
            y0: self.table_i32(format!("{name}.y0"), ints(ty, |t| t.0)),
            y1: self.table_i32(format!("{name}.y1"), ints(ty, |t| t.1)),
            x0: self.table_i32(format!("{name}.x0"), ints(tx, |t| t.0)),
            x1: self.table_i32(format!("{name}.x1"), ints(tx, |t| t.1)),
            hy0: self.table_f32(format!("{name}.hy0"), floats(ty, |t| t.2)),
            hy1: self.table_f32(format!("{name}.hy1"), floats(ty, |t| t.3)),
            wx0: self.table_f32(format!("{name}.wx0"), floats(tx, |t| t.2)),
            wx1: self.table_f32(format!("{name}.wx1"), floats(tx, |t| t.3)),
        }
    }

    pub(super) fn resize_grad(
        &mut self,
        id: NodeId,
        r: &Resize,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (yd, xd) = (self.dims(ins[0]), self.dims(id));
        let dy = self.buf(ins[0])?;
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let plane = (h * w) as usize;
        let name = self.graph.node(id).name.clone();
        let ty = Self::resize_taps(r, 0, xd[2], oh);
        let tx = Self::resize_taps(r, 1, xd[3], ow);
        let t = self.resize_tables(&name, &ty, &tx);
        let body = vec![self.loop_over(xd[0] * xd[1], |b, nc| {
            let base = nc.clone() * plane;
            let mut s = vec![b.zero_pass(out, base.clone(), plane)];
            s.extend(b.loops(&[oh, ow], |_, i| {
                let (oy, ox) = (i[0].clone(), i[1].clone());
                let g = Val::load(dy, (nc.clone() * oh + oy.clone()) * ow + ox.clone());
                let at = |ty: BufId, tx: BufId| {
                    base.clone() + Idx::Table(ty, Box::new(oy.clone())) * w + Idx::Table(tx, Box::new(ox.clone()))
                };
                match r.mode {
                    ResizeMode::Nearest => vec![Stmt::store_add(out, at(t.y0, t.x0), g)],
                    ResizeMode::Bilinear => {
                        let wgt = |tb: BufId, i: &Idx| Val::load(tb, i.clone());
                        let mut s = Vec::new();
                        for (yt, hw, xt, ww) in [
                            (t.y0, t.hy0, t.x0, t.wx0),
                            (t.y0, t.hy0, t.x1, t.wx1),
                            (t.y1, t.hy1, t.x0, t.wx0),
                            (t.y1, t.hy1, t.x1, t.wx1),
                        ] {
                            s.push(Stmt::store_add(out, at(yt, xt), wgt(hw, &oy).mul(wgt(ww, &ox)).mul(g.clone())));
                        }
                        s
                    }
                }
            }));
            s.extend(b.mask_pass(finish, base, plane));
            s
        })];
        Ok((body, (yd.iter().product::<usize>() * 8) as u64))
    }
}

/// Buffers of a resize's per-axis interpolation tables.
struct ResizeTables {
    y0: BufId,
    y1: BufId,
    x0: BufId,
    x1: BufId,
    hy0: BufId,
    hy1: BufId,
    wx0: BufId,
    wx1: BufId,
}

/// One destination position's taps along one axis: `(i0, i1, w0, w1)`
/// (PyTorch's `nearest` index in `i0`, or its bilinear taps and weights),
/// computed by the same rules the interpreter uses.
fn resize_tap(r: &Resize, axis: usize, dst: usize, in_len: usize, out_len: usize) -> (usize, usize, f32, f32) {
    match r.mode {
        ResizeMode::Nearest => {
            let i = r.nearest_source(axis, dst, in_len, out_len);
            (i, i, 1.0, 0.0)
        }
        ResizeMode::Bilinear => r.linear_taps(axis, dst, in_len, out_len),
    }
}
