// `y` is never bound.
kiln::net! {
    struct Net {
        fc: Linear(4, 2),
    }
    fn forward(x: [N, 4]) -> [N, 2] {
        fc(y)
    }
}

fn main() {}
