// A 7x7 kernel does not fit a 4x4 input padded by 1 (6x6), nor a dilated 3x3 (extent 7).
kiln::net! {
    struct Net {
        big: Conv2d(1, 1, 7, padding = 1),
        dilated: Conv2d(1, 1, 3, dilation = 3),
    }
    fn forward(x: [N, 1, 4, 4], y: [N, 1, 6, 6]) -> ([N, 1, 1, 1], [N, 1, 1, 1]) {
        (big(x), dilated(y))
    }
}

fn main() {}
