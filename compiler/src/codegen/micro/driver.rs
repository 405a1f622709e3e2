//! The driver and register tile every ISA shares, written once and
//! expanded inside each ISA's module, where the primitives it names
//! (`V`, `LANES`, `Mask`, `zero`, `load`, `broadcast`, `fma`, `add`,
//! `store`, `mask`, `load_masked`, `store_masked`) are that ISA's and every
//! function carries its `#[target_feature]`, so rustc inlines them all
//! into one loop nest of the ISA's instructions.

/// Expands the driver `$entry` for the ISA whose features are `$feature`.
macro_rules! driver {
    ($entry:ident, $feature:literal, $isa:expr) => {
        use super::{GemmCall, KC, Piece};

        /// Column vectors a register tile may span.
        const MAX_VECTORS: usize = 2;
        /// Floats in a packed panel row.
        const PANEL_ROW: usize = MAX_VECTORS * LANES;

        /// `rows x vectors` results of C from `b_rows.len()` reduction
        /// steps: `A[r, p]` at `a + r * a_row + p * a_col`, row `p` of B
        /// at `b_rows[p]` (at least `VECTORS` whole vectors readable); lane
        /// `l` of vector `v` of C's row `r` at `c_at[r] + offset + l` for
        /// each piece of `v` (`first <= l < end`).
        ///
        /// # Safety
        /// Every address above is inside a live allocation.
        #[target_feature(enable = $feature)]
        unsafe fn tile<const ROWS: usize, const VECTORS: usize>(
            a: *const f32,
            [a_row, a_col]: [isize; 2],
            b_rows: &[*const f32],
            c_at: &[*mut f32],
            pieces: &[Piece],
            add_to_c: bool,
        ) {
            let mut acc = [[zero(); VECTORS]; ROWS];
            let mut a_at = [a; ROWS];
            for (r, at) in a_at.iter_mut().enumerate() {
                // SAFETY: row `r` of A is inside A (caller).
                *at = unsafe { a.offset(r as isize * a_row) };
            }
            for &b in b_rows {
                let mut bv = [zero(); VECTORS];
                for (v, x) in bv.iter_mut().enumerate() {
                    // SAFETY: row `p` of B holds `VECTORS` whole vectors (caller).
                    *x = unsafe { load(b.add(v * LANES)) };
                }
                for (row, at) in acc.iter_mut().zip(a_at.iter_mut()) {
                    // SAFETY: `A[r, p]` is inside A (caller).
                    let x = unsafe { broadcast(*at) };
                    *at = at.wrapping_offset(a_col);
                    for (sum, &bx) in row.iter_mut().zip(&bv) {
                        *sum = fma(x, bx, *sum);
                    }
                }
            }
            // Rows in order, each a read-modify-write finished before the
            // next: rows of a scattered C may overlap one another.
            for (row, &base) in acc.iter().zip(c_at) {
                for (v, &sum) in row.iter().enumerate() {
                    for piece in pieces.iter().filter(|p| p.vector == v) {
                        let at = base.wrapping_offset(piece.offset);
                        // SAFETY: the piece's lanes from `at` are C's (caller).
                        unsafe {
                            if piece.first == 0 && piece.end == LANES {
                                let x = if add_to_c { add(load(at), sum) } else { sum };
                                store(at, x);
                            } else {
                                let m = mask(piece.first, piece.end);
                                let x = if add_to_c { add(load_masked(at, m), sum) } else { sum };
                                store_masked(at, m, x);
                            }
                        }
                    }
                }
            }
        }

        /// Picks the tile of `rows` rows (the driver never asks for more
        /// than the ISA's `max_rows`).
        #[target_feature(enable = $feature)]
        unsafe fn tile_of<const VECTORS: usize>(
            rows: usize,
            a: *const f32,
            strides: [isize; 2],
            b_rows: &[*const f32],
            c_at: &[*mut f32],
            pieces: &[Piece],
            add_to_c: bool,
        ) {
            macro_rules! go {
                ($r:literal) => {
                    // SAFETY: forwarded from the caller.
                    unsafe { tile::<$r, VECTORS>(a, strides, b_rows, c_at, pieces, add_to_c) }
                };
            }
            match rows {
                1 => go!(1),
                2 => go!(2),
                3 => go!(3),
                4 => go!(4),
                5 => go!(5),
                6 => go!(6),
                7 => go!(7),
                8 => go!(8),
                9 => go!(9),
                10 => go!(10),
                11 => go!(11),
                _ => go!(12),
            }
        }

        /// The product `call` describes: column blocks of the tile's width,
        /// reduction blocks of `KC` rows of B (read in place when B's
        /// columns are adjacent and the block is whole, else packed into a
        /// zero-padded panel), row blocks of the tile's height.
        ///
        /// # Safety
        /// `call` points to a [`GemmCall`] whose every element is inside a
        /// live allocation, C overlapping neither A nor B; the CPU has
        /// `$feature` (the JIT only emits calls to drivers the host has).
        pub unsafe extern "C" fn $entry(call: *const GemmCall) {
            // SAFETY: `call` is valid (caller).
            let g = unsafe { &*call };
            let (m, n, k) = (g.m.max(0) as usize, g.n.max(0) as usize, g.k.max(0) as usize);
            let vectors = (g.vectors.max(1) as usize).min(MAX_VECTORS);
            let tile_rows = (g.rows.max(1) as usize).min($isa.max_tile_rows(vectors));
            let width = vectors * LANES;
            let (a_row, a_col, b_row, b_col) = (g.a_row as isize, g.a_col as isize, g.b_row as isize, g.b_col as isize);
            let mut panel = [0f32; KC * PANEL_ROW];
            let mut b_rows = [std::ptr::null::<f32>(); KC];
            let wrap_row = g.wrap_row.max(0) as usize;
            // Where column `j` of B is, in elements from its row's start.
            let column = |j: usize| -> isize {
                if wrap_row == 0 {
                    j as isize * b_col
                } else {
                    (j / wrap_row) as isize * g.wrap_stride as isize + (j % wrap_row) as isize * b_col
                }
            };
            let c_wrap_row = g.c_wrap_row.max(0) as usize;
            // Where column `j` of C is, from its row's start.
            let c_column = |j: usize| -> isize {
                if c_wrap_row == 0 {
                    j as isize
                } else {
                    (j / c_wrap_row) as isize * g.c_wrap_stride as isize + (j % c_wrap_row) as isize
                }
            };
            let mut columns = [0isize; PANEL_ROW];
            for j0 in (0..n).step_by(width) {
                let cols = width.min(n - j0);
                // In place: whole vectors of adjacent columns (no wrap
                // boundary inside the block).
                let in_place = b_col == 1 && cols == width && (wrap_row == 0 || j0 % wrap_row + cols <= wrap_row);
                for (j, at) in columns.iter_mut().enumerate().take(cols) {
                    *at = column(j0 + j) - column(j0);
                }
                // C's columns of this block as runs of adjacent elements,
                // cut at vector and wrap-row boundaries.
                let mut piece_store = [Piece { vector: 0, first: 0, end: 0, offset: 0 }; 2 * PANEL_ROW];
                let mut count = 0;
                let mut j = 0;
                while j < cols {
                    let vector = j / LANES;
                    let mut end = (cols.min((vector + 1) * LANES)).max(j + 1);
                    if c_wrap_row > 0 {
                        end = end.min(j + (c_wrap_row - (j0 + j) % c_wrap_row));
                    }
                    let offset = c_column(j0 + j) - c_column(j0) - (j - vector * LANES) as isize;
                    piece_store[count] = Piece { vector, first: j - vector * LANES, end: end - vector * LANES, offset };
                    count += 1;
                    j = end;
                }
                let pieces = &piece_store[..count];
                let mut p0 = 0;
                loop {
                    let steps = KC.min(k - p0);
                    for p in 0..steps {
                        let offset = if g.b_rows.is_null() {
                            (p0 + p) as isize * b_row
                        } else {
                            // SAFETY: the table holds `k` offsets (caller).
                            unsafe { *g.b_rows.add(p0 + p) as isize }
                        };
                        let row = g.b.wrapping_offset(offset + column(j0));
                        if in_place {
                            b_rows[p] = row;
                        } else {
                            let dst = &mut panel[p * PANEL_ROW..(p + 1) * PANEL_ROW];
                            for (j, x) in dst.iter_mut().enumerate() {
                                // SAFETY: `B[p, j0 + j]` is inside B for `j < cols` (caller).
                                *x = if j < cols { unsafe { *row.offset(columns[j]) } } else { 0.0 };
                            }
                            b_rows[p] = dst.as_ptr();
                        }
                    }
                    let add_to_c = p0 > 0 || g.accumulate != 0;
                    for i0 in (0..m).step_by(tile_rows) {
                        let rows = tile_rows.min(m - i0);
                        let a = g.a.wrapping_offset(i0 as isize * a_row + p0 as isize * a_col);
                        let mut c_at = [g.c; 12];
                        for (r, at) in c_at.iter_mut().enumerate().take(rows) {
                            let row = if g.c_rows.is_null() {
                                (i0 + r) as isize * g.c_row as isize
                            } else {
                                // SAFETY: the table holds `m` offsets (caller).
                                unsafe { *g.c_rows.add(i0 + r) as isize }
                            };
                            *at = g.c.wrapping_offset(row + c_column(j0));
                        }
                        let rows_b = &b_rows[..steps];
                        let strides = [a_row, a_col];
                        // SAFETY: the block's elements are inside A, B (or
                        // the panel) and C (caller, and the loops' bounds).
                        unsafe {
                            if vectors == 1 {
                                tile_of::<1>(rows, a, strides, rows_b, &c_at[..rows], pieces, add_to_c);
                            } else {
                                tile_of::<2>(rows, a, strides, rows_b, &c_at[..rows], pieces, add_to_c);
                            }
                        }
                    }
                    p0 += steps;
                    if p0 >= k {
                        break;
                    }
                }
            }
        }

        /// `iterations` rounds of 12 independent multiply-adds on whole
        /// vectors (the ISA's FMA peak, for `kiln bench`); returns a lane
        /// of their sum so the loop is not dead.
        #[target_feature(enable = $feature)]
        pub(super) fn fma_loop(iterations: u64) -> f32 {
            let (scale, shift) = (0.999_999f32, 1e-7f32);
            // SAFETY: both point at live locals.
            let (m, a) = unsafe { (broadcast(&scale), broadcast(&shift)) };
            let mut acc = [zero(); 12];
            for _ in 0..iterations {
                for x in acc.iter_mut() {
                    *x = fma(*x, m, a);
                }
            }
            let sum = acc.iter().fold(zero(), |s, &x| add(s, x));
            let mut lanes = [0f32; LANES];
            // SAFETY: `lanes` holds one whole vector.
            unsafe { store(lanes.as_mut_ptr(), sum) };
            lanes[0]
        }
    };
}
