//! Known values, computed by hand, pinning each op's forward semantics.

use super::*;
use crate::graph::Stage;
use crate::ops::{Activation, BinaryOp, Conv2d, GeluForm, Loss, PaddingMode, Pool2d, Resize, ResizeMode, Sgd};
use crate::shape::Shape;

fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::new(shape.to_vec(), data.to_vec()).expect("test tensor")
}

fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    t(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
}

fn run(op: Op, args: &[&Tensor], out: &[usize]) -> Tensor {
    match run_op(&op, args, out, 1) {
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
    // GELU and SiLU values from the closed forms in f64 (Python's `math.erf`).
    let cases: [(Activation, [f32; 4], [f32; 4]); 9] = [
        (
            Activation::Gelu(GeluForm::Exact),
            [-0.0455003, -0.1542688, 0.3457312, 1.9544997],
            [-0.0852318, 0.1325049, 0.8674951, 1.0852318],
        ),
        (
            Activation::Gelu(GeluForm::Tanh),
            [-0.0454023, -0.154286, 0.345714, 1.9545977],
            [-0.0860993, 0.1326301, 0.8673699, 1.0860993],
        ),
        (
            Activation::Silu,
            [-0.2384058, -0.1887703, 0.3112297, 1.7615942],
            [-0.0907842, 0.2600388, 0.7399612, 1.0907842],
        ),
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
fn softmax_and_log_softmax_along_an_axis() {
    // Along axis 1 of [2, 3]: rows [0, 1, 2] and [1, 1, 1]; values from the
    // closed forms in f64.
    let x = t(&[2, 3], &[0., 1., 2., 1., 1., 1.]);
    let soft = [0.09003057, 0.24472847, 0.66524096, 1. / 3., 1. / 3., 1. / 3.];
    close(&run(Op::Softmax { axis: 1, log: false }, &[&x], &[2, 3]), &soft);
    let log: Vec<f32> = soft.iter().map(|s| s.ln()).collect();
    close(&run(Op::Softmax { axis: 1, log: true }, &[&x], &[2, 3]), &log);
    // Along axis 0 the columns are normalised: [0, 1], [1, 1], [2, 1].
    let e = std::f32::consts::E;
    let col = [1. / (1. + e), 0.5, e / (1. + e), e / (1. + e), 0.5, 1. / (1. + e)];
    close(&run(Op::Softmax { axis: 0, log: false }, &[&x], &[2, 3]), &col);
    // Gradients from the output: dy = [1, 0, 0] on the first row picks the
    // Jacobian's first column, y0 * ([1, 0, 0] - y0) elementwise.
    let y = t(&[2, 3], &soft);
    let dy = t(&[2, 3], &[1., 0., 0., 0., 0., 3.]);
    let s = &soft;
    let want =
        [s[0] * (1. - s[0]), -s[1] * s[0], -s[2] * s[0], -s[3] * s[5] * 3., -s[4] * s[5] * 3., s[5] * (3. - 3. * s[5])];
    close(&run(Op::SoftmaxGrad { axis: 1, log: false }, &[&y, &dy], &[2, 3]), &want);
    let logy = t(&[2, 3], &log);
    let want = [1. - s[0], -s[1], -s[2], -3. * s[3], -3. * s[4], 3. - 3. * s[5]];
    close(&run(Op::SoftmaxGrad { axis: 1, log: true }, &[&logy, &dy], &[2, 3]), &want);
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
    assert!(run_op(&Op::Binary(BinaryOp::Add), &[&a, &col], &[2, 2], 1).is_err());
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
    assert!(run_op(&Op::Slice { axis: 1, start: 3 }, &[&cat], &[2, 2], 1).is_err());
    assert!(run_op(&Op::Reshape, &[&a], &[4], 1).is_err());
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
            match run_op(&op, &[&z, &y], if op.mnemonic() == "cross_entropy" { &[] } else { &[2, 3] }, 1) {
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
    // The step reads its learning rate from the operand, not from `Sgd::lr`.
    let lr = t(&[], &[0.1]);
    let stale = Sgd { lr: 7.0, ..sgd };
    close(&run(Op::SgdStep(stale), &[&p, &g, &new_buf, &lr], &[1]), &[1. - 0.1 * 2.4]);
    let nesterov = Sgd { nesterov: true, ..sgd };
    close(&run(Op::SgdStep(nesterov), &[&p, &g, &new_buf, &lr], &[1]), &[1. - 0.1 * (0.6 + 0.9 * 2.4)]);
    let plain = Sgd { momentum: 0.0, ..sgd };
    close(&run(Op::SgdStep(plain), &[&p, &g, &lr], &[1]), &[1. - 0.1 * 0.6]);
    let half = t(&[], &[0.05]);
    close(&run(Op::SgdStep(plain), &[&p, &g, &half], &[1]), &[1. - 0.05 * 0.6]);
}

/// `x -> fc -> cross-entropy` built by hand, with a labels leaf and an optimizer buffer.
fn small_graph() -> (Graph, [NodeId; 5]) {
    let mut g = Graph::new("small");
    let n = crate::shape::Dim::batch();
    let x = g.add("x", Op::Input, Shape(vec![n, crate::shape::Dim::fixed(2)]), vec![], Stage::Forward);
    let w = g.add("fc.weight", Op::param(2), Shape::fixed(&[3, 2]), vec![], Stage::Forward);
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

    // Without updates a step is an evaluation that leaves the leaves alone.
    let mut leaves = feeds.clone();
    let values = step(&g, 2, &mut leaves).unwrap();
    assert_eq!(values, evaluate(&g, 2, &feeds).unwrap());
    assert_eq!(leaves, feeds);
}

#[test]
fn dropout_masks_follow_the_seed_step_and_element() {
    let n = 20_000;
    let x = t(&[n], &vec![1.0; n]);
    let run_at = |p: f32, seed: u32, step: f32| run(Op::DropoutTrain { p, seed }, &[&x, &t(&[], &[step])], &[n]);
    for p in [0.1f32, 0.5, 0.9] {
        let y = run_at(p, 7, 3.0);
        let dropped = y.data.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
        assert!((dropped - f64::from(p)).abs() < 0.02, "p {p}: dropped {dropped}");
        // Kept elements are scaled by 1 / (1 - p).
        assert!(y.data.iter().all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p)).abs() < 1e-6));
        // Another step, another seed: other masks, about as different as independent ones.
        for other in [run_at(p, 7, 4.0), run_at(p, 8, 3.0)] {
            let differ = y.data.iter().zip(&other.data).filter(|(a, b)| (**a == 0.0) != (**b == 0.0)).count();
            let expected = 2.0 * f64::from(p) * (1.0 - f64::from(p));
            assert!((differ as f64 / n as f64 - expected).abs() < 0.03, "p {p}: {differ} masks differ");
        }
        // The same key gives the same mask.
        assert_eq!(run_at(p, 7, 3.0).data, y.data);
    }
    assert!(run_at(1.0, 1, 0.0).data.iter().all(|v| *v == 0.0));
    assert_eq!(run_at(0.0, 1, 0.0).data, x.data);
    // Evaluation mode is the identity; the counter counts.
    assert_eq!(run(Op::Dropout { p: 0.5 }, &[&x], &[n]).data, x.data);
    close(&run(Op::Increment, &[&t(&[], &[41.0])], &[]), &[42.0]);
}
