//! Statement lowering: stores, conditionals, and loops of each mode
//! (rolled with induction variables, rolled with several body copies,
//! written out, vector loops and their tails).

use super::Fx;
use super::affine::{Affine, collect_affine};
use crate::kernel::lowering::outer_reductions;
use crate::kernel::{BufId, Idx, Loop, LoopMode, RedOp, Stmt, Unroll, Val, VectorTail};
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};

impl Fx<'_, '_> {
    pub(crate) fn stmts(&mut self, body: &[Stmt], vec: bool) {
        for s in body {
            self.stmt(s, vec);
        }
    }

    fn stmt(&mut self, s: &Stmt, vec: bool) {
        match s {
            Stmt::Loop(l) => self.lower_loop(l, vec),
            Stmt::Store { buf, idx, val, accumulate } => self.store(*buf, idx, val, *accumulate, vec),
            Stmt::Let { acc, init } => {
                let x = self.val(init, vec);
                self.define_acc(*acc, x, vec);
            }
            Stmt::Reduce { acc, op, val } => {
                let x = self.val(val, vec);
                if vec && let Some((pvars, _)) = self.partials.get(acc) {
                    let pvar = pvars[self.chain % pvars.len()];
                    let x = self.without_done_lanes(x, if *op == RedOp::Max { f32::NEG_INFINITY } else { 0.0 });
                    let p = self.b.use_var(pvar);
                    let r = self.combine(*op, p, x, true);
                    self.b.def_var(pvar, r);
                    return;
                }
                let (var, is_vec) = self.accs[acc];
                let a = self.b.use_var(var);
                let r = self.combine(*op, a, x, is_vec);
                self.b.def_var(var, r);
            }
            Stmt::Set { acc, val } => {
                let (var, is_vec) = self.accs[acc];
                let x = self.val(val, is_vec);
                self.b.def_var(var, x);
            }
            Stmt::If { cond, then, otherwise } => {
                let c = self.cond(cond);
                let (tb, eb, merge) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
                self.b.ins().brif(c, tb, &[], eb, &[]);
                self.b.switch_to_block(tb);
                self.stmts(then, vec);
                self.b.ins().jump(merge, &[]);
                self.b.switch_to_block(eb);
                self.stmts(otherwise, vec);
                self.b.ins().jump(merge, &[]);
                self.b.switch_to_block(merge);
            }
            Stmt::Gemm(g) => self.gemm(g),
        }
    }

    fn store(&mut self, buf: BufId, idx: &Idx, val: &Val, accumulate: bool, vec: bool) {
        let x = self.val(val, vec);
        let flags = MemFlagsData::new().with_notrap();
        if !vec {
            let a = self.elem_addr(buf, idx, 0);
            let x = if accumulate {
                let old = self.b.ins().load(F32, flags, a, 0);
                self.b.ins().fadd(old, x)
            } else {
                x
            };
            self.b.ins().store(flags, x, a, 0);
            return;
        }
        if self.uses_lane(idx) && idx.coefficient(self.lane.unwrap()) == Some(1) {
            let a = self.elem_addr(buf, idx, 0);
            let x = if accumulate {
                let old = self.b.ins().load(F32X4, flags, a, 0);
                self.b.ins().fadd(old, x)
            } else {
                x
            };
            self.b.ins().store(flags, x, a, 0);
            return;
        }
        for l in 0..4u8 {
            let xl = self.b.ins().extractlane(x, l);
            let a = self.elem_addr(buf, idx, l as i64);
            let xl = if accumulate {
                let old = self.b.ins().load(F32, flags, a, 0);
                self.b.ins().fadd(old, xl)
            } else {
                xl
            };
            self.b.ins().store(flags, xl, a, 0);
        }
    }

    /// Runs `l`'s body for `var` in `start..end` by `step`, keeping an
    /// induction variable for every affine index of the body that moves
    /// with the loop variable (`ivs` maps each form to its value with the
    /// variables of loops not yet entered at zero).
    fn run_loop(&mut self, l: &Loop, start: Value, start_const: Option<i64>, end: Value, step: i64, vec_body: bool) {
        self.run_loop_copies(l, start, start_const, end, step, vec_body, 1);
    }

    /// [`Self::run_loop`] with the body emitted `copies` times per iteration
    /// (consecutive steps; copy `c` uses reduction chain `c`).
    #[allow(clippy::too_many_arguments)]
    fn run_loop_copies(
        &mut self,
        l: &Loop,
        start: Value,
        start_const: Option<i64>,
        end: Value,
        step: i64,
        vec_body: bool,
        copies: usize,
    ) {
        let mut forms = Vec::new();
        collect_affine(&l.body, &mut forms);
        forms.retain(|f| f.coefficient(l.var) != 0);
        let mut ivars = Vec::with_capacity(forms.len());
        for f in &forms {
            let scale = if f.buf.is_some() { 4 } else { 1 };
            let c = f.coefficient(l.var) * scale;
            let base = match (self.ivs.get(f), f.buf) {
                (Some(&v), _) => v,
                (None, None) => self.iconst(f.constant),
                (None, Some(b)) => self.b.ins().iadd_imm_s(self.bufptr[&b], 4 * f.constant),
            };
            let init = match start_const {
                Some(s0) => {
                    if s0 == 0 {
                        base
                    } else {
                        self.b.ins().iadd_imm_s(base, c * s0)
                    }
                }
                None => {
                    let off = self.b.ins().imul_imm_s(start, c);
                    self.b.ins().iadd(base, off)
                }
            };
            let var = self.b.declare_var(I64);
            self.b.def_var(var, init);
            ivars.push((f.clone(), var, c));
        }
        let saved: Vec<(Affine, Option<Value>)> = forms.iter().map(|f| (f.clone(), self.ivs.get(f).copied())).collect();
        // These forms become loop-carried values: any split from an
        // enclosing written-out copy no longer describes them.
        let saved_split: Vec<(Affine, Option<(Value, i64)>)> =
            forms.iter().map(|f| (f.clone(), self.iv_split.remove(f))).collect();
        let copies_i = copies as i64;
        self.counted_loop(start, end, step * copies_i, |fx, i| {
            let cur: Vec<Value> = ivars.iter().map(|(_, var, _)| fx.b.use_var(*var)).collect();
            for copy in 0..copies_i {
                let iv = if copy == 0 { i } else { fx.b.ins().iadd_imm_s(i, copy * step) };
                fx.vars.insert(l.var, iv);
                for ((f, _, c), &v) in ivars.iter().zip(&cur) {
                    let v = if copy == 0 { v } else { fx.b.ins().iadd_imm_s(v, c * step * copy) };
                    fx.ivs.insert(f.clone(), v);
                }
                fx.chain = copy as usize;
                fx.stmts(&l.body, vec_body);
            }
            fx.chain = 0;
            for ((_, var, c), &v) in ivars.iter().zip(&cur) {
                let next = fx.b.ins().iadd_imm_s(v, c * step * copies_i);
                fx.b.def_var(*var, next);
            }
        });
        for (f, v) in saved {
            match v {
                Some(v) => self.ivs.insert(f, v),
                None => self.ivs.remove(&f),
            };
        }
        for (f, v) in saved_split {
            if let Some(v) = v {
                self.iv_split.insert(f, v);
            }
        }
    }

    /// A short innermost loop, emitted once per iteration with constant
    /// offsets from the enclosing induction variables.
    fn unrolled_loop(&mut self, l: &Loop, vec: bool) {
        self.unrolled_range(l, 0, l.extent as i64, 1, vec);
    }

    /// Iterations `first, first + step, ...` (`count` of them) of `l`, each
    /// emitted inline.
    fn unrolled_range(&mut self, l: &Loop, first: i64, count: i64, step: i64, vec: bool) {
        let mut forms = Vec::new();
        collect_affine(&l.body, &mut forms);
        forms.retain(|f| f.coefficient(l.var) != 0);
        let saved: Vec<(Affine, Option<Value>)> = forms.iter().map(|f| (f.clone(), self.ivs.get(f).copied())).collect();
        let saved_split: Vec<(Affine, Option<(Value, i64)>)> =
            forms.iter().map(|f| (f.clone(), self.iv_split.get(f).copied())).collect();
        for it in (0..count).map(|k| first + k * step) {
            let i = self.iconst(it);
            self.vars.insert(l.var, i);
            for ((f, old), (_, old_split)) in saved.iter().zip(&saved_split) {
                let scale = if f.buf.is_some() { 4 } else { 1 };
                let c = f.coefficient(l.var) * scale;
                let base = match (old, f.buf) {
                    (Some(v), _) => *v,
                    (None, None) => self.iconst(f.constant),
                    (None, Some(b)) => self.b.ins().iadd_imm_s(self.bufptr[&b], 4 * f.constant),
                };
                let v = if it == 0 { base } else { self.b.ins().iadd_imm_s(base, c * it) };
                self.ivs.insert(f.clone(), v);
                if f.buf.is_none() {
                    // Inside an enclosing written-out copy, `base` is itself
                    // that copy's root plus a constant.
                    let (root, off) = old_split.unwrap_or((base, 0));
                    self.iv_split.insert(f.clone(), (root, off + c * it));
                }
            }
            self.stmts(&l.body, vec);
        }
        for (f, v) in saved {
            match v {
                Some(v) => self.ivs.insert(f, v),
                None => self.ivs.remove(&f),
            };
        }
        for (f, v) in saved_split {
            match v {
                Some(v) => self.iv_split.insert(f, v),
                None => self.iv_split.remove(&f),
            };
        }
    }

    fn lower_loop(&mut self, l: &Loop, vec: bool) {
        match (l.mode, l.lowering.unroll) {
            (LoopMode::Serial, Unroll::WrittenOut) => self.unrolled_loop(l, vec),
            (LoopMode::Serial, Unroll::Rolled) => {
                let kept = self.start_kept_partials(l);
                let (start, end) = (self.iconst(0), self.iconst(l.extent as i64));
                self.run_loop(l, start, Some(0), end, 1, vec);
                self.flush_partials(kept);
            }
            (LoopMode::Parallel, _) => {
                let kept = self.start_kept_partials(l);
                let (start, end) = (self.lo, self.hi);
                self.run_loop(l, start, None, end, 1, vec);
                self.flush_partials(kept);
            }
            (LoopMode::Vector, _) => self.lower_vector_loop(l, vec),
        }
    }

    /// The full vectors (written out, rolled, or rolled with several body
    /// copies per iteration), then the tail the loop records.
    fn lower_vector_loop(&mut self, l: &Loop, vec: bool) {
        let main = (l.extent / 4 * 4) as i64;
        if main > 0 {
            let mut started = Vec::new();
            for (acc, op) in outer_reductions(&l.body) {
                if self.accs.contains_key(&acc) && !self.partials.contains_key(&acc) {
                    self.start_partial(acc, op, l.lowering.chains);
                    started.push(acc);
                }
            }
            let saved_lane = self.lane.replace(l.var);
            let copies = l.lowering.copies as i64;
            match l.lowering.unroll {
                Unroll::WrittenOut => self.unrolled_range(l, 0, main / 4, 4, true),
                Unroll::Rolled if copies > 1 => {
                    let per = 4 * copies;
                    let body_end = main / per * per;
                    let (start, end) = (self.iconst(0), self.iconst(body_end));
                    self.run_loop_copies(l, start, Some(0), end, 4, true, l.lowering.copies);
                    if body_end < main {
                        self.unrolled_range(l, body_end, (main - body_end) / 4, 4, true);
                    }
                }
                Unroll::Rolled => {
                    let (start, end) = (self.iconst(0), self.iconst(main));
                    self.run_loop(l, start, Some(0), end, 4, true);
                }
            }
            if l.lowering.tail == VectorTail::Overlap {
                // One more vector iteration ending at the last element;
                // its first lanes repeat work already done.
                self.done_lanes = 4 - (l.extent - main as usize);
                self.unrolled_range(l, l.extent as i64 - 4, 1, 4, true);
                self.done_lanes = 0;
            }
            self.lane = saved_lane;
            self.flush_partials(started);
        }
        match l.lowering.tail {
            VectorTail::ScalarWrittenOut => self.unrolled_range(l, main, l.extent as i64 - main, 1, vec),
            VectorTail::Scalar => {
                let (start, end) = (self.iconst(main), self.iconst(l.extent as i64));
                self.run_loop(l, start, Some(main), end, 1, vec);
            }
            VectorTail::None | VectorTail::Overlap => {}
        }
    }
}
