//! Ops that only move elements: reshape, concatenation and slicing.

use super::{OpResult, ensure};
use crate::tensor::Tensor;

pub(super) fn reshape(x: &Tensor, out: &[usize]) -> OpResult {
    let numel: usize = out.iter().product();
    ensure(numel == x.numel(), || format!("cannot reshape {:?} ({} elements) to {out:?}", x.shape, x.numel()))?;
    Ok(Tensor { shape: out.to_vec(), data: x.data.clone() })
}

/// Joins the operands along `axis`: for each index of the axes before
/// `axis`, the operands' blocks one after another.
pub(super) fn concat(args: &[&Tensor], axis: usize, out: &[usize]) -> OpResult {
    ensure(axis < out.len(), || format!("axis {axis} is out of range for output {out:?}"))?;
    let mut total = 0;
    for t in args {
        let fits =
            t.shape.len() == out.len() && t.shape.iter().zip(out).enumerate().all(|(k, (a, b))| k == axis || a == b);
        ensure(fits, || format!("operand {:?} does not fit output {out:?} along axis {axis}", t.shape))?;
        total += t.shape[axis];
    }
    ensure(total == out[axis], || format!("operands sum to {total} along axis {axis}, not {}", out[axis]))?;
    let outer: usize = out[..axis].iter().product();
    let inner: usize = out[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(out.iter().product());
    for o in 0..outer {
        for t in args {
            let block = t.shape[axis] * inner;
            data.extend_from_slice(&t.data[o * block..(o + 1) * block]);
        }
    }
    Ok(Tensor { shape: out.to_vec(), data })
}

/// The elements `start..start + out[axis]` along `axis`.
pub(super) fn slice(x: &Tensor, axis: usize, start: usize, out: &[usize]) -> OpResult {
    let fits = axis < out.len()
        && x.shape.len() == out.len()
        && x.shape.iter().zip(out).enumerate().all(|(k, (a, b))| k == axis || a == b)
        && start + out[axis] <= x.shape[axis];
    ensure(fits, || format!("cannot take {out:?} from {:?} at {start} along axis {axis}", x.shape))?;
    let outer: usize = out[..axis].iter().product();
    let inner: usize = out[axis + 1..].iter().product();
    let (len, in_len) = (out[axis], x.shape[axis]);
    let mut data = Vec::with_capacity(out.iter().product());
    for o in 0..outer {
        let from = (o * in_len + start) * inner;
        data.extend_from_slice(&x.data[from..from + len * inner]);
    }
    Ok(Tensor { shape: out.to_vec(), data })
}
