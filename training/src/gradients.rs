//! Operations on a step's named gradients.

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{DType, Tensor};

/// Scales all gradients down together when their global L2 norm exceeds `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub(crate) fn clip_gradients(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let mut total = 0.0f64;
    for g in grads.values() {
        total += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}
