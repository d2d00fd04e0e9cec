//! Learning-rate schedules over optimiser steps.

use serde::{Deserialize, Serialize};

/// How the learning rate moves over a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Linear warm-up from 0, then cosine decay to `min_lr`.
    CosineWarmup {
        /// Warm-up steps.
        warmup_steps: usize,
        /// Final learning rate.
        min_lr: f64,
    },
    /// PyTorch's `OneCycleLR` (cosine annealing): from `max/div_factor` up to the base rate over
    /// `pct_start` of the run, then down to `max/(div_factor·final_div_factor)` (the ASL recipe).
    OneCycle {
        /// Fraction of the run spent warming up (ASL: 0.2).
        pct_start: f64,
        /// Initial rate divisor (PyTorch: 25).
        div_factor: f64,
        /// Final rate divisor after `div_factor` (PyTorch: 1e4).
        final_div_factor: f64,
    },
}

impl Schedule {
    /// The ASL recipe's one-cycle schedule.
    pub fn one_cycle() -> Self {
        Self::OneCycle {
            pct_start: 0.2,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }

    /// The learning rate at `step` (0-based) of `total` steps for base rate `base`.
    pub fn lr(&self, base: f64, step: usize, total: usize) -> f64 {
        let total = total.max(1);
        let cos = |from: f64, to: f64, frac: f64| {
            to + (from - to) * (1.0 + (std::f64::consts::PI * frac.clamp(0.0, 1.0)).cos()) / 2.0
        };
        match *self {
            Schedule::Constant => base,
            Schedule::CosineWarmup {
                warmup_steps,
                min_lr,
            } => {
                if step < warmup_steps {
                    base * (step + 1) as f64 / warmup_steps as f64
                } else {
                    let span = total.saturating_sub(warmup_steps).max(1);
                    cos(base, min_lr, (step - warmup_steps) as f64 / span as f64)
                }
            }
            Schedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let initial = base / div_factor;
                let last = initial / final_div_factor;
                let up = (pct_start * total as f64 - 1.0).max(1.0);
                let down = (total as f64 - 1.0 - up).max(1.0);
                let s = step as f64;
                if s <= up {
                    cos(initial, base, s / up)
                } else {
                    cos(base, last, (s - up) / down)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cycle_peaks_at_pct_start_and_ends_low() {
        let s = Schedule::one_cycle();
        assert!((s.lr(1.0, 0, 100) - 0.04).abs() < 1e-12);
        let peak = (0..100).map(|i| s.lr(1.0, i, 100)).fold(0.0, f64::max);
        assert!((peak - 1.0).abs() < 1e-9);
        assert!(s.lr(1.0, 99, 100) < 1e-5);
        let c = Schedule::CosineWarmup {
            warmup_steps: 10,
            min_lr: 0.0,
        };
        assert!((c.lr(1.0, 9, 100) - 1.0).abs() < 1e-12);
        assert!(c.lr(1.0, 99, 100) < 1e-3);
    }
}
