//! The reference interpreter: plain f32 loops for every op of the IR.
//!
//! This is the oracle every backend is tested against, so it favours being
//! obviously correct over being fast: one function per op, written as the
//! textbook loop nest with PyTorch's semantics, and every operand checked
//! before it is indexed so a malformed graph or a bad feed is an
//! [`InterpError`], never a panic.
//!
//! Sums accumulate in f32 in the natural order of the loop nest (row-major
//! over the reduced axes), except the losses, which accumulate in f64 and
//! round once at the end.
//!
//! This file holds the driver (`evaluate`, `step`), the errors, operand
//! checks and the dispatch from op to function; each op family is a module.

mod conv;
mod elementwise;
mod layout;
mod linear;
mod loss;
mod norm;
mod pool;
mod resize;
mod sgd;
mod softmax;
#[cfg(test)]
mod tests;
mod window;

use conv::{conv2d, conv2d_grad_input, conv2d_grad_weight};
use elementwise::{activate, activate_grad, binary, neg, sum_to};
use layout::{concat, reshape, slice};
use linear::{bias_grad, linear, linear_grad_input, linear_grad_weight};
use loss::{loss_grad, loss_value};
use norm::{batch_mean, batch_norm, batch_norm_grad_input, batch_norm_grad_weight, batch_var, running_stat};
use pool::{avg_pool2d, avg_pool2d_grad, max_pool2d, max_pool2d_grad};
use resize::{resize, resize_grad};
use sgd::{adam_moment, adam_step, clip_factor, sgd_momentum, sgd_step};
use softmax::{softmax, softmax_grad};

use std::collections::HashMap;

use crate::graph::{Graph, Node, NodeId};
use crate::ops::{Op, dropout};
use crate::tensor::Tensor;

/// Why a graph could not be evaluated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// A leaf that has no default value was not fed.
    #[error("no value was fed for {kind} `{name}` (expected a tensor of shape {expected:?})")]
    MissingFeed {
        /// The leaf's name.
        name: String,
        /// The leaf's role (`input`, `param`, `labels`, `target`).
        kind: String,
        /// The shape the graph expects at this batch size.
        expected: Vec<usize>,
    },
    /// A fed tensor does not have the leaf's shape.
    #[error("`{name}` expects a tensor of shape {expected:?} but was fed one of shape {got:?}")]
    FeedShape {
        /// The leaf's name.
        name: String,
        /// The shape the graph expects at this batch size.
        expected: Vec<usize>,
        /// The shape that was fed.
        got: Vec<usize>,
    },
    /// A fed tensor's data length disagrees with its own shape.
    #[error("the tensor fed for `{name}` has shape {shape:?} but holds {len} values")]
    FeedData {
        /// The leaf's name.
        name: String,
        /// The tensor's claimed shape.
        shape: Vec<usize>,
        /// How many values it actually holds.
        len: usize,
    },
    /// A class label is not an integer in `0..classes`.
    #[error("`{name}`[{position}] = {value} is not a class index in 0..{classes}")]
    LabelOutOfRange {
        /// The labels leaf's name.
        name: String,
        /// Position of the bad label in the batch.
        position: usize,
        /// The label as fed.
        value: f32,
        /// Number of classes (columns of the logits).
        classes: usize,
    },
    /// A node's operands do not fit its op: the graph was built wrongly.
    #[error("node `{name}` ({op}): {reason}")]
    Malformed {
        /// The node's name.
        name: String,
        /// The node's op mnemonic.
        op: String,
        /// What is wrong.
        reason: String,
    },
}

/// Evaluates every node of `graph` for batch size `batch`.
///
/// Returns one tensor per node, indexed by [`NodeId::index`]. Leaves take
/// their values from `feeds`; a missing [`Op::OptimState`] is zeros, any
/// other missing leaf is an error, as is a feed whose shape is not the node's
/// shape at this batch size.
pub fn evaluate(graph: &Graph, batch: usize, feeds: &HashMap<NodeId, Tensor>) -> Result<Vec<Tensor>, InterpError> {
    let mut values: Vec<Tensor> = Vec::with_capacity(graph.len());
    for id in graph.node_ids() {
        let node = graph.node(id);
        let shape = node.shape.at_batch(batch);
        let value = if node.op.is_leaf() {
            leaf_value(node, id, shape, feeds)?
        } else {
            let mut args = Vec::with_capacity(node.inputs.len());
            for &operand in &node.inputs {
                match values.get(operand.index()) {
                    Some(t) => args.push(t),
                    None => {
                        return Err(malformed(node, format!("operand {} does not precede the node", operand.index())));
                    }
                }
            }
            run_op(&node.op, &args, &shape, batch).map_err(|fault| match fault {
                Fault::Malformed(reason) => malformed(node, reason),
                Fault::Label { position, value, classes } => InterpError::LabelOutOfRange {
                    name: node.inputs.get(1).map_or_else(String::new, |&l| graph.node(l).name.clone()),
                    position,
                    value,
                    classes,
                },
            })?
        };
        values.push(value);
    }
    Ok(values)
}

/// One run that updates state (a training step, or a forward pass in
/// training mode): evaluates `graph` on `leaves`, then replaces every leaf
/// named in `graph.updates` (parameters, buffers, optimizer state) with the
/// value its update node computed.
///
/// Returns the values of all nodes of the step (before the update, as seen
/// by the step: the loss, the gradients, the new parameters). `leaves` is
/// left unchanged when an error is returned.
pub fn step(graph: &Graph, batch: usize, leaves: &mut HashMap<NodeId, Tensor>) -> Result<Vec<Tensor>, InterpError> {
    let values = evaluate(graph, batch, leaves)?;
    // Check every update before writing any, so an error leaves `leaves` intact.
    for &(leaf, new) in &graph.updates {
        let Some(node) = graph.get(leaf) else {
            return Err(InterpError::Malformed {
                name: format!("#{}", leaf.index()),
                op: "update".into(),
                reason: "the graph updates a node it does not have".into(),
            });
        };
        let expected = node.shape.at_batch(batch);
        if values.get(new.index()).is_none_or(|v| v.shape != expected) {
            return Err(malformed(
                node,
                format!("its update node {} does not compute a tensor of shape {expected:?}", new.index()),
            ));
        }
    }
    for &(leaf, new) in &graph.updates {
        leaves.insert(leaf, values[new.index()].clone());
    }
    Ok(values)
}

fn malformed(node: &Node, reason: String) -> InterpError {
    InterpError::Malformed { name: node.name.clone(), op: node.op.mnemonic(), reason }
}

fn leaf_value(
    node: &Node,
    id: NodeId,
    shape: Vec<usize>,
    feeds: &HashMap<NodeId, Tensor>,
) -> Result<Tensor, InterpError> {
    let Some(fed) = feeds.get(&id) else {
        match node.op {
            Op::OptimState => return Ok(Tensor::zeros(&shape)),
            Op::Hyper { initial } => return Ok(Tensor { shape, data: vec![initial] }),
            _ => {}
        }
        return Err(InterpError::MissingFeed { name: node.name.clone(), kind: node.op.mnemonic(), expected: shape });
    };
    if fed.shape.iter().product::<usize>() != fed.data.len() {
        return Err(InterpError::FeedData { name: node.name.clone(), shape: fed.shape.clone(), len: fed.data.len() });
    }
    if fed.shape != shape {
        return Err(InterpError::FeedShape { name: node.name.clone(), expected: shape, got: fed.shape.clone() });
    }
    Ok(fed.clone())
}

/// Why one op failed; the caller adds the node's name.
enum Fault {
    Malformed(String),
    Label { position: usize, value: f32, classes: usize },
}

type OpResult = Result<Tensor, Fault>;

fn ensure(cond: bool, reason: impl FnOnce() -> String) -> Result<(), Fault> {
    if cond { Ok(()) } else { Err(Fault::Malformed(reason())) }
}

/// Exactly `K` operands, or an error.
fn operands<'a, const K: usize>(args: &[&'a Tensor]) -> Result<[&'a Tensor; K], Fault> {
    <[&Tensor; K]>::try_from(args).map_err(|_| Fault::Malformed(format!("expects {K} operands but has {}", args.len())))
}

/// `[x, w]` or `[x, w, b]`.
fn weight_operands<'a>(args: &[&'a Tensor]) -> Result<(&'a Tensor, &'a Tensor, Option<&'a Tensor>), Fault> {
    match *args {
        [x, w] => Ok((x, w, None)),
        [x, w, b] => Ok((x, w, Some(b))),
        _ => Err(Fault::Malformed(format!("expects 2 or 3 operands but has {}", args.len()))),
    }
}

fn same_shape(a: &Tensor, b: &Tensor, what: &str) -> Result<(), Fault> {
    ensure(a.shape == b.shape, || format!("{what}: shapes {:?} and {:?} differ", a.shape, b.shape))
}

fn run_op(op: &Op, args: &[&Tensor], out: &[usize], batch: usize) -> OpResult {
    match op {
        Op::Input
        | Op::Param { .. }
        | Op::Buffer { .. }
        | Op::Labels
        | Op::Target
        | Op::OptimState
        | Op::Hyper { .. } => Err(Fault::Malformed("a leaf has no computation".into())),
        Op::Conv2d(c) => {
            let (x, w, b) = weight_operands(args)?;
            conv2d(x, w, b, c, out)
        }
        Op::Conv2dGradInput(c) => {
            let [dy, w] = operands(args)?;
            conv2d_grad_input(dy, w, c, out)
        }
        Op::Conv2dGradWeight(c) => {
            let [x, dy] = operands(args)?;
            conv2d_grad_weight(x, dy, c, out)
        }
        Op::Linear => {
            let (x, w, b) = weight_operands(args)?;
            linear(x, w, b, out)
        }
        Op::LinearGradInput => {
            let [dy, w] = operands(args)?;
            linear_grad_input(dy, w, out)
        }
        Op::LinearGradWeight => {
            let [x, dy] = operands(args)?;
            linear_grad_weight(x, dy, out)
        }
        Op::BiasGrad { axis } => {
            let [dy] = operands(args)?;
            bias_grad(dy, *axis, out)
        }
        Op::MaxPool2d(p) => {
            let [x] = operands(args)?;
            max_pool2d(x, p, out)
        }
        Op::MaxPool2dGrad(p) => {
            let [x, dy] = operands(args)?;
            max_pool2d_grad(x, dy, p, out)
        }
        Op::AvgPool2d(p) => {
            let [x] = operands(args)?;
            avg_pool2d(x, p, out)
        }
        Op::AvgPool2dGrad(p) => {
            let [dy] = operands(args)?;
            avg_pool2d_grad(dy, p, out)
        }
        Op::Resize(r) => {
            let [x] = operands(args)?;
            resize(x, r, out)
        }
        Op::ResizeGrad(r) => {
            let [dy] = operands(args)?;
            resize_grad(dy, r, out)
        }
        Op::Activate(a) => {
            let [x] = operands(args)?;
            activate(x, *a, out)
        }
        Op::ActivateGrad(a) => {
            let [x, dy] = operands(args)?;
            activate_grad(x, dy, *a, out)
        }
        Op::Binary(b) => {
            let [lhs, rhs] = operands(args)?;
            binary(lhs, rhs, *b, out)
        }
        Op::Neg => {
            let [x] = operands(args)?;
            neg(x, out)
        }
        Op::BatchNorm(bn) | Op::BatchNormTrain(bn) => batch_norm(args, bn.eps, out),
        Op::BatchMean => {
            let [x] = operands(args)?;
            batch_mean(x, out)
        }
        Op::BatchVar => {
            let [x, mean] = operands(args)?;
            batch_var(x, mean, out)
        }
        Op::BatchNormGradWeight { eps } => batch_norm_grad_weight(args, *eps, out),
        Op::BatchNormGradInput { eps, training } => batch_norm_grad_input(args, *eps, *training, out),
        Op::RunningStat { momentum, unbias } => {
            let [running, stat] = operands(args)?;
            running_stat(running, stat, *momentum, unbias.map(|m| m.at_batch(batch)), out)
        }
        Op::Dropout { .. } => {
            let [x] = operands(args)?;
            Ok(x.clone())
        }
        Op::DropoutTrain { p, seed } | Op::DropoutGrad { p, seed } => {
            let [x, step] = operands(args)?;
            ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
            let step = step.data.first().copied().unwrap_or(0.0) as u64;
            let scale = dropout::scale(*p);
            let data = (0..x.numel())
                .map(|e| if dropout::keeps(*seed, step, e as u64, *p) { x.data[e] * scale } else { 0.0 })
                .collect();
            Ok(Tensor { shape: out.to_vec(), data })
        }
        Op::Increment => {
            let [c] = operands(args)?;
            Ok(Tensor { shape: out.to_vec(), data: c.data.iter().map(|v| v + 1.0).collect() })
        }
        Op::Softmax { axis, log } => {
            let [x] = operands(args)?;
            softmax(x, *axis, *log, out)
        }
        Op::SoftmaxGrad { axis, log } => {
            let [y, dy] = operands(args)?;
            softmax_grad(y, dy, *axis, *log, out)
        }
        Op::SumTo => {
            let [x] = operands(args)?;
            sum_to(x, out)
        }
        Op::Reshape => {
            let [x] = operands(args)?;
            reshape(x, out)
        }
        Op::Concat { axis } => concat(args, *axis, out),
        Op::Slice { axis, start } => {
            let [x] = operands(args)?;
            slice(x, *axis, *start, out)
        }
        Op::LossValue(loss) => {
            let [pred, target] = operands(args)?;
            loss_value(pred, target, *loss, out)
        }
        Op::LossGrad(loss) => {
            let [pred, target] = operands(args)?;
            loss_grad(pred, target, *loss, out)
        }
        Op::SgdMomentum(sgd) => {
            let [p, g, buf] = operands(args)?;
            sgd_momentum(p, g, buf, sgd, out)
        }
        Op::AdamMoment1(a) | Op::AdamMoment2(a) => {
            let [p, g, state] = operands(args)?;
            adam_moment(p, g, state, a, matches!(op, Op::AdamMoment2(_)), out)
        }
        Op::AdamStep(a) => adam_step(args, a, out),
        Op::ClipFactor { max_norm } => {
            let [sum] = operands(args)?;
            clip_factor(sum, *max_norm, out)
        }
        Op::SgdStep(sgd) => match *args {
            [p, g, lr] => sgd_step(p, g, None, lr, sgd, out),
            [p, g, buf, lr] => sgd_step(p, g, Some(buf), lr, sgd, out),
            _ => Err(Fault::Malformed(format!("expects 3 or 4 operands but has {}", args.len()))),
        },
    }
}
