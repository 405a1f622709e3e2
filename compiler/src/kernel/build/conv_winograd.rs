//! A unit-stride convolution with three kernel rows as Winograd's minimal
//! filtering F(m, 3) down the columns, m = 4 or 2: each group of `m`
//! output rows from `m + 2` input rows with `m + 2` products where the
//! direct form takes `3 m`, so the matrix products do half (F(4, 3)) or
//! two thirds (F(2, 3)) of the multiply-adds (the layout pass,
//! [`winograd_rows`](crate::passes::layout::winograd_rows), decides
//! which, if either, pays). The transforms combine whole rows, so every
//! loop of them is a unit-stride vector loop; across each row the
//! convolution stays direct (any kernel width, dilation and padding),
//! read in place through a row table with wrapped columns as the direct
//! form's is. One dimension keeps the transforms' rounding small: in
//! float32, F(4, 3) on random rows stays within 2e-6 of the largest
//! input times the largest weight.
//!
//! With `d_r` the padded image's row `m t + r`, `g_y` the kernel's row
//! `y` and `U_i = sum_y KERNEL[i][y] g_y`, `V_i = sum_r INPUT[i][r] d_r`,
//! output row `m t + o` is `sum_i OUTPUT[o][i] m_i`, `m_i = conv(V_i,
//! U_i)` along the rows. For F(2, 3):
//!
//! ```text
//! V0 = d0 - d2   V1 = d1 + d2   V2 = d2 - d1   V3 = d1 - d3
//! U0 = g0        U1 = (g0 + g1 + g2) / 2       U2 = (g0 - g1 + g2) / 2   U3 = g2
//! y0 = m0 + m1 + m2              y1 = m1 - m2 - m3
//! ```
//!
//! The weight gradient runs the dual, F(3, m): kernel row `y` is `sum_i
//! KERNEL[i][y] m_i` with `m_i` the product of `V_i` and the output
//! gradient's rows combined by `OUTPUT` transposed.

use super::{Builder, Finish, activation_expr, activation_grad_expr, make_kernel, unscheduled_micro};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::Conv2d;
use crate::passes::memory::READ_SLACK;

/// The coefficients of one F(m, 3): `n = m + 2` forms.
struct RowTransform {
    /// Output rows per group, `m`.
    outputs: usize,
    /// `n x n`, row-major: `V_i = sum_r input[i][r] d_r`.
    input: &'static [f32],
    /// `n x 3`: `U_i = sum_y kernel[i][y] g_y`.
    kernel: &'static [f32],
    /// `m x n`: `y_o = sum_i output[o][i] m_i`.
    output: &'static [f32],
}

impl RowTransform {
    /// The forms (products) per group of output rows.
    fn forms(&self) -> usize {
        self.outputs + 2
    }

    fn input_row(&self, form: usize) -> &[f32] {
        let n = self.forms();
        &self.input[form * n..(form + 1) * n]
    }

    fn kernel_row(&self, form: usize) -> &[f32] {
        &self.kernel[form * 3..(form + 1) * 3]
    }

    fn output_row(&self, row: usize) -> &[f32] {
        let n = self.forms();
        &self.output[row * n..(row + 1) * n]
    }

    /// Column `form` of `output`: how the output gradient's rows of a
    /// group combine into form `form` of the weight gradient's product.
    fn gradient_row(&self, form: usize) -> Vec<f32> {
        (0..self.outputs).map(|row| self.output_row(row)[form]).collect()
    }

    /// Column `y` of `kernel`: how the products' sums combine into kernel
    /// row `y` of the weight gradient.
    fn kernel_column(&self, y: usize) -> Vec<f32> {
        (0..self.forms()).map(|form| self.kernel_row(form)[y]).collect()
    }

    /// F(m, 3) for `m` output rows per group (4 or 2).
    fn of(outputs: usize) -> &'static RowTransform {
        match outputs {
            4 => &F43,
            _ => &F23,
        }
    }
}

/// F(2, 3), points 0, 1, -1 and infinity.
static F23: RowTransform = RowTransform {
    outputs: 2,
    #[rustfmt::skip]
    input: &[
        1.0, 0.0, -1.0, 0.0,
        0.0, 1.0, 1.0, 0.0,
        0.0, -1.0, 1.0, 0.0,
        0.0, 1.0, 0.0, -1.0,
    ],
    #[rustfmt::skip]
    kernel: &[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    output: &[
        1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, -1.0,
    ],
};

/// F(4, 3), points 0, 1, -1, 2, -2 and infinity.
static F43: RowTransform = RowTransform {
    outputs: 4,
    #[rustfmt::skip]
    input: &[
        4.0, 0.0, -5.0, 0.0, 1.0, 0.0,
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0,
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0,
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0,
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    kernel: &[
        1.0 / 4.0, 0.0, 0.0,
        -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
        -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
        1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
        1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    output: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
};

/// `sum_i coefficients[i] * terms[i]`, the zero terms left out.
fn combination(coefficients: &[f32], terms: impl Fn(usize) -> Val) -> Val {
    let mut sum: Option<Val> = None;
    for (i, &k) in coefficients.iter().enumerate().filter(|&(_, &k)| k != 0.0) {
        let x = terms(i);
        sum = Some(match sum {
            None if k == 1.0 => x,
            None => Val::Const(k).mul(x),
            Some(s) if k == 1.0 => s.add(x),
            Some(s) if k == -1.0 => s.sub(x),
            Some(s) => s.add(Val::Const(k).mul(x)),
        });
    }
    sum.unwrap_or(Val::Const(0.0))
}

/// A dense matrix in `buf` from element `offset`, rows `row` apart.
fn rows_of(buf: BufId, offset: usize, row: usize) -> MatrixRef {
    MatrixRef { buf, offset: Idx::Const(offset as i64), row_stride: row as i64, col_stride: 1 }
}

/// The dimensions both transformed products work from.
struct Shape {
    f: &'static RowTransform,
    forms: usize,
    ch: usize,
    o: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    hp: usize,
    wp: usize,
    groups: usize,
    taps: usize,
}

impl Shape {
    /// `conv` from input dims `xd` to output dims `yd` in groups of `outputs` rows.
    fn of(conv: &Conv2d, outputs: usize, [xd, yd]: [&[usize]; 2]) -> Shape {
        let f = RowTransform::of(outputs);
        let (ch, kw, oh) = (xd[1], conv.kernel[1], yd[2]);
        Shape {
            f,
            forms: f.forms(),
            ch,
            o: yd[1],
            kw,
            oh,
            ow: yd[3],
            hp: xd[2] + 2 * conv.padding[0],
            wp: xd[3] + 2 * conv.padding[1],
            groups: oh / f.outputs,
            taps: ch * kw,
        }
    }
}

impl Builder<'_> {
    /// `V_form[ci][t][x] = sum_r input[form][r] padded[ci][m t + r][x]`
    /// into `rows` (`[ci][t][x]`, rows as wide as the padded image's).
    fn winograd_input_rows(
        &mut self,
        (f, form): (&RowTransform, usize),
        [ch, hp, wp]: [usize; 3],
        padded: BufId,
        rows: BufId,
    ) -> Vec<Stmt> {
        let groups = (hp - 2) / f.outputs;
        self.loops(&[ch, groups, wp], |_, i| {
            let (ci, t, col) = (&i[0], &i[1], &i[2]);
            let plane = ci.clone() * (hp * wp) as i64;
            let d = |r: usize| {
                let row = t.clone() * f.outputs as i64 + r as i64;
                Val::load(padded, plane.clone() + row * wp as i64 + col.clone())
            };
            let at = (ci.clone() * groups as i64 + t.clone()) * wp as i64 + col.clone();
            vec![Stmt::store(rows, at, combination(f.input_row(form), d))]
        })
    }

    /// The row table of the transformed rows (`[ci][t][x]`, `groups` rows
    /// of `wp` per channel): tap `(ci, kx)` starts at its channel's first
    /// row, `kx` columns (dilated) in.
    fn winograd_taps(&mut self, name: &str, conv: &Conv2d, [ch, groups, wp]: [usize; 3]) -> BufId {
        let kw = conv.kernel[1];
        let table: Vec<i32> =
            (0..ch).flat_map(|ci| (0..kw).map(move |kx| (ci * groups * wp + kx * conv.dilation[1]) as i32)).collect();
        self.table_i32(format!("{name}.winograd_taps"), table)
    }

    /// `conv` (unit stride, three kernel rows, no row dilation, output rows
    /// a multiple of `outputs`, F(`outputs`, 3)) of `x` (dims `xd`) into
    /// `finish.out` (dims `yd`), its weights `weights` (`[o][ci][ky][kx]`)
    /// transformed once per run in a kernel of their own. With `flipped`,
    /// `conv` is a forward convolution's input gradient and `weights` that
    /// convolution's, `[ci][o][ky][kx]`, read flipped and transposed by the
    /// transform. Per image: the padded copy, then for each form its
    /// transformed rows and its product, then the output rows with the
    /// bias, the activation (its input stored too when asked) or an
    /// activation's derivative applied.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn winograd_rows_products(
        &mut self,
        id: NodeId,
        (conv, outputs): (&Conv2d, usize),
        [xd, yd]: [&[usize]; 2],
        x: BufId,
        (weights, flipped): (BufId, bool),
        finish: &Finish,
        bias: Option<BufId>,
    ) -> Vec<Stmt> {
        let Shape { f, forms, ch, o, kw, oh, ow, hp, wp, groups, taps } = Shape::of(conv, outputs, [xd, yd]);
        let name = self.graph.node(id).name.clone();
        // U_i[co][ci][kx] = sum_y kernel[i][y] w[co][ci][y][kx].
        let u = self.scratch(format!("{name}.winograd_weight"), forms * o * taps, false);
        let prep = self.loops(&[o, ch, kw], |_, i| {
            let (co, ci, kx) = (&i[0], &i[1], &i[2]);
            let tap = |y: usize| {
                let at = if flipped {
                    let kx = kx.clone() * -1i64 + (kw as i64 - 1);
                    ((ci.clone() * o as i64 + co.clone()) * 3i64 + (2 - y) as i64) * kw as i64 + kx
                } else {
                    ((co.clone() * ch as i64 + ci.clone()) * 3i64 + y as i64) * kw as i64 + kx.clone()
                };
                Val::load(weights, at)
            };
            let at = (co.clone() * ch as i64 + ci.clone()) * kw as i64 + kx.clone();
            (0..forms)
                .map(|form| Stmt::store(u, at.clone() + (form * o * taps) as i64, combination(f.kernel_row(form), tap)))
                .collect()
        });
        self.pre_kernels.push(make_kernel(format!("{name}.winograd_weight"), vec![id], prep, 0));
        let padded = self.scratch(format!("{name}.padded"), ch * hp * wp + READ_SLACK, true);
        let rows = self.scratch(format!("{name}.winograd_rows"), ch * groups * wp + READ_SLACK, true);
        let per_form = groups * ow;
        let sums = self.scratch(format!("{name}.winograd_sums"), forms * o * per_form, true);
        let table = self.winograd_taps(&name, conv, [ch, groups, wp]);
        let wrap = ColumnWrap { row: ow, stride: wp as i64 };
        let tile = unscheduled_micro(self.prog.target.products);
        vec![self.loop_over(xd[0], |b, n| {
            let mut s = b.pad_image(conv, xd, x, n.clone(), padded);
            for form in 0..forms {
                s.extend(b.winograd_input_rows((f, form), [ch, hp, wp], padded, rows));
                s.push(Stmt::Gemm(Box::new(Gemm {
                    m: o,
                    n: per_form,
                    k: taps,
                    a: rows_of(u, form * o * taps, taps),
                    b: MatrixRef { buf: rows, offset: Idx::Const(0), row_stride: 0, col_stride: 1 },
                    c: rows_of(sums, form * o * per_form, per_form),
                    epilogue: Epilogue::default(),
                    b_rows: Some(table),
                    k_split: None,
                    b_wrap: Some(wrap),
                    c_rows: None,
                    c_wrap: None,
                    a_splat: false,
                    tile,
                })));
            }
            s.extend(b.loops(&[o, groups], |b, i| {
                let (co, t) = (&i[0], &i[1]);
                (0..f.outputs)
                    .map(|r| {
                        b.loop_over(ow, |_, col| {
                            let m = |form: usize| {
                                let at = (Idx::Const(form as i64) * o as i64 + co.clone()) * per_form as i64
                                    + t.clone() * ow as i64
                                    + col.clone();
                                Val::load(sums, at)
                            };
                            let mut v = combination(f.output_row(r), m);
                            if let Some(bias) = bias {
                                v = v.add(Val::load(bias, co.clone()));
                            }
                            let row = t.clone() * f.outputs as i64 + r as i64;
                            let at: Idx =
                                ((n.clone() * o as i64 + co.clone()) * oh as i64 + row) * ow as i64 + col.clone();
                            let mut stores = Vec::new();
                            if let Some(pre) = finish.pre {
                                stores.push(Stmt::store(pre, at.clone(), v.clone()));
                            }
                            if let Some(a) = finish.activation {
                                v = activation_expr(a, v);
                            }
                            if let Some((a, mask)) = finish.mask {
                                v = activation_grad_expr(a, Val::load(mask, at.clone()), v);
                            }
                            stores.push(Stmt::store(finish.out, at, v));
                            stores
                        })
                    })
                    .collect()
            }));
            s
        })]
    }

    /// The weight gradient of `conv` (as [`Self::winograd_rows_products`]
    /// takes it) over the dual transform F(3, m): for each group of `m`
    /// output-gradient rows, form `i` of them (`output` transposed, laid
    /// end to end so the driver gathers them 8x8 transposed) times the
    /// input rows' `V_i` summed over the pixels, and kernel row `y` gets
    /// `sum_i kernel[i][y] m_i`. Images in chunks as the direct form's:
    /// each chunk sums its images' products in per-thread scratch, then
    /// writes its kernel rows into `target` (`.combine` adds the chunks).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn winograd_rows_weight_grad(
        &mut self,
        name: &str,
        (conv, outputs): (&Conv2d, usize),
        [xd, yd]: [&[usize]; 2],
        [x, dy]: [BufId; 2],
        target: BufId,
        (chunks, per_chunk): (usize, usize),
    ) -> Vec<Stmt> {
        let Shape { f, forms, ch, o, kw, oh, ow, hp, wp, groups, taps } = Shape::of(conv, outputs, [xd, yd]);
        let plane = oh * ow;
        let padded = self.scratch(format!("{name}.padded"), ch * hp * wp + READ_SLACK, true);
        let rows = self.scratch(format!("{name}.winograd_rows"), ch * groups * wp + READ_SLACK, true);
        let mixed = self.scratch(format!("{name}.winograd_grad_rows"), o * groups * ow, true);
        let sums = self.scratch(format!("{name}.winograd_sums"), forms * o * taps, true);
        let table = self.winograd_taps(name, conv, [ch, groups, wp]);
        let tile = GemmTile::Micro { isa: self.prog.target.products, rows: 1, vectors: 1, transposed: true };
        let k = 3 * taps;
        vec![self.loop_over(chunks, |b, q| {
            let mut s = vec![b.zero_pass(sums, Idx::Const(0), forms * o * taps)];
            s.push(b.loop_over(per_chunk, |b, i| {
                let n = q.clone() * per_chunk + i;
                let image = n.clone() * (o * plane);
                let mut s = b.pad_image(conv, xd, x, n.clone(), padded);
                for form in 0..forms {
                    s.extend(b.winograd_input_rows((f, form), [ch, hp, wp], padded, rows));
                    let gradient = f.gradient_row(form);
                    s.extend(b.loops(&[o, groups, ow], |_, i| {
                        let (co, t, col) = (&i[0], &i[1], &i[2]);
                        let dy_row = |r: usize| {
                            let row = t.clone() * f.outputs as i64 + r as i64;
                            Val::load(dy, image.clone() + co.clone() * plane as i64 + row * ow as i64 + col.clone())
                        };
                        let at = (co.clone() * groups as i64 + t.clone()) * ow as i64 + col.clone();
                        vec![Stmt::store(mixed, at, combination(&gradient, dy_row))]
                    }));
                    s.push(Stmt::Gemm(Box::new(Gemm {
                        m: o,
                        n: taps,
                        k: groups * ow,
                        a: rows_of(mixed, 0, groups * ow),
                        b: MatrixRef { buf: rows, offset: Idx::Const(0), row_stride: 1, col_stride: 0 },
                        c: rows_of(sums, form * o * taps, taps),
                        epilogue: Epilogue { accumulate: true, ..Epilogue::default() },
                        b_rows: Some(table),
                        k_split: Some(KSplit { outer: groups, a_stride: ow as i64, b_stride: wp as i64 }),
                        b_wrap: None,
                        c_rows: None,
                        c_wrap: None,
                        a_splat: false,
                        tile,
                    })));
                }
                s
            }));
            // dW[co][ci][y][kx] = sum_i kernel[i][y] m_i[co][ci][kx].
            s.extend(b.loops(&[o, ch, kw], |_, i| {
                let (co, ci, kx) = (&i[0], &i[1], &i[2]);
                let at = (co.clone() * ch as i64 + ci.clone()) * kw as i64 + kx.clone();
                (0..3)
                    .map(|y| {
                        let m = |form: usize| Val::load(sums, at.clone() + (form * o * taps) as i64);
                        let to = q.clone() * (o * k) as i64
                            + ((co.clone() * ch as i64 + ci.clone()) * 3i64 + y as i64) * kw as i64
                            + kx.clone();
                        Stmt::store(target, to, combination(&f.kernel_column(y), m))
                    })
                    .collect()
            }));
            s
        })]
    }
}
