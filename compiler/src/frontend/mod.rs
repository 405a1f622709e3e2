//! The one front end: the `net!` macro and `.net` files share this parser,
//! the shape checker and the error type.
//!
//! `parse_*` turns source into an [`ast::Module`]; [`lower_module`] turns that
//! into a forward [`Graph`](crate::Graph) with every shape inferred.

pub mod ast;
pub mod diagnostic;
pub mod lower;
pub mod parse;

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
