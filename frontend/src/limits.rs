//! Limits that keep a hostile declaration from exhausting the stack.
//!
//! The parser (syn) and the lowering are recursive over the expression tree,
//! so a declaration nested thousands of levels deep would overflow the stack
//! and abort the process. Before anything recursive runs, the token trees are
//! walked iteratively and a declaration that nests groups too deeply, or
//! writes one statement too long (a long operator chain parses into an
//! equally deep tree), is refused with an error at the offending token.

use super::diagnostic::{Diagnostic, Diagnostics, FrontendError};
use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// The deepest nesting of `()`, `[]` and `{}` a declaration may use.
pub const MAX_NESTING: usize = 64;
/// The most tokens one statement or argument may hold (tokens between `;`
/// or `,` separators of one group, nested groups counting as one).
pub const MAX_STATEMENT_TOKENS: usize = 4096;

/// Checks `tokens` against [`MAX_NESTING`] and [`MAX_STATEMENT_TOKENS`]
/// without recursion.
pub fn check_limits(tokens: &TokenStream) -> Result<(), Diagnostics> {
    // One entry per open group: its remaining tokens and the length of the
    // statement being read in it.
    let mut stack: Vec<(proc_macro2::token_stream::IntoIter, usize)> = vec![(tokens.clone().into_iter(), 0)];
    while let Some((iter, run)) = stack.last_mut() {
        let Some(tree) = iter.next() else {
            stack.pop();
            continue;
        };
        let separator = matches!(&tree, TokenTree::Punct(p) if p.as_char() == ';' || p.as_char() == ',');
        *run = if separator { 0 } else { *run + 1 };
        if *run > MAX_STATEMENT_TOKENS {
            return Err(error(
                format!("a statement longer than {MAX_STATEMENT_TOKENS} tokens; split it into several `let`s"),
                tree.span(),
            ));
        }
        if let TokenTree::Group(group) = tree {
            if stack.len() > MAX_NESTING {
                let open = match group.delimiter() {
                    Delimiter::Parenthesis => "(",
                    Delimiter::Bracket => "[",
                    Delimiter::Brace => "{",
                    Delimiter::None => "an invisible group",
                };
                return Err(error(
                    format!("`{open}` nested deeper than {MAX_NESTING} levels; expected at most {MAX_NESTING}"),
                    group.span_open(),
                ));
            }
            stack.push((group.stream().into_iter(), 0));
        }
    }
    Ok(())
}

fn error(message: String, span: proc_macro2::Span) -> Diagnostics {
    Diagnostics(vec![Diagnostic::at_span(FrontendError::Syntax(message), span)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> TokenStream {
        format!("{}x{}", "(".repeat(depth), ")".repeat(depth)).parse().unwrap()
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_deeper_is_refused() {
        assert!(check_limits(&nested(MAX_NESTING)).is_ok());
        let err = check_limits(&nested(MAX_NESTING + 1)).unwrap_err();
        assert!(err.to_string().contains("nested deeper than 64"), "{err}");
        assert!(check_limits(&nested(20_000)).is_err());
    }

    #[test]
    fn long_statements_are_refused_but_many_short_ones_pass() {
        let many: TokenStream = "let x = x + x;".repeat(10_000).parse().unwrap();
        assert!(check_limits(&many).is_ok());
        let long: TokenStream = format!("let x = x{};", " + x".repeat(MAX_STATEMENT_TOKENS)).parse().unwrap();
        assert!(check_limits(&long).unwrap_err().to_string().contains("longer than 4096 tokens"));
    }
}
