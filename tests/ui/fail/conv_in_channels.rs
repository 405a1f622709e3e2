// conv2 expects 8 input channels, but conv1 -> pool gives 6.
kiln::net! {
    pub struct Net {
        conv1: Conv2d(3, 6, 5),
        pool: MaxPool2d(2, 2),
        conv2: Conv2d(8, 16, 5),
    }
    fn forward(x: [N, 3, 32, 32]) -> [N, 16, 5, 5] {
        let x = pool(relu(conv1(x)));
        pool(relu(conv2(x)))
    }
}

fn main() {}
