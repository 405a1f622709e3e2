//! The driver with 512-bit vectors (AVX-512F): 16 lanes, 32 registers,
//! masked loads and stores for partial column blocks.

use std::arch::x86_64::*;

type V = __m512;
type Mask = __mmask16;
const LANES: usize = 16;

#[inline]
#[target_feature(enable = "avx512f")]
fn zero() -> V {
    _mm512_setzero_ps()
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(p: *const f32) -> V {
    // SAFETY: 16 floats at `p` are readable (caller).
    unsafe { _mm512_loadu_ps(p) }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn broadcast(p: *const f32) -> V {
    // SAFETY: `p` is readable (caller).
    _mm512_set1_ps(unsafe { *p })
}

#[inline]
#[target_feature(enable = "avx512f")]
fn fma(a: V, b: V, c: V) -> V {
    _mm512_fmadd_ps(a, b, c)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn add(a: V, b: V) -> V {
    _mm512_add_ps(a, b)
}

/// `x <= 0 ? 0 : x` per lane: a NaN (unordered, so not `<= 0`) stays NaN
/// and `-0` becomes `0`, as the kernels' ReLU.
#[inline]
#[target_feature(enable = "avx512f")]
fn relu(x: V) -> V {
    let at_most_zero = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, _mm512_setzero_ps());
    _mm512_maskz_mov_ps(!at_most_zero, x)
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store(p: *mut f32, x: V) {
    // SAFETY: 16 floats at `p` are writable (caller).
    unsafe { _mm512_storeu_ps(p, x) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn mask(first: usize, end: usize) -> Mask {
    (((1u32 << end) - 1) & !((1u32 << first) - 1)) as Mask
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_masked(p: *const f32, m: Mask) -> V {
    // SAFETY: the lanes `m` selects are readable (caller); masked-off lanes
    // are not accessed.
    unsafe { _mm512_maskz_loadu_ps(m, p) }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_masked(p: *mut f32, m: Mask, x: V) {
    // SAFETY: the lanes `m` selects are writable (caller).
    unsafe { _mm512_mask_storeu_ps(p, m, x) }
}

driver!(kiln_gemm_avx512, "avx512f", crate::target::ProductIsa::Avx512);
