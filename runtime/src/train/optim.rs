//! Optimizers: SGD (compiled into the step) and Adam (applied on the host).

use kiln_compiler::{NodeId, Sgd};

use crate::executor::{ExecError, Executor};

/// Adam's hyper-parameters, with PyTorch's meaning (`torch.optim.Adam`,
/// `weight_decay` as an L2 term added to the gradient, no AMSGrad).
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
}

impl Default for Adam {
    /// PyTorch's defaults: lr 0.001, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Adam {
        Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Which optimizer a [`Trainer`](super::Trainer) uses.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Optimizer {
    /// Stochastic gradient descent, compiled into the training step.
    Sgd(Sgd),
    /// Adam, applied on the host after each compiled step.
    Adam(Adam),
}

impl Default for Optimizer {
    /// The lecture's optimizer: SGD with lr 0.001 and momentum 0.9.
    fn default() -> Optimizer {
        Optimizer::Sgd(Sgd { lr: 0.001, momentum: 0.9, nesterov: false, weight_decay: 0.0 })
    }
}

impl Optimizer {
    /// `"sgd"` or `"adam"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Optimizer::Sgd(_) => "sgd",
            Optimizer::Adam(_) => "adam",
        }
    }

    /// The optimizer as JSON (stored in checkpoints).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Optimizer::Sgd(s) => serde_json::json!({
                "kind": "sgd", "lr": s.lr, "momentum": s.momentum, "nesterov": s.nesterov,
                "weight_decay": s.weight_decay,
            }),
            Optimizer::Adam(a) => serde_json::json!({
                "kind": "adam", "lr": a.lr, "beta1": a.beta1, "beta2": a.beta2, "eps": a.eps,
                "weight_decay": a.weight_decay,
            }),
        }
    }

    /// The SGD update compiled into the step: the configured one, or for
    /// Adam a no-op update (learning rate 0, no momentum buffer).
    pub(crate) fn compiled_sgd(&self) -> Sgd {
        match self {
            Optimizer::Sgd(s) => *s,
            Optimizer::Adam(_) => Sgd { lr: 0.0, momentum: 0.0, nesterov: false, weight_decay: 0.0 },
        }
    }
}

/// Adam's moments, one pair per parameter with a gradient.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AdamState {
    /// Steps taken.
    pub t: u64,
    /// First moments.
    pub m: Vec<Vec<f32>>,
    /// Second moments.
    pub v: Vec<Vec<f32>>,
    scratch: Vec<f32>,
}

impl AdamState {
    /// Zero moments for parameters of the given sizes.
    pub fn new(sizes: &[usize]) -> AdamState {
        AdamState {
            t: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            scratch: Vec::new(),
        }
    }

    /// One Adam update of every `(param, grad)` in `exec` (after its step ran).
    pub fn apply(
        &mut self,
        cfg: &Adam,
        exec: &mut Executor,
        param_grads: &[(NodeId, NodeId)],
    ) -> Result<(), ExecError> {
        self.t += 1;
        // PyTorch computes the bias corrections in double precision.
        let t = self.t as i32;
        let bc1 = 1.0 - f64::from(cfg.beta1).powi(t);
        let bc2 = 1.0 - f64::from(cfg.beta2).powi(t);
        let step_size = (f64::from(cfg.lr) / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        for (i, &(p, g)) in param_grads.iter().enumerate() {
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            self.scratch.clear();
            {
                let grad = exec.get(g)?;
                let param = exec.get(p)?;
                for k in 0..param.len() {
                    let mut gk = grad[k];
                    if cfg.weight_decay != 0.0 {
                        gk += cfg.weight_decay * param[k];
                    }
                    // exp_avg.lerp_(grad, 1 - beta1)
                    m[k] += (1.0 - cfg.beta1) * (gk - m[k]);
                    // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    v[k] = v[k] * cfg.beta2 + (1.0 - cfg.beta2) * gk * gk;
                    let denom = v[k].sqrt() / bc2_sqrt + cfg.eps;
                    self.scratch.push(param[k] - step_size * (m[k] / denom));
                }
            }
            exec.set(p, &self.scratch)?;
        }
        Ok(())
    }
}
