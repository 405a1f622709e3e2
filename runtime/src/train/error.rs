//! The error type of training.

use std::path::PathBuf;

use crate::data::DataError;
use crate::executor::ExecError;
use kiln_compiler::autodiff::AutodiffError;

/// Everything that can stop training, evaluation or a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Loading or transforming data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Compiling or running the graph failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The training graph could not be derived.
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    /// The configuration or the model does not fit the data.
    #[error("{0}")]
    Config(String),
    /// A checkpoint or weights file is missing, corrupt or does not fit the model.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Writing a file (checkpoint, metrics, chart) failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The loss became NaN or infinite.
    #[error("the loss is {loss} at epoch {epoch}, step {step} (batch {batch_in_epoch} of the epoch); {origin}")]
    NonFinite {
        /// The loss value.
        loss: f32,
        /// The epoch (1-based).
        epoch: u64,
        /// The global step (1-based).
        step: u64,
        /// The batch within the epoch (1-based).
        batch_in_epoch: usize,
        /// The first graph node with a non-finite value, as the interpreter
        /// found it on the same batch and parameters (`None` if it found none).
        node: Option<String>,
        /// A sentence naming where the first non-finite value appeared.
        origin: String,
    },
}
