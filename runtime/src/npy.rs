//! Reading and writing single tensors as NumPy `.npy` files (through `npyz`).
//!
//! Tensors are f32. Integer class labels (`int64`, `int32`, `uint8`) are read
//! as f32 class indices, which is how the graph IR carries labels.

use kiln_compiler::Tensor;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

/// Why a `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The header or the data is not a valid `.npy` array (e.g. truncated).
    #[error("{path}: not a valid .npy file ({detail})")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The element type is not one kiln accepts here.
    #[error("{path}: dtype {found} is not supported; expected {expected}")]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The dtype found.
        found: String,
        /// The accepted dtypes.
        expected: &'static str,
    },
    /// The array has the wrong shape.
    #[error("{path}: shape {found:?} does not match the expected {expected:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The shape found.
        found: Vec<usize>,
        /// The shape expected.
        expected: Vec<usize>,
    },
}

fn open(path: &Path) -> Result<npyz::NpyFile<BufReader<File>>, NpyError> {
    let file = File::open(path).map_err(|source| NpyError::Io { path: path.into(), source })?;
    npyz::NpyFile::new(BufReader::new(file))
        .map_err(|e| NpyError::Malformed { path: path.into(), detail: e.to_string() })
}

fn read_all<T: npyz::Deserialize, R: Read>(path: &Path, npy: npyz::NpyFile<R>) -> Result<Vec<T>, NpyError> {
    if npy.order() != npyz::Order::C {
        return Err(NpyError::Malformed { path: path.into(), detail: "Fortran order is not supported".into() });
    }
    npy.into_vec::<T>().map_err(|e| NpyError::Malformed { path: path.into(), detail: e.to_string() })
}

/// Reads a float32 tensor (float64 is accepted and narrowed).
pub fn read_f32(path: &Path) -> Result<Tensor, NpyError> {
    let npy = open(path)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.dtype().descr();
    let data: Vec<f32> = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
        "f4" => read_all::<f32, _>(path, npy)?,
        "f8" => read_all::<f64, _>(path, npy)?.into_iter().map(|v| v as f32).collect(),
        _ => return Err(NpyError::Dtype { path: path.into(), found: descr, expected: "float32 ('<f4') or float64" }),
    };
    Tensor::new(shape.clone(), data).ok_or_else(|| NpyError::Malformed {
        path: path.into(),
        detail: format!("data length does not match shape {shape:?}"),
    })
}

/// Reads integer class labels (int64, int32, uint8, or integral floats) as f32 indices.
pub fn read_labels(path: &Path) -> Result<Tensor, NpyError> {
    let npy = open(path)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.dtype().descr();
    let data: Vec<f32> = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
        "i8" => read_all::<i64, _>(path, npy)?.into_iter().map(|v| v as f32).collect(),
        "i4" => read_all::<i32, _>(path, npy)?.into_iter().map(|v| v as f32).collect(),
        "u1" => read_all::<u8, _>(path, npy)?.into_iter().map(f32::from).collect(),
        "f4" => read_all::<f32, _>(path, npy)?,
        _ => {
            return Err(NpyError::Dtype {
                path: path.into(),
                found: descr,
                expected: "int64, int32, uint8 or float32",
            });
        }
    };
    Tensor::new(shape.clone(), data).ok_or_else(|| NpyError::Malformed {
        path: path.into(),
        detail: format!("data length does not match shape {shape:?}"),
    })
}

/// Reads a float32 tensor and checks its shape.
pub fn read_f32_shaped(path: &Path, expected: &[usize]) -> Result<Tensor, NpyError> {
    let t = read_f32(path)?;
    if t.shape != expected {
        return Err(NpyError::Shape { path: path.into(), found: t.shape, expected: expected.to_vec() });
    }
    Ok(t)
}

/// Writes `tensor` as a C-order float32 `.npy` file.
pub fn write_f32(path: &Path, tensor: &Tensor) -> Result<(), NpyError> {
    use npyz::WriterBuilder;
    let io = |source| NpyError::Io { path: path.into(), source };
    let file = File::create(path).map_err(io)?;
    let shape: Vec<u64> = tensor.shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(io)?;
    writer.extend(tensor.data.iter().copied()).map_err(io)?;
    writer.finish().map_err(io)
}
