// fc1 declares 16 * 4 * 4 = 256 input features, but conv2 -> pool gives [N, 16, 5, 5].
kiln::net! {
    pub struct LeNet {
        conv1: Conv2d(3, 6, 5),
        pool: MaxPool2d(2, 2),
        conv2: Conv2d(6, 16, 5),
        fc1: Linear(16 * 4 * 4, 120),
        fc2: Linear(120, 84),
        fc3: Linear(84, 10),
    }
    fn forward(x: [N, 3, 32, 32]) -> [N, 10] {
        let x = pool(relu(conv1(x)));
        let x = pool(relu(conv2(x)));
        let x = x.reshape([N, 400]);
        let x = relu(fc1(x));
        let x = relu(fc2(x));
        fc3(x)
    }
}

fn main() {}
