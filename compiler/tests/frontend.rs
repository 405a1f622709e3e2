//! The front end: parsing, shape inference and diagnostics on declaration text.

use kiln_compiler::frontend::{Diagnostics, compile_str};
use kiln_compiler::ops::{BatchNorm, Init};
use kiln_compiler::shape::window_output_len;
use kiln_compiler::{Graph, Op};

const LENET: &str = include_str!("../../examples/lenet.net");

fn graph(src: &str) -> Graph {
    match compile_str(src) {
        Ok(l) => l.graph,
        Err(d) => panic!("expected a valid declaration, got:\n{}", d.render("test.net", src)),
    }
}

fn errors(src: &str) -> Diagnostics {
    match compile_str(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(d) => d,
    }
}

/// Asserts one error whose message contains every fragment, and returns it.
fn one_error(src: &str, fragments: &[&str]) -> String {
    let d = errors(src);
    let errs: Vec<String> = d.errors().map(|e| e.error.to_string()).collect();
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    for f in fragments {
        assert!(errs[0].contains(f), "error {:?} lacks {f:?}", errs[0]);
    }
    errs[0].clone()
}

fn shape_of(g: &Graph, name: &str) -> String {
    g.node(g.find(name).unwrap_or_else(|| panic!("no node {name}"))).shape.to_string()
}

#[test]
fn lenet_shapes_follow_the_lecture() {
    let g = graph(LENET);
    assert_eq!(g.name, "LeNet");
    assert_eq!(shape_of(&g, "conv1"), "[N, 6, 28, 28]");
    assert_eq!(shape_of(&g, "pool"), "[N, 6, 14, 14]");
    assert_eq!(shape_of(&g, "conv2"), "[N, 16, 10, 10]");
    assert_eq!(shape_of(&g, "pool_1"), "[N, 16, 5, 5]");
    assert_eq!(shape_of(&g, "fc1"), "[N, 120]");
    assert_eq!(shape_of(&g, "fc3"), "[N, 10]");
    let keys: Vec<&str> = g.params.iter().map(|&p| g.node(p).name.as_str()).collect();
    assert_eq!(
        keys,
        [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
            "fc3.weight",
            "fc3.bias"
        ]
    );
    assert_eq!(shape_of(&g, "conv1.weight"), "[6, 3, 5, 5]");
    assert_eq!(shape_of(&g, "fc1.weight"), "[120, 400]");
    assert_eq!(g.node(g.find("fc1.weight").unwrap()).op, Op::param(400));
    assert_eq!(g.node(g.find("conv2.bias").unwrap()).op, Op::param(150));
    assert_eq!(g.node(g.outputs[0]).shape.at_batch(4), vec![4, 10]);
}

#[test]
fn lecture_example_1024_input_3x3_kernel() {
    let src = |opts: &str, out: &str| {
        format!(
            "struct M {{ c: Conv2d(1, 1, 3{opts}) }} fn forward(x: [N, 1, 1024, 1024]) -> [N, 1, {out}, {out}] {{ c(x) }}"
        )
    };
    graph(&src("", "1022"));
    graph(&src(", padding = 1", "1024"));
    graph(&src(", stride = 2, padding = 1", "512"));
    graph(&src(", dilation = 2", "1020"));
}

/// (H, W), kernel, stride, padding, dilation -> (H', W') computed by hand from
/// H' = floor((H - K' + 2P) / S) + 1, K' = K + (K - 1)(D - 1).
type WindowCase = ([usize; 2], [usize; 2], [usize; 2], [usize; 2], [usize; 2], [usize; 2]);
const WINDOW_CASES: &[WindowCase] = &[
    ([32, 32], [5, 5], [1, 1], [0, 0], [1, 1], [28, 28]),
    ([28, 28], [2, 2], [2, 2], [0, 0], [1, 1], [14, 14]),
    ([14, 14], [5, 5], [1, 1], [0, 0], [1, 1], [10, 10]),
    ([10, 10], [2, 2], [2, 2], [0, 0], [1, 1], [5, 5]),
    ([7, 7], [3, 3], [2, 2], [1, 1], [1, 1], [4, 4]),
    ([7, 9], [3, 3], [1, 1], [0, 0], [1, 1], [5, 7]),
    ([8, 8], [3, 3], [3, 3], [0, 0], [1, 1], [2, 2]),
    ([9, 9], [3, 3], [3, 3], [2, 2], [1, 1], [4, 4]),
    ([10, 10], [3, 3], [1, 1], [0, 0], [2, 2], [6, 6]),
    ([10, 10], [3, 3], [1, 1], [0, 0], [3, 3], [4, 4]),
    ([10, 12], [3, 5], [1, 1], [1, 2], [1, 1], [10, 12]),
    ([11, 11], [3, 3], [2, 2], [1, 1], [2, 2], [5, 5]),
    ([5, 5], [5, 5], [1, 1], [0, 0], [1, 1], [1, 1]),
    ([6, 6], [4, 4], [2, 2], [1, 1], [1, 1], [3, 3]),
    ([13, 7], [3, 1], [2, 1], [0, 0], [1, 1], [6, 7]),
    ([16, 16], [2, 2], [2, 2], [0, 0], [1, 1], [8, 8]),
    ([15, 15], [3, 3], [2, 2], [0, 0], [1, 1], [7, 7]),
    ([12, 12], [3, 3], [1, 1], [2, 2], [3, 3], [10, 10]),
    ([3, 3], [3, 3], [1, 1], [1, 1], [2, 2], [1, 1]),
    ([20, 10], [5, 3], [3, 2], [2, 1], [1, 2], [7, 4]),
    ([1024, 1024], [3, 3], [1, 1], [0, 0], [1, 1], [1022, 1022]),
    ([9, 9], [2, 2], [1, 1], [1, 1], [3, 3], [8, 8]),
];

#[test]
fn conv_and_pool_shapes_match_the_formula_table() {
    for &(hw, k, s, p, d, out) in WINDOW_CASES {
        for axis in 0..2 {
            assert_eq!(window_output_len(hw[axis], k[axis], s[axis], p[axis], d[axis]), Some(out[axis]));
        }
        let opts = format!(
            "({}, {}), stride = ({}, {}), padding = ({}, {}), dilation = ({}, {})",
            k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1]
        );
        let io = format!("x: [N, 2, {}, {}]) -> [N, 3, {}, {}]", hw[0], hw[1], out[0], out[1]);
        graph(&format!("struct M {{ c: Conv2d(2, 3, {opts}) }} fn forward({io} {{ c(x) }}"));
        // PyTorch rejects pooling padding above half the window; those rows are conv-only.
        let extent = |i: usize| k[i] + (k[i] - 1) * (d[i] - 1);
        if 2 * p[0] <= extent(0) && 2 * p[1] <= extent(1) {
            let io = io.replace("[N, 3,", "[N, 2,");
            graph(&format!("struct M {{ p: MaxPool2d({opts}) }} fn forward({io} {{ p(x) }}"));
            if d == [1, 1] {
                let opts = opts.replace(", dilation = (1, 1)", "");
                graph(&format!("struct M {{ p: AvgPool2d({opts}) }} fn forward({io} {{ p(x) }}"));
            }
        }
    }
}

#[test]
fn linear_in_features_mismatch_names_the_layer_and_the_origin() {
    let src =
        LENET.replace("Linear(16 * 5 * 5, 120)", "Linear(16 * 4 * 4, 120)").replace("[N, 16 * 5 * 5]", "[N, 400]");
    let msg =
        one_error(&src, &["fc1 expects 256 input features but receives 400", "conv2 -> pool gives [N, 16, 5, 5]"]);
    assert_eq!(msg, "fc1 expects 256 input features but receives 400 (conv2 -> pool gives [N, 16, 5, 5])");
    // The error points at the declaration, line 6 of the file.
    let d = errors(&src);
    assert_eq!(d.0[0].line_column(), (6, 10));
    let rendered = d.render("lenet.net", &src);
    assert!(rendered.contains("--> lenet.net:6:10"), "{rendered}");
    assert!(rendered.contains("^^^^^^"), "{rendered}");
}

#[test]
fn unflattened_feature_map_into_linear() {
    let src = LENET.replace("let x = x.reshape([N, 16 * 5 * 5]);\n", "");
    one_error(&src, &["fc1 expects a 2-D [N, 400] input (flatten or reshape it first) but receives [N, 16, 5, 5]"]);
    let src = LENET.replace("let x = x.reshape([N, 16 * 5 * 5]);\n", "").replace("Linear(16 * 5 * 5", "Linear(5");
    one_error(&src, &["fc1 expects 5 input features but receives 400"]);
}

#[test]
fn channel_mismatch() {
    let src = LENET.replace("Conv2d(6, 16, 5)", "Conv2d(8, 16, 5)");
    one_error(&src, &["conv2 expects 8 input channels but receives 6", "conv1 -> pool gives [N, 6, 14, 14]"]);
}

#[test]
fn kernel_larger_than_padded_input() {
    let src = "struct M { c: Conv2d(1, 1, 7, padding = 1) } fn forward(x: [N, 1, 4, 4]) -> [N, 1, 1, 1] { c(x) }";
    one_error(src, &["c kernel extent 7", "larger than the padded height 6"]);
    let dilated = "struct M { c: Conv2d(1, 1, 3, dilation = 3) } fn forward(x: [N, 1, 6, 6]) -> [N, 1, 1, 1] { c(x) }";
    one_error(dilated, &["kernel extent 7 (kernel 3, dilation 3)", "padded height 6"]);
}

#[test]
fn non_positive_output_size() {
    let src = "struct M { up: Upsample(scale_factor = 0.1) } fn forward(x: [N, 1, 4, 4]) -> [N, 1, 0, 0] { up(x) }";
    one_error(src, &["non-positive output height", "input 4 resized to 0"]);
}

#[test]
fn stride_or_dilation_zero() {
    let src = "struct M { c: Conv2d(1, 1, 3, stride = 0) } fn forward(x: [N, 1, 8, 8]) -> [N, 1, 6, 6] { c(x) }";
    one_error(src, &["c has stride 0"]);
    let src = "struct M { p: MaxPool2d(2, dilation = 0) } fn forward(x: [N, 1, 8, 8]) -> [N, 1, 4, 4] { p(x) }";
    one_error(src, &["p has dilation 0"]);
}

#[test]
fn unknown_layer_type_and_unknown_op() {
    one_error(
        "struct M { c: Conv3d(1, 1, 3) } fn forward(x: [N, 1, 8, 8]) -> [N, 1, 8, 8] { x }",
        &["unknown layer type `Conv3d` for `c`", "Conv2d"],
    );
    one_error(
        "struct M { } fn forward(x: [N, 4]) -> [N, 4] { softmax2(x) }",
        &["unknown layer or op `softmax2`", "relu"],
    );
}

#[test]
fn unknown_keyword() {
    one_error(
        "struct M { c: Conv2d(1, 1, 3, strides = 2) } fn forward(x: [N, 1, 8, 8]) -> [N, 1, 3, 3] { c(x) }",
        &["`Conv2d` has no argument `strides`", "stride"],
    );
    one_error(
        "struct M { } fn forward(x: [N, 4]) -> [N, 4] { leaky_relu(x, slope = 0.1) }",
        &["`leaky_relu` has no argument `slope`", "negative_slope"],
    );
}

#[test]
fn gelu_form_is_none_or_tanh() {
    one_error(
        "struct M { } fn forward(x: [N, 4]) -> [N, 4] { gelu(x, approximate = \"fast\") }",
        &["`approximate`", "must be 'none' or 'tanh', got 'fast'"],
    );
    one_error(
        "struct M { g: GELU(approximate = \"erf\") } fn forward(x: [N, 4]) -> [N, 4] { g(x) }",
        &["`approximate`", "must be 'none' or 'tanh', got 'erf'"],
    );
    for ok in ["gelu(x)", "gelu(x, approximate = \"none\")", "gelu(x, \"tanh\")", "silu(x)"] {
        let src = format!("struct M {{ }} fn forward(x: [N, 4]) -> [N, 4] {{ {ok} }}");
        compile_str(&src).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn adaptive_average_pool_is_the_tiling_average_pool() {
    let src = "struct M { gap: AdaptiveAvgPool2d(1), p: AdaptiveAvgPool2d((2, 4)) }
               fn forward(x: [N, 3, 8, 12]) -> [N, 3, 1, 1] {
                   let a = p(x);
                   let b = adaptive_avg_pool2d(x, (4, 3));
                   gap(a) + gap(b)
               }";
    let g = compile_str(src).expect("valid").graph;
    assert_eq!(shape_of(&g, "p"), "[N, 3, 2, 4]");
    assert_eq!(shape_of(&g, "b"), "[N, 3, 4, 3]");
    let windows: Vec<([usize; 2], [usize; 2])> = g
        .dag()
        .node_weights()
        .filter_map(|n| match n.op {
            Op::AvgPool2d(p) => Some((p.kernel, p.stride)),
            _ => None,
        })
        .collect();
    assert_eq!(windows, vec![([4, 3], [4, 3]), ([2, 4], [2, 4]), ([2, 4], [2, 4]), ([4, 3], [4, 3])]);
    one_error(
        "struct M { p: AdaptiveAvgPool2d(3) } fn forward(x: [N, 1, 8, 9]) -> [N, 1, 3, 3] { p(x) }",
        &["p pools height 8 to 3", "unequal size", "(here 1, 2, 4, 8)"],
    );
    one_error(
        "struct M { } fn forward(x: [N, 8]) -> [N, 8] { adaptive_avg_pool2d(x, 1) }",
        &["a 4-D [N, C, H, W] input", "[N, 8]"],
    );
}

#[test]
fn softmax_dim_counts_from_the_end_when_negative() {
    let src = "struct M { } fn forward(x: [N, 3, 4]) -> [N, 3, 4] { softmax(x, -1) + log_softmax(x, dim = 1) }";
    let g = compile_str(src).expect("valid").graph;
    let axes: Vec<(usize, bool)> = g
        .dag()
        .node_weights()
        .filter_map(|n| match n.op {
            Op::Softmax { axis, log } => Some((axis, log)),
            _ => None,
        })
        .collect();
    assert_eq!(axes, vec![(2, false), (1, true)]);
    one_error(
        "struct M { } fn forward(x: [N, 3, 4]) -> [N, 3, 4] { softmax(x, 3) }",
        &["`dim`", "must be in -3..3 for an input of 3 axes, got 3"],
    );
    one_error("struct M { } fn forward(x: [N, 3]) -> [N, 3] { softmax(x) }", &["softmax", "dim"]);
}

#[test]
fn batch_norm_layers_declare_pytorch_state_dict_entries() {
    let src = "struct M {
                   conv: Conv2d(3, 4, 3, bias = false),
                   bn: BatchNorm2d(4),
                   fc: Linear(4 * 6 * 6, 5),
                   bn1: BatchNorm1d(5, eps = 1e-3, momentum = 0.2, affine = false),
               }
               fn forward(x: [N, 3, 8, 8]) -> [N, 5] { bn1(fc(relu(bn(conv(x))).flatten(1))) }";
    let g = compile_str(src).expect("valid").graph;
    let keys: Vec<&str> = g.params.iter().map(|&p| g.node(p).name.as_str()).collect();
    let want = [
        "conv.weight",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "fc.weight",
        "fc.bias",
        "bn1.running_mean",
        "bn1.running_var",
    ];
    assert_eq!(keys, want);
    let op = |name: &str| g.node(g.find(name).unwrap()).op.clone();
    assert_eq!(op("bn.weight"), Op::Param { init: Init::Fill(1.0) });
    assert_eq!(op("bn.bias"), Op::Param { init: Init::Fill(0.0) });
    assert_eq!(op("bn.running_var"), Op::Buffer { fill: 1.0 });
    assert_eq!(op("bn1"), Op::BatchNorm(BatchNorm { eps: 1e-3, momentum: 0.2 }));
    assert_eq!(shape_of(&g, "bn"), "[N, 4, 6, 6]");
    let bn_inputs: Vec<&str> = g.node(g.find("bn").unwrap()).inputs.iter().map(|&i| g.node(i).name.as_str()).collect();
    assert_eq!(bn_inputs, ["conv", "bn.running_mean", "bn.running_var", "bn.weight", "bn.bias"]);

    let layer =
        |decl: &str, input: &str| format!("struct M {{ bn: {decl} }} fn forward(x: {input}) -> {input} {{ bn(x) }}");
    one_error(&layer("BatchNorm2d(5)", "[N, 4, 6, 6]"), &["bn expects 5 input channels but receives 4"]);
    one_error(&layer("BatchNorm2d(4)", "[N, 4]"), &["bn expects a 4-D [N, C, H, W] input but receives [N, 4]"]);
    one_error(&layer("BatchNorm1d(4)", "[N, 4, 2, 2]"), &["a 2-D [N, C] or 3-D [N, C, L] input"]);
    one_error(
        &layer("BatchNorm1d(4, track_running_stats = false)", "[N, 4]"),
        &["`track_running_stats`", "must be true"],
    );
    one_error(&layer("BatchNorm1d(4, momentum = 2.0)", "[N, 4]"), &["`momentum`", "must be in [0, 1], got 2"]);
    one_error(&layer("BatchNorm1d(4, eps = 0)", "[N, 4]"), &["`eps`", "must be positive"]);
    compile_str(&layer("BatchNorm1d(4)", "[N, 4, 3]")).expect("[N, C, L] is normalised per channel");
}

/// The ResNet recipe's net declares what PyTorch's does: 9 convolutions
/// without bias, 9 batch normalisations (4 state_dict entries each) and a
/// linear head, 32x32 down to 8x8.
#[test]
fn the_resnet_example_declares_pytorchs_state_dict() {
    let g = compile_str(include_str!("../../examples/resnet.net")).expect("examples/resnet.net compiles").graph;
    let keys: Vec<&str> = g.params.iter().map(|&p| g.node(p).name.as_str()).collect();
    assert_eq!(keys.len(), 9 + 9 * 4 + 2, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k.ends_with(".running_var")).count(), 9);
    assert!(!keys.iter().any(|k| k.starts_with('c') && k.ends_with(".bias")), "convolutions have no bias: {keys:?}");
    assert_eq!(shape_of(&g, "c3b"), "[N, 128, 8, 8]");
    let params: usize = g.params.iter().map(|&p| g.node(p).shape.numel_at(1)).sum();
    // 3*32*9 + 2*32*32*9 + 32*64*9 + 64*64*9 + 32*64 + 64*128*9 + 128*128*9 + 64*128 + 1290,
    // plus 4 per normalised channel.
    let convs = 864 + 2 * 9216 + 18432 + 36864 + 2048 + 73728 + 147456 + 8192;
    let norms = 4 * (32 * 3 + 64 * 3 + 128 * 3);
    assert_eq!(params, convs + norms + 1290);
}

#[test]
fn dropout_layer_and_function() {
    let src =
        "struct M { d: Dropout(0.3), fc: Linear(4, 4) } fn forward(x: [N, 4]) -> [N, 4] { dropout(d(fc(x)), p = 0.1) }";
    let g = compile_str(src).expect("valid").graph;
    let ps: Vec<f32> = g
        .dag()
        .node_weights()
        .filter_map(|n| match n.op {
            Op::Dropout { p } => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(ps, vec![0.3, 0.1]);
    compile_str("struct M { d: Dropout() } fn forward(x: [N, 4]) -> [N, 4] { d(x) }").expect("p defaults to 0.5");
    one_error(
        "struct M { d: Dropout(1.5) } fn forward(x: [N, 4]) -> [N, 4] { d(x) }",
        &["`p`", "must be in [0, 1], got 1.5"],
    );
    one_error("struct M { } fn forward(x: [N, 4]) -> [N, 4] { dropout(x, p = -1) }", &["`p`", "must be in [0, 1]"]);
}

#[test]
fn duplicate_name() {
    one_error(
        "struct M { fc: Linear(4, 4), fc: Linear(4, 2) } fn forward(x: [N, 4]) -> [N, 4] { fc(x) }",
        &["`fc` is declared more than once"],
    );
}

#[test]
fn undefined_variable() {
    one_error("struct M { fc: Linear(4, 2) } fn forward(x: [N, 4]) -> [N, 2] { fc(y) }", &["undefined variable `y`"]);
}

#[test]
fn wrong_output_annotation() {
    let src = LENET.replace("-> [N, 10]", "-> [N, 12]");
    one_error(&src, &["forward declares output 0 as [N, 12] but it is [N, 10]"]);
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let src = "struct M { a: Linear(3, 4), a: Linear(4, 2), b: Conv9d(1) }
               fn forward(x: [N, 4]) -> [N, 2] { let y = a(x); let z = q(y); a(w) }";
    let d = errors(src);
    let msgs: Vec<String> = d.errors().map(|e| e.error.to_string()).collect();
    for f in [
        "declared more than once",
        "unknown layer type `Conv9d`",
        "a expects 3 input features but receives 4",
        "unknown layer or op `q`",
        "undefined variable `w`",
    ] {
        assert!(msgs.iter().any(|m| m.contains(f)), "missing {f:?} in {msgs:#?}");
    }
}

#[test]
fn unused_layer_is_a_warning() {
    let lowered = compile_str("struct M { a: Linear(4, 2), b: Linear(4, 2) } fn forward(x: [N, 4]) -> [N, 2] { a(x) }")
        .expect("valid");
    let warnings: Vec<String> = lowered.warnings.warnings().map(|w| w.error.to_string()).collect();
    assert_eq!(warnings, ["layer `b` is declared but never used in forward"]);
    // Its parameters still belong to the state_dict, as in PyTorch.
    assert!(lowered.graph.find("b.weight").is_some());
}

#[test]
fn dag_with_skip_concat_shared_layer_and_options() {
    let src = "
        // A small DAG exercising the language.
        struct Net {
            stem: Conv2d(3, 8, 3, padding = 1, padding_mode = replicate),
            body: Conv2d(8, 8, (3, 1), padding = (1, 0), bias = false),
            down: AvgPool2d(2),
            up: Upsample(scale_factor = 2, mode = bilinear, align_corners = true),
            head: Linear(16 * 8 * 8, 10),
        }
        fn forward(x: [N, 3, 16, 16]) -> ([N, 10], [N, 16, 16, 16]) {
            let a = relu(stem(x));
            let b = body(body(a));
            let s = a + b;
            let m = s * sigmoid(b) - leaky_relu(a, negative_slope = 0.2);
            let c = cat([m, elu(up(down(s)), alpha = 0.5)], 1);
            let y = head(down(c).flatten(1));
            (y, c)
        }";
    let g = graph(src);
    assert_eq!(g.outputs.len(), 2);
    assert_eq!(shape_of(&g, "c"), "[N, 16, 16, 16]");
    assert_eq!(shape_of(&g, "body_1"), "[N, 8, 16, 16]");
    assert!(g.find("body.bias").is_none());
    assert_eq!(shape_of(&g, "head"), "[N, 10]");
}

#[test]
fn reshape_with_minus_one_and_broadcasting() {
    let g =
        graph("struct M { } fn forward(x: [N, 2, 3, 4], b: [3, 1]) -> [N, 24] { let s = x + b; s.reshape([-1, 24]) }");
    assert_eq!(shape_of(&g, "s"), "[N, 2, 3, 4]");
    one_error(
        "struct M { } fn forward(x: [N, 2, 3], b: [2]) -> [N, 2, 3] { x + b }",
        &["cannot broadcast [N, 2, 3] with [2]"],
    );
    one_error(
        "struct M { } fn forward(x: [N, 6]) -> [N, 4] { x.reshape([N, 4]) }",
        &["cannot reshape [N, 6] to [N, 4]"],
    );
}

#[test]
fn syntax_errors_have_positions() {
    let d = errors("struct M { a: Linear(4, 2) }\nfn forward(x: [N, 4]) -> [N, 2] {\n  let y = a(x)\n  y\n}");
    assert_eq!(d.0.len(), 1);
    let (line, _) = d.0[0].line_column();
    assert_eq!(line, 4, "{d}");
    let d = errors("struct M { a: Linear(4, 2) } fn forward(x: [N, 4]) -> [N, 2] { a(x) } trailing");
    assert!(d.to_string().contains("unexpected tokens"), "{d}");
    let d = errors("struct M { a: Linear(4, 2 } fn forward");
    assert!(!d.0.is_empty());
}
