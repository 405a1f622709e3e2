//! Products scheduled as [`GemmTile::Micro`](crate::kernel::GemmTile::Micro):
//! the call to the ISA's driver with its [`GemmCall`] on the stack, then
//! the epilogue past `accumulate` as a pass over C.

use super::Fx;
use super::gemm::Ptrs;
use super::micro::{GEMM_CALL_FIELDS, GemmCall};
use crate::kernel::{ColumnWrap, Epilogue, Gemm};
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value};
use std::mem::offset_of;

/// A field of the call: a constant, a computed address, or a table's
/// address (null when absent).
enum Field {
    Const(i64),
    Value(Value),
    Table(Option<usize>),
}

impl Fx<'_, '_> {
    /// Calls the driver for `g` with a `rows x vectors` register tile (of
    /// `C^T = B^T A^T` when `transposed`).
    pub(super) fn micro_call(&mut self, g: &Gemm, p: &Ptrs, [rows, vectors]: [usize; 2], transposed: bool) {
        let driver = self.math.micro.expect("a micro tile in a program whose target names a product ISA");
        let bytes = (8 * GEMM_CALL_FIELDS) as u32;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 3));
        let table = |fx: &mut Self, t: Option<usize>| match t {
            Some(t) => fx.bufptr[&t],
            None => fx.iconst(0),
        };
        let wrap = |w: Option<ColumnWrap>| w.map_or((0, 0), |w| (w.row as i64, w.stride));
        let (b_wrap, c_wrap) = (wrap(g.b_wrap), wrap(g.c_wrap));
        let accumulate = i64::from(g.epilogue.accumulate);
        let fields: Vec<(usize, Field)> = if !transposed {
            vec![
                (offset_of!(GemmCall, m), Field::Const(g.m as i64)),
                (offset_of!(GemmCall, n), Field::Const(g.n as i64)),
                (offset_of!(GemmCall, k), Field::Const(g.k as i64)),
                (offset_of!(GemmCall, a), Field::Value(p.a)),
                (offset_of!(GemmCall, a_row), Field::Const(g.a.row_stride)),
                (offset_of!(GemmCall, a_col), Field::Const(g.a.col_stride)),
                (offset_of!(GemmCall, a_rows), Field::Table(None)),
                (offset_of!(GemmCall, a_seg), Field::Const(0)),
                (offset_of!(GemmCall, a_seg_stride), Field::Const(0)),
                (offset_of!(GemmCall, b), Field::Value(p.b)),
                (offset_of!(GemmCall, b_row), Field::Const(g.b.row_stride)),
                (offset_of!(GemmCall, b_col), Field::Const(g.b.col_stride)),
                (offset_of!(GemmCall, b_rows), Field::Table(g.b_rows)),
                (offset_of!(GemmCall, b_seg), Field::Const(0)),
                (offset_of!(GemmCall, b_seg_stride), Field::Const(0)),
                (offset_of!(GemmCall, wrap_row), Field::Const(b_wrap.0)),
                (offset_of!(GemmCall, wrap_stride), Field::Const(b_wrap.1)),
                (offset_of!(GemmCall, c), Field::Value(p.c)),
                (offset_of!(GemmCall, c_row), Field::Const(g.c.row_stride)),
                (offset_of!(GemmCall, c_col), Field::Const(g.c.col_stride)),
                (offset_of!(GemmCall, c_rows), Field::Table(g.c_rows)),
                (offset_of!(GemmCall, c_wrap_row), Field::Const(c_wrap.0)),
                (offset_of!(GemmCall, c_wrap_stride), Field::Const(c_wrap.1)),
                (offset_of!(GemmCall, accumulate), Field::Const(accumulate)),
                (offset_of!(GemmCall, rows), Field::Const(rows as i64)),
                (offset_of!(GemmCall, vectors), Field::Const(vectors as i64)),
            ]
        } else {
            // The dot form's B (rows: its columns, through the table;
            // reduction in segments) is the driver's A, its A the driver's
            // B, and C is stored transposed.
            // Without a split, the reduction is one segment.
            let (inner, a_stride, b_stride) = match g.k_split {
                Some(split) => ((g.k / split.outer.max(1)) as i64, split.a_stride, split.b_stride),
                None => (0, 0, 0),
            };
            vec![
                (offset_of!(GemmCall, m), Field::Const(g.n as i64)),
                (offset_of!(GemmCall, n), Field::Const(g.m as i64)),
                (offset_of!(GemmCall, k), Field::Const(g.k as i64)),
                (offset_of!(GemmCall, a), Field::Value(p.b)),
                (offset_of!(GemmCall, a_row), Field::Const(g.b.col_stride)),
                (offset_of!(GemmCall, a_col), Field::Const(g.b.row_stride)),
                (offset_of!(GemmCall, a_rows), Field::Table(g.b_rows)),
                (offset_of!(GemmCall, a_seg), Field::Const(inner)),
                (offset_of!(GemmCall, a_seg_stride), Field::Const(b_stride)),
                (offset_of!(GemmCall, b), Field::Value(p.a)),
                (offset_of!(GemmCall, b_row), Field::Const(g.a.col_stride)),
                (offset_of!(GemmCall, b_col), Field::Const(g.a.row_stride)),
                (offset_of!(GemmCall, b_rows), Field::Table(None)),
                (offset_of!(GemmCall, b_seg), Field::Const(inner)),
                (offset_of!(GemmCall, b_seg_stride), Field::Const(a_stride)),
                (offset_of!(GemmCall, wrap_row), Field::Const(0)),
                (offset_of!(GemmCall, wrap_stride), Field::Const(0)),
                (offset_of!(GemmCall, c), Field::Value(p.c)),
                (offset_of!(GemmCall, c_row), Field::Const(g.c.col_stride)),
                (offset_of!(GemmCall, c_col), Field::Const(g.c.row_stride)),
                (offset_of!(GemmCall, c_rows), Field::Table(None)),
                (offset_of!(GemmCall, c_wrap_row), Field::Const(0)),
                (offset_of!(GemmCall, c_wrap_stride), Field::Const(0)),
                (offset_of!(GemmCall, accumulate), Field::Const(accumulate)),
                (offset_of!(GemmCall, rows), Field::Const(rows as i64)),
                (offset_of!(GemmCall, vectors), Field::Const(vectors as i64)),
            ]
        };
        debug_assert_eq!(fields.len(), GEMM_CALL_FIELDS);
        let call = self.b.ins().stack_addr(I64, slot, 0);
        for (offset, field) in fields {
            let value = match field {
                Field::Const(c) => self.iconst(c),
                Field::Value(v) => v,
                Field::Table(t) => table(self, t),
            };
            self.b.ins().store(MemFlagsData::new().with_notrap(), value, call, offset as i32);
        }
        self.b.ins().call(driver, &[call]);
        let e = &g.epilogue;
        if e.bias.is_some() || e.activation.is_some() || e.pre_activation.is_some() || e.grad_mask.is_some() {
            self.epilogue_pass(g, p);
        }
    }

    /// The rest of `g`'s epilogue over the C the driver wrote: each row's
    /// whole vectors, then its last columns one by one.
    fn epilogue_pass(&mut self, g: &Gemm, p: &Ptrs) {
        let rest = Gemm { epilogue: Epilogue { accumulate: false, ..g.epilogue.clone() }, ..g.clone() };
        let full = g.n / 4 * 4;
        let flags = MemFlagsData::new().with_notrap();
        let (start, end) = (self.iconst(0), self.iconst(g.m as i64));
        self.counted_loop(start, end, 1, |fx, row| {
            if full > 0 {
                let (s, e) = (fx.iconst(0), fx.iconst(full as i64));
                fx.counted_loop(s, e, 4, |fx, col| {
                    let at = fx.element_addr(p.c, &rest.c, row, col);
                    let x = fx.b.ins().load(F32X4, flags, at, 0);
                    fx.finish(&rest, p, x, true, row, col, 4);
                });
            }
            for j in full..g.n {
                let col = fx.iconst(j as i64);
                let at = fx.element_addr(p.c, &rest.c, row, col);
                let x = fx.b.ins().load(F32, flags, at, 0);
                fx.finish(&rest, p, x, false, row, col, 1);
            }
        });
    }
}
