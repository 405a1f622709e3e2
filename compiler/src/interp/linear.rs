//! Linear layers (every leading axis of the input is a row), their input
//! and weight gradients, and the bias gradient shared with convolutions.

use super::{Fault, OpResult, ensure};
use crate::tensor::Tensor;

/// Splits `shape` into `(rows, last)`: every leading axis is a row.
fn rows_cols(shape: &[usize], what: &str) -> Result<(usize, usize), Fault> {
    match shape.split_last() {
        Some((&cols, lead)) => Ok((lead.iter().product(), cols)),
        None => Err(Fault::Malformed(format!("{what} must have rank >= 1"))),
    }
}

/// `w` must be `[out, in]`.
fn matrix(w: &Tensor) -> Result<(usize, usize), Fault> {
    match *w.shape {
        [o, i] => Ok((o, i)),
        _ => Err(Fault::Malformed(format!("weight must be [out, in] but has shape {:?}", w.shape))),
    }
}

/// `y[r, o] = b[o] + sum_i x[r, i] * w[o, i]` (every leading axis of `x` is a row).
pub(super) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, out: &[usize]) -> OpResult {
    let (rows, fan_in) = rows_cols(&x.shape, "input")?;
    let (fan_out, w_in) = matrix(w)?;
    ensure(w_in == fan_in, || format!("weight expects {w_in} input features but the input has {fan_in}"))?;
    let mut expected = x.shape.clone();
    if let Some(last) = expected.last_mut() {
        *last = fan_out;
    }
    ensure(out == expected, || format!("output shape {out:?} should be {expected:?}"))?;
    if let Some(b) = b {
        ensure(b.shape == [fan_out], || format!("bias has shape {:?}, expected [{fan_out}]", b.shape))?;
    }
    let mut y = Tensor::zeros(out);
    for r in 0..rows {
        for o in 0..fan_out {
            let mut acc = 0.0f32;
            for i in 0..fan_in {
                acc += x.data[r * fan_in + i] * w.data[o * fan_in + i];
            }
            if let Some(b) = b {
                acc += b.data[o];
            }
            y.data[r * fan_out + o] = acc;
        }
    }
    Ok(y)
}

/// `dx[r, i] = sum_o dy[r, o] * w[o, i]`.
pub(super) fn linear_grad_input(dy: &Tensor, w: &Tensor, out: &[usize]) -> OpResult {
    let (rows, fan_out) = rows_cols(&dy.shape, "dy")?;
    let (w_out, fan_in) = matrix(w)?;
    ensure(w_out == fan_out, || format!("weight has {w_out} outputs but dy has {fan_out}"))?;
    let (out_rows, out_cols) = rows_cols(out, "output")?;
    ensure(out_rows == rows && out_cols == fan_in, || format!("output shape {out:?} does not fit dy {:?}", dy.shape))?;
    let mut dx = Tensor::zeros(out);
    for r in 0..rows {
        for i in 0..fan_in {
            let mut acc = 0.0f32;
            for o in 0..fan_out {
                acc += dy.data[r * fan_out + o] * w.data[o * fan_in + i];
            }
            dx.data[r * fan_in + i] = acc;
        }
    }
    Ok(dx)
}

/// `dw[o, i] = sum_r dy[r, o] * x[r, i]`.
pub(super) fn linear_grad_weight(x: &Tensor, dy: &Tensor, out: &[usize]) -> OpResult {
    let (rows, fan_in) = rows_cols(&x.shape, "input")?;
    let (dy_rows, fan_out) = rows_cols(&dy.shape, "dy")?;
    ensure(dy_rows == rows, || format!("input {:?} and dy {:?} have different rows", x.shape, dy.shape))?;
    ensure(out == [fan_out, fan_in], || format!("output shape {out:?} should be [{fan_out}, {fan_in}]"))?;
    let mut dw = Tensor::zeros(out);
    for o in 0..fan_out {
        for i in 0..fan_in {
            let mut acc = 0.0f32;
            for r in 0..rows {
                acc += dy.data[r * fan_out + o] * x.data[r * fan_in + i];
            }
            dw.data[o * fan_in + i] = acc;
        }
    }
    Ok(dw)
}

/// `db[k] = sum of dy over every axis but `axis``, scanning dy row-major.
pub(super) fn bias_grad(dy: &Tensor, axis: usize, out: &[usize]) -> OpResult {
    let Some(&len) = dy.shape.get(axis) else {
        return Err(Fault::Malformed(format!("axis {axis} is out of range for dy {:?}", dy.shape)));
    };
    ensure(out == [len], || format!("output shape {out:?} should be [{len}]"))?;
    let inner: usize = dy.shape[axis + 1..].iter().product();
    let mut db = Tensor::zeros(out);
    for (flat, &g) in dy.data.iter().enumerate() {
        db.data[(flat / inner.max(1)) % len.max(1)] += g;
    }
    Ok(db)
}
