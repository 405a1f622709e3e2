//! Register-tiled F32X4 matrix products.

use super::{Fx, LANES};
use crate::kernel::{AccId, Bias, DotSteps, Gemm, GemmTile, MatrixRef, Val, activation_expr, activation_grad_expr};
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::Variable;

/// Scratch accumulator ids used to feed epilogue values to expression lowering.
const EPILOGUE_X: AccId = u32::MAX - 1;
const EPILOGUE_MASK: AccId = u32::MAX - 2;

/// Where an outer tile's B vector (or scattered C vector) starts when its
/// columns wrap: element offset `at` from the matrix's origin, and for a
/// vector straddling two rows the lanes `taken` from the first and the
/// element distance to the second.
#[derive(Clone, Copy)]
pub(crate) struct WrappedColumn {
    at: Value,
    straddle: Option<(usize, i64)>,
}

/// Shuffle lanes of a vector that straddles two rows: the first `taken`
/// lanes of the first load, then the first lanes of the second.
fn straddle_lanes(taken: usize) -> [i64; 4] {
    std::array::from_fn(|l| if l < taken { l as i64 } else { (4 + l - taken) as i64 })
}

/// Base addresses of a product's matrices.
pub(super) struct Ptrs {
    pub(super) a: Value,
    pub(super) b: Value,
    pub(super) c: Value,
    pub(super) bias: Option<Value>,
    pub(super) pre: Option<Value>,
    pub(super) mask: Option<Value>,
}

fn pure_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap().with_readonly().with_can_move()
}

impl Fx<'_, '_> {
    fn matrix_base(&mut self, m: &MatrixRef) -> Value {
        let off = self.idx(&m.offset, 0);
        self.addr(m.buf, off)
    }

    /// A new variable of type `ty` holding `init` for each of `inits`.
    pub(crate) fn vars_holding(&mut self, ty: Type, inits: impl IntoIterator<Item = Value>) -> Vec<Variable> {
        inits
            .into_iter()
            .map(|x| {
                let v = self.b.declare_var(ty);
                self.b.def_var(v, x);
                v
            })
            .collect()
    }

    /// The sum of an `f32x4`'s lanes, as `(l0 + l1) + (l2 + l3)` (a fixed
    /// order, so results do not depend on anything but the data).
    fn lane_sum(&mut self, v: Value) -> Value {
        let l: Vec<Value> = (0..4u8).map(|l| self.b.ins().extractlane(v, l)).collect();
        let s01 = self.b.ins().fadd(l[0], l[1]);
        let s23 = self.b.ins().fadd(l[2], l[3]);
        self.b.ins().fadd(s01, s23)
    }

    /// One vector step of a dot tile: `accs[r][c] += av[r] * bv[c]`.
    fn dot_update(&mut self, accs: &[Variable], av: &[Value], bv: &[Value]) {
        for (r, &a) in av.iter().enumerate() {
            for (c, &b) in bv.iter().enumerate() {
                let var = accs[r * bv.len() + c];
                let acc = self.b.use_var(var);
                let acc = self.fma(a, b, acc);
                self.b.def_var(var, acc);
            }
        }
    }

    /// Lowers a [`Gemm`] statement.
    pub(crate) fn gemm(&mut self, g: &Gemm) {
        let bias = match &g.epilogue.bias {
            Some(Bias::PerRow(b, off) | Bias::PerColumn(b, off)) => {
                let o = self.idx(off, 0);
                Some(self.addr(*b, o))
            }
            None => None,
        };
        let ptrs = Ptrs {
            a: self.matrix_base(&g.a),
            b: self.matrix_base(&g.b),
            c: self.matrix_base(&g.c),
            bias,
            pre: g.epilogue.pre_activation.as_ref().map(|m| self.matrix_base(m)),
            mask: g.epilogue.grad_mask.as_ref().map(|(_, m)| self.matrix_base(m)),
        };
        if g.m == 0 || g.n == 0 {
            return;
        }
        match g.tile {
            GemmTile::Outer { rows, unroll, .. } if g.b_wrap.or(g.c_wrap).is_some_and(|w| w.fits(g.n, LANES)) => {
                self.outer_wrapped(g, &ptrs, rows.clamp(1, g.m), unroll.max(1));
            }
            GemmTile::Outer { rows, vectors, unroll } => {
                let (rows, vectors, unroll) = (rows.clamp(1, g.m), vectors.max(1), unroll.max(1));
                let width = 4 * vectors;
                let full = g.n / width * width;
                if full > 0 {
                    let (s, e) = (self.iconst(0), self.iconst(full as i64));
                    self.counted_loop(s, e, width as i64, |fx, j0| {
                        fx.outer_rows(g, &ptrs, rows, vectors, unroll, j0, 4)
                    });
                }
                let mut j = full;
                while j < g.n {
                    let j0 = self.iconst(j as i64);
                    self.outer_rows(g, &ptrs, rows, 1, unroll, j0, (g.n - j).min(4));
                    j += 4;
                }
            }
            GemmTile::Micro { rows, vectors, transposed, .. } => self.micro_call(g, &ptrs, [rows, vectors], transposed),
            GemmTile::Dot { rows, cols, steps } => {
                let (rows, cols) = (rows.clamp(1, g.m), cols.clamp(1, g.n));
                let full = g.m / rows * rows;
                if full > 0 {
                    let (s, e) = (self.iconst(0), self.iconst(full as i64));
                    self.counted_loop(s, e, rows as i64, |fx, i0| fx.dot_cols(g, &ptrs, [rows, cols], steps, i0));
                }
                if !g.m.is_multiple_of(rows) {
                    let i0 = self.iconst(full as i64);
                    self.dot_cols(g, &ptrs, [g.m % rows, cols], steps, i0);
                }
            }
        }
    }

    /// An outer-product product whose B columns, or scattered C columns,
    /// wrap (see [`crate::kernel::ColumnWrap`]): a loop over blocks of
    /// `lcm(4, row)` columns, each block's vectors written out with their
    /// offsets and straddles known at compile time.
    fn outer_wrapped(&mut self, g: &Gemm, ptrs: &Ptrs, rows: usize, unroll: usize) {
        let (w, of_c) = match (g.b_wrap, g.c_wrap) {
            (Some(w), _) => (w, false),
            (None, w) => (w.expect("wrapped product"), true),
        };
        let block = w.block(LANES);
        let rows_per_block = (block / w.row) as i64;
        let (s, e) = (self.iconst(0), self.iconst((g.n / block) as i64));
        self.counted_loop(s, e, 1, |fx, blk| {
            let j_blk = fx.b.ins().imul_imm_s(blk, block as i64);
            let b_blk = fx.b.ins().imul_imm_s(blk, rows_per_block * w.stride);
            for v in 0..block / 4 {
                let (r0, c0) = ((4 * v / w.row) as i64, 4 * v % w.row);
                let first = r0 * w.stride + c0 as i64;
                let taken = w.row - c0;
                let straddle = (taken < 4).then(|| (taken, (r0 + 1) * w.stride - first));
                let j0 = fx.b.ins().iadd_imm_s(j_blk, 4 * v as i64);
                let at = fx.b.ins().iadd_imm_s(b_blk, first);
                let column = Some(WrappedColumn { at, straddle });
                if of_c {
                    fx.c_column = column;
                } else {
                    fx.b_column = column;
                }
                fx.outer_rows(g, ptrs, rows, 1, unroll, j0, 4);
                (fx.b_column, fx.c_column) = (None, None);
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn outer_rows(&mut self, g: &Gemm, p: &Ptrs, rows: usize, nv: usize, unroll: usize, j0: Value, lanes: usize) {
        let full = g.m / rows * rows;
        if full > 0 {
            let (s, e) = (self.iconst(0), self.iconst(full as i64));
            self.counted_loop(s, e, rows as i64, |fx, i0| fx.outer_micro(g, p, rows, nv, unroll, i0, j0, lanes));
        }
        if !g.m.is_multiple_of(rows) {
            let i0 = self.iconst(full as i64);
            self.outer_micro(g, p, g.m % rows, nv, unroll, i0, j0, lanes);
        }
    }

    /// One `rows x (4 * nv)` register tile of the outer-product form.
    #[allow(clippy::too_many_arguments)]
    fn outer_micro(
        &mut self,
        g: &Gemm,
        p: &Ptrs,
        rows: usize,
        nv: usize,
        unroll: usize,
        i0: Value,
        j0: Value,
        lanes: usize,
    ) {
        let (rs_a, cs_a, rs_b) = (g.a.row_stride * 4, g.a.col_stride * 4, g.b.row_stride * 4);
        let off_a = self.b.ins().imul_imm_s(i0, rs_a);
        let pa = self.b.ins().iadd(p.a, off_a);
        // B's column: `j0`, or where a wrapped layout puts this vector.
        let off_b = self.b.ins().ishl_imm_s(self.b_column.map_or(j0, |c| c.at), 2);
        let pb = self.b.ins().iadd(p.b, off_b);
        let ku = unroll.min(g.k).max(1);
        let steps = g.k / ku;
        let rem = g.k % ku;
        let zero = self.fconst(0.0, true);
        let accs = self.vars_holding(F32X4, vec![zero; rows * nv]);
        let pa_var = self.b.declare_var(I64);
        let pb_var = self.b.declare_var(I64);
        self.b.def_var(pa_var, pa);
        // With a row table, `pb_var` walks the table and `pb` stays the base.
        let (pb_walk, rows_table) = match g.b_rows {
            Some(t) => (self.bufptr[&t], Some(pb)),
            None => (pb, None),
        };
        self.b.def_var(pb_var, pb_walk);
        let rs_walk = if rows_table.is_some() { 4 } else { rs_b };
        if steps > 0 {
            let (s, e) = (self.iconst(0), self.iconst(steps as i64));
            self.counted_loop(s, e, 1, |fx, _| {
                let (pa, pb) = (fx.b.use_var(pa_var), fx.b.use_var(pb_var));
                fx.outer_steps(
                    pa,
                    pb,
                    rows_table,
                    g.a_splat,
                    ku,
                    rows,
                    nv,
                    rs_a,
                    cs_a,
                    rs_b,
                    &accs,
                    pure_flags(),
                    pure_flags(),
                );
                let pa = fx.b.ins().iadd_imm_s(pa, ku as i64 * cs_a);
                let pb = fx.b.ins().iadd_imm_s(pb, ku as i64 * rs_walk);
                fx.b.def_var(pa_var, pa);
                fx.b.def_var(pb_var, pb);
            });
        }
        if rem > 0 {
            // After a loop the addresses depend on it, so pure loads cannot
            // move above the stores that filled the operands.
            let (fa, fb) = if steps > 0 {
                (pure_flags(), pure_flags())
            } else {
                (self.load_flags(g.a.buf), self.load_flags(g.b.buf))
            };
            let (pa, pb) = (self.b.use_var(pa_var), self.b.use_var(pb_var));
            self.outer_steps(pa, pb, rows_table, g.a_splat, rem, rows, nv, rs_a, cs_a, rs_b, &accs, fa, fb);
        }
        // A scattered C's row offsets: the tile's slice of the table, read
        // with immediate offsets.
        let c_table = match (g.c_rows, self.c_column) {
            (Some(t), Some(_)) => {
                let ix = self.b.ins().ishl_imm_s(i0, 2);
                Some(self.b.ins().iadd(self.bufptr[&t], ix))
            }
            _ => None,
        };
        for r in 0..rows {
            let row = self.b.ins().iadd_imm_s(i0, r as i64);
            self.c_row_offset = c_table.map(|t| self.b.ins().sload32(pure_flags(), t, 4 * r as i32));
            for v in 0..nv {
                let x = self.b.use_var(accs[r * nv + v]);
                let col = self.b.ins().iadd_imm_s(j0, 4 * v as i64);
                let l = if v == nv - 1 { lanes } else { 4 };
                self.finish(g, p, x, true, row, col, l);
            }
        }
        self.c_row_offset = None;
    }

    #[allow(clippy::too_many_arguments)]
    fn outer_steps(
        &mut self,
        pa: Value,
        pb: Value,
        rows_base: Option<Value>,
        a_splat: bool,
        count: usize,
        rows: usize,
        nv: usize,
        rs_a: i64,
        cs_a: i64,
        rs_b: i64,
        accs: &[Variable],
        fa: MemFlagsData,
        fb: MemFlagsData,
    ) {
        for u in 0..count as i64 {
            // Row `u` of B: at `pb + u * rs_b`, or through the row table
            // (`pb` then walks the table, `rows_base` is B's origin).
            let (row, row_off) = match rows_base {
                Some(base) => {
                    let off = self.b.ins().sload32(fb, pb, (4 * u) as i32);
                    let off = self.b.ins().ishl_imm_s(off, 2);
                    (self.b.ins().iadd(base, off), 0)
                }
                None => (pb, u * rs_b),
            };
            let straddle = self.b_column.and_then(|c| c.straddle);
            let bv: Vec<Value> = (0..nv)
                .map(|v| {
                    let lo = self.b.ins().load(F32X4, fb, row, (row_off + 16 * v as i64) as i32);
                    match straddle {
                        // The first `taken` lanes end a row; the rest start
                        // the next one, `next` elements further on.
                        Some((taken, next)) => {
                            let hi = self.b.ins().load(F32X4, fb, row, (row_off + 4 * next) as i32);
                            self.shuffle_lanes(lo, hi, straddle_lanes(taken))
                        }
                        None => lo,
                    }
                })
                .collect();
            for r in 0..rows {
                let a = if a_splat {
                    self.b.ins().load(F32X4, fa, pa, (r as i64 * rs_a + u * cs_a) as i32)
                } else {
                    let a = self.b.ins().load(F32, fa, pa, (r as i64 * rs_a + u * cs_a) as i32);
                    self.splat(a)
                };
                for (v, &b) in bv.iter().enumerate() {
                    let acc = self.b.use_var(accs[r * nv + v]);
                    let acc = self.fma(a, b, acc);
                    self.b.def_var(accs[r * nv + v], acc);
                }
            }
        }
    }

    fn dot_cols(&mut self, g: &Gemm, p: &Ptrs, [rows, cols]: [usize; 2], steps: DotSteps, i0: Value) {
        let full = g.n / cols * cols;
        if full > 0 {
            let (s, e) = (self.iconst(0), self.iconst(full as i64));
            self.counted_loop(s, e, cols as i64, |fx, j0| fx.dot_micro(g, p, rows, cols, steps, i0, j0));
        }
        if !g.n.is_multiple_of(cols) {
            let j0 = self.iconst(full as i64);
            self.dot_micro(g, p, rows, g.n % cols, steps, i0, j0);
        }
    }

    /// A dot tile whose reduction runs over strided segments (see
    /// [`crate::kernel::KSplit`]), with B's columns found through a row
    /// table when `b_rows` is set: a convolution's weight gradient read
    /// straight from its input, without an im2col copy.
    #[allow(clippy::too_many_arguments)]
    fn dot_micro_split(
        &mut self,
        g: &Gemm,
        p: &Ptrs,
        rows: usize,
        cols: usize,
        steps_taken: DotSteps,
        i0: Value,
        j0: Value,
    ) {
        let split = g.k_split.expect("split tile");
        let inner = g.k / split.outer;
        let (steps, rem) = (inner / 4, inner % 4);
        let rs_a = g.a.row_stride * 4;
        let off_a = self.b.ins().imul_imm_s(i0, rs_a);
        let pa = self.b.ins().iadd(p.a, off_a);
        // Column pointers of B (rows of B^T).
        let pbc: Vec<Value> = (0..cols)
            .map(|c| {
                let j = self.b.ins().iadd_imm_s(j0, c as i64);
                let off = match g.b_rows {
                    Some(t) => {
                        let ix = self.b.ins().ishl_imm_s(j, 2);
                        let a = self.b.ins().iadd(self.bufptr[&t], ix);
                        let o = self.b.ins().sload32(pure_flags(), a, 0);
                        self.b.ins().ishl_imm_s(o, 2)
                    }
                    None => self.b.ins().imul_imm_s(j, g.b.col_stride * 4),
                };
                self.b.ins().iadd(p.b, off)
            })
            .collect();
        if split.wraps(g.k, LANES) {
            return self.dot_micro_wrapped(g, p, [rows, cols], [i0, j0], pa, &pbc);
        }
        let zero_v = self.fconst(0.0, true);
        let zero_s = self.fconst(0.0, false);
        let accs = self.vars_holding(F32X4, vec![zero_v; rows * cols]);
        let saccs = self.vars_holding(F32, vec![zero_s; rows * cols]);
        // Segment pointers advance by constants (no multiply per segment).
        // The segment stays a loop: unrolled, Cranelift elaborates the pure
        // loads accumulator by accumulator and spills the B vectors.
        let (seg_a, seg_b) = (self.b.declare_var(I64), self.b.declare_var(I64));
        self.b.def_var(seg_a, pa);
        let zero_off = self.iconst(0);
        self.b.def_var(seg_b, zero_off);
        let (s0, e0) = (self.iconst(0), self.iconst(split.outer as i64));
        self.counted_loop(s0, e0, 1, |fx, _| {
            let ra = fx.b.use_var(seg_a);
            let ob = fx.b.use_var(seg_b);
            let rb: Vec<Value> = pbc.iter().map(|&pc| fx.b.ins().iadd(pc, ob)).collect();
            let step = |fx: &mut Self, ra: Value, rb: &[Value], at: i64| {
                let av: Vec<Value> = (0..rows)
                    .map(|r| fx.b.ins().load(F32X4, pure_flags(), ra, (r as i64 * rs_a + at) as i32))
                    .collect();
                let bv: Vec<Value> = rb.iter().map(|&pc| fx.b.ins().load(F32X4, pure_flags(), pc, at as i32)).collect();
                fx.dot_update(&accs, &av, &bv);
            };
            if steps_taken == DotSteps::WrittenOut {
                // A short segment is written out: no pointer updates at all.
                for t in 0..steps as i64 {
                    step(fx, ra, &rb, 16 * t);
                }
            } else {
                // Every pointer is its own loop-carried variable: a pointer
                // kept as `base + offset` would be rematerialised (with the
                // spilled pieces of `base`) inside the loop.
                let ptrs = fx.vars_holding(I64, std::iter::once(ra).chain(rb.iter().copied()));
                let (s, e) = (fx.iconst(0), fx.iconst(steps as i64));
                fx.counted_loop(s, e, 1, |fx, _| {
                    let cur: Vec<Value> = ptrs.iter().map(|&v| fx.b.use_var(v)).collect();
                    step(fx, cur[0], &cur[1..], 0);
                    for (&v, &x) in ptrs.iter().zip(&cur) {
                        let next = fx.b.ins().iadd_imm_s(x, 16);
                        fx.b.def_var(v, next);
                    }
                });
            }
            if rem > 0 {
                let at = 16 * steps as i64;
                for c in 0..cols {
                    for t in 0..rem as i64 {
                        let b = fx.b.ins().load(F32, pure_flags(), rb[c], (at + 4 * t) as i32);
                        for r in 0..rows {
                            let a = fx.b.ins().load(F32, pure_flags(), ra, (r as i64 * rs_a + at + 4 * t) as i32);
                            let s = fx.b.use_var(saccs[r * cols + c]);
                            let prod = fx.b.ins().fmul(a, b);
                            let s = fx.b.ins().fadd(s, prod);
                            fx.b.def_var(saccs[r * cols + c], s);
                        }
                    }
                }
            }
            let ra = fx.b.ins().iadd_imm_s(ra, split.a_stride * 4);
            let ob = fx.b.ins().iadd_imm_s(ob, split.b_stride * 4);
            fx.b.def_var(seg_a, ra);
            fx.b.def_var(seg_b, ob);
        });
        for r in 0..rows {
            let row = self.b.ins().iadd_imm_s(i0, r as i64);
            for c in 0..cols {
                let acc = self.b.use_var(accs[r * cols + c]);
                let s = self.lane_sum(acc);
                let tail = self.b.use_var(saccs[r * cols + c]);
                let s = self.b.ins().fadd(s, tail);
                let col = self.b.ins().iadd_imm_s(j0, c as i64);
                self.finish(g, p, s, false, row, col, 1);
            }
        }
    }

    /// A split dot tile whose segments are not whole vectors but whose `A`
    /// is dense across them (a convolution's weight gradient with output
    /// rows of, say, 10): every vector step of `p` is written out, and a
    /// step that straddles two segments takes its lanes of `B` from two
    /// loads and one shuffle. No im2col copy, no scalar tail.
    fn dot_micro_wrapped(
        &mut self,
        g: &Gemm,
        p: &Ptrs,
        [rows, cols]: [usize; 2],
        [i0, j0]: [Value; 2],
        pa: Value,
        pbc: &[Value],
    ) {
        let split = g.k_split.expect("split tile");
        let inner = g.k / split.outer;
        let rs_a = g.a.row_stride * 4;
        let zero = self.fconst(0.0, true);
        let accs = self.vars_holding(F32X4, vec![zero; rows * cols]);
        for p0 in (0..g.k).step_by(4) {
            let (seg, within) = ((p0 / inner) as i64, p0 % inner);
            let first = 4 * (seg * split.b_stride + within as i64);
            let av: Vec<Value> = (0..rows)
                .map(|r| self.b.ins().load(F32X4, pure_flags(), pa, (r as i64 * rs_a + 4 * p0 as i64) as i32))
                .collect();
            let bv: Vec<Value> = pbc
                .iter()
                .map(|&pc| {
                    let lo = self.b.ins().load(F32X4, pure_flags(), pc, first as i32);
                    let taken = inner - within;
                    if taken >= 4 {
                        return lo;
                    }
                    let next = 4 * (seg + 1) * split.b_stride;
                    let hi = self.b.ins().load(F32X4, pure_flags(), pc, next as i32);
                    self.shuffle_lanes(lo, hi, straddle_lanes(taken))
                })
                .collect();
            self.dot_update(&accs, &av, &bv);
        }
        for r in 0..rows {
            let row = self.b.ins().iadd_imm_s(i0, r as i64);
            for c in 0..cols {
                let acc = self.b.use_var(accs[r * cols + c]);
                let s = self.lane_sum(acc);
                let col = self.b.ins().iadd_imm_s(j0, c as i64);
                self.finish(g, p, s, false, row, col, 1);
            }
        }
    }

    /// One `rows x cols` tile of the dot form: vector partial sums along `p`,
    /// reduced across lanes, then the `k % 4` tail.
    #[allow(clippy::too_many_arguments)]
    fn dot_micro(&mut self, g: &Gemm, p: &Ptrs, rows: usize, cols: usize, steps_taken: DotSteps, i0: Value, j0: Value) {
        if g.k_split.is_some() {
            return self.dot_micro_split(g, p, rows, cols, steps_taken, i0, j0);
        }
        let (rs_a, cs_b) = (g.a.row_stride * 4, g.b.col_stride * 4);
        let off_a = self.b.ins().imul_imm_s(i0, rs_a);
        let pa = self.b.ins().iadd(p.a, off_a);
        let off_b = self.b.ins().imul_imm_s(j0, cs_b);
        let pb = self.b.ins().iadd(p.b, off_b);
        let steps = g.k / 4;
        let rem = g.k % 4;
        let zero = self.fconst(0.0, true);
        let accs = self.vars_holding(F32X4, vec![zero; rows * cols]);
        let pa_var = self.b.declare_var(I64);
        let pb_var = self.b.declare_var(I64);
        self.b.def_var(pa_var, pa);
        self.b.def_var(pb_var, pb);
        // The recorded vector steps per iteration (a divisor of `steps`, so
        // no remainder loop).
        let unroll = match steps_taken {
            DotSteps::Rolled(n) => n.max(1),
            // Not a form the verifier accepts for an unsplit tile; the
            // nearest one is a single iteration of every step.
            DotSteps::WrittenOut => steps.max(1),
        };
        if steps > 0 {
            let (s, e) = (self.iconst(0), self.iconst((steps / unroll) as i64));
            self.counted_loop(s, e, 1, |fx, _| {
                let (pa, pb) = (fx.b.use_var(pa_var), fx.b.use_var(pb_var));
                for t in 0..unroll as i64 {
                    let av: Vec<Value> = (0..rows)
                        .map(|r| fx.b.ins().load(F32X4, pure_flags(), pa, (r as i64 * rs_a + 16 * t) as i32))
                        .collect();
                    let bv: Vec<Value> = (0..cols)
                        .map(|c| fx.b.ins().load(F32X4, pure_flags(), pb, (c as i64 * cs_b + 16 * t) as i32))
                        .collect();
                    fx.dot_update(&accs, &av, &bv);
                }
                let pa = fx.b.ins().iadd_imm_s(pa, 16 * unroll as i64);
                let pb = fx.b.ins().iadd_imm_s(pb, 16 * unroll as i64);
                fx.b.def_var(pa_var, pa);
                fx.b.def_var(pb_var, pb);
            });
        }
        let (fa, fb) =
            if steps > 0 { (pure_flags(), pure_flags()) } else { (self.load_flags(g.a.buf), self.load_flags(g.b.buf)) };
        let (pa, pb) = (self.b.use_var(pa_var), self.b.use_var(pb_var));
        for r in 0..rows {
            let row = self.b.ins().iadd_imm_s(i0, r as i64);
            for c in 0..cols {
                let acc = self.b.use_var(accs[r * cols + c]);
                let mut s = self.lane_sum(acc);
                for t in 0..rem as i64 {
                    let a = self.b.ins().load(F32, fa, pa, (r as i64 * rs_a + 4 * t) as i32);
                    let b = self.b.ins().load(F32, fb, pb, (c as i64 * cs_b + 4 * t) as i32);
                    s = self.fma(a, b, s);
                }
                let col = self.b.ins().iadd_imm_s(j0, c as i64);
                self.finish(g, p, s, false, row, col, 1);
            }
        }
    }

    /// Address of element `(row, col)` of a matrix laid out like `m` from `base`.
    pub(super) fn element_addr(&mut self, base: Value, m: &MatrixRef, row: Value, col: Value) -> Value {
        let r = self.b.ins().imul_imm_s(row, m.row_stride * 4);
        let c = self.b.ins().imul_imm_s(col, m.col_stride * 4);
        let o = self.b.ins().iadd(r, c);
        self.b.ins().iadd(base, o)
    }

    /// Stores `lanes` lanes of `x` (a vector when `vec`) at `addr`.
    fn store_lanes(&mut self, x: Value, addr: Value, vec: bool, lanes: usize) {
        let flags = MemFlagsData::new().with_notrap();
        if !vec || lanes == 4 {
            self.b.ins().store(flags, x, addr, 0);
        } else {
            for l in 0..lanes {
                let xl = self.b.ins().extractlane(x, l as u8);
                self.b.ins().store(flags, xl, addr, 4 * l as i32);
            }
        }
    }

    /// Applies the epilogue to result `x` of element `(row, col)` (and the
    /// next three columns when `vec`) and stores it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish(&mut self, g: &Gemm, p: &Ptrs, mut x: Value, vec: bool, row: Value, col: Value, lanes: usize) {
        let e = &g.epilogue;
        let ty = if vec { F32X4 } else { F32 };
        let c_addr = match (g.c_rows, self.c_column) {
            // Scattered C: the row's offset from the table, the column's
            // from the wrapped layout.
            (Some(t), Some(column)) => {
                let off = match self.c_row_offset {
                    Some(off) => off,
                    None => {
                        let ix = self.b.ins().ishl_imm_s(row, 2);
                        let at = self.b.ins().iadd(self.bufptr[&t], ix);
                        self.b.ins().sload32(pure_flags(), at, 0)
                    }
                };
                let off = self.b.ins().iadd(off, column.at);
                let off = self.b.ins().ishl_imm_s(off, 2);
                self.b.ins().iadd(p.c, off)
            }
            _ => self.element_addr(p.c, &g.c, row, col),
        };
        if let (Some(_), Some(WrappedColumn { straddle: Some((taken, next)), .. })) = (g.c_rows, self.c_column) {
            // A vector straddling two rows of a scattered C: its first
            // `taken` lanes are added at the end of one row, the rest at the
            // start of the next, each as a whole-vector add with zeros in
            // the other lanes. Those lanes are elements of the same image
            // (a straddling vector is never in the last output row), written
            // back unchanged between this add's own load and store. Only
            // sums scatter.
            debug_assert!(e.accumulate && vec && lanes == 4 && e.bias.is_none() && e.activation.is_none());
            let zero = self.fconst(0.0, true);
            let low = self.shuffle_lanes(x, zero, std::array::from_fn(|l| if l < taken { l as i64 } else { 4 }));
            let high = self.shuffle_lanes(
                x,
                zero,
                std::array::from_fn(|l| if l + taken < 4 { (l + taken) as i64 } else { 4 }),
            );
            let flags = MemFlagsData::new().with_notrap();
            for (part, off) in [(low, 0), (high, 4 * next)] {
                let old = self.b.ins().load(F32X4, flags, c_addr, off as i32);
                let sum = self.b.ins().fadd(old, part);
                self.b.ins().store(flags, sum, c_addr, off as i32);
            }
            return;
        }
        if e.accumulate {
            let old = self.b.ins().load(ty, MemFlagsData::new().with_notrap(), c_addr, 0);
            x = self.b.ins().fadd(old, x);
        }
        match (&e.bias, p.bias) {
            (Some(Bias::PerRow(buf, _)), Some(base)) => {
                let off = self.b.ins().ishl_imm_s(row, 2);
                let a = self.b.ins().iadd(base, off);
                let flags = self.load_flags(*buf);
                let bv = self.b.ins().load(F32, flags, a, 0);
                let bv = if vec { self.splat(bv) } else { bv };
                x = self.b.ins().fadd(x, bv);
            }
            (Some(Bias::PerColumn(buf, _)), Some(base)) => {
                let off = self.b.ins().ishl_imm_s(col, 2);
                let a = self.b.ins().iadd(base, off);
                let flags = self.load_flags(*buf);
                let bv = self.b.ins().load(ty, flags, a, 0);
                x = self.b.ins().fadd(x, bv);
            }
            _ => {}
        }
        if let (Some(m), Some(base)) = (&e.pre_activation, p.pre) {
            let a = self.element_addr(base, m, row, col);
            self.store_lanes(x, a, vec, lanes);
        }
        if let Some(act) = e.activation {
            self.define_acc(EPILOGUE_X, x, vec);
            x = self.val(&activation_expr(act, Val::Acc(EPILOGUE_X)), vec);
        }
        if let (Some((act, m)), Some(base)) = (&e.grad_mask, p.mask) {
            let a = self.element_addr(base, m, row, col);
            let flags = self.load_flags(m.buf);
            let mx = self.b.ins().load(ty, flags, a, 0);
            self.define_acc(EPILOGUE_MASK, mx, vec);
            self.define_acc(EPILOGUE_X, x, vec);
            x = self.val(&activation_grad_expr(*act, Val::Acc(EPILOGUE_MASK), Val::Acc(EPILOGUE_X)), vec);
        }
        self.store_lanes(x, c_addr, vec, lanes);
    }
}
