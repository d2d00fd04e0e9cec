//! An exponential moving average of a model's weights and batch-norm statistics (timm's
//! `ModelEmaV2`, the ASL recipe's `ModelEma(decay=0.9997)`).

use anyhow::Result;
use candle_core::DType;
use tresnet::weights::StateDict;

/// `ema ← decay·ema + (1 − decay)·model` for every float tensor; integer tensors are copied.
pub struct Ema {
    decay: f64,
    state: StateDict,
}

impl Ema {
    /// Starts from the model's current state.
    pub fn new(decay: f64, initial: StateDict) -> Self {
        Self {
            decay,
            state: initial,
        }
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Folds the model's current state in.
    pub fn update(&mut self, current: &StateDict) -> Result<()> {
        for (key, value) in current.iter() {
            let next = match self.state.get(key) {
                Some(old) if value.dtype() != DType::I64 && old.dims() == value.dims() => {
                    ((old * self.decay)? + (value.to_dtype(old.dtype())? * (1.0 - self.decay))?)?
                }
                _ => value.clone(),
            };
            self.state.insert(key.to_string(), next);
        }
        Ok(())
    }

    /// The averaged state.
    pub fn state(&self) -> &StateDict {
        &self.state
    }
}
