//! After memory planning: every buffer has an offset, fits the arena with
//! its read slack, and shares memory only with buffers that are never live
//! at the same time.
//!
//! Liveness is re-derived from the program alone: leaves and constant
//! tables live throughout; any other buffer from the first to the last
//! kernel that lists it in `reads` or `writes` (a buffer no kernel lists is
//! not checked). What the caller keeps observable after a run is not part
//! of the program, so a kept value that a later buffer reuses is beyond
//! this check. Two sharings are intended: an in-place pair whose input dies
//! in the kernel where its output is born, and an in-place parameter
//! update, whose new value takes its leaf's place.

use super::{ARENA_SLACK, Problem, Sink, label};
use crate::kernel::{BufId, BufferKind, Program};

/// Elements `[start, end)` of the arena a buffer occupies (all its thread copies).
fn span(program: &Program, b: BufId) -> (usize, usize) {
    let buf = &program.buffers[b];
    let copies = if buf.per_thread { program.threads.max(1) } else { 1 };
    let start = program.offsets[b];
    (start, start.saturating_add(buf.len.saturating_mul(copies)))
}

/// Kernel positions `[first, last]` where `b` is live, or `None` when no
/// kernel uses it.
fn lifetime(program: &Program, b: BufId) -> Option<(usize, usize)> {
    let everywhere = (0, program.kernels.len().saturating_sub(1));
    match program.buffers[b].kind {
        BufferKind::Leaf(_) | BufferKind::ConstF32(_) | BufferKind::ConstI32(_) => return Some(everywhere),
        BufferKind::Value(_) | BufferKind::Scratch => {}
    }
    let users = program.kernels.iter().enumerate().filter(|(_, k)| k.reads.contains(&b) || k.writes.contains(&b));
    users.fold(None, |life, (k, _)| match life {
        None => Some((k, k)),
        Some((first, _)) => Some((first, k)),
    })
}

/// Whether `a` and `b` may share memory although both are live.
fn intended_sharing(program: &Program, a: BufId, b: BufId, lives: &[Option<(usize, usize)>]) -> bool {
    let in_place_at = |input: BufId, output: BufId| {
        let (Some((_, input_last)), Some((output_first, _))) = (lives[input], lives[output]) else {
            return false;
        };
        input_last == output_first && program.kernels[output_first].in_place.contains(&(input, output))
    };
    let update = |leaf: BufId, new: BufId| {
        program.updates.contains(&(leaf, new)) && program.kernels.iter().any(|k| k.in_place.contains(&(leaf, new)))
    };
    in_place_at(a, b) || in_place_at(b, a) || update(a, b) || update(b, a)
}

pub(super) fn check_arena(sink: &mut Sink<'_>) {
    let program = sink.program;
    let n = program.buffers.len();
    if program.offsets.len() != n {
        sink.program_error(Problem::OffsetsLength { offsets: program.offsets.len(), buffers: n });
        return;
    }
    let limit = program.arena_len.saturating_sub(ARENA_SLACK);
    for b in 0..n {
        let (start, end) = span(program, b);
        if end > limit {
            let buffer = label(program, b);
            sink.program_error(Problem::OutsideArena { buffer, start, end, limit, arena: program.arena_len });
        }
    }
    let lives: Vec<Option<(usize, usize)>> = (0..n).map(|b| lifetime(program, b)).collect();
    for a in 0..n {
        for b in a + 1..n {
            let (Some((fa, la)), Some((fb, lb))) = (lives[a], lives[b]) else { continue };
            let ((sa, ea), (sb, eb)) = (span(program, a), span(program, b));
            let (from, to) = (fa.max(fb), la.min(lb));
            let both_live = from <= to;
            let share_memory = sa < eb && sb < ea;
            if both_live && share_memory && !intended_sharing(program, a, b, &lives) {
                let (a, b) = (label(program, a), label(program, b));
                let problem = Problem::Overlap { a, a_start: sa, a_end: ea, b, b_start: sb, b_end: eb, from, to };
                sink.program_error(problem);
            }
        }
    }
}
