//! Elementwise ops: activations and their derivatives, broadcasting
//! binary arithmetic, negation, and `SumTo` (the adjoint of a broadcast).

use super::{Fault, OpResult, ensure, same_shape};
use crate::ops::{Activation, BinaryOp};
use crate::tensor::Tensor;

pub(super) fn activate(x: &Tensor, a: Activation, out: &[usize]) -> OpResult {
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    Ok(Tensor { shape: out.to_vec(), data: x.data.iter().map(|&v| a.apply(v)).collect() })
}

/// `f'(x) * dy`.
pub(super) fn activate_grad(x: &Tensor, dy: &Tensor, a: Activation, out: &[usize]) -> OpResult {
    same_shape(x, dy, "x and dy")?;
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    let data = x.data.iter().zip(&dy.data).map(|(&v, &g)| a.derivative(v) * g).collect();
    Ok(Tensor { shape: out.to_vec(), data })
}

/// For every element of a tensor of shape `big` (row-major), the flat index
/// of the element of a tensor of shape `small` that NumPy broadcasting
/// (right-aligned, length-1 axes stretched) pairs with it.
fn broadcast_sources(small: &[usize], big: &[usize]) -> Result<Vec<usize>, Fault> {
    let bad = || Fault::Malformed(format!("shape {small:?} does not broadcast to {big:?}"));
    if small.len() > big.len() {
        return Err(bad());
    }
    let lead = big.len() - small.len();
    // Stride of each axis of `big` into `small` (0 where `small` is stretched).
    let mut strides = vec![0usize; big.len()];
    let mut stride = 1;
    for k in (0..small.len()).rev() {
        let (s, b) = (small[k], big[lead + k]);
        if s == b {
            strides[lead + k] = stride;
        } else if s != 1 {
            return Err(bad());
        }
        stride *= s;
    }
    let total: usize = big.iter().product();
    let mut sources = Vec::with_capacity(total);
    let mut index = vec![0usize; big.len()];
    for _ in 0..total {
        sources.push(index.iter().zip(&strides).map(|(i, s)| i * s).sum());
        // Advance the row-major multi-index.
        for k in (0..big.len()).rev() {
            index[k] += 1;
            if index[k] < big[k] {
                break;
            }
            index[k] = 0;
        }
    }
    Ok(sources)
}

/// `a op b` with both operands broadcast to the node's shape.
pub(super) fn binary(a: &Tensor, b: &Tensor, op: BinaryOp, out: &[usize]) -> OpResult {
    let ia = broadcast_sources(&a.shape, out)?;
    let ib = broadcast_sources(&b.shape, out)?;
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            let (u, v) = (a.data[i], b.data[j]);
            match op {
                BinaryOp::Add => u + v,
                BinaryOp::Sub => u - v,
                BinaryOp::Mul => u * v,
            }
        })
        .collect();
    Ok(Tensor { shape: out.to_vec(), data })
}

pub(super) fn neg(x: &Tensor, out: &[usize]) -> OpResult {
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    Ok(Tensor { shape: out.to_vec(), data: x.data.iter().map(|&v| -v).collect() })
}

/// Sums `x` over the axes along which the node's shape broadcasts to it,
/// scanning `x` row-major.
pub(super) fn sum_to(x: &Tensor, out: &[usize]) -> OpResult {
    let sources = broadcast_sources(out, &x.shape)?;
    let mut y = Tensor::zeros(out);
    for (&to, &v) in sources.iter().zip(&x.data) {
        y.data[to] += v;
    }
    Ok(y)
}
