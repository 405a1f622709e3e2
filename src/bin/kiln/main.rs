//! `kiln`: inspect, check, train and benchmark networks declared in `.net` files.

mod bench;
mod eval;
mod grad;
mod inspect;
mod model;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Declare, compile and train neural networks.
#[derive(Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's graph, shapes, fused kernels, memory plan, Cranelift IR or machine code.
    Inspect(inspect::InspectArgs),
    /// Evaluate a model on given parameters and inputs; write outputs, loss and every gradient as .npy.
    Grad(grad::GradArgs),
    /// Train a classifier as the lecture does: data, loader, SGD or Adam, evaluation, metrics, checkpoints.
    Train(train::TrainArgs),
    /// Evaluate trained weights: test accuracy overall and per class, confusion matrix.
    Eval(eval::EvalArgs),
    /// Benchmark the JIT: compile time, training and inference images/s, per-kernel GFLOP/s.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Grad(args) => grad::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
