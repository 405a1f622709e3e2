//! A fully connected network on two interleaved spirals: a two-class problem
//! no linear classifier solves. Reports train and test accuracy.
//!
//! Run with `cargo run --release --example mlp`.

use kiln::{Loss, ModelError, Sgd, Tensor};

kiln::net! {
    /// 2 -> 64 -> 64 -> 2 with tanh hidden units.
    pub struct SpiralMlp {
        fc1: Linear(2, 64),
        fc2: Linear(64, 64),
        fc3: Linear(64, 2),
    }
    fn forward(x: [N, 2]) -> [N, 2] {
        let h = tanh(fc1(x));
        let h = tanh(fc2(h));
        fc3(h)
    }
}

/// A small deterministic generator (SplitMix64), so the example needs no
/// random-number crate.
struct SplitMix(u64);

impl SplitMix {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `n` points per class on two spirals with a little noise: features `[2n, 2]`
/// and class labels `[2n]`.
fn spirals(n: usize, rng: &mut SplitMix) -> (Vec<[f32; 2]>, Vec<f32>) {
    let mut xs = Vec::with_capacity(2 * n);
    let mut ys = Vec::with_capacity(2 * n);
    for class in 0..2 {
        for i in 0..n {
            let r = 0.1 + 0.9 * i as f32 / n as f32;
            let t = 3.0 * std::f32::consts::PI * i as f32 / n as f32 + class as f32 * std::f32::consts::PI;
            let (dx, dy) = (0.04 * (rng.next_f32() - 0.5), 0.04 * (rng.next_f32() - 0.5));
            xs.push([2.0 * (r * t.cos() + dx), 2.0 * (r * t.sin() + dy)]);
            ys.push(class as f32);
        }
    }
    (xs, ys)
}

fn batch(xs: &[[f32; 2]], ys: &[f32], idx: &[usize]) -> (Tensor, Tensor) {
    let x = idx.iter().flat_map(|&i| xs[i]).collect();
    let y = idx.iter().map(|&i| ys[i]).collect();
    (Tensor::new(vec![idx.len(), 2], x).expect("n x 2"), Tensor::new(vec![idx.len()], y).expect("n"))
}

fn accuracy(net: &mut SpiralMlp, xs: &[[f32; 2]], ys: &[f32]) -> Result<f32, ModelError> {
    let idx: Vec<usize> = (0..xs.len()).collect();
    let (x, y) = batch(xs, ys, &idx);
    let logits = net.forward(&x)?;
    let correct = logits.data.chunks(2).zip(&y.data).filter(|&(l, &t)| f32::from(u8::from(l[1] > l[0])) == t).count();
    Ok(correct as f32 / ys.len() as f32)
}

fn main() -> Result<(), ModelError> {
    let mut rng = SplitMix(7);
    let (train_x, train_y) = spirals(300, &mut rng);
    let (test_x, test_y) = spirals(100, &mut rng);
    let mut net = SpiralMlp::init(0);
    net.model_mut().set_threads(1);
    println!(
        "SpiralMlp: {} parameters; {} training points, {} test points",
        SpiralMlp::NUM_PARAMETERS,
        train_x.len(),
        test_x.len()
    );

    let sgd = Sgd { lr: 0.1, momentum: 0.9, ..Sgd::default() };
    let batch_size = 30;
    let mut order: Vec<usize> = (0..train_x.len()).collect();
    for epoch in 1..=300 {
        // Fisher-Yates shuffle.
        for i in (1..order.len()).rev() {
            let j = (rng.next_f32() * (i + 1) as f32) as usize % (i + 1);
            order.swap(i, j);
        }
        let mut total = 0.0;
        for chunk in order.chunks(batch_size) {
            let (x, y) = batch(&train_x, &train_y, chunk);
            total += net.train_step(&x, &y, Loss::CrossEntropy, sgd)?;
        }
        if epoch % 50 == 0 {
            let batches = order.len().div_ceil(batch_size) as f32;
            println!(
                "epoch {epoch:>3}: loss {:.4}, train accuracy {:.1}%",
                total / batches,
                100.0 * accuracy(&mut net, &train_x, &train_y)?
            );
        }
    }
    let test = accuracy(&mut net, &test_x, &test_y)?;
    println!("test accuracy {:.1}%", 100.0 * test);
    Ok(())
}
