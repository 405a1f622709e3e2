//! Scheduling: decides, per kernel, which loop runs across threads, which
//! loop is vectorised and how matrix products are register-tiled.
//!
//! Results never depend on the thread count: a parallel loop's iterations
//! are independent, and reductions were already split into chunks fixed by
//! the shapes when the kernels were built.

use crate::kernel::{
    AccId, Cond, Gemm, GemmTile, Idx, Kernel, Loop, LoopMode, Node, ProductIsa, Program, Stmt, Val, VarId,
};
use crate::passes::tiles::{self, DriverProduct, Steps, TileRates};
use crate::target::{Target, TileSource};
use std::collections::HashSet;

/// A kernel with less work than this (in flops or elements) runs on one
/// thread: waking the other threads would cost more than it saves.
pub const PARALLEL_MIN_WORK: u64 = 150_000;

/// Schedules every kernel of `program` for `threads` threads on the
/// program's target.
pub fn schedule(mut program: Program, threads: usize) -> Program {
    let threads = threads.max(1);
    program.threads = threads;
    let target = program.target;
    for k in &mut program.kernels {
        choose_tiles(&mut k.body, &target);
        parallelize(k, threads, &target);
        vectorize(&mut k.body, target.vector_lanes);
    }
    program
}

/// Register tiles from the target's vector registers.
fn choose_tiles(body: &mut [Stmt], target: &Target) {
    for s in body {
        match s {
            Stmt::Loop(l) => choose_tiles(&mut l.body, target),
            Stmt::If { then, otherwise, .. } => {
                choose_tiles(then, target);
                choose_tiles(otherwise, target);
            }
            Stmt::Gemm(g) => g.tile = tile_for(g, target),
            _ => {}
        }
    }
}

/// The rules measured with 16 registers (LeNet's shapes on SSE), stated in
/// the target's registers: an outer tile keeps half of them as
/// accumulators, the rest for the unrolled operand loads.
fn tile_for(g: &Gemm, target: &Target) -> GemmTile {
    if let Some(tile) = micro_tile(g, target) {
        return tile;
    }
    let accumulators = target.vector_registers / 2;
    match g.tile {
        GemmTile::Micro { .. } => GemmTile::Outer { rows: g.m.min(accumulators), vectors: 1, unroll: 3 },
        // One vector wide, up to 8 rows, `p` unrolled 3 times: best of the
        // shapes measured interleaved on LeNet (6x8 tiles spill an
        // accumulator through the stack, which puts a store-to-load
        // forwarding on its dependency chain; 6x4 unroll 3 ran conv1 ~25%
        // faster than 6x8 unroll 1, and 8x4 unroll 3 matched or beat
        // 8x4 unroll 2 on conv2 and its input gradient).
        // A reduction of a multiple of 4 (and not of 3) unrolls by 4, so no
        // remainder step runs after the loop (conv2's input gradient: k = 16).
        GemmTile::Outer { .. } => {
            let unroll = if !g.k.is_multiple_of(3) && g.k.is_multiple_of(4) { 4 } else { 3 };
            GemmTile::Outer { rows: g.m.min(accumulators), vectors: 1, unroll }
        }
        // 3x3 keeps 9 accumulators and 6 operand vectors live.
        GemmTile::Dot { steps, .. } if g.m.is_multiple_of(3) && g.n >= 3 && target.vector_registers >= 15 => {
            GemmTile::Dot { rows: 3, cols: 3, steps }
        }
        GemmTile::Dot { steps, .. } => {
            GemmTile::Dot { rows: g.m.min(target.vector_registers / 4), cols: g.n.min(2), steps }
        }
    }
}

/// A call to the target's wide micro-kernels, when the product's layout is
/// one the driver reads (B rows in place or through a table, its columns
/// adjacent or wrapping across rows; C dense, or scattered for sums) and
/// packing B, where its columns are not adjacent, is shared by at least one
/// whole register tile of rows. A dot-form product split along output rows
/// (`k_split`: a convolution's weight gradient) runs transposed, its
/// output gradient packed once per column block and shared by every block
/// of kernel taps; so does a linear layer with more outputs than batch
/// rows. Its rows and vectors are the cheapest by the target's tile speeds
/// ([`tiles::choose`]).
fn micro_tile(g: &Gemm, target: &Target) -> Option<GemmTile> {
    let isa = target.products;
    if isa == ProductIsa::Vector128 || g.c.buf == g.a.buf || g.c.buf == g.b.buf {
        return None;
    }
    let e = &g.epilogue;
    let sums_only = e.bias.is_none() && e.activation.is_none() && e.pre_activation.is_none() && e.grad_mask.is_none();
    let rates = tile_rates(target);
    let every: Vec<usize> = (1..=isa.max_tile_vectors()).collect();
    // The cheapest tile of the product as the driver sees it.
    let tile = |product: DriverProduct, vectors: &[usize], transposed: bool| {
        let (rows, vectors) = tiles::choose(product, &rates, vectors)?;
        Some(GemmTile::Micro { isa, rows, vectors, transposed })
    };
    // Transposed, the driver's B is A with its strides swapped: its columns
    // are A's rows.
    // Its steps come from tables when its A (the product's B) is read in
    // segments or through a row table: a convolution's weight gradient.
    let transposed_product = DriverProduct {
        m: g.n,
        n: g.m,
        k: g.k,
        b_adjacent: g.a.row_stride == 1,
        b_wrap_row: None,
        steps: if g.k_split.is_some() || g.b_rows.is_some() {
            Steps::Tables
        } else if g.b.row_stride == 1 {
            Steps::Dense
        } else {
            Steps::Strided
        },
    };
    if let Some(split) = g.k_split {
        let segments = split.outer > 0 && g.k.is_multiple_of(split.outer);
        let plain = g.b_wrap.is_none() && g.c_rows.is_none() && g.c_wrap.is_none() && !g.a_splat;
        let reused = crate::passes::layout::transposed_panels_pay(g.n, target);
        // The output channels span the driver's vectors: at least one whole.
        let channels = g.m >= isa.lanes();
        if !(segments && plain && sums_only && reused && channels) {
            return None;
        }
        return tile(transposed_product, &every, true);
    }
    let unit_columns = (g.c.col_stride == 1 || g.c_wrap.is_some())
        && e.pre_activation.as_ref().is_none_or(|m| m.col_stride == 1)
        && e.grad_mask.as_ref().is_none_or(|(_, m)| m.col_stride == 1);
    let wrap_ok = g.b_wrap.is_none_or(|w| w.row > 0 && w.stride >= w.row as i64 * g.b.col_stride);
    // A scattered C (rows through a table, wrapped columns) only takes sums.
    let c_ok = (g.c_rows.is_none() && g.c_wrap.is_none()) || (sums_only && e.accumulate);
    let c_wrap_ok = g.c_wrap.is_none_or(|w| w.row > 0 && w.stride >= w.row as i64 * g.c.col_stride);
    if !(unit_columns && wrap_ok && c_ok && c_wrap_ok) {
        return None;
    }
    // B's columns apart (a linear layer's weights, `[out, in]`): run
    // transposed when C has more columns than rows, so the gathered panel
    // is the smaller operand (the batch) and more rows share it; the batch
    // then spans whole vectors of C's transpose.
    let dense = g.b_rows.is_none() && g.b_wrap.is_none() && g.c_rows.is_none() && g.c_wrap.is_none() && !g.a_splat;
    if dense
        && g.b.col_stride != 1
        && g.c.col_stride == 1
        && g.n > g.m
        && g.m >= isa.lanes()
        && crate::passes::layout::gathered_panels_pay(g.n, target)
    {
        return tile(transposed_product, &every, true);
    }
    // B read in place through a row table (a convolution's taps) steps
    // through tables; a gathered panel, or dense rows, a constant stride.
    let in_place_table = g.b_rows.is_some() && g.b.col_stride == 1;
    let product = DriverProduct {
        m: g.m,
        n: g.n,
        k: g.k,
        b_adjacent: g.b.col_stride == 1,
        b_wrap_row: g.b_wrap.map(|w| w.row),
        steps: if in_place_table {
            Steps::Tables
        } else if g.a.col_stride == 1 && !g.a_splat {
            Steps::Dense
        } else {
            Steps::Strided
        },
    };
    let tile = tile(product, &every, false)?;
    // A product the layout pass laid out for the micro-kernels (unsplatted
    // weights, strided wrapped columns) has no other tile. Others go there
    // when the driver reads B in place, or its gathered panels pay; and
    // a scattered C only with rows of at least a vector (else one masked
    // store per short run costs as much as the arithmetic).
    let laid_out = matches!(g.tile, GemmTile::Micro { .. });
    let lanes = isa.lanes();
    // (Wrap rows that are not whole vectors are read in place when the
    // driver cuts them into row blocks.)
    let gathers = g.b.col_stride != 1
        || g.b_wrap.is_some_and(|w| {
            !w.row.is_multiple_of(lanes)
                && !crate::codegen::micro::cuts_row_blocks(g.m, w.row, lanes, g.c.col_stride == 1)
        })
        || (g.b_wrap.is_none() && !g.n.is_multiple_of(lanes));
    let pays = crate::passes::layout::gathered_panels_pay(g.m, target);
    let short_runs = g.c_wrap.is_some_and(|w| w.row < lanes);
    if !laid_out && ((gathers && !pays) || short_runs) {
        return None;
    }
    Some(tile)
}

/// Each tile's speed on the target: measured on this CPU when the target
/// asks for it and the CPU has the ISA, else the model.
fn tile_rates(target: &Target) -> TileRates {
    match target.tiles {
        TileSource::Measured => crate::codegen::micro::calibrate::rates(target.products)
            .map(|(rates, _)| *rates)
            .unwrap_or_else(|| TileRates::model(target.products)),
        TileSource::Model => TileRates::model(target.products),
    }
}

/// Work estimate of a kernel for the parallel threshold.
fn work(k: &Kernel) -> u64 {
    k.flops
}

/// Splits the kernel's outermost loop across threads when worthwhile. A lone
/// matrix product is first split into column or row blocks.
fn parallelize(k: &mut Kernel, threads: usize, target: &Target) {
    let lanes = target.vector_lanes;
    k.threads = 1;
    if threads < 2 || work(k) < PARALLEL_MIN_WORK {
        return;
    }
    if let [Stmt::Gemm(g)] = k.body.as_mut_slice()
        && let Some(split) = split_gemm(g, threads, target)
    {
        k.body = vec![split];
    }
    let [Stmt::Loop(l)] = k.body.as_mut_slice() else {
        return;
    };
    if l.extent < 2 {
        return;
    }
    if l.extent >= 4096 && !contains_gemm(&l.body) {
        // A long loop of independent elements (with inner loops of their
        // own, such as the chunks a combine adds): block it so each thread
        // keeps a loop the vectorizer can take.
        let blocks = (1..=threads).rev().find(|b| l.extent % (b * lanes) == 0 || l.extent % b == 0).unwrap_or(1);
        if blocks < 2 {
            return;
        }
        let inner_var = max_var(&l.body).max(l.var) + 1;
        let len = l.extent / blocks;
        let block_var = l.var;
        let body = std::mem::take(&mut l.body);
        let subst = Idx::var(block_var) * len + Idx::var(inner_var);
        let body = body.into_iter().map(|s| substitute_stmt(s, block_var, &subst)).collect();
        l.extent = blocks;
        l.body = vec![Stmt::lp(inner_var, len, LoopMode::Serial, body)];
    }
    l.mode = LoopMode::Parallel;
    k.threads = threads.min(l.extent);
}

/// Whether a product runs anywhere in `body`.
fn contains_gemm(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Gemm(_) => true,
        Stmt::Loop(l) => contains_gemm(&l.body),
        Stmt::If { then, otherwise, .. } => contains_gemm(then) || contains_gemm(otherwise),
        _ => false,
    })
}

fn max_var(body: &[Stmt]) -> VarId {
    let mut m = 0;
    for s in body {
        if let Stmt::Loop(l) = s {
            m = m.max(l.var).max(max_var(&l.body));
        }
        if let Stmt::If { then, otherwise, .. } = s {
            m = m.max(max_var(then)).max(max_var(otherwise));
        }
    }
    m
}

/// Blocks a transposed product's rows are cut into per thread, at most.
const BLOCKS_PER_THREAD: usize = 4;

/// Splits a matrix product into `threads` independent blocks of rows or of
/// columns (a transposed product's rows into up to [`BLOCKS_PER_THREAD`]
/// per thread), as a loop whose iterations each compute one block.
fn split_gemm(g: &Gemm, threads: usize, target: &Target) -> Option<Stmt> {
    let lanes = target.vector_lanes;
    let var: VarId = 1_000_000;
    let v = Idx::var(var);
    let (rows_min, cols_min, col_unit) = match g.tile {
        GemmTile::Outer { rows, vectors, .. } => (rows, lanes * vectors, lanes),
        GemmTile::Dot { rows, cols, .. } => (rows, cols, lanes),
        // Blocks of whole vectors, so no thread's block ends in a partial
        // one. Transposed, C's rows are the driver's columns: split them in
        // whole vectors, or its columns (the driver's rows) in whole tiles.
        GemmTile::Micro { isa, rows, transposed: true, .. } => (isa.lanes(), rows, 1),
        GemmTile::Micro { isa, rows, .. } => (rows, isa.lanes(), isa.lanes()),
    };
    // Wrapped columns come in whole blocks: split such a product by rows.
    let by_cols = g.b_wrap.is_none()
        && g.c_wrap.is_none()
        && g.n.is_multiple_of(threads)
        && g.n / threads >= cols_min
        && (g.n / threads).is_multiple_of(col_unit);
    let by_rows = g.m.is_multiple_of(threads) && g.m / threads >= rows_min;
    // Transposed, C's rows are the driver's column blocks, each of which
    // reads all of A and gathers its own panels: cut into more blocks than
    // threads, they cost nothing more, and the threads claim them as they
    // go (guided runs), so one thread slowed by the host no longer leaves
    // the other waiting (the 3072 -> 512 layer at batch 256 had spent 6 %
    // of its samples yielding, `perf`).
    let finer = match g.tile {
        GemmTile::Micro { isa, vectors, transposed: true, .. } => {
            let width = isa.lanes() * vectors;
            (threads..=BLOCKS_PER_THREAD * threads)
                .rev()
                .find(|&b| g.m.is_multiple_of(b) && (g.m / b).is_multiple_of(width) && g.m / b >= 2 * width)
        }
        _ => None,
    };
    let row_blocks = finer.or_else(|| (!by_cols && by_rows).then_some(threads));
    let mut part = g.clone();
    let blocks = if let Some(blocks) = row_blocks {
        let h = (g.m / blocks) as i64;
        part.m = g.m / blocks;
        part.a.offset = part.a.offset.clone() + v.clone() * (h * g.a.row_stride);
        part.c.offset = part.c.offset.clone() + v.clone() * (h * g.c.row_stride);
        shift_epilogue(&mut part, &v, h, true);
        blocks
    } else if by_cols {
        let w = (g.n / threads) as i64;
        part.n = g.n / threads;
        part.b.offset = part.b.offset.clone() + v.clone() * (w * g.b.col_stride);
        part.c.offset = part.c.offset.clone() + v.clone() * (w * g.c.col_stride);
        shift_epilogue(&mut part, &v, w, false);
        threads
    } else {
        return None;
    };
    part.tile = tile_for(&part, target);
    Some(Stmt::lp(var, blocks, LoopMode::Serial, vec![Stmt::Gemm(Box::new(part))]))
}

fn shift_epilogue(g: &mut Gemm, v: &Idx, step: i64, rows: bool) {
    use crate::kernel::Bias;
    let e = &mut g.epilogue;
    let shift = |m: &mut crate::kernel::MatrixRef| {
        let stride = if rows { m.row_stride } else { m.col_stride };
        m.offset = m.offset.clone() + v.clone() * (step * stride);
    };
    if let Some(m) = &mut e.pre_activation {
        shift(m);
    }
    if let Some((_, m)) = &mut e.grad_mask {
        shift(m);
    }
    match &mut e.bias {
        Some(Bias::PerRow(_, off)) if rows => *off = off.clone() + v.clone() * step,
        Some(Bias::PerColumn(_, off)) if !rows => *off = off.clone() + v.clone() * step,
        _ => {}
    }
}

fn substitute_idx(i: Idx, v: VarId, with: &Idx) -> Idx {
    let s = |x: Box<Idx>| Box::new(substitute_idx(*x, v, with));
    match i {
        Idx::Var(w) if w == v => with.clone(),
        Idx::Const(_) | Idx::Var(_) => i,
        Idx::Add(a, b) => Idx::Add(s(a), s(b)),
        Idx::Mul(a, k) => Idx::Mul(s(a), k),
        Idx::Div(a, k) => Idx::Div(s(a), k),
        Idx::Rem(a, k) => Idx::Rem(s(a), k),
        Idx::Min(a, b) => Idx::Min(s(a), s(b)),
        Idx::Max(a, b) => Idx::Max(s(a), s(b)),
        Idx::Xor(a, b) => Idx::Xor(s(a), s(b)),
        Idx::Table(t, a) => Idx::Table(t, s(a)),
        Idx::FloatTable(t, a) => Idx::FloatTable(t, s(a)),
    }
}

fn substitute_cond(c: Cond, v: VarId, with: &Idx) -> Cond {
    match c {
        Cond::Index(o, a, b) => Cond::Index(o, substitute_idx(a, v, with), substitute_idx(b, v, with)),
        Cond::Value(o, a, b) => {
            Cond::Value(o, Box::new(substitute_val(*a, v, with)), Box::new(substitute_val(*b, v, with)))
        }
        Cond::IsNan(a) => Cond::IsNan(Box::new(substitute_val(*a, v, with))),
        Cond::And(a, b) => Cond::And(Box::new(substitute_cond(*a, v, with)), Box::new(substitute_cond(*b, v, with))),
        Cond::Or(a, b) => Cond::Or(Box::new(substitute_cond(*a, v, with)), Box::new(substitute_cond(*b, v, with))),
    }
}

fn substitute_val(x: Val, v: VarId, with: &Idx) -> Val {
    match x {
        Val::Load(b, i) => Val::Load(b, substitute_idx(i, v, with)),
        Val::FromIdx(i) => Val::FromIdx(substitute_idx(i, v, with)),
        Val::Un(op, a) => Val::Un(op, Box::new(substitute_val(*a, v, with))),
        Val::Bin(op, a, b) => {
            Val::Bin(op, Box::new(substitute_val(*a, v, with)), Box::new(substitute_val(*b, v, with)))
        }
        Val::Select(c, a, b) => Val::Select(
            Box::new(substitute_cond(*c, v, with)),
            Box::new(substitute_val(*a, v, with)),
            Box::new(substitute_val(*b, v, with)),
        ),
        Val::Const(_) | Val::Acc(_) => x,
    }
}

fn substitute_stmt(s: Stmt, v: VarId, with: &Idx) -> Stmt {
    match s {
        Stmt::Loop(mut l) => {
            l.body = l.body.into_iter().map(|s| substitute_stmt(s, v, with)).collect();
            Stmt::Loop(l)
        }
        Stmt::Store { buf, idx, val, accumulate } => {
            Stmt::Store { buf, idx: substitute_idx(idx, v, with), val: substitute_val(val, v, with), accumulate }
        }
        Stmt::Let { acc, init } => Stmt::Let { acc, init: substitute_val(init, v, with) },
        Stmt::Reduce { acc, op, val } => Stmt::Reduce { acc, op, val: substitute_val(val, v, with) },
        Stmt::Set { acc, val } => Stmt::Set { acc, val: substitute_val(val, v, with) },
        Stmt::If { cond, then, otherwise } => Stmt::If {
            cond: substitute_cond(cond, v, with),
            then: then.into_iter().map(|s| substitute_stmt(s, v, with)).collect(),
            otherwise: otherwise.into_iter().map(|s| substitute_stmt(s, v, with)).collect(),
        },
        Stmt::Gemm(g) => Stmt::Gemm(g),
    }
}

/// Marks, on every path of the loop tree, the innermost loop that can run
/// `lanes` iterations per instruction with contiguous or uniform accesses.
fn vectorize(body: &mut [Stmt], lanes: usize) -> bool {
    let mut any = false;
    for s in body {
        match s {
            Stmt::Loop(l) => {
                let inner = vectorize(&mut l.body, lanes);
                if !inner && l.mode == LoopMode::Serial && l.extent >= lanes && vectorizable(l, lanes) {
                    l.mode = LoopMode::Vector;
                    any = true;
                }
                any |= inner;
            }
            Stmt::If { then, otherwise, .. } => {
                any |= vectorize(then, lanes);
                any |= vectorize(otherwise, lanes);
            }
            _ => {}
        }
    }
    any
}

/// Whether loop `l` may be vectorised, and is worth it (every access that
/// moves with the loop variable is contiguous).
fn vectorizable(l: &Loop, lanes: usize) -> bool {
    let v = l.var;
    let mut declared = HashSet::new();
    collect_declared(&l.body, &mut declared);
    let mut ok = true;
    let mut stores: Vec<(usize, Idx, bool)> = Vec::new();
    let mut loads: Vec<(usize, Idx)> = Vec::new();
    let mut reduced_outer: HashSet<AccId> = HashSet::new();
    let mut read_accs: HashSet<AccId> = HashSet::new();
    check_stmts(&l.body, v, &declared, &mut ok, &mut stores, &mut loads, &mut reduced_outer, &mut read_accs);
    if !ok {
        return false;
    }
    // Lane partials must not be read inside the loop.
    if reduced_outer.iter().any(|a| read_accs.contains(a)) {
        return false;
    }
    // Loads that move with v are contiguous, strided or another constant
    // lane pattern (shuffled, or gathered lane by lane) when the stores are
    // contiguous; at least one access must be
    // contiguous for the vector form to pay.
    for (_, i) in &loads {
        if i.lane_offsets(v, lanes).is_none() && i.coefficient(v).is_none() {
            return false;
        }
    }
    let contiguous = loads.iter().any(|(_, i)| i.coefficient(v) == Some(1)) || !stores.is_empty();
    if !contiguous {
        return false;
    }
    for (buf, i, _) in &stores {
        if i.coefficient(v) != Some(1) {
            return false;
        }
        // A buffer both stored and loaded: only at the very same index.
        for (lb, li) in &loads {
            if lb == buf && li != i {
                return false;
            }
        }
    }
    true
}

fn collect_declared(body: &[Stmt], out: &mut HashSet<AccId>) {
    for s in body {
        match s {
            Stmt::Let { acc, .. } => {
                out.insert(*acc);
            }
            Stmt::Loop(l) => collect_declared(&l.body, out),
            Stmt::If { then, otherwise, .. } => {
                collect_declared(then, out);
                collect_declared(otherwise, out);
            }
            _ => {}
        }
    }
}

fn val_info(x: &Val, loads: &mut Vec<(usize, Idx)>, accs: &mut HashSet<AccId>) {
    x.visit(&mut |n| match n {
        Node::Val(Val::Load(b, i)) => loads.push((*b, i.clone())),
        Node::Val(Val::Acc(a)) => {
            accs.insert(*a);
        }
        _ => {}
    });
}

#[allow(clippy::too_many_arguments)]
fn check_stmts(
    body: &[Stmt],
    v: VarId,
    declared: &HashSet<AccId>,
    ok: &mut bool,
    stores: &mut Vec<(usize, Idx, bool)>,
    loads: &mut Vec<(usize, Idx)>,
    reduced_outer: &mut HashSet<AccId>,
    read_accs: &mut HashSet<AccId>,
) {
    for s in body {
        match s {
            Stmt::Loop(l) => {
                if l.mode != LoopMode::Serial {
                    *ok = false;
                }
                check_stmts(&l.body, v, declared, ok, stores, loads, reduced_outer, read_accs)
            }
            Stmt::Store { buf, idx, val, accumulate } => {
                stores.push((*buf, idx.clone(), *accumulate));
                val_info(val, loads, read_accs);
            }
            Stmt::Let { init, .. } => val_info(init, loads, read_accs),
            Stmt::Reduce { acc, val, .. } => {
                if !declared.contains(acc) {
                    reduced_outer.insert(*acc);
                }
                val_info(val, loads, read_accs);
            }
            Stmt::Set { acc, val } => {
                if !declared.contains(acc) {
                    *ok = false;
                }
                val_info(val, loads, read_accs);
            }
            Stmt::If { cond, then, otherwise } => {
                // Only conditions that are the same for every lane.
                let mut uniform = true;
                cond.visit(&mut |n| match n {
                    Node::Val(Val::Load(..) | Val::Acc(_)) => uniform = false,
                    Node::Idx(i) if i.uses(v) => uniform = false,
                    Node::Val(Val::FromIdx(i)) if i.uses(v) => uniform = false,
                    _ => {}
                });
                if !uniform {
                    *ok = false;
                }
                check_stmts(then, v, declared, ok, stores, loads, reduced_outer, read_accs);
                check_stmts(otherwise, v, declared, ok, stores, loads, reduced_outer, read_accs);
            }
            Stmt::Gemm(_) => *ok = false,
        }
    }
}
