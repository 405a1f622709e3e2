//! A network with its parameters: a forward [`Graph`] plus one tensor per
//! parameter in state_dict order, with PyTorch's default initialisation,
//! safetensors and `.npy` checkpoints, and forward and training entry points
//! backed by an [`Executor`].
//!
//! The parameters held by a [`Model`] are always current: after a training
//! step the updated values are copied back from the executor (a memcpy per
//! parameter, small next to the step itself), so [`Model::state_dict`] never
//! needs `&mut self`. Executors are compiled lazily, one per batch size for
//! inference and one per batch size for training (for a given loss and SGD
//! configuration), and each remembers which version of the parameters it
//! holds, so parameters are uploaded only after they changed.
//! Momentum buffers live with the model and follow it across batch sizes.
//!
//! A model is in training or evaluation mode, as a PyTorch module is
//! ([`Model::train`], [`Model::eval`]; training by default): in training
//! mode batch normalisation uses the batch's statistics and updates its
//! running ones, and dropout masks, in [`Model::forward`] as in
//! [`Model::train_step`]; in evaluation mode both use the running statistics
//! and dropout is the identity.

use crate::executor::{Backend, ExecError, Executor};
use crate::npy::{self, NpyError};
use kiln_compiler::autodiff::{self, AutodiffError};
use kiln_compiler::budget::{OutOfMemory, available_memory, check_parameters};
use kiln_compiler::mode::{Mode, training_mode};
use kiln_compiler::ops::Init;
use kiln_compiler::{Graph, Loss, NodeId, Op, Sgd, Shape, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why a model operation failed. Every message names the parameter or input
/// concerned and, for shape problems, both shapes.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A state_dict lacks one of the model's parameters.
    #[error("missing parameter `{key}` (expected shape {expected:?})")]
    MissingKey {
        /// The state_dict key.
        key: String,
        /// The parameter's shape.
        expected: Vec<usize>,
    },
    /// A state_dict holds a key the model does not have.
    #[error("unexpected parameter `{key}` of shape {found:?}: the model has no such parameter (it has {known})")]
    UnexpectedKey {
        /// The unknown key.
        key: String,
        /// The shape found for it.
        found: Vec<usize>,
        /// The model's keys, comma separated.
        known: String,
    },
    /// A parameter of the wrong shape.
    #[error("parameter `{key}` has shape {found:?} but the model expects {expected:?}")]
    ParamShape {
        /// The state_dict key.
        key: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The shape given.
        found: Vec<usize>,
    },
    /// A tensor whose data length disagrees with its own shape.
    #[error("`{name}` has shape {shape:?} ({} elements) but holds {len} values", shape.iter().product::<usize>())]
    Malformed {
        /// The tensor's role or key.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its data length.
        len: usize,
    },
    /// A checkpoint tensor that is not float32.
    #[error("parameter `{key}` in {path} is {dtype}, expected F32")]
    Dtype {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
        /// The dtype found.
        dtype: String,
    },
    /// The wrong number of inputs for `forward` or a training step.
    #[error("`{model}` takes {expected} input(s) ({names}) but was given {found}")]
    InputCount {
        /// The network's name.
        model: String,
        /// Declared inputs.
        expected: usize,
        /// Their names.
        names: String,
        /// Inputs given.
        found: usize,
    },
    /// An input tensor whose shape does not fit the declaration.
    #[error("input `{input}` of `{model}` must have shape {expected}, but the tensor given has shape {found:?}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    InputShape {
        /// The network's name.
        model: String,
        /// The input's name.
        input: String,
        /// The declared shape (with `N`).
        expected: Shape,
        /// The tensor's shape.
        found: Vec<usize>,
        /// Further detail, e.g. a batch size that disagrees with another input.
        detail: Option<String>,
    },
    /// The labels or target of a training step have the wrong shape.
    #[error(
        "the {role} of a {loss} training step must have shape {expected:?} at batch {batch}, but has shape {found:?}"
    )]
    TargetShape {
        /// `labels` or `target`.
        role: String,
        /// The loss.
        loss: &'static str,
        /// The expected shape.
        expected: Vec<usize>,
        /// The batch size.
        batch: usize,
        /// The tensor's shape.
        found: Vec<usize>,
    },
    /// A parameter name the model does not have.
    #[error("the model has no parameter `{key}` (it has {known})")]
    UnknownParam {
        /// The key asked for.
        key: String,
        /// The model's keys.
        known: String,
    },
    /// The declaration text did not compile.
    #[error("the declaration does not compile:\n{0}")]
    Declaration(String),
    /// The model does not fit in memory.
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
    /// Building the training graph failed.
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    /// Compiling or running failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A `.npy` file could not be read or written.
    #[error(transparent)]
    Npy(#[from] NpyError),
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A safetensors file that could not be parsed or written.
    #[error("{path}: invalid safetensors data: {detail}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The cause.
        detail: String,
    },
}

/// A compiled executor and the parameter version it holds.
struct Cached {
    exec: Executor,
    version: u64,
}

/// The training configuration the training executors were built for.
#[derive(Clone, Copy, PartialEq)]
struct TrainKey {
    loss: Loss,
    sgd: Sgd,
    mode: Mode,
}

/// A forward graph and its parameters, with execution on a [`Backend`].
pub struct Model {
    graph: Graph,
    /// Parameter values, in `graph.params` order.
    params: Vec<Tensor>,
    /// Momentum buffers by parameter index (absent until first needed).
    momentum: Vec<Option<Tensor>>,
    /// Bumped whenever `params` change outside an executor.
    version: u64,
    backend: Backend,
    threads: usize,
    mode: Mode,
    /// Dropout's step counter: how many training-mode runs have masked,
    /// shared by every executor so no two runs draw the same masks.
    dropout_step: f32,
    forward_execs: HashMap<(Mode, usize), Cached>,
    train_key: Option<TrainKey>,
    train_execs: HashMap<usize, Cached>,
    /// The training executor whose momentum buffers are newer than `momentum`.
    momentum_owner: Option<usize>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("graph", &self.graph.name)
            .field("params", &self.keys().collect::<Vec<_>>())
            .field("backend", &self.backend)
            .finish()
    }
}

impl Clone for Model {
    /// Clones the graph, parameters and momentum buffers; executors are
    /// recompiled on first use.
    fn clone(&self) -> Model {
        let mut m = Model::new(self.graph.clone());
        m.params = self.params.clone();
        m.momentum = self.momentum_snapshot();
        m.backend = self.backend;
        m.threads = self.threads;
        m.mode = self.mode;
        m.dropout_step = self.dropout_step;
        m
    }
}

impl Model {
    /// A model of `graph` with every parameter zero.
    pub fn new(graph: Graph) -> Model {
        let params: Vec<Tensor> =
            graph.params.iter().map(|&p| Tensor::zeros(&graph.node(p).shape.at_batch(1))).collect();
        let n = params.len();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Model {
            graph,
            params,
            momentum: vec![None; n],
            version: 0,
            backend: Backend::default(),
            threads,
            mode: Mode::Train,
            dropout_step: 0.0,
            forward_execs: HashMap::new(),
            train_key: None,
            train_execs: HashMap::new(),
            momentum_owner: None,
        }
    }

    /// [`Model::new`], refused before allocating when the parameters need
    /// more memory than the machine has available.
    pub fn try_new(graph: Graph) -> Result<Model, ModelError> {
        check_parameters(&graph, available_memory())?;
        Ok(Model::new(graph))
    }

    /// [`Model::init`], refused before allocating when the parameters need
    /// more memory than the machine has available.
    pub fn try_init(graph: Graph, seed: u64) -> Result<Model, ModelError> {
        let mut model = Model::try_new(graph)?;
        model.reinit(seed);
        Ok(model)
    }

    /// A model of `graph` with PyTorch's default initialisation: every weight
    /// and bias drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (what
    /// `kaiming_uniform_(a=sqrt(5))` gives for weights), from a ChaCha8
    /// stream seeded with `seed`. Parameters are drawn in state_dict order.
    pub fn init(graph: Graph, seed: u64) -> Model {
        let mut model = Model::new(graph);
        model.reinit(seed);
        model
    }

    /// Compiles declaration text (the `.net` language, also what `net!`
    /// embeds) and initialises it as [`Model::init`] does.
    pub fn from_source(source: &str, seed: u64) -> Result<Model, ModelError> {
        let lowered = kiln_compiler::frontend::compile_str(source)
            .map_err(|d| ModelError::Declaration(d.render("<declaration>", source)))?;
        Model::try_init(lowered.graph, seed)
    }

    /// Redraws every parameter as [`Model::init`] does and clears momentum.
    pub fn reinit(&mut self, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (i, &p) in self.graph.params.iter().enumerate() {
            let fan_in = match self.graph.node(p).op {
                Op::Param { init: Init::Uniform { fan_in } } => fan_in.max(1),
                Op::Param { init: Init::Fill(value) } | Op::Buffer { fill: value } => {
                    self.params[i].data.fill(value);
                    continue;
                }
                _ => 1,
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            for v in &mut self.params[i].data {
                // 24 random bits give a uniform value in [0, 1).
                let u = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
                *v = (2.0 * u - 1.0) * bound;
            }
        }
        self.params_changed();
        self.reset_optimizer();
    }

    /// The forward graph (for inspection).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The network's declared name.
    pub fn name(&self) -> &str {
        &self.graph.name
    }

    /// The state_dict keys in order (`conv1.weight`, `conv1.bias`, ...).
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.graph.params.iter().map(|&p| self.graph.node(p).name.as_str())
    }

    /// The parameters as `(key, tensor)` pairs in state_dict order, borrowed.
    pub fn params(&self) -> impl Iterator<Item = (&str, &Tensor)> + '_ {
        self.keys().zip(self.params.iter())
    }

    /// A copy of the parameters in state_dict order, keyed as in PyTorch.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.params().map(|(k, t)| (k.to_string(), t.clone())).collect()
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(Tensor::numel).sum()
    }

    /// The parameter called `key`.
    pub fn param(&self, key: &str) -> Option<&Tensor> {
        self.index_of(key).map(|i| &self.params[i])
    }

    /// Replaces the parameter `key`; its shape must match.
    pub fn set_param(&mut self, key: &str, value: Tensor) -> Result<(), ModelError> {
        let i = self.index_of(key).ok_or_else(|| ModelError::UnknownParam { key: key.into(), known: self.known() })?;
        self.check_param(i, &value)?;
        self.params[i] = value;
        self.params_changed();
        Ok(())
    }

    /// Replaces every parameter. All or nothing: a missing key, an unexpected
    /// key or a wrong shape leaves the model unchanged.
    pub fn load_state_dict(&mut self, mut dict: HashMap<String, Tensor>) -> Result<(), ModelError> {
        let mut new = Vec::with_capacity(self.params.len());
        for i in 0..self.params.len() {
            let key = self.key(i).to_string();
            let t = dict
                .remove(&key)
                .ok_or_else(|| ModelError::MissingKey { key: key.clone(), expected: self.params[i].shape.clone() })?;
            self.check_param(i, &t)?;
            new.push(t);
        }
        let mut extra: Vec<(String, Tensor)> = dict.into_iter().collect();
        extra.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some((key, t)) = extra.into_iter().next() {
            return Err(ModelError::UnexpectedKey { key, found: t.shape, known: self.known() });
        }
        self.params = new;
        self.params_changed();
        Ok(())
    }

    /// Saves the parameters as a safetensors file (F32, state_dict keys).
    /// The file is written to `<path>.tmp` and renamed over `path`, so a
    /// failed save never destroys the previous file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        let path = path.as_ref();
        let bytes: Vec<Vec<u8>> =
            self.params.iter().map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let mut views = Vec::with_capacity(self.params.len());
        for (i, t) in self.params.iter().enumerate() {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), &bytes[i])
                .map_err(|e| ModelError::Safetensors { path: path.into(), detail: e.to_string() })?;
            views.push((self.key(i).to_string(), view));
        }
        let data = safetensors::serialize(views, None)
            .map_err(|e| ModelError::Safetensors { path: path.into(), detail: e.to_string() })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &data).map_err(|source| ModelError::Io { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            ModelError::Io { path: path.into(), source }
        })
    }

    /// Loads parameters from a safetensors file written by [`Model::save`]
    /// (or by PyTorch's `safetensors.torch.save_file` of a state_dict).
    /// All or nothing, as [`Model::load_state_dict`].
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::Safetensors { path: path.into(), detail: e.to_string() })?;
        let mut dict = HashMap::new();
        for (key, view) in st.tensors() {
            if crate::weights::is_step_counter(&key, view.dtype()) && self.index_of(&key).is_none() {
                continue;
            }
            let Some((data, _)) = crate::weights::to_f32(&view) else {
                return Err(ModelError::Dtype { key, path: path.into(), dtype: format!("{:?}", view.dtype()) });
            };
            let shape = view.shape().to_vec();
            let len = data.len();
            let t = Tensor::new(shape.clone(), data).ok_or(ModelError::Malformed { name: key.clone(), shape, len })?;
            dict.insert(key, t);
        }
        self.load_state_dict(dict)
    }

    /// Loads every parameter from `<dir>/<key>.npy` (PyTorch layouts, float32
    /// or float64). All or nothing.
    pub fn load_npy_dir(&mut self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        let dir = dir.as_ref();
        let mut dict = HashMap::new();
        for i in 0..self.params.len() {
            let key = self.key(i).to_string();
            let path = dir.join(format!("{key}.npy"));
            if !path.exists() {
                return Err(ModelError::MissingKey { key, expected: self.params[i].shape.clone() });
            }
            dict.insert(key, npy::read_f32(&path)?);
        }
        self.load_state_dict(dict)
    }

    /// Writes every parameter to `<dir>/<key>.npy`, creating `dir`.
    pub fn save_npy_dir(&self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io { path: dir.into(), source })?;
        for (key, t) in self.params() {
            npy::write_f32(&dir.join(format!("{key}.npy")), t)?;
        }
        Ok(())
    }

    /// Chooses the executor (the JIT by default); compiled executors are dropped.
    pub fn set_backend(&mut self, backend: Backend) {
        if backend != self.backend {
            self.backend = backend;
            self.drop_executors();
        }
    }

    /// The executor in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Training mode (PyTorch's `model.train()`, the default): batch
    /// normalisation normalises with the batch's statistics and updates its
    /// running ones, and dropout masks, in [`Model::forward`] and
    /// [`Model::train_step`] alike.
    pub fn train(&mut self) -> &mut Model {
        self.mode = Mode::Train;
        self
    }

    /// Evaluation mode (PyTorch's `model.eval()`): batch normalisation uses
    /// its running statistics and dropout is the identity, also in
    /// [`Model::train_step`] and [`Model::gradients`].
    pub fn eval(&mut self) -> &mut Model {
        self.mode = Mode::Eval;
        self
    }

    /// Sets the mode; [`Model::train`] and [`Model::eval`] say what each does.
    pub fn set_mode(&mut self, mode: Mode) -> &mut Model {
        self.mode = mode;
        self
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the model is in training mode (PyTorch's `model.training`).
    pub fn is_training(&self) -> bool {
        self.mode == Mode::Train
    }

    /// Sets the number of worker threads for the JIT (default: all cores).
    pub fn set_threads(&mut self, threads: usize) {
        let threads = threads.max(1);
        if threads != self.threads {
            self.threads = threads;
            self.drop_executors();
        }
    }

    /// Clears the optimizer's momentum buffers.
    pub fn reset_optimizer(&mut self) {
        self.momentum_owner = None;
        self.momentum.iter_mut().for_each(|m| *m = None);
        // Executors hold their own copies; force a re-upload of zeros.
        for c in self.train_execs.values_mut() {
            c.version = u64::MAX;
        }
    }

    /// The momentum buffer of parameter `key`, once a training step with
    /// momentum has created it.
    pub fn momentum(&self, key: &str) -> Option<Tensor> {
        let i = self.index_of(key)?;
        if let Some(b) = self.momentum_owner
            && let Some(c) = self.train_execs.get(&b)
        {
            return momentum_nodes(c.exec.graph()).get(&i).and_then(|&n| c.exec.tensor(n).ok());
        }
        self.momentum[i].clone()
    }

    /// Runs the network on `inputs` (one tensor per declared input, in order)
    /// and returns its outputs. The batch size is read from the tensors; each
    /// input's shape is checked against its declaration. In training mode
    /// (see [`Model::train`]) this updates batch normalisation's running
    /// statistics, as PyTorch's forward does.
    pub fn forward(&mut self, inputs: &[&Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let batch = self.check_inputs(inputs)?;
        let key = (self.mode, batch);
        if !self.forward_execs.contains_key(&key) {
            let graph = match self.mode {
                Mode::Train => training_mode(&self.graph),
                Mode::Eval => self.graph.clone(),
            };
            let exec = Executor::new(graph, batch, self.backend, self.threads)?;
            self.forward_execs.insert(key, Cached { exec, version: u64::MAX });
        }
        let version = self.version;
        let Some(cached) = self.forward_execs.get_mut(&key) else { unreachable!("inserted above") };
        let graph = cached.exec.shared_graph();
        if cached.version != version {
            for (&p, t) in graph.params.iter().zip(&self.params) {
                cached.exec.set(p, &t.data)?;
            }
            cached.version = version;
        }
        for (&node, t) in graph.inputs.iter().zip(inputs) {
            cached.exec.set(node, &t.data)?;
        }
        let counter = dropout_counter(&graph);
        if let Some(c) = counter {
            cached.exec.set(c, &[self.dropout_step])?;
        }
        cached.exec.run()?;
        let outs = graph.outputs.iter().map(|&o| cached.exec.tensor(o)).collect::<Result<Vec<_>, _>>()?;
        if let Some(c) = counter {
            self.dropout_step = cached.exec.get(c)?.first().copied().unwrap_or(self.dropout_step);
        }
        // Running statistics were updated: bring them home; every other
        // executor is stale, this one current.
        if !graph.updates.is_empty() {
            let index: HashMap<NodeId, usize> = graph.params.iter().enumerate().map(|(i, &p)| (p, i)).collect();
            for &(leaf, _) in &graph.updates {
                if let Some(&i) = index.get(&leaf) {
                    self.params[i].data.copy_from_slice(cached.exec.get(leaf)?);
                }
            }
            self.version += 1;
            cached.version = self.version;
        }
        Ok(outs)
    }

    /// One training step: forward, `loss` on output 0 against `target`
    /// (class indices `[N]` for cross-entropy, stored as f32; a tensor of the
    /// output's shape for MSE; ±1 of the output's shape for the perceptron
    /// criterion), backward, and an SGD update of every parameter with
    /// PyTorch's semantics. Momentum buffers persist across calls (see
    /// [`Model::reset_optimizer`]). Returns the loss before the update.
    /// Batch normalisation and dropout follow the model's mode, as in
    /// PyTorch (see [`Model::train`] and [`Model::eval`]).
    pub fn train_step(&mut self, inputs: &[&Tensor], target: &Tensor, loss: Loss, sgd: Sgd) -> Result<f32, ModelError> {
        let batch = self.check_inputs(inputs)?;
        // The learning rate is a run-time input: changing it recompiles nothing.
        let key = TrainKey { loss, sgd: Sgd { lr: 0.0, ..sgd }, mode: self.mode };
        if self.train_key != Some(key) {
            // Another loss or optimizer setting: keep the momentum, rebuild.
            self.momentum = self.momentum_snapshot();
            self.momentum_owner = None;
            self.train_execs.clear();
            self.train_key = Some(key);
        }
        if !self.train_execs.contains_key(&batch) {
            let graph = autodiff::derive_training_in(self.mode, &self.graph, loss, sgd)?;
            let exec = Executor::new(graph, batch, self.backend, self.threads)?;
            self.train_execs.insert(batch, Cached { exec, version: u64::MAX });
        }
        // Momentum newer in another executor: bring it home first.
        if self.momentum_owner.is_some_and(|b| b != batch) {
            self.momentum = self.momentum_snapshot();
            self.momentum_owner = None;
            for c in self.train_execs.values_mut() {
                c.version = u64::MAX;
            }
        }
        let version = self.version;
        let Some(cached) = self.train_execs.get_mut(&batch) else { unreachable!("inserted above") };
        // Shared, not cloned: the step reads the graph while it sets and runs.
        let graph = cached.exec.shared_graph();
        let Some(training) = graph.training.as_ref() else { unreachable!("derive_training sets it") };
        check_target(&graph, training.target, target, loss, batch)?;
        if cached.version != version {
            for (&p, t) in graph.params.iter().zip(&self.params) {
                cached.exec.set(p, &t.data)?;
            }
            // The executor that ran last already holds the newest momentum.
            let upload_momentum = self.momentum_owner != Some(batch);
            for (i, &node) in momentum_nodes(&graph).iter().filter(|_| upload_momentum) {
                match &self.momentum[*i] {
                    Some(m) => cached.exec.set(node, &m.data)?,
                    None => cached.exec.set(node, &vec![0.0; graph.node(node).shape.numel_at(batch)])?,
                }
            }
        }
        for (&node, t) in graph.inputs.iter().zip(inputs) {
            cached.exec.set(node, &t.data)?;
        }
        cached.exec.set(training.target, &target.data)?;
        if let Some(lr) = training.learning_rate {
            cached.exec.set(lr, &[sgd.lr])?;
        }
        let counter = dropout_counter(&graph);
        if let Some(c) = counter {
            cached.exec.set(c, &[self.dropout_step])?;
        }
        cached.exec.run()?;
        if let Some(c) = counter {
            self.dropout_step = cached.exec.get(c)?.first().copied().unwrap_or(self.dropout_step);
        }
        let loss_value = cached.exec.get(training.loss)?.first().copied().unwrap_or(f32::NAN);
        for (&p, t) in graph.params.iter().zip(self.params.iter_mut()) {
            t.data.copy_from_slice(cached.exec.get(p)?);
        }
        // The parameters changed: every other executor is stale, this one is current.
        self.version += 1;
        cached.version = self.version;
        self.momentum_owner = Some(batch);
        Ok(loss_value)
    }

    /// The loss and the gradient of every parameter at the current parameters,
    /// without updating anything (PyTorch's `loss.backward()`; for checking
    /// against another framework). A parameter that does not reach the loss
    /// gets a zero gradient. Batch normalisation and dropout follow the
    /// model's mode; nothing is updated, running statistics included.
    /// Compiles a training graph on each call.
    pub fn gradients(
        &mut self,
        inputs: &[&Tensor],
        target: &Tensor,
        loss: Loss,
    ) -> Result<(f32, Vec<(String, Tensor)>), ModelError> {
        let batch = self.check_inputs(inputs)?;
        // The step's updates run in a throw-away executor: nothing is kept.
        let graph = autodiff::derive_training_in(self.mode, &self.graph, loss, Sgd { lr: 0.0, ..Sgd::default() })?;
        let Some(training) = graph.training.as_ref() else { unreachable!("derive_training sets it") };
        check_target(&graph, training.target, target, loss, batch)?;
        let mut exec = Executor::new(graph.clone(), batch, self.backend, self.threads)?;
        if let Some(c) = dropout_counter(&graph) {
            exec.set(c, &[self.dropout_step])?;
        }
        for (&p, t) in graph.params.iter().zip(&self.params) {
            exec.set(p, &t.data)?;
        }
        for (&node, t) in graph.inputs.iter().zip(inputs) {
            exec.set(node, &t.data)?;
        }
        exec.set(training.target, &target.data)?;
        exec.run()?;
        let loss_value = exec.get(training.loss)?.first().copied().unwrap_or(f32::NAN);
        let grads: HashMap<NodeId, NodeId> = training.param_grads.iter().copied().collect();
        let mut out = Vec::with_capacity(self.params.len());
        for (i, &p) in graph.params.iter().enumerate() {
            let g = match grads.get(&p) {
                Some(&g) => exec.tensor(g)?,
                None => Tensor::zeros(&self.params[i].shape),
            };
            out.push((self.key(i).to_string(), g));
        }
        Ok((loss_value, out))
    }

    /// The batch size the inputs imply, after checking every shape.
    fn check_inputs(&self, inputs: &[&Tensor]) -> Result<usize, ModelError> {
        let g = &self.graph;
        if inputs.len() != g.inputs.len() {
            return Err(ModelError::InputCount {
                model: g.name.clone(),
                expected: g.inputs.len(),
                names: g.inputs.iter().map(|&i| format!("`{}`", g.node(i).name)).collect::<Vec<_>>().join(", "),
                found: inputs.len(),
            });
        }
        let mut batch: Option<(usize, String)> = None;
        for (&node, t) in g.inputs.iter().zip(inputs) {
            let n = g.node(node);
            let err = |detail: Option<String>| ModelError::InputShape {
                model: g.name.clone(),
                input: n.name.clone(),
                expected: n.shape.clone(),
                found: t.shape.clone(),
                detail,
            };
            if t.data.len() != t.shape.iter().product::<usize>() {
                return Err(ModelError::Malformed { name: n.name.clone(), shape: t.shape.clone(), len: t.data.len() });
            }
            if t.shape.len() != n.shape.rank() {
                return Err(err(None));
            }
            // The first batched axis fixes N for this input.
            let implied = n
                .shape
                .0
                .iter()
                .zip(&t.shape)
                .find(|(d, _)| d.batched)
                .map(|(d, &len)| if d.factor > 0 && len % d.factor == 0 { len / d.factor } else { 0 });
            let Some(b) = implied else {
                if t.shape != n.shape.at_batch(1) {
                    return Err(err(None));
                }
                continue;
            };
            if b == 0 || t.shape != n.shape.at_batch(b) {
                return Err(err(None));
            }
            match &batch {
                Some((other, from)) if *other != b => {
                    return Err(err(Some(format!("N = {b} here but N = {other} from input `{from}`"))));
                }
                Some(_) => {}
                None => batch = Some((b, n.name.clone())),
            }
        }
        Ok(batch.map(|(b, _)| b).unwrap_or(1))
    }

    fn momentum_snapshot(&self) -> Vec<Option<Tensor>> {
        let mut out = self.momentum.clone();
        if let Some(b) = self.momentum_owner
            && let Some(c) = self.train_execs.get(&b)
        {
            for (&i, &node) in momentum_nodes(c.exec.graph()).iter() {
                if let Ok(t) = c.exec.tensor(node) {
                    out[i] = Some(t);
                }
            }
        }
        out
    }

    fn drop_executors(&mut self) {
        self.momentum = self.momentum_snapshot();
        self.momentum_owner = None;
        self.forward_execs.clear();
        self.train_execs.clear();
    }

    fn params_changed(&mut self) {
        self.version += 1;
    }

    fn key(&self, i: usize) -> &str {
        &self.graph.node(self.graph.params[i]).name
    }

    fn index_of(&self, key: &str) -> Option<usize> {
        self.keys().position(|k| k == key)
    }

    fn known(&self) -> String {
        let mut s = String::new();
        for (i, k) in self.keys().enumerate() {
            let _ = write!(s, "{}`{k}`", if i > 0 { ", " } else { "" });
        }
        s
    }

    fn check_param(&self, i: usize, t: &Tensor) -> Result<(), ModelError> {
        let expected = &self.params[i].shape;
        if &t.shape != expected {
            return Err(ModelError::ParamShape {
                key: self.key(i).into(),
                expected: expected.clone(),
                found: t.shape.clone(),
            });
        }
        if t.data.len() != t.shape.iter().product::<usize>() {
            return Err(ModelError::Malformed { name: self.key(i).into(), shape: t.shape.clone(), len: t.data.len() });
        }
        Ok(())
    }
}

/// Checks the labels or target of a training step.
fn check_target(graph: &Graph, node: NodeId, target: &Tensor, loss: Loss, batch: usize) -> Result<(), ModelError> {
    let expected = graph.node(node).shape.at_batch(batch);
    if target.shape != expected {
        return Err(ModelError::TargetShape {
            role: graph.node(node).name.clone(),
            loss: loss.name(),
            expected,
            batch,
            found: target.shape.clone(),
        });
    }
    if target.data.len() != target.shape.iter().product::<usize>() {
        return Err(ModelError::Malformed {
            name: "target".into(),
            shape: target.shape.clone(),
            len: target.data.len(),
        });
    }
    Ok(())
}

/// Dropout's step counter leaf (see [`training_mode`]), when the graph masks.
fn dropout_counter(g: &Graph) -> Option<NodeId> {
    g.find("dropout.step").filter(|&id| g.node(id).op == Op::OptimState)
}

/// Parameter index -> momentum buffer leaf of a training graph.
fn momentum_nodes(g: &Graph) -> HashMap<usize, NodeId> {
    let index: HashMap<NodeId, usize> = g.params.iter().enumerate().map(|(i, &p)| (p, i)).collect();
    let mut out = HashMap::new();
    for id in g.node_ids() {
        let n = g.node(id);
        if matches!(n.op, Op::SgdMomentum(_))
            && let (Some(&p), Some(&buf)) = (n.inputs.first(), n.inputs.get(2))
            && let Some(&i) = index.get(&p)
        {
            out.insert(i, buf);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = "pub struct Tiny { fc1: Linear(3, 4), fc2: Linear(4, 2) }
        fn forward(x: [N, 3]) -> [N, 2] { fc2(relu(fc1(x))) }";

    #[test]
    fn init_is_seeded_and_bounded() {
        let a = Model::from_source(TINY, 7).unwrap();
        let b = Model::from_source(TINY, 7).unwrap();
        assert_eq!(a.state_dict(), b.state_dict());
        let keys: Vec<_> = a.keys().collect();
        assert_eq!(keys, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
        let bound = 1.0 / 3f32.sqrt();
        assert!(a.param("fc1.weight").unwrap().data.iter().all(|v| v.abs() <= bound));
        assert!(a.param("fc2.bias").unwrap().data.iter().all(|v| v.abs() <= 0.5));
    }

    #[test]
    fn load_state_dict_is_all_or_nothing() {
        let mut m = Model::from_source(TINY, 1).unwrap();
        let before = m.state_dict();
        let mut dict: HashMap<String, Tensor> = before.iter().cloned().collect();
        dict.insert("fc2.bias".into(), Tensor::zeros(&[3]));
        let err = m.load_state_dict(dict).unwrap_err().to_string();
        assert!(err.contains("fc2.bias") && err.contains("[3]") && err.contains("[2]"), "{err}");
        assert_eq!(m.state_dict(), before);
    }

    #[test]
    fn forward_checks_shapes_and_training_updates_params() {
        let mut m = Model::from_source(TINY, 3).unwrap();
        m.set_backend(Backend::Interp);
        let bad = Tensor::zeros(&[2, 4]);
        let err = m.forward(&[&bad]).unwrap_err().to_string();
        assert!(err.contains("`x`") && err.contains("[N, 3]") && err.contains("[2, 4]"), "{err}");
        let x = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.5, 2.0]).unwrap();
        let y = Tensor::new(vec![2], vec![0.0, 1.0]).unwrap();
        let sgd = Sgd { lr: 0.1, momentum: 0.9, ..Sgd::default() };
        let first = m.train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap();
        let mut last = first;
        for _ in 0..20 {
            last = m.train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap();
        }
        assert!(last < first, "{first} -> {last}");
        assert!(m.momentum("fc1.weight").is_some());
        let out = m.forward(&[&x]).unwrap();
        assert_eq!(out[0].shape, vec![2, 2]);
    }

    const NORMED: &str =
        "pub struct Normed { fc: Linear(3, 4), bn: BatchNorm1d(4), drop: Dropout(0.5), out: Linear(4, 2) }
        fn forward(x: [N, 3]) -> [N, 2] { out(drop(relu(bn(fc(x))))) }";

    fn normed_batch() -> (Tensor, Tensor) {
        let x = Tensor::new(vec![4, 3], (0..12).map(|i| (i as f32 * 0.61).sin() * 2.0).collect()).unwrap();
        let y = Tensor::new(vec![4], vec![0.0, 1.0, 1.0, 0.0]).unwrap();
        (x, y)
    }

    /// `fc(x)` by hand: the values batch normalisation sees.
    fn fc_of(m: &Model, x: &Tensor) -> Vec<[f32; 4]> {
        let (w, b) = (m.param("fc.weight").unwrap(), m.param("fc.bias").unwrap());
        (0..4)
            .map(|n| {
                std::array::from_fn(|o| b.data[o] + (0..3).map(|i| w.data[o * 3 + i] * x.data[n * 3 + i]).sum::<f32>())
            })
            .collect()
    }

    #[test]
    fn modes_choose_statistics_and_masks_as_pytorch_does() {
        for backend in [Backend::Interp, Backend::Jit] {
            let (x, _) = normed_batch();
            let mut m = Model::from_source(NORMED, 2).unwrap();
            m.set_backend(backend);
            assert!(m.is_training(), "training mode is the default, as in PyTorch");
            let start = m.state_dict();

            // Evaluation mode changes nothing and draws no masks.
            m.eval();
            let a = m.forward(&[&x]).unwrap();
            assert_eq!(m.forward(&[&x]).unwrap(), a, "{backend}");
            assert_eq!(m.state_dict(), start);

            // Training mode: the running statistics take a momentum-0.1 step
            // towards the batch's mean and unbiased variance.
            m.train();
            let h = fc_of(&m, &x);
            let first = m.forward(&[&x]).unwrap();
            for o in 0..4 {
                let mean = h.iter().map(|r| r[o]).sum::<f32>() / 4.0;
                let var = h.iter().map(|r| (r[o] - mean).powi(2)).sum::<f32>() / 3.0;
                let (rm, rv) =
                    (m.param("bn.running_mean").unwrap().data[o], m.param("bn.running_var").unwrap().data[o]);
                assert!((rm - 0.1 * mean).abs() < 1e-5, "{backend}: running_mean[{o}] {rm} vs {}", 0.1 * mean);
                assert!((rv - (0.9 + 0.1 * var)).abs() < 1e-5, "{backend}: running_var[{o}] {rv}");
            }
            assert_ne!(first, a, "{backend}: batch statistics and a mask");
            // Each training-mode run draws new masks.
            assert_ne!(m.forward(&[&x]).unwrap(), first, "{backend}");

            // Evaluation mode now reads the updated statistics.
            m.eval();
            assert_ne!(m.forward(&[&x]).unwrap(), a, "{backend}");
        }
    }

    #[test]
    fn training_steps_follow_the_mode_and_share_the_mask_counter() {
        let sgd = Sgd { lr: 0.1, ..Sgd::default() };
        let (x, y) = normed_batch();
        let fresh = Model::from_source(NORMED, 4).unwrap();
        let stats = |m: &Model| (m.param("bn.running_mean").cloned(), m.param("bn.running_var").cloned());

        // In evaluation mode a step trains the weights and keeps the statistics.
        let mut evaluating = fresh.clone();
        evaluating.eval();
        evaluating.train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap();
        assert_eq!(stats(&evaluating), stats(&fresh));
        assert_ne!(evaluating.param("fc.weight"), fresh.param("fc.weight"));
        let mut training = fresh.clone();
        training.train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap();
        assert_ne!(stats(&training), stats(&fresh));

        // The loss of a training-mode step depends on the statistics of the
        // batch and the mask only; the mask on how many masking runs came first.
        let first_step = fresh.clone().train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap();
        let mut after_eval = fresh.clone();
        after_eval.eval().forward(&[&x]).unwrap();
        after_eval.train();
        assert_eq!(after_eval.train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap(), first_step);
        let mut after_train = fresh.clone();
        after_train.forward(&[&x]).unwrap();
        assert_ne!(after_train.train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap(), first_step);
        // Across batch sizes too: another executor continues the count.
        let mut other_batch = fresh.clone();
        let x2 = Tensor::new(vec![2, 3], x.data[..6].to_vec()).unwrap();
        other_batch.forward(&[&x2]).unwrap();
        assert_ne!(other_batch.train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap(), first_step);
    }

    /// Momentum and parameters stay consistent whether executors are kept
    /// (lazy sync, switching batch sizes) or rebuilt before every step.
    #[test]
    fn momentum_follows_the_model_across_batch_sizes_and_rebuilds() {
        for backend in [Backend::Interp, Backend::Jit] {
            sync_matches_rebuild(backend);
        }
    }

    fn sync_matches_rebuild(backend: Backend) {
        let sgd = Sgd { lr: 0.05, momentum: 0.9, ..Sgd::default() };
        let data = |n: usize, k: f32| {
            let x = Tensor::new(vec![n, 3], (0..3 * n).map(|i| ((i as f32 + k) * 0.37).sin()).collect()).unwrap();
            let y = Tensor::new(vec![n], (0..n).map(|i| (i % 2) as f32).collect()).unwrap();
            (x, y)
        };
        let mut kept = Model::from_source(TINY, 5).unwrap();
        let mut rebuilt = kept.clone();
        kept.set_backend(backend);
        rebuilt.set_backend(backend);
        for (step, n) in [2, 3, 2, 3, 3, 2].into_iter().enumerate() {
            let (x, y) = data(n, step as f32);
            if step == 3 {
                // An outside change between steps must reach every executor.
                let w = Tensor::new(vec![2], vec![0.1, -0.2]).unwrap();
                kept.set_param("fc2.bias", w.clone()).unwrap();
                rebuilt.set_param("fc2.bias", w).unwrap();
            }
            let a = kept.train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap();
            // Dropping the executors forces the momentum home and a full re-upload.
            rebuilt.set_threads(1 + step % 2 + 1);
            let b = rebuilt.train_step(&[&x], &y, Loss::CrossEntropy, sgd).unwrap();
            assert_eq!(a, b, "{backend}: step {step}");
        }
        assert_eq!(kept.state_dict(), rebuilt.state_dict());
        assert_eq!(kept.momentum("fc1.weight"), rebuilt.momentum("fc1.weight"));
        assert_eq!(kept.clone().momentum("fc1.weight"), kept.momentum("fc1.weight"));
    }
}
