//! Binding PyTorch-style arguments (positional, then `keyword = value`) to
//! a callee's parameter names, for layer declarations and functional ops
//! alike.

use super::Builder;
use crate::diagnostic::FrontendError;
use quote::ToTokens;
use std::collections::HashMap;
use syn::Expr;

/// The tokens of an argument list, for arity errors.
pub(super) struct ArgsAt<'a>(pub(super) &'a dyn ToTokens);

impl Builder<'_> {
    /// Matches positional and `keyword = value` arguments against `names`.
    pub(super) fn bind_args<'e>(
        &mut self,
        callee: &str,
        args: impl Iterator<Item = &'e Expr>,
        names: &[&'static str],
        positional: usize,
        required: usize,
        at: &ArgsAt,
    ) -> Option<HashMap<&'static str, &'e Expr>> {
        let mut bound: HashMap<&'static str, &'e Expr> = HashMap::new();
        let mut next = 0;
        let mut ok = true;
        for arg in args {
            if let Expr::Assign(assign) = arg {
                let keyword = match &*assign.left {
                    Expr::Path(p) => p.path.get_ident().map(|i| i.to_string()),
                    _ => None,
                };
                let Some(keyword) = keyword else {
                    self.error(FrontendError::Syntax("expected `keyword = value`".into()), &assign.left);
                    ok = false;
                    continue;
                };
                match names.iter().find(|n| **n == keyword) {
                    Some(n) if bound.contains_key(n) => {
                        self.error(
                            FrontendError::BadArguments {
                                callee: callee.into(),
                                detail: format!("`{keyword}` is given twice"),
                            },
                            &assign.left,
                        );
                        ok = false;
                    }
                    Some(n) => {
                        bound.insert(n, &assign.right);
                    }
                    None => {
                        self.error(
                            FrontendError::UnknownKeyword {
                                callee: callee.into(),
                                keyword,
                                expected: names.join(", "),
                            },
                            &assign.left,
                        );
                        ok = false;
                    }
                }
            } else {
                if next >= positional {
                    self.error(
                        FrontendError::BadArguments {
                            callee: callee.into(),
                            detail: format!(
                                "takes at most {positional} positional arguments ({}); pass the rest as keywords",
                                names[..positional].join(", ")
                            ),
                        },
                        arg,
                    );
                    ok = false;
                    continue;
                }
                bound.insert(names[next], arg);
                next += 1;
            }
        }
        for &n in &names[..required] {
            if !bound.contains_key(n) {
                self.error(FrontendError::MissingArgument { callee: callee.into(), arg: n.into() }, at.0);
                ok = false;
            }
        }
        ok.then_some(bound)
    }
}
