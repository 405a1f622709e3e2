// Stride 0 and dilation 0 are rejected where they are written.
kiln::net! {
    struct Net {
        conv: Conv2d(1, 1, 3, stride = 0),
        pool: MaxPool2d(2, dilation = 0),
    }
    fn forward(x: [N, 1, 8, 8]) -> [N, 1, 3, 3] {
        pool(conv(x))
    }
}

fn main() {}
