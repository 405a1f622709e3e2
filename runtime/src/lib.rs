//! kiln's runtime: tensors, executors, data loading, training and checkpoints.
#![warn(missing_docs)]

pub mod data;
pub mod executor;
pub mod model;
pub mod npy;
pub mod train;
mod weights;

pub use executor::{Backend, ExecError, ExecOptions, Executor};
pub use kiln_compiler::{Mode, Tensor};
pub use model::{Model, ModelError};
