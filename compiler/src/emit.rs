//! Human-readable dumps of a graph: text listing, per-node shapes, Graphviz DOT.

use crate::graph::{Graph, NodeId, Stage};
use std::fmt::Write;

/// One line per node: `%id name: [shape] = op(operands)`, with concrete shapes for `batch`.
pub fn to_text(graph: &Graph, batch: usize) -> String {
    let mut out = format!("graph {} (batch {batch}, {} nodes)\n", graph.name, graph.len());
    let mut stage = None;
    for id in graph.node_ids() {
        let node = graph.node(id);
        if stage != Some(node.stage) {
            stage = Some(node.stage);
            let _ = writeln!(out, "  // {}", stage_name(node.stage));
        }
        let operands: Vec<String> = node.inputs.iter().map(|i| format!("%{}", i.index())).collect();
        let _ = writeln!(
            out,
            "  %{:<3} {:<24} {:<18} = {}({})",
            id.index(),
            node.name,
            format!("{:?}", node.shape.at_batch(batch)),
            node.op,
            operands.join(", ")
        );
    }
    let list = |ids: &[NodeId]| ids.iter().map(|i| format!("%{}", i.index())).collect::<Vec<_>>().join(", ");
    let _ = writeln!(out, "  inputs: {}  outputs: {}", list(&graph.inputs), list(&graph.outputs));
    if let Some(t) = &graph.training {
        let _ = writeln!(out, "  loss: {} = %{}", t.loss_fn.name(), t.loss.index());
    }
    for &(leaf, new) in &graph.updates {
        let _ = writeln!(out, "  update: {} <- %{}", graph.node(leaf).name, new.index());
    }
    out
}

/// `name: [symbolic shape] -> [concrete shape]` for every node.
pub fn to_shapes(graph: &Graph, batch: usize) -> String {
    let width = graph.node_ids().map(|id| graph.node(id).name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let _ = writeln!(
            out,
            "{:<width$}  {:<20} {:<22} {:?}",
            node.name,
            node.op.mnemonic(),
            node.shape.to_string(),
            node.shape.at_batch(batch)
        );
    }
    out
}

/// A Graphviz DOT rendering, one cluster per stage (forward, loss, backward, update).
pub fn to_dot(graph: &Graph, batch: usize) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
        escape(&graph.name)
    );
    for (i, stage) in [Stage::Forward, Stage::Loss, Stage::Backward, Stage::Update].into_iter().enumerate() {
        let ids: Vec<NodeId> = graph.node_ids().filter(|&id| graph.node(id).stage == stage).collect();
        if ids.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  subgraph cluster_{i} {{\n    label=\"{}\";\n    color=gray;", stage_name(stage));
        for id in ids {
            let node = graph.node(id);
            let (shape, fill) = if node.op.is_leaf() { ("ellipse", "#e8f0fe") } else { ("box", "#ffffff") };
            let _ = writeln!(
                out,
                "    n{} [label=\"{}\\n{}\\n{:?}\", shape={shape}, style=filled, fillcolor=\"{fill}\"];",
                id.index(),
                escape(&node.name),
                escape(&node.op.mnemonic()),
                node.shape.at_batch(batch)
            );
        }
        out += "  }\n";
    }
    for id in graph.node_ids() {
        for (i, src) in graph.node(id).inputs.iter().enumerate() {
            let _ = writeln!(out, "  n{} -> n{} [label=\"{i}\", fontsize=8];", src.index(), id.index());
        }
    }
    for &(leaf, new) in &graph.updates {
        let _ = writeln!(out, "  n{} -> n{} [style=dashed, color=gray, constraint=false];", new.index(), leaf.index());
    }
    out += "}\n";
    out
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Forward => "forward",
        Stage::Loss => "loss",
        Stage::Backward => "backward",
        Stage::Update => "update",
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
