//! The interpreter's arena: one flat `f32` array laid out by the program's
//! memory plan, with every access checked against the buffer it names.
//!
//! Besides bounds, the arena tracks what each buffer's space holds: a
//! buffer is `Fresh` after something wrote it, and `Clobbered` once a write
//! to another buffer sharing its space (memory planning reuses space
//! between buffers whose lifetimes do not overlap) has destroyed its value.
//! Reading a clobbered or never-written buffer is a fault: it is either a
//! memory-planning bug or a kernel whose `reads` list is wrong.

use super::Fault;
use crate::kernel::{BufId, BufferKind, Kernel, Program};

/// What a buffer's arena space holds at the moment.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Content {
    /// Nothing has written it yet.
    Unwritten,
    /// Its last value is intact.
    Fresh,
    /// The named kernel wrote another buffer over it.
    Clobbered(String),
}

/// How a kernel may touch a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// Not listed by the kernel at all.
    None,
    /// Listed in `reads` only.
    Read,
    /// Listed in `writes` (loads are allowed too, as in the JIT).
    Write,
}

/// The arena and what is known about each buffer in it.
pub(super) struct Arena {
    data: Vec<f32>,
    /// Per buffer: element offset, length (thread 0's copy for per-thread
    /// scratch), name, whether it is a constant, and its current content.
    starts: Vec<usize>,
    lens: Vec<usize>,
    names: Vec<String>,
    constant: Vec<bool>,
    tables: Vec<bool>,
    content: Vec<Content>,
    /// Per buffer: the other buffers whose space overlaps it (as the JIT
    /// lays them out, every thread's copy included) and that are not the
    /// same storage under another name (an in-place parameter update).
    overlaps: Vec<Vec<BufId>>,
    /// Per buffer: buffers that are the very same storage.
    aliases: Vec<Vec<BufId>>,
    /// The access the running kernel declared for each buffer.
    access: Vec<Access>,
}

impl Arena {
    /// Lays out `program`'s arena, constants written in. The caller has
    /// checked that every buffer lies inside `arena_len`.
    pub(super) fn new(program: &Program) -> Arena {
        let nb = program.buffers.len();
        let mut data = vec![0.0f32; program.arena_len];
        let mut content = vec![Content::Unwritten; nb];
        for (b, buf) in program.buffers.iter().enumerate() {
            let at = program.offsets[b];
            match &buf.kind {
                BufferKind::ConstF32(values) => data[at..at + values.len()].copy_from_slice(values),
                // Tables are stored as raw bits, exactly as the JIT stores them.
                BufferKind::ConstI32(values) => {
                    for (slot, &v) in data[at..at + values.len()].iter_mut().zip(values) {
                        *slot = f32::from_bits(v as u32);
                    }
                }
                _ => {}
            }
            if matches!(buf.kind, BufferKind::ConstF32(_) | BufferKind::ConstI32(_) | BufferKind::Leaf(_)) {
                content[b] = Content::Fresh;
            }
        }
        let span = |b: BufId| {
            let buf = &program.buffers[b];
            let copies = if buf.per_thread { program.threads.max(1) } else { 1 };
            (program.offsets[b], program.offsets[b] + buf.len * copies)
        };
        let same_storage = |a: BufId, b: BufId| {
            span(a) == span(b) && program.updates.iter().any(|&(l, n)| (l, n) == (a, b) || (n, l) == (a, b))
        };
        let mut overlaps = vec![Vec::new(); nb];
        let mut aliases = vec![Vec::new(); nb];
        for a in 0..nb {
            let (sa, ea) = span(a);
            for b in (0..nb).filter(|&b| b != a) {
                let (sb, eb) = span(b);
                if same_storage(a, b) {
                    aliases[a].push(b);
                } else if sa < eb && sb < ea {
                    overlaps[a].push(b);
                }
            }
        }
        Arena {
            data,
            starts: program.offsets.clone(),
            lens: program.buffers.iter().map(|b| b.len).collect(),
            names: program.buffers.iter().map(|b| b.name.clone()).collect(),
            constant: program
                .buffers
                .iter()
                .map(|b| matches!(b.kind, BufferKind::ConstF32(_) | BufferKind::ConstI32(_)))
                .collect(),
            tables: program.buffers.iter().map(|b| matches!(b.kind, BufferKind::ConstI32(_))).collect(),
            content,
            overlaps,
            aliases,
            access: vec![Access::None; nb],
        }
    }

    pub(super) fn name(&self, buf: BufId) -> String {
        self.names.get(buf).cloned().unwrap_or_else(|| format!("#{buf}"))
    }

    /// The arena position of element `index` of `buf`, checking that the
    /// running kernel declared the buffer (`write`: in its `writes`) and
    /// that the element exists.
    fn position(&self, buf: BufId, index: i64, write: bool) -> Result<usize, Fault> {
        let access = *self.access.get(buf).ok_or(Fault::UnknownBuffer(buf))?;
        match (access, write) {
            (Access::None | Access::Read, true) => return Err(Fault::UndeclaredWrite { buffer: self.name(buf) }),
            (Access::None, false) => return Err(Fault::UndeclaredRead { buffer: self.name(buf) }),
            _ => {}
        }
        let len = self.lens[buf];
        if index < 0 || index as u64 >= len as u64 {
            return Err(Fault::OutOfBounds { buffer: self.name(buf), index, len });
        }
        Ok(self.starts[buf] + index as usize)
    }

    /// `buf[index]`.
    pub(super) fn load(&self, buf: BufId, index: i64) -> Result<f32, Fault> {
        Ok(self.data[self.position(buf, index, false)?])
    }

    /// `buf[index]` of a [`BufferKind::ConstI32`] table.
    pub(super) fn load_i32(&self, buf: BufId, index: i64) -> Result<i32, Fault> {
        if !self.tables.get(buf).copied().unwrap_or(false) {
            return Err(Fault::NotATable { buffer: self.name(buf) });
        }
        Ok(self.data[self.position(buf, index, false)?].to_bits() as i32)
    }

    /// `buf[index] = value`.
    pub(super) fn store(&mut self, buf: BufId, index: i64, value: f32) -> Result<(), Fault> {
        let at = self.position(buf, index, true)?;
        self.data[at] = value;
        Ok(())
    }

    /// Prepares to run `kernel`: its declared buffers become accessible,
    /// and every buffer it only reads must hold an intact value.
    pub(super) fn enter(&mut self, kernel: &Kernel) -> Result<(), Fault> {
        self.access.iter_mut().for_each(|a| *a = Access::None);
        for &b in &kernel.reads {
            *self.access.get_mut(b).ok_or(Fault::UnknownBuffer(b))? = Access::Read;
        }
        for &b in &kernel.writes {
            if self.constant.get(b).copied().unwrap_or(false) {
                return Err(Fault::WritesConstant { buffer: self.name(b) });
            }
            *self.access.get_mut(b).ok_or(Fault::UnknownBuffer(b))? = Access::Write;
        }
        for &b in kernel.reads.iter().filter(|b| !kernel.writes.contains(b)) {
            match &self.content[b] {
                Content::Fresh => {}
                Content::Unwritten => return Err(Fault::Unwritten { buffer: self.name(b) }),
                Content::Clobbered(by) => return Err(Fault::Clobbered { buffer: self.name(b), by: by.clone() }),
            }
        }
        Ok(())
    }

    /// Records that `kernel` ran: what it wrote is fresh, what shares space
    /// with that is clobbered.
    pub(super) fn leave(&mut self, kernel: &Kernel) {
        for &w in &kernel.writes {
            self.mark_written(w, &kernel.name);
        }
        self.access.iter_mut().for_each(|a| *a = Access::None);
    }

    /// Records a write of `buf` by `writer` (a kernel, or the caller).
    pub(super) fn mark_written(&mut self, buf: BufId, writer: &str) {
        for &o in &self.overlaps[buf] {
            self.content[o] = Content::Clobbered(writer.to_string());
        }
        self.content[buf] = Content::Fresh;
        for &a in &self.aliases[buf] {
            self.content[a] = Content::Fresh;
        }
    }

    pub(super) fn content(&self, buf: BufId) -> &Content {
        &self.content[buf]
    }

    /// The elements of `buf` (thread 0's copy of per-thread scratch).
    pub(super) fn slice(&self, buf: BufId) -> &[f32] {
        &self.data[self.starts[buf]..self.starts[buf] + self.lens[buf]]
    }

    pub(super) fn slice_mut(&mut self, buf: BufId) -> &mut [f32] {
        &mut self.data[self.starts[buf]..self.starts[buf] + self.lens[buf]]
    }
}
