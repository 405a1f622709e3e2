//! Reading tensors of a safetensors file as float32, as PyTorch's
//! `load_state_dict` converts: float16, bfloat16 and float64 tensors are
//! converted (the `half` crate does the 16-bit formats, rounding-exact),
//! float32 taken as it is.

use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// The tensor's values as f32, and the dtype it was converted from (`None`
/// when it was float32); `None` for a dtype kiln does not read.
pub(crate) fn to_f32(view: &TensorView) -> Option<(Vec<f32>, Option<Dtype>)> {
    let bytes = view.data();
    let values = match view.dtype() {
        Dtype::F32 => {
            return Some((bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), None));
        }
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        _ => return None,
    };
    Some((values, Some(view.dtype())))
}

/// PyTorch's batch-normalisation step counter (`bn.num_batches_tracked`, an
/// int64 that only matters with `momentum = None`): kiln does not keep it, and
/// skips it when reading a state_dict.
pub(crate) fn is_step_counter(key: &str, dtype: Dtype) -> bool {
    key.ends_with(".num_batches_tracked") && matches!(dtype, Dtype::I64 | Dtype::I32 | Dtype::F32)
}
