//! [`Executable`]: a compiled program, its arena and its thread pool.

use super::JitError;
use super::denormals::FlushDenormals;
use super::pool::Pool;
use crate::backend::{KernelFn, NativeCode};
use crate::budget::{OutOfMemory, arena_bytes, available_memory, largest_buffers};
use crate::graph::{Graph, NodeId};
use crate::kernel::{BufId, BufferKind, Program};
use crate::ops::Op;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A graph compiled to native code for one batch size.
pub struct Executable {
    pub(super) graph: Graph,
    batch: usize,
    pub(super) program: Program,
    pub(super) code: NativeCode,
    arena: Vec<f32>,
    observable: HashSet<NodeId>,
    pool: Option<Pool>,
    /// Per kernel: how to launch it.
    launches: Vec<Launch>,
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

/// How one kernel is launched.
#[derive(Clone, Copy)]
struct Launch {
    /// Its entry point.
    entry: KernelFn,
    /// Trip count of its parallel loop (0 without one).
    extent: usize,
    /// Threads its parallel loop is split across.
    threads: usize,
}

impl Executable {
    /// Sets up the arena of a compiled program (constants written in,
    /// everything else zero) and, when a kernel runs on several threads,
    /// the thread pool.
    pub(super) fn new(
        graph: Graph,
        batch: usize,
        program: Program,
        code: NativeCode,
        observable: HashSet<NodeId>,
    ) -> Result<Executable, JitError> {
        if code.functions.len() != program.kernels.len() {
            return Err(JitError::InvalidOptions(format!(
                "the backend returned {} entry points for {} kernels",
                code.functions.len(),
                program.kernels.len()
            )));
        }
        // MemAvailable is an estimate: should the allocation still fail,
        // report it rather than abort.
        let mut arena = Vec::new();
        arena.try_reserve_exact(program.arena_len).map_err(|_| OutOfMemory {
            needed: arena_bytes(&program),
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
                // A run-time hyper-parameter starts at its initial value.
                BufferKind::Leaf(id) => {
                    if let Some(Op::Hyper { initial }) = graph.get(*id).map(|n| &n.op) {
                        arena[at..at + buf.len].fill(*initial);
                    }
                }
                _ => {}
            }
        }
        let launches = program
            .kernels
            .iter()
            .zip(&code.functions)
            .map(|(k, &entry)| Launch { entry, extent: k.parallel_extent().unwrap_or(0), threads: k.threads })
            .collect();
        let pool = if program.threads > 1 && program.kernels.iter().any(|k| k.threads > 1) {
            Some(Pool::new(program.threads)?)
        } else {
            None
        };
        Ok(Executable { graph, batch, program, code, arena, observable, pool, launches })
    }

    /// Runs kernel `index`: the one place kernels are called.
    fn launch(&mut self, index: usize) {
        let Launch { entry, extent, threads } = self.launches[index];
        let arena = self.arena.as_mut_ptr();
        match &self.pool {
            Some(pool) if threads > 1 => pool.run(entry, arena, extent),
            // SAFETY: `entry` was compiled for this program's arena layout
            // and `arena` is that arena (`arena_len` f32s), borrowed
            // exclusively through `&mut self`; the whole parallel range
            // runs on this thread as thread 0 (the `KernelFn` contract).
            _ => unsafe { entry(arena, 0, extent as i64, 0) },
        }
    }

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
        let _flush = FlushDenormals::new();
        for index in 0..self.launches.len() {
            self.launch(index);
        }
        Ok(())
    }

    /// Runs kernel `index` of the program alone (for benchmarks; its inputs
    /// are whatever the arena holds). An index past the last kernel does
    /// nothing.
    pub fn run_kernel(&mut self, index: usize) {
        if index < self.launches.len() {
            let _flush = FlushDenormals::new();
            self.launch(index);
        }
    }

    /// Runs `runs` times and returns each kernel's name and mean time per
    /// run (for benchmarks and `kiln bench`).
    pub fn profile(&mut self, runs: usize) -> Vec<(String, Duration)> {
        let mut times = vec![Duration::ZERO; self.launches.len()];
        let _flush = FlushDenormals::new();
        for _ in 0..runs {
            for (index, time) in times.iter_mut().enumerate() {
                let t = Instant::now();
                self.launch(index);
                *time += t.elapsed();
            }
        }
        self.program.kernels.iter().zip(times).map(|(k, t)| (k.name.clone(), t / runs.max(1) as u32)).collect()
    }
}
