// Conv2d takes `stride`, not `strides`.
kiln::net! {
    struct Net {
        conv: Conv2d(1, 1, 3, strides = 2),
    }
    fn forward(x: [N, 1, 8, 8]) -> [N, 1, 3, 3] {
        conv(x)
    }
}

fn main() {}
