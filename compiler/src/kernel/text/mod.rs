//! A text form of the kernel IR that round-trips exactly, in the spirit of
//! Cranelift's CLIF text: [`write_program`] prints a [`Program`],
//! [`parse_program`] reads it back, and
//! `parse_program(&write_program(p)) == Ok(p)` for every program without NaN
//! constants (NaN is never equal to itself; its bits still round-trip).
//!
//! ```
//! use kiln_compiler::kernel::{parse_program, write_program};
//!
//! let text = r#"; comments run from `;` to the end of the line
//! program threads 2 arena 9216
//!
//! %0 = leaf n0 "x" len 3072 @ 0
//! %1 = value n3 "conv1+relu" len 4704 per_thread @ 3072
//! %2 = scratch "pack" len 64 @ 7776
//! %3 = const_f32 "weights" len 2 @ 7840 [0.25, -0.0]
//! %4 = const_i32 "taps" len 3 @ 7842 [0, 1, 32]
//!
//! value n0 -> %0
//! value n3 -> %1
//! update %0 = %1
//!
//! kernel 0 "conv1+relu" threads 2 flops 1234 as_scheduled {
//!   nodes [n1, n3]
//!   reads [%0, %3, %4]
//!   writes [%1]
//!   in_place [%0 -> %1]
//!   for v0 in 0..4 parallel {
//!     for v1 in 0..28 vector written_out chains 4 {
//!       let a0 = 0.0
//!       a0 += %0[v0 * 3072 + v1] * %3[v1 % 2]
//!       if icmp v1 >= 1 && (icmp v1 < 27 || fcmp a0 > 0.0) {
//!         %1[v0 * 28 + v1] = relu(a0)
//!       } else {
//!         %1[v0 * 28 + v1] += select(isnan(a0), nan(0x7fc00000), float(%4[v1 % 3]))
//!       }
//!     }
//!     gemm m 6 n 28 k 75 {
//!       tile outer rows 6 vectors 1 unroll 3
//!       a %2[0] stride 75 1
//!       b %0[v0 * 3072] stride 32 1
//!       b_rows %4
//!       c %1[v0 * 4704] stride 28 1
//!       bias per_row %3[0]
//!       activation leaky_relu(0.01)
//!     }
//!   }
//! }
//! "#;
//! let program = parse_program(text)?;
//! assert_eq!(program.kernels[0].name, "conv1+relu");
//! // Printing drops the comment and gives back the rest byte for byte.
//! assert_eq!(write_program(&program), text.split_once('\n').unwrap().1);
//! # Ok::<(), kiln_compiler::kernel::ParseError>(())
//! ```
//!
//! The `program` line ends with the target the program is scheduled for
//! (`target lanes 4 registers 16 fma l1d 49152 l2 2097152`), omitted when it
//! is [`Target::baseline`].
//!
//! Buffers are `%N`, loop variables `vN`, accumulators `aN`, graph nodes
//! `nN`; names are quoted strings. Buffer and kernel numbers must appear in
//! order, and every `%N` must name a declared buffer. In index context
//! `%N[i]` is a table lookup ([`Idx::Table`]) and `int(%N[i])` reads an
//! `f32` index ([`Idx::FloatTable`]); in value context `%N[i]` is a load.
//! A matrix of a product is `%N[offset] stride ROW COL`.
//! Lowering decisions ([`LoopLowering`], [`Emission`], [`DotSteps`]) are
//! printed only where they differ from their defaults: after a loop's mode
//! `written_out`, `tail overlap|scalar|scalar_written_out`, `copies N`,
//! `chains N` and `keep [aN, ...]`, in that order; `as_scheduled` after a
//! kernel's flops; `steps N` or `steps written_out` after a dot tile's
//! columns.
//! Comparisons say whether they compare indices (`icmp`) or values
//! (`fcmp`), so a parenthesis after `if` always groups conditions.
//!
//! An `f32` is printed as Rust's shortest round-trip decimal (`1e-7`,
//! `-0.0`, `inf`), a NaN as `nan(0x...)` with its bits. Buffer offsets are
//! written per buffer (`@ N`) when there is one per buffer, otherwise as one
//! `offsets [...]` line after the buffers.
//!
//! Parsing never panics: errors carry the line and column, expressions and
//! statements nest at most [`MAX_NESTING`] deep, and integers that do not
//! fit their field are errors.
//!
//! [`Program`]: super::Program
//! [`Target::baseline`]: crate::target::Target::baseline
//! [`LoopLowering`]: super::LoopLowering
//! [`Emission`]: super::Emission
//! [`DotSteps`]: super::DotSteps
//! [`Idx::Table`]: super::Idx::Table
//! [`Idx::FloatTable`]: super::Idx::FloatTable

mod lex;
mod parse;
mod parse_expr;
mod parse_gemm;
mod write;

#[cfg(test)]
mod tests;

pub use parse::parse_program;
pub use write::write_program;

/// How deeply expressions and statements may nest in parsed text. Kiln's
/// own programs nest loops up to 8 deep and expressions up to 11; the limit
/// keeps the parser's recursion well inside a 2 MiB thread stack even in
/// debug builds.
pub const MAX_NESTING: usize = 128;

/// A position in the text: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// Why kernel IR text could not be parsed, and where.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{line}:{column}: {kind}")]
pub struct ParseError {
    /// Line of the offending token, from 1.
    pub line: usize,
    /// Column of the offending token, from 1.
    pub column: usize,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn new(at: Pos, kind: ParseErrorKind) -> ParseError {
        ParseError { line: at.line, column: at.column, kind }
    }

    /// The message without its position.
    pub fn message(&self) -> String {
        self.kind.to_string()
    }
}

/// What was wrong with kernel IR text.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ParseErrorKind {
    /// A token other than the one the grammar allows here.
    #[error("expected {expected}, found {found}")]
    Expected {
        /// What the grammar allows.
        expected: String,
        /// The token that came instead.
        found: String,
    },
    /// A character that starts no token.
    #[error("unexpected character {0:?}")]
    BadChar(char),
    /// A string literal without its closing quote.
    #[error("unterminated string")]
    UnterminatedString,
    /// A backslash escape that is not `\\`, `\"`, `\n`, `\r`, `\t` or `\u{...}`.
    #[error("invalid escape in string: {0}")]
    BadEscape(String),
    /// An integer that does not fit the field it is written in.
    #[error("integer {text} does not fit in {ty}")]
    IntegerOverflow {
        /// The literal as written (with its sign).
        text: String,
        /// The field's type (`i64`, `usize`, `u32`, ...).
        ty: &'static str,
    },
    /// A float literal Rust does not parse, or one too large for `f32`.
    #[error("invalid f32 literal {0}")]
    BadFloat(String),
    /// `%N` past the declared buffers.
    #[error("unknown buffer %{id} (the program declares {count})")]
    UnknownBuffer {
        /// The buffer named.
        id: u64,
        /// How many buffers are declared.
        count: usize,
    },
    /// A buffer or kernel numbered out of order.
    #[error("expected {what} {expected}, found {what} {found}")]
    OutOfOrder {
        /// `buffer` or `kernel`.
        what: &'static str,
        /// The number its position gives it.
        expected: usize,
        /// The number written.
        found: u64,
    },
    /// A matrix product field written twice.
    #[error("gemm field `{0}` given twice")]
    DuplicateField(&'static str),
    /// A required matrix product field left out.
    #[error("gemm field `{0}` missing")]
    MissingField(&'static str),
    /// Offsets given both per buffer and as an `offsets` line, or for only
    /// some buffers.
    #[error("buffer offsets must be given for every buffer or in one `offsets` line, {0}")]
    InconsistentOffsets(&'static str),
    /// Nesting past [`MAX_NESTING`].
    #[error("nested more than {0} levels deep")]
    TooDeep(usize),
}
