//! The SGD optimizer's update ops: the momentum buffer and the parameter
//! step, with PyTorch's weight decay, dampening 0 and Nesterov rules.

use super::{OpResult, ensure, same_shape};
use crate::ops::Sgd;
use crate::tensor::Tensor;

/// PyTorch's `g + weight_decay * p` (the decay term only when it is non-zero).
fn decayed_grad(p: f32, g: f32, sgd: &Sgd) -> f32 {
    if sgd.weight_decay != 0.0 { g + sgd.weight_decay * p } else { g }
}

/// The new momentum buffer `momentum * buf + (g + wd * p)` (dampening 0; with
/// a zero buffer this is PyTorch's first-step `buf = g`).
pub(super) fn sgd_momentum(p: &Tensor, g: &Tensor, buf: &Tensor, sgd: &Sgd, out: &[usize]) -> OpResult {
    same_shape(p, g, "parameter and gradient")?;
    same_shape(p, buf, "parameter and buffer")?;
    ensure(out == p.shape, || format!("output shape {out:?} should be the parameter's {:?}", p.shape))?;
    let data = (0..p.numel()).map(|i| sgd.momentum * buf.data[i] + decayed_grad(p.data[i], g.data[i], sgd)).collect();
    Ok(Tensor { shape: out.to_vec(), data })
}

/// The updated parameter `p - lr * d`. Without a buffer operand `d = g + wd*p`;
/// with the new buffer as third operand `d = new_buf`, or for Nesterov
/// `d = (g + wd*p) + momentum * new_buf`.
pub(super) fn sgd_step(
    p: &Tensor,
    g: &Tensor,
    new_buf: Option<&Tensor>,
    lr: &Tensor,
    sgd: &Sgd,
    out: &[usize],
) -> OpResult {
    same_shape(p, g, "parameter and gradient")?;
    ensure(lr.data.len() == 1, || format!("the learning rate is a scalar, not {:?}", lr.shape))?;
    let lr = lr.data[0];
    if let Some(buf) = new_buf {
        same_shape(p, buf, "parameter and buffer")?;
    }
    ensure(out == p.shape, || format!("output shape {out:?} should be the parameter's {:?}", p.shape))?;
    let data = (0..p.numel())
        .map(|i| {
            let d = decayed_grad(p.data[i], g.data[i], sgd);
            let d = match new_buf {
                None => d,
                Some(buf) if sgd.nesterov => d + sgd.momentum * buf.data[i],
                Some(buf) => buf.data[i],
            };
            p.data[i] - lr * d
        })
        .collect();
    Ok(Tensor { shape: out.to_vec(), data })
}
