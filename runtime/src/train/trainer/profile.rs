//! Profiling the training loop: epochs with the real loader alternated with
//! as many bare compiled steps on pre-made batches, and the report of what
//! the loop around the step costs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{EpochTiming, Trainer};
use crate::data::{Batch, Dataset, Transforms};
use crate::train::error::TrainError;

/// What [`Trainer::profile_overhead`] measured: whole epochs with the real
/// loader and as many bare steps on pre-made batches, alternated.
#[derive(Clone, Debug)]
pub struct OverheadReport {
    /// Steps in an epoch.
    pub steps: usize,
    /// Images in an epoch.
    pub images: usize,
    /// Each epoch with the real loader, transforms, metrics and progress.
    pub epochs: Vec<EpochTiming>,
    /// Each run of the same number of bare steps (set input, set labels,
    /// run, read the loss) on batches made beforehand.
    pub bare: Vec<Duration>,
}

impl OverheadReport {
    /// The loop's share of an epoch, `(epoch - bare) / epoch`, from the
    /// fastest epoch and the fastest bare run (the least disturbed by
    /// anything else running on the machine).
    pub fn overhead(&self) -> f64 {
        let e = self.epochs.iter().map(|t| t.total).min().unwrap_or_default().as_secs_f64();
        let b = self.bare.iter().min().copied().unwrap_or_default().as_secs_f64();
        if e == 0.0 { 0.0 } else { (e - b) / e }
    }
}

impl std::fmt::Display for OverheadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = |d: Duration| self.images as f64 / d.as_secs_f64().max(1e-9);
        writeln!(f, "{} steps, {} images per epoch", self.steps, self.images)?;
        for (i, (e, b)) in self.epochs.iter().zip(&self.bare).enumerate() {
            writeln!(
                f,
                "round {}: bare steps {:.3} s ({:.0} images/s) | epoch with loader {:.3} s ({:.0} images/s): \
                 in the step {:.3} s, waiting for data {:.3} s, rest of the loop {:.3} s",
                i + 1,
                b.as_secs_f64(),
                per(*b),
                e.total.as_secs_f64(),
                per(e.total),
                e.step.as_secs_f64(),
                e.waiting_for_data.as_secs_f64(),
                (e.total.saturating_sub(e.step + e.waiting_for_data)).as_secs_f64()
            )?;
        }
        write!(f, "loop overhead (fastest epoch vs fastest bare run): {:.2} % of the epoch", 100.0 * self.overhead())
    }
}

impl Trainer {
    /// Measures what the loop around the compiled step costs: `rounds`
    /// times, the epoch's number of bare steps (set input, set labels, run,
    /// read the loss) on batches made beforehand, then one epoch over
    /// `dataset` with the real loader, transforms and progress. Alternating
    /// keeps slow drifts of the machine out of the comparison. Trains the
    /// model while doing so.
    ///
    /// # Errors
    /// As [`Trainer::fit`].
    pub fn profile_overhead(
        &mut self,
        dataset: Arc<dyn Dataset>,
        transforms: Transforms,
        rounds: usize,
    ) -> Result<OverheadReport, TrainError> {
        self.check_dataset(dataset.as_ref())?;
        // Its bare steps train without counting steps.
        self.fitted_test = None;
        let loader = self.loader(dataset, transforms)?;
        self.prepare_remainder(&loader)?;
        // Pre-made full batches, reused in turn: few enough (16) to stay in
        // the last-level cache, so the bare steps are as fast as they get.
        let mut premade: Vec<Batch> = Vec::new();
        for b in loader.epoch(u64::MAX) {
            let b = b?;
            if b.len() == self.config.batch_size {
                premade.push(b);
            }
            if premade.len() == 16 {
                break;
            }
        }
        if premade.is_empty() {
            return Err(TrainError::Config("the data set is smaller than one batch".into()));
        }
        let steps = loader.num_batches();
        let bare = |t: &mut Trainer| -> Result<Duration, TrainError> {
            let start = Instant::now();
            for s in 0..steps {
                let b = &premade[s % premade.len()];
                t.step_exec.set(t.input, &b.images.data)?;
                t.labels_buf.clear();
                t.labels_buf.extend(b.labels.iter().map(|&l| l as f32));
                t.step_exec.set(t.training.target, &t.labels_buf)?;
                t.step_exec.run()?;
                std::hint::black_box(t.step_exec.get(t.training.loss)?[0]);
            }
            Ok(start.elapsed())
        };
        // Warm up caches and the thread pool.
        for b in premade.iter().take(8) {
            self.step_batch(b)?;
        }
        let mut report = OverheadReport { steps, images: 0, epochs: Vec::new(), bare: Vec::new() };
        for _ in 0..rounds.max(1) {
            report.bare.push(bare(self)?);
            let (_, images, _) = self.train_epoch(&loader)?;
            report.images = images;
            report.epochs.push(self.last_timing);
        }
        Ok(report)
    }
}
