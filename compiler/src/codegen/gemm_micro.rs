//! Products scheduled as [`GemmTile::Micro`](crate::kernel::GemmTile::Micro):
//! the call to the ISA's driver with its [`GemmCall`] on the stack, which
//! adds the bias and applies a ReLU itself where C's layout lets it
//! ([`finishes_epilogue`]); any other epilogue past `accumulate` is a pass
//! over C after the call.

use super::Fx;
use super::gemm::Ptrs;
use super::micro::{GEMM_CALL_FIELDS, GemmCall, finishes_epilogue};
use crate::kernel::{Bias, ColumnWrap, Epilogue, Gemm};
use crate::ops::Activation;
use crate::passes::memory::READ_SLACK;
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

/// One matrix of the call as [`GemmCall`] describes it: its origin, row and
/// column strides, row table, reduction segments `(length, stride)` and
/// column wrap `(row, stride)`.
#[derive(Clone, Copy)]
struct Side {
    base: Value,
    row: i64,
    col: i64,
    table: Option<usize>,
    seg: (i64, i64),
    wrap: (i64, i64),
}

impl Side {
    /// The same elements seen transposed.
    fn swapped(self) -> Side {
        Side { row: self.col, col: self.row, ..self }
    }
}

impl Fx<'_, '_> {
    /// Calls the driver for `g` with a `rows x vectors` register tile (of
    /// `C^T = B^T A^T` when `transposed`).
    pub(super) fn micro_call(&mut self, g: &Gemm, p: &Ptrs, [rows, vectors]: [usize; 2], transposed: bool) {
        let driver = self.math.micro.expect("a micro tile in a program whose target names a product ISA");
        let bytes = (8 * GEMM_CALL_FIELDS) as u32;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 3));
        let wrap = |w: Option<ColumnWrap>| w.map_or((0, 0), |w| (w.row as i64, w.stride));
        // The dot form's reduction segments (a split along output rows).
        let (inner, a_seg, b_seg) = match g.k_split {
            Some(s) => ((g.k / s.outer.max(1)) as i64, s.a_stride, s.b_stride),
            None => (0, 0, 0),
        };
        let ir_a = Side {
            base: p.a,
            row: g.a.row_stride,
            col: g.a.col_stride,
            table: None,
            seg: (inner, a_seg),
            wrap: (0, 0),
        };
        let ir_b = Side {
            base: p.b,
            row: g.b.row_stride,
            col: g.b.col_stride,
            table: g.b_rows,
            seg: (inner, b_seg),
            wrap: wrap(g.b_wrap),
        };
        let ir_c = Side {
            base: p.c,
            row: g.c.row_stride,
            col: g.c.col_stride,
            table: g.c_rows,
            seg: (0, 0),
            wrap: wrap(g.c_wrap),
        };
        // Transposed, the dot form's B (its columns through the table) is
        // the driver's A, its A the driver's B, and C is stored transposed:
        // each operand with its row and column strides swapped.
        let ((m, n), a, b, c) = if transposed {
            ((g.n, g.m), ir_b.swapped(), ir_a.swapped(), ir_c.swapped())
        } else {
            ((g.m, g.n), ir_a, ir_b, ir_c)
        };
        // How far the driver may read B: to the end of this thread's copy
        // of a per-thread buffer (the copies lie end to end), or past a
        // shared one's end by the slack no other buffer takes.
        let b_buf = if transposed { g.a.buf } else { g.b.buf };
        let (len, per_thread) = self.buf_len[&b_buf];
        let readable = if per_thread { len } else { len + READ_SLACK };
        let b_end = self.b.ins().iadd_imm_s(self.bufptr[&b_buf], (readable * 4) as i64);
        // The driver adds the bias and applies a ReLU to each column
        // block's final sums itself when C's layout lets it; any other
        // epilogue is a pass over C after the call.
        let e = &g.epilogue;
        let driver_finishes = e.pre_activation.is_none()
            && e.grad_mask.is_none()
            && matches!(e.activation, None | Some(Activation::Relu))
            && (e.bias.is_some() || e.activation.is_some())
            && finishes_epilogue(c.row, c.col, c.table.is_some(), c.wrap.0);
        let (bias, bias_per_row) = match (&e.bias, p.bias) {
            // The kernel IR's rows are the driver's columns when transposed.
            (Some(bias), Some(at)) if driver_finishes => {
                (Field::Value(at), Field::Const(i64::from(matches!(bias, Bias::PerRow(..)) != transposed)))
            }
            _ => (Field::Const(0), Field::Const(0)),
        };
        let relu = Field::Const(i64::from(driver_finishes && e.activation.is_some()));
        let fields: [(usize, Field); GEMM_CALL_FIELDS] = [
            (offset_of!(GemmCall, m), Field::Const(m as i64)),
            (offset_of!(GemmCall, n), Field::Const(n as i64)),
            (offset_of!(GemmCall, k), Field::Const(g.k as i64)),
            (offset_of!(GemmCall, a), Field::Value(a.base)),
            (offset_of!(GemmCall, a_row), Field::Const(a.row)),
            (offset_of!(GemmCall, a_col), Field::Const(a.col)),
            (offset_of!(GemmCall, a_rows), Field::Table(a.table)),
            (offset_of!(GemmCall, a_seg), Field::Const(a.seg.0)),
            (offset_of!(GemmCall, a_seg_stride), Field::Const(a.seg.1)),
            (offset_of!(GemmCall, b), Field::Value(b.base)),
            (offset_of!(GemmCall, b_row), Field::Const(b.row)),
            (offset_of!(GemmCall, b_col), Field::Const(b.col)),
            (offset_of!(GemmCall, b_rows), Field::Table(b.table)),
            (offset_of!(GemmCall, b_seg), Field::Const(b.seg.0)),
            (offset_of!(GemmCall, b_seg_stride), Field::Const(b.seg.1)),
            (offset_of!(GemmCall, wrap_row), Field::Const(b.wrap.0)),
            (offset_of!(GemmCall, wrap_stride), Field::Const(b.wrap.1)),
            (offset_of!(GemmCall, b_end), Field::Value(b_end)),
            (offset_of!(GemmCall, c), Field::Value(c.base)),
            (offset_of!(GemmCall, c_row), Field::Const(c.row)),
            (offset_of!(GemmCall, c_col), Field::Const(c.col)),
            (offset_of!(GemmCall, c_rows), Field::Table(c.table)),
            (offset_of!(GemmCall, c_wrap_row), Field::Const(c.wrap.0)),
            (offset_of!(GemmCall, c_wrap_stride), Field::Const(c.wrap.1)),
            (offset_of!(GemmCall, accumulate), Field::Const(i64::from(e.accumulate))),
            (offset_of!(GemmCall, bias), bias),
            (offset_of!(GemmCall, bias_per_row), bias_per_row),
            (offset_of!(GemmCall, relu), relu),
            (offset_of!(GemmCall, rows), Field::Const(rows as i64)),
            (offset_of!(GemmCall, vectors), Field::Const(vectors as i64)),
        ];
        let call = self.b.ins().stack_addr(I64, slot, 0);
        for (offset, field) in fields {
            let value = match field {
                Field::Const(c) => self.iconst(c),
                Field::Value(v) => v,
                Field::Table(Some(t)) => self.bufptr[&t],
                Field::Table(None) => self.iconst(0),
            };
            self.b.ins().store(MemFlagsData::new().with_notrap(), value, call, offset as i32);
        }
        self.b.ins().call(driver, &[call]);
        let rest = e.bias.is_some() || e.activation.is_some() || e.pre_activation.is_some() || e.grad_mask.is_some();
        if rest && !driver_finishes {
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
