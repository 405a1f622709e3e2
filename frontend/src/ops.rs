//! The operations of kiln's graph IR and their attributes.
//!
//! Forward ops follow PyTorch's semantics. Every differentiable op has its
//! backward written as ops of this same enum (`*Grad`), so the derived
//! backward graph and the optimizer update are ordinary graph nodes that the
//! interpreter, the passes and the code generator treat like any other.
//!
//! Operand order is part of each op's contract and is given beside it.

use crate::shape::Dim;
use std::fmt;

/// How a convolution reads outside its input.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PaddingMode {
    /// Outside values are zero.
    Zeros,
    /// Outside values repeat the nearest border value.
    Replicate,
}

/// Attributes of a 2-D convolution (per axis: height, width).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Conv2d {
    /// Kernel size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Padding `[ph, pw]` on each side.
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// How padded positions are filled.
    pub padding_mode: PaddingMode,
}

/// Attributes of a 2-D pooling window (per axis: height, width).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Pool2d {
    /// Window size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Implicit padding `[ph, pw]` on each side (-inf for max, 0 for average).
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]` (always 1 for average pooling).
    pub dilation: [usize; 2],
}

/// Interpolation used by [`Op::Resize`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ResizeMode {
    /// PyTorch's `nearest`: source index `floor(dst * scale)`.
    Nearest,
    /// PyTorch's `bilinear`.
    Bilinear,
}

/// Attributes of a spatial resampling of NCHW input.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Resize {
    /// Output size `[h, w]`.
    pub size: [usize; 2],
    /// Interpolation mode.
    pub mode: ResizeMode,
    /// PyTorch's `align_corners` (bilinear only).
    pub align_corners: bool,
    /// Source-per-destination step per axis, when the user gave `scale_factor`
    /// (PyTorch then maps coordinates with `1 / scale_factor`, not `in / out`).
    pub inverse_scale: Option<[f32; 2]>,
}

impl Resize {
    /// PyTorch's source-per-destination step for one axis (`compute_scales_value`):
    /// the given inverse scale, else `in / out`.
    fn step(&self, axis: usize, in_len: usize, out_len: usize) -> f32 {
        match self.inverse_scale {
            Some(s) if s[axis] > 0.0 => s[axis],
            _ => in_len as f32 / out_len as f32,
        }
    }

    /// PyTorch's `nearest` source index along one axis (`nearest_idx`).
    pub fn nearest_source(&self, axis: usize, dst: usize, in_len: usize, out_len: usize) -> usize {
        if out_len == in_len {
            dst
        } else if out_len == 2 * in_len {
            dst >> 1
        } else {
            let step = self.step(axis, in_len, out_len);
            ((dst as f32 * step).floor() as usize).min(in_len - 1)
        }
    }

    /// PyTorch's bilinear taps along one axis (`compute_source_index_and_lambda`):
    /// `(i0, i1, lambda0, lambda1)`, read as `lambda0 * x[i0] + lambda1 * x[i1]`.
    pub fn linear_taps(&self, axis: usize, dst: usize, in_len: usize, out_len: usize) -> (usize, usize, f32, f32) {
        if out_len == in_len {
            return (dst, dst, 1.0, 0.0);
        }
        let src = if self.align_corners {
            let step = if out_len > 1 { (in_len - 1) as f32 / (out_len - 1) as f32 } else { 0.0 };
            step * dst as f32
        } else {
            let step = self.step(axis, in_len, out_len);
            (step * (dst as f32 + 0.5) - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(in_len - 1);
        let lambda1 = (src - i0 as f32).clamp(0.0, 1.0);
        let i1 = if i0 < in_len - 1 { i0 + 1 } else { i0 };
        (i0, i1, 1.0 - lambda1, lambda1)
    }
}

/// A pointwise non-linearity.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x` for `x > 0`, else `negative_slope * x`.
    LeakyRelu(f32),
    /// `x` for `x > 0`, else `alpha * (e^x - 1)`.
    Elu(f32),
    /// Heaviside: `1` for `x > 0`, else `0` (the perceptron's output). Its
    /// gradient is zero everywhere.
    Step,
    /// PyTorch's `gelu`: `x * Phi(x)`, `Phi` the normal distribution's CDF
    /// (`approximate = 'none'`) or its tanh approximation (`'tanh'`).
    Gelu(GeluForm),
    /// `x * sigmoid(x)` (PyTorch's `silu`, also called swish).
    Silu,
}

/// How [`Activation::Gelu`] computes the normal CDF, as PyTorch's `approximate`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GeluForm {
    /// `Phi(x) = (1 + erf(x / sqrt 2)) / 2` (`approximate = 'none'`).
    Exact,
    /// `(1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2` (`approximate = 'tanh'`).
    Tanh,
}

/// `sqrt(2 / pi)`, the tanh form's scale.
pub const GELU_TANH_SCALE: f32 = 0.797_884_6;
/// The tanh form's cubic coefficient.
pub const GELU_TANH_CUBIC: f32 = 0.044_715;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `(Phi(x), Phi'(x))` for the form, `Phi'` the derivative of the CDF.
fn gelu_cdf(form: GeluForm, x: f32) -> (f32, f32) {
    match form {
        GeluForm::Exact => {
            let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
            // The normal density 1/sqrt(2 pi) e^(-x^2/2).
            let pdf = 0.398_942_3 * (-0.5 * x * x).exp();
            (cdf, pdf)
        }
        GeluForm::Tanh => {
            let t = (GELU_TANH_SCALE * (x + GELU_TANH_CUBIC * x * x * x)).tanh();
            let dt = 0.5 * (1.0 - t * t) * GELU_TANH_SCALE * (1.0 + 3.0 * GELU_TANH_CUBIC * x * x);
            (0.5 * (1.0 + t), dt)
        }
    }
}

impl Activation {
    /// The function's value at `x`.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            // Not `x.max(0.0)`: PyTorch's ReLU keeps a NaN.
            Activation::Relu => {
                if x <= 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::Gelu(form) => x * gelu_cdf(form, x).0,
            Activation::Silu => x * sigmoid(x),
            Activation::LeakyRelu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Activation::Elu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Activation::Step => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// The derivative at `x` (PyTorch's choice at kinks: 0 for ReLU at 0).
    pub fn derivative(self, x: f32) -> f32 {
        match self {
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Activation::Gelu(form) => {
                let (cdf, dcdf) = gelu_cdf(form, x);
                cdf + x * dcdf
            }
            Activation::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Activation::Tanh => {
                let t = x.tanh();
                1.0 - t * t
            }
            Activation::LeakyRelu(a) => {
                if x > 0.0 {
                    1.0
                } else {
                    a
                }
            }
            Activation::Elu(a) => {
                if x > 0.0 {
                    1.0
                } else {
                    a * x.exp()
                }
            }
            Activation::Step => 0.0,
        }
    }
}

/// Elementwise binary arithmetic with NumPy broadcasting.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
}

/// Hyper-parameters of stochastic gradient descent, with PyTorch's semantics
/// (dampening 0): `g' = g + wd * p`; `buf = momentum * buf + g'`;
/// `d = nesterov ? g' + momentum * buf : buf` (or `g'` without momentum);
/// `p = p - lr * d`.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor; 0 disables the buffer.
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
}

impl Default for Sgd {
    fn default() -> Sgd {
        Sgd { lr: 0.01, momentum: 0.0, nesterov: false, weight_decay: 0.0 }
    }
}

/// How a parameter is first filled: PyTorch's initialisation for its layer.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Init {
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, PyTorch's default for the
    /// weights and biases of convolutions and linear layers.
    Uniform {
        /// Inputs feeding one output unit (in_channels * kh * kw, or in_features).
        fan_in: usize,
    },
    /// Every element the same (a normalisation layer's weight 1 and bias 0).
    Fill(f32),
}

/// Attributes of batch normalisation over axis 1 (PyTorch's `BatchNorm1d`
/// and `BatchNorm2d`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct BatchNorm {
    /// Added to the variance under the square root.
    pub eps: f32,
    /// Weight of the batch statistic in each running-statistic update.
    pub momentum: f32,
}

/// Hyper-parameters of Adam and AdamW with PyTorch's update rules
/// (`torch.optim.Adam` / `AdamW`, no AMSGrad): `g' = g + wd * p` for Adam
/// (L2), `p *= 1 - lr * wd` first for AdamW (decoupled); `m = lerp(m, g',
/// 1 - beta1)`, `v = beta2 * v + (1 - beta2) g'^2`; `p -= step_size * m /
/// (sqrt(v) / sqrt(bc2) + eps)`, where the run-time inputs are
/// `step_size = lr / (1 - beta1^t)` and `sqrt(bc2) = sqrt(1 - beta2^t)`.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Adam {
    /// Learning rate (the initial value of the run-time input).
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Weight decay: an L2 term (Adam) or decoupled (AdamW).
    pub weight_decay: f32,
    /// AdamW's decoupled weight decay.
    pub decoupled: bool,
}

impl Default for Adam {
    /// PyTorch's `Adam` defaults: lr 0.001, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Adam {
        Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false }
    }
}

impl Adam {
    /// PyTorch's `AdamW` defaults: as Adam, with decoupled weight decay 0.01.
    pub fn adamw() -> Adam {
        Adam { weight_decay: 0.01, decoupled: true, ..Adam::default() }
    }

    /// The run-time inputs of step `t` (from 1) at learning rate `lr`:
    /// `(step_size, sqrt(bias_correction2))`, in f64 as PyTorch computes them.
    pub fn bias_corrections(&self, lr: f32, t: u64) -> (f32, f32) {
        let t = t.max(1) as i32;
        let bc1 = 1.0 - (self.beta1 as f64).powi(t);
        let bc2 = 1.0 - (self.beta2 as f64).powi(t);
        ((lr as f64 / bc1) as f32, bc2.sqrt() as f32)
    }
}

/// The optimizer a training graph's updates follow.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Optim {
    /// Stochastic gradient descent.
    Sgd(Sgd),
    /// Adam or AdamW.
    Adam(Adam),
}

impl Optim {
    /// The learning rate it starts with.
    pub fn lr(&self) -> f32 {
        match self {
            Optim::Sgd(s) => s.lr,
            Optim::Adam(a) => a.lr,
        }
    }
}

/// How a training step updates the parameters: the optimizer, after
/// optionally scaling every gradient by `min(1, max_norm / (norm + 1e-6))`,
/// `norm` the gradients' global 2-norm (PyTorch's `clip_grad_norm_` before
/// `optimizer.step()`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Update {
    /// The optimizer.
    pub optim: Optim,
    /// The largest global gradient norm, if clipped.
    pub clip_grad_norm: Option<f32>,
}

impl From<Optim> for Update {
    fn from(optim: Optim) -> Update {
        Update { optim, clip_grad_norm: None }
    }
}

/// Dropout's counter-based random numbers: a hash of the layer's `seed`,
/// the training step and the element's flat index, so masks are the same on
/// every run and thread count. The key is mixed linearly, then by
/// MurmurHash3's 32-bit finaliser (xor-shifts and multiplies modulo 2^32);
/// the kernel IR computes the same in `i64` with each multiply split in
/// 16-bit halves so that no intermediate reaches 2^63.
pub mod dropout {
    /// 2^32: the hash works modulo it.
    pub const MODULUS: u64 = 1 << 32;
    /// The mask compares the low 24 bits with `p * 2^24`.
    pub const MASK_BITS: u64 = 1 << 24;
    /// Steps are taken modulo 2^24 (exact in the `f32` step counter).
    pub const STEP_PERIOD: u64 = 1 << 24;
    /// The key's multipliers: element index, step, seed.
    pub const KEY: [u64; 3] = [0x5bd1_e995, 0x27d4_eb2d, 0x1656_67b1];
    /// The finaliser's multipliers (after xor-shifts by 16, then 13, then 16).
    pub const FINALISER: [u64; 2] = [0x85eb_ca6b, 0xc2b2_ae35];

    /// The hash of element `e` at `step` for a layer seeded `seed`.
    pub fn hash(seed: u32, step: u64, e: u64) -> u64 {
        let key = (e % MODULUS) * KEY[0] + (step % STEP_PERIOD) * KEY[1] + u64::from(seed) * KEY[2];
        let mut h = key % MODULUS;
        h ^= h >> 16;
        h = (h * FINALISER[0]) % MODULUS;
        h ^= h >> 13;
        h = (h * FINALISER[1]) % MODULUS;
        h ^ (h >> 16)
    }

    /// Elements whose `hash % MASK_BITS` is below this are dropped.
    pub fn threshold(p: f32) -> u64 {
        (f64::from(p) * MASK_BITS as f64).round() as u64
    }

    /// Whether element `e` survives at `step`.
    pub fn keeps(seed: u32, step: u64, e: u64, p: f32) -> bool {
        hash(seed, step, e) % MASK_BITS >= threshold(p)
    }

    /// The factor kept elements are scaled by, `1 / (1 - p)` (0 when all are dropped).
    pub fn scale(p: f32) -> f32 {
        if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 }
    }
}

/// The loss functions a training graph can end in. Each is a mean over the batch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Loss {
    /// Softmax cross-entropy of logits `[N, C]` against integer labels `[N]`.
    CrossEntropy,
    /// [`Loss::CrossEntropy`] against labels smoothed as PyTorch's
    /// `label_smoothing`: the target puts `1 - s` on the label and `s / C`
    /// on every class.
    SmoothedCrossEntropy(LabelSmoothing),
    /// Mean squared error against a target of the output's shape.
    Mse,
    /// The perceptron criterion `mean(max(0, -y * s))` for `y` in {-1, 1}.
    Perceptron,
}

/// A label-smoothing amount in `(0, 1]`, kept as its bits so that a [`Loss`]
/// stays `Eq` and `Hash`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LabelSmoothing(u32);

impl LabelSmoothing {
    /// The amount.
    pub fn value(self) -> f32 {
        f32::from_bits(self.0)
    }
}

impl Loss {
    /// Cross-entropy with PyTorch's `label_smoothing` (0: none).
    pub fn cross_entropy(label_smoothing: f32) -> Loss {
        if label_smoothing == 0.0 {
            Loss::CrossEntropy
        } else {
            Loss::SmoothedCrossEntropy(LabelSmoothing(label_smoothing.to_bits()))
        }
    }

    /// For the cross-entropy losses, their label smoothing (0 for none).
    pub fn label_smoothing(self) -> Option<f32> {
        match self {
            Loss::CrossEntropy => Some(0.0),
            Loss::SmoothedCrossEntropy(s) => Some(s.value()),
            Loss::Mse | Loss::Perceptron => None,
        }
    }

    /// Whether the loss compares logits `[N, C]` with class labels `[N]`.
    pub fn takes_labels(self) -> bool {
        self.label_smoothing().is_some()
    }

    /// The name used on the command line and in graph dumps.
    pub fn name(self) -> &'static str {
        match self {
            Loss::CrossEntropy | Loss::SmoothedCrossEntropy(_) => "cross_entropy",
            Loss::Mse => "mse",
            Loss::Perceptron => "perceptron",
        }
    }
}

/// An operation of the graph IR. Operands are listed as `[..]`.
#[derive(Clone, PartialEq, Debug)]
pub enum Op {
    // ----- leaves -----
    /// A forward argument of the network.
    Input,
    /// A trainable parameter; the node's name is its state_dict key.
    Param {
        /// How it is first filled.
        init: Init,
    },
    /// A state_dict entry that is not trained (a running statistic): set from
    /// outside, changed only by the update a training graph gives it.
    Buffer {
        /// Its value before any training (running mean 0, running variance 1).
        fill: f32,
    },
    /// Integer class labels `[N]`, stored as f32.
    Labels,
    /// A target tensor of the output's shape (MSE), or ±1 labels (perceptron).
    Target,
    /// An optimizer buffer of its parameter's shape, zero-initialised.
    OptimState,
    /// A hyper-parameter the step reads at run time, shape `[]`: the
    /// learning rate, which a schedule changes between steps without
    /// recompiling. It holds `initial` until it is set.
    Hyper {
        /// Its value until set.
        initial: f32,
    },

    // ----- dense layers -----
    /// `[x, w]` or `[x, w, b]`: cross-correlation of NCHW `x` with `w` `[out, in, kh, kw]`.
    Conv2d(Conv2d),
    /// `[dy, w]` -> dx of [`Op::Conv2d`]; the node's shape is the input's.
    Conv2dGradInput(Conv2d),
    /// `[x, dy]` -> dw of [`Op::Conv2d`].
    Conv2dGradWeight(Conv2d),
    /// `[x, w]` or `[x, w, b]`: `x @ w^T + b` for `x` `[N, in]`, `w` `[out, in]`.
    Linear,
    /// `[dy, w]` -> `dy @ w`, the input gradient of [`Op::Linear`].
    LinearGradInput,
    /// `[x, dy]` -> `dy^T @ x`, the weight gradient of [`Op::Linear`].
    LinearGradWeight,
    /// `[dy]` -> sum over every axis but `axis` (a bias gradient).
    BiasGrad {
        /// The axis that is kept (1 for NCHW channels and for `[N, out]`).
        axis: usize,
    },

    // ----- normalisation -----
    /// `[x, running_mean, running_var]` or `[.., weight, bias]`: evaluation
    /// mode, `(x - mean) / sqrt(var + eps) * weight + bias` per channel
    /// (axis 1), with the running statistics.
    BatchNorm(BatchNorm),
    /// `[x, mean, var]` or `[.., weight, bias]`: training mode, the same
    /// normalisation with the batch's statistics (`mean` and `var` are
    /// [`Op::BatchMean`] and [`Op::BatchVar`] of `x`; the backward accounts
    /// for them).
    BatchNormTrain(BatchNorm),
    /// `[x]` -> `[C]`: the mean over every axis but 1.
    BatchMean,
    /// `[x, mean]` -> `[C]`: the biased variance over every axis but 1.
    BatchVar,
    /// `[x, mean, var, dy]` -> `[C]`: `sum(dy * (x - mean) / sqrt(var + eps))`
    /// over every axis but 1 (the weight's gradient).
    BatchNormGradWeight {
        /// The layer's eps.
        eps: f32,
    },
    /// `[x, mean, var, dy, sum_dy, sum_dy_xhat]` or `[.., weight]` -> dx of
    /// [`Op::BatchNormTrain`] (`training`) or of [`Op::BatchNorm`].
    BatchNormGradInput {
        /// The layer's eps.
        eps: f32,
        /// Batch statistics (their own gradients folded in) or running ones.
        training: bool,
    },
    /// `[running, batch]` -> `(1 - momentum) * running + momentum * batch`,
    /// the batch statistic first scaled by `M / (M - 1)` when `unbias` gives
    /// the count `M` (the unbiased variance PyTorch keeps).
    RunningStat {
        /// The layer's momentum.
        momentum: f32,
        /// Values per channel, for the unbiased variance.
        unbias: Option<Dim>,
    },

    // ----- pooling and resampling -----
    /// `[x]` -> max over each window (padding counts as -inf).
    MaxPool2d(Pool2d),
    /// `[x, dy]` -> dx: each window's dy goes to its first maximum.
    MaxPool2dGrad(Pool2d),
    /// `[x]` -> mean over each window, padding counted (PyTorch's `count_include_pad`).
    AvgPool2d(Pool2d),
    /// `[dy]` -> dx of [`Op::AvgPool2d`]; the node's shape is the input's.
    AvgPool2dGrad(Pool2d),
    /// `[x]` -> `x` resampled to `size`.
    Resize(Resize),
    /// `[dy]` -> dx of [`Op::Resize`]; the node's shape is the input's.
    ResizeGrad(Resize),

    // ----- elementwise -----
    /// `[x]` -> `f(x)`.
    Activate(Activation),
    /// `[x, dy]` -> `f'(x) * dy`.
    ActivateGrad(Activation),
    /// `[a, b]` -> `a op b`, broadcast to the node's shape.
    Binary(BinaryOp),
    /// `[x]` -> `-x`.
    Neg,
    /// `[x]` -> `x`: dropout in evaluation mode (training mode is
    /// [`Op::DropoutTrain`]).
    Dropout {
        /// The probability of dropping an element.
        p: f32,
    },
    /// `[x, step]` -> training-mode dropout: element `e` is kept, times
    /// `1 / (1 - p)`, when [`dropout::keeps`]`(seed, step, e, p)`, else 0.
    DropoutTrain {
        /// The probability of dropping an element.
        p: f32,
        /// The layer's seed.
        seed: u32,
    },
    /// `[dy, step]` -> the gradient of [`Op::DropoutTrain`]: the same mask and scale.
    DropoutGrad {
        /// The probability of dropping an element.
        p: f32,
        /// The layer's seed.
        seed: u32,
    },
    /// `[counter]` -> `counter + 1` (the training step dropout is keyed by).
    Increment,
    /// `[x]` -> `e^x / sum(e^x)` along `axis`, or its logarithm
    /// `x - max - ln(sum(e^(x - max)))` when `log`.
    Softmax {
        /// The axis normalised over.
        axis: usize,
        /// `log_softmax` rather than `softmax`.
        log: bool,
    },
    /// `[y, dy]` -> dx of [`Op::Softmax`] from its output `y`:
    /// `y * (dy - sum(dy * y))`, or `dy - e^y * sum(dy)` when `log`.
    SoftmaxGrad {
        /// The axis normalised over.
        axis: usize,
        /// `log_softmax` rather than `softmax`.
        log: bool,
    },
    /// `[x]` -> `x` summed over broadcast axes down to the node's shape
    /// (the adjoint of broadcasting).
    SumTo,

    // ----- layout -----
    /// `[x]` -> the same elements in the node's shape (row-major).
    Reshape,
    /// `[a, b, ...]` -> concatenation along `axis`.
    Concat {
        /// The axis joined along.
        axis: usize,
    },
    /// `[x]` -> the elements `start..start + len` along `axis` (len from the node's shape).
    Slice {
        /// The axis sliced.
        axis: usize,
        /// First index kept.
        start: usize,
    },

    // ----- losses (scalar outputs) and their gradients -----
    /// `[prediction, labels|target]` -> the mean loss, shape `[]`.
    LossValue(Loss),
    /// `[prediction, labels|target]` -> d(mean loss)/d(prediction).
    LossGrad(Loss),

    // ----- optimizer -----
    /// `[param, grad, buf]` -> the new momentum buffer `momentum * buf + g + wd * p`.
    SgdMomentum(Sgd),
    /// `[param, grad, lr]` or `[param, grad, new_buf, lr]` -> the updated
    /// parameter; the learning rate `lr` is an [`Op::Hyper`] (`Sgd::lr` is
    /// its initial value).
    SgdStep(Sgd),
    /// `[sum_of_squares]` -> `min(1, max_norm / (sqrt(sum_of_squares) + 1e-6))`,
    /// the factor gradient clipping scales every gradient by; shape `[]`.
    ClipFactor {
        /// The largest global gradient norm.
        max_norm: f32,
    },
    /// `[param, grad, m]` -> Adam's new first moment `lerp(m, g', 1 - beta1)`.
    AdamMoment1(Adam),
    /// `[param, grad, v]` -> the new second moment `beta2 * v + (1 - beta2) g'^2`.
    AdamMoment2(Adam),
    /// `[param, new_m, new_v, lr, step_size, bc2_sqrt]` -> the updated parameter
    /// (the last three are [`Op::Hyper`] inputs, see [`Adam`]).
    AdamStep(Adam),
}

impl Op {
    /// A short lowercase name for dumps (`conv2d`, `relu_grad`, ...).
    pub fn mnemonic(&self) -> String {
        match self {
            Op::Input => "input".into(),
            Op::Param { .. } => "param".into(),
            Op::Buffer { .. } => "buffer".into(),
            Op::BatchNorm(_) => "batch_norm".into(),
            Op::BatchNormTrain(_) => "batch_norm_train".into(),
            Op::BatchMean => "batch_mean".into(),
            Op::BatchVar => "batch_var".into(),
            Op::BatchNormGradWeight { .. } => "batch_norm_grad_weight".into(),
            Op::BatchNormGradInput { .. } => "batch_norm_grad_input".into(),
            Op::RunningStat { .. } => "running_stat".into(),
            Op::Labels => "labels".into(),
            Op::Target => "target".into(),
            Op::OptimState => "optim_state".into(),
            Op::Hyper { .. } => "hyper".into(),
            Op::Conv2d(_) => "conv2d".into(),
            Op::Conv2dGradInput(_) => "conv2d_grad_input".into(),
            Op::Conv2dGradWeight(_) => "conv2d_grad_weight".into(),
            Op::Linear => "linear".into(),
            Op::LinearGradInput => "linear_grad_input".into(),
            Op::LinearGradWeight => "linear_grad_weight".into(),
            Op::BiasGrad { .. } => "bias_grad".into(),
            Op::MaxPool2d(_) => "max_pool2d".into(),
            Op::MaxPool2dGrad(_) => "max_pool2d_grad".into(),
            Op::AvgPool2d(_) => "avg_pool2d".into(),
            Op::AvgPool2dGrad(_) => "avg_pool2d_grad".into(),
            Op::Resize(r) => format!("resize_{}", resize_mode_name(r.mode)),
            Op::ResizeGrad(r) => format!("resize_{}_grad", resize_mode_name(r.mode)),
            Op::Activate(a) => activation_name(*a).into(),
            Op::ActivateGrad(a) => format!("{}_grad", activation_name(*a)),
            Op::Binary(BinaryOp::Add) => "add".into(),
            Op::Binary(BinaryOp::Sub) => "sub".into(),
            Op::Binary(BinaryOp::Mul) => "mul".into(),
            Op::Neg => "neg".into(),
            Op::Dropout { .. } => "dropout".into(),
            Op::DropoutTrain { .. } => "dropout_train".into(),
            Op::DropoutGrad { .. } => "dropout_grad".into(),
            Op::Increment => "increment".into(),
            Op::Softmax { log: false, .. } => "softmax".into(),
            Op::Softmax { log: true, .. } => "log_softmax".into(),
            Op::SoftmaxGrad { log: false, .. } => "softmax_grad".into(),
            Op::SoftmaxGrad { log: true, .. } => "log_softmax_grad".into(),
            Op::SumTo => "sum_to".into(),
            Op::Reshape => "reshape".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Slice { .. } => "slice".into(),
            Op::LossValue(l) => l.name().into(),
            Op::LossGrad(l) => format!("{}_grad", l.name()),
            Op::SgdMomentum(_) => "sgd_momentum".into(),
            Op::SgdStep(_) => "sgd_step".into(),
            Op::ClipFactor { .. } => "clip_factor".into(),
            Op::AdamMoment1(_) => "adam_moment1".into(),
            Op::AdamMoment2(_) => "adam_moment2".into(),
            Op::AdamStep(a) => if a.decoupled { "adamw_step" } else { "adam_step" }.into(),
        }
    }

    /// Whether the op is a leaf whose value is supplied from outside the graph.
    pub fn is_leaf(&self) -> bool {
        matches!(
            self,
            Op::Input
                | Op::Param { .. }
                | Op::Buffer { .. }
                | Op::Labels
                | Op::Target
                | Op::OptimState
                | Op::Hyper { .. }
        )
    }

    /// A parameter with PyTorch's default initialisation for `fan_in` inputs.
    pub fn param(fan_in: usize) -> Op {
        Op::Param { init: Init::Uniform { fan_in } }
    }
}

fn resize_mode_name(mode: ResizeMode) -> &'static str {
    match mode {
        ResizeMode::Nearest => "nearest",
        ResizeMode::Bilinear => "bilinear",
    }
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Sigmoid => "sigmoid",
        Activation::Tanh => "tanh",
        Activation::LeakyRelu(_) => "leaky_relu",
        Activation::Elu(_) => "elu",
        Activation::Step => "step",
        Activation::Gelu(GeluForm::Exact) => "gelu",
        Activation::Gelu(GeluForm::Tanh) => "gelu_tanh",
        Activation::Silu => "silu",
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.mnemonic())?;
        match self {
            Op::Conv2d(c) | Op::Conv2dGradInput(c) | Op::Conv2dGradWeight(c) => write!(
                f,
                "(k={:?}, s={:?}, p={:?}, d={:?}, {:?})",
                c.kernel, c.stride, c.padding, c.dilation, c.padding_mode
            ),
            Op::MaxPool2d(p) | Op::MaxPool2dGrad(p) | Op::AvgPool2d(p) | Op::AvgPool2dGrad(p) => {
                write!(f, "(k={:?}, s={:?}, p={:?}, d={:?})", p.kernel, p.stride, p.padding, p.dilation)
            }
            Op::Activate(Activation::LeakyRelu(a) | Activation::Elu(a))
            | Op::ActivateGrad(Activation::LeakyRelu(a) | Activation::Elu(a)) => write!(f, "({a})"),
            Op::BiasGrad { axis } | Op::Concat { axis } | Op::Softmax { axis, .. } | Op::SoftmaxGrad { axis, .. } => {
                write!(f, "(axis={axis})")
            }
            Op::Slice { axis, start } => write!(f, "(axis={axis}, start={start})"),
            Op::BatchNorm(b) | Op::BatchNormTrain(b) => write!(f, "(eps={}, momentum={})", b.eps, b.momentum),
            Op::BatchNormGradWeight { eps } => write!(f, "(eps={eps})"),
            Op::Dropout { p } => write!(f, "(p={p})"),
            Op::DropoutTrain { p, seed } | Op::DropoutGrad { p, seed } => write!(f, "(p={p}, seed={seed})"),
            Op::BatchNormGradInput { eps, training } => write!(f, "(eps={eps}, training={training})"),
            Op::RunningStat { momentum, unbias } => match unbias {
                Some(m) => write!(f, "(momentum={momentum}, unbias={m})"),
                None => write!(f, "(momentum={momentum})"),
            },
            Op::AdamMoment1(a) | Op::AdamMoment2(a) | Op::AdamStep(a) => {
                write!(f, "(lr={}, betas=({}, {}), eps={}, wd={})", a.lr, a.beta1, a.beta2, a.eps, a.weight_decay)
            }
            Op::SgdMomentum(s) | Op::SgdStep(s) => {
                write!(f, "(lr={}, momentum={}, nesterov={}, wd={})", s.lr, s.momentum, s.nesterov, s.weight_decay)
            }
            _ => Ok(()),
        }
    }
}
