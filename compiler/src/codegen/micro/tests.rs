//! Each driver against a plain triple loop, over shapes that exercise whole
//! and partial tiles, every B layout (rows in place, through a table,
//! packed from strided columns), strided A, accumulation, and reductions
//! longer than one block; and results that do not depend on how the rows
//! or columns are split.

use super::{GemmCall, HELD_STEPS, KC, evicts_itself, run};
use crate::target::ProductIsa;

/// A fixed pseudo-random fill (values in [-1, 1)).
fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    /// A is stored transposed (`a_col = m`).
    a_transposed: bool,
    /// B is stored transposed (`b_col = k`, packed by the driver).
    b_transposed: bool,
    /// B's rows come through a table, in reverse order with gaps.
    b_table: bool,
    /// B's columns wrap: `(row, stride)` (in place or through the table).
    wrap: Option<(usize, usize)>,
    /// Distance between B's columns within a row (not transposed).
    step: usize,
    accumulate: bool,
    rows: usize,
    vectors: usize,
}

/// Runs `case` on `isa` and checks it against the triple loop; returns C.
fn check(isa: ProductIsa, case: Case) -> Vec<f32> {
    let Case { m, n, k, a_transposed, b_transposed, b_table, wrap, step, accumulate, rows, vectors } = case;
    let a = fill(m * k, 1);
    let (a_row, a_col) = if a_transposed { (1, m as i64) } else { (k as i64, 1) };
    // B rows `gap` apart (the table's rows are in reverse order), wide
    // enough for the wrapped columns.
    let column = |j: usize| wrap.map_or(j * step, |(row, stride)| j / row * stride + j % row * step);
    let gap = column(n.max(1) - 1) + 4;
    let b = fill((k * gap).max(n * k), 2);
    let table: Vec<i32> = (0..k).map(|p| ((k - 1 - p) * gap) as i32).collect();
    let b_at = |p: usize, j: usize| -> f32 {
        if b_transposed {
            b[j * k + p]
        } else if b_table {
            b[table[p] as usize + column(j)]
        } else {
            b[p * gap + column(j)]
        }
    };
    let (b_row, b_col) = if b_transposed { (1, k as i64) } else { (gap as i64, step as i64) };
    let c_row = n + 5;
    let mut c = fill(m * c_row, 3);
    let before = c.clone();
    let call = GemmCall {
        b_rows: if b_table && !b_transposed { table.as_ptr() } else { std::ptr::null() },
        // Up to 4 floats past the last column of B's last row (`gap`):
        // a wrap row's partial last vector is read in place where it fits
        // and gathered where it would pass the end.
        b_end: b.as_ptr_range().end,
        wrap_row: wrap.map_or(0, |w| w.0 as i64),
        wrap_stride: wrap.map_or(0, |w| w.1 as i64),
        ..GemmCall::dense(
            [m, n, k],
            (a.as_ptr(), a_row, a_col),
            (b.as_ptr(), b_row, b_col),
            (c.as_mut_ptr(), c_row as i64),
            accumulate,
            [rows, vectors],
        )
    };
    // SAFETY: every element the call names is inside `a`, `b`, `table` and `c`.
    assert!(unsafe { run(isa, &call) });
    for i in 0..m {
        for j in 0..c_row {
            let got = c[i * c_row + j];
            if j >= n {
                assert_eq!(
                    got.to_bits(),
                    before[i * c_row + j].to_bits(),
                    "{case:?}: wrote past column {n} at ({i}, {j})"
                );
                continue;
            }
            let mut want: f64 = if accumulate { f64::from(before[i * c_row + j]) } else { 0.0 };
            for p in 0..k {
                want += f64::from(a[(i as i64 * a_row + p as i64 * a_col) as usize]) * f64::from(b_at(p, j));
            }
            let err = (f64::from(got) - want).abs();
            assert!(
                err <= 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt(),
                "{isa} {case:?}: C[{i}, {j}] = {got}, expected {want}"
            );
        }
    }
    c
}

fn isas() -> Vec<ProductIsa> {
    let isas: Vec<_> = [ProductIsa::Avx2, ProductIsa::Avx512].into_iter().filter(|i| i.available()).collect();
    if isas.is_empty() {
        eprintln!("no wide product ISA on this CPU: the drivers are not exercised");
    }
    isas
}

#[test]
fn drivers_match_the_triple_loop() {
    for isa in isas() {
        for (m, n, k) in
            // (40 x (KC + 9) is past the level-1 cache: A transposed, it is packed.)
            [
                (1, 1, 1),
                (5, 7, 3),
                (12, 32, 9),
                (13, 33, 17),
                (32, 16, 288),
                (7, 70, KC + 5),
                (9, 67, 20),
                (3, 5, 0),
                (40, 37, KC + 9),
            ]
        {
            for vectors in 1..=isa.max_tile_vectors() {
                let rows = isa.max_tile_rows(vectors);
                for (a_transposed, b_transposed, b_table) in
                    [(false, false, false), (true, false, false), (false, true, false), (false, false, true)]
                {
                    for accumulate in [false, true] {
                        let case = Case {
                            m,
                            n,
                            k,
                            a_transposed,
                            b_transposed,
                            b_table,
                            wrap: None,
                            step: 1,
                            accumulate,
                            rows,
                            vectors,
                        };
                        check(isa, case);
                        if !b_transposed {
                            // Rows shorter than, equal to and longer than a vector, and
                            // rows of whole vectors and a partial one (LeNet's 28 and 10).
                            let lanes = isa.lanes();
                            for wrap in [(3, 5), (lanes, lanes + 2), (lanes + 5, lanes + 9), (28, 32), (10, 14)] {
                                check(isa, Case { wrap: Some(wrap), ..case });
                                // Every other column (a stride-2 convolution).
                                check(isa, Case { wrap: Some((wrap.0, 2 * wrap.1)), step: 2, ..case });
                            }
                            check(isa, Case { step: 3, ..case });
                        }
                    }
                }
            }
        }
    }
}

/// A reduction longer than the offsets a call holds, its offsets worked
/// out per block: B in place, through a table, wrapped and strided.
#[test]
fn reductions_longer_than_the_held_offsets() {
    for isa in isas() {
        for (b_table, wrap, step) in
            [(false, None, 1), (true, None, 1), (true, Some((3, 5)), 1), (false, Some((3, 10)), 2)]
        {
            let case = Case {
                m: 5,
                n: 11,
                k: HELD_STEPS + KC + 9,
                a_transposed: false,
                b_transposed: false,
                b_table,
                wrap,
                step,
                accumulate: true,
                rows: isa.max_tile_rows(2),
                vectors: 2,
            };
            check(isa, case);
        }
    }
}

/// Every tile shape bit for bit; with A transposed, packed by the driver
/// where several column blocks read it (narrower tiles) and read in place
/// where one does (the widest).
#[test]
fn results_do_not_depend_on_the_tile_or_the_split() {
    for (isa, a_transposed) in isas().into_iter().flat_map(|isa| [(isa, false), (isa, true)]) {
        let base = Case {
            m: 24,
            n: 2 * isa.lanes(),
            k: 2 * KC + 7,
            a_transposed,
            b_transposed: false,
            b_table: false,
            wrap: None,
            step: 1,
            accumulate: true,
            rows: 1,
            vectors: 1,
        };
        let reference = check(isa, base);
        for vectors in 1..=isa.max_tile_vectors() {
            for rows in 1..=isa.max_tile_rows(vectors) {
                let c = check(isa, Case { rows, vectors, ..base });
                assert!(
                    c.iter().zip(&reference).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{isa} A transposed {a_transposed}: {rows}x{vectors} differs"
                );
            }
        }
    }
}

/// A convolution's input gradient: rows of C (taps) added into one image
/// through a table of tap offsets, columns wrapping into the image's wider
/// rows, taps overlapping one another.
#[test]
fn scattered_c_adds_every_tap_into_the_image() {
    for isa in isas() {
        for (row, stride, step) in [
            (3, 5, 1),
            (8, 10, 1),
            (isa.lanes(), isa.lanes() + 2, 1),
            (isa.lanes() + 3, isa.lanes() + 5, 1),
            // A stride-2 convolution's: every other column of wider rows.
            (5, 12, 2),
            (isa.lanes() + 1, 2 * isa.lanes() + 4, 2),
        ] {
            let (m, n, k) = (9, row * 3, 20);
            let a = fill(m * k, 4);
            let b = fill(k * n, 5);
            // Tap `i` lands `(i / 3) * stride + i % 3` into the image: taps overlap.
            let table: Vec<i32> = (0..m).map(|i| ((i / 3) * stride + i % 3) as i32).collect();
            let image = 2 * stride + 2 + 3 * stride + row * step;
            let mut c = fill(image, 6);
            let mut want: Vec<f64> = c.iter().map(|&x| f64::from(x)).collect();
            for i in 0..m {
                for j in 0..n {
                    let sum: f64 = (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j])).sum();
                    want[table[i] as usize + j / row * stride + j % row * step] += sum;
                }
            }
            for vectors in 1..=isa.max_tile_vectors() {
                let mut got = c.clone();
                let call = GemmCall {
                    c_rows: table.as_ptr(),
                    c_col: step as i64,
                    c_wrap_row: row as i64,
                    c_wrap_stride: stride as i64,
                    ..GemmCall::dense(
                        [m, n, k],
                        (a.as_ptr(), k as i64, 1),
                        (b.as_ptr(), n as i64, 1),
                        (got.as_mut_ptr(), 0),
                        true,
                        [isa.max_tile_rows(vectors), vectors],
                    )
                };
                // SAFETY: every element the call names is inside `a`, `b`, `table` and `got`.
                assert!(unsafe { run(isa, &call) });
                for (e, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(g) - w).abs() < 1e-4,
                        "{isa} row {row} stride {stride} step {step}: image[{e}] = {g}, expected {w}"
                    );
                }
            }
            c.clear();
        }
    }
}

/// A convolution's weight gradient as the transposed micro tile runs it:
/// A's rows (kernel taps) through a table into an image, its reduction in
/// segments (output rows inside wider input rows); B (the output gradient)
/// read across its rows with the reduction in segments too (apart, or end
/// to end as a dense output gradient's, which the driver gathers as one
/// run); C stored with its columns apart (the weight gradient transposed).
#[test]
fn segmented_reductions_and_strided_c() {
    // Reductions held whole, and longer than the offsets a call holds.
    let cases = isas().into_iter().flat_map(|isa| [(isa, 2 * KC / 8 + 1), (isa, HELD_STEPS / 8 + 3)]);
    for ((isa, rows), gap) in cases.flat_map(|case| [(case, 2), (case, 0)]) {
        let (taps, channels, row, stride) = (14, 2 * isa.lanes() + 3, 8, 11);
        let k = rows * row;
        let image = fill(stride * (rows + 5) + 8, 7);
        let table: Vec<i32> = (0..taps).map(|i| ((i / 3) * stride + i % 3) as i32).collect();
        // dY: `channels` rows of `k` positions, each output row `row` long
        // and `row + gap` apart.
        let dy_row = row + gap;
        let dy = fill(channels * rows * dy_row, 8);
        // dW is `[channels, taps + 1]`: the driver's C (taps x channels)
        // has adjacent rows and columns `taps + 1` apart.
        let per_channel = taps + 1;
        let mut dw = fill(channels * per_channel, 9);
        let before = dw.clone();
        let call = GemmCall {
            a_rows: table.as_ptr(),
            a_seg: row as i64,
            a_seg_stride: stride as i64,
            b_seg: row as i64,
            b_seg_stride: dy_row as i64,
            c_col: per_channel as i64,
            ..GemmCall::dense(
                [taps, channels, k],
                (image.as_ptr(), 0, 1),
                (dy.as_ptr(), 1, (rows * dy_row) as i64),
                (dw.as_mut_ptr(), 1),
                true,
                [12, 2],
            )
        };
        // SAFETY: every element the call names is inside `image`, `table`, `dy` and `dw`.
        assert!(unsafe { run(isa, &call) });
        for i in 0..taps {
            for j in 0..channels {
                let mut want = f64::from(before[j * per_channel + i]);
                for p in 0..k {
                    let x = image[table[i] as usize + (p / row) * stride + p % row];
                    want += f64::from(x) * f64::from(dy[j * rows * dy_row + (p / row) * dy_row + p % row]);
                }
                let got = f64::from(dw[j * per_channel + i]);
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{isa} gap {gap}: dW[{j}, {i}] = {got}, expected {want}"
                );
            }
        }
        // Untouched: each channel's element past the last tap.
        for j in 0..channels {
            assert_eq!(dw[j * per_channel + taps].to_bits(), before[j * per_channel + taps].to_bits());
        }
    }
}

/// A transposed product's C (its columns apart, rows adjacent) over one
/// or several reduction blocks and more rows than one buffered chunk:
/// summed in the driver's buffer and stored once, bit for bit what adding
/// each block into C element by element gives (a table of C's rows turns
/// the buffer off).
#[test]
fn buffered_strided_c_equals_adding_each_block() {
    for (isa, k) in isas().into_iter().flat_map(|isa| [(isa, 2 * KC + 7), (isa, KC / 2 + 3)]) {
        let (m, n) = (300, 2 * isa.lanes() + 3);
        let a = fill(m * k, 10);
        let b = fill(k * n, 11);
        // C is `[n, m + 1]`: the driver's C (m x n) with columns `m + 1` apart.
        let c_col = m + 1;
        let table: Vec<i32> = (0..m as i32).collect();
        for vectors in 1..=isa.max_tile_vectors() {
            for accumulate in [false, true] {
                let start = fill(n * c_col, 12);
                let mut results = Vec::new();
                for rows_from_table in [false, true] {
                    let mut c = start.clone();
                    let call = GemmCall {
                        c_col: c_col as i64,
                        c_rows: if rows_from_table { table.as_ptr() } else { std::ptr::null() },
                        ..GemmCall::dense(
                            [m, n, k],
                            (a.as_ptr(), k as i64, 1),
                            (b.as_ptr(), n as i64, 1),
                            (c.as_mut_ptr(), 1),
                            accumulate,
                            [isa.max_tile_rows(vectors), vectors],
                        )
                    };
                    // SAFETY: every element the call names is inside `a`, `b`, `table` and `c`.
                    assert!(unsafe { run(isa, &call) });
                    results.push(c);
                }
                let c = &results[0];
                for i in 0..m {
                    for j in 0..n {
                        let mut want = if accumulate { f64::from(start[j * c_col + i]) } else { 0.0 };
                        for p in 0..k {
                            want += f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
                        }
                        let got = f64::from(c[j * c_col + i]);
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{isa}: C[{i}, {j}] = {got}, expected {want}"
                        );
                    }
                }
                // Untouched: each column's element past the last row.
                for j in 0..n {
                    assert_eq!(c[j * c_col + m].to_bits(), start[j * c_col + m].to_bits());
                }
                assert!(
                    c.iter().zip(&results[1]).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{isa} {vectors} vectors, accumulate {accumulate}: buffered C differs"
                );
            }
        }
    }
}

/// B's rows a multiple of 4 KiB apart share one level-1 set: a block of
/// them is copied into the panel when several row tiles read it, and the
/// product equals the plain sums either way.
#[test]
fn blocks_that_evict_themselves_are_copied() {
    let base = 4096 as *const f32;
    let steps = |n: usize, apart: usize| (0..n).map(|p| (p * apart) as isize).collect::<Vec<_>>();
    // Rows 1024 floats apart: all in one set.
    assert!(evicts_itself(base, &steps(KC, 1024), 16));
    assert!(!evicts_itself(base, &steps(8, 1024), 16), "8 lines fit a set's ways");
    // Adjacent rows (a packed panel, a dense B as wide as the tile) spread over every set.
    assert!(!evicts_itself(base, &steps(KC, 16), 16));
    // A 3x3 convolution's taps of 32 channels on padded 34x34 images: neighbouring
    // taps read the same lines, channels 4624 bytes apart.
    let taps: Vec<isize> = (0..32)
        .flat_map(|c| (0..3).flat_map(move |ky| (0..3).map(move |kx| (c * 34 * 34 + ky * 34 + kx) as isize)))
        .collect();
    assert!(!evicts_itself(base, &taps[..KC], 16));
    for isa in isas() {
        for (b_table, k) in [(false, KC + 40), (true, KC + 40), (false, HELD_STEPS + 9)] {
            for vectors in 1..=isa.max_tile_vectors() {
                let rows = isa.max_tile_rows(vectors);
                // B's rows `n + 3` = 1024 floats apart (see `check`).
                let case = Case {
                    m: 3 * rows + 1,
                    n: 1021,
                    k,
                    a_transposed: true,
                    b_transposed: false,
                    b_table,
                    wrap: None,
                    step: 1,
                    accumulate: b_table,
                    rows,
                    vectors,
                };
                // `check` compares every element with the plain sums; a
                // single row tile reads the same block in place.
                check(isa, case);
                check(isa, Case { m: rows, ..case });
            }
        }
    }
}

/// The driver's epilogue (bias per row or per column, then ReLU) on every
/// C it finishes: columns adjacent, over one reduction block and, with B
/// transposed, block by block over all of C (`reduction_blocks_outermost`),
/// and a transposed product's buffered C; bit for bit the plain call
/// followed by `x + bias` and `x <= 0 ? 0 : x` (a NaN in the bias stays
/// NaN through the ReLU).
#[test]
fn the_driver_adds_the_bias_and_applies_relu() {
    for isa in isas() {
        let lanes = isa.lanes();
        let (m, n) = (2 * isa.max_tile_rows(2) + 3, 5 * lanes + 3);
        for (k, b_transposed, c_transposed) in [
            (KC / 2 + 3, false, false),
            (2 * KC + 7, true, false),
            (KC / 2 + 3, false, true),
            (2 * KC + 7, false, true),
        ] {
            let a = fill(m * k, 20);
            let b = fill(k * n, 21);
            // C is `m x n`, or stored transposed with columns `m + 1` apart.
            let (c_row, c_col, c_len) = if c_transposed { (1, m + 1, n * (m + 1)) } else { (n + 2, 1, m * (n + 2)) };
            let at = |i: usize, j: usize| i * c_row + j * c_col;
            let (b_row, b_col) = if b_transposed { (1, k as i64) } else { (n as i64, 1) };
            for (per_row, relu, accumulate) in
                [(true, true, false), (false, true, true), (true, false, true), (false, false, false)]
            {
                let mut bias = fill(if per_row { m } else { n }, 22);
                bias[1] = f32::NAN;
                let start = fill(c_len, 23);
                let call = |c: &mut Vec<f32>, epilogue: bool| GemmCall {
                    c_col: c_col as i64,
                    bias: if epilogue { bias.as_ptr() } else { std::ptr::null() },
                    bias_per_row: i64::from(per_row),
                    relu: i64::from(epilogue && relu),
                    ..GemmCall::dense(
                        [m, n, k],
                        (a.as_ptr(), k as i64, 1),
                        (b.as_ptr(), b_row, b_col),
                        (c.as_mut_ptr(), c_row as i64),
                        accumulate,
                        [isa.max_tile_rows(2), 2],
                    )
                };
                let (mut plain, mut finished) = (start.clone(), start.clone());
                // SAFETY: every element the calls name is inside `a`, `b`, `bias` and the C.
                unsafe {
                    assert!(run(isa, &call(&mut plain, false)));
                    assert!(run(isa, &call(&mut finished, true)));
                }
                for i in 0..m {
                    for j in 0..n {
                        let x = plain[at(i, j)] + bias[if per_row { i } else { j }];
                        let want = if relu && x <= 0.0 { 0.0 } else { x };
                        let got = finished[at(i, j)];
                        assert!(
                            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                            "{isa} k {k} per_row {per_row} relu {relu}: C[{i}, {j}] = {got}, expected {want}"
                        );
                    }
                }
                // Elements outside C untouched.
                let inside: std::collections::HashSet<usize> =
                    (0..m).flat_map(|i| (0..n).map(move |j| (i, j))).map(|(i, j)| at(i, j)).collect();
                for (e, (&got, &was)) in finished.iter().zip(&start).enumerate().filter(|(e, _)| !inside.contains(e)) {
                    assert_eq!(got.to_bits(), was.to_bits(), "{isa}: element {e} outside C changed");
                }
            }
        }
    }
}
