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
    let options =
        JitOptions { threads, verify: false, keep_all: false, inspect: false, input_grads: false, target: None };
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

/// CPU time of this thread in nanoseconds (immune to other processes
/// sharing the cores).
fn cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
#[ignore]
fn lenet_kernel_profile() {
    let sgd = Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let g = derive_training(&lenet(), Loss::CrossEntropy, sgd).unwrap();
    for batch in [4, 64] {
        let feeds = random_feeds(&g, batch, 3);
        let options =
            JitOptions { threads: 1, verify: false, keep_all: false, inspect: false, input_grads: false, target: None };
        let mut exe = jit::compile(&g, batch, &options).unwrap();
        for (&id, t) in &feeds {
            exe.set(id, &t.data).unwrap();
        }
        exe.run().unwrap();
        println!("batch {batch}, one thread, CPU time per kernel run:");
        let mut total = 0.0;
        for (i, k) in exe.program().kernels.clone().iter().enumerate() {
            let t0 = cpu_ns();
            let wall = Instant::now();
            let mut reps = 0;
            while wall.elapsed() < Duration::from_millis(60) || reps < 10 {
                exe.run_kernel(i);
                reps += 1;
            }
            let us = (cpu_ns() - t0) as f64 / reps as f64 / 1e3;
            total += us;
            let gflops = k.flops as f64 / us / 1e3;
            println!("  {us:>9.1} us  {gflops:>6.1} GFLOP/s  {}", k.name);
        }
        println!("  {total:>9.1} us  total");
    }
}

#[test]
#[ignore]
fn dump_lenet_kernels() {
    let g = lenet();
    let options =
        JitOptions { threads: 1, verify: false, keep_all: false, inspect: true, input_grads: false, target: None };
    let exe = jit::compile(&g, 4, &options).unwrap();
    std::fs::write("/tmp/lenet_kernels.txt", exe.inspect(jit::Emit::Kernels)).unwrap();
    std::fs::write("/tmp/lenet_clif.txt", exe.inspect(jit::Emit::Clif)).unwrap();
    std::fs::write("/tmp/lenet_asm.txt", exe.inspect(jit::Emit::Asm)).unwrap();
    std::fs::write("/tmp/lenet_memory.txt", exe.inspect(jit::Emit::Memory)).unwrap();
}

#[test]
#[ignore]
fn dump_lenet_training_plan() {
    let sgd = Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let g = derive_training(&lenet(), Loss::CrossEntropy, sgd).unwrap();
    let options =
        JitOptions { threads: 2, verify: true, keep_all: false, inspect: true, input_grads: false, target: None };
    let exe = jit::compile(&g, 4, &options).unwrap();
    std::fs::write("/tmp/train_kernels.txt", exe.inspect(jit::Emit::Kernels)).unwrap();
    std::fs::write("/tmp/train_memory.txt", exe.inspect(jit::Emit::Memory)).unwrap();
}
