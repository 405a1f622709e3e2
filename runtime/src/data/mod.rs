//! Data loading for training: data sets (CIFAR-10 binary batches, image
//! folders, `.npy` arrays, a generated set), per-sample transforms, and a
//! batching [`DataLoader`] with seeded shuffling and background workers.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kiln_runtime::data::*;
//!
//! # fn main() -> Result<(), DataError> {
//! let train = Arc::new(Cifar10::open("/data/cifar", Split::Train)?);
//! // or, whatever the layout: let (train, _) = open_dir("/data/cifar", Split::Train)?;
//! let loader = DataLoader::new(train, LoaderConfig {
//!     batch_size: 128,
//!     shuffle: true,
//!     seed: 42,
//!     workers: 2,
//!     transforms: Transforms::augmented(32, 4, &CIFAR10_MEAN, &CIFAR10_STD)?,
//!     ..LoaderConfig::default()
//! })?;
//! for epoch in 0..10 {
//!     for batch in loader.epoch(epoch) {
//!         let batch = batch?; // batch.images: [128, 3, 32, 32], batch.labels
//!     }
//! }
//! # Ok(()) }
//! ```

mod cifar;
mod dataset;
mod detect;
mod error;
mod image_folder;
mod loader;
mod npy;
mod rng;
mod sample;
mod synthetic;
mod transforms;

pub use cifar::{CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, Cifar10, Split};
pub use dataset::{Dataset, Subset};
pub use detect::{Layout, open_dir, open_dir_as};
pub use error::DataError;
pub use image_folder::{ColorMode, IMAGE_EXTENSIONS, ImageFolder, ImageFolderOptions, decode as decode_image};
pub use loader::{Batch, DataLoader, Epoch, LoaderConfig};
pub use npy::NpyDataset;
pub use rng::{SampleRng, permutation};
pub use sample::{Image, Item, Pixels, PixelsMut, Sample};
pub use synthetic::SyntheticImages;
pub use transforms::{Normalize, RandomCrop, RandomHorizontalFlip, ToTensor, Transform, TransformError, Transforms};
