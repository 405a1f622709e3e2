//! Prints a [`Program`] as kernel IR text (see the module docs of `text`).

use super::lex::quote;
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::{Activation, GeluForm};
use std::fmt::Write;

/// The text form of `program`; [`super::parse_program`] reads it back to an
/// equal program.
pub fn write_program(program: &Program) -> String {
    let mut out = String::new();
    let _ = write!(out, "program threads {} arena {}", program.threads, program.arena_len);
    // The baseline target is implied, so hand-written programs need not say it.
    if program.target != Target::baseline() {
        let _ = write!(out, " target {}", program.target);
    }
    out.push('\n');
    let offsets_per_buffer = program.offsets.len() == program.buffers.len();
    if !program.buffers.is_empty() {
        out.push('\n');
    }
    for (id, buffer) in program.buffers.iter().enumerate() {
        let offset = if offsets_per_buffer { Some(program.offsets[id]) } else { None };
        write_buffer(&mut out, id, buffer, offset);
    }
    if !offsets_per_buffer {
        let _ = writeln!(out, "offsets {}", list(&program.offsets, |o| o.to_string()));
    }
    if !program.values.is_empty() || !program.updates.is_empty() {
        out.push('\n');
    }
    for &(node, buf) in &program.values {
        let _ = writeln!(out, "value {} -> %{buf}", node_ref(node));
    }
    for &(leaf, new) in &program.updates {
        let _ = writeln!(out, "update %{leaf} = %{new}");
    }
    for (index, kernel) in program.kernels.iter().enumerate() {
        out.push('\n');
        write_kernel(&mut out, index, kernel);
    }
    out
}

fn write_buffer(out: &mut String, id: usize, buffer: &Buffer, offset: Option<usize>) {
    let kind = match &buffer.kind {
        BufferKind::Leaf(n) => format!("leaf {}", node_ref(*n)),
        BufferKind::Value(n) => format!("value {}", node_ref(*n)),
        BufferKind::Scratch => "scratch".to_string(),
        BufferKind::ConstF32(_) => "const_f32".to_string(),
        BufferKind::ConstI32(_) => "const_i32".to_string(),
    };
    let _ = write!(out, "%{id} = {kind} {} len {}", quote(&buffer.name), buffer.len);
    if buffer.per_thread {
        out.push_str(" per_thread");
    }
    if let Some(offset) = offset {
        let _ = write!(out, " @ {offset}");
    }
    match &buffer.kind {
        BufferKind::ConstF32(data) => {
            let _ = write!(out, " {}", list(data, |&x| f32_text(x)));
        }
        BufferKind::ConstI32(data) => {
            let _ = write!(out, " {}", list(data, |x| x.to_string()));
        }
        _ => {}
    }
    out.push('\n');
}

fn write_kernel(out: &mut String, index: usize, kernel: &Kernel) {
    let emission = match kernel.emission {
        Emission::Optimised => "",
        Emission::AsScheduled => " as_scheduled",
    };
    let _ = writeln!(
        out,
        "kernel {index} {} threads {} flops {}{emission} {{",
        quote(&kernel.name),
        kernel.threads,
        kernel.flops
    );
    let _ = writeln!(out, "  nodes {}", list(&kernel.nodes, |&n| node_ref(n)));
    let _ = writeln!(out, "  reads {}", list(&kernel.reads, |b| format!("%{b}")));
    let _ = writeln!(out, "  writes {}", list(&kernel.writes, |b| format!("%{b}")));
    let _ = writeln!(out, "  in_place {}", list(&kernel.in_place, |(i, o)| format!("%{i} -> %{o}")));
    write_block(out, &kernel.body, 1);
    out.push_str("}\n");
}

fn write_block(out: &mut String, body: &[Stmt], depth: usize) {
    for stmt in body {
        write_stmt(out, stmt, depth);
    }
}

fn write_stmt(out: &mut String, stmt: &Stmt, depth: usize) {
    let pad = "  ".repeat(depth);
    match stmt {
        Stmt::Loop(l) => {
            let mode = match l.mode {
                LoopMode::Serial => "",
                LoopMode::Vector => " vector",
                LoopMode::Parallel => " parallel",
            };
            let _ = writeln!(out, "{pad}for v{} in 0..{}{mode}{} {{", l.var, l.extent, loop_lowering(&l.lowering));
            write_block(out, &l.body, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
        Stmt::Store { buf, idx: i, val: v, accumulate } => {
            let op = if *accumulate { "+=" } else { "=" };
            let _ = writeln!(out, "{pad}%{buf}[{}] {op} {}", idx(i), val(v));
        }
        Stmt::Let { acc, init } => {
            let _ = writeln!(out, "{pad}let a{acc} = {}", val(init));
        }
        Stmt::Reduce { acc, op, val: v } => {
            let op = match op {
                RedOp::Add => "+=",
                RedOp::Max => "max=",
            };
            let _ = writeln!(out, "{pad}a{acc} {op} {}", val(v));
        }
        Stmt::Set { acc, val: v } => {
            let _ = writeln!(out, "{pad}a{acc} = {}", val(v));
        }
        Stmt::If { cond: c, then, otherwise } => {
            let _ = writeln!(out, "{pad}if {} {{", cond(c));
            write_block(out, then, depth + 1);
            if !otherwise.is_empty() {
                let _ = writeln!(out, "{pad}}} else {{");
                write_block(out, otherwise, depth + 1);
            }
            let _ = writeln!(out, "{pad}}}");
        }
        Stmt::Gemm(g) => write_gemm(out, g, &pad),
    }
}

/// The decisions that differ from [`LoopLowering::default`], each with a
/// leading space: `written_out`, `tail overlap|scalar|scalar_written_out`,
/// `copies N`, `chains N`, `keep [aN, ...]`.
fn loop_lowering(l: &LoopLowering) -> String {
    let mut out = String::new();
    if l.unroll == Unroll::WrittenOut {
        out.push_str(" written_out");
    }
    match l.tail {
        VectorTail::None => {}
        VectorTail::Overlap => out.push_str(" tail overlap"),
        VectorTail::Scalar => out.push_str(" tail scalar"),
        VectorTail::ScalarWrittenOut => out.push_str(" tail scalar_written_out"),
    }
    if l.copies != 1 {
        let _ = write!(out, " copies {}", l.copies);
    }
    if l.chains != 0 {
        let _ = write!(out, " chains {}", l.chains);
    }
    if !l.keep_partials.is_empty() {
        let _ = write!(out, " keep {}", list(&l.keep_partials, |a| format!("a{a}")));
    }
    out
}

/// Every field of the product, one per line, optional ones only when set.
fn write_gemm(out: &mut String, g: &Gemm, pad: &str) {
    let _ = writeln!(out, "{pad}gemm m {} n {} k {} {{", g.m, g.n, g.k);
    let mut line = |text: String| {
        let _ = writeln!(out, "{pad}  {text}");
    };
    line(match g.tile {
        GemmTile::Outer { rows, vectors, unroll } => {
            format!("tile outer rows {rows} vectors {vectors} unroll {unroll}")
        }
        GemmTile::Dot { rows, cols, steps } => {
            let steps = match steps {
                DotSteps::Rolled(1) => String::new(),
                DotSteps::Rolled(n) => format!(" steps {n}"),
                DotSteps::WrittenOut => " steps written_out".to_string(),
            };
            format!("tile dot rows {rows} cols {cols}{steps}")
        }
        GemmTile::Micro { isa, rows, vectors, transposed } => {
            format!("tile micro {isa} rows {rows} vectors {vectors}{}", if transposed { " transposed" } else { "" })
        }
    });
    line(format!("a {}", matrix(&g.a)));
    line(format!("b {}", matrix(&g.b)));
    if let Some(t) = g.b_rows {
        line(format!("b_rows %{t}"));
    }
    if let Some(s) = g.k_split {
        line(format!("k_split outer {} a_stride {} b_stride {}", s.outer, s.a_stride, s.b_stride));
    }
    if let Some(w) = g.b_wrap {
        line(format!("b_wrap {}", wrap(w)));
    }
    line(format!("c {}", matrix(&g.c)));
    if let Some(t) = g.c_rows {
        line(format!("c_rows %{t}"));
    }
    if let Some(w) = g.c_wrap {
        line(format!("c_wrap {}", wrap(w)));
    }
    if g.a_splat {
        line("a_splat".to_string());
    }
    let e = &g.epilogue;
    if e.accumulate {
        line("accumulate".to_string());
    }
    match &e.bias {
        Some(Bias::PerRow(b, i)) => line(format!("bias per_row %{b}[{}]", idx(i))),
        Some(Bias::PerColumn(b, i)) => line(format!("bias per_column %{b}[{}]", idx(i))),
        None => {}
    }
    if let Some(a) = e.activation {
        line(format!("activation {}", activation(a)));
    }
    if let Some(m) = &e.pre_activation {
        line(format!("pre_activation {}", matrix(m)));
    }
    if let Some((a, m)) = &e.grad_mask {
        line(format!("grad_mask {} {}", activation(*a), matrix(m)));
    }
    let _ = writeln!(out, "{pad}}}");
}

fn matrix(m: &MatrixRef) -> String {
    format!("%{}[{}] stride {} {}", m.buf, idx(&m.offset), m.row_stride, m.col_stride)
}

fn wrap(w: ColumnWrap) -> String {
    format!("row {} stride {}", w.row, w.stride)
}

pub(super) fn activation(a: Activation) -> String {
    match a {
        Activation::Relu => "relu".to_string(),
        Activation::Sigmoid => "sigmoid".to_string(),
        Activation::Tanh => "tanh".to_string(),
        Activation::Step => "step".to_string(),
        Activation::Gelu(GeluForm::Exact) => "gelu".to_string(),
        Activation::Gelu(GeluForm::Tanh) => "gelu_tanh".to_string(),
        Activation::Silu => "silu".to_string(),
        Activation::LeakyRelu(slope) => format!("leaky_relu({})", f32_text(slope)),
        Activation::Elu(alpha) => format!("elu({})", f32_text(alpha)),
    }
}

fn node_ref(n: NodeId) -> String {
    format!("n{}", n.index())
}

fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let items: Vec<String> = items.iter().map(show).collect();
    format!("[{}]", items.join(", "))
}

/// Rust's shortest decimal that parses back to the same `f32` (it always
/// has a `.` or an exponent, or is `inf`); a NaN as its bits, which the
/// decimal form would lose.
pub(super) fn f32_text(x: f32) -> String {
    if x.is_nan() { format!("nan(0x{:08x})", x.to_bits()) } else { format!("{x:?}") }
}

// Expressions. Binary operators are left-associative, so a left operand
// needs parentheses only when it binds more loosely than its operator and a
// right operand also when it binds equally: the text keeps the tree's shape.

/// Binding strength of an index's top operator (higher binds tighter).
fn idx_level(i: &Idx) -> u8 {
    match i {
        Idx::Add(..) => 1,
        Idx::Mul(..) | Idx::Div(..) | Idx::Rem(..) => 2,
        _ => 3,
    }
}

fn idx_operand(i: &Idx, min_level: u8) -> String {
    if idx_level(i) < min_level { format!("({})", idx(i)) } else { idx(i) }
}

pub(super) fn idx(i: &Idx) -> String {
    match i {
        Idx::Const(c) => c.to_string(),
        Idx::Var(v) => format!("v{v}"),
        Idx::Add(a, b) => format!("{} + {}", idx_operand(a, 1), idx_operand(b, 2)),
        Idx::Mul(a, k) => format!("{} * {k}", idx_operand(a, 2)),
        Idx::Div(a, k) => format!("{} / {k}", idx_operand(a, 2)),
        Idx::Rem(a, k) => format!("{} % {k}", idx_operand(a, 2)),
        Idx::Min(a, b) => format!("min({}, {})", idx(a), idx(b)),
        Idx::Max(a, b) => format!("max({}, {})", idx(a), idx(b)),
        Idx::Xor(a, b) => format!("xor({}, {})", idx(a), idx(b)),
        Idx::Table(t, a) => format!("%{t}[{}]", idx(a)),
        Idx::FloatTable(t, a) => format!("int(%{t}[{}])", idx(a)),
    }
}

fn val_level(v: &Val) -> u8 {
    match v {
        Val::Bin(BinOp::Add | BinOp::Sub, ..) => 1,
        Val::Bin(BinOp::Mul | BinOp::Div, ..) => 2,
        _ => 3,
    }
}

fn val_operand(v: &Val, min_level: u8) -> String {
    if val_level(v) < min_level { format!("({})", val(v)) } else { val(v) }
}

pub(super) fn val(v: &Val) -> String {
    match v {
        Val::Const(c) => f32_text(*c),
        Val::Load(b, i) => format!("%{b}[{}]", idx(i)),
        Val::Acc(a) => format!("a{a}"),
        Val::Un(op, x) => format!("{}({})", un_op(*op), val(x)),
        Val::Bin(op, a, b) => {
            let level = val_level(v);
            let sym = match op {
                BinOp::Add => "+",
                BinOp::Sub => "-",
                BinOp::Mul => "*",
                BinOp::Div => "/",
            };
            format!("{} {sym} {}", val_operand(a, level), val_operand(b, level + 1))
        }
        Val::Select(c, a, b) => format!("select({}, {}, {})", cond(c), val(a), val(b)),
        Val::FromIdx(i) => format!("float({})", idx(i)),
    }
}

pub(super) fn un_op(op: UnOp) -> &'static str {
    match op {
        UnOp::Neg => "neg",
        UnOp::Exp => "exp",
        UnOp::Ln => "ln",
        UnOp::Tanh => "tanh",
        UnOp::Relu => "relu",
        UnOp::Erf => "erf",
        UnOp::Sqrt => "sqrt",
    }
}

pub(super) fn cmp(c: Cmp) -> &'static str {
    match c {
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        Cmp::Eq => "==",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
    }
}

fn cond_level(c: &Cond) -> u8 {
    match c {
        Cond::Or(..) => 1,
        Cond::And(..) => 2,
        _ => 3,
    }
}

fn cond_operand(c: &Cond, min_level: u8) -> String {
    if cond_level(c) < min_level { format!("({})", cond(c)) } else { cond(c) }
}

pub(super) fn cond(c: &Cond) -> String {
    match c {
        Cond::Index(op, a, b) => format!("icmp {} {} {}", idx(a), cmp(*op), idx(b)),
        Cond::Value(op, a, b) => format!("fcmp {} {} {}", val(a), cmp(*op), val(b)),
        Cond::IsNan(a) => format!("isnan({})", val(a)),
        Cond::And(a, b) => format!("{} && {}", cond_operand(a, 2), cond_operand(b, 3)),
        Cond::Or(a, b) => format!("{} || {}", cond_operand(a, 1), cond_operand(b, 2)),
    }
}
