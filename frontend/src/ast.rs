//! The syntax tree of a declaration, as parsed; spans point into the source.

use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, Ident, Token, Visibility};

/// A whole declaration: the layer struct and its `forward` function.
#[derive(Clone, Debug)]
pub struct Module {
    /// Attributes on the struct (doc comments are kept for the generated type).
    pub attrs: Vec<Attribute>,
    /// The struct's visibility.
    pub vis: Visibility,
    /// The network's name.
    pub name: Ident,
    /// Layers in declaration order.
    pub layers: Vec<LayerDecl>,
    /// The forward function.
    pub forward: Forward,
}

/// `name: Ctor(args)` in the struct block.
#[derive(Clone, Debug)]
pub struct LayerDecl {
    /// The layer's name (and state_dict prefix).
    pub name: Ident,
    /// The constructor, e.g. `Conv2d`.
    pub ctor: Ident,
    /// Positional and `keyword = value` arguments.
    pub args: Punctuated<Expr, Token![,]>,
    /// The constructor call's tokens (`Conv2d(3, 6, 5)`), for diagnostics.
    pub call: proc_macro2::TokenStream,
}

/// `fn forward(x: [N, 3, 32, 32], ...) -> [N, 10] { ... }`.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The function's attributes (doc comments).
    pub attrs: Vec<Attribute>,
    /// Arguments with their declared shapes.
    pub inputs: Vec<InputDecl>,
    /// Declared result shapes (one, or several for a tuple result).
    pub outputs: Vec<syn::ExprArray>,
    /// Whether the result was written as a tuple.
    pub tuple_output: bool,
    /// The statements.
    pub body: syn::Block,
}

/// `x: [N, 3, 32, 32]`.
#[derive(Clone, Debug)]
pub struct InputDecl {
    /// The argument's name.
    pub name: Ident,
    /// Its declared shape.
    pub dims: syn::ExprArray,
}
