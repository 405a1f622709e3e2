//! The middle of the compiler is not tied to 4-lane vectors: every pass
//! reads the program's `Target`. Programs scheduled for 8 and 16 lanes
//! verify after every pass (debug builds run the verifier inside
//! `jit::plan`) and compute what the graph interpreter computes, run by the
//! kernel-IR interpreter; the Cranelift JIT, which lowers 4-lane vectors
//! only, refuses them with an error instead of emitting something else.

mod jit_support;

use jit_support::cases::{self, Check};
use jit_support::*;
use kiln_compiler::autodiff::derive_training;
use kiln_compiler::codegen::CraneliftJit;
use kiln_compiler::graph::Graph;
use kiln_compiler::interp;
use kiln_compiler::jit::{self, JitError, JitOptions};
use kiln_compiler::kernel::{KernelInterpreter, Program};
use kiln_compiler::ops::{Loss, Sgd};
use kiln_compiler::target::Target;

const REL: f32 = 1e-5;

fn options(lanes: usize, keep_all: bool) -> JitOptions {
    JitOptions { keep_all, target: Some(Target::host_128().with_lanes(lanes)), ..debug_options() }
}

/// Plans `graph` for `lanes`-wide vectors and compares the kernel-IR
/// interpreter with the graph interpreter on every observable value.
fn check(name: &str, graph: &Graph, batch: usize, seed: u64, lanes: usize) -> Program {
    let feeds = random_feeds(graph, batch, seed);
    let want = interp::evaluate(graph, batch, &feeds).expect("graph interpreter");
    let (program, observable) =
        jit::plan(graph, batch, &options(lanes, false)).unwrap_or_else(|e| panic!("{name}, {lanes} lanes: {e}"));
    assert_eq!(program.target.vector_lanes, lanes);
    let mut kir = KernelInterpreter::new(program.clone()).expect("kernel interpreter");
    for (&id, t) in &feeds {
        kir.set(id, &t.data).expect("set");
    }
    kir.run().unwrap_or_else(|e| panic!("{name}, {lanes} lanes: {e}"));
    for id in graph.node_ids().filter(|&id| !graph.node(id).op.is_leaf() && observable.contains(&id)) {
        let what = format!("{name}, {lanes} lanes: {}", graph.node(id).name);
        assert_close(&what, kir.get(id).unwrap(), &want[id.index()].data, REL);
    }
    for &(leaf, new) in &graph.updates {
        let what = format!("{name}, {lanes} lanes: updated {}", graph.node(leaf).name);
        assert_close(&what, kir.get(leaf).unwrap(), &want[new.index()].data, REL);
    }
    program
}

fn run(checks: Vec<Check>, lanes: usize) {
    for c in &checks {
        check(&c.name, &c.graph, c.batch, c.seed, lanes);
    }
}

fn lenet_training() -> Graph {
    let source = include_str!("../../examples/lenet.net");
    let forward = kiln_compiler::frontend::compile_str(source).expect("lenet.net compiles").graph;
    derive_training(&forward, Loss::CrossEntropy, Sgd { lr: 0.01, momentum: 0.9, ..Sgd::default() }).unwrap()
}

#[test]
fn convolutions_on_8_and_16_lanes_match_the_graph_interpreter() {
    for lanes in [8, 16] {
        run([cases::conv2d_every_option(), cases::conv2d_weight_gradient_across_rows()].concat(), lanes);
        run(cases::conv2d_input_gradient_scattered(), lanes);
    }
}

#[test]
fn lenet_training_step_on_8_lanes_is_laid_out_for_8_lanes() {
    let program = check("lenet", &lenet_training(), 2, 7, 8);
    let names: Vec<&str> = program.buffers.iter().map(|b| b.name.as_str()).collect();
    // Weights are splatted to 8-lane vectors, not 4.
    assert!(names.contains(&"conv1.weight_x8"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with("_x4")), "{names:?}");
    let splat = program.buffers.iter().find(|b| b.name == "conv1.weight_x8").unwrap();
    assert_eq!(splat.len, 6 * 75 * 8);
}

#[test]
fn dense_pooling_and_layout_ops_on_8_lanes() {
    let checks = [
        cases::mlp_every_activation_and_loss(),
        cases::pooling_every_option(),
        cases::resize_nearest_and_bilinear(),
        cases::concat_and_slice(),
        cases::value_used_twice_and_residual(),
    ]
    .concat();
    run(checks, 8);
}

#[test]
fn cranelift_refuses_a_program_for_another_width() {
    let graph = lenet_training();
    match jit::compile_with(&CraneliftJit, &graph, 2, &options(8, false)) {
        Err(JitError::Codegen(e)) => {
            assert!(e.to_string().contains("scheduled for 8-lane vectors"), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("Cranelift compiled an 8-lane program"),
    }
    // The default target is the backend's own, which it compiles.
    assert!(jit::compile_with(&CraneliftJit, &graph, 2, &JitOptions { target: None, ..debug_options() }).is_ok());
}

#[test]
fn an_unusable_target_is_an_error() {
    let graph = lenet_training();
    let err = jit::plan(&graph, 2, &options(6, false)).unwrap_err();
    assert!(err.to_string().contains("power of two"), "{err}");
}
