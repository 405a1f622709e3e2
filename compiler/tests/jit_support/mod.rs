//! Shared helpers of the JIT tests: hand-built graphs, deterministic data,
//! and the differential comparison against the reference interpreter.
#![allow(dead_code)]

pub mod cases;
pub mod random_net;

use kiln_compiler::graph::{Graph, NodeId, Stage};
use kiln_compiler::interp;
use kiln_compiler::jit::{self, Executable, JitOptions};
use kiln_compiler::ops::{BatchNorm, Conv2d, Init, Op, PaddingMode, Pool2d};
use kiln_compiler::shape::{Dim, Shape, window_output_len};
use kiln_compiler::target::{ProductIsa, Target};
use kiln_compiler::tensor::Tensor;
use std::collections::HashMap;

/// A shape `[N, dims...]`.
pub fn batched(dims: &[usize]) -> Shape {
    let mut v = vec![Dim::batch()];
    v.extend(dims.iter().map(|&d| Dim::fixed(d)));
    Shape(v)
}

/// Adds an input `[N, dims...]`.
pub fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    let id = g.add(name, Op::Input, batched(dims), vec![], Stage::Forward);
    g.inputs.push(id);
    id
}

/// Adds a parameter of fixed shape.
pub fn param(g: &mut Graph, name: &str, dims: &[usize], fan_in: usize) -> NodeId {
    let id = g.add(name, Op::param(fan_in), Shape::fixed(dims), vec![], Stage::Forward);
    g.params.push(id);
    id
}

/// Adds an evaluation-mode batch normalisation of axis 1 of `x`, with its
/// running statistics and, when `affine`, weight and bias.
pub fn batch_norm(g: &mut Graph, name: &str, x: NodeId, affine: bool, eps: f32, momentum: f32) -> NodeId {
    let c = g.node(x).shape.0[1].factor;
    let mut leaf = |key: &str, op: Op| {
        let id = g.add(format!("{name}.{key}"), op, Shape::fixed(&[c]), vec![], Stage::Forward);
        g.params.push(id);
        id
    };
    let mut inputs = vec![x];
    let affine_leaves = if affine {
        vec![leaf("weight", Op::Param { init: Init::Fill(1.0) }), leaf("bias", Op::Param { init: Init::Fill(0.0) })]
    } else {
        Vec::new()
    };
    inputs.push(leaf("running_mean", Op::Buffer { fill: 0.0 }));
    inputs.push(leaf("running_var", Op::Buffer { fill: 1.0 }));
    inputs.extend(affine_leaves);
    let shape = g.node(x).shape.clone();
    g.add(name, Op::BatchNorm(BatchNorm { eps, momentum }), shape, inputs, Stage::Forward)
}

/// A conv attribute set.
pub fn conv_attrs(k: usize, stride: usize, padding: usize, dilation: usize, mode: PaddingMode) -> Conv2d {
    Conv2d {
        kernel: [k, k],
        stride: [stride, stride],
        padding: [padding, padding],
        dilation: [dilation, dilation],
        padding_mode: mode,
    }
}

/// Adds a conv layer (weight, optional bias, conv node) on `x` `[N, C, H, W]`.
pub fn conv(g: &mut Graph, name: &str, x: NodeId, out_c: usize, c: Conv2d, bias: bool) -> NodeId {
    let xs = g.node(x).shape.clone();
    let (ch, h, w) = (xs.0[1].factor, xs.0[2].factor, xs.0[3].factor);
    let fan_in = ch * c.kernel[0] * c.kernel[1];
    let wt = param(g, &format!("{name}.weight"), &[out_c, ch, c.kernel[0], c.kernel[1]], fan_in);
    let mut ins = vec![x, wt];
    if bias {
        ins.push(param(g, &format!("{name}.bias"), &[out_c], fan_in));
    }
    let oh = window_output_len(h, c.kernel[0], c.stride[0], c.padding[0], c.dilation[0]).unwrap();
    let ow = window_output_len(w, c.kernel[1], c.stride[1], c.padding[1], c.dilation[1]).unwrap();
    g.add(name, Op::Conv2d(c), batched(&[out_c, oh, ow]), ins, Stage::Forward)
}

/// Adds a linear layer on `x` `[N, in]`.
pub fn linear(g: &mut Graph, name: &str, x: NodeId, out_f: usize, bias: bool) -> NodeId {
    let inf = g.node(x).shape.0[1].factor;
    let wt = param(g, &format!("{name}.weight"), &[out_f, inf], inf);
    let mut ins = vec![x, wt];
    if bias {
        ins.push(param(g, &format!("{name}.bias"), &[out_f], inf));
    }
    g.add(name, Op::Linear, batched(&[out_f]), ins, Stage::Forward)
}

/// Adds an op whose output has the input's shape.
pub fn same_shape(g: &mut Graph, name: &str, op: Op, x: NodeId) -> NodeId {
    let s = g.node(x).shape.clone();
    g.add(name, op, s, vec![x], Stage::Forward)
}

/// Adds a pooling op.
pub fn pool(g: &mut Graph, name: &str, x: NodeId, p: Pool2d, max: bool) -> NodeId {
    let xs = g.node(x).shape.clone();
    let (ch, h, w) = (xs.0[1].factor, xs.0[2].factor, xs.0[3].factor);
    let oh = window_output_len(h, p.kernel[0], p.stride[0], p.padding[0], p.dilation[0]).unwrap();
    let ow = window_output_len(w, p.kernel[1], p.stride[1], p.padding[1], p.dilation[1]).unwrap();
    let op = if max { Op::MaxPool2d(p) } else { Op::AvgPool2d(p) };
    g.add(name, op, batched(&[ch, oh, ow]), vec![x], Stage::Forward)
}

/// A pool attribute set.
pub fn pool_attrs(k: usize, stride: usize, padding: usize, dilation: usize) -> Pool2d {
    Pool2d { kernel: [k, k], stride: [stride, stride], padding: [padding, padding], dilation: [dilation, dilation] }
}

/// Adds a reshape to `[N, features]`.
pub fn flatten(g: &mut Graph, name: &str, x: NodeId) -> NodeId {
    let features: usize = g.node(x).shape.0[1..].iter().map(|d| d.factor).product();
    g.add(name, Op::Reshape, batched(&[features]), vec![x], Stage::Forward)
}

/// The lecture's LeNet forward graph.
pub fn lenet() -> Graph {
    use kiln_compiler::ops::Activation::Relu;
    let mut g = Graph::new("LeNet");
    let x = input(&mut g, "x", &[3, 32, 32]);
    let c1 = conv(&mut g, "conv1", x, 6, conv_attrs(5, 1, 0, 1, PaddingMode::Zeros), true);
    let r1 = same_shape(&mut g, "relu1", Op::Activate(Relu), c1);
    let p1 = pool(&mut g, "pool1", r1, pool_attrs(2, 2, 0, 1), true);
    let c2 = conv(&mut g, "conv2", p1, 16, conv_attrs(5, 1, 0, 1, PaddingMode::Zeros), true);
    let r2 = same_shape(&mut g, "relu2", Op::Activate(Relu), c2);
    let p2 = pool(&mut g, "pool2", r2, pool_attrs(2, 2, 0, 1), true);
    let f = flatten(&mut g, "flat", p2);
    let f1 = linear(&mut g, "fc1", f, 120, true);
    let r3 = same_shape(&mut g, "relu3", Op::Activate(Relu), f1);
    let f2 = linear(&mut g, "fc2", r3, 84, true);
    let r4 = same_shape(&mut g, "relu4", Op::Activate(Relu), f2);
    let f3 = linear(&mut g, "fc3", r4, 10, true);
    g.outputs.push(f3);
    g
}

/// A small deterministic generator (xorshift) for test data.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in `[-1, 1)`.
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values in `[-scale, scale)`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Random values for every leaf of `graph` (labels in `0..classes`, ±1
/// targets for the perceptron), as interpreter feeds.
pub fn random_feeds(graph: &Graph, batch: usize, seed: u64) -> HashMap<NodeId, Tensor> {
    let mut rng = Rng(seed | 1);
    let mut feeds = HashMap::new();
    let classes = graph.outputs.first().map(|&o| graph.node(o).shape.at_batch(batch).last().copied().unwrap_or(1));
    let perceptron = graph.training.as_ref().is_some_and(|t| t.loss_fn == kiln_compiler::ops::Loss::Perceptron);
    for id in graph.node_ids() {
        let node = graph.node(id);
        let shape = node.shape.at_batch(batch);
        let n: usize = shape.iter().product();
        let data = match node.op {
            Op::Input => rng.vec(n, 1.0),
            Op::Param { init: Init::Uniform { fan_in } } => rng.vec(n, 1.0 / (fan_in.max(1) as f32).sqrt()),
            // Away from a normalisation layer's 1 and 0, so that a swapped
            // weight and bias shows.
            Op::Param { init: Init::Fill(v) } => rng.vec(n, 0.5).into_iter().map(|r| v + r).collect(),
            // Running variances must stay positive.
            Op::Buffer { fill } => rng.vec(n, 0.5).into_iter().map(|r| fill + r.abs()).collect(),
            Op::Labels => (0..n)
                .map(|_| {
                    ((rng.next() + 1.0) * 0.5 * classes.unwrap_or(1) as f32)
                        .floor()
                        .min(classes.unwrap_or(1) as f32 - 1.0)
                })
                .collect(),
            Op::Target if perceptron => (0..n).map(|_| if rng.next() > 0.0 { 1.0 } else { -1.0 }).collect(),
            Op::Target => rng.vec(n, 1.0),
            Op::OptimState => rng.vec(n, 0.1),
            Op::Hyper { initial } => vec![initial],
            _ => continue,
        };
        feeds.insert(id, Tensor::new(shape, data).unwrap());
    }
    feeds
}

/// Compiles `graph` and sets every leaf from `feeds`.
pub fn compile_with(graph: &Graph, batch: usize, feeds: &HashMap<NodeId, Tensor>, options: &JitOptions) -> Executable {
    let mut exe = jit::compile(graph, batch, options).unwrap_or_else(|e| panic!("compile failed: {e}"));
    for (&id, t) in feeds {
        exe.set(id, &t.data).unwrap();
    }
    exe
}

/// Options for differential tests: one thread, verifier on, every value kept.
pub fn debug_options() -> JitOptions {
    JitOptions { threads: 1, verify: true, keep_all: true, inspect: false, input_grads: false, target: None }
}

/// Asserts `got` matches `want` within `rel` relative error, measured
/// against the larger of the element and the tensor's largest magnitude (an
/// element that cancels to near zero carries the rounding error of its
/// terms, which are on the tensor's scale). Returns the worst error as a
/// fraction of its tolerance.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        // The absolute floor (1e-7, f32 resolution at magnitude 1) covers
        // reductions whose result cancels far below its terms, e.g. a bias
        // gradient of 1e-4 summed from terms of 1e-1 in another order.
        let tol = rel * b.abs().max(scale) + 1e-7;
        let err = if a == b { 0.0 } else { (a - b).abs() };
        worst = worst.max(err / tol);
        assert!(
            err <= tol || (a.is_nan() && b.is_nan()),
            "{what}[{i}]: jit {a} vs interpreter {b} (tolerance {tol}, tensor scale {scale})"
        );
    }
    if std::env::var_os("KILN_TEST_VERBOSE").is_some() {
        eprintln!("{what}: worst error {worst:.3} of tolerance");
    }
    worst
}

/// Runs `graph` once through the JIT and the interpreter (a training step
/// when it has a training section) and compares every node's value.
pub fn differential(graph: &Graph, batch: usize, seed: u64, rel: f32) {
    let feeds = random_feeds(graph, batch, seed);
    let want = interp::evaluate(graph, batch, &feeds).expect("interpreter");
    for isa in product_isas() {
        let options = JitOptions { target: Some(Target::host().with_products(isa)), ..debug_options() };
        let mut exe = compile_with(graph, batch, &feeds, &options);
        exe.run().unwrap();
        compare(graph, &exe, &want, rel, isa);
    }
}

/// Every product ISA this CPU runs, narrowest first (the 128-bit path
/// always); says which ones cannot be tested here.
pub fn product_isas() -> Vec<ProductIsa> {
    let (have, lack): (Vec<_>, Vec<_>) = ProductIsa::ALL.into_iter().partition(|isa| isa.available());
    if !lack.is_empty() {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| eprintln!("this CPU has no {lack:?}: those product paths are not run"));
    }
    have
}

/// Every non-leaf value and every update of `exe` against the interpreter's.
fn compare(graph: &Graph, exe: &Executable, want: &[Tensor], rel: f32, isa: ProductIsa) {
    for id in graph.node_ids() {
        let node = graph.node(id);
        if node.op.is_leaf() {
            continue;
        }
        // A parameter updated in place no longer holds its input value.
        let got = exe.get(id).unwrap();
        assert_close(&format!("{} ({}) on {isa}", node.name, node.op.mnemonic()), got, &want[id.index()].data, rel);
    }
    for &(leaf, new) in &graph.updates {
        assert_close(
            &format!("updated {} on {isa}", graph.node(leaf).name),
            exe.get(leaf).unwrap(),
            &want[new.index()].data,
            rel,
        );
    }
}
