//! Hand-made broken programs, one per check, each rejected with its message.

use super::*;
use crate::kernel::build::accesses;
use crate::kernel::{
    Bias, Buffer, ColumnWrap, Epilogue, Gemm, GemmTile, Idx, KSplit, Kernel, LoopMode, MatrixRef, RedOp, Stmt, Val,
};
use crate::kernel::{Cmp, Cond};
use crate::kernel::{DotSteps, Emission, LoopLowering, Unroll, VectorTail};

fn buffer(name: &str, len: usize, kind: BufferKind) -> Buffer {
    Buffer { name: name.into(), len, kind, per_thread: false }
}

fn scratch(name: &str, len: usize) -> Buffer {
    buffer(name, len, BufferKind::Scratch)
}

/// A kernel named `k` whose access lists match its body.
fn kernel(body: Vec<Stmt>) -> Kernel {
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    accesses(&body, &mut reads, &mut writes);
    reads.sort();
    reads.dedup();
    writes.sort();
    writes.dedup();
    Kernel {
        name: "k".into(),
        nodes: vec![],
        body,
        reads,
        writes,
        in_place: vec![],
        flops: 0,
        threads: 1,
        emission: Emission::Optimised,
    }
}

fn program(buffers: Vec<Buffer>, kernels: Vec<Kernel>) -> Program {
    Program {
        buffers,
        kernels,
        values: vec![],
        updates: vec![],
        offsets: vec![],
        arena_len: 0,
        threads: 1,
        target: crate::target::Target::host_128(),
    }
}

fn lp(var: u32, extent: usize, body: Vec<Stmt>) -> Stmt {
    Stmt::lp(var, extent, LoopMode::Serial, body)
}

fn v(var: u32) -> Idx {
    Idx::var(var)
}

/// The problems `verify` reports after `pass`, in order.
fn problems(p: &Program, pass: AfterPass) -> Vec<Problem> {
    match verify(p, pass) {
        Ok(()) => vec![],
        Err(e) => {
            assert_eq!(e.pass, pass);
            e.errors.into_iter().map(|e| e.problem).collect()
        }
    }
}

/// The one error `verify` reports after building, rendered.
fn only_error(p: &Program) -> String {
    let errors = verify(p, AfterPass::Build).expect_err("expected a violation").errors;
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors[0].to_string()
}

#[test]
fn a_clean_program_verifies() {
    let body = vec![lp(0, 10, vec![Stmt::store(1, v(0), Val::load(0, v(0)))])];
    let p = program(vec![scratch("x", 10), scratch("y", 10)], vec![kernel(body)]);
    assert_eq!(problems(&p, AfterPass::Build), vec![]);
}

#[test]
fn unknown_buffers_are_named_with_their_role() {
    let body = vec![lp(0, 4, vec![Stmt::store(0, v(0), Val::load(7, v(0)))])];
    let mut p = program(vec![scratch("y", 4)], vec![kernel(body)]);
    p.values.push((crate::graph::NodeId::new(0), 9));
    let found = problems(&p, AfterPass::Build);
    assert!(found.contains(&Problem::UnknownBuffer { role: "values".into(), buf: 9, count: 1 }));
    assert!(found.contains(&Problem::UnknownBuffer { role: "load".into(), buf: 7, count: 1 }));
    assert!(found.contains(&Problem::UnknownBuffer { role: "reads".into(), buf: 7, count: 1 }));
}

#[test]
fn a_store_one_past_the_end_is_rejected_with_kernel_path_and_buffer() {
    let body = vec![lp(0, 3, vec![lp(1, 5, vec![Stmt::store(0, v(0) * 5i64 + v(1) + 1i64, Val::Const(1.0))])])];
    let p = program(vec![scratch("out", 15)], vec![kernel(body)]);
    assert_eq!(only_error(&p), "kernel 'k' at 0.0.0: store to %0 'out' index reaches 15, buffer has 15 elements");
}

#[test]
fn negative_indices_and_loads_past_the_end_are_rejected() {
    // x[2 * v] reaches 6, inside x's 7 elements; out[v - 1] starts at -1.
    let body = vec![lp(0, 4, vec![Stmt::store(0, v(0) - 1, Val::load(1, v(0) * 2i64))])];
    let p = program(vec![scratch("out", 4), scratch("x", 7)], vec![kernel(body)]);
    assert_eq!(
        problems(&p, AfterPass::Build),
        vec![Problem::BeforeStart { access: "store to".into(), buffer: "%0 'out'".into(), low: -1 }]
    );
    // One element shorter and the load leaves the buffer.
    let body = vec![lp(0, 4, vec![Stmt::store(0, v(0), Val::load(1, v(0) * 2i64))])];
    let p = program(vec![scratch("out", 4), scratch("x", 6)], vec![kernel(body)]);
    assert_eq!(only_error(&p), "kernel 'k' at 0.0: load of %1 'x' index reaches 6, buffer has 6 elements");
}

#[test]
fn table_lookups_use_the_reachable_entries_of_the_table() {
    // Entries 0..3 reach at most 7; the 99 is never looked up.
    let table = buffer("t", 4, BufferKind::ConstI32(vec![7, 0, 3, 99]));
    let store = |extent| vec![lp(0, extent, vec![Stmt::store(1, Idx::Table(0, Box::new(v(0))), Val::Const(0.0))])];
    let p = program(vec![table.clone(), scratch("out", 8)], vec![kernel(store(3))]);
    assert_eq!(problems(&p, AfterPass::Build), vec![]);
    let p = program(vec![table.clone(), scratch("out", 8)], vec![kernel(store(4))]);
    assert_eq!(only_error(&p), "kernel 'k' at 0.0: store to %1 'out' index reaches 99, buffer has 8 elements");
    let p = program(vec![table, scratch("out", 100)], vec![kernel(store(5))]);
    assert_eq!(only_error(&p), "kernel 'k' at 0.0: table lookup in %0 't' index reaches 4, buffer has 4 elements");
    // A table must hold constant i32 data.
    let p = program(vec![scratch("t", 4), scratch("out", 8)], vec![kernel(store(4))]);
    assert_eq!(
        only_error(&p),
        "kernel 'k' at 0.0: Idx::Table uses %0 't' as an index table, but it is a scratch buffer; expected ConstI32"
    );
}

#[test]
fn float_table_stores_need_a_guard() {
    let to = || Idx::FloatTable(0, Box::new(v(0)));
    let unguarded = vec![lp(0, 4, vec![Stmt::store_add(1, to(), Val::Const(1.0))])];
    let p = program(vec![scratch("argmax", 4), scratch("dx", 16)], vec![kernel(unguarded)]);
    assert_eq!(
        only_error(&p),
        "kernel 'k' at 0.0: store to %1 'dx' index is not statically bounded (it reads positions recorded at run \
         time in %0 'argmax') and no `if` guards it"
    );
    let recorded = Cond::val(Cmp::Ge, Val::load(0, v(0)), Val::Const(0.0));
    let guarded = vec![lp(
        0,
        4,
        vec![Stmt::If { cond: recorded, then: vec![Stmt::store_add(1, to(), Val::Const(1.0))], otherwise: vec![] }],
    )];
    let p = program(vec![scratch("argmax", 4), scratch("dx", 16)], vec![kernel(guarded)]);
    assert_eq!(problems(&p, AfterPass::Build), vec![]);
}

#[test]
fn unsigned_division_needs_non_negative_operands() {
    let body = vec![lp(0, 4, vec![Stmt::store(0, (v(0) - 2) / 2, Val::Const(0.0))])];
    let p = program(vec![scratch("out", 4)], vec![kernel(body)]);
    assert_eq!(problems(&p, AfterPass::Build), vec![Problem::BadDivision { op: "/", divisor: 2, low: -2, high: 1 }]);
}

#[test]
fn loop_variables_are_fresh_and_scoped() {
    let store = |i: Idx| Stmt::store(0, i, Val::Const(0.0));
    let nested = vec![lp(0, 2, vec![lp(0, 2, vec![store(v(0))])])];
    let siblings = vec![lp(0, 2, vec![store(v(0))]), lp(0, 2, vec![store(v(0))])];
    let outside = vec![lp(0, 2, vec![store(v(0))]), store(v(0))];
    for (body, expected) in [
        (nested, Problem::LoopVarReused { var: 0 }),
        (siblings, Problem::LoopVarReused { var: 0 }),
        (outside, Problem::VarOutOfScope { var: 0 }),
    ] {
        let p = program(vec![scratch("out", 4)], vec![kernel(body)]);
        assert_eq!(problems(&p, AfterPass::Build), vec![expected]);
    }
}

#[test]
fn accumulators_are_declared_before_use_and_in_scope() {
    let reduce = Stmt::Reduce { acc: 0, op: RedOp::Add, val: Val::Const(1.0) };
    let before_let = vec![reduce.clone(), Stmt::Let { acc: 0, init: Val::Const(0.0) }];
    let p = program(vec![], vec![kernel(before_let)]);
    assert_eq!(
        only_error(&p),
        "kernel 'k' at 0: reduce into accumulator a0, which no enclosing `let` declares before this point"
    );
    let after_its_loop = vec![
        lp(0, 2, vec![Stmt::Let { acc: 1, init: Val::Const(0.0) }]),
        Stmt::store(0, Idx::Const(0), Val::Acc(1)),
        Stmt::Set { acc: 2, val: Val::Const(0.0) },
    ];
    let p = program(vec![scratch("out", 1)], vec![kernel(after_its_loop)]);
    assert_eq!(
        problems(&p, AfterPass::Build),
        vec![Problem::AccUndeclared { usage: "read of", acc: 1 }, Problem::AccUndeclared { usage: "set of", acc: 2 }]
    );
}

#[test]
fn parallel_loops_only_alone_at_the_top() {
    let store = Stmt::store(0, v(0) * 2i64 + v(1), Val::Const(0.0));
    let nested = vec![lp(0, 2, vec![Stmt::lp(1, 2, LoopMode::Parallel, vec![store.clone()])])];
    let p = program(vec![scratch("out", 4)], vec![kernel(nested)]);
    assert_eq!(problems(&p, AfterPass::Build), vec![Problem::ParallelNotOutermost { var: 1 }]);
    let beside = vec![
        Stmt::lp(0, 2, LoopMode::Parallel, vec![lp(1, 2, vec![store])]),
        Stmt::Let { acc: 0, init: Val::Const(0.0) },
    ];
    let p = program(vec![scratch("out", 4)], vec![kernel(beside)]);
    assert_eq!(problems(&p, AfterPass::Build), vec![Problem::ParallelNotOutermost { var: 0 }]);
}

fn small_gemm(tile: GemmTile) -> Gemm {
    // C[4x4] = A[4x4] B[4x4], all dense row-major.
    let dense = |buf, rows: i64| MatrixRef { buf, offset: Idx::Const(0), row_stride: rows, col_stride: 1 };
    Gemm {
        m: 4,
        n: 4,
        k: 4,
        a: dense(0, 4),
        b: dense(1, 4),
        c: dense(2, 4),
        b_rows: None,
        k_split: None,
        b_wrap: None,
        c_rows: None,
        c_wrap: None,
        a_splat: false,
        epilogue: Epilogue::default(),
        tile,
    }
}

const OUTER: GemmTile = GemmTile::Outer { rows: 4, vectors: 1, unroll: 1 };
const DOT: GemmTile = GemmTile::Dot { rows: 2, cols: 2, steps: DotSteps::Rolled(1) };

fn gemm_problems(g: Gemm, c_len: usize) -> Vec<Problem> {
    let mut bufs = vec![scratch("a", 16), scratch("b", 24), scratch("c", c_len)];
    bufs.push(buffer("rows", 2, BufferKind::ConstI32(vec![0, 4])));
    let p = program(bufs, vec![kernel(vec![Stmt::Gemm(Box::new(g))])]);
    problems(&p, AfterPass::Build)
}

#[test]
fn vector_loops_hold_only_what_lowers_lane_parallel() {
    use VectorRule::*;
    let vector = |body| Stmt::lp(0, 8, LoopMode::Vector, body);
    let cases: Vec<(Vec<Stmt>, VectorRule)> = vec![
        (vec![vector(vec![Stmt::Gemm(Box::new(small_gemm(OUTER)))])], GemmInside),
        (
            vec![vector(vec![Stmt::lp(
                1,
                4,
                LoopMode::Vector,
                vec![Stmt::store(4, v(0) * 4i64 + v(1), Val::Const(0.0))],
            )])],
            InnerNotSerial { inner: 1, mode: LoopMode::Vector },
        ),
        (
            vec![vector(vec![Stmt::If {
                cond: Cond::idx(Cmp::Lt, v(0), 3i64),
                then: vec![Stmt::store(4, v(0), Val::Const(0.0))],
                otherwise: vec![],
            }])],
            LaneDependentCondition,
        ),
        (
            vec![
                Stmt::Let { acc: 0, init: Val::Const(0.0) },
                vector(vec![Stmt::Set { acc: 0, val: Val::load(4, v(0)) }]),
            ],
            SetOfOuterAccumulator { acc: 0 },
        ),
        (
            vec![
                Stmt::Let { acc: 0, init: Val::Const(0.0) },
                vector(vec![
                    Stmt::Reduce { acc: 0, op: RedOp::Add, val: Val::load(4, v(0)) },
                    Stmt::store(5, v(0), Val::Acc(0)),
                ]),
            ],
            PartialRead { acc: 0 },
        ),
        (vec![vector(vec![Stmt::store(4, v(0), Val::load(4, v(0) / 2))])], StoredBufferLoadedElsewhere { buf: 4 }),
    ];
    for (body, rule) in cases {
        let mut bufs = vec![scratch("a", 16), scratch("b", 16), scratch("c", 16), scratch("unused", 1)];
        bufs.extend([scratch("x", 32), scratch("y", 32)]);
        let p = program(bufs, vec![kernel(body)]);
        assert_eq!(problems(&p, AfterPass::Build), vec![Problem::Vector { var: 0, rule }]);
    }
}

#[test]
fn products_agree_with_their_tile_form() {
    use GemmRule::*;
    let g = |f: &dyn Fn(&mut Gemm)| {
        let mut g = small_gemm(OUTER);
        f(&mut g);
        g
    };
    let ignored = |flag, needs, has| Problem::Gemm(FlagIgnored { flag, needs, has });
    let (outer, dot) = ("an outer-product tile", "a dot tile");
    let cases: Vec<(Gemm, Vec<Problem>)> = vec![
        (small_gemm(OUTER), vec![]),
        (
            small_gemm(DOT),
            // B row-major has row stride 4 along p.
            vec![Problem::Gemm(DotNeedsUnitReduction { a_col: 1, b_row: 4 })],
        ),
        (
            g(&|g| g.b.col_stride = 5),
            vec![
                Problem::Gemm(OuterNeedsUnitColumns { matrix: "B", stride: 5 }),
                Problem::PastEnd { access: "matrix B in".into(), buffer: "%1 'b'".into(), reach: 27, len: 24 },
            ],
        ),
        (
            g(&|g| g.k_split = Some(KSplit { outer: 2, a_stride: 2, b_stride: 2 })),
            vec![ignored("k_split", "dot tiles", outer)],
        ),
        (
            g(&|g| {
                g.tile = DOT;
                g.b = MatrixRef { buf: 1, offset: Idx::Const(0), row_stride: 1, col_stride: 4 };
                g.k_split = Some(KSplit { outer: 3, a_stride: 1, b_stride: 1 });
                g.a_splat = true;
            }),
            vec![ignored("a_splat", "outer-product tiles", dot), Problem::Gemm(UnevenSplit { outer: 3, k: 4 })],
        ),
        (
            g(&|g| g.b_wrap = Some(ColumnWrap { row: 4, stride: 4 })),
            vec![ignored("b_wrap", "products with a b_rows table", outer)],
        ),
        (
            g(&|g| {
                g.n = 6;
                g.b_rows = Some(3);
                g.b_wrap = Some(ColumnWrap { row: 6, stride: 4 });
            }),
            vec![
                Problem::Gemm(WrapDoesNotFit { flag: "b_wrap", row: 6, block: 12, n: 6 }),
                Problem::Gemm(WrapOverlaps { flag: "b_wrap", row: 6, stride: 4 }),
                Problem::Gemm(TableTooShort {
                    flag: "b_rows",
                    table: "%3 'rows'".into(),
                    len: 2,
                    indexed_by: "p",
                    needed: 4,
                }),
                Problem::PastEnd { access: "matrix C in".into(), buffer: "%2 'c'".into(), reach: 17, len: 16 },
            ],
        ),
        (
            g(&|g| {
                g.c_rows = Some(3);
                g.c_wrap = Some(ColumnWrap { row: 4, stride: 4 });
                g.epilogue.accumulate = true;
            }),
            vec![Problem::Gemm(TableTooShort {
                flag: "c_rows",
                table: "%3 'rows'".into(),
                len: 2,
                indexed_by: "i",
                needed: 4,
            })],
        ),
        (
            g(&|g| g.c.row_stride = 5),
            vec![Problem::PastEnd { access: "matrix C in".into(), buffer: "%2 'c'".into(), reach: 18, len: 16 }],
        ),
        (
            g(&|g| g.epilogue.bias = Some(Bias::PerColumn(0, Idx::Const(13)))),
            vec![Problem::PastEnd { access: "bias in".into(), buffer: "%0 'a'".into(), reach: 16, len: 16 }],
        ),
    ];
    for (gemm, expected) in cases {
        assert_eq!(gemm_problems(gemm.clone(), 16), expected, "{gemm:#?}");
    }
}

#[test]
fn a_scattered_c_counts_every_lane_of_its_straddling_vector_adds() {
    // Rows of 6 columns placed 8 apart: a block is 12 columns in 3 vectors,
    // at 0..4, at 4..8 straddling into 8..12 (both added whole), and at
    // 10..14. Rows start at 0 and 4, so the last element written is 17.
    let mut g = small_gemm(OUTER);
    (g.m, g.n, g.k) = (2, 12, 1);
    g.b = MatrixRef { buf: 1, offset: Idx::Const(0), row_stride: 0, col_stride: 1 };
    g.c = MatrixRef { buf: 2, offset: Idx::Const(0), row_stride: 0, col_stride: 1 };
    g.c_rows = Some(3);
    g.c_wrap = Some(ColumnWrap { row: 6, stride: 8 });
    g.epilogue.accumulate = true;
    assert_eq!(
        gemm_problems(g.clone(), 17),
        vec![Problem::PastEnd { access: "matrix C in".into(), buffer: "%2 'c'".into(), reach: 17, len: 17 }]
    );
    assert_eq!(gemm_problems(g.clone(), 18), vec![]);
    g.epilogue.bias = Some(Bias::PerRow(0, Idx::Const(0)));
    assert_eq!(gemm_problems(g, 18), vec![Problem::Gemm(GemmRule::ScatterEpilogue { row: 6 })]);
}

#[test]
fn access_lists_and_write_targets() {
    let mut k = kernel(vec![lp(0, 4, vec![Stmt::store(1, v(0), Val::load(0, v(0)))])]);
    k.writes.clear();
    k.reads.clear();
    let constant = buffer("w", 4, BufferKind::ConstF32(vec![0.0; 4]));
    let p = program(vec![scratch("x", 4), constant], vec![k]);
    assert_eq!(
        problems(&p, AfterPass::Build),
        vec![
            Problem::UndeclaredAccess { verb: "reads", buffer: "%0 'x'".into(), list: "reads" },
            Problem::UndeclaredAccess { verb: "writes", buffer: "%1 'w'".into(), list: "writes" },
            Problem::WriteToReadOnly { buffer: "%1 'w'".into(), kind: "ConstF32" },
        ]
    );
    // A leaf is written only as the target of an update.
    let leaf = buffer("p", 4, BufferKind::Leaf(crate::graph::NodeId::new(0)));
    let body = vec![lp(0, 4, vec![Stmt::store(0, v(0), Val::load(1, v(0)))])];
    let mut p = program(vec![leaf, scratch("p.new", 4)], vec![kernel(body)]);
    assert_eq!(
        problems(&p, AfterPass::Build),
        vec![Problem::WriteToReadOnly { buffer: "%0 'p'".into(), kind: "leaf" }]
    );
    p.updates.push((0, 1));
    assert_eq!(problems(&p, AfterPass::Build), vec![]);
}

#[test]
fn in_place_pairs_are_well_formed() {
    let mut k = kernel(vec![lp(0, 4, vec![Stmt::store(1, v(0), Val::load(0, v(0)))])]);
    k.in_place = vec![(0, 1), (1, 0), (0, 0)];
    let p = program(vec![scratch("x", 4), scratch("y", 4)], vec![k.clone()]);
    let expected = |i: &str, o: &str, expected| Problem::BadInPlace { input: i.into(), output: o.into(), expected };
    assert_eq!(
        problems(&p, AfterPass::Build),
        vec![
            expected("%1 'y'", "%0 'x'", "the input in the kernel's reads"),
            expected("%0 'x'", "%0 'x'", "two different buffers"),
        ]
    );
    k.in_place = vec![(0, 1)];
    let p = program(vec![scratch("x", 8), scratch("y", 4)], vec![k]);
    assert_eq!(problems(&p, AfterPass::Build), vec![expected("%0 'x'", "%1 'y'", "buffers of the same length")]);
}

#[test]
fn thread_counts_follow_the_schedule() {
    let serial = kernel(vec![lp(0, 4, vec![Stmt::store(0, v(0), Val::Const(0.0))])]);
    let mut p = program(vec![scratch("out", 4)], vec![serial]);
    p.threads = 4;
    p.kernels[0].threads = 2;
    let bad = |expected: &str| vec![Problem::BadThreads { threads: 2, expected: expected.into() }];
    assert_eq!(problems(&p, AfterPass::Build), bad("1 before scheduling"));
    assert_eq!(problems(&p, AfterPass::Schedule), bad("1 for a kernel without a parallel loop"));
    p.kernels[0].body = vec![Stmt::lp(0, 4, LoopMode::Parallel, vec![Stmt::store(0, v(0), Val::Const(0.0))])];
    assert_eq!(problems(&p, AfterPass::Schedule), vec![]);
    p.kernels[0].threads = 5;
    assert_eq!(
        problems(&p, AfterPass::Schedule),
        vec![Problem::BadThreads { threads: 5, expected: "between 1 and the program's 4".into() }]
    );
}

#[test]
fn per_thread_scratch_belongs_to_one_kernel() {
    let write = kernel(vec![lp(0, 4, vec![Stmt::store(0, v(0), Val::Const(0.0))])]);
    let read = kernel(vec![lp(0, 4, vec![Stmt::store(1, v(0), Val::load(0, v(0)))])]);
    let mut bufs = vec![scratch("col", 4), scratch("y", 4)];
    bufs[0].per_thread = true;
    let p = program(bufs, vec![write, read]);
    assert_eq!(
        problems(&p, AfterPass::Build),
        vec![Problem::PerThreadShared { buffer: "%0 'col'".into(), kernels: "'k', 'k'".into() }]
    );
}

#[test]
fn memory_layout_is_checked_after_planning() {
    let body = vec![lp(0, 16, vec![Stmt::store(1, v(0), Val::load(0, v(0)))])];
    let mut p = program(vec![scratch("x", 16), scratch("y", 16)], vec![kernel(body)]);
    // Offsets only matter once memory is planned.
    assert_eq!(problems(&p, AfterPass::Schedule), vec![]);
    assert_eq!(problems(&p, AfterPass::PlanMemory), vec![Problem::OffsetsLength { offsets: 0, buffers: 2 }]);
    p.offsets = vec![0, 16];
    p.arena_len = 32 + ARENA_SLACK;
    assert_eq!(problems(&p, AfterPass::PlanMemory), vec![]);
    // Read slack is not storage: the last buffer must end before it.
    p.arena_len = 32 + ARENA_SLACK - 1;
    let limit = 32 + ARENA_SLACK - 1 - ARENA_SLACK;
    assert_eq!(
        problems(&p, AfterPass::PlanMemory),
        vec![Problem::OutsideArena { buffer: "%1 'y'".into(), start: 16, end: 32, limit, arena: p.arena_len }]
    );
    // Both are live in the same kernel: they may not overlap...
    p.arena_len = 32 + ARENA_SLACK;
    p.offsets = vec![0, 8];
    let overlap = Problem::Overlap {
        a: "%0 'x'".into(),
        a_start: 0,
        a_end: 16,
        b: "%1 'y'".into(),
        b_start: 8,
        b_end: 24,
        from: 0,
        to: 0,
    };
    assert_eq!(problems(&p, AfterPass::PlanMemory), vec![overlap]);
    // ...unless the kernel declares them in place and the input dies there.
    p.offsets = vec![0, 0];
    p.kernels[0].in_place = vec![(0, 1)];
    assert_eq!(problems(&p, AfterPass::PlanMemory), vec![]);
}

#[test]
fn every_violation_is_reported_not_only_the_first() {
    let body = vec![lp(0, 8, vec![Stmt::store(0, v(0), Val::load(1, v(0))), Stmt::store(0, v(0) + 1i64, Val::Acc(3))])];
    let p = program(vec![scratch("out", 8), scratch("x", 4)], vec![kernel(body.clone()), kernel(body)]);
    let err = verify(&p, AfterPass::Schedule).expect_err("broken");
    assert_eq!(err.errors.len(), 6, "{err}");
    let text = err.to_string();
    assert!(text.starts_with("kernel IR is invalid after schedule (6 problems):\n"), "{text}");
    assert!(text.contains("  kernel 'k' at 0.1: store to %0 'out' index reaches 8, buffer has 8 elements"), "{text}");
}

fn first_gemm(body: &[Stmt]) -> Option<&Gemm> {
    body.iter().find_map(|s| match s {
        Stmt::Gemm(g) => Some(&**g),
        Stmt::Loop(l) => first_gemm(&l.body),
        _ => None,
    })
}

/// A real program broken by hand: LeNet's first convolution writing into
/// an output one element too short is caught at the product's C.
#[test]
fn a_shrunk_value_buffer_of_lenet_is_caught() {
    let source = include_str!("../../../../examples/lenet.net");
    let graph = crate::frontend::compile_str(source).expect("lenet parses").graph;
    // The 128-bit path on every machine, so the product sits where this test says.
    let options =
        crate::jit::JitOptions { threads: 1, target: Some(crate::target::Target::host_128()), ..Default::default() };
    let (mut p, _) = crate::jit::plan(&graph, 2, &options).expect("lenet plans");
    assert_eq!(verify(&p, AfterPass::PlanMemory), Ok(()));
    let (kernel, out) = p
        .kernels
        .iter()
        .find_map(|k| Some((k.name.clone(), first_gemm(&k.body)?.c.buf)).filter(|_| k.name.starts_with("conv1")))
        .expect("conv1's product");
    p.buffers[out].len -= 1;
    let len = p.buffers[out].len;
    let err = verify(&p, AfterPass::PlanMemory).expect_err("shrunk buffer");
    let expected = format!(
        "kernel '{kernel}' at 0.0.0: matrix C in {} index reaches {len}, buffer has {len} elements",
        label(&p, out)
    );
    assert!(err.errors.iter().any(|e| e.to_string() == expected), "expected `{expected}` in {err}");
}

/// A loop of `mode` over `extent` with its lowering decisions replaced.
fn decided(var: u32, extent: usize, mode: LoopMode, lowering: LoopLowering, body: Vec<Stmt>) -> Stmt {
    let Stmt::Loop(mut l) = Stmt::lp(var, extent, mode, body) else { unreachable!() };
    l.lowering = lowering;
    Stmt::Loop(l)
}

fn lowering_problems(body: Vec<Stmt>, pass: AfterPass) -> Vec<LoweringRule> {
    let mut p = program(vec![scratch("x", 64), scratch("y", 64)], vec![kernel(body)]);
    if pass >= AfterPass::PlanMemory {
        p.offsets = vec![0, 64];
        p.arena_len = 128 + ARENA_SLACK;
    }
    problems(&p, pass)
        .into_iter()
        .map(|problem| match problem {
            Problem::Lowering(rule) => rule,
            other => panic!("expected only lowering problems, got {other:?}"),
        })
        .collect()
}

#[test]
fn vector_tails_must_match_the_extent_and_be_legal() {
    let copy = || vec![Stmt::store(1, v(0), Val::load(0, v(0)))];
    let tail = |tail| LoopLowering { tail, ..LoopLowering::default() };
    let vector = |extent, t| vec![decided(0, extent, LoopMode::Vector, tail(t), copy())];
    // Undecided before the pass, required after it.
    assert_eq!(lowering_problems(vector(10, VectorTail::None), AfterPass::PlanMemory), vec![]);
    let wrong =
        |extent, tail, expected| LoweringRule::WrongTail { var: 0, mode: LoopMode::Vector, extent, tail, expected };
    assert_eq!(
        lowering_problems(vector(10, VectorTail::None), AfterPass::Lowering),
        vec![wrong(10, VectorTail::None, "a tail for the last extent % lanes iterations")]
    );
    assert_eq!(
        lowering_problems(vector(8, VectorTail::Scalar), AfterPass::Lowering),
        vec![wrong(8, VectorTail::Scalar, "none (whole vectors)")]
    );
    assert_eq!(
        lowering_problems(vector(3, VectorTail::Overlap), AfterPass::Lowering),
        vec![wrong(3, VectorTail::Overlap, "a scalar tail (no whole vector)")]
    );
    assert_eq!(lowering_problems(vector(10, VectorTail::Overlap), AfterPass::Lowering), vec![]);
    // Whether lanes may repeat depends on the arena layout.
    assert_eq!(
        lowering_problems(vector(10, VectorTail::Overlap), AfterPass::Schedule),
        vec![LoweringRule::OverlapUnplanned { var: 0 }]
    );
    // An accumulating store would add the repeated lanes twice.
    let add = vec![decided(0, 10, LoopMode::Vector, tail(VectorTail::Overlap), {
        vec![Stmt::store_add(1, v(0), Val::load(0, v(0)))]
    })];
    assert_eq!(lowering_problems(add, AfterPass::Lowering), vec![LoweringRule::OverlapChangesResult { var: 0 }]);
    let serial = vec![decided(0, 10, LoopMode::Serial, tail(VectorTail::Scalar), copy())];
    assert_eq!(
        lowering_problems(serial, AfterPass::Build),
        vec![LoweringRule::WrongTail {
            var: 0,
            mode: LoopMode::Serial,
            extent: 10,
            tail: VectorTail::Scalar,
            expected: "none (not a vector loop)"
        }]
    );
}

#[test]
fn an_overlapping_tail_is_illegal_where_memory_is_shared() {
    let lowering = LoopLowering { tail: VectorTail::Overlap, ..LoopLowering::default() };
    let body = vec![decided(0, 10, LoopMode::Vector, lowering, vec![Stmt::store(1, v(0), Val::load(0, v(0)))])];
    let mut p = program(vec![scratch("x", 64), scratch("y", 64)], vec![kernel(body)]);
    p.kernels[0].in_place = vec![(0, 1)];
    p.offsets = vec![0, 0];
    p.arena_len = 64 + ARENA_SLACK;
    assert_eq!(
        problems(&p, AfterPass::Lowering),
        vec![Problem::Lowering(LoweringRule::OverlapChangesResult { var: 0 })]
    );
}

#[test]
fn unrolling_copies_and_chains_are_checked() {
    let store = || vec![Stmt::store(1, v(0), Val::Const(1.0))];
    let written_out = LoopLowering { unroll: Unroll::WrittenOut, ..LoopLowering::default() };
    let long = vec![decided(0, 17, LoopMode::Serial, written_out.clone(), store())];
    assert_eq!(
        lowering_problems(long, AfterPass::Build),
        vec![LoweringRule::TooLongToWriteOut { var: 0, iterations: 17 }]
    );
    let parallel = vec![decided(0, 4, LoopMode::Parallel, written_out, store())];
    assert_eq!(
        lowering_problems(parallel, AfterPass::Build),
        vec![LoweringRule::WrittenOutMode { var: 0, mode: LoopMode::Parallel }]
    );
    let serial = LoopLowering { copies: 4, chains: 4, ..LoopLowering::default() };
    assert_eq!(
        lowering_problems(vec![decided(0, 8, LoopMode::Serial, serial, store())], AfterPass::Build),
        vec![
            LoweringRule::BadCopies { var: 0, mode: LoopMode::Serial, copies: 4 },
            LoweringRule::ChainsWithoutPartials { var: 0, mode: LoopMode::Serial, chains: 4 }
        ]
    );
    // A vector loop's outer reduction needs partial vectors once decided.
    let sum = vec![
        Stmt::Let { acc: 0, init: Val::Const(0.0) },
        Stmt::lp(0, 64, LoopMode::Vector, vec![Stmt::Reduce { acc: 0, op: RedOp::Add, val: Val::load(0, v(0)) }]),
        Stmt::store(1, Idx::Const(0), Val::Acc(0)),
    ];
    assert_eq!(lowering_problems(sum.clone(), AfterPass::PlanMemory), vec![]);
    assert_eq!(lowering_problems(sum, AfterPass::Lowering), vec![LoweringRule::NoChains { var: 0 }]);
}

#[test]
fn kept_partials_are_only_of_untouched_accumulators() {
    // for v0 in 0..4 keep [a0] { for v1 in 0..16 vector { a0 += x[..] } BODY }
    let keep = |chains, tail: Vec<Stmt>| {
        let lowering = LoopLowering { keep_partials: vec![0], chains, ..LoopLowering::default() };
        let mut body = vec![Stmt::lp(
            1,
            16,
            LoopMode::Vector,
            vec![Stmt::Reduce { acc: 0, op: RedOp::Add, val: Val::load(0, v(0) * 16i64 + v(1)) }],
        )];
        body.extend(tail);
        vec![
            Stmt::Let { acc: 0, init: Val::Const(0.0) },
            decided(0, 4, LoopMode::Serial, lowering, body),
            Stmt::store(1, Idx::Const(0), Val::Acc(0)),
        ]
    };
    assert_eq!(lowering_problems(keep(4, vec![]), AfterPass::Build), vec![]);
    assert_eq!(lowering_problems(keep(0, vec![]), AfterPass::Build), vec![LoweringRule::NoChains { var: 0 }]);
    // Reading the sum inside the loop would see it without its partials.
    let read = vec![Stmt::store(1, v(0), Val::Acc(0))];
    assert_eq!(
        lowering_problems(keep(4, read), AfterPass::Build),
        vec![LoweringRule::BadKeep { var: 0, acc: 0, expected: "no read or set of it inside the loop" }]
    );
}

#[test]
fn dot_steps_must_fit_the_tile() {
    // small_gemm reduces over k = 4: one vector step; B^T is dense along p.
    let dot = |steps| {
        let mut g = small_gemm(GemmTile::Dot { rows: 2, cols: 2, steps });
        (g.b.row_stride, g.b.col_stride) = (1, 4);
        g
    };
    assert_eq!(gemm_problems(dot(DotSteps::Rolled(1)), 16), vec![]);
    let bad = |steps, expected: &str| Problem::Lowering(LoweringRule::BadDotSteps { steps, expected: expected.into() });
    assert_eq!(
        gemm_problems(dot(DotSteps::Rolled(2)), 16),
        vec![bad(DotSteps::Rolled(2), "a divisor of the 1 vector steps per iteration")]
    );
    assert_eq!(
        gemm_problems(dot(DotSteps::WrittenOut), 16),
        vec![bad(DotSteps::WrittenOut, "a rolled loop (only split tiles are written out)")]
    );
}
