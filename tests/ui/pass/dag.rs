// A DAG: a skip connection, a concatenation, a layer called twice, two outputs.
use kiln::Tensor;

kiln::net! {
    struct Dag {
        stem: Conv2d(3, 8, 3, padding = 1),
        body: Conv2d(8, 8, 3, padding = 1),
        head: Linear(16 * 8 * 8, 10),
    }
    fn forward(x: [N, 3, 8, 8]) -> ([N, 10], [N, 16, 8, 8]) {
        let a = relu(stem(x));
        let b = body(relu(body(a)));
        let s = a + b;
        let c = cat([a, s], 1);
        let y = head(c.flatten(1));
        (y, c)
    }
}

fn main() {
    assert_eq!(Dag::PARAM_NAMES, ["stem.weight", "stem.bias", "body.weight", "body.bias", "head.weight", "head.bias"]);
    let mut net = Dag::init(7);
    let (y, c): (Tensor, Tensor) = net.forward(&Tensor::zeros(&[2, 3, 8, 8])).expect("forward");
    assert_eq!(y.shape, [2, 10]);
    assert_eq!(c.shape, [2, 16, 8, 8]);
}
