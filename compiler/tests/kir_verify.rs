//! Every kernel program the JIT plans for the lecture's net and the suite's
//! nets, forward and training, verifies clean after every pass.

use kiln_compiler::autodiff::derive_training;
use kiln_compiler::graph::Graph;
use kiln_compiler::jit::{self, JitOptions};
use kiln_compiler::kernel::{AfterPass, Program, build_program, verify};
use kiln_compiler::passes::{fuse, plan_memory, schedule};
use kiln_compiler::target::Target;
use kiln_compiler::{Loss, Sgd};
use std::collections::HashSet;

const NETS: [(&str, &str); 6] = [
    ("examples/lenet.net", include_str!("../../examples/lenet.net")),
    ("bench/nets/lenet.net", include_str!("../../bench/nets/lenet.net")),
    ("bench/nets/mlp.net", include_str!("../../bench/nets/mlp.net")),
    ("bench/nets/resnet_ish.net", include_str!("../../bench/nets/resnet_ish.net")),
    ("bench/nets/vgg16c.net", include_str!("../../bench/nets/vgg16c.net")),
    ("bench/nets/wide5.net", include_str!("../../bench/nets/wide5.net")),
];

const BATCHES: [usize; 4] = [1, 3, 4, 64];

fn forward_graph(file: &str, source: &str) -> Graph {
    match kiln_compiler::frontend::compile_str(source) {
        Ok(lowered) => lowered.graph,
        Err(d) => panic!("{file}: {}", d.render(file, source)),
    }
}

fn training_graph(file: &str, forward: &Graph) -> Graph {
    let sgd = Sgd { lr: 0.01, momentum: 0.9, ..Sgd::default() };
    derive_training(forward, Loss::CrossEntropy, sgd).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Runs the passes one by one, verifying after each, as `jit::plan` does
/// in debug builds (this also holds the check in release test runs).
fn verify_every_pass(what: &str, graph: &Graph, batch: usize, options: &JitOptions) {
    let observable: HashSet<_> = match jit::plan(graph, batch, options) {
        Ok((_, observable)) => observable,
        Err(e) => panic!("{what}, batch {batch}: jit::plan failed: {e}"),
    };
    let check = |program: &Program, pass: AfterPass| {
        if let Err(e) = verify(program, pass) {
            panic!("{what}, batch {batch}: {e}");
        }
    };
    let fusion = fuse(graph, &observable);
    let program = build_program(graph, &fusion, batch, Target::host_128())
        .unwrap_or_else(|e| panic!("{what}, batch {batch}: {e}"));
    check(&program, AfterPass::Build);
    let program = schedule(program, options.threads);
    check(&program, AfterPass::Schedule);
    let keep = observable.iter().filter_map(|&n| program.value_buffer(n)).collect();
    let program = plan_memory(program, &keep);
    check(&program, AfterPass::PlanMemory);
}

fn options(threads: usize, input_grads: bool) -> JitOptions {
    JitOptions { threads, input_grads, ..JitOptions::default() }
}

#[test]
fn forward_programs_verify() {
    for (file, source) in NETS {
        let graph = forward_graph(file, source);
        for batch in BATCHES {
            for threads in [1, 4] {
                verify_every_pass(
                    &format!("{file} forward, {threads} threads"),
                    &graph,
                    batch,
                    &options(threads, false),
                );
            }
        }
    }
}

#[test]
fn training_programs_verify() {
    for (file, source) in NETS {
        let graph = training_graph(file, &forward_graph(file, source));
        for batch in BATCHES {
            for threads in [1, 4] {
                let what = format!("{file} training, {threads} threads");
                verify_every_pass(&what, &graph, batch, &options(threads, false));
            }
            verify_every_pass(&format!("{file} training with input gradients"), &graph, batch, &options(2, true));
        }
    }
}
