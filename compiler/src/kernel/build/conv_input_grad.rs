//! A convolution's input gradient, in the layout `passes::layout` picks:
//! the forward convolution of the output gradient with the kernel flipped
//! (unit stride), col2im fused into the product's stores (scattered into
//! the image, a padded copy of it, or a strided convolution's stride
//! phases), or a `dcol` buffer scattered back.

use super::conv::{ImageCopy, InPlaceRows};
use super::{Builder, Finish, KernelBody, UNSCHEDULED_OUTER, make_kernel, unscheduled_micro};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::{Conv2d, PaddingMode};
use crate::passes::layout::{InputGradLayout, ScatterPhases, input_grad_layout, winograd_rows};

impl Builder<'_> {
    /// A convolution's input gradient with col2im fused into the product: row `r` of `W^T dY` is a kernel tap, whose
    /// products are added straight into the image at that tap's offset
    /// (`c_rows`), the output positions wrapping into the image's wider rows
    /// (`c_wrap`). Taps are ordered by kernel column first, so the rows of one
    /// register tile land on different image rows: no add reads a vector that
    /// the previous add just half-wrote. The weights are transposed into that
    /// order and splatted to `f32x4` once per run, in a kernel of their own.
    fn conv2d_grad_input_scattered(
        &mut self,
        id: NodeId,
        c: &Conv2d,
        [batch, o, ch, h, wi, p]: [usize; 6],
        (wrap, padded, micro, phases): (ColumnWrap, bool, bool, Option<ScatterPhases>),
        [dy, w]: [BufId; 2],
        finish: &Finish,
    ) -> KernelBody {
        let [kh, kw] = c.kernel;
        let k = ch * kh * kw;
        let name = self.graph.node(id).name.clone();
        let (image_h, image_w) = (h, wi);
        // The image the taps land in: the gradient itself, a padded one
        // whose interior is copied out afterwards, or the padded one's
        // stride phases, copied back into the gradient's order.
        let [ph, pw] = if padded || phases.is_some() { c.padding } else { [0, 0] };
        let (h, wi) = (h + 2 * ph, wi + 2 * pw);
        // Row r = (kx, ci, ky), kernel column first.
        let mut offsets = Vec::with_capacity(k);
        for kx in 0..kw {
            for ci in 0..ch {
                for ky in 0..kh {
                    offsets.push(match phases {
                        Some(phases) => phases.tap(c, [ci, ky, kx]) as i32,
                        None => (ci * h * wi + ky * c.dilation[0] * wi + kx * c.dilation[1]) as i32,
                    });
                }
            }
        }
        let table = self.table_i32(format!("{name}.taps"), offsets);
        // Splatted for 128-bit outer tiles; the micro-kernels broadcast.
        let lanes = if micro { 1 } else { self.prog.target.vector_lanes };
        let wt4 = self.scratch(format!("{name}.weight_t{lanes}"), k * o * lanes, false);
        // wt4[((kx * ch + ci) * kh + ky) * o + co][lane] = w[co][ci][ky][kx]
        let prep = self.loops(&[kw, ch, kh, o, lanes], |_, i| {
            let (kx, ci, ky, co, l) = (&i[0], &i[1], &i[2], &i[3], &i[4]);
            let r = (kx.clone() * ch as i64 + ci.clone()) * kh as i64 + ky.clone();
            let at = (r * o as i64 + co.clone()) * lanes as i64 + l.clone();
            let from = co.clone() * k as i64 + (ci.clone() * kh as i64 + ky.clone()) * kw as i64 + kx.clone();
            vec![Stmt::store(wt4, at, Val::load(w, from))]
        });
        self.pre_kernels.push(make_kernel(format!("{name}.transpose_weight"), vec![id], prep, 0));
        let out = finish.out;
        let image = ch * image_h * image_w;
        let scatter_len = match phases {
            Some(phases) => ch * ScatterPhases::per_channel(c) * phases.height * phases.width,
            None => ch * h * wi,
        };
        let scatter = match (phases, padded) {
            (Some(_), _) => self.scratch(format!("{name}.phases"), scatter_len, true),
            (None, true) => self.scratch(format!("{name}.padded"), scatter_len, true),
            (None, false) => out,
        };
        let col_stride = if phases.is_some() { 1 } else { c.stride[1] as i64 };
        let tile = if micro { unscheduled_micro(self.prog.target.products) } else { UNSCHEDULED_OUTER };
        let body = vec![self.loop_over(batch, |b, n| {
            let base = n.clone() * image;
            let scatter_base = if scatter == out { base.clone() } else { Idx::Const(0) };
            let mut s = vec![b.zero_pass(scatter, scatter_base.clone(), scatter_len)];
            s.push(Stmt::Gemm(Box::new(Gemm {
                m: k,
                n: p,
                k: o,
                a: MatrixRef {
                    buf: wt4,
                    offset: Idx::Const(0),
                    row_stride: (lanes * o) as i64,
                    col_stride: lanes as i64,
                },
                b: MatrixRef { buf: dy, offset: n * (o * p), row_stride: p as i64, col_stride: 1 },
                c: MatrixRef { buf: scatter, offset: scatter_base, row_stride: 0, col_stride },
                epilogue: Epilogue { accumulate: true, ..Epilogue::default() },
                b_rows: None,
                k_split: None,
                b_wrap: None,
                c_rows: Some(table),
                c_wrap: Some(wrap),
                a_splat: !micro,
                tile,
            })));
            if let Some(phases) = phases {
                s.extend(b.unphase_image(c, [ch, image_h, image_w], &phases, scatter, out, base.clone()));
            } else if padded {
                // The interior of the padded image is the gradient.
                s.extend(b.loops(&[ch, image_h], |b, i| {
                    let (ci, y) = (&i[0], &i[1]);
                    let to = base.clone() + (ci.clone() * image_h as i64 + y.clone()) * image_w as i64;
                    let from = (ci.clone() * h as i64 + y.clone() + ph as i64) * wi as i64 + pw as i64;
                    vec![b.loop_over(image_w, |_, e| {
                        vec![Stmt::store(out, to.clone() + e.clone(), Val::load(scatter, from.clone() + e))]
                    })]
                }));
            }
            s.extend(b.mask_pass(finish, base, image));
            s
        })];
        (body, 2 * (batch * o * k * p) as u64)
    }

    /// Copies the image `[ch, h, w]` at `base` of `out` from its padded
    /// stride phases in `planes` (see [`ScatterPhases`]): plane row by plane
    /// row, each phase's run stored a stride apart; the border is dropped.
    fn unphase_image(
        &mut self,
        c: &Conv2d,
        [ch, h, w]: [usize; 3],
        phases: &ScatterPhases,
        planes: BufId,
        out: BufId,
        base: Idx,
    ) -> Vec<Stmt> {
        let [sy, sx] = [c.stride[0] as i64, c.stride[1] as i64];
        let [py, px] = [c.padding[0] as i64, c.padding[1] as i64];
        let (height, width) = (phases.height as i64, phases.width as i64);
        let (h, w) = (h as i64, w as i64);
        self.loops(&[ch, phases.height], |b, i| {
            let (ci, row) = (&i[0], &i[1]);
            let mut body = Vec::new();
            for ry in 0..sy {
                // Image row `sy row + ry - py`, when inside the image.
                let y = row.clone() * sy + (ry - py);
                let mut runs = Vec::new();
                for cx in 0..sx {
                    // Plane columns `lo..hi` hold image columns `sx j + cx - px` inside it.
                    let columns_from = |x: i64| (x.max(0) as u64).div_ceil(sx as u64) as i64;
                    let lo = columns_from(px - cx).min(width);
                    let hi = columns_from(w + px - cx).clamp(lo, width);
                    if hi == lo {
                        continue;
                    }
                    let plane = (ci.clone() * sy + ry) * sx + cx;
                    let from = (plane * height + row.clone()) * width;
                    // Clamped for the static bounds check; the condition keeps it in range.
                    let to = base.clone() + (ci.clone() * h + y.clone().clamp(0, h - 1)) * w + (cx - px);
                    runs.push(b.loop_over((hi - lo) as usize, |_, e| {
                        let j = e + lo;
                        vec![Stmt::store(out, to.clone() + j.clone() * sx, Val::load(planes, from.clone() + j))]
                    }));
                }
                body.push(Stmt::If { cond: Cond::in_range(y, 0, h), then: runs, otherwise: Vec::new() });
            }
            body
        })
    }

    /// A unit-stride input gradient as the forward convolution `conv` of
    /// the output gradient (see [`InputGradLayout::Gathered`]): the weights
    /// flipped and transposed once per run in a kernel of their own, then
    /// one wrapped product per image, the activation's derivative applied
    /// in its epilogue.
    fn conv2d_grad_input_gathered(
        &mut self,
        id: NodeId,
        conv: &Conv2d,
        [yd, xd]: [&[usize]; 2],
        (wrap, pad_copy): (ColumnWrap, bool),
        [dy, w]: [BufId; 2],
        finish: &Finish,
    ) -> KernelBody {
        let name = self.graph.node(id).name.clone();
        let [kh, kw] = conv.kernel;
        let (o, ch) = (yd[1], xd[1]);
        let k = o * kh * kw;
        let flops = 2 * (xd[0] * ch * k * xd[2] * xd[3]) as u64;
        if let Some(outputs) = winograd_rows(conv, yd, xd, &self.prog.target) {
            // The transform reads the weights flipped and transposed itself.
            let finish = Finish { out: finish.out, activation: None, pre: None, mask: finish.mask };
            return (self.winograd_rows_products(id, (conv, outputs), [yd, xd], dy, (w, true), &finish, None), flops);
        }
        let flipped = self.scratch(format!("{name}.weight_flipped"), ch * k, false);
        // flipped[ci][co][ky][kx] = w[co][ci][kh - 1 - ky][kw - 1 - kx]
        let prep = self.loops(&[ch, o, kh, kw], |_, i| {
            let (ci, co, ky, kx) = (&i[0], &i[1], &i[2], &i[3]);
            let at = ((ci.clone() * o as i64 + co.clone()) * kh as i64 + ky.clone()) * kw as i64 + kx.clone();
            let (fy, fx) = (ky.clone() * -1i64 + (kh as i64 - 1), kx.clone() * -1i64 + (kw as i64 - 1));
            let from = ((co.clone() * ch as i64 + ci.clone()) * kh as i64 + fy) * kw as i64 + fx;
            vec![Stmt::store(flipped, at, Val::load(w, from))]
        });
        self.pre_kernels.push(make_kernel(format!("{name}.flip_weight"), vec![id], prep, 0));
        let copy = if pad_copy { ImageCopy::Padded } else { ImageCopy::None };
        let (source, image, table) = self.in_place_rows(&name, conv, yd, &copy, dy);
        let rows = InPlaceRows { source, image, table, copy };
        let weights = MatrixRef { buf: flipped, offset: Idx::Const(0), row_stride: k as i64, col_stride: 1 };
        let tile = unscheduled_micro(self.prog.target.products);
        let finish = Finish { out: finish.out, activation: None, pre: None, mask: finish.mask };
        let body = self.wrapped_products(conv, [yd, xd], dy, rows, (weights, false, tile), wrap, &finish, None);
        (body, flops)
    }

    pub(super) fn conv2d_grad_input(
        &mut self,
        id: NodeId,
        c: &Conv2d,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (yd, wd, xd) = (self.dims(ins[0]), self.dims(ins[1]), self.dims(id));
        let (dy, w) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let (o, k, p) = (wd[0], wd[1] * wd[2] * wd[3], yd[2] * yd[3]);
        let (ch, h, wi) = (xd[1], xd[2] as i64, xd[3] as i64);
        let [kh, kw] = c.kernel;
        let (oh, ow) = (yd[2], yd[3]);
        let out = finish.out;
        let image = ch * (h * wi) as usize;
        match input_grad_layout(c, &xd, &yd, &self.prog.target) {
            InputGradLayout::Scattered { wrap, padded, micro, phased } => {
                let dims = [xd[0], o, ch, h as usize, wi as usize, p];
                let phases = phased.then(|| ScatterPhases::of(c, &xd, &yd));
                let layout = (wrap, padded, micro, phases);
                return Ok(self.conv2d_grad_input_scattered(id, c, dims, layout, [dy, w], finish));
            }
            InputGradLayout::Gathered { conv, wrap, pad_copy } => {
                return Ok(self.conv2d_grad_input_gathered(id, &conv, [&yd, &xd], (wrap, pad_copy), [dy, w], finish));
            }
            InputGradLayout::PackedColumns => {}
        }
        let dcol = self.scratch(format!("{}.dcol", self.graph.node(id).name), k * p, true);
        let body = vec![self.loop_over(xd[0], |b, n| {
            let mut s = vec![Stmt::Gemm(Box::new(Gemm {
                m: k,
                n: p,
                k: o,
                a: MatrixRef { buf: w, offset: Idx::Const(0), row_stride: 1, col_stride: k as i64 },
                b: MatrixRef { buf: dy, offset: n.clone() * (o * p), row_stride: p as i64, col_stride: 1 },
                c: MatrixRef { buf: dcol, offset: Idx::Const(0), row_stride: p as i64, col_stride: 1 },
                epilogue: Epilogue::default(),
                b_rows: None,
                k_split: None,
                b_wrap: None,
                c_rows: None,
                c_wrap: None,
                a_splat: false,
                tile: UNSCHEDULED_OUTER,
            }))];
            let base = n.clone() * image;
            s.push(b.zero_pass(out, base.clone(), image));
            let padded = c.padding != [0, 0];
            s.extend(b.loops(&[ch, kh, kw, oh, ow], |_, i| {
                let (ci, ky, kx, oy, ox) = (&i[0], &i[1], &i[2], &i[3], &i[4]);
                let iy = oy.clone() * c.stride[0] + ky.clone() * c.dilation[0] - c.padding[0] as i64;
                let ix = ox.clone() * c.stride[1] + kx.clone() * c.dilation[1] - c.padding[1] as i64;
                let pp = (ci.clone() * kh + ky.clone()) * kw + kx.clone();
                let src = Val::load(dcol, pp * (p as i64) + oy.clone() * ow + ox.clone());
                let plane = base.clone() + ci.clone() * (h * wi);
                if !padded {
                    return vec![Stmt::store_add(out, plane + iy * wi + ix, src)];
                }
                let at = plane + iy.clone().clamp(0, h - 1) * wi + ix.clone().clamp(0, wi - 1);
                match c.padding_mode {
                    PaddingMode::Replicate => vec![Stmt::store_add(out, at, src)],
                    PaddingMode::Zeros => vec![Stmt::If {
                        cond: Cond::in_range(iy, 0, h).and(Cond::in_range(ix, 0, wi)),
                        then: vec![Stmt::store_add(out, at, src)],
                        otherwise: vec![],
                    }],
                }
            }));
            s.extend(b.mask_pass(finish, base, image));
            s
        })];
        Ok((body, 2 * (xd[0] * o * k * p) as u64))
    }
}
