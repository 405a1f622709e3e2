//! kiln's compiler: one front end for `net!` and `.net` files, a graph IR with
//! static shapes, autodiff as a graph transformation, and the reference
//! interpreter every backend is tested against.
#![warn(missing_docs)]

pub mod autodiff;
pub mod codegen;
pub mod emit;
pub mod frontend;
pub mod graph;
pub mod infer;
pub mod interp;
pub mod jit;
pub mod kernel;
pub mod ops;
pub mod passes;
pub mod shape;
pub mod tensor;

pub use graph::{Graph, Node, NodeId, Stage, Training};
pub use ops::{Activation, BinaryOp, Conv2d, Loss, Op, PaddingMode, Pool2d, Resize, ResizeMode, Sgd};
pub use shape::{Dim, Shape};
pub use tensor::Tensor;
