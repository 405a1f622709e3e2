//! The reference interpreter: plain f32 loops for every op of the IR.
//!
//! This is the oracle every backend is tested against, so it favours being
//! obviously correct over being fast: one function per op, written as the
//! textbook loop nest with PyTorch's semantics, and every operand checked
//! before it is indexed so a malformed graph or a bad feed is an
//! [`InterpError`], never a panic.
//!
//! Sums accumulate in f32 in the natural order of the loop nest (row-major
//! over the reduced axes), except the losses, which accumulate in f64 and
//! round once at the end.

use std::collections::HashMap;

use crate::graph::{Graph, Node, NodeId};
use crate::ops::{Activation, BinaryOp, Conv2d, Loss, Op, PaddingMode, Pool2d, Resize, ResizeMode, Sgd};
use crate::shape::window_output_len;
use crate::tensor::Tensor;

/// Why a graph could not be evaluated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// A leaf that has no default value was not fed.
    #[error("no value was fed for {kind} `{name}` (expected a tensor of shape {expected:?})")]
    MissingFeed {
        /// The leaf's name.
        name: String,
        /// The leaf's role (`input`, `param`, `labels`, `target`).
        kind: String,
        /// The shape the graph expects at this batch size.
        expected: Vec<usize>,
    },
    /// A fed tensor does not have the leaf's shape.
    #[error("`{name}` expects a tensor of shape {expected:?} but was fed one of shape {got:?}")]
    FeedShape {
        /// The leaf's name.
        name: String,
        /// The shape the graph expects at this batch size.
        expected: Vec<usize>,
        /// The shape that was fed.
        got: Vec<usize>,
    },
    /// A fed tensor's data length disagrees with its own shape.
    #[error("the tensor fed for `{name}` has shape {shape:?} but holds {len} values")]
    FeedData {
        /// The leaf's name.
        name: String,
        /// The tensor's claimed shape.
        shape: Vec<usize>,
        /// How many values it actually holds.
        len: usize,
    },
    /// A class label is not an integer in `0..classes`.
    #[error("`{name}`[{position}] = {value} is not a class index in 0..{classes}")]
    LabelOutOfRange {
        /// The labels leaf's name.
        name: String,
        /// Position of the bad label in the batch.
        position: usize,
        /// The label as fed.
        value: f32,
        /// Number of classes (columns of the logits).
        classes: usize,
    },
    /// A node's operands do not fit its op: the graph was built wrongly.
    #[error("node `{name}` ({op}): {reason}")]
    Malformed {
        /// The node's name.
        name: String,
        /// The node's op mnemonic.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// [`step`] was asked to train a graph without a training section.
    #[error("graph `{graph}` has no training section (see autodiff::derive_training)")]
    NotTraining {
        /// The graph's name.
        graph: String,
    },
}

/// Evaluates every node of `graph` for batch size `batch`.
///
/// Returns one tensor per node, indexed by [`NodeId::index`]. Leaves take
/// their values from `feeds`; a missing [`Op::OptimState`] is zeros, any
/// other missing leaf is an error, as is a feed whose shape is not the node's
/// shape at this batch size.
pub fn evaluate(graph: &Graph, batch: usize, feeds: &HashMap<NodeId, Tensor>) -> Result<Vec<Tensor>, InterpError> {
    let mut values: Vec<Tensor> = Vec::with_capacity(graph.len());
    for id in graph.node_ids() {
        let node = graph.node(id);
        let shape = node.shape.at_batch(batch);
        let value = if node.op.is_leaf() {
            leaf_value(node, id, shape, feeds)?
        } else {
            let mut args = Vec::with_capacity(node.inputs.len());
            for &operand in &node.inputs {
                match values.get(operand.index()) {
                    Some(t) => args.push(t),
                    None => {
                        return Err(malformed(node, format!("operand {} does not precede the node", operand.index())));
                    }
                }
            }
            run_op(&node.op, &args, &shape).map_err(|fault| match fault {
                Fault::Malformed(reason) => malformed(node, reason),
                Fault::Label { position, value, classes } => InterpError::LabelOutOfRange {
                    name: node.inputs.get(1).map_or_else(String::new, |&l| graph.node(l).name.clone()),
                    position,
                    value,
                    classes,
                },
            })?
        };
        values.push(value);
    }
    Ok(values)
}

/// One training step: evaluates `graph` on `leaves`, then replaces every
/// leaf named in `graph.training.updates` (parameters and optimizer buffers)
/// with the value its update node computed.
///
/// Returns the values of all nodes of the step (before the update, as seen
/// by the step: the loss, the gradients, the new parameters). `leaves` is
/// left unchanged when an error is returned.
pub fn step(graph: &Graph, batch: usize, leaves: &mut HashMap<NodeId, Tensor>) -> Result<Vec<Tensor>, InterpError> {
    let training = graph.training.as_ref().ok_or_else(|| InterpError::NotTraining { graph: graph.name.clone() })?;
    let values = evaluate(graph, batch, leaves)?;
    // Check every update before writing any, so an error leaves `leaves` intact.
    for &(leaf, new) in &training.updates {
        let Some(node) = graph.get(leaf) else {
            return Err(InterpError::Malformed {
                name: format!("#{}", leaf.index()),
                op: "update".into(),
                reason: "the training section updates a node the graph does not have".into(),
            });
        };
        let expected = node.shape.at_batch(batch);
        if values.get(new.index()).is_none_or(|v| v.shape != expected) {
            return Err(malformed(
                node,
                format!("its update node {} does not compute a tensor of shape {expected:?}", new.index()),
            ));
        }
    }
    for &(leaf, new) in &training.updates {
        leaves.insert(leaf, values[new.index()].clone());
    }
    Ok(values)
}

fn malformed(node: &Node, reason: String) -> InterpError {
    InterpError::Malformed { name: node.name.clone(), op: node.op.mnemonic(), reason }
}

fn leaf_value(
    node: &Node,
    id: NodeId,
    shape: Vec<usize>,
    feeds: &HashMap<NodeId, Tensor>,
) -> Result<Tensor, InterpError> {
    let Some(fed) = feeds.get(&id) else {
        if node.op == Op::OptimState {
            return Ok(Tensor::zeros(&shape));
        }
        return Err(InterpError::MissingFeed { name: node.name.clone(), kind: node.op.mnemonic(), expected: shape });
    };
    if fed.shape.iter().product::<usize>() != fed.data.len() {
        return Err(InterpError::FeedData { name: node.name.clone(), shape: fed.shape.clone(), len: fed.data.len() });
    }
    if fed.shape != shape {
        return Err(InterpError::FeedShape { name: node.name.clone(), expected: shape, got: fed.shape.clone() });
    }
    Ok(fed.clone())
}

/// Why one op failed; the caller adds the node's name.
enum Fault {
    Malformed(String),
    Label { position: usize, value: f32, classes: usize },
}

type OpResult = Result<Tensor, Fault>;

fn ensure(cond: bool, reason: impl FnOnce() -> String) -> Result<(), Fault> {
    if cond { Ok(()) } else { Err(Fault::Malformed(reason())) }
}

/// Exactly `K` operands, or an error.
fn operands<'a, const K: usize>(args: &[&'a Tensor]) -> Result<[&'a Tensor; K], Fault> {
    <[&Tensor; K]>::try_from(args).map_err(|_| Fault::Malformed(format!("expects {K} operands but has {}", args.len())))
}

/// `[x, w]` or `[x, w, b]`.
fn weight_operands<'a>(args: &[&'a Tensor]) -> Result<(&'a Tensor, &'a Tensor, Option<&'a Tensor>), Fault> {
    match *args {
        [x, w] => Ok((x, w, None)),
        [x, w, b] => Ok((x, w, Some(b))),
        _ => Err(Fault::Malformed(format!("expects 2 or 3 operands but has {}", args.len()))),
    }
}

fn same_shape(a: &Tensor, b: &Tensor, what: &str) -> Result<(), Fault> {
    ensure(a.shape == b.shape, || format!("{what}: shapes {:?} and {:?} differ", a.shape, b.shape))
}

fn run_op(op: &Op, args: &[&Tensor], out: &[usize]) -> OpResult {
    match op {
        Op::Input | Op::Param { .. } | Op::Labels | Op::Target | Op::OptimState => {
            Err(Fault::Malformed("a leaf has no computation".into()))
        }
        Op::Conv2d(c) => {
            let (x, w, b) = weight_operands(args)?;
            conv2d(x, w, b, c, out)
        }
        Op::Conv2dGradInput(c) => {
            let [dy, w] = operands(args)?;
            conv2d_grad_input(dy, w, c, out)
        }
        Op::Conv2dGradWeight(c) => {
            let [x, dy] = operands(args)?;
            conv2d_grad_weight(x, dy, c, out)
        }
        Op::Linear => {
            let (x, w, b) = weight_operands(args)?;
            linear(x, w, b, out)
        }
        Op::LinearGradInput => {
            let [dy, w] = operands(args)?;
            linear_grad_input(dy, w, out)
        }
        Op::LinearGradWeight => {
            let [x, dy] = operands(args)?;
            linear_grad_weight(x, dy, out)
        }
        Op::BiasGrad { axis } => {
            let [dy] = operands(args)?;
            bias_grad(dy, *axis, out)
        }
        Op::MaxPool2d(p) => {
            let [x] = operands(args)?;
            max_pool2d(x, p, out)
        }
        Op::MaxPool2dGrad(p) => {
            let [x, dy] = operands(args)?;
            max_pool2d_grad(x, dy, p, out)
        }
        Op::AvgPool2d(p) => {
            let [x] = operands(args)?;
            avg_pool2d(x, p, out)
        }
        Op::AvgPool2dGrad(p) => {
            let [dy] = operands(args)?;
            avg_pool2d_grad(dy, p, out)
        }
        Op::Resize(r) => {
            let [x] = operands(args)?;
            resize(x, r, out)
        }
        Op::ResizeGrad(r) => {
            let [dy] = operands(args)?;
            resize_grad(dy, r, out)
        }
        Op::Activate(a) => {
            let [x] = operands(args)?;
            activate(x, *a, out)
        }
        Op::ActivateGrad(a) => {
            let [x, dy] = operands(args)?;
            activate_grad(x, dy, *a, out)
        }
        Op::Binary(b) => {
            let [lhs, rhs] = operands(args)?;
            binary(lhs, rhs, *b, out)
        }
        Op::Neg => {
            let [x] = operands(args)?;
            neg(x, out)
        }
        Op::SumTo => {
            let [x] = operands(args)?;
            sum_to(x, out)
        }
        Op::Reshape => {
            let [x] = operands(args)?;
            reshape(x, out)
        }
        Op::Concat { axis } => concat(args, *axis, out),
        Op::Slice { axis, start } => {
            let [x] = operands(args)?;
            slice(x, *axis, *start, out)
        }
        Op::LossValue(loss) => {
            let [pred, target] = operands(args)?;
            loss_value(pred, target, *loss, out)
        }
        Op::LossGrad(loss) => {
            let [pred, target] = operands(args)?;
            loss_grad(pred, target, *loss, out)
        }
        Op::SgdMomentum(sgd) => {
            let [p, g, buf] = operands(args)?;
            sgd_momentum(p, g, buf, sgd, out)
        }
        Op::SgdStep(sgd) => match *args {
            [p, g] => sgd_step(p, g, None, sgd, out),
            [p, g, buf] => sgd_step(p, g, Some(buf), sgd, out),
            _ => Err(Fault::Malformed(format!("expects 2 or 3 operands but has {}", args.len()))),
        },
    }
}

// ---------------------------------------------------------------------------
// NCHW indexing and sliding windows

/// The lengths of an NCHW tensor.
#[derive(Clone, Copy, Debug)]
struct Nchw {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
}

impl Nchw {
    fn of(shape: &[usize], what: &str) -> Result<Nchw, Fault> {
        match *shape {
            [n, c, h, w] => Ok(Nchw { n, c, h, w }),
            _ => Err(Fault::Malformed(format!("{what} must be NCHW (rank 4) but has shape {shape:?}"))),
        }
    }

    /// Flat row-major offset of element `[n, c, y, x]`.
    fn at(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.c + c) * self.h + y) * self.w + x
    }

    fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
}

/// The input index that tap `tap` of the window at output position `pos`
/// reads along one axis, or `None` when it falls in zero padding. With
/// `replicate` a position outside the input reads the nearest border element.
fn window_source(
    pos: usize,
    tap: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    len: usize,
    replicate: bool,
) -> Option<usize> {
    let i = (pos * stride + tap * dilation) as isize - padding as isize;
    if len == 0 {
        None
    } else if (0..len as isize).contains(&i) {
        Some(i as usize)
    } else if replicate {
        Some(i.clamp(0, len as isize - 1) as usize)
    } else {
        None
    }
}

/// Checks that `y` is the output of sliding a `kernel` window over `x` per axis.
fn check_window(
    x: Nchw,
    y: Nchw,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Result<(), Fault> {
    let oh = window_output_len(x.h, kernel[0], stride[0], padding[0], dilation[0]);
    let ow = window_output_len(x.w, kernel[1], stride[1], padding[1], dilation[1]);
    ensure(oh == Some(y.h) && ow == Some(y.w), || {
        format!(
            "a {kernel:?} window (stride {stride:?}, padding {padding:?}, dilation {dilation:?}) over \
             {}x{} gives {oh:?}x{ow:?}, not {}x{}",
            x.h, x.w, y.h, y.w
        )
    })
}

// ---------------------------------------------------------------------------
// Convolution

/// Checks `x` `[N, C, H, W]`, `w` `[O, C, kh, kw]` and `y` `[N, O, OH, OW]`.
fn check_conv(c: &Conv2d, x: Nchw, w: Nchw, y: Nchw) -> Result<(), Fault> {
    ensure(w.c == x.c, || format!("the weight expects {} input channels but the input has {}", w.c, x.c))?;
    ensure([w.h, w.w] == c.kernel, || format!("the weight's kernel is {}x{}, not {:?}", w.h, w.w, c.kernel))?;
    ensure(y.n == x.n && y.c == w.n, || {
        format!("output {:?} does not match input batch {} and {} output channels", y.dims(), x.n, w.n)
    })?;
    check_window(x, y, c.kernel, c.stride, c.padding, c.dilation)
}

/// The input pixels the taps of a sliding window read, tabulated per axis.
struct Taps {
    /// `rows[oy * kh + ky]`: the input row tap `ky` of output row `oy` reads.
    rows: Vec<Option<usize>>,
    /// `cols[ox * kw + kx]`: likewise for columns.
    cols: Vec<Option<usize>>,
    kh: usize,
    kw: usize,
}

impl Taps {
    fn new(
        x: Nchw,
        y: Nchw,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        replicate: bool,
    ) -> Taps {
        let axis = |out_len: usize, in_len: usize, a: usize| -> Vec<Option<usize>> {
            (0..out_len)
                .flat_map(|o| {
                    (0..kernel[a])
                        .map(move |k| window_source(o, k, stride[a], padding[a], dilation[a], in_len, replicate))
                })
                .collect()
        };
        Taps { rows: axis(y.h, x.h, 0), cols: axis(y.w, x.w, 1), kh: kernel[0], kw: kernel[1] }
    }

    fn conv(c: &Conv2d, x: Nchw, y: Nchw) -> Taps {
        Taps::new(x, y, c.kernel, c.stride, c.padding, c.dilation, c.padding_mode == PaddingMode::Replicate)
    }

    fn pool(p: &Pool2d, x: Nchw, y: Nchw) -> Taps {
        Taps::new(x, y, p.kernel, p.stride, p.padding, p.dilation, false)
    }

    /// The input pixel `(iy, ix)` that tap `(ky, kx)` of output pixel
    /// `(oy, ox)` reads, or `None` when it falls in zero padding.
    fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        Some((self.rows[oy * self.kh + ky]?, self.cols[ox * self.kw + kx]?))
    }
}

/// `y[n, o, oy, ox] = b[o] + sum_{c, ky, kx} w[o, c, ky, kx] * x[n, c, src(oy, ky), src(ox, kx)]`.
fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, c: &Conv2d, out: &[usize]) -> OpResult {
    let (xs, ws, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(&w.shape, "weight")?, Nchw::of(out, "output")?);
    check_conv(c, xs, ws, ys)?;
    let taps = Taps::conv(c, xs, ys);
    if let Some(b) = b {
        ensure(b.shape == [ws.n], || format!("bias has shape {:?}, expected [{}]", b.shape, ws.n))?;
    }
    let mut y = Tensor::zeros(out);
    for n in 0..ys.n {
        for o in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let mut acc = 0.0f32;
                    for ci in 0..ws.c {
                        for ky in 0..ws.h {
                            for kx in 0..ws.w {
                                if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                    acc += w.data[ws.at(o, ci, ky, kx)] * x.data[xs.at(n, ci, iy, ix)];
                                }
                            }
                        }
                    }
                    if let Some(b) = b {
                        acc += b.data[o];
                    }
                    y.data[ys.at(n, o, oy, ox)] = acc;
                }
            }
        }
    }
    Ok(y)
}

/// The adjoint of [`conv2d`] in `x`: every tap scatters `dy * w` back to the
/// pixel it read (with replicate padding, to the clamped border pixel).
fn conv2d_grad_input(dy: &Tensor, w: &Tensor, c: &Conv2d, out: &[usize]) -> OpResult {
    let (ys, ws, xs) = (Nchw::of(&dy.shape, "dy")?, Nchw::of(&w.shape, "weight")?, Nchw::of(out, "output")?);
    check_conv(c, xs, ws, ys)?;
    let taps = Taps::conv(c, xs, ys);
    let mut dx = Tensor::zeros(out);
    for n in 0..ys.n {
        for o in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let g = dy.data[ys.at(n, o, oy, ox)];
                    for ci in 0..ws.c {
                        for ky in 0..ws.h {
                            for kx in 0..ws.w {
                                if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                    dx.data[xs.at(n, ci, iy, ix)] += g * w.data[ws.at(o, ci, ky, kx)];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(dx)
}

/// `dw[o, c, ky, kx] = sum_{n, oy, ox} dy[n, o, oy, ox] * x[n, c, src(oy, ky), src(ox, kx)]`.
fn conv2d_grad_weight(x: &Tensor, dy: &Tensor, c: &Conv2d, out: &[usize]) -> OpResult {
    let (xs, ys, ws) = (Nchw::of(&x.shape, "input")?, Nchw::of(&dy.shape, "dy")?, Nchw::of(out, "output")?);
    check_conv(c, xs, ws, ys)?;
    let taps = Taps::conv(c, xs, ys);
    let mut dw = Tensor::zeros(out);
    for o in 0..ws.n {
        for ci in 0..ws.c {
            for ky in 0..ws.h {
                for kx in 0..ws.w {
                    let mut acc = 0.0f32;
                    for n in 0..ys.n {
                        for oy in 0..ys.h {
                            for ox in 0..ys.w {
                                if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                    acc += dy.data[ys.at(n, o, oy, ox)] * x.data[xs.at(n, ci, iy, ix)];
                                }
                            }
                        }
                    }
                    dw.data[ws.at(o, ci, ky, kx)] = acc;
                }
            }
        }
    }
    Ok(dw)
}

// ---------------------------------------------------------------------------
// Linear layers

/// Splits `shape` into `(rows, last)`: every leading axis is a row.
fn rows_cols(shape: &[usize], what: &str) -> Result<(usize, usize), Fault> {
    match shape.split_last() {
        Some((&cols, lead)) => Ok((lead.iter().product(), cols)),
        None => Err(Fault::Malformed(format!("{what} must have rank >= 1"))),
    }
}

/// `w` must be `[out, in]`.
fn matrix(w: &Tensor) -> Result<(usize, usize), Fault> {
    match *w.shape {
        [o, i] => Ok((o, i)),
        _ => Err(Fault::Malformed(format!("weight must be [out, in] but has shape {:?}", w.shape))),
    }
}

/// `y[r, o] = b[o] + sum_i x[r, i] * w[o, i]` (every leading axis of `x` is a row).
fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, out: &[usize]) -> OpResult {
    let (rows, fan_in) = rows_cols(&x.shape, "input")?;
    let (fan_out, w_in) = matrix(w)?;
    ensure(w_in == fan_in, || format!("weight expects {w_in} input features but the input has {fan_in}"))?;
    let mut expected = x.shape.clone();
    if let Some(last) = expected.last_mut() {
        *last = fan_out;
    }
    ensure(out == expected, || format!("output shape {out:?} should be {expected:?}"))?;
    if let Some(b) = b {
        ensure(b.shape == [fan_out], || format!("bias has shape {:?}, expected [{fan_out}]", b.shape))?;
    }
    let mut y = Tensor::zeros(out);
    for r in 0..rows {
        for o in 0..fan_out {
            let mut acc = 0.0f32;
            for i in 0..fan_in {
                acc += x.data[r * fan_in + i] * w.data[o * fan_in + i];
            }
            if let Some(b) = b {
                acc += b.data[o];
            }
            y.data[r * fan_out + o] = acc;
        }
    }
    Ok(y)
}

/// `dx[r, i] = sum_o dy[r, o] * w[o, i]`.
fn linear_grad_input(dy: &Tensor, w: &Tensor, out: &[usize]) -> OpResult {
    let (rows, fan_out) = rows_cols(&dy.shape, "dy")?;
    let (w_out, fan_in) = matrix(w)?;
    ensure(w_out == fan_out, || format!("weight has {w_out} outputs but dy has {fan_out}"))?;
    let (out_rows, out_cols) = rows_cols(out, "output")?;
    ensure(out_rows == rows && out_cols == fan_in, || format!("output shape {out:?} does not fit dy {:?}", dy.shape))?;
    let mut dx = Tensor::zeros(out);
    for r in 0..rows {
        for i in 0..fan_in {
            let mut acc = 0.0f32;
            for o in 0..fan_out {
                acc += dy.data[r * fan_out + o] * w.data[o * fan_in + i];
            }
            dx.data[r * fan_in + i] = acc;
        }
    }
    Ok(dx)
}

/// `dw[o, i] = sum_r dy[r, o] * x[r, i]`.
fn linear_grad_weight(x: &Tensor, dy: &Tensor, out: &[usize]) -> OpResult {
    let (rows, fan_in) = rows_cols(&x.shape, "input")?;
    let (dy_rows, fan_out) = rows_cols(&dy.shape, "dy")?;
    ensure(dy_rows == rows, || format!("input {:?} and dy {:?} have different rows", x.shape, dy.shape))?;
    ensure(out == [fan_out, fan_in], || format!("output shape {out:?} should be [{fan_out}, {fan_in}]"))?;
    let mut dw = Tensor::zeros(out);
    for o in 0..fan_out {
        for i in 0..fan_in {
            let mut acc = 0.0f32;
            for r in 0..rows {
                acc += dy.data[r * fan_out + o] * x.data[r * fan_in + i];
            }
            dw.data[o * fan_in + i] = acc;
        }
    }
    Ok(dw)
}

/// `db[k] = sum of dy over every axis but `axis``, scanning dy row-major.
fn bias_grad(dy: &Tensor, axis: usize, out: &[usize]) -> OpResult {
    let Some(&len) = dy.shape.get(axis) else {
        return Err(Fault::Malformed(format!("axis {axis} is out of range for dy {:?}", dy.shape)));
    };
    ensure(out == [len], || format!("output shape {out:?} should be [{len}]"))?;
    let inner: usize = dy.shape[axis + 1..].iter().product();
    let mut db = Tensor::zeros(out);
    for (flat, &g) in dy.data.iter().enumerate() {
        db.data[(flat / inner.max(1)) % len.max(1)] += g;
    }
    Ok(db)
}

// ---------------------------------------------------------------------------
// Pooling

fn check_pool(p: &Pool2d, x: Nchw, y: Nchw) -> Result<(), Fault> {
    ensure(y.n == x.n && y.c == x.c, || format!("output {:?} does not match input {:?}", y.dims(), x.dims()))?;
    check_window(x, y, p.kernel, p.stride, p.padding, p.dilation)
}

/// The flat index and value of the maximum of window `(n, c, oy, ox)`,
/// scanning taps row by row and keeping the first maximum (PyTorch's rule,
/// including that a NaN wins). `None` when every tap is padding.
fn window_argmax(x: &Tensor, xs: Nchw, taps: &Taps, n: usize, c: usize, oy: usize, ox: usize) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for ky in 0..taps.kh {
        for kx in 0..taps.kw {
            if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                let at = xs.at(n, c, iy, ix);
                let v = x.data[at];
                match best {
                    // PyTorch starts from -inf at the first valid tap, so an
                    // all -inf window still points at its first pixel.
                    None => best = Some((at, v)),
                    Some((_, m)) if v > m || v.is_nan() => best = Some((at, v)),
                    Some(_) => {}
                }
            }
        }
    }
    best
}

/// `y = max` over each window; padding counts as -inf.
fn max_pool2d(x: &Tensor, p: &Pool2d, out: &[usize]) -> OpResult {
    let (xs, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(out, "output")?);
    check_pool(p, xs, ys)?;
    let taps = Taps::pool(p, xs, ys);
    let mut y = Tensor::zeros(out);
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let m = window_argmax(x, xs, &taps, n, c, oy, ox).map_or(f32::NEG_INFINITY, |(_, v)| v);
                    y.data[ys.at(n, c, oy, ox)] = m;
                }
            }
        }
    }
    Ok(y)
}

/// Each window's `dy` goes to its first maximum; overlapping windows accumulate.
fn max_pool2d_grad(x: &Tensor, dy: &Tensor, p: &Pool2d, out: &[usize]) -> OpResult {
    let (xs, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(&dy.shape, "dy")?);
    check_pool(p, xs, ys)?;
    let taps = Taps::pool(p, xs, ys);
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    let mut dx = Tensor::zeros(out);
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    if let Some((at, _)) = window_argmax(x, xs, &taps, n, c, oy, ox) {
                        dx.data[at] += dy.data[ys.at(n, c, oy, ox)];
                    }
                }
            }
        }
    }
    Ok(dx)
}

/// `y = sum(window) / (kh * kw)`: padding counts as zeros in the divisor
/// (PyTorch's `count_include_pad=True`, `ceil_mode=False`). A dilation other
/// than 1 is honoured in the taps, the divisor stays `kh * kw`.
fn avg_pool2d(x: &Tensor, p: &Pool2d, out: &[usize]) -> OpResult {
    let (xs, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(out, "output")?);
    check_pool(p, xs, ys)?;
    let taps = Taps::pool(p, xs, ys);
    let divisor = (p.kernel[0] * p.kernel[1]) as f32;
    let mut y = Tensor::zeros(out);
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let mut acc = 0.0f32;
                    for ky in 0..p.kernel[0] {
                        for kx in 0..p.kernel[1] {
                            if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                acc += x.data[xs.at(n, c, iy, ix)];
                            }
                        }
                    }
                    y.data[ys.at(n, c, oy, ox)] = acc / divisor;
                }
            }
        }
    }
    Ok(y)
}

/// Each window spreads `dy / (kh * kw)` over the pixels it read.
fn avg_pool2d_grad(dy: &Tensor, p: &Pool2d, out: &[usize]) -> OpResult {
    let (ys, xs) = (Nchw::of(&dy.shape, "dy")?, Nchw::of(out, "output")?);
    check_pool(p, xs, ys)?;
    let taps = Taps::pool(p, xs, ys);
    let divisor = (p.kernel[0] * p.kernel[1]) as f32;
    let mut dx = Tensor::zeros(out);
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let g = dy.data[ys.at(n, c, oy, ox)] / divisor;
                    for ky in 0..p.kernel[0] {
                        for kx in 0..p.kernel[1] {
                            if let Some((iy, ix)) = taps.source(oy, ox, ky, kx) {
                                dx.data[xs.at(n, c, iy, ix)] += g;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(dx)
}

// ---------------------------------------------------------------------------
// Resampling

fn check_resize(r: &Resize, x: Nchw, y: Nchw) -> Result<(), Fault> {
    ensure(y.n == x.n && y.c == x.c && [y.h, y.w] == r.size, || {
        format!("output {:?} should be [{}, {}, {}, {}]", y.dims(), x.n, x.c, r.size[0], r.size[1])
    })
}

/// Nearest or bilinear resampling of NCHW `x` to `r.size`.
fn resize(x: &Tensor, r: &Resize, out: &[usize]) -> OpResult {
    let (xs, ys) = (Nchw::of(&x.shape, "input")?, Nchw::of(out, "output")?);
    check_resize(r, xs, ys)?;
    let mut y = Tensor::zeros(out);
    if xs.h == 0 || xs.w == 0 {
        return Ok(y);
    }
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let v = match r.mode {
                        ResizeMode::Nearest => {
                            let iy = r.nearest_source(0, oy, xs.h, ys.h);
                            let ix = r.nearest_source(1, ox, xs.w, ys.w);
                            x.data[xs.at(n, c, iy, ix)]
                        }
                        ResizeMode::Bilinear => {
                            let (y0, y1, hy0, hy1) = r.linear_taps(0, oy, xs.h, ys.h);
                            let (x0, x1, wx0, wx1) = r.linear_taps(1, ox, xs.w, ys.w);
                            let at = |iy, ix| x.data[xs.at(n, c, iy, ix)];
                            hy0 * (wx0 * at(y0, x0) + wx1 * at(y0, x1)) + hy1 * (wx0 * at(y1, x0) + wx1 * at(y1, x1))
                        }
                    };
                    y.data[ys.at(n, c, oy, ox)] = v;
                }
            }
        }
    }
    Ok(y)
}

/// The adjoint of [`resize`]: every output pixel scatters `dy` times its
/// interpolation weights back to the pixels it read.
fn resize_grad(dy: &Tensor, r: &Resize, out: &[usize]) -> OpResult {
    let (ys, xs) = (Nchw::of(&dy.shape, "dy")?, Nchw::of(out, "output")?);
    check_resize(r, xs, ys)?;
    let mut dx = Tensor::zeros(out);
    if xs.h == 0 || xs.w == 0 {
        return Ok(dx);
    }
    for n in 0..ys.n {
        for c in 0..ys.c {
            for oy in 0..ys.h {
                for ox in 0..ys.w {
                    let g = dy.data[ys.at(n, c, oy, ox)];
                    match r.mode {
                        ResizeMode::Nearest => {
                            let iy = r.nearest_source(0, oy, xs.h, ys.h);
                            let ix = r.nearest_source(1, ox, xs.w, ys.w);
                            dx.data[xs.at(n, c, iy, ix)] += g;
                        }
                        ResizeMode::Bilinear => {
                            let (y0, y1, hy0, hy1) = r.linear_taps(0, oy, xs.h, ys.h);
                            let (x0, x1, wx0, wx1) = r.linear_taps(1, ox, xs.w, ys.w);
                            dx.data[xs.at(n, c, y0, x0)] += hy0 * wx0 * g;
                            dx.data[xs.at(n, c, y0, x1)] += hy0 * wx1 * g;
                            dx.data[xs.at(n, c, y1, x0)] += hy1 * wx0 * g;
                            dx.data[xs.at(n, c, y1, x1)] += hy1 * wx1 * g;
                        }
                    }
                }
            }
        }
    }
    Ok(dx)
}

// ---------------------------------------------------------------------------
// Elementwise

fn activate(x: &Tensor, a: Activation, out: &[usize]) -> OpResult {
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    Ok(Tensor { shape: out.to_vec(), data: x.data.iter().map(|&v| a.apply(v)).collect() })
}

/// `f'(x) * dy`.
fn activate_grad(x: &Tensor, dy: &Tensor, a: Activation, out: &[usize]) -> OpResult {
    same_shape(x, dy, "x and dy")?;
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    let data = x.data.iter().zip(&dy.data).map(|(&v, &g)| a.derivative(v) * g).collect();
    Ok(Tensor { shape: out.to_vec(), data })
}

/// For every element of a tensor of shape `big` (row-major), the flat index
/// of the element of a tensor of shape `small` that NumPy broadcasting
/// (right-aligned, length-1 axes stretched) pairs with it.
fn broadcast_sources(small: &[usize], big: &[usize]) -> Result<Vec<usize>, Fault> {
    let bad = || Fault::Malformed(format!("shape {small:?} does not broadcast to {big:?}"));
    if small.len() > big.len() {
        return Err(bad());
    }
    let lead = big.len() - small.len();
    // Stride of each axis of `big` into `small` (0 where `small` is stretched).
    let mut strides = vec![0usize; big.len()];
    let mut stride = 1;
    for k in (0..small.len()).rev() {
        let (s, b) = (small[k], big[lead + k]);
        if s == b {
            strides[lead + k] = stride;
        } else if s != 1 {
            return Err(bad());
        }
        stride *= s;
    }
    let total: usize = big.iter().product();
    let mut sources = Vec::with_capacity(total);
    let mut index = vec![0usize; big.len()];
    for _ in 0..total {
        sources.push(index.iter().zip(&strides).map(|(i, s)| i * s).sum());
        // Advance the row-major multi-index.
        for k in (0..big.len()).rev() {
            index[k] += 1;
            if index[k] < big[k] {
                break;
            }
            index[k] = 0;
        }
    }
    Ok(sources)
}

/// `a op b` with both operands broadcast to the node's shape.
fn binary(a: &Tensor, b: &Tensor, op: BinaryOp, out: &[usize]) -> OpResult {
    let ia = broadcast_sources(&a.shape, out)?;
    let ib = broadcast_sources(&b.shape, out)?;
    let data = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| {
            let (u, v) = (a.data[i], b.data[j]);
            match op {
                BinaryOp::Add => u + v,
                BinaryOp::Sub => u - v,
                BinaryOp::Mul => u * v,
            }
        })
        .collect();
    Ok(Tensor { shape: out.to_vec(), data })
}

fn neg(x: &Tensor, out: &[usize]) -> OpResult {
    ensure(out == x.shape, || format!("output shape {out:?} should be the input's {:?}", x.shape))?;
    Ok(Tensor { shape: out.to_vec(), data: x.data.iter().map(|&v| -v).collect() })
}

/// Sums `x` over the axes along which the node's shape broadcasts to it,
/// scanning `x` row-major.
fn sum_to(x: &Tensor, out: &[usize]) -> OpResult {
    let sources = broadcast_sources(out, &x.shape)?;
    let mut y = Tensor::zeros(out);
    for (&to, &v) in sources.iter().zip(&x.data) {
        y.data[to] += v;
    }
    Ok(y)
}

// ---------------------------------------------------------------------------
// Layout

fn reshape(x: &Tensor, out: &[usize]) -> OpResult {
    let numel: usize = out.iter().product();
    ensure(numel == x.numel(), || format!("cannot reshape {:?} ({} elements) to {out:?}", x.shape, x.numel()))?;
    Ok(Tensor { shape: out.to_vec(), data: x.data.clone() })
}

/// Joins the operands along `axis`: for each index of the axes before
/// `axis`, the operands' blocks one after another.
fn concat(args: &[&Tensor], axis: usize, out: &[usize]) -> OpResult {
    ensure(axis < out.len(), || format!("axis {axis} is out of range for output {out:?}"))?;
    let mut total = 0;
    for t in args {
        let fits =
            t.shape.len() == out.len() && t.shape.iter().zip(out).enumerate().all(|(k, (a, b))| k == axis || a == b);
        ensure(fits, || format!("operand {:?} does not fit output {out:?} along axis {axis}", t.shape))?;
        total += t.shape[axis];
    }
    ensure(total == out[axis], || format!("operands sum to {total} along axis {axis}, not {}", out[axis]))?;
    let outer: usize = out[..axis].iter().product();
    let inner: usize = out[axis + 1..].iter().product();
    let mut data = Vec::with_capacity(out.iter().product());
    for o in 0..outer {
        for t in args {
            let block = t.shape[axis] * inner;
            data.extend_from_slice(&t.data[o * block..(o + 1) * block]);
        }
    }
    Ok(Tensor { shape: out.to_vec(), data })
}

/// The elements `start..start + out[axis]` along `axis`.
fn slice(x: &Tensor, axis: usize, start: usize, out: &[usize]) -> OpResult {
    let fits = axis < out.len()
        && x.shape.len() == out.len()
        && x.shape.iter().zip(out).enumerate().all(|(k, (a, b))| k == axis || a == b)
        && start + out[axis] <= x.shape[axis];
    ensure(fits, || format!("cannot take {out:?} from {:?} at {start} along axis {axis}", x.shape))?;
    let outer: usize = out[..axis].iter().product();
    let inner: usize = out[axis + 1..].iter().product();
    let (len, in_len) = (out[axis], x.shape[axis]);
    let mut data = Vec::with_capacity(out.iter().product());
    for o in 0..outer {
        let from = (o * in_len + start) * inner;
        data.extend_from_slice(&x.data[from..from + len * inner]);
    }
    Ok(Tensor { shape: out.to_vec(), data })
}

// ---------------------------------------------------------------------------
// Losses

/// The class index of every label, checking it is an integer in `0..classes`.
fn class_labels(labels: &Tensor, rows: usize, classes: usize) -> Result<Vec<usize>, Fault> {
    ensure(labels.shape == [rows], || format!("labels have shape {:?}, expected [{rows}]", labels.shape))?;
    labels
        .data
        .iter()
        .enumerate()
        .map(|(position, &value)| {
            if value >= 0.0 && value.fract() == 0.0 && (value as usize) < classes {
                Ok(value as usize)
            } else {
                Err(Fault::Label { position, value, classes })
            }
        })
        .collect()
}

fn logits_shape(pred: &Tensor) -> Result<(usize, usize), Fault> {
    match *pred.shape {
        [n, c] => Ok((n, c)),
        _ => Err(Fault::Malformed(format!("cross-entropy needs logits [N, C], got {:?}", pred.shape))),
    }
}

/// `log(sum_j exp(z_j))` of one row, in f64, shifted by the maximum.
fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z as f64));
    if m.is_infinite() {
        return m;
    }
    m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln()
}

/// The mean loss over the batch (f64 accumulation).
fn loss_value(pred: &Tensor, target: &Tensor, loss: Loss, out: &[usize]) -> OpResult {
    ensure(out.is_empty(), || format!("a loss is a scalar, not {out:?}"))?;
    let value = match loss {
        Loss::CrossEntropy => {
            let (rows, classes) = logits_shape(pred)?;
            let labels = class_labels(target, rows, classes)?;
            let mut total = 0.0f64;
            for (r, &label) in labels.iter().enumerate() {
                let row = &pred.data[r * classes..(r + 1) * classes];
                total += log_sum_exp(row) - row[label] as f64;
            }
            total / rows as f64
        }
        Loss::Mse => {
            same_shape(pred, target, "prediction and target")?;
            let sum: f64 = pred.data.iter().zip(&target.data).map(|(&p, &t)| (p as f64 - t as f64).powi(2)).sum();
            sum / pred.numel() as f64
        }
        Loss::Perceptron => {
            same_shape(pred, target, "scores and labels")?;
            let sum: f64 = pred.data.iter().zip(&target.data).map(|(&s, &y)| (-(y as f64) * s as f64).max(0.0)).sum();
            sum / pred.numel() as f64
        }
    };
    Ok(Tensor::scalar(value as f32))
}

/// d(mean loss)/d(prediction), computed in f64 and rounded once.
fn loss_grad(pred: &Tensor, target: &Tensor, loss: Loss, out: &[usize]) -> OpResult {
    ensure(out == pred.shape, || format!("output shape {out:?} should be the prediction's {:?}", pred.shape))?;
    let mut grad = Tensor::zeros(out);
    match loss {
        Loss::CrossEntropy => {
            let (rows, classes) = logits_shape(pred)?;
            let labels = class_labels(target, rows, classes)?;
            for (r, &label) in labels.iter().enumerate() {
                let row = &pred.data[r * classes..(r + 1) * classes];
                let lse = log_sum_exp(row);
                for (j, &z) in row.iter().enumerate() {
                    let softmax = (z as f64 - lse).exp();
                    let onehot = if j == label { 1.0 } else { 0.0 };
                    grad.data[r * classes + j] = ((softmax - onehot) / rows as f64) as f32;
                }
            }
        }
        Loss::Mse => {
            same_shape(pred, target, "prediction and target")?;
            let count = pred.numel() as f64;
            for (g, (&p, &t)) in grad.data.iter_mut().zip(pred.data.iter().zip(&target.data)) {
                *g = (2.0 * (p as f64 - t as f64) / count) as f32;
            }
        }
        Loss::Perceptron => {
            same_shape(pred, target, "scores and labels")?;
            let count = pred.numel() as f64;
            for (g, (&s, &y)) in grad.data.iter_mut().zip(pred.data.iter().zip(&target.data)) {
                // max(0, -y*s) has slope -y where -y*s > 0 and 0 elsewhere (also at the kink).
                *g = if -(y as f64) * (s as f64) > 0.0 { (-(y as f64) / count) as f32 } else { 0.0 };
            }
        }
    }
    Ok(grad)
}

// ---------------------------------------------------------------------------
// Optimizer

/// PyTorch's `g + weight_decay * p` (the decay term only when it is non-zero).
fn decayed_grad(p: f32, g: f32, sgd: &Sgd) -> f32 {
    if sgd.weight_decay != 0.0 { g + sgd.weight_decay * p } else { g }
}

/// The new momentum buffer `momentum * buf + (g + wd * p)` (dampening 0; with
/// a zero buffer this is PyTorch's first-step `buf = g`).
fn sgd_momentum(p: &Tensor, g: &Tensor, buf: &Tensor, sgd: &Sgd, out: &[usize]) -> OpResult {
    same_shape(p, g, "parameter and gradient")?;
    same_shape(p, buf, "parameter and buffer")?;
    ensure(out == p.shape, || format!("output shape {out:?} should be the parameter's {:?}", p.shape))?;
    let data = (0..p.numel()).map(|i| sgd.momentum * buf.data[i] + decayed_grad(p.data[i], g.data[i], sgd)).collect();
    Ok(Tensor { shape: out.to_vec(), data })
}

/// The updated parameter `p - lr * d`. Without a buffer operand `d = g + wd*p`;
/// with the new buffer as third operand `d = new_buf`, or for Nesterov
/// `d = (g + wd*p) + momentum * new_buf`.
fn sgd_step(p: &Tensor, g: &Tensor, new_buf: Option<&Tensor>, sgd: &Sgd, out: &[usize]) -> OpResult {
    same_shape(p, g, "parameter and gradient")?;
    if let Some(buf) = new_buf {
        same_shape(p, buf, "parameter and buffer")?;
    }
    ensure(out == p.shape, || format!("output shape {out:?} should be the parameter's {:?}", p.shape))?;
    let data = (0..p.numel())
        .map(|i| {
            let d = decayed_grad(p.data[i], g.data[i], sgd);
            let d = match new_buf {
                None => d,
                Some(buf) if sgd.nesterov => d + sgd.momentum * buf.data[i],
                Some(buf) => buf.data[i],
            };
            p.data[i] - sgd.lr * d
        })
        .collect();
    Ok(Tensor { shape: out.to_vec(), data })
}

#[cfg(test)]
mod tests {
    //! Known values, computed by hand, pinning each op's forward semantics.
    use super::*;
    use crate::graph::Stage;
    use crate::shape::Shape;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec()).expect("test tensor")
    }

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        t(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
    }

    fn run(op: Op, args: &[&Tensor], out: &[usize]) -> Tensor {
        match run_op(&op, args, out) {
            Ok(v) => v,
            Err(Fault::Malformed(m)) => panic!("{op}: {m}"),
            Err(Fault::Label { position, .. }) => panic!("{op}: bad label at {position}"),
        }
    }

    #[track_caller]
    fn close(got: &Tensor, want: &[f32]) {
        assert_eq!(got.data.len(), want.len(), "length of {:?}", got.data);
        for (i, (&g, &w)) in got.data.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "[{i}]: got {g}, want {w} (all: {:?})", got.data);
        }
    }

    fn conv(kernel: [usize; 2], stride: usize, padding: usize, dilation: usize, mode: PaddingMode) -> Conv2d {
        Conv2d { kernel, stride: [stride; 2], padding: [padding; 2], dilation: [dilation; 2], padding_mode: mode }
    }

    fn pool(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2]) -> Pool2d {
        Pool2d { kernel, stride, padding, dilation }
    }

    #[test]
    fn conv2d_valid_with_bias() {
        // x = 1..9 as 3x3, w = [[1, 2], [3, 4]]: y00 = 1*1 + 2*2 + 3*4 + 4*5 = 37, ...
        let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        let w = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
        let b = t(&[1], &[0.5]);
        let c = conv([2, 2], 1, 0, 1, PaddingMode::Zeros);
        close(&run(Op::Conv2d(c), &[&x, &w, &b], &[1, 1, 2, 2]), &[37.5, 47.5, 67.5, 77.5]);
        close(&run(Op::Conv2d(c), &[&x, &w], &[1, 1, 2, 2]), &[37., 47., 67., 77.]);
    }

    #[test]
    fn conv2d_stride_zero_padding_dilation_channels() {
        let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        // 3x3 box filter, stride 2, zero padding 1: the four corner windows.
        let ones = t(&[1, 1, 3, 3], &[1.0; 9]);
        let c = conv([3, 3], 2, 1, 1, PaddingMode::Zeros);
        close(&run(Op::Conv2d(c), &[&x, &ones], &[1, 1, 2, 2]), &[12., 16., 24., 28.]);
        // 2x2 kernel with dilation 2 reads the four corners: 1*1 + 2*3 + 3*7 + 4*9.
        let w = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
        let c = conv([2, 2], 1, 0, 2, PaddingMode::Zeros);
        close(&run(Op::Conv2d(c), &[&x, &w], &[1, 1, 1, 1]), &[64.]);
        // Two input channels, two output channels, 1x1 kernel: a per-pixel matrix product.
        let x = t(&[1, 2, 1, 2], &[1., 2., 10., 20.]);
        let w = t(&[2, 2, 1, 1], &[1., 1., 1., -1.]);
        let c = conv([1, 1], 1, 0, 1, PaddingMode::Zeros);
        close(&run(Op::Conv2d(c), &[&x, &w], &[1, 2, 1, 2]), &[11., 22., -9., -18.]);
    }

    #[test]
    fn conv2d_replicate_padding_and_its_gradients() {
        // Replicate-padding [[1, 2], [3, 4]] by 1 gives [[1,1,2,2],[1,1,2,2],[3,3,4,4],[3,3,4,4]];
        // the 3x3 box sums of that are 18, 21, 24, 27.
        let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
        let ones = t(&[1, 1, 3, 3], &[1.0; 9]);
        let c = conv([3, 3], 1, 1, 1, PaddingMode::Replicate);
        close(&run(Op::Conv2d(c), &[&x, &ones], &[1, 1, 2, 2]), &[18., 21., 24., 27.]);
        // Output (0, 0) reads pixel (0,0) 4 times, (0,1) and (1,0) twice, (1,1) once.
        let dy = t(&[1, 1, 2, 2], &[1., 0., 0., 0.]);
        close(&run(Op::Conv2dGradInput(c), &[&dy, &ones], &[1, 1, 2, 2]), &[4., 2., 2., 1.]);
        // dw[ky, kx] = the pixel tap (ky, kx) of output (0, 0) read: the padded image's top-left 3x3.
        close(&run(Op::Conv2dGradWeight(c), &[&x, &dy], &[1, 1, 3, 3]), &[1., 1., 2., 1., 1., 2., 3., 3., 4.]);
        // With zero padding the same taps read zeros instead.
        let c = conv([3, 3], 1, 1, 1, PaddingMode::Zeros);
        close(&run(Op::Conv2dGradInput(c), &[&dy, &ones], &[1, 1, 2, 2]), &[1., 1., 1., 1.]);
        close(&run(Op::Conv2dGradWeight(c), &[&x, &dy], &[1, 1, 3, 3]), &[0., 0., 0., 0., 1., 2., 0., 3., 4.]);
    }

    #[test]
    fn linear_and_its_gradients() {
        let x = t(&[2, 2], &[1., 2., 3., 4.]);
        let w = t(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
        let b = t(&[3], &[0., 1., 2.]);
        close(&run(Op::Linear, &[&x, &w, &b], &[2, 3]), &[1., 3., 5., 3., 5., 9.]);
        let dy = t(&[2, 3], &[1., 0., 1., 0., 1., 0.]);
        // dy @ w = [[1+1, 0+1], [0, 1]]
        close(&run(Op::LinearGradInput, &[&dy, &w], &[2, 2]), &[2., 1., 0., 1.]);
        // dy^T @ x = [[1, 2], [3, 4], [1, 2]]
        close(&run(Op::LinearGradWeight, &[&x, &dy], &[3, 2]), &[1., 2., 3., 4., 1., 2.]);
        close(&run(Op::BiasGrad { axis: 1 }, &[&dy], &[3]), &[1., 1., 1.]);
        // NCHW bias gradient: sum over N, H, W per channel.
        let dy = iota(&[2, 2, 1, 2]);
        close(&run(Op::BiasGrad { axis: 1 }, &[&dy], &[2]), &[0. + 1. + 4. + 5., 2. + 3. + 6. + 7.]);
    }

    #[test]
    fn max_pool_windows_padding_dilation() {
        let x = iota(&[1, 1, 4, 4]);
        let p = pool([2, 2], [2, 2], [0, 0], [1, 1]);
        close(&run(Op::MaxPool2d(p), &[&x], &[1, 1, 2, 2]), &[5., 7., 13., 15.]);
        // Padding 1 (as -inf): windows at rows {-1,0}, {1,2}, {3,4}.
        let p = pool([2, 2], [2, 2], [1, 1], [1, 1]);
        close(&run(Op::MaxPool2d(p), &[&x], &[1, 1, 3, 3]), &[0., 2., 3., 8., 10., 11., 12., 14., 15.]);
        // Dilation 2: each window reads rows {i, i+2} and columns {j, j+2}.
        let x = t(&[1, 1, 4, 4], &[1., 9., 2., 3., 4., 0., 8., 5., 7., 6., 1., 0., 12., 3., 1., 2.]);
        let p = pool([2, 2], [1, 1], [0, 0], [2, 2]);
        close(&run(Op::MaxPool2d(p), &[&x], &[1, 1, 2, 2]), &[7., 9., 12., 5.]);
        // Stride 1 < kernel 3 with padding 1 on a 1x3 row (kernel [1, 3]).
        let x = t(&[1, 1, 1, 3], &[3., -1., 2.]);
        let p = pool([1, 3], [1, 1], [0, 1], [1, 1]);
        close(&run(Op::MaxPool2d(p), &[&x], &[1, 1, 1, 3]), &[3., 3., 2.]);
    }

    #[test]
    fn max_pool_grad_goes_to_first_maximum_and_accumulates() {
        // Ties: each window's gradient goes to its first maximum in scan order.
        let x = t(&[1, 1, 1, 3], &[5., 5., 5.]);
        let p = pool([1, 2], [1, 1], [0, 0], [1, 1]);
        let dy = t(&[1, 1, 1, 2], &[1., 10.]);
        close(&run(Op::MaxPool2dGrad(p), &[&x, &dy], &[1, 1, 1, 3]), &[1., 10., 0.]);
        // Overlapping windows sharing a maximum accumulate.
        let x = t(&[1, 1, 1, 3], &[1., 5., 2.]);
        close(&run(Op::MaxPool2dGrad(p), &[&x, &dy], &[1, 1, 1, 3]), &[0., 11., 0.]);
        // Scan order is row by row: in [[1, 7], [7, 0]] the first 7 is (0, 1).
        let x = t(&[1, 1, 2, 2], &[1., 7., 7., 0.]);
        let p = pool([2, 2], [1, 1], [0, 0], [1, 1]);
        let dy = t(&[1, 1, 1, 1], &[2.]);
        close(&run(Op::MaxPool2dGrad(p), &[&x, &dy], &[1, 1, 2, 2]), &[0., 2., 0., 0.]);
    }

    #[test]
    fn avg_pool_counts_padding() {
        let x = iota(&[1, 1, 4, 4]);
        let p = pool([2, 2], [2, 2], [0, 0], [1, 1]);
        close(&run(Op::AvgPool2d(p), &[&x], &[1, 1, 2, 2]), &[2.5, 4.5, 10.5, 12.5]);
        // count_include_pad: the corner window (0,0) averages x00 with three zeros.
        let p = pool([2, 2], [2, 2], [1, 1], [1, 1]);
        let want = [0., 0.75, 0.75, 3., 7.5, 4.5, 3., 6.75, 3.75];
        close(&run(Op::AvgPool2d(p), &[&x], &[1, 1, 3, 3]), &want);
        // Gradient: each window spreads dy / 4 over the pixels it read.
        let dy = t(&[1, 1, 3, 3], &[4., 0., 0., 0., 8., 0., 0., 0., 0.]);
        let dx = run(Op::AvgPool2dGrad(p), &[&dy], &[1, 1, 4, 4]);
        close(&dx, &[1., 0., 0., 0., 0., 2., 2., 0., 0., 2., 2., 0., 0., 0., 0., 0.]);
        // Stride 1 < kernel 2: overlapping windows add up.
        let x = t(&[1, 1, 1, 3], &[2., 4., 8.]);
        let p = pool([1, 2], [1, 1], [0, 0], [1, 1]);
        close(&run(Op::AvgPool2d(p), &[&x], &[1, 1, 1, 2]), &[3., 6.]);
        let dy = t(&[1, 1, 1, 2], &[2., 4.]);
        close(&run(Op::AvgPool2dGrad(p), &[&dy], &[1, 1, 1, 3]), &[1., 3., 2.]);
    }

    fn rs(size: [usize; 2], mode: ResizeMode, align_corners: bool, inverse_scale: Option<[f32; 2]>) -> Resize {
        Resize { size, mode, align_corners, inverse_scale }
    }

    #[test]
    fn resize_nearest() {
        let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
        // 2 -> 3: src = floor(dst * 2/3) = 0, 0, 1.
        let r = rs([3, 3], ResizeMode::Nearest, false, None);
        close(&run(Op::Resize(r), &[&x], &[1, 1, 3, 3]), &[1., 1., 2., 1., 1., 2., 3., 3., 4.]);
        // 5 -> 8 by size: floor(dst * 0.625) = 0 0 1 1 2 3 3 4.
        let x = iota(&[1, 1, 1, 5]);
        let r = rs([1, 8], ResizeMode::Nearest, false, None);
        close(&run(Op::Resize(r), &[&x], &[1, 1, 1, 8]), &[0., 0., 1., 1., 2., 3., 3., 4.]);
        // 5 -> 8 by scale_factor 1.7: floor(dst / 1.7) = 0 0 1 1 2 2 3 4.
        let r = rs([1, 8], ResizeMode::Nearest, false, Some([1.0, 1.0 / 1.7]));
        close(&run(Op::Resize(r), &[&x], &[1, 1, 1, 8]), &[0., 0., 1., 1., 2., 2., 3., 4.]);
        // Downsampling 5 -> 2: floor(dst * 2.5) = 0, 2.
        let r = rs([1, 2], ResizeMode::Nearest, false, None);
        close(&run(Op::Resize(r), &[&x], &[1, 1, 1, 2]), &[0., 2.]);
        // Gradient: each source pixel collects the dy of the pixels copied from it.
        let dy = t(&[1, 1, 1, 8], &[1., 2., 3., 4., 5., 6., 7., 8.]);
        let r = rs([1, 8], ResizeMode::Nearest, false, None);
        close(&run(Op::ResizeGrad(r), &[&dy], &[1, 1, 1, 5]), &[3., 7., 5., 13., 8.]);
    }

    #[test]
    fn resize_bilinear() {
        let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
        // align_corners=False, 2 -> 4: src = (dst + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25.
        let r = rs([4, 4], ResizeMode::Bilinear, false, None);
        let want = [1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0];
        close(&run(Op::Resize(r), &[&x], &[1, 1, 4, 4]), &want);
        // align_corners=True, 2 -> 3: src = dst / 2.
        let r = rs([3, 3], ResizeMode::Bilinear, true, None);
        close(&run(Op::Resize(r), &[&x], &[1, 1, 3, 3]), &[1., 1.5, 2., 2., 2.5, 3., 3., 3.5, 4.]);
        // Downsampling 4 -> 2 (align_corners=False): src = 0.5, 2.5.
        let x = iota(&[1, 1, 1, 4]);
        let r = rs([1, 2], ResizeMode::Bilinear, false, None);
        close(&run(Op::Resize(r), &[&x], &[1, 1, 1, 2]), &[0.5, 2.5]);
        // align_corners=True to a single pixel reads the first one.
        let r = rs([1, 1], ResizeMode::Bilinear, true, None);
        close(&run(Op::Resize(r), &[&x], &[1, 1, 1, 1]), &[0.]);
        // scale_factor 2.5 on 2 -> 5 uses src = (dst + 0.5) * 0.4 - 0.5 = 0 (clamped), 0.1, 0.5, 0.9, 1.3.
        let x = t(&[1, 1, 1, 2], &[0., 10.]);
        let r = rs([1, 5], ResizeMode::Bilinear, false, Some([1.0, 0.4]));
        close(&run(Op::Resize(r), &[&x], &[1, 1, 1, 5]), &[0., 1., 5., 9., 10.]);
        // The gradient is the adjoint: weights per output column are
        // [1, 0], [.75, .25], [.25, .75], [0, 1] for 2 -> 4.
        let dy = t(&[1, 1, 1, 4], &[1., 2., 3., 4.]);
        let r = rs([1, 4], ResizeMode::Bilinear, false, None);
        close(&run(Op::ResizeGrad(r), &[&dy], &[1, 1, 1, 2]), &[3.25, 6.75]);
    }

    #[test]
    fn activations_and_their_gradients() {
        let x = t(&[4], &[-2., -0.5, 0.5, 2.]);
        let cases: [(Activation, [f32; 4], [f32; 4]); 6] = [
            (Activation::Relu, [0., 0., 0.5, 2.], [0., 0., 1., 1.]),
            (Activation::LeakyRelu(0.1), [-0.2, -0.05, 0.5, 2.], [0.1, 0.1, 1., 1.]),
            (Activation::Step, [0., 0., 1., 1.], [0., 0., 0., 0.]),
            (
                Activation::Elu(2.0),
                [2. * ((-2f32).exp() - 1.), 2. * ((-0.5f32).exp() - 1.), 0.5, 2.],
                [2. * (-2f32).exp(), 2. * (-0.5f32).exp(), 1., 1.],
            ),
            (
                Activation::Tanh,
                [-0.9640276, -0.4621172, 0.4621172, 0.9640276],
                [0.07065082, 0.7864477, 0.7864477, 0.07065082],
            ),
            (
                Activation::Sigmoid,
                [0.1192029, 0.3775407, 0.6224593, 0.8807971],
                [0.1049936, 0.2350037, 0.2350037, 0.1049936],
            ),
        ];
        let dy = t(&[4], &[1., 1., 1., 2.]);
        for (a, value, slope) in cases {
            close(&run(Op::Activate(a), &[&x], &[4]), &value);
            let want: Vec<f32> = slope.iter().zip(&dy.data).map(|(s, g)| s * g).collect();
            close(&run(Op::ActivateGrad(a), &[&x, &dy], &[4]), &want);
        }
    }

    #[test]
    fn binary_broadcasting_neg_and_sum_to() {
        let a = iota(&[2, 3]);
        let row = t(&[3], &[10., 20., 30.]);
        close(&run(Op::Binary(BinaryOp::Add), &[&a, &row], &[2, 3]), &[10., 21., 32., 13., 24., 35.]);
        close(&run(Op::Binary(BinaryOp::Sub), &[&row, &a], &[2, 3]), &[10., 19., 28., 7., 16., 25.]);
        let col = t(&[2, 1], &[1., 2.]);
        close(&run(Op::Binary(BinaryOp::Mul), &[&col, &row], &[2, 3]), &[10., 20., 30., 20., 40., 60.]);
        let scalar = t(&[], &[3.]);
        close(&run(Op::Binary(BinaryOp::Mul), &[&a, &scalar], &[2, 3]), &[0., 3., 6., 9., 12., 15.]);
        close(&run(Op::Neg, &[&a], &[2, 3]), &[0., -1., -2., -3., -4., -5.]);
        close(&run(Op::SumTo, &[&a], &[3]), &[3., 5., 7.]);
        close(&run(Op::SumTo, &[&a], &[2, 1]), &[3., 12.]);
        close(&run(Op::SumTo, &[&a], &[]), &[15.]);
        let cube = iota(&[2, 2, 2]);
        close(&run(Op::SumTo, &[&cube], &[2, 1, 2]), &[2., 4., 10., 12.]);
        assert!(run_op(&Op::Binary(BinaryOp::Add), &[&a, &col], &[2, 2]).is_err());
    }

    #[test]
    fn reshape_concat_slice() {
        let a = iota(&[2, 3]);
        assert_eq!(run(Op::Reshape, &[&a], &[3, 2]).shape, vec![3, 2]);
        close(&run(Op::Reshape, &[&a], &[6]), &[0., 1., 2., 3., 4., 5.]);
        let b = t(&[2, 1], &[10., 20.]);
        let cat = run(Op::Concat { axis: 1 }, &[&a, &b], &[2, 4]);
        close(&cat, &[0., 1., 2., 10., 3., 4., 5., 20.]);
        close(&run(Op::Concat { axis: 0 }, &[&a, &a], &[4, 3]), &[0., 1., 2., 3., 4., 5., 0., 1., 2., 3., 4., 5.]);
        close(&run(Op::Slice { axis: 1, start: 1 }, &[&cat], &[2, 2]), &[1., 2., 4., 5.]);
        close(&run(Op::Slice { axis: 1, start: 3 }, &[&cat], &[2, 1]), &[10., 20.]);
        close(&run(Op::Slice { axis: 0, start: 1 }, &[&a], &[1, 3]), &[3., 4., 5.]);
        assert!(run_op(&Op::Slice { axis: 1, start: 3 }, &[&cat], &[2, 2]).is_err());
        assert!(run_op(&Op::Reshape, &[&a], &[4]).is_err());
    }

    #[test]
    fn losses() {
        // Row 0: log(e + e^2 + e^3) - 3 = 0.40760596; row 1: log 3.
        let z = t(&[2, 3], &[1., 2., 3., 0., 0., 0.]);
        let y = t(&[2], &[2., 1.]);
        let ce = Loss::CrossEntropy;
        close(&run(Op::LossValue(ce), &[&z, &y], &[]), &[(0.40760596 + 3f32.ln()) / 2.]);
        let (s0, s1, s2) = (0.09003057, 0.24472847, 0.66524096);
        let third = 1. / 3.;
        let want = [s0 / 2., s1 / 2., (s2 - 1.) / 2., third / 2., (third - 1.) / 2., third / 2.];
        close(&run(Op::LossGrad(ce), &[&z, &y], &[2, 3]), &want);
        // Large logits stay finite (log-softmax is shifted by the row maximum).
        let big = t(&[1, 2], &[1000., 0.]);
        close(&run(Op::LossValue(ce), &[&big, &t(&[1], &[1.])], &[]), &[1000.]);

        let p = t(&[2, 2], &[1., 2., 3., 4.]);
        let target = t(&[2, 2], &[0., 2., 5., 4.]);
        close(&run(Op::LossValue(Loss::Mse), &[&p, &target], &[]), &[1.25]);
        close(&run(Op::LossGrad(Loss::Mse), &[&p, &target], &[2, 2]), &[0.5, 0., -1., 0.]);

        // -y*s = [-2, 1, 0.5, -3] -> mean(max(0, .)) = 1.5 / 4.
        let s = t(&[4], &[2., -1., 0.5, -3.]);
        let pm = t(&[4], &[1., 1., -1., -1.]);
        close(&run(Op::LossValue(Loss::Perceptron), &[&s, &pm], &[]), &[0.375]);
        close(&run(Op::LossGrad(Loss::Perceptron), &[&s, &pm], &[4]), &[0., -0.25, 0.25, 0.]);
    }

    #[test]
    fn bad_labels_are_errors() {
        let z = t(&[2, 3], &[0.0; 6]);
        for bad in [3.0, -1.0, 1.5, f32::NAN, f32::INFINITY] {
            let y = t(&[2], &[0., bad]);
            for op in [Op::LossValue(Loss::CrossEntropy), Op::LossGrad(Loss::CrossEntropy)] {
                match run_op(&op, &[&z, &y], if op.mnemonic() == "cross_entropy" { &[] } else { &[2, 3] }) {
                    Err(Fault::Label { position: 1, classes: 3, .. }) => {}
                    _ => panic!("label {bad} accepted by {op}"),
                }
            }
        }
    }

    #[test]
    fn sgd_ops() {
        let sgd = Sgd { lr: 0.1, momentum: 0.9, nesterov: false, weight_decay: 0.1 };
        let (p, g, buf) = (t(&[1], &[1.]), t(&[1], &[0.5]), t(&[1], &[2.]));
        // g' = 0.5 + 0.1 * 1 = 0.6; buf' = 0.9 * 2 + 0.6 = 2.4.
        let new_buf = run(Op::SgdMomentum(sgd), &[&p, &g, &buf], &[1]);
        close(&new_buf, &[2.4]);
        close(&run(Op::SgdStep(sgd), &[&p, &g, &new_buf], &[1]), &[1. - 0.1 * 2.4]);
        let nesterov = Sgd { nesterov: true, ..sgd };
        close(&run(Op::SgdStep(nesterov), &[&p, &g, &new_buf], &[1]), &[1. - 0.1 * (0.6 + 0.9 * 2.4)]);
        let plain = Sgd { momentum: 0.0, ..sgd };
        close(&run(Op::SgdStep(plain), &[&p, &g], &[1]), &[1. - 0.1 * 0.6]);
    }

    /// `x -> fc -> cross-entropy` built by hand, with a labels leaf and an optimizer buffer.
    fn small_graph() -> (Graph, [NodeId; 5]) {
        let mut g = Graph::new("small");
        let n = crate::shape::Dim::batch();
        let x = g.add("x", Op::Input, Shape(vec![n, crate::shape::Dim::fixed(2)]), vec![], Stage::Forward);
        let w = g.add("fc.weight", Op::Param { fan_in: 2 }, Shape::fixed(&[3, 2]), vec![], Stage::Forward);
        let y = g.add("fc", Op::Linear, Shape(vec![n, crate::shape::Dim::fixed(3)]), vec![x, w], Stage::Forward);
        let labels = g.add("labels", Op::Labels, Shape(vec![n]), vec![], Stage::Loss);
        let buf = g.add("buf", Op::OptimState, Shape::fixed(&[3, 2]), vec![], Stage::Update);
        g.add("loss", Op::LossValue(Loss::CrossEntropy), Shape::scalar(), vec![y, labels], Stage::Loss);
        (g, [x, w, y, labels, buf])
    }

    #[test]
    fn evaluate_checks_feeds() {
        let (g, [x, w, y, labels, buf]) = small_graph();
        let mut feeds = HashMap::new();
        feeds.insert(x, t(&[2, 2], &[1., 2., 3., 4.]));
        feeds.insert(w, t(&[3, 2], &[1., 0., 0., 1., 1., 1.]));
        feeds.insert(labels, t(&[2], &[0., 2.]));
        let values = evaluate(&g, 2, &feeds).expect("evaluates");
        close(&values[y.index()], &[1., 2., 3., 3., 4., 7.]);
        close(&values[buf.index()], &[0.0; 6]);

        let mut missing = feeds.clone();
        missing.remove(&w);
        let err = evaluate(&g, 2, &missing).unwrap_err();
        assert!(matches!(&err, InterpError::MissingFeed { name, .. } if name == "fc.weight"), "{err}");

        // Fed for batch 2 but evaluated at batch 3: names the node and both shapes.
        let err = evaluate(&g, 3, &feeds).unwrap_err();
        assert_eq!(err.to_string(), "`x` expects a tensor of shape [3, 2] but was fed one of shape [2, 2]");

        let mut broken = feeds.clone();
        broken.insert(x, Tensor { shape: vec![2, 2], data: vec![1.0] });
        assert!(matches!(evaluate(&g, 2, &broken), Err(InterpError::FeedData { .. })));

        let mut bad = feeds.clone();
        bad.insert(labels, t(&[2], &[0., 3.]));
        let err = evaluate(&g, 2, &bad).unwrap_err();
        assert!(matches!(&err, InterpError::LabelOutOfRange { name, position: 1, classes: 3, .. } if name == "labels"));

        let mut leaves = feeds;
        let err = step(&g, 2, &mut leaves).unwrap_err();
        assert!(matches!(err, InterpError::NotTraining { .. }));
    }
}
