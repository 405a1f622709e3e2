//! Optimizers the trainer compiles into its step: SGD, and Adam or AdamW
//! ([`Adam`] with PyTorch's rules, `decoupled` for AdamW).

use kiln_compiler::Sgd;
pub use kiln_compiler::ops::Adam;
use kiln_compiler::ops::Optim;

/// Which optimizer a [`Trainer`](super::Trainer) uses.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Optimizer {
    /// Stochastic gradient descent, compiled into the training step.
    Sgd(Sgd),
    /// Adam (L2 weight decay) or AdamW (`decoupled`), compiled into the step.
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
            Optimizer::Adam(a) if a.decoupled => "adamw",
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
                "kind": self.kind(), "lr": a.lr, "beta1": a.beta1, "beta2": a.beta2, "eps": a.eps,
                "weight_decay": a.weight_decay,
            }),
        }
    }

    /// The update compiled into the step.
    pub(crate) fn compiled(&self) -> Optim {
        match self {
            Optimizer::Sgd(s) => Optim::Sgd(*s),
            Optimizer::Adam(a) => Optim::Adam(*a),
        }
    }

    /// The learning rate before any schedule.
    pub fn lr(&self) -> f32 {
        self.compiled().lr()
    }
}
