//! Moving blocks between a matrix stored transposed and the driver's
//! row-major panel or buffer, eight by eight, transposed in registers:
//! a transposed B (its steps adjacent, its columns apart, as a linear
//! layer's weight is in the forward product) packed into a panel, and a
//! C whose rows are adjacent and columns apart (a product computed
//! transposed) moved to and from the buffer its sums are kept in. Element
//! by element, each took about a tenth of a 3072 -> 512 linear layer's
//! forward time (`perf`, batch 256 and 64).

use std::arch::x86_64::*;

/// Whether this CPU can run [`gather_transposed`] (every CPU with
/// AVX-512 has AVX2 too; checked once, cached by std).
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// `panel[p * width + j] = B[p, j]` for `p < steps`, `j < cols`, and 0 for
/// `cols <= j < width`, B's column `j` being `steps` adjacent floats from
/// `b + j * col`.
///
/// # Safety
/// The CPU has AVX2 ([`available`]); those `cols` runs of `steps` floats
/// are readable; `panel` holds `steps * width` writable floats, `cols <=
/// width`, and overlaps none of them.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gather_transposed(
    b: *const f32,
    col: isize,
    (steps, cols): (usize, usize),
    panel: *mut f32,
    width: usize,
) {
    let (whole_steps, whole_cols) = (steps / 8 * 8, cols / 8 * 8);
    for j in (0..whole_cols).step_by(8) {
        for p in (0..whole_steps).step_by(8) {
            // SAFETY: columns `j..j + 8` hold steps `p..p + 8` (caller);
            // panel rows `p..p + 8` hold columns `j..j + 8`.
            unsafe {
                let row = |c: usize| _mm256_loadu_ps(b.offset((j + c) as isize * col).add(p));
                let out = transpose_8x8([row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7)]);
                for (i, x) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(panel.add((p + i) * width + j), x);
                }
            }
        }
    }
    // The steps past the last eight of the whole columns, every step of
    // the columns past them, and the zero columns.
    for j in 0..width {
        let from = if j < whole_cols { whole_steps } else { 0 };
        for p in from..steps {
            // SAFETY: as above, one element at a time.
            unsafe { *panel.add(p * width + j) = if j < cols { *b.offset(j as isize * col).add(p) } else { 0.0 } };
        }
    }
}

/// `c[i + j * col] = buffer[i * width + j]` for `i < rows`, `j < cols`:
/// the inverse of [`gather_transposed`] (C's column `j` being `rows`
/// adjacent floats from `c + j * col`).
///
/// # Safety
/// The CPU has AVX2 ([`available`]); those `cols` runs of `rows` floats
/// are writable; `buffer` holds `rows * width` readable floats, `cols <=
/// width`, and overlaps none of them.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn scatter_transposed(
    buffer: *const f32,
    width: usize,
    (rows, cols): (usize, usize),
    c: *mut f32,
    col: isize,
) {
    let (whole_rows, whole_cols) = (rows / 8 * 8, cols / 8 * 8);
    for j in (0..whole_cols).step_by(8) {
        for i in (0..whole_rows).step_by(8) {
            // SAFETY: buffer rows `i..i + 8` hold columns `j..j + 8`; C's
            // columns `j..j + 8` hold rows `i..i + 8` (caller).
            unsafe {
                let row = |r: usize| _mm256_loadu_ps(buffer.add((i + r) * width + j));
                let out = transpose_8x8([row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7)]);
                for (cc, x) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(c.offset((j + cc) as isize * col).add(i), x);
                }
            }
        }
    }
    // The rows past the last eight of the whole columns, and every row of
    // the columns past them.
    for j in 0..cols {
        let from = if j < whole_cols { whole_rows } else { 0 };
        for i in from..rows {
            // SAFETY: as above, one element at a time.
            unsafe { *c.offset(j as isize * col).add(i) = *buffer.add(i * width + j) };
        }
    }
}

/// Rows of an 8x8 block from its columns: `out[i][c] = rows[c][i]`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved: lanes (0 1 0 1 | 4 5 4 5) and (2 3 2 3 | 6 7 6 7).
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    // Four rows' element `e` and `e + 4` in each 128-bit half.
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    [
        _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
        _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
    ]
}
