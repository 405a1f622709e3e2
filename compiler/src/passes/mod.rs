//! Graph and kernel passes, each a function from IR to IR: [`fuse`] (graph
//! to fused groups), [`schedule`] (threads, vectors, register tiles) and
//! [`plan_memory`] (arena offsets with reuse).

pub mod fuse;
pub mod memory;
pub mod schedule;

pub use fuse::{Fusion, Group, GroupKind, fuse};
pub use memory::plan_memory;
pub use schedule::schedule;
