//! Errors and warnings of the front end, each tied to the source tokens that
//! caused it. The `net!` macro turns them into rustc errors at those tokens;
//! the CLI prints them with `file:line:column` and the offending line.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use std::fmt;

/// What went wrong in a declaration. Messages name the layer, what it expected,
/// what it got, and where the value came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrontendError {
    /// The text is not valid declaration syntax.
    #[error("{0}")]
    Syntax(String),
    /// A layer constructor kiln does not know.
    #[error("unknown layer type `{ctor}` for `{layer}`; expected one of {expected}")]
    UnknownLayerType {
        /// The layer's name.
        layer: String,
        /// The constructor written.
        ctor: String,
        /// The accepted constructors.
        expected: String,
    },
    /// A call of something that is neither a layer nor a functional op.
    #[error("unknown layer or op `{name}`; layers: {layers}; ops: {ops}")]
    UnknownOp {
        /// The name called.
        name: String,
        /// The declared layers.
        layers: String,
        /// The functional ops.
        ops: String,
    },
    /// A keyword argument the constructor or op does not take.
    #[error("`{callee}` has no argument `{keyword}`; it takes {expected}")]
    UnknownKeyword {
        /// The constructor or op.
        callee: String,
        /// The keyword written.
        keyword: String,
        /// The accepted argument names.
        expected: String,
    },
    /// A required argument is missing.
    #[error("`{callee}` needs the argument `{arg}`")]
    MissingArgument {
        /// The constructor or op.
        callee: String,
        /// The missing argument.
        arg: String,
    },
    /// More positional arguments than the constructor takes, or one given twice.
    #[error("`{callee}`: {detail}")]
    BadArguments {
        /// The constructor or op.
        callee: String,
        /// What is wrong.
        detail: String,
    },
    /// An argument of the wrong kind or out of range.
    #[error("`{callee}` argument `{arg}` {detail}")]
    BadValue {
        /// The constructor or op.
        callee: String,
        /// The argument.
        arg: String,
        /// What was expected.
        detail: String,
    },
    /// Two layers, or a layer and an input, share a name.
    #[error("`{name}` is declared more than once")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A variable used in `forward` that was never bound.
    #[error("undefined variable `{name}` in forward")]
    UndefinedVariable {
        /// The variable.
        name: String,
    },
    /// The shape of an operand does not fit the layer or op.
    #[error("{layer} {problem}{}", origin.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    Shape {
        /// The layer or op that rejects its operand.
        layer: String,
        /// What it expected and what it got.
        problem: crate::infer::ShapeError,
        /// Where the operand came from, e.g. `conv2 -> pool gives [N, 16, 5, 5]`.
        origin: Option<String>,
    },
    /// The declared result shape differs from the inferred one.
    #[error("forward declares output {index} as {declared} but it is {inferred}{}", origin.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    OutputAnnotation {
        /// Which output.
        index: usize,
        /// The annotation.
        declared: String,
        /// The inferred shape.
        inferred: String,
        /// Where the value came from.
        origin: Option<String>,
    },
    /// A layer that `forward` never calls (a warning).
    #[error("layer `{layer}` is declared but never used in forward")]
    UnusedLayer {
        /// The layer.
        layer: String,
    },
}

/// How serious a diagnostic is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Severity {
    /// The declaration is rejected.
    Error,
    /// The declaration is accepted, but something looks wrong.
    Warning,
}

/// One error or warning and the source range it points at.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    /// What is wrong.
    pub error: FrontendError,
    /// Error or warning.
    pub severity: Severity,
    /// Span of the first token of the offending source.
    pub start: Span,
    /// Span of the last token of the offending source.
    pub end: Span,
}

impl Diagnostic {
    /// An error covering the tokens of `at`.
    pub fn error(error: FrontendError, at: &dyn ToTokens) -> Diagnostic {
        let (start, end) = span_range(at);
        Diagnostic { error, severity: Severity::Error, start, end }
    }

    /// A warning covering the tokens of `at`.
    pub fn warning(error: FrontendError, at: &dyn ToTokens) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(error, at) }
    }

    /// An error at a single span.
    pub fn at_span(error: FrontendError, span: Span) -> Diagnostic {
        Diagnostic { error, severity: Severity::Error, start: span, end: span }
    }

    /// The diagnostic as a `syn::Error` spanning the offending tokens.
    pub fn to_syn_error(&self) -> syn::Error {
        // A two-token stream carries both ends of the range; syn keeps them.
        let marker: TokenStream = [
            proc_macro2::TokenTree::Ident(proc_macro2::Ident::new("a", self.start)),
            proc_macro2::TokenTree::Ident(proc_macro2::Ident::new("b", self.end)),
        ]
        .into_iter()
        .collect();
        syn::Error::new_spanned(marker, self.error.to_string())
    }

    /// `line:column` (1-based line, 1-based column) of the start, for text sources.
    pub fn line_column(&self) -> (usize, usize) {
        let lc = self.start.start();
        (lc.line, lc.column + 1)
    }

    /// Renders the diagnostic against the text it was parsed from, rustc style.
    pub fn render(&self, file: &str, source: &str) -> String {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let start = self.start.start();
        let end = self.end.end();
        let mut out = format!("{kind}: {}\n  --> {file}:{}:{}\n", self.error, start.line, start.column + 1);
        if let Some(line) = source.lines().nth(start.line.saturating_sub(1)) {
            let width = if end.line == start.line && end.column > start.column { end.column - start.column } else { 1 };
            let (excerpt, column, width) = excerpt(line, start.column, width);
            let gutter = start.line.to_string().len();
            out += &format!(
                "{:gutter$} |\n{} | {excerpt}\n{:gutter$} | {}{}\n",
                "",
                start.line,
                "",
                " ".repeat(column),
                "^".repeat(width)
            );
        }
        out
    }
}

/// Characters of context shown on each side of the marked range of a long line.
const EXCERPT_CONTEXT: usize = 40;

/// The part of `line` shown under a diagnostic: all of it when short, else
/// the marked range (at char `column`, `width` chars, cut to a screen) with
/// some context and `...` where text was cut. Returns the excerpt and the
/// marker's column and width within it.
fn excerpt(line: &str, column: usize, width: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    let width = width.min(2 * EXCERPT_CONTEXT);
    if chars.len() <= 3 * EXCERPT_CONTEXT {
        return (line.to_string(), column, width);
    }
    let from = column.saturating_sub(EXCERPT_CONTEXT);
    let to = (column + width + EXCERPT_CONTEXT).min(chars.len());
    let mut text = String::new();
    let mut marker = column - from;
    if from > 0 {
        text += "...";
        marker += 3;
    }
    text.extend(&chars[from..to]);
    if to < chars.len() {
        text += "...";
    }
    (text, marker, width)
}

/// Every diagnostic a declaration produced (errors first, then warnings).
#[derive(Clone, Debug, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    /// All errors combined into one `syn::Error` (for the macro).
    pub fn to_syn_error(&self) -> Option<syn::Error> {
        self.errors().map(Diagnostic::to_syn_error).reduce(|mut a, b| {
            a.combine(b);
            a
        })
    }

    /// Renders every diagnostic against its source text.
    pub fn render(&self, file: &str, source: &str) -> String {
        self.0.iter().map(|d| d.render(file, source)).collect::<Vec<_>>().join("\n")
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let (line, col) = d.line_column();
            write!(f, "{line}:{col}: {}", d.error)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The spans of the first and last token of `tokens`.
pub fn span_range(tokens: &dyn ToTokens) -> (Span, Span) {
    let stream = tokens.to_token_stream();
    let mut iter = stream.into_iter();
    let first = iter.next().map(|t| t.span()).unwrap_or_else(Span::call_site);
    let last = iter.last().map(|t| t.span()).unwrap_or(first);
    (first, last)
}
