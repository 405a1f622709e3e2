//! The driver with 256-bit vectors (AVX2 and FMA): 8 lanes, 16 registers,
//! `vmaskmov` loads and stores for partial column blocks.

use std::arch::x86_64::*;

type V = __m256;
type Mask = __m256i;
const LANES: usize = 8;

#[inline]
#[target_feature(enable = "avx2,fma")]
fn zero() -> V {
    _mm256_setzero_ps()
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load(p: *const f32) -> V {
    // SAFETY: 8 floats at `p` are readable (caller).
    unsafe { _mm256_loadu_ps(p) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn broadcast(p: *const f32) -> V {
    // SAFETY: `p` is readable (caller).
    _mm256_set1_ps(unsafe { *p })
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn fma(a: V, b: V, c: V) -> V {
    _mm256_fmadd_ps(a, b, c)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn add(a: V, b: V) -> V {
    _mm256_add_ps(a, b)
}

/// `x <= 0 ? 0 : x` per lane: a NaN (unordered, so not `<= 0`) stays NaN
/// and `-0` becomes `0`, as the kernels' ReLU.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn relu(x: V) -> V {
    let at_most_zero = _mm256_cmp_ps::<_CMP_LE_OQ>(x, _mm256_setzero_ps());
    _mm256_andnot_ps(at_most_zero, x)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(p: *mut f32, x: V) {
    // SAFETY: 8 floats at `p` are writable (caller).
    unsafe { _mm256_storeu_ps(p, x) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn mask(first: usize, end: usize) -> Mask {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let below_end = _mm256_cmpgt_epi32(_mm256_set1_epi32(end as i32), lane);
    let from_first = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(first as i32 - 1));
    _mm256_and_si256(below_end, from_first)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_masked(p: *const f32, m: Mask) -> V {
    // SAFETY: the lanes `m` selects are readable (caller); masked-off lanes
    // are not accessed.
    unsafe { _mm256_maskload_ps(p, m) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_masked(p: *mut f32, m: Mask, x: V) {
    // SAFETY: the lanes `m` selects are writable (caller).
    unsafe { _mm256_maskstore_ps(p, m, x) }
}

driver!(kiln_gemm_avx2, "avx2,fma", crate::target::ProductIsa::Avx2);
