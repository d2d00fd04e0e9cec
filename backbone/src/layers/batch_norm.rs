//! Batch-norm statistics and their inference-time affine form.

use crate::error::{Error, Result};
use crate::weights::StateDict;

/// Batch-norm epsilon (timm `BatchNormAct2d` and InPlaceABN both use 1e-5).
pub const BATCH_NORM_EPS: f64 = 1e-5;

/// The four per-channel tensors of a batch norm, in f64 for exact folding.
#[derive(Debug, Clone)]
pub struct BatchNormStats {
    /// γ.
    pub weight: Vec<f64>,
    /// β.
    pub bias: Vec<f64>,
    /// Running mean.
    pub running_mean: Vec<f64>,
    /// Running variance.
    pub running_var: Vec<f64>,
}

impl BatchNormStats {
    /// Reads `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var`.
    pub fn from_state_dict(state: &StateDict, prefix: &str) -> Result<Self> {
        let read = |name: &str| -> Result<Vec<f64>> {
            Ok(state
                .vec_f32(&format!("{prefix}.{name}"))?
                .into_iter()
                .map(f64::from)
                .collect())
        };
        let stats = Self {
            weight: read("weight")?,
            bias: read("bias")?,
            running_mean: read("running_mean")?,
            running_var: read("running_var")?,
        };
        if let Some(v) = stats.running_var.iter().find(|v| v.is_nan() || **v < 0.0) {
            return Err(Error::Config(format!(
                "{prefix}.running_var holds {v}; a variance must be a non-negative number"
            )));
        }
        Ok(stats)
    }

    /// Per-channel `(scale, shift)` with `bn(x) = scale · x + shift` at inference:
    /// `scale = γ / √(var + eps)`, `shift = β − mean · scale`.
    pub fn scale_shift(&self) -> (Vec<f64>, Vec<f64>) {
        let scale: Vec<f64> = self
            .weight
            .iter()
            .zip(&self.running_var)
            .map(|(g, v)| g / (v + BATCH_NORM_EPS).sqrt())
            .collect();
        let shift = self
            .bias
            .iter()
            .zip(&self.running_mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        (scale, shift)
    }
}
