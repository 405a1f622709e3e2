//! The kernel-IR interpreter: the executable definition of what a
//! memory-planned [`Program`] computes, which a backend is tested against.
//!
//! It runs the program on one flat `f32` arena laid out exactly as the
//! JIT's (`Program::offsets`, `Program::arena_len`, constants written in,
//! tables as raw `i32` bits), one thread (thread 0's copy of per-thread
//! scratch), kernels in order. Parameter updates need nothing special:
//! memory planning either made them in place or appended copy kernels.
//!
//! Semantics are plain scalar `f32`: loops of every mode run their
//! iterations in order (see `stmt` for what that means for reductions in
//! vector loops), `exp`, `ln` and `tanh` are Rust's, and each matrix
//! product is defined element by element (see `gemm`). What the JIT may
//! do and this interpreter does not — reading past a buffer's end in a
//! vector load, discarding the extra lanes — is never part of a result, so
//! here every access must name an element of a buffer the kernel declared;
//! anything else is an [`EvalError`] naming the kernel and the buffer.

mod expr;
mod gemm;
mod memory;
mod stmt;
#[cfg(test)]
mod tests;

use crate::graph::NodeId;
use crate::kernel::{AccId, BufId, BufferKind, Program, VarId};
use memory::{Arena, Content};

/// What went wrong inside one kernel.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Fault {
    /// An element index outside the buffer.
    #[error("index {index} is outside buffer `{buffer}` of {len} elements")]
    OutOfBounds {
        /// The buffer's name.
        buffer: String,
        /// The index computed.
        index: i64,
        /// The buffer's length.
        len: usize,
    },
    /// A load of a buffer the kernel lists in neither `reads` nor `writes`.
    #[error("reads buffer `{buffer}`, which the kernel lists in neither its reads nor its writes")]
    UndeclaredRead {
        /// The buffer's name.
        buffer: String,
    },
    /// A store to a buffer the kernel does not list in its `writes`.
    #[error("writes buffer `{buffer}`, which the kernel does not list in its writes")]
    UndeclaredWrite {
        /// The buffer's name.
        buffer: String,
    },
    /// A buffer id the program does not have.
    #[error("buffer #{0} does not exist")]
    UnknownBuffer(BufId),
    /// A store into constant data.
    #[error("writes constant buffer `{buffer}`")]
    WritesConstant {
        /// The buffer's name.
        buffer: String,
    },
    /// A read of a buffer nothing has written.
    #[error("reads buffer `{buffer}` before anything wrote it")]
    Unwritten {
        /// The buffer's name.
        buffer: String,
    },
    /// A read of a buffer whose space was reused by another buffer.
    #[error("reads buffer `{buffer}`, whose space kernel `{by}` has overwritten since")]
    Clobbered {
        /// The buffer's name.
        buffer: String,
        /// The kernel that wrote over it.
        by: String,
    },
    /// `Idx::Table`, `b_rows` or `c_rows` naming a buffer that is not an `i32` table.
    #[error("buffer `{buffer}` is used as an index table but is not constant i32 data")]
    NotATable {
        /// The buffer's name.
        buffer: String,
    },
    /// An `Idx::FloatTable` element that is no integer index.
    #[error("float index table `{buffer}` holds {value}, which is not an index")]
    BadFloatIndex {
        /// The buffer's name.
        buffer: String,
        /// The element read.
        value: f32,
    },
    /// A division outside the IR's domain (non-negative by positive).
    #[error("{op} of {value} by {divisor}: expected a non-negative operand and a positive divisor")]
    BadDivision {
        /// `div`, `rem` or `column wrap`.
        op: &'static str,
        /// The operand.
        value: i64,
        /// The divisor.
        divisor: i64,
    },
    /// A `KSplit` whose segments do not divide the reduction.
    #[error("a reduction of {k} cannot be split into {outer} equal segments")]
    BadSplit {
        /// The reduction length.
        k: usize,
        /// The segments asked for.
        outer: usize,
    },
    /// Index arithmetic beyond `i64`.
    #[error("index arithmetic overflows 64 bits")]
    Overflow,
    /// A loop variable used outside its loop.
    #[error("loop variable {0} is used outside a loop over it")]
    UnboundVar(VarId),
    /// An accumulator read or assigned before a `Let` declared it.
    #[error("accumulator {0} is used before a `let` declares it")]
    UndeclaredAcc(AccId),
}

/// Why the interpreter could not be set up or a run failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EvalError {
    /// The program has not been through memory planning, or its plan does
    /// not fit its arena.
    #[error("the program is not memory-planned: {0}")]
    NotPlanned(String),
    /// A kernel faulted.
    #[error("kernel `{kernel}`: {fault}")]
    Kernel {
        /// The kernel's name.
        kernel: String,
        /// What went wrong.
        #[source]
        fault: Fault,
    },
    /// The node has no buffer in the program.
    #[error("node #{0} has no buffer in the program")]
    UnknownNode(usize),
    /// The buffer id is not in the program.
    #[error("buffer #{0} does not exist")]
    UnknownBuffer(BufId),
    /// Only leaves can be set through their node.
    #[error("buffer `{0}` is not a leaf and cannot be set")]
    NotALeaf(String),
    /// Constant buffers cannot be set.
    #[error("buffer `{0}` holds constant data and cannot be set")]
    Constant(String),
    /// The data does not match the buffer's length.
    #[error("buffer `{name}` holds {expected} values, got {got}")]
    WrongLength {
        /// The buffer's name.
        name: String,
        /// Its length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The buffer holds no value at the moment.
    #[error("buffer `{name}` holds no value: {reason}")]
    NotObservable {
        /// The buffer's name.
        name: String,
        /// Never written, or overwritten by which kernel.
        reason: String,
    },
}

/// Runs a memory-planned [`Program`] with plain loops, mirroring
/// [`crate::jit::Executable`]'s `set` / `run` / `get`.
pub struct KernelInterpreter {
    program: Program,
    arena: Arena,
}

impl std::fmt::Debug for KernelInterpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelInterpreter")
            .field("kernels", &self.program.kernels.len())
            .field("arena_len", &self.program.arena_len)
            .finish()
    }
}

impl KernelInterpreter {
    /// An interpreter for `program`, which must be memory-planned (every
    /// buffer, every thread's copy, inside `arena_len`).
    pub fn new(program: Program) -> Result<KernelInterpreter, EvalError> {
        if program.offsets.len() != program.buffers.len() {
            return Err(EvalError::NotPlanned(format!(
                "{} buffers but {} offsets",
                program.buffers.len(),
                program.offsets.len()
            )));
        }
        for (buf, &at) in program.buffers.iter().zip(&program.offsets) {
            let copies = if buf.per_thread { program.threads.max(1) } else { 1 };
            let end = buf.len.checked_mul(copies).and_then(|n| n.checked_add(at));
            if end.is_none_or(|end| end > program.arena_len) {
                return Err(EvalError::NotPlanned(format!(
                    "buffer `{}` ({} elements at {at}) does not fit the arena of {}",
                    buf.name, buf.len, program.arena_len
                )));
            }
            let constant_len = match &buf.kind {
                BufferKind::ConstF32(v) => Some(v.len()),
                BufferKind::ConstI32(v) => Some(v.len()),
                _ => None,
            };
            if constant_len.is_some_and(|n| n > buf.len) {
                return Err(EvalError::NotPlanned(format!(
                    "constant buffer `{}` holds more than its length",
                    buf.name
                )));
            }
        }
        let arena = Arena::new(&program);
        Ok(KernelInterpreter { program, arena })
    }

    /// The program being run.
    pub fn program(&self) -> &Program {
        &self.program
    }

    fn node_buffer(&self, node: NodeId) -> Result<BufId, EvalError> {
        self.program.value_buffer(node).ok_or(EvalError::UnknownNode(node.index()))
    }

    fn check_buffer(&self, buf: BufId) -> Result<(), EvalError> {
        if buf < self.program.buffers.len() { Ok(()) } else { Err(EvalError::UnknownBuffer(buf)) }
    }

    /// Copies `data` into leaf `node` (as [`crate::jit::Executable::set`]).
    pub fn set(&mut self, node: NodeId, data: &[f32]) -> Result<(), EvalError> {
        let buf = self.node_buffer(node)?;
        if !matches!(self.program.buffers[buf].kind, BufferKind::Leaf(_)) {
            return Err(EvalError::NotALeaf(self.program.buffers[buf].name.clone()));
        }
        self.set_buffer(buf, data)
    }

    /// Copies `data` into any buffer but a constant one (thread 0's copy of
    /// per-thread scratch), to run hand-built programs.
    pub fn set_buffer(&mut self, buf: BufId, data: &[f32]) -> Result<(), EvalError> {
        self.check_buffer(buf)?;
        let b = &self.program.buffers[buf];
        if matches!(b.kind, BufferKind::ConstF32(_) | BufferKind::ConstI32(_)) {
            return Err(EvalError::Constant(b.name.clone()));
        }
        if data.len() != b.len {
            return Err(EvalError::WrongLength { name: b.name.clone(), expected: b.len, got: data.len() });
        }
        self.arena.slice_mut(buf).copy_from_slice(data);
        self.arena.mark_written(buf, "the caller");
        Ok(())
    }

    /// Runs every kernel once, in order.
    pub fn run(&mut self) -> Result<(), EvalError> {
        for kernel in &self.program.kernels {
            let fault = |fault| EvalError::Kernel { kernel: kernel.name.clone(), fault };
            self.arena.enter(kernel).map_err(fault)?;
            let (max_var, max_acc) = stmt::max_ids(&kernel.body);
            let mut frame = expr::Frame::new(max_var, max_acc);
            stmt::run(&kernel.body, &mut self.arena, &mut frame).map_err(fault)?;
            self.arena.leave(kernel);
        }
        Ok(())
    }

    /// The value of `node` (as [`crate::jit::Executable::get`]): an error
    /// when its buffer was never written or another buffer has reused its
    /// space since.
    pub fn get(&self, node: NodeId) -> Result<&[f32], EvalError> {
        self.get_buffer(self.node_buffer(node)?)
    }

    /// The contents of `buf` (thread 0's copy of per-thread scratch), under
    /// the same condition as [`Self::get`].
    pub fn get_buffer(&self, buf: BufId) -> Result<&[f32], EvalError> {
        self.check_buffer(buf)?;
        let name = || self.program.buffers[buf].name.clone();
        match self.arena.content(buf) {
            Content::Fresh => Ok(self.arena.slice(buf)),
            Content::Unwritten => Err(EvalError::NotObservable { name: name(), reason: "nothing wrote it".into() }),
            Content::Clobbered(by) => {
                Err(EvalError::NotObservable { name: name(), reason: format!("kernel `{by}` overwrote its space") })
            }
        }
    }
}
