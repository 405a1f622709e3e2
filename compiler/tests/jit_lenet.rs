//! The lecture's LeNet through the JIT: forward and whole training steps
//! against the interpreter, and bit-identical results for 1 and 2 threads.

mod jit_support;

use jit_support::*;
use kiln_compiler::autodiff::derive_training;
use kiln_compiler::jit::JitOptions;
use kiln_compiler::ops::{Loss, Sgd};
use kiln_compiler::target::{ProductIsa, Target};

#[test]
fn lenet_forward_matches_interpreter() {
    differential(&lenet(), 4, 7, 1e-5);
}

#[test]
fn lenet_training_step_matches_interpreter() {
    let sgd = Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let g = derive_training(&lenet(), Loss::CrossEntropy, sgd).unwrap();
    differential(&g, 4, 11, 1e-5);
}

#[test]
fn lenet_training_is_bit_identical_for_one_and_two_threads() {
    for isa in product_isas() {
        training_is_bit_identical(&lenet(), isa);
    }
}

#[test]
fn wide_products_training_is_bit_identical_for_one_and_two_threads() {
    // Products the micro-kernels split by columns across threads (an MLP at
    // batch 8) and by images (padded 3x3 convolutions).
    let mut g = kiln_compiler::graph::Graph::new("Mixed");
    let x = input(&mut g, "x", &[3, 16, 16]);
    let c = conv(&mut g, "conv", x, 32, conv_attrs(3, 1, 1, 1, kiln_compiler::ops::PaddingMode::Zeros), true);
    let f = flatten(&mut g, "flat", c);
    let h = linear(&mut g, "fc1", f, 256, true);
    let y = linear(&mut g, "fc2", h, 10, true);
    g.outputs.push(y);
    for isa in product_isas() {
        training_is_bit_identical(&g, isa);
    }
}

fn training_is_bit_identical(forward: &kiln_compiler::graph::Graph, isa: ProductIsa) {
    let sgd = Sgd { lr: 0.01, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let g = derive_training(forward, Loss::CrossEntropy, sgd).unwrap();
    let feeds = random_feeds(&g, 8, 5);
    let run = |threads| {
        let options = JitOptions {
            threads,
            verify: true,
            keep_all: false,
            inspect: false,
            input_grads: false,
            target: Some(Target::host().with_products(isa)),
        };
        let mut exe = compile_with(&g, 8, &feeds, &options);
        for _ in 0..3 {
            exe.run().unwrap();
        }
        g.params.iter().map(|&p| exe.get(p).unwrap().to_vec()).collect::<Vec<_>>()
    };
    let one = run(1);
    let two = run(2);
    for (a, b) in one.iter().zip(&two) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{isa}: 1 and 2 threads differ");
    }
}
