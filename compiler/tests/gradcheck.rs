//! Finite-difference gradient checks of autodiff + the reference interpreter,
//! SGD against hand-derived recurrences, and (when the shared reference files
//! are present) the lecture's LeNet against PyTorch.
//!
//! Every check builds a tiny "inputs -> op(s) -> loss" graph with
//! [`Graph::add`], derives its training graph, evaluates it with the
//! interpreter, and compares each parameter and input gradient with central
//! differences `(L(x + h) - L(x - h)) / 2h` of the forward graph.
//!
//! Precision. The forward pass is f32, but the loss of the finite
//! differences is recomputed in f64 from the f32 output (checked against the
//! interpreter's own loss node), so the last rounding of a scalar loss does
//! not limit us. Between the two evaluations only the outputs that read the
//! perturbed element change, so the f32 noise in `L(x+h) - L(x-h)` is about
//! `1e-7 * |L_affected|`, i.e. `~5e-6` after dividing by `2h = 2e-2`, against
//! gradients of `1e-2 .. 1`. Truncation error is `h^2 f''' / 6 ~ 2e-5` for
//! the smooth activations and losses and zero for ops that are linear in the
//! perturbed value (conv, linear, pooling, resize, layout ops) under the
//! quadratic MSE loss. The tolerance is therefore `2e-3 * max|grad|` per
//! tensor (plus `1e-5` absolute for all-zero gradients): 10x the expected
//! noise, while a wrong index or a missing term errs by O(max|grad|).
//! Kinks (ReLU, max-pool ties, the perceptron's hinge) are kept more than
//! `h` away by construction of the inputs.

use std::collections::HashMap;
use std::path::Path;

use kiln_compiler::autodiff::{derive_training, derive_training_in};
use kiln_compiler::graph::{Graph, NodeId, Stage};
use kiln_compiler::interp::{self, evaluate};
use kiln_compiler::mode::{Mode, training_mode};
use kiln_compiler::ops::{
    Activation, BatchNorm, BinaryOp, Conv2d, GeluForm, Init, Loss, Op, PaddingMode, Pool2d, Resize, ResizeMode, Sgd,
};
use kiln_compiler::shape::{Dim, Shape, window_output_len};
use kiln_compiler::tensor::Tensor;

/// Batch size of every check.
const BATCH: usize = 2;

/// A small deterministic generator (64-bit LCG, top bits).
struct Rng(u64);

impl Rng {
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }

    /// Uniform in `[-1, 1)`.
    fn symmetric(&mut self) -> f32 {
        2.0 * self.unit() - 1.0
    }

    /// `±[0.1, 1)`: away from 0 by more than any `h` used here.
    fn away_from_zero(&mut self) -> f32 {
        let m = 0.1 + 0.9 * self.unit();
        if self.unit() < 0.5 { -m } else { m }
    }

    /// A permutation of `0..n`.
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = ((self.unit() * (i + 1) as f32) as usize).min(i);
            p.swap(i, j);
        }
        p
    }
}

/// How leaf values are drawn.
#[derive(Clone, Copy)]
enum Fill {
    /// Uniform in `[-1, 1)`.
    Uniform,
    /// `±[0.1, 1)`.
    AwayFromZero,
    /// Distinct values `2k / n - 1` in random order, spaced `2/n` apart (max-pool).
    Distinct,
}

/// A forward graph under construction, with values for its leaves.
struct Net {
    g: Graph,
    feeds: HashMap<NodeId, Tensor>,
    rng: Rng,
}

fn batched(dims: &[usize]) -> Shape {
    let mut v = vec![Dim::batch()];
    v.extend(dims.iter().map(|&d| Dim::fixed(d)));
    Shape(v)
}

impl Net {
    fn new(seed: u64) -> Net {
        Net { g: Graph::new("check"), feeds: HashMap::new(), rng: Rng(seed) }
    }

    fn shape(&self, id: NodeId) -> Shape {
        self.g.node(id).shape.clone()
    }

    fn values(&mut self, shape: &Shape, fill: Fill) -> Tensor {
        let dims = shape.at_batch(BATCH);
        let n: usize = dims.iter().product();
        let data = match fill {
            Fill::Uniform => (0..n).map(|_| self.rng.symmetric()).collect(),
            Fill::AwayFromZero => (0..n).map(|_| self.rng.away_from_zero()).collect(),
            Fill::Distinct => self.rng.permutation(n).into_iter().map(|k| 2.0 * k as f32 / n as f32 - 1.0).collect(),
        };
        Tensor::new(dims, data).expect("consistent")
    }

    /// An input `[N, dims...]`.
    fn input(&mut self, name: &str, dims: &[usize], fill: Fill) -> NodeId {
        let shape = batched(dims);
        let value = self.values(&shape, fill);
        let id = self.g.add(name, Op::Input, shape, vec![], Stage::Forward);
        self.g.inputs.push(id);
        self.feeds.insert(id, value);
        id
    }

    /// A parameter of fixed shape.
    fn param(&mut self, name: &str, dims: &[usize]) -> NodeId {
        let shape = Shape::fixed(dims);
        let value = self.values(&shape, Fill::Uniform);
        let id = self.g.add(name, Op::param(1), shape, vec![], Stage::Forward);
        self.g.params.push(id);
        self.feeds.insert(id, value);
        id
    }

    fn node(&mut self, name: &str, op: Op, shape: Shape, inputs: Vec<NodeId>) -> NodeId {
        self.g.add(name, op, shape, inputs, Stage::Forward)
    }

    /// A state_dict leaf of shape `[c]` (a parameter or a buffer) with `value`.
    fn channel_leaf(&mut self, name: &str, op: Op, value: Vec<f32>) -> NodeId {
        let id = self.g.add(name, op, Shape::fixed(&[value.len()]), vec![], Stage::Forward);
        self.g.params.push(id);
        self.feeds.insert(id, Tensor::new(vec![value.len()], value).expect("consistent"));
        id
    }

    /// Evaluation-mode batch normalisation of axis 1 with running statistics
    /// (and a weight and bias when `affine`) away from their initial values.
    fn batch_norm(&mut self, name: &str, x: NodeId, affine: bool) -> NodeId {
        let c = self.shape(x).0[1].factor;
        let mean: Vec<f32> = (0..c).map(|_| 0.5 * self.rng.symmetric()).collect();
        let var: Vec<f32> = (0..c).map(|_| 0.5 + self.rng.unit()).collect();
        let rm = self.channel_leaf(&format!("{name}.running_mean"), Op::Buffer { fill: 0.0 }, mean);
        let rv = self.channel_leaf(&format!("{name}.running_var"), Op::Buffer { fill: 1.0 }, var);
        let mut inputs = vec![x, rm, rv];
        if affine {
            let w: Vec<f32> = (0..c).map(|_| 1.0 + 0.5 * self.rng.symmetric()).collect();
            let b: Vec<f32> = (0..c).map(|_| self.rng.symmetric()).collect();
            inputs.push(self.channel_leaf(&format!("{name}.weight"), Op::Param { init: Init::Fill(1.0) }, w));
            inputs.push(self.channel_leaf(&format!("{name}.bias"), Op::Param { init: Init::Fill(0.0) }, b));
        }
        let shape = self.shape(x);
        self.node(name, Op::BatchNorm(BatchNorm { eps: 1e-5, momentum: 0.1 }), shape, inputs)
    }

    /// The net rewritten to training mode (batch statistics), its feeds
    /// carried over by name.
    fn in_training_mode(self) -> Net {
        let g = training_mode(&self.g);
        let feeds =
            self.feeds.iter().map(|(&id, t)| (g.find(&self.g.node(id).name).expect("kept"), t.clone())).collect();
        Net { g, feeds, rng: self.rng }
    }

    /// `[N, C, H, W]` -> `[N, C', H', W']` for a sliding window.
    fn window_shape(
        &self,
        x: NodeId,
        channels: Dim,
        k: [usize; 2],
        s: [usize; 2],
        p: [usize; 2],
        d: [usize; 2],
    ) -> Shape {
        let xs = self.shape(x);
        let h = window_output_len(xs.0[2].factor, k[0], s[0], p[0], d[0]).expect("window fits");
        let w = window_output_len(xs.0[3].factor, k[1], s[1], p[1], d[1]).expect("window fits");
        Shape(vec![xs.0[0], channels, Dim::fixed(h), Dim::fixed(w)])
    }

    /// A conv layer `name` with parameters `name.weight` (and `name.bias`).
    fn conv(&mut self, name: &str, x: NodeId, out_c: usize, c: Conv2d, bias: bool) -> NodeId {
        let in_c = self.shape(x).0[1].factor;
        let w = self.param(&format!("{name}.weight"), &[out_c, in_c, c.kernel[0], c.kernel[1]]);
        let mut ins = vec![x, w];
        if bias {
            ins.push(self.param(&format!("{name}.bias"), &[out_c]));
        }
        let shape = self.window_shape(x, Dim::fixed(out_c), c.kernel, c.stride, c.padding, c.dilation);
        self.node(name, Op::Conv2d(c), shape, ins)
    }

    /// A linear layer `name` with parameters `name.weight` (and `name.bias`).
    fn linear(&mut self, name: &str, x: NodeId, out_f: usize, bias: bool) -> NodeId {
        let w_in = self.shape(x).0.last().expect("rank >= 1").factor;
        let w = self.param(&format!("{name}.weight"), &[out_f, w_in]);
        let b = bias.then(|| self.param(&format!("{name}.bias"), &[out_f]));
        self.apply_linear(name, x, w, b)
    }

    /// Applies existing linear parameters (a layer called again).
    fn apply_linear(&mut self, name: &str, x: NodeId, w: NodeId, b: Option<NodeId>) -> NodeId {
        let mut shape = self.shape(x);
        let out_f = self.shape(w).0[0];
        if let Some(last) = shape.0.last_mut() {
            *last = out_f;
        }
        let mut ins = vec![x, w];
        ins.extend(b);
        self.node(name, Op::Linear, shape, ins)
    }

    fn pool(&mut self, name: &str, x: NodeId, p: Pool2d, max: bool) -> NodeId {
        let c = self.shape(x).0[1];
        let shape = self.window_shape(x, c, p.kernel, p.stride, p.padding, p.dilation);
        let op = if max { Op::MaxPool2d(p) } else { Op::AvgPool2d(p) };
        self.node(name, op, shape, vec![x])
    }

    fn resize(&mut self, name: &str, x: NodeId, r: Resize) -> NodeId {
        let mut shape = self.shape(x);
        shape.0[2] = Dim::fixed(r.size[0]);
        shape.0[3] = Dim::fixed(r.size[1]);
        self.node(name, Op::Resize(r), shape, vec![x])
    }

    /// An op whose output has its (first) operand's shape.
    fn unary(&mut self, name: &str, op: Op, x: NodeId) -> NodeId {
        let shape = self.shape(x);
        self.node(name, op, shape, vec![x])
    }

    /// `a op b` with NumPy broadcasting.
    fn binary(&mut self, name: &str, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let rank = sa.rank().max(sb.rank());
        let dim = |s: &Shape, k: usize| (k + s.rank()).checked_sub(rank).map_or(Dim::fixed(1), |i| s.0[i]);
        let shape = Shape(
            (0..rank)
                .map(|k| {
                    let (da, db) = (dim(&sa, k), dim(&sb, k));
                    if da == Dim::fixed(1) { db } else { da }
                })
                .collect(),
        );
        self.node(name, Op::Binary(op), shape, vec![a, b])
    }

    fn reshape(&mut self, name: &str, x: NodeId, shape: Shape) -> NodeId {
        self.node(name, Op::Reshape, shape, vec![x])
    }

    fn concat(&mut self, name: &str, axis: usize, parts: Vec<NodeId>) -> NodeId {
        let mut shape = self.shape(parts[0]);
        shape.0[axis].factor = parts.iter().map(|&p| self.g.node(p).shape.0[axis].factor).sum();
        self.node(name, Op::Concat { axis }, shape, parts)
    }

    fn output(mut self, y: NodeId) -> Net {
        self.g.outputs.push(y);
        self
    }
}

/// The mean loss in f64, from an f32 prediction.
fn loss64(loss: Loss, pred: &Tensor, target: &Tensor) -> f64 {
    let p = pred.data.iter().map(|&v| v as f64);
    let t = target.data.iter().map(|&v| v as f64);
    match loss {
        Loss::CrossEntropy | Loss::SmoothedCrossEntropy(_) => {
            let s = loss.label_smoothing().unwrap_or(0.0) as f64;
            let classes = pred.shape[1];
            let rows: Vec<&[f32]> = pred.data.chunks(classes).collect();
            let total: f64 = rows
                .iter()
                .zip(&target.data)
                .map(|(row, &label)| {
                    let m = row.iter().fold(f64::MIN, |m, &z| m.max(z as f64));
                    let lse = m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln();
                    // -log p of the label, and of every class on average.
                    let mean = row.iter().map(|&z| z as f64).sum::<f64>() / classes as f64;
                    (1.0 - s) * (lse - row[label as usize] as f64) + s * (lse - mean)
                })
                .sum();
            total / rows.len() as f64
        }
        Loss::Mse => p.zip(t).map(|(p, t)| (p - t) * (p - t)).sum::<f64>() / pred.numel() as f64,
        Loss::Perceptron => p.zip(t).map(|(s, y)| (-y * s).max(0.0)).sum::<f64>() / pred.numel() as f64,
    }
}

/// A labels or target tensor for `loss` on an output of shape `out`.
fn make_target(rng: &mut Rng, loss: Loss, out: &[usize]) -> Tensor {
    let n: usize = out.iter().product();
    match loss {
        Loss::CrossEntropy | Loss::SmoothedCrossEntropy(_) => {
            let classes = out[1] as f32;
            let data = (0..out[0]).map(|_| (rng.unit() * classes).floor().min(classes - 1.0)).collect();
            Tensor::new(vec![out[0]], data).expect("consistent")
        }
        Loss::Mse => Tensor::new(out.to_vec(), (0..n).map(|_| rng.symmetric()).collect()).expect("consistent"),
        Loss::Perceptron => {
            Tensor::new(out.to_vec(), (0..n).map(|_| if rng.unit() < 0.5 { -1.0 } else { 1.0 }).collect())
                .expect("consistent")
        }
    }
}

/// The relative error `max|a - b| / max|b|` (absolute below `1e-5 / tol`).
fn rel_err(analytic: &[f32], numeric: &[f64]) -> (f64, f64) {
    let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = analytic.iter().zip(numeric).fold(0.0f64, |m, (&a, &n)| m.max((a as f64 - n).abs()));
    (err, scale)
}

/// Options of one gradient check.
#[derive(Clone, Copy)]
struct Check {
    loss: Loss,
    h: f32,
    tol: f64,
    /// The mode the net is differentiated in (a training-mode net is
    /// rewritten first, see [`Net::in_training_mode`]).
    mode: Mode,
}

const MSE: Check = Check { loss: Loss::Mse, h: 1e-2, tol: 2e-3, mode: Mode::Train };

/// Derives the training graph of `net`, evaluates it and compares every
/// parameter and input gradient with central differences of the loss.
/// Every parameter and input must receive a gradient. Returns the
/// training graph.
#[track_caller]
fn gradcheck(net: &Net, check: Check) -> Graph {
    let g = &net.g;
    let train = derive_training_in(check.mode, g, check.loss, Sgd::default()).expect("derive_training");
    let training = train.training.as_ref().expect("training section");
    let out = g.outputs[0];
    let out_shape = g.node(out).shape.at_batch(BATCH);

    let mut rng = Rng(0x5eed ^ g.len() as u64);
    let target = make_target(&mut rng, check.loss, &out_shape);
    let mut feeds = net.feeds.clone();
    feeds.insert(training.target, target.clone());
    let values = evaluate(&train, BATCH, &feeds).expect("evaluate training graph");

    // The interpreter's loss agrees with the f64 loss used below.
    let want = loss64(check.loss, &values[out.index()], &target);
    let got = values[training.loss.index()].data[0] as f64;
    assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "loss node {got} vs f64 loss {want}");

    let grads: Vec<(NodeId, NodeId)> = training.param_grads.iter().chain(&training.input_grads).copied().collect();
    let trained = g.params.iter().filter(|&&p| matches!(g.node(p).op, Op::Param { .. })).count();
    assert_eq!(grads.len(), trained + g.inputs.len(), "every parameter and input gets a gradient");

    let loss_at = |feeds: &HashMap<NodeId, Tensor>| {
        let v = evaluate(g, BATCH, feeds).expect("evaluate forward graph");
        loss64(check.loss, &v[out.index()], &target)
    };
    let mut feeds = net.feeds.clone();
    for (leaf, grad) in grads {
        let analytic = &values[grad.index()];
        let original = feeds[&leaf].clone();
        assert_eq!(analytic.shape, original.shape, "gradient shape of {}", g.node(leaf).name);
        let mut numeric = Vec::with_capacity(original.numel());
        for i in 0..original.numel() {
            let x = original.data[i];
            let (up, down) = (x + check.h, x - check.h);
            feeds.get_mut(&leaf).expect("fed").data[i] = up;
            let l_up = loss_at(&feeds);
            feeds.get_mut(&leaf).expect("fed").data[i] = down;
            let l_down = loss_at(&feeds);
            feeds.get_mut(&leaf).expect("fed").data[i] = x;
            numeric.push((l_up - l_down) / (up as f64 - down as f64));
        }
        let (err, scale) = rel_err(&analytic.data, &numeric);
        assert!(
            err <= check.tol * scale + 1e-5,
            "gradient of `{}` ({}): max error {err:.3e} vs max |grad| {scale:.3e}\n analytic {:?}\n numeric  {:?}",
            g.node(leaf).name,
            train.node(grad).name,
            analytic.data,
            numeric
        );
    }
    train
}

fn conv_attrs(
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    padding_mode: PaddingMode,
) -> Conv2d {
    Conv2d { kernel, stride, padding, dilation, padding_mode }
}

/// Conv configurations: (kernel, stride, padding, dilation, bias, [H, W]).
/// Together they cover stride 1..3, padding 0..2, dilation 1..3, H != W,
/// non-square kernels and per-axis attributes, with and without bias.
type ConvCase = ([usize; 2], [usize; 2], [usize; 2], [usize; 2], bool, [usize; 2]);
const CONV_CASES: [ConvCase; 9] = [
    ([3, 3], [1, 1], [0, 0], [1, 1], true, [5, 6]),
    ([3, 3], [2, 2], [1, 1], [1, 1], false, [6, 5]),
    ([2, 3], [1, 2], [2, 1], [1, 1], true, [4, 7]),
    ([3, 2], [3, 1], [0, 2], [2, 1], true, [8, 5]),
    ([2, 2], [1, 1], [1, 1], [3, 3], false, [7, 6]),
    ([1, 1], [2, 3], [0, 0], [1, 1], true, [5, 7]),
    ([3, 3], [3, 3], [2, 2], [2, 2], true, [7, 8]),
    ([4, 1], [2, 1], [1, 0], [1, 2], true, [6, 3]),
    ([2, 3], [1, 1], [2, 2], [2, 3], false, [3, 4]),
];

fn conv_check(mode: PaddingMode) {
    for (i, &(k, s, p, d, bias, [h, w])) in CONV_CASES.iter().enumerate() {
        let mut net = Net::new(100 + i as u64);
        let x = net.input("x", &[2, h, w], Fill::Uniform);
        let y = net.conv("conv", x, 3, conv_attrs(k, s, p, d, mode), bias);
        gradcheck(&net.output(y), MSE);
    }
}

#[test]
fn conv2d_zero_padding() {
    conv_check(PaddingMode::Zeros);
}

#[test]
fn conv2d_replicate_padding() {
    conv_check(PaddingMode::Replicate);
}

/// Conv output feeding a second conv: gradients flow through `Conv2dGradInput`
/// into a parameter upstream.
#[test]
fn conv2d_stack() {
    let mut net = Net::new(7);
    let x = net.input("x", &[1, 7, 6], Fill::Uniform);
    let c1 = conv_attrs([3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Replicate);
    let y = net.conv("conv1", x, 2, c1, true);
    let c2 = conv_attrs([2, 3], [2, 1], [0, 1], [1, 2], PaddingMode::Zeros);
    let y = net.conv("conv2", y, 2, c2, true);
    gradcheck(&net.output(y), MSE);
}

fn pool_attrs(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2]) -> Pool2d {
    Pool2d { kernel, stride, padding, dilation }
}

#[test]
fn max_pool2d() {
    // (kernel, stride, padding, dilation, [H, W]): stride == kernel, stride != kernel
    // (overlapping and gapped windows), padding, dilation, non-square everything.
    let cases = [
        ([2, 2], [2, 2], [0, 0], [1, 1], [4, 6]),
        ([3, 3], [2, 2], [1, 1], [1, 1], [5, 7]),
        ([2, 3], [1, 2], [1, 1], [2, 1], [6, 7]),
        ([3, 2], [1, 3], [1, 0], [2, 2], [7, 5]),
        ([2, 2], [3, 3], [0, 1], [1, 1], [6, 5]),
    ];
    for (i, (k, s, p, d, [h, w])) in cases.into_iter().enumerate() {
        let mut net = Net::new(200 + i as u64);
        // Distinct values 2/n apart (n <= 2*2*7*7): a step of h = 1e-3 never changes a window's argmax.
        let x = net.input("x", &[2, h, w], Fill::Distinct);
        let y = net.pool("pool", x, pool_attrs(k, s, p, d), true);
        gradcheck(&net.output(y), Check { h: 1e-3, ..MSE });
    }
}

#[test]
fn avg_pool2d() {
    let cases = [
        ([2, 2], [2, 2], [0, 0], [5, 6]),
        ([3, 3], [2, 2], [1, 1], [5, 7]),
        ([3, 2], [1, 2], [1, 1], [6, 5]),
        ([2, 2], [1, 3], [1, 0], [4, 7]),
        ([2, 3], [3, 1], [0, 1], [7, 4]),
    ];
    for (i, (k, s, p, [h, w])) in cases.into_iter().enumerate() {
        let mut net = Net::new(300 + i as u64);
        let x = net.input("x", &[2, h, w], Fill::Uniform);
        let y = net.pool("pool", x, pool_attrs(k, s, p, [1, 1]), false);
        gradcheck(&net.output(y), MSE);
    }
}

/// (mode, align_corners, input [H, W], size, inverse scale).
type ResizeCase = (ResizeMode, bool, [usize; 2], [usize; 2], Option<[f32; 2]>);

#[test]
fn resize_nearest_and_bilinear() {
    use ResizeMode::{Bilinear, Nearest};
    // (mode, align_corners, input [H, W], size, inverse scale): up, down,
    // mixed, same size on one axis, and by scale factor.
    let cases: [ResizeCase; 12] = [
        (Nearest, false, [3, 4], [7, 5], None),
        (Nearest, false, [5, 6], [3, 2], None),
        (Nearest, false, [3, 5], [6, 8], Some([0.5, 1.0 / 1.7])),
        (Nearest, false, [4, 3], [4, 7], None),
        (Bilinear, false, [3, 4], [7, 5], None),
        (Bilinear, false, [5, 6], [3, 2], None),
        (Bilinear, false, [3, 5], [7, 8], Some([1.0 / 2.5, 1.0 / 1.7])),
        (Bilinear, false, [4, 3], [4, 7], None),
        (Bilinear, true, [3, 4], [7, 5], None),
        (Bilinear, true, [5, 6], [3, 2], None),
        (Bilinear, true, [3, 4], [1, 6], None),
        (Bilinear, true, [3, 5], [7, 8], Some([1.0 / 2.5, 1.0 / 1.7])),
    ];
    for (i, (mode, align_corners, [h, w], size, inverse_scale)) in cases.into_iter().enumerate() {
        let mut net = Net::new(400 + i as u64);
        let x = net.input("x", &[2, h, w], Fill::Uniform);
        let r = Resize { size, mode, align_corners, inverse_scale };
        let y = net.resize("up", x, r);
        gradcheck(&net.output(y), MSE);
    }
}

#[test]
fn activations_on_both_sides_of_zero() {
    let all = [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::LeakyRelu(0.1),
        Activation::LeakyRelu(0.01),
        Activation::Elu(1.0),
        Activation::Elu(0.5),
        Activation::Gelu(GeluForm::Exact),
        Activation::Gelu(GeluForm::Tanh),
        Activation::Silu,
        Activation::Step,
    ];
    for (i, a) in all.into_iter().enumerate() {
        let mut net = Net::new(500 + i as u64);
        // Inputs in ±[0.1, 1): both signs, never within h of the kink at 0.
        let x = net.input("x", &[3, 4], Fill::AwayFromZero);
        let y = net.unary("act", Op::Activate(a), x);
        gradcheck(&net.output(y), MSE);
    }
}

/// A smooth MLP: linear -> tanh -> linear -> sigmoid -> linear, every layer with bias.
#[test]
fn mlp_with_cross_entropy() {
    let mut net = Net::new(600);
    let x = net.input("x", &[5], Fill::Uniform);
    let y = net.linear("fc1", x, 4, true);
    let y = net.unary("tanh", Op::Activate(Activation::Tanh), y);
    let y = net.linear("fc2", y, 4, false);
    let y = net.unary("sigmoid", Op::Activate(Activation::Sigmoid), y);
    let y = net.linear("fc3", y, 3, true);
    gradcheck(&net.output(y), Check { loss: Loss::CrossEntropy, ..MSE });
}

/// Linear on a rank-3 input (every leading axis is a row).
#[test]
fn linear_on_rank3_input() {
    let mut net = Net::new(601);
    let x = net.input("x", &[3, 4], Fill::Uniform);
    let y = net.linear("fc", x, 2, true);
    gradcheck(&net.output(y), MSE);
}

#[test]
fn cross_entropy_on_logits() {
    let mut net = Net::new(700);
    let x = net.input("logits", &[5], Fill::Uniform);
    let y = net.unary("neg", Op::Neg, x);
    gradcheck(&net.output(y), Check { loss: Loss::CrossEntropy, ..MSE });
}

/// Softmax and log-softmax on every axis of a `[N, 2, 3, 4]` input (the
/// batch axis included), under MSE so that the gradient reaching them is not
/// the one cross-entropy's own softmax cancels.
#[test]
fn softmax_and_log_softmax_every_axis() {
    for log in [false, true] {
        for axis in 0..4 {
            let mut net = Net::new(710 + 10 * log as u64 + axis as u64);
            let x = net.input("x", &[2, 3, 4], Fill::Uniform);
            let y = net.unary("s", Op::Softmax { axis, log }, x);
            gradcheck(&net.output(y), MSE);
        }
    }
}

/// Batch normalisation in both modes: `[N, C, H, W]` with and without
/// weight and bias, `[N, C]` and `[N, C, L]`; in training mode the batch's
/// statistics depend on the input, and their gradients are part of its.
#[test]
fn batch_norm_in_both_modes() {
    let cases: [(&[usize], bool); 4] = [(&[3, 2, 2], true), (&[3, 2, 2], false), (&[4], true), (&[3, 5], true)];
    for (i, (dims, affine)) in cases.into_iter().enumerate() {
        for mode in [Mode::Train, Mode::Eval] {
            let mut net = Net::new(720 + i as u64);
            let x = net.input("x", dims, Fill::Uniform);
            let y = net.batch_norm("bn", x, affine);
            // A non-linearity after it, so the loss is not a function of
            // the normalised values' first two moments alone.
            let y = net.unary("act", Op::Activate(Activation::Tanh), y);
            let net = if mode == Mode::Train { net.output(y).in_training_mode() } else { net.output(y) };
            let train = gradcheck(&net, Check { mode, ..MSE });
            if mode == Mode::Eval {
                let updates = train.updates.len();
                assert_eq!(updates, if affine { 2 } else { 0 }, "evaluation mode keeps the running statistics");
            }
        }
    }
}

/// Dropout in training mode (a fixed mask for the step counter's value) and
/// in evaluation mode (the identity).
#[test]
fn dropout_in_both_modes() {
    for mode in [Mode::Train, Mode::Eval] {
        let mut net = Net::new(730);
        let x = net.input("x", &[3, 8], Fill::Uniform);
        let y = net.unary("drop", Op::Dropout { p: 0.4 }, x);
        let y = net.unary("act", Op::Activate(Activation::Tanh), y);
        let net = if mode == Mode::Train { net.output(y).in_training_mode() } else { net.output(y) };
        gradcheck(&net, Check { mode, ..MSE });
    }
}

#[test]
fn cross_entropy_with_label_smoothing() {
    for s in [0.1, 0.5, 1.0] {
        let mut net = Net::new(705);
        let x = net.input("logits", &[5], Fill::Uniform);
        let y = net.linear("fc", x, 4, true);
        gradcheck(&net.output(y), Check { loss: Loss::cross_entropy(s), ..MSE });
    }
}

#[test]
fn perceptron_loss() {
    // Scores straight from the input, in ±[0.1, 1): away from the hinge at 0.
    let mut net = Net::new(701);
    let s = net.input("scores", &[3], Fill::AwayFromZero);
    let y = net.unary("neg", Op::Neg, s);
    gradcheck(&net.output(y), Check { loss: Loss::Perceptron, ..MSE });
    // The lecture's perceptron: a weighted sum plus bias, trained on ±1 labels.
    let mut net = Net::new(702);
    let x = net.input("x", &[4], Fill::Uniform);
    let y = net.linear("fc", x, 1, true);
    let net = net.output(y);
    let scores = evaluate(&net.g, BATCH, &net.feeds).expect("forward")[y.index()].clone();
    assert!(scores.data.iter().all(|s| s.abs() > 0.05), "seed keeps scores off the hinge: {scores:?}");
    gradcheck(&net, Check { loss: Loss::Perceptron, ..MSE });
}

#[test]
fn reshape_flatten_into_linear() {
    let mut net = Net::new(800);
    let x = net.input("x", &[2, 3, 2], Fill::Uniform);
    let c = conv_attrs([2, 2], [1, 1], [0, 0], [1, 1], PaddingMode::Zeros);
    let y = net.conv("conv", x, 2, c, true);
    let y = net.reshape("flat", y, batched(&[2 * 2]));
    let y = net.linear("fc", y, 3, true);
    gradcheck(&net.output(y), Check { loss: Loss::CrossEntropy, ..MSE });
}

#[test]
fn concat_along_channels_and_width() {
    let mut net = Net::new(900);
    let a = net.input("a", &[2, 3, 2], Fill::Uniform);
    let b = net.input("b", &[1, 3, 2], Fill::Uniform);
    let w = net.param("w", &[3, 3, 2]);
    let bw = net.binary("bw", BinaryOp::Mul, b, w);
    let y = net.concat("cat", 1, vec![a, bw, a]);
    gradcheck(&net.output(y), MSE);

    let mut net = Net::new(901);
    let a = net.input("a", &[2, 3, 2], Fill::Uniform);
    let b = net.input("b", &[2, 3, 3], Fill::Uniform);
    let y = net.concat("cat", 3, vec![b, a]);
    let y = net.unary("tanh", Op::Activate(Activation::Tanh), y);
    gradcheck(&net.output(y), MSE);
}

#[test]
fn binary_ops_with_broadcasting() {
    for (i, op) in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul].into_iter().enumerate() {
        // [N,3,4] op [4] (a broadcast parameter), [3,1] op [N,3,4] (rhs larger),
        // [N,1,4] op [N,3,1] (both broadcast), same shapes.
        let mut net = Net::new(1000 + i as u64);
        let x = net.input("x", &[3, 4], Fill::Uniform);
        let row = net.param("row", &[4]);
        let col = net.param("col", &[3, 1]);
        let a = net.binary("a", op, x, row);
        let b = net.binary("b", op, col, a);
        gradcheck(&net.output(b), MSE);

        let mut net = Net::new(1010 + i as u64);
        let u = net.input("u", &[1, 4], Fill::Uniform);
        let v = net.input("v", &[3, 1], Fill::Uniform);
        let y = net.binary("y", op, u, v);
        let z = net.binary("z", op, y, y);
        gradcheck(&net.output(z), MSE);
    }
}

/// One value feeding several users: its gradient is the sum.
#[test]
fn fan_out() {
    let mut net = Net::new(1100);
    let x = net.input("x", &[3, 2], Fill::Uniform);
    let t = net.unary("t", Op::Activate(Activation::Tanh), x);
    let s = net.unary("s", Op::Activate(Activation::Sigmoid), x);
    let ts = net.binary("ts", BinaryOp::Mul, t, s);
    let y = net.binary("y", BinaryOp::Add, ts, x);
    let y = net.binary("y2", BinaryOp::Sub, y, x);
    let y = net.binary("y3", BinaryOp::Mul, y, x);
    let y = net.unary("neg", Op::Neg, y);
    gradcheck(&net.output(y), MSE);
}

/// A layer called twice shares its parameters, which get both calls' gradients.
#[test]
fn layer_called_twice() {
    let mut net = Net::new(1200);
    let x = net.input("x", &[4], Fill::Uniform);
    let w = net.param("fc.weight", &[4, 4]);
    let b = net.param("fc.bias", &[4]);
    let y = net.apply_linear("fc", x, w, Some(b));
    let y = net.unary("tanh", Op::Activate(Activation::Tanh), y);
    let y = net.apply_linear("fc_1", y, w, Some(b));
    let train = gradcheck(&net.output(y), MSE);
    let grad_w = train.find("grad_fc.weight").expect("named gradient");
    assert_eq!(train.node(grad_w).op, Op::Binary(BinaryOp::Add));
    assert!(train.find("grad_fc.weight_from_fc").is_some());
    assert!(train.find("grad_fc.weight_from_fc_1").is_some());
}

/// A LeNet-shaped chain: conv -> max-pool -> tanh -> conv -> avg-pool ->
/// flatten -> linear -> cross-entropy.
#[test]
fn small_convnet() {
    let mut net = Net::new(SMALL_CONVNET_SEED);
    let x = net.input("x", &[2, 6, 6], Fill::Uniform);
    let c1 = conv_attrs([3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros);
    let y = net.conv("conv1", x, 3, c1, true);
    let y = net.pool("pool1", y, pool_attrs([2, 2], [2, 2], [0, 0], [1, 1]), true);
    let y = net.unary("tanh", Op::Activate(Activation::Tanh), y);
    let c2 = conv_attrs([2, 2], [1, 1], [0, 0], [1, 1], PaddingMode::Replicate);
    let y = net.conv("conv2", y, 2, c2, true);
    let y = net.pool("pool2", y, pool_attrs([2, 2], [1, 1], [0, 0], [1, 1]), false);
    let y = net.reshape("flat", y, batched(&[2]));
    let y = net.linear("fc", y, 3, true);
    let net = net.output(y);
    // A step of h = 1e-3 in any conv1 weight or input moves each conv1 output
    // by at most 1e-3 (|x|, |w| <= 1), so a window's argmax is stable when its
    // two largest values are more than 2e-3 apart: the seed was chosen so.
    let values = evaluate(&net.g, BATCH, &net.feeds).expect("forward");
    let conv1 = &values[net.g.find("conv1").expect("conv1").index()];
    let at = |n: usize, c: usize, y: usize, x: usize| conv1.data[((n * 3 + c) * 6 + y) * 6 + x];
    for (n, c, oy, ox) in (0..BATCH)
        .flat_map(|n| (0..3).flat_map(move |c| (0..3).flat_map(move |oy| (0..3).map(move |ox| (n, c, oy, ox)))))
    {
        let (y, x) = (2 * oy, 2 * ox);
        let mut window = [at(n, c, y, x), at(n, c, y, x + 1), at(n, c, y + 1, x), at(n, c, y + 1, x + 1)];
        window.sort_by(|p, q| q.total_cmp(p));
        assert!(window[0] - window[1] > 2.5e-3, "pool window {window:?} too close to a tie");
    }
    gradcheck(&net, Check { loss: Loss::CrossEntropy, h: 1e-3, ..MSE });
}

const SMALL_CONVNET_SEED: u64 = 1300;

// ---------------------------------------------------------------------------
// SGD

/// `y = x * p` with MSE: `dL/dp_j = 2/m * sum_n (x_nj p_j - t_nj) x_nj`.
/// Runs three [`interp::step`]s and compares parameter and buffer with the
/// PyTorch recurrence evaluated in f64.
fn sgd_check(sgd: Sgd) {
    let mut net = Net::new(1400);
    let x = net.input("x", &[3], Fill::Uniform);
    let p = net.param("p", &[3]);
    let y = net.binary("y", BinaryOp::Mul, x, p);
    let net = net.output(y);
    let train = derive_training(&net.g, Loss::Mse, sgd).expect("derive");
    let training = train.training.clone().expect("training");
    let target = make_target(&mut Rng(3), Loss::Mse, &[BATCH, 3]);
    let mut leaves = net.feeds.clone();
    leaves.insert(training.target, target.clone());

    let xs: Vec<f64> = net.feeds[&x].data.iter().map(|&v| v as f64).collect();
    let ts: Vec<f64> = target.data.iter().map(|&v| v as f64).collect();
    let mut pv: Vec<f64> = net.feeds[&p].data.iter().map(|&v| v as f64).collect();
    let mut buf = [0.0f64; 3];
    let (lr, mu, wd) = (sgd.lr as f64, sgd.momentum as f64, sgd.weight_decay as f64);
    let m = (BATCH * 3) as f64;
    for step in 1..=3 {
        interp::step(&train, BATCH, &mut leaves).expect("step");
        for j in 0..3 {
            let mut g = 0.0;
            for n in 0..BATCH {
                let xi = xs[n * 3 + j];
                g += 2.0 / m * (xi * pv[j] - ts[n * 3 + j]) * xi;
            }
            let g = g + wd * pv[j];
            let d = if mu != 0.0 {
                // PyTorch: buf = g at step 1 (the zero buffer gives the same), then mu*buf + g.
                buf[j] = mu * buf[j] + g;
                if sgd.nesterov { g + mu * buf[j] } else { buf[j] }
            } else {
                g
            };
            pv[j] -= lr * d;
        }
        let got = &leaves[&p].data;
        for j in 0..3 {
            assert!((got[j] as f64 - pv[j]).abs() <= 1e-6, "{sgd:?} step {step}: p[{j}] = {} vs {}", got[j], pv[j]);
        }
        if mu != 0.0 {
            let bufs = &leaves[&training.optim_state[0]].data;
            for j in 0..3 {
                assert!((bufs[j] as f64 - buf[j]).abs() <= 1e-6, "step {step}: buf[{j}]");
            }
        }
    }
}

#[test]
fn sgd_plain_momentum_nesterov_weight_decay() {
    let base = Sgd { lr: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
    sgd_check(base);
    sgd_check(Sgd { weight_decay: 0.05, ..base });
    sgd_check(Sgd { momentum: 0.9, ..base });
    sgd_check(Sgd { momentum: 0.9, nesterov: true, ..base });
    sgd_check(Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.05, ..base });
}

/// Hand-derived: one parameter `p` (init 1) with loss `mean((p - 0)^2)`,
/// so `g = 2p`. With lr 0.1 and momentum 0.9:
/// step 1: g = 2,     buf = 2,              p = 1 - 0.2 = 0.8
/// step 2: g = 1.6,   buf = 1.8 + 1.6 = 3.4, p = 0.8 - 0.34 = 0.46
/// step 3: g = 0.92,  buf = 3.06 + 0.92 = 3.98, p = 0.46 - 0.398 = 0.062
#[test]
fn sgd_momentum_three_steps_by_hand() {
    let mut g = Graph::new("p");
    let p = g.add("p", Op::param(1), Shape::fixed(&[1]), vec![], Stage::Forward);
    g.params.push(p);
    g.outputs.push(p);
    let sgd = Sgd { lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let train = derive_training(&g, Loss::Mse, sgd).expect("derive");
    let training = train.training.clone().expect("training");
    let mut leaves = HashMap::new();
    leaves.insert(p, Tensor::new(vec![1], vec![1.0]).expect("t"));
    leaves.insert(training.target, Tensor::new(vec![1], vec![0.0]).expect("t"));
    let mut losses = Vec::new();
    for (want_p, want_buf) in [(0.8, 2.0), (0.46, 3.4), (0.062, 3.98)] {
        let values = interp::step(&train, 1, &mut leaves).expect("step");
        losses.push(values[training.loss.index()].data[0]);
        assert!((leaves[&p].data[0] - want_p).abs() < 1e-6, "p = {:?}", leaves[&p].data);
        let buf = leaves[&training.optim_state[0]].data[0];
        assert!((buf - want_buf).abs() < 1e-6, "buf = {buf}");
    }
    // The losses are those before each step: 1, 0.64, 0.2116.
    assert!((losses[0] - 1.0).abs() < 1e-6 && (losses[1] - 0.64).abs() < 1e-6 && (losses[2] - 0.2116).abs() < 1e-6);
}

// ---------------------------------------------------------------------------
// The lecture's LeNet against PyTorch (skipped when the shared files are absent)

const PARITY_DIR: &str = "/work/shared/parity/lenet";

/// Reads a little-endian `.npy` file of f4 or i8 values as f32.
fn read_npy(path: &Path) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).expect("ascii header");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_text = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).expect("shape");
    let shape: Vec<usize> =
        shape_text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().expect("dim")).collect();
    let body = &bytes[start + header_len..];
    let data: Vec<f32> = if header.contains("'<f4'") {
        body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else if header.contains("'<i8'") {
        body.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
    } else {
        panic!("unsupported dtype in {header}")
    };
    Tensor::new(shape, data).expect("npy length matches its shape")
}

#[track_caller]
fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f32) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let scale = want.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = got.data.iter().zip(&want.data).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= atol + 1e-5 * scale, "{what}: max error {err:e} (max |ref| {scale:e})");
}

#[test]
fn lenet_matches_pytorch() {
    let dir = Path::new(PARITY_DIR);
    if !dir.join("input.npy").exists() {
        eprintln!("skipping: {PARITY_DIR} not found");
        return;
    }
    let load = |name: &str| read_npy(&dir.join(format!("{name}.npy")));
    let batch = 8;

    // The lecture's net, built by hand with PyTorch's parameter names.
    let mut g = Graph::new("LeNet");
    let fwd = Stage::Forward;
    let x = g.add("x", Op::Input, batched(&[3, 32, 32]), vec![], fwd);
    g.inputs.push(x);
    let param = |g: &mut Graph, name: &str, dims: &[usize]| {
        let id = g.add(name, Op::param(1), Shape::fixed(dims), vec![], fwd);
        g.params.push(id);
        id
    };
    let conv = conv_attrs([5, 5], [1, 1], [0, 0], [1, 1], PaddingMode::Zeros);
    let pool = Op::MaxPool2d(pool_attrs([2, 2], [2, 2], [0, 0], [1, 1]));
    let relu = Op::Activate(Activation::Relu);
    let w1 = param(&mut g, "conv1.weight", &[6, 3, 5, 5]);
    let b1 = param(&mut g, "conv1.bias", &[6]);
    let w2 = param(&mut g, "conv2.weight", &[16, 6, 5, 5]);
    let b2 = param(&mut g, "conv2.bias", &[16]);
    let f1w = param(&mut g, "fc1.weight", &[120, 400]);
    let f1b = param(&mut g, "fc1.bias", &[120]);
    let f2w = param(&mut g, "fc2.weight", &[84, 120]);
    let f2b = param(&mut g, "fc2.bias", &[84]);
    let f3w = param(&mut g, "fc3.weight", &[10, 84]);
    let f3b = param(&mut g, "fc3.bias", &[10]);
    let c1 = g.add("conv1", Op::Conv2d(conv), batched(&[6, 28, 28]), vec![x, w1, b1], fwd);
    let r1 = g.add("relu1", relu.clone(), batched(&[6, 28, 28]), vec![c1], fwd);
    let p1 = g.add("pool1", pool.clone(), batched(&[6, 14, 14]), vec![r1], fwd);
    let c2 = g.add("conv2", Op::Conv2d(conv), batched(&[16, 10, 10]), vec![p1, w2, b2], fwd);
    let r2 = g.add("relu2", relu.clone(), batched(&[16, 10, 10]), vec![c2], fwd);
    let p2 = g.add("pool2", pool, batched(&[16, 5, 5]), vec![r2], fwd);
    let flat = g.add("flat", Op::Reshape, batched(&[400]), vec![p2], fwd);
    let h1 = g.add("fc1", Op::Linear, batched(&[120]), vec![flat, f1w, f1b], fwd);
    let a1 = g.add("relu3", relu.clone(), batched(&[120]), vec![h1], fwd);
    let h2 = g.add("fc2", Op::Linear, batched(&[84]), vec![a1, f2w, f2b], fwd);
    let a2 = g.add("relu4", relu, batched(&[84]), vec![h2], fwd);
    let logits = g.add("fc3", Op::Linear, batched(&[10]), vec![a2, f3w, f3b], fwd);
    g.outputs.push(logits);

    let sgd = Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let train = derive_training(&g, Loss::CrossEntropy, sgd).expect("derive");
    let training = train.training.clone().expect("training");
    let mut leaves = HashMap::new();
    leaves.insert(x, load("input"));
    leaves.insert(training.target, load("labels"));
    for &p in &g.params {
        leaves.insert(p, load(&g.node(p).name));
    }

    let values = interp::step(&train, batch, &mut leaves).expect("step 1");
    let v = |id: NodeId| &values[id.index()];
    assert_close("act_conv1", v(c1), &load("act_conv1"), 1e-5);
    assert_close("act_pool1", v(p1), &load("act_pool1"), 1e-5);
    assert_close("act_conv2", v(c2), &load("act_conv2"), 1e-5);
    assert_close("act_pool2", v(p2), &load("act_pool2"), 1e-5);
    assert_close("act_fc1_relu", v(a1), &load("act_fc1_relu"), 1e-5);
    assert_close("act_fc2_relu", v(a2), &load("act_fc2_relu"), 1e-5);
    assert_close("logits", v(logits), &load("logits"), 1e-5);
    assert_close("loss", v(training.loss), &load("loss"), 1e-5);
    for &(p, grad) in &training.param_grads {
        let name = &g.node(p).name;
        assert_eq!(train.node(grad).name, format!("grad_{name}"));
        assert_close(&format!("grad_{name}"), v(grad), &load(&format!("grad_{name}")), 1e-6);
        assert_close(&format!("after1_{name}"), &leaves[&p], &load(&format!("after1_{name}")), 1e-6);
    }
    assert_eq!(training.input_grads.len(), 1);
    assert_close("grad_input", v(training.input_grads[0].1), &load("grad_input"), 1e-6);

    let mut losses = vec![values[training.loss.index()].data[0]];
    for _ in 0..2 {
        let values = interp::step(&train, batch, &mut leaves).expect("step");
        losses.push(values[training.loss.index()].data[0]);
    }
    assert_close("losses_3steps", &Tensor::new(vec![3], losses).expect("3"), &load("losses_3steps"), 1e-5);
    for &p in &g.params {
        let name = &g.node(p).name;
        assert_close(&format!("after3_{name}"), &leaves[&p], &load(&format!("after3_{name}")), 1e-6);
    }
}
