//! The register tile every ISA's driver runs: its reduction loops
//! and how its sums reach C, written once and expanded inside each ISA's
//! module by [`driver!`], with that ISA's primitives and features.

/// Calls [`reduce_strided`]'s variant for the given layouts on the
/// argument tuple `$args`.
macro_rules! strided_call {
    ($rows:ident, $vectors:ident, $a_adjacent:literal, $b_adjacent:literal, $args:ident) => {{
        let (acc, a, a_step, b, vector_at, steps, out) = $args;
        reduce_strided::<$rows, $vectors, $a_adjacent, $b_adjacent>(acc, a, a_step, b, vector_at, steps, out)
    }};
}

/// Expands the tile's types and functions for the ISA whose features are
/// `$feature` (inside [`driver!`]'s expansion).
macro_rules! register_tile {
    ($feature:literal) => {
        /// How a tile's results reach C: runs of adjacent elements, or
        /// (C's columns apart) one element at a time.
        #[derive(Clone, Copy)]
        enum CStore<'p> {
            /// Each row's vectors whole and adjacent from the row's start
            /// (a full block of a C whose columns are adjacent, or the
            /// buffer): stored by the reduction loop itself, from registers.
            Whole,
            Pieces(&'p [Piece]),
            Strided(&'p [isize]),
        }

        /// Where a reduction's sums go: C's rows, each holding the tile's
        /// vectors whole and adjacent (added to what is there when the
        /// flag is set), or `acc` for the tile to store.
        type Sums<'c, const ROWS: usize> = Option<(&'c [*mut f32; ROWS], bool)>;

        /// The sums into `acc`, or straight from registers into C's rows,
        /// each row's read-modify-write finished before the next (rows of a
        /// scattered C may overlap).
        ///
        /// # Safety
        /// Each row of `out` holds `VECTORS` whole vectors of C.
        #[inline]
        #[target_feature(enable = $feature)]
        unsafe fn finish<const ROWS: usize, const VECTORS: usize>(
            acc: &mut [[V; VECTORS]; ROWS],
            sums: [[V; VECTORS]; ROWS],
            out: Sums<'_, ROWS>,
        ) {
            match out {
                None => *acc = sums,
                Some((rows, add_to_c)) => {
                    for (row, &at) in sums.iter().zip(rows) {
                        for (v, &sum) in row.iter().enumerate() {
                            // SAFETY: the row's vectors are C's (caller).
                            unsafe {
                                let at = at.add(v * LANES);
                                store(at, if add_to_c { add(load(at), sum) } else { sum });
                            }
                        }
                    }
                }
            }
        }

        /// `step(b_steps[p], a_steps[p])` for every step, two per iteration
        /// (inlined into each reduction loop: a loop of one step spent a
        /// third of its issue slots on the loop itself; on a Xeon's dense
        /// calibration product most tiles ran at 46-53 % of the FMA peak with
        /// one step per iteration, 60-66 % with two; the largest tiles spill
        /// with two, measure slow and are not chosen).
        #[inline(always)]
        fn two_at_a_time(b_steps: &[isize], a_steps: &[isize], mut step: impl FnMut(isize, isize)) {
            let n = b_steps.len().min(a_steps.len());
            let (b_steps, a_steps) = (&b_steps[..n], &a_steps[..n]);
            for (b, a) in b_steps.chunks_exact(2).zip(a_steps.chunks_exact(2)) {
                step(b[0], a[0]);
                step(b[1], a[1]);
            }
            if n % 2 == 1 {
                step(b_steps[n - 1], a_steps[n - 1]);
            }
        }

        /// One step of a tile's reduction once its B vectors are loaded:
        /// `sums[r][v] += A[r] * bv[v]`, `A[r]` broadcast from `at(r)`.
        ///
        /// # Safety
        /// Each `at(r)`, `r < ROWS`, is readable.
        #[inline]
        #[target_feature(enable = $feature)]
        unsafe fn multiply_add<const ROWS: usize, const VECTORS: usize>(
            sums: &mut [[V; VECTORS]; ROWS],
            bv: &[V; VECTORS],
            at: impl Fn(usize) -> *const f32,
        ) {
            for (r, row) in sums.iter_mut().enumerate() {
                // SAFETY: readable (caller).
                let x = unsafe { broadcast(at(r)) };
                for (sum, &bx) in row.iter_mut().zip(bv) {
                    *sum = fma(x, bx, *sum);
                }
            }
        }

        /// The tile's reduction: `acc[r][v] += A[r, p] * B[p, v]` over the
        /// steps, B's vector `v` at `b_at + b_steps[p] + v * LANES`.
        /// Never inlined, as [`reduce_spread`]: inside the tile, with its
        /// store loop's values live, rustc kept accumulators on the stack
        /// (interleaved, a 6x2 tile ran 56 GFLOP/s inlined, 69 not; 8x1
        /// 24 and 40).
        ///
        /// # Safety
        /// As [`tile`]'s.
        #[inline(never)]
        #[target_feature(enable = $feature)]
        unsafe fn reduce<const ROWS: usize, const VECTORS: usize>(
            acc: &mut [[V; VECTORS]; ROWS],
            a: &[*const f32; ROWS],
            a_steps: &[isize],
            (b_at, b_steps): (*const f32, &[isize]),
            out: Sums<'_, ROWS>,
        ) {
            let mut sums = *acc;
            let step = |sums: &mut [[V; VECTORS]; ROWS], b_step: isize, step: isize| {
                let b = b_at.wrapping_offset(b_step);
                let mut bv = [zero(); VECTORS];
                for (v, x) in bv.iter_mut().enumerate() {
                    // SAFETY: row `p` of B holds its vectors whole and
                    // adjacent (caller): constant offsets from the row,
                    // which take no registers (as offsets passed in, they
                    // took one each, and the 11- and 12-row tiles spilled).
                    *x = unsafe { load(b.add(v * LANES)) };
                }
                // SAFETY: `A[r, p]` is inside A (caller).
                unsafe { multiply_add(sums, &bv, |r| a[r].wrapping_offset(step)) };
            };
            two_at_a_time(b_steps, a_steps, |b, a| step(&mut sums, b, a));
            // SAFETY: forwarded from the caller.
            unsafe { finish(acc, sums, out) }
        }

        /// [`reduce`] with B's vectors in different wrap rows: each read
        /// from its own origin (`bases[v]`, B's row 0) plus the step's
        /// offset, which the load's address mode adds; offsets added per
        /// step and vector spilled the 6x2 tile. Never inlined: inside the
        /// tile rustc hoisted the broadcasts and kept accumulators on the
        /// stack (a 3x3 convolution of 64 channels on 8x8 images: 22
        /// GFLOP/s inlined, 58 not).
        ///
        /// # Safety
        /// As [`tile`]'s.
        #[inline(never)]
        #[target_feature(enable = $feature)]
        unsafe fn reduce_spread<const ROWS: usize, const VECTORS: usize>(
            acc: &mut [[V; VECTORS]; ROWS],
            a: &[*const f32; ROWS],
            a_steps: &[isize],
            (bases, b_steps): ([*const f32; VECTORS], &[isize]),
            out: Sums<'_, ROWS>,
        ) {
            let mut sums = *acc;
            let step = |sums: &mut [[V; VECTORS]; ROWS], b_step: isize, step: isize| {
                let mut bv = [zero(); VECTORS];
                for (x, &base) in bv.iter_mut().zip(&bases) {
                    // SAFETY: row `p` of B holds its vectors whole (caller).
                    *x = unsafe { load(base.wrapping_offset(b_step)) };
                }
                // SAFETY: `A[r, p]` is inside A (caller).
                unsafe { multiply_add(sums, &bv, |r| a[r].wrapping_offset(step)) };
            };
            two_at_a_time(b_steps, a_steps, |b, a| step(&mut sums, b, a));
            // SAFETY: forwarded from the caller.
            unsafe { finish(acc, sums, out) }
        }

        /// [`reduce`] over `steps` steps a constant distance apart in A
        /// (`a_step`) and in B (`b_step`): a dense product's, or any read
        /// from a panel; the operands' addresses advance by those
        /// distances instead of being read from the offset tables (two
        /// loads and an address computation less per step).
        ///
        /// # Safety
        /// As [`tile`]'s.
        #[inline(never)]
        #[target_feature(enable = $feature)]
        unsafe fn reduce_strided<
            const ROWS: usize,
            const VECTORS: usize,
            const A_ROWS_ADJACENT: bool,
            const B_ADJACENT: bool,
        >(
            acc: &mut [[V; VECTORS]; ROWS],
            a: &[*const f32; ROWS],
            a_step: isize,
            (b_at, b_step): (*const f32, isize),
            vector_at: [isize; VECTORS],
            steps: usize,
            out: Sums<'_, ROWS>,
        ) {
            let mut sums = *acc;
            let mut a = *a;
            let mut b = b_at;
            let mut step = || {
                let mut bv = [zero(); VECTORS];
                for (v, x) in bv.iter_mut().enumerate() {
                    // B's vectors adjacent: at constant offsets, which
                    // take no registers.
                    let at = if B_ADJACENT { (v * LANES) as isize } else { vector_at[v] };
                    // SAFETY: row `p` of B holds its vectors whole (caller).
                    *x = unsafe { load(b.wrapping_offset(at)) };
                }
                // A's rows one float apart (a transposed operand's, as a
                // weight gradient reads the output's gradient): one
                // pointer, each row at a constant offset from it.
                let first = a[0];
                for (r, (row, at)) in sums.iter_mut().zip(a.iter_mut()).enumerate() {
                    let from = if A_ROWS_ADJACENT { first.wrapping_add(r) } else { *at };
                    // SAFETY: `A[r, p]` is inside A (caller).
                    let x = unsafe { broadcast(from) };
                    *at = at.wrapping_offset(a_step);
                    for (sum, &bx) in row.iter_mut().zip(&bv) {
                        *sum = fma(x, bx, *sum);
                    }
                }
                b = b.wrapping_offset(b_step);
            };
            for _ in 0..steps / 2 {
                step();
                step();
            }
            if steps % 2 == 1 {
                step();
            }
            // SAFETY: forwarded from the caller.
            unsafe { finish(acc, sums, out) }
        }

        /// [`reduce_strided`] for the commonest operands: A's steps
        /// adjacent (a row-major A read along its rows) and B's vectors
        /// adjacent (a panel, or B's rows in place). The offsets of a step's
        /// operands are then constants from one pointer per row of A and one
        /// for B, so the loop holds those, B's step and a counter: with A's
        /// step a run-time value, rustc kept the second step's addresses on
        /// the stack (seven reloads per iteration of the 6x4 tile with
        /// 512-bit vectors, `--emit asm`).
        ///
        /// # Safety
        /// As [`tile`]'s.
        #[inline(never)]
        #[target_feature(enable = $feature)]
        unsafe fn reduce_dense<const ROWS: usize, const VECTORS: usize>(
            acc: &mut [[V; VECTORS]; ROWS],
            a: &[*const f32; ROWS],
            (b_at, b_step): (*const f32, isize),
            steps: usize,
            out: Sums<'_, ROWS>,
        ) {
            let mut sums = *acc;
            let mut a = *a;
            let mut b = b_at;
            let step = |sums: &mut [[V; VECTORS]; ROWS], a: &[*const f32; ROWS], b: *const f32, s: usize| {
                let row = b.wrapping_offset(s as isize * b_step);
                let mut bv = [zero(); VECTORS];
                for (v, x) in bv.iter_mut().enumerate() {
                    // SAFETY: B's row `s` from `b` holds the tile's vectors (caller).
                    *x = unsafe { load(row.add(v * LANES)) };
                }
                // SAFETY: `A[r, p + s]` is inside A (caller).
                unsafe { multiply_add(sums, &bv, |r| a[r].wrapping_add(s)) };
            };
            for _ in 0..steps / 2 {
                step(&mut sums, &a, b, 0);
                step(&mut sums, &a, b, 1);
                a = a.map(|at| at.wrapping_add(2));
                b = b.wrapping_offset(2 * b_step);
            }
            if steps % 2 == 1 {
                step(&mut sums, &a, b, 0);
            }
            // SAFETY: forwarded from the caller.
            unsafe { finish(acc, sums, out) }
        }

        /// `rows x vectors` results of C from `b_steps.len()` reduction
        /// steps: `A[r, p]` at `a_at[r] + a_steps[p]`, row `p` of B's
        /// vector `v` a whole vector at `b_at + b_steps[p] + b_vectors[v]`; C's row
        /// `r` from `c_at[r]` as `store` says. `strides`, when the steps
        /// are a constant distance apart in A and in B: those distances.
        ///
        /// # Safety
        /// Every address above is inside a live allocation.
        // Never inlined: each tile is allocated registers on its own, not
        // inside the driver's loop nest (where rustc spilled accumulators).
        #[inline(never)]
        #[target_feature(enable = $feature)]
        unsafe fn tile<const ROWS: usize, const VECTORS: usize>(
            (a_at, a_steps): (&[*const f32], &[isize]),
            b: (*const f32, &[isize]),
            b_vectors: &[isize],
            strides: Option<(isize, isize)>,
            c_at: &[*mut f32],
            c_store: CStore<'_>,
            add_to_c: bool,
        ) {
            let mut acc = [[zero(); VECTORS]; ROWS];
            let mut a = [std::ptr::null::<f32>(); ROWS];
            a.copy_from_slice(&a_at[..ROWS]);
            let mut vector_at = [0isize; VECTORS];
            vector_at.copy_from_slice(&b_vectors[..VECTORS]);
            let mut adjacent = [0isize; VECTORS];
            for (v, at) in adjacent.iter_mut().enumerate() {
                *at = (v * LANES) as isize;
            }
            // Adjacent vectors (a panel, or B's row in place) are read at
            // constant offsets, which frees the registers the offsets of
            // vectors in different wrap rows take.
            // Whole vectors of C's rows are stored by the reduction loop,
            // from registers.
            let mut c_rows = [std::ptr::null_mut::<f32>(); ROWS];
            let whole = matches!(c_store, CStore::Whole);
            if whole {
                c_rows.copy_from_slice(&c_at[..ROWS]);
            }
            let out = whole.then_some((&c_rows, add_to_c));
            // SAFETY: forwarded from the caller.
            unsafe {
                if let (Some((a_step, b_step)), Some(&a_first), Some(&b_first)) =
                    (strides, a_steps.first(), b.1.first())
                {
                    let a = a.map(|row| row.wrapping_offset(a_first));
                    let steps = b.1.len().min(a_steps.len());
                    let b_at = b.0.wrapping_offset(b_first);
                    if a_step == 1 && vector_at == adjacent {
                        reduce_dense(&mut acc, &a, (b_at, b_step), steps, out);
                    } else {
                        let rows_adjacent = (0..ROWS).all(|r| a[r] == a[0].wrapping_add(r));
                        let b = (b_at, b_step);
                        let args = (&mut acc, &a, a_step, b, vector_at, steps, out);
                        match (rows_adjacent, vector_at == adjacent) {
                            (true, true) => strided_call!(ROWS, VECTORS, true, true, args),
                            (true, false) => strided_call!(ROWS, VECTORS, true, false, args),
                            (false, true) => strided_call!(ROWS, VECTORS, false, true, args),
                            (false, false) => strided_call!(ROWS, VECTORS, false, false, args),
                        }
                    }
                } else if vector_at == adjacent {
                    reduce(&mut acc, &a, a_steps, b, out);
                } else {
                    let bases = std::array::from_fn(|v| b.0.wrapping_offset(vector_at[v]));
                    reduce_spread(&mut acc, &a, a_steps, (bases, b.1), out);
                }
            }
            if whole {
                return;
            }
            // Partial or scattered C: the sums leave the registers through a buffer, in a loop of
            // constant trip counts: the stores below walk C in loops rustc
            // may not unroll, and indexing `acc` from them would keep every
            // accumulator in memory inside the reduction loop.
            let mut sums = [std::mem::MaybeUninit::<V>::uninit(); MAX_TILE];
            for (r, row) in acc.iter().enumerate() {
                for (v, &sum) in row.iter().enumerate() {
                    sums[r * VECTORS + v].write(sum);
                }
            }
            // Rows in order, each a read-modify-write finished before the
            // next: rows of a scattered C may overlap one another.
            for (r, &base) in c_at.iter().enumerate().take(ROWS) {
                for v in 0..VECTORS {
                    // SAFETY: written above for every `r < ROWS`, `v < VECTORS`.
                    let sum = unsafe { sums[r * VECTORS + v].assume_init() };
                    match c_store {
                        // Stored by the reduction (above).
                        CStore::Whole => {}
                        CStore::Pieces(pieces) => {
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
                        CStore::Strided(offsets) => {
                            let mut lanes = [0f32; LANES];
                            // SAFETY: `lanes` holds one whole vector.
                            unsafe { store(lanes.as_mut_ptr(), sum) };
                            for (&x, &offset) in lanes.iter().zip(offsets.iter().skip(v * LANES)) {
                                let at = base.wrapping_offset(offset);
                                // SAFETY: each of the block's columns of C's row is C's (caller).
                                unsafe { *at = if add_to_c { *at + x } else { x } };
                            }
                        }
                    }
                }
            }
        }
    };
}
