//! The functional ops callable in `forward` (`relu(x)`, `cat([a, b], 1)`,
//! `x.view(...)`, `interpolate(...)`): their argument signatures and the
//! nodes they add. Resampling, flattening and reshaping are shared with the
//! `Upsample` and `Flatten` layers.

use super::args::ArgsAt;
use super::consts::{eval_axis, eval_bool, eval_f64, eval_f64_pair, eval_pair, eval_usize, eval_word};
use super::{Builder, Value};
use crate::diagnostic::FrontendError;
use crate::graph::{NodeId, Stage};
use crate::infer::{ShapeError, reshape_shape};
use crate::ops::{Activation, GeluForm, Op, Pool2d, Resize, ResizeMode};
use crate::shape::Dim;
use quote::ToTokens;
use std::collections::HashMap;
use syn::Expr;

/// The functional ops callable in `forward`.
pub const FUNCTIONAL_OPS: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "leaky_relu",
    "elu",
    "gelu",
    "silu",
    "step",
    "softmax",
    "log_softmax",
    "dropout",
    "adaptive_avg_pool2d",
    "cat",
    "interpolate",
    "flatten",
    "reshape",
];

/// Resampling options before the input size is known.
#[derive(Clone, Copy, Debug)]
pub(super) struct Resample {
    size: Option<[usize; 2]>,
    scale: Option<[f64; 2]>,
    mode: ResizeMode,
    align_corners: bool,
}

impl Builder<'_> {
    pub(super) fn resample_options(
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

    /// `(H, W)` of an `[N, C, H, W]` operand with fixed height and width,
    /// or an error on `layer` saying what it received.
    fn image_size(&mut self, layer: &str, x: NodeId, at: &dyn ToTokens) -> Option<(usize, usize)> {
        let shape = self.graph.node(x).shape.clone();
        let fixed = |k: usize| shape.0.get(k).and_then(|d| d.as_fixed());
        match (shape.rank(), fixed(2), fixed(3)) {
            (4, Some(h), Some(w)) => Some((h, w)),
            _ => {
                let origin = Some(self.describe(x));
                let problem =
                    ShapeError::Rank { expected: "a 4-D [N, C, H, W] input with fixed H and W".into(), got: shape };
                self.error(FrontendError::Shape { layer: layer.into(), problem, origin }, at);
                None
            }
        }
    }

    /// PyTorch's `AdaptiveAvgPool2d(size)` as the average pool whose equal
    /// windows tile the input (`kernel = stride = input / output`): PyTorch's
    /// windows `[floor(i H / o), ceil((i + 1) H / o))` are exactly those when
    /// `o` divides `H`, and output 1 is the global average.
    pub(super) fn adaptive_avg_pool(
        &mut self,
        name: &str,
        x: NodeId,
        size: [usize; 2],
        at: &dyn ToTokens,
        layer: Option<&str>,
    ) -> Value {
        let who = layer.unwrap_or(name).to_string();
        let (h, w) = self.image_size(&who, x, at)?;
        let mut kernel = [0; 2];
        for (k, (axis, input, output)) in [("height", h, size[0]), ("width", w, size[1])].into_iter().enumerate() {
            if output == 0 || input % output != 0 {
                let divisors: Vec<String> = (1..=input).filter(|d| input % d == 0).map(|d| d.to_string()).collect();
                let problem = ShapeError::UnevenAdaptivePool { axis, input, output, divisors: divisors.join(", ") };
                let origin = Some(self.describe(x));
                self.error(FrontendError::Shape { layer: who, problem, origin }, at);
                return None;
            }
            kernel[k] = input / output;
        }
        let pool = Pool2d { kernel, stride: kernel, padding: [0, 0], dilation: [1, 1] };
        self.add_inferred(name, Op::AvgPool2d(pool), vec![x], at, layer)
    }

    pub(super) fn resample(
        &mut self,
        name: &str,
        x: NodeId,
        r: Resample,
        at: &dyn ToTokens,
        layer: Option<&str>,
    ) -> Value {
        let (h, w) = self.image_size(name, x, at)?;
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

    pub(super) fn flatten(&mut self, name: &str, x: NodeId, start: usize, at: &dyn ToTokens) -> Value {
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

    pub(super) fn call_op(&mut self, op: &str, args: &[&Expr], at: &dyn ToTokens, bind: Option<&str>) -> Value {
        let signature: &[&'static str] = match op {
            "relu" | "sigmoid" | "tanh" | "silu" | "step" => &["input"],
            "gelu" => &["input", "approximate"],
            "adaptive_avg_pool2d" => &["input", "output_size"],
            "softmax" | "log_softmax" => &["input", "dim"],
            "dropout" => &["input", "p"],
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
            "reshape" | "adaptive_avg_pool2d" | "softmax" | "log_softmax" => 2,
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
            "relu" | "sigmoid" | "tanh" | "silu" | "gelu" | "step" | "leaky_relu" | "elu" => {
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
                    "silu" => Activation::Silu,
                    "gelu" => Activation::Gelu(match bound.get("approximate") {
                        None => GeluForm::Exact,
                        Some(e) => match gelu_form(e) {
                            Ok(form) => form,
                            Err(detail) => {
                                self.error(
                                    FrontendError::BadValue { callee: op.into(), arg: "approximate".into(), detail },
                                    *e,
                                );
                                return None;
                            }
                        },
                    }),
                    "leaky_relu" => Activation::LeakyRelu(float(self, "negative_slope", 0.01)?),
                    _ => Activation::Elu(float(self, "alpha", 1.0)?),
                };
                self.add_inferred(&name, Op::Activate(act), vec![x], at, None)
            }
            "dropout" => {
                let p = match bound.get("p").map(|e| super::layers::probability(e)) {
                    None => 0.5,
                    Some(Ok(p)) => p,
                    Some(Err(detail)) => {
                        self.error(FrontendError::BadValue { callee: op.into(), arg: "p".into(), detail }, bound["p"]);
                        return None;
                    }
                };
                self.add_inferred(&name, Op::Dropout { p }, vec![x], at, None)
            }
            "softmax" | "log_softmax" => {
                let rank = self.graph.node(x).shape.rank();
                match eval_axis(bound["dim"], rank) {
                    Ok(axis) => {
                        let op = Op::Softmax { axis, log: op == "log_softmax" };
                        self.add_inferred(&name, op, vec![x], at, None)
                    }
                    Err(detail) => {
                        self.error(
                            FrontendError::BadValue { callee: op.into(), arg: "dim".into(), detail },
                            bound["dim"],
                        );
                        None
                    }
                }
            }
            "adaptive_avg_pool2d" => match eval_pair(bound["output_size"]) {
                Ok(size) => self.adaptive_avg_pool(&name, x, size, at, None),
                Err(detail) => {
                    self.error(
                        FrontendError::BadValue { callee: op.into(), arg: "output_size".into(), detail },
                        bound["output_size"],
                    );
                    None
                }
            },
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
}

/// PyTorch's `approximate` argument of `gelu`: `'none'` or `'tanh'`.
pub(super) fn gelu_form(e: &Expr) -> Result<GeluForm, String> {
    match eval_word(e)?.as_str() {
        "none" => Ok(GeluForm::Exact),
        "tanh" => Ok(GeluForm::Tanh),
        other => Err(format!("must be 'none' or 'tanh', got '{other}'")),
    }
}
