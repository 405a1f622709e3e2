//! kiln's runtime: tensors, executors, data loading, training and checkpoints.
#![warn(missing_docs)]
pub mod data;
