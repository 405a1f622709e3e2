//! The kernel IR text form round-trips every program kiln builds: the
//! programs `jit::plan` produces for the lecture's LeNet and the benchmark
//! suite's nets, forward and training, at two batch sizes and two thread
//! counts, and hand-written programs using every form the IR has.

use kiln_compiler::autodiff::derive_training;
use kiln_compiler::frontend::compile_str;
use kiln_compiler::graph::{Graph, NodeId};
use kiln_compiler::jit::{self, JitOptions};
use kiln_compiler::kernel::*;
use kiln_compiler::ops::{Activation, GeluForm, Loss, Sgd};
use kiln_compiler::target::{ProductIsa, Target, TileSource};

/// `text` parses back to `program` and prints back to itself, byte for byte.
/// (Text identity also pins every `f32`'s sign and NaN bits, which
/// `PartialEq` does not see.)
fn assert_round_trip(program: &Program, what: &str) -> String {
    let text = write_program(program);
    let back = match parse_program(&text) {
        Ok(p) => p,
        Err(e) => {
            let line = text.lines().nth(e.line.saturating_sub(1)).unwrap_or("");
            panic!("{what}: {e}\n  | {line}");
        }
    };
    assert!(back == *program, "{what}: parsed program differs from the original");
    assert_eq!(write_program(&back), text, "{what}: text changed on the second trip");
    text
}

fn forward_graph(source: &str) -> Graph {
    compile_str(source).unwrap_or_else(|d| panic!("{d:?}")).graph
}

/// Plans `graph` at batches 4 and 3 with 1 and 2 threads and checks each
/// program; returns the texts.
fn round_trip_plans(graph: &Graph, what: &str) -> Vec<String> {
    let mut texts = Vec::new();
    // Both product paths, whatever this CPU has (planning emits no code).
    for target in [Target::host_128(), Target::host_128().with_products(ProductIsa::Avx512)] {
        for batch in [4, 3] {
            for threads in [1, 2] {
                let options = JitOptions { threads, input_grads: true, target: Some(target), ..JitOptions::default() };
                let (program, _) = jit::plan(graph, batch, &options).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(!program.kernels.is_empty());
                let case = format!("{what} {} batch {batch} threads {threads}", target.products);
                texts.push(assert_round_trip(&program, &case));
            }
        }
    }
    texts
}

fn round_trip_net(source: &str, what: &str) -> Vec<String> {
    let forward = forward_graph(source);
    let mut texts = round_trip_plans(&forward, &format!("{what} forward"));
    let sgd = Sgd { lr: 0.01, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
    let training = derive_training(&forward, Loss::CrossEntropy, sgd).expect("derive_training");
    texts.extend(round_trip_plans(&training, &format!("{what} training")));
    texts
}

#[test]
fn lecture_lenet_round_trips() {
    let texts = round_trip_net(include_str!("../../examples/lenet.net"), "examples/lenet.net");
    // The training program holds matrix products with fused epilogues
    // (texts: forward, then training, each 128-bit then AVX-512 products).
    let training = &texts[8];
    assert!(texts[12].contains("tile micro avx512 rows"), "no micro tile in LeNet's AVX-512 training program");
    if let Ok(path) = std::env::var("KIR_TEXT_DUMP") {
        std::fs::write(path, training).expect("dump");
    }
    for needle in [
        "gemm m ",
        "tile outer",
        "bias per_",
        "activation relu",
        "grad_mask relu",
        "vector {",
        " as_scheduled {",
        " written_out",
        " tail ",
        " chains 4",
    ] {
        assert!(training.contains(needle), "no `{needle}` in LeNet's training program");
    }
}

#[test]
fn suite_mlp_round_trips() {
    round_trip_net(include_str!("../../bench/nets/mlp.net"), "bench/nets/mlp.net");
}

#[test]
fn suite_lenet_round_trips() {
    round_trip_net(include_str!("../../bench/nets/lenet.net"), "bench/nets/lenet.net");
}

#[test]
fn suite_resnet_ish_round_trips() {
    round_trip_net(include_str!("../../bench/nets/resnet_ish.net"), "bench/nets/resnet_ish.net");
}

#[test]
fn suite_vgg16c_round_trips() {
    round_trip_net(include_str!("../../bench/nets/vgg16c.net"), "bench/nets/vgg16c.net");
}

#[test]
fn suite_wide5_round_trips() {
    round_trip_net(include_str!("../../bench/nets/wide5.net"), "bench/nets/wide5.net");
}

/// Activations with parameters, bilinear upsampling (constant weight
/// tables) and concatenation, built by kiln itself.
#[test]
fn parametrised_activations_and_tables_round_trip() {
    let source = "
        struct M {
            conv: Conv2d(3, 4, 3, padding = 1),
            up: Upsample(scale_factor = 2, mode = bilinear, align_corners = false),
            act: ELU(alpha = 0.5),
            fc: Linear(8 * 8 * 8, 10),
        }
        fn forward(x: [N, 3, 4, 4]) -> [N, 10] {
            let y = leaky_relu(conv(x), negative_slope = 0.125);
            let z = cat([sigmoid(y), act(y)], 1);
            let z = up(z).flatten(1);
            fc(z)
        }";
    let texts = round_trip_net(source, "inline net");
    let all = texts.concat();
    for needle in ["activation leaky_relu(0.125)", "const_f32", "const_i32"] {
        assert!(all.contains(needle), "no `{needle}` in the inline net's programs");
    }
}

// Hand-written programs: every expression form, every gemm field.

fn b(x: Idx) -> Box<Idx> {
    Box::new(x)
}

fn buffer(name: &str, len: usize, kind: BufferKind, per_thread: bool) -> Buffer {
    Buffer { name: name.to_string(), len, kind, per_thread }
}

fn kernel(name: &str, body: Vec<Stmt>) -> Kernel {
    Kernel {
        name: name.to_string(),
        nodes: vec![NodeId::new(0), NodeId::new(u32::MAX as usize - 1)],
        body,
        reads: vec![0, 1, 2, 3],
        writes: vec![4],
        in_place: vec![(0, 4), (1, 4)],
        flops: u64::MAX,
        threads: 3,
        emission: Emission::AsScheduled,
    }
}

/// Five buffers: a leaf, a value, per-thread scratch and two constant
/// tables whose `f32`s include every awkward value.
fn buffers() -> Vec<Buffer> {
    let awkward = vec![
        0.0,
        -0.0,
        1.0,
        -1.5,
        0.1,
        1e-7,
        1e30,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        f32::from_bits(1), // the smallest subnormal
        f32::INFINITY,
        f32::NEG_INFINITY,
        std::f32::consts::PI,
    ];
    vec![
        buffer("x \"input\"", 64, BufferKind::Leaf(NodeId::new(0)), false),
        buffer("conv1+relu.out 2", 64, BufferKind::Value(NodeId::new(7)), false),
        buffer("pack\\panel\n\t", 32, BufferKind::Scratch, true),
        buffer("weights", awkward.len(), BufferKind::ConstF32(awkward), false),
        buffer("taps", 5, BufferKind::ConstI32(vec![0, -1, i32::MAX, i32::MIN, 28]), false),
    ]
}

fn program(kernels: Vec<Kernel>) -> Program {
    Program {
        buffers: buffers(),
        kernels,
        values: vec![(NodeId::new(7), 1), (NodeId::new(0), 0)],
        updates: vec![(0, 1), (0, 0)],
        offsets: vec![0, 64, 128, 160, 174],
        arena_len: 179,
        threads: 3,
        target: Target {
            vector_lanes: 8,
            vector_registers: 32,
            fma: false,
            l1d_bytes: 32768,
            l2_bytes: 1 << 20,
            products: ProductIsa::Avx512,
            tiles: TileSource::Measured,
        },
    }
}

/// Every `Idx`, `Val` and `Cond` form, nested so that the printer must
/// parenthesise operands on either side.
fn every_expression() -> Vec<Stmt> {
    let (v0, v1) = (Idx::Var(0), Idx::Var(1));
    let idx_left = Idx::Add(b(v0.clone()), b(Idx::Add(b(Idx::Const(-3)), b(Idx::Mul(b(v1.clone()), -2)))));
    let idx_nested =
        Idx::Rem(b(Idx::Div(b(Idx::Mul(b(Idx::Add(b(v0.clone()), b(Idx::Const(i64::MIN)))), i64::MAX)), 7)), 3);
    let idx_calls = Idx::Min(
        b(Idx::Max(b(Idx::Table(4, b(v1.clone()))), b(Idx::FloatTable(1, b(idx_nested.clone()))))),
        b(Idx::Xor(b(Idx::Mul(b(Idx::Const(5)), 4)), b(Idx::Div(b(v0.clone()), 65536)))),
    );
    let val = |x: Val| Box::new(x);
    let load = Val::Load(0, idx_left.clone());
    let arith = Val::Bin(
        BinOp::Sub,
        val(Val::Bin(BinOp::Add, val(load.clone()), val(Val::Const(-0.0)))),
        val(Val::Bin(
            BinOp::Sub,
            val(Val::Acc(0)),
            val(Val::Bin(
                BinOp::Div,
                val(Val::Const(2.5)),
                val(Val::Bin(BinOp::Mul, val(Val::Acc(1)), val(load.clone()))),
            )),
        )),
    );
    let unaries = [UnOp::Neg, UnOp::Exp, UnOp::Ln, UnOp::Tanh, UnOp::Relu]
        .into_iter()
        .fold(Val::FromIdx(idx_calls.clone()), |x, op| x.un(op));
    let cond = Cond::Or(
        Box::new(Cond::And(
            Box::new(Cond::Index(Cmp::Lt, idx_left.clone(), idx_calls.clone())),
            Box::new(Cond::Or(
                Box::new(Cond::Value(Cmp::Le, val(arith.clone()), val(Val::Const(f32::NEG_INFINITY)))),
                Box::new(Cond::IsNan(val(Val::Acc(2)))),
            )),
        )),
        Box::new(Cond::Or(
            Box::new(Cond::Index(Cmp::Eq, v0.clone(), Idx::Const(0))),
            Box::new(Cond::And(
                Box::new(Cond::Value(Cmp::Gt, val(Val::Const(1.0)), val(Val::Acc(0)))),
                Box::new(Cond::Index(Cmp::Ge, v1.clone(), Idx::Const(-1))),
            )),
        )),
    );
    let select = Val::Select(Box::new(cond.clone()), val(unaries.clone()), val(Val::Const(f32::INFINITY)));
    vec![Stmt::lp(
        0,
        8,
        LoopMode::Parallel,
        vec![
            Stmt::Let { acc: 0, init: Val::Const(0.0) },
            Stmt::Let { acc: 1, init: Val::Const(f32::MIN) },
            Stmt::Let { acc: 2, init: Val::Const(1e-7) },
            Stmt::lp(
                1,
                13,
                LoopMode::Vector,
                vec![
                    Stmt::Reduce { acc: 0, op: RedOp::Add, val: arith.clone() },
                    Stmt::Reduce { acc: 1, op: RedOp::Max, val: load.clone() },
                    Stmt::Set { acc: 2, val: select },
                    Stmt::If {
                        cond: cond.clone(),
                        then: vec![Stmt::store(4, idx_nested.clone(), Val::Acc(0))],
                        otherwise: vec![Stmt::store_add(4, idx_calls.clone(), unaries)],
                    },
                    Stmt::If { cond: Cond::IsNan(val(Val::Acc(1))), then: vec![], otherwise: vec![] },
                ],
            ),
            Stmt::lp(2, 0, LoopMode::Serial, vec![]),
        ],
    )]
}

#[test]
fn every_expression_form_round_trips() {
    let p = program(vec![kernel("exprs", every_expression())]);
    let text = assert_round_trip(&p, "every expression");
    for needle in [
        "v0 + (-3 + v1 * -2)",
        "(v0 + -9223372036854775808) * 9223372036854775807 / 7 % 3",
        "int(%1[",
        "min(max(%4[v1], ",
        "a1 max= %0[",
        "for v2 in 0..0 {",
        "for v1 in 0..13 vector {",
        "-0.0",
        "\"pack\\\\panel\\n\\t\" len 32 per_thread @ 128",
    ] {
        assert!(text.contains(needle), "no `{needle}` in\n{text}");
    }
}

fn matrix(buf: BufId, offset: Idx, row_stride: i64, col_stride: i64) -> MatrixRef {
    MatrixRef { buf, offset, row_stride, col_stride }
}

fn plain_gemm(tile: GemmTile) -> Gemm {
    Gemm {
        m: 6,
        n: 16,
        k: 25,
        a: matrix(3, Idx::Const(0), 25, 1),
        b: matrix(0, Idx::Var(0) * 64i64, 16, 1),
        b_rows: None,
        k_split: None,
        b_wrap: None,
        c_rows: None,
        c_wrap: None,
        a_splat: false,
        c: matrix(1, Idx::Var(0) * 96i64, 16, 1),
        epilogue: Epilogue::default(),
        tile,
    }
}

/// One product per optional field (and one with none), plus one with all.
fn gemm_variants() -> Vec<Gemm> {
    let outer = GemmTile::Outer { rows: 6, vectors: 2, unroll: 4 };
    let dot = GemmTile::Dot { rows: 2, cols: 3, steps: DotSteps::Rolled(5) };
    let wrap = ColumnWrap { row: 10, stride: -14 };
    let activations = [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Step,
        Activation::LeakyRelu(0.01),
        Activation::Elu(-0.0),
        Activation::Gelu(GeluForm::Exact),
        Activation::Gelu(GeluForm::Tanh),
        Activation::Silu,
    ];
    let micro = GemmTile::Micro { isa: ProductIsa::Avx2, rows: 6, vectors: 2, transposed: false };
    let transposed = GemmTile::Micro { isa: ProductIsa::Avx512, rows: 12, vectors: 1, transposed: true };
    let mut variants = vec![plain_gemm(outer), plain_gemm(dot), plain_gemm(micro), plain_gemm(transposed)];
    let mut with = |f: &dyn Fn(&mut Gemm)| {
        let mut g = plain_gemm(outer);
        f(&mut g);
        variants.push(g);
    };
    with(&|g| g.b_rows = Some(4));
    with(&|g| g.k_split = Some(KSplit { outer: 5, a_stride: 5, b_stride: -32 }));
    with(&|g| g.b_wrap = Some(wrap));
    with(&|g| g.c_rows = Some(4));
    with(&|g| g.c_wrap = Some(wrap));
    with(&|g| g.a_splat = true);
    with(&|g| g.epilogue.accumulate = true);
    with(&|g| g.epilogue.bias = Some(Bias::PerRow(2, Idx::Const(3))));
    with(&|g| g.epilogue.bias = Some(Bias::PerColumn(2, Idx::Var(0) + 1i64)));
    with(&|g| g.epilogue.pre_activation = Some(matrix(2, Idx::Var(0), -16, 2)));
    for a in activations {
        with(&|g| g.epilogue.activation = Some(a));
        with(&|g| g.epilogue.grad_mask = Some((a, matrix(1, Idx::Const(-5), 1, 16))));
    }
    let mut all = plain_gemm(dot);
    all.b_rows = Some(4);
    all.k_split = Some(KSplit { outer: 3, a_stride: 8, b_stride: 28 });
    all.b_wrap = Some(wrap);
    all.c_rows = Some(4);
    all.c_wrap = Some(ColumnWrap { row: 24, stride: 28 });
    all.a_splat = true;
    all.epilogue = Epilogue {
        accumulate: true,
        bias: Some(Bias::PerColumn(3, Idx::Const(0))),
        activation: Some(Activation::LeakyRelu(f32::MIN_POSITIVE)),
        pre_activation: Some(matrix(2, Idx::Var(0) * 4i64, 4, 1)),
        grad_mask: Some((Activation::Elu(1e-7), matrix(1, Idx::Const(0), 16, 1))),
    };
    variants.push(all);
    variants
}

#[test]
fn every_gemm_field_round_trips() {
    let variants = gemm_variants();
    let count = variants.len();
    let body =
        vec![Stmt::lp(0, 4, LoopMode::Parallel, variants.into_iter().map(|g| Stmt::Gemm(Box::new(g))).collect())];
    let p = program(vec![kernel("gemms", body)]);
    let text = assert_round_trip(&p, "gemm variants");
    assert_eq!(text.matches("gemm m 6 n 16 k 25 {").count(), count);
    for field in [
        "tile dot rows 2 cols 3 steps 5",
        "b_rows %4",
        "k_split outer 5 a_stride 5 b_stride -32",
        "b_wrap row 10 stride -14",
        "c_rows %4",
        "c_wrap row 24 stride 28",
        "a_splat",
        "accumulate",
        "bias per_row %2[3]",
        "bias per_column %2[v0 + 1]",
        "pre_activation %2[v0] stride -16 2",
        "activation elu(-0.0)",
        "grad_mask step %1[-5] stride 1 16",
        "activation leaky_relu(1.1754944e-38)",
    ] {
        assert!(text.contains(field), "no `{field}` in\n{text}");
    }
}

/// A loop of `mode` with its lowering decisions replaced.
fn decided(var: VarId, extent: usize, mode: LoopMode, lowering: LoopLowering, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop(Loop { var, extent, mode, body, lowering })
}

#[test]
fn every_lowering_decision_round_trips() {
    let store = |var: VarId| vec![Stmt::store(4, Idx::Var(var), Val::Const(1.0))];
    let d = LoopLowering::default;
    let body = vec![
        Stmt::Let { acc: 0, init: Val::Const(0.0) },
        Stmt::Let { acc: 3, init: Val::Const(0.0) },
        decided(0, 2, LoopMode::Serial, LoopLowering { keep_partials: vec![3, 0], chains: 4, ..d() }, {
            vec![
                decided(1, 7, LoopMode::Vector, LoopLowering { tail: VectorTail::Overlap, chains: 2, ..d() }, store(1)),
                decided(2, 64, LoopMode::Vector, LoopLowering { copies: 4, tail: VectorTail::None, ..d() }, store(2)),
                decided(
                    3,
                    9,
                    LoopMode::Vector,
                    LoopLowering { unroll: Unroll::WrittenOut, tail: VectorTail::Scalar, ..d() },
                    store(3),
                ),
                decided(4, 3, LoopMode::Vector, LoopLowering { tail: VectorTail::ScalarWrittenOut, ..d() }, store(4)),
                decided(5, 3, LoopMode::Serial, LoopLowering { unroll: Unroll::WrittenOut, ..d() }, store(5)),
            ]
        }),
    ];
    let mut split = plain_gemm(GemmTile::Dot { rows: 1, cols: 2, steps: DotSteps::WrittenOut });
    split.k_split = Some(KSplit { outer: 5, a_stride: 5, b_stride: 7 });
    let mut p = program(vec![kernel("decisions", body), kernel("product", vec![Stmt::Gemm(Box::new(split))])]);
    p.kernels[0].emission = Emission::Optimised;
    let text = assert_round_trip(&p, "lowering decisions");
    for needle in [
        "kernel 0 \"decisions\" threads 3 flops 18446744073709551615 {",
        "kernel 1 \"product\" threads 3 flops 18446744073709551615 as_scheduled {",
        "for v0 in 0..2 chains 4 keep [a3, a0] {",
        "for v1 in 0..7 vector tail overlap chains 2 {",
        "for v2 in 0..64 vector copies 4 {",
        "for v3 in 0..9 vector written_out tail scalar {",
        "for v4 in 0..3 vector tail scalar_written_out {",
        "for v5 in 0..3 written_out {",
        "tile dot rows 1 cols 2 steps written_out",
    ] {
        assert!(text.contains(needle), "no `{needle}` in\n{text}");
    }
}

#[test]
fn nan_constants_keep_their_bits() {
    let nans = [f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001), f32::from_bits(0xffc0_1234)];
    let mut p =
        program(vec![kernel("nan", vec![Stmt::store(4, Idx::Const(0), Val::Const(f32::from_bits(0x7fa0_0000)))])]);
    p.buffers[3].kind = BufferKind::ConstF32(nans.to_vec());
    let text = write_program(&p);
    assert!(text.contains("[nan(0x7fc00000), nan(0xffc00000), nan(0x7f800001), nan(0xffc01234)]"), "{text}");
    let back = parse_program(&text).expect("parse");
    let BufferKind::ConstF32(data) = &back.buffers[3].kind else { panic!("kind changed") };
    assert_eq!(data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), nans.map(f32::to_bits));
    let [Stmt::Store { val: Val::Const(c), .. }] = back.kernels[0].body.as_slice() else { panic!("body changed") };
    assert_eq!(c.to_bits(), 0x7fa0_0000);
    assert_eq!(write_program(&back), text);
}

#[test]
fn offsets_not_one_per_buffer_get_their_own_line() {
    let mut p = program(vec![]);
    p.offsets.clear();
    let text = assert_round_trip(&p, "no offsets");
    assert!(text.contains("\noffsets []\n") && !text.contains(" @ "), "{text}");
    p.offsets = vec![1, 2];
    let text = assert_round_trip(&p, "two offsets for five buffers");
    assert!(text.contains("\noffsets [1, 2]\n"), "{text}");
}

#[test]
fn empty_program_round_trips() {
    let p = Program {
        buffers: vec![],
        kernels: vec![],
        values: vec![],
        updates: vec![],
        offsets: vec![],
        arena_len: 0,
        threads: 1,
        target: Target::baseline(),
    };
    assert_eq!(assert_round_trip(&p, "empty program"), "program threads 1 arena 0\n");
    // Any other target is written out and read back.
    let wide = Program { target: Target::baseline().with_lanes(16), ..p };
    assert_eq!(
        assert_round_trip(&wide, "16-lane program"),
        "program threads 1 arena 0 target lanes 16 registers 32 l1d 32768 l2 1048576\n"
    );
}

#[test]
fn inspect_emits_the_compiled_program_as_kir() {
    let graph = forward_graph(include_str!("../../examples/lenet.net"));
    let options = JitOptions { threads: 1, ..JitOptions::default() };
    let exe = jit::compile(&graph, 2, &options).expect("compile");
    let text = exe.inspect(jit::Emit::Kir);
    assert!(parse_program(&text).expect("inspect's text parses") == *exe.program());
    assert_eq!(text, write_program(exe.program()));
}
