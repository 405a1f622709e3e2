//! 2-D convolution and its input and weight gradients, as the textbook
//! seven-deep loop nests.

use super::window::{Nchw, Taps, check_window};
use super::{Fault, OpResult, ensure};
use crate::ops::Conv2d;
use crate::tensor::Tensor;

/// Checks `x` `[N, C, H, W]`, `w` `[O, C, kh, kw]` and `y` `[N, O, OH, OW]`.
fn check_conv(c: &Conv2d, x: Nchw, w: Nchw, y: Nchw) -> Result<(), Fault> {
    ensure(w.c == x.c, || format!("the weight expects {} input channels but the input has {}", w.c, x.c))?;
    ensure([w.h, w.w] == c.kernel, || format!("the weight's kernel is {}x{}, not {:?}", w.h, w.w, c.kernel))?;
    ensure(y.n == x.n && y.c == w.n, || {
        format!("output {:?} does not match input batch {} and {} output channels", y.dims(), x.n, w.n)
    })?;
    check_window(x, y, c.kernel, c.stride, c.padding, c.dilation)
}

/// `y[n, o, oy, ox] = b[o] + sum_{c, ky, kx} w[o, c, ky, kx] * x[n, c, src(oy, ky), src(ox, kx)]`.
pub(super) fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, c: &Conv2d, out: &[usize]) -> OpResult {
    let (xs, ws, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(&w.shape, "weight")?, Nchw::of(out, "output")?);
    check_conv(c, xs, ws, ys)?;
    let taps = Taps::conv(c, xs, ys);
    if let Some(b) = b {
        ensure(b.shape == [ws.n], || format!("bias has shape {:?}, expected [{}]", b.shape, ws.n))?;
    }
    let mut y = Tensor::zeros(out);
    for n in 0..ys.n {
        for o in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let mut acc = 0.0f32;
                    for ci in 0..ws.c {
                        for ky in 0..ws.h {
                            for kx in 0..ws.w {
                                if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                    acc += w.data[ws.at(o, ci, ky, kx)] * x.data[xs.at(n, ci, iy, ix)];
                                }
                            }
                        }
                    }
                    if let Some(b) = b {
                        acc += b.data[o];
                    }
                    y.data[ys.at(n, o, oy, ox)] = acc;
                }
            }
        }
    }
    Ok(y)
}

/// The adjoint of [`conv2d`] in `x`: every tap scatters `dy * w` back to the
/// pixel it read (with replicate padding, to the clamped border pixel).
pub(super) fn conv2d_grad_input(dy: &Tensor, w: &Tensor, c: &Conv2d, out: &[usize]) -> OpResult {
    let (ys, ws, xs) = (Nchw::of(&dy.shape, "dy")?, Nchw::of(&w.shape, "weight")?, Nchw::of(out, "output")?);
    check_conv(c, xs, ws, ys)?;
    let taps = Taps::conv(c, xs, ys);
    let mut dx = Tensor::zeros(out);
    for n in 0..ys.n {
        for o in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let g = dy.data[ys.at(n, o, oy, ox)];
                    for ci in 0..ws.c {
                        for ky in 0..ws.h {
                            for kx in 0..ws.w {
                                if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                    dx.data[xs.at(n, ci, iy, ix)] += g * w.data[ws.at(o, ci, ky, kx)];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(dx)
}

/// `dw[o, c, ky, kx] = sum_{n, oy, ox} dy[n, o, oy, ox] * x[n, c, src(oy, ky), src(ox, kx)]`.
pub(super) fn conv2d_grad_weight(x: &Tensor, dy: &Tensor, c: &Conv2d, out: &[usize]) -> OpResult {
    let (xs, ys, ws) = (Nchw::of(&x.shape, "input")?, Nchw::of(&dy.shape, "dy")?, Nchw::of(out, "output")?);
    check_conv(c, xs, ws, ys)?;
    let taps = Taps::conv(c, xs, ys);
    let mut dw = Tensor::zeros(out);
    for o in 0..ws.n {
        for ci in 0..ws.c {
            for ky in 0..ws.h {
                for kx in 0..ws.w {
                    let mut acc = 0.0f32;
                    for n in 0..ys.n {
                        for oy in 0..ys.h {
                            for ox in 0..ys.w {
                                if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                    acc += dy.data[ys.at(n, o, oy, ox)] * x.data[xs.at(n, ci, iy, ix)];
                                }
                            }
                        }
                    }
                    dw.data[ws.at(o, ci, ky, kx)] = acc;
                }
            }
        }
    }
    Ok(dw)
}
