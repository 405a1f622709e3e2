//! kiln: declare, compile and train neural networks in Rust.
#![warn(missing_docs)]

pub use kiln_compiler as compiler;
pub use kiln_runtime as runtime;
