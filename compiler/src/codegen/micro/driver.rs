//! The driver every ISA shares (blocking, packing, and the calls of the
//! register tile, [`register_tile!`]), written once and expanded inside
//! each ISA's module, where the primitives it names
//! (`V`, `LANES`, `Mask`, `zero`, `load`, `broadcast`, `fma`, `add`,
//! `relu`, `store`, `mask`, `load_masked`, `store_masked`) are that ISA's and every
//! function carries its `#[target_feature]`, so rustc inlines them all
//! into one loop nest of the ISA's instructions.

/// Runs the `$rows x $vectors` tile whose row count is one of those
/// listed (the driver clamps rows to the ISA's `max_tile_rows`,
/// which the lists cover), on the driver's block variables
/// (`tile` is the expanding ISA's).
macro_rules! tile_of {
    ($vectors:literal, [$($r:literal),*], $rows:expr, $args:ident) => {
        match $rows {
            $($r => tile_of!(@call $r, $vectors, $args),)*
            _ => unreachable!("no tile of {} rows by {} vectors", $rows, $vectors),
        }
    };
    (@call $r:literal, $vectors:literal, $args:ident) => {{
        let (a_at, a_steps, b_at, b_steps, b_vectors, strides, c_at, c_store, add_to_c) = $args;
        // SAFETY: the block's elements are inside A, B (or the
        // panel) and C (the driver's caller, and its loops' bounds).
        unsafe { tile::<$r, $vectors>((a_at, a_steps), (b_at, b_steps), b_vectors, strides, c_at, c_store, add_to_c) }
    }};
}

/// The entries of the `$rows x $vectors` tile's reduction loops (`reduce`,
/// `reduce_spread`, `reduce_dense` and `reduce_strided` with A transposed
/// are the expanding ISA's), for the row counts listed as in [`tile_of!`].
macro_rules! reductions_of {
    ($vectors:literal, [$($r:literal),*], $rows:expr) => {
        match $rows {
            $($r => Some([
                reduce::<$r, $vectors> as *const u8,
                reduce_spread::<$r, $vectors> as *const u8,
                reduce_dense::<$r, $vectors> as *const u8,
                reduce_strided::<$r, $vectors, true, true> as *const u8,
            ]),)*
            _ => None,
        }
    };
}

/// Expands the driver `$entry` for the ISA whose features are `$feature`.
macro_rules! driver {
    ($entry:ident, $feature:literal, $isa:expr) => {
        use super::{GemmCall, HELD_STEPS, KC, KC_MAX, Piece, block_steps, evicts_itself};

        /// Column vectors a register tile may span.
        const MAX_VECTORS: usize = $isa.max_tile_vectors();
        /// Floats in a packed panel row.
        const PANEL_ROW: usize = MAX_VECTORS * LANES;
        /// Vectors in the largest register tile.
        const MAX_TILE: usize = {
            let (mut most, mut v) = (0, 1);
            while v <= MAX_VECTORS {
                let vectors = v * $isa.max_tile_rows(v);
                if vectors > most {
                    most = vectors;
                }
                v += 1;
            }
            most
        };
        // The driver's `tile_of!` lists cover every tile the ISA has.
        const _: () = assert!(
            MAX_VECTORS <= 4
                && $isa.max_tile_rows(1) <= 12
                && $isa.max_tile_rows(2) <= 12
                && $isa.max_tile_rows(3) <= 9
                && $isa.max_tile_rows(4) <= 6
        );
        /// Reduction steps a panel gather reads per column.
        const GATHER_RUN: usize = 16;
        /// Rows of C a buffered product sums at a time (see `buffered`).
        const BUFFER_ROWS: usize = 256;
        /// Floats of A a call packs at most (4 MiB per thread).
        const PACKED_A_MAX: usize = 1 << 20;
        thread_local! {
            /// This thread's packed A, kept between calls so a product does
            /// not allocate and fault its pages in every run.
            static PACKED_A: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
        }
        /// Rows of C whose next lines the driver prefetches per column
        /// block (more would crowd out the operands).
        const PREFETCH_ROWS: usize = 64;

        register_tile!($feature);

        /// `slot`'s value, worked out by `work` the first time; `work`
        /// every time without a slot (a reduction block whose offsets
        /// are not held, so not the same from one column block to the next).
        fn remembered<T: Copy>(slot: Option<&mut Option<T>>, work: impl FnOnce() -> T) -> T {
            match slot {
                Some(Some(known)) => *known,
                Some(slot) => *slot.insert(work()),
                None => work(),
            }
        }

        /// `(p / len) * stride + (p % len) * step` for `p` from `from` on,
        /// one after another (`p * step` when `len` is 0): the offsets of a
        /// reduction that runs in segments, without a division per step.
        struct Segments {
            within: usize,
            len: usize,
            segment: isize,
            stride: isize,
            step: isize,
        }

        impl Segments {
            fn from(from: usize, len: i64, stride: i64, step: i64) -> Segments {
                let (len, stride, step) = (len.max(0) as usize, stride as isize, step as isize);
                if len == 0 {
                    return Segments { within: from, len: usize::MAX, segment: 0, stride: 0, step };
                }
                Segments { within: from % len, len, segment: (from / len) as isize * stride, stride, step }
            }

            fn next_offset(&mut self) -> isize {
                let at = self.segment + self.within as isize * self.step;
                self.within += 1;
                if self.within == self.len {
                    self.within = 0;
                    self.segment += self.stride;
                }
                at
            }
        }

        /// Where the reduction steps `from..from + b_out.len()` are: row
        /// `p` of B from `b` (its column 0), and `A[i, p]` from A's row `i`.
        fn step_offsets(
            g: &GemmCall,
            from: usize,
            b_out: &mut [std::mem::MaybeUninit<isize>],
            a_out: &mut [std::mem::MaybeUninit<isize>],
        ) {
            let mut b_at = Segments::from(from, g.b_seg, g.b_seg_stride, g.b_row);
            let mut a_at = Segments::from(from, g.a_seg, g.a_seg_stride, g.a_col);
            for (i, (b, a)) in b_out.iter_mut().zip(a_out).enumerate() {
                let row = if g.b_rows.is_null() {
                    b_at.next_offset()
                } else {
                    // SAFETY: the table holds `k` offsets (caller), and
                    // `from + i < k`.
                    unsafe { *g.b_rows.add(from + i) as isize }
                };
                b.write(row);
                a.write(a_at.next_offset());
            }
        }

        /// The epilogue past the sums ([`GemmCall::bias`], [`GemmCall::relu`])
        /// on rows `rows` of a column block from C's column `j0`, `cols`
        /// adjacent floats each, row `i`'s from `at(i)`: applied once the
        /// block's sums are final, while they are in the level-1 cache,
        /// instead of in a pass over C by the calling kernel. The same
        /// additions and comparisons as that pass, so the same results.
        ///
        /// # Safety
        /// Each row's `cols` floats from `at(i)` are writable; the bias
        /// holds an element for each of C's rows (per row) or columns.
        #[target_feature(enable = $feature)]
        unsafe fn finish_sums(
            g: &GemmCall,
            rows: std::ops::Range<usize>,
            (j0, cols): (usize, usize),
            at: impl Fn(usize) -> *mut f32,
        ) {
            let with_bias = !g.bias.is_null();
            let per_row = with_bias && g.bias_per_row != 0;
            let per_column = with_bias && !per_row;
            let finish = |x: V, bias: V| {
                let x = if with_bias { add(x, bias) } else { x };
                if g.relu != 0 { relu(x) } else { x }
            };
            let (whole, tail) = (cols / LANES, cols % LANES);
            let tail_mask = mask(0, tail);
            for i in rows {
                let row = at(i);
                // SAFETY: the bias has row `i` (caller).
                let row_bias = if per_row { unsafe { broadcast(g.bias.add(i)) } } else { zero() };
                for v in 0..whole {
                    // SAFETY: the row's `cols` floats are writable and the
                    // bias has columns `j0..j0 + cols` (caller).
                    unsafe {
                        let x = row.add(v * LANES);
                        let bias = if per_column { load(g.bias.add(j0 + v * LANES)) } else { row_bias };
                        store(x, finish(load(x), bias));
                    }
                }
                if tail > 0 {
                    // SAFETY: as above, only the tail's lanes accessed.
                    unsafe {
                        let x = row.add(whole * LANES);
                        let bias =
                            if per_column { load_masked(g.bias.add(j0 + whole * LANES), tail_mask) } else { row_bias };
                        store_masked(x, tail_mask, finish(load_masked(x, tail_mask), bias));
                    }
                }
            }
        }

        /// The product `call` describes: column blocks of the tile's width,
        /// reduction blocks of at most `KC_MAX` rows of B (read in place when each of a
        /// block's vectors is whole adjacent columns and the block stays in
        /// the level-1 cache, copied vector by vector into a panel when it
        /// does not and several row tiles read it, else gathered into a
        /// zero-padded panel), row blocks of the tile's height.
        ///
        /// # Safety
        /// `call` points to a [`GemmCall`] whose every element is inside a
        /// live allocation, C overlapping neither A nor B; the CPU has
        /// `$feature` (the JIT only emits calls to drivers the host has).
        pub unsafe extern "C" fn $entry(call: *const GemmCall) {
            // SAFETY: `call` is valid (caller).
            let g = unsafe { &*call };
            // B's reduction segments laid end to end (a weight gradient's
            // output gradient, transposed: its rows' positions, one output
            // row per segment) are no segments: the same rows of B, which
            // a block then gathers eight by eight, transposed in registers,
            // instead of element by element (a fifth of the 32-channel
            // convolutions' weight gradients, `perf`).
            let unsegmented;
            let g = if g.b_seg > 0 && g.b_rows.is_null() && g.b_seg_stride == g.b_seg * g.b_row {
                unsegmented = GemmCall { b_seg: 0, b_seg_stride: 0, ..*g };
                &unsegmented
            } else {
                g
            };
            debug_assert!(
                (g.bias.is_null() && g.relu == 0)
                    || super::finishes_epilogue(g.c_row, g.c_col, !g.c_rows.is_null(), g.c_wrap_row),
                "an epilogue for a C the driver does not finish"
            );
            let (m, n, k) = (g.m.max(0) as usize, g.n.max(0) as usize, g.k.max(0) as usize);
            let vectors = (g.vectors.max(1) as usize).min(MAX_VECTORS);
            let tile_rows = (g.rows.max(1) as usize).min($isa.max_tile_rows(vectors));
            let width = vectors * LANES;
            if super::reduction_blocks_outermost(g, width) {
                // One call per reduction block, each over every column
                // block: A's columns of the block (its row tiles) are read
                // again from the level-2 cache for each column block,
                // instead of the whole of A from memory. Each call adds its
                // block's sums to C, so every element sums the same blocks
                // in the same order as below.
                let kc = block_steps(k);
                for p0 in (0..k).step_by(kc) {
                    let block = GemmCall {
                        k: kc.min(k - p0) as i64,
                        a: g.a.wrapping_offset(p0 as isize * g.a_col as isize),
                        b: g.b.wrapping_offset(p0 as isize * g.b_row as isize),
                        accumulate: i64::from(p0 > 0 || g.accumulate != 0),
                        // The epilogue once, on the last block's sums.
                        bias: if p0 + kc >= k { g.bias } else { std::ptr::null() },
                        relu: if p0 + kc >= k { g.relu } else { 0 },
                        ..*g
                    };
                    // SAFETY: the block's elements are the call's (caller).
                    unsafe { $entry(&block) };
                }
                return;
            }
            let b_col = g.b_col as isize;
            // Written row by row before any tile reads it: left
            // uninitialised, so a small product does not clear 32 KiB.
            let mut panel = [std::mem::MaybeUninit::<f32>::uninit(); KC_MAX * PANEL_ROW];
            // A C whose rows are adjacent and columns apart (a product
            // computed transposed, its rows the output's columns) moves to
            // and from a contiguous buffer eight by eight, transposed in
            // registers, and the tiles store whole vectors into the buffer;
            // element by element, storing the sums took about a tenth of the
            // 3072 -> 512 linear layer's time at batch 64 (`perf`), and
            // every call of a convolution's transposed weight gradient (a
            // short reduction per image, added into C) paid it too.
            let rows_adjacent = g.c_row == 1 && g.c_wrap_row == 0 && super::transposes_in_registers();
            // Any other C whose columns are apart, summed over several
            // reduction blocks, is summed in the buffer too and stored once,
            // element by element: added into C after every block, it took a
            // quarter of the tiles' time. Not for a C whose rows come from a
            // table, which may overlap.
            let kc = block_steps(k);
            let buffered = g.c_col != 1 && (k > kc || rows_adjacent) && g.c_rows.is_null();
            let mut buffer = [std::mem::MaybeUninit::<f32>::uninit(); BUFFER_ROWS * PANEL_ROW];
            let buffer_base = buffer.as_mut_ptr().cast::<f32>();
            // Row `p` of B from its origin and `A[i, p]` from A's row `i`,
            // for every step when the reduction is short enough, else for
            // the block at hand; a panel's rows are `width` apart.
            let mut b_offsets = [std::mem::MaybeUninit::<isize>::uninit(); HELD_STEPS];
            let mut a_offsets = [std::mem::MaybeUninit::<isize>::uninit(); HELD_STEPS];
            let held = k <= HELD_STEPS;
            if held {
                step_offsets(g, 0, &mut b_offsets[..k], &mut a_offsets[..k]);
            }
            let panel_steps: [isize; KC_MAX] = std::array::from_fn(|p| (p * width) as isize);
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
            let c_col = g.c_col as isize;
            // Where column `j` of C is, from its row's start.
            let c_column = |j: usize| -> isize {
                if c_wrap_row == 0 {
                    j as isize * c_col
                } else {
                    (j / c_wrap_row) as isize * g.c_wrap_stride as isize + (j % c_wrap_row) as isize * c_col
                }
            };
            // Where row `i` of C starts.
            let c_row_of = |i: usize| -> isize {
                if g.c_rows.is_null() {
                    i as isize * g.c_row as isize
                } else {
                    // SAFETY: the table holds `m` offsets (caller).
                    unsafe { *g.c_rows.add(i) as isize }
                }
            };
            let mut columns = [0isize; PANEL_ROW];
            // Per reduction block of held offsets, whether B read in place
            // evicts itself: decided on the first column block read in place
            // (the others' lines are the same shifted by whole lines).
            let mut evicts = [None::<bool>; HELD_STEPS / KC];
            // Per reduction block of held offsets, its farthest row of B.
            let mut farthest_step = [None::<isize>; HELD_STEPS / KC];
            // Wrap rows that are not whole vectors are cut into blocks of
            // their own (a block never spans two rows), so each block's
            // vectors lie in one row, the last of a row partial.
            let row_blocks = super::cuts_row_blocks(m, wrap_row, LANES, c_col == 1);
            // B transposed: its steps adjacent (rows 1 apart, no table,
            // segments or wrap), its columns apart, gathered eight by eight.
            let transposed = g.b_row == 1
                && b_col != 1
                && g.b_rows.is_null()
                && g.b_seg == 0
                && wrap_row == 0
                && super::transpose::available();
            // An A whose columns are apart (a linear layer's output
            // gradient, read transposed for its weight gradient) is packed
            // once per call, tile by tile, each tile's rows adjacent and its
            // steps one after another, when several column blocks read it:
            // read in place, every step of every tile touched a new line,
            // two steps per page (`perf`: the multiply-adds waited on
            // those loads); an A that fits the level-1 cache stays in
            // place (LeNet's at batch 4: packing it cost more than it
            // saved). The packed A is `m` rows of `k`: the tile of rows
            // `i0..i0 + h` holds `A[i0 + r, p]` at `i0 * k + p * h + r`.
            let packs_a = g.a_col != 1
                && g.a_seg == 0
                && g.a_rows.is_null()
                && g.b_rows.is_null()
                && g.b_seg == 0
                && n > width
                && m * k * 4 > super::L1_BYTES
                && m * k <= PACKED_A_MAX;
            // Rows of C summed at a time: a buffered C's chunks, else all.
            let chunk_rows = if buffered { (BUFFER_ROWS / tile_rows) * tile_rows } else { m.max(1) };
            let mut packed_a = if packs_a { PACKED_A.take() } else { Vec::new() };
            if packs_a {
                if packed_a.len() < m * k {
                    packed_a.resize(m * k, 0.0);
                }
                for i_chunk in (0..m).step_by(chunk_rows) {
                    let chunk_end = (i_chunk + chunk_rows).min(m);
                    let (tiles, short, tall) = super::row_tiles(chunk_end - i_chunk, tile_rows);
                    let mut i0 = i_chunk;
                    for tile in 0..tiles {
                        let h = short + usize::from(tile < tall);
                        let region = &mut packed_a[i0 * k..(i0 + h) * k];
                        for (p, step) in region.chunks_exact_mut(h).enumerate() {
                            let first =
                                g.a.wrapping_offset(i0 as isize * g.a_row as isize + p as isize * g.a_col as isize);
                            if g.a_row == 1 {
                                // The step's `h` rows adjacent (a linear layer's
                                // output gradient, read transposed): one run.
                                // SAFETY: `A[i0..i0 + h, p]` is inside A (caller).
                                step.copy_from_slice(unsafe { std::slice::from_raw_parts(first, h) });
                                continue;
                            }
                            for (r, slot) in step.iter_mut().enumerate() {
                                // SAFETY: `A[i0 + r, p]` is inside A (caller).
                                *slot = unsafe { *first.wrapping_offset(r as isize * g.a_row as isize) };
                            }
                        }
                        i0 += h;
                    }
                }
            }
            let packed_at = packed_a.as_ptr();
            // A few rows of C with adjacent columns, stored straight from
            // the tiles, are prefetched block by block (below).
            let prefetches_c = g.c_col == 1 && g.c_rows.is_null() && !buffered && m <= PREFETCH_ROWS;
            let mut next_j0 = 0;
            while next_j0 < n {
                let j0 = next_j0;
                let cols = if row_blocks { width.min(wrap_row - j0 % wrap_row) } else { width }.min(n - j0);
                next_j0 += cols;
                // Where C's row `i` of this column block starts.
                let c_block = |i: usize| g.c.wrapping_offset(c_row_of(i) + c_column(j0));
                // C's lines of the block after the next, into the level-2
                // cache: a C written for the first time misses all the way to
                // memory, and the stores' misses had stalled the tiles (the
                // driver's own code took two fifths of a 3-channel stem's
                // samples, `perf`).
                let ahead = next_j0 + width;
                if prefetches_c && ahead < n {
                    let (first, last) = (c_column(ahead), c_column((ahead + width).min(n) - 1));
                    for i in 0..m {
                        let row = g.c.wrapping_offset(c_row_of(i));
                        // SAFETY: a prefetch neither faults nor changes memory.
                        unsafe {
                            _mm_prefetch::<_MM_HINT_T1>(row.wrapping_offset(first).cast::<i8>());
                            _mm_prefetch::<_MM_HINT_T1>(row.wrapping_offset(last).cast::<i8>());
                        }
                    }
                }
                // B's column `j0`, in row 0.
                let b_origin = g.b.wrapping_offset(column(j0));
                // The vectors a row block's tiles span, the last partial.
                let vectors = if row_blocks { cols.div_ceil(LANES) } else { vectors };
                // In place: whole vectors of adjacent columns, each inside
                // one wrap row (a block may span several rows), or a row
                // block's, whose last vector reads past the row's end
                // (`overread` floats, when B's allocation holds them).
                let overread = if row_blocks { vectors * LANES - cols } else { 0 };
                let in_place = b_col == 1
                    && (cols == width || row_blocks)
                    && (overread == 0 || !g.b_end.is_null())
                    && (0..vectors)
                        .all(|v| wrap_row == 0 || (j0 + v * LANES) % wrap_row + LANES <= wrap_row + overread);
                // Vector `v` of a B row: in place, or in a panel row.
                let mut vector_at = [0isize; MAX_VECTORS];
                let mut panel_at = [0isize; MAX_VECTORS];
                for v in 0..vectors {
                    panel_at[v] = (v * LANES) as isize;
                    vector_at[v] = if in_place { column(j0 + v * LANES) - column(j0) } else { panel_at[v] };
                }
                // C's columns of this block as runs of adjacent elements,
                // cut at vector and wrap-row boundaries (C's columns
                // adjacent), or one by one.
                let mut piece_store = [Piece { vector: 0, first: 0, end: 0, offset: 0 }; 2 * PANEL_ROW];
                let mut count = 0;
                let mut j = 0;
                while j < cols && c_col == 1 {
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
                let mut columns_known = false;
                // C's columns one by one, when they are apart.
                let mut c_offsets = [0isize; PANEL_ROW];
                if c_col != 1 {
                    for (j, at) in c_offsets.iter_mut().enumerate().take(cols) {
                        *at = c_column(j0 + j) - c_column(j0);
                    }
                }
                let whole = count == vectors
                    && piece_store[..count].iter().enumerate().all(|(v, p)| {
                        p.vector == v && p.first == 0 && p.end == LANES && p.offset == (v * LANES) as isize
                    });
                let c_store = if c_col == 1 && whole {
                    CStore::Whole
                } else if c_col == 1 {
                    CStore::Pieces(&piece_store[..count])
                } else {
                    CStore::Strided(&c_offsets[..cols])
                };
                for i_chunk in (0..m).step_by(chunk_rows) {
                    let chunk_end = (i_chunk + chunk_rows).min(m);
                    // The buffer's row `i - i_chunk` holds C's row `i` from column `j0`.
                    let buffer_at = |i: usize| buffer_base.wrapping_add((i - i_chunk) * width);
                    if buffered && g.accumulate != 0 && rows_adjacent {
                        // SAFETY: C's rows `i_chunk..chunk_end` hold the block's
                        // `cols` columns, each a run of adjacent rows from the
                        // chunk's first (`rows_adjacent`); the buffer holds
                        // `chunk_rows` rows of `width`; AVX2 (checked).
                        unsafe {
                            let rows = chunk_end - i_chunk;
                            super::transpose::gather_transposed(
                                c_block(i_chunk),
                                c_col,
                                (rows, cols),
                                buffer_base,
                                width,
                            );
                        }
                    } else if buffered && g.accumulate != 0 {
                        for i in i_chunk..chunk_end {
                            let (from, to) = (c_block(i), buffer_at(i));
                            for (j, &at) in c_offsets.iter().enumerate().take(cols) {
                                // SAFETY: `C[i, j0 + j]` is C's (caller); the
                                // buffer holds `chunk_rows` rows of `width`.
                                unsafe { *to.add(j) = *from.wrapping_offset(at) };
                            }
                            for j in cols..width {
                                // SAFETY: the tiles read whole vectors, these too.
                                unsafe { *to.add(j) = 0.0 };
                            }
                        }
                    }
                    let mut p0 = 0;
                    loop {
                        let steps = kc.min(k - p0);
                        let first = if held {
                            p0
                        } else {
                            step_offsets(g, p0, &mut b_offsets[..steps], &mut a_offsets[..steps]);
                            0
                        };
                        // SAFETY: `step_offsets` wrote these `steps` entries
                        // (above, or for every step up front when `held`).
                        let (b_steps, a_steps) = unsafe {
                            (
                                std::slice::from_raw_parts(b_offsets[first..].as_ptr().cast::<isize>(), steps),
                                std::slice::from_raw_parts(a_offsets[first..].as_ptr().cast::<isize>(), steps),
                            )
                        };
                        // A partial last vector read in place stays inside B's allocation.
                        let in_place = in_place
                            && (overread == 0 || {
                                let slot = if held { farthest_step.get_mut(p0 / kc) } else { None };
                                let furthest = remembered(slot, || b_steps.iter().max().map_or(0, |&s| s));
                                let reach = furthest + vector_at[vectors - 1];
                                b_origin.wrapping_offset(reach + LANES as isize) <= g.b_end
                            });
                        let reused = chunk_end - i_chunk > tile_rows;
                        let copied = in_place && reused && {
                            let slot = if held { evicts.get_mut(p0 / kc) } else { None };
                            remembered(slot, || evicts_itself(b_origin, b_steps, width))
                        };
                        // Steps a constant distance apart: A's without
                        // segments, B's in place without a table or
                        // segments, a panel's.
                        let a_stride = (g.a_seg == 0).then_some(g.a_col as isize);
                        let b_stride = if in_place && !copied {
                            (g.b_rows.is_null() && g.b_seg == 0).then_some(g.b_row as isize)
                        } else {
                            Some(width as isize)
                        };
                        let strides = a_stride.zip(b_stride);
                        let (b_at, b_steps, b_vectors) = if in_place && !copied {
                            (b_origin, b_steps, &vector_at[..vectors])
                        } else if copied {
                            for (p, &step) in b_steps.iter().enumerate() {
                                for (v, &at) in vector_at.iter().enumerate().take(vectors) {
                                    // SAFETY: row `p0 + p` of B holds the block's
                                    // vectors whole (`in_place`); the panel holds
                                    // `KC_MAX` rows of `PANEL_ROW >= width` floats.
                                    // (A copy, not the ISA's load and store: this
                                    // function has no target features to inline them.)
                                    unsafe {
                                        let from = b_origin.wrapping_offset(step + at);
                                        let to = panel.as_mut_ptr().add(p * width + v * LANES).cast::<f32>();
                                        std::ptr::copy_nonoverlapping(from, to, LANES);
                                    }
                                }
                            }
                            (panel.as_ptr().cast::<f32>(), &panel_steps[..steps], &panel_at[..vectors])
                        } else {
                            // Gathered column by column in runs of `GATHER_RUN`
                            // steps: a few cache lines of B at a time, whether
                            // its rows or its columns are the ones apart (B's
                            // columns a power of two apart, as a transposed
                            // operand's are, share one cache set: read across
                            // all `steps` rows at once, they evicted each other).
                            // Each column's place in a B row (one division per
                            // column of a wrap: only for a block gathered).
                            if transposed {
                                // SAFETY: B's column `j0 + j` holds the block's
                                // `steps` adjacent floats from its row `p0` (B's
                                // rows 1 apart); the panel holds `KC_MAX >= steps`
                                // rows of `PANEL_ROW >= width` floats; AVX2 (checked).
                                unsafe {
                                    let from = b_origin.wrapping_offset(b_steps.first().map_or(0, |&s| s));
                                    let to = panel.as_mut_ptr().cast::<f32>();
                                    super::transpose::gather_transposed(from, b_col, (steps, cols), to, width);
                                }
                                // Every element of the panel's first `steps` rows was just written.
                                (panel.as_ptr().cast::<f32>(), &panel_steps[..steps], &panel_at[..vectors])
                            } else {
                                if !columns_known {
                                    for (j, at) in columns.iter_mut().enumerate().take(cols) {
                                        *at = column(j0 + j) - column(j0);
                                    }
                                    columns_known = true;
                                }
                                // Within a run, step by step: each step's
                                // row of B found once and the panel's row
                                // written in order (column by column, the
                                // row's offset was read again and the panel
                                // written `width` floats apart for every
                                // element: a tenth of resnet_ish's time at
                                // batch 64, `perf`).
                                for run in (0..steps).step_by(GATHER_RUN) {
                                    let end = (run + GATHER_RUN).min(steps);
                                    for p in run..end {
                                        let row = b_origin.wrapping_offset(b_steps[p]);
                                        let to = &mut panel[p * width..(p + 1) * width];
                                        for (slot, &at) in to.iter_mut().zip(&columns[..cols]) {
                                            // SAFETY: `B[p0 + p, j0 + j]` is inside B (caller).
                                            slot.write(unsafe { *row.offset(at) });
                                        }
                                        for slot in &mut to[cols..] {
                                            slot.write(0.0);
                                        }
                                    }
                                }
                                // Every element of the panel's first `steps` rows was just written.
                                (panel.as_ptr().cast::<f32>(), &panel_steps[..steps], &panel_at[..vectors])
                            }
                        };
                        let add_to_c = p0 > 0 || g.accumulate != 0;
                        // As few row tiles as the tile's height allows,
                        // of heights that differ by one at most: a last tile
                        // of a row or two costs about as much as a whole one
                        // (it loads the same B vectors), so 32 rows run as
                        // 5 5 5 5 4 4 4 rather than 5 5 5 5 5 5 2.
                        let (tiles, short, tall) = super::row_tiles(chunk_end - i_chunk, tile_rows);
                        let mut next_i0 = i_chunk;
                        for tile in 0..tiles {
                            let (i0, rows) = (next_i0, short + usize::from(tile < tall));
                            next_i0 += rows;
                            let mut a_at = [g.a; 12];
                            let mut c_at = [g.c; 12];
                            for r in 0..rows {
                                a_at[r] = if packs_a {
                                    packed_at.wrapping_add(i0 * k + p0 * rows + r)
                                } else if g.a_rows.is_null() {
                                    g.a.wrapping_offset((i0 + r) as isize * g.a_row as isize)
                                } else {
                                    // SAFETY: the table holds `m` offsets (caller).
                                    g.a.wrapping_offset(unsafe { *g.a_rows.add(i0 + r) } as isize)
                                };
                                c_at[r] = if buffered { buffer_at(i0 + r) } else { c_block(i0 + r) };
                            }
                            let (a_at, c_at) = (&a_at[..rows], &c_at[..rows]);
                            // A packed tile's steps are its height apart,
                            // from the rows' pointers.
                            let (a_steps, strides) = if packs_a {
                                (&panel_steps[..steps], b_stride.map(|b| (rows as isize, b)))
                            } else {
                                (a_steps, strides)
                            };
                            let store = if buffered { CStore::Whole } else { c_store };
                            let args = (a_at, a_steps, b_at, b_steps, b_vectors, strides, c_at, store, add_to_c);
                            match vectors {
                                1 => tile_of!(1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], rows, args),
                                2 => tile_of!(2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], rows, args),
                                3 => tile_of!(3, [1, 2, 3, 4, 5, 6, 7, 8, 9], rows, args),
                                _ => tile_of!(4, [1, 2, 3, 4, 5, 6], rows, args),
                            }
                        }
                        p0 += steps;
                        if p0 >= k {
                            break;
                        }
                    }
                    if !g.bias.is_null() || g.relu != 0 {
                        // SAFETY: the buffer holds `chunk_rows` rows of
                        // `width >= cols` floats; unbuffered, C's columns are
                        // adjacent from each row's `c_block` (the caller
                        // passes an epilogue only for such a C,
                        // `finishes_epilogue`), and the bias is the caller's.
                        unsafe {
                            if buffered {
                                finish_sums(g, i_chunk..chunk_end, (j0, cols), buffer_at);
                            } else {
                                finish_sums(g, i_chunk..chunk_end, (j0, cols), c_block);
                            }
                        }
                    }
                    if buffered && rows_adjacent {
                        // SAFETY: as the copy into the buffer above; every
                        // element of the buffer's rows was just summed.
                        unsafe {
                            let rows = chunk_end - i_chunk;
                            super::transpose::scatter_transposed(
                                buffer_base,
                                width,
                                (rows, cols),
                                c_block(i_chunk),
                                c_col,
                            );
                        }
                    } else if buffered {
                        for i in i_chunk..chunk_end {
                            let (from, to) = (buffer_at(i), c_block(i));
                            for (j, &at) in c_offsets.iter().enumerate().take(cols) {
                                // SAFETY: as the copy into the buffer above; every
                                // element of the buffer's rows was just summed.
                                unsafe { *to.wrapping_offset(at) = *from.add(j) };
                            }
                        }
                    }
                }
            }
            if packs_a {
                PACKED_A.set(packed_a);
            }
        }

        /// Where the `rows x vectors` tile's reduction loops start, steps
        /// from tables ([`reduce`]), spread ([`reduce_spread`]), dense
        /// ([`reduce_dense`]) and at constant steps with A transposed
        /// ([`reduce_strided`]): the ISA's
        /// multiply-adds, for `kiln inspect --emit asm`. `None` for a
        /// tile the driver has not (see [`tile_of!`]'s lists).
        pub(super) fn reductions(rows: usize, vectors: usize) -> Option<[*const u8; 4]> {
            match vectors {
                1 => reductions_of!(1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], rows),
                2 => reductions_of!(2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], rows),
                3 => reductions_of!(3, [1, 2, 3, 4, 5, 6, 7, 8, 9], rows),
                4 => reductions_of!(4, [1, 2, 3, 4, 5, 6], rows),
                _ => None,
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
