//! Shape inference: the output shape of each forward op from its operands'
//! shapes, or the reason the operands do not fit.
//!
//! Convolution and pooling use the lecture's rule per axis,
//! `H' = floor((H - K' + 2P) / S) + 1` with `K' = K + (K - 1)(D - 1)`.

use crate::ops::{Conv2d, Op, Pool2d, Resize};
use crate::shape::{Dim, Shape, window_output_len};

/// Why an op rejects its operands. Messages read after the layer's name:
/// "fc1 expects 256 input features but receives 400".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    /// Convolution input channels differ from the weight's.
    #[error("expects {expected} input channels but receives {got}")]
    Channels {
        /// The layer's `in_channels`.
        expected: usize,
        /// The operand's channel count.
        got: Dim,
    },
    /// Linear input features differ from the weight's.
    #[error("expects {expected} input features but receives {got}")]
    InFeatures {
        /// The layer's `in_features`.
        expected: usize,
        /// The operand's last axis.
        got: Dim,
    },
    /// The operand has the wrong number of axes.
    #[error("expects {expected} but receives {got}")]
    Rank {
        /// A description such as "a 4-D [N, C, H, W]".
        expected: String,
        /// The operand's shape.
        got: Shape,
    },
    /// The dilated kernel does not fit in the padded input.
    #[error(
        "kernel extent {extent} (kernel {kernel}, dilation {dilation}) is larger than the padded {axis} {padded} of input {input}"
    )]
    KernelTooLarge {
        /// `height` or `width`.
        axis: &'static str,
        /// The kernel size.
        kernel: usize,
        /// The dilation.
        dilation: usize,
        /// `K + (K - 1)(D - 1)`.
        extent: usize,
        /// `H + 2P`.
        padded: usize,
        /// The operand's shape.
        input: Shape,
    },
    /// The computed output length is zero.
    #[error("gives a non-positive output {axis} ({detail})")]
    NonPositiveOutput {
        /// `height` or `width`.
        axis: &'static str,
        /// How it was computed.
        detail: String,
    },
    /// A stride, dilation or kernel of zero.
    #[error("has {what} 0; it must be at least 1")]
    Zero {
        /// `stride`, `dilation` or `kernel_size`.
        what: &'static str,
    },
    /// Pooling padding larger than half the window (PyTorch rejects it too).
    #[error("has padding {padding}, more than half of its window extent {extent}")]
    PoolPadding {
        /// The padding.
        padding: usize,
        /// The window's dilated extent.
        extent: usize,
    },
    /// Adaptive pooling whose windows would differ in size.
    #[error(
        "pools {axis} {input} to {output}, which needs windows of unequal size; kiln pools adaptively only to a divisor of the input (here {divisors})"
    )]
    UnevenAdaptivePool {
        /// `height` or `width`.
        axis: &'static str,
        /// The input length.
        input: usize,
        /// The requested output length.
        output: usize,
        /// The output lengths that work.
        divisors: String,
    },
    /// Spatial axes must not depend on the batch.
    #[error("needs height and width that do not depend on N, but receives {got}")]
    BatchedSpatial {
        /// The operand's shape.
        got: Shape,
    },
    /// Two shapes cannot be broadcast together.
    #[error("cannot broadcast {a} with {b}")]
    Broadcast {
        /// Left operand.
        a: Shape,
        /// Right operand.
        b: Shape,
    },
    /// A reshape that changes the number of elements.
    #[error("cannot reshape {from} to {to}: {detail}")]
    Reshape {
        /// The operand's shape.
        from: Shape,
        /// The requested shape.
        to: String,
        /// Why not.
        detail: String,
    },
    /// Concatenated shapes that differ off the joined axis.
    #[error("cannot concatenate {a} and {b} along dim {axis}")]
    Concat {
        /// First operand.
        a: Shape,
        /// The operand that does not fit.
        b: Shape,
        /// The axis.
        axis: usize,
    },
    /// An axis index out of range.
    #[error("has dim {axis}, but its input {shape} has only {rank} axes")]
    Axis {
        /// The axis.
        axis: usize,
        /// The operand's shape.
        shape: Shape,
        /// Its rank.
        rank: usize,
    },
    /// The op's shape is not a function of its operands (set by its creator).
    #[error("{op} takes its shape from its creator, not from its operands")]
    NotInferable {
        /// The op.
        op: String,
    },
    /// Wrong number of operands.
    #[error("{op} takes {expected} operands, got {got}")]
    Arity {
        /// The op.
        op: String,
        /// Expected count.
        expected: String,
        /// Given count.
        got: usize,
    },
}

/// Infers the output shape of a forward op from its operands' shapes.
pub fn infer_shape(op: &Op, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
    let arity = |lo: usize, hi: usize| {
        if inputs.len() < lo || inputs.len() > hi {
            Err(ShapeError::Arity {
                op: op.mnemonic(),
                expected: if lo == hi { lo.to_string() } else { format!("{lo} to {hi}") },
                got: inputs.len(),
            })
        } else {
            Ok(())
        }
    };
    match op {
        Op::Conv2d(c) => {
            arity(2, 3)?;
            conv2d_shape(c, inputs[0], inputs[1])
        }
        Op::Linear => {
            arity(2, 3)?;
            linear_shape(inputs[0], inputs[1])
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            arity(1, 1)?;
            pool2d_shape(p, inputs[0])
        }
        Op::Resize(r) => {
            arity(1, 1)?;
            resize_shape(r, inputs[0])
        }
        Op::Activate(_) | Op::Neg | Op::Dropout { .. } => {
            arity(1, 1)?;
            Ok(inputs[0].clone())
        }
        Op::Binary(_) => {
            arity(2, 2)?;
            broadcast(inputs[0], inputs[1])
        }
        Op::Concat { axis } => {
            arity(1, usize::MAX)?;
            concat_shape(*axis, inputs)
        }
        Op::LossValue(_) => {
            arity(2, 2)?;
            Ok(Shape::scalar())
        }
        Op::ActivateGrad(_) => {
            arity(2, 2)?;
            Ok(inputs[0].clone())
        }
        Op::BatchNorm(_) => {
            arity(3, 5)?;
            let x = inputs[0];
            if x.rank() < 2 {
                return Err(ShapeError::Rank { expected: "an [N, C, ..] input".into(), got: x.clone() });
            }
            let channels = inputs[1].0.first().and_then(|d| d.as_fixed()).unwrap_or(0);
            if x.0[1] != Dim::fixed(channels) {
                return Err(ShapeError::Channels { expected: channels, got: x.0[1] });
            }
            Ok(x.clone())
        }
        Op::Softmax { axis, .. } => {
            arity(1, 1)?;
            let x = inputs[0];
            if *axis >= x.rank() {
                return Err(ShapeError::Axis { axis: *axis, shape: x.clone(), rank: x.rank() });
            }
            Ok(x.clone())
        }
        other => Err(ShapeError::NotInferable { op: other.mnemonic() }),
    }
}

fn spatial(x: &Shape) -> Result<(usize, usize), ShapeError> {
    if x.rank() != 4 {
        return Err(ShapeError::Rank { expected: "a 4-D [N, C, H, W] input".into(), got: x.clone() });
    }
    match (x.0[2].as_fixed(), x.0[3].as_fixed()) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(ShapeError::BatchedSpatial { got: x.clone() }),
    }
}

/// Output lengths of a sliding window over `(h, w)`, with errors naming the axis.
fn window_2d(
    input: &Shape,
    (h, w): (usize, usize),
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Result<(usize, usize), ShapeError> {
    if kernel.contains(&0) {
        return Err(ShapeError::Zero { what: "kernel_size" });
    }
    if stride.contains(&0) {
        return Err(ShapeError::Zero { what: "stride" });
    }
    if dilation.contains(&0) {
        return Err(ShapeError::Zero { what: "dilation" });
    }
    let mut out = [0; 2];
    for (i, (axis, len)) in [("height", h), ("width", w)].into_iter().enumerate() {
        out[i] = window_output_len(len, kernel[i], stride[i], padding[i], dilation[i]).ok_or_else(|| {
            ShapeError::KernelTooLarge {
                axis,
                kernel: kernel[i],
                dilation: dilation[i],
                extent: kernel[i] + (kernel[i] - 1) * (dilation[i] - 1),
                padded: len + 2 * padding[i],
                input: input.clone(),
            }
        })?;
    }
    Ok((out[0], out[1]))
}

/// `[N, C, H, W]` convolved with `[O, C, kh, kw]` gives `[N, O, H', W']`.
pub fn conv2d_shape(c: &Conv2d, x: &Shape, w: &Shape) -> Result<Shape, ShapeError> {
    let hw = spatial(x)?;
    let (out_channels, in_channels) =
        match (w.0.first().and_then(|d| d.as_fixed()), w.0.get(1).and_then(|d| d.as_fixed())) {
            (Some(o), Some(i)) if w.rank() == 4 => (o, i),
            _ => return Err(ShapeError::Rank { expected: "a 4-D [out, in, kh, kw] weight".into(), got: w.clone() }),
        };
    if x.0[1] != Dim::fixed(in_channels) {
        return Err(ShapeError::Channels { expected: in_channels, got: x.0[1] });
    }
    let (ho, wo) = window_2d(x, hw, c.kernel, c.stride, c.padding, c.dilation)?;
    Ok(Shape(vec![x.0[0], Dim::fixed(out_channels), Dim::fixed(ho), Dim::fixed(wo)]))
}

/// `[N, in]` times `[out, in]^T` gives `[N, out]`.
pub fn linear_shape(x: &Shape, w: &Shape) -> Result<Shape, ShapeError> {
    let (out_features, in_features) = match w.0.as_slice() {
        [o, i] if o.as_fixed().is_some() && i.as_fixed().is_some() => (o.factor, i.factor),
        _ => return Err(ShapeError::Rank { expected: "a 2-D [out, in] weight".into(), got: w.clone() }),
    };
    if x.rank() != 2 {
        if let Some(total) = x.numel().filter(|_| x.rank() > 2) {
            // The common mistake: a feature map fed to a linear layer unflattened.
            let per_item = if total.batched { Dim::fixed(total.factor) } else { total };
            if per_item != Dim::fixed(in_features) {
                return Err(ShapeError::InFeatures { expected: in_features, got: per_item });
            }
        }
        return Err(ShapeError::Rank {
            expected: format!("a 2-D [N, {in_features}] input (flatten or reshape it first)"),
            got: x.clone(),
        });
    }
    if x.0[1] != Dim::fixed(in_features) {
        return Err(ShapeError::InFeatures { expected: in_features, got: x.0[1] });
    }
    Ok(Shape(vec![x.0[0], Dim::fixed(out_features)]))
}

/// Max or average pooling of `[N, C, H, W]`.
pub fn pool2d_shape(p: &Pool2d, x: &Shape) -> Result<Shape, ShapeError> {
    let hw = spatial(x)?;
    let (ho, wo) = window_2d(x, hw, p.kernel, p.stride, p.padding, p.dilation)?;
    for i in 0..2 {
        let extent = p.kernel[i] + (p.kernel[i] - 1) * (p.dilation[i] - 1);
        if 2 * p.padding[i] > extent {
            return Err(ShapeError::PoolPadding { padding: p.padding[i], extent });
        }
    }
    Ok(Shape(vec![x.0[0], x.0[1], Dim::fixed(ho), Dim::fixed(wo)]))
}

/// Resampling of `[N, C, H, W]` to the attribute's size.
pub fn resize_shape(r: &Resize, x: &Shape) -> Result<Shape, ShapeError> {
    let (h, w) = spatial(x)?;
    for (axis, len, out) in [("height", h, r.size[0]), ("width", w, r.size[1])] {
        if out == 0 {
            return Err(ShapeError::NonPositiveOutput { axis, detail: format!("input {len} resized to {out}") });
        }
    }
    Ok(Shape(vec![x.0[0], x.0[1], Dim::fixed(r.size[0]), Dim::fixed(r.size[1])]))
}

/// NumPy broadcasting (axes aligned from the right; a length-1 axis stretches).
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, ShapeError> {
    let rank = a.rank().max(b.rank());
    let one = Dim::fixed(1);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.rank() >= rank { a.0[i + a.rank() - rank] } else { one };
        let db = if i + b.rank() >= rank { b.0[i + b.rank() - rank] } else { one };
        out.push(if da == db || db == one {
            da
        } else if da == one {
            db
        } else {
            return Err(ShapeError::Broadcast { a: a.clone(), b: b.clone() });
        });
    }
    Ok(Shape(out))
}

fn concat_shape(axis: usize, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
    let first = inputs[0];
    if axis >= first.rank() {
        return Err(ShapeError::Axis { axis, shape: first.clone(), rank: first.rank() });
    }
    let mut joined = first.0[axis];
    for s in &inputs[1..] {
        let fits = s.rank() == first.rank()
            && (0..first.rank()).all(|i| i == axis || s.0[i] == first.0[i])
            && s.0[axis].batched == joined.batched;
        if !fits {
            return Err(ShapeError::Concat { a: first.clone(), b: (*s).clone(), axis });
        }
        joined.factor += s.0[axis].factor;
    }
    let mut out = first.clone();
    out.0[axis] = joined;
    Ok(out)
}

/// Resolves a reshape target (at most one `None` axis, PyTorch's `-1`) against
/// the operand's element count.
pub fn reshape_shape(x: &Shape, target: &[Option<Dim>]) -> Result<Shape, ShapeError> {
    let to = || {
        let parts: Vec<String> =
            target.iter().map(|d| d.map(|d| d.to_string()).unwrap_or_else(|| "-1".into())).collect();
        format!("[{}]", parts.join(", "))
    };
    let fail = |detail: String| ShapeError::Reshape { from: x.clone(), to: to(), detail };
    let total = x.numel().ok_or_else(|| fail("N appears more than once".into()))?;
    let known = Shape(target.iter().flatten().copied().collect());
    let known_numel = known.numel().ok_or_else(|| fail("N appears more than once".into()))?;
    let holes = target.iter().filter(|d| d.is_none()).count();
    let filled = match holes {
        0 => {
            if known_numel != total {
                return Err(fail(format!("{total} elements cannot become {known_numel}")));
            }
            None
        }
        1 => {
            if known_numel.factor == 0
                || total.factor % known_numel.factor != 0
                || (known_numel.batched && !total.batched)
            {
                return Err(fail(format!("{total} elements are not a multiple of {known_numel}")));
            }
            Some(Dim { factor: total.factor / known_numel.factor, batched: total.batched && !known_numel.batched })
        }
        _ => return Err(fail("only one axis may be -1".into())),
    };
    Ok(Shape(target.iter().map(|d| d.or(filled).unwrap_or(Dim::fixed(1))).collect()))
}
