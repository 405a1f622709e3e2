//! The `net!` procedural macro; use it as `kiln::net!` (the facade crate
//! re-exports it and documents it with a runnable example).
//!
//! The macro runs kiln's one front end (`kiln_compiler::frontend`) on its
//! input unchanged: it parses and lowers the declaration, and turns every
//! error into a rustc error at the tokens that caused it (all of them at
//! once, combined with `syn::Error::combine`). Only when the declaration is
//! valid does it generate code.
//!
//! # How the generated code builds its graph
//!
//! The generated type embeds the declaration text (the macro input,
//! re-serialised) and rebuilds the [`Graph`](kiln_compiler::Graph) at run
//! time through the same front end, once per type (cached in a `OnceLock`).
//! The alternative, emitting graph construction code node by node, would
//! duplicate the lowering logic in a second form that must stay in step with
//! the IR; re-running the front end keeps one source of truth, and since the
//! macro already proved at compile time that the text lowers without error,
//! the run-time rebuild cannot fail (the compiler crate the macro linked and
//! the one the program links are the same workspace crate).
//!
//! # Warnings
//!
//! Front-end warnings (e.g. a layer that `forward` never calls) cannot be
//! emitted by a proc macro on stable Rust, so the macro drops them; the
//! `kiln inspect` command shows them for the same declaration in a `.net` file.

use kiln_compiler::frontend::{lower_module, parse_tokens};
use kiln_compiler::{Dim, Graph, Shape};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};

/// Declares a network; see the `kiln` crate's documentation of `net!`.
#[proc_macro]
pub fn net(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand(input.into()).into()
}

fn expand(input: TokenStream) -> TokenStream {
    let source = input.to_string();
    let module = match parse_tokens(input) {
        Ok(m) => m,
        Err(d) => return errors(&d),
    };
    let lowered = match lower_module(&module) {
        Ok(l) => l,
        Err(d) => return errors(&d),
    };
    let graph = &lowered.graph;
    // The generated type implements Debug and Clone itself, and its fields are
    // not the declared layers, so derives cannot apply.
    if let Some(derive) = module.attrs.iter().find(|a| a.path().is_ident("derive")) {
        return syn::Error::new_spanned(
            derive,
            "net! generates the struct's fields and implements Debug and Clone itself; remove this derive",
        )
        .to_compile_error();
    }

    let attrs = &module.attrs;
    let vis = &module.vis;
    let name = &module.name;
    let name_str = name.to_string();

    let input_names: Vec<String> = graph.inputs.iter().map(|&i| graph.node(i).name.clone()).collect();
    let input_idents: Vec<syn::Ident> =
        module.forward.inputs.iter().map(|i| syn::Ident::new(&i.name.to_string(), Span::call_site())).collect();
    let input_shapes: Vec<TokenStream> = graph.inputs.iter().map(|&i| shape_tokens(&graph.node(i).shape)).collect();
    let output_shapes: Vec<TokenStream> = graph.outputs.iter().map(|&o| shape_tokens(&graph.node(o).shape)).collect();
    let param_names: Vec<String> = graph.params.iter().map(|&p| graph.node(p).name.clone()).collect();
    let param_shapes: Vec<TokenStream> = graph
        .params
        .iter()
        .map(|&p| {
            let dims = graph.node(p).shape.at_batch(1);
            quote!(&[#(#dims),*])
        })
        .collect();
    let num_params: usize = graph.params.iter().map(|&p| graph.node(p).shape.numel_at(1)).sum();
    let n_in = graph.inputs.len();
    let n_out = graph.outputs.len();
    let n_params = graph.params.len();

    let fwd_doc = describe_forward(graph);
    let fwd_attrs = &module.forward.attrs;
    let (ret_ty, ret_expr) = if module.forward.tuple_output {
        let tys = (0..n_out).map(|_| quote!(::kiln::runtime::Tensor));
        let nexts = (0..n_out).map(|_| quote!(__it.next().ok_or_else(__missing)?));
        (quote!((#(#tys,)*)), quote!({ let mut __it = __outs.into_iter(); ::core::result::Result::Ok((#(#nexts,)*)) }))
    } else {
        (quote!(::kiln::runtime::Tensor), quote!(__outs.into_iter().next().ok_or_else(__missing)))
    };
    // The training step's own arguments, renamed if an input already uses the name.
    let free = |base: &str| {
        let mut n = base.to_string();
        while input_names.contains(&n) {
            n.push('_');
        }
        format_ident!("{}", n)
    };
    let (target, loss, sgd) = (free("target"), free("loss"), free("sgd"));
    let train_doc = format!(
        "One training step of `{name_str}`: forward, `loss` on the first output against `target`, \
         backward, and an SGD update (PyTorch's semantics; momentum buffers persist across calls). \
         Returns the loss before the update. See [`::kiln::runtime::Model::train_step`]."
    );
    let struct_doc_extra = format!(
        "\n\nGenerated by `kiln::net!`: {n_in} input(s), {n_out} output(s), {n_params} parameter tensors \
         ({num_params} scalars). Parameters are kept in PyTorch's state_dict order and layouts: {}.",
        param_names.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
    );

    quote! {
        #(#attrs)*
        #[doc = #struct_doc_extra]
        #vis struct #name {
            model: ::kiln::runtime::Model,
        }

        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(&self.model, f)
            }
        }

        impl ::core::clone::Clone for #name {
            fn clone(&self) -> Self {
                #name { model: ::core::clone::Clone::clone(&self.model) }
            }
        }

        #[allow(dead_code)]
        impl #name {
            /// The declaration this type was generated from (re-serialised tokens).
            pub const SOURCE: &'static str = #source;
            /// The forward inputs' names, in order.
            pub const INPUT_NAMES: [&'static str; #n_in] = [#(#input_names),*];
            /// The forward inputs' shapes; a dimension with `batched` set is `factor * N`.
            pub const INPUT_SHAPES: [&'static [::kiln::compiler::Dim]; #n_in] = [#(#input_shapes),*];
            /// The forward outputs' shapes; a dimension with `batched` set is `factor * N`.
            pub const OUTPUT_SHAPES: [&'static [::kiln::compiler::Dim]; #n_out] = [#(#output_shapes),*];
            /// The state_dict keys, in order.
            pub const PARAM_NAMES: [&'static str; #n_params] = [#(#param_names),*];
            /// The parameters' shapes (PyTorch layouts), in state_dict order.
            pub const PARAM_SHAPES: [&'static [usize]; #n_params] = [#(#param_shapes),*];
            /// The number of scalar parameters.
            pub const NUM_PARAMETERS: usize = #num_params;

            fn __graph() -> &'static ::kiln::compiler::Graph {
                static GRAPH: ::std::sync::OnceLock<::kiln::compiler::Graph> = ::std::sync::OnceLock::new();
                GRAPH.get_or_init(|| match ::kiln::compiler::frontend::compile_str(Self::SOURCE) {
                    ::core::result::Result::Ok(lowered) => lowered.graph,
                    // `net!` lowered this exact text at compile time with the same front end.
                    ::core::result::Result::Err(d) => {
                        ::core::panic!("kiln::net!: the declaration of {} no longer compiles: {}", #name_str, d)
                    }
                })
            }

            /// A network with every parameter zero.
            pub fn zeros() -> Self {
                #name { model: ::kiln::runtime::Model::new(::core::clone::Clone::clone(Self::__graph())) }
            }

            /// A network with PyTorch's default initialisation: every weight and bias
            /// drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with a ChaCha8 stream seeded by `seed`.
            pub fn init(seed: u64) -> Self {
                #name { model: ::kiln::runtime::Model::init(::core::clone::Clone::clone(Self::__graph()), seed) }
            }

            /// A network whose parameters are read from a safetensors file.
            pub fn from_safetensors(path: impl ::core::convert::AsRef<::std::path::Path>)
                -> ::core::result::Result<Self, ::kiln::runtime::ModelError>
            {
                let mut net = Self::zeros();
                net.load(path)?;
                ::core::result::Result::Ok(net)
            }

            /// The forward graph, for inspection.
            pub fn graph(&self) -> &::kiln::compiler::Graph {
                self.model.graph()
            }

            /// The underlying model (parameters, executors).
            pub fn model(&self) -> &::kiln::runtime::Model {
                &self.model
            }

            /// The underlying model, mutably (e.g. to choose the executor or thread count).
            pub fn model_mut(&mut self) -> &mut ::kiln::runtime::Model {
                &mut self.model
            }

            /// The underlying model, by value.
            pub fn into_model(self) -> ::kiln::runtime::Model {
                self.model
            }

            /// A copy of the parameters in state_dict order, with PyTorch's keys and layouts.
            pub fn state_dict(&self) -> ::std::vec::Vec<(::std::string::String, ::kiln::runtime::Tensor)> {
                self.model.state_dict()
            }

            /// The parameter `key` (e.g. `"fc1.weight"`).
            pub fn param(&self, key: &str) -> ::core::option::Option<&::kiln::runtime::Tensor> {
                self.model.param(key)
            }

            /// Replaces every parameter; a missing key, an unexpected key or a wrong
            /// shape is an error naming the key, and leaves the network unchanged.
            pub fn load_state_dict(
                &mut self,
                dict: ::std::collections::HashMap<::std::string::String, ::kiln::runtime::Tensor>,
            ) -> ::core::result::Result<(), ::kiln::runtime::ModelError> {
                self.model.load_state_dict(dict)
            }

            /// Saves the parameters as safetensors (written to `<path>.tmp`, then renamed).
            pub fn save(&self, path: impl ::core::convert::AsRef<::std::path::Path>)
                -> ::core::result::Result<(), ::kiln::runtime::ModelError>
            {
                self.model.save(path)
            }

            /// Loads the parameters from a safetensors file (all or nothing).
            pub fn load(&mut self, path: impl ::core::convert::AsRef<::std::path::Path>)
                -> ::core::result::Result<(), ::kiln::runtime::ModelError>
            {
                self.model.load(path)
            }

            /// Loads the parameters from `<dir>/<key>.npy` files (all or nothing).
            pub fn load_npy_dir(&mut self, dir: impl ::core::convert::AsRef<::std::path::Path>)
                -> ::core::result::Result<(), ::kiln::runtime::ModelError>
            {
                self.model.load_npy_dir(dir)
            }

            #(#fwd_attrs)*
            #[doc = #fwd_doc]
            pub fn forward(&mut self, #(#input_idents: &::kiln::runtime::Tensor),*)
                -> ::core::result::Result<#ret_ty, ::kiln::runtime::ModelError>
            {
                let __outs = self.model.forward(&[#(#input_idents),*])?;
                let __missing = || ::kiln::runtime::ModelError::Declaration(
                    ::std::format!("{} returned fewer outputs than declared", #name_str));
                #ret_expr
            }

            /// The loss and every parameter's gradient (state_dict order) at the current
            /// parameters, without an update. See [`::kiln::runtime::Model::gradients`].
            pub fn gradients(
                &mut self,
                #(#input_idents: &::kiln::runtime::Tensor,)*
                #target: &::kiln::runtime::Tensor,
                #loss: ::kiln::compiler::Loss,
            ) -> ::core::result::Result<
                (f32, ::std::vec::Vec<(::std::string::String, ::kiln::runtime::Tensor)>),
                ::kiln::runtime::ModelError,
            > {
                self.model.gradients(&[#(#input_idents),*], #target, #loss)
            }

            #[doc = #train_doc]
            pub fn train_step(
                &mut self,
                #(#input_idents: &::kiln::runtime::Tensor,)*
                #target: &::kiln::runtime::Tensor,
                #loss: ::kiln::compiler::Loss,
                #sgd: ::kiln::compiler::Sgd,
            ) -> ::core::result::Result<f32, ::kiln::runtime::ModelError> {
                self.model.train_step(&[#(#input_idents),*], #target, #loss, #sgd)
            }
        }
    }
}

/// All errors of a declaration as `compile_error!`s at their tokens.
fn errors(d: &kiln_compiler::frontend::Diagnostics) -> TokenStream {
    match d.to_syn_error() {
        Some(e) => e.to_compile_error(),
        None => quote!(::core::compile_error!("kiln::net!: the declaration was rejected");),
    }
}

fn shape_tokens(shape: &Shape) -> TokenStream {
    let dims = shape
        .0
        .iter()
        .map(|&Dim { factor, batched }| quote!(::kiln::compiler::Dim { factor: #factor, batched: #batched }));
    quote!(&[#(#dims),*])
}

fn describe_forward(graph: &Graph) -> String {
    let ins: Vec<String> =
        graph.inputs.iter().map(|&i| format!("`{}`: {}", graph.node(i).name, graph.node(i).shape)).collect();
    let outs: Vec<String> = graph.outputs.iter().map(|&o| graph.node(o).shape.to_string()).collect();
    format!(
        "\n\nRuns the network on {} and returns {}. The batch size `N` is read from the tensors; \
         a tensor of the wrong shape is an error naming the input and both shapes.",
        ins.join(", "),
        outs.join(", ")
    )
}
