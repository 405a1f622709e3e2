//! Throughput of the lecture's LeNet through the JIT (ignored by default:
//! run alone, in release, on a quiet machine):
//! `cargo test --release -p kiln-compiler --test jit_perf -- --ignored --nocapture`

mod jit_support;

use jit_support::*;
use kiln_compiler::autodiff::derive_training;
use kiln_compiler::jit::{self, JitOptions};
use kiln_compiler::ops::{Loss, Sgd};
use std::time::{Duration, Instant};

fn images_per_second(train: bool, batch: usize, threads: usize) -> (f64, Duration) {
    let sgd = Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let g = if train { derive_training(&lenet(), Loss::CrossEntropy, sgd).unwrap() } else { lenet() };
    let feeds = random_feeds(&g, batch, 3);
    let options = JitOptions { threads, verify: false, keep_all: false, inspect: false, input_grads: false };
    let t0 = Instant::now();
    let mut exe = jit::compile(&g, batch, &options).unwrap();
    let compile = t0.elapsed();
    for (&id, t) in &feeds {
        exe.set(id, &t.data).unwrap();
    }
    for _ in 0..20 {
        exe.run().unwrap();
    }
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let mut steps = 0;
        while t.elapsed() < Duration::from_millis(400) {
            exe.run().unwrap();
            steps += 1;
        }
        best = best.max((steps * batch) as f64 / t.elapsed().as_secs_f64());
    }
    (best, compile)
}

#[test]
#[ignore]
fn lenet_throughput() {
    for (train, batch, threads) in
        [(true, 4, 1), (true, 4, 2), (true, 64, 1), (true, 64, 2), (false, 256, 1), (false, 256, 2)]
    {
        let (ips, compile) = images_per_second(train, batch, threads);
        println!(
            "{} batch {batch:>3} threads {threads}: {ips:>9.0} images/s ({:.1} us/step), compiled in {:.1} ms",
            if train { "train" } else { "infer" },
            1e6 * batch as f64 / ips,
            compile.as_secs_f64() * 1e3
        );
    }
}

#[test]
#[ignore]
fn lenet_kernel_profile() {
    let sgd = Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let g = derive_training(&lenet(), Loss::CrossEntropy, sgd).unwrap();
    for (batch, threads) in [(4, 1), (4, 2), (64, 2)] {
        let feeds = random_feeds(&g, batch, 3);
        let options = JitOptions { threads, verify: false, keep_all: false, inspect: false, input_grads: false };
        let mut exe = jit::compile(&g, batch, &options).unwrap();
        for (&id, t) in &feeds {
            exe.set(id, &t.data).unwrap();
        }
        exe.profile(10);
        println!("batch {batch} threads {threads}");
        for (name, t) in exe.profile(50) {
            println!("  {:>9.1} us  {name}", t.as_secs_f64() * 1e6);
        }
    }
}
