//! Batch normalisation over axis 1: the batch's statistics, the
//! normalisation (evaluation and training modes share it), its gradients and
//! the running-statistic update, in f64 and rounded once.

use super::{Fault, OpResult, ensure, same_shape};
use crate::tensor::Tensor;

/// `(outer, channels, inner)`: `x` as `[N, C, rest]`.
fn channels(x: &Tensor) -> Result<(usize, usize, usize), Fault> {
    ensure(x.shape.len() >= 2, || format!("batch normalisation needs [N, C, ..], got {:?}", x.shape))?;
    Ok((x.shape[0], x.shape[1], x.shape[2..].iter().product()))
}

fn per_channel(t: &Tensor, c: usize, what: &str) -> Result<(), Fault> {
    ensure(t.shape == [c], || format!("{what} should be [{c}], got {:?}", t.shape))
}

/// Calls `f(channel, flat index)` for every element of `[outer, c, inner]`.
fn each(outer: usize, c: usize, inner: usize, mut f: impl FnMut(usize, usize)) {
    for n in 0..outer {
        for ch in 0..c {
            for i in 0..inner {
                f(ch, (n * c + ch) * inner + i);
            }
        }
    }
}

pub(super) fn batch_mean(x: &Tensor, out: &[usize]) -> OpResult {
    let (outer, c, inner) = channels(x)?;
    ensure(out == [c], || format!("output shape {out:?} should be [{c}]"))?;
    let mut sum = vec![0.0f64; c];
    each(outer, c, inner, |ch, e| sum[ch] += x.data[e] as f64);
    let count = (outer * inner) as f64;
    Ok(Tensor { shape: vec![c], data: sum.iter().map(|s| (s / count) as f32).collect() })
}

pub(super) fn batch_var(x: &Tensor, mean: &Tensor, out: &[usize]) -> OpResult {
    let (outer, c, inner) = channels(x)?;
    per_channel(mean, c, "the mean")?;
    ensure(out == [c], || format!("output shape {out:?} should be [{c}]"))?;
    let mut sum = vec![0.0f64; c];
    each(outer, c, inner, |ch, e| sum[ch] += (x.data[e] as f64 - mean.data[ch] as f64).powi(2));
    let count = (outer * inner) as f64;
    Ok(Tensor { shape: vec![c], data: sum.iter().map(|s| (s / count) as f32).collect() })
}

/// `1 / sqrt(var + eps)` per channel.
fn inverse_std(var: &Tensor, eps: f32) -> Vec<f64> {
    var.data.iter().map(|&v| 1.0 / (v as f64 + eps as f64).sqrt()).collect()
}

/// `(x - mean) / sqrt(var + eps) * weight + bias`; `args` is `[x, mean, var]`
/// or `[x, mean, var, weight, bias]`.
pub(super) fn batch_norm(args: &[&Tensor], eps: f32, out: &[usize]) -> OpResult {
    let (x, mean, var, affine) = match *args {
        [x, m, v] => (x, m, v, None),
        [x, m, v, w, b] => (x, m, v, Some((w, b))),
        _ => return Err(Fault::Malformed(format!("expects 3 or 5 operands but has {}", args.len()))),
    };
    let (outer, c, inner) = channels(x)?;
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    for (t, what) in [(mean, "the mean"), (var, "the variance")] {
        per_channel(t, c, what)?;
    }
    if let Some((w, b)) = affine {
        per_channel(w, c, "the weight")?;
        per_channel(b, c, "the bias")?;
    }
    let r = inverse_std(var, eps);
    let mut y = Tensor::zeros(out);
    each(outer, c, inner, |ch, e| {
        let xhat = (x.data[e] as f64 - mean.data[ch] as f64) * r[ch];
        y.data[e] = match affine {
            Some((w, b)) => xhat * w.data[ch] as f64 + b.data[ch] as f64,
            None => xhat,
        } as f32;
    });
    Ok(y)
}

/// `sum(dy * (x - mean) / sqrt(var + eps))` per channel.
pub(super) fn batch_norm_grad_weight(args: &[&Tensor], eps: f32, out: &[usize]) -> OpResult {
    let [x, mean, var, dy] = *args else {
        return Err(Fault::Malformed(format!("expects 4 operands but has {}", args.len())));
    };
    same_shape(x, dy, "x and dy")?;
    let (outer, c, inner) = channels(x)?;
    ensure(out == [c], || format!("output shape {out:?} should be [{c}]"))?;
    let r = inverse_std(var, eps);
    let mut sum = vec![0.0f64; c];
    each(outer, c, inner, |ch, e| sum[ch] += dy.data[e] as f64 * (x.data[e] as f64 - mean.data[ch] as f64));
    Ok(Tensor { shape: vec![c], data: sum.iter().zip(&r).map(|(s, r)| (s * r) as f32).collect() })
}

/// dx: in training mode `(dy - sum_dy / M - xhat * sum_dy_xhat / M) * w / std`
/// (the batch statistics' own gradients folded in), else `dy * w / std`.
pub(super) fn batch_norm_grad_input(args: &[&Tensor], eps: f32, training: bool, out: &[usize]) -> OpResult {
    let (x, mean, var, dy, sum_dy, sum_dy_xhat, weight) = match *args {
        [x, m, v, dy, s1, s2] => (x, m, v, dy, s1, s2, None),
        [x, m, v, dy, s1, s2, w] => (x, m, v, dy, s1, s2, Some(w)),
        _ => return Err(Fault::Malformed(format!("expects 6 or 7 operands but has {}", args.len()))),
    };
    same_shape(x, dy, "x and dy")?;
    let (outer, c, inner) = channels(x)?;
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    let r = inverse_std(var, eps);
    let count = (outer * inner) as f64;
    let mut dx = Tensor::zeros(out);
    each(outer, c, inner, |ch, e| {
        let scale = r[ch] * weight.map_or(1.0, |w| w.data[ch] as f64);
        let g = dy.data[e] as f64;
        let g = if training {
            let xhat = (x.data[e] as f64 - mean.data[ch] as f64) * r[ch];
            g - sum_dy.data[ch] as f64 / count - xhat * sum_dy_xhat.data[ch] as f64 / count
        } else {
            g
        };
        dx.data[e] = (g * scale) as f32;
    });
    Ok(dx)
}

/// `(1 - momentum) * running + momentum * batch * M / (M - 1)` (or without
/// the factor when `count` is `None`).
pub(super) fn running_stat(
    running: &Tensor,
    stat: &Tensor,
    momentum: f32,
    count: Option<usize>,
    out: &[usize],
) -> OpResult {
    same_shape(running, stat, "running and batch statistics")?;
    ensure(out == running.shape, || format!("output shape {out:?} should be {:?}", running.shape))?;
    let factor = match count {
        Some(m) if m > 1 => m as f64 / (m - 1) as f64,
        Some(m) => {
            return Err(Fault::Malformed(format!(
                "an unbiased variance needs more than one value per channel, got {m}"
            )));
        }
        None => 1.0,
    };
    let m = momentum as f64;
    let data = running
        .data
        .iter()
        .zip(&stat.data)
        .map(|(&r, &s)| ((1.0 - m) * r as f64 + m * s as f64 * factor) as f32)
        .collect();
    Ok(Tensor { shape: out.to_vec(), data })
}
