//! Training and evaluation modes of a macro-generated network, as a PyTorch
//! module's `train()` and `eval()`.

use kiln::Tensor;

kiln::net! {
    /// Batch normalisation and dropout, whose results depend on the mode.
    struct Normed {
        fc: Linear(3, 4),
        bn: BatchNorm1d(4),
        drop: Dropout(0.5),
    }
    fn forward(x: [N, 3]) -> [N, 4] {
        drop(bn(fc(x)))
    }
}

#[test]
fn generated_types_switch_modes_like_pytorch_modules() {
    let mut net = Normed::init(3);
    assert!(net.is_training(), "training mode is the default");
    let x = Tensor::new(vec![4, 3], (0..12).map(|i| (i as f32 * 0.7).cos()).collect()).unwrap();
    let start = net.state_dict();
    let evaluated = net.eval().forward(&x).unwrap();
    assert!(!net.is_training());
    assert_eq!(net.state_dict(), start, "evaluation mode updates nothing");
    let trained = net.train().forward(&x).unwrap();
    assert_ne!(trained, evaluated);
    let key = |k: &str| net.param(k).unwrap().data.clone();
    assert_ne!(key("bn.running_mean"), vec![0.0; 4], "a training-mode forward updates the statistics");
    assert_ne!(key("bn.running_var"), vec![1.0; 4]);
}
