//! Training and evaluation modes, as a rewrite of the forward graph.
//!
//! A forward graph means evaluation mode: [`Op::BatchNorm`] normalises with
//! its running statistics. [`training_mode`] is the named rewrite to
//! training mode that [`crate::autodiff::derive_training`] applies first:
//! each batch normalisation takes the batch's mean and biased variance
//! ([`Op::BatchMean`], [`Op::BatchVar`]) through [`Op::BatchNormTrain`],
//! and its running statistics get updates ([`Op::RunningStat`], the
//! variance unbiased) that a step applies like parameter updates.

use crate::graph::{Graph, NodeId, Stage};
use crate::ops::Op;
use crate::shape::{Dim, Shape};

/// Which statistics normalisation layers use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Mode {
    /// The batch's, updating the running ones (PyTorch's `model.train()`).
    #[default]
    Train,
    /// The running ones (`model.eval()`).
    Eval,
}

/// `forward` in training mode, its [`Graph::updates`] those of its running
/// statistics and, with dropout, of the step counter its masks are keyed by
/// (an [`Op::OptimState`] leaf `dropout.step`, the first of the updates
/// then). A graph without batch normalisation or dropout comes back
/// unchanged (same node ids) with no updates.
pub fn training_mode(forward: &Graph) -> Graph {
    let rewritten = |op: &Op| matches!(op, Op::BatchNorm(_) | Op::Dropout { .. });
    if !forward.node_ids().any(|id| rewritten(&forward.node(id).op)) {
        return forward.clone();
    }
    let mut g = Graph::new(forward.name.clone());
    let mut map: Vec<NodeId> = Vec::with_capacity(forward.len());
    let mut updates = Vec::new();
    let mut step_counter = None;
    let mut dropouts = 0u32;
    for id in forward.node_ids() {
        let node = forward.node(id);
        let inputs: Vec<NodeId> = node.inputs.iter().map(|i| map[i.index()]).collect();
        let new = match node.op {
            Op::BatchNorm(bn) => {
                let (x, running_mean, running_var) = (inputs[0], inputs[1], inputs[2]);
                let channels = g.node(running_mean).shape.clone();
                // Names with a `.` cannot clash with a user's `let` or layer names.
                let mean =
                    g.add(format!("{}.batch_mean", node.name), Op::BatchMean, channels.clone(), vec![x], node.stage);
                let var = g.add(
                    format!("{}.batch_var", node.name),
                    Op::BatchVar,
                    channels.clone(),
                    vec![x, mean],
                    node.stage,
                );
                let mut operands = vec![x, mean, var];
                operands.extend(&inputs[3..]);
                let y = g.add(node.name.clone(), Op::BatchNormTrain(bn), node.shape.clone(), operands, node.stage);
                let count = per_channel_count(&g.node(x).shape);
                for (buffer, stat, unbias) in [(running_mean, mean, None), (running_var, var, Some(count))] {
                    let name = format!("new_{}", g.node(buffer).name);
                    let op = Op::RunningStat { momentum: bn.momentum, unbias };
                    let new = g.add(name, op, channels.clone(), vec![buffer, stat], Stage::Update);
                    updates.push((buffer, new));
                }
                y
            }
            Op::Dropout { p } => {
                let step = *step_counter.get_or_insert_with(|| {
                    // Names with a `.` cannot clash with a user's.
                    let counter = g.add("dropout.step", Op::OptimState, Shape::scalar(), vec![], Stage::Update);
                    let next = g.add("new_dropout.step", Op::Increment, Shape::scalar(), vec![counter], Stage::Update);
                    updates.insert(0, (counter, next));
                    counter
                });
                // Each layer its own stream of masks.
                let seed = dropouts.wrapping_mul(0x9e37_79b9);
                dropouts += 1;
                let op = Op::DropoutTrain { p, seed };
                g.add(node.name.clone(), op, node.shape.clone(), vec![inputs[0], step], node.stage)
            }
            _ => g.add(node.name.clone(), node.op.clone(), node.shape.clone(), inputs, node.stage),
        };
        map.push(new);
    }
    let remap = |ids: &[NodeId]| ids.iter().map(|i| map[i.index()]).collect::<Vec<_>>();
    g.inputs = remap(&forward.inputs);
    g.outputs = remap(&forward.outputs);
    g.params = remap(&forward.params);
    updates.extend(forward.updates.iter().map(|&(leaf, new)| (map[leaf.index()], map[new.index()])));
    g.updates = updates;
    g
}

/// The values each channel of `x` (`[N, C, ..]`) averages over: every axis but 1.
fn per_channel_count(x: &Shape) -> Dim {
    let mut count = Dim::fixed(1);
    for (k, d) in x.0.iter().enumerate() {
        if k != 1 {
            count = Dim { factor: count.factor * d.factor, batched: count.batched || d.batched };
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{BatchNorm, Init};

    fn leaf(g: &mut Graph, name: &str, op: Op) -> NodeId {
        let id = g.add(name, op, Shape::fixed(&[3]), vec![], Stage::Forward);
        g.params.push(id);
        id
    }

    #[test]
    fn training_mode_takes_batch_statistics_and_updates_the_running_ones() {
        let mut g = Graph::new("bn");
        let shape = Shape(vec![Dim::batch(), Dim::fixed(3), Dim::fixed(4), Dim::fixed(5)]);
        let x = g.add("x", Op::Input, shape.clone(), vec![], Stage::Forward);
        g.inputs.push(x);
        let rm = leaf(&mut g, "bn.running_mean", Op::Buffer { fill: 0.0 });
        let rv = leaf(&mut g, "bn.running_var", Op::Buffer { fill: 1.0 });
        let w = leaf(&mut g, "bn.weight", Op::Param { init: Init::Fill(1.0) });
        let bn = BatchNorm { eps: 1e-5, momentum: 0.25 };
        let y = g.add("bn", Op::BatchNorm(bn), shape, vec![x, rm, rv, w, w], Stage::Forward);
        g.outputs.push(y);

        let t = training_mode(&g);
        let updates = &t.updates;
        let op = |name: &str| t.node(t.find(name).expect(name)).op.clone();
        assert_eq!(op("bn"), Op::BatchNormTrain(bn));
        assert_eq!(op("bn.batch_mean"), Op::BatchMean);
        assert_eq!(op("bn.batch_var"), Op::BatchVar);
        let names = |ids: &[NodeId]| ids.iter().map(|&i| t.node(i).name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&t.node(t.outputs[0]).inputs),
            ["x", "bn.batch_mean", "bn.batch_var", "bn.weight", "bn.weight"]
        );
        assert_eq!(names(&t.params), ["bn.running_mean", "bn.running_var", "bn.weight"]);
        let pairs: Vec<(String, Op)> =
            updates.iter().map(|&(b, n)| (t.node(b).name.clone(), t.node(n).op.clone())).collect();
        // Each channel averages N * 4 * 5 values; the variance is kept unbiased.
        let count = Dim { factor: 20, batched: true };
        assert_eq!(
            pairs,
            [
                ("bn.running_mean".to_string(), Op::RunningStat { momentum: 0.25, unbias: None }),
                ("bn.running_var".to_string(), Op::RunningStat { momentum: 0.25, unbias: Some(count) }),
            ]
        );

        // Without batch normalisation the graph is returned as it is.
        let mut plain = Graph::new("plain");
        let x = plain.add("x", Op::Input, Shape(vec![Dim::batch(), Dim::fixed(2)]), vec![], Stage::Forward);
        plain.inputs.push(x);
        plain.outputs.push(x);
        let same = training_mode(&plain);
        assert!(same.updates.is_empty());
        assert_eq!(same.len(), plain.len());
    }
}
