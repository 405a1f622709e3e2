//! Losses: the batch-mean value and its gradient for cross entropy, mean
//! squared error and the perceptron criterion, accumulated in f64.

use super::{Fault, OpResult, ensure, same_shape};
use crate::ops::Loss;
use crate::tensor::Tensor;

/// The class index of every label, checking it is an integer in `0..classes`.
fn class_labels(labels: &Tensor, rows: usize, classes: usize) -> Result<Vec<usize>, Fault> {
    ensure(labels.shape == [rows], || format!("labels have shape {:?}, expected [{rows}]", labels.shape))?;
    labels
        .data
        .iter()
        .enumerate()
        .map(|(position, &value)| {
            if value >= 0.0 && value.fract() == 0.0 && (value as usize) < classes {
                Ok(value as usize)
            } else {
                Err(Fault::Label { position, value, classes })
            }
        })
        .collect()
}

fn logits_shape(pred: &Tensor) -> Result<(usize, usize), Fault> {
    match *pred.shape {
        [n, c] => Ok((n, c)),
        _ => Err(Fault::Malformed(format!("cross-entropy needs logits [N, C], got {:?}", pred.shape))),
    }
}

/// `log(sum_j exp(z_j))` of one row, in f64, shifted by the maximum.
fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z as f64));
    if m.is_infinite() {
        return m;
    }
    m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln()
}

/// The mean loss over the batch (f64 accumulation).
pub(super) fn loss_value(pred: &Tensor, target: &Tensor, loss: Loss, out: &[usize]) -> OpResult {
    ensure(out.is_empty(), || format!("a loss is a scalar, not {out:?}"))?;
    let value = match loss {
        Loss::CrossEntropy | Loss::SmoothedCrossEntropy(_) => {
            let s = loss.label_smoothing().unwrap_or(0.0) as f64;
            let (rows, classes) = logits_shape(pred)?;
            let labels = class_labels(target, rows, classes)?;
            let mut total = 0.0f64;
            for (r, &label) in labels.iter().enumerate() {
                let row = &pred.data[r * classes..(r + 1) * classes];
                // -sum_c q_c log p_c for q = (1 - s) onehot + s / C.
                let mean: f64 = row.iter().map(|&z| z as f64).sum::<f64>() / classes as f64;
                total += log_sum_exp(row) - (1.0 - s) * row[label] as f64 - s * mean;
            }
            total / rows as f64
        }
        Loss::Mse => {
            same_shape(pred, target, "prediction and target")?;
            let sum: f64 = pred.data.iter().zip(&target.data).map(|(&p, &t)| (p as f64 - t as f64).powi(2)).sum();
            sum / pred.numel() as f64
        }
        Loss::Perceptron => {
            same_shape(pred, target, "scores and labels")?;
            let sum: f64 = pred.data.iter().zip(&target.data).map(|(&s, &y)| (-(y as f64) * s as f64).max(0.0)).sum();
            sum / pred.numel() as f64
        }
    };
    Ok(Tensor::scalar(value as f32))
}

/// d(mean loss)/d(prediction), computed in f64 and rounded once.
pub(super) fn loss_grad(pred: &Tensor, target: &Tensor, loss: Loss, out: &[usize]) -> OpResult {
    ensure(out == pred.shape, || format!("output shape {out:?} should be the prediction's {:?}", pred.shape))?;
    let mut grad = Tensor::zeros(out);
    match loss {
        Loss::CrossEntropy | Loss::SmoothedCrossEntropy(_) => {
            let s = loss.label_smoothing().unwrap_or(0.0) as f64;
            let (rows, classes) = logits_shape(pred)?;
            let labels = class_labels(target, rows, classes)?;
            for (r, &label) in labels.iter().enumerate() {
                let row = &pred.data[r * classes..(r + 1) * classes];
                let lse = log_sum_exp(row);
                for (j, &z) in row.iter().enumerate() {
                    let softmax = (z as f64 - lse).exp();
                    let onehot = if j == label { 1.0 } else { 0.0 };
                    let q = (1.0 - s) * onehot + s / classes as f64;
                    grad.data[r * classes + j] = ((softmax - q) / rows as f64) as f32;
                }
            }
        }
        Loss::Mse => {
            same_shape(pred, target, "prediction and target")?;
            let count = pred.numel() as f64;
            for (g, (&p, &t)) in grad.data.iter_mut().zip(pred.data.iter().zip(&target.data)) {
                *g = (2.0 * (p as f64 - t as f64) / count) as f32;
            }
        }
        Loss::Perceptron => {
            same_shape(pred, target, "scores and labels")?;
            let count = pred.numel() as f64;
            for (g, (&s, &y)) in grad.data.iter_mut().zip(pred.data.iter().zip(&target.data)) {
                // max(0, -y*s) has slope -y where -y*s > 0 and 0 elsewhere (also at the kink).
                *g = if -(y as f64) * (s as f64) > 0.0 { (-(y as f64) / count) as f32 } else { 0.0 };
            }
        }
    }
    Ok(grad)
}
