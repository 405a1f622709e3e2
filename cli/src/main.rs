//! `kiln`: inspect, check, train and benchmark networks declared in `.net` files.

/// `println!` that ends the process quietly when stdout has been closed
/// (`kiln inspect ... | head`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

/// `print!` with the same handling of a closed stdout as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

mod bench;
mod eval;
mod grad;
mod inspect;
mod kir;
mod model;
mod train;
mod transforms;

use clap::{Parser, Subcommand};
use kiln::compiler::target::{MAX_ISA_VARIABLE, ProductIsa};
use std::process::ExitCode;

/// Declare, compile and train neural networks.
#[derive(Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    /// The widest vectors matrix products may use: v128 (Cranelift's own),
    /// avx2 or avx512 (default: the widest this CPU has, or KILN_MAX_ISA).
    #[arg(long, global = true, value_parser = parse_isa)]
    isa: Option<ProductIsa>,
    #[command(subcommand)]
    command: Command,
}

/// `--isa NAME`: a known ISA this CPU runs.
fn parse_isa(name: &str) -> Result<ProductIsa, String> {
    let isa = ProductIsa::from_name(name).ok_or_else(|| format!("expected v128, avx2 or avx512, got `{name}`"))?;
    if !isa.available() {
        return Err(format!("this CPU has no {isa}; its widest is {}", ProductIsa::host()));
    }
    Ok(isa)
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
    /// Parse and check a kernel-IR program (`inspect --emit kir`) and print it back.
    Kir(kir::KirArgs),
    /// Benchmark the JIT: compile time, training and inference images/s, per-kernel GFLOP/s.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Ok(name) = std::env::var(MAX_ISA_VARIABLE)
        && ProductIsa::from_name(name.trim()).is_none()
    {
        eprintln!("error: {MAX_ISA_VARIABLE}={name}: expected v128, avx2 or avx512");
        return ExitCode::FAILURE;
    }
    if let Some(isa) = cli.isa {
        ProductIsa::limit(isa);
    }
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Grad(args) => grad::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Kir(args) => kir::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A reader that stops reading (a closed pipe) ends the output: exit
/// quietly. Any other failure to write is reported.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}
