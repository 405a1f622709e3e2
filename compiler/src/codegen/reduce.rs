//! Reductions: combining into an accumulator, and the lane partials of
//! accumulators reduced inside vector loops (started, masked in an
//! overlapped last iteration, flushed into their accumulator).

use super::Fx;
use crate::kernel::lowering::vector_reductions;
use crate::kernel::{AccId, Loop, RedOp};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::F32X4;
use cranelift_codegen::ir::{ConstantData, InstBuilder, MemFlagsData, Value};

impl Fx<'_, '_> {
    /// `x` with the lanes the overlapped last iteration repeats set to
    /// `identity` (the value that leaves a sum or a maximum unchanged).
    pub(super) fn without_done_lanes(&mut self, x: Value, identity: f32) -> Value {
        if self.done_lanes == 0 {
            return x;
        }
        let fill = self.f32x4_const([identity; 4]);
        let bits: Vec<u8> = (0..4).flat_map(|l| if l < self.done_lanes { [0u8; 4] } else { [0xffu8; 4] }).collect();
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bits));
        let mask = self.b.ins().vconst(F32X4, c);
        self.b.ins().bitselect(mask, x, fill)
    }

    /// `acc op x` for a reduction.
    pub(crate) fn combine(&mut self, op: RedOp, acc: Value, x: Value, vec: bool) -> Value {
        match op {
            RedOp::Add => self.b.ins().fadd(acc, x),
            RedOp::Max => {
                // `x > acc || isnan(x) ? x : acc` on vectors (also for a
                // scalar: a float `select` would branch).
                let (xv, av) = if vec {
                    (x, acc)
                } else {
                    (self.b.ins().scalar_to_vector(F32X4, x), self.b.ins().scalar_to_vector(F32X4, acc))
                };
                let gt = self.b.ins().fcmp(FloatCC::GreaterThan, xv, av);
                let nan = self.b.ins().fcmp(FloatCC::Unordered, xv, xv);
                let c = self.b.ins().bor(gt, nan);
                let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), c);
                let r = self.b.ins().bitselect(m, xv, av);
                if vec { r } else { self.b.ins().extractlane(r, 0) }
            }
        }
    }

    /// Starts the lane partials `l` keeps across its iterations (see
    /// [`crate::kernel::LoopLowering::keep_partials`]).
    pub(super) fn start_kept_partials(&mut self, l: &Loop) -> Vec<AccId> {
        let reduced = vector_reductions(&l.body, false);
        for &acc in &l.lowering.keep_partials {
            let op = reduced.iter().find(|(a, _)| *a == acc).map_or(RedOp::Add, |&(_, op)| op);
            self.start_partial(acc, op, l.lowering.chains);
        }
        l.lowering.keep_partials.clone()
    }

    pub(super) fn start_partial(&mut self, acc: AccId, op: RedOp, chains: usize) {
        let init = self.fconst(if op == RedOp::Max { f32::NEG_INFINITY } else { 0.0 }, true);
        let vars = self.vars_holding(F32X4, vec![init; chains]);
        self.partials.insert(acc, (vars, op));
    }

    /// Adds the lanes of the partials of `accs` into their accumulators
    /// (in a fixed order) and ends them.
    pub(super) fn flush_partials(&mut self, mut accs: Vec<AccId>) {
        accs.sort();
        for acc in accs {
            let Some((pvars, op)) = self.partials.remove(&acc) else { continue };
            // The chains pairwise, then the lanes, in a fixed order.
            let mut chains: Vec<Value> = pvars.iter().map(|&v| self.b.use_var(v)).collect();
            while chains.len() > 1 {
                chains = chains
                    .chunks(2)
                    .map(|c| if c.len() == 2 { self.combine(op, c[0], c[1], true) } else { c[0] })
                    .collect();
            }
            let p = chains[0];
            let (var, _) = self.accs[&acc];
            let mut a = self.b.use_var(var);
            for lane in 0..4u8 {
                let x = self.b.ins().extractlane(p, lane);
                a = self.combine(op, a, x, false);
            }
            self.b.def_var(var, a);
        }
    }
}
