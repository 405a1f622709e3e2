//! Matrix products, with every layout option of [`Gemm`] spelled out as
//! the element each `(i, j, p)` addresses. The register tile
//! ([`crate::kernel::GemmTile`]) changes only the order of the additions in
//! the JIT, never which elements are combined, so it is ignored here.
//!
//! With `a`, `b`, `c` the matrices' offsets (evaluated once, when the
//! statement runs) and `wrap(j) = (j / row) * stride + (j % row) * step`
//! the column position of a [`crate::kernel::ColumnWrap`] (`step` is B's
//! column stride for `b_wrap`, C's for `c_wrap`):
//!
//! - `A[i, p]` is at `a + i * a.row_stride + p * a.col_stride`; with
//!   `k_split` (segment `s = p / inner`, `t = p % inner`, `inner = k /
//!   outer`) at `a + i * a.row_stride + s * a_stride + t * a.col_stride`.
//!   With `a_splat` that is the first of the element's four copies.
//! - `B[p, j]` is at `b + row(p) + column(j)`. `row(p)` is `p *
//!   b.row_stride`; `table[p]` with `b_rows` (and no `k_split`); with
//!   `k_split`, `s * b_stride + t * b.row_stride`. `column(j)` is `j *
//!   b.col_stride`; `wrap(j)` with `b_wrap`; `table[j]` with `k_split` and
//!   `b_rows`.
//! - `C[i, j]` is at `c + row(i) + column(j)`: `row(i)` is `i *
//!   c.row_stride`, or `table[i]` with `c_rows`; `column(j)` is `j *
//!   c.col_stride`, or `wrap(j)` with `c_wrap`.
//! - Epilogue matrices (`pre_activation`, `grad_mask`) are dense views:
//!   `(i, j)` at `offset + i * row_stride + j * col_stride`. A per-row
//!   bias is `bias[offset + i]`, a per-column one `bias[offset + j]`.
//!
//! Each result is `sum_p A[i, p] * B[p, j]`, summed in order of `p` with a
//! separate multiply and add (the JIT fuses them and sums dot tiles in lane
//! partials: the same value up to rounding). Then, per element in row-major
//! order: add the old `C` (`accumulate`), add the bias, store to
//! `pre_activation`, apply the activation, multiply by the activation's
//! derivative at the `grad_mask` element, store to `C`. Every product is
//! computed before the first store, so a `C` that overlaps an operand sees
//! the operands' values from before the statement.

use super::expr::{self, Frame};
use super::{Fault, memory::Arena};
use crate::kernel::{AccId, Bias, ColumnWrap, Gemm, MatrixRef, Val, activation_expr, activation_grad_expr};

/// Accumulators of the epilogue's expressions: the result being finished
/// and the `grad_mask` element.
const RESULT: AccId = 0;
const MASK: AccId = 1;

fn add(a: i64, b: i64) -> Result<i64, Fault> {
    a.checked_add(b).ok_or(Fault::Overflow)
}

fn mul(a: i64, b: i64) -> Result<i64, Fault> {
    a.checked_mul(b).ok_or(Fault::Overflow)
}

/// `(j / row) * stride + (j % row) * step`.
fn wrapped(w: &ColumnWrap, j: usize, step: i64) -> Result<i64, Fault> {
    if w.row == 0 {
        return Err(Fault::BadDivision { op: "column wrap", value: j as i64, divisor: 0 });
    }
    add(mul((j / w.row) as i64, w.stride)?, mul((j % w.row) as i64, step)?)
}

/// `count` positions `i * stride`.
fn strided(count: usize, stride: i64) -> Result<Vec<i64>, Fault> {
    (0..count).map(|i| mul(i as i64, stride)).collect()
}

/// The `count` entries of an index table.
fn table(buf: usize, count: usize, arena: &Arena) -> Result<Vec<i64>, Fault> {
    (0..count).map(|i| arena.load_i32(buf, i as i64).map(i64::from)).collect()
}

/// Element positions of a product, relative to each matrix's offset.
struct Layout {
    a_row: Vec<i64>,
    a_col: Vec<i64>,
    b_row: Vec<i64>,
    b_col: Vec<i64>,
    c_row: Vec<i64>,
    c_col: Vec<i64>,
}

impl Layout {
    fn of(g: &Gemm, arena: &Arena) -> Result<Layout, Fault> {
        let (a_col, b_row) = match g.k_split {
            Some(split) => {
                if split.outer == 0 || !g.k.is_multiple_of(split.outer) {
                    return Err(Fault::BadSplit { k: g.k, outer: split.outer });
                }
                let inner = g.k / split.outer;
                // `p` is position `p % inner` of segment `p / inner`.
                let segmented = |segment: i64, element: i64| -> Result<Vec<i64>, Fault> {
                    (0..g.k)
                        .map(|p| add(mul((p / inner) as i64, segment)?, mul((p % inner) as i64, element)?))
                        .collect()
                };
                (segmented(split.a_stride, g.a.col_stride)?, segmented(split.b_stride, g.b.row_stride)?)
            }
            None => {
                let b_row = match g.b_rows {
                    Some(t) => table(t, g.k, arena)?,
                    None => strided(g.k, g.b.row_stride)?,
                };
                (strided(g.k, g.a.col_stride)?, b_row)
            }
        };
        let b_col = match (g.k_split, g.b_rows, g.b_wrap) {
            (Some(_), Some(t), _) => table(t, g.n, arena)?,
            (_, _, Some(w)) => (0..g.n).map(|j| wrapped(&w, j, g.b.col_stride)).collect::<Result<_, _>>()?,
            _ => strided(g.n, g.b.col_stride)?,
        };
        let c_row = match g.c_rows {
            Some(t) => table(t, g.m, arena)?,
            None => strided(g.m, g.c.row_stride)?,
        };
        let c_col = match g.c_wrap {
            Some(w) => (0..g.n).map(|j| wrapped(&w, j, g.c.col_stride)).collect::<Result<_, _>>()?,
            None => strided(g.n, g.c.col_stride)?,
        };
        Ok(Layout { a_row: strided(g.m, g.a.row_stride)?, a_col, b_row, b_col, c_row, c_col })
    }
}

/// A dense epilogue matrix, its offset evaluated.
struct Dense {
    buf: usize,
    offset: i64,
    row_stride: i64,
    col_stride: i64,
}

impl Dense {
    fn of(m: &MatrixRef, arena: &Arena, frame: &Frame) -> Result<Dense, Fault> {
        let offset = expr::index(&m.offset, arena, frame)?;
        Ok(Dense { buf: m.buf, offset, row_stride: m.row_stride, col_stride: m.col_stride })
    }

    fn at(&self, i: usize, j: usize) -> Result<i64, Fault> {
        add(self.offset, add(mul(i as i64, self.row_stride)?, mul(j as i64, self.col_stride)?)?)
    }
}

/// Runs a [`Gemm`] statement.
pub(super) fn run(g: &Gemm, arena: &mut Arena, frame: &Frame) -> Result<(), Fault> {
    let layout = Layout::of(g, arena)?;
    let offset = |m: &MatrixRef| expr::index(&m.offset, arena, frame);
    let (a0, b0, c0) = (offset(&g.a)?, offset(&g.b)?, offset(&g.c)?);
    let mut sums = Vec::with_capacity(g.m * g.n);
    for &a_row in &layout.a_row {
        let a_row = add(a0, a_row)?;
        for &b_col in &layout.b_col {
            let b_col = add(b0, b_col)?;
            let mut sum = 0.0f32;
            for (&a_col, &b_row) in layout.a_col.iter().zip(&layout.b_row) {
                let a = arena.load(g.a.buf, add(a_row, a_col)?)?;
                let b = arena.load(g.b.buf, add(b_col, b_row)?)?;
                sum += a * b;
            }
            sums.push(sum);
        }
    }

    let e = &g.epilogue;
    let bias = match &e.bias {
        Some(Bias::PerRow(buf, o)) => Some((*buf, expr::index(o, arena, frame)?, true)),
        Some(Bias::PerColumn(buf, o)) => Some((*buf, expr::index(o, arena, frame)?, false)),
        None => None,
    };
    let pre = e.pre_activation.as_ref().map(|m| Dense::of(m, arena, frame)).transpose()?;
    let mask = e.grad_mask.as_ref().map(|(_, m)| Dense::of(m, arena, frame)).transpose()?;
    let activation = e.activation.map(|a| activation_expr(a, Val::Acc(RESULT)));
    let derivative = e.grad_mask.as_ref().map(|(a, _)| activation_grad_expr(*a, Val::Acc(MASK), Val::Acc(RESULT)));
    let mut local = Frame::new(None, Some(MASK));
    for (i, &c_row) in layout.c_row.iter().enumerate() {
        for (j, &c_col) in layout.c_col.iter().enumerate() {
            let mut x = sums[i * g.n + j];
            let c_at = add(c0, add(c_row, c_col)?)?;
            if e.accumulate {
                x += arena.load(g.c.buf, c_at)?;
            }
            if let Some((buf, o, per_row)) = bias {
                x += arena.load(buf, add(o, if per_row { i } else { j } as i64)?)?;
            }
            if let Some(m) = &pre {
                arena.store(m.buf, m.at(i, j)?, x)?;
            }
            if let Some(f) = &activation {
                local.declare(RESULT, x);
                x = expr::value(f, arena, &local)?;
            }
            if let (Some(f), Some(m)) = (&derivative, &mask) {
                local.declare(RESULT, x);
                local.declare(MASK, arena.load(m.buf, m.at(i, j)?)?);
                x = expr::value(f, arena, &local)?;
            }
            arena.store(g.c.buf, c_at, x)?;
        }
    }
    Ok(())
}
