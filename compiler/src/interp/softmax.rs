//! Softmax and log-softmax along one axis, and their gradients from the
//! output, each computed in f64 and rounded once.

use super::{OpResult, ensure, same_shape};
use crate::tensor::Tensor;

/// `(outer, len, inner)`: the tensor as `[outer, len, inner]` with `axis` in the middle.
fn around(shape: &[usize], axis: usize) -> Result<(usize, usize, usize), super::Fault> {
    ensure(axis < shape.len(), || format!("axis {axis} of a tensor of shape {shape:?}"))?;
    Ok((shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product()))
}

/// Every line along `axis`: the flat indices of its elements.
fn lines(outer: usize, len: usize, inner: usize) -> impl Iterator<Item = Vec<usize>> {
    (0..outer).flat_map(move |o| (0..inner).map(move |i| (0..len).map(|k| (o * len + k) * inner + i).collect()))
}

pub(super) fn softmax(x: &Tensor, axis: usize, log: bool, out: &[usize]) -> OpResult {
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    let (outer, len, inner) = around(&x.shape, axis)?;
    let mut y = Tensor::zeros(out);
    for line in lines(outer, len, inner) {
        let max = line.iter().map(|&e| x.data[e] as f64).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = line.iter().map(|&e| (x.data[e] as f64 - max).exp()).sum();
        for &e in &line {
            let shifted = x.data[e] as f64 - max;
            y.data[e] = if log { shifted - sum.ln() } else { shifted.exp() / sum } as f32;
        }
    }
    Ok(y)
}

/// `y * (dy - sum(dy * y))`, or `dy - e^y * sum(dy)` for log-softmax, `y` the output.
pub(super) fn softmax_grad(y: &Tensor, dy: &Tensor, axis: usize, log: bool, out: &[usize]) -> OpResult {
    same_shape(y, dy, "y and dy")?;
    ensure(out == y.shape, || format!("output shape {out:?} should be the output's {:?}", y.shape))?;
    let (outer, len, inner) = around(&y.shape, axis)?;
    let mut dx = Tensor::zeros(out);
    for line in lines(outer, len, inner) {
        let (yv, g) = (|e: usize| y.data[e] as f64, |e: usize| dy.data[e] as f64);
        if log {
            let sum: f64 = line.iter().map(|&e| g(e)).sum();
            for &e in &line {
                dx.data[e] = (g(e) - yv(e).exp() * sum) as f32;
            }
        } else {
            let dot: f64 = line.iter().map(|&e| g(e) * yv(e)).sum();
            for &e in &line {
                dx.data[e] = (yv(e) * (g(e) - dot)) as f32;
            }
        }
    }
    Ok(dx)
}
