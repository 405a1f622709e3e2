//! Differential tests, JIT against the reference interpreter, for every op
//! and option: forward, backward (derived by autodiff) and one SGD step.

mod jit_support;

use jit_support::*;
use kiln_compiler::autodiff::derive_training;
use kiln_compiler::graph::{Graph, NodeId, Stage};
use kiln_compiler::ops::{Activation, BinaryOp, Loss, Op, PaddingMode, Resize, ResizeMode, Sgd};
use kiln_compiler::shape::Shape;

/// Forward passes and whole training steps alike: within 1e-5 of the
/// interpreter, relative to the tensor's scale (see `assert_close`).
const REL: f32 = 1e-5;
const REL_TRAIN: f32 = REL;

fn sgd() -> Sgd {
    Sgd { lr: 0.05, momentum: 0.9, nesterov: false, weight_decay: 0.0 }
}

/// Forward, then a training step with `loss`.
fn check(forward: Graph, loss: Loss, batch: usize) {
    differential(&forward, batch, 17, REL);
    let train = derive_training(&forward, loss, sgd()).expect("autodiff");
    differential(&train, batch, 23, REL_TRAIN);
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

#[test]
fn conv2d_every_option() {
    use PaddingMode::{Replicate, Zeros};
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
        check(conv_net(k, s, p, d, mode, bias), Loss::CrossEntropy, 3);
    }
}

/// Output rows that are not whole vectors but whose positions together
/// are: the weight gradient reads its input in place, with vector steps
/// running across output rows (rows of 6, 5 and 6 with dilation 2).
#[test]
fn conv2d_weight_gradient_across_rows() {
    for (h, w, k, d) in [(8, 8, 3, 1), (6, 7, 3, 1), (10, 10, 3, 2)] {
        let mut g = Graph::new("conv_rows");
        let x = input(&mut g, "x", &[2, h, w]);
        let c = conv(&mut g, "conv", x, 3, conv_attrs(k, 1, 0, d, PaddingMode::Zeros), true);
        let r = same_shape(&mut g, "relu", Op::Activate(Activation::Relu), c);
        check_classifier(g, r);
    }
}

/// `features` flattened into a 3-class linear head, trained with
/// cross-entropy and checked against the interpreter.
fn check_classifier(mut g: Graph, features: NodeId) {
    let f = flatten(&mut g, "flat", features);
    let y = linear(&mut g, "fc", f, 3, true);
    g.outputs.push(y);
    check(g, Loss::CrossEntropy, 3);
}

/// A second convolution (unit stride, no padding) whose input gradient is
/// added into the image straight from the product (col2im fused), with
/// output rows of 6, 5 and 6 (dilation 2) that wrap into the wider rows.
#[test]
fn conv2d_input_gradient_scattered() {
    for (h, w, d) in [(8, 8, 1), (6, 7, 1), (10, 10, 2)] {
        let mut g = Graph::new("conv_scatter");
        let x = input(&mut g, "x", &[2, h, w]);
        let c1 = conv(&mut g, "conv1", x, 3, conv_attrs(3, 1, 1, 1, PaddingMode::Zeros), true);
        let r1 = same_shape(&mut g, "relu1", Op::Activate(Activation::Relu), c1);
        let c2 = conv(&mut g, "conv2", r1, 4, conv_attrs(3, 1, 0, d, PaddingMode::Zeros), true);
        let r2 = same_shape(&mut g, "relu2", Op::Activate(Activation::Relu), c2);
        check_classifier(g, r2);
    }
}

#[test]
fn conv2d_with_activation_epilogues() {
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
        check(g, Loss::CrossEntropy, 2);
    }
}

fn activations() -> Vec<Activation> {
    vec![
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::LeakyRelu(0.1),
        Activation::Elu(0.7),
        Activation::Step,
    ]
}

#[test]
fn mlp_every_activation_and_loss() {
    for act in activations() {
        for loss in [Loss::CrossEntropy, Loss::Mse] {
            for bias in [true, false] {
                let mut g = Graph::new("mlp");
                let x = input(&mut g, "x", &[13]);
                let h = linear(&mut g, "fc1", x, 9, bias);
                let a = same_shape(&mut g, "act", Op::Activate(act), h);
                let h2 = linear(&mut g, "fc2", a, 6, bias);
                let a2 = same_shape(&mut g, "act2", Op::Activate(act), h2);
                let y = linear(&mut g, "fc3", a2, 5, true);
                g.outputs.push(y);
                check(g, loss, 5);
            }
        }
    }
}

#[test]
fn perceptron_loss() {
    let mut g = Graph::new("perceptron");
    let x = input(&mut g, "x", &[4]);
    let y = linear(&mut g, "fc", x, 1, true);
    g.outputs.push(y);
    check(g, Loss::Perceptron, 6);
}

#[test]
fn pooling_every_option() {
    // Disjoint windows (k <= s, d = 1) take the gather backward: exactly
    // covered, with padding, with gaps and with uncovered edges. Unpadded
    // max pools have their taps written out (overlapping and dilated too).
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
            check(g, Loss::CrossEntropy, 3);
        }
    }
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

#[test]
fn resize_nearest_and_bilinear() {
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
            check(resize_net(size, mode, align, scale), Loss::CrossEntropy, 2);
        }
    }
}

fn leaf(g: &mut Graph, name: &str, shape: Shape) -> NodeId {
    let id = g.add(name, Op::Param { fan_in: 4 }, shape, vec![], Stage::Forward);
    g.params.push(id);
    id
}

#[test]
fn binary_broadcast_neg_and_sum_to() {
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
        check(g, Loss::CrossEntropy, 4);
    }
}

#[test]
fn concat_and_slice() {
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
            differential(&g, 3, 5, REL);
        } else {
            check(g, Loss::CrossEntropy, 3);
        }
    }
}

#[test]
fn sgd_variants() {
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
        differential(&train, 4, 31, REL_TRAIN);
    }
}

#[test]
fn value_used_twice_and_residual() {
    let mut g = Graph::new("dag");
    let x = input(&mut g, "x", &[3, 6, 6]);
    let c = conv(&mut g, "c", x, 3, conv_attrs(3, 1, 1, 1, PaddingMode::Replicate), true);
    let r = same_shape(&mut g, "r", Op::Activate(Activation::Tanh), c);
    let s = g.add("sum", Op::Binary(BinaryOp::Add), batched(&[3, 6, 6]), vec![r, x], Stage::Forward);
    let m = g.add("prod", Op::Binary(BinaryOp::Mul), batched(&[3, 6, 6]), vec![s, r], Stage::Forward);
    let f = flatten(&mut g, "flat", m);
    let y = linear(&mut g, "fc", f, 4, false);
    g.outputs.push(y);
    check(g, Loss::Mse, 2);
}

/// PyTorch's ReLU keeps a NaN (and so does its max-free select form in the
/// JIT), both as a standalone kernel and as a linear layer's epilogue, in
/// vector lanes and in the scalar tail.
#[test]
fn relu_keeps_nan_like_pytorch() {
    let mut g = Graph::new("relu_nan");
    let x = input(&mut g, "x", &[6]);
    let r = same_shape(&mut g, "relu", Op::Activate(Activation::Relu), x);
    let y = linear(&mut g, "fc", r, 5, true);
    let z = same_shape(&mut g, "relu2", Op::Activate(Activation::Relu), y);
    g.outputs.push(z);
    let mut feeds = random_feeds(&g, 1, 3);
    let data = [f32::NAN, -1.0, 2.0, f32::NAN, 0.0, f32::NAN];
    feeds.insert(x, kiln_compiler::Tensor::new(vec![1, 6], data.to_vec()).unwrap());
    let mut exe = compile_with(&g, 1, &feeds, &debug_options());
    exe.run().unwrap();
    let relu: Vec<f32> = exe.get(r).unwrap().to_vec();
    assert!(relu[0].is_nan() && relu[3].is_nan() && relu[5].is_nan(), "{relu:?}");
    assert_eq!([relu[1], relu[2], relu[4]], [0.0, 2.0, 0.0]);
    // A NaN input reaches every output of the linear layer and its ReLU.
    assert!(exe.get(z).unwrap().iter().all(|v| v.is_nan()));
    for x in [f32::NAN, -3.0, 0.0, 4.0] {
        let want = if x.is_nan() { f32::NAN } else { x.max(0.0) };
        assert_eq!(Activation::Relu.apply(x).to_bits(), want.to_bits());
    }
}

/// Max-pooling lets a NaN win, as PyTorch (and the interpreter) do: the
/// window's output is NaN and its gradient goes to the NaN's position.
#[test]
fn max_pool_lets_nan_win_like_pytorch() {
    for (k, s) in [(2, 2), (3, 2)] {
        let mut g = Graph::new("pool_nan");
        let x = input(&mut g, "x", &[1, 6, 6]);
        let p = pool(&mut g, "pool", x, pool_attrs(k, s, 0, 1), true);
        let f = flatten(&mut g, "flat", p);
        let y = linear(&mut g, "fc", f, 3, true);
        g.outputs.push(y);
        let train = derive_training(&g, Loss::CrossEntropy, sgd()).expect("autodiff");
        let mut feeds = random_feeds(&train, 1, 5);
        let mut data: Vec<f32> = (0..36).map(|i| (i % 7) as f32).collect();
        data[7] = f32::NAN; // row 1, column 1: inside the first window
        feeds.insert(x, kiln_compiler::Tensor::new(vec![1, 1, 6, 6], data).unwrap());
        let mut exe = compile_with(&train, 1, &feeds, &debug_options());
        exe.run().unwrap();
        let pooled = exe.get(p).unwrap();
        assert!(pooled[0].is_nan(), "k {k}: {pooled:?}");
        assert!(pooled.iter().skip(1).any(|v| !v.is_nan()), "k {k}: {pooled:?}");
        // Every value the interpreter computes, NaN where it has NaN.
        let want = kiln_compiler::interp::evaluate(&train, 1, &feeds).unwrap();
        for id in train.node_ids().filter(|&n| !train.node(n).op.is_leaf()) {
            let got = exe.get(id).unwrap();
            for (i, (a, b)) in got.iter().zip(&want[id.index()].data).enumerate() {
                let name = &train.node(id).name;
                assert_eq!(a.is_nan(), b.is_nan(), "k {k}: {name}[{i}] {a} vs {b}");
                assert!(a.is_nan() || (a - b).abs() <= 1e-5 * b.abs().max(1.0), "k {k}: {name}[{i}] {a} vs {b}");
            }
        }
    }
}

/// Units in the last place between two finite floats of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

/// The JIT's inline `exp` and `tanh` (behind sigmoid, tanh and ELU) stay
/// within a few ulp of Rust's `f32::exp` and `f32::tanh`, which the
/// interpreter uses, over the whole range — denormal results, overflow and
/// the special values included.
#[test]
fn sigmoid_tanh_elu_match_libm_within_a_few_ulp() {
    let mut values: Vec<f32> = (-2200..=2200).map(|i| i as f32 * 0.05).collect();
    values.extend([1e-30, -1e-30, 1e-6, -3e-4, 0.2499, 0.2501, 87.0, 88.9, 89.5, -87.5, -100.0, -103.0, -110.0]);
    values.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN]);
    let n = values.len();
    for act in [Activation::Sigmoid, Activation::Tanh, Activation::Elu(1.0)] {
        let mut g = Graph::new("act_accuracy");
        let x = input(&mut g, "x", &[n]);
        let y = same_shape(&mut g, "act", Op::Activate(act), x);
        g.outputs.push(y);
        let mut feeds = random_feeds(&g, 1, 3);
        feeds.insert(x, kiln_compiler::Tensor::new(vec![1, n], values.clone()).unwrap());
        let mut exe = compile_with(&g, 1, &feeds, &debug_options());
        exe.run().unwrap();
        let got = exe.get(y).unwrap();
        for (&v, &a) in values.iter().zip(got) {
            let want = act.apply(v);
            if want.is_nan() || !want.is_finite() || want == 0.0 {
                assert!(
                    a.to_bits() == want.to_bits() || (a.is_nan() && want.is_nan()),
                    "{act:?}({v}) = {a}, want {want}"
                );
                continue;
            }
            // ELU's e^x - 1 loses relative precision near 0 in both; judge
            // it against e^x's own scale there.
            let tol =
                if matches!(act, Activation::Elu(_)) && v.abs() < 1.0 { (1.0f32 + want.abs()) * 4e-7 } else { 0.0 };
            assert!(
                ulps(a, want) <= 4 || (a - want).abs() <= tol,
                "{act:?}({v}) = {a}, want {want} ({} ulp)",
                ulps(a, want)
            );
        }
    }
}
