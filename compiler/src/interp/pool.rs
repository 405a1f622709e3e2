//! Max and average pooling and their gradients. The max is PyTorch's first
//! maximum (a NaN wins); average pooling counts padding in its divisor.

use super::window::{Nchw, Taps, check_window};
use super::{Fault, OpResult, ensure};
use crate::ops::Pool2d;
use crate::tensor::Tensor;

fn check_pool(p: &Pool2d, x: Nchw, y: Nchw) -> Result<(), Fault> {
    ensure(y.n == x.n && y.c == x.c, || format!("output {:?} does not match input {:?}", y.dims(), x.dims()))?;
    check_window(x, y, p.kernel, p.stride, p.padding, p.dilation)
}

/// The flat index and value of the maximum of window `(n, c, oy, ox)`,
/// scanning taps row by row and keeping the first maximum (PyTorch's rule,
/// including that a NaN wins). `None` when every tap is padding.
fn window_argmax(x: &Tensor, xs: Nchw, taps: &Taps, n: usize, c: usize, oy: usize, ox: usize) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for ky in 0..taps.kh {
        for kx in 0..taps.kw {
            if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                let at = xs.at(n, c, iy, ix);
                let v = x.data[at];
                match best {
                    // PyTorch starts from -inf at the first valid tap, so an
                    // all -inf window still points at its first pixel.
                    None => best = Some((at, v)),
                    Some((_, m)) if v > m || v.is_nan() => best = Some((at, v)),
                    Some(_) => {}
                }
            }
        }
    }
    best
}

/// `y = max` over each window; padding counts as -inf.
pub(super) fn max_pool2d(x: &Tensor, p: &Pool2d, out: &[usize]) -> OpResult {
    let (xs, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(out, "output")?);
    check_pool(p, xs, ys)?;
    let taps = Taps::pool(p, xs, ys);
    let mut y = Tensor::zeros(out);
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let m = window_argmax(x, xs, &taps, n, c, oy, ox).map_or(f32::NEG_INFINITY, |(_, v)| v);
                    y.data[ys.at(n, c, oy, ox)] = m;
                }
            }
        }
    }
    Ok(y)
}

/// Each window's `dy` goes to its first maximum; overlapping windows accumulate.
pub(super) fn max_pool2d_grad(x: &Tensor, dy: &Tensor, p: &Pool2d, out: &[usize]) -> OpResult {
    let (xs, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(&dy.shape, "dy")?);
    check_pool(p, xs, ys)?;
    let taps = Taps::pool(p, xs, ys);
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    let mut dx = Tensor::zeros(out);
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    if let Some((at, _)) = window_argmax(x, xs, &taps, n, c, oy, ox) {
                        dx.data[at] += dy.data[ys.at(n, c, oy, ox)];
                    }
                }
            }
        }
    }
    Ok(dx)
}

/// `y = sum(window) / (kh * kw)`: padding counts as zeros in the divisor
/// (PyTorch's `count_include_pad=True`, `ceil_mode=False`). A dilation other
/// than 1 is honoured in the taps, the divisor stays `kh * kw`.
pub(super) fn avg_pool2d(x: &Tensor, p: &Pool2d, out: &[usize]) -> OpResult {
    let (xs, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(out, "output")?);
    check_pool(p, xs, ys)?;
    let taps = Taps::pool(p, xs, ys);
    let divisor = (p.kernel[0] * p.kernel[1]) as f32;
    let mut y = Tensor::zeros(out);
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let mut acc = 0.0f32;
                    for ky in 0..p.kernel[0] {
                        for kx in 0..p.kernel[1] {
                            if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                acc += x.data[xs.at(n, c, iy, ix)];
                            }
                        }
                    }
                    y.data[ys.at(n, c, oy, ox)] = acc / divisor;
                }
            }
        }
    }
    Ok(y)
}

/// Each window spreads `dy / (kh * kw)` over the pixels it read.
pub(super) fn avg_pool2d_grad(dy: &Tensor, p: &Pool2d, out: &[usize]) -> OpResult {
    let (ys, xs) = (Nchw::of(&dy.shape, "dy")?, Nchw::of(out, "output")?);
    check_pool(p, xs, ys)?;
    let taps = Taps::pool(p, xs, ys);
    let divisor = (p.kernel[0] * p.kernel[1]) as f32;
    let mut dx = Tensor::zeros(out);
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let g = dy.data[ys.at(n, c, oy, ox)] / divisor;
                    for ky in 0..p.kernel[0] {
                        for kx in 0..p.kernel[1] {
                            if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                dx.data[xs.at(n, c, iy, ix)] += g;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(dx)
}
