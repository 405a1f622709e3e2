//! The graph IR: a petgraph DAG of typed ops, every node carrying its shape.
//!
//! Invariant: nodes are only ever appended, and every operand of a node was
//! added before it, so node-index order is a topological order. Passes that
//! remove or reorder nodes build a new [`Graph`].

use crate::ops::{Loss, Op};
use crate::shape::Shape;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;

/// Identifies a node of a [`Graph`].
pub type NodeId = NodeIndex<u32>;

/// Which part of a training step a node belongs to (for dumps and scheduling).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Stage {
    /// The network's forward pass.
    Forward,
    /// The loss and its gradient seed.
    Loss,
    /// Derived gradient computations.
    Backward,
    /// Optimizer updates.
    Update,
}

/// One operation in the graph.
#[derive(Clone, Debug)]
pub struct Node {
    /// A readable, unique name: the layer for a layer call, the `let` variable
    /// for a functional op, the state_dict key for a parameter.
    pub name: String,
    /// What the node computes.
    pub op: Op,
    /// The inferred shape of the node's value.
    pub shape: Shape,
    /// Operands, in the order the op's contract gives.
    pub inputs: Vec<NodeId>,
    /// Which part of the step the node belongs to.
    pub stage: Stage,
}

/// The extra roles a training graph's nodes play.
#[derive(Clone, Debug)]
pub struct Training {
    /// The loss function.
    pub loss_fn: Loss,
    /// The scalar loss node.
    pub loss: NodeId,
    /// The labels or target leaf.
    pub target: NodeId,
    /// `(param, gradient)` for every parameter, in [`Graph::params`] order.
    pub param_grads: Vec<(NodeId, NodeId)>,
    /// `(input, gradient)` for every forward input.
    pub input_grads: Vec<(NodeId, NodeId)>,
    /// Optimizer buffers (empty without momentum), one per parameter.
    pub optim_state: Vec<NodeId>,
    /// The learning rate the updates read, an [`crate::ops::Op::Hyper`] leaf
    /// set between steps (none when no parameter is trained).
    pub learning_rate: Option<NodeId>,
    /// With Adam: the `(step_size, sqrt(bias_correction2))` inputs, set each
    /// step from [`crate::ops::Adam::bias_corrections`].
    pub adam_corrections: Option<(NodeId, NodeId)>,
}

/// A network as a DAG of ops.
///
/// Architecture invariant: building a graph costs time linear in its size.
/// Names are indexed (`find` and `fresh_name` are hash lookups, and a base
/// name remembers the next suffix to try), so a declaration of thousands of
/// `let x = x + x;` lines lowers and differentiates in milliseconds. Node
/// names therefore change only through [`Graph::rename`].
#[derive(Clone, Debug)]
pub struct Graph {
    /// The declared network name (`LeNet`).
    pub name: String,
    /// The DAG; an edge `a -> b` with weight `i` means `a` is operand `i` of `b`.
    dag: DiGraph<Node, usize>,
    /// The nodes carrying each name, in id order.
    by_name: HashMap<String, Vec<NodeId>>,
    /// For each base given to [`Graph::fresh_name`], the next suffix to try.
    next_suffix: HashMap<String, usize>,
    /// Forward arguments, in declaration order.
    pub inputs: Vec<NodeId>,
    /// Forward results, in declaration order.
    pub outputs: Vec<NodeId>,
    /// Parameters in state_dict order.
    pub params: Vec<NodeId>,
    /// `(leaf, new value)`: after a run each leaf (a parameter, a buffer or
    /// optimizer state) takes the value its update node computed. A training
    /// step's parameter updates, and in training mode the running statistics
    /// a forward pass updates too.
    pub updates: Vec<(NodeId, NodeId)>,
    /// Present once a loss, its backward graph and an update were appended.
    pub training: Option<Training>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            dag: DiGraph::new(),
            by_name: HashMap::new(),
            next_suffix: HashMap::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            params: Vec::new(),
            updates: Vec::new(),
            training: None,
        }
    }

    /// Appends a node whose operands already exist; returns its id.
    pub fn add(&mut self, name: impl Into<String>, op: Op, shape: Shape, inputs: Vec<NodeId>, stage: Stage) -> NodeId {
        let name = name.into();
        let id = self.dag.add_node(Node { name: name.clone(), op, shape, inputs: inputs.clone(), stage });
        // Ids only grow, so appending keeps each list in id order.
        self.by_name.entry(name).or_default().push(id);
        for (i, &src) in inputs.iter().enumerate() {
            debug_assert!(src < id, "operands must precede their user");
            self.dag.add_edge(src, id, i);
        }
        id
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }

    /// The node `id`, or `None` when the graph has no such node.
    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.dag.node_weight(id)
    }

    /// The underlying DAG (read-only: nodes are added with [`Graph::add`]).
    pub fn dag(&self) -> &DiGraph<Node, usize> {
        &self.dag
    }

    /// Gives node `id` the name `name` (which may be shared, as a
    /// placeholder is).
    pub fn rename(&mut self, id: NodeId, name: impl Into<String>) {
        let name = name.into();
        let old = std::mem::replace(&mut self.dag[id].name, name.clone());
        if let Some(ids) = self.by_name.get_mut(&old) {
            ids.retain(|&n| n != id);
            if ids.is_empty() {
                self.by_name.remove(&old);
            }
        }
        let ids = self.by_name.entry(name).or_default();
        let at = ids.partition_point(|&n| n < id);
        ids.insert(at, id);
    }

    /// All node ids in topological (insertion) order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dag.node_indices()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.dag.node_count()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.dag.node_count() == 0
    }

    /// The node called `name`, if any.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).and_then(|ids| ids.first().copied())
    }

    /// Ids of the nodes that use `id` as an operand.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut users: Vec<NodeId> = self.dag.neighbors_directed(id, petgraph::Direction::Outgoing).collect();
        users.sort();
        users.dedup();
        users
    }

    /// A name not yet used in the graph, derived from `base`: `base` itself
    /// or the first free `base_i`. Suffixes already handed out for `base` are
    /// not tried again, so asking for the same base `k` times costs O(k).
    pub fn fresh_name(&mut self, base: &str) -> String {
        if self.find(base).is_none() {
            return base.to_string();
        }
        let mut i = self.next_suffix.get(base).copied().unwrap_or(1);
        let name = loop {
            let candidate = format!("{base}_{i}");
            i += 1;
            if self.find(&candidate).is_none() {
                break candidate;
            }
        };
        self.next_suffix.insert(base.to_string(), i);
        name
    }
}
