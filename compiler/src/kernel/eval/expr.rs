//! Index, value and condition expressions, evaluated in plain scalar
//! semantics: 64-bit signed index arithmetic (checked: an overflow is a
//! fault, not a wrap), `f32` values, ordered float comparisons.

use super::Fault;
use super::memory::Arena;
use crate::kernel::{AccId, BinOp, Cmp, Cond, Idx, RedOp, UnOp, Val, VarId};

/// The loop variables and accumulators of the kernel being run.
pub(super) struct Frame {
    vars: Vec<Option<i64>>,
    accs: Vec<Option<f32>>,
}

impl Frame {
    /// A frame for a kernel whose largest loop variable and accumulator ids
    /// are `max_var` and `max_acc` (`None`: it has none).
    pub(super) fn new(max_var: Option<VarId>, max_acc: Option<AccId>) -> Frame {
        let len = |m: Option<u32>| m.map_or(0, |m| m as usize + 1);
        Frame { vars: vec![None; len(max_var)], accs: vec![None; len(max_acc)] }
    }

    pub(super) fn var(&self, v: VarId) -> Result<i64, Fault> {
        self.vars.get(v as usize).copied().flatten().ok_or(Fault::UnboundVar(v))
    }

    /// Binds `v` (a loop's variable) and returns its previous binding.
    pub(super) fn bind(&mut self, v: VarId, value: Option<i64>) -> Option<i64> {
        // Every loop variable was counted when the frame was made.
        std::mem::replace(&mut self.vars[v as usize], value)
    }

    pub(super) fn acc(&self, a: AccId) -> Result<f32, Fault> {
        self.accs.get(a as usize).copied().flatten().ok_or(Fault::UndeclaredAcc(a))
    }

    /// Declares `a` (a `Let`) with value `x`.
    pub(super) fn declare(&mut self, a: AccId, x: f32) {
        // Every declared accumulator was counted when the frame was made.
        self.accs[a as usize] = Some(x);
    }

    /// Assigns an already declared accumulator.
    pub(super) fn assign(&mut self, a: AccId, x: f32) -> Result<(), Fault> {
        match self.accs.get_mut(a as usize) {
            Some(slot @ Some(_)) => {
                *slot = Some(x);
                Ok(())
            }
            _ => Err(Fault::UndeclaredAcc(a)),
        }
    }
}

/// `Div` and `Rem` need a non-negative operand and a positive divisor (the
/// JIT uses unsigned division).
fn check_division(op: &'static str, value: i64, divisor: i64) -> Result<(), Fault> {
    if value < 0 || divisor <= 0 {
        return Err(Fault::BadDivision { op, value, divisor });
    }
    Ok(())
}

/// The value of index expression `i`.
pub(super) fn index(i: &Idx, arena: &Arena, frame: &Frame) -> Result<i64, Fault> {
    let sub = |x: &Idx| index(x, arena, frame);
    Ok(match i {
        Idx::Const(c) => *c,
        Idx::Var(v) => frame.var(*v)?,
        Idx::Add(a, b) => sub(a)?.checked_add(sub(b)?).ok_or(Fault::Overflow)?,
        Idx::Mul(a, k) => sub(a)?.checked_mul(*k).ok_or(Fault::Overflow)?,
        Idx::Div(a, k) => {
            let x = sub(a)?;
            check_division("div", x, *k)?;
            x / k
        }
        Idx::Rem(a, k) => {
            let x = sub(a)?;
            check_division("rem", x, *k)?;
            x % k
        }
        Idx::Min(a, b) => sub(a)?.min(sub(b)?),
        Idx::Max(a, b) => sub(a)?.max(sub(b)?),
        Idx::Xor(a, b) => sub(a)? ^ sub(b)?,
        Idx::Table(t, a) => i64::from(arena.load_i32(*t, sub(a)?)?),
        Idx::FloatTable(t, a) => {
            let x = arena.load(*t, sub(a)?)?;
            // Truncation toward zero; a NaN or an out-of-range value would
            // trap in the JIT's conversion.
            let in_range = x.is_finite() && x.abs() < 9.2e18;
            if !in_range {
                return Err(Fault::BadFloatIndex { buffer: arena.name(*t), value: x });
            }
            x.trunc() as i64
        }
    })
}

/// `op(x)`.
pub(super) fn unary(op: UnOp, x: f32) -> f32 {
    match op {
        UnOp::Neg => -x,
        UnOp::Exp => x.exp(),
        UnOp::Ln => x.ln(),
        UnOp::Tanh => x.tanh(),
        UnOp::Erf => libm::erff(x),
        UnOp::Sqrt => x.sqrt(),
        // `x <= 0` is false for a NaN, so a NaN passes through.
        UnOp::Relu => {
            if x <= 0.0 {
                0.0
            } else {
                x
            }
        }
    }
}

/// `a op b`.
pub(super) fn binary(op: BinOp, a: f32, b: f32) -> f32 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
    }
}

/// `acc op x` of a reduction: a sum, or PyTorch's max (a NaN wins).
pub(super) fn combine(op: RedOp, acc: f32, x: f32) -> f32 {
    match op {
        RedOp::Add => acc + x,
        RedOp::Max => {
            if x > acc || x.is_nan() {
                x
            } else {
                acc
            }
        }
    }
}

fn compare<T: PartialOrd>(cmp: Cmp, a: T, b: T) -> bool {
    // `PartialOrd` comparisons are ordered: false when either side is NaN.
    match cmp {
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Eq => a == b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
    }
}

/// The value of `v`. Both sides of a `Select` are evaluated, as the JIT
/// evaluates them, so an operand whose load would be out of range is a
/// fault even when it is not chosen.
pub(super) fn value(v: &Val, arena: &Arena, frame: &Frame) -> Result<f32, Fault> {
    let sub = |x: &Val| value(x, arena, frame);
    Ok(match v {
        Val::Const(c) => *c,
        Val::Load(buf, i) => arena.load(*buf, index(i, arena, frame)?)?,
        Val::Acc(a) => frame.acc(*a)?,
        Val::Un(op, x) => unary(*op, sub(x)?),
        Val::Bin(op, a, b) => binary(*op, sub(a)?, sub(b)?),
        Val::Select(c, a, b) => {
            let (c, a, b) = (condition(c, arena, frame)?, sub(a)?, sub(b)?);
            if c { a } else { b }
        }
        Val::FromIdx(i) => index(i, arena, frame)? as f32,
    })
}

/// The truth of `c`.
pub(super) fn condition(c: &Cond, arena: &Arena, frame: &Frame) -> Result<bool, Fault> {
    Ok(match c {
        Cond::Index(cmp, a, b) => compare(*cmp, index(a, arena, frame)?, index(b, arena, frame)?),
        Cond::Value(cmp, a, b) => compare(*cmp, value(a, arena, frame)?, value(b, arena, frame)?),
        Cond::IsNan(a) => value(a, arena, frame)?.is_nan(),
        // Both sides are evaluated (no short circuit), as in the JIT's masks.
        Cond::And(a, b) => {
            let (a, b) = (condition(a, arena, frame)?, condition(b, arena, frame)?);
            a && b
        }
        Cond::Or(a, b) => {
            let (a, b) = (condition(a, arena, frame)?, condition(b, arena, frame)?);
            a || b
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_and_max_keep_nan() {
        assert!(unary(UnOp::Relu, f32::NAN).is_nan());
        assert_eq!(unary(UnOp::Relu, -2.0), 0.0);
        assert_eq!(unary(UnOp::Relu, 3.0), 3.0);
        assert!(combine(RedOp::Max, 5.0, f32::NAN).is_nan());
        assert!(combine(RedOp::Max, f32::NAN, 5.0).is_nan());
        assert_eq!(combine(RedOp::Max, 1.0, 5.0), 5.0);
        assert_eq!(combine(RedOp::Max, 5.0, 1.0), 5.0);
    }

    #[test]
    fn value_comparisons_are_ordered() {
        for cmp in [Cmp::Lt, Cmp::Le, Cmp::Eq, Cmp::Gt, Cmp::Ge] {
            assert!(!compare(cmp, f32::NAN, 1.0));
            assert!(!compare(cmp, 1.0, f32::NAN));
        }
        assert!(compare(Cmp::Le, 1.0f32, 1.0));
        assert!(!compare(Cmp::Lt, 1.0f32, 1.0));
    }
}
