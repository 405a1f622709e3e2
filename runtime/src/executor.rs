//! One interface over kiln's two executors: the Cranelift JIT (the default)
//! and the reference interpreter (the oracle, selectable for checking).
//!
//! Both take leaf values with [`Executor::set`], run the whole graph (a
//! forward pass, or one training step whose updates are written back to the
//! parameter and optimizer-state leaves) with [`Executor::run`], and expose
//! results with [`Executor::get`].

use kiln_compiler::interp::{self, InterpError};
use kiln_compiler::jit::{self, Executable, JitError, JitOptions};
use kiln_compiler::{Graph, NodeId, Tensor};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Which executor runs a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// Native kernels compiled with Cranelift.
    #[default]
    Jit,
    /// The plain-Rust reference interpreter.
    Interp,
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "jit" => Ok(Backend::Jit),
            "interp" => Ok(Backend::Interp),
            other => Err(format!("unknown backend `{other}`; expected `jit` or `interp`")),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Jit => "jit",
            Backend::Interp => "interp",
        })
    }
}

/// Why a graph could not be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The JIT failed.
    #[error(transparent)]
    Jit(#[from] JitError),
    /// The interpreter failed.
    #[error(transparent)]
    Interp(#[from] InterpError),
    /// A node id that the graph does not have.
    #[error("node #{0} is not in the graph")]
    UnknownNode(usize),
    /// Data of the wrong length for a leaf.
    #[error("`{name}` holds {expected} values at batch {batch}, got {got}")]
    WrongLength {
        /// The leaf.
        name: String,
        /// Its element count.
        expected: usize,
        /// The given length.
        got: usize,
        /// The compiled batch size.
        batch: usize,
    },
    /// `get` before the first `run` on a non-leaf.
    #[error("`{0}` has no value yet: call run() first")]
    NotRun(String),
}

/// How an [`Executor`] is prepared.
#[derive(Clone, Copy, Debug)]
pub struct ExecOptions {
    /// Threads for the JIT's parallel loops.
    pub threads: usize,
    /// Compute the gradients of the forward inputs too (a training step
    /// normally skips them; `kiln grad` reports them).
    pub input_grads: bool,
}

impl Default for ExecOptions {
    fn default() -> ExecOptions {
        ExecOptions { threads: std::thread::available_parallelism().map_or(1, |n| n.get()), input_grads: false }
    }
}

/// A graph prepared for one batch size on one backend.
pub struct Executor {
    graph: Arc<Graph>,
    batch: usize,
    engine: Engine,
}

enum Engine {
    Jit(Box<Executable>),
    Interp { leaves: HashMap<NodeId, Tensor>, values: Vec<Tensor> },
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor").field("graph", &self.graph.name).field("batch", &self.batch).finish()
    }
}

impl Executor {
    /// Prepares `graph` for batch size `batch`; the JIT compiles every kernel here.
    pub fn new(graph: Graph, batch: usize, backend: Backend, threads: usize) -> Result<Executor, ExecError> {
        Executor::with_options(graph, batch, backend, ExecOptions { threads, ..ExecOptions::default() })
    }

    /// Like [`Executor::new`], with every option spelled out.
    pub fn with_options(
        graph: Graph,
        batch: usize,
        backend: Backend,
        opts: ExecOptions,
    ) -> Result<Executor, ExecError> {
        let engine = match backend {
            Backend::Jit => {
                let options =
                    JitOptions { threads: opts.threads.max(1), input_grads: opts.input_grads, ..JitOptions::default() };
                Engine::Jit(Box::new(jit::compile(&graph, batch, &options)?))
            }
            Backend::Interp => Engine::Interp { leaves: HashMap::new(), values: Vec::new() },
        };
        Ok(Executor { graph: Arc::new(graph), batch, engine })
    }

    /// The graph being executed.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph being executed, shared (a reference count, not a copy), for
    /// callers that read it while they set and run the executor.
    pub fn shared_graph(&self) -> Arc<Graph> {
        Arc::clone(&self.graph)
    }

    /// The batch size the graph was prepared for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.engine {
            Engine::Jit(_) => Backend::Jit,
            Engine::Interp { .. } => Backend::Interp,
        }
    }

    /// The compiled executable, when the backend is the JIT.
    pub fn executable(&self) -> Option<&Executable> {
        match &self.engine {
            Engine::Jit(e) => Some(e),
            Engine::Interp { .. } => None,
        }
    }

    /// Sets a leaf (input, parameter, labels, target, optimizer state).
    pub fn set(&mut self, node: NodeId, data: &[f32]) -> Result<(), ExecError> {
        let shape = self.graph.get(node).ok_or(ExecError::UnknownNode(node.index()))?.shape.at_batch(self.batch);
        match &mut self.engine {
            Engine::Jit(e) => Ok(e.set(node, data)?),
            Engine::Interp { leaves, .. } => {
                let node_ref = self.graph.node(node);
                let tensor = Tensor::new(shape.clone(), data.to_vec()).ok_or_else(|| ExecError::WrongLength {
                    name: node_ref.name.clone(),
                    expected: shape.iter().product(),
                    got: data.len(),
                    batch: self.batch,
                })?;
                leaves.insert(node, tensor);
                Ok(())
            }
        }
    }

    /// Runs the graph once: a forward pass, or a whole training step.
    pub fn run(&mut self) -> Result<(), ExecError> {
        match &mut self.engine {
            Engine::Jit(e) => Ok(e.run()?),
            Engine::Interp { leaves, values } => {
                // Without updates a step is an evaluation.
                *values = interp::step(&self.graph, self.batch, leaves)?;
                Ok(())
            }
        }
    }

    /// The current value of `node`: a leaf's value (updated by the last
    /// training step) or a computed node's value from the last run.
    pub fn get(&self, node: NodeId) -> Result<&[f32], ExecError> {
        let n = self.graph.get(node).ok_or(ExecError::UnknownNode(node.index()))?;
        match &self.engine {
            Engine::Jit(e) => Ok(e.get(node)?),
            Engine::Interp { leaves, values } => {
                if let Some(t) = leaves.get(&node) {
                    return Ok(&t.data);
                }
                values.get(node.index()).map(|t| t.data.as_slice()).ok_or_else(|| ExecError::NotRun(n.name.clone()))
            }
        }
    }

    /// The value of `node` as a tensor with its concrete shape.
    pub fn tensor(&self, node: NodeId) -> Result<Tensor, ExecError> {
        let shape = self.graph.node(node).shape.at_batch(self.batch);
        let data = self.get(node)?.to_vec();
        Ok(Tensor { shape, data })
    }
}
