//! Static shapes with one symbolic dimension: the batch `N`.
//!
//! A declaration is checked once for every batch size, so an axis length is
//! either a constant `k` or `k * N`. Executors turn a [`Shape`] into concrete
//! lengths with [`Shape::at_batch`] when a graph is compiled for a batch.

use std::fmt;

/// One axis length: `factor`, times the batch `N` when `batched` is set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Dim {
    /// The constant part of the length.
    pub factor: usize,
    /// Whether the length is multiplied by the batch size `N`.
    pub batched: bool,
}

impl Dim {
    /// A constant length.
    pub const fn fixed(factor: usize) -> Dim {
        Dim { factor, batched: false }
    }

    /// The batch length `N`.
    pub const fn batch() -> Dim {
        Dim { factor: 1, batched: true }
    }

    /// The constant length, or `None` when the axis depends on `N`.
    pub fn as_fixed(self) -> Option<usize> {
        (!self.batched).then_some(self.factor)
    }

    /// The concrete length for batch size `n`.
    pub fn at_batch(self, n: usize) -> usize {
        if self.batched { self.factor * n } else { self.factor }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.batched, self.factor) {
            (false, k) => write!(f, "{k}"),
            (true, 1) => write!(f, "N"),
            (true, k) => write!(f, "N*{k}"),
        }
    }
}

/// The shape of a value: one [`Dim`] per axis, outermost first (NCHW for images).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape of constant lengths.
    pub fn fixed(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::fixed(d)).collect())
    }

    /// The shape of a scalar (rank 0).
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Concrete lengths for batch size `n`.
    pub fn at_batch(&self, n: usize) -> Vec<usize> {
        self.0.iter().map(|d| d.at_batch(n)).collect()
    }

    /// Number of elements for batch size `n`.
    pub fn numel_at(&self, n: usize) -> usize {
        self.0.iter().map(|d| d.at_batch(n)).product()
    }

    /// Number of elements as a [`Dim`], or `None` when `N` would appear squared.
    pub fn numel(&self) -> Option<Dim> {
        let mut out = Dim::fixed(1);
        for d in &self.0 {
            if d.batched && out.batched {
                return None;
            }
            out = Dim { factor: out.factor * d.factor, batched: out.batched || d.batched };
        }
        Some(out)
    }

    /// Whether any axis depends on the batch size.
    pub fn is_batched(&self) -> bool {
        self.0.iter().any(|d| d.batched)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// Output length of a sliding window along one axis (the lecture's formula):
/// `floor((len - K' + 2P) / S) + 1` with the dilated extent `K' = K + (K - 1)(D - 1)`.
///
/// Returns `None` when the dilated kernel does not fit in the padded input
/// (the output would be empty) or when `stride` is zero.
pub fn window_output_len(len: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> Option<usize> {
    if stride == 0 || kernel == 0 || dilation == 0 {
        return None;
    }
    let extent = kernel + (kernel - 1) * (dilation - 1);
    let padded = len + 2 * padding;
    (padded >= extent).then(|| (padded - extent) / stride + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lecture_example_1024_by_3x3() {
        assert_eq!(window_output_len(1024, 3, 1, 0, 1), Some(1022));
        assert_eq!(window_output_len(1024, 3, 1, 1, 1), Some(1024));
        assert_eq!(window_output_len(1024, 3, 2, 1, 1), Some(512));
        assert_eq!(window_output_len(1024, 3, 1, 0, 2), Some(1020));
    }

    #[test]
    fn numel_keeps_batch_symbolic() {
        let s = Shape(vec![Dim::batch(), Dim::fixed(16), Dim::fixed(5), Dim::fixed(5)]);
        assert_eq!(s.numel(), Some(Dim { factor: 400, batched: true }));
        assert_eq!(s.to_string(), "[N, 16, 5, 5]");
    }
}
