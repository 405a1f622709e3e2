//! The optimizers' update ops: SGD's momentum buffer and parameter step
//! (PyTorch's weight decay, dampening 0 and Nesterov rules), and Adam's and
//! AdamW's two moments and step, in `f32` in PyTorch's order of operations.

use super::{Fault, OpResult, ensure, same_shape};
use crate::ops::{Adam, Sgd};
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

/// Adam's gradient: with L2 weight decay (not AdamW's) `g + wd * p`.
fn adam_grad(p: f32, g: f32, a: &Adam) -> f32 {
    if a.weight_decay != 0.0 && !a.decoupled { g + a.weight_decay * p } else { g }
}

/// PyTorch's `lerp(start, end, weight)`, exact in both halves of the weight.
pub(crate) fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight < 0.5 { start + weight * (end - start) } else { end - (end - start) * (1.0 - weight) }
}

/// The first moment `lerp(m, g', 1 - beta1)` or the second
/// `beta2 * v + (1 - beta2) * g'^2`.
pub(super) fn adam_moment(p: &Tensor, g: &Tensor, state: &Tensor, a: &Adam, second: bool, out: &[usize]) -> OpResult {
    same_shape(p, g, "parameter and gradient")?;
    same_shape(p, state, "parameter and moment")?;
    ensure(out == p.shape, || format!("output shape {out:?} should be the parameter's {:?}", p.shape))?;
    let data = (0..p.numel())
        .map(|i| {
            let g = adam_grad(p.data[i], g.data[i], a);
            let s = state.data[i];
            if second { s * a.beta2 + (1.0 - a.beta2) * (g * g) } else { lerp(s, g, 1.0 - a.beta1) }
        })
        .collect();
    Ok(Tensor { shape: out.to_vec(), data })
}

/// `[p, m, v, lr, step_size, bc2_sqrt]`: AdamW's decay, then
/// `p - step_size * m / (sqrt(v) / bc2_sqrt + eps)`.
pub(super) fn adam_step(args: &[&Tensor], a: &Adam, out: &[usize]) -> OpResult {
    let [p, m, v, lr, step_size, bc2_sqrt] = *args else {
        return Err(Fault::Malformed(format!("expects 6 operands but has {}", args.len())));
    };
    same_shape(p, m, "parameter and first moment")?;
    same_shape(p, v, "parameter and second moment")?;
    ensure(out == p.shape, || format!("output shape {out:?} should be the parameter's {:?}", p.shape))?;
    let scalar = |t: &Tensor, what: &str| {
        ensure(t.data.len() == 1, || format!("{what} is a scalar, not {:?}", t.shape)).map(|_| t.data[0])
    };
    let (lr, step_size, bc2_sqrt) = (scalar(lr, "lr")?, scalar(step_size, "step_size")?, scalar(bc2_sqrt, "bc2_sqrt")?);
    let decay = if a.decoupled { 1.0 - lr * a.weight_decay } else { 1.0 };
    let data = (0..p.numel())
        .map(|i| {
            let denom = v.data[i].sqrt() / bc2_sqrt + a.eps;
            p.data[i] * decay - step_size * (m.data[i] / denom)
        })
        .collect();
    Ok(Tensor { shape: out.to_vec(), data })
}

/// PyTorch's `clip_grad_norm_` factor from the sum of the gradients'
/// squares: `min(1, max_norm / (sqrt(sum) + 1e-6))`, in f32.
pub(super) fn clip_factor(sum: &Tensor, max_norm: f32, out: &[usize]) -> OpResult {
    ensure(sum.data.len() == 1 && out.is_empty(), || format!("a clip factor is a scalar, not {:?}", sum.shape))?;
    let factor = max_norm / (sum.data[0].sqrt() + 1e-6);
    // `clamp(max = 1)`: a NaN norm stays NaN.
    Ok(Tensor::scalar(if factor >= 1.0 { 1.0 } else { factor }))
}
