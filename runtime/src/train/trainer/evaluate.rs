//! Evaluation of the current parameters on a data set: loss, accuracy,
//! per-class accuracy and confusion matrix, on forward-only executors
//! compiled for the evaluation batch (and its remainder).

use std::sync::Arc;

use super::Trainer;
use crate::data::{DataLoader, Dataset, LoaderConfig, Transforms};
use crate::executor::Executor;
use crate::train::error::TrainError;
use crate::train::metrics::{EvalMetrics, display_class_names};

impl Trainer {
    /// Evaluates the current parameters on `dataset` (in order, at
    /// `config.eval_batch`): loss, accuracy, per-class accuracy, confusion matrix.
    ///
    /// # Errors
    /// Data and executor errors; a data set whose samples do not fit the model.
    pub fn evaluate(&mut self, dataset: Arc<dyn Dataset>, transforms: Transforms) -> Result<EvalMetrics, TrainError> {
        self.check_dataset(dataset.as_ref())?;
        let names = display_class_names(dataset.class_names());
        let mut names = names;
        names.resize_with(self.classes.max(names.len()), String::new);
        let len = dataset.len();
        let batch = self.config.eval_batch.min(len);
        let loader = DataLoader::new(
            dataset,
            LoaderConfig {
                batch_size: batch,
                workers: self.config.workers.min(2),
                transforms,
                ..LoaderConfig::default()
            },
        )?;
        let mut metrics = EvalMetrics::new(names);
        let mut loss_sum = 0.0;
        let bar = self.progress_bar(len as u64, "evaluating");
        for b in loader.epoch(0) {
            let b = b?;
            let n = b.len();
            let want = self.forward.node(self.input).shape.at_batch(n);
            if !super::batch_fits(&b.images.shape, &want) {
                return Err(TrainError::Config(format!(
                    "the data gives batches of shape {:?}, but model {} takes {want:?}",
                    b.images.shape, self.forward.name
                )));
            }
            let slot = if n == batch { &mut self.eval_exec } else { &mut self.eval_rem };
            if slot.as_ref().map(Executor::batch) != Some(n) {
                *slot = Some(Executor::new(self.forward.clone(), n, self.config.backend, self.config.threads)?);
            }
            let Some(exec) = slot.as_mut() else { continue };
            for &p in &self.forward.params {
                exec.set(p, self.step_exec.get(p)?)?;
            }
            exec.set(self.input, &b.images.data)?;
            exec.run()?;
            let logits = exec.get(self.forward.outputs[0])?;
            loss_sum += metrics.add_batch(logits, &b.labels, self.classes);
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        metrics.loss = loss_sum / metrics.total.max(1) as f64;
        metrics.class_names.truncate(metrics.confusion.len());
        Ok(metrics)
    }
}
