//! Hand-built programs with hand-computed results: each matrix-product
//! layout option, the epilogue order, and the faults.

use super::*;
use crate::kernel::{
    Bias, Buffer, ColumnWrap, Epilogue, Gemm, GemmTile, Idx, KSplit, Kernel, LoopMode, MatrixRef, Stmt, Val,
};
use crate::kernel::{DotSteps, Emission};

/// A program over `buffers` (laid out one after another) running `kernels`.
fn program(buffers: Vec<(&str, usize, BufferKind)>, kernels: Vec<Kernel>) -> Program {
    let mut offsets = Vec::new();
    let mut top = 0;
    for (_, len, _) in &buffers {
        offsets.push(top);
        top += len;
    }
    let buffers = buffers
        .into_iter()
        .map(|(name, len, kind)| Buffer { name: name.into(), len, kind, per_thread: false })
        .collect();
    Program {
        buffers,
        kernels,
        values: Vec::new(),
        updates: Vec::new(),
        offsets,
        arena_len: top + 64,
        threads: 1,
        target: crate::target::Target::host_128(),
    }
}

fn kernel(name: &str, body: Vec<Stmt>, reads: Vec<BufId>, writes: Vec<BufId>) -> Kernel {
    Kernel {
        name: name.into(),
        nodes: Vec::new(),
        body,
        reads,
        writes,
        in_place: Vec::new(),
        flops: 0,
        threads: 1,
        emission: Emission::Optimised,
    }
}

fn matrix(buf: BufId, row_stride: i64, col_stride: i64) -> MatrixRef {
    MatrixRef { buf, offset: Idx::Const(0), row_stride, col_stride }
}

/// A product over buffers 0 (A), 1 (B) and 2 (C), no options set.
fn plain_gemm(m: usize, n: usize, k: usize, a: MatrixRef, b: MatrixRef, c: MatrixRef) -> Gemm {
    Gemm {
        m,
        n,
        k,
        a,
        b,
        b_rows: None,
        k_split: None,
        b_wrap: None,
        c_rows: None,
        c_wrap: None,
        a_splat: false,
        c,
        epilogue: Epilogue::default(),
        tile: GemmTile::Outer { rows: 1, vectors: 1, unroll: 1 },
    }
}

/// Runs `program` with buffers set as given and returns buffer `out`.
fn run(program: Program, inputs: &[(BufId, &[f32])], out: BufId) -> Vec<f32> {
    let mut interp = KernelInterpreter::new(program).expect("planned");
    for &(b, data) in inputs {
        interp.set_buffer(b, data).expect("set");
    }
    interp.run().expect("run");
    interp.get_buffer(out).expect("written").to_vec()
}

#[test]
fn wrapped_b_columns_skip_the_gap_between_rows() {
    // B is two image rows of 3; columns run along rows of 2: positions 0, 1, 3, 4.
    let mut g = plain_gemm(1, 4, 1, matrix(0, 1, 1), matrix(1, 0, 1), matrix(2, 4, 1));
    g.b_wrap = Some(ColumnWrap { row: 2, stride: 3 });
    let k = kernel("wrap", vec![Stmt::Gemm(Box::new(g))], vec![0, 1], vec![2]);
    let p = program(
        vec![("a", 1, BufferKind::Scratch), ("b", 6, BufferKind::Scratch), ("c", 4, BufferKind::Scratch)],
        vec![k],
    );
    let c = run(p, &[(0, &[2.0]), (1, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])], 2);
    assert_eq!(c, [2.0, 4.0, 8.0, 10.0]);
}

#[test]
fn b_row_table_and_a_splat_read_an_implicit_im2col() {
    // k = 2: B's rows start at table entries 3 and 1; A's elements are
    // splatted four times (strides in elements).
    let mut g = plain_gemm(1, 2, 2, matrix(0, 8, 4), matrix(1, 0, 1), matrix(2, 2, 1));
    g.b_rows = Some(3);
    g.a_splat = true;
    let k = kernel("im2col", vec![Stmt::Gemm(Box::new(g))], vec![0, 1, 3], vec![2]);
    let p = program(
        vec![
            ("a", 8, BufferKind::Scratch),
            ("b", 5, BufferKind::Scratch),
            ("c", 2, BufferKind::Scratch),
            ("rows", 2, BufferKind::ConstI32(vec![3, 1])),
        ],
        vec![k],
    );
    let a = [2.0, 2.0, 2.0, 2.0, 10.0, 10.0, 10.0, 10.0];
    let c = run(p, &[(0, &a), (1, &[1.0, 2.0, 3.0, 4.0, 5.0])], 2);
    // C[0, j] = 2 * B[3 + j] + 10 * B[1 + j]
    assert_eq!(c, [2.0 * 4.0 + 10.0 * 2.0, 2.0 * 5.0 + 10.0 * 3.0]);
}

#[test]
fn split_reduction_with_a_column_table() {
    // k = 4 in 2 segments of 2: A dense (segment stride 2), B's column j at
    // table[j], its segments 4 apart.
    let mut g = plain_gemm(1, 2, 4, matrix(0, 4, 1), matrix(1, 1, 0), matrix(2, 2, 1));
    g.b_rows = Some(3);
    g.k_split = Some(KSplit { outer: 2, a_stride: 2, b_stride: 4 });
    g.tile = GemmTile::Dot { rows: 1, cols: 1, steps: DotSteps::Rolled(1) };
    let k = kernel("split", vec![Stmt::Gemm(Box::new(g))], vec![0, 1, 3], vec![2]);
    let p = program(
        vec![
            ("a", 4, BufferKind::Scratch),
            ("b", 8, BufferKind::Scratch),
            ("c", 2, BufferKind::Scratch),
            ("cols", 2, BufferKind::ConstI32(vec![0, 1])),
        ],
        vec![k],
    );
    let b: Vec<f32> = (1..=8).map(|v| 10.0 * v as f32).collect();
    let c = run(p, &[(0, &[1.0, 2.0, 3.0, 4.0]), (1, &b)], 2);
    // Column 0 reads 10, 20, 50, 60; column 1 reads 20, 30, 60, 70.
    assert_eq!(c, [10.0 + 40.0 + 150.0 + 240.0, 20.0 + 60.0 + 180.0 + 280.0]);
}

#[test]
fn scattered_c_rows_accumulate_into_wrapped_columns() {
    // C(i, j) at table[i] + 3 * j: (0,0)->0, (0,1)->3, (1,0)->1, (1,1)->4.
    let mut g = plain_gemm(2, 2, 1, matrix(0, 1, 1), matrix(1, 2, 1), matrix(2, 0, 1));
    g.c_rows = Some(3);
    g.c_wrap = Some(ColumnWrap { row: 1, stride: 3 });
    g.epilogue.accumulate = true;
    let k = kernel("col2im", vec![Stmt::Gemm(Box::new(g))], vec![0, 1, 2, 3], vec![2]);
    let p = program(
        vec![
            ("a", 2, BufferKind::Scratch),
            ("b", 2, BufferKind::Scratch),
            ("c", 6, BufferKind::Scratch),
            ("taps", 2, BufferKind::ConstI32(vec![0, 1])),
        ],
        vec![k],
    );
    let c = run(p, &[(0, &[1.0, 10.0]), (1, &[3.0, 4.0]), (2, &[1.0; 6])], 2);
    assert_eq!(c, [4.0, 31.0, 1.0, 5.0, 41.0, 1.0]);
}

#[test]
fn epilogue_adds_bias_stores_pre_activation_then_activates() {
    let mut g = plain_gemm(1, 2, 1, matrix(0, 1, 1), matrix(1, 2, 1), matrix(2, 2, 1));
    g.epilogue.bias = Some(Bias::PerColumn(3, Idx::Const(0)));
    g.epilogue.pre_activation = Some(matrix(4, 2, 1));
    g.epilogue.activation = Some(crate::ops::Activation::Relu);
    let k = kernel("fc+relu", vec![Stmt::Gemm(Box::new(g))], vec![0, 1, 3], vec![2, 4]);
    let scratch = |name| (name, 2, BufferKind::Scratch);
    let p = program(
        vec![("a", 1, BufferKind::Scratch), scratch("b"), scratch("c"), scratch("bias"), scratch("pre")],
        vec![k],
    );
    let mut interp = KernelInterpreter::new(p).unwrap();
    for (b, data) in [(0, &[1.0][..]), (1, &[-3.0, 2.0]), (3, &[1.0, 1.0])] {
        interp.set_buffer(b, data).unwrap();
    }
    interp.run().unwrap();
    assert_eq!(interp.get_buffer(4).unwrap(), [-2.0, 3.0]);
    assert_eq!(interp.get_buffer(2).unwrap(), [0.0, 3.0]);
}

#[test]
fn grad_mask_multiplies_by_the_activation_derivative() {
    let mut g = plain_gemm(1, 3, 1, matrix(0, 1, 1), matrix(1, 3, 1), matrix(2, 3, 1));
    g.epilogue.grad_mask = Some((crate::ops::Activation::Relu, matrix(3, 3, 1)));
    let k = kernel("dx", vec![Stmt::Gemm(Box::new(g))], vec![0, 1, 3], vec![2]);
    let p = program(
        vec![
            ("a", 1, BufferKind::Scratch),
            ("b", 3, BufferKind::Scratch),
            ("c", 3, BufferKind::Scratch),
            ("x", 3, BufferKind::Scratch),
        ],
        vec![k],
    );
    let c = run(p, &[(0, &[2.0]), (1, &[1.0, 2.0, 3.0]), (3, &[1.0, -1.0, 0.5])], 2);
    assert_eq!(c, [2.0, 0.0, 6.0]);
}

/// `out[i] = in[i + shift]` over `0..4` in a vector loop.
fn shifted_copy(shift: i64) -> Program {
    let body =
        vec![Stmt::lp(0, 4, LoopMode::Vector, vec![Stmt::store(1, Idx::var(0), Val::load(0, Idx::var(0) + shift))])];
    let k = kernel("copy", body, vec![0], vec![1]);
    program(vec![("in", 4, BufferKind::Scratch), ("out", 4, BufferKind::Scratch)], vec![k])
}

#[test]
fn out_of_range_reads_name_kernel_and_buffer() {
    assert_eq!(run(shifted_copy(0), &[(0, &[1.0, 2.0, 3.0, 4.0])], 1), [1.0, 2.0, 3.0, 4.0]);
    let mut interp = KernelInterpreter::new(shifted_copy(1)).unwrap();
    interp.set_buffer(0, &[1.0; 4]).unwrap();
    let err = interp.run().unwrap_err();
    assert_eq!(
        err,
        EvalError::Kernel {
            kernel: "copy".into(),
            fault: Fault::OutOfBounds { buffer: "in".into(), index: 4, len: 4 }
        }
    );
    assert_eq!(err.to_string(), "kernel `copy`: index 4 is outside buffer `in` of 4 elements");
}

#[test]
fn bad_input_is_an_error() {
    let mut interp = KernelInterpreter::new(shifted_copy(0)).unwrap();
    let err = interp.set_buffer(0, &[1.0; 3]).unwrap_err();
    assert_eq!(err, EvalError::WrongLength { name: "in".into(), expected: 4, got: 3 });
    assert_eq!(interp.set_buffer(9, &[]).unwrap_err(), EvalError::UnknownBuffer(9));
    // `in` was never set.
    let err = interp.run().unwrap_err();
    assert_eq!(err, EvalError::Kernel { kernel: "copy".into(), fault: Fault::Unwritten { buffer: "in".into() } });
    let mut unplanned = shifted_copy(0);
    unplanned.arena_len = 4;
    assert!(matches!(KernelInterpreter::new(unplanned), Err(EvalError::NotPlanned(_))));
}

#[test]
fn reading_a_buffer_whose_space_was_reused_is_a_fault() {
    // `a` and `b` share space; kernel 1 writes `b`, kernel 2 reads `a`.
    let write = |buf| vec![Stmt::store(buf, Idx::Const(0), Val::Const(1.0))];
    let read = vec![Stmt::store(2, Idx::Const(0), Val::load(0, Idx::Const(0)))];
    let mut p = program(
        vec![("a", 1, BufferKind::Scratch), ("b", 1, BufferKind::Scratch), ("out", 1, BufferKind::Scratch)],
        vec![
            kernel("make a", write(0), vec![], vec![0]),
            kernel("make b", write(1), vec![], vec![1]),
            kernel("use a", read, vec![0], vec![2]),
        ],
    );
    p.offsets = vec![0, 0, 1];
    let mut interp = KernelInterpreter::new(p).unwrap();
    let err = interp.run().unwrap_err();
    let fault = Fault::Clobbered { buffer: "a".into(), by: "make b".into() };
    assert_eq!(err, EvalError::Kernel { kernel: "use a".into(), fault });
    assert!(matches!(interp.get_buffer(0), Err(EvalError::NotObservable { .. })));
    assert_eq!(interp.get_buffer(1).unwrap(), [1.0]);
}

#[test]
fn undeclared_writes_and_negative_division_are_faults() {
    let store = |idx: Idx| vec![Stmt::store(1, idx, Val::Const(1.0))];
    let p = program(
        vec![("in", 1, BufferKind::Scratch), ("out", 4, BufferKind::Scratch)],
        vec![kernel("sneaky", store(Idx::Const(0)), vec![], vec![])],
    );
    let err = KernelInterpreter::new(p).unwrap().run().unwrap_err();
    assert_eq!(
        err,
        EvalError::Kernel { kernel: "sneaky".into(), fault: Fault::UndeclaredWrite { buffer: "out".into() } }
    );
    let p = program(
        vec![("in", 1, BufferKind::Scratch), ("out", 4, BufferKind::Scratch)],
        vec![kernel("div", store(Idx::Const(-3) / 2), vec![], vec![1])],
    );
    let err = KernelInterpreter::new(p).unwrap().run().unwrap_err();
    let fault = Fault::BadDivision { op: "div", value: -3, divisor: 2 };
    assert_eq!(err, EvalError::Kernel { kernel: "div".into(), fault });
}
