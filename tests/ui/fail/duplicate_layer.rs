// Two layers called `fc`.
kiln::net! {
    struct Net {
        fc: Linear(4, 4),
        fc: Linear(4, 2),
    }
    fn forward(x: [N, 4]) -> [N, 4] {
        fc(x)
    }
}

fn main() {}
