//! The lecture's perceptron: a weighted sum plus a bias, then a step.
//!
//! Trained with the perceptron criterion `mean(max(0, -y * s))` on ±1
//! targets, it learns AND and OR. On XOR it cannot reach 100%: no line
//! separates {(0,1), (1,0)} from {(0,0), (1,1)}, and a perceptron's decision
//! boundary `w·x + b = 0` is a line. A two-layer MLP with sigmoid units bends
//! the boundary and learns XOR.
//!
//! Run with `cargo run --release --example perceptron`.

use kiln::{Loss, ModelError, Sgd, Tensor};

kiln::net! {
    /// Rosenblatt's perceptron: the score `w·x + b` and its step.
    struct Perceptron {
        unit: Linear(2, 1),
    }
    fn forward(x: [N, 2]) -> ([N, 1], [N, 1]) {
        let score = unit(x);
        (score, step(score))
    }
}

kiln::net! {
    /// A two-layer perceptron with sigmoid units.
    struct XorMlp {
        hidden: Linear(2, 4),
        out: Linear(4, 1),
    }
    fn forward(x: [N, 2]) -> [N, 1] {
        sigmoid(out(sigmoid(hidden(x))))
    }
}

/// The four corners of the unit square.
fn corners() -> Tensor {
    Tensor::new(vec![4, 2], vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]).expect("4 x 2")
}

/// Truth table as ±1 targets `[4, 1]`.
fn targets(f: impl Fn(bool, bool) -> bool) -> Tensor {
    let data = [(false, false), (false, true), (true, false), (true, true)]
        .iter()
        .map(|&(a, b)| if f(a, b) { 1.0 } else { -1.0 })
        .collect();
    Tensor::new(vec![4, 1], data).expect("4 x 1")
}

/// Fraction of points whose step output matches the ±1 target.
fn perceptron_accuracy(net: &mut Perceptron, x: &Tensor, y: &Tensor) -> Result<f32, ModelError> {
    let (_, predicted) = net.forward(x)?;
    let correct = predicted.data.iter().zip(&y.data).filter(|&(&p, &t)| (p > 0.5) == (t > 0.0)).count();
    Ok(correct as f32 / y.data.len() as f32)
}

/// Trains a perceptron on one truth table; returns its best accuracy.
fn train_perceptron(name: &str, y: &Tensor) -> Result<f32, ModelError> {
    let x = corners();
    let mut net = Perceptron::init(1);
    net.model_mut().set_threads(1);
    let sgd = Sgd { lr: 0.5, ..Sgd::default() };
    let mut best = 0.0f32;
    for epoch in 1..=200 {
        let acc = perceptron_accuracy(&mut net, &x, y)?;
        best = best.max(acc);
        if acc == 1.0 {
            let w = &net.param("unit.weight").expect("weight").data;
            let b = net.param("unit.bias").expect("bias").data[0];
            println!(
                "{name:>3}: 100% after {} epoch(s); boundary {:.3}*x1 + {:.3}*x2 + {:.3} = 0",
                epoch - 1,
                w[0],
                w[1],
                b
            );
            return Ok(acc);
        }
        net.train_step(&x, y, Loss::Perceptron, sgd)?;
    }
    println!("{name:>3}: best accuracy {:.0}% in 200 epochs", best * 100.0);
    Ok(best)
}

fn main() -> Result<(), ModelError> {
    println!("Perceptron (weighted sum + bias + step), perceptron criterion, full batch:");
    let and = train_perceptron("AND", &targets(|a, b| a && b))?;
    let or = train_perceptron("OR", &targets(|a, b| a || b))?;
    let xor = train_perceptron("XOR", &targets(|a, b| a != b))?;
    assert!(and == 1.0 && or == 1.0, "AND and OR are linearly separable");
    assert!(xor < 1.0);
    println!(
        "XOR cannot be learned by a perceptron: it is not linearly separable. Its decision boundary \
         w1*x1 + w2*x2 + b = 0 is a line, and no line puts (0,1) and (1,0) on one side and (0,0) and \
         (1,1) on the other (adding the two conditions for each pair gives w1 + w2 + 2b > 0 and < 0)."
    );

    println!("\nTwo-layer MLP (2 -> 4 -> 1, sigmoid), MSE, SGD with momentum:");
    let x = corners();
    let y01 = Tensor::new(vec![4, 1], vec![0.0, 1.0, 1.0, 0.0]).expect("4 x 1");
    let mut mlp = XorMlp::init(0);
    mlp.model_mut().set_threads(1);
    let sgd = Sgd { lr: 0.5, momentum: 0.9, ..Sgd::default() };
    let mut loss = f32::NAN;
    for epoch in 0..3000 {
        loss = mlp.train_step(&x, &y01, Loss::Mse, sgd)?;
        if epoch % 1000 == 0 {
            println!("  epoch {epoch:>4}: loss {loss:.5}");
        }
    }
    let out = mlp.forward(&x)?;
    let correct = out.data.iter().zip(&y01.data).filter(|&(&p, &t)| (p > 0.5) == (t > 0.5)).count();
    println!("  final loss {loss:.5}; outputs {:.3?}", out.data);
    println!("XOR with the MLP: {}/4 correct", correct);
    assert_eq!(correct, 4, "the MLP learns XOR");
    Ok(())
}
