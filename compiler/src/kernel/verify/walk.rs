//! The per-kernel checks: one walk over the loop nest with the loop
//! variables, accumulators and guards in scope, then the access lists,
//! in-place pairs and thread counts.

use super::interval::{Interval, Ranges, Unbounded, bounds_problem};
use super::{AfterPass, Problem, Sink, gemm, kind_name, label, vector};
use crate::kernel::build::accesses;
use crate::kernel::{AccId, BufId, BufferKind, Cond, Gemm, Kernel, LoopMode, Stmt, Val, VarId};
use std::collections::{HashMap, HashSet};

/// Program-level tables: `values` and `updates`.
pub(super) fn check_program_tables(sink: &mut Sink<'_>) {
    let program = sink.program;
    for &(_, buf) in &program.values {
        sink.check_exists(None, "", "values", buf);
    }
    for &(leaf, new) in &program.updates {
        let (l, n) = (sink.check_exists(None, "", "updates", leaf), sink.check_exists(None, "", "updates", new));
        if !(l && n) {
            continue;
        }
        let bad = |expected| Problem::BadUpdate { leaf: label(program, leaf), new: label(program, new), expected };
        if !matches!(program.buffers[leaf].kind, BufferKind::Leaf(_)) {
            sink.program_error(bad("the first buffer to be a leaf"));
        }
        if program.buffers[leaf].len != program.buffers[new].len {
            sink.program_error(bad("both buffers to have the same length"));
        }
    }
}

/// Per-thread scratch belongs to one kernel: another kernel may run with
/// another thread assignment and would see a different copy.
pub(super) fn check_per_thread_scratch(sink: &mut Sink<'_>) {
    let program = sink.program;
    let mut users: HashMap<BufId, Vec<&str>> = HashMap::new();
    for k in &program.kernels {
        let used: HashSet<BufId> = k.reads.iter().chain(&k.writes).copied().collect();
        for b in used {
            if program.buffers.get(b).is_some_and(|buf| buf.per_thread) {
                users.entry(b).or_default().push(&k.name);
            }
        }
    }
    let mut shared: Vec<_> = users.into_iter().filter(|(_, ks)| ks.len() > 1).collect();
    shared.sort();
    for (b, ks) in shared {
        let kernels = ks.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", ");
        sink.program_error(Problem::PerThreadShared { buffer: label(program, b), kernels });
    }
}

/// Every check of one kernel.
pub(super) fn check_kernel<'p>(sink: &mut Sink<'p>, kernel: &'p Kernel, pass: AfterPass) {
    let program = sink.program;
    let mut walker = Walker {
        sink: &mut *sink,
        kernel,
        ranges: Ranges { program, vars: HashMap::new() },
        bound: HashSet::new(),
        accs: vec![Vec::new()],
        guards: 0,
        depth: 0,
        reachable: true,
    };
    walker.stmts(&kernel.body, "");
    check_access_lists(sink, kernel);
    check_in_place(sink, kernel);
    check_threads(sink, kernel, pass);
}

struct Walker<'s, 'p> {
    sink: &'s mut Sink<'p>,
    kernel: &'p Kernel,
    /// Loop variables in scope and their ranges.
    ranges: Ranges<'p>,
    /// Every loop variable bound so far in the kernel.
    bound: HashSet<VarId>,
    /// Accumulators declared, one list per enclosing statement list.
    accs: Vec<Vec<AccId>>,
    /// Enclosing `if`s.
    guards: usize,
    /// Statement lists entered (1 for the kernel's top level).
    depth: usize,
    /// False inside a loop that never runs (extent 0): no bounds to check.
    reachable: bool,
}

fn child(path: &str, step: impl std::fmt::Display) -> String {
    if path.is_empty() { step.to_string() } else { format!("{path}.{step}") }
}

impl Walker<'_, '_> {
    fn report(&mut self, path: &str, problem: Problem) {
        self.sink.kernel_error(&self.kernel.name, path, problem);
    }

    fn exists(&mut self, path: &str, role: &str, buf: BufId) -> bool {
        self.sink.check_exists(Some(&self.kernel.name), path, role, buf)
    }

    fn stmts(&mut self, body: &[Stmt], path: &str) {
        self.accs.push(Vec::new());
        self.depth += 1;
        for (i, s) in body.iter().enumerate() {
            self.stmt(s, &child(path, i));
        }
        self.depth -= 1;
        self.accs.pop();
    }

    fn declared(&self, acc: AccId) -> bool {
        self.accs.iter().any(|scope| scope.contains(&acc))
    }

    fn use_acc(&mut self, path: &str, usage: &'static str, acc: AccId) {
        if !self.declared(acc) {
            self.report(path, Problem::AccUndeclared { usage, acc });
        }
    }

    fn stmt(&mut self, s: &Stmt, path: &str) {
        match s {
            Stmt::Loop(l) => {
                if !self.bound.insert(l.var) {
                    self.report(path, Problem::LoopVarReused { var: l.var });
                }
                let alone_at_top = self.depth == 1 && self.kernel.body.len() == 1;
                if l.mode == LoopMode::Parallel && !alone_at_top {
                    self.report(path, Problem::ParallelNotOutermost { var: l.var });
                }
                if l.mode == LoopMode::Vector {
                    for rule in vector::check(l) {
                        self.report(path, Problem::Vector { var: l.var, rule });
                    }
                }
                let outer = self.ranges.vars.insert(l.var, Interval { lo: 0, hi: l.extent as i64 - 1 });
                let reachable = self.reachable;
                self.reachable &= l.extent > 0;
                self.stmts(&l.body, path);
                self.reachable = reachable;
                match outer {
                    Some(r) => self.ranges.vars.insert(l.var, r),
                    None => self.ranges.vars.remove(&l.var),
                };
            }
            Stmt::Store { buf, idx, val, .. } => {
                self.val(val, path);
                if self.exists(path, "store", *buf) {
                    self.access(path, "store to", *buf, idx);
                } else {
                    self.index_problems(path, idx);
                }
            }
            Stmt::Let { acc, init } => {
                self.val(init, path);
                if let Some(scope) = self.accs.last_mut() {
                    scope.push(*acc);
                }
            }
            Stmt::Reduce { acc, val, .. } => {
                self.val(val, path);
                self.use_acc(path, "reduce into", *acc);
            }
            Stmt::Set { acc, val } => {
                self.val(val, path);
                self.use_acc(path, "set of", *acc);
            }
            Stmt::If { cond, then, otherwise } => {
                self.cond(cond, path);
                self.guards += 1;
                self.stmts(then, &child(path, "then"));
                self.stmts(otherwise, &child(path, "else"));
                self.guards -= 1;
            }
            Stmt::Gemm(g) => self.gemm(g, path),
        }
    }

    /// Reports the problems inside an index and returns its range.
    fn range(&mut self, path: &str, i: &crate::kernel::Idx) -> Result<Interval, Unbounded> {
        let mut problems = Vec::new();
        let r = self.ranges.eval(i, &mut problems);
        for p in problems {
            self.report(path, p);
        }
        r
    }

    fn index_problems(&mut self, path: &str, i: &crate::kernel::Idx) {
        let _ = self.range(path, i);
    }

    /// Checks that `access` of `buf` (which exists) at `idx` stays inside it.
    fn access(&mut self, path: &str, access: &str, buf: BufId, idx: &crate::kernel::Idx) {
        let r = self.range(path, idx);
        self.check_range(path, access, buf, r);
    }

    fn check_range(&mut self, path: &str, access: &str, buf: BufId, range: Result<Interval, Unbounded>) {
        if !self.reachable {
            return;
        }
        match range {
            Ok(r) => {
                if let Some(p) = bounds_problem(self.sink.program, access, buf, r) {
                    self.report(path, p);
                }
            }
            Err(Unbounded::FloatTable(_)) if self.guards > 0 => {}
            Err(Unbounded::Invalid) => {}
            Err(why) => {
                let reason = why.reason(self.sink.program);
                let (access, buffer) = (access.to_string(), label(self.sink.program, buf));
                self.report(path, Problem::Unbounded { access, buffer, reason });
            }
        }
    }

    fn val(&mut self, v: &Val, path: &str) {
        match v {
            Val::Const(_) => {}
            Val::Load(buf, i) => {
                if self.exists(path, "load", *buf) {
                    self.access(path, "load of", *buf, i);
                } else {
                    self.index_problems(path, i);
                }
            }
            Val::Acc(a) => self.use_acc(path, "read of", *a),
            Val::Un(_, a) => self.val(a, path),
            Val::Bin(_, a, b) => {
                self.val(a, path);
                self.val(b, path);
            }
            Val::Select(c, a, b) => {
                self.cond(c, path);
                self.val(a, path);
                self.val(b, path);
            }
            Val::FromIdx(i) => self.index_problems(path, i),
        }
    }

    fn cond(&mut self, c: &Cond, path: &str) {
        match c {
            Cond::Index(_, a, b) => {
                self.index_problems(path, a);
                self.index_problems(path, b);
            }
            Cond::Value(_, a, b) => {
                self.val(a, path);
                self.val(b, path);
            }
            Cond::IsNan(a) => self.val(a, path),
            Cond::And(a, b) | Cond::Or(a, b) => {
                self.cond(a, path);
                self.cond(b, path);
            }
        }
    }

    fn gemm(&mut self, g: &Gemm, path: &str) {
        let mut all_exist = true;
        for (role, buf) in gemm::buffers(g) {
            all_exist &= self.exists(path, role, buf);
        }
        if !all_exist {
            return;
        }
        for p in gemm::rules(self.sink.program, g) {
            self.report(path, p);
        }
        for f in gemm::footprints(self.sink.program, g) {
            let at = match f.offset {
                Some(offset) => self.range(path, offset),
                None => Ok(Interval::point(0)),
            };
            let range = at.and_then(|at| at.add(f.relative).ok_or(Unbounded::Overflow));
            self.check_range(path, f.access, f.buf, range);
        }
    }
}

/// `reads` and `writes` list every buffer the body reads and writes
/// (code generation only maps the listed buffers; memory planning derives
/// lifetimes from the lists), and nothing writes a read-only buffer.
fn check_access_lists(sink: &mut Sink<'_>, kernel: &Kernel) {
    let program = sink.program;
    for (list, ids) in [("reads", &kernel.reads), ("writes", &kernel.writes)] {
        for &b in ids {
            sink.check_exists(Some(&kernel.name), "", list, b);
        }
    }
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    accesses(&kernel.body, &mut reads, &mut writes);
    let known = |b: &BufId| *b < program.buffers.len();
    let mut missing: Vec<(&'static str, &'static str, BufId)> = Vec::new();
    missing.extend(reads.iter().filter(|b| known(b) && !kernel.reads.contains(b)).map(|&b| ("reads", "reads", b)));
    missing.extend(writes.iter().filter(|b| known(b) && !kernel.writes.contains(b)).map(|&b| ("writes", "writes", b)));
    missing.sort();
    missing.dedup();
    for (verb, list, b) in missing {
        let buffer = label(program, b);
        sink.kernel_error(&kernel.name, "", Problem::UndeclaredAccess { verb, buffer, list });
    }
    let mut written: Vec<BufId> = writes.into_iter().chain(kernel.writes.iter().copied()).filter(known).collect();
    written.sort();
    written.dedup();
    for b in written {
        let kind = &program.buffers[b].kind;
        let allowed = match kind {
            BufferKind::Value(_) | BufferKind::Scratch => true,
            BufferKind::Leaf(_) => program.updates.iter().any(|&(leaf, _)| leaf == b),
            BufferKind::ConstF32(_) | BufferKind::ConstI32(_) => false,
        };
        if !allowed {
            let problem = Problem::WriteToReadOnly { buffer: label(program, b), kind: kind_name(kind) };
            sink.kernel_error(&kernel.name, "", problem);
        }
    }
}

/// An in-place pair names a buffer the kernel reads and a different one it
/// writes, of the same length, both shared by all threads.
fn check_in_place(sink: &mut Sink<'_>, kernel: &Kernel) {
    let program = sink.program;
    for &(input, output) in &kernel.in_place {
        let i = sink.check_exists(Some(&kernel.name), "", "in_place", input);
        let o = sink.check_exists(Some(&kernel.name), "", "in_place", output);
        if !(i && o) {
            continue;
        }
        let (bi, bo) = (&program.buffers[input], &program.buffers[output]);
        let expected = if input == output {
            Some("two different buffers")
        } else if !kernel.reads.contains(&input) {
            Some("the input in the kernel's reads")
        } else if !kernel.writes.contains(&output) {
            Some("the output in the kernel's writes")
        } else if bi.len != bo.len {
            Some("buffers of the same length")
        } else if bi.per_thread || bo.per_thread {
            Some("buffers shared by all threads")
        } else {
            None
        };
        if let Some(expected) = expected {
            let (input, output) = (label(program, input), label(program, output));
            sink.kernel_error(&kernel.name, "", Problem::BadInPlace { input, output, expected });
        }
    }
}

/// Before scheduling every kernel runs on one thread; after it, only a
/// parallel loop runs on more, at most one per iteration and at most the
/// program's threads.
fn check_threads(sink: &mut Sink<'_>, kernel: &Kernel, pass: AfterPass) {
    let threads = kernel.threads;
    let program_threads = sink.program.threads;
    let expected = if pass == AfterPass::Build {
        (threads != 1).then(|| "1 before scheduling".to_string())
    } else if threads == 0 || threads > program_threads.max(1) {
        Some(format!("between 1 and the program's {program_threads}"))
    } else {
        match kernel.parallel_extent() {
            None if threads > 1 => Some("1 for a kernel without a parallel loop".to_string()),
            Some(extent) if threads > extent => Some(format!("at most the parallel loop's {extent} iterations")),
            _ => None,
        }
    };
    if let Some(expected) = expected {
        sink.kernel_error(&kernel.name, "", Problem::BadThreads { threads, expected });
    }
}
