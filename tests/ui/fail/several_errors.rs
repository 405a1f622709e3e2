// Every error of the declaration is reported, each at its own tokens.
kiln::net! {
    struct Net {
        a: Linear(3, 4),
        a: Linear(4, 2),
        b: Conv9d(1),
    }
    fn forward(x: [N, 4]) -> [N, 2] {
        let y = a(x);
        let z = q(y);
        a(w)
    }
}

fn main() {}
