//! kiln's one front end and the graph IR it produces: the `net!` macro and
//! `.net` files share this parser, the shape checker and the error type.
//!
//! `parse_*` turns source into an [`ast::Module`]; [`lower_module`] turns that
//! into a forward [`Graph`] with every shape inferred.
//!
//! This crate holds everything the `net!` macro needs and nothing that
//! generates code, so the proc macro builds without Cranelift (which the
//! runtime then builds once, for the target only).
#![warn(missing_docs)]

pub mod ast;
pub mod diagnostic;
pub mod graph;
pub mod infer;
pub mod limits;
pub mod lower;
pub mod ops;
pub mod parse;
pub mod shape;

pub use graph::{Graph, Node, NodeId, Stage, Training};
pub use ops::{Activation, BinaryOp, Conv2d, Loss, Op, PaddingMode, Pool2d, Resize, ResizeMode, Sgd};
pub use shape::{Dim, Shape};

pub use diagnostic::{Diagnostic, Diagnostics, FrontendError, Severity};
pub use lower::{Lowered, lower_module};
pub use parse::{parse_str, parse_tokens};

/// Parses and lowers declaration text (a `.net` file) in one call.
pub fn compile_str(source: &str) -> Result<Lowered, Diagnostics> {
    lower_module(&parse_str(source)?)
}

/// Parses and lowers declaration tokens (the `net!` macro's input) in one call.
pub fn compile_tokens(tokens: proc_macro2::TokenStream) -> Result<Lowered, Diagnostics> {
    lower_module(&parse_tokens(tokens)?)
}
