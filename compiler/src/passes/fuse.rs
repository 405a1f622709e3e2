//! Fusion: partitions a graph's nodes into groups that each become one kernel.

use crate::graph::{Graph, NodeId};
use crate::ops::Op;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// What kind of kernel a group becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// A leaf: its value comes from outside, no kernel.
    Leaf,
    /// A reshape: the value shares its operand's storage, no kernel.
    Alias,
    /// A chain of elementwise ops over one iteration domain.
    Elementwise,
    /// One non-elementwise op (the anchor, `nodes[0]`) with fused
    /// elementwise epilogues after it.
    Anchored,
}

/// A set of graph nodes computed by one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// What kind of kernel the group becomes.
    pub kind: GroupKind,
    /// The nodes, in topological order (the anchor first for `Anchored`).
    pub nodes: Vec<NodeId>,
}

/// The result of [`fuse`]: groups in a valid execution order, and which node
/// values must be stored in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Fusion {
    /// Groups in execution order.
    pub groups: Vec<Group>,
    /// Nodes whose values are written to a buffer (read by another group,
    /// observable, or needed by a layout alias).
    pub materialized: HashSet<NodeId>,
}

/// Whether `op` computes each output element from the same element of its
/// operands (with broadcasting), so it can share a loop with its neighbours.
pub fn is_elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Activate(_)
            | Op::ActivateGrad(_)
            | Op::Binary(_)
            | Op::Neg
            | Op::SgdMomentum(_)
            | Op::SgdStep(_)
            | Op::AdamMoment1(_)
            | Op::AdamMoment2(_)
            | Op::AdamStep(_)
            | Op::ClipFactor { .. }
            | Op::RunningStat { .. }
            | Op::Dropout { .. }
            | Op::DropoutTrain { .. }
            | Op::DropoutGrad { .. }
            | Op::Increment
    )
}

/// Whether an activation can be fused as the epilogue of this anchor.
fn takes_activation_epilogue(op: &Op) -> bool {
    matches!(op, Op::Conv2d(_) | Op::Linear | Op::BatchNorm(_) | Op::BatchNormTrain(_))
}

/// Whether an activation backward can be fused as this anchor's epilogue.
fn takes_grad_mask_epilogue(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv2dGradInput(_) | Op::LinearGradInput | Op::MaxPool2dGrad(_) | Op::AvgPool2dGrad(_) | Op::ResizeGrad(_)
    )
}

/// Floats of one cache line: a channel block walks each image's plane of
/// a channel as one run, which must fill whole lines.
const LINE_FLOATS: usize = 16;

/// Whether a training-mode batch normalisation of `x` (`[N, C, ..]`) is
/// built as a channel block: its elements past the channel axis (one
/// image's plane of a channel) fill a cache line.
fn channel_blocks_pay(graph: &Graph, x: NodeId) -> bool {
    let dims = &graph.node(x).shape.0;
    dims.len() > 2 && dims[2..].iter().map(|d| d.at_batch(1)).product::<usize>() >= LINE_FLOATS
}

/// Whether `nodes` (a group) is a channel block: `[BatchMean, BatchVar,
/// BatchNormTrain]` of one input (and maybe its activation), or
/// `[BiasGrad, BatchNormGradWeight, BatchNormGradInput]` of one output
/// gradient, which the kernel builder computes plane by plane.
pub fn is_channel_block(graph: &Graph, nodes: &[NodeId]) -> bool {
    let op = |i: usize| nodes.get(i).map(|&n| &graph.node(n).op);
    match (op(0), op(1), op(2)) {
        (Some(Op::BatchMean), Some(Op::BatchVar), Some(Op::BatchNormTrain(_))) => true,
        (Some(Op::BiasGrad { axis: 1 }), Some(Op::BatchNormGradWeight { .. }), Some(Op::BatchNormGradInput { .. })) => {
            nodes.len() == 3
        }
        _ => false,
    }
}

/// Partitions `graph` into kernel groups.
///
/// Rules (each also matches the derived backward graph):
/// - elementwise ops of the same element count chain into one loop;
/// - an activation whose input is a conv or linear output becomes its
///   epilogue (the pre-activation value is still stored when the backward
///   pass needs it);
/// - an activation backward `f'(x) * dy` whose `dy` comes only from an input
///   gradient (conv, linear, pooling, resize) becomes that kernel's epilogue;
/// - a cross-entropy loss and its gradient on the same operands share one
///   kernel (one softmax);
/// - the SGD momentum and step of one parameter chain elementwise, one pass;
/// - a training-mode batch normalisation's mean, variance and
///   normalisation form one group, and so do its backward's two
///   per-channel sums and input gradient ([`is_channel_block`]), when a
///   channel's plane per image fills a cache line: the kernel builder
///   sums plane by plane in memory order.
///
/// `observable` nodes are always materialised; nodes that no observable
/// node depends on are dropped (dead-code elimination).
pub fn fuse(graph: &Graph, observable: &HashSet<NodeId>) -> Fusion {
    let live = live_nodes(graph, observable);
    let users = |id: NodeId| -> Vec<NodeId> { graph.users(id).into_iter().filter(|u| live.contains(u)).collect() };
    let mut group_of: HashMap<NodeId, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let numel = |id: NodeId| graph.node(id).shape.numel();

    for id in graph.node_ids() {
        if !live.contains(&id) {
            continue;
        }
        let node = graph.node(id);
        let op = &node.op;
        let mut joined = None;
        if op.is_leaf() {
            groups.push(Group { kind: GroupKind::Leaf, nodes: vec![id] });
            group_of.insert(id, groups.len() - 1);
            continue;
        }
        if matches!(op, Op::Reshape) {
            groups.push(Group { kind: GroupKind::Alias, nodes: vec![id] });
            group_of.insert(id, groups.len() - 1);
            continue;
        }
        match op {
            Op::BatchNorm(_) => {
                // Evaluation mode after a product whose value nothing else
                // reads: folded into the product's weights and bias.
                let x = node.inputs[0];
                let g = group_of[&x];
                let foldable = match &graph.node(x).op {
                    Op::Conv2d(_) => true,
                    // Channels are axis 1, the linear layer's outputs only for [N, out].
                    Op::Linear => graph.node(x).shape.rank() == 2,
                    _ => false,
                };
                if foldable
                    && groups[g].kind == GroupKind::Anchored
                    && groups[g].nodes == [x]
                    && users(x) == vec![id]
                    && !observable.contains(&x)
                {
                    joined = Some(g);
                }
            }
            Op::BatchVar => {
                // The variance joins its mean's kernel.
                let (x, mean) = (node.inputs[0], node.inputs[1]);
                let g = group_of[&mean];
                if channel_blocks_pay(graph, x)
                    && groups[g].kind == GroupKind::Anchored
                    && groups[g].nodes == [mean]
                    && graph.node(mean).op == Op::BatchMean
                    && graph.node(mean).inputs[0] == x
                {
                    joined = Some(g);
                }
            }
            Op::BatchNormTrain(_) => {
                // The normalisation joins its statistics' kernel.
                let (x, mean, var) = (node.inputs[0], node.inputs[1], node.inputs[2]);
                let g = group_of[&var];
                let others_ok =
                    node.inputs[3..].iter().all(|&w| !depends_on(graph, &groups, &group_of, group_of[&w], g));
                if groups[g].nodes == [mean, var] && graph.node(var).inputs == [x, mean] && others_ok {
                    joined = Some(g);
                }
            }
            Op::BatchNormGradWeight { .. } => {
                // Joins the kernel summing the same output gradient per channel.
                let (x, dy) = (node.inputs[0], node.inputs[3]);
                let sum = users(dy).into_iter().find(|&u| {
                    graph.node(u).op == Op::BiasGrad { axis: 1 }
                        && group_of.get(&u).is_some_and(|&g| groups[g].nodes == [u])
                });
                if let Some(g) = sum.map(|u| group_of[&u])
                    && channel_blocks_pay(graph, x)
                    && node.inputs[..3].iter().all(|&w| !depends_on(graph, &groups, &group_of, group_of[&w], g))
                {
                    joined = Some(g);
                }
            }
            Op::BatchNormGradInput { .. } => {
                // Joins the kernel of the two sums it reads.
                let (sum_dy, sum_dy_xhat) = (node.inputs[4], node.inputs[5]);
                let g = group_of[&sum_dy];
                let others_ok = node.inputs.iter().filter(|&&w| w != sum_dy && w != sum_dy_xhat).all(|&w| {
                    let h = group_of[&w];
                    h != g && !depends_on(graph, &groups, &group_of, h, g)
                });
                if groups[g].nodes == [sum_dy, sum_dy_xhat]
                    && graph.node(sum_dy_xhat).inputs[3] == node.inputs[3]
                    && graph.node(sum_dy_xhat).inputs[..3] == node.inputs[..3]
                    && others_ok
                {
                    joined = Some(g);
                }
            }
            Op::Activate(_) => {
                let x = node.inputs[0];
                let g = group_of[&x];
                let anchor = groups[g].nodes[0];
                // The normalisation closing a channel block is its value.
                let block = groups[g].nodes.len() == 3
                    && groups[g].nodes[2] == x
                    && is_channel_block(graph, &groups[g].nodes)
                    && matches!(graph.node(x).op, Op::BatchNormTrain(_));
                let product_value = groups[g].nodes.len() == 1
                    || block
                    || (groups[g].nodes.len() == 2
                        && groups[g].nodes[1] == x
                        && matches!(graph.node(x).op, Op::BatchNorm(_)));
                let anchor_ok = groups[g].kind == GroupKind::Anchored
                    && product_value
                    && (block || takes_activation_epilogue(&graph.node(anchor).op))
                    && users(x).iter().all(|&u| {
                        u == id || matches!(&graph.node(u).op, Op::ActivateGrad(a) if Op::Activate(*a) == *op && graph.node(u).inputs[0] == x)
                    });
                if anchor_ok {
                    joined = Some(g);
                }
            }
            Op::ActivateGrad(_) => {
                let dy = node.inputs[1];
                let g = group_of[&dy];
                if groups[g].kind == GroupKind::Anchored
                    && groups[g].nodes.len() == 1
                    && takes_grad_mask_epilogue(&graph.node(dy).op)
                    && users(dy) == vec![id]
                    && !observable.contains(&dy)
                    && node.inputs[0] != dy
                    && !depends_on(graph, &groups, &group_of, group_of[&node.inputs[0]], g)
                {
                    joined = Some(g);
                }
            }
            Op::LossGrad(l) if l.takes_labels() => {
                if let Some(g) = groups.iter().position(|grp| {
                    grp.kind == GroupKind::Anchored
                        && grp.nodes.len() == 1
                        && graph.node(grp.nodes[0]).op == Op::LossValue(*l)
                        && graph.node(grp.nodes[0]).inputs == node.inputs
                }) {
                    joined = Some(g);
                }
            }
            _ => {}
        }
        if joined.is_none() && is_elementwise(op) {
            for &input in &node.inputs {
                let g = group_of[&input];
                if groups[g].kind != GroupKind::Elementwise || numel(input) != numel(id) {
                    continue;
                }
                let others_ok = node.inputs.iter().all(|&w| {
                    let h = group_of[&w];
                    h == g || !depends_on(graph, &groups, &group_of, h, g)
                });
                if others_ok {
                    joined = Some(g);
                    break;
                }
            }
        }
        match joined {
            Some(g) => {
                groups[g].nodes.push(id);
                group_of.insert(id, g);
            }
            None => {
                let kind = if is_elementwise(op) { GroupKind::Elementwise } else { GroupKind::Anchored };
                groups.push(Group { kind, nodes: vec![id] });
                group_of.insert(id, groups.len() - 1);
            }
        }
    }

    let mut materialized = HashSet::new();
    for id in graph.node_ids().filter(|n| live.contains(n)) {
        let g = group_of[&id];
        let leaves_group = users(id).iter().any(|u| group_of[u] != g);
        let kind = groups[g].kind;
        if observable.contains(&id) || leaves_group || kind == GroupKind::Leaf {
            materialized.insert(id);
        }
        // Reshape operands must live in memory.
        if kind == GroupKind::Alias {
            materialized.insert(graph.node(id).inputs[0]);
        }
    }

    let order = topo_order(graph, &groups, &group_of);
    let groups = order.into_iter().map(|g| groups[g].clone()).collect();
    Fusion { groups, materialized }
}

/// The nodes some observable node depends on (including themselves).
fn live_nodes(graph: &Graph, observable: &HashSet<NodeId>) -> HashSet<NodeId> {
    let mut live = HashSet::new();
    let mut stack: Vec<NodeId> = observable.iter().copied().collect();
    while let Some(n) = stack.pop() {
        if live.insert(n) {
            stack.extend(graph.node(n).inputs.iter().copied());
        }
    }
    live
}

/// Whether group `from` (transitively) reads a value computed by group `to`.
fn depends_on(graph: &Graph, groups: &[Group], group_of: &HashMap<NodeId, usize>, from: usize, to: usize) -> bool {
    if from == to {
        return true;
    }
    // Edges run from lower to higher node ids, so a group whose nodes all
    // precede `to`'s first node cannot lie on a path from `to`: the search
    // stays near `to` instead of walking the whole graph behind `from`.
    let earliest = groups[to].nodes[0];
    let mut stack = vec![from];
    let mut seen = HashSet::new();
    while let Some(g) = stack.pop() {
        if !seen.insert(g) || groups[g].nodes.last().is_some_and(|&last| last < earliest) {
            continue;
        }
        for &n in &groups[g].nodes {
            for &i in &graph.node(n).inputs {
                let h = group_of[&i];
                if h == to {
                    return true;
                }
                if h != g {
                    stack.push(h);
                }
            }
        }
    }
    false
}

/// Groups ordered so that every group runs after the groups it reads from;
/// ties keep the order of the groups' first nodes.
fn topo_order(graph: &Graph, groups: &[Group], group_of: &HashMap<NodeId, usize>) -> Vec<usize> {
    let n = groups.len();
    let mut preds: Vec<HashSet<usize>> = vec![HashSet::new(); n];
    for (g, grp) in groups.iter().enumerate() {
        for &node in &grp.nodes {
            for &i in &graph.node(node).inputs {
                let h = group_of[&i];
                if h != g {
                    preds[g].insert(h);
                }
            }
        }
    }
    // Kahn's algorithm, always taking the ready group with the earliest
    // first node.
    let mut waiting: Vec<usize> = preds.iter().map(HashSet::len).collect();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (g, ps) in preds.iter().enumerate() {
        for &p in ps {
            succs[p].push(g);
        }
    }
    let mut ready: BinaryHeap<Reverse<(NodeId, usize)>> =
        (0..n).filter(|&g| waiting[g] == 0).map(|g| Reverse((groups[g].nodes[0], g))).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, g))) = ready.pop() {
        order.push(g);
        for &s in &succs[g] {
            waiting[s] -= 1;
            if waiting[s] == 0 {
                ready.push(Reverse((groups[s].nodes[0], s)));
            }
        }
    }
    assert_eq!(order.len(), n, "fusion produced a cycle");
    order
}
