//! Convolutions as matrix products, in the layouts `passes::layout` picks:
//! the forward pass (implicit im2col through a row table over the input or
//! over a padded copy of each image, columns wrapping across rows, or an
//! explicit im2col buffer) and the weight gradient (per-chunk partial sums
//! combined in a fixed order); the input gradient is `conv_input_grad`'s.

use super::{Builder, Finish, KernelBody, UNSCHEDULED_DOT, UNSCHEDULED_OUTER, make_kernel, unscheduled_micro};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::{Conv2d, PaddingMode};
use crate::passes::layout::{
    ForwardLayout, PhasePlanes, WeightGradLayout, forward_layout, weight_grad_layout, winograd_rows,
    winograd_rows_weight_grad,
};
use crate::passes::memory::READ_SLACK;

impl Builder<'_> {
    /// Writes image `n`'s im2col matrix `[C*KH*KW, OH*OW]` into `col`.
    fn im2col(&mut self, c: &Conv2d, xd: &[usize], yd: &[usize], x: BufId, n: Idx, col: BufId) -> Vec<Stmt> {
        let (ch, h, w) = (xd[1], xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let [kh, kw] = c.kernel;
        let p_len = (oh * ow) as i64;
        let x_off = n * (ch as i64 * h * w);
        let padded = c.padding != [0, 0];
        self.loops(&[ch, kh, kw, oh, ow], |_, i| {
            let (ci, ky, kx, oy, ox) = (&i[0], &i[1], &i[2], &i[3], &i[4]);
            let iy = oy.clone() * c.stride[0] + ky.clone() * c.dilation[0] - c.padding[0] as i64;
            let ix = ox.clone() * c.stride[1] + kx.clone() * c.dilation[1] - c.padding[1] as i64;
            let p = (ci.clone() * kh + ky.clone()) * kw + kx.clone();
            let dst = p * p_len + oy.clone() * ow + ox.clone();
            let base = x_off.clone() + ci.clone() * (h * w);
            let val = if !padded {
                Val::load(x, base + iy * w + ix)
            } else {
                let at = base + iy.clone().clamp(0, h - 1) * w + ix.clone().clamp(0, w - 1);
                match c.padding_mode {
                    PaddingMode::Replicate => Val::load(x, at),
                    PaddingMode::Zeros => Val::select(
                        Cond::in_range(iy, 0, h).and(Cond::in_range(ix, 0, w)),
                        Val::load(x, at),
                        Val::Const(0.0),
                    ),
                }
            };
            vec![Stmt::store(col, dst, val)]
        })
    }

    /// Writes image `n` of `x` into `dst` with its padding written out:
    /// rows of `pw + w + pw`, `ph` extra rows above and below, filled with
    /// zeros or the replicated border. The interior of each row is one
    /// contiguous copy (a vector loop); rows and columns outside the image
    /// read the clamped border, or store zeros.
    pub(super) fn pad_image(&mut self, c: &Conv2d, xd: &[usize], x: BufId, n: Idx, dst: BufId) -> Vec<Stmt> {
        let (ch, h, w) = (xd[1], xd[2], xd[3]);
        let [ph, pw] = c.padding;
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let zeros = c.padding_mode == PaddingMode::Zeros;
        let image = n * (ch * h * w) as i64;
        self.loops(&[ch, hp], |b, i| {
            let (ci, y) = (&i[0], &i[1]);
            let row = (ci.clone() * hp as i64 + y.clone()) * wp as i64;
            let source_row =
                image.clone() + ci.clone() * (h * w) as i64 + (y.clone() - ph as i64).clamp(0, h as i64 - 1) * w as i64;
            let border = |b: &mut Builder<'_>, from: usize, column: i64| {
                b.loop_over(pw, |_, e| {
                    let val = if zeros { Val::Const(0.0) } else { Val::load(x, source_row.clone() + column) };
                    vec![Stmt::store(dst, row.clone() + from as i64 + e, val)]
                })
            };
            let mut inside = Vec::new();
            if pw > 0 {
                inside.push(border(b, 0, 0));
            }
            inside.push(b.loop_over(w, |_, e| {
                vec![Stmt::store(dst, row.clone() + pw as i64 + e.clone(), Val::load(x, source_row.clone() + e))]
            }));
            if pw > 0 {
                inside.push(border(b, pw + w, w as i64 - 1));
            }
            if !zeros || ph == 0 {
                return inside;
            }
            let blank = vec![b.loop_over(wp, |_, e| vec![Stmt::store(dst, row.clone() + e, Val::Const(0.0))])];
            vec![Stmt::If { cond: Cond::in_range(y.clone() - ph as i64, 0, h as i64), then: inside, otherwise: blank }]
        })
    }

    /// Writes image `n` of `x` into `dst` as the stride phases `planes` of
    /// its padded image (see [`PhasePlanes`]): zeros or the replicated
    /// border outside the image. Each plane row is a strided copy of an
    /// input row between its border runs, or a blank row.
    fn phase_image(
        &mut self,
        c: &Conv2d,
        xd: &[usize],
        planes: &PhasePlanes,
        x: BufId,
        n: Idx,
        dst: BufId,
    ) -> Vec<Stmt> {
        let (ch, h, w) = (xd[1], xd[2] as i64, xd[3] as i64);
        let [sy, sx] = [c.stride[0] as i64, c.stride[1] as i64];
        let [py, px] = [c.padding[0] as i64, c.padding[1] as i64];
        let zeros = c.padding_mode == PaddingMode::Zeros;
        let image = n * (ch as i64 * h * w);
        let (height, width) = (planes.height, planes.width as i64);
        let per_channel = planes.per_channel() as i64;
        let mut body = Vec::new();
        for (phase_y, &ry) in planes.rows.iter().enumerate() {
            for (phase_x, &cx) in planes.cols.iter().enumerate() {
                let plane = (phase_y * planes.cols.len() + phase_x) as i64;
                let cx = cx as i64;
                // The plane's columns `lo..hi` read input columns `cx + sx j - px` inside the image.
                let columns_from = |x: i64| (x.max(0) as u64).div_ceil(sx as u64) as i64;
                let lo = columns_from(px - cx).min(width);
                let hi = columns_from(w + px - cx).clamp(lo, width);
                body.extend(self.loops(&[ch, height], |b, i| {
                    let (ci, row) = (&i[0], &i[1]);
                    let to = ((ci.clone() * per_channel + plane) * height as i64 + row.clone()) * width;
                    let y = row.clone() * sy + (ry as i64 - py);
                    let from = image.clone() + ci.clone() * (h * w) + y.clone().clamp(0, h - 1) * w;
                    let border = |b: &mut Builder<'_>, start: i64, len: i64, column: i64| {
                        (len > 0).then(|| {
                            b.loop_over(len as usize, |_, e| {
                                let val = if zeros { Val::Const(0.0) } else { Val::load(x, from.clone() + column) };
                                vec![Stmt::store(dst, to.clone() + start + e, val)]
                            })
                        })
                    };
                    let mut inside: Vec<Stmt> = border(b, 0, lo, 0).into_iter().collect();
                    if hi > lo {
                        let first = cx + sx * lo - px;
                        inside.push(b.loop_over((hi - lo) as usize, |_, e| {
                            let val = Val::load(x, from.clone() + first + e.clone() * sx);
                            vec![Stmt::store(dst, to.clone() + lo + e, val)]
                        }));
                    }
                    inside.extend(border(b, hi, width - hi, w - 1));
                    if !zeros {
                        return inside;
                    }
                    let blank = vec![
                        b.loop_over(width as usize, |_, e| vec![Stmt::store(dst, to.clone() + e, Val::Const(0.0))]),
                    ];
                    vec![Stmt::If { cond: Cond::in_range(y, 0, h), then: inside, otherwise: blank }]
                }));
            }
        }
        body
    }

    /// Writes image `n` of `x` into the copy `copy` makes, if any.
    fn copy_image(&mut self, c: &Conv2d, xd: &[usize], copy: &ImageCopy, x: BufId, n: Idx, dst: BufId) -> Vec<Stmt> {
        match copy {
            ImageCopy::None => Vec::new(),
            ImageCopy::Padded => self.pad_image(c, xd, x, n, dst),
            ImageCopy::Phased(planes) => self.phase_image(c, xd, planes, x, n, dst),
        }
    }

    /// The rows an in-place product reads, B's row `(ci, ky, kx)` the input
    /// row that tap reads (implicit im2col): offsets in the input, or in a
    /// per-thread copy of each image, its border written out (`copy`
    /// padded) or split into stride phases. Returns the buffer read, its
    /// distance between images and the table.
    pub(super) fn in_place_rows(
        &mut self,
        name: &str,
        c: &Conv2d,
        xd: &[usize],
        copy: &ImageCopy,
        x: BufId,
    ) -> (BufId, usize, BufId) {
        let (ch, h, w_in) = (xd[1], xd[2] + 2 * c.padding[0], xd[3] + 2 * c.padding[1]);
        let [kh, kw] = c.kernel;
        let taps = (0..ch).flat_map(|ci| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| [ci, ky, kx])));
        let (source, image, rows): (BufId, usize, Vec<i32>) = match copy {
            ImageCopy::Phased(planes) => {
                // (With room for a partial vector read past the last row:
                // per-thread copies lie end to end.)
                let len = ch * planes.per_channel() * planes.height * planes.width + READ_SLACK;
                let source = self.scratch(format!("{name}.phases"), len, true);
                (source, 0, taps.map(|tap| planes.tap(c, tap) as i32).collect())
            }
            _ => {
                let (source, image) = if matches!(copy, ImageCopy::Padded) {
                    (self.scratch(format!("{name}.padded"), ch * h * w_in + READ_SLACK, true), 0)
                } else {
                    (x, ch * h * w_in)
                };
                let offset = |[ci, ky, kx]: [usize; 3]| ci * h * w_in + ky * c.dilation[0] * w_in + kx * c.dilation[1];
                (source, image, taps.map(|tap| offset(tap) as i32).collect())
            }
        };
        (source, image, self.table_i32(format!("{name}.rows"), rows))
    }

    /// One product per image of `c` over `x` (dims `xd`, output dims `yd`)
    /// into `finish.out`, its columns (output positions) wrapping from
    /// input row to input row (`wrap`), so no lanes are wasted at the end
    /// of each row; B read through `rows`, A = `weights` (`o x k`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn wrapped_products(
        &mut self,
        c: &Conv2d,
        [xd, yd]: [&[usize]; 2],
        x: BufId,
        rows: InPlaceRows,
        (weights, splat, tile): (MatrixRef, bool, GemmTile),
        wrap: ColumnWrap,
        finish: &Finish,
        bias: Option<Bias>,
    ) -> Vec<Stmt> {
        let (o, p) = (yd[1], yd[2] * yd[3]);
        let k = xd[1] * c.kernel[0] * c.kernel[1];
        let InPlaceRows { source, image, table, copy } = rows;
        // Phase planes have adjacent columns; otherwise B steps by the stride.
        let col_stride = if matches!(copy, ImageCopy::Phased(_)) { 1 } else { c.stride[1] as i64 };
        vec![self.loop_over(xd[0], |b, n| {
            let mut s = b.copy_image(c, xd, &copy, x, n.clone(), source);
            let cm = MatrixRef { buf: finish.out, offset: n.clone() * (o * p), row_stride: p as i64, col_stride: 1 };
            let epilogue = b.forward_epilogue(finish, &cm, bias.clone());
            s.push(Stmt::Gemm(Box::new(Gemm {
                m: o,
                n: p,
                k,
                a: weights.clone(),
                b: MatrixRef { buf: source, offset: n * image, row_stride: 0, col_stride },
                c: cm,
                epilogue,
                b_rows: Some(table),
                k_split: None,
                b_wrap: Some(wrap),
                c_rows: None,
                c_wrap: None,
                a_splat: splat,
                tile,
            })));
            s
        })]
    }

    pub(super) fn conv2d(
        &mut self,
        id: NodeId,
        c: &Conv2d,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (xd, wd, yd) = (self.dims(ins[0]), self.dims(ins[1]), self.dims(id));
        let (x, w) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let bias = ins.get(2).map(|&b| self.buf(b)).transpose()?;
        let (o, k, p) = (wd[0], wd[1] * wd[2] * wd[3], yd[2] * yd[3]);
        let out = finish.out;
        let epi_finish = Finish { out, activation: finish.activation, pre: finish.pre, mask: None };
        let layout = forward_layout(c, &xd, &yd, &self.prog.target);
        if let Some(outputs) = winograd_rows(c, &xd, &yd, &self.prog.target) {
            let body = self.winograd_rows_products(id, (c, outputs), [&xd, &yd], x, (w, false), &epi_finish, bias);
            return Ok((body, 2 * (xd[0] * o * k * p) as u64));
        }
        if let ForwardLayout::InPlace { wrap, pad_copy, splat, phased } = layout {
            let copy = if phased {
                ImageCopy::Phased(PhasePlanes::of(c, &yd))
            } else if pad_copy {
                ImageCopy::Padded
            } else {
                ImageCopy::None
            };
            let (source, image, table) = self.in_place_rows(&self.graph.node(id).name.clone(), c, &xd, &copy, x);
            let (oh, ow) = (yd[2], yd[3]);
            let w_in = xd[3] + 2 * c.padding[1];
            let weights = if splat {
                // The weights splatted to one vector each once per run, in a
                // kernel of their own.
                let lanes = self.prog.target.vector_lanes;
                let name = self.graph.node(id).name.clone();
                let w4 = self.scratch(format!("{name}.weight_x{lanes}"), o * k * lanes, false);
                let body = vec![self.loop_over(o * k, |b, e| {
                    vec![b.loop_over(lanes, |_, l| {
                        vec![Stmt::store(w4, e.clone() * lanes as i64 + l, Val::load(w, e.clone()))]
                    })]
                })];
                self.pre_kernels.push(make_kernel(format!("{name}.splat_weight"), vec![id], body, 0));
                MatrixRef { buf: w4, offset: Idx::Const(0), row_stride: (lanes * k) as i64, col_stride: lanes as i64 }
            } else {
                MatrixRef { buf: w, offset: Idx::Const(0), row_stride: k as i64, col_stride: 1 }
            };
            // Unsplatted weights are read by the wide micro-kernels.
            let tile = if splat { UNSCHEDULED_OUTER } else { unscheduled_micro(self.prog.target.products) };
            // Output rows that are not whole vectors: one product per image
            // whose columns (output positions) wrap from input row to input
            // row, so no lanes are wasted at the end of each row.
            if let Some(wrap) = wrap {
                let rows = InPlaceRows { source, image, table, copy };
                let bias = bias.map(|bb| Bias::PerRow(bb, Idx::Const(0)));
                let body =
                    self.wrapped_products(c, [&xd, &yd], x, rows, (weights, splat, tile), wrap, &epi_finish, bias);
                return Ok((body, 2 * (xd[0] * o * k * p) as u64));
            }
            let body = vec![self.loop_over(xd[0], |b, n| {
                let mut s = if pad_copy { b.pad_image(c, &xd, x, n.clone(), source) } else { Vec::new() };
                s.push(b.loop_over(oh, |b, oy| {
                    let cm = MatrixRef {
                        buf: out,
                        offset: n.clone() * (o * p) + oy.clone() * ow,
                        row_stride: p as i64,
                        col_stride: 1,
                    };
                    let epilogue = b.forward_epilogue(&epi_finish, &cm, bias.map(|bb| Bias::PerRow(bb, Idx::Const(0))));
                    vec![Stmt::Gemm(Box::new(Gemm {
                        m: o,
                        n: ow,
                        k,
                        a: weights.clone(),
                        b: MatrixRef {
                            buf: source,
                            offset: n.clone() * image + oy * (c.stride[0] * w_in),
                            row_stride: 0,
                            col_stride: 1,
                        },
                        c: cm,
                        epilogue,
                        b_rows: Some(table),
                        k_split: None,
                        b_wrap: None,
                        c_rows: None,
                        c_wrap: None,
                        a_splat: splat,
                        tile,
                    }))]
                }));
                s
            })];
            return Ok((body, 2 * (xd[0] * o * k * p) as u64));
        }
        let col = self.scratch(format!("{}.im2col", self.graph.node(id).name), k * p, true);
        let body = vec![self.loop_over(xd[0], |b, n| {
            let mut s = b.im2col(c, &xd, &yd, x, n.clone(), col);
            let cm = MatrixRef { buf: out, offset: n * (o * p), row_stride: p as i64, col_stride: 1 };
            let epilogue = b.forward_epilogue(&epi_finish, &cm, bias.map(|bb| Bias::PerRow(bb, Idx::Const(0))));
            s.push(Stmt::Gemm(Box::new(Gemm {
                m: o,
                n: p,
                k,
                a: MatrixRef { buf: w, offset: Idx::Const(0), row_stride: k as i64, col_stride: 1 },
                b: MatrixRef { buf: col, offset: Idx::Const(0), row_stride: p as i64, col_stride: 1 },
                c: cm,
                epilogue,
                b_rows: None,
                k_split: None,
                b_wrap: None,
                c_rows: None,
                c_wrap: None,
                a_splat: false,
                tile: UNSCHEDULED_OUTER,
            })));
            s
        })];
        Ok((body, 2 * (xd[0] * o * k * p) as u64))
    }

    pub(super) fn conv2d_grad_weight(
        &mut self,
        id: NodeId,
        c: &Conv2d,
        ins: &[NodeId],
        name: String,
        nodes: &[NodeId],
    ) -> Result<Vec<Kernel>, BuildError> {
        let (xd, yd, wd) = (self.dims(ins[0]), self.dims(ins[1]), self.dims(id));
        let (x, dy) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let out = self.buf(id)?;
        let (o, k, p) = (wd[0], wd[1] * wd[2] * wd[3], yd[2] * yd[3]);
        let batch = xd[0];
        let chunks = largest_divisor_at_most(batch, 8);
        let per_chunk = batch / chunks;
        let node_name = self.graph.node(id).name.clone();
        let (split, pad_copy) = match weight_grad_layout(c, &xd, &yd, &self.prog.target) {
            WeightGradLayout::InPlace { split, pad_copy, micro } => (Some((split, micro)), pad_copy),
            WeightGradLayout::Packed => (None, false),
        };
        let target =
            if chunks > 1 { self.scratch(format!("{node_name}.partials"), chunks * o * k, false) } else { out };
        let winograd =
            winograd_rows_weight_grad(c, &xd, &yd, &self.prog.target).filter(|_| matches!(split, Some((_, true))));
        if let Some(outputs) = winograd {
            let parts = (chunks, per_chunk);
            let body = self.winograd_rows_weight_grad(&node_name, (c, outputs), [&xd, &yd], [x, dy], target, parts);
            let flops = 2 * (batch * o * k * p) as u64;
            let mut kernels = vec![make_kernel(name.clone(), nodes.to_vec(), body, flops)];
            kernels.extend(self.combine_chunks(&name, nodes, (target, out), chunks, o * k));
            return Ok(kernels);
        }
        let implicit = split.is_some();
        let col = if implicit { 0 } else { self.scratch(format!("{node_name}.im2col"), k * p, true) };
        // The image the in-place product reads: the input, or its padded copy.
        let (ch, h, w_in) = (xd[1], xd[2] + 2 * c.padding[0], xd[3] + 2 * c.padding[1]);
        let (source, image) = if pad_copy {
            (self.scratch(format!("{node_name}.padded"), ch * h * w_in, true), 0)
        } else {
            (x, ch * h * w_in)
        };
        let table = implicit.then(|| {
            let mut rows = Vec::with_capacity(k);
            for ci in 0..ch {
                for ky in 0..c.kernel[0] {
                    for kx in 0..c.kernel[1] {
                        rows.push((ci * h * w_in + ky * c.dilation[0] * w_in + kx * c.dilation[1]) as i32);
                    }
                }
            }
            self.table_i32(format!("{node_name}.rows"), rows)
        });
        let flops = 2 * (batch * o * k * p) as u64;
        // A product laid out for the micro-kernels runs transposed there.
        let tile = match split {
            Some((_, true)) => {
                GemmTile::Micro { isa: self.prog.target.products, rows: 1, vectors: 1, transposed: true }
            }
            _ => UNSCHEDULED_DOT,
        };
        let body = vec![self.loop_over(chunks, |b, q| {
            let base = q.clone() * (o * k);
            let mut s = vec![b.zero_pass(target, base.clone(), o * k)];
            s.push(b.loop_over(per_chunk, |b, i| {
                let n = q.clone() * per_chunk + i;
                if let Some(table) = table {
                    // dW[o, p] += sum over output rows and columns of
                    // dy[o, oy, ox] * x[row p, oy * sh + ox], read in place.
                    let mut s = if pad_copy { b.pad_image(c, &xd, x, n.clone(), source) } else { Vec::new() };
                    s.push(Stmt::Gemm(Box::new(Gemm {
                        m: o,
                        n: k,
                        k: p,
                        a: MatrixRef { buf: dy, offset: n.clone() * (o * p), row_stride: p as i64, col_stride: 1 },
                        b: MatrixRef { buf: source, offset: n * image, row_stride: c.stride[1] as i64, col_stride: 0 },
                        c: MatrixRef { buf: target, offset: base.clone(), row_stride: k as i64, col_stride: 1 },
                        epilogue: Epilogue { accumulate: true, ..Epilogue::default() },
                        b_rows: Some(table),
                        a_splat: false,
                        k_split: split.map(|(s, _)| s),
                        b_wrap: None,
                        c_rows: None,
                        c_wrap: None,
                        tile,
                    })));
                    return s;
                }
                let mut s = b.im2col(c, &xd, &yd, x, n.clone(), col);
                s.push(Stmt::Gemm(Box::new(Gemm {
                    m: o,
                    n: k,
                    k: p,
                    a: MatrixRef { buf: dy, offset: n * (o * p), row_stride: p as i64, col_stride: 1 },
                    b: MatrixRef { buf: col, offset: Idx::Const(0), row_stride: 1, col_stride: p as i64 },
                    c: MatrixRef { buf: target, offset: base.clone(), row_stride: k as i64, col_stride: 1 },
                    epilogue: Epilogue { accumulate: true, ..Epilogue::default() },
                    b_rows: None,
                    k_split: None,
                    b_wrap: None,
                    c_rows: None,
                    c_wrap: None,
                    a_splat: false,
                    tile: UNSCHEDULED_DOT,
                })));
                s
            }));
            s
        })];
        let mut kernels = vec![make_kernel(name.clone(), nodes.to_vec(), body, flops)];
        kernels.extend(self.combine_chunks(&name, nodes, (target, out), chunks, o * k));
        Ok(kernels)
    }

    /// The kernel adding `chunks` partial sums of `len` elements in
    /// `partials` into `out`, in chunk order (none for one chunk, which
    /// was summed in `out`).
    fn combine_chunks(
        &mut self,
        name: &str,
        nodes: &[NodeId],
        (partials, out): (BufId, BufId),
        chunks: usize,
        len: usize,
    ) -> Option<Kernel> {
        if chunks <= 1 {
            return None;
        }
        let body = vec![self.loop_over(len, |b, e| {
            let acc = b.acc();
            vec![
                Stmt::Let { acc, init: Val::load(partials, e.clone()) },
                b.loop_over(chunks - 1, |_, q| {
                    vec![Stmt::Reduce { acc, op: RedOp::Add, val: Val::load(partials, (q + 1i64) * len + e.clone()) }]
                }),
                Stmt::store(out, e, Val::Acc(acc)),
            ]
        })];
        Some(make_kernel(format!("{name}.combine"), nodes.to_vec(), body, (chunks * len) as u64))
    }
}

/// The largest divisor of `n` that is at most `cap`.
fn largest_divisor_at_most(n: usize, cap: usize) -> usize {
    (1..=cap.min(n).max(1)).rev().find(|&d| n.is_multiple_of(d)).unwrap_or(1)
}

/// The copy of each image an in-place product reads, if any.
#[derive(Clone, Debug)]
pub(super) enum ImageCopy {
    /// The input itself.
    None,
    /// The padded image, its border written out.
    Padded,
    /// The padded image's stride phases.
    Phased(PhasePlanes),
}

/// What [`Builder::in_place_rows`] set up for an in-place product.
#[derive(Clone)]
pub(super) struct InPlaceRows {
    pub(super) source: BufId,
    pub(super) image: usize,
    pub(super) table: BufId,
    pub(super) copy: ImageCopy,
}
