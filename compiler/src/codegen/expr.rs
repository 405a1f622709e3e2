//! Expression lowering: indices (through induction variables when live),
//! element addresses, lane patterns and shuffles, values, unary math,
//! conditions, lane masks and branch-free selects.

use super::affine::affine;
use super::{Fx, lane_offsets};
use crate::kernel::{BinOp, BufId, Cmp, Cond, Idx, UnOp, Val};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I8X16, I32, I32X4, I64};
use cranelift_codegen::ir::{ConstantData, Endianness, FuncRef, InstBuilder, MemFlagsData, Value};

fn int_cc(c: Cmp) -> IntCC {
    match c {
        Cmp::Lt => IntCC::SignedLessThan,
        Cmp::Le => IntCC::SignedLessThanOrEqual,
        Cmp::Eq => IntCC::Equal,
        Cmp::Gt => IntCC::SignedGreaterThan,
        Cmp::Ge => IntCC::SignedGreaterThanOrEqual,
    }
}

fn float_cc(c: Cmp) -> FloatCC {
    match c {
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Eq => FloatCC::Equal,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
    }
}

impl Fx<'_, '_> {
    /// An index value; for the vector loop's variable, lane `lane`'s value.
    pub(crate) fn idx(&mut self, i: &Idx, lane: i64) -> Value {
        if let Some(a) = affine(i) {
            if a.terms.is_empty() {
                return self.iconst(a.constant);
            }
            if let Some(&base) = self.ivs.get(&a) {
                let c = self.lane.map_or(0, |v| a.coefficient(v));
                return if c != 0 && lane != 0 { self.b.ins().iadd_imm_s(base, c * lane) } else { base };
            }
        }
        match i {
            Idx::Const(c) => self.iconst(*c),
            Idx::Var(v) => {
                let x = self.vars[v];
                if Some(*v) == self.lane && lane != 0 { self.b.ins().iadd_imm_s(x, lane) } else { x }
            }
            Idx::Add(a, b) => {
                let (a, b) = (self.idx(a, lane), self.idx(b, lane));
                self.b.ins().iadd(a, b)
            }
            Idx::Mul(a, k) => {
                let a = self.idx(a, lane);
                self.b.ins().imul_imm_s(a, *k)
            }
            Idx::Div(a, k) => {
                let a = self.idx(a, lane);
                self.b.ins().udiv_imm_s(a, *k)
            }
            Idx::Rem(a, k) => {
                let a = self.idx(a, lane);
                self.b.ins().urem_imm_s(a, *k)
            }
            Idx::Min(a, b) => {
                let (a, b) = (self.idx(a, lane), self.idx(b, lane));
                self.b.ins().smin(a, b)
            }
            Idx::Max(a, b) => {
                let (a, b) = (self.idx(a, lane), self.idx(b, lane));
                self.b.ins().smax(a, b)
            }
            Idx::Xor(a, b) => {
                let (a, b) = (self.idx(a, lane), self.idx(b, lane));
                self.b.ins().bxor(a, b)
            }
            Idx::FloatTable(t, a) => {
                let a = self.idx(a, lane);
                let addr = self.addr(*t, a);
                let flags = self.load_flags(*t);
                let x = self.b.ins().load(F32, flags, addr, 0);
                self.b.ins().fcvt_to_sint(I64, x)
            }
            Idx::Table(t, a) => {
                let a = self.idx(a, lane);
                let addr = self.addr(*t, a);
                let flags = self.load_flags(*t);
                self.b.ins().sload32(flags, addr, 0)
            }
        }
    }

    /// Address of element `i` of `buf` for lane `lane`: a pointer induction
    /// variable when one is live, else computed.
    pub(crate) fn elem_addr(&mut self, buf: BufId, i: &Idx, lane: i64) -> Value {
        if let Some(mut a) = affine(i) {
            // Pointer induction variables are kept per form without its
            // constant (see `collect_affine`); the constant becomes an
            // immediate offset that the load or store folds in.
            a.buf = Some(buf);
            let constant = std::mem::take(&mut a.constant);
            if let Some(&p) = self.ivs.get(&a) {
                let c = self.lane.map_or(0, |v| a.coefficient(v));
                let off = 4 * (constant + c * lane);
                return if off != 0 { self.b.ins().iadd_imm_s(p, off) } else { p };
            }
        }
        let ix = self.idx(i, lane);
        self.addr(buf, ix)
    }

    /// Address of element `index` (an i64 value) of `buf`.
    pub(crate) fn addr(&mut self, buf: BufId, index: Value) -> Value {
        let base = self.bufptr[&buf];
        let off = self.b.ins().ishl_imm_s(index, 2);
        self.b.ins().iadd(base, off)
    }

    pub(super) fn uses_lane(&self, i: &Idx) -> bool {
        self.lane.is_some_and(|v| i.uses(v))
    }

    /// Lanes `lanes` (0-3 from `a`, 4-7 from `b`) of two `f32x4` vectors.
    pub(crate) fn shuffle_lanes(&mut self, a: Value, b: Value, lanes: [i64; 4]) -> Value {
        let bytes: Vec<u8> = lanes.iter().flat_map(|&l| (0..4).map(move |k| (l * 4 + k) as u8)).collect();
        let mask = match self.shuffle_masks.get(&bytes) {
            Some(&m) => m,
            None => {
                let m = self.b.func.dfg.immediates.push(ConstantData::from(bytes.clone()));
                self.shuffle_masks.insert(bytes, m);
                m
            }
        };
        let le = MemFlagsData::new().with_endianness(Endianness::Little);
        let (a, b) = (self.b.ins().bitcast(I8X16, le, a), self.b.ins().bitcast(I8X16, le, b));
        let r = self.b.ins().shuffle(a, b, mask);
        self.b.ins().bitcast(F32X4, le, r)
    }

    /// Lowers a value; `vec` selects the F32X4 form (one lane per iteration
    /// of the vector loop).
    pub(crate) fn val(&mut self, v: &Val, vec: bool) -> Value {
        match v {
            Val::Const(c) => self.fconst(*c, vec),
            Val::Load(buf, i) => {
                let flags = self.load_flags(*buf);
                if !vec || !self.uses_lane(i) {
                    let a = self.elem_addr(*buf, i, 0);
                    let x = self.b.ins().load(F32, flags, a, 0);
                    return if vec { self.splat(x) } else { x };
                }
                match lane_offsets(i, self.lane.unwrap()) {
                    Some([0, 0, 0, 0]) => {
                        let a = self.elem_addr(*buf, i, 0);
                        let x = self.b.ins().load(F32, flags, a, 0);
                        return self.splat(x);
                    }
                    Some([0, 1, 2, 3]) => {
                        let a = self.elem_addr(*buf, i, 0);
                        return self.b.ins().load(F32X4, flags, a, 0);
                    }
                    // A short constant pattern (stride 2, upsampling): one or
                    // two vector loads and a shuffle instead of four scalar
                    // loads. The extra lanes read at most 7 elements past
                    // the last one used, which the arena's tail slack covers.
                    Some(o) if o.iter().all(|l| (0..8).contains(l)) => {
                        let a = self.elem_addr(*buf, i, 0);
                        let lo = self.b.ins().load(F32X4, flags, a, 0);
                        let hi = if o.iter().all(|&l| l < 4) { lo } else { self.b.ins().load(F32X4, flags, a, 16) };
                        return self.shuffle_lanes(lo, hi, o);
                    }
                    _ => {}
                }
                let lanes = [0, 1, 2, 3].map(|l| {
                    let a = self.elem_addr(*buf, i, l);
                    self.b.ins().load(F32, flags, a, 0)
                });
                self.lanes_to_vector(lanes)
            }
            Val::Acc(a) => {
                let (var, is_vec) = self.accs[a];
                let x = self.b.use_var(var);
                if vec && !is_vec { self.splat(x) } else { x }
            }
            Val::Un(op, x) => {
                let x = self.val(x, vec);
                self.unary(*op, x, vec)
            }
            Val::Bin(op, a, b) => {
                let (a, b) = (self.val(a, vec), self.val(b, vec));
                match op {
                    BinOp::Add => self.b.ins().fadd(a, b),
                    BinOp::Sub => self.b.ins().fsub(a, b),
                    BinOp::Mul => self.b.ins().fmul(a, b),
                    BinOp::Div => self.b.ins().fdiv(a, b),
                }
            }
            Val::Select(c, a, b) => {
                if vec {
                    let m = self.mask(c);
                    let (a, b) = (self.val(a, true), self.val(b, true));
                    let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), m);
                    self.b.ins().bitselect(m, a, b)
                } else {
                    let c = self.cond(c);
                    let (a, b) = (self.val(a, false), self.val(b, false));
                    self.fselect(c, a, b)
                }
            }
            Val::FromIdx(i) => {
                // In a written-out loop, convert the value before the copies
                // (shared) and add this copy's constant offset.
                let split = affine(i).and_then(|a| self.iv_split.get(&a).copied());
                let (ix, off) = match split {
                    Some((base, off)) => (base, off),
                    None => (self.idx(i, 0), 0),
                };
                let root = self.b.ins().fcvt_from_sint(F32, ix);
                let with_offset = |fx: &mut Self| {
                    if off == 0 {
                        root
                    } else {
                        let c = fx.b.ins().f32const(off as f32);
                        fx.b.ins().fadd(root, c)
                    }
                };
                if !vec {
                    return with_offset(self);
                }
                let pattern = self.lane.filter(|_| self.uses_lane(i)).map(|v| lane_offsets(i, v));
                match pattern {
                    None if off == 0 => self.splat(root),
                    None => {
                        let x = self.splat(root);
                        let steps = self.f32x4_const([off as f32; 4]);
                        self.b.ins().fadd(x, steps)
                    }
                    // Lane 0 converted once, the other lanes (and this
                    // copy's offset) a constant step away.
                    Some(Some(o)) => {
                        let x = self.splat(root);
                        let steps = self.f32x4_const(o.map(|l| (l + off) as f32));
                        self.b.ins().fadd(x, steps)
                    }
                    Some(None) => {
                        let x = with_offset(self);
                        let mut lanes = [x; 4];
                        for (l, lane) in lanes.iter_mut().enumerate().skip(1) {
                            let ix = self.idx(i, l as i64);
                            *lane = self.b.ins().fcvt_from_sint(F32, ix);
                        }
                        self.lanes_to_vector(lanes)
                    }
                }
            }
        }
    }

    fn call_math(&mut self, f: FuncRef, x: Value, vec: bool) -> Value {
        if !vec {
            let call = self.b.ins().call(f, &[x]);
            return self.b.inst_results(call)[0];
        }
        let lanes = [0u8, 1, 2, 3].map(|l| {
            let xl = self.b.ins().extractlane(x, l);
            let call = self.b.ins().call(f, &[xl]);
            self.b.inst_results(call)[0]
        });
        self.lanes_to_vector(lanes)
    }

    pub(crate) fn unary(&mut self, op: UnOp, x: Value, vec: bool) -> Value {
        match op {
            UnOp::Neg => self.b.ins().fneg(x),
            UnOp::Relu => {
                // `x <= 0 ? 0 : x`: a NaN stays NaN, as in PyTorch. Done on
                // vectors even for a scalar (a float `select` would branch).
                let zero = self.fconst(0.0, vec);
                let (v, z) = if vec { (x, zero) } else { (self.b.ins().scalar_to_vector(F32X4, x), self.splat(zero)) };
                let m = self.b.ins().fcmp(FloatCC::LessThanOrEqual, v, z);
                let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), m);
                let r = self.b.ins().bitselect(m, z, v);
                if vec { r } else { self.b.ins().extractlane(r, 0) }
            }
            UnOp::Exp if vec => self.exp_f32x4(x),
            UnOp::Exp => self.via_f32x4(x, Self::exp_f32x4),
            UnOp::Tanh if vec => self.tanh_f32x4(x),
            UnOp::Tanh => self.via_f32x4(x, Self::tanh_f32x4),
            UnOp::Erf if vec => self.erf_f32x4(x),
            UnOp::Erf => self.via_f32x4(x, Self::erf_f32x4),
            UnOp::Sqrt => self.b.ins().sqrt(x),
            UnOp::Ln => self.call_math(self.math.ln, x, vec),
        }
    }

    /// A scalar condition (an `i8` truth value).
    pub(crate) fn cond(&mut self, c: &Cond) -> Value {
        match c {
            Cond::Index(op, a, b) => {
                let (a, b) = (self.idx(a, 0), self.idx(b, 0));
                self.b.ins().icmp(int_cc(*op), a, b)
            }
            Cond::Value(op, a, b) => {
                let (a, b) = (self.val(a, false), self.val(b, false));
                self.b.ins().fcmp(float_cc(*op), a, b)
            }
            Cond::IsNan(a) => {
                let a = self.val(a, false);
                self.b.ins().fcmp(FloatCC::Unordered, a, a)
            }
            Cond::And(a, b) => {
                let (a, b) = (self.cond(a), self.cond(b));
                self.b.ins().band(a, b)
            }
            Cond::Or(a, b) => {
                let (a, b) = (self.cond(a), self.cond(b));
                self.b.ins().bor(a, b)
            }
        }
    }

    /// A lane mask (`i32x4`, all ones where the condition holds).
    fn mask(&mut self, c: &Cond) -> Value {
        match c {
            Cond::Index(op, a, b) => {
                if self.uses_lane(a) || self.uses_lane(b) {
                    let lanes = [0, 1, 2, 3].map(|l| {
                        let (x, y) = (self.idx(a, l), self.idx(b, l));
                        let t = self.b.ins().icmp(int_cc(*op), x, y);
                        self.b.ins().bmask(I32, t)
                    });
                    let mut v = self.b.ins().scalar_to_vector(I32X4, lanes[0]);
                    for (l, &x) in lanes.iter().enumerate().skip(1) {
                        v = self.b.ins().insertlane(v, x, l as u8);
                    }
                    v
                } else {
                    let t = self.cond(c);
                    let m = self.b.ins().bmask(I32, t);
                    self.b.ins().splat(I32X4, m)
                }
            }
            Cond::Value(op, a, b) => {
                let (a, b) = (self.val(a, true), self.val(b, true));
                self.b.ins().fcmp(float_cc(*op), a, b)
            }
            Cond::IsNan(a) => {
                let a = self.val(a, true);
                self.b.ins().fcmp(FloatCC::Unordered, a, a)
            }
            Cond::And(a, b) => {
                let (a, b) = (self.mask(a), self.mask(b));
                self.b.ins().band(a, b)
            }
            Cond::Or(a, b) => {
                let (a, b) = (self.mask(a), self.mask(b));
                self.b.ins().bor(a, b)
            }
        }
    }

    /// `c ? a : b` on scalars without a branch (Cranelift lowers a float
    /// `select` to a jump, which mispredicts on data-dependent choices).
    pub(crate) fn fselect(&mut self, c: Value, a: Value, b: Value) -> Value {
        let m = self.b.ins().bmask(I32, c);
        let m = self.b.ins().scalar_to_vector(I32X4, m);
        let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), m);
        let (av, bv) = (self.b.ins().scalar_to_vector(F32X4, a), self.b.ins().scalar_to_vector(F32X4, b));
        let r = self.b.ins().bitselect(m, av, bv);
        self.b.ins().extractlane(r, 0)
    }
}
