//! The lecture's CIFAR-10 classifier declared with `net!`: every shape is
//! checked at compile time. Runs a forward pass on a random batch and prints
//! the shapes and parameters. (Training on CIFAR-10 is `kiln train`.)
//!
//! Run with `cargo run --release --example lenet`.

use kiln::{ModelError, Tensor};

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

fn main() -> Result<(), ModelError> {
    let mut net = LeNet::init(0);
    println!("{}: {} parameters", net.graph().name, LeNet::NUM_PARAMETERS);
    for (key, t) in net.model().params() {
        println!("  {key:<13} {:?}", t.shape);
    }
    println!("forward graph:");
    for id in net.graph().node_ids() {
        let n = net.graph().node(id);
        if !n.op.is_leaf() || net.graph().inputs.contains(&id) {
            println!("  {:<10} {:<14} {}", n.name, n.op.mnemonic(), n.shape);
        }
    }

    // A random batch of 4 images in [-1, 1] (a simple LCG keeps it dependency-free).
    let batch = 4;
    let mut state = 12345u32;
    let data = (0..batch * 3 * 32 * 32)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect();
    let x = Tensor::new(vec![batch, 3, 32, 32], data).expect("batch");
    let logits = net.forward(&x)?;
    println!("input {:?} -> logits {:?}", x.shape, logits.shape);
    for (i, row) in logits.data.chunks(10).enumerate() {
        let class = row.iter().enumerate().fold(0, |b, (j, v)| if *v > row[b] { j } else { b });
        println!("  image {i}: predicted class {class}, logits {:.3?}", row);
    }
    Ok(())
}
