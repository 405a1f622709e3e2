//! Opening a data folder whatever its layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cifar::{Cifar10, Split};
use super::dataset::Dataset;
use super::error::DataError;
use super::image_folder::{ColorMode, ImageFolder, ImageFolderOptions, decode};
use super::npy::NpyDataset;

/// Preload an image folder when its decoded bytes would take at most this.
const PRELOAD_LIMIT: usize = 2 << 30;

/// Which reader [`open_dir`] chose.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// CIFAR-10 binary batches.
    CifarBinary,
    /// `<split>/<class>/<image>` folders.
    ImageFolder,
    /// A pair of `.npy` files.
    Npy,
}

/// Opens split `split` of the data in `dir`, recognising, in this order:
///
/// 1. CIFAR-10 binary batches: `dir/cifar-10-batches-bin/` or the batch
///    files right in `dir` ([`Cifar10`]);
/// 2. image folders: `dir/<split>/<class>/*.png|jpg` where `<split>` is
///    `train` or `test` (`val` is taken for `test` too) ([`ImageFolder`],
///    decoded into memory up front when that takes at most 2 GiB);
/// 3. `.npy` pairs: `<split>_images.npy` + `<split>_labels.npy`,
///    `x_<split>.npy` + `y_<split>.npy`, or `<split>_x.npy` + `<split>_y.npy`
///    ([`NpyDataset`]).
///
/// # Errors
/// [`DataError::NotFound`] listing what was looked for when nothing
/// matches; otherwise whatever the chosen reader reports.
pub fn open_dir(dir: impl AsRef<Path>, split: Split) -> Result<(Arc<dyn Dataset>, Layout), DataError> {
    open_dir_as(dir, split, ColorMode::Rgb)
}

/// [`open_dir`], decoding image folders to `color` (grey for a model with
/// one input channel, as torchvision's `Grayscale`). CIFAR-10 is always RGB
/// and `.npy` arrays keep the channels they hold.
///
/// # Errors
/// As [`open_dir`].
pub fn open_dir_as(
    dir: impl AsRef<Path>,
    split: Split,
    color: ColorMode,
) -> Result<(Arc<dyn Dataset>, Layout), DataError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(DataError::NotFound { path: dir.to_path_buf(), what: "expected a data folder".into() });
    }
    let first_cifar = split.cifar_file_names()[0];
    if dir.join("cifar-10-batches-bin").is_dir() || dir.join(first_cifar).is_file() {
        return Ok((Arc::new(Cifar10::open(dir, split)?), Layout::CifarBinary));
    }
    let names: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["test", "val"],
    };
    if let Some(root) = names.iter().map(|n| dir.join(n)).find(|p| p.is_dir()) {
        let folder = ImageFolder::open_with(&root, ImageFolderOptions { color, preload: false })?;
        let preload = match folder.samples().first() {
            Some((path, _)) => {
                let im = decode(path, color)?;
                im.pixels().len().saturating_mul(folder.len()) <= PRELOAD_LIMIT
            }
            None => false,
        };
        let folder = if preload { folder.preload()? } else { folder };
        return Ok((Arc::new(folder), Layout::ImageFolder));
    }
    let s = split.name();
    let pairs = [
        (format!("{s}_images.npy"), format!("{s}_labels.npy")),
        (format!("x_{s}.npy"), format!("y_{s}.npy")),
        (format!("{s}_x.npy"), format!("{s}_y.npy")),
    ];
    for (x, y) in &pairs {
        let (x, y) = (dir.join(x), dir.join(y));
        if x.is_file() && y.is_file() {
            return Ok((Arc::new(NpyDataset::open(&x, &y)?), Layout::Npy));
        }
    }
    let looked: Vec<String> = [
        "cifar-10-batches-bin/".to_string(),
        first_cifar.to_string(),
        names.iter().map(|n| format!("{n}/<class>/")).collect::<Vec<_>>().join(", "),
    ]
    .into_iter()
    .chain(pairs.iter().map(|(x, y)| format!("{x} + {y}")))
    .collect();
    Err(DataError::NotFound {
        path: PathBuf::from(dir),
        what: format!("no {s} data; looked for {}", looked.join(", ")),
    })
}
