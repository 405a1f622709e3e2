//! Nearest and bilinear resampling and its gradient, through the index
//! rules of `Resize` that the kernel builder shares.

use super::window::Nchw;
use super::{Fault, OpResult, ensure};
use crate::ops::{Resize, ResizeMode};
use crate::tensor::Tensor;

fn check_resize(r: &Resize, x: Nchw, y: Nchw) -> Result<(), Fault> {
    ensure(y.n == x.n && y.c == x.c && [y.h, y.w] == r.size, || {
        format!("output {:?} should be [{}, {}, {}, {}]", y.dims(), x.n, x.c, r.size[0], r.size[1])
    })
}

/// Nearest or bilinear resampling of NCHW `x` to `r.size`.
pub(super) fn resize(x: &Tensor, r: &Resize, out: &[usize]) -> OpResult {
    let (xs, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(out, "output")?);
    check_resize(r, xs, ys)?;
    let mut y = Tensor::zeros(out);
    if xs.h == 0 || xs.w == 0 {
        return Ok(y);
    }
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let v = match r.mode {
                        ResizeMode::Nearest => {
                            let iy = r.nearest_source(0, oy, xs.h, ys.h);
                            let ix = r.nearest_source(1, ox, xs.w, ys.w);
                            x.data[xs.at(n, c, iy, ix)]
                        }
                        ResizeMode::Bilinear => {
                            let (y0, y1, hy0, hy1) = r.linear_taps(0, oy, xs.h, ys.h);
                            let (x0, x1, wx0, wx1) = r.linear_taps(1, ox, xs.w, ys.w);
                            let at = |iy, ix| x.data[xs.at(n, c, iy, ix)];
                            hy0 * (wx0 * at(y0, x0) + wx1 * at(y0, x1)) + hy1 * (wx0 * at(y1, x0) + wx1 * at(y1, x1))
                        }
                    };
                    y.data[ys.at(n, c, oy, ox)] = v;
                }
            }
        }
    }
    Ok(y)
}

/// The adjoint of [`resize`]: every output pixel scatters `dy` times its
/// interpolation weights back to the pixels it read.
pub(super) fn resize_grad(dy: &Tensor, r: &Resize, out: &[usize]) -> OpResult {
    let (ys, xs) = (Nchw::of(&dy.shape, "dy")?, Nchw::of(out, "output")?);
    check_resize(r, xs, ys)?;
    let mut dx = Tensor::zeros(out);
    if xs.h == 0 || xs.w == 0 {
        return Ok(dx);
    }
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let g = dy.data[ys.at(n, c, oy, ox)];
                    match r.mode {
                        ResizeMode::Nearest => {
                            let iy = r.nearest_source(0, oy, xs.h, ys.h);
                            let ix = r.nearest_source(1, ox, xs.w, ys.w);
                            dx.data[xs.at(n, c, iy, ix)] += g;
                        }
                        ResizeMode::Bilinear => {
                            let (y0, y1, hy0, hy1) = r.linear_taps(0, oy, xs.h, ys.h);
                            let (x0, x1, wx0, wx1) = r.linear_taps(1, ox, xs.w, ys.w);
                            dx.data[xs.at(n, c, y0, x0)] += hy0 * wx0 * g;
                            dx.data[xs.at(n, c, y0, x1)] += hy0 * wx1 * g;
                            dx.data[xs.at(n, c, y1, x0)] += hy1 * wx0 * g;
                            dx.data[xs.at(n, c, y1, x1)] += hy1 * wx1 * g;
                        }
                    }
                }
            }
        }
    }
    Ok(dx)
}
