//! `kiln inspect`: the graph as text, DOT, JSON or a shape table; with the JIT,
//! the fused kernels, the memory plan, Cranelift IR and machine code.

use crate::model::{CliError, LossArg, build};
use kiln::compiler::jit::{self, Emit, JitOptions};
use kiln::compiler::kernel::write_program;
use kiln::compiler::{Graph, Sgd, emit};
use std::path::PathBuf;

/// What to print.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum EmitArg {
    /// One line per node.
    Text,
    /// Graphviz DOT (render with `dot -Tsvg`).
    Dot,
    /// `{"nodes": [{"id", "name", "op", "shape", "inputs"}]}`.
    Json,
    /// Each node's symbolic and concrete shape.
    Shapes,
    /// The JIT's fused kernels and the graph nodes each contains.
    Kernels,
    /// The JIT's arena layout and peak bytes.
    Memory,
    /// The whole scheduled, memory-planned kernel-IR program as text (read back by `kiln kir`).
    Kir,
    /// Each kernel's Cranelift IR.
    Clif,
    /// Each kernel's machine code.
    Asm,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The model (.net file).
    model: PathBuf,
    /// Batch size the shapes are shown for.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Show the whole training step: forward, loss, backward and SGD update.
    #[arg(long)]
    train: bool,
    /// Loss of the training step.
    #[arg(long, value_enum, default_value = "cross-entropy")]
    loss: LossArg,
    /// Learning rate of the update.
    #[arg(long, default_value_t = 0.001)]
    lr: f32,
    /// Momentum of the update.
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    emit: EmitArg,
    /// Threads the kernels are scheduled for (kernels, kir, memory, clif, asm).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
}

pub fn run(args: InspectArgs) -> Result<(), CliError> {
    let sgd = Sgd { lr: args.lr, momentum: args.momentum, ..Sgd::default() };
    let graph = build(&args.model, args.train.then_some((args.loss.into(), sgd)))?;
    let batch = args.batch as usize;
    let text = match args.emit {
        EmitArg::Text => emit::to_text(&graph, batch),
        EmitArg::Dot => emit::to_dot(&graph, batch),
        EmitArg::Shapes => emit::to_shapes(&graph, batch),
        EmitArg::Json => to_json(&graph, batch),
        EmitArg::Kir => {
            let options = JitOptions { threads: args.threads as usize, ..JitOptions::default() };
            let (program, _) = jit::plan(&graph, batch, &options).map_err(kiln::runtime::ExecError::from)?;
            write_program(&program)
        }
        EmitArg::Kernels | EmitArg::Memory | EmitArg::Clif | EmitArg::Asm => {
            let what = match args.emit {
                EmitArg::Kernels => Emit::Kernels,
                EmitArg::Memory => Emit::Memory,
                EmitArg::Clif => Emit::Clif,
                _ => Emit::Asm,
            };
            let options = JitOptions { inspect: true, threads: args.threads as usize, ..JitOptions::default() };
            let exe = jit::compile(&graph, batch, &options).map_err(kiln::runtime::ExecError::from)?;
            exe.inspect(what)
        }
    };
    out!("{text}");
    Ok(())
}

fn to_json(graph: &Graph, batch: usize) -> String {
    let nodes: Vec<serde_json::Value> = graph
        .node_ids()
        .map(|id| {
            let node = graph.node(id);
            serde_json::json!({
                "id": id.index(),
                "name": node.name,
                "op": node.op.mnemonic(),
                "shape": node.shape.at_batch(batch),
                "inputs": node.inputs.iter().map(|i| i.index()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = serde_json::json!({ "name": graph.name, "batch": batch, "nodes": nodes });
    format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default())
}
