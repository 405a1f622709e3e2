//! Training: the lecture's loop around one compiled training step.
//!
//! A [`Trainer`] takes a forward [`Graph`](kiln_compiler::Graph) (a `net!` model or a `.net`
//! file), derives its training graph (cross-entropy loss, backward pass and,
//! for SGD, the update as graph nodes), compiles it, and runs epochs over a
//! [`DataLoader`](crate::data::DataLoader): progress bars with images/s,
//! evaluation after each epoch (loss, accuracy, per-class accuracy, confusion
//! matrix), JSON-lines metrics, an SVG training-curve chart, atomic
//! checkpoints (safetensors holding parameters, optimizer state and the run's
//! history) and bit-identical resume. A NaN or infinite loss stops training
//! with the step and the first graph node that produced a non-finite value.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kiln_runtime::data::*;
//! use kiln_runtime::train::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let source = "struct Tiny { fc: Linear(3 * 32 * 32, 10) }
//!               fn forward(x: [N, 3, 32, 32]) -> [N, 10] { fc(x.flatten(1)) }";
//! let forward = kiln_compiler::frontend::compile_str(source)?.graph;
//! let train: Arc<dyn Dataset> = Arc::new(SyntheticImages::new(2000, 1));
//! let test: Arc<dyn Dataset> = Arc::new(SyntheticImages::new(500, 2));
//! let config = TrainConfig { batch_size: 4, epochs: 2, ..TrainConfig::default() };
//! let mut trainer = Trainer::new(&forward, config)?;
//! let transforms = Transforms::normalized(&[0.5; 3], &[0.5; 3])?;
//! let records = trainer.fit(train, Some(test), transforms, &mut |_, _| Ok(()))?;
//! if let Some(last) = records.last() {
//!     println!("test accuracy {:?}", last.test_accuracy);
//! }
//! # Ok(()) }
//! ```
//!
//! Choices worth knowing:
//! - Resume is bit-identical when the run continues with the same batch
//!   size, backend and kernel threads: the loader's order and random
//!   transforms are keyed by (seed, epoch, sample), never by the number of
//!   loader workers, and checkpoints are taken at epoch boundaries.
//! - A non-finite loss is traced without slowing every step: the trainer
//!   keeps a copy of the parameters and optimizer state every 1,000 steps;
//!   on a NaN or Inf loss it restores the copy, replays the steps since (the
//!   loader and the compiled step are deterministic), and re-runs the
//!   failing batch through the reference interpreter on the parameters that
//!   step saw to find the first node with a non-finite value.
//! - SGD (momentum, nesterov, weight decay) is compiled into the step: the
//!   update and the momentum buffers are graph nodes and leaves.
//! - Adam runs on the host after the compiled step: the graph is derived
//!   with a plain SGD update of learning rate 0 (which leaves every
//!   parameter as it is), the step's parameter gradients are read back and
//!   Adam (PyTorch's formulas, L2 weight decay) writes the new parameters
//!   in. The IR has no Adam op and the JIT is another component's, so this
//!   costs one host pass over the parameters per step instead of a fused
//!   kernel; moving Adam into the graph later changes no API.
//! - The compiled step has a fixed batch: a smaller last batch runs on a
//!   second executor compiled for its size (ahead of the epoch's timer),
//!   with parameters and optimizer
//!   state copied in and out (PyTorch's `drop_last=False`).

mod chart;
mod checkpoint;
mod error;
mod metrics;
mod optim;
mod schedule;
mod source;
mod trainer;

pub use chart::{render_chart, write_chart};
pub use checkpoint::{Checkpoint, load_weights, load_weights_converting, write_atomic};
pub use error::TrainError;
pub use metrics::{EpochRecord, EvalMetrics, LECTURE_CLASSES, display_class_names};
pub use optim::{Adam, Optimizer};
pub use schedule::{LrSchedule, Schedule};
pub use source::{SYNTHETIC_SIZES, TrainData, lecture_transforms, open_training_data, open_training_data_for};
pub use trainer::{EpochTiming, OverheadReport, TrainConfig, Trainer};
