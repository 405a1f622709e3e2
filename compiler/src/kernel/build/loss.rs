//! Losses: the value (a mean over the batch) and the gradient of cross
//! entropy (softmax fused in), mean squared error and the perceptron
//! criterion, in one kernel when both are needed.

use super::{Builder, KernelBody};
use crate::graph::NodeId;
use crate::kernel::*;
use crate::ops::{Loss, Op};
use std::ops::{Add, Div, Mul, Sub};

impl Builder<'_> {
    pub(super) fn loss(&mut self, loss: Loss, nodes: &[NodeId], ins: &[NodeId]) -> Result<KernelBody, BuildError> {
        let graph = self.graph;
        let value_node = nodes.iter().copied().find(|&n| matches!(graph.node(n).op, Op::LossValue(_)));
        let grad_node = nodes.iter().copied().find(|&n| matches!(graph.node(n).op, Op::LossGrad(_)));
        let value_buf = value_node.map(|n| self.buf(n)).transpose()?;
        let grad_buf = grad_node.map(|n| self.buf(n)).transpose()?;
        let (pred, target) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let pd = self.dims(ins[0]);
        let count: usize = pd.iter().product();
        let total = self.acc();
        let mut body = vec![Stmt::Let { acc: total, init: Val::Const(0.0) }];
        match loss {
            Loss::CrossEntropy | Loss::SmoothedCrossEntropy(_) => {
                let smoothing = loss.label_smoothing().unwrap_or(0.0);
                let (rows, classes) = (pd[0], pd.get(1).copied().unwrap_or(1));
                body.push(self.loop_over(rows, |b, r| {
                    let (m, s, lse) = (b.acc(), b.acc(), b.acc());
                    let z = |c: &Idx| Val::load(pred, r.clone() * classes + c.clone());
                    let label = Val::load(target, r.clone());
                    let is_label = |c: &Idx| Cond::val(Cmp::Eq, Val::FromIdx(c.clone()), label.clone());
                    let mut st = vec![Stmt::Let { acc: m, init: Val::Const(f32::NEG_INFINITY) }];
                    st.push(b.loop_over(classes, |_, c| vec![Stmt::Reduce { acc: m, op: RedOp::Max, val: z(&c) }]));
                    st.push(Stmt::Let { acc: s, init: Val::Const(0.0) });
                    st.push(b.loop_over(classes, |_, c| {
                        vec![Stmt::Reduce { acc: s, op: RedOp::Add, val: z(&c).sub(Val::Acc(m)).un(UnOp::Exp) }]
                    }));
                    st.push(Stmt::Let { acc: lse, init: Val::Acc(m).add(Val::Acc(s).un(UnOp::Ln)) });
                    if value_buf.is_some() {
                        // sum_c q_c z_c for the (smoothed) target q.
                        let picked = b.acc();
                        st.push(Stmt::Let { acc: picked, init: Val::Const(0.0) });
                        st.push(b.loop_over(classes, |_, c| {
                            let val = if smoothing == 0.0 {
                                Val::select(is_label(&c), z(&c), Val::Const(0.0))
                            } else {
                                target_weight(is_label(&c), smoothing, classes).mul(z(&c))
                            };
                            vec![Stmt::Reduce { acc: picked, op: RedOp::Add, val }]
                        }));
                        st.push(Stmt::Reduce { acc: total, op: RedOp::Add, val: Val::Acc(lse).sub(Val::Acc(picked)) });
                    }
                    if let Some(g) = grad_buf {
                        st.push(b.loop_over(classes, |_, c| {
                            let softmax = z(&c).sub(Val::Acc(lse)).un(UnOp::Exp);
                            let q = target_weight(is_label(&c), smoothing, classes);
                            vec![Stmt::store(g, r.clone() * classes + c, softmax.sub(q).div(Val::Const(rows as f32)))]
                        }));
                    }
                    st
                }));
                if let Some(v) = value_buf {
                    body.push(Stmt::store(v, Idx::Const(0), Val::Acc(total).div(Val::Const(rows as f32))));
                }
            }
            Loss::Mse | Loss::Perceptron => {
                let n = count as f32;
                body.push(self.loop_over(count, |_, e| {
                    let (p, t) = (Val::load(pred, e.clone()), Val::load(target, e.clone()));
                    let mut st = Vec::new();
                    let (term, grad) = if loss == Loss::Mse {
                        let d = p.sub(t);
                        (d.clone().mul(d.clone()), Val::Const(2.0).mul(d).div(Val::Const(n)))
                    } else {
                        let m = t.clone().un(UnOp::Neg).mul(p);
                        let pos = Cond::val(Cmp::Gt, m.clone(), Val::Const(0.0));
                        (
                            Val::select(pos.clone(), m, Val::Const(0.0)),
                            Val::select(pos, t.un(UnOp::Neg).div(Val::Const(n)), Val::Const(0.0)),
                        )
                    };
                    if value_buf.is_some() {
                        st.push(Stmt::Reduce { acc: total, op: RedOp::Add, val: term });
                    }
                    if let Some(g) = grad_buf {
                        st.push(Stmt::store(g, e, grad));
                    }
                    st
                }));
                if let Some(v) = value_buf {
                    body.push(Stmt::store(v, Idx::Const(0), Val::Acc(total).div(Val::Const(n))));
                }
            }
        }
        Ok((body, 8 * count as u64))
    }
}

/// The target's weight on a class: 1 on the label and 0 elsewhere, or with
/// label smoothing `s`, `1 - s + s / C` on the label and `s / C` elsewhere.
fn target_weight(is_label: Cond, smoothing: f32, classes: usize) -> Val {
    let spread = smoothing / classes as f32;
    Val::select(is_label, Val::Const(1.0 - smoothing + spread), Val::Const(spread))
}
