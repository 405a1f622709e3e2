//! Tracing a non-finite loss to its origin: copies of the training state
//! kept every `SNAPSHOT_EVERY` steps, the deterministic replay from the
//! last copy to the failing step, and the re-run of that batch through the
//! reference interpreter to name the first node with a non-finite value.

use std::collections::HashMap;

use kiln_compiler::{NodeId, Op, Tensor, interp};

use super::Trainer;
use crate::data::{Batch, DataLoader};
use crate::train::error::TrainError;

/// Steps between the copies of the training state kept to diagnose a non-finite loss.
pub(super) const SNAPSHOT_EVERY: usize = 1000;

/// The training state before batch `batch` of the current epoch.
pub(super) struct Snapshot {
    batch: usize,
    steps: u64,
    leaves: Vec<Vec<f32>>,
}

impl Trainer {
    pub(super) fn take_snapshot(&mut self, batch: usize) -> Result<(), TrainError> {
        let mut leaves = match self.snapshot.take() {
            Some(s) => s.leaves,
            None => self.leaves.iter().map(|_| Vec::new()).collect(),
        };
        for (buf, &l) in leaves.iter_mut().zip(&self.leaves) {
            buf.clear();
            buf.extend_from_slice(self.step_exec.get(l)?);
        }
        self.snapshot = Some(Snapshot { batch, steps: self.steps, leaves });
        Ok(())
    }

    /// The error for a non-finite loss at batch `failed` (0-based) of the
    /// current epoch: restores the last snapshot, replays the steps up to
    /// the failing one (the loader and the step are deterministic), and
    /// re-runs the failing batch through the interpreter on the parameters
    /// it saw to name the first node whose value is not finite. Leaves the
    /// trainer in the state before the failing step.
    pub(super) fn non_finite(&mut self, loss: f32, failed: usize, loader: &DataLoader) -> TrainError {
        let step = self.steps;
        let (node, origin) = if self.config.diagnose_non_finite {
            match self.replay_and_find(failed, loader) {
                Ok(found) => found,
                Err(e) => (None, format!("replaying the steps to find its origin failed: {e}")),
            }
        } else {
            (None, "enable diagnose_non_finite to find the node that produced it".to_string())
        };
        TrainError::NonFinite { loss, epoch: self.epoch + 1, step, batch_in_epoch: failed + 1, node, origin }
    }

    fn replay_and_find(&mut self, failed: usize, loader: &DataLoader) -> Result<(Option<String>, String), TrainError> {
        let Some(snap) = self.snapshot.take() else {
            return Ok((None, "no copy of the training state was kept".into()));
        };
        for (buf, &l) in snap.leaves.iter().zip(&self.leaves) {
            self.step_exec.set(l, buf)?;
        }
        self.steps = snap.steps;
        for (j, batch) in loader.epoch(self.epoch).enumerate() {
            if j < snap.batch {
                continue;
            }
            let batch = batch?;
            if j < failed {
                self.step_batch(&batch)?;
                continue;
            }
            let mut params = Vec::with_capacity(self.graph.params.len());
            for &p in &self.graph.params {
                params.push(self.step_exec.get(p)?.to_vec());
            }
            let labels: Vec<f32> = batch.labels.iter().map(|&l| l as f32).collect();
            self.snapshot = Some(snap);
            return Ok(self.first_non_finite(&batch, params, labels));
        }
        Ok((None, "the failing batch could not be loaded again".into()))
    }

    fn first_non_finite(&self, batch: &Batch, params: Vec<Vec<f32>>, labels: Vec<f32>) -> (Option<String>, String) {
        let n = batch.len();
        let mut feeds: HashMap<NodeId, Tensor> = HashMap::new();
        for (&p, data) in self.graph.params.iter().zip(params) {
            feeds.insert(p, Tensor { shape: self.graph.node(p).shape.at_batch(n), data });
        }
        feeds.insert(self.input, batch.images.clone());
        feeds.insert(self.training.target, Tensor { shape: vec![n], data: labels });
        let values = match interp::evaluate(&self.graph, n, &feeds) {
            Ok(v) => v,
            Err(e) => return (None, format!("re-running the batch in the interpreter failed: {e}")),
        };
        for id in self.graph.node_ids() {
            let Some(v) = values.get(id.index()) else { break };
            if let Some(k) = v.data.iter().position(|x| !x.is_finite()) {
                let node = self.graph.node(id);
                let what = match node.op {
                    Op::Input => "the input batch already holds".to_string(),
                    Op::Param { .. } => "parameter already holds".to_string(),
                    _ => {
                        let from: Vec<String> =
                            node.inputs.iter().map(|&i| format!("`{}`", self.graph.node(i).name)).collect();
                        format!("computed from {}, produced", from.join(", "))
                    }
                };
                return (
                    Some(node.name.clone()),
                    format!(
                        "the first node with a non-finite value is `{}` ({}, {:?} stage): {what} {} at element {k} \
                         (found by re-running the batch in the interpreter)",
                        node.name,
                        node.op.mnemonic(),
                        node.stage,
                        v.data[k]
                    ),
                );
            }
        }
        (None, "the interpreter computes finite values for every node on this batch".to_string())
    }
}
