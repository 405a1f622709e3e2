//! Products scheduled as [`GemmTile::Micro`](crate::kernel::GemmTile::Micro):
//! the call to the ISA's driver with its [`GemmCall`] on the stack, then
//! the epilogue past `accumulate` as a pass over C.

use super::Fx;
use super::gemm::Ptrs;
use super::micro::{GEMM_CALL_FIELDS, GemmCall};
use crate::kernel::{Epilogue, Gemm};
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value};
use std::mem::offset_of;

impl Fx<'_, '_> {
    /// Calls the driver for `g` with a `rows x vectors` register tile.
    pub(super) fn micro_call(&mut self, g: &Gemm, p: &Ptrs, rows: usize, vectors: usize) {
        let driver = self.math.micro.expect("a micro tile in a program whose target names a product ISA");
        let bytes = (8 * GEMM_CALL_FIELDS) as u32;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 3));
        let b_rows = match g.b_rows {
            Some(t) => self.bufptr[&t],
            None => self.iconst(0),
        };
        let c_rows = match g.c_rows {
            Some(t) => self.bufptr[&t],
            None => self.iconst(0),
        };
        let fields: [(usize, Value); GEMM_CALL_FIELDS] = [
            (offset_of!(GemmCall, m), self.iconst(g.m as i64)),
            (offset_of!(GemmCall, n), self.iconst(g.n as i64)),
            (offset_of!(GemmCall, k), self.iconst(g.k as i64)),
            (offset_of!(GemmCall, a), p.a),
            (offset_of!(GemmCall, a_row), self.iconst(g.a.row_stride)),
            (offset_of!(GemmCall, a_col), self.iconst(g.a.col_stride)),
            (offset_of!(GemmCall, b), p.b),
            (offset_of!(GemmCall, b_row), self.iconst(g.b.row_stride)),
            (offset_of!(GemmCall, b_col), self.iconst(g.b.col_stride)),
            (offset_of!(GemmCall, b_rows), b_rows),
            (offset_of!(GemmCall, wrap_row), self.iconst(g.b_wrap.map_or(0, |w| w.row as i64))),
            (offset_of!(GemmCall, wrap_stride), self.iconst(g.b_wrap.map_or(0, |w| w.stride))),
            (offset_of!(GemmCall, c), p.c),
            (offset_of!(GemmCall, c_row), self.iconst(g.c.row_stride)),
            (offset_of!(GemmCall, c_rows), c_rows),
            (offset_of!(GemmCall, c_wrap_row), self.iconst(g.c_wrap.map_or(0, |w| w.row as i64))),
            (offset_of!(GemmCall, c_wrap_stride), self.iconst(g.c_wrap.map_or(0, |w| w.stride))),
            (offset_of!(GemmCall, accumulate), self.iconst(i64::from(g.epilogue.accumulate))),
            (offset_of!(GemmCall, rows), self.iconst(rows as i64)),
            (offset_of!(GemmCall, vectors), self.iconst(vectors as i64)),
        ];
        let call = self.b.ins().stack_addr(I64, slot, 0);
        for (offset, value) in fields {
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
