// There is no Conv3d layer.
kiln::net! {
    struct Net {
        conv: Conv3d(1, 1, 3),
    }
    fn forward(x: [N, 1, 8, 8]) -> [N, 1, 8, 8] {
        x
    }
}

fn main() {}
