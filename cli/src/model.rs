//! Loading a `.net` file and building the graph a command needs.

use kiln::compiler::budget::{available_memory, check_parameters};
use kiln::compiler::frontend::compile_str;
use kiln::compiler::{Graph, Loss, Sgd, autodiff};
use std::path::{Path, PathBuf};

/// Why a command failed; printed as `error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The model file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The declaration has errors (already rendered with positions).
    #[error("{count} error(s) in {path}:\n{rendered}")]
    Declaration { path: PathBuf, count: usize, rendered: String },
    /// Autodiff rejected the graph.
    #[error(transparent)]
    Autodiff(#[from] autodiff::AutodiffError),
    /// Running failed.
    #[error(transparent)]
    Exec(#[from] kiln::runtime::ExecError),
    /// A .npy file was bad.
    #[error(transparent)]
    Npy(#[from] kiln::runtime::npy::NpyError),
    /// An argument or file did not fit the model.
    #[error("{0}")]
    Usage(String),
    /// The model does not fit in memory.
    #[error(transparent)]
    OutOfMemory(#[from] kiln::compiler::budget::OutOfMemory),
    /// A kernel-IR file is malformed or fails verification (`line:column: what`).
    #[error("{}:{message}", path.display())]
    Kir { path: PathBuf, message: String },
    /// Writing results failed.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// The loss names accepted on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LossArg {
    /// Softmax cross-entropy against integer labels.
    CrossEntropy,
    /// Mean squared error against a target tensor.
    Mse,
    /// The perceptron criterion against ±1 targets.
    Perceptron,
}

impl From<LossArg> for Loss {
    fn from(l: LossArg) -> Loss {
        match l {
            LossArg::CrossEntropy => Loss::CrossEntropy,
            LossArg::Mse => Loss::Mse,
            LossArg::Perceptron => Loss::Perceptron,
        }
    }
}

/// Reads and lowers a `.net` file; warnings go to stderr.
pub fn load(path: &Path) -> Result<Graph, CliError> {
    let source = std::fs::read_to_string(path).map_err(|source| CliError::Read { path: path.into(), source })?;
    let file = path.display().to_string();
    match compile_str(&source) {
        Ok(lowered) => {
            if !lowered.warnings.0.is_empty() {
                eprintln!("{}", lowered.warnings.render(&file, &source));
            }
            // Every command allocates the parameters at least once.
            check_parameters(&lowered.graph, available_memory())?;
            Ok(lowered.graph)
        }
        Err(d) => Err(CliError::Declaration {
            path: path.into(),
            count: d.errors().count(),
            rendered: d.render(&file, &source),
        }),
    }
}

/// The forward graph, or with `train` the whole step (forward, loss, backward, SGD update).
pub fn build(path: &Path, train: Option<(Loss, Sgd)>) -> Result<Graph, CliError> {
    let forward = load(path)?;
    match train {
        None => Ok(forward),
        Some((loss, sgd)) => Ok(autodiff::derive_training(&forward, loss, sgd)?),
    }
}

/// `loss` with PyTorch's `label_smoothing`, which only cross-entropy takes.
pub fn with_label_smoothing(loss: Loss, smoothing: f32) -> Result<Loss, CliError> {
    if !(0.0..=1.0).contains(&smoothing) {
        return Err(CliError::Usage(format!("--label-smoothing must be in [0, 1], got {smoothing}")));
    }
    match loss {
        _ if smoothing == 0.0 => Ok(loss),
        Loss::CrossEntropy => Ok(Loss::cross_entropy(smoothing)),
        _ => Err(CliError::Usage(format!("--label-smoothing needs --loss cross-entropy, not {}", loss.name()))),
    }
}
