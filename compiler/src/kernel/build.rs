//! Lowering of fused graph groups to loop nests (the kernel IR's front door).
//!
//! Every op of [`crate::ops::Op`] has a loop-nest form here. Convolutions and
//! linear layers become matrix products ([`Gemm`]) fed by im2col packing
//! loops; the rest are plain loop nests. Kernels come out unscheduled: every
//! loop serial, one thread, placeholder tiles; `passes::schedule` decides.

use super::*;
use crate::graph::{Graph, NodeId};
use crate::ops::{Activation, BinaryOp, Conv2d, Loss, Op, PaddingMode, Pool2d, Resize, ResizeMode, Sgd};
use crate::passes::fuse::{Fusion, GroupKind};
use std::collections::HashMap;
use std::ops::{Add, Div, Mul, Sub};

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

/// An iteration axis of an elementwise kernel after merging contiguous
/// axes: `(length, stride of each operand, stride of the output)`.
type CollapsedAxis = (usize, Vec<i64>, i64);

/// A kernel's loop nest and its flop count.
type KernelBody = (Vec<Stmt>, u64);

/// Max pools with at most this many taps per window have them written out
/// (see `max_pool_unrolled`); larger windows keep their loops.
const MAX_UNROLLED_TAPS: usize = 16;

/// The tile written by the builder; scheduling replaces it.
const UNSCHEDULED_OUTER: GemmTile = GemmTile::Outer { rows: 1, vectors: 1, unroll: 1 };
const UNSCHEDULED_DOT: GemmTile = GemmTile::Dot { rows: 1, cols: 1, steps: DotSteps::Rolled(1) };

/// Lowers each fused group of `graph` to kernels at batch size `batch`.
///
/// The result has buffers for leaves, materialised values and scratch, and
/// kernels in the groups' order; offsets are not assigned yet.
pub fn build_program(graph: &Graph, fusion: &Fusion, batch: usize) -> Result<Program, BuildError> {
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
        },
        value_buf: HashMap::new(),
        next_var: 0,
        next_acc: 0,
        live: fusion.groups.iter().flat_map(|g| g.nodes.iter().copied()).collect(),
        argmax: HashMap::new(),
        pre_kernels: Vec::new(),
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
    if let Some(t) = &graph.training {
        for &(leaf, new) in &t.updates {
            let (Some(&l), Some(&n)) = (b.value_buf.get(&leaf), b.value_buf.get(&new)) else {
                return Err(unsupported(graph, new, "an update node's value is not stored"));
            };
            b.prog.updates.push((l, n));
        }
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

/// Collects the buffers a statement list reads and writes.
pub(crate) fn accesses(body: &[Stmt], reads: &mut Vec<BufId>, writes: &mut Vec<BufId>) {
    fn idx(i: &Idx, reads: &mut Vec<BufId>) {
        match i {
            Idx::Const(_) | Idx::Var(_) => {}
            Idx::Table(t, a) | Idx::FloatTable(t, a) => {
                reads.push(*t);
                idx(a, reads)
            }
            Idx::Mul(a, _) | Idx::Div(a, _) | Idx::Rem(a, _) => idx(a, reads),
            Idx::Add(a, b) | Idx::Min(a, b) | Idx::Max(a, b) => {
                idx(a, reads);
                idx(b, reads)
            }
        }
    }
    fn val(v: &Val, reads: &mut Vec<BufId>) {
        v.visit(&mut |n| match n {
            Node::Val(Val::Load(b, _)) => reads.push(*b),
            Node::Idx(i) => idx(i, reads),
            _ => {}
        });
    }
    fn cond(c: &Cond, reads: &mut Vec<BufId>) {
        c.visit(&mut |n| match n {
            Node::Val(Val::Load(b, _)) => reads.push(*b),
            Node::Idx(i) => idx(i, reads),
            _ => {}
        });
    }
    for s in body {
        match s {
            Stmt::Loop(l) => accesses(&l.body, reads, writes),
            Stmt::Store { buf, idx: i, val: v, accumulate } => {
                writes.push(*buf);
                if *accumulate {
                    reads.push(*buf);
                }
                idx(i, reads);
                val(v, reads);
            }
            Stmt::Let { init: v, .. } | Stmt::Reduce { val: v, .. } | Stmt::Set { val: v, .. } => val(v, reads),
            Stmt::If { cond: c, then, otherwise } => {
                cond(c, reads);
                accesses(then, reads, writes);
                accesses(otherwise, reads, writes);
            }
            Stmt::Gemm(g) => {
                for m in [&g.a, &g.b] {
                    reads.push(m.buf);
                    idx(&m.offset, reads);
                }
                reads.extend(g.b_rows.iter().chain(&g.c_rows).copied());
                writes.push(g.c.buf);
                if g.epilogue.accumulate {
                    reads.push(g.c.buf);
                }
                match &g.epilogue.bias {
                    Some(Bias::PerRow(b, _) | Bias::PerColumn(b, _)) => reads.push(*b),
                    None => {}
                }
                if let Some((_, m)) = &g.epilogue.grad_mask {
                    reads.push(m.buf);
                }
                if let Some(m) = &g.epilogue.pre_activation {
                    writes.push(m.buf);
                }
            }
        }
    }
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

/// The expression of `a(x)`, matching [`Activation::apply`].
pub(crate) fn activation_expr(a: Activation, x: Val) -> Val {
    let zero = || Val::Const(0.0);
    let pos = |x: &Val| Cond::val(Cmp::Gt, x.clone(), Val::Const(0.0));
    match a {
        Activation::Relu => x.un(UnOp::Relu),
        Activation::Sigmoid => Val::Const(1.0).div(Val::Const(1.0).add(x.un(UnOp::Neg).un(UnOp::Exp))),
        Activation::Tanh => x.un(UnOp::Tanh),
        Activation::LeakyRelu(s) => Val::select(pos(&x), x.clone(), Val::Const(s).mul(x)),
        Activation::Elu(s) => Val::select(pos(&x), x.clone(), Val::Const(s).mul(x.un(UnOp::Exp).sub(Val::Const(1.0)))),
        Activation::Step => Val::select(pos(&x), Val::Const(1.0), zero()),
    }
}

/// The expression of `a'(x) * dy`, matching [`Activation::derivative`].
pub(crate) fn activation_grad_expr(a: Activation, x: Val, dy: Val) -> Val {
    let pos = |x: &Val| Cond::val(Cmp::Gt, x.clone(), Val::Const(0.0));
    match a {
        Activation::Relu => Val::select(pos(&x), dy, Val::Const(0.0)),
        Activation::Sigmoid => {
            let s = Val::Const(1.0).div(Val::Const(1.0).add(x.un(UnOp::Neg).un(UnOp::Exp)));
            s.clone().mul(Val::Const(1.0).sub(s)).mul(dy)
        }
        Activation::Tanh => {
            let t = x.un(UnOp::Tanh);
            Val::Const(1.0).sub(t.clone().mul(t)).mul(dy)
        }
        Activation::LeakyRelu(s) => Val::select(pos(&x), dy.clone(), Val::Const(s).mul(dy)),
        Activation::Elu(s) => Val::select(pos(&x), dy.clone(), Val::Const(s).mul(x.un(UnOp::Exp)).mul(dy)),
        Activation::Step => Val::Const(0.0).mul(dy),
    }
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

/// The largest divisor of `n` that is at most `cap`.
fn largest_divisor_at_most(n: usize, cap: usize) -> usize {
    (1..=cap.min(n).max(1)).rev().find(|&d| n.is_multiple_of(d)).unwrap_or(1)
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

    // ------------------------------------------------------------------
    // Elementwise groups

    fn elementwise(&mut self, nodes: &[NodeId]) -> Result<Kernel, BuildError> {
        let graph = self.graph;
        let last = *nodes.last().expect("empty group");
        let domain = self.dims(last);
        let same_dims = nodes.iter().all(|&n| self.dims(n) == domain);
        let numel: usize = domain.iter().product();
        let in_group = |n: NodeId| nodes.contains(&n);

        // External operands and their strides over the domain.
        let mut operands: Vec<NodeId> = Vec::new();
        for &n in nodes {
            for &i in &graph.node(n).inputs {
                if !in_group(i) && !operands.contains(&i) {
                    operands.push(i);
                }
            }
        }
        let mut strides: Vec<Vec<i64>> = Vec::new();
        for &o in &operands {
            let od = self.dims(o);
            let s = if same_dims {
                broadcast_strides(&od, &domain)
            } else if od.iter().product::<usize>() == numel {
                Some(contiguous_strides(&domain))
            } else {
                None
            };
            strides
                .push(s.ok_or_else(|| unsupported(graph, last, format!("operand shape {od:?} does not broadcast")))?);
        }
        let out_strides = contiguous_strides(&domain);
        // Collapse adjacent axes that are contiguous for every operand.
        let mut axes: Vec<(usize, Vec<i64>, i64)> = Vec::new(); // (len, operand strides, out stride)
        for k in 0..domain.len() {
            axes.push((domain[k], strides.iter().map(|s| s[k]).collect(), out_strides[k]));
        }
        axes.retain(|a| a.0 != 1);
        let mut collapsed: Vec<(usize, Vec<i64>, i64)> = Vec::new();
        for a in axes {
            if let Some(prev) = collapsed.last_mut() {
                let len = a.0 as i64;
                let mergeable = prev.2 == a.2 * len && prev.1.iter().zip(&a.1).all(|(p, q)| *p == q * len);
                if mergeable {
                    prev.0 *= a.0;
                    prev.1 = a.1.clone();
                    prev.2 = a.2;
                    continue;
                }
            }
            collapsed.push(a);
        }
        let vars: Vec<VarId> = collapsed.iter().map(|_| self.var()).collect();
        let index = |sel: &dyn Fn(&CollapsedAxis) -> i64| {
            collapsed.iter().zip(&vars).fold(Idx::Const(0), |acc, (a, &v)| acc + Idx::var(v) * sel(a))
        };
        let mut value: HashMap<NodeId, Val> = HashMap::new();
        for (k, &o) in operands.iter().enumerate() {
            value.insert(o, Val::load(self.buf(o)?, index(&|a| a.1[k])));
        }
        let out_idx = index(&|a| a.2);
        let mut body = Vec::new();
        let mut stores = Vec::new();
        let mut flops = 0u64;
        for &n in nodes {
            let node = graph.node(n);
            let arg = |i: usize| value[&node.inputs[i]].clone();
            let expr = match &node.op {
                Op::Activate(a) => activation_expr(*a, arg(0)),
                Op::ActivateGrad(a) => activation_grad_expr(*a, arg(0), arg(1)),
                Op::Binary(op) => Val::bin(
                    match op {
                        BinaryOp::Add => BinOp::Add,
                        BinaryOp::Sub => BinOp::Sub,
                        BinaryOp::Mul => BinOp::Mul,
                    },
                    arg(0),
                    arg(1),
                ),
                Op::Neg => arg(0).un(UnOp::Neg),
                Op::SgdMomentum(s) => Val::Const(s.momentum).mul(arg(2)).add(decayed_grad(arg(0), arg(1), s)),
                Op::SgdStep(s) => {
                    let d = decayed_grad(arg(0), arg(1), s);
                    let d = match node.inputs.len() {
                        3 if s.nesterov => d.add(Val::Const(s.momentum).mul(arg(2))),
                        3 => arg(2),
                        _ => d,
                    };
                    arg(0).sub(Val::Const(s.lr).mul(d))
                }
                _ => return Err(unsupported(graph, n, "not elementwise")),
            };
            flops += 4 * numel as u64;
            let acc = self.acc();
            body.push(Stmt::Let { acc, init: expr });
            value.insert(n, Val::Acc(acc));
            if let Some(&buf) = self.value_buf.get(&n) {
                stores.push(Stmt::store(buf, out_idx.clone(), Val::Acc(acc)));
            }
        }
        body.extend(stores);
        for (a, &v) in collapsed.iter().zip(&vars).rev() {
            body = vec![Stmt::lp(v, a.0, LoopMode::Serial, body)];
        }
        let mut k = make_kernel(self.name_of(nodes), nodes.to_vec(), body, flops);
        // Same-index operands may share storage with outputs; an operand
        // the expressions never load (a step's derivative is `0 * dy`) is
        // not an input of the kernel at all.
        for (i, &o) in operands.iter().enumerate() {
            let loaded = k.reads.contains(&self.buf(o)?);
            if loaded && strides[i] == contiguous_strides(&domain) && self.dims(o).iter().product::<usize>() == numel {
                for &n in nodes {
                    if let Some(&out) = self.value_buf.get(&n) {
                        k.in_place.push((self.buf(o)?, out));
                    }
                }
            }
        }
        Ok(k)
    }

    // ------------------------------------------------------------------
    // Anchored groups

    fn anchored(&mut self, nodes: &[NodeId]) -> Result<Vec<Kernel>, BuildError> {
        let graph = self.graph;
        let anchor = nodes[0];
        let node = graph.node(anchor);
        let name = self.name_of(nodes);
        let mut finish = Finish { out: 0, activation: None, pre: None, mask: None };
        let epilogue = nodes.get(1).copied();
        match epilogue.map(|e| &graph.node(e).op) {
            Some(Op::Activate(a)) => {
                finish.activation = Some(*a);
                finish.out = self.buf(epilogue.unwrap())?;
                finish.pre = self.value_buf.get(&anchor).copied();
            }
            Some(Op::ActivateGrad(a)) => {
                let e = graph.node(epilogue.unwrap());
                finish.mask = Some((*a, self.buf(e.inputs[0])?));
                finish.out = self.buf(epilogue.unwrap())?;
            }
            _ => {
                if !matches!(node.op, Op::LossValue(_) | Op::LossGrad(_)) {
                    finish.out = self.buf(anchor)?;
                }
            }
        }
        let ins = node.inputs.clone();
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
            Op::Concat { axis } => self.concat(anchor, *axis, &ins, &finish)?,
            Op::Slice { axis, start } => self.slice(anchor, *axis, *start, &ins, &finish)?,
            Op::LossValue(l) | Op::LossGrad(l) => self.loss(*l, nodes, &ins)?,
            other => return Err(unsupported(graph, anchor, format!("no kernel for {other}"))),
        };
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

    /// The epilogue of a forward GEMM writing into `finish`.
    fn forward_epilogue(&self, finish: &Finish, c: &MatrixRef, bias: Option<Bias>) -> Epilogue {
        Epilogue {
            accumulate: false,
            bias,
            activation: finish.activation,
            pre_activation: finish.pre.map(|buf| MatrixRef { buf, ..c.clone() }),
            grad_mask: None,
        }
    }

    /// Writes image `n`'s im2col matrix `[C*KH*KW, OH*OW]` into `col`.
    fn im2col(&mut self, c: &Conv2d, xd: &[usize], yd: &[usize], x: BufId, n: Idx, col: BufId) -> Vec<Stmt> {
        let (ch, h, w) = (xd[1], xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let [kh, kw] = c.kernel;
        let p_len = (oh * ow) as i64;
        let x_off = n * (ch as i64 * h * w);
        let padded = c.padding != [0, 0];
        self.loops(&[ch, kh, kw, oh, ow], |_, i| {
            let (ci, ky, kx, oy, ox) = (&i[0], &i[1], &i[2], &i[3], &i[4]);
            let iy = oy.clone() * c.stride[0] + ky.clone() * c.dilation[0] - c.padding[0] as i64;
            let ix = ox.clone() * c.stride[1] + kx.clone() * c.dilation[1] - c.padding[1] as i64;
            let p = (ci.clone() * kh + ky.clone()) * kw + kx.clone();
            let dst = p * p_len + oy.clone() * ow + ox.clone();
            let base = x_off.clone() + ci.clone() * (h * w);
            let val = if !padded {
                Val::load(x, base + iy * w + ix)
            } else {
                let at = base + iy.clone().clamp(0, h - 1) * w + ix.clone().clamp(0, w - 1);
                match c.padding_mode {
                    PaddingMode::Replicate => Val::load(x, at),
                    PaddingMode::Zeros => Val::select(
                        Cond::in_range(iy, 0, h).and(Cond::in_range(ix, 0, w)),
                        Val::load(x, at),
                        Val::Const(0.0),
                    ),
                }
            };
            vec![Stmt::store(col, dst, val)]
        })
    }

    fn conv2d(&mut self, id: NodeId, c: &Conv2d, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let (xd, wd, yd) = (self.dims(ins[0]), self.dims(ins[1]), self.dims(id));
        let (x, w) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let bias = ins.get(2).map(|&b| self.buf(b)).transpose()?;
        let (o, k, p) = (wd[0], wd[1] * wd[2] * wd[3], yd[2] * yd[3]);
        let out = finish.out;
        let epi_finish = Finish { out, activation: finish.activation, pre: finish.pre, mask: None };
        if c.padding == [0, 0] && c.stride[1] == 1 {
            // Implicit im2col: per output row, B's row (ci, ky, kx) is the
            // input row it reads, found through a table of offsets.
            let (ch, h, w_in) = (xd[1], xd[2], xd[3]);
            let (oh, ow) = (yd[2], yd[3]);
            let [kh, kw] = c.kernel;
            let mut rows = Vec::with_capacity(k);
            for ci in 0..ch {
                for ky in 0..kh {
                    for kx in 0..kw {
                        rows.push((ci * h * w_in + ky * c.dilation[0] * w_in + kx * c.dilation[1]) as i32);
                    }
                }
            }
            let table = self.table_i32(format!("{}.rows", self.graph.node(id).name), rows);
            // The weights splatted to f32x4 once per run, in a kernel of their own.
            let name = self.graph.node(id).name.clone();
            let w4 = self.scratch(format!("{name}.weight_x4"), o * k * 4, false);
            let splat = vec![self.loop_over(o * k, |b, e| {
                vec![b.loop_over(4, |_, l| vec![Stmt::store(w4, e.clone() * 4i64 + l, Val::load(w, e.clone()))])]
            })];
            self.pre_kernels.push(make_kernel(format!("{name}.splat_weight"), vec![id], splat, 0));
            // Output rows that are not whole vectors: one product per image
            // whose columns (output positions) wrap from input row to input
            // row, so no lanes are wasted at the end of each row.
            let wrap = ColumnWrap { row: ow, stride: (c.stride[0] * w_in) as i64 };
            if !ow.is_multiple_of(4) && wrap.fits(p) {
                let body = vec![self.loop_over(xd[0], |b, n| {
                    let cm = MatrixRef { buf: out, offset: n.clone() * (o * p), row_stride: p as i64, col_stride: 1 };
                    let epilogue = b.forward_epilogue(&epi_finish, &cm, bias.map(|bb| Bias::PerRow(bb, Idx::Const(0))));
                    vec![Stmt::Gemm(Box::new(Gemm {
                        m: o,
                        n: p,
                        k,
                        a: MatrixRef { buf: w4, offset: Idx::Const(0), row_stride: 4 * k as i64, col_stride: 4 },
                        b: MatrixRef { buf: x, offset: n * (ch * h * w_in), row_stride: 0, col_stride: 1 },
                        c: cm,
                        epilogue,
                        b_rows: Some(table),
                        k_split: None,
                        b_wrap: Some(wrap),
                        c_rows: None,
                        c_wrap: None,
                        a_splat: true,
                        tile: UNSCHEDULED_OUTER,
                    }))]
                })];
                return Ok((body, 2 * (xd[0] * o * k * p) as u64));
            }
            let body = vec![self.loop_over(xd[0], |b, n| {
                vec![b.loop_over(oh, |b, oy| {
                    let cm = MatrixRef {
                        buf: out,
                        offset: n.clone() * (o * p) + oy.clone() * ow,
                        row_stride: p as i64,
                        col_stride: 1,
                    };
                    let epilogue = b.forward_epilogue(&epi_finish, &cm, bias.map(|bb| Bias::PerRow(bb, Idx::Const(0))));
                    vec![Stmt::Gemm(Box::new(Gemm {
                        m: o,
                        n: ow,
                        k,
                        a: MatrixRef { buf: w4, offset: Idx::Const(0), row_stride: 4 * k as i64, col_stride: 4 },
                        b: MatrixRef {
                            buf: x,
                            offset: n.clone() * (ch * h * w_in) + oy * (c.stride[0] * w_in),
                            row_stride: 0,
                            col_stride: 1,
                        },
                        c: cm,
                        epilogue,
                        b_rows: Some(table),
                        k_split: None,
                        b_wrap: None,
                        c_rows: None,
                        c_wrap: None,
                        a_splat: true,
                        tile: UNSCHEDULED_OUTER,
                    }))]
                })]
            })];
            return Ok((body, 2 * (xd[0] * o * k * p) as u64));
        }
        let col = self.scratch(format!("{}.im2col", self.graph.node(id).name), k * p, true);
        let body = vec![self.loop_over(xd[0], |b, n| {
            let mut s = b.im2col(c, &xd, &yd, x, n.clone(), col);
            let cm = MatrixRef { buf: out, offset: n * (o * p), row_stride: p as i64, col_stride: 1 };
            let epilogue = b.forward_epilogue(&epi_finish, &cm, bias.map(|bb| Bias::PerRow(bb, Idx::Const(0))));
            s.push(Stmt::Gemm(Box::new(Gemm {
                m: o,
                n: p,
                k,
                a: MatrixRef { buf: w, offset: Idx::Const(0), row_stride: k as i64, col_stride: 1 },
                b: MatrixRef { buf: col, offset: Idx::Const(0), row_stride: p as i64, col_stride: 1 },
                c: cm,
                epilogue,
                b_rows: None,
                k_split: None,
                b_wrap: None,
                c_rows: None,
                c_wrap: None,
                a_splat: false,
                tile: UNSCHEDULED_OUTER,
            })));
            s
        })];
        Ok((body, 2 * (xd[0] * o * k * p) as u64))
    }

    /// A convolution's input gradient (unit stride, no padding) with col2im
    /// fused into the product: row `r` of `W^T dY` is a kernel tap, whose
    /// products are added straight into the image at that tap's offset
    /// (`c_rows`), the output positions wrapping into the image's wider rows
    /// (`c_wrap`). Taps are ordered by kernel column first, so the rows of one
    /// register tile land on different image rows: no add reads a vector that
    /// the previous add just half-wrote. The weights are transposed into that
    /// order and splatted to `f32x4` once per run, in a kernel of their own.
    fn conv2d_grad_input_scattered(
        &mut self,
        id: NodeId,
        c: &Conv2d,
        [batch, o, ch, h, wi, p]: [usize; 6],
        wrap: ColumnWrap,
        [dy, w]: [BufId; 2],
        finish: &Finish,
    ) -> KernelBody {
        let [kh, kw] = c.kernel;
        let k = ch * kh * kw;
        let name = self.graph.node(id).name.clone();
        // Row r = (kx, ci, ky), kernel column first.
        let mut offsets = Vec::with_capacity(k);
        for kx in 0..kw {
            for ci in 0..ch {
                for ky in 0..kh {
                    offsets.push((ci * h * wi + ky * c.dilation[0] * wi + kx * c.dilation[1]) as i32);
                }
            }
        }
        let table = self.table_i32(format!("{name}.taps"), offsets);
        let wt4 = self.scratch(format!("{name}.weight_t4"), k * o * 4, false);
        // wt4[((kx * ch + ci) * kh + ky) * o + co][lane] = w[co][ci][ky][kx]
        let prep = self.loops(&[kw, ch, kh, o, 4], |_, i| {
            let (kx, ci, ky, co, l) = (&i[0], &i[1], &i[2], &i[3], &i[4]);
            let r = (kx.clone() * ch as i64 + ci.clone()) * kh as i64 + ky.clone();
            let at = (r * o as i64 + co.clone()) * 4i64 + l.clone();
            let from = co.clone() * k as i64 + (ci.clone() * kh as i64 + ky.clone()) * kw as i64 + kx.clone();
            vec![Stmt::store(wt4, at, Val::load(w, from))]
        });
        self.pre_kernels.push(make_kernel(format!("{name}.transpose_weight"), vec![id], prep, 0));
        let out = finish.out;
        let image = ch * h * wi;
        let body = vec![self.loop_over(batch, |b, n| {
            let base = n.clone() * image;
            let mut s = vec![b.zero_pass(out, base.clone(), image)];
            s.push(Stmt::Gemm(Box::new(Gemm {
                m: k,
                n: p,
                k: o,
                a: MatrixRef { buf: wt4, offset: Idx::Const(0), row_stride: 4 * o as i64, col_stride: 4 },
                b: MatrixRef { buf: dy, offset: n * (o * p), row_stride: p as i64, col_stride: 1 },
                c: MatrixRef { buf: out, offset: base.clone(), row_stride: 0, col_stride: 1 },
                epilogue: Epilogue { accumulate: true, ..Epilogue::default() },
                b_rows: None,
                k_split: None,
                b_wrap: None,
                c_rows: Some(table),
                c_wrap: Some(wrap),
                a_splat: true,
                tile: UNSCHEDULED_OUTER,
            })));
            s.extend(b.mask_pass(finish, base, image));
            s
        })];
        (body, 2 * (batch * o * k * p) as u64)
    }

    fn conv2d_grad_input(
        &mut self,
        id: NodeId,
        c: &Conv2d,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (yd, wd, xd) = (self.dims(ins[0]), self.dims(ins[1]), self.dims(id));
        let (dy, w) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let (o, k, p) = (wd[0], wd[1] * wd[2] * wd[3], yd[2] * yd[3]);
        let (ch, h, wi) = (xd[1], xd[2] as i64, xd[3] as i64);
        let [kh, kw] = c.kernel;
        let (oh, ow) = (yd[2], yd[3]);
        let out = finish.out;
        let image = ch * (h * wi) as usize;
        let wrap = ColumnWrap { row: ow, stride: c.stride[0] as i64 * wi };
        if c.padding == [0, 0] && c.stride == [1, 1] && wrap.fits(p) {
            let dims = [xd[0], o, ch, h as usize, wi as usize, p];
            return Ok(self.conv2d_grad_input_scattered(id, c, dims, wrap, [dy, w], finish));
        }
        let dcol = self.scratch(format!("{}.dcol", self.graph.node(id).name), k * p, true);
        let body = vec![self.loop_over(xd[0], |b, n| {
            let mut s = vec![Stmt::Gemm(Box::new(Gemm {
                m: k,
                n: p,
                k: o,
                a: MatrixRef { buf: w, offset: Idx::Const(0), row_stride: 1, col_stride: k as i64 },
                b: MatrixRef { buf: dy, offset: n.clone() * (o * p), row_stride: p as i64, col_stride: 1 },
                c: MatrixRef { buf: dcol, offset: Idx::Const(0), row_stride: p as i64, col_stride: 1 },
                epilogue: Epilogue::default(),
                b_rows: None,
                k_split: None,
                b_wrap: None,
                c_rows: None,
                c_wrap: None,
                a_splat: false,
                tile: UNSCHEDULED_OUTER,
            }))];
            let base = n.clone() * image;
            s.push(b.zero_pass(out, base.clone(), image));
            let padded = c.padding != [0, 0];
            s.extend(b.loops(&[ch, kh, kw, oh, ow], |_, i| {
                let (ci, ky, kx, oy, ox) = (&i[0], &i[1], &i[2], &i[3], &i[4]);
                let iy = oy.clone() * c.stride[0] + ky.clone() * c.dilation[0] - c.padding[0] as i64;
                let ix = ox.clone() * c.stride[1] + kx.clone() * c.dilation[1] - c.padding[1] as i64;
                let pp = (ci.clone() * kh + ky.clone()) * kw + kx.clone();
                let src = Val::load(dcol, pp * (p as i64) + oy.clone() * ow + ox.clone());
                let plane = base.clone() + ci.clone() * (h * wi);
                if !padded {
                    return vec![Stmt::store_add(out, plane + iy * wi + ix, src)];
                }
                let at = plane + iy.clone().clamp(0, h - 1) * wi + ix.clone().clamp(0, wi - 1);
                match c.padding_mode {
                    PaddingMode::Replicate => vec![Stmt::store_add(out, at, src)],
                    PaddingMode::Zeros => vec![Stmt::If {
                        cond: Cond::in_range(iy, 0, h).and(Cond::in_range(ix, 0, wi)),
                        then: vec![Stmt::store_add(out, at, src)],
                        otherwise: vec![],
                    }],
                }
            }));
            s.extend(b.mask_pass(finish, base, image));
            s
        })];
        Ok((body, 2 * (xd[0] * o * k * p) as u64))
    }

    fn conv2d_grad_weight(
        &mut self,
        id: NodeId,
        c: &Conv2d,
        ins: &[NodeId],
        name: String,
        nodes: &[NodeId],
    ) -> Result<Vec<Kernel>, BuildError> {
        let (xd, yd, wd) = (self.dims(ins[0]), self.dims(ins[1]), self.dims(id));
        let (x, dy) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let out = self.buf(id)?;
        let (o, k, p) = (wd[0], wd[1] * wd[2] * wd[3], yd[2] * yd[3]);
        let batch = xd[0];
        let chunks = largest_divisor_at_most(batch, 8);
        let per_chunk = batch / chunks;
        let node_name = self.graph.node(id).name.clone();
        // In place when output rows are whole vectors, or when the tile can
        // run its vector steps across rows (see `KSplit::wraps`); otherwise
        // a scalar tail per row costs more than packing.
        let split = KSplit { outer: yd[2], a_stride: yd[3] as i64, b_stride: (c.stride[0] * xd[3]) as i64 };
        let implicit = c.padding == [0, 0] && c.stride[1] == 1 && (yd[3].is_multiple_of(4) || split.wraps(p));
        let col = if implicit { 0 } else { self.scratch(format!("{node_name}.im2col"), k * p, true) };
        let table = implicit.then(|| {
            let (ch, h, w_in) = (xd[1], xd[2], xd[3]);
            let mut rows = Vec::with_capacity(k);
            for ci in 0..ch {
                for ky in 0..c.kernel[0] {
                    for kx in 0..c.kernel[1] {
                        rows.push((ci * h * w_in + ky * c.dilation[0] * w_in + kx * c.dilation[1]) as i32);
                    }
                }
            }
            self.table_i32(format!("{node_name}.rows"), rows)
        });
        let (ch, h, w_in) = (xd[1], xd[2], xd[3]);
        let target =
            if chunks > 1 { self.scratch(format!("{node_name}.partials"), chunks * o * k, false) } else { out };
        let flops = 2 * (batch * o * k * p) as u64;
        let body = vec![self.loop_over(chunks, |b, q| {
            let base = q.clone() * (o * k);
            let mut s = vec![b.zero_pass(target, base.clone(), o * k)];
            s.push(b.loop_over(per_chunk, |b, i| {
                let n = q.clone() * per_chunk + i;
                if let Some(table) = table {
                    // dW[o, p] += sum over output rows and columns of
                    // dy[o, oy, ox] * x[row p, oy * sh + ox], read in place.
                    return vec![Stmt::Gemm(Box::new(Gemm {
                        m: o,
                        n: k,
                        k: p,
                        a: MatrixRef { buf: dy, offset: n.clone() * (o * p), row_stride: p as i64, col_stride: 1 },
                        b: MatrixRef { buf: x, offset: n * (ch * h * w_in), row_stride: 1, col_stride: 0 },
                        c: MatrixRef { buf: target, offset: base.clone(), row_stride: k as i64, col_stride: 1 },
                        epilogue: Epilogue { accumulate: true, ..Epilogue::default() },
                        b_rows: Some(table),
                        a_splat: false,
                        k_split: Some(split),
                        b_wrap: None,
                        c_rows: None,
                        c_wrap: None,
                        tile: UNSCHEDULED_DOT,
                    }))];
                }
                let mut s = b.im2col(c, &xd, &yd, x, n.clone(), col);
                s.push(Stmt::Gemm(Box::new(Gemm {
                    m: o,
                    n: k,
                    k: p,
                    a: MatrixRef { buf: dy, offset: n * (o * p), row_stride: p as i64, col_stride: 1 },
                    b: MatrixRef { buf: col, offset: Idx::Const(0), row_stride: 1, col_stride: p as i64 },
                    c: MatrixRef { buf: target, offset: base.clone(), row_stride: k as i64, col_stride: 1 },
                    epilogue: Epilogue { accumulate: true, ..Epilogue::default() },
                    b_rows: None,
                    k_split: None,
                    b_wrap: None,
                    c_rows: None,
                    c_wrap: None,
                    a_splat: false,
                    tile: UNSCHEDULED_DOT,
                })));
                s
            }));
            s
        })];
        let mut kernels = vec![make_kernel(name.clone(), nodes.to_vec(), body, flops)];
        if chunks > 1 {
            let len = o * k;
            let body = vec![self.loop_over(len, |b, e| {
                let acc = b.acc();
                vec![
                    Stmt::Let { acc, init: Val::load(target, e.clone()) },
                    b.loop_over(chunks - 1, |_, q| {
                        vec![Stmt::Reduce { acc, op: RedOp::Add, val: Val::load(target, (q + 1i64) * len + e.clone()) }]
                    }),
                    Stmt::store(out, e, Val::Acc(acc)),
                ]
            })];
            kernels.push(make_kernel(format!("{name}.combine"), nodes.to_vec(), body, (chunks * len) as u64));
        }
        Ok(kernels)
    }

    /// Rows and features of a `[.., features]` tensor.
    fn rows_cols(&self, id: NodeId) -> (usize, usize) {
        let d = self.dims(id);
        let cols = d.last().copied().unwrap_or(1);
        (d.iter().product::<usize>() / cols.max(1), cols)
    }

    fn linear(&mut self, id: NodeId, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let (rows, inf) = self.rows_cols(ins[0]);
        let (_, outf) = self.rows_cols(id);
        let (x, w) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let bias = ins.get(2).map(|&b| self.buf(b)).transpose()?;
        let cm = MatrixRef { buf: finish.out, offset: Idx::Const(0), row_stride: outf as i64, col_stride: 1 };
        let epilogue = self.forward_epilogue(finish, &cm, bias.map(|b| Bias::PerColumn(b, Idx::Const(0))));
        let g = Gemm {
            m: rows,
            n: outf,
            k: inf,
            a: MatrixRef { buf: x, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 },
            b: MatrixRef { buf: w, offset: Idx::Const(0), row_stride: 1, col_stride: inf as i64 },
            c: cm,
            epilogue,
            b_rows: None,
            k_split: None,
            b_wrap: None,
            c_rows: None,
            c_wrap: None,
            a_splat: false,
            tile: UNSCHEDULED_DOT,
        };
        Ok((vec![Stmt::Gemm(Box::new(g))], 2 * (rows * inf * outf) as u64))
    }

    fn linear_grad_input(&mut self, id: NodeId, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let (rows, outf) = self.rows_cols(ins[0]);
        let (_, inf) = self.rows_cols(id);
        let (dy, w) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let cm = MatrixRef { buf: finish.out, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 };
        let g = Gemm {
            m: rows,
            n: inf,
            k: outf,
            a: MatrixRef { buf: dy, offset: Idx::Const(0), row_stride: outf as i64, col_stride: 1 },
            b: MatrixRef { buf: w, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 },
            c: cm.clone(),
            epilogue: Epilogue {
                grad_mask: finish.mask.map(|(a, x)| (a, MatrixRef { buf: x, ..cm })),
                ..Epilogue::default()
            },
            b_rows: None,
            k_split: None,
            b_wrap: None,
            c_rows: None,
            c_wrap: None,
            a_splat: false,
            tile: UNSCHEDULED_OUTER,
        };
        Ok((vec![Stmt::Gemm(Box::new(g))], 2 * (rows * inf * outf) as u64))
    }

    fn linear_grad_weight(&mut self, _id: NodeId, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let (rows, inf) = self.rows_cols(ins[0]);
        let (_, outf) = self.rows_cols(ins[1]);
        let (x, dy) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let g = Gemm {
            m: outf,
            n: inf,
            k: rows,
            a: MatrixRef { buf: dy, offset: Idx::Const(0), row_stride: 1, col_stride: outf as i64 },
            b: MatrixRef { buf: x, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 },
            c: MatrixRef { buf: finish.out, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 },
            epilogue: Epilogue::default(),
            b_rows: None,
            k_split: None,
            b_wrap: None,
            c_rows: None,
            c_wrap: None,
            a_splat: false,
            tile: UNSCHEDULED_OUTER,
        };
        Ok((vec![Stmt::Gemm(Box::new(g))], 2 * (rows * inf * outf) as u64))
    }

    fn bias_grad(
        &mut self,
        _id: NodeId,
        axis: usize,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let d = self.dims(ins[0]);
        let dy = self.buf(ins[0])?;
        let outer: usize = d[..axis].iter().product();
        let mid = d[axis];
        let inner: usize = d[axis + 1..].iter().product();
        let out = finish.out;
        let body = vec![self.loop_over(mid, |b, c| {
            let acc = b.acc();
            let mut s = vec![Stmt::Let { acc, init: Val::Const(0.0) }];
            s.extend(b.loops(&[outer, inner], |_, i| {
                let at = (i[0].clone() * mid + c.clone()) * inner + i[1].clone();
                vec![Stmt::Reduce { acc, op: RedOp::Add, val: Val::load(dy, at) }]
            }));
            s.push(Stmt::store(out, c, Val::Acc(acc)));
            s
        })];
        Ok((body, d.iter().product::<usize>() as u64))
    }

    /// Input position of tap `k` of window position `o` along one axis.
    fn window_pos(o: &Idx, k: &Idx, stride: usize, dilation: usize, padding: usize) -> Idx {
        o.clone() * stride + k.clone() * dilation - padding as i64
    }

    fn pool(
        &mut self,
        id: NodeId,
        pl: &Pool2d,
        is_max: bool,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(id));
        let x = self.buf(ins[0])?;
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let padded = pl.padding != [0, 0];
        let divisor = (pl.kernel[0] * pl.kernel[1]) as f32;
        let has_grad = is_max
            && self.graph.node_ids().any(|n| {
                self.live.contains(&n)
                    && self.graph.node(n).op == Op::MaxPool2dGrad(*pl)
                    && self.graph.node(n).inputs[0] == ins[0]
            });
        let argmax = has_grad.then(|| {
            let len = yd.iter().product();
            let buf = self.scratch(format!("{}.argmax", self.graph.node(id).name), len, false);
            self.argmax.insert((ins[0], *pl), buf);
            buf
        });
        if is_max && !padded && pl.kernel[0] * pl.kernel[1] <= MAX_UNROLLED_TAPS {
            return Ok(self.max_pool_unrolled(x, pl, [h, w], [xd[0] * xd[1], oh, ow], argmax, out));
        }
        let body = self.loops(&[xd[0] * xd[1], oh, ow], |b, i| {
            let (nc, oy, ox) = (i[0].clone(), i[1].clone(), i[2].clone());
            let acc = b.acc();
            let arg = b.acc();
            let init = if is_max { f32::NEG_INFINITY } else { 0.0 };
            let mut s = vec![Stmt::Let { acc, init: Val::Const(init) }];
            if argmax.is_some() {
                s.push(Stmt::Let { acc: arg, init: Val::Const(-1.0) });
            }
            s.extend(b.loops(&[pl.kernel[0], pl.kernel[1]], |_, k| {
                let iy = Self::window_pos(&oy, &k[0], pl.stride[0], pl.dilation[0], pl.padding[0]);
                let ix = Self::window_pos(&ox, &k[1], pl.stride[1], pl.dilation[1], pl.padding[1]);
                let plane = nc.clone() * (h * w);
                // Padded taps are clamped into the plane (and never win);
                // unpadded ones are in range already, and their index stays
                // affine so the vector form needs no per-lane conversion.
                let within = if padded {
                    iy.clone().clamp(0, h - 1) * w + ix.clone().clamp(0, w - 1)
                } else {
                    iy.clone() * w + ix.clone()
                };
                let valid = Cond::in_range(iy.clone(), 0, h).and(Cond::in_range(ix.clone(), 0, w));
                let val = if padded {
                    let at = plane + within.clone();
                    Val::select(valid.clone(), Val::load(x, at), Val::Const(init))
                } else {
                    Val::load(x, plane + iy * w + ix)
                };
                let mut s = Vec::new();
                if argmax.is_some() {
                    // The first valid tap, then any strictly larger one or
                    // a NaN (PyTorch's first maximum, where a NaN wins; -1
                    // while no tap is valid).
                    let first = Cond::val(Cmp::Lt, Val::Acc(arg), Val::Const(0.0));
                    let first = if padded { first.and(valid.clone()) } else { first };
                    let nan = Cond::IsNan(Box::new(val.clone()));
                    let nan = if padded { nan.and(valid) } else { nan };
                    let larger = Cond::Or(Box::new(Cond::val(Cmp::Gt, val.clone(), Val::Acc(acc))), Box::new(nan));
                    let wins = Cond::Or(Box::new(larger), Box::new(first));
                    s.push(Stmt::Set { acc: arg, val: Val::select(wins, Val::FromIdx(within), Val::Acc(arg)) });
                }
                s.push(Stmt::Reduce { acc, op: if is_max { RedOp::Max } else { RedOp::Add }, val });
                s
            }));
            let result = if is_max { Val::Acc(acc) } else { Val::Acc(acc).div(Val::Const(divisor)) };
            let at = (nc * oh + oy) * ow + ox;
            if let Some(am) = argmax {
                s.push(Stmt::store(am, at.clone(), Val::Acc(arg)));
            }
            s.push(Stmt::store(out, at, result));
            s
        });
        Ok((body, (yd.iter().product::<usize>() * pl.kernel[0] * pl.kernel[1]) as u64))
    }

    /// An unpadded max pool with a small window, its taps written out: the
    /// first tap initialises the maximum, each later one wins when it is
    /// larger or a NaN (PyTorch's first maximum, where a NaN wins), and the
    /// value and the argmax are selected with that one condition. The
    /// argmax is tracked as the winning tap's constant offset from the
    /// window's origin and converted to a plane index once, at the store.
    /// With no inner loop left, the vector loop over `ox` can end with an
    /// overlapping iteration instead of a scalar tail.
    fn max_pool_unrolled(
        &mut self,
        x: BufId,
        pl: &Pool2d,
        [h, w]: [i64; 2],
        [planes, oh, ow]: [usize; 3],
        argmax: Option<BufId>,
        out: BufId,
    ) -> KernelBody {
        let body = self.loops(&[planes, oh, ow], |b, i| {
            let (nc, oy, ox) = (i[0].clone(), i[1].clone(), i[2].clone());
            let (acc, arg) = (b.acc(), b.acc());
            let origin = oy.clone() * pl.stride[0] * w + ox.clone() * pl.stride[1];
            let mut s = Vec::new();
            for ky in 0..pl.kernel[0] {
                for kx in 0..pl.kernel[1] {
                    let off = (ky * pl.dilation[0]) as i64 * w + (kx * pl.dilation[1]) as i64;
                    let val = Val::load(x, nc.clone() * (h * w) + origin.clone() + off);
                    if ky == 0 && kx == 0 {
                        s.push(Stmt::Let { acc, init: val });
                        if argmax.is_some() {
                            s.push(Stmt::Let { acc: arg, init: Val::Const(off as f32) });
                        }
                        continue;
                    }
                    let larger = Cond::val(Cmp::Gt, val.clone(), Val::Acc(acc));
                    let wins = Cond::Or(Box::new(larger), Box::new(Cond::IsNan(Box::new(val.clone()))));
                    if argmax.is_some() {
                        let pick = Val::select(wins.clone(), Val::Const(off as f32), Val::Acc(arg));
                        s.push(Stmt::Set { acc: arg, val: pick });
                    }
                    s.push(Stmt::Set { acc, val: Val::select(wins, val, Val::Acc(acc)) });
                }
            }
            let at = (nc * oh + oy) * ow + ox;
            if let Some(am) = argmax {
                let index = Val::bin(BinOp::Add, Val::FromIdx(origin), Val::Acc(arg));
                s.push(Stmt::store(am, at.clone(), index));
            }
            s.push(Stmt::store(out, at, Val::Acc(acc)));
            s
        });
        (body, (planes * oh * ow * pl.kernel[0] * pl.kernel[1]) as u64)
    }

    fn max_pool_grad(
        &mut self,
        _id: NodeId,
        pl: &Pool2d,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(ins[1]));
        let (x, dy) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let plane = (h * w) as usize;
        let disjoint = (0..2).all(|a| pl.dilation[a] == 1 && pl.kernel[a] <= pl.stride[a]);
        if let Some(&am) = self.argmax.get(&(ins[0], *pl))
            && disjoint
        {
            // Windows do not overlap, so each input element belongs to at
            // most one window: gather its gradient instead of scattering
            // (one contiguous, vectorisable pass, no zeroing, no branches).
            let covers =
                |a: usize, len: i64, out: usize| (len - 1 + pl.padding[a] as i64) / (pl.stride[a] as i64) < out as i64;
            let (full_y, full_x) = (covers(0, h, oh), covers(1, w, ow));
            let body = self.loops(&[xd[0] * xd[1], h as usize, w as usize], |_, i| {
                let (nc, y, xx) = (i[0].clone(), i[1].clone(), i[2].clone());
                let window = |v: &Idx, a: usize, full: bool, out: usize| {
                    let o = (v.clone() + pl.padding[a] as i64) / pl.stride[a] as i64;
                    if full { o } else { o.clamp(0, out as i64 - 1) }
                };
                let w_at = (nc.clone() * oh + window(&y, 0, full_y, oh)) * ow + window(&xx, 1, full_x, ow);
                let me = y.clone() * w + xx.clone();
                let hit = Cond::val(Cmp::Eq, Val::load(am, w_at.clone()), Val::FromIdx(me.clone()));
                let g = Val::select(hit, Val::load(dy, w_at), Val::Const(0.0));
                let at = nc * plane + me;
                let g = match finish.mask {
                    Some((a, pre)) => activation_grad_expr(a, Val::load(pre, at.clone()), g),
                    None => g,
                };
                vec![Stmt::store(out, at, g)]
            });
            return Ok((body, xd.iter().product::<usize>() as u64));
        }
        if let Some(&am) = self.argmax.get(&(ins[0], *pl)) {
            // The forward kernel recorded each window's first maximum.
            let body = vec![self.loop_over(xd[0] * xd[1], |b, nc| {
                let base = nc.clone() * plane;
                let mut s = vec![b.zero_pass(out, base.clone(), plane)];
                s.extend(b.loops(&[oh, ow], |_, i| {
                    let w_at = (nc.clone() * oh + i[0].clone()) * ow + i[1].clone();
                    let to = base.clone() + Idx::FloatTable(am, Box::new(w_at.clone()));
                    let recorded = Cond::val(Cmp::Ge, Val::load(am, w_at.clone()), Val::Const(0.0));
                    vec![Stmt::If {
                        cond: recorded,
                        then: vec![Stmt::store_add(out, to, Val::load(dy, w_at))],
                        otherwise: vec![],
                    }]
                }));
                s.extend(b.mask_pass(finish, base, plane));
                s
            })];
            return Ok((body, yd.iter().product::<usize>() as u64));
        }
        let body = vec![self.loop_over(xd[0] * xd[1], |b, nc| {
            let base = nc.clone() * plane;
            let mut s = vec![b.zero_pass(out, base.clone(), plane)];
            s.extend(b.loops(&[oh, ow], |b, i| {
                let (oy, ox) = (i[0].clone(), i[1].clone());
                let (m, found) = (b.acc(), b.acc());
                let tap = |k: &[Idx]| {
                    let iy = Self::window_pos(&oy, &k[0], pl.stride[0], pl.dilation[0], pl.padding[0]);
                    let ix = Self::window_pos(&ox, &k[1], pl.stride[1], pl.dilation[1], pl.padding[1]);
                    let at = base.clone() + iy.clone().clamp(0, h - 1) * w + ix.clone().clamp(0, w - 1);
                    (Cond::in_range(iy, 0, h).and(Cond::in_range(ix, 0, w)), at)
                };
                let mut s = vec![Stmt::Let { acc: m, init: Val::Const(f32::NEG_INFINITY) }];
                s.extend(b.loops(&pl.kernel, |_, k| {
                    let (valid, at) = tap(k);
                    let v = Val::select(valid, Val::load(x, at), Val::Const(f32::NEG_INFINITY));
                    vec![Stmt::Reduce { acc: m, op: RedOp::Max, val: v }]
                }));
                s.push(Stmt::Let { acc: found, init: Val::Const(0.0) });
                let g = Val::load(dy, (nc.clone() * oh + oy.clone()) * ow + ox.clone());
                s.extend(b.loops(&pl.kernel, |_, k| {
                    let (valid, at) = tap(k);
                    // The maximum, or a NaN (which is the maximum then).
                    let is_max = Cond::Or(
                        Box::new(Cond::val(Cmp::Eq, Val::load(x, at.clone()), Val::Acc(m))),
                        Box::new(Cond::IsNan(Box::new(Val::load(x, at.clone())))),
                    );
                    let hit = valid.and(is_max).and(Cond::val(Cmp::Eq, Val::Acc(found), Val::Const(0.0)));
                    vec![Stmt::If {
                        cond: hit,
                        then: vec![Stmt::store_add(out, at, g.clone()), Stmt::Set { acc: found, val: Val::Const(1.0) }],
                        otherwise: vec![],
                    }]
                }));
                s
            }));
            s.extend(b.mask_pass(finish, base, plane));
            s
        })];
        Ok((body, (yd.iter().product::<usize>() * pl.kernel[0] * pl.kernel[1] * 2) as u64))
    }

    fn avg_pool_grad(
        &mut self,
        id: NodeId,
        pl: &Pool2d,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (yd, xd) = (self.dims(ins[0]), self.dims(id));
        let dy = self.buf(ins[0])?;
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let plane = (h * w) as usize;
        let divisor = (pl.kernel[0] * pl.kernel[1]) as f32;
        let body = vec![self.loop_over(xd[0] * xd[1], |b, nc| {
            let base = nc.clone() * plane;
            let mut s = vec![b.zero_pass(out, base.clone(), plane)];
            s.extend(b.loops(&[oh, ow], |b, i| {
                let (oy, ox) = (i[0].clone(), i[1].clone());
                let g = Val::load(dy, (nc.clone() * oh + oy.clone()) * ow + ox.clone()).div(Val::Const(divisor));
                b.loops(&pl.kernel, |_, k| {
                    let iy = Self::window_pos(&oy, &k[0], pl.stride[0], pl.dilation[0], pl.padding[0]);
                    let ix = Self::window_pos(&ox, &k[1], pl.stride[1], pl.dilation[1], pl.padding[1]);
                    let at = base.clone() + iy.clone().clamp(0, h - 1) * w + ix.clone().clamp(0, w - 1);
                    vec![Stmt::If {
                        cond: Cond::in_range(iy, 0, h).and(Cond::in_range(ix, 0, w)),
                        then: vec![Stmt::store_add(out, at, g.clone())],
                        otherwise: vec![],
                    }]
                })
            }));
            s.extend(b.mask_pass(finish, base, plane));
            s
        })];
        Ok((body, (yd.iter().product::<usize>() * pl.kernel[0] * pl.kernel[1]) as u64))
    }

    /// Per destination position along one axis: source taps and weights.
    fn resize_taps(r: &Resize, axis: usize, in_len: usize, out_len: usize) -> Vec<(usize, usize, f32, f32)> {
        (0..out_len).map(|dst| resize_tap(r, axis, dst, in_len, out_len)).collect()
    }

    fn resize(&mut self, id: NodeId, r: &Resize, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(id));
        let x = self.buf(ins[0])?;
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let name = self.graph.node(id).name.clone();
        let ty = Self::resize_taps(r, 0, xd[2], oh);
        let tx = Self::resize_taps(r, 1, xd[3], ow);
        let t = self.resize_tables(&name, &ty, &tx);
        let body = self.loops(&[xd[0] * xd[1], oh, ow], |_, i| {
            let (nc, oy, ox) = (i[0].clone(), i[1].clone(), i[2].clone());
            let plane = nc.clone() * (h * w);
            let at = |ty: BufId, tx: BufId| {
                Val::load(
                    x,
                    plane.clone() + Idx::Table(ty, Box::new(oy.clone())) * w + Idx::Table(tx, Box::new(ox.clone())),
                )
            };
            let v = match r.mode {
                ResizeMode::Nearest => at(t.y0, t.x0),
                ResizeMode::Bilinear => {
                    let wgt = |tb: BufId, i: &Idx| Val::load(tb, i.clone());
                    let row0 = wgt(t.wx0, &ox).mul(at(t.y0, t.x0)).add(wgt(t.wx1, &ox).mul(at(t.y0, t.x1)));
                    let row1 = wgt(t.wx0, &ox).mul(at(t.y1, t.x0)).add(wgt(t.wx1, &ox).mul(at(t.y1, t.x1)));
                    wgt(t.hy0, &oy).mul(row0).add(wgt(t.hy1, &oy).mul(row1))
                }
            };
            vec![Stmt::store(out, (nc * oh + oy) * ow + ox, v)]
        });
        Ok((body, (yd.iter().product::<usize>() * 8) as u64))
    }

    fn resize_tables(
        &mut self,
        name: &str,
        ty: &[(usize, usize, f32, f32)],
        tx: &[(usize, usize, f32, f32)],
    ) -> ResizeTables {
        let ints = |v: &[(usize, usize, f32, f32)], f: fn(&(usize, usize, f32, f32)) -> usize| {
            v.iter().map(|t| f(t) as i32).collect::<Vec<i32>>()
        };
        let floats = |v: &[(usize, usize, f32, f32)], f: fn(&(usize, usize, f32, f32)) -> f32| {
            v.iter().map(f).collect::<Vec<f32>>()
        };
        ResizeTables {
            y0: self.table_i32(format!("{name}.y0"), ints(ty, |t| t.0)),
            y1: self.table_i32(format!("{name}.y1"), ints(ty, |t| t.1)),
            x0: self.table_i32(format!("{name}.x0"), ints(tx, |t| t.0)),
            x1: self.table_i32(format!("{name}.x1"), ints(tx, |t| t.1)),
            hy0: self.table_f32(format!("{name}.hy0"), floats(ty, |t| t.2)),
            hy1: self.table_f32(format!("{name}.hy1"), floats(ty, |t| t.3)),
            wx0: self.table_f32(format!("{name}.wx0"), floats(tx, |t| t.2)),
            wx1: self.table_f32(format!("{name}.wx1"), floats(tx, |t| t.3)),
        }
    }

    fn resize_grad(
        &mut self,
        id: NodeId,
        r: &Resize,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (yd, xd) = (self.dims(ins[0]), self.dims(id));
        let dy = self.buf(ins[0])?;
        let out = finish.out;
        let (h, w) = (xd[2] as i64, xd[3] as i64);
        let (oh, ow) = (yd[2], yd[3]);
        let plane = (h * w) as usize;
        let name = self.graph.node(id).name.clone();
        let ty = Self::resize_taps(r, 0, xd[2], oh);
        let tx = Self::resize_taps(r, 1, xd[3], ow);
        let t = self.resize_tables(&name, &ty, &tx);
        let body = vec![self.loop_over(xd[0] * xd[1], |b, nc| {
            let base = nc.clone() * plane;
            let mut s = vec![b.zero_pass(out, base.clone(), plane)];
            s.extend(b.loops(&[oh, ow], |_, i| {
                let (oy, ox) = (i[0].clone(), i[1].clone());
                let g = Val::load(dy, (nc.clone() * oh + oy.clone()) * ow + ox.clone());
                let at = |ty: BufId, tx: BufId| {
                    base.clone() + Idx::Table(ty, Box::new(oy.clone())) * w + Idx::Table(tx, Box::new(ox.clone()))
                };
                match r.mode {
                    ResizeMode::Nearest => vec![Stmt::store_add(out, at(t.y0, t.x0), g)],
                    ResizeMode::Bilinear => {
                        let wgt = |tb: BufId, i: &Idx| Val::load(tb, i.clone());
                        let mut s = Vec::new();
                        for (yt, hw, xt, ww) in [
                            (t.y0, t.hy0, t.x0, t.wx0),
                            (t.y0, t.hy0, t.x1, t.wx1),
                            (t.y1, t.hy1, t.x0, t.wx0),
                            (t.y1, t.hy1, t.x1, t.wx1),
                        ] {
                            s.push(Stmt::store_add(out, at(yt, xt), wgt(hw, &oy).mul(wgt(ww, &ox)).mul(g.clone())));
                        }
                        s
                    }
                }
            }));
            s.extend(b.mask_pass(finish, base, plane));
            s
        })];
        Ok((body, (yd.iter().product::<usize>() * 8) as u64))
    }

    fn sum_to(&mut self, id: NodeId, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(id));
        let x = self.buf(ins[0])?;
        let out = finish.out;
        let strides =
            broadcast_strides(&yd, &xd).ok_or_else(|| unsupported(self.graph, id, "shape does not broadcast"))?;
        let xs = contiguous_strides(&xd);
        let total: usize = yd.iter().product();
        let mut body = vec![self.zero_pass(out, Idx::Const(0), total)];
        body.extend(self.loops(&xd, |_, i| {
            let to = i.iter().zip(&strides).fold(Idx::Const(0), |a, (v, &s)| a + v.clone() * s);
            let from = i.iter().zip(&xs).fold(Idx::Const(0), |a, (v, &s)| a + v.clone() * s);
            vec![Stmt::store_add(out, to, Val::load(x, from))]
        }));
        Ok((body, xd.iter().product::<usize>() as u64))
    }

    fn concat(&mut self, id: NodeId, axis: usize, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let yd = self.dims(id);
        let out = finish.out;
        let outer: usize = yd[..axis].iter().product();
        let inner: usize = yd[axis + 1..].iter().product();
        let row = yd[axis] * inner;
        let mut body = Vec::new();
        let mut offset = 0usize;
        for &i in ins {
            let d = self.dims(i);
            let src = self.buf(i)?;
            let block = d[axis] * inner;
            body.extend(self.loops(&[outer, block], |_, v| {
                vec![Stmt::store(
                    out,
                    v[0].clone() * row + offset + v[1].clone(),
                    Val::load(src, v[0].clone() * block + v[1].clone()),
                )]
            }));
            offset += block;
        }
        Ok((body, 0))
    }

    fn slice(
        &mut self,
        id: NodeId,
        axis: usize,
        start: usize,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (xd, yd) = (self.dims(ins[0]), self.dims(id));
        let x = self.buf(ins[0])?;
        let out = finish.out;
        let outer: usize = yd[..axis].iter().product();
        let inner: usize = yd[axis + 1..].iter().product();
        let block = yd[axis] * inner;
        let in_row = xd[axis] * inner;
        let body = self.loops(&[outer, block], |_, v| {
            vec![Stmt::store(
                out,
                v[0].clone() * block + v[1].clone(),
                Val::load(x, v[0].clone() * in_row + start * inner + v[1].clone()),
            )]
        });
        Ok((body, 0))
    }

    fn loss(&mut self, loss: Loss, nodes: &[NodeId], ins: &[NodeId]) -> Result<KernelBody, BuildError> {
        let graph = self.graph;
        let value_node = nodes.iter().copied().find(|&n| matches!(graph.node(n).op, Op::LossValue(_)));
        let grad_node = nodes.iter().copied().find(|&n| matches!(graph.node(n).op, Op::LossGrad(_)));
        let value_buf = value_node.map(|n| self.buf(n)).transpose()?;
        let grad_buf = grad_node.map(|n| self.buf(n)).transpose()?;
        let (pred, target) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let pd = self.dims(ins[0]);
        let count: usize = pd.iter().product();
        let total = self.acc();
        let mut body = vec![Stmt::Let { acc: total, init: Val::Const(0.0) }];
        match loss {
            Loss::CrossEntropy => {
                let (rows, classes) = (pd[0], pd.get(1).copied().unwrap_or(1));
                body.push(self.loop_over(rows, |b, r| {
                    let (m, s, lse) = (b.acc(), b.acc(), b.acc());
                    let z = |c: &Idx| Val::load(pred, r.clone() * classes + c.clone());
                    let label = Val::load(target, r.clone());
                    let is_label = |c: &Idx| Cond::val(Cmp::Eq, Val::FromIdx(c.clone()), label.clone());
                    let mut st = vec![Stmt::Let { acc: m, init: Val::Const(f32::NEG_INFINITY) }];
                    st.push(b.loop_over(classes, |_, c| vec![Stmt::Reduce { acc: m, op: RedOp::Max, val: z(&c) }]));
                    st.push(Stmt::Let { acc: s, init: Val::Const(0.0) });
                    st.push(b.loop_over(classes, |_, c| {
                        vec![Stmt::Reduce { acc: s, op: RedOp::Add, val: z(&c).sub(Val::Acc(m)).un(UnOp::Exp) }]
                    }));
                    st.push(Stmt::Let { acc: lse, init: Val::Acc(m).add(Val::Acc(s).un(UnOp::Ln)) });
                    if value_buf.is_some() {
                        let picked = b.acc();
                        st.push(Stmt::Let { acc: picked, init: Val::Const(0.0) });
                        st.push(b.loop_over(classes, |_, c| {
                            vec![Stmt::Reduce {
                                acc: picked,
                                op: RedOp::Add,
                                val: Val::select(is_label(&c), z(&c), Val::Const(0.0)),
                            }]
                        }));
                        st.push(Stmt::Reduce { acc: total, op: RedOp::Add, val: Val::Acc(lse).sub(Val::Acc(picked)) });
                    }
                    if let Some(g) = grad_buf {
                        st.push(b.loop_over(classes, |_, c| {
                            let softmax = z(&c).sub(Val::Acc(lse)).un(UnOp::Exp);
                            let onehot = Val::select(is_label(&c), Val::Const(1.0), Val::Const(0.0));
                            vec![Stmt::store(
                                g,
                                r.clone() * classes + c,
                                softmax.sub(onehot).div(Val::Const(rows as f32)),
                            )]
                        }));
                    }
                    st
                }));
                if let Some(v) = value_buf {
                    body.push(Stmt::store(v, Idx::Const(0), Val::Acc(total).div(Val::Const(rows as f32))));
                }
            }
            Loss::Mse | Loss::Perceptron => {
                let n = count as f32;
                body.push(self.loop_over(count, |_, e| {
                    let (p, t) = (Val::load(pred, e.clone()), Val::load(target, e.clone()));
                    let mut st = Vec::new();
                    let (term, grad) = if loss == Loss::Mse {
                        let d = p.sub(t);
                        (d.clone().mul(d.clone()), Val::Const(2.0).mul(d).div(Val::Const(n)))
                    } else {
                        let m = t.clone().un(UnOp::Neg).mul(p);
                        let pos = Cond::val(Cmp::Gt, m.clone(), Val::Const(0.0));
                        (
                            Val::select(pos.clone(), m, Val::Const(0.0)),
                            Val::select(pos, t.un(UnOp::Neg).div(Val::Const(n)), Val::Const(0.0)),
                        )
                    };
                    if value_buf.is_some() {
                        st.push(Stmt::Reduce { acc: total, op: RedOp::Add, val: term });
                    }
                    if let Some(g) = grad_buf {
                        st.push(Stmt::store(g, e, grad));
                    }
                    st
                }));
                if let Some(v) = value_buf {
                    body.push(Stmt::store(v, Idx::Const(0), Val::Acc(total).div(Val::Const(n))));
                }
            }
        }
        Ok((body, 8 * count as u64))
    }
}

/// Buffers of a resize's per-axis interpolation tables.
struct ResizeTables {
    y0: BufId,
    y1: BufId,
    x0: BufId,
    x1: BufId,
    hy0: BufId,
    hy1: BufId,
    wx0: BufId,
    wx1: BufId,
}

/// `g + wd * p`, or `g` when there is no weight decay (PyTorch's rule).
fn decayed_grad(p: Val, g: Val, s: &Sgd) -> Val {
    if s.weight_decay != 0.0 { g.add(Val::Const(s.weight_decay).mul(p)) } else { g }
}

/// One destination position's taps along one axis: `(i0, i1, w0, w1)`
/// (PyTorch's `nearest` index in `i0`, or its bilinear taps and weights),
/// computed by the same rules the interpreter uses.
fn resize_tap(r: &Resize, axis: usize, dst: usize, in_len: usize, out_len: usize) -> (usize, usize, f32, f32) {
    match r.mode {
        ResizeMode::Nearest => {
            let i = r.nearest_source(axis, dst, in_len, out_len);
            (i, i, 1.0, 0.0)
        }
        ResizeMode::Bilinear => r.linear_taps(axis, dst, in_len, out_len),
    }
}
