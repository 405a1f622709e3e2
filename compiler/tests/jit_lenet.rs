//! The lecture's LeNet through the JIT: forward and whole training steps
//! against the interpreter, and bit-identical results for 1 and 2 threads.

mod jit_support;

use jit_support::*;
use kiln_compiler::autodiff::derive_training;
use kiln_compiler::jit::JitOptions;
use kiln_compiler::ops::{Loss, Sgd};

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
    let sgd = Sgd { lr: 0.01, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let g = derive_training(&lenet(), Loss::CrossEntropy, sgd).unwrap();
    let feeds = random_feeds(&g, 8, 5);
    let run = |threads| {
        let options =
            JitOptions { threads, verify: true, keep_all: false, inspect: false, input_grads: false, target: None };
        let mut exe = compile_with(&g, 8, &feeds, &options);
        for _ in 0..3 {
            exe.run().unwrap();
        }
        g.params.iter().map(|&p| exe.get(p).unwrap().to_vec()).collect::<Vec<_>>()
    };
    let one = run(1);
    let two = run(2);
    for (a, b) in one.iter().zip(&two) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
