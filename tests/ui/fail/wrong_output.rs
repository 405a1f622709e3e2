// The net produces [N, 10], not [N, 12].
kiln::net! {
    struct Net {
        fc1: Linear(20, 10),
    }
    fn forward(x: [N, 20]) -> [N, 12] {
        relu(fc1(x))
    }
}

fn main() {}
