//! The compiled executable: a graph fused, scheduled, memory-planned and
//! lowered to native kernels with Cranelift.
//!
//! ```text
//! compile = fuse -> build_program -> schedule -> plan_memory -> lower_to_clif
//! ```
//!
//! An [`Executable`] owns one arena holding every leaf, value and scratch
//! buffer. [`Executable::set`] copies leaf values in, [`Executable::run`]
//! runs every kernel in order (one forward pass, or a whole training step
//! with the updated parameters and optimizer state written back to their
//! leaves) without allocating, and [`Executable::get`] borrows any
//! observable value.

use crate::budget::{OutOfMemory, available_memory, check_fits, largest_buffers};
use crate::codegen::{CodegenError, CodegenOptions, CompiledProgram, KernelFn, lower_to_clif};
use crate::graph::{Graph, NodeId};
use crate::kernel::{
    AfterPass, BufId, BufferKind, BuildError, Program, VerifyErrors, build_program, describe_kernels, describe_memory,
    verify, write_program,
};
use crate::passes::{choose_lowering, fuse, plan_memory, schedule};
use std::collections::HashSet;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Options of [`compile`].
#[derive(Clone, Debug)]
pub struct JitOptions {
    /// Threads that run parallel loops (1 runs everything on the caller's thread).
    pub threads: usize,
    /// Run Cranelift's verifier on every kernel (on in debug builds by default).
    pub verify: bool,
    /// Keep every node's value observable through [`Executable::get`]
    /// (disables storage reuse for them; for debugging).
    pub keep_all: bool,
    /// Keep each kernel's Cranelift IR and machine code for inspection.
    pub inspect: bool,
    /// Compute the gradients of the forward inputs listed in
    /// `Training::input_grads` (off: a training step skips that work).
    pub input_grads: bool,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            verify: cfg!(debug_assertions),
            keep_all: false,
            inspect: false,
            input_grads: false,
        }
    }
}

/// Why compiling or running an executable failed.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// The graph could not be lowered to kernels.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Cranelift failed.
    #[error(transparent)]
    Codegen(#[from] CodegenError),
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

/// A graph compiled to native code for one batch size.
pub struct Executable {
    graph: Graph,
    batch: usize,
    program: Program,
    code: CompiledProgram,
    arena: Vec<f32>,
    observable: HashSet<NodeId>,
    pool: Option<Pool>,
    /// Per kernel: entry point, parallel extent (0 = none), threads.
    plan: Vec<(KernelFn, usize, usize)>,
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executable")
            .field("graph", &self.graph.name)
            .field("batch", &self.batch)
            .field("kernels", &self.program.kernels.len())
            .field("arena_bytes", &(self.arena.len() * 4))
            .finish()
    }
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
        keep.extend(t.updates.iter().map(|&(_, n)| n));
    }
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
    let program = build_program(graph, &fusion, batch)?;
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

/// Compiles `graph` for batch size `batch`.
pub fn compile(graph: &Graph, batch: usize, options: &JitOptions) -> Result<Executable, JitError> {
    let (program, observable) = plan(graph, batch, options)?;
    check_fits(&program, available_memory())?;
    let code = lower_to_clif(
        &program,
        &CodegenOptions { verify: options.verify, keep_clif: options.inspect, keep_code: options.inspect },
    )?;
    // MemAvailable is an estimate: should the allocation still fail, report
    // it rather than abort.
    let mut arena = Vec::new();
    arena.try_reserve_exact(program.arena_len).map_err(|_| OutOfMemory {
        needed: crate::budget::arena_bytes(&program),
        available: available_memory(),
        largest: largest_buffers(&program, 3),
    })?;
    arena.resize(program.arena_len, 0.0f32);
    for (b, buf) in program.buffers.iter().enumerate() {
        let at = program.offsets[b];
        match &buf.kind {
            BufferKind::ConstF32(data) => arena[at..at + data.len()].copy_from_slice(data),
            BufferKind::ConstI32(data) => {
                for (slot, &v) in arena[at..at + data.len()].iter_mut().zip(data) {
                    *slot = f32::from_bits(v as u32);
                }
            }
            _ => {}
        }
    }
    let plan = program
        .kernels
        .iter()
        .zip(&code.functions)
        .map(|(k, &f)| (f, k.parallel_extent().unwrap_or(0), k.threads))
        .collect();
    let pool = if program.threads > 1 && program.kernels.iter().any(|k| k.threads > 1) {
        Some(Pool::new(program.threads)?)
    } else {
        None
    };
    Ok(Executable { graph: graph.clone(), batch, program, code, arena, observable, pool, plan })
}

impl Executable {
    /// The batch size the executable was compiled for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The compiled graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The kernel program (after scheduling and memory planning).
    pub fn program(&self) -> &Program {
        &self.program
    }

    fn buffer_of(&self, node: NodeId) -> Result<BufId, JitError> {
        if node.index() >= self.graph.len() {
            return Err(JitError::UnknownNode(node.index()));
        }
        self.program.value_buffer(node).ok_or_else(|| JitError::NotObservable(self.graph.node(node).name.clone()))
    }

    /// Copies `data` into leaf `node` (an input, parameter, labels, target
    /// or optimizer buffer). Leaves keep their values across runs; a
    /// training step overwrites parameters and optimizer buffers with their
    /// updated values.
    pub fn set(&mut self, node: NodeId, data: &[f32]) -> Result<(), JitError> {
        let buf = self.buffer_of(node)?;
        let name = &self.graph.node(node).name;
        if !matches!(self.program.buffers[buf].kind, BufferKind::Leaf(_)) {
            return Err(JitError::NotALeaf(name.clone()));
        }
        let len = self.program.buffers[buf].len;
        if data.len() != len {
            return Err(JitError::WrongLength { name: name.clone(), expected: len, got: data.len() });
        }
        let at = self.program.offsets[buf];
        self.arena[at..at + len].copy_from_slice(data);
        Ok(())
    }

    /// The value of an observable node after the last run (a leaf's
    /// current value, an output, the loss, a gradient, an updated parameter;
    /// anything with `keep_all`).
    pub fn get(&self, node: NodeId) -> Result<&[f32], JitError> {
        let buf = self.buffer_of(node)?;
        if !self.observable.contains(&node) {
            return Err(JitError::NotObservable(self.graph.node(node).name.clone()));
        }
        let at = self.program.offsets[buf];
        Ok(&self.arena[at..at + self.program.buffers[buf].len])
    }

    /// Runs every kernel once: a forward pass, or one training step.
    /// Allocates nothing.
    pub fn run(&mut self) -> Result<(), JitError> {
        let arena = self.arena.as_mut_ptr();
        for &(f, extent, threads) in &self.plan {
            match (&self.pool, threads > 1) {
                (Some(pool), true) => pool.run(f, arena, extent, threads),
                _ => {
                    // SAFETY: `f` was compiled for this program's arena
                    // layout and `arena` is that arena (`arena_len` f32s),
                    // borrowed exclusively through `&mut self`; the whole
                    // parallel range runs on this thread as thread 0.
                    unsafe { f(arena, 0, extent as i64, 0) }
                }
            }
        }
        Ok(())
    }

    /// Runs kernel `index` of the program alone (for benchmarks; its inputs
    /// are whatever the arena holds).
    pub fn run_kernel(&mut self, index: usize) {
        let arena = self.arena.as_mut_ptr();
        let (f, extent, threads) = self.plan[index];
        match (&self.pool, threads > 1) {
            (Some(pool), true) => pool.run(f, arena, extent, threads),
            // SAFETY: as in `run`.
            _ => unsafe { f(arena, 0, extent as i64, 0) },
        }
    }

    /// Runs `runs` times and returns each kernel's name and mean time per
    /// run (for benchmarks and `kiln bench`).
    pub fn profile(&mut self, runs: usize) -> Vec<(String, std::time::Duration)> {
        let arena = self.arena.as_mut_ptr();
        let mut times = vec![std::time::Duration::ZERO; self.plan.len()];
        for _ in 0..runs {
            for (i, &(f, extent, threads)) in self.plan.iter().enumerate() {
                let t = std::time::Instant::now();
                match (&self.pool, threads > 1) {
                    (Some(pool), true) => pool.run(f, arena, extent, threads),
                    // SAFETY: as in `run`.
                    _ => unsafe { f(arena, 0, extent as i64, 0) },
                }
                times[i] += t.elapsed();
            }
        }
        self.program.kernels.iter().zip(times).map(|(k, t)| (k.name.clone(), t / runs.max(1) as u32)).collect()
    }

    /// Text for `kiln inspect --emit ...`.
    pub fn inspect(&self, what: Emit) -> String {
        match what {
            Emit::Kernels => describe_kernels(&self.program, &self.graph),
            Emit::Memory => describe_memory(&self.program),
            Emit::Kir => write_program(&self.program),
            Emit::Clif => {
                let mut out = String::new();
                if self.code.clif.is_empty() {
                    out.push_str("; compile with JitOptions::inspect to keep Cranelift IR\n");
                }
                for (k, text) in self.program.kernels.iter().zip(&self.code.clif) {
                    let _ = writeln!(out, "; kernel `{}`\n{text}", k.name);
                }
                out
            }
            Emit::Asm => {
                let mut out = String::new();
                if self.code.code.is_empty() {
                    out.push_str("; compile with JitOptions::inspect to keep machine code\n");
                }
                for (k, bytes) in self.program.kernels.iter().zip(&self.code.code) {
                    let _ = writeln!(out, "; kernel `{}`: {} bytes", k.name, bytes.len());
                    out.push_str(&disassemble(bytes));
                    out.push('\n');
                }
                out
            }
        }
    }
}

/// x86-64 machine code as Intel-syntax text (iced-x86: a pure-Rust decoder,
/// no C toolchain needed, unlike capstone).
#[cfg(feature = "disasm")]
fn disassemble(bytes: &[u8]) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut decoder = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut out = String::new();
    let mut text = String::new();
    for instr in &mut decoder {
        text.clear();
        formatter.format(&instr, &mut text);
        let _ = writeln!(out, "  {:6x}  {text}", instr.ip());
    }
    out
}

/// Without the disassembler (the `disasm` feature, which the CLI enables),
/// the machine code as hex bytes.
#[cfg(not(feature = "disasm"))]
fn disassemble(bytes: &[u8]) -> String {
    let mut out = String::from("  ; built without the `disasm` feature: raw bytes\n");
    for (i, row) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(out, "  {:6x}  {}", i * 16, hex.join(" "));
    }
    out
}

// ---------------------------------------------------------------------------
// A small persistent thread pool. A launch publishes the kernel and a
// word holding (launch number, next iteration); the caller and the workers
// claim iterations of the parallel loop one at a time with compare-and-swap
// until none are left, so a worker that is slow to wake (or descheduled on a
// busy machine) never delays a launch: the caller does its share. Which
// thread runs an iteration does not change any result (iterations write
// disjoint elements; scratch is per thread). Idle workers spin briefly, then
// yield, then sleep on a condition variable.

/// The current launch, published to workers.
struct Shared {
    /// High 32 bits: launch number; low 32 bits: next unclaimed iteration.
    claim: AtomicU64,
    /// Iterations of the current launch completed.
    finished: AtomicUsize,
    func: AtomicUsize,
    arena: AtomicUsize,
    extent: AtomicUsize,
    quit: AtomicBool,
    /// Workers that finished starting up.
    started: AtomicUsize,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Shared {
    /// Claims and runs iterations of launch `launch` until none are left.
    fn work(&self, launch: u64, thread: usize) {
        loop {
            let cur = self.claim.load(Ordering::Acquire);
            let (l, next) = (cur >> 32, cur & 0xffff_ffff);
            let extent = self.extent.load(Ordering::Acquire) as u64;
            if l != launch || next >= extent {
                return;
            }
            // Read the kernel before claiming: a successful claim proves the
            // launch was still running, so these values were its own.
            let f = self.func.load(Ordering::Acquire);
            let arena = self.arena.load(Ordering::Acquire) as *mut f32;
            if self.claim.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            // SAFETY: `f` is a `KernelFn` published by `Pool::run` for this
            // launch; `Pool::run` does not return (so the arena stays valid
            // and exclusively used by this launch) until every claimed
            // iteration has finished; iteration `next` writes elements no
            // other iteration writes, and `thread` is unique among the
            // threads running the launch (per-thread scratch).
            unsafe {
                let f = std::mem::transmute::<usize, KernelFn>(f);
                f(arena, next as i64, next as i64 + 1, thread as i64)
            };
            self.finished.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Pool {
    fn new(threads: usize) -> Result<Pool, JitError> {
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            func: AtomicUsize::new(0),
            arena: AtomicUsize::new(0),
            extent: AtomicUsize::new(0),
            quit: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        let mut pool = Pool { shared: Arc::clone(&shared), workers: Vec::with_capacity(threads - 1) };
        for t in 1..threads {
            let s = Arc::clone(&shared);
            match std::thread::Builder::new().name(format!("kiln-worker-{t}")).spawn(move || worker(s, t)) {
                Ok(handle) => pool.workers.push(handle),
                // Dropping `pool` stops and joins the workers already started.
                Err(e) => return Err(JitError::InvalidOptions(format!("cannot start {threads} threads: {e}"))),
            }
        }
        // Wait for the workers' own start-up (thread-local set-up allocates),
        // so that no allocation happens during later runs.
        while shared.started.load(Ordering::Acquire) < threads - 1 {
            std::thread::yield_now();
        }
        Ok(pool)
    }

    /// Runs iterations `0..extent` of `f`'s parallel loop on the caller and
    /// the workers; returns when all are done.
    fn run(&self, f: KernelFn, arena: *mut f32, extent: usize, _threads: usize) {
        let s = &self.shared;
        let launch = (s.claim.load(Ordering::Relaxed) >> 32) + 1;
        s.func.store(f as usize, Ordering::Release);
        s.arena.store(arena as usize, Ordering::Release);
        s.extent.store(extent, Ordering::Release);
        s.finished.store(0, Ordering::Release);
        s.claim.store(launch << 32, Ordering::Release);
        {
            let sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            if *sleepers > 0 {
                s.wake.notify_all();
            }
        }
        s.work(launch, 0);
        let mut spins = 0u32;
        while s.finished.load(Ordering::Acquire) < extent {
            // A worker still runs an iteration it claimed; if it was
            // descheduled, give it the core back instead of spinning.
            spins += 1;
            if spins < 2_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        {
            let _guard = self.shared.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(s: Arc<Shared>, t: usize) {
    let mut seen = 0u64;
    // Touch everything the idle path uses once before reporting ready.
    drop(s.sleepers.lock().unwrap_or_else(|e| e.into_inner()));
    std::thread::yield_now();
    s.started.fetch_add(1, Ordering::Release);
    loop {
        let mut spins = 0u32;
        let launch = loop {
            if s.quit.load(Ordering::Acquire) {
                return;
            }
            let l = s.claim.load(Ordering::Acquire) >> 32;
            if l != seen {
                break l;
            }
            spins += 1;
            if spins < 4_000 {
                std::hint::spin_loop();
            } else if spins < 8_000 {
                std::thread::yield_now();
            } else {
                let mut sleepers = s.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                *sleepers += 1;
                while s.claim.load(Ordering::Acquire) >> 32 == seen && !s.quit.load(Ordering::Acquire) {
                    sleepers = s.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
                }
                *sleepers -= 1;
                spins = 0;
            }
        };
        seen = launch;
        s.work(launch, t);
    }
}
