//! Text dumps of a [`Program`] for `kiln inspect --emit kernels|memory`.

use super::*;
use crate::graph::Graph;
use std::fmt::Write;

fn idx(i: &Idx) -> String {
    match i {
        Idx::Const(c) => c.to_string(),
        Idx::Var(v) => format!("i{v}"),
        Idx::Add(a, b) => format!("{} + {}", idx(a), idx(b)),
        Idx::Mul(a, k) => match **a {
            Idx::Add(..) => format!("({})*{k}", idx(a)),
            _ => format!("{}*{k}", idx(a)),
        },
        Idx::Div(a, k) => format!("({}) / {k}", idx(a)),
        Idx::Rem(a, k) => format!("({}) % {k}", idx(a)),
        Idx::Min(a, b) => format!("min({}, {})", idx(a), idx(b)),
        Idx::Max(a, b) => format!("max({}, {})", idx(a), idx(b)),
        Idx::Xor(a, b) => format!("xor({}, {})", idx(a), idx(b)),
        Idx::Table(t, a) => format!("t{t}[{}]", idx(a)),
        Idx::FloatTable(t, a) => format!("int(b{t}[{}])", idx(a)),
    }
}

fn cmp(c: Cmp) -> &'static str {
    match c {
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        Cmp::Eq => "==",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
    }
}

fn cond(c: &Cond) -> String {
    match c {
        Cond::Index(o, a, b) => format!("{} {} {}", idx(a), cmp(*o), idx(b)),
        Cond::Value(o, a, b) => format!("{} {} {}", val(a), cmp(*o), val(b)),
        Cond::IsNan(a) => format!("isnan({})", val(a)),
        Cond::And(a, b) => format!("({}) && ({})", cond(a), cond(b)),
        Cond::Or(a, b) => format!("({}) || ({})", cond(a), cond(b)),
    }
}

fn val(v: &Val) -> String {
    match v {
        Val::Const(c) => format!("{c:?}"),
        Val::Load(b, i) => format!("b{b}[{}]", idx(i)),
        Val::Acc(a) => format!("a{a}"),
        Val::Un(op, x) => format!("{}({})", format!("{op:?}").to_lowercase(), val(x)),
        Val::Bin(op, a, b) => {
            let s = match op {
                BinOp::Add => "+",
                BinOp::Sub => "-",
                BinOp::Mul => "*",
                BinOp::Div => "/",
            };
            format!("({} {s} {})", val(a), val(b))
        }
        Val::Select(c, a, b) => format!("select({}, {}, {})", cond(c), val(a), val(b)),
        Val::FromIdx(i) => format!("float({})", idx(i)),
    }
}

fn matrix(m: &MatrixRef) -> String {
    format!("b{}[{} + i*{} + j*{}]", m.buf, idx(&m.offset), m.row_stride, m.col_stride)
}

fn stmts(out: &mut String, body: &[Stmt], depth: usize, lanes: usize) {
    let pad = "  ".repeat(depth);
    for s in body {
        match s {
            Stmt::Loop(l) => {
                let mode = match l.mode {
                    LoopMode::Serial => "",
                    LoopMode::Vector => " vector(4)",
                    LoopMode::Parallel => " parallel",
                };
                let _ = writeln!(out, "{pad}for i{} in 0..{}{mode} {{", l.var, l.extent);
                stmts(out, &l.body, depth + 1, lanes);
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::Store { buf, idx: i, val: v, accumulate } => {
                let op = if *accumulate { "+=" } else { "=" };
                let _ = writeln!(out, "{pad}b{buf}[{}] {op} {}", idx(i), val(v));
            }
            Stmt::Let { acc, init } => {
                let _ = writeln!(out, "{pad}let a{acc} = {}", val(init));
            }
            Stmt::Reduce { acc, op, val: v } => {
                let _ = writeln!(out, "{pad}a{acc} {} {}", if *op == RedOp::Add { "+=" } else { "max=" }, val(v));
            }
            Stmt::Set { acc, val: v } => {
                let _ = writeln!(out, "{pad}a{acc} = {}", val(v));
            }
            Stmt::If { cond: c, then, otherwise } => {
                let _ = writeln!(out, "{pad}if {} {{", cond(c));
                stmts(out, then, depth + 1, lanes);
                if !otherwise.is_empty() {
                    let _ = writeln!(out, "{pad}}} else {{");
                    stmts(out, otherwise, depth + 1, lanes);
                }
                let _ = writeln!(out, "{pad}}}");
            }
            Stmt::Gemm(g) => {
                let _ = writeln!(
                    out,
                    "{pad}gemm m={} n={} k={} {:?}\n{pad}  A = {}\n{pad}  B = {}\n{pad}  C = {}{}",
                    g.m,
                    g.n,
                    g.k,
                    g.tile,
                    matrix(&g.a),
                    matrix(&g.b),
                    matrix(&g.c),
                    if g.epilogue.accumulate { " (+=)" } else { "" }
                );
                if let Some(t) = g.b_rows {
                    let _ = writeln!(out, "{pad}  B rows at offsets t{t}[p] (implicit im2col)");
                }
                if let Some(w) = g.b_wrap {
                    let _ = writeln!(out, "{pad}  B columns wrap: rows of {} placed {} apart", w.row, w.stride);
                }
                if let (Some(t), Some(w)) = (g.c_rows, g.c_wrap) {
                    let _ = writeln!(
                        out,
                        "{pad}  C rows at offsets t{t}[i], columns in rows of {} placed {} apart (col2im fused)",
                        w.row, w.stride
                    );
                }
                if let Some(k) = g.k_split {
                    let wraps = if k.wraps(g.k, lanes) { ", vector steps across segments" } else { "" };
                    let _ = writeln!(
                        out,
                        "{pad}  p in {} segments, {} apart in A and {} in B{wraps}",
                        k.outer, k.a_stride, k.b_stride
                    );
                }
                let e = &g.epilogue;
                if let Some(b) = &e.bias {
                    let _ = writeln!(out, "{pad}  bias {b:?}");
                }
                if let Some(a) = e.activation {
                    let _ = writeln!(out, "{pad}  activation {a:?}");
                }
                if let Some(m) = &e.pre_activation {
                    let _ = writeln!(out, "{pad}  pre-activation -> {}", matrix(m));
                }
                if let Some((a, m)) = &e.grad_mask {
                    let _ = writeln!(out, "{pad}  times {a:?}'({})", matrix(m));
                }
            }
        }
    }
}

/// The kernels of `program`: each with the graph nodes it contains, its
/// threads, its buffers and its loop nest.
pub fn describe_kernels(program: &Program, graph: &Graph) -> String {
    let mut out = String::new();
    for (i, k) in program.kernels.iter().enumerate() {
        let nodes: Vec<String> =
            k.nodes.iter().map(|&n| format!("{} ({})", graph.node(n).name, graph.node(n).op.mnemonic())).collect();
        let _ = writeln!(out, "kernel {i} `{}`: {} threads, {} flop", k.name, k.threads, k.flops);
        let _ = writeln!(out, "  nodes: {}", nodes.join(", "));
        let names = |bs: &[BufId]| {
            bs.iter().map(|&b| format!("b{b}={}", program.buffers[b].name)).collect::<Vec<_>>().join(" ")
        };
        let _ = writeln!(out, "  reads: {}", names(&k.reads));
        let _ = writeln!(out, "  writes: {}", names(&k.writes));
        stmts(&mut out, &k.body, 1, program.target.vector_lanes);
        out.push('\n');
    }
    out
}

/// The arena layout: every buffer's offset, size and kind, and the peak.
pub fn describe_memory(program: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "arena: {} bytes ({} f32), {} threads",
        program.arena_len * 4,
        program.arena_len,
        program.threads
    );
    let mut order: Vec<BufId> = (0..program.buffers.len()).collect();
    order.sort_by_key(|&b| (program.offsets.get(b).copied().unwrap_or(0), b));
    for b in order {
        let buf = &program.buffers[b];
        let kind = match &buf.kind {
            BufferKind::Leaf(_) => "leaf",
            BufferKind::Value(_) => "value",
            BufferKind::Scratch => "scratch",
            BufferKind::ConstF32(_) | BufferKind::ConstI32(_) => "const",
        };
        let copies = if buf.per_thread { format!(" x{} threads", program.threads) } else { String::new() };
        let _ = writeln!(
            out,
            "  b{b:<4} @ {:>10} bytes  {:>9} bytes{copies}  {kind:<7} {}",
            program.offsets.get(b).copied().unwrap_or(0) * 4,
            buf.len * 4,
            buf.name
        );
    }
    out
}
