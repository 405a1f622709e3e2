//! Three tiers, each pair within 1e-5 relative (`assert_close`):
//!
//! - graph interpreter = kernel-IR interpreter: lowering, scheduling and
//!   memory planning, without code generation;
//! - kernel-IR interpreter = JIT: code generation alone, on the very
//!   program the interpreter ran.
//!
//! Over the op x option table of `jit_ops`, the lecture's LeNet
//! (`examples/lenet.net`) and a sample of random graphs, forward and
//! training step. Each group also asserts which matrix-product layouts its
//! programs contained, so a lowering that silently stops using one shows.

mod jit_support;

use jit_support::cases::{self, Check};
use jit_support::random_net::random_net;
use jit_support::*;
use kiln_compiler::autodiff::derive_training;
use kiln_compiler::graph::Graph;
use kiln_compiler::graph::NodeId;
use kiln_compiler::interp;
use kiln_compiler::jit::{self, JitOptions};
use kiln_compiler::kernel::{Bias, Gemm, GemmTile, KernelInterpreter, Program};
use kiln_compiler::ops::{Loss, Sgd};
use kiln_compiler::target::{ProductIsa, Target};
use kiln_compiler::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};

const REL: f32 = 1e-5;

/// The matrix-product forms a set of programs contained: layout flag -> count.
#[derive(Default, Debug)]
struct GemmForms(BTreeMap<&'static str, usize>);

impl GemmForms {
    fn add_program(&mut self, program: &Program) {
        for g in program.kernels.iter().flat_map(|k| k.gemms()) {
            self.add_gemm(g);
        }
    }

    fn add_gemm(&mut self, g: &Gemm) {
        let e = &g.epilogue;
        let micro = matches!(g.tile, GemmTile::Micro { .. });
        // Only wraps the JIT takes count (a 128-bit tile ignores one that
        // does not fit; the micro-kernels take every wrap).
        let wraps = |w: Option<kiln_compiler::kernel::ColumnWrap>| w.is_some_and(|w| micro || w.fits(g.n, 4));
        for (form, present) in [
            ("outer tile", matches!(g.tile, GemmTile::Outer { .. })),
            ("dot tile", matches!(g.tile, GemmTile::Dot { .. })),
            ("micro tile", micro),
            ("b_rows as row table", g.b_rows.is_some() && g.k_split.is_none()),
            ("b_rows as column table", g.b_rows.is_some() && g.k_split.is_some()),
            ("k_split", g.k_split.is_some()),
            ("k_split wrapping", g.k_split.is_some_and(|s| s.wraps(g.k, 4))),
            ("k_split segmented", g.k_split.is_some_and(|s| !s.wraps(g.k, 4))),
            ("b_wrap", wraps(g.b_wrap)),
            ("c_rows + c_wrap", g.c_rows.is_some() && wraps(g.c_wrap)),
            ("a_splat", g.a_splat),
            ("accumulate", e.accumulate),
            ("bias per row", matches!(e.bias, Some(Bias::PerRow(..)))),
            ("bias per column", matches!(e.bias, Some(Bias::PerColumn(..)))),
            ("activation", e.activation.is_some()),
            ("pre_activation", e.pre_activation.is_some()),
            ("grad_mask", e.grad_mask.is_some()),
        ] {
            if present {
                *self.0.entry(form).or_default() += 1;
            }
        }
    }

    fn assert_has(&self, forms: &[&str]) {
        for form in forms {
            assert!(self.0.get(form).is_some_and(|&n| n > 0), "no product with {form}; seen: {:?}", self.0);
        }
    }
}

/// What a group of checks saw: the products its programs held, and the
/// worst error of each tier as a fraction of its tolerance.
#[derive(Default)]
struct Tally {
    forms: GemmForms,
    lowering: f32,
    codegen: f32,
}

/// Runs `graph` through all three executors (a training step when it has
/// a training section) and compares every observable node's value (with
/// `keep_all`, every node's); records the program's products in `forms`.
fn three_way(name: &str, graph: &Graph, batch: usize, seed: u64, keep_all: bool, tally: &mut Tally) {
    let feeds = random_feeds(graph, batch, seed);
    let want = interp::evaluate(graph, batch, &feeds).expect("graph interpreter");
    for isa in product_isas() {
        let options = JitOptions { keep_all, target: Some(Target::host().with_products(isa)), ..debug_options() };
        three_way_on(&format!("{name} on {isa}"), graph, batch, (&feeds, &want), &options, tally);
    }
}

/// [`three_way`] on one target.
fn three_way_on(
    name: &str,
    graph: &Graph,
    batch: usize,
    (feeds, want): (&HashMap<NodeId, Tensor>, &[Tensor]),
    options: &JitOptions,
    tally: &mut Tally,
) {
    let (program, observable) = jit::plan(graph, batch, options).expect("plan");
    tally.forms.add_program(&program);
    let mut kir = KernelInterpreter::new(program).expect("kernel interpreter");
    for (&id, t) in feeds {
        kir.set(id, &t.data).expect("set");
    }
    kir.run().unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut exe = compile_with(graph, batch, feeds, options);
    exe.run().unwrap();
    let mut compare = |what: String, node, want: &[f32]| {
        let kernel_ir = kir.get(node).unwrap_or_else(|e| panic!("{name}: {e}"));
        let l = assert_close(&format!("{name}: graph vs kernel IR: {what}"), kernel_ir, want, REL);
        let c = assert_close(&format!("{name}: kernel IR vs JIT: {what}"), exe.get(node).unwrap(), kernel_ir, REL);
        tally.lowering = tally.lowering.max(l);
        tally.codegen = tally.codegen.max(c);
    };
    for id in graph.node_ids().filter(|&id| !graph.node(id).op.is_leaf() && observable.contains(&id)) {
        let node = graph.node(id);
        compare(format!("{} ({})", node.name, node.op.mnemonic()), id, &want[id.index()].data);
    }
    for &(leaf, new) in &graph.updates {
        compare(format!("updated {}", graph.node(leaf).name), leaf, &want[new.index()].data);
    }
}

/// Runs each check twice: every node kept (each value compared), and
/// only the observable ones (outputs, loss, gradients, updates), which is
/// what lets fusion put activation backwards into products' epilogues.
fn run_checks(checks: Vec<Check>) -> GemmForms {
    let mut tally = Tally::default();
    for c in &checks {
        for keep_all in [true, false] {
            three_way(&c.name, &c.graph, c.batch, c.seed, keep_all, &mut tally);
        }
    }
    if std::env::var_os("KILN_TEST_VERBOSE").is_some() {
        eprintln!("worst of tolerance: lowering {:.3}, codegen {:.3}", tally.lowering, tally.codegen);
    }
    tally.forms
}

#[test]
fn convolutions_every_option() {
    let forms = run_checks([cases::conv2d_every_option(), cases::conv2d_with_activation_epilogues()].concat());
    forms.assert_has(&[
        "outer tile",
        "dot tile",
        "b_rows as row table",
        "k_split segmented",
        "a_splat",
        "accumulate",
        "bias per row",
        "bias per column",
        "activation",
    ]);
}

#[test]
fn convolutions_wrapping_rows() {
    let forms =
        run_checks([cases::conv2d_weight_gradient_across_rows(), cases::conv2d_input_gradient_scattered()].concat());
    forms.assert_has(&["b_rows as column table", "k_split wrapping", "b_wrap", "c_rows + c_wrap", "accumulate"]);
}

#[test]
fn convolutions_input_gradient_gathered() {
    let forms = run_checks(cases::conv2d_input_gradient_gathered());
    // On a CPU with a wide ISA, the gradients ran as forward products with
    // the activation's derivative in their epilogue.
    if ProductIsa::Avx2.available() || ProductIsa::Avx512.available() {
        forms.assert_has(&["micro tile", "b_wrap", "grad_mask"]);
    }
}

#[test]
fn dense_layers_losses_and_optimizers() {
    let forms = run_checks(
        [
            cases::mlp_every_activation_and_loss(),
            cases::perceptron_loss(),
            cases::sgd_variants(),
            cases::adam_variants(),
        ]
        .concat(),
    );
    forms.assert_has(&["bias per column", "activation", "pre_activation", "grad_mask"]);
}

#[test]
fn pooling_resizing_and_layout() {
    run_checks(
        [
            cases::pooling_every_option(),
            cases::resize_nearest_and_bilinear(),
            cases::binary_broadcast_neg_and_sum_to(),
            cases::concat_and_slice(),
            cases::value_used_twice_and_residual(),
            cases::softmax_every_axis(),
            cases::batch_norm_both_modes(),
            cases::dropout_in_both_modes(),
        ]
        .concat(),
    );
}

fn lecture_lenet() -> Graph {
    let source = include_str!("../../examples/lenet.net");
    kiln_compiler::frontend::compile_str(source).expect("lenet.net compiles").graph
}

#[test]
fn lecture_lenet_forward_and_training_step() {
    let forward = lecture_lenet();
    let sgd = Sgd { lr: 0.01, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let train = derive_training(&forward, Loss::CrossEntropy, sgd).expect("autodiff");
    let forms = run_checks(vec![
        Check { name: "lenet forward".into(), graph: forward, batch: 2, seed: 7 },
        Check { name: "lenet training".into(), graph: train, batch: 2, seed: 11 },
    ]);
    // conv2's rows of 10 are not whole vectors: every wrapped layout is used.
    forms.assert_has(&[
        "b_wrap",
        "c_rows + c_wrap",
        "k_split wrapping",
        "b_rows as row table",
        "b_rows as column table",
        "a_splat",
        "bias per row",
        "bias per column",
        "activation",
    ]);
}

#[test]
fn random_graphs_forward_and_training_step() {
    let mut rng = Rng(0x6b69_6c6e);
    let sgd = Sgd { lr: 0.05, momentum: 0.9, nesterov: false, weight_decay: 0.01 };
    let mut checks = Vec::new();
    for case in 0..25u64 {
        let seed = rng.0 ^ (case * 0x9e37_79b9);
        rng.next();
        let batch = 1 + (case % 3) as usize;
        let forward = random_net(seed);
        let loss = if case % 2 == 0 { Loss::CrossEntropy } else { Loss::Mse };
        let train = derive_training(&forward, loss, sgd).expect("autodiff");
        checks.push(Check { name: format!("random {case} forward"), graph: forward, batch, seed: seed ^ 0x5eed });
        checks.push(Check { name: format!("random {case} training"), graph: train, batch, seed: seed ^ 0x7ea1 });
    }
    let forms = run_checks(checks);
    forms.assert_has(&["outer tile", "dot tile"]);
    if ProductIsa::host() != ProductIsa::Vector128 {
        forms.assert_has(&["micro tile"]);
    }
}
