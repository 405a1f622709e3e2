//! The macro-generated LeNet against PyTorch: parameters loaded from the
//! reference `.npy` files reproduce PyTorch's logits, loss, gradients and
//! SGD-with-momentum updates (`../shared/parity/lenet`, see its README).

use kiln::{Loss, Sgd, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

kiln::net! {
    /// The lecture's CIFAR-10 classifier.
    pub struct LeNet {
        conv1: Conv2d(3, 6, 5),
        pool: MaxPool2d(2, 2),
        conv2: Conv2d(6, 16, 5),
        fc1: Linear(16 * 5 * 5, 120),
        fc2: Linear(120, 84),
        fc3: Linear(84, 10),
    }
    fn forward(x: [N, 3, 32, 32]) -> [N, 10] {
        let x = pool(relu(conv1(x)));
        let x = pool(relu(conv2(x)));
        let x = x.reshape([N, 16 * 5 * 5]);
        let x = relu(fc1(x));
        let x = relu(fc2(x));
        fc3(x)
    }
}

fn reference_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/parity/lenet");
    if dir.join("logits.npy").exists() {
        Some(dir)
    } else {
        eprintln!("skipping: the PyTorch reference directory {} is absent", dir.display());
        None
    }
}

fn read(dir: &std::path::Path, name: &str) -> Tensor {
    kiln::runtime::npy::read_f32(&dir.join(format!("{name}.npy"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Loads the reference parameters through `load_state_dict`.
fn reference_net(dir: &std::path::Path) -> LeNet {
    let dict: HashMap<String, Tensor> = LeNet::PARAM_NAMES.iter().map(|&k| (k.to_string(), read(dir, k))).collect();
    let mut net = LeNet::zeros();
    net.load_state_dict(dict).expect("reference parameters fit");
    net
}

/// max |a - b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape, b.shape);
    let scale = b.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    a.data.iter().zip(&b.data).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn abs_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape, b.shape, "shapes");
    a.data.iter().zip(&b.data).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn lenet_matches_pytorch_logits_loss_and_gradients() {
    let Some(dir) = reference_dir() else { return };
    let mut net = reference_net(&dir);
    let x = read(&dir, "input");
    let labels = kiln::runtime::npy::read_labels(&dir.join("labels.npy")).expect("labels");

    let logits = net.forward(&x).expect("forward");
    let e = rel_err(&logits, &read(&dir, "logits"));
    assert!(e <= 1e-5, "logits differ by {e} relative");

    let (loss, grads) = net.gradients(&x, &labels, Loss::CrossEntropy).expect("gradients");
    let ref_loss = read(&dir, "loss").data[0];
    assert!((loss - ref_loss).abs() <= 1e-5 * ref_loss.abs(), "loss {loss} vs PyTorch {ref_loss}");
    assert_eq!(grads.len(), 10);
    for (key, g) in &grads {
        let e = abs_err(g, &read(&dir, &format!("grad_{key}")));
        assert!(e <= 1e-6, "gradient of {key} differs by {e}");
    }
}

#[test]
fn lenet_sgd_momentum_steps_match_pytorch() {
    let Some(dir) = reference_dir() else { return };
    let mut net = reference_net(&dir);
    let x = read(&dir, "input");
    let labels = kiln::runtime::npy::read_labels(&dir.join("labels.npy")).expect("labels");
    let sgd = Sgd { lr: 0.001, momentum: 0.9, ..Sgd::default() };
    let losses = read(&dir, "losses_3steps");
    for step in 0..3 {
        let loss = net.train_step(&x, &labels, Loss::CrossEntropy, sgd).expect("step");
        let r = losses.data[step];
        assert!((loss - r).abs() <= 1e-5 * r.abs(), "step {step}: loss {loss} vs PyTorch {r}");
        if step == 0 || step == 2 {
            for key in LeNet::PARAM_NAMES {
                let after = read(&dir, &format!("after{}_{key}", step + 1));
                let e = abs_err(net.param(key).expect("param"), &after);
                assert!(e <= 1e-6, "{key} after {} step(s) differs by {e}", step + 1);
            }
        }
    }
}

#[test]
fn load_npy_dir_reads_the_same_parameters() {
    let Some(dir) = reference_dir() else { return };
    let mut net = LeNet::init(3);
    net.load_npy_dir(&dir).expect("load_npy_dir");
    assert_eq!(net.state_dict(), reference_net(&dir).state_dict());
}
