//! CIFAR-10 in its official binary layout (`cifar-10-batches-bin/`).

use std::path::{Path, PathBuf};

use super::dataset::{Dataset, check_index};
use super::error::DataError;
use super::sample::{Image, Sample};

/// Which part of a data set to load.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Split {
    /// The training set (for CIFAR-10, `data_batch_1.bin` to
    /// `data_batch_5.bin`: 50,000 images).
    Train,
    /// The test set (for CIFAR-10, `test_batch.bin`: 10,000 images).
    Test,
}

impl Split {
    /// `"train"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// The CIFAR-10 binary file names of the split, in load order.
    pub fn cifar_file_names(self) -> &'static [&'static str] {
        match self {
            Split::Train => {
                &["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
            }
            Split::Test => &["test_batch.bin"],
        }
    }
}

/// The CIFAR-10 class names, in label order (what `batches.meta.txt` holds).
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Per-channel mean of the CIFAR-10 training images (RGB, in `[0, 1]`), for
/// [`Normalize`](super::Normalize).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];

/// Per-channel standard deviation of the CIFAR-10 training images (RGB, in
/// `[0, 1]`), for [`Normalize`](super::Normalize).
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// The CIFAR-10 binary format, held in memory as it is on disk (3,072 bytes
/// an image), which is 150 MB for the training set.
///
/// Each record of a `.bin` file is 3,073 bytes: a label byte (0 to 9), then
/// 1,024 red, 1,024 green and 1,024 blue bytes, each a row-major 32x32 plane.
/// Samples come out as 32x32x3 (HWC) byte images.
#[derive(Clone)]
pub struct Cifar10 {
    /// `n * 3072` bytes, CHW per image, as in the files.
    pixels: Vec<u8>,
    labels: Vec<u8>,
    classes: Vec<String>,
    /// Each file and the index of its first record.
    files: Vec<(PathBuf, usize)>,
}

impl std::fmt::Debug for Cifar10 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cifar10").field("len", &self.labels.len()).field("files", &self.files).finish_non_exhaustive()
    }
}

impl Cifar10 {
    /// Image side in pixels.
    pub const SIDE: usize = 32;
    /// Bytes of one image.
    pub const IMAGE_LEN: usize = 3 * 32 * 32;
    /// Bytes of one record: the label byte and the image.
    pub const RECORD_LEN: usize = 1 + Self::IMAGE_LEN;

    /// Loads a split from `dir`, which is either the `cifar-10-batches-bin`
    /// folder or the folder that holds it. Class names come from
    /// `batches.meta.txt` when it is there and are [`CIFAR10_CLASSES`]
    /// otherwise.
    ///
    /// # Errors
    /// A missing folder or batch file; a file that is not a whole number of
    /// records ([`DataError::CifarTruncated`]); a label byte above 9
    /// ([`DataError::CifarLabel`]); an empty file; a `batches.meta.txt` that
    /// does not list 10 names.
    pub fn open(dir: impl AsRef<Path>, split: Split) -> Result<Cifar10, DataError> {
        let dir = dir.as_ref();
        let nested = dir.join("cifar-10-batches-bin");
        let dir = if nested.is_dir() { nested } else { dir.to_path_buf() };
        if !dir.is_dir() {
            return Err(DataError::NotFound {
                path: dir,
                what: "expected a cifar-10-batches-bin folder, or a folder holding one".into(),
            });
        }
        let classes = read_meta(&dir.join("batches.meta.txt"))?;
        let files: Vec<PathBuf> = split.cifar_file_names().iter().map(|f| dir.join(f)).collect();
        Cifar10::from_files(&files, classes)
    }

    /// Loads the given `.bin` files, in order, with the given class names
    /// (labels must be below `class_names.len()`, at most 256 classes).
    ///
    /// # Errors
    /// As [`Cifar10::open`].
    pub fn from_files(files: &[PathBuf], class_names: Vec<String>) -> Result<Cifar10, DataError> {
        if class_names.is_empty() || class_names.len() > 256 {
            return Err(DataError::Config(format!("CIFAR needs 1 to 256 class names, got {}", class_names.len())));
        }
        // Size everything first so the big buffer is allocated once.
        let mut total = 0usize;
        for path in files {
            let meta =
                std::fs::metadata(path).map_err(|e| DataError::io(path, "expected a CIFAR-10 binary batch file", e))?;
            total += check_size(path, meta.len())?;
        }
        let mut pixels = Vec::with_capacity(total * Self::IMAGE_LEN);
        let mut labels = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(files.len());
        for path in files {
            let bytes =
                std::fs::read(path).map_err(|e| DataError::io(path, "expected a CIFAR-10 binary batch file", e))?;
            // The file may have changed since it was sized.
            check_size(path, bytes.len() as u64)?;
            spans.push((path.clone(), labels.len()));
            for (record, rec) in bytes.chunks_exact(Self::RECORD_LEN).enumerate() {
                let label = rec[0];
                if usize::from(label) >= class_names.len() {
                    return Err(DataError::CifarLabel {
                        path: path.clone(),
                        record,
                        label,
                        max: class_names.len() - 1,
                    });
                }
                labels.push(label);
                pixels.extend_from_slice(&rec[1..]);
            }
        }
        Ok(Cifar10 { pixels, labels, classes: class_names, files: spans })
    }

    /// The labels of all samples, in order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Image `index` as stored: 3,072 bytes, red plane, green plane, blue
    /// plane; `None` past the end.
    pub fn raw_chw(&self, index: usize) -> Option<&[u8]> {
        self.pixels.get(index * Self::IMAGE_LEN..(index + 1) * Self::IMAGE_LEN)
    }

    /// The files loaded, each with the index of its first sample.
    pub fn files(&self) -> &[(PathBuf, usize)] {
        &self.files
    }
}

/// Number of records in a file of `len` bytes, or why it is not a CIFAR file.
fn check_size(path: &Path, len: u64) -> Result<usize, DataError> {
    let rec = Cifar10::RECORD_LEN as u64;
    if !len.is_multiple_of(rec) {
        return Err(DataError::CifarTruncated {
            path: path.to_path_buf(),
            len,
            record_len: Cifar10::RECORD_LEN,
            record: (len / rec) as usize,
            partial: (len % rec) as usize,
        });
    }
    if len == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            message: "CIFAR-10 batch file is empty (expected records of 3073 bytes)".into(),
        });
    }
    Ok((len / rec) as usize)
}

/// Class names from `batches.meta.txt`, or the standard ones if it is absent.
fn read_meta(path: &Path) -> Result<Vec<String>, DataError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect());
        }
        Err(e) => return Err(DataError::io(path, "CIFAR-10 class names", e)),
    };
    let text = String::from_utf8(text).map_err(|_| DataError::Format {
        path: path.to_path_buf(),
        message: "not UTF-8 text; expected one class name a line".into(),
    })?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != 10 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("lists {} class names; expected 10, one a line (airplane, automobile, ...)", names.len()),
        });
    }
    Ok(names)
}

impl Dataset for Cifar10 {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn get(&self, index: usize) -> Result<Sample, DataError> {
        check_index(index, self.labels.len())?;
        const PLANE: usize = Cifar10::SIDE * Cifar10::SIDE;
        let chw = &self.pixels[index * Self::IMAGE_LEN..(index + 1) * Self::IMAGE_LEN];
        let (r, rest) = chw.split_at(PLANE);
        let (g, b) = rest.split_at(PLANE);
        let mut hwc = vec![0u8; Self::IMAGE_LEN];
        for (((px, &r), &g), &b) in hwc.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
            px.copy_from_slice(&[r, g, b]);
        }
        let image = Image::from_u8(Self::SIDE, Self::SIDE, 3, hwc)
            .ok_or_else(|| DataError::Config("internal: CIFAR image size".into()))?;
        Ok(Sample { image, label: usize::from(self.labels[index]) })
    }

    fn class_names(&self) -> &[String] {
        &self.classes
    }

    fn describe(&self, index: usize) -> String {
        let file = self.files.iter().rev().find(|(_, start)| *start <= index);
        match file {
            Some((path, start)) => format!("{} record {}", path.display(), index - start),
            None => format!("CIFAR sample {index}"),
        }
    }
}
