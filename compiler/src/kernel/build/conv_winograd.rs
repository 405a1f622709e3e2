//! A unit-stride convolution with three kernel rows as Winograd's minimal
//! filtering F(2, 3) down the columns: each pair of output rows from four
//! input rows with four products where the direct form takes six, so the
//! matrix products do two thirds of the multiply-adds (the layout pass,
//! [`winograd_rows_pay`](crate::passes::layout::winograd_rows_pay),
//! decides when that pays). The transforms combine whole rows, so every
//! loop of them is a unit-stride vector loop; across each row the
//! convolution stays direct (any kernel width, dilation and padding),
//! read in place through a row table with wrapped columns as the direct
//! form's is.
//!
//! With `d_r` the padded image's row `2t + r` and `g_y` the kernel's row
//! `y`, output rows `2t` and `2t + 1` are `m0 + m1 + m2` and `m1 - m2 -
//! m3`, where `m_i = conv(V_i, U_i)` along the rows and
//!
//! ```text
//! V0 = d0 - d2   V1 = d1 + d2   V2 = d2 - d1   V3 = d1 - d3
//! U0 = g0        U1 = (g0 + g1 + g2) / 2       U2 = (g0 - g1 + g2) / 2   U3 = g2
//! ```

use super::{Builder, Finish, activation_expr, activation_grad_expr, make_kernel, unscheduled_micro};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::Conv2d;
use crate::passes::memory::READ_SLACK;

/// The input rows' combinations `V_i = sum_r INPUT[i][r] d_r`.
const INPUT: [[f32; 4]; 4] =
    [[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]];
/// The kernel rows' combinations `U_i = sum_y KERNEL[i][y] g_y`.
const KERNEL: [[f32; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
/// The output gradient's rows' combinations for the weight gradient, the
/// dual F(3, 2): `sum_r GRADIENT[i][r] dy_{2t + r}`.
const GRADIENT: [[f32; 2]; 4] = [[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]];
/// The output rows' combinations `y_o = sum_i OUTPUT[o][i] m_i`.
const OUTPUT: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

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

impl Builder<'_> {
    /// `V_form[ci][t][x] = sum_r INPUT[form][r] padded[ci][2t + r][x]`
    /// into `rows` (`[ci][t][x]`, rows as wide as the padded image's).
    fn winograd_input_rows(&mut self, form: usize, [ch, hp, wp]: [usize; 3], padded: BufId, rows: BufId) -> Vec<Stmt> {
        let pairs = (hp - 2) / 2;
        self.loops(&[ch, pairs, wp], |_, i| {
            let (ci, t, col) = (&i[0], &i[1], &i[2]);
            let plane = ci.clone() * (hp * wp) as i64;
            let d =
                |r: usize| Val::load(padded, plane.clone() + (t.clone() * 2i64 + r as i64) * wp as i64 + col.clone());
            let at = (ci.clone() * pairs as i64 + t.clone()) * wp as i64 + col.clone();
            vec![Stmt::store(rows, at, combination(&INPUT[form], d))]
        })
    }

    /// `conv` (unit stride, three kernel rows, no row dilation, an even
    /// number of output rows) of `x` (dims `xd`) into `finish.out` (dims
    /// `yd`), its weights `weights` (`[o][ci][ky][kx]`) transformed once per
    /// run in a kernel of their own. With `flipped`, `conv` is a forward
    /// convolution's input gradient and `weights` that convolution's,
    /// `[ci][o][ky][kx]`, read flipped and transposed by the transform. Per image: the padded copy, then for each of
    /// the four products its transformed rows and the product, then the
    /// output rows with the bias, the activation (its input stored too
    /// when asked) or an activation's derivative applied.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn winograd_rows_products(
        &mut self,
        id: NodeId,
        conv: &Conv2d,
        [xd, yd]: [&[usize]; 2],
        x: BufId,
        (weights, flipped): (BufId, bool),
        finish: &Finish,
        bias: Option<BufId>,
    ) -> Vec<Stmt> {
        let (ch, o) = (xd[1], yd[1]);
        let kw = conv.kernel[1];
        let (oh, ow) = (yd[2], yd[3]);
        let (hp, wp) = (xd[2] + 2 * conv.padding[0], xd[3] + 2 * conv.padding[1]);
        let pairs = oh / 2;
        let taps = ch * kw;
        let name = self.graph.node(id).name.clone();
        // U_i[co][ci][kx] = sum_y KERNEL[i][y] w[co][ci][y][kx].
        let u = self.scratch(format!("{name}.winograd_weight"), 4 * o * taps, false);
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
            (KERNEL.iter().enumerate())
                .map(|(form, row)| Stmt::store(u, at.clone() + (form * o * taps) as i64, combination(row, tap)))
                .collect()
        });
        self.pre_kernels.push(make_kernel(format!("{name}.winograd_weight"), vec![id], prep, 0));
        let padded = self.scratch(format!("{name}.padded"), ch * hp * wp + READ_SLACK, true);
        let rows = self.scratch(format!("{name}.winograd_rows"), ch * pairs * wp + READ_SLACK, true);
        let sums = self.scratch(format!("{name}.winograd_sums"), 4 * o * pairs * ow, true);
        let table: Vec<i32> =
            (0..ch).flat_map(|ci| (0..kw).map(move |kx| (ci * pairs * wp + kx * conv.dilation[1]) as i32)).collect();
        let table = self.table_i32(format!("{name}.winograd_taps"), table);
        let wrap = ColumnWrap { row: ow, stride: wp as i64 };
        let tile = unscheduled_micro(self.prog.target.products);
        let per_form = pairs * ow;
        vec![self.loop_over(xd[0], |b, n| {
            let mut s = b.pad_image(conv, xd, x, n.clone(), padded);
            for form in 0..INPUT.len() {
                s.extend(b.winograd_input_rows(form, [ch, hp, wp], padded, rows));
                s.push(Stmt::Gemm(Box::new(Gemm {
                    m: o,
                    n: per_form,
                    k: taps,
                    a: MatrixRef {
                        buf: u,
                        offset: Idx::Const((form * o * taps) as i64),
                        row_stride: taps as i64,
                        col_stride: 1,
                    },
                    b: MatrixRef { buf: rows, offset: Idx::Const(0), row_stride: 0, col_stride: 1 },
                    c: MatrixRef {
                        buf: sums,
                        offset: Idx::Const((form * o * per_form) as i64),
                        row_stride: per_form as i64,
                        col_stride: 1,
                    },
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
            s.extend(b.loops(&[o, pairs], |b, i| {
                let (co, t) = (&i[0], &i[1]);
                OUTPUT
                    .iter()
                    .enumerate()
                    .map(|(r, row)| {
                        b.loop_over(ow, |_, col| {
                            let m = |form: usize| {
                                let at = (Idx::Const(form as i64) * o as i64 + co.clone()) * per_form as i64
                                    + t.clone() * ow as i64
                                    + col.clone();
                                Val::load(sums, at)
                            };
                            let mut v = combination(row, m);
                            if let Some(bias) = bias {
                                v = v.add(Val::load(bias, co.clone()));
                            }
                            let at: Idx =
                                ((n.clone() * o as i64 + co.clone()) * oh as i64 + t.clone() * 2i64 + r as i64)
                                    * ow as i64
                                    + col.clone();
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
    /// takes it) over the same transform, its dual F(3, 2): for each pair
    /// of output-gradient rows `a = dy[2t]`, `b = dy[2t + 1]`, the kernel
    /// row `y` gets `sum_i KERNEL[i][y] m_i`, `m_i` the product of the
    /// input rows `V_i` with `a`, `a + b`, `a - b` and `-b` (`GRADIENT`,
    /// copied end to end). Images in chunks as the direct form's:
    /// each chunk sums its images' four products in per-thread scratch,
    /// then writes its kernel rows into `target` (`.combine` adds the
    /// chunks).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn winograd_rows_weight_grad(
        &mut self,
        name: &str,
        conv: &Conv2d,
        [xd, yd]: [&[usize]; 2],
        [x, dy]: [BufId; 2],
        target: BufId,
        (chunks, per_chunk): (usize, usize),
    ) -> Vec<Stmt> {
        let (ch, o) = (xd[1], yd[1]);
        let kw = conv.kernel[1];
        let (oh, ow) = (yd[2], yd[3]);
        let (hp, wp) = (xd[2] + 2 * conv.padding[0], xd[3] + 2 * conv.padding[1]);
        let (pairs, taps, plane) = (oh / 2, ch * kw, oh * ow);
        let padded = self.scratch(format!("{name}.padded"), ch * hp * wp + READ_SLACK, true);
        let rows = self.scratch(format!("{name}.winograd_rows"), ch * pairs * wp + READ_SLACK, true);
        let mixed = self.scratch(format!("{name}.winograd_grad_rows"), o * pairs * ow, true);
        let sums = self.scratch(format!("{name}.winograd_sums"), 4 * o * taps, true);
        let table: Vec<i32> =
            (0..ch).flat_map(|ci| (0..kw).map(move |kx| (ci * pairs * wp + kx * conv.dilation[1]) as i32)).collect();
        let table = self.table_i32(format!("{name}.winograd_taps"), table);
        let tile = GemmTile::Micro { isa: self.prog.target.products, rows: 1, vectors: 1, transposed: true };
        let k = 3 * taps;
        vec![self.loop_over(chunks, |b, q| {
            let mut s = vec![b.zero_pass(sums, Idx::Const(0), 4 * o * taps)];
            s.push(b.loop_over(per_chunk, |b, i| {
                let n = q.clone() * per_chunk + i;
                let image = n.clone() * (o * plane);
                let mut s = b.pad_image(conv, xd, x, n.clone(), padded);
                for (form, gradient) in GRADIENT.iter().enumerate() {
                    s.extend(b.winograd_input_rows(form, [ch, hp, wp], padded, rows));
                    // The output gradient's rows of this form, laid end to
                    // end (so the driver gathers them 8x8 transposed).
                    s.extend(b.loops(&[o, pairs, ow], |_, i| {
                        let (co, t, col) = (&i[0], &i[1], &i[2]);
                        let row = |r: usize| {
                            let at =
                                image.clone() + co.clone() * plane as i64 + (t.clone() * 2i64 + r as i64) * ow as i64;
                            Val::load(dy, at + col.clone())
                        };
                        let at = (co.clone() * pairs as i64 + t.clone()) * ow as i64 + col.clone();
                        vec![Stmt::store(mixed, at, combination(gradient, row))]
                    }));
                    s.push(Stmt::Gemm(Box::new(Gemm {
                        m: o,
                        n: taps,
                        k: pairs * ow,
                        a: MatrixRef {
                            buf: mixed,
                            offset: Idx::Const(0),
                            row_stride: (pairs * ow) as i64,
                            col_stride: 1,
                        },
                        b: MatrixRef { buf: rows, offset: Idx::Const(0), row_stride: 1, col_stride: 0 },
                        c: MatrixRef {
                            buf: sums,
                            offset: Idx::Const((form * o * taps) as i64),
                            row_stride: taps as i64,
                            col_stride: 1,
                        },
                        epilogue: Epilogue { accumulate: true, ..Epilogue::default() },
                        b_rows: Some(table),
                        k_split: Some(KSplit { outer: pairs, a_stride: ow as i64, b_stride: wp as i64 }),
                        b_wrap: None,
                        c_rows: None,
                        c_wrap: None,
                        a_splat: false,
                        tile,
                    })));
                }
                s
            }));
            // dW[co][ci][y][kx] = sum_i KERNEL[i][y] m_i[co][ci][kx].
            s.extend(b.loops(&[o, ch, kw], |_, i| {
                let (co, ci, kx) = (&i[0], &i[1], &i[2]);
                let at = (co.clone() * ch as i64 + ci.clone()) * kw as i64 + kx.clone();
                (0..3)
                    .map(|y| {
                        let m = |form: usize| Val::load(sums, at.clone() + (form * o * taps) as i64);
                        let coefficients: Vec<f32> = KERNEL.iter().map(|row| row[y]).collect();
                        let to = q.clone() * (o * k) as i64
                            + ((co.clone() * ch as i64 + ci.clone()) * 3i64 + y as i64) * kw as i64
                            + kx.clone();
                        Stmt::store(target, to, combination(&coefficients, m))
                    })
                    .collect()
            }));
            s
        })]
    }
}
