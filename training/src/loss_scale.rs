//! Dynamic loss scaling for f16 mixed-precision training.
//!
//! The loss is multiplied by a large factor before the backward pass so that small gradients stay
//! representable in f16, and the gradients are divided by it afterwards. When a gradient comes out
//! infinite or NaN the step is skipped and the factor halved; after `growth_interval` clean steps
//! in a row it doubles (the rule PyTorch's `GradScaler` follows, with its defaults).

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// The scaler's state, saved with checkpoints so a resumed run continues with the same factor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaleState {
    /// The current factor.
    pub scale: f64,
    /// Clean steps since the factor last changed.
    pub good_steps: usize,
}

/// A dynamic loss scaler; disabled, it scales by 1 and never skips a finite step.
#[derive(Debug, Clone)]
pub struct LossScaler {
    enabled: bool,
    state: LossScaleState,
    growth_interval: usize,
}

/// What [`LossScaler::unscale`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaledStep {
    /// Every gradient is finite and unscaled: take the step.
    Apply,
    /// A gradient overflowed at `scale`: skip the step (the factor is now `scale / 2`).
    Overflow {
        /// The factor that overflowed.
        scale: f64,
    },
}

/// PyTorch's initial factor, 2¹⁶.
pub const INITIAL_LOSS_SCALE: f64 = 65536.0;
/// Clean steps before the factor doubles (PyTorch's default).
pub const GROWTH_INTERVAL: usize = 2000;

impl LossScaler {
    /// A scaler starting at [`INITIAL_LOSS_SCALE`] when `enabled`, else a pass-through.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            state: LossScaleState {
                scale: if enabled { INITIAL_LOSS_SCALE } else { 1.0 },
                good_steps: 0,
            },
            growth_interval: GROWTH_INTERVAL,
        }
    }

    /// The same with another growth interval (for tests and short runs).
    pub fn with_growth_interval(mut self, steps: usize) -> Self {
        self.growth_interval = steps.max(1);
        self
    }

    /// Whether the scaler scales.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The current factor (1 when disabled).
    pub fn scale(&self) -> f64 {
        self.state.scale
    }

    /// The state to checkpoint.
    pub fn state(&self) -> LossScaleState {
        self.state
    }

    /// Continues from a checkpointed state (ignored when disabled).
    pub fn load_state(&mut self, state: LossScaleState) {
        if self.enabled {
            self.state = state;
        }
    }

    /// `loss · scale`, to call `backward` on (the loss itself when disabled).
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        if !self.enabled {
            return Ok(loss.clone());
        }
        Ok((loss * self.state.scale)?)
    }

    /// Divides every gradient by the factor, checks that all are finite and updates the factor:
    /// [`ScaledStep::Apply`] (gradients now unscaled) or [`ScaledStep::Overflow`] (gradients left
    /// as they were; skip the step). Disabled, it only checks finiteness.
    pub fn unscale(&mut self, grads: &mut HashMap<String, Tensor>) -> Result<ScaledStep> {
        let finite = all_finite(grads.values())?;
        if !finite {
            let scale = self.state.scale;
            if self.enabled {
                self.state.scale = (scale * 0.5).max(f64::MIN_POSITIVE);
                self.state.good_steps = 0;
            }
            return Ok(ScaledStep::Overflow { scale });
        }
        if self.enabled {
            let inverse = 1.0 / self.state.scale;
            for g in grads.values_mut() {
                *g = (&*g * inverse)?;
            }
            self.state.good_steps += 1;
            if self.state.good_steps >= self.growth_interval {
                self.state.scale *= 2.0;
                self.state.good_steps = 0;
            }
        }
        Ok(ScaledStep::Apply)
    }
}

/// Whether every element of every tensor is finite: one sum per tensor (NaN and ±∞ propagate
/// through sums), read back together in f64.
fn all_finite<'a>(tensors: impl Iterator<Item = &'a Tensor>) -> Result<bool> {
    let sums = tensors
        .map(|t| Ok(t.to_dtype(DType::F32)?.sum_all()?.to_dtype(DType::F64)?))
        .collect::<Result<Vec<_>>>()?;
    if sums.is_empty() {
        return Ok(true);
    }
    let total: Vec<f64> = Tensor::stack(&sums, 0)?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1()?;
    Ok(total.iter().all(|v| v.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn grads(values: &[f32]) -> HashMap<String, Tensor> {
        HashMap::from([("w".to_string(), Tensor::new(values, &Device::Cpu).unwrap())])
    }

    fn values(g: &HashMap<String, Tensor>) -> Vec<f32> {
        g["w"].to_vec1().unwrap()
    }

    #[test]
    fn finite_gradients_are_divided_by_the_scale() {
        let mut scaler = LossScaler::new(true);
        let loss = Tensor::new(0.5f32, &Device::Cpu).unwrap();
        let scaled: f32 = scaler.scale_loss(&loss).unwrap().to_scalar().unwrap();
        assert_eq!(scaled, 32768.0);
        let mut g = grads(&[65536.0, -131072.0]);
        assert_eq!(scaler.unscale(&mut g).unwrap(), ScaledStep::Apply);
        assert_eq!(values(&g), vec![1.0, -2.0]);
        assert_eq!(scaler.state().good_steps, 1);
    }

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale() {
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            let mut scaler = LossScaler::new(true);
            let mut g = grads(&[1.0, bad]);
            assert_eq!(
                scaler.unscale(&mut g).unwrap(),
                ScaledStep::Overflow {
                    scale: INITIAL_LOSS_SCALE
                }
            );
            assert_eq!(scaler.scale(), INITIAL_LOSS_SCALE / 2.0);
            assert_eq!(values(&g)[0], 1.0, "gradients untouched on overflow");
        }
    }

    #[test]
    fn the_scale_doubles_after_the_growth_interval_and_the_count_restarts_on_overflow() {
        let mut scaler = LossScaler::new(true).with_growth_interval(3);
        for _ in 0..2 {
            scaler.unscale(&mut grads(&[1.0])).unwrap();
        }
        scaler.unscale(&mut grads(&[f32::INFINITY])).unwrap();
        assert_eq!(scaler.state().good_steps, 0);
        for _ in 0..3 {
            scaler.unscale(&mut grads(&[1.0])).unwrap();
        }
        assert_eq!(scaler.scale(), INITIAL_LOSS_SCALE);
        let mut resumed = LossScaler::new(true).with_growth_interval(3);
        resumed.load_state(LossScaleState {
            scale: 8.0,
            good_steps: 2,
        });
        resumed.unscale(&mut grads(&[1.0])).unwrap();
        assert_eq!(
            resumed.state(),
            LossScaleState {
                scale: 16.0,
                good_steps: 0
            }
        );
    }

    #[test]
    fn disabled_it_passes_through_but_still_catches_non_finite_gradients() {
        let mut scaler = LossScaler::new(false);
        let mut g = grads(&[3.0]);
        assert_eq!(scaler.unscale(&mut g).unwrap(), ScaledStep::Apply);
        assert_eq!(values(&g), vec![3.0]);
        assert!(matches!(
            scaler.unscale(&mut grads(&[f32::NAN])).unwrap(),
            ScaledStep::Overflow { .. }
        ));
        assert_eq!(scaler.scale(), 1.0);
    }
}
