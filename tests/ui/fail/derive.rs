// net! implements Debug and Clone itself; a derive on the declaration is an error at the attribute.
kiln::net! {
    #[derive(Clone)]
    struct Net {
        fc: Linear(4, 2),
    }
    fn forward(x: [N, 4]) -> [N, 2] {
        fc(x)
    }
}

fn main() {}
