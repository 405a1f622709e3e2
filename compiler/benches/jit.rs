//! Criterion benchmarks: each op's JIT kernel against the reference
//! interpreter, and the GFLOP/s of conv and linear kernels (throughput in
//! "elements" = flops) next to the measured 128-bit FMA peak of one thread.
//!
//! `cargo bench -p kiln-compiler --bench jit` (run on a quiet machine).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_compiler::codegen::peak::measure_fma_peak;
use kiln_compiler::graph::{Graph, NodeId, Stage};
use kiln_compiler::interp;
use kiln_compiler::jit::{self, JitOptions};
use kiln_compiler::ops::{Activation, Conv2d, Loss, Op, PaddingMode, Pool2d, Resize, ResizeMode, Sgd};
use kiln_compiler::shape::{Dim, Shape};
use kiln_compiler::tensor::Tensor;
use std::collections::HashMap;
use std::time::Duration;

fn batched(dims: &[usize]) -> Shape {
    let mut v = vec![Dim::batch()];
    v.extend(dims.iter().map(|&d| Dim::fixed(d)));
    Shape(v)
}

fn leaf(g: &mut Graph, name: &str, op: Op, shape: Shape) -> NodeId {
    let id = g.add(name, op, shape, vec![], Stage::Forward);
    if matches!(g.node(id).op, Op::Input) {
        g.inputs.push(id);
    } else {
        g.params.push(id);
    }
    id
}

fn conv(k: usize) -> Conv2d {
    Conv2d { kernel: [k, k], stride: [1, 1], padding: [0, 0], dilation: [1, 1], padding_mode: PaddingMode::Zeros }
}

/// One-op graphs at the LeNet's shapes: (name, graph, flops per run at batch 64).
fn cases() -> Vec<(&'static str, Graph, u64)> {
    let n = 64u64;
    let mut out = Vec::new();
    // conv1: 3 -> 6, k5 on 32x32, with bias and ReLU (fused).
    let mut g = Graph::new("conv1");
    let x = leaf(&mut g, "x", Op::Input, batched(&[3, 32, 32]));
    let w = leaf(&mut g, "w", Op::param(75), Shape::fixed(&[6, 3, 5, 5]));
    let b = leaf(&mut g, "b", Op::param(75), Shape::fixed(&[6]));
    let c = g.add("conv1", Op::Conv2d(conv(5)), batched(&[6, 28, 28]), vec![x, w, b], Stage::Forward);
    let r = g.add("relu", Op::Activate(Activation::Relu), batched(&[6, 28, 28]), vec![c], Stage::Forward);
    g.outputs.push(r);
    out.push(("conv1+relu", g, 2 * n * 6 * 75 * 784));
    // conv2: 6 -> 16, k5 on 14x14.
    let mut g = Graph::new("conv2");
    let x = leaf(&mut g, "x", Op::Input, batched(&[6, 14, 14]));
    let w = leaf(&mut g, "w", Op::param(150), Shape::fixed(&[16, 6, 5, 5]));
    let c = g.add("conv2", Op::Conv2d(conv(5)), batched(&[16, 10, 10]), vec![x, w], Stage::Forward);
    g.outputs.push(c);
    out.push(("conv2", g, 2 * n * 16 * 150 * 100));
    // conv2 backward: input and weight gradients.
    let mut g = Graph::new("conv2_grads");
    let x = leaf(&mut g, "x", Op::Input, batched(&[6, 14, 14]));
    let w = leaf(&mut g, "w", Op::param(150), Shape::fixed(&[16, 6, 5, 5]));
    let dy = leaf(&mut g, "dy", Op::Input, batched(&[16, 10, 10]));
    let dx = g.add("dx", Op::Conv2dGradInput(conv(5)), batched(&[6, 14, 14]), vec![dy, w], Stage::Backward);
    let dw = g.add("dw", Op::Conv2dGradWeight(conv(5)), Shape::fixed(&[16, 6, 5, 5]), vec![x, dy], Stage::Backward);
    g.outputs.extend([dx, dw]);
    out.push(("conv2 grads", g, 4 * n * 16 * 150 * 100));
    // fc1: 400 -> 120 with ReLU.
    let mut g = Graph::new("fc1");
    let x = leaf(&mut g, "x", Op::Input, batched(&[400]));
    let w = leaf(&mut g, "w", Op::param(400), Shape::fixed(&[120, 400]));
    let b = leaf(&mut g, "b", Op::param(400), Shape::fixed(&[120]));
    let y = g.add("fc1", Op::Linear, batched(&[120]), vec![x, w, b], Stage::Forward);
    let r = g.add("relu", Op::Activate(Activation::Relu), batched(&[120]), vec![y], Stage::Forward);
    g.outputs.push(r);
    out.push(("fc1+relu", g, 2 * n * 400 * 120));
    // max pool 2x2 on conv1's output.
    let p = Pool2d { kernel: [2, 2], stride: [2, 2], padding: [0, 0], dilation: [1, 1] };
    let mut g = Graph::new("pool");
    let x = leaf(&mut g, "x", Op::Input, batched(&[6, 28, 28]));
    let y = g.add("pool", Op::MaxPool2d(p), batched(&[6, 14, 14]), vec![x], Stage::Forward);
    g.outputs.push(y);
    out.push(("max_pool 2x2", g, n * 6 * 28 * 28));
    // bilinear resize.
    let r = Resize { size: [56, 56], mode: ResizeMode::Bilinear, align_corners: false, inverse_scale: None };
    let mut g = Graph::new("resize");
    let x = leaf(&mut g, "x", Op::Input, batched(&[6, 28, 28]));
    let y = g.add("resize", Op::Resize(r), batched(&[6, 56, 56]), vec![x], Stage::Forward);
    g.outputs.push(y);
    out.push(("bilinear resize", g, 8 * n * 6 * 56 * 56));
    // sigmoid over conv1's output.
    let mut g = Graph::new("sigmoid");
    let x = leaf(&mut g, "x", Op::Input, batched(&[6, 28, 28]));
    let y = g.add("sigmoid", Op::Activate(Activation::Sigmoid), batched(&[6, 28, 28]), vec![x], Stage::Forward);
    g.outputs.push(y);
    out.push(("sigmoid", g, 4 * n * 6 * 784));
    // softmax cross-entropy forward + backward (one kernel).
    let mut g = Graph::new("ce");
    let x = leaf(&mut g, "logits", Op::Input, batched(&[10]));
    let labels = g.add("labels", Op::Labels, batched(&[]), vec![], Stage::Loss);
    let l = g.add("loss", Op::LossValue(Loss::CrossEntropy), Shape::scalar(), vec![x, labels], Stage::Loss);
    let d = g.add("dlogits", Op::LossGrad(Loss::CrossEntropy), batched(&[10]), vec![x, labels], Stage::Loss);
    g.outputs.extend([l, d]);
    out.push(("cross-entropy fwd+bwd", g, 8 * n * 10));
    // SGD with momentum on fc1's weight.
    let s = Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let mut g = Graph::new("sgd");
    let p = leaf(&mut g, "p", Op::param(400), Shape::fixed(&[120, 400]));
    let gr = leaf(&mut g, "g", Op::Input, Shape::fixed(&[120, 400]));
    let buf = g.add("buf", Op::OptimState, Shape::fixed(&[120, 400]), vec![], Stage::Update);
    let nb = g.add("new_buf", Op::SgdMomentum(s), Shape::fixed(&[120, 400]), vec![p, gr, buf], Stage::Update);
    let lr = g.add("lr", Op::Hyper { initial: s.lr }, Shape::scalar(), vec![], Stage::Update);
    let np = g.add("new_p", Op::SgdStep(s), Shape::fixed(&[120, 400]), vec![p, gr, nb, lr], Stage::Update);
    g.outputs.extend([nb, np]);
    out.push(("sgd momentum 120x400", g, 4 * 120 * 400));
    out
}

fn feeds(g: &Graph, batch: usize) -> HashMap<NodeId, Tensor> {
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    g.node_ids()
        .filter(|&id| g.node(id).op.is_leaf())
        .map(|id| {
            let shape = g.node(id).shape.at_batch(batch);
            let len = shape.iter().product();
            let data = if matches!(g.node(id).op, Op::Labels) {
                (0..len).map(|i| (i % 10) as f32).collect()
            } else {
                (0..len).map(|_| next()).collect()
            };
            (id, Tensor::new(shape, data).unwrap())
        })
        .collect()
}

fn ops(c: &mut Criterion) {
    let peak = measure_fma_peak(1, Duration::from_millis(300)).unwrap_or(0.0);
    eprintln!("measured 128-bit FMA peak, one thread: {peak:.1} GFLOP/s");
    let batch = 64;
    for (name, g, flops) in cases() {
        let f = feeds(&g, batch);
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(flops));
        group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
        for threads in [1, 2] {
            let options = JitOptions { threads, verify: false, ..JitOptions::default() };
            let mut exe = jit::compile(&g, batch, &options).unwrap();
            for (&id, t) in &f {
                exe.set(id, &t.data).unwrap();
            }
            group.bench_function(format!("jit {threads} thread(s)"), |b| b.iter(|| exe.run().unwrap()));
        }
        group.bench_function("interpreter", |b| b.iter(|| interp::evaluate(&g, batch, &f).unwrap()));
        group.finish();
    }
}

criterion_group!(benches, ops);
criterion_main!(benches);
