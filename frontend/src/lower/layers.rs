//! The layer table: every constructor a declaration may name (`Conv2d(3, 6,
//! 5)`), each with its PyTorch-style argument signature, the validation of
//! its arguments (which yields what the layer does when called) and, for
//! layers with parameters, its weight shapes. [`LAYER_TYPES`] is derived from
//! the table, so a constructor is added in one place. Also the declaration
//! of layers and the op a layer call builds.

use super::args::ArgsAt;
use super::consts::{elements_per_sample, eval_bool, eval_f64, eval_pair, eval_usize, eval_word};
use super::ops::{Resample, gelu_form};
use super::{Builder, Value};
use crate::ast::LayerDecl;
use crate::diagnostic::FrontendError;
use crate::graph::{NodeId, Stage};
use crate::infer::ShapeError;
use crate::ops::{Activation, BatchNorm, Conv2d, GeluForm, Init, Op, PaddingMode, Pool2d};
use crate::shape::Shape;
use quote::ToTokens;
use std::collections::HashMap;
use syn::Expr;

/// The layer constructors the language accepts.
pub const LAYER_TYPES: &[&str] = &ctor_names::<{ LAYERS.len() }>(LAYERS);

/// One layer constructor.
struct LayerType {
    /// The constructor's name, as written in a declaration.
    ctor: &'static str,
    /// Its argument names, how many may be positional, how many are required.
    signature: LayerSignature,
    /// Parses and checks the bound arguments, reporting every bad value: what
    /// the layer does when called, or `None` when the declaration is rejected.
    validate: fn(&mut Builder, &mut LayerArgs) -> Option<LayerKind>,
    /// For a layer with parameters, their shapes from arguments that validated.
    weights: Option<fn(&Bound) -> Weights>,
}

/// A constructor's argument names, how many may be positional, how many are required.
struct LayerSignature {
    names: &'static [&'static str],
    positional: usize,
    required: usize,
}

/// A declaration's arguments by parameter name, as `bind` returns them.
type Bound<'e> = HashMap<&'static str, &'e Expr>;

/// A layer's parameters: `(weight shape, bias length, fan-in)`.
type Weights = (Vec<usize>, usize, usize);

/// Every layer constructor, in the order error messages list them.
const LAYERS: &[LayerType] = &[
    LayerType {
        ctor: "Conv2d",
        signature: LayerSignature {
            names: &[
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
            positional: 9,
            required: 3,
        },
        validate: conv2d,
        weights: Some(conv2d_weights),
    },
    LayerType {
        ctor: "MaxPool2d",
        signature: LayerSignature {
            names: &["kernel_size", "stride", "padding", "dilation"],
            positional: 4,
            required: 1,
        },
        validate: |b, args| Some(LayerKind::MaxPool(pool_window(b, args))),
        weights: None,
    },
    LayerType {
        ctor: "AvgPool2d",
        signature: LayerSignature { names: &["kernel_size", "stride", "padding"], positional: 3, required: 1 },
        validate: |b, args| Some(LayerKind::AvgPool(pool_window(b, args))),
        weights: None,
    },
    LayerType {
        ctor: "AdaptiveAvgPool2d",
        signature: LayerSignature { names: &["output_size"], positional: 1, required: 1 },
        validate: |b, args| args.get(b, "output_size", eval_pair).map(LayerKind::AdaptiveAvgPool),
        weights: None,
    },
    LayerType {
        ctor: "Linear",
        signature: LayerSignature { names: &["in_features", "out_features", "bias"], positional: 3, required: 2 },
        validate: linear,
        weights: Some(linear_weights),
    },
    LayerType { ctor: "BatchNorm1d", signature: BATCH_NORM, validate: |b, args| batch_norm(b, args, 1), weights: None },
    LayerType { ctor: "BatchNorm2d", signature: BATCH_NORM, validate: |b, args| batch_norm(b, args, 2), weights: None },
    LayerType {
        ctor: "Upsample",
        signature: LayerSignature {
            names: &["size", "scale_factor", "mode", "align_corners"],
            positional: 4,
            required: 0,
        },
        validate: |b, args| b.resample_options(args.ctor, &args.bound, &args.decl.call).map(LayerKind::Upsample),
        weights: None,
    },
    LayerType {
        ctor: "ReLU",
        signature: LayerSignature { names: &[], positional: 0, required: 0 },
        validate: |_, _| Some(LayerKind::Activation(Activation::Relu)),
        weights: None,
    },
    LayerType {
        ctor: "Sigmoid",
        signature: LayerSignature { names: &[], positional: 0, required: 0 },
        validate: |_, _| Some(LayerKind::Activation(Activation::Sigmoid)),
        weights: None,
    },
    LayerType {
        ctor: "Tanh",
        signature: LayerSignature { names: &[], positional: 0, required: 0 },
        validate: |_, _| Some(LayerKind::Activation(Activation::Tanh)),
        weights: None,
    },
    LayerType {
        ctor: "GELU",
        signature: LayerSignature { names: &["approximate"], positional: 1, required: 0 },
        validate: |b, args| {
            let form = args.get(b, "approximate", gelu_form).unwrap_or(GeluForm::Exact);
            Some(LayerKind::Activation(Activation::Gelu(form)))
        },
        weights: None,
    },
    LayerType {
        ctor: "SiLU",
        signature: LayerSignature { names: &[], positional: 0, required: 0 },
        validate: |_, _| Some(LayerKind::Activation(Activation::Silu)),
        weights: None,
    },
    LayerType {
        ctor: "LeakyReLU",
        signature: LayerSignature { names: &["negative_slope"], positional: 1, required: 0 },
        validate: |b, args| {
            let slope = args.get(b, "negative_slope", eval_f64).unwrap_or(0.01);
            Some(LayerKind::Activation(Activation::LeakyRelu(slope as f32)))
        },
        weights: None,
    },
    LayerType {
        ctor: "ELU",
        signature: LayerSignature { names: &["alpha"], positional: 1, required: 0 },
        validate: |b, args| {
            let alpha = args.get(b, "alpha", eval_f64).unwrap_or(1.0);
            Some(LayerKind::Activation(Activation::Elu(alpha as f32)))
        },
        weights: None,
    },
    LayerType {
        ctor: "Dropout",
        signature: LayerSignature { names: &["p"], positional: 1, required: 0 },
        validate: |b, args| {
            let p = args.get(b, "p", probability).unwrap_or(0.5);
            Some(LayerKind::Dropout(p))
        },
        weights: None,
    },
    LayerType {
        ctor: "Flatten",
        signature: LayerSignature { names: &["start_dim"], positional: 1, required: 0 },
        validate: |b, args| Some(LayerKind::Flatten(args.get(b, "start_dim", eval_usize).unwrap_or(1))),
        weights: None,
    },
];

/// The constructor names of `layers`, in order.
const fn ctor_names<const N: usize>(layers: &[LayerType]) -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = layers[i].ctor;
        i += 1;
    }
    names
}

fn layer_type(ctor: &str) -> Option<&'static LayerType> {
    LAYERS.iter().find(|t| t.ctor == ctor)
}

fn conv2d(b: &mut Builder, args: &mut LayerArgs) -> Option<LayerKind> {
    args.get(b, "in_channels", positive);
    args.get(b, "out_channels", positive);
    let kernel = args.pair_or(b, "kernel_size", [1, 1]);
    let stride = args.pair_or(b, "stride", [1, 1]);
    let padding = args.pair_or(b, "padding", [0, 0]);
    let dilation = args.pair_or(b, "dilation", [1, 1]);
    if let Some(g) = args.get(b, "groups", positive)
        && g != 1
    {
        b.error(
            FrontendError::BadValue {
                callee: args.ctor.into(),
                arg: "groups".into(),
                detail: format!("must be 1 (grouped convolution is not supported), got {g}"),
            },
            args.bound["groups"],
        );
        return None;
    }
    args.get(b, "bias", eval_bool);
    let padding_mode = args
        .get(b, "padding_mode", |e| match eval_word(e)?.as_str() {
            "zeros" => Ok(PaddingMode::Zeros),
            "replicate" => Ok(PaddingMode::Replicate),
            other => Err(format!("must be `zeros` or `replicate`, got `{other}`")),
        })
        .unwrap_or(PaddingMode::Zeros);
    Some(LayerKind::Conv(Conv2d { kernel, stride, padding, dilation, padding_mode }))
}

fn conv2d_weights(args: &Bound) -> Weights {
    let k = args.get("kernel_size").and_then(|e| eval_pair(e).ok()).unwrap_or([1, 1]);
    let (i, o) = (count(args, "in_channels"), count(args, "out_channels"));
    (vec![o, i, k[0], k[1]], o, i.saturating_mul(k[0]).saturating_mul(k[1]))
}

/// The window of a `MaxPool2d` or `AvgPool2d` (whose signature has no
/// `dilation`, so it stays 1); the stride defaults to the kernel size.
fn pool_window(b: &mut Builder, args: &mut LayerArgs) -> Pool2d {
    let kernel = args.pair_or(b, "kernel_size", [1, 1]);
    let stride = args.pair_or(b, "stride", kernel);
    let padding = args.pair_or(b, "padding", [0, 0]);
    let dilation = args.pair_or(b, "dilation", [1, 1]);
    Pool2d { kernel, stride, padding, dilation }
}

const BATCH_NORM: LayerSignature = LayerSignature {
    names: &["num_features", "eps", "momentum", "affine", "track_running_stats"],
    positional: 5,
    required: 1,
};

/// `BatchNorm1d` / `BatchNorm2d` (`spatial` 1 or 2) with PyTorch's defaults.
fn batch_norm(b: &mut Builder, args: &mut LayerArgs, spatial: usize) -> Option<LayerKind> {
    let channels = args.get(b, "num_features", positive)?;
    let eps = args.get(b, "eps", eval_f64).unwrap_or(1e-5);
    let momentum = args.get(b, "momentum", eval_f64).unwrap_or(0.1);
    let affine = args.get(b, "affine", eval_bool).unwrap_or(true);
    let tracked = args.get(b, "track_running_stats", eval_bool).unwrap_or(true);
    let refuse = |b: &mut Builder, arg: &str, detail: String| {
        b.error(FrontendError::BadValue { callee: args.ctor.into(), arg: arg.into(), detail }, args.bound[arg]);
    };
    if eps <= 0.0 {
        refuse(b, "eps", format!("must be positive, got {eps}"));
        return None;
    }
    if !(0.0..=1.0).contains(&momentum) {
        refuse(b, "momentum", format!("must be in [0, 1], got {momentum}"));
        return None;
    }
    if !tracked {
        let detail =
            "must be true: kiln keeps running statistics (batch statistics in evaluation mode are not supported)";
        refuse(b, "track_running_stats", detail.into());
        return None;
    }
    let bn = BatchNorm { eps: eps as f32, momentum: momentum as f32 };
    Some(LayerKind::BatchNorm { bn, channels, affine, spatial })
}

fn linear(b: &mut Builder, args: &mut LayerArgs) -> Option<LayerKind> {
    args.get(b, "in_features", positive);
    args.get(b, "out_features", positive);
    args.get(b, "bias", eval_bool);
    Some(LayerKind::Linear)
}

fn linear_weights(args: &Bound) -> Weights {
    let (i, o) = (count(args, "in_features"), count(args, "out_features"));
    (vec![o, i], o, i)
}

/// A probability in `[0, 1]`.
pub(super) fn probability(e: &Expr) -> Result<f32, String> {
    let p = eval_f64(e)?;
    if (0.0..=1.0).contains(&p) { Ok(p as f32) } else { Err(format!("must be in [0, 1], got {p}")) }
}

/// A count of at least 1.
fn positive(e: &Expr) -> Result<usize, String> {
    match eval_usize(e)? {
        0 => Err("must be at least 1, got 0".into()),
        v => Ok(v),
    }
}

/// A count argument that validated (0 when absent).
fn count(args: &Bound, arg: &str) -> usize {
    args.get(arg).and_then(|e| eval_usize(e).ok()).unwrap_or(0)
}

/// A declaration's bound arguments, parsed one at a time: a bad value is
/// reported at its tokens and remembered, and validation goes on to report
/// the others too.
struct LayerArgs<'e> {
    ctor: &'static str,
    decl: &'e LayerDecl,
    bound: Bound<'e>,
    /// No value has been rejected so far.
    ok: bool,
}

impl LayerArgs<'_> {
    /// The value of `arg` as `parse` reads it; `None` when absent or bad.
    fn get<T>(&mut self, b: &mut Builder, arg: &str, parse: impl Fn(&Expr) -> Result<T, String>) -> Option<T> {
        let e = *self.bound.get(arg)?;
        match parse(e) {
            Ok(v) => Some(v),
            Err(detail) => {
                b.error(FrontendError::BadValue { callee: self.ctor.into(), arg: arg.into(), detail }, e);
                self.ok = false;
                None
            }
        }
    }

    /// An int or `(h, w)` pair argument, or `default`.
    fn pair_or(&mut self, b: &mut Builder, arg: &str, default: [usize; 2]) -> [usize; 2] {
        self.get(b, arg, eval_pair).unwrap_or(default)
    }
}

/// What a declared layer does when called.
#[derive(Clone, Debug)]
pub(super) enum LayerKind {
    Conv(Conv2d),
    Linear,
    MaxPool(Pool2d),
    AvgPool(Pool2d),
    /// The output size; the windows follow from the input's.
    AdaptiveAvgPool([usize; 2]),
    /// Dropout with this probability.
    Dropout(f32),
    /// Batch normalisation of `channels` over axis 1 of an input with
    /// `spatial` axes after it (1: `[N, C]` or `[N, C, L]`; 2: `[N, C, H, W]`).
    BatchNorm {
        bn: BatchNorm,
        channels: usize,
        affine: bool,
        spatial: usize,
    },
    Upsample(Resample),
    Activation(Activation),
    Flatten(usize),
}

pub(super) struct Layer<'m> {
    pub(super) decl: &'m LayerDecl,
    /// `None` when the declaration itself was rejected (calls then stay silent).
    pub(super) kind: Option<LayerKind>,
    /// Weight and bias nodes.
    pub(super) params: Vec<NodeId>,
    pub(super) used: bool,
}

impl Builder<'_> {
    pub(super) fn declare_layers(&mut self) {
        for decl in &self.module.layers {
            let name = decl.name.to_string();
            if self.layer_by_name.contains_key(&name) {
                self.error(FrontendError::DuplicateName { name }, &decl.name);
                continue;
            }
            let ctor = decl.ctor.to_string();
            let (kind, params) = match layer_type(&ctor) {
                Some(layer_type) => {
                    let kind = self.layer_kind(decl, layer_type);
                    let params = match &kind {
                        Some(kind) => self.layer_params(decl, layer_type, kind),
                        None => Vec::new(),
                    };
                    (kind, params)
                }
                None => {
                    let error =
                        FrontendError::UnknownLayerType { layer: name.clone(), ctor, expected: LAYER_TYPES.join(", ") };
                    self.error(error, &decl.ctor);
                    (None, Vec::new())
                }
            };
            self.layer_by_name.insert(name, self.layers.len());
            self.layers.push(Layer { decl, kind, params, used: false });
        }
    }

    /// Weight and bias of a declaration with parameters (already validated),
    /// or a normalisation layer's weight, bias and running statistics.
    fn layer_params(&mut self, decl: &LayerDecl, layer_type: &LayerType, kind: &LayerKind) -> Vec<NodeId> {
        if let LayerKind::BatchNorm { channels, affine, .. } = *kind {
            return self.norm_params(decl, channels, affine);
        }
        let Some(weights) = layer_type.weights else {
            return Vec::new();
        };
        let name = decl.name.to_string();
        let Some(args) = self.bind(layer_type.ctor, decl, &layer_type.signature) else {
            return Vec::new();
        };
        let bias = args.get("bias").map(|e| eval_bool(e).unwrap_or(true)).unwrap_or(true);
        let (weight_shape, out, fan_in) = weights(&args);
        if elements_per_sample(&Shape::fixed(&weight_shape)).is_none() {
            let problem = format!("`{name}.weight` of shape {weight_shape:?} would hold more than 2^56 elements");
            self.error(FrontendError::Syntax(problem), &decl.call);
            return Vec::new();
        }
        let mut params = vec![self.graph.add(
            format!("{name}.weight"),
            Op::param(fan_in),
            Shape::fixed(&weight_shape),
            vec![],
            Stage::Forward,
        )];
        if bias {
            params.push(self.graph.add(
                format!("{name}.bias"),
                Op::param(fan_in),
                Shape::fixed(&[out]),
                vec![],
                Stage::Forward,
            ));
        }
        self.graph.params.extend(&params);
        params
    }

    /// PyTorch's state_dict entries of a normalisation layer, in its order:
    /// `weight` (ones) and `bias` (zeros) when affine, then the buffers
    /// `running_mean` (zeros) and `running_var` (ones).
    fn norm_params(&mut self, decl: &LayerDecl, channels: usize, affine: bool) -> Vec<NodeId> {
        let name = decl.name.to_string();
        let mut entries = Vec::new();
        if affine {
            entries.push(("weight", Op::Param { init: Init::Fill(1.0) }));
            entries.push(("bias", Op::Param { init: Init::Fill(0.0) }));
        }
        entries.push(("running_mean", Op::Buffer { fill: 0.0 }));
        entries.push(("running_var", Op::Buffer { fill: 1.0 }));
        let ids: Vec<NodeId> = entries
            .into_iter()
            .map(|(key, op)| {
                self.graph.add(format!("{name}.{key}"), op, Shape::fixed(&[channels]), vec![], Stage::Forward)
            })
            .collect();
        self.graph.params.extend(&ids);
        ids
    }

    /// Validates a layer declaration; errors are recorded, `None` returned.
    fn layer_kind(&mut self, decl: &LayerDecl, layer_type: &LayerType) -> Option<LayerKind> {
        let layer = decl.name.to_string();
        let bound = self.bind(layer_type.ctor, decl, &layer_type.signature)?;
        let mut args = LayerArgs { ctor: layer_type.ctor, decl, bound, ok: true };
        let kind = (layer_type.validate)(self, &mut args)?;
        if !args.ok {
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
                    let at: &dyn ToTokens = args.bound.get(what).map(|e| *e as &dyn ToTokens).unwrap_or(&decl.call);
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

    pub(super) fn call_layer(&mut self, index: usize, call: &syn::ExprCall) -> Value {
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
        inputs.extend(&params);
        let op = match kind {
            LayerKind::Conv(c) => Op::Conv2d(c),
            LayerKind::Linear => Op::Linear,
            LayerKind::MaxPool(p) => Op::MaxPool2d(p),
            LayerKind::AvgPool(p) => Op::AvgPool2d(p),
            LayerKind::Activation(a) => Op::Activate(a),
            LayerKind::Dropout(p) => Op::Dropout { p },
            LayerKind::Upsample(r) => return self.resample(&name, x, r, &layer.call, Some(&name)),
            LayerKind::AdaptiveAvgPool(size) => {
                return self.adaptive_avg_pool(&name, x, size, &layer.call, Some(&name));
            }
            LayerKind::BatchNorm { bn, spatial, .. } => {
                let rank = self.graph.node(x).shape.rank();
                let fits = if spatial == 2 { rank == 4 } else { rank == 2 || rank == 3 };
                if !fits {
                    let expected =
                        if spatial == 2 { "a 4-D [N, C, H, W] input" } else { "a 2-D [N, C] or 3-D [N, C, L] input" };
                    let problem = ShapeError::Rank { expected: expected.into(), got: self.graph.node(x).shape.clone() };
                    let origin = Some(self.describe(x));
                    self.error(FrontendError::Shape { layer: name.clone(), problem, origin }, &layer.call);
                    return None;
                }
                // The op's operand order: x, the running statistics, then weight and bias.
                let (affine, stats) = params.split_at(params.len() - 2);
                let mut inputs = vec![x];
                inputs.extend(stats);
                inputs.extend(affine);
                return self.add_inferred(&name, Op::BatchNorm(bn), inputs, &layer.call, Some(&name));
            }
            LayerKind::Flatten(d) => return self.flatten(&name, x, d, &layer.call),
        };
        // Layer-configuration mismatches point at the declaration, where the fix goes.
        self.add_inferred(&name, op, inputs, &layer.call, Some(&name))
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
}
