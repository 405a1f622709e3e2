//! Which path each heavy op of the benchmark nets takes through the kernel
//! builder and the scheduler, pinned per net so that a change that sends a
//! net down a slower path (explicit im2col packing instead of a row table,
//! a serial kernel instead of a parallel one, a smaller register tile)
//! fails here with a readable diff instead of only showing up in `kiln
//! bench`.
//!
//! Each net is planned with `jit::plan` (4 threads, no input gradients,
//! products on AVX-512) at
//! batch 4 and 64, forward and training (cross-entropy, SGD with momentum),
//! and summarised in a few lines: one header of counts, then one line per
//! kernel that holds a matrix product, packs an operand, or prepares one
//! (weight splats and transposes, partial-sum combines, update copies):
//!
//! ```text
//! kernels 12, gemm 5, parallel 6 (x4: 6)
//! conv1.splat_weight: serial
//! conv1+relu: x4 over 4 | outer 6x1 u3 b_rows a_splat
//! pad+relu: x4 over 4 | pack im2col | outer 8x1 u3
//! ```
//!
//! - `xT over E`: the kernel's outermost loop of E iterations runs on T
//!   threads (`serial`: one thread, no parallel loop).
//! - `pack im2col` / `pack dcol`: the kernel writes a per-thread packing
//!   buffer (explicit im2col for a convolution, or the column matrix an
//!   input gradient scatters back from): the slow path for convolutions.
//! - `pad copy`: the kernel copies each image with its padding written out
//!   (one pass over the image) for a product that reads it in place.
//! - `phase copy`: the kernel copies each image split into its stride
//!   phases (space to depth), so a strided conv's product reads adjacent
//!   columns in place.
//! - `outer RxV uU` / `dot RxC` / `micro ISA RxV`: the register tile of
//!   each product (a call to the ISA's micro-kernels for `micro`), then
//!   its layout flags: `b_rows` (B read in place through a row table:
//!   implicit im2col), `b_wrap` (B's columns wrap from input row to input
//!   row), `k_split` (a dot tile's reduction split along output rows),
//!   `k_wraps` (and its vector steps run across rows), `c_rows` and
//!   `c_wrap` (C scattered into the image: col2im fused), `a_splat` (A
//!   pre-splatted to `f32x4`).
//!
//! The expected paths and why each net takes them are documented at each
//! net's table below.

use kiln_compiler::autodiff::derive_training;
use kiln_compiler::frontend::compile_str;
use kiln_compiler::graph::Graph;
use kiln_compiler::jit::{self, JitOptions};
use kiln_compiler::kernel::{BufferKind, Gemm, GemmTile, Kernel, Program};
use kiln_compiler::ops::{Loss, Sgd};
use kiln_compiler::target::{ProductIsa, Target};
use std::collections::BTreeMap;

/// Threads every net is planned for (a typical desktop; planning spawns none).
const THREADS: usize = 4;

fn forward_graph(source: &str, what: &str) -> Graph {
    compile_str(source).unwrap_or_else(|d| panic!("{what}: {d:?}")).graph
}

fn training_graph(forward: &Graph) -> Graph {
    let sgd = Sgd { lr: 0.01, momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
    derive_training(forward, Loss::CrossEntropy, sgd).expect("derive_training")
}

/// The target every net is planned for, whatever the CPU running the test:
/// Cranelift's 128-bit vectors with products on AVX-512 (planning emits no
/// code, so it needs no AVX-512 here; the differential tests run each ISA
/// the CPU has).
fn target() -> Target {
    Target::host_128().with_products(ProductIsa::Avx512)
}

fn planned(graph: &Graph, batch: usize, what: &str) -> Program {
    let options = JitOptions { threads: THREADS, target: Some(target()), ..JitOptions::default() };
    jit::plan(graph, batch, &options).unwrap_or_else(|e| panic!("{what}: {e}")).0
}

/// `outer 8x1 u3 b_rows a_splat`: the tile and the layout flags that set
/// the product's path.
fn describe_gemm(g: &Gemm) -> String {
    let mut text = match g.tile {
        GemmTile::Outer { rows, vectors, unroll } => format!("outer {rows}x{vectors} u{unroll}"),
        GemmTile::Dot { rows, cols, .. } => format!("dot {rows}x{cols}"),
        GemmTile::Micro { isa, rows, vectors, transposed } => {
            format!("micro {isa} {rows}x{vectors}{}", if transposed { " transposed" } else { "" })
        }
    };
    let flags = [
        ("b_rows", g.b_rows.is_some()),
        ("b_wrap", g.b_wrap.is_some()),
        ("k_split", g.k_split.is_some()),
        ("k_wraps", g.k_split.is_some_and(|s| s.wraps(g.k, 4))),
        ("c_rows", g.c_rows.is_some()),
        ("c_wrap", g.c_wrap.is_some()),
        ("a_splat", g.a_splat),
    ];
    for (flag, set) in flags {
        if set {
            text.push(' ');
            text.push_str(flag);
        }
    }
    text
}

/// Kernels that exist to feed a product or finish one: found by the names
/// the builder and the memory planner give them.
fn is_helper(kernel: &Kernel) -> bool {
    [".splat_weight", ".transpose_weight", ".winograd_weight", ".combine"].iter().any(|s| kernel.name.ends_with(s))
        || kernel.name.starts_with("update ")
}

/// The copies a kernel makes of an operand before its product, from the
/// scratch it writes: `pack im2col` / `pack dcol` (a packed matrix, once
/// per kernel tap) or `pad copy` (the image with its padding written out,
/// once per element).
fn packs(program: &Program, kernel: &Kernel) -> Vec<&'static str> {
    let mut found = Vec::new();
    for &b in &kernel.writes {
        let buffer = &program.buffers[b];
        if buffer.kind != BufferKind::Scratch {
            continue;
        }
        for (suffix, label) in [
            (".im2col", "pack im2col"),
            (".dcol", "pack dcol"),
            (".padded", "pad copy"),
            (".phases", "phase copy"),
            (".winograd_rows", "winograd rows"),
        ] {
            if buffer.name.ends_with(suffix) && !found.contains(&label) {
                found.push(label);
            }
        }
    }
    found
}

fn summary(program: &Program) -> String {
    let mut lines = Vec::new();
    let mut gemm_kernels = 0;
    let mut by_threads: BTreeMap<usize, usize> = BTreeMap::new();
    for kernel in &program.kernels {
        let products = kernel.gemms();
        let packed = packs(program, kernel);
        if !products.is_empty() {
            gemm_kernels += 1;
        }
        let threads = match kernel.parallel_extent() {
            Some(extent) => {
                *by_threads.entry(kernel.threads).or_default() += 1;
                format!("x{} over {extent}", kernel.threads)
            }
            None => "serial".to_string(),
        };
        if products.is_empty() && packed.is_empty() && !is_helper(kernel) {
            continue;
        }
        let mut line = format!("{}: {threads}", kernel.name);
        for pack in packed {
            line.push_str(&format!(" | {pack}"));
        }
        // Equal products one after another (a transformed convolution's
        // four) as one entry with their count.
        let mut described: Vec<(String, usize)> = Vec::new();
        for g in products {
            let text = describe_gemm(g);
            match described.last_mut() {
                Some((last, count)) if *last == text => *count += 1,
                _ => described.push((text, 1)),
            }
        }
        for (text, count) in described {
            let times = if count > 1 { format!(" x{count}") } else { String::new() };
            line.push_str(&format!(" | {text}{times}"));
        }
        lines.push(line);
    }
    let parallel: usize = by_threads.values().sum();
    let histogram: Vec<String> = by_threads.iter().map(|(t, n)| format!("x{t}: {n}")).collect();
    let header = format!(
        "kernels {}, gemm {gemm_kernels}, parallel {parallel} ({})",
        program.kernels.len(),
        histogram.join(", ")
    );
    std::iter::once(header).chain(lines).collect::<Vec<_>>().join("\n")
}

/// Summaries of a net: forward at batch 4 and 64, then training at 4 and 64.
fn summaries(source: &str, what: &str) -> [String; 4] {
    let forward = forward_graph(source, what);
    let training = training_graph(&forward);
    [
        summary(&planned(&forward, 4, &format!("{what} forward batch 4"))),
        summary(&planned(&forward, 64, &format!("{what} forward batch 64"))),
        summary(&planned(&training, 4, &format!("{what} training batch 4"))),
        summary(&planned(&training, 64, &format!("{what} training batch 64"))),
    ]
}

/// Compares line by line and reports every differing line, with both
/// summaries in full (the actual one ready to paste into the table).
fn assert_paths(what: &str, actual: &[String; 4], expected: [&str; 4]) {
    const CASES: [&str; 4] = ["forward batch 4", "forward batch 64", "training batch 4", "training batch 64"];
    let mut report = String::new();
    for ((case, actual), expected) in CASES.iter().zip(actual).zip(expected) {
        // The tables are indented in the source; summary lines never are.
        let expected: String = expected.trim().lines().map(str::trim).collect::<Vec<_>>().join("\n");
        if *actual == expected {
            continue;
        }
        report.push_str(&format!("\n{what}, {case}: the path changed\n"));
        let (a, e): (Vec<&str>, Vec<&str>) = (actual.lines().collect(), expected.lines().collect());
        for i in 0..a.len().max(e.len()) {
            let (al, el) = (a.get(i).copied().unwrap_or("<none>"), e.get(i).copied().unwrap_or("<none>"));
            if al != el {
                report.push_str(&format!("  line {}:\n    expected: {el}\n    actual:   {al}\n", i + 1));
            }
        }
        report.push_str(&format!("  actual summary:\n{actual}\n"));
    }
    assert!(report.is_empty(), "{report}");
}

// The expected paths: per net, forward at batch 4 and 64, then training
// at batch 4 and 64. A summary line: `kernel: threads | packs | products`.

/// LeNet (`bench/nets/lenet.net`; `examples/lenet.net` declares the same
/// net): the fast paths throughout, no packing anywhere.
///
/// - conv1 (5x5, no padding, unit stride) reads its input in place through
///   a row table (`b_rows`: implicit im2col), one product per image whose
///   columns wrap from input row to input row (`b_wrap`), on the
///   micro-kernels: its rows of 28 (1.75 vectors of 16) are cut into
///   blocks of their own, the last vector partial, a 6x2 tile for the 6
///   channels. conv2's rows of 10 likewise, 10x1 for its 16 channels (a
///   tile stepping through the row table has at most 10 rows).
/// - Linear layers are dot tiles, 4x2 (the batch is no multiple of 3).
/// - Training: conv2's input gradient (`grad_pool`, named after the pool
///   whose input it is) is the forward convolution of the output gradient
///   on a padded copy (`pad copy`, flipped weights), read in place as
///   conv2's forward is; the weight
///   gradients read the input in place (`b_rows k_split`), conv2's with its
///   vector steps running across rows (`k_wraps`), conv1's rows of 28 not
///   needing to; each sums per chunk of the batch (4 chunks at batch 4, 8
///   at 64) and a serial `.combine` adds the chunks. conv1's input gradient
///   is not computed (no input gradients are asked for).
/// - Parallel: every conv over the batch (or chunks). At batch 4, fc1
///   (384 kflop, over the threshold) still runs on one thread: the product
///   cannot be split, since 120 columns make blocks of 30 (`split_gemm`
///   wants multiples of 4 even for a dot tile, which does not vectorise
///   along columns) and 4 rows cannot be cut for a 4-row tile. Worth
///   fixing. fc2 and fc3 are under the 150 kflop threshold at batch 4,
///   fc3 (107 kflop) also at 64.
const LENET: [&str; 4] = [
    // forward, batch 4
    "
    kernels 7, gemm 5, parallel 2 (x4: 2)
    conv1+relu: x4 over 4 | micro avx512 6x2 b_rows b_wrap
    conv2+relu_1: x4 over 4 | micro avx512 8x1 b_rows b_wrap
    fc1+x_2: serial | dot 4x2
    fc2+x_3: serial | dot 4x2
    fc3: serial | dot 4x2
    ",
    // forward, batch 64
    "
    kernels 7, gemm 5, parallel 5 (x4: 5)
    conv1+relu: x4 over 64 | micro avx512 6x2 b_rows b_wrap
    conv2+relu_1: x4 over 64 | micro avx512 8x1 b_rows b_wrap
    fc1+x_2: x4 over 4 | micro avx512 11x2
    fc2+x_3: x4 over 4 | micro avx512 11x2
    fc3: serial | micro avx512 11x1
    ",
    // training, batch 4
    "
    kernels 37, gemm 14, parallel 7 (x4: 7)
    conv1+relu: x4 over 4 | micro avx512 6x2 b_rows b_wrap
    conv2+relu_1: x4 over 4 | micro avx512 8x1 b_rows b_wrap
    fc1+x_2: serial | dot 4x2
    fc2+x_3: serial | dot 4x2
    fc3: serial | dot 4x2
    grad_x_3+grad_fc2: serial | outer 4x1 u3
    grad_fc3.weight: serial | outer 8x1 u4
    grad_x_2+grad_fc1: serial | outer 4x1 u3
    grad_fc2.weight: serial | micro avx512 6x4
    grad_x_1: serial | micro avx512 4x2
    grad_fc1.weight: x4 over 4 | micro avx512 8x3
    grad_pool: x4 over 4 | pad copy | micro avx512 6x1 b_rows b_wrap
    grad_conv2.weight: x4 over 4 | micro avx512 10x1 transposed b_rows k_split k_wraps
    grad_conv2.weight.combine: serial
    grad_conv1.weight: x4 over 4 | dot 3x3 b_rows k_split
    grad_conv1.weight.combine: serial
    ",
    // training, batch 64
    "
    kernels 37, gemm 14, parallel 15 (x4: 15)
    conv1+relu: x4 over 64 | micro avx512 6x2 b_rows b_wrap
    conv2+relu_1: x4 over 64 | micro avx512 8x1 b_rows b_wrap
    fc1+x_2: x4 over 4 | micro avx512 11x2
    fc2+x_3: x4 over 4 | micro avx512 11x2
    fc3: serial | micro avx512 11x1
    grad_x_3+grad_fc2: serial | micro avx512 8x3
    grad_fc3.weight: serial | outer 8x1 u4
    grad_x_2+grad_fc1: x4 over 4 | micro avx512 8x2
    grad_fc2.weight: x4 over 4 | micro avx512 11x2
    grad_x_1: x4 over 4 | micro avx512 8x3
    grad_fc1.weight: x4 over 4 | micro avx512 8x3
    grad_pool: x4 over 64 | pad copy | micro avx512 6x1 b_rows b_wrap
    grad_conv2.weight: x4 over 8 | micro avx512 10x1 transposed b_rows k_split k_wraps
    grad_conv2.weight.combine: serial
    grad_conv1.weight: x4 over 8 | dot 3x3 b_rows k_split
    grad_conv1.weight.combine: serial
    ",
];

/// The MLP (`bench/nets/mlp.net`): linear layers only. Forward products
/// are 4x2 dot tiles; backward ones outer tiles (input gradients: rows =
/// the batch, at most 8; weight gradients: k = the batch, a multiple of 4,
/// so unrolled by 4). Every kernel over the threshold is split across the
/// 4 threads by columns or rows; at batch 4 fc3 and its input and weight
/// gradients (20 kflop each) stay serial.
const MLP: [&str; 4] = [
    // forward, batch 4
    "
    kernels 3, gemm 3, parallel 2 (x4: 2)
    fc1+x_2: x4 over 4 | dot 4x2
    fc2+x_3: x4 over 4 | dot 4x2
    fc3: serial | dot 4x2
    ",
    // forward, batch 64
    "
    kernels 3, gemm 3, parallel 3 (x4: 3)
    fc1+x_2: x4 over 4 | micro avx512 6x4 transposed
    fc2+x_3: x4 over 4 | micro avx512 6x4
    fc3: x4 over 4 | micro avx512 8x1
    ",
    // training, batch 4
    "
    kernels 18, gemm 8, parallel 7 (x4: 7)
    fc1+x_2: x4 over 4 | dot 4x2
    fc2+x_3: x4 over 4 | dot 4x2
    fc3: serial | dot 4x2
    grad_x_3+grad_fc2: serial | micro avx512 4x4
    grad_fc3.weight: serial | micro avx512 5x4
    grad_x_2+grad_fc1: x4 over 4 | micro avx512 4x4
    grad_fc2.weight: x4 over 4 | micro avx512 6x4
    grad_fc1.weight: x4 over 4 | micro avx512 6x4
    ",
    // training, batch 64
    "
    kernels 18, gemm 8, parallel 10 (x4: 10)
    fc1+x_2: x4 over 4 | micro avx512 6x4 transposed
    fc2+x_3: x4 over 4 | micro avx512 6x4
    fc3: x4 over 4 | micro avx512 8x1
    grad_x_3+grad_fc2: x4 over 4 | micro avx512 6x4
    grad_fc3.weight: x4 over 4 | micro avx512 5x4
    grad_x_2+grad_fc1: x4 over 4 | micro avx512 6x4
    grad_fc2.weight: x4 over 4 | micro avx512 6x4
    grad_fc1.weight: x4 over 4 | micro avx512 6x4
    ",
];

/// VGG16c (`bench/nets/vgg16c.net`): all three convs are 3x3, padded by
/// one. Forward, each image is copied once with its zero border written out
/// (`pad copy`, `passes::layout`), and the product reads that copy in place
/// through a row table on the micro-kernels (`b_rows b_wrap`), instead of
/// packing an im2col nine times the image's size. In training the input
/// gradients of conv2 and conv3 (`grad_pool`, `grad_pool_1`) run as the
/// forward convolution of the output gradient on a padded copy, read in
/// place the same way (conv3's rows of 8, half a 512-bit vector, a block
/// each: `9x1`), and each weight gradient reads a padded
/// copy in place (`pad copy`, a dot tile split along output rows): nothing
/// packs. conv2 and conv3 (16 and 32 input channels: 48 and 96 taps per
/// kernel row) and the input gradients of conv2 and conv3 (as
/// convolutions of 32 and 64 channels) take Winograd's F(4, 3) down the
/// columns (`winograd rows`: six products over transformed rows, the
/// kernel transformed in a `.winograd_weight` kernel), as does conv2's
/// weight gradient (16x16 images); conv1 (3 channels) and conv3's weight
/// gradient (8x8 images: reductions too short) stay direct
/// (`passes::layout::winograd_rows`).
const VGG16C: [&str; 4] = [
    // forward, batch 4
    "
    kernels 10, gemm 5, parallel 4 (x4: 4)
    conv1+relu: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv2.winograd_weight: serial
    conv2+relu_1: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    conv3.winograd_weight: serial
    conv3+relu_2: x4 over 4 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    fc1+x_2: x4 over 4 | dot 4x2
    fc2: serial | dot 4x2
    ",
    // forward, batch 64
    "
    kernels 10, gemm 5, parallel 8 (x4: 8)
    conv1+relu: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv2.winograd_weight: serial
    conv2+relu_1: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    conv3.winograd_weight: serial
    conv3+relu_2: x4 over 64 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    fc1+x_2: x4 over 4 | micro avx512 11x2
    fc2: x4 over 4 | micro avx512 8x1
    ",
    // training, batch 4
    "
    kernels 43, gemm 14, parallel 12 (x4: 12)
    conv1+relu: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv2.winograd_weight: serial
    conv2+relu_1: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    conv3.winograd_weight: serial
    conv3+relu_2: x4 over 4 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    fc1+x_2: x4 over 4 | dot 4x2
    fc2: serial | dot 4x2
    grad_x_2+grad_fc1: serial | micro avx512 4x4
    grad_fc2.weight: serial | micro avx512 5x4
    grad_x_1: x4 over 4 | micro avx512 4x4
    grad_fc1.weight: x4 over 4 | micro avx512 6x4
    grad_pool_1.winograd_weight: serial
    grad_pool_1: x4 over 4 | pad copy | winograd rows | micro avx512 8x1 b_rows b_wrap x6
    grad_conv3.weight: x4 over 4 | pad copy | micro avx512 6x4 transposed b_rows k_split
    grad_conv3.weight.combine: serial
    grad_pool.winograd_weight: serial
    grad_pool: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    grad_conv2.weight: x4 over 4 | pad copy | winograd rows | micro avx512 10x2 transposed b_rows k_split x6
    grad_conv2.weight.combine: serial
    grad_conv1.weight: x4 over 4 | pad copy | dot 4x2 b_rows k_split
    grad_conv1.weight.combine: serial
    ",
    // training, batch 64
    "
    kernels 43, gemm 14, parallel 24 (x4: 24)
    conv1+relu: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv2.winograd_weight: serial
    conv2+relu_1: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    conv3.winograd_weight: serial
    conv3+relu_2: x4 over 64 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    fc1+x_2: x4 over 4 | micro avx512 11x2
    fc2: x4 over 4 | micro avx512 8x1
    grad_x_2+grad_fc1: x4 over 4 | micro avx512 11x2
    grad_fc2.weight: x4 over 4 | micro avx512 10x2
    grad_x_1: x4 over 4 | micro avx512 6x4
    grad_fc1.weight: x4 over 4 | micro avx512 6x4
    grad_pool_1.winograd_weight: serial
    grad_pool_1: x4 over 64 | pad copy | winograd rows | micro avx512 8x1 b_rows b_wrap x6
    grad_conv3.weight: x4 over 8 | pad copy | micro avx512 6x4 transposed b_rows k_split
    grad_conv3.weight.combine: serial
    grad_pool.winograd_weight: serial
    grad_pool: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    grad_conv2.weight: x4 over 8 | pad copy | winograd rows | micro avx512 10x2 transposed b_rows k_split x6
    grad_conv2.weight.combine: serial
    grad_conv1.weight: x4 over 8 | pad copy | dot 4x2 b_rows k_split
    grad_conv1.weight.combine: serial
    ",
];

/// ResNet-ish (`bench/nets/resnet_ish.net`): every unit-stride 3x3 conv
/// is padded, so its forward product reads a padded copy, as in VGG16c.
/// The stride-2 convs (`b2a`, `b3a` and the 1x1 projections `b2s`, `b3s`)
/// read a copy of each image split into its stride phases (`phase copy`),
/// so their products read whole vectors in place too. The residual adds are
/// separate elementwise kernels (not listed). `fc` (64 -> 10) is under the
/// threshold at both batch sizes; of the weight-gradient combines only
/// b3b's (8 x 36864 elements at batch 64) is large enough to run in
/// parallel (b3a's, 8 x 18432, misses the threshold by 2.5k). The
/// unit-stride 3x3 convs past the stem, their input gradients (e.g.
/// `grad_relu_1+grad_b2a`) and most of their weight gradients run as
/// Winograd's F(4, 3) down the columns, as in VGG16c.
const RESNET_ISH: [&str; 4] = [
    // forward, batch 4
    "
    kernels 18, gemm 10, parallel 11 (x4: 11)
    stem+x_1: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    b1a.winograd_weight: serial
    b1a+relu: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b1b.winograd_weight: serial
    b1b: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b2s: x4 over 4 | phase copy | micro avx512 6x4 b_rows b_wrap
    b2a+relu_1: x4 over 4 | phase copy | micro avx512 6x4 b_rows b_wrap
    b2b.winograd_weight: serial
    b2b: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b3s: x4 over 4 | phase copy | micro avx512 6x4 b_rows b_wrap
    b3a+relu_2: x4 over 4 | phase copy | micro avx512 6x4 b_rows b_wrap
    b3b.winograd_weight: serial
    b3b: x4 over 4 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    fc: serial | dot 4x2
    ",
    // forward, batch 64
    "
    kernels 18, gemm 10, parallel 13 (x4: 13)
    stem+x_1: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    b1a.winograd_weight: serial
    b1a+relu: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b1b.winograd_weight: serial
    b1b: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b2s: x4 over 64 | phase copy | micro avx512 6x4 b_rows b_wrap
    b2a+relu_1: x4 over 64 | phase copy | micro avx512 6x4 b_rows b_wrap
    b2b.winograd_weight: serial
    b2b: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b3s: x4 over 64 | phase copy | micro avx512 6x4 b_rows b_wrap
    b3a+relu_2: x4 over 64 | phase copy | micro avx512 6x4 b_rows b_wrap
    b3b.winograd_weight: serial
    b3b: x4 over 64 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    fc: serial | micro avx512 11x1
    ",
    // training, batch 4
    "
    kernels 89, gemm 29, parallel 32 (x4: 32)
    stem+x_1: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    b1a.winograd_weight: serial
    b1a+relu: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b1b.winograd_weight: serial
    b1b: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b2s: x4 over 4 | phase copy | micro avx512 6x4 b_rows b_wrap
    b2a+relu_1: x4 over 4 | phase copy | micro avx512 6x4 b_rows b_wrap
    b2b.winograd_weight: serial
    b2b: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b3s: x4 over 4 | phase copy | micro avx512 6x4 b_rows b_wrap
    b3a+relu_2: x4 over 4 | phase copy | micro avx512 6x4 b_rows b_wrap
    b3b.winograd_weight: serial
    b3b: x4 over 4 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    fc: serial | dot 4x2
    grad_x_5: serial | micro avx512 4x4
    grad_fc.weight: serial | micro avx512 5x4
    grad_relu_2.winograd_weight: serial
    grad_relu_2+grad_b3a: x4 over 4 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    grad_b3b.weight: x4 over 4 | pad copy | micro avx512 6x4 transposed b_rows k_split
    grad_b3b.weight.combine: serial
    grad_x_3_from_b3a.transpose_weight: serial
    grad_x_3_from_b3a: x4 over 4 | phase copy | micro avx512 6x4 c_rows c_wrap
    grad_b3a.weight: x4 over 4 | pad copy | micro avx512 6x4 transposed b_rows k_split
    grad_b3a.weight.combine: serial
    grad_x_3_from_b3s.transpose_weight: serial
    grad_x_3_from_b3s: x4 over 4 | phase copy | micro avx512 6x4 c_rows c_wrap
    grad_b3s.weight: x4 over 4 | micro avx512 6x4 transposed b_rows k_split
    grad_b3s.weight.combine: serial
    grad_relu_1.winograd_weight: serial
    grad_relu_1+grad_b2a: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    grad_b2b.weight: x4 over 4 | pad copy | winograd rows | micro avx512 10x2 transposed b_rows k_split x6
    grad_b2b.weight.combine: serial
    grad_x_2_from_b2a.transpose_weight: serial
    grad_x_2_from_b2a: x4 over 4 | phase copy | micro avx512 6x4 c_rows c_wrap
    grad_b2a.weight: x4 over 4 | pad copy | micro avx512 10x2 transposed b_rows k_split
    grad_b2a.weight.combine: serial
    grad_x_2_from_b2s.transpose_weight: serial
    grad_x_2_from_b2s: x4 over 4 | phase copy | micro avx512 6x4 c_rows c_wrap
    grad_b2s.weight: x4 over 4 | pack im2col | dot 4x2
    grad_b2s.weight.combine: serial
    grad_relu.winograd_weight: serial
    grad_relu+grad_b1a: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    grad_b1b.weight: x4 over 4 | pad copy | winograd rows | micro avx512 10x1 transposed b_rows k_split x6
    grad_b1b.weight.combine: serial
    grad_x_1_from_b1a.winograd_weight: serial
    grad_x_1_from_b1a: x4 over 4 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    grad_b1a.weight: x4 over 4 | pad copy | winograd rows | micro avx512 10x1 transposed b_rows k_split x6
    grad_b1a.weight.combine: serial
    grad_stem.weight: x4 over 4 | pad copy | dot 4x2 b_rows k_split
    grad_stem.weight.combine: serial
    ",
    // training, batch 64
    "
    kernels 89, gemm 29, parallel 45 (x4: 45)
    stem+x_1: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    b1a.winograd_weight: serial
    b1a+relu: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b1b.winograd_weight: serial
    b1b: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b2s: x4 over 64 | phase copy | micro avx512 6x4 b_rows b_wrap
    b2a+relu_1: x4 over 64 | phase copy | micro avx512 6x4 b_rows b_wrap
    b2b.winograd_weight: serial
    b2b: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    b3s: x4 over 64 | phase copy | micro avx512 6x4 b_rows b_wrap
    b3a+relu_2: x4 over 64 | phase copy | micro avx512 6x4 b_rows b_wrap
    b3b.winograd_weight: serial
    b3b: x4 over 64 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    fc: serial | micro avx512 11x1
    grad_x_5: serial | micro avx512 6x4
    grad_fc.weight: serial | micro avx512 5x4
    grad_relu_2.winograd_weight: serial
    grad_relu_2+grad_b3a: x4 over 64 | pad copy | winograd rows | micro avx512 10x1 b_rows b_wrap x6
    grad_b3b.weight: x4 over 8 | pad copy | micro avx512 6x4 transposed b_rows k_split
    grad_b3b.weight.combine: x4 over 4
    grad_x_3_from_b3a.transpose_weight: serial
    grad_x_3_from_b3a: x4 over 64 | phase copy | micro avx512 6x4 c_rows c_wrap
    grad_b3a.weight: x4 over 8 | pad copy | micro avx512 6x4 transposed b_rows k_split
    grad_b3a.weight.combine: serial
    grad_x_3_from_b3s.transpose_weight: serial
    grad_x_3_from_b3s: x4 over 64 | phase copy | micro avx512 6x4 c_rows c_wrap
    grad_b3s.weight: x4 over 8 | micro avx512 6x4 transposed b_rows k_split
    grad_b3s.weight.combine: serial
    grad_relu_1.winograd_weight: serial
    grad_relu_1+grad_b2a: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    grad_b2b.weight: x4 over 8 | pad copy | winograd rows | micro avx512 10x2 transposed b_rows k_split x6
    grad_b2b.weight.combine: serial
    grad_x_2_from_b2a.transpose_weight: serial
    grad_x_2_from_b2a: x4 over 64 | phase copy | micro avx512 6x4 c_rows c_wrap
    grad_b2a.weight: x4 over 8 | pad copy | micro avx512 10x2 transposed b_rows k_split
    grad_b2a.weight.combine: serial
    grad_x_2_from_b2s.transpose_weight: serial
    grad_x_2_from_b2s: x4 over 64 | phase copy | micro avx512 6x4 c_rows c_wrap
    grad_b2s.weight: x4 over 8 | pack im2col | dot 4x2
    grad_b2s.weight.combine: serial
    grad_relu.winograd_weight: serial
    grad_relu+grad_b1a: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    grad_b1b.weight: x4 over 8 | pad copy | winograd rows | micro avx512 10x1 transposed b_rows k_split x6
    grad_b1b.weight.combine: serial
    grad_x_1_from_b1a.winograd_weight: serial
    grad_x_1_from_b1a: x4 over 64 | pad copy | winograd rows | micro avx512 6x4 b_rows b_wrap x6
    grad_b1a.weight: x4 over 8 | pad copy | winograd rows | micro avx512 10x1 transposed b_rows k_split x6
    grad_b1a.weight.combine: serial
    grad_stem.weight: x4 over 8 | pad copy | dot 4x2 b_rows k_split
    grad_stem.weight.combine: serial
    ",
];

/// Wide5 (`bench/nets/wide5.net`): 5x5 convs with padding 2 and a dilated
/// 3x3 conv with padding 2: forward products read padded copies, and so do
/// the input gradients of conv2 and conv3 (`grad_avg`, `grad_avg_1`, named
/// after the average pools whose inputs they are), as VGG16c's. conv2's weight-gradient
/// combine (8 x 25600 elements) is parallel at batch 64.
const WIDE5: [&str; 4] = [
    // forward, batch 4
    "
    kernels 7, gemm 4, parallel 3 (x4: 3)
    conv1+tanh: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv2+relu: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv3+relu_1: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    fc: serial | dot 4x2
    ",
    // forward, batch 64
    "
    kernels 7, gemm 4, parallel 7 (x4: 7)
    conv1+tanh: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv2+relu: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv3+relu_1: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    fc: x4 over 4 | micro avx512 8x1
    ",
    // training, batch 4
    "
    kernels 35, gemm 11, parallel 9 (x4: 9)
    conv1+tanh: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv2+relu: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv3+relu_1: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    fc: serial | dot 4x2
    grad_x_1: serial | micro avx512 4x4
    grad_fc.weight: serial | micro avx512 5x4
    grad_avg_1: x4 over 4 | pad copy | micro avx512 8x1 b_rows b_wrap
    grad_conv3.weight: x4 over 4 | pad copy | micro avx512 6x4 transposed b_rows k_split
    grad_conv3.weight.combine: serial
    grad_avg: x4 over 4 | pad copy | micro avx512 6x4 b_rows b_wrap
    grad_conv2.weight: x4 over 4 | pad copy | micro avx512 10x2 transposed b_rows k_split
    grad_conv2.weight.combine: serial
    grad_conv1.weight: x4 over 4 | pad copy | micro avx512 10x2 transposed b_rows k_split
    grad_conv1.weight.combine: serial
    ",
    // training, batch 64
    "
    kernels 35, gemm 11, parallel 22 (x4: 22)
    conv1+tanh: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv2+relu: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    conv3+relu_1: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    fc: x4 over 4 | micro avx512 8x1
    grad_x_1: x4 over 4 | micro avx512 6x4
    grad_fc.weight: x4 over 4 | micro avx512 5x4
    grad_avg_1: x4 over 64 | pad copy | micro avx512 8x1 b_rows b_wrap
    grad_conv3.weight: x4 over 8 | pad copy | micro avx512 6x4 transposed b_rows k_split
    grad_conv3.weight.combine: serial
    grad_avg: x4 over 64 | pad copy | micro avx512 6x4 b_rows b_wrap
    grad_conv2.weight: x4 over 8 | pad copy | micro avx512 10x2 transposed b_rows k_split
    grad_conv2.weight.combine: x4 over 4
    grad_conv1.weight: x4 over 8 | pad copy | micro avx512 10x2 transposed b_rows k_split
    grad_conv1.weight.combine: serial
    ",
];

/// Prints every net's summaries in the tables' form, to regenerate them
/// after an intended change of path: `cargo test --test net_paths -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_every_table() {
    let nets = [
        ("LENET", include_str!("../../bench/nets/lenet.net")),
        ("MLP", include_str!("../../bench/nets/mlp.net")),
        ("VGG16C", include_str!("../../bench/nets/vgg16c.net")),
        ("RESNET_ISH", include_str!("../../bench/nets/resnet_ish.net")),
        ("WIDE5", include_str!("../../bench/nets/wide5.net")),
    ];
    for (name, source) in nets {
        for (case, summary) in summaries(source, name).iter().enumerate() {
            println!("=== {name} {case}\n{summary}");
        }
    }
}

#[test]
fn lenet_paths() {
    let source = include_str!("../../bench/nets/lenet.net");
    assert_paths("bench/nets/lenet.net", &summaries(source, "lenet"), LENET);
}

/// The lecture's net is the benchmark's LeNet; should the two files part,
/// this test and `lenet_paths` say which one moved.
#[test]
fn lecture_lenet_paths() {
    let source = include_str!("../../examples/lenet.net");
    assert_paths("examples/lenet.net", &summaries(source, "examples/lenet"), LENET);
}

#[test]
fn mlp_paths() {
    let source = include_str!("../../bench/nets/mlp.net");
    assert_paths("bench/nets/mlp.net", &summaries(source, "mlp"), MLP);
}

#[test]
fn vgg16c_paths() {
    let source = include_str!("../../bench/nets/vgg16c.net");
    assert_paths("bench/nets/vgg16c.net", &summaries(source, "vgg16c"), VGG16C);
}

#[test]
fn resnet_ish_paths() {
    let source = include_str!("../../bench/nets/resnet_ish.net");
    assert_paths("bench/nets/resnet_ish.net", &summaries(source, "resnet_ish"), RESNET_ISH);
}

#[test]
fn wide5_paths() {
    let source = include_str!("../../bench/nets/wide5.net");
    assert_paths("bench/nets/wide5.net", &summaries(source, "wide5"), WIDE5);
}

/// A transposed product (the MLP's layers at batch 256, their 256 batch
/// rows the driver's columns) is cut into more blocks than threads, each
/// whole column blocks of its tile, which the threads claim as they go;
/// 2 threads and AVX2, the machine of the benchmarks.
#[test]
fn transposed_products_are_cut_finer_than_the_threads() {
    let forward = forward_graph(include_str!("../../bench/nets/mlp.net"), "mlp");
    let threads = 2;
    let options = JitOptions {
        threads,
        target: Some(Target::host_128().with_products(ProductIsa::Avx2)),
        ..JitOptions::default()
    };
    let program = jit::plan(&forward, 256, &options).expect("plans").0;
    let fc1 = program.kernels.iter().find(|k| k.name == "fc1+x_2").expect("fc1's kernel");
    let blocks = fc1.parallel_extent().expect("fc1 runs in parallel");
    let [g] = fc1.gemms()[..] else { panic!("fc1 holds one product") };
    let GemmTile::Micro { isa, vectors, transposed: true, .. } = g.tile else {
        panic!("fc1 runs transposed: {}", describe_gemm(g))
    };
    assert_eq!(fc1.threads, threads);
    assert!(blocks > threads, "fc1 in {blocks} blocks for {threads} threads");
    assert_eq!(g.m * blocks, 256, "each block's rows");
    assert!(g.m.is_multiple_of(isa.lanes() * vectors), "{} rows per block, tile {}", g.m, describe_gemm(g));
}
