// The lecture's CIFAR-10 classifier, with its typed surface checked.
use kiln::{Loss, Sgd, Tensor};

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

fn main() {
    const _: () = assert!(LeNet::NUM_PARAMETERS == 62006);
    assert_eq!(LeNet::INPUT_NAMES, ["x"]);
    assert!(LeNet::INPUT_SHAPES[0][0].batched);
    assert_eq!(LeNet::OUTPUT_SHAPES[0][1].factor, 10);
    assert_eq!(LeNet::PARAM_SHAPES[2], &[16, 6, 5, 5]);
    let mut net = LeNet::init(1);
    let x = Tensor::zeros(&[4, 3, 32, 32]);
    let y: Tensor = net.forward(&x).expect("forward");
    assert_eq!(y.shape, [4, 10]);
    let labels = Tensor::new(vec![4], vec![0.0, 1.0, 2.0, 3.0]).unwrap();
    let loss: f32 = net.train_step(&x, &labels, Loss::CrossEntropy, Sgd::default()).expect("step");
    assert!(loss.is_finite());
}
