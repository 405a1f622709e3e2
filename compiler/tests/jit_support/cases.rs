//! The op x option table of the differential tests, as data: each check is
//! a graph (a forward pass, or a whole training step), a batch size and a
//! seed for its random leaves. `jit_ops` runs every check JIT against the
//! graph interpreter; `kir_interp` runs the same checks through the
//! kernel-IR interpreter.

use super::*;
use kiln_compiler::autodiff::{derive_training, derive_training_in, derive_training_with};
use kiln_compiler::graph::{Graph, NodeId, Stage};
use kiln_compiler::mode::Mode;
use kiln_compiler::ops::{
    Activation, Adam, BinaryOp, GeluForm, Loss, Op, Optim, PaddingMode, Resize, ResizeMode, Sgd, Update,
};
use kiln_compiler::shape::Shape;

/// One differential check.
#[derive(Clone)]
pub struct Check {
    /// What is checked, for failure messages.
    pub name: String,
    /// A forward graph or a training graph.
    pub graph: Graph,
    /// The batch size.
    pub batch: usize,
    /// The seed of the random leaves.
    pub seed: u64,
}

/// The optimizer of the training checks.
pub fn sgd() -> Sgd {
    Sgd { lr: 0.05, momentum: 0.9, nesterov: false, weight_decay: 0.0 }
}

/// The forward pass, then a training step with `loss`.
fn forward_and_training(name: String, forward: Graph, loss: Loss, batch: usize) -> [Check; 2] {
    let train = derive_training(&forward, loss, sgd()).expect("autodiff");
    [
        Check { name: format!("{name} forward"), graph: forward, batch, seed: 17 },
        Check { name: format!("{name} training"), graph: train, batch, seed: 23 },
    ]
}

/// `x -> conv -> flatten -> linear(3)` so every conv option meets a
/// cross-entropy head.
fn conv_net(k: usize, stride: usize, padding: usize, dilation: usize, mode: PaddingMode, bias: bool) -> Graph {
    let mut g = Graph::new("conv");
    let x = input(&mut g, "x", &[3, 9, 8]);
    let c = conv(&mut g, "conv", x, 5, conv_attrs(k, stride, padding, dilation, mode), bias);
    let f = flatten(&mut g, "flat", c);
    let y = linear(&mut g, "fc", f, 3, true);
    g.outputs.push(y);
    g
}

pub fn conv2d_every_option() -> Vec<Check> {
    use PaddingMode::{Replicate, Zeros};
    let mut checks = Vec::new();
    for (k, s, p, d, mode, bias) in [
        (3, 1, 0, 1, Zeros, true),
        (3, 2, 1, 1, Zeros, false),
        (3, 1, 1, 1, Replicate, true),
        (3, 1, 2, 2, Zeros, true),
        (2, 2, 1, 2, Replicate, false),
        (5, 1, 0, 1, Zeros, true),
        (1, 1, 0, 1, Zeros, true),
        (3, 3, 2, 1, Replicate, true),
    ] {
        let name = format!("conv k{k} s{s} p{p} d{d} {mode:?} bias {bias}");
        checks.extend(forward_and_training(name, conv_net(k, s, p, d, mode, bias), Loss::CrossEntropy, 3));
    }
    checks
}

/// Output rows that are not whole vectors but whose positions together
/// are: the weight gradient reads its input in place, with vector steps
/// running across output rows (rows of 6, 5 and 6 with dilation 2).
pub fn conv2d_weight_gradient_across_rows() -> Vec<Check> {
    let mut checks = Vec::new();
    for (h, w, k, d) in [(8, 8, 3, 1), (6, 7, 3, 1), (10, 10, 3, 2)] {
        let mut g = Graph::new("conv_rows");
        let x = input(&mut g, "x", &[2, h, w]);
        let c = conv(&mut g, "conv", x, 3, conv_attrs(k, 1, 0, d, PaddingMode::Zeros), true);
        let r = same_shape(&mut g, "relu", Op::Activate(Activation::Relu), c);
        checks.extend(classifier(format!("conv rows {h}x{w} k{k} d{d}"), g, r));
    }
    // Few taps (a 3-channel stem's 27, a 2-channel 3x3's 18) into 16
    // channels: on 256-bit vectors the weight gradient runs transposed on
    // the micro-kernels, its output gradient gathered 8x8.
    for (ch, h, w) in [(3, 8, 16), (2, 7, 9)] {
        let mut g = Graph::new("conv_stem");
        let x = input(&mut g, "x", &[ch, h, w]);
        let c = conv(&mut g, "conv", x, 16, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), false);
        let r = same_shape(&mut g, "relu", Op::Activate(Activation::Relu), c);
        checks.extend(classifier(format!("conv stem {ch}x{h}x{w}"), g, r));
    }
    checks
}

/// `features` flattened into a 3-class linear head, trained with
/// cross-entropy.
fn classifier(name: String, mut g: Graph, features: NodeId) -> [Check; 2] {
    let f = flatten(&mut g, "flat", features);
    let y = linear(&mut g, "fc", f, 3, true);
    g.outputs.push(y);
    forward_and_training(name, g, Loss::CrossEntropy, 3)
}

/// A second convolution (unit stride, no padding) whose input gradient is
/// added into the image straight from the product (col2im fused), with
/// output rows of 6, 5 and 6 (dilation 2) that wrap into the wider rows.
pub fn conv2d_input_gradient_scattered() -> Vec<Check> {
    let mut checks = Vec::new();
    for (h, w, d) in [(8, 8, 1), (6, 7, 1), (10, 10, 2)] {
        let mut g = Graph::new("conv_scatter");
        let x = input(&mut g, "x", &[2, h, w]);
        let c1 = conv(&mut g, "conv1", x, 3, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), true);
        let r1 = same_shape(&mut g, "relu1", Op::Activate(Activation::Relu), c1);
        let c2 = conv(&mut g, "conv2", r1, 4, conv_attrs(3, 1, 0, d, PaddingMode::Zeros), true);
        let r2 = same_shape(&mut g, "relu2", Op::Activate(Activation::Relu), c2);
        checks.extend(classifier(format!("conv scatter {h}x{w} d{d}"), g, r2));
    }
    // Strided second convolutions scatter into the stride phases of the
    // first one's padded output: a 1x1 projection, rows and columns the
    // taps never reach, stride 3 with dilation, unequal strides and kernels.
    let strided = |kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2]| Conv2d {
        kernel,
        stride,
        padding,
        dilation,
        padding_mode: PaddingMode::Zeros,
    };
    for (h, w, c2) in [
        (9, 8, strided([3, 3], [2, 2], [1, 1], [1, 1])),
        (8, 8, strided([1, 1], [2, 2], [0, 0], [1, 1])),
        (9, 9, strided([2, 2], [2, 2], [0, 0], [1, 1])),
        (11, 10, strided([3, 3], [3, 3], [2, 2], [2, 2])),
        (7, 12, strided([3, 2], [2, 3], [1, 0], [1, 2])),
    ] {
        let mut g = Graph::new("conv_scatter_strided");
        let x = input(&mut g, "x", &[2, h, w]);
        let c1 = conv(&mut g, "conv1", x, 3, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), true);
        let r1 = same_shape(&mut g, "relu1", Op::Activate(Activation::Relu), c1);
        let name = format!("conv scatter {h}x{w} {c2:?}");
        let c2 = conv(&mut g, "conv2", r1, 4, c2, true);
        checks.extend(classifier(name, g, c2));
    }
    checks
}

/// A second unit-stride convolution whose input gradient runs as the
/// forward convolution of its output gradient on the micro-kernels (rows
/// of 16, or 64 channels), the first one's activation derivative in the
/// product's epilogue: padding below, at and (dilated) past the reach.
pub fn conv2d_input_gradient_gathered() -> Vec<Check> {
    let mut checks = Vec::new();
    for (h, w, ch, k, p, d, act) in [
        (5, 16, 4, 3, 1, 1, Activation::Relu),
        (6, 16, 3, 3, 0, 1, Activation::Tanh),
        (7, 16, 2, 3, 2, 2, Activation::Relu),
        (5, 16, 3, 5, 2, 1, Activation::Sigmoid),
        (5, 6, 64, 3, 1, 1, Activation::Relu),
    ] {
        let mut g = Graph::new("conv_gather");
        let x = input(&mut g, "x", &[2, h, w]);
        let c1 = conv(&mut g, "conv1", x, ch, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), true);
        let a1 = same_shape(&mut g, "act1", Op::Activate(act), c1);
        let c2 = conv(&mut g, "conv2", a1, 3, conv_attrs(k, 1, p, d, PaddingMode::Zeros), true);
        checks.extend(classifier(format!("conv gather {h}x{w} c{ch} k{k} p{p} d{d} {act:?}"), g, c2));
    }
    checks
}

/// Three-row kernels over enough channels that the micro-kernels take
/// Winograd's F(4, 3) or F(2, 3) down the columns (`passes::layout::winograd_rows`),
/// forward and as the input gradient of a second such convolution (with
/// the activation's derivative applied in its output pass; not with
/// replicated padding, whose gradient scatters): zero and
/// replicated padding, no padding, kernel widths 3 and 1, a column
/// dilation, rows that are not whole vectors (wrapped), and an odd number
/// of output rows (the direct form).
pub fn conv2d_winograd_rows() -> Vec<Check> {
    use PaddingMode::{Replicate, Zeros};
    let mut checks = Vec::new();
    let attrs = |kernel: [usize; 2], padding: [usize; 2], dilation: [usize; 2], padding_mode| Conv2d {
        kernel,
        stride: [1, 1],
        padding,
        dilation,
        padding_mode,
    };
    for (ch, h, w, second, act) in [
        (32, 6, 16, attrs([3, 3], [1, 1], [1, 1], Zeros), Activation::Relu),
        (40, 8, 10, attrs([3, 3], [1, 1], [1, 1], Replicate), Activation::Gelu(GeluForm::Tanh)),
        (32, 6, 12, attrs([3, 3], [0, 0], [1, 1], Zeros), Activation::Silu),
        (36, 5, 9, attrs([3, 3], [1, 1], [1, 2], Zeros), Activation::Relu),
        (32, 7, 8, attrs([3, 3], [1, 1], [1, 1], Zeros), Activation::Tanh),
        (96, 4, 8, attrs([3, 1], [1, 0], [1, 1], Zeros), Activation::Relu),
        // Images large enough that the weight gradients are transformed
        // too: F(4, 3) (16 rows) and F(2, 3) (18 rows).
        (32, 16, 16, attrs([3, 3], [1, 1], [1, 1], Zeros), Activation::Relu),
        (32, 18, 8, attrs([3, 3], [1, 1], [1, 1], Zeros), Activation::Relu),
        // 16 channels: 48 taps a kernel row, enough for F(4, 3).
        (16, 8, 16, attrs([3, 3], [1, 1], [1, 1], Zeros), Activation::Relu),
    ] {
        let mut g = Graph::new("conv_winograd");
        let x = input(&mut g, "x", &[ch, h, w]);
        let c1 = conv(&mut g, "conv1", x, ch, attrs([3, 3], [1, 1], [1, 1], Zeros), true);
        let a1 = same_shape(&mut g, "act1", Op::Activate(act), c1);
        // As many outputs as its input gradient needs to be transformed too.
        let c2 = conv(&mut g, "conv2", a1, 96 / second.kernel[1], second, false);
        let name = format!(
            "conv winograd {ch}x{h}x{w} {:?} p{:?} d{:?} {act:?}",
            second.kernel, second.padding, second.dilation
        );
        checks.extend(classifier(name, g, c2));
    }
    checks
}

pub fn conv2d_with_activation_epilogues() -> Vec<Check> {
    let mut checks = Vec::new();
    for act in activations() {
        let mut g = Graph::new("conv_act");
        let x = input(&mut g, "x", &[2, 7, 7]);
        let c = conv(&mut g, "conv", x, 4, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), true);
        let a = same_shape(&mut g, "act", Op::Activate(act), c);
        let c2 = conv(&mut g, "conv2", a, 3, conv_attrs(3, 2, 0, 1, PaddingMode::Zeros), true);
        let a2 = same_shape(&mut g, "act2", Op::Activate(act), c2);
        let f = flatten(&mut g, "flat", a2);
        let y = linear(&mut g, "fc", f, 4, true);
        g.outputs.push(y);
        checks.extend(forward_and_training(format!("conv {act:?}"), g, Loss::CrossEntropy, 2));
    }
    checks
}

pub fn activations() -> Vec<Activation> {
    vec![
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::LeakyRelu(0.1),
        Activation::Elu(0.7),
        Activation::Gelu(GeluForm::Exact),
        Activation::Gelu(GeluForm::Tanh),
        Activation::Silu,
        Activation::Step,
    ]
}

pub fn mlp_every_activation_and_loss() -> Vec<Check> {
    let mut checks = Vec::new();
    for act in activations() {
        for loss in [Loss::CrossEntropy, Loss::cross_entropy(0.1), Loss::Mse] {
            for bias in [true, false] {
                let mut g = Graph::new("mlp");
                let x = input(&mut g, "x", &[13]);
                let h = linear(&mut g, "fc1", x, 9, bias);
                let a = same_shape(&mut g, "act", Op::Activate(act), h);
                let h2 = linear(&mut g, "fc2", a, 6, bias);
                let a2 = same_shape(&mut g, "act2", Op::Activate(act), h2);
                let y = linear(&mut g, "fc3", a2, 5, true);
                g.outputs.push(y);
                checks.extend(forward_and_training(format!("mlp {act:?} {loss:?} bias {bias}"), g, loss, 5));
            }
        }
    }
    checks
}

pub fn perceptron_loss() -> Vec<Check> {
    let mut g = Graph::new("perceptron");
    let x = input(&mut g, "x", &[4]);
    let y = linear(&mut g, "fc", x, 1, true);
    g.outputs.push(y);
    forward_and_training("perceptron".into(), g, Loss::Perceptron, 6).into()
}

pub fn pooling_every_option() -> Vec<Check> {
    // Disjoint windows (k <= s, d = 1) take the gather backward: exactly
    // covered, with padding, with gaps and with uncovered edges. Unpadded
    // max pools have their taps written out (overlapping and dilated too).
    let mut checks = Vec::new();
    for (k, s, p, d) in [
        (2, 2, 0, 1),
        (3, 2, 1, 1),
        (3, 1, 1, 2),
        (2, 1, 0, 1),
        (3, 3, 1, 1),
        (2, 3, 0, 1),
        (2, 2, 1, 1),
        (2, 1, 0, 2),
        (3, 2, 0, 1),
        (3, 3, 0, 1),
    ] {
        for max in [true, false] {
            if !max && d != 1 {
                continue;
            }
            let mut g = Graph::new("pool");
            let x = input(&mut g, "x", &[2, 9, 8]);
            let c = conv(&mut g, "conv", x, 3, conv_attrs(1, 1, 0, 1, PaddingMode::Zeros), true);
            let r = same_shape(&mut g, "relu", Op::Activate(Activation::Relu), c);
            let pl = pool(&mut g, "pool", r, pool_attrs(k, s, p, d), max);
            let f = flatten(&mut g, "flat", pl);
            let y = linear(&mut g, "fc", f, 4, true);
            g.outputs.push(y);
            let name = format!("{} pool k{k} s{s} p{p} d{d}", if max { "max" } else { "avg" });
            checks.extend(forward_and_training(name, g, Loss::CrossEntropy, 3));
        }
    }
    checks
}

fn resize_net(size: [usize; 2], mode: ResizeMode, align_corners: bool, inverse_scale: Option<[f32; 2]>) -> Graph {
    let mut g = Graph::new("resize");
    let x = input(&mut g, "x", &[2, 5, 6]);
    let c = conv(&mut g, "conv", x, 2, conv_attrs(1, 1, 0, 1, PaddingMode::Zeros), true);
    let r = Resize { size, mode, align_corners, inverse_scale };
    let rs = g.add("resize", Op::Resize(r), batched(&[2, size[0], size[1]]), vec![c], Stage::Forward);
    let f = flatten(&mut g, "flat", rs);
    let y = linear(&mut g, "fc", f, 3, true);
    g.outputs.push(y);
    g
}

pub fn resize_nearest_and_bilinear() -> Vec<Check> {
    let mut checks = Vec::new();
    for mode in [ResizeMode::Nearest, ResizeMode::Bilinear] {
        for (size, align, scale) in [
            ([10, 12], false, None),
            ([7, 4], false, None),
            ([9, 11], true, None),
            ([5, 6], false, None),
            ([15, 9], false, Some([1.0 / 3.0, 1.0 / 1.5])),
        ] {
            if align && mode == ResizeMode::Nearest {
                continue;
            }
            let name = format!("resize {mode:?} {size:?} align {align} scale {scale:?}");
            checks.extend(forward_and_training(name, resize_net(size, mode, align, scale), Loss::CrossEntropy, 2));
        }
    }
    checks
}

fn leaf(g: &mut Graph, name: &str, shape: Shape) -> NodeId {
    let id = g.add(name, Op::param(4), shape, vec![], Stage::Forward);
    g.params.push(id);
    id
}

pub fn binary_broadcast_neg_and_sum_to() -> Vec<Check> {
    let mut checks = Vec::new();
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
        let mut g = Graph::new("binary");
        let x = input(&mut g, "x", &[3, 4]);
        let b = leaf(&mut g, "b", Shape::fixed(&[4]));
        let c = leaf(&mut g, "c", Shape::fixed(&[3, 1]));
        let s = batched(&[3, 4]);
        let y1 = g.add("y1", Op::Binary(op), s.clone(), vec![x, b], Stage::Forward);
        let y2 = g.add("y2", Op::Binary(op), s.clone(), vec![c, y1], Stage::Forward);
        let y3 = g.add("y3", Op::Neg, s, vec![y2], Stage::Forward);
        let y4 = g.add("y4", Op::Binary(op), batched(&[3, 4]), vec![y3, x], Stage::Forward);
        let f = flatten(&mut g, "flat", y4);
        let y = linear(&mut g, "fc", f, 3, true);
        g.outputs.push(y);
        checks.extend(forward_and_training(format!("binary {op:?}"), g, Loss::CrossEntropy, 4));
    }
    checks
}

pub fn concat_and_slice() -> Vec<Check> {
    let mut checks = Vec::new();
    for with_slice in [false, true] {
        let mut g = Graph::new("layout");
        let x = input(&mut g, "x", &[2, 4, 5]);
        let a = conv(&mut g, "a", x, 3, conv_attrs(1, 1, 0, 1, PaddingMode::Zeros), true);
        let b = conv(&mut g, "b", x, 2, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), false);
        let cat = g.add("cat", Op::Concat { axis: 1 }, batched(&[7, 4, 5]), vec![a, b, x], Stage::Forward);
        let mut last = g.add("cat2", Op::Concat { axis: 3 }, batched(&[7, 4, 10]), vec![cat, cat], Stage::Forward);
        if with_slice {
            last = g.add("slice", Op::Slice { axis: 2, start: 1 }, batched(&[7, 2, 10]), vec![last], Stage::Forward);
        }
        let f = flatten(&mut g, "flat", last);
        let y = linear(&mut g, "fc", f, 3, true);
        g.outputs.push(y);
        if with_slice {
            // The IR has no gradient for a slice: forward only.
            checks.push(Check { name: "concat + slice forward".into(), graph: g, batch: 3, seed: 5 });
        } else {
            checks.extend(forward_and_training("concat".into(), g, Loss::CrossEntropy, 3));
        }
    }
    checks
}

pub fn sgd_variants() -> Vec<Check> {
    let mut checks = Vec::new();
    for (momentum, nesterov, wd) in
        [(0.0, false, 0.0), (0.9, false, 0.0), (0.9, true, 0.01), (0.0, false, 0.1), (0.5, false, 0.05)]
    {
        let s = Sgd { lr: 0.1, momentum, nesterov, weight_decay: wd };
        let mut g = Graph::new("sgd");
        let x = input(&mut g, "x", &[6]);
        let h = linear(&mut g, "fc1", x, 5, true);
        let a = same_shape(&mut g, "relu", Op::Activate(Activation::Relu), h);
        let y = linear(&mut g, "fc2", a, 3, true);
        g.outputs.push(y);
        let train = derive_training(&g, Loss::CrossEntropy, s).unwrap();
        let name = format!("sgd momentum {momentum} nesterov {nesterov} decay {wd}");
        checks.push(Check { name, graph: train, batch: 4, seed: 31 });
    }
    checks
}

/// Adam with and without L2 decay, AdamW, and betas whose `1 - beta1` is
/// above a half (the other form of PyTorch's lerp), compiled into the step.
pub fn adam_variants() -> Vec<Check> {
    let mut checks = Vec::new();
    let cases = [
        Adam { lr: 0.01, ..Adam::default() },
        Adam { lr: 0.01, weight_decay: 0.1, ..Adam::default() },
        Adam { lr: 0.02, weight_decay: 0.05, ..Adam::adamw() },
        Adam { lr: 0.02, beta1: 0.3, beta2: 0.6, eps: 1e-3, ..Adam::adamw() },
    ];
    for adam in cases {
        let mut g = Graph::new("adam");
        let x = input(&mut g, "x", &[6]);
        let h = linear(&mut g, "fc1", x, 5, true);
        let a = same_shape(&mut g, "tanh", Op::Activate(Activation::Tanh), h);
        let y = linear(&mut g, "fc2", a, 3, true);
        g.outputs.push(y);
        let train = derive_training_with(Mode::Train, &g, Loss::CrossEntropy, Optim::Adam(adam)).unwrap();
        checks.push(Check { name: format!("{adam:?}"), graph: train, batch: 4, seed: 37 });
        // Gradient clipping, binding (0.01) and not (1e3).
        for max_norm in [0.01, 1e3] {
            let update = Update { optim: Optim::Adam(adam), clip_grad_norm: Some(max_norm) };
            let train = derive_training_with(Mode::Train, &g, Loss::CrossEntropy, update).unwrap();
            checks.push(Check { name: format!("{adam:?} clipped to {max_norm}"), graph: train, batch: 4, seed: 37 });
        }
    }
    checks
}

pub fn value_used_twice_and_residual() -> Vec<Check> {
    let mut g = Graph::new("dag");
    let x = input(&mut g, "x", &[3, 6, 6]);
    let c = conv(&mut g, "c", x, 3, conv_attrs(3, 1, 1, 1, PaddingMode::Replicate), true);
    let r = same_shape(&mut g, "r", Op::Activate(Activation::Tanh), c);
    let s = g.add("sum", Op::Binary(BinaryOp::Add), batched(&[3, 6, 6]), vec![r, x], Stage::Forward);
    let m = g.add("prod", Op::Binary(BinaryOp::Mul), batched(&[3, 6, 6]), vec![s, r], Stage::Forward);
    let f = flatten(&mut g, "flat", m);
    let y = linear(&mut g, "fc", f, 4, false);
    g.outputs.push(y);
    forward_and_training("residual".into(), g, Loss::Mse, 2).into()
}

/// Softmax and log-softmax over every axis of an NCHW map (the batch axis
/// included) and of a feature vector, forward and through the backward.
pub fn softmax_every_axis() -> Vec<Check> {
    let mut checks = Vec::new();
    for log in [false, true] {
        for axis in 0..4 {
            let mut g = Graph::new("softmax");
            let x = input(&mut g, "x", &[2, 4, 5]);
            let c = conv(&mut g, "c", x, 3, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), true);
            let s = g.add("s", Op::Softmax { axis, log }, batched(&[3, 4, 5]), vec![c], Stage::Forward);
            let f = flatten(&mut g, "flat", s);
            let y = linear(&mut g, "fc", f, 3, true);
            g.outputs.push(y);
            checks.extend(forward_and_training(format!("softmax log {log} axis {axis}"), g, Loss::CrossEntropy, 3));
        }
        let mut g = Graph::new("softmax_features");
        let x = input(&mut g, "x", &[7]);
        let h = linear(&mut g, "fc1", x, 6, true);
        let s = same_shape(&mut g, "s", Op::Softmax { axis: 1, log }, h);
        let y = linear(&mut g, "fc2", s, 4, true);
        g.outputs.push(y);
        checks.extend(forward_and_training(format!("softmax log {log} features"), g, Loss::Mse, 5));
    }
    checks
}

/// Batch normalisation after convolutions (with and without weight and
/// bias, its own eps and momentum) and after a linear layer: evaluation
/// mode forward, a training-mode step (batch statistics, running ones
/// updated) and an evaluation-mode step.
pub fn batch_norm_both_modes() -> Vec<Check> {
    let mut checks = Vec::new();
    for affine in [true, false] {
        let mut g = Graph::new("batch_norm");
        // Both sizes take the channel blocks (a plane of at least a cache
        // line); the 1-d normalisation takes the separate kernels.
        let x = input(&mut g, "x", if affine { &[3, 32, 32] } else { &[3, 6, 5] });
        // No biases before a normalisation: in training mode their gradient
        // is zero in exact arithmetic, and rounding noise in both executors.
        let c = conv(&mut g, "c", x, 4, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), false);
        let n = batch_norm(&mut g, "bn", c, affine, if affine { 1e-5 } else { 1e-3 }, if affine { 0.1 } else { 0.3 });
        let r = same_shape(&mut g, "relu", Op::Activate(Activation::Relu), n);
        let f = flatten(&mut g, "flat", r);
        let h = linear(&mut g, "fc1", f, 7, false);
        let h = batch_norm(&mut g, "bn1d", h, true, 1e-5, 0.1);
        // An activation whose backward reads its input: the normalisation
        // stores its value beside the activation's.
        let h = same_shape(&mut g, "gelu", Op::Activate(Activation::Gelu(GeluForm::Tanh)), h);
        let y = linear(&mut g, "fc2", h, 3, true);
        g.outputs.push(y);
        let eval = derive_training_in(Mode::Eval, &g, Loss::CrossEntropy, sgd()).expect("autodiff");
        checks.extend(forward_and_training(format!("batch norm affine {affine}"), g, Loss::CrossEntropy, 4));
        checks.push(Check {
            name: format!("batch norm affine {affine} eval training"),
            graph: eval,
            batch: 4,
            seed: 29,
        });
    }
    checks
}

/// Dropout after a convolution and after a linear layer (different seeds),
/// p from 0 to 1: evaluation forward (the identity) and a training step
/// (masks keyed by the step counter, which the step increments).
pub fn dropout_in_both_modes() -> Vec<Check> {
    let mut checks = Vec::new();
    for p in [0.0, 0.25, 0.5, 1.0] {
        let mut g = Graph::new("dropout");
        let x = input(&mut g, "x", &[3, 6, 5]);
        let c = conv(&mut g, "c", x, 4, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), true);
        let d = same_shape(&mut g, "drop", Op::Dropout { p }, c);
        let f = flatten(&mut g, "flat", d);
        let h = linear(&mut g, "fc1", f, 9, true);
        let h = same_shape(&mut g, "drop2", Op::Dropout { p: 0.5 }, h);
        let y = linear(&mut g, "fc2", h, 3, true);
        g.outputs.push(y);
        checks.extend(forward_and_training(format!("dropout {p}"), g, Loss::CrossEntropy, 4));
    }
    checks
}

/// Every check of the table.
pub fn all() -> Vec<Check> {
    [
        conv2d_every_option(),
        conv2d_weight_gradient_across_rows(),
        conv2d_input_gradient_scattered(),
        conv2d_input_gradient_gathered(),
        conv2d_with_activation_epilogues(),
        mlp_every_activation_and_loss(),
        perceptron_loss(),
        pooling_every_option(),
        resize_nearest_and_bilinear(),
        binary_broadcast_neg_and_sum_to(),
        concat_and_slice(),
        sgd_variants(),
        adam_variants(),
        value_used_twice_and_residual(),
        softmax_every_axis(),
        batch_norm_both_modes(),
        dropout_in_both_modes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}
