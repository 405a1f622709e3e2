//! The trainer: epochs of compiled training steps, evaluation, checkpoints.
//!
//! This file holds the configuration, construction, the epoch loop and
//! the compiled step, parameters and checkpoints; diagnosing a non-finite
//! loss, evaluation and profiling the loop are submodules.

mod diagnose;
mod evaluate;
mod profile;

pub use profile::OverheadReport;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_compiler::{Graph, Loss, NodeId, Tensor, Training, autodiff};

use super::checkpoint::{Checkpoint, match_params};
use super::error::TrainError;
use super::metrics::{EpochRecord, EvalMetrics, display_class_names};
use super::optim::Optimizer;
use super::schedule::LrSchedule;
use crate::data::{Batch, DataLoader, Dataset, LoaderConfig, Transforms};
use crate::executor::{Backend, Executor};
use crate::model::Model;
use diagnose::{SNAPSHOT_EVERY, Snapshot};
use kiln_compiler::mode::Mode;
use kiln_compiler::ops::{Optim, Update};

/// How a [`Trainer`] trains.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Samples per training step (the compiled batch).
    pub batch_size: usize,
    /// Total epochs of the run ([`Trainer::fit`] stops after this many,
    /// counting those a resumed checkpoint already did).
    pub epochs: u64,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Cross-entropy against labels smoothed as PyTorch's `label_smoothing`
    /// (0: none).
    pub label_smoothing: f32,
    /// How the optimizer's learning rate changes over the run.
    pub schedule: LrSchedule,
    /// Clip the gradients' global 2-norm to this before each update
    /// (PyTorch's `clip_grad_norm_`).
    pub clip_grad_norm: Option<f32>,
    /// Seeds the initialisation, the shuffle and random transforms.
    pub seed: u64,
    /// Background loader threads (the results do not depend on it).
    pub workers: usize,
    /// Threads of the compiled kernels.
    pub threads: usize,
    /// The executor: the JIT, or the interpreter for checking.
    pub backend: Backend,
    /// Batch size of the forward-only evaluation executor.
    pub eval_batch: usize,
    /// Reshuffle the training set every epoch.
    pub shuffle: bool,
    /// Leave out a last, smaller training batch.
    pub drop_last: bool,
    /// Draw progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// On a non-finite loss, find the first node that produced it: the
    /// trainer keeps a copy of the parameters and optimizer state every
    /// 1,000 steps, and after a non-finite loss replays the steps since the
    /// last copy to recover the parameters the failing step saw.
    pub diagnose_non_finite: bool,
}

impl Default for TrainConfig {
    /// The lecture's setup: batch 4, SGD lr 0.001 momentum 0.9, 10 epochs,
    /// seed 0, shuffled, 2 loader workers, every core, the JIT.
    fn default() -> TrainConfig {
        TrainConfig {
            batch_size: 4,
            epochs: 10,
            optimizer: Optimizer::default(),
            label_smoothing: 0.0,
            schedule: LrSchedule::default(),
            clip_grad_norm: None,
            seed: 0,
            workers: 2,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            backend: Backend::Jit,
            eval_batch: 500,
            shuffle: true,
            drop_last: false,
            progress: true,
            diagnose_non_finite: true,
        }
    }
}

/// Where the time of a training epoch went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochTiming {
    /// The whole epoch.
    pub total: Duration,
    /// Waiting for the loader to hand over the next batch.
    pub waiting_for_data: Duration,
    /// Inside the training step (setting the batch, the compiled step,
    /// the host-side optimizer, copying a remainder batch's state).
    pub step: Duration,
}

/// Trains a classifier: a forward graph with one input `[N, ...]` and
/// logits `[N, classes]`, with cross-entropy loss.
pub struct Trainer {
    config: TrainConfig,
    forward: Graph,
    graph: Graph,
    training: Training,
    input: NodeId,
    classes: usize,
    /// Parameters and optimizer buffers shared between executors.
    leaves: Vec<NodeId>,
    step_exec: Executor,
    rem_exec: Option<Executor>,
    eval_exec: Option<Executor>,
    eval_rem: Option<Executor>,
    epoch: u64,
    steps: u64,
    /// Batches of an epoch, for schedules (known once an epoch starts).
    steps_per_epoch: u64,
    history: Vec<EpochRecord>,
    snapshot: Option<Snapshot>,
    labels_buf: Vec<f32>,
    last_timing: EpochTiming,
    /// The test set's metrics `fit` measured after its last epoch, the
    /// step count they were measured at and the set's address (see
    /// [`Trainer::fitted_test_metrics`]).
    fitted_test: Option<(u64, usize, EvalMetrics)>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.forward.name)
            .field("config", &self.config)
            .field("epoch", &self.epoch)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A trainer for `forward` with fresh parameters: PyTorch's default
    /// initialisation drawn from `config.seed`, as [`Model::init`] draws them.
    ///
    /// # Errors
    /// [`TrainError::Config`] when the model is not a single-input
    /// classifier or the configuration is invalid; autodiff and compile errors.
    pub fn new(forward: &Graph, config: TrainConfig) -> Result<Trainer, TrainError> {
        let params = Model::init(forward.clone(), config.seed).state_dict();
        Trainer::with_params(forward, config, params)
    }

    /// A trainer for `forward` starting from `params` (state_dict keys).
    ///
    /// # Errors
    /// As [`Trainer::new`], and [`TrainError::Checkpoint`] when a parameter
    /// is missing or has the wrong shape.
    pub fn with_params(
        forward: &Graph,
        config: TrainConfig,
        params: Vec<(String, Tensor)>,
    ) -> Result<Trainer, TrainError> {
        if config.batch_size == 0 || config.eval_batch == 0 {
            return Err(TrainError::Config("the batch sizes must be at least 1".into()));
        }
        if config.threads == 0 {
            return Err(TrainError::Config("threads must be at least 1".into()));
        }
        let [input] = forward.inputs[..] else {
            return Err(TrainError::Config(format!(
                "the trainer takes models with one input; {} has {}",
                forward.name,
                forward.inputs.len()
            )));
        };
        let Some(&out) = forward.outputs.first() else {
            return Err(TrainError::Config(format!("model {} has no output", forward.name)));
        };
        let out_shape = &forward.node(out).shape;
        if out_shape.rank() != 2 || out_shape.0[0].as_fixed().is_some() {
            return Err(TrainError::Config(format!(
                "the trainer trains classifiers: model {}'s output must be logits [N, classes], not {out_shape}",
                forward.name
            )));
        }
        let classes = out_shape.at_batch(1)[1];
        if classes == 0 {
            return Err(TrainError::Config(format!("model {} outputs no logits", forward.name)));
        }
        if !(0.0..=1.0).contains(&config.label_smoothing) {
            return Err(TrainError::Config(format!(
                "label smoothing must be in [0, 1], got {}",
                config.label_smoothing
            )));
        }
        let loss = Loss::cross_entropy(config.label_smoothing);
        if let Some(c) = config.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(TrainError::Config(format!("the gradient-norm clip must be a positive number, got {c}")));
        }
        let update = Update { optim: config.optimizer.compiled(), clip_grad_norm: config.clip_grad_norm };
        let graph = autodiff::derive_training_with(Mode::Train, forward, loss, update)?;
        let training = graph.training.clone().ok_or_else(|| TrainError::Config("no training graph".into()))?;
        let mut leaves = graph.params.clone();
        leaves.extend(training.optim_state.iter().copied());
        let mut step_exec = Executor::new(graph.clone(), config.batch_size, config.backend, config.threads)?;
        let params = match_params(Path::new("<initial parameters>"), forward, params)?;
        for (&p, (_, t)) in graph.params.iter().zip(&params) {
            step_exec.set(p, &t.data)?;
        }
        for &s in &training.optim_state {
            let n = graph.node(s).shape.numel_at(config.batch_size);
            step_exec.set(s, &vec![0.0; n])?;
        }
        Ok(Trainer {
            config,
            forward: forward.clone(),
            graph,
            training,
            input,
            classes,
            leaves,
            step_exec,
            rem_exec: None,
            eval_exec: None,
            eval_rem: None,
            epoch: 0,
            steps: 0,
            steps_per_epoch: 0,
            history: Vec::new(),
            snapshot: None,
            labels_buf: Vec::new(),
            last_timing: EpochTiming::default(),
            fitted_test: None,
        })
    }

    /// A trainer for `model`'s graph starting from its parameters.
    ///
    /// # Errors
    /// As [`Trainer::new`].
    pub fn from_model(model: &Model, config: TrainConfig) -> Result<Trainer, TrainError> {
        Trainer::with_params(model.graph(), config, model.state_dict())
    }

    /// The trained network as a [`Model`] (forward graph and current parameters).
    ///
    /// # Errors
    /// An executor error (none expected).
    pub fn to_model(&self) -> Result<Model, TrainError> {
        let mut model = Model::new(self.forward.clone());
        let dict = self.params()?.into_iter().collect();
        model.load_state_dict(dict).map_err(|e| TrainError::Config(e.to_string()))?;
        Ok(model)
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Changes the number of epoch [`Trainer::fit`] runs to.
    pub fn set_epochs(&mut self, epochs: u64) {
        self.config.epochs = epochs;
    }

    /// The forward graph.
    pub fn forward(&self) -> &Graph {
        &self.forward
    }

    /// The training graph (forward, loss, backward, update).
    pub fn training_graph(&self) -> &Graph {
        &self.graph
    }

    /// Epochs completed.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Training steps completed.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Where the time of the last training epoch went.
    pub fn last_epoch_timing(&self) -> EpochTiming {
        self.last_timing
    }

    /// One record per completed epoch (including those of a resumed run).
    pub fn history(&self) -> &[EpochRecord] {
        &self.history
    }

    /// The current parameters in state_dict order.
    ///
    /// # Errors
    /// An executor error (none expected).
    pub fn params(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        self.graph
            .params
            .iter()
            .map(|&p| {
                let node = self.graph.node(p);
                Ok((node.name.clone(), Tensor { shape: node.shape.at_batch(1), data: self.step_exec.get(p)?.to_vec() }))
            })
            .collect()
    }

    /// Replaces the parameters (state_dict keys; all of them, shapes checked).
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] for a missing or misshapen parameter.
    pub fn set_params(&mut self, params: Vec<(String, Tensor)>) -> Result<(), TrainError> {
        let params = match_params(Path::new("<parameters>"), &self.forward, params)?;
        self.fitted_test = None;
        for (&p, (_, t)) in self.graph.params.iter().zip(&params) {
            self.step_exec.set(p, &t.data)?;
        }
        Ok(())
    }

    /// The metrics [`Trainer::fit`] measured on its test set after its last
    /// epoch, while the parameters are still those it measured (no step,
    /// [`Trainer::set_params`] or [`Trainer::restore`] since): what
    /// [`Trainer::evaluate`] on that test set would give again, so a caller
    /// reporting the final accuracy need not run the test set twice.
    pub fn fitted_test_metrics(&self) -> Option<&EvalMetrics> {
        self.fitted_test.as_ref().filter(|(steps, _, _)| *steps == self.steps).map(|(_, _, m)| m)
    }

    /// The metrics of `test` with `transforms` for evaluation: those
    /// [`Trainer::fitted_test_metrics`] keeps when `test` is the set `fit`
    /// evaluated (the same `Arc`), else a new [`Trainer::evaluate`]; for
    /// reporting the final accuracy after `fit` without a second pass.
    ///
    /// # Errors
    /// As [`Trainer::evaluate`].
    pub fn evaluate_after_fit(
        &mut self,
        test: Arc<dyn Dataset>,
        transforms: &Transforms,
    ) -> Result<EvalMetrics, TrainError> {
        let same_set = self.fitted_test.as_ref().is_some_and(|(_, set, _)| *set == dataset_address(&test));
        match self.fitted_test_metrics() {
            Some(m) if same_set => Ok(m.clone()),
            _ => self.evaluate(test, transforms.for_evaluation()),
        }
    }

    /// A data loader over `dataset` with this trainer's batching, seed and workers.
    ///
    /// # Errors
    /// [`TrainError::Data`] for an invalid configuration.
    pub fn loader(&self, dataset: Arc<dyn Dataset>, transforms: Transforms) -> Result<DataLoader, TrainError> {
        Ok(DataLoader::new(
            dataset,
            LoaderConfig {
                batch_size: self.config.batch_size,
                shuffle: self.config.shuffle,
                drop_last: self.config.drop_last,
                seed: self.config.seed,
                workers: self.config.workers,
                prefetch: if self.config.batch_size < 32 { 16 } else { 2 },
                transforms,
            },
        )?)
    }

    /// Trains until `config.epochs` epochs are done, evaluating on `test`
    /// after each one; `on_epoch` sees each record (to write metrics, a
    /// chart, a checkpoint) and may stop the run with an error.
    ///
    /// # Errors
    /// Data, executor and checkpoint errors; [`TrainError::NonFinite`] when
    /// the loss becomes NaN or infinite.
    pub fn fit(
        &mut self,
        train: Arc<dyn Dataset>,
        test: Option<Arc<dyn Dataset>>,
        transforms: Transforms,
        on_epoch: &mut dyn FnMut(&Trainer, &EpochRecord) -> Result<(), TrainError>,
    ) -> Result<Vec<EpochRecord>, TrainError> {
        self.check_dataset(train.as_ref())?;
        if let Some(t) = &test {
            self.check_dataset(t.as_ref())?;
        }
        let loader = self.loader(Arc::clone(&train), transforms.clone())?;
        let names = display_class_names(train.class_names());
        let mut records = Vec::new();
        while self.epoch < self.config.epochs {
            let (train_loss, images, elapsed) = self.train_epoch(&loader)?;
            let metrics = match &test {
                // The test set without augmentation.
                Some(t) => Some(self.evaluate(Arc::clone(t), transforms.for_evaluation())?),
                None => None,
            };
            self.fitted_test = test.as_ref().zip(metrics.clone()).map(|(t, m)| (self.steps, dataset_address(t), m));
            let seconds = elapsed.as_secs_f64();
            let record = EpochRecord {
                epoch: self.epoch,
                train_loss,
                test_loss: metrics.as_ref().map(|m| m.loss),
                test_accuracy: metrics.as_ref().map(|m| m.accuracy()),
                per_class_accuracy: metrics.as_ref().map(|m| m.per_class_accuracy()).unwrap_or_default(),
                class_names: names.clone(),
                seconds,
                images_per_s: images as f64 / seconds.max(1e-9),
            };
            self.history.push(record.clone());
            on_epoch(self, &record)?;
            records.push(record);
        }
        Ok(records)
    }

    fn check_dataset(&self, ds: &dyn Dataset) -> Result<(), TrainError> {
        if ds.is_empty() {
            return Err(TrainError::Config("the data set is empty".into()));
        }
        if ds.num_classes() > self.classes {
            return Err(TrainError::Config(format!(
                "the data has {} classes but model {} outputs {} logits",
                ds.num_classes(),
                self.forward.name,
                self.classes
            )));
        }
        Ok(())
    }

    /// Compiles the executor for a last, smaller batch ahead of time.
    fn prepare_remainder(&mut self, loader: &DataLoader) -> Result<(), TrainError> {
        let rem = loader.dataset().len() % self.config.batch_size;
        if rem != 0 && !self.config.drop_last && self.rem_exec.as_ref().map(Executor::batch) != Some(rem) {
            let mut e = Executor::new(self.graph.clone(), rem, self.config.backend, self.config.threads)?;
            for &l in &self.leaves {
                e.set(l, self.step_exec.get(l)?)?;
            }
            self.rem_exec = Some(e);
        }
        Ok(())
    }

    /// Runs one epoch (the next one: its shuffle is keyed by the number of
    /// epochs done). Returns the mean loss, the images seen and the time.
    ///
    /// # Errors
    /// As [`Trainer::fit`].
    pub fn train_epoch(&mut self, loader: &DataLoader) -> Result<(f64, usize, Duration), TrainError> {
        self.prepare_remainder(loader)?;
        self.steps_per_epoch = loader.num_batches() as u64;
        let total =
            if self.config.drop_last { loader.num_batches() * self.config.batch_size } else { loader.dataset().len() };
        let bar = self.progress_bar(total as u64, &format!("epoch {}/{}", self.epoch + 1, self.config.epochs));
        let start = Instant::now();
        let mut loss_sum = 0.0f64;
        let mut seen = 0usize;
        let mut last_draw = Instant::now();
        let mut timing = EpochTiming::default();
        let mut batches = loader.epoch(self.epoch);
        let mut b = 0;
        loop {
            let t0 = Instant::now();
            let Some(batch) = batches.next() else { break };
            let t1 = Instant::now();
            timing.waiting_for_data += t1 - t0;
            let batch = batch?;
            if self.config.diagnose_non_finite && b % SNAPSHOT_EVERY == 0 {
                self.take_snapshot(b)?;
            }
            let loss = self.step_batch(&batch)?;
            timing.step += t1.elapsed();
            if !loss.is_finite() {
                bar.abandon();
                drop(batches);
                return Err(self.non_finite(loss, b, loader));
            }
            b += 1;
            loss_sum += f64::from(loss) * batch.len() as f64;
            seen += batch.len();
            bar.inc(batch.len() as u64);
            if last_draw.elapsed() > Duration::from_millis(200) {
                last_draw = Instant::now();
                bar.set_message(format!("loss {:.4}", loss_sum / seen.max(1) as f64));
            }
        }
        let elapsed = start.elapsed();
        timing.total = elapsed;
        self.last_timing = timing;
        bar.finish_and_clear();
        self.epoch += 1;
        Ok((loss_sum / seen.max(1) as f64, seen, elapsed))
    }

    fn progress_bar(&self, len: u64, prefix: &str) -> ProgressBar {
        if !self.config.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(5));
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} images ({per_sec}, eta {eta}) {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_prefix(prefix.to_string());
        bar
    }

    /// The learning rate the next step uses: the optimizer's, as the
    /// schedule sets it for the run's step count (`epochs` times the
    /// batches of an epoch, known once an epoch has started).
    pub fn learning_rate(&self) -> f32 {
        let base = self.config.optimizer.lr();
        let per_epoch = self.steps_per_epoch.max(1);
        self.config.schedule.lr(base, self.steps, per_epoch, per_epoch * self.config.epochs)
    }

    /// One training step on `batch`; returns the loss.
    fn step_batch(&mut self, batch: &Batch) -> Result<f32, TrainError> {
        let n = batch.len();
        let dims = &batch.images.shape;
        let want = self.graph.node(self.input).shape.at_batch(n);
        if !batch_fits(dims, &want) {
            return Err(TrainError::Config(format!(
                "the data gives batches of shape {dims:?}, but model {} takes {want:?}",
                self.forward.name
            )));
        }
        self.labels_buf.clear();
        for (&l, &i) in batch.labels.iter().zip(&batch.indices) {
            if l >= self.classes {
                return Err(TrainError::Config(format!(
                    "sample {i} has label {l}, but model {} has {} classes",
                    self.forward.name, self.classes
                )));
            }
            self.labels_buf.push(l as f32);
        }
        let remainder = n != self.config.batch_size;
        if remainder {
            if self.rem_exec.as_ref().map(Executor::batch) != Some(n) {
                self.rem_exec = Some(Executor::new(self.graph.clone(), n, self.config.backend, self.config.threads)?);
            }
            if let Some(rem) = self.rem_exec.as_mut() {
                for &l in &self.leaves {
                    rem.set(l, self.step_exec.get(l)?)?;
                }
            }
        }
        let lr = self.learning_rate();
        let exec = match (remainder, self.rem_exec.as_mut()) {
            (true, Some(rem)) => rem,
            _ => &mut self.step_exec,
        };
        exec.set(self.input, &batch.images.data)?;
        exec.set(self.training.target, &self.labels_buf)?;
        if let Some(node) = self.training.learning_rate {
            exec.set(node, &[lr])?;
        }
        // Adam's bias corrections for its step `t`, counted from 1.
        if let (Some((step_size, bc2_sqrt)), Optim::Adam(adam)) =
            (self.training.adam_corrections, self.config.optimizer.compiled())
        {
            let (s, b) = adam.bias_corrections(lr, self.steps + 1);
            exec.set(step_size, &[s])?;
            exec.set(bc2_sqrt, &[b])?;
        }
        exec.run()?;
        let loss = exec.get(self.training.loss)?[0];
        if remainder && let Some(rem) = self.rem_exec.as_ref() {
            for &l in &self.leaves {
                self.step_exec.set(l, rem.get(l)?)?;
            }
        }
        self.steps += 1;
        Ok(loss)
    }

    /// The run's state as a checkpoint.
    ///
    /// # Errors
    /// An executor error (none expected).
    pub fn checkpoint(&self) -> Result<Checkpoint, TrainError> {
        let mut optim_state = Vec::new();
        for &s in &self.training.optim_state {
            let node = self.graph.node(s);
            optim_state.push((
                node.name.clone(),
                Tensor { shape: node.shape.at_batch(1), data: self.step_exec.get(s)?.to_vec() },
            ));
        }
        // Adam's moments are graph state (`adam_m.<key>`, `adam_v.<key>`),
        // saved above; its step count is the run's.
        Ok(Checkpoint {
            model: self.forward.name.clone(),
            params: self.params()?,
            optim_state,
            optimizer: self.config.optimizer.to_json(),
            adam_t: if matches!(self.config.optimizer, Optimizer::Adam(_)) { self.steps } else { 0 },
            epoch: self.epoch,
            step: self.steps,
            seed: self.config.seed,
            batch_size: self.config.batch_size,
            history: self.history.clone(),
            converted: Vec::new(),
        })
    }

    /// Saves [`Trainer::checkpoint`] to `path` atomically.
    ///
    /// # Errors
    /// [`TrainError::Write`].
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        self.checkpoint()?.save(path)
    }

    /// Continues from a checkpoint: parameters, optimizer state, epochs and
    /// steps done, history. With the same configuration the run goes on
    /// bit-identically to one that never stopped.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] when the file is unreadable, was written
    /// for another model or another optimizer, or lacks optimizer state.
    pub fn resume(&mut self, path: &Path) -> Result<(), TrainError> {
        let ck = Checkpoint::load(path)?;
        self.restore(ck, path)
    }

    /// As [`Trainer::resume`], from a checkpoint in memory (`path` names it in messages).
    ///
    /// # Errors
    /// As [`Trainer::resume`].
    pub fn restore(&mut self, ck: Checkpoint, path: &Path) -> Result<(), TrainError> {
        let bad = |message: String| TrainError::Checkpoint { path: path.to_path_buf(), message };
        if !ck.is_kiln_checkpoint() {
            return Err(bad("is a weights file without optimizer state, not a kiln checkpoint".into()));
        }
        let kind = ck.optimizer.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
        if kind != self.config.optimizer.kind() {
            return Err(bad(format!(
                "was written by a run with optimizer {kind}, but this run uses {}",
                self.config.optimizer.kind()
            )));
        }
        let params = match_params(path, &self.forward, ck.params)?;
        self.fitted_test = None;
        let mut state: HashMap<String, Tensor> = ck.optim_state.into_iter().collect();
        let mut take = |name: &str, want: Vec<usize>| -> Result<Tensor, TrainError> {
            let t = state.remove(name).ok_or_else(|| bad(format!("has no optimizer state `{name}`")))?;
            if t.shape != want {
                return Err(bad(format!("optimizer state `{name}` has shape {:?}, expected {want:?}", t.shape)));
            }
            Ok(t)
        };
        let mut momentum = Vec::new();
        for &s in &self.training.optim_state {
            let node = self.graph.node(s);
            momentum.push((s, take(&node.name, node.shape.at_batch(1))?));
        }
        for (&p, (_, t)) in self.graph.params.iter().zip(&params) {
            self.step_exec.set(p, &t.data)?;
        }
        for (s, t) in momentum {
            self.step_exec.set(s, &t.data)?;
        }
        self.epoch = ck.epoch;
        self.steps = ck.step;
        self.history = ck.history;
        Ok(())
    }
}

/// Whether a batch of shape `batch` feeds a model input of shape `model`:
/// the same shape, or feature rows (`(N, F)` arrays, batched as
/// `[N, F, 1, 1]`) for a feature model's `[N, F]`, the same elements.
pub(super) fn batch_fits(batch: &[usize], model: &[usize]) -> bool {
    batch == model || (model.len() == 2 && batch == [model[0], model[1], 1, 1])
}

/// Which data set an `Arc` holds, to know a set again.
fn dataset_address(set: &Arc<dyn Dataset>) -> usize {
    Arc::as_ptr(set).cast::<()>() as usize
}
