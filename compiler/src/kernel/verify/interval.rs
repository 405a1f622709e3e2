//! Ranges of index expressions over the loop box of their enclosing loops.

use super::{Problem, kind_name, label};
use crate::kernel::{BufId, BufferKind, Idx, Program, VarId};
use std::collections::HashMap;

/// The inclusive range `[lo, hi]` of an integer expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interval {
    pub(crate) lo: i64,
    pub(crate) hi: i64,
}

impl Interval {
    pub(crate) fn point(c: i64) -> Interval {
        Interval { lo: c, hi: c }
    }

    /// `[0, count - 1]` scaled by `stride`: the offsets of `count` evenly
    /// spaced elements (`count >= 1`).
    pub(crate) fn span(count: usize, stride: i64) -> Interval {
        let last = (count.max(1) as i64 - 1) * stride;
        Interval { lo: last.min(0), hi: last.max(0) }
    }

    pub(crate) fn add(self, o: Interval) -> Option<Interval> {
        Some(Interval { lo: self.lo.checked_add(o.lo)?, hi: self.hi.checked_add(o.hi)? })
    }

    fn scale(self, k: i64) -> Option<Interval> {
        let (a, b) = (self.lo.checked_mul(k)?, self.hi.checked_mul(k)?);
        Some(Interval { lo: a.min(b), hi: a.max(b) })
    }
}

/// Why an index has no static range.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Unbounded {
    /// It reads a float table filled at run time.
    FloatTable(BufId),
    /// A sub-expression was already reported as invalid.
    Invalid,
    /// Arithmetic overflowed `i64`.
    Overflow,
}

impl Unbounded {
    pub(crate) fn reason(&self, program: &Program) -> String {
        match self {
            Unbounded::FloatTable(t) => format!("it reads positions recorded at run time in {}", label(program, *t)),
            Unbounded::Invalid => "a sub-expression is invalid".into(),
            Unbounded::Overflow => "its range overflows 64 bits".into(),
        }
    }
}

/// The values of `table`'s entries `range` (clipped to the table), if it is
/// a constant `i32` table and the range reaches an entry.
pub(crate) fn table_range(program: &Program, table: BufId, range: Interval) -> Option<Interval> {
    let BufferKind::ConstI32(data) = &program.buffers.get(table)?.kind else {
        return None;
    };
    let lo = range.lo.max(0) as usize;
    let hi = usize::try_from(range.hi).ok()?.min(data.len().checked_sub(1)?);
    let entries = data.get(lo..=hi)?;
    let (min, max) = (entries.iter().min()?, entries.iter().max()?);
    Some(Interval { lo: i64::from(*min), hi: i64::from(*max) })
}

/// Evaluates index ranges for one position in a kernel: the loop variables
/// in scope with their ranges, and the problems found inside indices.
pub(crate) struct Ranges<'p> {
    pub(crate) program: &'p Program,
    pub(crate) vars: HashMap<VarId, Interval>,
}

impl Ranges<'_> {
    /// The range of `i`; problems inside it (unbound variables, table
    /// lookups out of range, bad divisions) are appended to `problems`.
    pub(crate) fn eval(&self, i: &Idx, problems: &mut Vec<Problem>) -> Result<Interval, Unbounded> {
        // Affine forms are exact: each variable ranges independently.
        if let Some((constant, terms)) = affine_terms(i) {
            let mut r = Interval::point(constant);
            let mut unbound = false;
            for (v, k) in terms {
                match self.vars.get(&v) {
                    Some(range) => r = range.scale(k).and_then(|t| r.add(t)).ok_or(Unbounded::Overflow)?,
                    None => {
                        problems.push(Problem::VarOutOfScope { var: v });
                        unbound = true;
                    }
                }
            }
            return if unbound { Err(Unbounded::Invalid) } else { Ok(r) };
        }
        match i {
            Idx::Const(c) => Ok(Interval::point(*c)),
            Idx::Var(v) => self.vars.get(v).copied().ok_or_else(|| {
                problems.push(Problem::VarOutOfScope { var: *v });
                Unbounded::Invalid
            }),
            Idx::Add(a, b) => {
                let (a, b) = (self.eval(a, problems), self.eval(b, problems));
                a?.add(b?).ok_or(Unbounded::Overflow)
            }
            Idx::Mul(a, k) => self.eval(a, problems)?.scale(*k).ok_or(Unbounded::Overflow),
            Idx::Div(a, k) | Idx::Rem(a, k) => {
                let a = self.eval(a, problems)?;
                let is_div = matches!(i, Idx::Div(..));
                if *k <= 0 || a.lo < 0 {
                    let op = if is_div { "/" } else { "%" };
                    problems.push(Problem::BadDivision { op, divisor: *k, low: a.lo, high: a.hi });
                    return Err(Unbounded::Invalid);
                }
                Ok(if is_div {
                    Interval { lo: a.lo / k, hi: a.hi / k }
                } else if a.lo / k == a.hi / k {
                    Interval { lo: a.lo % k, hi: a.hi % k }
                } else {
                    Interval { lo: 0, hi: k - 1 }
                })
            }
            Idx::Min(a, b) | Idx::Max(a, b) => {
                let (a, b) = (self.eval(a, problems), self.eval(b, problems));
                let (a, b) = (a?, b?);
                Ok(if matches!(i, Idx::Min(..)) {
                    Interval { lo: a.lo.min(b.lo), hi: a.hi.min(b.hi) }
                } else {
                    Interval { lo: a.lo.max(b.lo), hi: a.hi.max(b.hi) }
                })
            }
            // Of non-negative values below 2^k, below 2^k.
            Idx::Xor(a, b) => {
                let (a, b) = (self.eval(a, problems), self.eval(b, problems));
                let (a, b) = (a?, b?);
                if a.lo < 0 || b.lo < 0 {
                    return Err(Unbounded::Invalid);
                }
                let bound = (a.hi.max(b.hi) as u64 + 1).next_power_of_two() as i64;
                Ok(Interval { lo: 0, hi: bound - 1 })
            }
            Idx::Table(t, a) => {
                let at = self.lookup(*t, a, true, problems)?;
                table_range(self.program, *t, at).ok_or(Unbounded::Invalid)
            }
            Idx::FloatTable(t, a) => {
                self.lookup(*t, a, false, problems)?;
                Err(Unbounded::FloatTable(*t))
            }
        }
    }

    /// Checks a table lookup `t[a]` (an `i32` table when `int`) and returns
    /// the range of `a`.
    fn lookup(&self, t: BufId, a: &Idx, int: bool, problems: &mut Vec<Problem>) -> Result<Interval, Unbounded> {
        let at = self.eval(a, problems);
        let Some(buf) = self.program.buffers.get(t) else {
            let count = self.program.buffers.len();
            problems.push(Problem::UnknownBuffer { role: "index table".into(), buf: t, count });
            return Err(Unbounded::Invalid);
        };
        if int && !matches!(buf.kind, BufferKind::ConstI32(_)) {
            let (role, buffer) = ("Idx::Table".into(), label(self.program, t));
            problems.push(Problem::NotATable { role, buffer, kind: kind_name(&buf.kind) });
            return Err(Unbounded::Invalid);
        }
        let at = at?;
        let access = if int { "table lookup in" } else { "float-table lookup in" };
        if let Some(p) = bounds_problem(self.program, access, t, at) {
            problems.push(p);
            return Err(Unbounded::Invalid);
        }
        Ok(at)
    }
}

/// The problem with accessing elements `range` of `buf`, if any (`buf`
/// must exist).
pub(crate) fn bounds_problem(program: &Program, access: &str, buf: BufId, range: Interval) -> Option<Problem> {
    let len = program.buffers[buf].len;
    let (access, buffer) = (access.to_string(), label(program, buf));
    if range.lo < 0 {
        Some(Problem::BeforeStart { access, buffer, low: range.lo })
    } else if range.hi >= len as i64 {
        Some(Problem::PastEnd { access, buffer, reach: range.hi, len })
    } else {
        None
    }
}

/// `c + sum(k * v)` with one coefficient per variable, if `i` is affine.
fn affine_terms(i: &Idx) -> Option<(i64, Vec<(VarId, i64)>)> {
    fn go(i: &Idx, scale: i64, constant: &mut i64, terms: &mut Vec<(VarId, i64)>) -> Option<()> {
        match i {
            Idx::Const(c) => *constant = constant.checked_add(c.checked_mul(scale)?)?,
            Idx::Var(v) => match terms.iter_mut().find(|t| t.0 == *v) {
                Some(t) => t.1 = t.1.checked_add(scale)?,
                None => terms.push((*v, scale)),
            },
            Idx::Add(a, b) => {
                go(a, scale, constant, terms)?;
                go(b, scale, constant, terms)?;
            }
            Idx::Mul(a, k) => go(a, scale.checked_mul(*k)?, constant, terms)?,
            _ => return None,
        }
        Some(())
    }
    let (mut constant, mut terms) = (0, Vec::new());
    go(i, 1, &mut constant, &mut terms)?;
    terms.retain(|t| t.1 != 0);
    Some((constant, terms))
}
