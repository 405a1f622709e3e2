//! A dense row-major f32 tensor: the value type executors take and return.

/// A dense, row-major f32 tensor with concrete lengths.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Tensor {
    /// Lengths, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements in row-major order.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from its parts; `None` when the lengths disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Tensor> {
        (shape.iter().product::<usize>() == data.len()).then_some(Tensor { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }

    /// A rank-0 tensor holding `v`.
    pub fn scalar(v: f32) -> Tensor {
        Tensor { shape: Vec::new(), data: vec![v] }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}
