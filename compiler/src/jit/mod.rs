//! Compiling a graph: fused, built into kernel IR, scheduled, memory-planned
//! and handed to a [`Backend`] for native code.
//!
//! ```text
//! compile = fuse -> build_program -> schedule -> plan_memory -> choose_lowering -> Backend::compile
//! ```
//!
//! `plan` is the backend-neutral middle (the kernel-IR verifier runs after
//! each of its passes in debug builds); `compile_with` adds a backend,
//! `compile` the default one (the Cranelift JIT). The executable
//! (`executable.rs`), its thread pool (`pool.rs`) and inspection
//! (`inspect.rs`) are the same for every backend.
//!
//! An [`Executable`] owns one arena holding every leaf, value and scratch
//! buffer. [`Executable::set`] copies leaf values in, [`Executable::run`]
//! runs every kernel in order (one forward pass, or a whole training step
//! with the updated parameters and optimizer state written back to their
//! leaves) without allocating, and [`Executable::get`] borrows any
//! observable value.

mod denormals;
mod executable;
mod inspect;
mod pool;

pub use executable::Executable;

use crate::backend::{Backend, BackendError, BackendOptions};
use crate::budget::{OutOfMemory, available_memory, check_fits};
use crate::codegen::CraneliftJit;
use crate::graph::{Graph, NodeId};
use crate::kernel::{AfterPass, BufId, BuildError, Program, VerifyErrors, build_program, verify};
use crate::passes::{choose_lowering, fuse, plan_memory, schedule};
use crate::target::Target;
use std::collections::HashSet;

/// Options of [`compile`].
#[derive(Clone, Debug)]
pub struct JitOptions {
    /// Threads that run parallel loops (1 runs everything on the caller's thread).
    pub threads: usize,
    /// Run the backend's verifier on every kernel (on in debug builds by default).
    pub verify: bool,
    /// Keep every node's value observable through [`Executable::get`]
    /// (disables storage reuse for them; for debugging).
    pub keep_all: bool,
    /// Keep each kernel's backend IR (Cranelift IR) and machine code for inspection.
    pub inspect: bool,
    /// Compute the gradients of the forward inputs listed in
    /// `Training::input_grads` (off: a training step skips that work).
    pub input_grads: bool,
    /// The machine to schedule for; `None` takes the backend's
    /// ([`Backend::target`]; [`plan`] alone takes the Cranelift JIT's).
    pub target: Option<Target>,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            verify: cfg!(debug_assertions),
            keep_all: false,
            inspect: false,
            input_grads: false,
            target: None,
        }
    }
}

/// Why compiling or running an executable failed.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// The graph could not be lowered to kernels.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The backend failed.
    #[error(transparent)]
    Codegen(#[from] BackendError),
    /// A pass produced invalid kernel IR (a compiler bug; checked in debug
    /// builds after every pass).
    #[error("internal compiler error: {0}")]
    InvalidKernelIr(#[from] VerifyErrors),
    /// The node id is not part of the compiled graph.
    #[error("node #{0} is not in the compiled graph")]
    UnknownNode(usize),
    /// Only leaves (inputs, parameters, labels, targets, optimizer state) can be set.
    #[error("node `{0}` is not a leaf and cannot be set")]
    NotALeaf(String),
    /// The data does not match the node's element count.
    #[error("node `{name}` holds {expected} values, got {got}")]
    WrongLength {
        /// The node's name.
        name: String,
        /// Its element count at the compiled batch size.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The node's value is not kept after a run (compile with `keep_all`).
    #[error("node `{0}` is not observable (it is fused away or its storage is reused); compile with keep_all")]
    NotObservable(String),
    /// The options make no sense.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The program needs more memory than the machine has.
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
}

/// What [`Executable::inspect`] prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// Fused groups with their graph nodes and loop nests.
    Kernels,
    /// The arena layout and its size.
    Memory,
    /// Each kernel's Cranelift IR.
    Clif,
    /// Each kernel's machine code, disassembled.
    Asm,
    /// The whole kernel program as text that `kernel::parse_program` reads
    /// back exactly.
    Kir,
}

/// The nodes whose values a run keeps: outputs, the loss, parameter
/// gradients, update results and leaves; input gradients when asked;
/// everything with `keep_all`.
fn observable_nodes(graph: &Graph, keep_all: bool, input_grads: bool) -> HashSet<NodeId> {
    if keep_all {
        return graph.node_ids().collect();
    }
    let mut keep: HashSet<NodeId> = graph.outputs.iter().copied().collect();
    keep.extend(graph.node_ids().filter(|&n| graph.node(n).op.is_leaf()));
    if let Some(t) = &graph.training {
        keep.insert(t.loss);
        keep.extend(t.param_grads.iter().map(|&(_, g)| g));
        if input_grads {
            keep.extend(t.input_grads.iter().map(|&(_, g)| g));
        }
    }
    keep.extend(graph.updates.iter().map(|&(_, n)| n));
    keep
}

/// The kernel program of `graph` before code generation: fused, built,
/// scheduled, memory-planned and its lowering chosen (what `--emit
/// kernels|memory|kir` shows).
pub fn plan(graph: &Graph, batch: usize, options: &JitOptions) -> Result<(Program, HashSet<NodeId>), JitError> {
    if options.threads == 0 {
        return Err(JitError::InvalidOptions("threads must be at least 1".into()));
    }
    if batch == 0 {
        return Err(JitError::InvalidOptions("batch must be at least 1".into()));
    }
    let observable = observable_nodes(graph, options.keep_all, options.input_grads);
    let fusion = fuse(graph, &observable);
    let target = options.target.unwrap_or_else(|| CraneliftJit.target());
    target.check().map_err(JitError::InvalidOptions)?;
    let program = build_program(graph, &fusion, batch, target)?;
    verify_in_debug(&program, AfterPass::Build)?;
    let program = schedule(program, options.threads);
    verify_in_debug(&program, AfterPass::Schedule)?;
    let keep: HashSet<BufId> = observable.iter().filter_map(|&n| program.value_buffer(n)).collect();
    let program = plan_memory(program, &keep);
    verify_in_debug(&program, AfterPass::PlanMemory)?;
    let program = choose_lowering(program);
    verify_in_debug(&program, AfterPass::Lowering)?;
    Ok((program, observable))
}

/// Runs the kernel-IR verifier in debug builds (release builds trust the passes).
fn verify_in_debug(program: &Program, pass: AfterPass) -> Result<(), VerifyErrors> {
    if cfg!(debug_assertions) { verify(program, pass) } else { Ok(()) }
}

/// Compiles `graph` for batch size `batch` with the default backend, the
/// Cranelift JIT.
pub fn compile(graph: &Graph, batch: usize, options: &JitOptions) -> Result<Executable, JitError> {
    compile_with(&CraneliftJit, graph, batch, options)
}

/// Compiles `graph` for batch size `batch` with `backend`. A program that
/// needs more memory than the machine has is refused before code
/// generation and before its arena is allocated.
pub fn compile_with(
    backend: &dyn Backend,
    graph: &Graph,
    batch: usize,
    options: &JitOptions,
) -> Result<Executable, JitError> {
    let options = &JitOptions { target: Some(options.target.unwrap_or_else(|| backend.target())), ..options.clone() };
    let (program, observable) = plan(graph, batch, options)?;
    check_fits(&program, available_memory())?;
    let code = backend.compile(
        &program,
        &BackendOptions { verify: options.verify, keep_ir_text: options.inspect, keep_machine_code: options.inspect },
    )?;
    Executable::new(graph.clone(), batch, program, code, observable)
}
