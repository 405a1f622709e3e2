//! Where training data comes from: a data folder, or the built-in generated set.

use std::path::Path;
use std::sync::Arc;

use kiln_compiler::Graph;

use super::error::TrainError;
use crate::data::{ColorMode, DataError, Dataset, Layout, Split, SyntheticImages, Transforms, open_dir_as};

/// A training set, an optional test set, and a sentence saying what they are.
#[derive(Debug)]
pub struct TrainData {
    /// The training set.
    pub train: Arc<dyn Dataset>,
    /// The test set, when there is one.
    pub test: Option<Arc<dyn Dataset>>,
    /// What was loaded, for the user (`"CIFAR-10 binary in /data: 50000 train, 10000 test images"`).
    pub description: String,
}

/// Default sizes of the generated set used without a data folder.
pub const SYNTHETIC_SIZES: (usize, usize) = (5000, 1000);

/// Opens the training and test splits of `dir` (any layout
/// [`open_dir`] knows; a missing test split is not an error), or without
/// `dir` the built-in generated 10-class image set of `synthetic` (train,
/// test) sizes.
///
/// # Errors
/// [`TrainError::Data`] when the folder has no training data or a file is bad.
pub fn open_training_data(dir: Option<&Path>, synthetic: (usize, usize)) -> Result<TrainData, TrainError> {
    open_training_data_as(dir, synthetic, ColorMode::Rgb)
}

/// [`open_training_data`] for `forward`'s input: image folders decode to
/// grey for a model taking one channel, to RGB otherwise.
///
/// # Errors
/// As [`open_training_data`].
pub fn open_training_data_for(
    forward: &Graph,
    dir: Option<&Path>,
    synthetic: (usize, usize),
) -> Result<TrainData, TrainError> {
    let channels = forward.inputs.first().map(|&i| forward.node(i).shape.at_batch(1)).and_then(|s| s.get(1).copied());
    let color = if channels == Some(1) { ColorMode::Gray } else { ColorMode::Rgb };
    open_training_data_as(dir, synthetic, color)
}

fn open_training_data_as(
    dir: Option<&Path>,
    synthetic: (usize, usize),
    color: ColorMode,
) -> Result<TrainData, TrainError> {
    let Some(dir) = dir else {
        let train: Arc<dyn Dataset> = Arc::new(SyntheticImages::new(synthetic.0, 1));
        let test: Arc<dyn Dataset> = Arc::new(SyntheticImages::new(synthetic.1, 2));
        return Ok(TrainData {
            train,
            test: Some(test),
            description: format!(
                "no --data given: using kiln's built-in generated 10-class image set \
                 ({} train, {} test images, 32x32 RGB stripes), not real data",
                synthetic.0, synthetic.1
            ),
        });
    };
    let (train, layout) = open_dir_as(dir, Split::Train, color)?;
    let test = match open_dir_as(dir, Split::Test, color) {
        Ok((t, _)) => Some(t),
        Err(DataError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let grey = if color == ColorMode::Gray && layout == Layout::ImageFolder { " (decoded to grey)" } else { "" };
    let description = format!(
        "{layout:?} data in {}{grey}: {} train images, {}",
        dir.display(),
        train.len(),
        match &test {
            Some(t) => format!("{} test images", t.len()),
            None => "no test split (no evaluation)".into(),
        }
    );
    Ok(TrainData { train, test, description })
}

/// The lecture's transforms: `ToTensor`, then `Normalize(0.5, 0.5)` on
/// every channel of the model's input `[N, C, H, W]`.
///
/// # Errors
/// [`TrainError::Config`] when the model's input is not `[N, C, H, W]`.
pub fn lecture_transforms(forward: &Graph) -> Result<Transforms, TrainError> {
    let channels = forward
        .inputs
        .first()
        .map(|&i| forward.node(i).shape.at_batch(1))
        .filter(|s| s.len() == 4)
        .map(|s| s[1])
        .ok_or_else(|| TrainError::Config(format!("model {} does not take images [N, C, H, W]", forward.name)))?;
    Ok(Transforms::normalized(&vec![0.5; channels], &vec![0.5; channels])?)
}
