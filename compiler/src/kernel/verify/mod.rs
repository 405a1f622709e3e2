//! The kernel-IR verifier: checks, between passes, the facts later passes
//! and the code generator rely on but never test themselves.
//!
//! [`verify`] walks a whole [`Program`] and collects every violation it
//! finds (not only the first), each naming the kernel, the statement path
//! and the buffer, and saying what was expected. Some checks only make
//! sense once a pass has run, so the caller names the pass that just ran
//! ([`AfterPass`]):
//!
//! - always: buffer ids exist; every store, and every element a matrix
//!   product writes, lies inside its buffer; every element a load, a table
//!   lookup or a product reads lies inside its buffer (see "Bounds" below);
//!   loop variables are fresh and used only inside their loop;
//!   accumulators are declared before use and in scope; a parallel loop is
//!   a kernel's only top-level statement; vector loops hold only what the
//!   code generator can lower lane-parallel; matrix products' layout flags
//!   agree with their tile form; `reads`/`writes` list every buffer the
//!   body touches; nothing writes a constant buffer; in-place pairs and
//!   updates are well-formed;
//! - after scheduling: thread counts agree with the parallel loops;
//! - after memory planning: one offset per buffer, every buffer inside the
//!   arena with its read slack, and no two buffers that are live at the
//!   same time share memory (liveness re-derived from kernel order and
//!   access lists);
//! - lowering decisions (`kernel::lowering`), always: each is one the code
//!   generator can carry out without changing a result (an overlapping
//!   vector tail only where repeating lanes changes nothing, written-out
//!   loops short, kept partials only of untouched accumulators); after
//!   `choose_lowering`: every vector tail, reduction chain and wrapped dot
//!   tile's steps decided.
//!
//! # Bounds
//!
//! Index ranges are computed exactly from the static loop extents: an
//! affine index (a constant plus multiples of loop variables) takes its
//! exact minimum and maximum over the loop box; other forms use interval
//! arithmetic, with a [`Idx::Table`] lookup bounded by the actual minimum
//! and maximum of its constant table over the entries the lookup can reach.
//!
//! Every element a statement *uses* must lie inside its buffer, loads
//! included. What the code generator loads beyond the used elements (the
//! unused lanes of a shuffled or row-straddling vector, at most
//! [`READ_SLACK`] elements past the last used one) stays inside the arena
//! because every buffer ends [`ARENA_SLACK`] elements before the arena
//! does, which the memory check verifies; the extra lanes are discarded.
//! Writes have no slack: a scattered product's straddling vector add writes
//! all four lanes of both vectors, so all eight must be inside `C`.
//!
//! An index read through a [`Idx::FloatTable`] (positions an earlier kernel
//! recorded, such as a max-pool's argmax) cannot be bounded statically. It
//! is accepted, unverified, only under a guard (inside an `If`, as the
//! max-pool gradient's `recorded >= 0` test); unguarded it is an error.

mod gemm;
mod interval;
mod lowering;
mod memory;
mod vector;
mod walk;

#[cfg(test)]
mod tests;

use super::{BufId, BufferKind, Program};
use crate::passes::memory::ARENA_SLACK;
pub use gemm::GemmRule;
pub use lowering::LoweringRule;
use std::fmt;
pub use vector::VectorRule;

/// Elements a vector load may read past the last element it uses (a lane
/// pattern spanning two vectors, or a vector straddling two rows).
pub const READ_SLACK: usize = 7;

const _: () = assert!(ARENA_SLACK >= READ_SLACK, "the arena's slack must cover vector over-reads");

/// The pass that just ran, which decides the checks that apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AfterPass {
    /// `build_program`: kernels and buffers exist, nothing is scheduled.
    Build,
    /// `schedule`: threads, vector loops and tiles are chosen.
    Schedule,
    /// `plan_memory`: every buffer has its arena offset.
    PlanMemory,
    /// `choose_lowering`: every loop, dot tile and kernel says how it is
    /// written out.
    Lowering,
}

impl fmt::Display for AfterPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AfterPass::Build => "build_program",
            AfterPass::Schedule => "schedule",
            AfterPass::PlanMemory => "plan_memory",
            AfterPass::Lowering => "choose_lowering",
        })
    }
}

/// One violation: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError {
    /// The kernel's name, or `None` for program-level facts.
    pub kernel: Option<String>,
    /// Statement path inside the kernel body (`0.1.then.0`); empty for the
    /// kernel or program as a whole.
    pub path: String,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kernel, self.path.is_empty()) {
            (Some(k), true) => write!(f, "kernel '{k}': {}", self.problem),
            (Some(k), false) => write!(f, "kernel '{k}' at {}: {}", self.path, self.problem),
            (None, _) => write!(f, "program: {}", self.problem),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Every violation found after one pass.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("kernel IR is invalid after {pass} ({} problems):\n{}", errors.len(), render(errors))]
pub struct VerifyErrors {
    /// The pass that produced the program.
    pub pass: AfterPass,
    /// The violations, in program order.
    pub errors: Vec<VerifyError>,
}

fn render(errors: &[VerifyError]) -> String {
    errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

/// What is wrong with a program.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    /// A buffer id with no buffer behind it.
    #[error("{role} refers to buffer %{buf}, but the program has {count} buffers")]
    UnknownBuffer {
        /// Where the id appears (`store`, `reads`, `updates`, ...).
        role: String,
        /// The id.
        buf: BufId,
        /// Number of buffers.
        count: usize,
    },
    /// An element index past the end of a buffer.
    #[error("{access} {buffer} index reaches {reach}, buffer has {len} elements")]
    PastEnd {
        /// The access (`store to`, `load of`, `matrix C in`, ...).
        access: String,
        /// The buffer (`%5 'conv1'`).
        buffer: String,
        /// The largest index the access can take.
        reach: i64,
        /// The buffer's length.
        len: usize,
    },
    /// A negative element index.
    #[error("{access} {buffer} index goes down to {low}, below the buffer's first element")]
    BeforeStart {
        /// The access.
        access: String,
        /// The buffer.
        buffer: String,
        /// The smallest index the access can take.
        low: i64,
    },
    /// An index that cannot be bounded, outside any guard.
    #[error("{access} {buffer} index is not statically bounded ({reason}) and no `if` guards it")]
    Unbounded {
        /// The access.
        access: String,
        /// The buffer.
        buffer: String,
        /// Why it cannot be bounded.
        reason: String,
    },
    /// An index table that is not constant `i32` data.
    #[error("{role} uses {buffer} as an index table, but it is a {kind} buffer; expected ConstI32")]
    NotATable {
        /// Where the table is used.
        role: String,
        /// The buffer.
        buffer: String,
        /// Its kind.
        kind: &'static str,
    },
    /// Division or remainder with a non-positive divisor or a possibly
    /// negative operand (the code generator uses unsigned division).
    #[error(
        "{op} by {divisor} of an operand in [{low}, {high}]: expected a positive divisor and a non-negative operand"
    )]
    BadDivision {
        /// `/` or `%`.
        op: &'static str,
        /// The divisor.
        divisor: i64,
        /// Operand range.
        low: i64,
        /// Operand range.
        high: i64,
    },
    /// A loop variable bound twice in one kernel.
    #[error("loop variable v{var} is already bound by another loop of this kernel; expected a fresh variable")]
    LoopVarReused {
        /// The variable.
        var: u32,
    },
    /// A loop variable used outside its loop.
    #[error("v{var} is used outside every loop that binds it")]
    VarOutOfScope {
        /// The variable.
        var: u32,
    },
    /// An accumulator used before its `Let` or outside its scope.
    #[error("{usage} accumulator a{acc}, which no enclosing `let` declares before this point")]
    AccUndeclared {
        /// `read of`, `reduce into`, `set of`.
        usage: &'static str,
        /// The accumulator.
        acc: u32,
    },
    /// A parallel loop somewhere other than alone at the top.
    #[error("parallel loop v{var} is not the kernel's only top-level statement")]
    ParallelNotOutermost {
        /// Its variable.
        var: u32,
    },
    /// A vector loop holding something the code generator cannot lower
    /// lane-parallel.
    #[error("vector loop v{var}: {rule}")]
    Vector {
        /// The loop variable.
        var: u32,
        /// The broken rule.
        rule: VectorRule,
    },
    /// A lowering decision the code generator cannot carry out.
    #[error("lowering decision: {0}")]
    Lowering(LoweringRule),
    /// A matrix product whose fields disagree.
    #[error("matrix product: {0}")]
    Gemm(GemmRule),
    /// A buffer the body touches that the access list omits.
    #[error("body {verb} {buffer}, but the kernel's `{list}` does not list it")]
    UndeclaredAccess {
        /// `reads` or `writes`.
        verb: &'static str,
        /// The buffer.
        buffer: String,
        /// The list (`reads` or `writes`).
        list: &'static str,
    },
    /// A write to a buffer no kernel may write.
    #[error("writes {buffer}, a {kind} buffer; expected a value, scratch or updated leaf buffer")]
    WriteToReadOnly {
        /// The buffer.
        buffer: String,
        /// Its kind.
        kind: &'static str,
    },
    /// An `(input, output)` in-place pair that is not one.
    #[error("in-place pair ({input}, {output}): expected {expected}")]
    BadInPlace {
        /// The input buffer.
        input: String,
        /// The output buffer.
        output: String,
        /// What the pair lacks.
        expected: &'static str,
    },
    /// A `(leaf, new value)` update that is not one.
    #[error("update ({leaf}, {new}): expected {expected}")]
    BadUpdate {
        /// The leaf.
        leaf: String,
        /// The new value.
        new: String,
        /// What the pair lacks.
        expected: &'static str,
    },
    /// A thread count that disagrees with the schedule.
    #[error("runs on {threads} threads: expected {expected}")]
    BadThreads {
        /// The count.
        threads: usize,
        /// What it should be.
        expected: String,
    },
    /// Per-thread scratch shared between kernels.
    #[error("per-thread scratch {buffer} is used by kernels {kernels}; expected exactly one kernel")]
    PerThreadShared {
        /// The buffer.
        buffer: String,
        /// The kernels using it.
        kernels: String,
    },
    /// The offsets table does not match the buffers.
    #[error("has {offsets} offsets for {buffers} buffers")]
    OffsetsLength {
        /// Offsets given.
        offsets: usize,
        /// Buffers.
        buffers: usize,
    },
    /// A buffer that leaves the arena (or its read slack).
    #[error(
        "{buffer} occupies elements [{start}, {end}) but only [0, {limit}) is usable (arena of {arena} less {ARENA_SLACK} elements of read slack)"
    )]
    OutsideArena {
        /// The buffer.
        buffer: String,
        /// First element.
        start: usize,
        /// One past its last element (all thread copies).
        end: usize,
        /// End of the usable arena.
        limit: usize,
        /// The arena's length.
        arena: usize,
    },
    /// Two buffers live at the same time in the same memory.
    #[error(
        "{a} at [{a_start}, {a_end}) and {b} at [{b_start}, {b_end}) overlap while both are live (kernels {from}..={to})"
    )]
    Overlap {
        /// One buffer.
        a: String,
        /// Its span.
        a_start: usize,
        /// Its span.
        a_end: usize,
        /// The other buffer.
        b: String,
        /// Its span.
        b_start: usize,
        /// Its span.
        b_end: usize,
        /// First kernel where both live.
        from: usize,
        /// Last kernel where both live.
        to: usize,
    },
}

/// `%5 'conv1'` for an existing buffer, `%5` otherwise.
pub(crate) fn label(program: &Program, buf: BufId) -> String {
    match program.buffers.get(buf) {
        Some(b) => format!("%{buf} '{}'", b.name),
        None => format!("%{buf}"),
    }
}

/// A buffer kind's name for messages.
pub(crate) fn kind_name(kind: &BufferKind) -> &'static str {
    match kind {
        BufferKind::Leaf(_) => "leaf",
        BufferKind::Value(_) => "value",
        BufferKind::Scratch => "scratch",
        BufferKind::ConstF32(_) => "ConstF32",
        BufferKind::ConstI32(_) => "ConstI32",
    }
}

/// Collects violations with their location.
pub(crate) struct Sink<'p> {
    pub(crate) program: &'p Program,
    pub(crate) errors: Vec<VerifyError>,
}

impl Sink<'_> {
    pub(crate) fn program_error(&mut self, problem: Problem) {
        self.errors.push(VerifyError { kernel: None, path: String::new(), problem });
    }

    pub(crate) fn kernel_error(&mut self, kernel: &str, path: &str, problem: Problem) {
        self.errors.push(VerifyError { kernel: Some(kernel.to_string()), path: path.to_string(), problem });
    }

    /// Whether `buf` exists; reports `role` when it does not.
    pub(crate) fn check_exists(&mut self, kernel: Option<&str>, path: &str, role: &str, buf: BufId) -> bool {
        if buf < self.program.buffers.len() {
            return true;
        }
        let problem = Problem::UnknownBuffer { role: role.to_string(), buf, count: self.program.buffers.len() };
        match kernel {
            Some(k) => self.kernel_error(k, path, problem),
            None => self.program_error(problem),
        }
        false
    }
}

/// Checks `program` as it stands after `pass`; every violation is reported.
pub fn verify(program: &Program, pass: AfterPass) -> Result<(), VerifyErrors> {
    let mut sink = Sink { program, errors: Vec::new() };
    walk::check_program_tables(&mut sink);
    for kernel in &program.kernels {
        walk::check_kernel(&mut sink, kernel, pass);
        lowering::check_kernel(&mut sink, kernel, pass);
    }
    walk::check_per_thread_scratch(&mut sink);
    if pass >= AfterPass::PlanMemory {
        memory::check_arena(&mut sink);
    }
    if sink.errors.is_empty() { Ok(()) } else { Err(VerifyErrors { pass, errors: sink.errors }) }
}
