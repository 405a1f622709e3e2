//! kiln's compiler: one front end for `net!` and `.net` files, a graph IR with
//! static shapes, autodiff as a graph transformation, and the reference
//! interpreter every backend is tested against.
#![warn(missing_docs)]

pub mod autodiff;
pub mod backend;
pub mod budget;
pub mod codegen;
pub mod emit;
pub mod interp;
pub mod jit;
pub mod kernel;
pub mod mode;
pub mod passes;
pub mod target;
pub mod tensor;

/// The front end, the graph IR and shape inference live in `kiln-frontend`
/// (so the `net!` macro builds without Cranelift); re-exported here under
/// their historical paths.
pub use kiln_frontend as frontend;
pub use kiln_frontend::{graph, infer, ops, shape};

pub use graph::{Graph, Node, NodeId, Stage, Training};
pub use mode::Mode;
pub use ops::{Activation, BinaryOp, Conv2d, Loss, Op, PaddingMode, Pool2d, Resize, ResizeMode, Sgd};
pub use shape::{Dim, Shape};
pub use tensor::Tensor;
