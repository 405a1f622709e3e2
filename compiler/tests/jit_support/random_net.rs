//! The generator of random valid DAGs (convolutions, pooling, resizing,
//! activations, softmax, batch normalisation, residual sums,
//! concatenations, linear heads) shared by the property tests.

use super::{Rng, batch_norm, batched, conv, conv_attrs, flatten, input, linear, pool, pool_attrs, same_shape};
use kiln_compiler::graph::{Graph, NodeId, Stage};
use kiln_compiler::ops::{Activation, BinaryOp, GeluForm, Op, PaddingMode, Resize, ResizeMode};
use kiln_compiler::shape::window_output_len;

#[derive(Clone, Copy)]
enum Kind {
    Image(usize, usize, usize),
    Flat(usize),
}

struct Gen {
    rng: Rng,
}

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        (((self.rng.next() + 1.0) * 0.5 * n as f32) as usize).min(n - 1)
    }

    /// An activation, or one time in four a softmax or log-softmax over a
    /// non-batch axis of a value of `rank` axes.
    fn pointwise_or_softmax(&mut self, rank: usize) -> Op {
        if self.below(4) == 0 {
            let axis = 1 + self.below(rank - 1);
            Op::Softmax { axis, log: self.below(2) == 0 }
        } else {
            Op::Activate(self.activation())
        }
    }

    fn activation(&mut self) -> Activation {
        match self.below(9) {
            0 => Activation::Relu,
            1 => Activation::Sigmoid,
            2 => Activation::Tanh,
            3 => Activation::LeakyRelu(0.2),
            4 => Activation::Elu(1.0),
            5 => Activation::Gelu(GeluForm::Exact),
            6 => Activation::Gelu(GeluForm::Tanh),
            7 => Activation::Silu,
            _ => Activation::Relu,
        }
    }
}

/// A random network whose forward ends in `[N, 3]` logits.
pub fn random_net(seed: u64) -> Graph {
    let mut rg = Gen { rng: Rng(seed | 1) };
    let mut g = Graph::new("random");
    let (c0, h0, w0) = (1 + rg.below(3), 4 + rg.below(6), 4 + rg.below(6));
    let x = input(&mut g, "x", &[c0, h0, w0]);
    let mut nodes: Vec<(NodeId, Kind)> = vec![(x, Kind::Image(c0, h0, w0))];
    let steps = 2 + rg.below(5);
    for step in 0..steps {
        let pick = if rg.below(3) == 0 { rg.below(nodes.len()) } else { nodes.len() - 1 };
        let (src, kind) = nodes[pick];
        let name = format!("n{step}");
        let made = match kind {
            Kind::Image(c, h, w) => match rg.below(8) {
                0 | 1 => {
                    let k = 1 + rg.below(3);
                    let (s, d) = (1 + rg.below(2), 1 + rg.below(2));
                    let p = rg.below(2);
                    let mode = if rg.below(2) == 0 { PaddingMode::Zeros } else { PaddingMode::Replicate };
                    let oc = 1 + rg.below(4);
                    match (window_output_len(h, k, s, p, d), window_output_len(w, k, s, p, d)) {
                        (Some(oh), Some(ow)) => {
                            let id = conv(&mut g, &name, src, oc, conv_attrs(k, s, p, d, mode), rg.below(2) == 0);
                            Some((id, Kind::Image(oc, oh, ow)))
                        }
                        _ => None,
                    }
                }
                2 => {
                    let op = rg.pointwise_or_softmax(4);
                    Some((same_shape(&mut g, &name, op, src), kind))
                }
                3 => {
                    let k = 1 + rg.below(2);
                    let s = 1 + rg.below(2);
                    let p = if k == 2 { rg.below(2) } else { 0 };
                    let max = rg.below(2) == 0;
                    let d = if max { 1 + rg.below(2) } else { 1 };
                    match (window_output_len(h, k, s, p, d), window_output_len(w, k, s, p, d)) {
                        (Some(oh), Some(ow)) => {
                            Some((pool(&mut g, &name, src, pool_attrs(k, s, p, d), max), Kind::Image(c, oh, ow)))
                        }
                        _ => None,
                    }
                }
                4 => {
                    let size = [2 + rg.below(7), 2 + rg.below(7)];
                    let mode = if rg.below(2) == 0 { ResizeMode::Nearest } else { ResizeMode::Bilinear };
                    let align = mode == ResizeMode::Bilinear && rg.below(2) == 0;
                    let r = Resize { size, mode, align_corners: align, inverse_scale: None };
                    let id = g.add(&name, Op::Resize(r), batched(&[c, size[0], size[1]]), vec![src], Stage::Forward);
                    Some((id, Kind::Image(c, size[0], size[1])))
                }
                5 => {
                    // A residual-style sum or product with an earlier value of the same shape.
                    let other = nodes.iter().rev().find(|(n, k)| {
                        *n != src && matches!(k, Kind::Image(c2, h2, w2) if (*c2, *h2, *w2) == (c, h, w))
                    });
                    let other = other.map_or(src, |o| o.0);
                    let op = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul][rg.below(3)];
                    let id = g.add(&name, Op::Binary(op), batched(&[c, h, w]), vec![src, other], Stage::Forward);
                    Some((id, kind))
                }
                // Batch normalisation (evaluation mode forward, training mode
                // in the step), only after a curved activation: through
                // shift-equivariant ops (products, ReLU on its linear side,
                // sums, pooling) a bias before it gets a gradient that is zero
                // in exact arithmetic, which both executors compute as
                // rounding noise. At least 4 values per channel at batch 1.
                7 => {
                    let curved = matches!(
                        g.node(src).op,
                        Op::Activate(
                            Activation::Sigmoid
                                | Activation::Tanh
                                | Activation::Gelu(_)
                                | Activation::Silu
                                | Activation::Elu(_)
                        )
                    );
                    (h * w >= 4 && curved).then(|| {
                        let affine = rg.below(2) == 0;
                        (batch_norm(&mut g, &name, src, affine, 1e-5, 0.1), kind)
                    })
                }
                _ => {
                    let other = nodes
                        .iter()
                        .rev()
                        .find(|(n, k)| *n != src && matches!(k, Kind::Image(_, h2, w2) if (*h2, *w2) == (h, w)));
                    let (o, oc) = match other {
                        Some(&(o, Kind::Image(oc, _, _))) => (o, oc),
                        _ => (src, c),
                    };
                    let id =
                        g.add(&name, Op::Concat { axis: 1 }, batched(&[c + oc, h, w]), vec![src, o], Stage::Forward);
                    Some((id, Kind::Image(c + oc, h, w)))
                }
            },
            Kind::Flat(f) => match rg.below(3) {
                0 => {
                    let out = 2 + rg.below(6);
                    Some((linear(&mut g, &name, src, out, rg.below(2) == 0), Kind::Flat(out)))
                }
                1 => {
                    let op = rg.pointwise_or_softmax(2);
                    Some((same_shape(&mut g, &name, op, src), kind))
                }
                _ => {
                    let op = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul][rg.below(3)];
                    Some((g.add(&name, Op::Binary(op), batched(&[f]), vec![src, src], Stage::Forward), kind))
                }
            },
        };
        if let Some(m) = made {
            nodes.push(m);
        }
        if step == steps / 2 && rg.below(2) == 0 {
            let (last, kind) = *nodes.last().unwrap();
            if let Kind::Image(c, h, w) = kind {
                let f = flatten(&mut g, &format!("flat{step}"), last);
                nodes.push((f, Kind::Flat(c * h * w)));
            }
        }
    }
    let (last, kind) = *nodes.last().unwrap();
    let flat = match kind {
        Kind::Image(..) => flatten(&mut g, "flat", last),
        Kind::Flat(_) => last,
    };
    let y = linear(&mut g, "head", flat, 3, true);
    g.outputs.push(y);
    g
}
