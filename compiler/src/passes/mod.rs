//! Graph and kernel passes, each a function from IR to IR: [`fuse`] (graph
//! to fused groups), [`layout`] (how each convolution's products read their
//! operands, asked by the kernel builder), [`schedule`] (threads, vectors,
//! register tiles),
//! [`plan_memory`] (arena offsets with reuse) and [`choose_lowering`] (how
//! each loop, dot tile and kernel is written out).

pub mod fuse;
pub mod layout;
pub mod lowering;
pub mod memory;
pub mod schedule;
pub mod tiles;

pub use fuse::{Fusion, Group, GroupKind, fuse};
pub use lowering::choose_lowering;
pub use memory::plan_memory;
pub use schedule::schedule;
