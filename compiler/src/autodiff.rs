//! Reverse-mode automatic differentiation as a graph transformation.
//!
//! [`derive_training`] turns a forward graph into a training graph by
//! appending, as ordinary nodes of the same IR, the loss, the backward pass
//! (the `*Grad` ops of [`crate::ops`]) and the SGD update, and records the
//! nodes' roles in [`Training`].
//!
//! Choices worth knowing:
//! - Gradients are computed for every node that both leads to the loss
//!   (output 0) and depends on a parameter or a forward input; nothing else
//!   gets backward nodes. Gradients w.r.t. every forward [`Op::Input`] that
//!   reaches the loss are kept (`Training::input_grads`), so a dead-code pass
//!   should drop them when only training.
//! - A parameter that does not reach the loss has no gradient (PyTorch's
//!   `grad is None`): it is left out of `param_grads`, gets no optimizer
//!   buffer and no update, so it keeps its value. Likewise an input that does
//!   not reach the loss is left out of `input_grads`.
//! - A value used several times receives the sum of its users' gradient
//!   contributions (`Binary(Add)`, in reverse topological order of the users).
//! - Forward [`Op::SumTo`] and [`Op::Slice`] have no backward here: their
//!   gradients need a broadcast or a zero-padding op the IR does not have.

use crate::mode::{Mode, training_mode};
use std::collections::HashSet;

use crate::graph::{Graph, NodeId, Stage, Training};
use crate::ops::{Activation, BinaryOp, Loss, Op, Optim, Sgd, Update};
use crate::shape::Shape;

/// Why a training graph could not be derived.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AutodiffError {
    /// The forward graph has no outputs to apply the loss to.
    #[error("graph `{graph}` has no outputs, so there is nothing to apply a loss to")]
    NoOutputs {
        /// The graph's name.
        graph: String,
    },
    /// The forward graph already carries a training section.
    #[error("graph `{graph}` already has a loss, a backward pass and an update")]
    AlreadyTraining {
        /// The graph's name.
        graph: String,
    },
    /// Cross-entropy needs `[N, classes]` logits.
    #[error("cross-entropy needs logits of shape [N, classes], but output `{output}` has shape {shape}")]
    CrossEntropyRank {
        /// The output node's name.
        output: String,
        /// Its shape.
        shape: Shape,
    },
    /// A node on the way to the loss has no backward rule.
    #[error("cannot differentiate through `{name}` ({op}): {reason}")]
    NotDifferentiable {
        /// The node's name.
        name: String,
        /// The node's op mnemonic.
        op: String,
        /// Why.
        reason: String,
    },
}

/// One gradient contribution to a forward node.
#[derive(Clone, Copy)]
struct Part {
    /// The node holding the contribution.
    node: NodeId,
    /// Whether `node` was created for this contribution alone (and may be
    /// renamed after the value it is a gradient of) or is another value's
    /// gradient passed through unchanged.
    owned: bool,
    /// The forward user it came through.
    from: NodeId,
}

/// A name for backward nodes until their final name is known.
const PENDING: &str = "";

/// The backward pass under construction.
struct Backward {
    g: Graph,
    /// Per forward node: whether a gradient w.r.t. it is needed.
    needs: Vec<bool>,
    /// Per forward node: contributions received so far.
    parts: Vec<Vec<Part>>,
    /// Pass-through gradient nodes already renamed after a leaf.
    leaf_named: HashSet<NodeId>,
}

impl Backward {
    fn name(&self, id: NodeId) -> &str {
        &self.g.node(id).name
    }

    fn shape(&self, id: NodeId) -> Shape {
        self.g.node(id).shape.clone()
    }

    /// Appends a backward node named `name` (made unique).
    fn add(&mut self, name: &str, op: Op, shape: Shape, inputs: Vec<NodeId>) -> NodeId {
        let name = if name == PENDING { PENDING.to_string() } else { self.g.fresh_name(name) };
        self.g.add(name, op, shape, inputs, Stage::Backward)
    }

    /// Records `op(inputs)`, of `target`'s shape, as a gradient contribution
    /// to `target` coming through `from`.
    fn emit(&mut self, target: NodeId, from: NodeId, op: Op, inputs: Vec<NodeId>) {
        if self.needs[target.index()] {
            let node = self.add(PENDING, op, self.shape(target), inputs);
            self.parts[target.index()].push(Part { node, owned: true, from });
        }
    }

    /// Records `dy` (of `from`'s shape) as a contribution to `target`,
    /// summed over broadcast axes when `target` is smaller; with `negate`
    /// the contribution is `-dy`.
    fn emit_unbroadcast(&mut self, target: NodeId, from: NodeId, dy: NodeId, negate: bool) {
        if !self.needs[target.index()] {
            return;
        }
        let shape = self.shape(target);
        let (node, owned) = match (self.shape(dy) == shape, negate) {
            (true, false) => (dy, false),
            (true, true) => (self.add(PENDING, Op::Neg, shape, vec![dy]), true),
            (false, false) => (self.add(PENDING, Op::SumTo, shape, vec![dy]), true),
            (false, true) => {
                let base = format!("neg_grad_{}", self.name(target));
                let sum = self.add(&base, Op::SumTo, shape.clone(), vec![dy]);
                (self.add(PENDING, Op::Neg, shape, vec![sum]), true)
            }
        };
        self.parts[target.index()].push(Part { node, owned, from });
    }

    /// Sums the contributions to `v` into its gradient and names the nodes:
    /// the gradient is `grad_<v>`, several contributions are
    /// `grad_<v>_from_<user>` and partial sums `grad_<v>_partial`.
    fn finish(&mut self, v: NodeId) -> Option<NodeId> {
        let parts = std::mem::take(&mut self.parts[v.index()]);
        let vname = self.name(v).to_string();
        match parts.as_slice() {
            [] => None,
            [only] => {
                // A gradient passed through unchanged (`p + x`) keeps its name,
                // unless it reaches a parameter or input: then it is named after
                // that leaf (once), which is the name a reader looks for.
                let leaf = self.g.node(v).op.is_leaf() && !self.leaf_named.contains(&only.node);
                if only.owned || leaf {
                    self.rename(only.node, &format!("grad_{vname}"));
                }
                if leaf {
                    self.leaf_named.insert(only.node);
                }
                Some(only.node)
            }
            [first, rest @ ..] => {
                for part in &parts {
                    if part.owned {
                        let base = format!("grad_{vname}_from_{}", self.name(part.from));
                        self.rename(part.node, &base);
                    }
                }
                let shape = self.shape(v);
                let mut sum = first.node;
                for (i, part) in rest.iter().enumerate() {
                    let base =
                        if i + 1 == rest.len() { format!("grad_{vname}") } else { format!("grad_{vname}_partial") };
                    sum = self.add(&base, Op::Binary(BinaryOp::Add), shape.clone(), vec![sum, part.node]);
                }
                Some(sum)
            }
        }
    }

    /// Gives node `id` a unique name derived from `base`.
    fn rename(&mut self, id: NodeId, base: &str) {
        self.g.rename(id, PENDING);
        let name = self.g.fresh_name(base);
        self.g.rename(id, name);
    }
}

/// Derives the training graph of `forward`: the loss `loss` on output 0,
/// the gradients of every parameter and input reaching it, and one SGD
/// update per parameter with a gradient (see the module docs).
///
/// Added nodes: a leaf `labels` `[N]` (cross-entropy) or `target` (the
/// output's shape) in [`Stage::Loss`], `loss` = [`Op::LossValue`] and the seed
/// [`Op::LossGrad`]; backward nodes named `grad_<forward name>`
/// ([`Stage::Backward`]); per parameter `new_<key>` = [`Op::SgdStep`] and, with
/// momentum, a zero-initialised [`Op::OptimState`] leaf `momentum_<key>` and
/// its update `new_momentum_<key>` = [`Op::SgdMomentum`] ([`Stage::Update`]).
pub fn derive_training(forward: &Graph, loss: Loss, sgd: Sgd) -> Result<Graph, AutodiffError> {
    derive_training_in(Mode::Train, forward, loss, sgd)
}

/// [`derive_training`] in a given mode: [`Mode::Eval`] differentiates the
/// forward graph as it is (running statistics, no updates of them), as
/// PyTorch's `loss.backward()` after `model.eval()`.
pub fn derive_training_in(mode: Mode, forward: &Graph, loss: Loss, sgd: Sgd) -> Result<Graph, AutodiffError> {
    derive_training_with(mode, forward, loss, Optim::Sgd(sgd))
}

/// [`derive_training_in`] with any optimizer: SGD, or Adam/AdamW with its
/// two moments per parameter as optimizer state and its bias corrections
/// as run-time inputs ([`Training::adam_corrections`]).
pub fn derive_training_with(
    mode: Mode,
    forward: &Graph,
    loss: Loss,
    update: impl Into<Update>,
) -> Result<Graph, AutodiffError> {
    let Update { optim, clip_grad_norm } = update.into();
    if forward.training.is_some() {
        return Err(AutodiffError::AlreadyTraining { graph: forward.name.clone() });
    }
    // Training mode: batch statistics, and updates of the running ones.
    let mut forward = match mode {
        Mode::Train => training_mode(forward),
        Mode::Eval => forward.clone(),
    };
    let running_updates = std::mem::take(&mut forward.updates);
    let forward = &forward;
    let Some(&out) = forward.outputs.first() else {
        return Err(AutodiffError::NoOutputs { graph: forward.name.clone() });
    };
    let out_node = forward.node(out);
    let out_shape = out_node.shape.clone();
    if loss.takes_labels() && out_shape.rank() != 2 {
        return Err(AutodiffError::CrossEntropyRank { output: out_node.name.clone(), shape: out_shape });
    }

    let needs = needed_gradients(forward, out);
    let n_forward = forward.len();
    let mut b = Backward { g: forward.clone(), needs, parts: vec![Vec::new(); n_forward], leaf_named: HashSet::new() };

    // The loss and its gradient seed.
    let (target_op, target_shape, target_name) = match loss {
        Loss::CrossEntropy | Loss::SmoothedCrossEntropy(_) => (Op::Labels, Shape(vec![out_shape.0[0]]), "labels"),
        Loss::Mse | Loss::Perceptron => (Op::Target, out_shape.clone(), "target"),
    };
    let target_name = b.g.fresh_name(target_name);
    let target = b.g.add(target_name, target_op, target_shape, vec![], Stage::Loss);
    let loss_name = b.g.fresh_name("loss");
    let loss_node = b.g.add(loss_name, Op::LossValue(loss), Shape::scalar(), vec![out, target], Stage::Loss);
    let seed_name = b.g.fresh_name(&format!("grad_{}", b.name(out)));
    let seed = b.g.add(seed_name, Op::LossGrad(loss), out_shape, vec![out, target], Stage::Loss);
    if b.needs[out.index()] {
        b.parts[out.index()].push(Part { node: seed, owned: false, from: loss_node });
    }

    // The backward pass, users before operands.
    let mut grads: Vec<Option<NodeId>> = vec![None; n_forward];
    for u in (0..n_forward).rev().map(NodeId::new) {
        if !b.needs[u.index()] {
            continue;
        }
        let Some(dy) = b.finish(u) else { continue };
        grads[u.index()] = Some(dy);
        backward_of(&mut b, u, dy)?;
    }

    // The optimizer.
    let mut param_grads = Vec::new();
    let mut optim_state = Vec::new();
    let mut updates = Vec::new();
    let mut lr = None;
    let mut adam_corrections = None;
    let clip = match clip_grad_norm {
        Some(max_norm) => clip_factor(&mut b, forward, &grads, max_norm),
        None => None,
    };
    for &p in &forward.params {
        let Some(raw_grad) = grads.get(p.index()).copied().flatten() else {
            continue;
        };
        param_grads.push((p, raw_grad));
        // The optimizer reads the clipped gradient; `param_grads` keep the gradient itself.
        let grad = match clip {
            Some(factor) => {
                let name = b.g.fresh_name(&format!("clipped_grad_{}", b.name(p)));
                b.g.add(name, Op::Binary(BinaryOp::Mul), b.shape(p), vec![raw_grad, factor], Stage::Update)
            }
            None => raw_grad,
        };
        let hyper = |b: &mut Backward, name: &str, initial: f32| {
            let name = b.g.fresh_name(name);
            b.g.add(name, Op::Hyper { initial }, Shape::scalar(), vec![], Stage::Update)
        };
        let lr = *lr.get_or_insert_with(|| hyper(&mut b, "lr", optim.lr()));
        let key = b.name(p).to_string();
        let shape = b.shape(p);
        let sgd = match optim {
            Optim::Sgd(sgd) => sgd,
            Optim::Adam(adam) => {
                let (step_size, bc2_sqrt) = *adam_corrections.get_or_insert_with(|| {
                    let (step, bc2) = adam.bias_corrections(adam.lr, 1);
                    (hyper(&mut b, "adam_step_size", step), hyper(&mut b, "adam_bc2_sqrt", bc2))
                });
                let mut moment = |b: &mut Backward, which: &str, op: Op| {
                    let state = b.g.fresh_name(&format!("adam_{which}.{key}"));
                    let state = b.g.add(state, Op::OptimState, shape.clone(), vec![], Stage::Update);
                    let new = b.g.fresh_name(&format!("new_adam_{which}.{key}"));
                    let new = b.g.add(new, op, shape.clone(), vec![p, grad, state], Stage::Update);
                    optim_state.push(state);
                    updates.push((state, new));
                    new
                };
                let m = moment(&mut b, "m", Op::AdamMoment1(adam));
                let v = moment(&mut b, "v", Op::AdamMoment2(adam));
                let new_name = b.g.fresh_name(&format!("new_{key}"));
                let inputs = vec![p, m, v, lr, step_size, bc2_sqrt];
                let new_p = b.g.add(new_name, Op::AdamStep(adam), shape, inputs, Stage::Update);
                updates.push((p, new_p));
                continue;
            }
        };
        let step_inputs = if sgd.momentum != 0.0 {
            let buf_name = b.g.fresh_name(&format!("momentum_{key}"));
            let buf = b.g.add(buf_name, Op::OptimState, shape.clone(), vec![], Stage::Update);
            let new_buf_name = b.g.fresh_name(&format!("new_momentum_{key}"));
            let new_buf = b.g.add(new_buf_name, Op::SgdMomentum(sgd), shape.clone(), vec![p, grad, buf], Stage::Update);
            optim_state.push(buf);
            updates.push((buf, new_buf));
            vec![p, grad, new_buf, lr]
        } else {
            vec![p, grad, lr]
        };
        let new_name = b.g.fresh_name(&format!("new_{key}"));
        let new_p = b.g.add(new_name, Op::SgdStep(sgd), shape, step_inputs, Stage::Update);
        updates.push((p, new_p));
    }
    // Dropout's step counter is optimizer-like state: kept, saved, restored.
    optim_state.extend(running_updates.iter().map(|&(leaf, _)| leaf).filter(|&l| b.g.node(l).op == Op::OptimState));
    updates.extend(running_updates);
    let input_grads =
        forward.inputs.iter().filter_map(|&x| grads.get(x.index()).copied().flatten().map(|g| (x, g))).collect();

    let mut g = b.g;
    g.updates = updates;
    g.training = Some(Training {
        loss_fn: loss,
        loss: loss_node,
        target,
        param_grads,
        input_grads,
        optim_state,
        learning_rate: lr,
        adam_corrections,
    });
    Ok(g)
}

/// Per node of `g`: whether it leads to `out` and depends on a parameter or
/// an input, i.e. whether the backward pass needs its gradient.
fn needed_gradients(g: &Graph, out: NodeId) -> Vec<bool> {
    let n = g.len();
    let mut reaches = vec![false; n];
    reaches[out.index()] = true;
    for v in (0..n).rev() {
        if reaches[v] {
            for &operand in &g.node(NodeId::new(v)).inputs {
                reaches[operand.index()] = true;
            }
        }
    }
    let mut depends = vec![false; n];
    for v in 0..n {
        let node = g.node(NodeId::new(v));
        depends[v] = matches!(node.op, Op::Param { .. } | Op::Input)
            || node.inputs.iter().any(|&operand| depends[operand.index()]);
    }
    reaches.iter().zip(&depends).map(|(&r, &d)| r && d).collect()
}

/// Emits the gradient contributions of forward node `u` (with gradient `dy`)
/// to its operands.
fn backward_of(b: &mut Backward, u: NodeId, dy: NodeId) -> Result<(), AutodiffError> {
    let node = b.g.node(u).clone();
    let bad_arity = || AutodiffError::NotDifferentiable {
        name: node.name.clone(),
        op: node.op.mnemonic(),
        reason: format!("unexpected number of operands ({})", node.inputs.len()),
    };
    let unsupported = |reason: &str| AutodiffError::NotDifferentiable {
        name: node.name.clone(),
        op: node.op.mnemonic(),
        reason: reason.to_string(),
    };
    let ins = node.inputs.as_slice();
    match &node.op {
        // Exhaustive, so a new op must say how it differentiates.
        Op::Input
        | Op::Param { .. }
        | Op::Buffer { .. }
        | Op::Labels
        | Op::Target
        | Op::OptimState
        | Op::Hyper { .. } => {}
        Op::BatchNorm(bn) | Op::BatchNormTrain(bn) => {
            let training = matches!(node.op, Op::BatchNormTrain(_));
            let (x, mean, var, affine) = match *ins {
                [x, mean, var] => (x, mean, var, None),
                [x, mean, var, w, bias] => (x, mean, var, Some((w, bias))),
                _ => return Err(bad_arity()),
            };
            // The two per-channel sums the input gradient needs are the
            // bias's and the weight's gradients.
            let channels = b.shape(mean);
            let base = b.name(u).to_string();
            let sum_dy = b.add(&format!("sum_grad_{base}"), Op::BiasGrad { axis: 1 }, channels.clone(), vec![dy]);
            let weight_grad = Op::BatchNormGradWeight { eps: bn.eps };
            let sum_dy_xhat = b.add(&format!("sum_grad_xhat_{base}"), weight_grad, channels, vec![x, mean, var, dy]);
            let mut operands = vec![x, mean, var, dy, sum_dy, sum_dy_xhat];
            if let Some((w, bias)) = affine {
                for (leaf, sum) in [(w, sum_dy_xhat), (bias, sum_dy)] {
                    if b.needs[leaf.index()] {
                        b.parts[leaf.index()].push(Part { node: sum, owned: false, from: u });
                    }
                }
                operands.push(w);
            }
            // In training mode the batch statistics' own gradients are folded
            // into the input's; `mean` and `var` get none.
            b.emit(x, u, Op::BatchNormGradInput { eps: bn.eps, training }, operands);
        }
        Op::BatchMean | Op::BatchVar => {}
        // Evaluation mode: the identity.
        Op::Dropout { .. } => {
            let [x] = *ins else { return Err(bad_arity()) };
            b.emit_unbroadcast(x, u, dy, false);
        }
        Op::DropoutTrain { p, seed } => {
            let [x, step] = *ins else { return Err(bad_arity()) };
            b.emit(x, u, Op::DropoutGrad { p: *p, seed: *seed }, vec![dy, step]);
        }
        Op::Conv2d(c) => {
            let (x, w, bias) = match *ins {
                [x, w] => (x, w, None),
                [x, w, bias] => (x, w, Some(bias)),
                _ => return Err(bad_arity()),
            };
            b.emit(x, u, Op::Conv2dGradInput(*c), vec![dy, w]);
            b.emit(w, u, Op::Conv2dGradWeight(*c), vec![x, dy]);
            if let Some(bias) = bias {
                b.emit(bias, u, Op::BiasGrad { axis: 1 }, vec![dy]);
            }
        }
        Op::Linear => {
            let (x, w, bias) = match *ins {
                [x, w] => (x, w, None),
                [x, w, bias] => (x, w, Some(bias)),
                _ => return Err(bad_arity()),
            };
            b.emit(x, u, Op::LinearGradInput, vec![dy, w]);
            b.emit(w, u, Op::LinearGradWeight, vec![x, dy]);
            if let Some(bias) = bias {
                let axis = node.shape.rank().saturating_sub(1);
                b.emit(bias, u, Op::BiasGrad { axis }, vec![dy]);
            }
        }
        Op::MaxPool2d(p) => {
            let [x] = *ins else { return Err(bad_arity()) };
            b.emit(x, u, Op::MaxPool2dGrad(*p), vec![x, dy]);
        }
        Op::AvgPool2d(p) => {
            let [x] = *ins else { return Err(bad_arity()) };
            b.emit(x, u, Op::AvgPool2dGrad(*p), vec![dy]);
        }
        Op::Resize(r) => {
            let [x] = *ins else { return Err(bad_arity()) };
            b.emit(x, u, Op::ResizeGrad(*r), vec![dy]);
        }
        Op::Activate(a) => {
            let [x] = *ins else { return Err(bad_arity()) };
            // ReLU's derivative at x is [x > 0] = [relu(x) > 0], so its
            // backward reads the output, which is stored anyway; the
            // pre-activation then need not be stored at all.
            let at = if *a == Activation::Relu { u } else { x };
            b.emit(x, u, Op::ActivateGrad(*a), vec![at, dy]);
        }
        Op::Softmax { axis, log } => {
            let [x] = *ins else { return Err(bad_arity()) };
            // Both derivatives are functions of the output, which is stored.
            b.emit(x, u, Op::SoftmaxGrad { axis: *axis, log: *log }, vec![u, dy]);
        }
        Op::Binary(op) => {
            let [lhs, rhs] = *ins else {
                return Err(bad_arity());
            };
            match op {
                BinaryOp::Add => {
                    b.emit_unbroadcast(lhs, u, dy, false);
                    b.emit_unbroadcast(rhs, u, dy, false);
                }
                BinaryOp::Sub => {
                    b.emit_unbroadcast(lhs, u, dy, false);
                    b.emit_unbroadcast(rhs, u, dy, true);
                }
                BinaryOp::Mul => {
                    // d(a*b)/da = dy * b, summed down to a's shape (and vice versa).
                    for (target, other) in [(lhs, rhs), (rhs, lhs)] {
                        if b.needs[target.index()] {
                            let base = format!("grad_{}_full", b.name(target));
                            let name = if b.shape(target) == node.shape { PENDING } else { &base };
                            let prod = b.add(name, Op::Binary(BinaryOp::Mul), node.shape.clone(), vec![dy, other]);
                            if name == PENDING {
                                b.parts[target.index()].push(Part { node: prod, owned: true, from: u });
                            } else {
                                b.emit_unbroadcast(target, u, prod, false);
                            }
                        }
                    }
                }
            }
        }
        Op::Neg => {
            let [x] = *ins else { return Err(bad_arity()) };
            b.emit(x, u, Op::Neg, vec![dy]);
        }
        Op::Reshape => {
            let [x] = *ins else { return Err(bad_arity()) };
            b.emit(x, u, Op::Reshape, vec![dy]);
        }
        Op::Concat { axis } => {
            let mut start = 0usize;
            let mut start_known = true;
            for &x in ins {
                let len = b.g.node(x).shape.0.get(*axis).copied();
                if b.needs[x.index()] {
                    if !start_known {
                        return Err(unsupported("an operand's offset along the joined axis depends on the batch size"));
                    }
                    b.emit(x, u, Op::Slice { axis: *axis, start }, vec![dy]);
                }
                match len.and_then(|d| d.as_fixed()) {
                    Some(l) => start += l,
                    None => start_known = false,
                }
            }
        }
        Op::SumTo => {
            return Err(unsupported("its gradient is a broadcast, which the IR has no op for"));
        }
        Op::Slice { .. } => {
            return Err(unsupported("its gradient is a zero padding, which the IR has no op for"));
        }
        Op::Conv2dGradInput(_)
        | Op::Conv2dGradWeight(_)
        | Op::LinearGradInput
        | Op::LinearGradWeight
        | Op::BiasGrad { .. }
        | Op::MaxPool2dGrad(_)
        | Op::AvgPool2dGrad(_)
        | Op::ResizeGrad(_)
        | Op::ActivateGrad(_)
        | Op::SoftmaxGrad { .. }
        | Op::BatchNormGradWeight { .. }
        | Op::BatchNormGradInput { .. }
        | Op::RunningStat { .. }
        | Op::LossValue(_)
        | Op::LossGrad(_)
        | Op::SgdMomentum(_)
        | Op::SgdStep(_)
        | Op::AdamMoment1(_)
        | Op::AdamMoment2(_)
        | Op::AdamStep(_)
        | Op::ClipFactor { .. }
        | Op::DropoutGrad { .. }
        | Op::Increment => {
            return Err(unsupported("backward and training ops have no second derivative here"));
        }
    }
    Ok(())
}

/// The clipping factor of the gradients of every parameter that has one:
/// the sum of their squares, each a reduction to `[]`, then
/// [`Op::ClipFactor`]. `None` when no parameter is trained.
fn clip_factor(b: &mut Backward, forward: &Graph, grads: &[Option<NodeId>], max_norm: f32) -> Option<NodeId> {
    let mut total: Option<NodeId> = None;
    for &p in &forward.params {
        let Some(grad) = grads.get(p.index()).copied().flatten() else {
            continue;
        };
        let key = b.name(p).to_string();
        let name = b.g.fresh_name(&format!("grad_squared_{key}"));
        let squared = b.g.add(name, Op::Binary(BinaryOp::Mul), b.shape(p), vec![grad, grad], Stage::Update);
        let name = b.g.fresh_name(&format!("grad_sum_squares_{key}"));
        let sum = b.g.add(name, Op::SumTo, Shape::scalar(), vec![squared], Stage::Update);
        total = Some(match total {
            None => sum,
            Some(t) => {
                let name = b.g.fresh_name("grad_norm_squared");
                b.g.add(name, Op::Binary(BinaryOp::Add), Shape::scalar(), vec![t, sum], Stage::Update)
            }
        });
    }
    let name = b.g.fresh_name("clip_factor");
    total.map(|t| b.g.add(name, Op::ClipFactor { max_norm }, Shape::scalar(), vec![t], Stage::Update))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Activation, Conv2d, PaddingMode};
    use crate::shape::Dim;

    fn batched(dims: &[usize]) -> Shape {
        let mut v = vec![Dim::batch()];
        v.extend(dims.iter().map(|&d| Dim::fixed(d)));
        Shape(v)
    }

    fn param(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
        let id = g.add(name, Op::param(1), Shape::fixed(dims), vec![], Stage::Forward);
        g.params.push(id);
        id
    }

    fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
        let id = g.add(name, Op::Input, batched(dims), vec![], Stage::Forward);
        g.inputs.push(id);
        id
    }

    /// `x [N,1,4,4] -> conv1 -> relu -> flat -> fc -> out`, plus an unused
    /// parameter and an input that does not reach the loss.
    fn net() -> Graph {
        let mut g = Graph::new("Net");
        let x = input(&mut g, "x", &[1, 4, 4]);
        let unused_input = input(&mut g, "aux", &[3]);
        let w = param(&mut g, "conv1.weight", &[2, 1, 3, 3]);
        let b = param(&mut g, "conv1.bias", &[2]);
        let fw = param(&mut g, "fc.weight", &[3, 8]);
        let fb = param(&mut g, "fc.bias", &[3]);
        param(&mut g, "spare", &[5]);
        let c = Conv2d {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            padding_mode: PaddingMode::Zeros,
        };
        let y = g.add("conv1", Op::Conv2d(c), batched(&[2, 2, 2]), vec![x, w, b], Stage::Forward);
        let y = g.add("relu", Op::Activate(Activation::Relu), batched(&[2, 2, 2]), vec![y], Stage::Forward);
        let y = g.add("flat", Op::Reshape, batched(&[8]), vec![y], Stage::Forward);
        let y = g.add("fc", Op::Linear, batched(&[3]), vec![y, fw, fb], Stage::Forward);
        let side = g.add("side", Op::Neg, batched(&[3]), vec![unused_input], Stage::Forward);
        g.outputs.push(y);
        g.outputs.push(side);
        g
    }

    #[test]
    fn roles_names_and_stages() {
        let fwd = net();
        let sgd = Sgd { momentum: 0.9, ..Sgd::default() };
        let g = derive_training(&fwd, Loss::CrossEntropy, sgd).expect("derive");
        let t = g.training.as_ref().expect("training");
        let name = |id: NodeId| g.node(id).name.as_str();

        assert_eq!(name(t.loss), "loss");
        assert_eq!(g.node(t.loss).stage, Stage::Loss);
        assert_eq!(g.node(t.loss).shape, Shape::scalar());
        assert_eq!(name(t.target), "labels");
        assert_eq!(g.node(t.target).op, Op::Labels);
        assert_eq!(g.node(t.target).shape, Shape(vec![Dim::batch()]));

        // Every parameter that reaches the loss, in params order; `spare` does not.
        let grads: Vec<(&str, &str)> = t.param_grads.iter().map(|&(p, d)| (name(p), name(d))).collect();
        assert_eq!(
            grads,
            [
                ("conv1.weight", "grad_conv1.weight"),
                ("conv1.bias", "grad_conv1.bias"),
                ("fc.weight", "grad_fc.weight"),
                ("fc.bias", "grad_fc.bias"),
            ]
        );
        let inputs: Vec<(&str, &str)> = t.input_grads.iter().map(|&(x, d)| (name(x), name(d))).collect();
        assert_eq!(inputs, [("x", "grad_x")]);
        let grad_x = g.find("grad_x").expect("grad_x");
        assert!(matches!(g.node(grad_x).op, Op::Conv2dGradInput(_)));
        for (op, grad) in [("fc", "grad_fc"), ("relu", "grad_relu"), ("flat", "grad_flat"), ("conv1", "grad_conv1")] {
            let id = g.find(grad).unwrap_or_else(|| panic!("{grad} missing"));
            assert_eq!(g.node(id).shape, g.node(g.find(op).expect("op")).shape);
        }
        assert!(g.find("grad_side").is_none() && g.find("grad_aux").is_none());

        // One buffer and two updates per trained parameter.
        let bufs: Vec<&str> = t.optim_state.iter().map(|&b| name(b)).collect();
        assert_eq!(bufs, ["momentum_conv1.weight", "momentum_conv1.bias", "momentum_fc.weight", "momentum_fc.bias"]);
        assert_eq!(g.updates.len(), 8);
        for &(leaf, new) in &g.updates {
            assert_eq!(g.node(leaf).shape, g.node(new).shape);
            assert_eq!(g.node(new).stage, Stage::Update);
            assert_eq!(name(new), format!("new_{}", name(leaf)));
        }
        let spare = fwd.find("spare").expect("spare");
        assert!(g.updates.iter().all(|&(leaf, _)| leaf != spare));

        // Forward nodes are untouched; every added node is Loss, Backward or Update.
        for id in g.node_ids() {
            let stage = g.node(id).stage;
            if id.index() < fwd.len() {
                assert_eq!(g.node(id).name, fwd.node(id).name);
            } else {
                assert_ne!(stage, Stage::Forward, "{}", g.node(id).name);
            }
            if matches!(g.node(id).op, Op::SgdStep(_) | Op::SgdMomentum(_) | Op::OptimState) {
                assert_eq!(stage, Stage::Update);
            }
        }
        let mut names: Vec<&str> = g.node_ids().map(name).collect();
        names.sort();
        let len = names.len();
        names.dedup();
        assert_eq!(names.len(), len, "names are unique");
    }

    #[test]
    fn without_momentum_there_is_no_state() {
        let g = derive_training(&net(), Loss::CrossEntropy, Sgd::default()).expect("derive");
        let t = g.training.as_ref().expect("training");
        assert!(t.optim_state.is_empty());
        assert_eq!(g.updates.len(), 4);
        let lr = t.learning_rate.expect("a learning-rate input");
        assert_eq!(g.node(lr).op, Op::Hyper { initial: Sgd::default().lr });
        for &(_, new) in &g.updates {
            assert!(matches!(g.node(new).op, Op::SgdStep(_)));
            // Parameter, gradient and the shared learning rate.
            assert_eq!(g.node(new).inputs.len(), 3);
            assert_eq!(g.node(new).inputs[2], lr);
        }
    }

    #[test]
    fn target_leaf_for_mse_and_perceptron() {
        for loss in [Loss::Mse, Loss::Perceptron] {
            let g = derive_training(&net(), loss, Sgd::default()).expect("derive");
            let t = g.training.as_ref().expect("training");
            assert_eq!(g.node(t.target).name, "target");
            assert_eq!(g.node(t.target).op, Op::Target);
            assert_eq!(g.node(t.target).shape, batched(&[3]));
        }
    }

    #[test]
    fn errors() {
        let empty = Graph::new("Empty");
        let err = derive_training(&empty, Loss::Mse, Sgd::default()).unwrap_err();
        assert_eq!(err, AutodiffError::NoOutputs { graph: "Empty".into() });

        let mut g = Graph::new("Conv");
        let x = input(&mut g, "x", &[1, 2, 2]);
        g.outputs.push(x);
        let err = derive_training(&g, Loss::CrossEntropy, Sgd::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cross-entropy needs logits of shape [N, classes], but output `x` has shape [N, 1, 2, 2]"
        );

        let trained = derive_training(&g, Loss::Mse, Sgd::default()).expect("derive");
        assert!(matches!(
            derive_training(&trained, Loss::Mse, Sgd::default()),
            Err(AutodiffError::AlreadyTraining { .. })
        ));

        let mut g = Graph::new("Sum");
        let x = input(&mut g, "x", &[3]);
        let s = g.add("s", Op::SumTo, Shape::fixed(&[3]), vec![x], Stage::Forward);
        g.outputs.push(s);
        let err = derive_training(&g, Loss::Mse, Sgd::default()).unwrap_err();
        assert!(matches!(err, AutodiffError::NotDifferentiable { ref name, .. } if name == "s"), "{err}");
    }

    #[test]
    fn pass_through_gradient_is_named_after_the_parameter() {
        // y = x + p with equal shapes: p's gradient is the seed itself.
        let mut g = Graph::new("Add");
        let x = input(&mut g, "x", &[3]);
        let p = g.add("p", Op::param(1), batched(&[3]), vec![], Stage::Forward);
        g.params.push(p);
        let y = g.add("y", Op::Binary(BinaryOp::Add), batched(&[3]), vec![x, p], Stage::Forward);
        g.outputs.push(y);
        let g = derive_training(&g, Loss::Mse, Sgd::default()).expect("derive");
        let t = g.training.as_ref().expect("training");
        let (_, grad) = t.param_grads[0];
        assert_eq!(g.node(grad).name, "grad_p");
        assert!(matches!(g.node(grad).op, Op::LossGrad(Loss::Mse)));
        assert_eq!(t.input_grads, [(x, grad)]);
    }
}
