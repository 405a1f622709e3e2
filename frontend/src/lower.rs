//! Lowering a parsed declaration to the graph IR, inferring every shape on
//! the way and collecting every error (not only the first).

use super::ast::{LayerDecl, Module};
use super::diagnostic::{Diagnostic, Diagnostics, FrontendError};
use crate::graph::{Graph, NodeId, Stage};
use crate::infer::{ShapeError, infer_shape, reshape_shape};
use crate::ops::{Activation, BinaryOp, Conv2d, Op, PaddingMode, Pool2d, Resize, ResizeMode};
use crate::shape::{Dim, Shape};
use quote::ToTokens;
use std::collections::HashMap;
use syn::{BinOp, Expr, Lit, Pat, Stmt, UnOp};

/// The layer constructors the language accepts.
pub const LAYER_TYPES: &[&str] = &[
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "Linear",
    "Upsample",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "LeakyReLU",
    "ELU",
    "Flatten",
];

/// The functional ops callable in `forward`.
pub const FUNCTIONAL_OPS: &[&str] =
    &["relu", "sigmoid", "tanh", "leaky_relu", "elu", "step", "cat", "interpolate", "flatten", "reshape"];

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

/// What a declared layer does when called.
#[derive(Clone, Debug)]
enum LayerKind {
    Conv(Conv2d),
    Linear,
    MaxPool(Pool2d),
    AvgPool(Pool2d),
    Upsample(Resample),
    Activation(Activation),
    Flatten(usize),
}

/// Resampling options before the input size is known.
#[derive(Clone, Copy, Debug)]
struct Resample {
    size: Option<[usize; 2]>,
    scale: Option<[f64; 2]>,
    mode: ResizeMode,
    align_corners: bool,
}

struct Layer<'m> {
    decl: &'m LayerDecl,
    /// `None` when the declaration itself was rejected (calls then stay silent).
    kind: Option<LayerKind>,
    /// Weight and bias nodes.
    params: Vec<NodeId>,
    used: bool,
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

/// The tokens of an argument list, for arity errors.
struct ArgsAt<'a>(&'a dyn ToTokens);

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

    // ----- declarations -----

    fn declare_layers(&mut self) {
        for decl in &self.module.layers {
            let name = decl.name.to_string();
            if self.layer_by_name.contains_key(&name) {
                self.error(FrontendError::DuplicateName { name }, &decl.name);
                continue;
            }
            let kind = self.layer_kind(decl);
            let params = match &kind {
                Some(LayerKind::Conv(_)) | Some(LayerKind::Linear) => self.layer_params(decl),
                _ => Vec::new(),
            };
            self.layer_by_name.insert(name, self.layers.len());
            self.layers.push(Layer { decl, kind, params, used: false });
        }
    }

    /// Weight and bias for a Conv2d or Linear declaration (already validated).
    fn layer_params(&mut self, decl: &LayerDecl) -> Vec<NodeId> {
        let name = decl.name.to_string();
        let ctor = decl.ctor.to_string();
        let Some(args) = self.bind(&ctor, decl, &layer_signature(&ctor).unwrap_or_default()) else {
            return Vec::new();
        };
        let int = |k: &str| args.get(k).and_then(|e| eval_usize(e).ok()).unwrap_or(0);
        let bias = args.get("bias").map(|e| eval_bool(e).unwrap_or(true)).unwrap_or(true);
        let (weight_shape, out, fan_in) = if ctor == "Conv2d" {
            let k = args.get("kernel_size").and_then(|e| eval_pair(e).ok()).unwrap_or([1, 1]);
            let (i, o) = (int("in_channels"), int("out_channels"));
            (vec![o, i, k[0], k[1]], o, i.saturating_mul(k[0]).saturating_mul(k[1]))
        } else {
            let (i, o) = (int("in_features"), int("out_features"));
            (vec![o, i], o, i)
        };
        if elements_per_sample(&Shape::fixed(&weight_shape)).is_none() {
            let problem = format!("`{name}.weight` of shape {weight_shape:?} would hold more than 2^56 elements");
            self.error(FrontendError::Syntax(problem), &decl.call);
            return Vec::new();
        }
        let mut params = vec![self.graph.add(
            format!("{name}.weight"),
            Op::Param { fan_in },
            Shape::fixed(&weight_shape),
            vec![],
            Stage::Forward,
        )];
        if bias {
            params.push(self.graph.add(
                format!("{name}.bias"),
                Op::Param { fan_in },
                Shape::fixed(&[out]),
                vec![],
                Stage::Forward,
            ));
        }
        self.graph.params.extend(&params);
        params
    }

    /// Validates a layer declaration; errors are recorded, `None` returned.
    fn layer_kind(&mut self, decl: &LayerDecl) -> Option<LayerKind> {
        let ctor = decl.ctor.to_string();
        let layer = decl.name.to_string();
        let Some(signature) = layer_signature(&ctor) else {
            self.error(FrontendError::UnknownLayerType { layer, ctor, expected: LAYER_TYPES.join(", ") }, &decl.ctor);
            return None;
        };
        let args = self.bind(&ctor, decl, &signature)?;
        let mut ok = true;
        let mut get = |b: &mut Self, arg: &str, f: ArgParser| -> Option<Value2> {
            let e = args.get(arg)?;
            match f(e) {
                Ok(v) => Some(v),
                Err(detail) => {
                    b.error(FrontendError::BadValue { callee: ctor.clone(), arg: arg.into(), detail }, *e);
                    ok = false;
                    None
                }
            }
        };
        let positive = |e: &Expr| -> Result<Value2, String> {
            match eval_usize(e)? {
                0 => Err("must be at least 1, got 0".into()),
                v => Ok(Value2::Int(v)),
            }
        };
        let pair = |e: &Expr| eval_pair(e).map(Value2::Pair);
        let pair_or = |b: &mut Self,
                       get: &mut dyn FnMut(&mut Self, &str, ArgParser) -> Option<Value2>,
                       arg: &str,
                       default: [usize; 2]| {
            match get(b, arg, &pair) {
                Some(Value2::Pair(p)) => p,
                _ => default,
            }
        };
        let kind = match ctor.as_str() {
            "Conv2d" => {
                get(self, "in_channels", &positive);
                get(self, "out_channels", &positive);
                let kernel = pair_or(self, &mut get, "kernel_size", [1, 1]);
                let stride = pair_or(self, &mut get, "stride", [1, 1]);
                let padding = pair_or(self, &mut get, "padding", [0, 0]);
                let dilation = pair_or(self, &mut get, "dilation", [1, 1]);
                if let Some(Value2::Int(g)) = get(self, "groups", &positive)
                    && g != 1
                {
                    self.error(
                        FrontendError::BadValue {
                            callee: ctor.clone(),
                            arg: "groups".into(),
                            detail: format!("must be 1 (grouped convolution is not supported), got {g}"),
                        },
                        args["groups"],
                    );
                    return None;
                }
                get(self, "bias", &|e| eval_bool(e).map(|_| Value2::Bool));
                let padding_mode = match get(self, "padding_mode", &|e| match eval_word(e)?.as_str() {
                    "zeros" => Ok(Value2::Mode(PaddingMode::Zeros)),
                    "replicate" => Ok(Value2::Mode(PaddingMode::Replicate)),
                    other => Err(format!("must be `zeros` or `replicate`, got `{other}`")),
                }) {
                    Some(Value2::Mode(m)) => m,
                    _ => PaddingMode::Zeros,
                };
                LayerKind::Conv(Conv2d { kernel, stride, padding, dilation, padding_mode })
            }
            "MaxPool2d" | "AvgPool2d" => {
                let kernel = pair_or(self, &mut get, "kernel_size", [1, 1]);
                let stride = pair_or(self, &mut get, "stride", kernel);
                let padding = pair_or(self, &mut get, "padding", [0, 0]);
                let dilation = pair_or(self, &mut get, "dilation", [1, 1]);
                let pool = Pool2d { kernel, stride, padding, dilation };
                if ctor == "MaxPool2d" { LayerKind::MaxPool(pool) } else { LayerKind::AvgPool(pool) }
            }
            "Linear" => {
                get(self, "in_features", &positive);
                get(self, "out_features", &positive);
                get(self, "bias", &|e| eval_bool(e).map(|_| Value2::Bool));
                LayerKind::Linear
            }
            "Upsample" => {
                let args_ref = &args;
                match self.resample_options(&ctor, args_ref, &decl.call) {
                    Some(r) => LayerKind::Upsample(r),
                    None => return None,
                }
            }
            "ReLU" => LayerKind::Activation(Activation::Relu),
            "Sigmoid" => LayerKind::Activation(Activation::Sigmoid),
            "Tanh" => LayerKind::Activation(Activation::Tanh),
            "LeakyReLU" => {
                let a = get(self, "negative_slope", &|e| eval_f64(e).map(Value2::Float));
                LayerKind::Activation(Activation::LeakyRelu(float_or(a, 0.01)))
            }
            "ELU" => {
                let a = get(self, "alpha", &|e| eval_f64(e).map(Value2::Float));
                LayerKind::Activation(Activation::Elu(float_or(a, 1.0)))
            }
            "Flatten" => match get(self, "start_dim", &|e| eval_usize(e).map(Value2::Int)) {
                Some(Value2::Int(d)) => LayerKind::Flatten(d),
                _ => LayerKind::Flatten(1),
            },
            _ => unreachable!("layer_signature accepted {ctor}"),
        };
        if !ok {
            return None;
        }
        // Zero strides, dilations and kernels are wrong whatever the input.
        let windows = match &kind {
            LayerKind::Conv(c) => Some((c.kernel, c.stride, c.dilation)),
            LayerKind::MaxPool(p) | LayerKind::AvgPool(p) => Some((p.kernel, p.stride, p.dilation)),
            _ => None,
        };
        if let Some((kernel, stride, dilation)) = windows {
            for (what, v) in [("kernel_size", kernel), ("stride", stride), ("dilation", dilation)] {
                if v.contains(&0) {
                    let at: &dyn ToTokens = args.get(what).map(|e| *e as &dyn ToTokens).unwrap_or(&decl.call);
                    self.error(
                        FrontendError::Shape { layer: layer.clone(), problem: ShapeError::Zero { what }, origin: None },
                        at,
                    );
                    return None;
                }
            }
        }
        Some(kind)
    }

    fn resample_options(
        &mut self,
        callee: &str,
        args: &HashMap<&'static str, &Expr>,
        at: &dyn ToTokens,
    ) -> Option<Resample> {
        let errors_before = self.errors.len();
        let bad = |b: &mut Self, arg: &str, detail: String| {
            b.error(
                FrontendError::BadValue { callee: callee.into(), arg: arg.into(), detail },
                args.get(arg).map(|e| *e as &dyn ToTokens).unwrap_or(at),
            );
        };
        let size = match args.get("size").map(|e| eval_pair(e)) {
            Some(Ok(p)) => Some(p),
            Some(Err(d)) => {
                bad(self, "size", d);
                None
            }
            None => None,
        };
        let scale = match args.get("scale_factor").map(|e| eval_f64_pair(e)) {
            Some(Ok(p)) if p.iter().all(|&s| s > 0.0) => Some(p),
            Some(Ok(_)) => {
                bad(self, "scale_factor", "must be positive".into());
                None
            }
            Some(Err(d)) => {
                bad(self, "scale_factor", d);
                None
            }
            None => None,
        };
        let mode = match args.get("mode").map(|e| eval_word(e)) {
            None => ResizeMode::Nearest,
            Some(Ok(w)) if w == "nearest" => ResizeMode::Nearest,
            Some(Ok(w)) if w == "bilinear" => ResizeMode::Bilinear,
            Some(Ok(w)) => {
                bad(self, "mode", format!("must be `nearest` or `bilinear`, got `{w}`"));
                ResizeMode::Nearest
            }
            Some(Err(d)) => {
                bad(self, "mode", d);
                ResizeMode::Nearest
            }
        };
        let align_corners = match args.get("align_corners").map(|e| eval_bool(e)) {
            None => false,
            Some(Ok(v)) => {
                if mode == ResizeMode::Nearest {
                    bad(self, "align_corners", "can only be set with mode = bilinear".into());
                }
                v
            }
            Some(Err(d)) => {
                bad(self, "align_corners", d);
                false
            }
        };
        if self.errors.len() == errors_before && size.is_some() == scale.is_some() {
            bad(self, "size", "give exactly one of `size` and `scale_factor`".into());
        }
        (self.errors.len() == errors_before).then_some(Resample { size, scale, mode, align_corners })
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

    fn call_layer(&mut self, index: usize, call: &syn::ExprCall) -> Value {
        let layer = self.layers[index].decl;
        let name = layer.name.to_string();
        self.layers[index].used = true;
        if call.args.len() != 1 {
            self.error(
                FrontendError::BadArguments {
                    callee: name,
                    detail: format!("a layer takes one input, got {}", call.args.len()),
                },
                &call.args,
            );
            return None;
        }
        let x = self.eval(&call.args[0], None)?;
        let kind = self.layers[index].kind.clone()?;
        let params = self.layers[index].params.clone();
        let mut inputs = vec![x];
        inputs.extend(params);
        let op = match kind {
            LayerKind::Conv(c) => Op::Conv2d(c),
            LayerKind::Linear => Op::Linear,
            LayerKind::MaxPool(p) => Op::MaxPool2d(p),
            LayerKind::AvgPool(p) => Op::AvgPool2d(p),
            LayerKind::Activation(a) => Op::Activate(a),
            LayerKind::Upsample(r) => return self.resample(&name, x, r, &layer.call, Some(&name)),
            LayerKind::Flatten(d) => return self.flatten(&name, x, d, &layer.call),
        };
        // Layer-configuration mismatches point at the declaration, where the fix goes.
        self.add_inferred(&name, op, inputs, &layer.call, Some(&name))
    }

    fn resample(&mut self, name: &str, x: NodeId, r: Resample, at: &dyn ToTokens, layer: Option<&str>) -> Value {
        let shape = self.graph.node(x).shape.clone();
        let (h, w) = match (
            shape.rank(),
            shape.0.get(2).and_then(|d| d.as_fixed()),
            shape.0.get(3).and_then(|d| d.as_fixed()),
        ) {
            (4, Some(h), Some(w)) => (h, w),
            _ => {
                let origin = Some(self.describe(x));
                let problem =
                    ShapeError::Rank { expected: "a 4-D [N, C, H, W] input with fixed H and W".into(), got: shape };
                self.error(FrontendError::Shape { layer: name.into(), problem, origin }, at);
                return None;
            }
        };
        let (size, inverse_scale) = match (r.size, r.scale) {
            (Some(size), _) => (size, None),
            (None, Some(s)) => (
                [(h as f64 * s[0]).floor() as usize, (w as f64 * s[1]).floor() as usize],
                Some([(1.0 / s[0]) as f32, (1.0 / s[1]) as f32]),
            ),
            (None, None) => return None,
        };
        let op = Op::Resize(Resize { size, mode: r.mode, align_corners: r.align_corners, inverse_scale });
        self.add_inferred(name, op, vec![x], at, layer)
    }

    fn flatten(&mut self, name: &str, x: NodeId, start: usize, at: &dyn ToTokens) -> Value {
        let shape = self.graph.node(x).shape.clone();
        if start >= shape.rank().max(1) {
            let problem = ShapeError::Axis { axis: start, shape: shape.clone(), rank: shape.rank() };
            self.error(FrontendError::Shape { layer: name.into(), problem, origin: None }, at);
            return None;
        }
        let mut target: Vec<Option<Dim>> = shape.0[..start].iter().copied().map(Some).collect();
        target.push(None);
        self.reshape(name, x, &target, at)
    }

    fn reshape(&mut self, name: &str, x: NodeId, target: &[Option<Dim>], at: &dyn ToTokens) -> Value {
        match reshape_shape(&self.graph.node(x).shape, target) {
            Ok(shape) => {
                let unique = self.graph.fresh_name(name);
                Some(self.graph.add(unique, Op::Reshape, shape, vec![x], Stage::Forward))
            }
            Err(problem) => {
                let origin = Some(self.describe(x));
                self.error(FrontendError::Shape { layer: name.into(), problem, origin }, at);
                None
            }
        }
    }

    fn call_op(&mut self, op: &str, args: &[&Expr], at: &dyn ToTokens, bind: Option<&str>) -> Value {
        let signature: &[&'static str] = match op {
            "relu" | "sigmoid" | "tanh" | "step" => &["input"],
            "leaky_relu" => &["input", "negative_slope"],
            "elu" => &["input", "alpha"],
            "cat" => &["tensors", "dim"],
            "interpolate" => &["input", "size", "scale_factor", "mode", "align_corners"],
            "flatten" => &["input", "start_dim"],
            "reshape" => &["input", "shape"],
            _ => unreachable!("call_op is only called with FUNCTIONAL_OPS"),
        };
        let required: usize = match op {
            "cat" => 1,
            "reshape" => 2,
            _ => 1,
        };
        let positional = if op == "interpolate" { 2 } else { signature.len() };
        let bound = self.bind_args(op, args.iter().copied(), signature, positional, required, &ArgsAt(at))?;
        let name = bind.unwrap_or(op).to_string();
        if op == "cat" {
            let Expr::Array(list) = bound["tensors"] else {
                self.error(
                    FrontendError::BadValue {
                        callee: "cat".into(),
                        arg: "tensors".into(),
                        detail: "must be a list `[a, b, ...]`".into(),
                    },
                    bound["tensors"],
                );
                return None;
            };
            let values: Vec<Value> = list.elems.iter().map(|e| self.eval(e, None)).collect();
            let dim = match bound.get("dim").map(|e| eval_usize(e)) {
                None => 0,
                Some(Ok(d)) => d,
                Some(Err(detail)) => {
                    self.error(
                        FrontendError::BadValue { callee: "cat".into(), arg: "dim".into(), detail },
                        bound["dim"],
                    );
                    return None;
                }
            };
            let inputs: Option<Vec<NodeId>> = values.into_iter().collect();
            let inputs = inputs?;
            if inputs.is_empty() {
                self.error(
                    FrontendError::BadValue {
                        callee: "cat".into(),
                        arg: "tensors".into(),
                        detail: "must not be empty".into(),
                    },
                    list,
                );
                return None;
            }
            return self.add_inferred(&name, Op::Concat { axis: dim }, inputs, at, None);
        }
        let x = self.eval(bound["input"], None)?;
        match op {
            "relu" | "sigmoid" | "tanh" | "step" | "leaky_relu" | "elu" => {
                let float = |b: &mut Self, arg: &str, default: f64| -> Option<f32> {
                    match bound.get(arg).map(|e| eval_f64(e)) {
                        None => Some(default as f32),
                        Some(Ok(v)) => Some(v as f32),
                        Some(Err(detail)) => {
                            b.error(FrontendError::BadValue { callee: op.into(), arg: arg.into(), detail }, bound[arg]);
                            None
                        }
                    }
                };
                let act = match op {
                    "relu" => Activation::Relu,
                    "sigmoid" => Activation::Sigmoid,
                    "tanh" => Activation::Tanh,
                    "step" => Activation::Step,
                    "leaky_relu" => Activation::LeakyRelu(float(self, "negative_slope", 0.01)?),
                    _ => Activation::Elu(float(self, "alpha", 1.0)?),
                };
                self.add_inferred(&name, Op::Activate(act), vec![x], at, None)
            }
            "interpolate" => {
                let r = self.resample_options("interpolate", &bound, at)?;
                self.resample(&name, x, r, at, None)
            }
            "flatten" => {
                let start = match bound.get("start_dim").map(|e| eval_usize(e)) {
                    None => 1,
                    Some(Ok(d)) => d,
                    Some(Err(detail)) => {
                        self.error(
                            FrontendError::BadValue { callee: op.into(), arg: "start_dim".into(), detail },
                            bound["start_dim"],
                        );
                        return None;
                    }
                };
                self.flatten(&name, x, start, at)
            }
            _ => {
                let Expr::Array(dims) = bound["shape"] else {
                    self.error(
                        FrontendError::BadValue {
                            callee: op.into(),
                            arg: "shape".into(),
                            detail: "must be a list such as `[N, 400]`".into(),
                        },
                        bound["shape"],
                    );
                    return None;
                };
                let target = self.eval_dims(dims, true)?;
                self.reshape(&name, x, &target, at)
            }
        }
    }

    /// Matches a layer declaration's arguments against its signature.
    fn bind<'e>(
        &mut self,
        callee: &str,
        decl: &'e LayerDecl,
        signature: &LayerSignature,
    ) -> Option<HashMap<&'static str, &'e Expr>> {
        self.bind_args(
            callee,
            decl.args.iter(),
            signature.names,
            signature.positional,
            signature.required,
            &ArgsAt(&decl.call),
        )
    }

    /// Matches positional and `keyword = value` arguments against `names`.
    fn bind_args<'e>(
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

/// Evaluates one argument expression, or says what was expected.
type ArgParser<'a> = &'a dyn Fn(&Expr) -> Result<Value2, String>;

/// Parsed argument values of a layer declaration.
enum Value2 {
    Int(usize),
    Pair([usize; 2]),
    Float(f64),
    Bool,
    Mode(PaddingMode),
}

fn float_or(v: Option<Value2>, default: f64) -> f32 {
    match v {
        Some(Value2::Float(f)) => f as f32,
        _ => default as f32,
    }
}

/// A constructor's argument names, how many may be positional, how many are required.
#[derive(Default)]
struct LayerSignature {
    names: &'static [&'static str],
    positional: usize,
    required: usize,
}

fn layer_signature(ctor: &str) -> Option<LayerSignature> {
    let (names, positional, required): (&'static [&'static str], usize, usize) = match ctor {
        "Conv2d" => (
            &[
                "in_channels",
                "out_channels",
                "kernel_size",
                "stride",
                "padding",
                "dilation",
                "groups",
                "bias",
                "padding_mode",
            ],
            9,
            3,
        ),
        "MaxPool2d" => (&["kernel_size", "stride", "padding", "dilation"], 4, 1),
        "AvgPool2d" => (&["kernel_size", "stride", "padding"], 3, 1),
        "Linear" => (&["in_features", "out_features", "bias"], 3, 2),
        "Upsample" => (&["size", "scale_factor", "mode", "align_corners"], 4, 0),
        "ReLU" | "Sigmoid" | "Tanh" => (&[], 0, 0),
        "LeakyReLU" => (&["negative_slope"], 1, 0),
        "ELU" => (&["alpha"], 1, 0),
        "Flatten" => (&["start_dim"], 1, 0),
        _ => return None,
    };
    Some(LayerSignature { names, positional, required })
}

// ----- constant expressions -----

/// Evaluates an integer expression such as `16 * 5 * 5`.
pub fn eval_usize(e: &Expr) -> Result<usize, String> {
    let v = eval_i64(e)?;
    let v = usize::try_from(v).map_err(|_| format!("must not be negative, got {v}"))?;
    check_length(v)
}

/// The longest axis a declaration may give (kernels index with 32-bit tables).
pub const MAX_LENGTH: usize = i32::MAX as usize;
/// The most elements one value may hold per sample: far beyond any machine,
/// but small enough that byte counts of whole batches stay exact in `u64`.
pub const MAX_ELEMENTS: u64 = 1 << 56;

fn check_length(v: usize) -> Result<usize, String> {
    if v > MAX_LENGTH { Err(format!("must be at most {MAX_LENGTH} (2^31 - 1), got {v}")) } else { Ok(v) }
}

/// Elements per sample of `shape` (the batch axis counted once), or `None`
/// past [`MAX_ELEMENTS`].
fn elements_per_sample(shape: &Shape) -> Option<u64> {
    shape.0.iter().try_fold(1u64, |n, d| n.checked_mul(d.factor as u64).filter(|&n| n <= MAX_ELEMENTS))
}

fn eval_i64(e: &Expr) -> Result<i64, String> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => i.base10_parse::<i64>().map_err(|err| err.to_string()),
            _ => Err(format!("expected an integer, got `{}`", e.to_token_stream())),
        },
        Expr::Paren(p) => eval_i64(&p.expr),
        Expr::Group(g) => eval_i64(&g.expr),
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => Ok(-eval_i64(&u.expr)?),
        Expr::Binary(b) => {
            let (l, r) = (eval_i64(&b.left)?, eval_i64(&b.right)?);
            let v = match b.op {
                BinOp::Add(_) => l.checked_add(r),
                BinOp::Sub(_) => l.checked_sub(r),
                BinOp::Mul(_) => l.checked_mul(r),
                BinOp::Div(_) if r != 0 => Some(l / r),
                BinOp::Div(_) => return Err("division by zero".into()),
                _ => return Err("only + - * / are allowed in integer expressions".into()),
            };
            v.ok_or_else(|| "integer overflow".into())
        }
        _ => Err(format!("expected an integer, got `{}`", e.to_token_stream())),
    }
}

/// An int or an `(h, w)` pair, as PyTorch accepts for sizes.
fn eval_pair(e: &Expr) -> Result<[usize; 2], String> {
    match e {
        Expr::Tuple(t) if t.elems.len() == 2 => Ok([eval_usize(&t.elems[0])?, eval_usize(&t.elems[1])?]),
        Expr::Array(t) if t.elems.len() == 2 => Ok([eval_usize(&t.elems[0])?, eval_usize(&t.elems[1])?]),
        Expr::Tuple(_) | Expr::Array(_) => Err("expected an integer or an `(h, w)` pair".into()),
        e => {
            let v = eval_usize(e)?;
            Ok([v, v])
        }
    }
}

fn eval_f64(e: &Expr) -> Result<f64, String> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Float(f) => f.base10_parse::<f64>().map_err(|err| err.to_string()),
            Lit::Int(i) => i.base10_parse::<f64>().map_err(|err| err.to_string()),
            _ => Err(format!("expected a number, got `{}`", e.to_token_stream())),
        },
        Expr::Paren(p) => eval_f64(&p.expr),
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => Ok(-eval_f64(&u.expr)?),
        _ => Err(format!("expected a number, got `{}`", e.to_token_stream())),
    }
}

fn eval_f64_pair(e: &Expr) -> Result<[f64; 2], String> {
    match e {
        Expr::Tuple(t) if t.elems.len() == 2 => Ok([eval_f64(&t.elems[0])?, eval_f64(&t.elems[1])?]),
        e => {
            let v = eval_f64(e)?;
            Ok([v, v])
        }
    }
}

fn eval_bool(e: &Expr) -> Result<bool, String> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Bool(b) => Ok(b.value),
            _ => Err(format!("expected `true` or `false`, got `{}`", e.to_token_stream())),
        },
        Expr::Path(p) if p.path.is_ident("True") => Ok(true),
        Expr::Path(p) if p.path.is_ident("False") => Ok(false),
        _ => Err(format!("expected `true` or `false`, got `{}`", e.to_token_stream())),
    }
}

/// A bare word or string literal: `replicate`, `"bilinear"`.
fn eval_word(e: &Expr) -> Result<String, String> {
    match e {
        Expr::Path(p) => p.path.get_ident().map(|i| i.to_string()).ok_or_else(|| "expected a word".into()),
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => Ok(s.value()),
            _ => Err(format!("expected a word, got `{}`", e.to_token_stream())),
        },
        _ => Err(format!("expected a word, got `{}`", e.to_token_stream())),
    }
}

/// A shape entry: `N`, an integer expression, `N * k`, or `-1` (returned as `None`).
fn eval_dim(e: &Expr) -> Result<Option<Dim>, String> {
    if contains_batch(e) {
        return eval_batched(e).map(Some);
    }
    match eval_i64(e)? {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(Dim::fixed(check_length(v as usize)?))),
        v => Err(format!("a length must not be negative, got {v}")),
    }
}

fn contains_batch(e: &Expr) -> bool {
    match e {
        Expr::Path(p) => p.path.is_ident("N"),
        Expr::Paren(p) => contains_batch(&p.expr),
        Expr::Binary(b) => contains_batch(&b.left) || contains_batch(&b.right),
        _ => false,
    }
}

fn eval_batched(e: &Expr) -> Result<Dim, String> {
    match e {
        Expr::Path(p) if p.path.is_ident("N") => Ok(Dim::batch()),
        Expr::Paren(p) => eval_batched(&p.expr),
        Expr::Binary(b) if matches!(b.op, BinOp::Mul(_)) => {
            let (l, r) = (&*b.left, &*b.right);
            match (contains_batch(l), contains_batch(r)) {
                (true, false) => Ok(Dim { factor: eval_batched(l)?.factor * eval_usize(r)?, batched: true }),
                (false, true) => Ok(Dim { factor: eval_usize(l)? * eval_batched(r)?.factor, batched: true }),
                _ => Err("N may appear once per axis".into()),
            }
        }
        _ => Err("a batched length must be `N` or `N * k`".into()),
    }
}
