//! Lowering a parsed declaration to the graph IR, inferring every shape on
//! the way and collecting every error (not only the first).
//!
//! This file holds the driver: the builder's state, the inputs, the
//! `forward` body and its tensor expressions, shape inference of each new
//! node, and the provenance (`conv2 -> pool gives ...`) error messages cite.
//! The layer table, the functional ops, argument binding and constant
//! expressions each have a module.

mod args;
mod consts;
mod layers;
mod ops;

pub use consts::{MAX_ELEMENTS, MAX_LENGTH, eval_usize};
pub use layers::LAYER_TYPES;
pub use ops::FUNCTIONAL_OPS;

use super::ast::Module;
use super::diagnostic::{Diagnostic, Diagnostics, FrontendError};
use crate::graph::{Graph, NodeId, Stage};
use crate::infer::infer_shape;
use crate::ops::{BinaryOp, Op};
use crate::shape::{Dim, Shape};
use consts::{elements_per_sample, eval_dim};
use layers::Layer;
use quote::ToTokens;
use std::collections::HashMap;
use syn::{BinOp, Expr, Pat, Stmt};

/// A lowered declaration: the forward graph and any warnings.
#[derive(Debug)]
pub struct Lowered {
    /// The forward graph with every shape inferred.
    pub graph: Graph,
    /// Warnings (e.g. unused layers); errors are returned as `Err`.
    pub warnings: Diagnostics,
}

/// Lowers `module` to a forward [`Graph`]; all errors are reported together.
pub fn lower_module(module: &Module) -> Result<Lowered, Diagnostics> {
    let mut b = Builder::new(module);
    b.declare_layers();
    b.declare_inputs();
    b.lower_body();
    b.finish()
}

/// A bound value; `None` when an earlier error already poisoned it.
type Value = Option<NodeId>;

struct Builder<'m> {
    module: &'m Module,
    graph: Graph,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    layers: Vec<Layer<'m>>,
    layer_by_name: HashMap<String, usize>,
    env: HashMap<String, Value>,
    /// The declared layer behind each layer-call node (node names get suffixes).
    layer_of: HashMap<NodeId, String>,
}

impl<'m> Builder<'m> {
    fn new(module: &'m Module) -> Builder<'m> {
        Builder {
            module,
            graph: Graph::new(module.name.to_string()),
            errors: Vec::new(),
            warnings: Vec::new(),
            layers: Vec::new(),
            layer_by_name: HashMap::new(),
            env: HashMap::new(),
            layer_of: HashMap::new(),
        }
    }

    fn error(&mut self, error: FrontendError, at: &dyn ToTokens) {
        self.errors.push(Diagnostic::error(error, at));
    }

    fn declare_inputs(&mut self) {
        for input in &self.module.forward.inputs {
            let name = input.name.to_string();
            if self.env.contains_key(&name) || self.layer_by_name.contains_key(&name) {
                self.error(FrontendError::DuplicateName { name }, &input.name);
                continue;
            }
            let value = match self.eval_dims(&input.dims, false) {
                Some(dims) => {
                    let shape = Shape(dims.into_iter().map(|d| d.unwrap_or(Dim::fixed(1))).collect());
                    let id = self.graph.add(name.clone(), Op::Input, shape, vec![], Stage::Forward);
                    self.graph.inputs.push(id);
                    Some(id)
                }
                None => None,
            };
            self.env.insert(name, value);
        }
    }

    /// Evaluates a `[N, 3, 32, 32]` list; `-1` (as `None`) only when `allow_infer`.
    fn eval_dims(&mut self, dims: &syn::ExprArray, allow_infer: bool) -> Option<Vec<Option<Dim>>> {
        let mut out = Vec::new();
        let mut ok = true;
        for e in &dims.elems {
            match eval_dim(e) {
                Ok(None) if !allow_infer => {
                    self.error(FrontendError::Syntax("-1 is only allowed in reshape".into()), e);
                    ok = false;
                }
                Ok(d) => out.push(d),
                Err(detail) => {
                    self.error(FrontendError::Syntax(format!("bad dimension: {detail}")), e);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    // ----- the forward body -----

    fn lower_body(&mut self) {
        let stmts = &self.module.forward.body.stmts;
        let mut result: Option<(&Expr, Vec<Value>)> = None;
        for (i, stmt) in stmts.iter().enumerate() {
            match stmt {
                Stmt::Local(local) => {
                    let Pat::Ident(pat) = &local.pat else {
                        self.error(FrontendError::Syntax("expected `let name = ...`".into()), &local.pat);
                        continue;
                    };
                    let Some(init) = &local.init else {
                        self.error(FrontendError::Syntax("`let` needs a value".into()), local);
                        continue;
                    };
                    let name = pat.ident.to_string();
                    let value = self.eval(&init.expr, Some(&name));
                    self.env.insert(name, value);
                }
                Stmt::Expr(expr, None) if i + 1 == stmts.len() => {
                    result = Some((expr, self.eval_result(expr)));
                }
                Stmt::Expr(Expr::Return(ret), _) if i + 1 == stmts.len() => match &ret.expr {
                    Some(expr) => result = Some((expr, self.eval_result(expr))),
                    None => self.error(FrontendError::Syntax("`return` needs a value".into()), ret),
                },
                other => self.error(
                    FrontendError::Syntax("expected `let` bindings followed by the result expression".into()),
                    other,
                ),
            }
        }
        let Some((expr, values)) = result else {
            self.error(
                FrontendError::Syntax("forward must end in its result expression (no trailing `;`)".into()),
                &self.module.forward.body,
            );
            return;
        };
        self.check_outputs(expr, values);
    }

    fn eval_result(&mut self, expr: &Expr) -> Vec<Value> {
        match expr {
            Expr::Tuple(t) => t.elems.iter().map(|e| self.eval(e, None)).collect(),
            Expr::Paren(p) => self.eval_result(&p.expr),
            e => vec![self.eval(e, None)],
        }
    }

    fn check_outputs(&mut self, expr: &Expr, values: Vec<Value>) {
        let declared = &self.module.forward.outputs;
        if declared.len() != values.len() {
            self.error(
                FrontendError::Syntax(format!(
                    "forward declares {} output(s) but returns {}",
                    declared.len(),
                    values.len()
                )),
                expr,
            );
            return;
        }
        for (index, (annotation, value)) in declared.iter().zip(values).enumerate() {
            let Some(id) = value else { continue };
            let Some(dims) = self.eval_dims(annotation, false) else { continue };
            let want = Shape(dims.into_iter().flatten().collect());
            let got = self.graph.node(id).shape.clone();
            if want != got {
                let origin = Some(self.describe(id));
                self.error(
                    FrontendError::OutputAnnotation {
                        index,
                        declared: want.to_string(),
                        inferred: got.to_string(),
                        origin,
                    },
                    annotation,
                );
            }
            self.graph.outputs.push(id);
        }
    }

    /// Evaluates a tensor expression; `bind` is the `let` name it is bound to.
    fn eval(&mut self, expr: &Expr, bind: Option<&str>) -> Value {
        match expr {
            Expr::Path(p) => {
                let Some(ident) = p.path.get_ident() else {
                    self.error(FrontendError::Syntax("expected a variable".into()), p);
                    return None;
                };
                let name = ident.to_string();
                match self.env.get(&name) {
                    Some(v) => *v,
                    None => {
                        self.error(FrontendError::UndefinedVariable { name }, ident);
                        None
                    }
                }
            }
            Expr::Paren(p) => self.eval(&p.expr, bind),
            Expr::Group(g) => self.eval(&g.expr, bind),
            Expr::Call(call) => {
                let Expr::Path(func) = &*call.func else {
                    self.error(FrontendError::Syntax("expected a layer or op name".into()), &call.func);
                    return None;
                };
                let Some(ident) = func.path.get_ident() else {
                    self.error(FrontendError::Syntax("expected a layer or op name".into()), func);
                    return None;
                };
                let name = ident.to_string();
                if let Some(&index) = self.layer_by_name.get(&name) {
                    self.call_layer(index, call)
                } else if FUNCTIONAL_OPS.contains(&name.as_str()) {
                    let args: Vec<&Expr> = call.args.iter().collect();
                    self.call_op(&name, &args, call, bind)
                } else {
                    let layers: Vec<String> = self.layers.iter().map(|l| l.decl.name.to_string()).collect();
                    self.error(
                        FrontendError::UnknownOp { name, layers: layers.join(", "), ops: FUNCTIONAL_OPS.join(", ") },
                        ident,
                    );
                    // Still evaluate the operands to report their errors too.
                    for a in &call.args {
                        self.eval(a, None);
                    }
                    None
                }
            }
            Expr::MethodCall(m) => {
                let method = m.method.to_string();
                let mut args: Vec<&Expr> = vec![&m.receiver];
                args.extend(m.args.iter());
                let op = match method.as_str() {
                    "reshape" | "view" => "reshape",
                    "flatten" => "flatten",
                    "relu" | "sigmoid" | "tanh" => method.as_str(),
                    _ => {
                        self.error(
                            FrontendError::UnknownOp {
                                name: format!(".{method}()"),
                                layers: "-".into(),
                                ops: ".reshape(), .view(), .flatten(), .relu(), .sigmoid(), .tanh()".into(),
                            },
                            &m.method,
                        );
                        return None;
                    }
                };
                let op = op.to_string();
                self.call_op(&op, &args, m, bind)
            }
            Expr::Binary(bin) => {
                let op = match bin.op {
                    BinOp::Add(_) => BinaryOp::Add,
                    BinOp::Sub(_) => BinaryOp::Sub,
                    BinOp::Mul(_) => BinaryOp::Mul,
                    _ => {
                        self.error(FrontendError::Syntax("only `+`, `-` and `*` apply to tensors".into()), &bin.op);
                        return None;
                    }
                };
                let a = self.eval(&bin.left, None);
                let b = self.eval(&bin.right, None);
                let (a, b) = (a?, b?);
                let name = bind.map(str::to_string).unwrap_or_else(|| Op::Binary(op).mnemonic());
                self.add_inferred(&name, Op::Binary(op), vec![a, b], bin, None)
            }
            other => {
                self.error(
                    FrontendError::Syntax(
                        "expected a tensor expression (a variable, a layer or op call, `+`, `-`, `*`)".into(),
                    ),
                    other,
                );
                None
            }
        }
    }

    /// Adds a node whose shape `infer_shape` computes; reports a failure at `at`.
    fn add_inferred(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<NodeId>,
        at: &dyn ToTokens,
        layer: Option<&str>,
    ) -> Value {
        let shapes: Vec<&Shape> = inputs.iter().map(|&i| &self.graph.node(i).shape).collect();
        match infer_shape(&op, &shapes) {
            Ok(shape) if elements_per_sample(&shape).is_none() => {
                let problem = format!("`{name}` would have shape {shape}, more than 2^56 elements per sample");
                self.error(FrontendError::Syntax(problem), at);
                None
            }
            Ok(shape) => {
                let unique = self.graph.fresh_name(name);
                let id = self.graph.add(unique, op, shape, inputs, Stage::Forward);
                if let Some(layer) = layer {
                    self.layer_of.insert(id, layer.to_string());
                }
                Some(id)
            }
            Err(problem) => {
                let origin = inputs.first().map(|&x| self.describe(x));
                let who = layer.map(str::to_string).unwrap_or_else(|| name.to_string());
                self.error(FrontendError::Shape { layer: who, problem, origin }, at);
                None
            }
        }
    }

    /// Where a value came from, for error messages: `conv2 -> pool gives [N, 16, 5, 5]`.
    fn describe(&self, id: NodeId) -> String {
        let producer = self.skip_transparent(id);
        let node = self.graph.node(producer);
        let name = self.display_name(producer);
        if node.op == Op::Input {
            return format!("input `{name}` is {}", node.shape);
        }
        match node.inputs.first() {
            Some(&prev) => {
                let prev = self.skip_transparent(prev);
                format!("{} -> {name} gives {}", self.display_name(prev), node.shape)
            }
            None => format!("{name} gives {}", node.shape),
        }
    }

    /// Steps back over ops that do not change what a value "is" (activations, reshapes).
    fn skip_transparent(&self, mut id: NodeId) -> NodeId {
        loop {
            let node = self.graph.node(id);
            match node.op {
                Op::Activate(_) | Op::Reshape if !self.layer_of.contains_key(&id) => id = node.inputs[0],
                _ => return id,
            }
        }
    }

    fn display_name(&self, id: NodeId) -> String {
        self.layer_of.get(&id).cloned().unwrap_or_else(|| self.graph.node(id).name.clone())
    }

    fn finish(mut self) -> Result<Lowered, Diagnostics> {
        for layer in &self.layers {
            if !layer.used && layer.kind.is_some() {
                self.warnings.push(Diagnostic::warning(
                    FrontendError::UnusedLayer { layer: layer.decl.name.to_string() },
                    &layer.decl.name,
                ));
            }
        }
        if self.errors.is_empty() {
            Ok(Lowered { graph: self.graph, warnings: Diagnostics(self.warnings) })
        } else {
            self.errors.extend(self.warnings);
            Err(Diagnostics(self.errors))
        }
    }
}
