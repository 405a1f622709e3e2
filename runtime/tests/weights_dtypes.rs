//! State_dicts saved in float16, bfloat16 or float64 (PyTorch's `.half()`,
//! `.bfloat16()`, `.double()`) load as float32, as `load_state_dict`
//! converts; PyTorch's int64 `num_batches_tracked` counters are skipped;
//! any other dtype is an error naming the tensor.

use kiln_runtime::model::Model;
use kiln_runtime::train::{Checkpoint, load_weights_converting};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

const NET: &str = "struct Norm { fc: Linear(3, 2), bn: BatchNorm1d(2) } fn forward(x: [N, 3]) -> [N, 2] { bn(fc(x)) }";

/// Every state_dict entry of `model`, written in `dtype`, plus PyTorch's step counter.
fn write(model: &Model, dtype: Dtype, path: &std::path::Path) {
    let encode = |v: f32| -> Vec<u8> {
        match dtype {
            Dtype::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
            Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
            Dtype::F64 => (v as f64).to_le_bytes().to_vec(),
            _ => v.to_le_bytes().to_vec(),
        }
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = model
        .state_dict()
        .into_iter()
        .map(|(k, t)| (k, t.shape.clone(), t.data.iter().flat_map(|&v| encode(v)).collect()))
        .collect();
    tensors.push(("bn.num_batches_tracked".into(), vec![], 7i64.to_le_bytes().to_vec()));
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, shape, bytes)| {
            let dt = if k.ends_with("num_batches_tracked") { Dtype::I64 } else { dtype };
            (k.clone(), TensorView::new(dt, shape.clone(), bytes).unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn half_bfloat_and_double_state_dicts_load_as_float32() {
    let tmp = tempfile::tempdir().unwrap();
    let original = Model::from_source(NET, 3).unwrap();
    let forward = original.graph().clone();
    for (dtype, tolerance) in [(Dtype::F16, 1e-3), (Dtype::BF16, 8e-3), (Dtype::F64, 0.0)] {
        let path = tmp.path().join(format!("{dtype:?}.safetensors"));
        write(&original, dtype, &path);
        let mut loaded = Model::from_source(NET, 99).unwrap();
        loaded.load(&path).unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
        for (key, want) in original.state_dict() {
            let got = loaded.param(&key).unwrap();
            for (g, w) in got.data.iter().zip(&want.data) {
                assert!((g - w).abs() <= tolerance * w.abs().max(1.0), "{dtype:?} {key}: {g} vs {w}");
            }
        }
        let (params, converted) = load_weights_converting(&path, &forward).unwrap();
        assert_eq!(params.len(), 6, "weight, bias and the normalisation's four entries");
        assert_eq!(converted, vec![format!("{dtype:?}")]);
    }
    // A float32 file converts nothing; an integer weight is refused by name.
    let path = tmp.path().join("f32.safetensors");
    write(&original, Dtype::F32, &path);
    assert!(Checkpoint::load(&path).unwrap().converted.is_empty());
    let bytes = [0u8; 8];
    let views = vec![("fc.bias".to_string(), TensorView::new(Dtype::I32, vec![2], &bytes).unwrap())];
    let bad = tmp.path().join("int.safetensors");
    std::fs::write(&bad, safetensors::serialize(views, None).unwrap()).unwrap();
    let err = Checkpoint::load(&bad).unwrap_err().to_string();
    assert!(err.contains("fc.bias") && err.contains("I32") && err.contains("converts F16, BF16 and F64"), "{err}");
    let err = Model::from_source(NET, 1).unwrap().load(&bad).unwrap_err().to_string();
    assert!(err.contains("fc.bias"), "{err}");
}
