//! Elementwise groups: a chain of activations, arithmetic and SGD updates
//! fused into one loop nest over the broadcast domain, with adjacent
//! contiguous axes merged. Also the expressions of activations and their
//! derivatives, which GEMM epilogues and other kernels reuse.

use super::{Builder, broadcast_strides, contiguous_strides, make_kernel, unsupported};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::{Activation, Adam, BinaryOp, GELU_TANH_CUBIC, GELU_TANH_SCALE, GeluForm, Op, Sgd, dropout};
use std::collections::HashMap;
use std::ops::{Add, Div, Mul, Sub};

/// An iteration axis of an elementwise kernel after merging contiguous
/// axes: `(length, stride of each operand, stride of the output)`.
type CollapsedAxis = (usize, Vec<i64>, i64);

impl Builder<'_> {
    pub(super) fn elementwise(&mut self, nodes: &[NodeId]) -> Result<Kernel, BuildError> {
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
                Op::Dropout { .. } => arg(0),
                Op::Increment => arg(0).add(Val::Const(1.0)),
                Op::DropoutTrain { p, seed } | Op::DropoutGrad { p, seed } => {
                    let step = Idx::FloatTable(self.buf(node.inputs[1])?, Box::new(Idx::Const(0)));
                    let keep = Cond::Index(
                        Cmp::Ge,
                        dropout_hash(*seed, step, out_idx.clone()),
                        Idx::Const(dropout::threshold(*p) as i64),
                    );
                    Val::select(keep, arg(0).mul(Val::Const(dropout::scale(*p))), Val::Const(0.0))
                }
                Op::RunningStat { momentum, unbias } => {
                    let factor = match unbias.map(|m| m.at_batch(self.batch)) {
                        Some(m) if m > 1 => m as f32 / (m - 1) as f32,
                        Some(m) => {
                            let why = format!("an unbiased variance needs more than one value per channel, got {m}");
                            return Err(unsupported(graph, n, why));
                        }
                        None => 1.0,
                    };
                    let stat = if factor == 1.0 { arg(1) } else { arg(1).mul(Val::Const(factor)) };
                    Val::Const(1.0 - momentum).mul(arg(0)).add(Val::Const(*momentum).mul(stat))
                }
                Op::ClipFactor { max_norm } => {
                    let factor = Val::Const(*max_norm).div(arg(0).un(UnOp::Sqrt).add(Val::Const(1e-6)));
                    // A NaN norm stays NaN, as PyTorch's clamp keeps it.
                    Val::select(Cond::val(Cmp::Ge, factor.clone(), Val::Const(1.0)), Val::Const(1.0), factor)
                }
                Op::AdamMoment1(a) => {
                    let (g, m) = (adam_grad(arg(0), arg(1), a), arg(2));
                    // PyTorch's lerp(m, g, w), its form for each half of w.
                    let w = 1.0 - a.beta1;
                    if w < 0.5 {
                        m.clone().add(Val::Const(w).mul(g.sub(m)))
                    } else {
                        g.clone().sub(g.sub(m).mul(Val::Const(1.0 - w)))
                    }
                }
                Op::AdamMoment2(a) => {
                    let g = adam_grad(arg(0), arg(1), a);
                    arg(2).mul(Val::Const(a.beta2)).add(Val::Const(1.0 - a.beta2).mul(g.clone().mul(g)))
                }
                Op::AdamStep(a) => {
                    // `[p, m, v, lr, step_size, bc2_sqrt]`.
                    let p = if a.decoupled && a.weight_decay != 0.0 {
                        arg(0).mul(Val::Const(1.0).sub(arg(3).mul(Val::Const(a.weight_decay))))
                    } else {
                        arg(0)
                    };
                    let denom = arg(2).un(UnOp::Sqrt).div(arg(5)).add(Val::Const(a.eps));
                    p.sub(arg(4).mul(arg(1).div(denom)))
                }
                Op::SgdMomentum(s) => Val::Const(s.momentum).mul(arg(2)).add(decayed_grad(arg(0), arg(1), s)),
                Op::SgdStep(s) => {
                    // `[p, g, lr]` or `[p, g, new_buf, lr]`.
                    let lr = arg(node.inputs.len() - 1);
                    let d = decayed_grad(arg(0), arg(1), s);
                    let d = match node.inputs.len() {
                        4 if s.nesterov => d.add(Val::Const(s.momentum).mul(arg(2))),
                        4 => arg(2),
                        _ => d,
                    };
                    arg(0).sub(lr.mul(d))
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
}

/// `1 / (1 + e^-x)`.
fn sigmoid(x: Val) -> Val {
    Val::Const(1.0).div(Val::Const(1.0).add(x.un(UnOp::Neg).un(UnOp::Exp)))
}

/// `(Phi(x), Phi'(x))` of a GELU form, the same arithmetic as the graph
/// interpreter's.
fn gelu_cdf(form: GeluForm, x: Val) -> (Val, Val) {
    let c = Val::Const;
    match form {
        GeluForm::Exact => {
            let cdf = c(0.5).mul(c(1.0).add(x.clone().mul(c(std::f32::consts::FRAC_1_SQRT_2)).un(UnOp::Erf)));
            let pdf = c(0.398_942_3).mul(c(-0.5).mul(x.clone()).mul(x).un(UnOp::Exp));
            (cdf, pdf)
        }
        GeluForm::Tanh => {
            let cube = c(GELU_TANH_CUBIC).mul(x.clone()).mul(x.clone()).mul(x.clone());
            let t = c(GELU_TANH_SCALE).mul(x.clone().add(cube)).un(UnOp::Tanh);
            let slope = c(1.0).add(c(3.0 * GELU_TANH_CUBIC).mul(x.clone()).mul(x));
            let dt = c(0.5).mul(c(1.0).sub(t.clone().mul(t.clone()))).mul(c(GELU_TANH_SCALE)).mul(slope);
            (c(0.5).mul(c(1.0).add(t)), dt)
        }
    }
}

/// The expression of `a(x)`, matching [`Activation::apply`].
pub(crate) fn activation_expr(a: Activation, x: Val) -> Val {
    let zero = || Val::Const(0.0);
    let pos = |x: &Val| Cond::val(Cmp::Gt, x.clone(), Val::Const(0.0));
    match a {
        Activation::Relu => x.un(UnOp::Relu),
        Activation::Sigmoid => sigmoid(x),
        Activation::Tanh => x.un(UnOp::Tanh),
        Activation::Gelu(form) => x.clone().mul(gelu_cdf(form, x).0),
        Activation::Silu => x.clone().mul(sigmoid(x)),
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
            let s = sigmoid(x);
            s.clone().mul(Val::Const(1.0).sub(s)).mul(dy)
        }
        Activation::Gelu(form) => {
            let (cdf, dcdf) = gelu_cdf(form, x.clone());
            cdf.add(x.mul(dcdf)).mul(dy)
        }
        Activation::Silu => {
            let s = sigmoid(x.clone());
            s.clone().mul(Val::Const(1.0).add(x.mul(Val::Const(1.0).sub(s)))).mul(dy)
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

/// `g + wd * p`, or `g` when there is no weight decay (PyTorch's rule).
fn decayed_grad(p: Val, g: Val, s: &Sgd) -> Val {
    if s.weight_decay != 0.0 { g.add(Val::Const(s.weight_decay).mul(p)) } else { g }
}

/// Adam's gradient: `g + wd * p` with L2 weight decay (not AdamW's).
fn adam_grad(p: Val, g: Val, a: &Adam) -> Val {
    if a.weight_decay != 0.0 && !a.decoupled { g.add(Val::Const(a.weight_decay).mul(p)) } else { g }
}

/// [`dropout::hash`]` % MASK_BITS` of element `e` at `step`, as index
/// arithmetic: each multiply modulo 2^32 split in 16-bit halves, so every
/// intermediate stays below 2^63.
fn dropout_hash(seed: u32, step: Idx, e: Idx) -> Idx {
    let m = dropout::MODULUS as i64;
    // `(h * k) % 2^32` for `h < 2^32`: `(lo * k + ((hi * k) % 2^16) * 2^16) % 2^32`.
    let mul_mod = |h: Idx, k: u64| {
        let k = k as i64;
        let half: i64 = 1 << 16;
        ((h.clone() % half) * k + ((h / half) * k % half) * half) % m
    };
    let xor_shift = |h: Idx, s: u32| Idx::Xor(Box::new(h.clone()), Box::new(h / (1i64 << s)));
    let [ke, ks, kseed] = dropout::KEY;
    let key = (e % m) * ke as i64
        + (step % dropout::STEP_PERIOD as i64) * ks as i64
        + Idx::Const(i64::from(seed) * kseed as i64);
    let h = xor_shift(key % m, 16);
    let h = xor_shift(mul_mod(h, dropout::FINALISER[0]), 13);
    let h = xor_shift(mul_mod(h, dropout::FINALISER[1]), 16);
    h % dropout::MASK_BITS as i64
}
