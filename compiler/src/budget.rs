//! The memory a compiled program needs, checked before anything is allocated.
//!
//! Shapes are static, so the arena's size is known once memory is planned.
//! A model too big for the machine is refused with the bytes it needs and
//! its largest buffers, instead of aborting inside the allocator.

use crate::graph::{Graph, NodeId};
use crate::kernel::{BufferKind, Program};
use std::fmt;

/// Buffers named in an [`OutOfMemory`] error.
const LARGEST_SHOWN: usize = 3;

/// A program's memory need exceeds what the machine has available.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the model needs {} ({needed} bytes) of memory but only {} ({available} bytes) are available; \
     largest buffers: {}",
    Bytes(*needed),
    Bytes(*available),
    largest.iter().map(|(name, bytes)| format!("{name} {}", Bytes(*bytes))).collect::<Vec<_>>().join(", ")
)]
pub struct OutOfMemory {
    /// Bytes the program needs.
    pub needed: u64,
    /// Bytes the machine has available.
    pub available: u64,
    /// The largest buffers and their bytes, largest first.
    pub largest: Vec<(String, u64)>,
}

/// Bytes the arena of a memory-planned `program` takes (parameters, optimizer
/// state, activations, gradients and scratch all live in it).
pub fn arena_bytes(program: &Program) -> u64 {
    program.arena_len as u64 * 4
}

/// The `count` largest buffers of `program` with their bytes, largest first.
pub fn largest_buffers(program: &Program, count: usize) -> Vec<(String, u64)> {
    let mut sizes: Vec<(String, u64)> = program
        .buffers
        .iter()
        .map(|b| {
            let copies = if b.per_thread { program.threads.max(1) as u64 } else { 1 };
            let kind = match b.kind {
                BufferKind::Leaf(_) => "leaf",
                BufferKind::Value(_) => "value",
                BufferKind::Scratch => "scratch",
                BufferKind::ConstF32(_) | BufferKind::ConstI32(_) => "constant",
            };
            (format!("`{}` ({kind})", b.name), b.len as u64 * copies * 4)
        })
        .collect();
    sizes.sort_by_key(|s| std::cmp::Reverse(s.1));
    sizes.truncate(count);
    sizes
}

/// Refuses `program` when its arena needs more than `available` bytes.
pub fn check_fits(program: &Program, available: u64) -> Result<(), OutOfMemory> {
    let needed = arena_bytes(program);
    if needed <= available {
        return Ok(());
    }
    Err(OutOfMemory { needed, available, largest: largest_buffers(program, LARGEST_SHOWN) })
}

/// Bytes a model's parameters take on the host (one copy, `f32`).
pub fn parameter_bytes(graph: &Graph) -> u64 {
    graph.params.iter().fold(0u64, |sum, &p| sum.saturating_add(param_bytes(graph, p)))
}

fn param_bytes(graph: &Graph, p: NodeId) -> u64 {
    graph.node(p).shape.0.iter().fold(4u64, |n, d| n.saturating_mul(d.factor as u64))
}

/// Refuses a model whose parameters alone need more than `available` bytes,
/// before they are allocated.
pub fn check_parameters(graph: &Graph, available: u64) -> Result<(), OutOfMemory> {
    let needed = parameter_bytes(graph);
    if needed <= available {
        return Ok(());
    }
    let mut largest: Vec<(String, u64)> = graph
        .params
        .iter()
        .map(|&p| (format!("`{}` (parameter)", graph.node(p).name), param_bytes(graph, p)))
        .collect();
    largest.sort_by_key(|s| std::cmp::Reverse(s.1));
    largest.truncate(LARGEST_SHOWN);
    Err(OutOfMemory { needed, available, largest })
}

/// The memory this machine can give a new allocation: the kernel's
/// `MemAvailable` estimate where there is one (Linux), else unlimited (the
/// allocation itself is then tried fallibly).
pub fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| mem_available(&info)).unwrap_or(u64::MAX)
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A byte count for people: `1.5 GiB`.
#[derive(Clone, Copy, Debug)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 { write!(f, "{} B", self.0) } else { write!(f, "{value:.1} {}", UNITS[unit]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_print_in_binary_units() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(120_000_006_000_000_384).to_string(), "106.6 PiB");
    }

    #[test]
    fn meminfo_gives_available_bytes() {
        let info = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(mem_available(info), Some(20_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
    }
}
