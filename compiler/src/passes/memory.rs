//! Memory planning: every buffer gets an offset in one arena.
//!
//! Leaves and constant tables live for the executable's lifetime. Values
//! and scratch live from the kernel that first writes them to the last
//! kernel that reads them (to the end for observable values); buffers whose
//! lifetimes do not overlap share space. A kernel output may take its input's
//! place when the kernel declares the pair in place and the input dies there.
//! A parameter's update is written in place when nothing reads the old value
//! afterwards; otherwise a copy kernel is appended.

use crate::kernel::{BufId, BufferKind, Emission, Idx, Kernel, LoopMode, Program, Stmt, Val};
use std::collections::HashSet;

/// Element alignment of every buffer (64 bytes).
const ALIGN: usize = 16;
/// Elements of slack after the arena, so vector tails may read past a
/// buffer's end without leaving the arena.
pub const ARENA_SLACK: usize = 64;
/// Elements after each buffer (after a per-thread buffer's last copy) that
/// no other buffer takes: the micro-kernels read a wrap row's partial last
/// vector in place up to this far past the buffer's end (its lanes past
/// the row are computed and never stored), 16 covering 512-bit vectors.
pub const READ_SLACK: usize = 16;

/// Assigns arena offsets to every buffer of `program`. `keep` buffers stay
/// valid until the end of a run (observable values).
pub fn plan_memory(mut program: Program, keep: &HashSet<BufId>) -> Program {
    let nb = program.buffers.len();
    let nk = program.kernels.len();

    // In-place parameter updates, else copies at the end.
    let mut alias: Vec<Option<BufId>> = vec![None; nb];
    let updates = program.updates.clone();
    for &(leaf, new) in &updates {
        let writers: Vec<usize> = (0..nk).filter(|&k| program.kernels[k].writes.contains(&new)).collect();
        let ok = match writers.as_slice() {
            [k] => {
                program.kernels[*k].in_place.contains(&(leaf, new))
                    && !program.kernels[k + 1..].iter().any(|kk| kk.reads.contains(&leaf) || kk.reads.contains(&new))
                    && alias[new].is_none()
            }
            _ => false,
        };
        if ok {
            alias[new] = Some(leaf);
        } else {
            let len = program.buffers[leaf].len;
            let body = vec![Stmt::lp(
                0,
                len,
                LoopMode::Vector,
                vec![Stmt::store(leaf, Idx::var(0), Val::load(new, Idx::var(0)))],
            )];
            program.kernels.push(Kernel {
                name: format!("update {}", program.buffers[leaf].name),
                nodes: Vec::new(),
                body,
                reads: vec![new],
                writes: vec![leaf],
                in_place: Vec::new(),
                flops: 0,
                threads: 1,
                emission: Emission::Optimised,
            });
        }
    }
    let nk = program.kernels.len();

    // Lifetimes [first, last] in kernel positions.
    let persistent = |b: BufId| {
        matches!(program.buffers[b].kind, BufferKind::Leaf(_) | BufferKind::ConstF32(_) | BufferKind::ConstI32(_))
    };
    let mut first = vec![usize::MAX; nb];
    let mut last = vec![0usize; nb];
    for (k, kernel) in program.kernels.iter().enumerate() {
        for &b in kernel.writes.iter().chain(&kernel.reads) {
            first[b] = first[b].min(k);
            last[b] = last[b].max(k);
        }
    }
    for b in 0..nb {
        if keep.contains(&b) {
            last[b] = nk;
        }
        if first[b] == usize::MAX {
            first[b] = 0;
        }
    }

    let size = |b: BufId| {
        let buf = &program.buffers[b];
        let copies = if buf.per_thread { program.threads } else { 1 };
        (buf.len * copies + READ_SLACK).div_ceil(ALIGN) * ALIGN
    };
    let mut offsets = vec![0usize; nb];
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, size, first, last)
    let mut top = 0usize;
    // Persistent buffers first, one after another.
    for (b, offset) in offsets.iter_mut().enumerate() {
        if persistent(b) {
            *offset = top;
            top += size(b);
        }
    }
    let persistent_end = top;
    // Then the rest, by first use; in-place outputs take their input's slot.
    let mut order: Vec<BufId> = (0..nb).filter(|&b| !persistent(b) && alias[b].is_none()).collect();
    order.sort_by_key(|&b| (first[b], std::cmp::Reverse(size(b))));
    let mut slot_of: Vec<Option<usize>> = vec![None; nb];
    let mut done: HashSet<BufId> = HashSet::new();
    for &b in &order {
        let k = first[b];
        let reuse = program.kernels.get(k).and_then(|kernel| {
            kernel.in_place.iter().find_map(|&(i, o)| {
                (o == b
                    && done.contains(&i)
                    && !persistent(i)
                    && last[i] == k
                    && !keep.contains(&i)
                    && size(i) == size(b)
                    && matches!(program.buffers[i].kind, BufferKind::Value(_)))
                .then_some(i)
            })
        });
        if let Some(i) = reuse {
            // One output per freed input: a second output of the same
            // kernel taking this slot too would overwrite the first.
            done.remove(&i);
            let slot = slot_of[i].expect("placed");
            offsets[b] = offsets[i];
            placed[slot].3 = placed[slot].3.max(last[b]);
            slot_of[b] = Some(slot);
            done.insert(b);
            continue;
        }
        let sz = size(b);
        let offset = lowest_free_offset(persistent_end, sz, &placed, first[b], last[b]);
        offsets[b] = offset;
        placed.push((offset, sz, first[b], last[b]));
        slot_of[b] = Some(placed.len() - 1);
        top = top.max(offset + sz);
        done.insert(b);
    }
    for b in 0..nb {
        if let Some(leaf) = alias[b] {
            offsets[b] = offsets[leaf];
        }
    }
    program.offsets = offsets;
    program.arena_len = top + ARENA_SLACK;
    program
}

/// The lowest offset at or above `floor` where `size` elements fit beside
/// every placed block `(offset, size, first, last)` alive during
/// `[first, last]`. Only blocks alive at the same time are looked at, in
/// offset order: a sweep that skips past each block that collides, so
/// planning costs O(live log live) per buffer rather than O(placed²).
fn lowest_free_offset(
    floor: usize,
    size: usize,
    placed: &[(usize, usize, usize, usize)],
    first: usize,
    last: usize,
) -> usize {
    let mut live: Vec<(usize, usize)> = placed
        .iter()
        .filter(|&&(_, _, pf, pl)| !(pl < first || last < pf))
        .map(|&(po, ps, _, _)| (po, po + ps))
        .collect();
    live.sort_unstable();
    let mut offset = floor;
    for (start, end) in live {
        if start >= offset + size {
            break;
        }
        offset = offset.max(end);
    }
    offset
}
