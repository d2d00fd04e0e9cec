//! Activations used after batch norms and residual additions.

use candle_core::Tensor;

use crate::error::Result;
use crate::layout::Activation;

/// Applies `activation` element-wise (any shape).
pub fn apply_activation(x: &Tensor, activation: Activation) -> Result<Tensor> {
    Ok(match activation {
        Activation::Identity => x.clone(),
        Activation::Relu => x.relu()?,
        // For slopes in [0, 1], leaky_relu(x) = max(x, slope * x).
        Activation::LeakyRelu(slope) => x.maximum(&x.affine(slope, 0.0)?)?,
    })
}
