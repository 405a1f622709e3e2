//! The one error type of the data pipeline.

use std::path::PathBuf;

/// Everything that can go wrong while opening a data set, reading a sample,
/// transforming it or assembling a batch.
///
/// Every variant that comes from a file names that file (and, where it makes
/// sense, the record or sample index) and says what was expected, so the
/// message alone is enough to find the bad input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file or folder that should be there is not.
    #[error("{}: not found ({what})", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
        /// What the path was supposed to hold.
        what: String,
    },

    /// The operating system failed to read a file or list a folder.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A CIFAR-10 binary file whose size is not a whole number of records.
    #[error(
        "{}: truncated CIFAR-10 file: {len} bytes is not a multiple of the {record_len}-byte \
         record; record {record} (0-based) has only {partial} of {record_len} bytes",
        path.display()
    )]
    CifarTruncated {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
        /// Bytes per record (3,073).
        record_len: usize,
        /// Index of the incomplete record.
        record: usize,
        /// Bytes that record has.
        partial: usize,
    },

    /// A CIFAR-10 record whose label byte is not a class index.
    #[error(
        "{}: record {record} (0-based): label byte {label} is not a CIFAR-10 class \
         (expected 0..={max}); is this really a CIFAR-10 binary batch?",
        path.display()
    )]
    CifarLabel {
        /// The file.
        path: PathBuf,
        /// Index of the record.
        record: usize,
        /// The label byte found.
        label: u8,
        /// The largest valid label.
        max: usize,
    },

    /// An image file that cannot be decoded.
    #[error("{}: cannot decode image: {message}", path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's explanation.
        message: String,
    },

    /// Two images of one data set that should have the same size do not.
    #[error(
        "{}: image is {found} but {} is {expected}; every image must have the same size \
         (add a RandomCrop or resize the data)",
        path.display(),
        first.display()
    )]
    SizeMismatch {
        /// The offending image.
        path: PathBuf,
        /// Its size, as `HxWxC`.
        found: String,
        /// The image the size was taken from.
        first: PathBuf,
        /// That image's size, as `HxWxC`.
        expected: String,
    },

    /// An array file whose element type is not one that is accepted.
    #[error("{}: dtype {found} is not supported here; expected {expected}", path.display())]
    Dtype {
        /// The array file.
        path: PathBuf,
        /// The dtype in the file (numpy notation, e.g. `<f8`).
        found: String,
        /// The accepted dtypes.
        expected: String,
    },

    /// An array file whose shape is wrong.
    #[error("{}: shape {found:?} is wrong; expected {expected}", path.display())]
    Shape {
        /// The array file.
        path: PathBuf,
        /// The shape found.
        found: Vec<u64>,
        /// What was expected.
        expected: String,
    },

    /// Images and labels of different counts.
    #[error(
        "{} has {labels} labels but {} has {images} images; they must match",
        labels_path.display(),
        images_path.display()
    )]
    LabelCount {
        /// The images file.
        images_path: PathBuf,
        /// Number of images.
        images: usize,
        /// The labels file.
        labels_path: PathBuf,
        /// Number of labels.
        labels: usize,
    },

    /// A label that is not a valid class index.
    #[error("{}: entry {index}: label {label} is invalid; {expected}", path.display())]
    Label {
        /// The file holding the label.
        path: PathBuf,
        /// Index of the sample.
        index: usize,
        /// The label found.
        label: i64,
        /// What was expected.
        expected: String,
    },

    /// A folder or file that holds no samples.
    #[error("{}: {message}", path.display())]
    Empty {
        /// The folder or file.
        path: PathBuf,
        /// What was looked for.
        message: String,
    },

    /// A file whose content is malformed in some other way.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A sample index past the end of a data set.
    #[error("sample index {index} is out of range for a data set of {len} samples")]
    Index {
        /// The index asked for.
        index: usize,
        /// The data set's length.
        len: usize,
    },

    /// A transform that cannot be applied to a sample.
    #[error("transform {transform} failed on sample {index} ({source_desc}): {message}")]
    Transform {
        /// The transform's name.
        transform: String,
        /// Index of the sample in the data set.
        index: usize,
        /// Where the sample came from.
        source_desc: String,
        /// What is wrong.
        message: String,
    },

    /// Samples of one batch that ended with different shapes.
    #[error(
        "cannot batch sample {index} ({source_desc}) of shape {found:?} with earlier samples \
         of shape {expected:?}; every sample of a batch must end with the same [C, H, W] shape \
         (add a RandomCrop, or fix the data)"
    )]
    BatchShape {
        /// Index of the sample in the data set.
        index: usize,
        /// Where the sample came from.
        source_desc: String,
        /// Its shape after the transforms.
        found: Vec<usize>,
        /// The shape of the batch's first sample.
        expected: Vec<usize>,
    },

    /// An invalid loader or transform setting.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A loader worker thread panicked (a bug in a data set or transform).
    #[error("data loader worker {worker} panicked while producing batch {batch}")]
    WorkerPanicked {
        /// The worker's number.
        worker: usize,
        /// The batch it was responsible for.
        batch: usize,
    },
}

impl DataError {
    /// An [`DataError::Io`] for `path`, or [`DataError::NotFound`] when the
    /// error says the file is missing.
    pub(crate) fn io(path: impl Into<PathBuf>, what: &str, source: std::io::Error) -> DataError {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound {
                path,
                what: what.to_string(),
            }
        } else {
            DataError::Io { path, source }
        }
    }
}
