//! The `net!` procedural macro.
