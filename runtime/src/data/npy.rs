//! Images and labels from numpy `.npy` files, as `np.load` reads them.

use std::path::{Path, PathBuf};

use npyz::{DType, Endianness, NpyHeader, Order, TypeChar};

use super::dataset::{Dataset, check_index};
use super::error::DataError;
use super::sample::{Image, Pixels, Sample};

/// Images from an `(N, H, W, C)` (or `(N, H, W)`, one channel) `.npy` array
/// of `uint8` or `float32`, with labels from an `(N,)` (or `(N, 1)`) integer
/// `.npy` array (`int64`, `int32`, `uint8`, or another integer type).
///
/// Byte images are scaled to `[0, 1]` by [`ToTensor`](super::ToTensor);
/// float images are used as they are. The classes are `0..=max label`, named
/// `"0"`, `"1"`, ... unless [`NpyDataset::with_class_names`] names them.
#[derive(Clone)]
pub struct NpyDataset {
    images_path: PathBuf,
    labels_path: PathBuf,
    height: usize,
    width: usize,
    channels: usize,
    pixels: Pixels,
    labels: Vec<usize>,
    classes: Vec<String>,
}

impl std::fmt::Debug for NpyDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NpyDataset")
            .field("images", &self.images_path)
            .field("labels", &self.labels_path)
            .field("len", &self.labels.len())
            .field("hwc", &(self.height, self.width, self.channels))
            .finish_non_exhaustive()
    }
}

/// A parsed `.npy` file: its header and the raw data bytes after it.
struct RawNpy {
    shape: Vec<u64>,
    dtype: npyz::TypeStr,
    data: Vec<u8>,
}

fn read_npy(path: &Path, what: &str) -> Result<RawNpy, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, what, e))?;
    let mut cursor: &[u8] = &bytes;
    let header = NpyHeader::from_reader(&mut cursor)
        .map_err(|e| DataError::Format { path: path.to_path_buf(), message: format!("not a valid .npy file ({e})") })?;
    let header_len = bytes.len() - cursor.len();
    let dtype = match header.dtype() {
        DType::Plain(t) => t,
        other => {
            return Err(DataError::Dtype {
                path: path.to_path_buf(),
                found: other.descr(),
                expected: format!("a plain numeric dtype ({what})"),
            });
        }
    };
    if header.order() == Order::Fortran && header.shape().len() > 1 {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: "array is in Fortran (column-major) order; save it with \
                      np.save(path, np.ascontiguousarray(arr))"
                .into(),
        });
    }
    let shape = header.shape().to_vec();
    let mut data = bytes;
    data.drain(..header_len);
    Ok(RawNpy { shape, dtype, data })
}

impl RawNpy {
    /// Checks the data holds exactly `shape.product() * item` bytes.
    fn check_len(&self, path: &Path, item: usize) -> Result<usize, DataError> {
        let count = self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let need = count.and_then(|c| c.checked_mul(item as u64));
        match (count, need) {
            (Some(count), Some(need)) if need == self.data.len() as u64 => Ok(count as usize),
            (_, need) => Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "truncated or corrupt: shape {:?} of {} needs {} data bytes but the file has {}",
                    self.shape,
                    self.dtype,
                    need.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                    self.data.len()
                ),
            }),
        }
    }
}

/// Labels must be below this (a guard against garbage read as labels).
const MAX_CLASSES: usize = 1 << 20;

fn is_big(t: &npyz::TypeStr) -> bool {
    t.endianness() == Endianness::Big
}

impl NpyDataset {
    /// Loads images and labels from two `.npy` files.
    ///
    /// # Errors
    /// A missing file; a file that is not `.npy` or is cut short; an image
    /// dtype other than `uint8`/`float32` or a non-integer label dtype
    /// ([`DataError::Dtype`], naming found and expected); an image array of
    /// rank other than 2, 3 or 4, or labels of rank other than 1 (or `(N, 1)`)
    /// ([`DataError::Shape`]); different image and label counts
    /// ([`DataError::LabelCount`]); no images; a negative label.
    pub fn open(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<NpyDataset, DataError> {
        let images_path = images.as_ref().to_path_buf();
        let labels_path = labels.as_ref().to_path_buf();
        let (height, width, channels, n, pixels) = read_images(&images_path)?;
        let labels = read_labels(&labels_path)?;
        if labels.len() != n {
            return Err(DataError::LabelCount { images_path, images: n, labels_path, labels: labels.len() });
        }
        let num_classes = labels.iter().max().map_or(0, |m| m + 1);
        let classes = (0..num_classes).map(|c| c.to_string()).collect();
        Ok(NpyDataset { images_path, labels_path, height, width, channels, pixels, labels, classes })
    }

    /// Names the classes (label `i` is `names[i]`).
    ///
    /// # Errors
    /// [`DataError::Label`] when a label is not below `names.len()`.
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<NpyDataset, DataError> {
        if let Some((index, &label)) = self.labels.iter().enumerate().find(|(_, l)| **l >= names.len()) {
            return Err(DataError::Label {
                path: self.labels_path.clone(),
                index,
                label: label as i64,
                expected: format!("only {} class names were given", names.len()),
            });
        }
        self.classes = names;
        Ok(self)
    }

    /// The labels, in order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// `(height, width, channels)` of every image.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        (self.height, self.width, self.channels)
    }
}

type Images = (usize, usize, usize, usize, Pixels);

fn read_images(path: &Path) -> Result<Images, DataError> {
    let raw = read_npy(path, "images of shape (N, H, W, C)")?;
    let t = &raw.dtype;
    let item = match (t.type_char(), t.size_field()) {
        (TypeChar::Uint, 1) => 1,
        (TypeChar::Float, 4) => 4,
        _ => {
            return Err(DataError::Dtype {
                path: path.to_path_buf(),
                found: t.to_string(),
                expected: "uint8 (|u1) or float32 (<f4) images; convert with \
                           arr.astype(np.uint8) or arr.astype(np.float32)"
                    .into(),
            });
        }
    };
    let dims: Vec<usize> = raw.shape.iter().map(|&d| d as usize).collect();
    let (n, h, w, c) = match dims[..] {
        [n, h, w, c] => (n, h, w, c),
        [n, h, w] => (n, h, w, 1),
        // Tabular features: each row a 1x1 "image" of F channels, batched
        // as [N, F, 1, 1], which a feature model's [N, F] input takes.
        [n, f] => (n, 1, 1, f),
        _ => {
            return Err(DataError::Shape {
                path: path.to_path_buf(),
                found: raw.shape.clone(),
                expected: "rank 4 (N, H, W, C), channels last, rank 3 (N, H, W), or rank 2 (N, F) features".into(),
            });
        }
    };
    if n == 0 || h == 0 || w == 0 || c == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            message: format!("image array of shape {:?} holds no images", raw.shape),
        });
    }
    raw.check_len(path, item)?;
    let pixels = if item == 1 {
        Pixels::U8(raw.data)
    } else {
        let big = is_big(t);
        Pixels::F32(
            raw.data
                .chunks_exact(4)
                .map(|b| {
                    let b = [b[0], b[1], b[2], b[3]];
                    if big { f32::from_be_bytes(b) } else { f32::from_le_bytes(b) }
                })
                .collect(),
        )
    };
    Ok((h, w, c, n, pixels))
}

fn read_labels(path: &Path) -> Result<Vec<usize>, DataError> {
    let raw = read_npy(path, "integer labels of shape (N,)")?;
    let t = &raw.dtype;
    let size = t.size_field() as usize;
    let signed = match t.type_char() {
        TypeChar::Int => true,
        TypeChar::Uint => false,
        _ => {
            return Err(DataError::Dtype {
                path: path.to_path_buf(),
                found: t.to_string(),
                expected: "integer labels: int64 (<i8), int32 (<i4) or uint8 (|u1); \
                           convert with arr.astype(np.int64)"
                    .into(),
            });
        }
    };
    if ![1, 2, 4, 8].contains(&size) {
        return Err(DataError::Dtype {
            path: path.to_path_buf(),
            found: t.to_string(),
            expected: "a 1, 2, 4 or 8-byte integer dtype".into(),
        });
    }
    let ok_shape = matches!(raw.shape[..], [_] | [_, 1]);
    if !ok_shape {
        return Err(DataError::Shape {
            path: path.to_path_buf(),
            found: raw.shape.clone(),
            expected: "labels of rank 1, (N,), or (N, 1)".into(),
        });
    }
    raw.check_len(path, size)?;
    let big = is_big(t);
    let mut labels = Vec::with_capacity(raw.data.len() / size);
    for (index, b) in raw.data.chunks_exact(size).enumerate() {
        let mut buf = [0u8; 8];
        if big {
            buf[8 - size..].copy_from_slice(b);
            buf.reverse();
        } else {
            buf[..size].copy_from_slice(b);
        }
        let unsigned = u64::from_le_bytes(buf);
        let value: i128 = if signed {
            // Sign-extend from `size` bytes.
            let shift = 64 - 8 * size as u32;
            i128::from(((unsigned << shift) as i64) >> shift)
        } else {
            i128::from(unsigned)
        };
        let label = usize::try_from(value).ok().filter(|&l| l < MAX_CLASSES);
        match label {
            Some(l) => labels.push(l),
            None => {
                return Err(DataError::Label {
                    path: path.to_path_buf(),
                    index,
                    label: i64::try_from(value).unwrap_or(i64::MAX),
                    expected: format!("labels must be class indices 0, 1, 2, ... below {MAX_CLASSES}"),
                });
            }
        }
    }
    Ok(labels)
}

impl Dataset for NpyDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn get(&self, index: usize) -> Result<Sample, DataError> {
        check_index(index, self.labels.len())?;
        let n = self.height * self.width * self.channels;
        let range = index * n..(index + 1) * n;
        let pixels = match &self.pixels {
            Pixels::U8(v) => Pixels::U8(v[range].to_vec()),
            Pixels::F32(v) => Pixels::F32(v[range].to_vec()),
        };
        let image = Image::new(self.height, self.width, self.channels, pixels)
            .ok_or_else(|| DataError::Config("internal: npy image size".into()))?;
        Ok(Sample { image, label: self.labels[index] })
    }

    fn class_names(&self) -> &[String] {
        &self.classes
    }

    fn describe(&self, index: usize) -> String {
        format!("{}[{index}]", self.images_path.display())
    }
}
