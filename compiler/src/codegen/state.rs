//! [`Fx`], the state of lowering one kernel (shared by every lowering
//! module and `gemm.rs`), and its small emission helpers: memory flags,
//! constants, splats, FMA, counted loops, accumulator variables.

use super::{affine::Affine, gemm, math};
use crate::kernel::{AccId, BufId, RedOp, VarId};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{BlockArg, ConstantData, Immediate, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use std::collections::{HashMap, HashSet};

/// The state of lowering one kernel.
pub(crate) struct Fx<'a, 'f> {
    pub(crate) b: &'a mut FunctionBuilder<'f>,
    /// Address of each buffer used (this thread's copy for per-thread ones).
    pub(crate) bufptr: HashMap<BufId, Value>,
    /// Elements of each buffer used (of one thread's copy), and whether it
    /// is per thread.
    pub(crate) buf_len: HashMap<BufId, (usize, bool)>,
    /// Buffers the kernel writes (their loads are not `readonly`).
    pub(crate) written: HashSet<BufId>,
    /// Current value of each loop variable (lane 0 for the vector loop).
    pub(crate) vars: HashMap<VarId, Value>,
    /// Induction variables: the current value of each affine index form
    /// used inside the loops being lowered (strength-reduced: one add per
    /// iteration instead of the multiplications, which Cranelift would not
    /// hoist out of inner loops).
    pub(crate) ivs: HashMap<Affine, Value>,
    /// In written-out loop copies, each index form's value as the value
    /// before the copies plus a constant, so that converting it to `f32`
    /// is one conversion shared by all copies plus a constant.
    pub(crate) iv_split: HashMap<Affine, (Value, i64)>,
    /// The loop variable being vectorised, if any.
    pub(crate) lane: Option<VarId>,
    /// Shuffle masks made so far, so equal shuffles share one immediate
    /// (Cranelift merges identical instructions only when their immediates
    /// are the same handle).
    pub(crate) shuffle_masks: HashMap<Vec<u8>, Immediate>,
    /// Each live accumulator and whether it holds a vector.
    pub(crate) accs: HashMap<AccId, (Variable, bool)>,
    /// Lane partials of outer accumulators reduced inside the vector loop:
    /// the starting loop's `chains` independent vectors each.
    pub(crate) partials: HashMap<AccId, (Vec<Variable>, RedOp)>,
    /// Which of the partial vectors the vector body being emitted adds into.
    pub(crate) chain: usize,
    /// In an outer tile over wrapped B columns: this vector's B column.
    pub(crate) b_column: Option<gemm::WrappedColumn>,
    /// In an outer tile scattering into wrapped C columns: this vector's.
    pub(crate) c_column: Option<gemm::WrappedColumn>,
    /// The table offset of the scattered C row being finished, when the
    /// tile has read it already.
    pub(crate) c_row_offset: Option<Value>,
    /// In the overlapped last iteration of a vector loop (see
    /// [`VectorTail::Overlap`](crate::kernel::VectorTail::Overlap)): how
    /// many of its first lanes the iteration before already did; they
    /// contribute nothing to outer reductions.
    pub(crate) done_lanes: usize,
    pub(crate) math: math::Funcs,
    pub(crate) fma: bool,
    pub(super) lo: Value,
    pub(super) hi: Value,
}

impl Fx<'_, '_> {
    /// Flags for loads of `buf`: pure when the kernel never writes it.
    pub(crate) fn load_flags(&self, buf: BufId) -> MemFlagsData {
        if self.written.contains(&buf) {
            MemFlagsData::new().with_notrap()
        } else {
            MemFlagsData::new().with_notrap().with_readonly().with_can_move()
        }
    }

    /// `fma(a, b, c) = a * b + c`, fused when the ISA has FMA.
    pub(crate) fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    pub(crate) fn splat(&mut self, x: Value) -> Value {
        self.b.ins().splat(F32X4, x)
    }

    pub(crate) fn fconst(&mut self, c: f32, vec: bool) -> Value {
        let x = self.b.ins().f32const(c);
        if vec { self.splat(x) } else { x }
    }

    /// A top-tested counted loop `for i in (start..end).step_by(step)`.
    pub(crate) fn counted_loop(&mut self, start: Value, end: Value, step: i64, mut body: impl FnMut(&mut Self, Value)) {
        let header = self.b.create_block();
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        let i = self.b.append_block_param(header, I64);
        self.b.ins().jump(header, &[BlockArg::Value(start)]);
        self.b.switch_to_block(header);
        let go = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(go, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(exit);
    }

    pub(crate) fn iconst(&mut self, c: i64) -> Value {
        self.b.ins().iconst(I64, c)
    }

    /// A constant `f32x4`.
    pub(crate) fn f32x4_const(&mut self, lanes: [f32; 4]) -> Value {
        let bytes: Vec<u8> = lanes.iter().flat_map(|x| x.to_le_bytes()).collect();
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(F32X4, c)
    }

    /// Builds an F32X4 from four scalar values.
    pub(crate) fn lanes_to_vector(&mut self, lanes: [Value; 4]) -> Value {
        let mut v = self.b.ins().scalar_to_vector(F32X4, lanes[0]);
        for (l, &x) in lanes.iter().enumerate().skip(1) {
            v = self.b.ins().insertlane(v, x, l as u8);
        }
        v
    }

    /// Declares a fresh accumulator variable holding `x`.
    pub(crate) fn define_acc(&mut self, acc: AccId, x: Value, vec: bool) {
        let var = self.b.declare_var(if vec { F32X4 } else { F32 });
        self.b.def_var(var, x);
        self.accs.insert(acc, (var, vec));
    }
}
