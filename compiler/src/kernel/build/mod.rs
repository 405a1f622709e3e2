//! Lowering of fused graph groups to loop nests (the kernel IR's front door).
//!
//! Every op of [`crate::ops::Op`] has a loop-nest form here. Convolutions and
//! linear layers become matrix products ([`Gemm`]) fed by im2col packing
//! loops; the rest are plain loop nests. Kernels come out unscheduled: every
//! loop serial, one thread, placeholder tiles; `passes::schedule` decides.
//!
//! This file holds the driver (`build_program`), the `Builder` state every
//! op's lowering shares, the dispatch of anchored groups, and the small loop
//! and epilogue helpers. Each op family's lowering lives in its own module as
//! further `impl Builder` methods.

mod access;
mod conv;
mod conv_input_grad;
mod conv_winograd;
mod elementwise;
mod layout;
mod linear;
mod loss;
mod norm;
mod norm_block;
mod pool;
mod reduce;
mod resize;
mod softmax;

pub(crate) use access::accesses;
pub(crate) use elementwise::{activation_expr, activation_grad_expr};

use super::*;
use crate::graph::{Graph, NodeId};
use crate::ops::{Activation, Op, Pool2d};
use crate::passes::fuse::{Fusion, GroupKind};
use std::collections::HashMap;

/// Why a graph could not be lowered to kernels.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum BuildError {
    /// The node's op or operand shapes have no kernel form.
    #[error("node {name} ({op}) cannot be compiled: {reason}")]
    Unsupported {
        /// The node's name.
        name: String,
        /// The op's mnemonic.
        op: String,
        /// Why.
        reason: String,
    },
}

/// A kernel's loop nest and its flop count.
type KernelBody = (Vec<Stmt>, u64);

/// The tile written by the builder; scheduling replaces it.
const UNSCHEDULED_OUTER: GemmTile = GemmTile::Outer { rows: 1, vectors: 1, unroll: 1 };
const UNSCHEDULED_DOT: GemmTile = GemmTile::Dot { rows: 1, cols: 1, steps: DotSteps::Rolled(1) };

/// A product laid out for `isa`'s micro-kernels (see `passes::layout`).
fn unscheduled_micro(isa: ProductIsa) -> GemmTile {
    GemmTile::Micro { isa, rows: 1, vectors: 1, transposed: false }
}

/// Lowers each fused group of `graph` to kernels at batch size `batch`.
///
/// The result has buffers for leaves, materialised values and scratch, and
/// kernels in the groups' order; offsets are not assigned yet.
/// `target` sets the vector width the kernels are laid out for (weight
/// splats, which output rows are whole vectors).
pub fn build_program(graph: &Graph, fusion: &Fusion, batch: usize, target: Target) -> Result<Program, BuildError> {
    let mut b = Builder {
        graph,
        batch,
        prog: Program {
            buffers: Vec::new(),
            kernels: Vec::new(),
            values: Vec::new(),
            updates: Vec::new(),
            offsets: Vec::new(),
            arena_len: 0,
            threads: 1,
            target,
        },
        value_buf: HashMap::new(),
        next_var: 0,
        next_acc: 0,
        live: fusion.groups.iter().flat_map(|g| g.nodes.iter().copied()).collect(),
        argmax: HashMap::new(),
        pre_kernels: Vec::new(),
        overrides: HashMap::new(),
    };
    for group in &fusion.groups {
        match group.kind {
            GroupKind::Leaf => {
                let id = group.nodes[0];
                let node = graph.node(id);
                let buf = b.prog.add_buffer(&node.name, node.shape.numel_at(batch), BufferKind::Leaf(id));
                b.value_buf.insert(id, buf);
            }
            GroupKind::Alias => {
                let id = group.nodes[0];
                let src = graph.node(id).inputs[0];
                let buf = b.value_buf[&src];
                b.value_buf.insert(id, buf);
            }
            _ => {
                for &id in &group.nodes {
                    if fusion.materialized.contains(&id) {
                        let node = graph.node(id);
                        let buf = b.prog.add_buffer(&node.name, node.shape.numel_at(batch), BufferKind::Value(id));
                        b.value_buf.insert(id, buf);
                    }
                }
                b.next_var = 0;
                b.next_acc = 0;
                let kernels = if group.kind == GroupKind::Elementwise {
                    vec![b.elementwise(&group.nodes)?]
                } else {
                    b.anchored(&group.nodes)?
                };
                b.prog.kernels.extend(kernels);
            }
        }
    }
    let mut values: Vec<(NodeId, BufId)> = b.value_buf.iter().map(|(&n, &buf)| (n, buf)).collect();
    values.sort();
    b.prog.values = values;
    for &(leaf, new) in &graph.updates {
        let (Some(&l), Some(&n)) = (b.value_buf.get(&leaf), b.value_buf.get(&new)) else {
            return Err(unsupported(graph, new, "an update node's value is not stored"));
        };
        b.prog.updates.push((l, n));
    }
    Ok(b.prog)
}

fn unsupported(graph: &Graph, id: NodeId, reason: impl Into<String>) -> BuildError {
    let node = graph.node(id);
    BuildError::Unsupported { name: node.name.clone(), op: node.op.mnemonic(), reason: reason.into() }
}

struct Builder<'g> {
    graph: &'g Graph,
    batch: usize,
    prog: Program,
    value_buf: HashMap<NodeId, BufId>,
    next_var: VarId,
    next_acc: AccId,
    /// Nodes that are computed (not eliminated).
    live: std::collections::HashSet<NodeId>,
    /// Kernels the group being built needs to run first (weight splats).
    pre_kernels: Vec<Kernel>,
    /// Buffers that stand in for nodes' values while one group is built
    /// (a product reading weights with a batch normalisation folded in).
    overrides: HashMap<NodeId, BufId>,
    /// Per max-pool `(input, attributes)` whose gradient is computed: the
    /// buffer where the forward kernel records each window's first maximum.
    argmax: HashMap<(NodeId, Pool2d), BufId>,
}

/// How the result of an anchored kernel is finished.
struct Finish {
    /// Buffer of the group's final value.
    out: BufId,
    /// A fused forward activation.
    activation: Option<Activation>,
    /// Buffer for the pre-activation value, when it is stored too.
    pre: Option<BufId>,
    /// A fused activation backward: derivative at `x`.
    mask: Option<(Activation, BufId)>,
}

/// A kernel with its access sets filled in from the body.
fn make_kernel(name: String, nodes: Vec<NodeId>, body: Vec<Stmt>, flops: u64) -> Kernel {
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    accesses(&body, &mut reads, &mut writes);
    reads.sort();
    reads.dedup();
    writes.sort();
    writes.dedup();
    Kernel { name, nodes, body, reads, writes, in_place: Vec::new(), flops, threads: 1, emission: Emission::Optimised }
}

/// Strides of a tensor of shape `small` broadcast (NumPy, right-aligned) to
/// `big`: 0 along stretched axes.
fn broadcast_strides(small: &[usize], big: &[usize]) -> Option<Vec<i64>> {
    if small.len() > big.len() {
        return None;
    }
    let lead = big.len() - small.len();
    let mut strides = vec![0i64; big.len()];
    let mut stride = 1i64;
    for k in (0..small.len()).rev() {
        let (s, b) = (small[k], big[lead + k]);
        if s == b {
            strides[lead + k] = stride;
        } else if s != 1 {
            return None;
        }
        stride *= s as i64;
    }
    Some(strides)
}

fn contiguous_strides(dims: &[usize]) -> Vec<i64> {
    let mut strides = vec![0i64; dims.len()];
    let mut s = 1i64;
    for k in (0..dims.len()).rev() {
        strides[k] = s;
        s *= dims[k] as i64;
    }
    strides
}

impl Builder<'_> {
    fn var(&mut self) -> VarId {
        self.next_var += 1;
        self.next_var - 1
    }

    fn acc(&mut self) -> AccId {
        self.next_acc += 1;
        self.next_acc - 1
    }

    fn dims(&self, id: NodeId) -> Vec<usize> {
        self.graph.node(id).shape.at_batch(self.batch)
    }

    fn buf(&self, id: NodeId) -> Result<BufId, BuildError> {
        if let Some(&b) = self.overrides.get(&id) {
            return Ok(b);
        }
        self.value_buf.get(&id).copied().ok_or_else(|| unsupported(self.graph, id, "its value is not stored"))
    }

    fn scratch(&mut self, name: String, len: usize, per_thread: bool) -> BufId {
        let id = self.prog.add_buffer(name, len, BufferKind::Scratch);
        self.prog.buffers[id].per_thread = per_thread;
        id
    }

    fn table_i32(&mut self, name: String, data: Vec<i32>) -> BufId {
        self.prog.add_buffer(name, data.len(), BufferKind::ConstI32(data))
    }

    fn table_f32(&mut self, name: String, data: Vec<f32>) -> BufId {
        self.prog.add_buffer(name, data.len(), BufferKind::ConstF32(data))
    }

    fn name_of(&self, nodes: &[NodeId]) -> String {
        nodes.iter().map(|&n| self.graph.node(n).name.as_str()).collect::<Vec<_>>().join("+")
    }

    fn anchored(&mut self, nodes: &[NodeId]) -> Result<Vec<Kernel>, BuildError> {
        let graph = self.graph;
        let anchor = nodes[0];
        // A training-mode batch normalisation's channel blocks.
        if crate::passes::fuse::is_channel_block(graph, nodes) {
            return match graph.node(anchor).op {
                Op::BatchMean => self.batch_norm_train_block(nodes),
                _ => self.batch_norm_grad_block(nodes),
            };
        }
        let node = graph.node(anchor);
        let name = self.name_of(nodes);
        let mut finish = Finish { out: 0, activation: None, pre: None, mask: None };
        // An evaluation-mode batch normalisation folded into the product.
        let fold = match nodes.get(1).map(|&n| (n, &graph.node(n).op)) {
            Some((n, Op::BatchNorm(bn))) => Some((n, *bn)),
            _ => None,
        };
        let product_value = fold.map_or(anchor, |(n, _)| n);
        let epilogue = nodes.get(if fold.is_some() { 2 } else { 1 }).copied();
        match epilogue.map(|e| &graph.node(e).op) {
            Some(Op::Activate(a)) => {
                finish.activation = Some(*a);
                finish.out = self.buf(epilogue.unwrap())?;
                finish.pre = self.value_buf.get(&product_value).copied();
            }
            Some(Op::ActivateGrad(a)) => {
                let e = graph.node(epilogue.unwrap());
                finish.mask = Some((*a, self.buf(e.inputs[0])?));
                finish.out = self.buf(epilogue.unwrap())?;
            }
            _ => {
                if !matches!(node.op, Op::LossValue(_) | Op::LossGrad(_)) {
                    finish.out = self.buf(product_value)?;
                }
            }
        }
        let mut ins = node.inputs.clone();
        if let Some((bn_node, bn)) = fold {
            // The product reads the folded weight and bias: the weight node
            // and (as the bias operand) the normalisation's node stand for them.
            let (weight, bias) = self.fold_batch_norm(&ins, bn_node, bn)?;
            self.overrides.insert(ins[1], weight);
            self.overrides.insert(bn_node, bias);
            ins.truncate(2);
            ins.push(bn_node);
        }
        let body_and_flops = match &node.op {
            Op::Conv2d(c) => self.conv2d(anchor, c, &ins, &finish)?,
            Op::Conv2dGradInput(c) => self.conv2d_grad_input(anchor, c, &ins, &finish)?,
            Op::Conv2dGradWeight(c) => {
                return self.conv2d_grad_weight(anchor, c, &ins, name, nodes);
            }
            Op::Linear => self.linear(anchor, &ins, &finish)?,
            Op::LinearGradInput => self.linear_grad_input(anchor, &ins, &finish)?,
            Op::LinearGradWeight => self.linear_grad_weight(anchor, &ins, &finish)?,
            Op::BiasGrad { axis } => self.bias_grad(anchor, *axis, &ins, &finish)?,
            Op::MaxPool2d(p) => self.pool(anchor, p, true, &ins, &finish)?,
            Op::AvgPool2d(p) => self.pool(anchor, p, false, &ins, &finish)?,
            Op::MaxPool2dGrad(p) => self.max_pool_grad(anchor, p, &ins, &finish)?,
            Op::AvgPool2dGrad(p) => self.avg_pool_grad(anchor, p, &ins, &finish)?,
            Op::Resize(r) => self.resize(anchor, r, &ins, &finish)?,
            Op::ResizeGrad(r) => self.resize_grad(anchor, r, &ins, &finish)?,
            Op::SumTo => self.sum_to(anchor, &ins, &finish)?,
            Op::Softmax { axis, log } => self.softmax(*axis, *log, &ins, &finish)?,
            Op::BatchNorm(bn) | Op::BatchNormTrain(bn) => self.batch_norm(bn.eps, &ins, &finish)?,
            Op::BatchMean => self.batch_mean(&ins, &finish)?,
            Op::BatchVar => self.batch_var(&ins, &finish)?,
            Op::BatchNormGradWeight { eps } => self.batch_norm_grad_weight(*eps, &ins, &finish)?,
            Op::BatchNormGradInput { eps, training } => self.batch_norm_grad_input(*eps, *training, &ins, &finish)?,
            Op::SoftmaxGrad { axis, log } => self.softmax_grad(*axis, *log, &ins, &finish)?,
            Op::Concat { axis } => self.concat(anchor, *axis, &ins, &finish)?,
            Op::Slice { axis, start } => self.slice(anchor, *axis, *start, &ins, &finish)?,
            Op::LossValue(l) | Op::LossGrad(l) => self.loss(*l, nodes, &ins)?,
            other => return Err(unsupported(graph, anchor, format!("no kernel for {other}"))),
        };
        self.overrides.clear();
        let (body, flops) = body_and_flops;
        let mut kernels = std::mem::take(&mut self.pre_kernels);
        kernels.push(make_kernel(name, nodes.to_vec(), body, flops));
        Ok(kernels)
    }

    /// A loop `for v in 0..n` over `body(v)`.
    fn loop_over(&mut self, n: usize, body: impl FnOnce(&mut Self, Idx) -> Vec<Stmt>) -> Stmt {
        let v = self.var();
        let inner = body(self, Idx::var(v));
        Stmt::lp(v, n, LoopMode::Serial, inner)
    }

    /// Nested loops over `dims` (outermost first); `body` gets the indices.
    fn loops(&mut self, dims: &[usize], body: impl FnOnce(&mut Self, &[Idx]) -> Vec<Stmt>) -> Vec<Stmt> {
        let vars: Vec<VarId> = dims.iter().map(|_| self.var()).collect();
        let idx: Vec<Idx> = vars.iter().map(|&v| Idx::var(v)).collect();
        let mut out = body(self, &idx);
        for (&v, &d) in vars.iter().zip(dims).rev() {
            out = vec![Stmt::lp(v, d, LoopMode::Serial, out)];
        }
        out
    }

    /// `out[base + e] = f'(x[base + e]) * out[base + e]` over `len` elements,
    /// the fused activation backward of a scattering kernel.
    fn mask_pass(&mut self, finish: &Finish, base: Idx, len: usize) -> Vec<Stmt> {
        let Some((a, x)) = finish.mask else {
            return Vec::new();
        };
        let out = finish.out;
        vec![self.loop_over(len, |_, e| {
            let i = base.clone() + e;
            vec![Stmt::store(out, i.clone(), activation_grad_expr(a, Val::load(x, i.clone()), Val::load(out, i)))]
        })]
    }

    /// Zeroes `len` elements of `buf` from `base`.
    fn zero_pass(&mut self, buf: BufId, base: Idx, len: usize) -> Stmt {
        self.loop_over(len, |_, e| vec![Stmt::store(buf, base + e, Val::Const(0.0))])
    }

    /// The epilogue of a forward GEMM writing into `finish` (with its
    /// activation's derivative masking the result, for a gradient computed
    /// as a forward product).
    fn forward_epilogue(&self, finish: &Finish, c: &MatrixRef, bias: Option<Bias>) -> Epilogue {
        Epilogue {
            accumulate: false,
            bias,
            activation: finish.activation,
            pre_activation: finish.pre.map(|buf| MatrixRef { buf, ..c.clone() }),
            grad_mask: finish.mask.map(|(a, buf)| (a, MatrixRef { buf, ..c.clone() })),
        }
    }
}
