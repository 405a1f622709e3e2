//! Batching, seeded shuffling and background loading.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use kiln_compiler::Tensor;

use super::dataset::Dataset;
use super::error::DataError;
use super::rng::{SampleRng, permutation};
use super::sample::Item;
use super::transforms::{Staged, Transforms};

/// A batch of samples.
#[derive(Clone, PartialEq, Debug)]
pub struct Batch {
    /// The images, `[B, C, H, W]` `f32` (or `[B, ...]` of whatever shape the
    /// transforms leave).
    pub images: Tensor,
    /// The class index of each sample.
    pub labels: Vec<usize>,
    /// The index in the data set of each sample.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch is empty (never, for a loader's batch).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels as a `[B]` tensor of class indices.
    pub fn labels_tensor(&self) -> Tensor {
        Tensor { shape: vec![self.labels.len()], data: self.labels.iter().map(|&l| l as f32).collect() }
    }

    /// The labels as a `[B, num_classes]` one-hot tensor; a label not below
    /// `num_classes` gives an all-zero row.
    pub fn one_hot(&self, num_classes: usize) -> Tensor {
        let mut t = Tensor::zeros(&[self.labels.len(), num_classes]);
        for (row, &l) in self.labels.iter().enumerate() {
            if l < num_classes {
                t.data[row * num_classes + l] = 1.0;
            }
        }
        t
    }
}

/// How a [`DataLoader`] batches, orders and loads.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Samples per batch (at least 1).
    pub batch_size: usize,
    /// Visit the samples in a new random order each epoch (from `seed` and
    /// the epoch number); otherwise in index order.
    pub shuffle: bool,
    /// Leave out the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Seeds the shuffle and the random transforms.
    pub seed: u64,
    /// Background threads that load batches while the caller computes; 0
    /// loads each batch when it is asked for, on the caller's thread. The
    /// batches are the same whatever the number.
    pub workers: usize,
    /// Finished batches each worker may hold ahead of the caller (at least
    /// 1); memory is about `workers * (prefetch + 1)` batches.
    pub prefetch: usize,
    /// Applied to each sample, in order. Whatever is still an image at the
    /// end is batched as [`ToTensor`](super::ToTensor) would make it.
    pub transforms: Transforms,
}

impl Default for LoaderConfig {
    /// Batches of 64 in index order, seed 0, no workers, prefetch 2, no
    /// transforms.
    fn default() -> LoaderConfig {
        LoaderConfig {
            batch_size: 64,
            shuffle: false,
            drop_last: false,
            seed: 0,
            workers: 0,
            prefetch: 2,
            transforms: Transforms::new(),
        }
    }
}

/// Hands out a data set in batches, epoch after epoch, like PyTorch's
/// `DataLoader`.
///
/// Epoch `e` is deterministic: its order is a permutation drawn from
/// `(seed, e)`, and each sample's random transforms draw from a stream keyed
/// by `(seed, e, sample index)`, so the batches are identical for any
/// number of workers.
#[derive(Clone)]
pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    config: LoaderConfig,
}

impl std::fmt::Debug for DataLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("len", &self.dataset.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DataLoader {
    /// A loader of `dataset` configured by `config`.
    ///
    /// # Errors
    /// [`DataError::Config`] when `batch_size` or `prefetch` is 0.
    pub fn new(dataset: Arc<dyn Dataset>, config: LoaderConfig) -> Result<DataLoader, DataError> {
        if config.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        if config.prefetch == 0 {
            return Err(DataError::Config("prefetch must be at least 1".into()));
        }
        Ok(DataLoader { dataset, config })
    }

    /// The data set.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size);
        if self.config.drop_last { n / b } else { n.div_ceil(b) }
    }

    /// The order samples are visited in `epoch` (all of them, including any
    /// that `drop_last` leaves out).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        if self.config.shuffle { permutation(n, self.config.seed, epoch) } else { (0..n).collect() }
    }

    /// The batches of `epoch`, in order. With workers, loading starts now in
    /// the background; dropping the iterator stops and joins the workers.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let job = Arc::new(Job {
            dataset: Arc::clone(&self.dataset),
            order: self.order(epoch),
            batch_size: self.config.batch_size,
            num_batches: self.num_batches(),
            seed: self.config.seed,
            epoch,
            transforms: self.config.transforms.clone(),
            stop: AtomicBool::new(false),
        });
        let mut it = Epoch { job, next: 0, finished: false, workers: Vec::new() };
        let want = self.config.workers.min(it.job.num_batches);
        for w in 0..want {
            let (tx, rx) = sync_channel(self.config.prefetch);
            let job = Arc::clone(&it.job);
            let stride = want;
            let spawned =
                std::thread::Builder::new().name(format!("kiln-data-{w}")).spawn(move || worker(job, w, stride, tx));
            match spawned {
                Ok(handle) => it.workers.push(Worker { rx, handle: Some(handle) }),
                Err(_) => {
                    // No thread to be had: stop the ones started and load
                    // inline, which gives the same batches.
                    it.shutdown();
                    // The stopped workers are joined; let inline loading run.
                    it.job.stop.store(false, Ordering::Relaxed);
                    break;
                }
            }
        }
        it
    }
}

/// What every worker of one epoch shares.
struct Job {
    dataset: Arc<dyn Dataset>,
    order: Vec<usize>,
    batch_size: usize,
    num_batches: usize,
    seed: u64,
    epoch: u64,
    transforms: Transforms,
    stop: AtomicBool,
}

impl Job {
    /// Loads, transforms and stacks batch `b`. `None` when told to stop.
    fn batch(&self, b: usize) -> Option<Result<Batch, DataError>> {
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let indices = &self.order[start..end];
        let mut labels = Vec::with_capacity(indices.len());
        let mut data: Vec<f32> = Vec::new();
        let mut sample_shape: Vec<usize> = Vec::new();
        for (k, &index) in indices.iter().enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let (staged, label) = match self.sample(index) {
                Ok(x) => x,
                Err(e) => return Some(Err(e)),
            };
            let shape = match &staged {
                Staged::Image(im, _) => vec![im.channels(), im.height(), im.width()],
                Staged::Tensor(t) => t.shape.clone(),
            };
            if k == 0 {
                let per: usize = shape.iter().product();
                data = vec![0.0; per * indices.len()];
                sample_shape = shape;
            } else if shape != sample_shape {
                return Some(Err(DataError::BatchShape {
                    index,
                    source_desc: self.dataset.describe(index),
                    found: shape,
                    expected: sample_shape,
                }));
            }
            let per = data.len() / indices.len();
            let out = &mut data[k * per..(k + 1) * per];
            let transform_error = |transform: String, message: String| DataError::Transform {
                transform,
                index,
                source_desc: self.dataset.describe(index),
                message,
            };
            match staged {
                // Straight into the slot: a per-sample tensor copied into the
                // batch costs more than the transforms (a copy whose source
                // and destination sit a few bytes apart modulo 4 KiB runs ~30x
                // slower than an aligned one on this machine).
                Staged::Image(im, rest) => {
                    im.write_chw(out);
                    for t in rest {
                        if let Err(e) = t.apply_in_place(&sample_shape, out) {
                            return Some(Err(transform_error(t.name(), e.0)));
                        }
                    }
                }
                Staged::Tensor(t) if t.data.len() == per => out.copy_from_slice(&t.data),
                Staged::Tensor(t) => {
                    return Some(Err(transform_error(
                        "(the pipeline's last step)".into(),
                        format!(
                            "returned a tensor of shape {:?} holding {} values instead of {per}",
                            t.shape,
                            t.data.len()
                        ),
                    )));
                }
            }
            labels.push(label);
        }
        let mut shape = vec![indices.len()];
        shape.extend_from_slice(&sample_shape);
        Some(Ok(Batch { images: Tensor { shape, data }, labels, indices: indices.to_vec() }))
    }

    /// One sample through the transforms that need their own storage, with
    /// its label.
    fn sample(&self, index: usize) -> Result<(Staged<'_>, usize), DataError> {
        let sample = self.dataset.get(index)?;
        let mut rng = SampleRng::for_sample(self.seed, self.epoch, index as u64);
        let staged = self.transforms.stage(Item::Image(sample.image), &mut rng).map_err(|(transform, e)| {
            DataError::Transform { transform, index, source_desc: self.dataset.describe(index), message: e.0 }
        })?;
        Ok((staged, sample.label))
    }
}

fn worker(job: Arc<Job>, first: usize, stride: usize, tx: SyncSender<Result<Batch, DataError>>) {
    let mut b = first;
    while b < job.num_batches {
        let Some(result) = job.batch(b) else { return };
        if tx.send(result).is_err() {
            return; // the iterator was dropped
        }
        b += stride;
    }
}

struct Worker {
    rx: Receiver<Result<Batch, DataError>>,
    handle: Option<JoinHandle<()>>,
}

/// The batches of one epoch, in order; made by [`DataLoader::epoch`].
///
/// Yields `Err` for a batch that could not be made (a corrupt image, say)
/// and goes on with the next; stops after reporting a panicked worker.
pub struct Epoch {
    job: Arc<Job>,
    next: usize,
    finished: bool,
    workers: Vec<Worker>,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch")
            .field("epoch", &self.job.epoch)
            .field("next", &self.next)
            .field("num_batches", &self.job.num_batches)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Epoch {
    /// The epoch number.
    pub fn epoch(&self) -> u64 {
        self.job.epoch
    }

    /// Batches not yet handed out.
    pub fn remaining(&self) -> usize {
        if self.finished { 0 } else { self.job.num_batches - self.next }
    }

    /// Stops and joins the workers.
    fn shutdown(&mut self) {
        self.job.stop.store(true, Ordering::Relaxed);
        let workers = std::mem::take(&mut self.workers);
        let mut handles = Vec::with_capacity(workers.len());
        for w in workers {
            drop(w.rx); // unblocks a worker waiting to send
            handles.push(w.handle);
        }
        for h in handles.into_iter().flatten() {
            let _ = h.join();
        }
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished || self.next >= self.job.num_batches {
            return None;
        }
        let b = self.next;
        self.next += 1;
        if self.workers.is_empty() {
            return self.job.batch(b);
        }
        let w = b % self.workers.len();
        match self.workers[w].rx.recv() {
            Ok(result) => Some(result),
            Err(_) => {
                // The sender is gone before its last batch: the worker died.
                self.finished = true;
                self.shutdown();
                Some(Err(DataError::WorkerPanicked { worker: w, batch: b }))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining();
        (n.min(1), Some(n))
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.shutdown();
    }
}
