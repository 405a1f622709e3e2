//! How the filetests' inputs were made: real programs of small nets, printed
//! at the stage a filetest starts from, then trimmed to the kernels a test
//! is about (the other kernels dropped, the buffers they alone used
//! dropped, the rest renumbered in order).
//!
//! ```text
//! KIR_DUMP_DIR=/tmp/kir cargo test -p kiln-compiler --test filetests -- --ignored dump_stage_inputs
//! ```
//!
//! writes `NAME.built.kir` (what `schedule` takes: unscheduled tiles, every
//! loop serial), `NAME.scheduled.kir` (what `plan_memory` takes: no offsets
//! yet) and `NAME.planned.kir` (what `jit::plan` returns) for each net below.

use kiln_compiler::autodiff::derive_training;
use kiln_compiler::frontend::compile_str;
use kiln_compiler::graph::{Graph, NodeId};
use kiln_compiler::kernel::{BufId, build_program, write_program};
use kiln_compiler::ops::{Loss, Sgd};
use kiln_compiler::passes::{fuse, plan_memory, schedule};
use std::collections::HashSet;

/// Threads the dumped programs are scheduled for.
const THREADS: usize = 2;

/// `(name, declaration, batch, training)`.
const NETS: &[(&str, &str, usize, bool)] = &[
    (
        "linear_relu",
        "struct M { fc: Linear(256, 64) }
         fn forward(x: [N, 256]) -> [N, 64] { relu(fc(x)) }",
        64,
        false,
    ),
    (
        "elementwise_chain",
        "struct M { }
         fn forward(x: [N, 3, 32, 32]) -> [N, 3, 32, 32] { let y = tanh(x); let z = relu(y * y); z + x }",
        8,
        false,
    ),
    (
        "two_convs",
        "struct M { conv1: Conv2d(1, 2, 3), conv2: Conv2d(2, 4, 3), pad: Conv2d(4, 4, 3, padding = 1), fc: Linear(4 * 6 * 6, 3) }
         fn forward(x: [N, 1, 10, 10]) -> [N, 3] {
             let x = relu(conv1(x));
             let x = relu(conv2(x));
             let x = relu(pad(x));
             fc(x.flatten(1))
         }",
        2,
        true,
    ),
    (
        "lenet_like",
        "struct M { conv1: Conv2d(3, 6, 5), conv2: Conv2d(6, 16, 5), fc: Linear(16 * 5 * 5, 10), pool: MaxPool2d(2, 2) }
         fn forward(x: [N, 3, 32, 32]) -> [N, 10] {
             let x = pool(relu(conv1(x)));
             let x = pool(relu(conv2(x)));
             fc(x.flatten(1))
         }",
        4,
        true,
    ),
    (
        "mlp3",
        "struct M { fc1: Linear(64, 32), fc2: Linear(32, 32), fc3: Linear(32, 32) }
         fn forward(x: [N, 64]) -> [N, 32] {
             let h1 = relu(fc1(x));
             let h2 = relu(fc2(h1));
             fc3(h2) + h2
         }",
        4,
        false,
    ),
    (
        "sgd_update",
        "struct M { fc: Linear(16, 4) }
         fn forward(x: [N, 16]) -> [N, 4] { fc(x) }",
        4,
        true,
    ),
];

/// The nodes `jit::plan` keeps observable (outputs, leaves, the loss,
/// parameter gradients and updates), without input gradients.
fn observable(graph: &Graph) -> HashSet<NodeId> {
    let mut keep: HashSet<NodeId> = graph.outputs.iter().copied().collect();
    keep.extend(graph.node_ids().filter(|&n| graph.node(n).op.is_leaf()));
    if let Some(t) = &graph.training {
        keep.insert(t.loss);
        keep.extend(t.param_grads.iter().map(|&(_, g)| g));
    }
    keep.extend(graph.updates.iter().map(|&(_, n)| n));
    keep
}

#[test]
#[ignore = "writes the filetests' raw inputs; run by hand with KIR_DUMP_DIR set"]
fn dump_stage_inputs() {
    let dir = std::env::var("KIR_DUMP_DIR").expect("set KIR_DUMP_DIR to the directory to write to");
    std::fs::create_dir_all(&dir).expect("create KIR_DUMP_DIR");
    for &(name, source, batch, training) in NETS {
        let mut graph = compile_str(source).unwrap_or_else(|d| panic!("{name}: {d:?}")).graph;
        if training {
            let sgd = Sgd { lr: 0.01, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
            graph = derive_training(&graph, Loss::CrossEntropy, sgd).expect("derive_training");
        }
        let keep_nodes = observable(&graph);
        let fusion = fuse(&graph, &keep_nodes);
        let built = build_program(&graph, &fusion, batch, kiln_compiler::target::Target::baseline())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let scheduled = schedule(built.clone(), THREADS);
        let keep: HashSet<BufId> = keep_nodes.iter().filter_map(|&n| scheduled.value_buffer(n)).collect();
        let mut keep_list: Vec<BufId> = keep.iter().copied().collect();
        keep_list.sort();
        let planned = plan_memory(scheduled.clone(), &keep);
        let write = |stage: &str, text: String| {
            std::fs::write(format!("{dir}/{name}.{stage}.kir"), text).expect("write dump");
        };
        write("built", write_program(&built));
        write("scheduled", format!("; keep {keep_list:?}\n{}", write_program(&scheduled)));
        write("planned", write_program(&planned));
    }
}
