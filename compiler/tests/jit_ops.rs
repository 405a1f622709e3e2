//! Differential tests, JIT against the reference interpreter, for every op
//! and option: forward, backward (derived by autodiff) and one SGD step.

mod jit_support;

use jit_support::cases::{self, Check};
use jit_support::*;
use kiln_compiler::autodiff::derive_training;
use kiln_compiler::graph::Graph;
use kiln_compiler::ops::{Activation, GeluForm, Loss, Op};
use kiln_compiler::target::Target;

/// Within 1e-5 of the interpreter, relative to the tensor's scale.
const REL: f32 = 1e-5;

/// Runs every check against the interpreter: forward passes and whole
/// training steps alike within 1e-5 relative (see `assert_close`).
fn run(checks: Vec<Check>) {
    for c in checks {
        differential(&c.graph, c.batch, c.seed, REL);
    }
}

#[test]
fn conv2d_every_option() {
    run(cases::conv2d_every_option());
}

#[test]
fn conv2d_weight_gradient_across_rows() {
    run(cases::conv2d_weight_gradient_across_rows());
}

#[test]
fn conv2d_input_gradient_scattered() {
    run(cases::conv2d_input_gradient_scattered());
}

#[test]
fn conv2d_input_gradient_gathered() {
    run(cases::conv2d_input_gradient_gathered());
}

#[test]
fn conv2d_winograd_rows() {
    run(cases::conv2d_winograd_rows());
}

#[test]
fn conv2d_with_activation_epilogues() {
    run(cases::conv2d_with_activation_epilogues());
}

#[test]
fn mlp_every_activation_and_loss() {
    run(cases::mlp_every_activation_and_loss());
}

#[test]
fn perceptron_loss() {
    run(cases::perceptron_loss());
}

#[test]
fn pooling_every_option() {
    run(cases::pooling_every_option());
}

#[test]
fn resize_nearest_and_bilinear() {
    run(cases::resize_nearest_and_bilinear());
}

#[test]
fn binary_broadcast_neg_and_sum_to() {
    run(cases::binary_broadcast_neg_and_sum_to());
}

#[test]
fn concat_and_slice() {
    run(cases::concat_and_slice());
}

#[test]
fn sgd_variants() {
    run(cases::sgd_variants());
}

#[test]
fn adam_and_adamw_in_the_step() {
    run(cases::adam_variants());
}

#[test]
fn value_used_twice_and_residual() {
    run(cases::value_used_twice_and_residual());
}

#[test]
fn dropout_in_both_modes() {
    run(cases::dropout_in_both_modes());
}

/// Dropout's masks are keyed by element, not by thread: a training step on
/// 1 and 2 threads is bit-identical, and the step counter moves the masks.
#[test]
fn dropout_masks_do_not_depend_on_threads_and_change_per_step() {
    let check = cases::dropout_in_both_modes().into_iter().find(|c| c.name == "dropout 0.5 training").expect("case");
    let feeds = random_feeds(&check.graph, 4, 3);
    let drop = check.graph.find("drop").expect("dropout node");
    let outputs = |threads: usize, steps: usize| {
        let options = kiln_compiler::jit::JitOptions { threads, ..debug_options() };
        let mut exe = compile_with(&check.graph, 4, &feeds, &options);
        let mut masks = Vec::new();
        for _ in 0..steps {
            exe.run().unwrap();
            masks.push(exe.get(drop).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
        masks
    };
    let one = outputs(1, 2);
    assert_eq!(one, outputs(2, 2), "1 and 2 threads differ");
    let zeros = |m: &[u32]| m.iter().map(|&b| b == 0).collect::<Vec<_>>();
    assert_ne!(zeros(&one[0]), zeros(&one[1]), "the second step reused the first step's mask");
}

#[test]
fn batch_norm_in_both_modes() {
    run(cases::batch_norm_both_modes());
}

#[test]
fn softmax_and_log_softmax_on_every_axis() {
    run(cases::softmax_every_axis());
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
        let train = derive_training(&g, Loss::CrossEntropy, cases::sgd()).expect("autodiff");
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

/// The JIT's inline `exp`, `tanh` and `erf` (behind sigmoid, tanh, ELU,
/// GELU and SiLU) stay within a few ulp of Rust's `f32::exp` and
/// `f32::tanh` and libm's `erff`, which the interpreter uses, over the
/// whole range — denormal results, overflow and the special values included.
#[test]
fn sigmoid_tanh_elu_match_libm_within_a_few_ulp() {
    let mut values: Vec<f32> = (-2200..=2200).map(|i| i as f32 * 0.05).collect();
    values.extend([1e-30, -1e-30, 1e-6, -3e-4, 0.2499, 0.2501, 87.0, 88.9, 89.5, -87.5, -100.0, -103.0, -110.0]);
    values.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN]);
    let n = values.len();
    let smooth = [
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Elu(1.0),
        Activation::Gelu(GeluForm::Exact),
        Activation::Gelu(GeluForm::Tanh),
        Activation::Silu,
    ];
    for act in smooth {
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
            // Kernels run with denormals flushed to zero (`jit::denormals`):
            // a result below the normal range may come out as 0.
            if want != 0.0 && want.abs() < f32::MIN_POSITIVE {
                assert!(a == 0.0 || ulps(a, want) <= 4, "{act:?}({v}) = {a}, want {want} or 0");
                continue;
            }
            if want.is_nan() || !want.is_finite() || want == 0.0 {
                assert!(
                    a.to_bits() == want.to_bits() || (a.is_nan() && want.is_nan()),
                    "{act:?}({v}) = {a}, want {want}"
                );
                continue;
            }
            // ELU's e^x - 1 loses relative precision near 0 in both; judge
            // it against e^x's own scale there.
            // GELU's 1 + erf(x / sqrt 2) (and 1 + tanh) cancel for negative
            // x, so its error is the CDF's absolute one times |x|.
            // An intermediate below the normal range flushed to zero
            // (SiLU's sigmoid far left) costs at most that range times |x|.
            let tol = match act {
                Activation::Elu(_) if v.abs() < 1.0 => (1.0f32 + want.abs()) * 4e-7,
                Activation::Gelu(_) => v.abs() * 4e-7,
                _ => 0.0,
            }
            .max(f32::MIN_POSITIVE * (1.0 + v.abs()));
            assert!(
                ulps(a, want) <= 4 || (a - want).abs() <= tol,
                "{act:?}({v}) = {a}, want {want} ({} ulp)",
                ulps(a, want)
            );
        }
    }
}

/// An evaluation-mode batch normalisation after a convolution or a linear
/// layer with `[N, out]` output costs no pass over the activations: its
/// kernel folds it into the product's weights and bias, and the product
/// (with the ReLU after it as its epilogue) writes the normalised values.
/// In training mode, on images of a page, its batch statistics, the
/// normalisation and the activation after it share one kernel, a channel
/// at a time, and so do its backward's sums and input gradient; on smaller
/// images the forward keeps its separate kernels.
#[test]
fn evaluation_batch_norm_folds_into_the_product() {
    let checks = cases::batch_norm_both_modes();
    // Only outputs observable: keeping every value would keep the product's too.
    let options = kiln_compiler::jit::JitOptions { keep_all: false, ..debug_options() };
    let kernel_names = |g: &Graph| {
        let (program, _) = kiln_compiler::jit::plan(g, 4, &options).expect("plans");
        program.kernels.iter().map(|k| k.name.clone()).collect::<Vec<_>>()
    };
    for affine in [true, false] {
        let name = format!("batch norm affine {affine} forward");
        let forward = &checks.iter().find(|c| c.name == name).expect("case").graph;
        let names = kernel_names(forward);
        for want in ["bn.fold", "c+bn+relu", "bn1d.fold", "fc1+bn1d+gelu"] {
            assert!(names.iter().any(|n| n == want), "{name}: no kernel {want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n == "bn" || n == "bn1d"), "a separate normalisation pass in {names:?}");
        // The folded product computes what the interpreter's normalisation does.
        for isa in product_isas() {
            let options =
                kiln_compiler::jit::JitOptions { target: Some(Target::host().with_products(isa)), ..options.clone() };
            let feeds = random_feeds(forward, 4, 41);
            let mut exe = compile_with(forward, 4, &feeds, &options);
            exe.run().unwrap();
            let want = kiln_compiler::interp::evaluate(forward, 4, &feeds).expect("interpreter");
            let out = forward.outputs[0];
            assert_close(&format!("{name} on {isa:?}"), exe.get(out).unwrap(), &want[out.index()].data, 1e-5);
        }
    }
    let training = &checks.iter().find(|c| c.name == "batch norm affine true training").expect("case").graph;
    let names = kernel_names(training);
    // Training normalises with the batch's statistics, summed plane by
    // plane, combined per channel, then applied with the ReLU fused in.
    let block = "bn.batch_mean+bn.batch_var+bn+relu";
    for kernel in [format!("{block}.plane_stats"), format!("{block}.combine"), block.to_string()] {
        assert!(names.contains(&kernel), "no kernel {kernel} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.ends_with(".fold")), "{names:?}");
    assert!(!names.iter().any(|n| n == "bn.batch_mean" || n == "bn+relu"), "separate passes in {names:?}");
    assert!(names.iter().any(|n| n == "grad_bn.bias+grad_bn.weight+grad_c"), "{names:?}");
    // A 1-d normalisation has planes of one element: separate kernels.
    assert!(names.iter().any(|n| n == "bn1d.batch_mean") && names.iter().any(|n| n == "bn1d.batch_var"), "{names:?}");
    let small = &checks.iter().find(|c| c.name == "batch norm affine false training").expect("case").graph;
    let names = kernel_names(small);
    assert!(names.iter().any(|n| n == "bn.batch_mean+bn.batch_var+bn+relu.plane_stats"), "{names:?}");
    assert!(names.iter().any(|n| n == "sum_grad_bn+sum_grad_xhat_bn+grad_c"), "{names:?}");
}
