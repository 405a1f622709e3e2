//! Matrix products: which layout flags go with which tile form, and which
//! elements of each operand a product touches, both as `codegen/gemm.rs`
//! lowers it.

use super::interval::{Interval, table_range};
use super::{Problem, kind_name, label};
use crate::kernel::{Bias, BufId, BufferKind, ColumnWrap, Gemm, GemmTile, Idx, ProductIsa, Program};

/// A layout rule of matrix products that a product breaks.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GemmRule {
    /// Outer tiles load and store `f32x4` vectors along `j`.
    #[error("an outer-product tile needs unit column stride in {matrix}, which has {stride}")]
    OuterNeedsUnitColumns {
        /// `B`, `C`, `pre_activation` or `grad_mask`.
        matrix: &'static str,
        /// Its column stride.
        stride: i64,
    },
    /// Dot tiles load `f32x4` vectors along `p`.
    #[error("a dot tile needs A.col_stride == 1 and B.row_stride == 1, got {a_col} and {b_row}")]
    DotNeedsUnitReduction {
        /// `A`'s column stride.
        a_col: i64,
        /// `B`'s row stride.
        b_row: i64,
    },
    /// A flag the tile form ignores.
    #[error("`{flag}` is only lowered for {needs}; this product has {has}")]
    FlagIgnored {
        /// The flag.
        flag: &'static str,
        /// What it needs.
        needs: &'static str,
        /// What the product has instead.
        has: &'static str,
    },
    /// A micro-kernel call of an ISA the program's target does not name.
    #[error("a micro tile of {isa} in a program whose target runs products on {target}")]
    MicroIsaNotTarget {
        /// The tile's ISA.
        isa: ProductIsa,
        /// The target's.
        target: ProductIsa,
    },
    /// A micro tile larger than its ISA's registers.
    #[error(
        "a micro tile of {rows} rows by {vectors} vectors does not fit {isa}; expected 1 to {most_vectors} vectors and 1 to {max} rows"
    )]
    MicroTileTooLarge {
        /// The ISA.
        isa: ProductIsa,
        /// Tile rows.
        rows: usize,
        /// Tile vectors.
        vectors: usize,
        /// The most rows for that many vectors.
        max: usize,
        /// The most vectors a tile of the ISA spans.
        most_vectors: usize,
    },
    /// The driver reads operands while it writes C.
    #[error("a micro tile's C overlaps operand {matrix}; expected C apart from A and B")]
    MicroOverlap {
        /// `A` or `B`.
        matrix: &'static str,
    },
    /// `k` cannot be split evenly.
    #[error("k_split runs {outer} segments over k = {k}; expected a positive number of segments dividing k")]
    UnevenSplit {
        /// Segments.
        outer: usize,
        /// The reduction length.
        k: usize,
    },
    /// Wrapped columns are walked in whole blocks of at most 8 vectors.
    #[error(
        "{flag} with rows of {row} (blocks of {block} columns) does not fit n = {n}; expected row >= 4, n a multiple of the block and at most 8 vectors per block"
    )]
    WrapDoesNotFit {
        /// `b_wrap` or `c_wrap`.
        flag: &'static str,
        /// Columns per row.
        row: usize,
        /// Columns per block.
        block: usize,
        /// The product's columns.
        n: usize,
    },
    /// Rows closer than their length would overlap.
    #[error("{flag} places rows of {row} columns {stride} elements apart; expected a stride of at least the row")]
    WrapOverlaps {
        /// `b_wrap` or `c_wrap`.
        flag: &'static str,
        /// Columns per row.
        row: usize,
        /// Distance between rows.
        stride: i64,
    },
    /// A straddling vector of a scattered C is added as two whole vectors.
    #[error(
        "scattered C with vectors straddling rows of {row} only adds sums; expected an accumulating epilogue without bias, activation, pre_activation or grad_mask"
    )]
    ScatterEpilogue {
        /// Columns per row.
        row: usize,
    },
    /// An index table shorter than what indexes it.
    #[error("{flag} table {table} has {len} entries, but it is indexed by {indexed_by} < {needed}")]
    TableTooShort {
        /// `b_rows` or `c_rows`.
        flag: &'static str,
        /// The table.
        table: String,
        /// Its entries.
        len: usize,
        /// The index (`p`, `j` or `i`).
        indexed_by: &'static str,
        /// Entries needed.
        needed: usize,
    },
}

/// Every buffer a product names, with its role.
pub(super) fn buffers(g: &Gemm) -> Vec<(&'static str, BufId)> {
    let mut out = vec![("matrix A", g.a.buf), ("matrix B", g.b.buf), ("matrix C", g.c.buf)];
    out.extend(g.b_rows.map(|t| ("b_rows", t)));
    out.extend(g.c_rows.map(|t| ("c_rows", t)));
    match &g.epilogue.bias {
        Some(Bias::PerRow(b, _) | Bias::PerColumn(b, _)) => out.push(("bias", *b)),
        None => {}
    }
    out.extend(g.epilogue.pre_activation.as_ref().map(|m| ("pre_activation", m.buf)));
    out.extend(g.epilogue.grad_mask.as_ref().map(|(_, m)| ("grad_mask", m.buf)));
    out
}

fn is_outer(g: &Gemm) -> bool {
    matches!(g.tile, GemmTile::Outer { .. })
}

/// Whether codegen walks the product in wrapped column blocks, and over
/// which matrix: `b_wrap` first, then `c_wrap`.
fn wrapped(g: &Gemm, lanes: usize) -> Option<(ColumnWrap, bool)> {
    if !is_outer(g) {
        return None;
    }
    match (g.b_wrap, g.c_wrap) {
        (Some(w), _) => w.fits(g.n, lanes).then_some((w, false)),
        (None, Some(w)) => w.fits(g.n, lanes).then_some((w, true)),
        (None, None) => None,
    }
}

/// Whether C is scattered through `c_rows` (as codegen decides it).
fn scattered(g: &Gemm, lanes: usize) -> Option<(BufId, ColumnWrap)> {
    match (g.c_rows, wrapped(g, lanes)) {
        (Some(t), Some((w, true))) => Some((t, w)),
        _ => None,
    }
}

/// The layout rules `g` breaks (every buffer it names exists).
pub(super) fn rules(program: &Program, g: &Gemm) -> Vec<Problem> {
    let lanes = program.target.vector_lanes;
    let mut out: Vec<GemmRule> = Vec::new();
    let has = match g.tile {
        GemmTile::Outer { .. } => "an outer-product tile",
        GemmTile::Dot { .. } => "a dot tile",
        GemmTile::Micro { .. } => "a micro tile",
    };
    let ignored = |flag, needs| GemmRule::FlagIgnored { flag, needs, has };
    match g.tile {
        GemmTile::Outer { .. } => {
            let mut unit = vec![("B", g.b.col_stride), ("C", g.c.col_stride)];
            unit.extend(g.epilogue.pre_activation.as_ref().map(|m| ("pre_activation", m.col_stride)));
            unit.extend(g.epilogue.grad_mask.as_ref().map(|(_, m)| ("grad_mask", m.col_stride)));
            for (matrix, stride) in unit {
                if stride != 1 {
                    out.push(GemmRule::OuterNeedsUnitColumns { matrix, stride });
                }
            }
            if g.k_split.is_some() {
                out.push(ignored("k_split", "dot tiles"));
            }
        }
        GemmTile::Micro { isa, rows, vectors, transposed } => {
            if isa != program.target.products {
                out.push(GemmRule::MicroIsaNotTarget { isa, target: program.target.products });
            }
            let max = isa.max_tile_rows(vectors);
            let most_vectors = isa.max_tile_vectors();
            if isa == ProductIsa::Vector128 || !(1..=most_vectors).contains(&vectors) || !(1..=max).contains(&rows) {
                out.push(GemmRule::MicroTileTooLarge { isa, rows, vectors, max, most_vectors });
            }
            let mut unit = vec![("C", g.c.col_stride)];
            unit.extend(g.epilogue.pre_activation.as_ref().map(|m| ("pre_activation", m.col_stride)));
            unit.extend(g.epilogue.grad_mask.as_ref().map(|(_, m)| ("grad_mask", m.col_stride)));
            for (matrix, stride) in unit {
                // A scattered C takes its column stride within each row.
                let scattered_c = matrix == "C" && g.c_wrap.is_some();
                if stride != 1 && !transposed && !scattered_c {
                    out.push(GemmRule::OuterNeedsUnitColumns { matrix, stride });
                }
            }
            let e = &g.epilogue;
            if transposed {
                // The driver reads the dot form's layout with A and B swapped.
                for (flag, set) in [
                    ("b_wrap", g.b_wrap.is_some()),
                    ("c_rows", g.c_rows.is_some()),
                    ("c_wrap", g.c_wrap.is_some()),
                    ("a_splat", g.a_splat),
                ] {
                    if set {
                        out.push(ignored(flag, "micro tiles that are not transposed"));
                    }
                }
                if g.k_split.is_none() && g.b_rows.is_some() {
                    out.push(ignored("b_rows", "transposed micro tiles with k_split (a column table)"));
                }
                // The epilogue pass after the call walks C's rows by vectors.
                let extra =
                    e.bias.is_some() || e.activation.is_some() || e.pre_activation.is_some() || e.grad_mask.is_some();
                if extra && (g.c.col_stride != 1 || g.k_split.is_some()) {
                    out.push(ignored("epilogue beyond accumulate", "micro tiles over C with unit column stride"));
                }
            } else if g.k_split.is_some() {
                out.push(ignored("k_split", "dot tiles and transposed micro tiles"));
            }
            let sums_only = e.accumulate
                && e.bias.is_none()
                && e.activation.is_none()
                && e.pre_activation.is_none()
                && e.grad_mask.is_none();
            if (g.c_rows.is_some() || g.c_wrap.is_some()) && !sums_only {
                out.push(GemmRule::ScatterEpilogue { row: g.c_wrap.map_or(g.n, |w| w.row) });
            }
            if let Some(w) = g.c_wrap
                && (w.row == 0 || w.stride < w.row as i64 * g.c.col_stride)
            {
                out.push(GemmRule::WrapOverlaps { flag: "c_wrap", row: w.row, stride: w.stride });
            }
            if let Some(w) = g.b_wrap
                && (w.row == 0 || w.stride < w.row as i64 * g.b.col_stride)
            {
                out.push(GemmRule::WrapOverlaps { flag: "b_wrap", row: w.row, stride: w.stride });
            }
            for (matrix, buf) in [("A", g.a.buf), ("B", g.b.buf)] {
                if buf == g.c.buf {
                    out.push(GemmRule::MicroOverlap { matrix });
                }
            }
        }
        GemmTile::Dot { .. } => {
            if g.a.col_stride != 1 || g.b.row_stride != 1 {
                out.push(GemmRule::DotNeedsUnitReduction { a_col: g.a.col_stride, b_row: g.b.row_stride });
            }
            if g.b_rows.is_some() && g.k_split.is_none() {
                out.push(ignored("b_rows", "outer-product tiles or split dot tiles"));
            }
            if g.a_splat {
                out.push(ignored("a_splat", "outer-product tiles"));
            }
            for (flag, set) in [("b_wrap", g.b_wrap.is_some()), ("c_wrap", g.c_wrap.is_some())] {
                if set {
                    out.push(ignored(flag, "outer-product tiles"));
                }
            }
            if g.c_rows.is_some() {
                out.push(ignored("c_rows", "outer-product tiles with c_wrap"));
            }
        }
    }
    if let Some(s) = g.k_split
        && (s.outer == 0 || !g.k.is_multiple_of(s.outer))
    {
        out.push(GemmRule::UnevenSplit { outer: s.outer, k: g.k });
    }
    if is_outer(g) {
        if g.b_wrap.is_some() && g.b_rows.is_none() {
            out.push(ignored("b_wrap", "products with a b_rows table"));
        }
        if g.b_wrap.is_some() && g.c_wrap.is_some() {
            out.push(ignored("c_wrap", "products without b_wrap"));
        }
        if g.c_wrap.is_some() && g.c_rows.is_none() {
            out.push(ignored("c_wrap", "products with a c_rows table"));
        }
        if g.c_rows.is_some() && g.c_wrap.is_none() {
            out.push(ignored("c_rows", "outer-product tiles with c_wrap"));
        }
        for (flag, wrap) in [("b_wrap", g.b_wrap), ("c_wrap", g.c_wrap)] {
            let Some(w) = wrap else { continue };
            if !w.fits(g.n, lanes) {
                out.push(GemmRule::WrapDoesNotFit { flag, row: w.row, block: w.block(lanes), n: g.n });
            }
            if w.stride < w.row as i64 {
                out.push(GemmRule::WrapOverlaps { flag, row: w.row, stride: w.stride });
            }
        }
    }
    if let Some((_, w)) = scattered(g, lanes) {
        let e = &g.epilogue;
        let plain_sum = e.accumulate
            && e.bias.is_none()
            && e.activation.is_none()
            && e.pre_activation.is_none()
            && e.grad_mask.is_none();
        if !w.row.is_multiple_of(lanes) && !plain_sum {
            out.push(GemmRule::ScatterEpilogue { row: w.row });
        }
    }
    let mut problems: Vec<Problem> = out.into_iter().map(Problem::Gemm).collect();
    // Tables: constant i32 data, as long as what indexes them.
    let b_rows_index = if matches!(g.tile, GemmTile::Dot { .. } | GemmTile::Micro { transposed: true, .. }) {
        ("j", g.n)
    } else {
        ("p", g.k)
    };
    for (flag, table, (indexed_by, needed)) in [("b_rows", g.b_rows, b_rows_index), ("c_rows", g.c_rows, ("i", g.m))]
        .into_iter()
        .filter_map(|(f, t, n)| Some((f, t?, n)))
    {
        let buf = &program.buffers[table];
        if !matches!(buf.kind, BufferKind::ConstI32(_)) {
            let (role, buffer) = (flag.to_string(), label(program, table));
            problems.push(Problem::NotATable { role, buffer, kind: kind_name(&buf.kind) });
        } else if buf.len < needed {
            let table = label(program, table);
            problems.push(Problem::Gemm(GemmRule::TableTooShort { flag, table, len: buf.len, indexed_by, needed }));
        }
    }
    problems
}

/// Elements of one operand a product touches: `offset` (when the operand
/// has one) plus `relative`.
pub(super) struct Footprint<'g> {
    pub(super) access: &'static str,
    pub(super) buf: BufId,
    pub(super) offset: Option<&'g Idx>,
    pub(super) relative: Interval,
}

/// The used offsets of wrapped columns `0..n`: column `j` at
/// `(j / row) * stride + j % row`.
fn wrapped_columns(w: ColumnWrap, n: usize, step: i64) -> Interval {
    let last = n.max(1) - 1;
    let (full_rows, rest) = ((last / w.row) as i64, (last % w.row) as i64);
    if w.stride >= 0 && step >= 0 {
        // The farthest column ends the last row, or the row before it.
        let end_of_last = full_rows.saturating_mul(w.stride).saturating_add(rest.saturating_mul(step));
        let end_of_previous =
            (full_rows - 1).saturating_mul(w.stride).saturating_add((w.row as i64 - 1).saturating_mul(step));
        return Interval { lo: 0, hi: if full_rows > 0 { end_of_last.max(end_of_previous) } else { end_of_last } };
    }
    // Every row start plus every position within a row: a bound for any signs.
    let rows = Interval::span(last / w.row + 1, w.stride);
    let within = Interval::span(n.min(w.row), step);
    rows.add(within).unwrap_or(Interval { lo: i64::MIN, hi: i64::MAX })
}

/// The elements a scattered C's vector adds write: every lane of every
/// vector, and for one straddling two rows both whole vectors.
fn scattered_columns(w: ColumnWrap, n: usize, lanes: usize) -> Interval {
    let block = w.block(lanes);
    let blocks = n / block;
    let block_shift = (block / w.row) as i64 * w.stride * (blocks.max(1) as i64 - 1);
    let mut hi = 0;
    let last_lane = lanes as i64 - 1;
    for v in 0..block / lanes {
        let (r0, c0) = ((lanes * v / w.row) as i64, lanes * v % w.row);
        let first = r0 * w.stride + c0 as i64;
        let straddles = w.row - c0 < lanes;
        hi = hi.max(if straddles { (r0 + 1) * w.stride + last_lane } else { first + last_lane });
    }
    Interval { lo: 0, hi: block_shift + hi }
}

/// Every operand's footprint, for a product whose buffers exist and whose
/// tables are constant (others are reported by [`rules`] and skipped here).
pub(super) fn footprints<'g>(program: &Program, g: &'g Gemm) -> Vec<Footprint<'g>> {
    if g.m == 0 || g.n == 0 {
        return Vec::new();
    }
    let lanes = program.target.vector_lanes;
    let table = |t: BufId, count: usize| table_range(program, t, Interval { lo: 0, hi: count as i64 - 1 });
    let mut out = Vec::new();
    let mut push = |access, buf, offset, relative: Option<Interval>| {
        if let Some(relative) = relative {
            out.push(Footprint { access, buf, offset, relative });
        }
    };
    let dense = |m: &crate::kernel::MatrixRef| Interval::span(g.m, m.row_stride).add(Interval::span(g.n, m.col_stride));
    // C, and the matrices laid out like it.
    let micro = matches!(g.tile, GemmTile::Micro { .. });
    let micro_columns = |w: Option<ColumnWrap>| match w {
        Some(w) if w.row > 0 => Some(wrapped_columns(w, g.n, g.c.col_stride)),
        Some(_) => None,
        None => Some(Interval::span(g.n, 1)),
    };
    let c = match (micro, g.c_rows, g.c_wrap) {
        (true, Some(t), w) => table(t, g.m).zip(micro_columns(w)).and_then(|(rows, cols)| rows.add(cols)),
        (true, None, Some(w)) => micro_columns(Some(w)).and_then(|cols| Interval::span(g.m, g.c.row_stride).add(cols)),
        _ => match scattered(g, lanes) {
            Some((t, w)) => table(t, g.m).and_then(|rows| rows.add(scattered_columns(w, g.n, lanes))),
            None => dense(&g.c),
        },
    };
    push("matrix C in", g.c.buf, Some(&g.c.offset), c);
    if let Some(m) = &g.epilogue.pre_activation {
        push("pre_activation in", m.buf, Some(&m.offset), dense(m));
    }
    if let Some((_, m)) = &g.epilogue.grad_mask {
        push("grad_mask in", m.buf, Some(&m.offset), dense(m));
    }
    match &g.epilogue.bias {
        Some(Bias::PerRow(b, off)) => push("bias in", *b, Some(off), Some(Interval::span(g.m, 1))),
        Some(Bias::PerColumn(b, off)) => push("bias in", *b, Some(off), Some(Interval::span(g.n, 1))),
        None => {}
    }
    if g.k == 0 {
        return out;
    }
    let rows_a = Interval::span(g.m, g.a.row_stride);
    let split = g.k_split.filter(|s| !is_outer(g) && s.outer > 0 && g.k.is_multiple_of(s.outer));
    match (g.tile, split) {
        (GemmTile::Micro { transposed: true, .. }, Some(s)) => {
            let segments = |stride, step| Interval::span(s.outer, stride).add(Interval::span(g.k / s.outer, step));
            let a = segments(s.a_stride, g.a.col_stride).and_then(|seg| rows_a.add(seg));
            push("matrix A in", g.a.buf, Some(&g.a.offset), a);
            let cols = match g.b_rows {
                Some(t) => table(t, g.n),
                None => Some(Interval::span(g.n, g.b.col_stride)),
            };
            let b = cols.zip(segments(s.b_stride, g.b.row_stride)).and_then(|(c, seg)| c.add(seg));
            push("matrix B in", g.b.buf, Some(&g.b.offset), b);
        }
        (GemmTile::Micro { transposed: true, .. }, None) => {
            let a = rows_a.add(Interval::span(g.k, g.a.col_stride));
            push("matrix A in", g.a.buf, Some(&g.a.offset), a);
            let b = Interval::span(g.n, g.b.col_stride).add(Interval::span(g.k, g.b.row_stride));
            push("matrix B in", g.b.buf, Some(&g.b.offset), b);
        }
        (GemmTile::Outer { .. } | GemmTile::Micro { .. }, _) => {
            // A splat element is one float per lane, all used.
            let splat = Interval { lo: 0, hi: if g.a_splat { lanes as i64 - 1 } else { 0 } };
            let a = rows_a.add(Interval::span(g.k, g.a.col_stride)).and_then(|a| a.add(splat));
            push("matrix A in", g.a.buf, Some(&g.a.offset), a);
            let rows = match g.b_rows {
                Some(t) => table(t, g.k),
                None => Some(Interval::span(g.k, g.b.row_stride)),
            };
            let cols = match (g.tile, g.b_wrap, wrapped(g, lanes)) {
                (GemmTile::Micro { .. }, Some(w), _) if w.row > 0 => wrapped_columns(w, g.n, g.b.col_stride),
                (_, _, Some((w, false))) if w.row > 0 => wrapped_columns(w, g.n, 1),
                _ => Interval::span(g.n, g.b.col_stride),
            };
            push("matrix B in", g.b.buf, Some(&g.b.offset), rows.and_then(|r| r.add(cols)));
        }
        (GemmTile::Dot { .. }, Some(s)) => {
            let inner = Interval::span(g.k / s.outer, 1);
            let a = rows_a.add(Interval::span(s.outer, s.a_stride)).and_then(|a| a.add(inner));
            push("matrix A in", g.a.buf, Some(&g.a.offset), a);
            let cols = match g.b_rows {
                Some(t) => table(t, g.n),
                None => Some(Interval::span(g.n, g.b.col_stride)),
            };
            let segments = Interval::span(s.outer, s.b_stride).add(inner);
            push("matrix B in", g.b.buf, Some(&g.b.offset), cols.zip(segments).and_then(|(c, s)| c.add(s)));
        }
        (GemmTile::Dot { .. }, None) => {
            let a = rows_a.add(Interval::span(g.k, g.a.col_stride));
            push("matrix A in", g.a.buf, Some(&g.a.offset), a);
            let b = Interval::span(g.n, g.b.col_stride).add(Interval::span(g.k, g.b.row_stride));
            push("matrix B in", g.b.buf, Some(&g.b.offset), b);
        }
    }
    out
}
