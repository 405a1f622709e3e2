//! The seam between the compiler middle and a code generator.
//!
//! A [`Backend`] turns a scheduled, memory-planned kernel-IR [`Program`]
//! into [`NativeCode`]: one entry point per kernel with the [`KernelFn`]
//! contract, plus optional listings for inspection. Everything a backend
//! needs to know is in the program (loop modes, tiles, layouts, arena
//! offsets); the executable (`jit::Executable`), its thread pool and its
//! inspection are shared by every backend. The Cranelift JIT
//! ([`crate::codegen::CraneliftJit`]) is the first implementation; an
//! object-file (AOT) backend or per-ISA micro-kernels implement the same
//! trait without touching `kernel/` or `passes/`.
//!
//! Architecture invariant: backends only emit. A backend may refuse a
//! program it cannot lower (an error, never a silent fall-back), but every
//! decision that changes what runs is already recorded in the program.

use crate::kernel::Program;
use crate::target::Target;
use std::any::Any;

/// The machine-level signature of every compiled kernel.
///
/// Contract: `arena` points to the program's arena of `Program::arena_len`
/// `f32`s, exclusively borrowed for the call except for disjoint writes by
/// other threads running other iterations of the same parallel loop;
/// `lo <= hi <= extent` of the kernel's parallel loop (ignored without one);
/// `thread < Program::threads` and unique among concurrent callers.
pub type KernelFn = unsafe extern "C" fn(arena: *mut f32, lo: i64, hi: i64, thread: i64);

/// What a backend is asked to keep besides the code.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Run the backend's own verifier on everything it generates.
    pub verify: bool,
    /// Keep each kernel's backend IR as text (Cranelift IR for the JIT).
    pub keep_ir_text: bool,
    /// Keep each kernel's machine code bytes.
    pub keep_machine_code: bool,
}

/// Why a backend could not compile a program.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot target this machine.
    #[error("{backend} cannot target this machine: {message}")]
    Target {
        /// The backend's name.
        backend: &'static str,
        /// What is missing.
        message: String,
    },
    /// The backend rejected or failed on one kernel.
    #[error("{backend}: kernel `{kernel}`: {message}")]
    Kernel {
        /// The backend's name.
        backend: &'static str,
        /// The kernel's name.
        kernel: String,
        /// The backend's message.
        message: String,
    },
}

/// A code generator for kernel-IR programs.
pub trait Backend {
    /// A short name for reports and errors (`cranelift-jit`).
    fn name(&self) -> &'static str;

    /// The target programs for this backend are scheduled for: the host's
    /// features as this backend uses them (its vector width above all).
    fn target(&self) -> Target;

    /// Compiles every kernel of `program`, in program order. A program
    /// scheduled for a target the backend cannot emit is an error.
    fn compile(&self, program: &Program, options: &BackendOptions) -> Result<NativeCode, BackendError>;
}

/// The native code of a program: an entry point per kernel, the memory it
/// lives in, and what was kept for inspection.
pub struct NativeCode {
    /// One entry point per kernel, in program order.
    pub functions: Vec<KernelFn>,
    /// Backend IR text per kernel (when kept).
    pub ir_text: Vec<String>,
    /// Machine code per kernel (when kept).
    pub machine_code: Vec<Vec<u8>>,
    /// Owns the memory the functions live in; dropping it frees the code,
    /// so it is dropped last (fields drop in declaration order).
    pub owner: Box<dyn Any + Send>,
}

impl std::fmt::Debug for NativeCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeCode").field("functions", &self.functions.len()).finish()
    }
}
