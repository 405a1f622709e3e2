//! Parsing declaration text or tokens into the [`ast`](super::ast).

use super::ast::{Forward, InputDecl, LayerDecl, Module};
use super::diagnostic::{Diagnostic, Diagnostics, FrontendError};
use super::limits::check_limits;
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, Token, Visibility, braced, parenthesized};

/// Parses a declaration from tokens (the `net!` macro's input).
pub fn parse_tokens(tokens: TokenStream) -> Result<Module, Diagnostics> {
    check_limits(&tokens)?;
    syn::parse2::<Module>(tokens).map_err(syn_to_diagnostics)
}

/// Parses a declaration from text (a `.net` file). Spans carry line and column.
pub fn parse_str(source: &str) -> Result<Module, Diagnostics> {
    let tokens: TokenStream = source.parse().map_err(|e: proc_macro2::LexError| {
        Diagnostics(vec![Diagnostic::at_span(FrontendError::Syntax(format!("cannot tokenize: {e}")), e.span())])
    })?;
    parse_tokens(tokens)
}

fn syn_to_diagnostics(err: syn::Error) -> Diagnostics {
    Diagnostics(err.into_iter().map(|e| Diagnostic::at_span(FrontendError::Syntax(e.to_string()), e.span())).collect())
}

impl Parse for Module {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![struct]>()?;
        let name: Ident = input.parse()?;
        let content;
        braced!(content in input);
        let mut layers = Vec::new();
        while !content.is_empty() {
            layers.push(content.parse::<LayerDecl>()?);
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        let forward: Forward = input.parse()?;
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after `fn forward`"));
        }
        Ok(Module { attrs, vis, name, layers, forward })
    }
}

impl Parse for LayerDecl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // Doc comments on layers are allowed and ignored.
        input.call(Attribute::parse_outer)?;
        let name: Ident = input.parse()?;
        input.parse::<Token![:]>()?;
        let fork = input.fork();
        let ctor: Ident = input.parse()?;
        let content;
        parenthesized!(content in input);
        let args = Punctuated::<Expr, Token![,]>::parse_terminated(&content)?;
        let mut call = ctor.to_token_stream();
        // Re-read the constructor call from the fork to keep its exact tokens.
        let _ = fork.parse::<Ident>();
        let group: proc_macro2::Group = fork.parse()?;
        call.extend(std::iter::once(proc_macro2::TokenTree::Group(group)));
        Ok(LayerDecl { name, ctor, args, call })
    }
}

impl Parse for Forward {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        input.parse::<Token![fn]>()?;
        let fname: Ident = input.parse()?;
        if fname != "forward" {
            return Err(syn::Error::new(fname.span(), "expected `fn forward`"));
        }
        let content;
        parenthesized!(content in input);
        let mut inputs = Vec::new();
        while !content.is_empty() {
            let name: Ident = content.parse()?;
            content.parse::<Token![:]>()?;
            let dims: syn::ExprArray = content.parse()?;
            inputs.push(InputDecl { name, dims });
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        input.parse::<Token![->]>()?;
        let (outputs, tuple_output) = if input.peek(syn::token::Paren) {
            let content;
            parenthesized!(content in input);
            let shapes = Punctuated::<syn::ExprArray, Token![,]>::parse_terminated(&content)?;
            (shapes.into_iter().collect(), true)
        } else if input.peek(syn::token::Bracket) {
            (vec![input.parse::<syn::ExprArray>()?], false)
        } else {
            return Err(input.error("expected the result shape, e.g. `-> [N, 10]`"));
        };
        let body: syn::Block = input.parse()?;
        Ok(Forward { attrs, inputs, outputs, tuple_output, body })
    }
}
