//! Checkpoints of a macro-generated network: safetensors round trips are
//! bit-identical, and bad files are rejected with errors naming the key.

use kiln::{ModelError, Tensor};
use std::collections::HashMap;

kiln::net! {
    /// A small conv net.
    pub struct Small {
        conv: Conv2d(1, 4, 3),
        fc: Linear(4 * 6 * 6, 3),
    }
    fn forward(x: [N, 1, 8, 8]) -> [N, 3] {
        let h = relu(conv(x));
        fc(h.flatten(1))
    }
}

kiln::net! {
    /// The same layers with a different head size, for shape mismatches.
    struct Wider {
        conv: Conv2d(1, 4, 3),
        fc: Linear(4 * 6 * 6, 5),
    }
    fn forward(x: [N, 1, 8, 8]) -> [N, 5] {
        fc(relu(conv(x)).flatten(1))
    }
}

kiln::net! {
    /// Small plus an extra layer, for unexpected keys.
    struct Extra {
        conv: Conv2d(1, 4, 3),
        fc: Linear(4 * 6 * 6, 3),
        out: Linear(3, 2),
    }
    fn forward(x: [N, 1, 8, 8]) -> [N, 2] {
        out(fc(relu(conv(x)).flatten(1)))
    }
}

fn bits(net: &Small) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    net.state_dict().into_iter().map(|(k, t)| (k, t.shape, t.data.iter().map(|v| v.to_bits()).collect())).collect()
}

#[test]
fn safetensors_round_trip_is_bit_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.safetensors");
    let net = Small::init(42);
    net.save(&path).expect("save");
    assert!(!dir.path().join("small.safetensors.tmp").exists(), "the temporary file is renamed");
    let mut loaded = Small::zeros();
    loaded.load(&path).expect("load");
    assert_eq!(bits(&net), bits(&loaded));
    let again = Small::from_safetensors(&path).expect("from_safetensors");
    assert_eq!(bits(&net), bits(&again));
    assert_eq!(Small::PARAM_NAMES, ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]);
}

#[test]
fn missing_key_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.safetensors");
    Small::init(1).save(&path).expect("save");
    // Extra has every key of Small and one more: loading Small's file misses it.
    let mut extra = Extra::init(2);
    let before = extra.state_dict();
    let err = extra.load(&path).unwrap_err();
    assert!(matches!(&err, ModelError::MissingKey { key, .. } if key == "out.weight"), "{err}");
    assert!(err.to_string().contains("out.weight") && err.to_string().contains("[2, 3]"), "{err}");
    assert_eq!(extra.state_dict(), before, "a failed load changes nothing");
}

#[test]
fn unexpected_key_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("extra.safetensors");
    Extra::init(1).save(&path).expect("save");
    let mut small = Small::init(2);
    let before = small.state_dict();
    let err = small.load(&path).unwrap_err();
    assert!(matches!(&err, ModelError::UnexpectedKey { key, .. } if key.starts_with("out.")), "{err}");
    assert!(err.to_string().contains("out."), "{err}");
    assert_eq!(small.state_dict(), before);
}

#[test]
fn wrong_shape_names_key_and_both_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wider.safetensors");
    Wider::init(1).save(&path).expect("save");
    let mut small = Small::init(2);
    let err = small.load(&path).unwrap_err().to_string();
    assert!(err.contains("fc.weight") && err.contains("[5, 144]") && err.contains("[3, 144]"), "{err}");

    let mut dict: HashMap<String, Tensor> = small.state_dict().into_iter().collect();
    dict.insert("conv.bias".into(), Tensor::zeros(&[5]));
    let err = small.load_state_dict(dict).unwrap_err().to_string();
    assert_eq!(err, "parameter `conv.bias` has shape [5] but the model expects [4]");
}

#[test]
fn a_failed_save_keeps_the_previous_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.safetensors");
    let net = Small::init(5);
    net.save(&path).expect("save");
    let before = std::fs::read(&path).expect("read");
    // A directory where the temporary file should go makes the write fail.
    std::fs::create_dir(dir.path().join("small.safetensors.tmp")).expect("mkdir");
    assert!(Small::init(6).save(&path).is_err());
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

#[test]
fn corrupt_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, b"not a safetensors file").expect("write");
    let err = Small::zeros().load(&path).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
}

#[test]
fn wrong_input_shape_names_input_and_both_shapes() {
    let mut net = Small::init(0);
    let err = net.forward(&Tensor::zeros(&[2, 1, 8, 9])).unwrap_err().to_string();
    assert!(err.contains("input `x`") && err.contains("[N, 1, 8, 8]") && err.contains("[2, 1, 8, 9]"), "{err}");
    let y = net.forward(&Tensor::zeros(&[2, 1, 8, 8])).expect("forward");
    assert_eq!(y.shape, [2, 3]);
}
