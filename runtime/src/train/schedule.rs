//! Learning-rate schedules. The learning rate is a run-time input of the
//! compiled step, so a schedule changes it between steps without
//! recompiling. Each follows the PyTorch scheduler it is named after,
//! stepped once per batch (`StepLR` once per epoch), in closed form.

use std::f64::consts::PI;

/// How the learning rate changes over a run.
#[derive(Clone, Copy, PartialEq, Debug, Default)]
pub enum Schedule {
    /// The configured rate throughout.
    #[default]
    Constant,
    /// `StepLR(step_size = every, gamma)`: the rate times `gamma` after
    /// every `every` epochs.
    Step {
        /// Epochs between decays.
        every: u64,
        /// Factor of each decay.
        gamma: f32,
    },
    /// `CosineAnnealingLR(T_max = the run's steps, eta_min = min_lr)`.
    Cosine {
        /// The rate at the end of the run.
        min_lr: f32,
    },
    /// `OneCycleLR(max_lr = the configured rate, total_steps = the run's
    /// steps, pct_start, anneal_strategy = 'cos', div_factor = 25,
    /// final_div_factor = 1e4, cycle_momentum = False)`.
    OneCycle {
        /// The fraction of the run spent rising.
        pct_start: f32,
    },
}

/// A schedule with an optional linear warm-up.
#[derive(Clone, Copy, PartialEq, Debug, Default)]
pub struct LrSchedule {
    /// The schedule.
    pub schedule: Schedule,
    /// Over the first `warmup_steps` steps the rate is scaled by
    /// `(step + 1) / warmup_steps` (PyTorch's `LinearLR` from `1 / warmup_steps`).
    pub warmup_steps: u64,
}

impl LrSchedule {
    /// The learning rate of step `step` (counting from 0) of a run of
    /// `total_steps` steps, `steps_per_epoch` to an epoch, for the base rate `lr`.
    pub fn lr(&self, lr: f32, step: u64, steps_per_epoch: u64, total_steps: u64) -> f32 {
        let base = lr as f64;
        let t = step as f64;
        let total = total_steps.max(1) as f64;
        let scheduled = match self.schedule {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => {
                let epoch = step / steps_per_epoch.max(1);
                base * (gamma as f64).powi((epoch / every.max(1)) as i32)
            }
            Schedule::Cosine { min_lr } => {
                let min = min_lr as f64;
                min + (base - min) * (1.0 + (PI * t.min(total) / total).cos()) / 2.0
            }
            Schedule::OneCycle { pct_start } => {
                let initial = base / 25.0;
                let min = initial / 1e4;
                let anneal = |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0);
                let rise_end = pct_start as f64 * total - 1.0;
                let last = total - 1.0;
                if t <= rise_end {
                    anneal(initial, base, if rise_end > 0.0 { t / rise_end } else { 1.0 })
                } else {
                    let span = last - rise_end;
                    anneal(base, min, if span > 0.0 { ((t - rise_end) / span).min(1.0) } else { 1.0 })
                }
            }
        };
        let warm = if step < self.warmup_steps { (step + 1) as f64 / self.warmup_steps as f64 } else { 1.0 };
        (scheduled * warm) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f64) {
        assert!((a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
    }

    #[test]
    fn each_schedule_at_its_landmarks() {
        let plain = |schedule| LrSchedule { schedule, warmup_steps: 0 };
        close(plain(Schedule::Constant).lr(0.1, 57, 10, 100), 0.1);
        // StepLR(step_size 2, gamma 0.5): epochs 0-1, 2-3, 4 of 10 steps each.
        let step = plain(Schedule::Step { every: 2, gamma: 0.5 });
        for (s, want) in [(0, 0.1), (19, 0.1), (20, 0.05), (39, 0.05), (40, 0.025)] {
            close(step.lr(0.1, s, 10, 50), want);
        }
        // Cosine from 0.1 to 0.01 over 100 steps: half way is the mean.
        let cos = plain(Schedule::Cosine { min_lr: 0.01 });
        close(cos.lr(0.1, 0, 10, 100), 0.1);
        close(cos.lr(0.1, 50, 10, 100), 0.055);
        close(cos.lr(0.1, 25, 10, 100), 0.01 + 0.09 * (1.0 + (PI / 4.0).cos()) / 2.0);
        // One cycle over 100 steps, rising for 30: max / 25, max, max / 25e4.
        let one = plain(Schedule::OneCycle { pct_start: 0.3 });
        close(one.lr(0.1, 0, 10, 100), 0.004);
        close(one.lr(0.1, 29, 10, 100), 0.1);
        close(one.lr(0.1, 99, 10, 100), 0.004 / 1e4);
        let mid = one.lr(0.1, 64, 10, 100) as f64;
        assert!(mid < 0.1 && mid > 0.004, "falling half: {mid}");
        // Warm-up scales the first steps linearly.
        let warm = LrSchedule { schedule: Schedule::Constant, warmup_steps: 4 };
        for (s, want) in [(0, 0.025), (1, 0.05), (3, 0.1), (10, 0.1)] {
            close(warm.lr(0.1, s, 10, 100), want);
        }
    }
}
